/* The disk log checker (tests/lib/disklog.h) catches every loss and every
 * damage the storage-migration tests rely on it to catch: acknowledged
 * records missing at the tail, a flipped byte, a hole, blocks swapped or
 * taken from another log, a sum that differs from the acknowledged one.
 * Images and console logs are made here with the writer's own record
 * builder, so the writer and the checker agree on the format by
 * construction; suite unit, no QEMU.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "disklog.h"
#include "testutil.h"

#define BLOCKS 64

typedef struct Log {
        uint8_t img[BLOCKS * DISKLOG_BLOCK];
        uint64_t sums[BLOCKS];
        char img_path[512], con_path[512];
} Log;

/* @n records of the chain starting at @seed, the rest zero. */
static void make(Log *l, int n, uint64_t seed) {
        memset(l->img, 0, sizeof(l->img));
        uint64_t prev = seed;
        for (int i = 0; i < n; i++)
                prev = l->sums[i] = disklog_record_build(l->img + i * DISKLOG_BLOCK, (uint64_t) i, prev,
                                                         1700000000000000000ull + (uint64_t) i * 200000000ull,
                                                         (uint64_t) i * 200000000ull);
        const char *dir = tu_tmpdir("disklog");
        snprintf(l->img_path, sizeof(l->img_path), "%s", tu_path(dir, "disk.img"));
        snprintf(l->con_path, sizeof(l->con_path), "%s", tu_path(dir, "serial.log"));
}

static void save_img(Log *l) {
        FILE *f = fopen(l->img_path, "w");
        assert_non_null(f);
        assert_int_equal(fwrite(l->img, 1, sizeof(l->img), f), sizeof(l->img));
        assert_int_equal(fclose(f), 0);
}

/* The console: ACK lines for @from..@to with the sums of l->sums, CR LF as
 * a serial console writes them, then @tail verbatim. */
static void save_console(Log *l, int from, int to, const char *tail) {
        FILE *f = fopen(l->con_path, "w");
        assert_non_null(f);
        fprintf(f, "drover-linux-guest: ready uptime=1.50\r\nDISKLOG start dev=/dev/vda blocks=%d interval_ms=200\r\n",
                BLOCKS);
        for (int i = from; i <= to; i++)
                fprintf(f, "ACK seq=%d sum=%016" PRIx64 "\r\n", i, l->sums[i]);
        fputs(tail, f);
        assert_int_equal(fclose(f), 0);
}

/* Read the image and check the console against it. */
static int check(Log *l, DisklogImage *img, DisklogAcks *a, char *why, size_t why_size) {
        assert_int_equal(disklog_image_read(l->img_path, img), 0);
        return disklog_acks_scan(l->con_path, img, a, why, why_size);
}

static void test_intact_log_passes(void **state) {
        (void) state;
        Log l;
        DisklogImage img;
        DisklogAcks a;
        char why[256];
        make(&l, 10, DISKLOG_SEED);
        save_img(&l);
        /* a partial last line (no newline yet) is not an acknowledgement */
        save_console(&l, 0, 9, "ACK seq=10 sum=00000000");
        assert_int_equal(check(&l, &img, &a, why, sizeof(why)), 0);
        assert_string_equal(img.error, "");
        assert_int_equal(img.records, 10);
        assert_int_equal(img.blocks, BLOCKS);
        assert_int_equal(a.count, 10);
        assert_int_equal(a.first, 0);
        assert_int_equal(a.last, 9);
        assert_int_equal(a.gaps, 0);
        assert_true(a.started);
        assert_true(img.last_ns > img.first_ns);
        disklog_image_done(&img);
}

static void test_acknowledged_tail_missing_fails(void **state) {
        (void) state;
        Log l;
        DisklogImage img;
        DisklogAcks a;
        char why[256];
        make(&l, 10, DISKLOG_SEED);
        save_console(&l, 0, 9, "");
        /* the copy lost the last two acknowledged records: a consistent image, but short */
        memset(l.img + 8 * DISKLOG_BLOCK, 0, 2 * DISKLOG_BLOCK);
        save_img(&l);
        assert_int_equal(check(&l, &img, &a, why, sizeof(why)), -EBADMSG);
        assert_string_equal(img.error, "");
        assert_int_equal(img.records, 8);
        assert_non_null(strstr(why, "ACK seq=8 "));
        disklog_image_done(&img);
}

static void test_flipped_byte_fails(void **state) {
        (void) state;
        Log l;
        DisklogImage img;
        DisklogAcks a;
        char why[256];
        make(&l, 10, DISKLOG_SEED);
        save_console(&l, 0, 9, "");
        l.img[4 * DISKLOG_BLOCK + 300] ^= 0x10;
        save_img(&l);
        assert_int_equal(check(&l, &img, &a, why, sizeof(why)), -EBADMSG);
        assert_int_equal(img.records, 4);
        assert_non_null(strstr(img.error, "block 4 "));
        assert_non_null(strstr(img.error, "checksum"));
        disklog_image_done(&img);
}

static void test_hole_fails(void **state) {
        (void) state;
        Log l;
        DisklogImage img;
        DisklogAcks a;
        char why[256];
        make(&l, 10, DISKLOG_SEED);
        save_console(&l, 0, 4, ""); /* even with nothing acknowledged past the hole */
        memset(l.img + 5 * DISKLOG_BLOCK, 0, DISKLOG_BLOCK);
        save_img(&l);
        assert_int_equal(check(&l, &img, &a, why, sizeof(why)), 0);
        assert_int_equal(img.records, 5);
        assert_non_null(strstr(img.error, "block 6 is not zero"));
        disklog_image_done(&img);
}

static void test_swapped_blocks_fail(void **state) {
        (void) state;
        Log l;
        DisklogImage img;
        DisklogAcks a;
        char why[256];
        uint8_t tmp[DISKLOG_BLOCK];
        make(&l, 10, DISKLOG_SEED);
        save_console(&l, 0, 9, "");
        memcpy(tmp, l.img + 2 * DISKLOG_BLOCK, DISKLOG_BLOCK);
        memcpy(l.img + 2 * DISKLOG_BLOCK, l.img + 3 * DISKLOG_BLOCK, DISKLOG_BLOCK);
        memcpy(l.img + 3 * DISKLOG_BLOCK, tmp, DISKLOG_BLOCK);
        save_img(&l);
        assert_int_equal(check(&l, &img, &a, why, sizeof(why)), -EBADMSG);
        assert_int_equal(img.records, 2);
        assert_non_null(strstr(img.error, "holds seq 3, expected 2"));
        disklog_image_done(&img);
}

static void test_record_of_another_log_fails(void **state) {
        (void) state;
        Log l, other;
        DisklogImage img;
        DisklogAcks a;
        char why[256];
        make(&other, 10, DISKLOG_SEED ^ 1);
        make(&l, 10, DISKLOG_SEED);
        save_console(&l, 0, 9, "");
        /* a stale block: the right seq, intact, but chained to another history */
        memcpy(l.img + 6 * DISKLOG_BLOCK, other.img + 6 * DISKLOG_BLOCK, DISKLOG_BLOCK);
        save_img(&l);
        assert_int_equal(check(&l, &img, &a, why, sizeof(why)), -EBADMSG);
        assert_int_equal(img.records, 6);
        assert_non_null(strstr(img.error, "chained to sum"));
        disklog_image_done(&img);
}

static void test_acknowledged_sum_differs_fails(void **state) {
        (void) state;
        Log l;
        DisklogImage img;
        DisklogAcks a;
        char why[256];
        make(&l, 10, DISKLOG_SEED);
        save_img(&l);
        l.sums[7] ^= 0x100; /* the console acknowledged other bytes than the image holds */
        save_console(&l, 0, 9, "");
        assert_int_equal(check(&l, &img, &a, why, sizeof(why)), -EBADMSG);
        assert_string_equal(img.error, "");
        assert_non_null(strstr(why, "ACK seq=7 "));
        assert_non_null(strstr(why, "the image's record has sum"));
        disklog_image_done(&img);
}

static void test_console_gaps_and_noise_are_counted(void **state) {
        (void) state;
        Log l;
        DisklogImage img;
        DisklogAcks a;
        char why[256], tail[512];
        make(&l, 12, DISKLOG_SEED);
        save_img(&l);
        /* ACKs 0..5, then 8 after a kernel message on the same line, a LATE, an ERROR */
        snprintf(tail, sizeof(tail),
                 "[   12.5] random: crng init done ACK seq=8 sum=%016" PRIx64 "\r\n"
                 "DISKLOG LATE seq=8 by=900ms\r\nDISKLOG ERROR seq=9 write: Input/output error (retrying)\r\n",
                 l.sums[8]);
        save_console(&l, 0, 5, tail);
        assert_int_equal(check(&l, &img, &a, why, sizeof(why)), 0);
        assert_int_equal(a.count, 7);
        assert_int_equal(a.last, 8);
        assert_int_equal(a.gaps, 1);
        assert_int_equal(a.late, 1);
        assert_int_equal(a.errors, 1);
        disklog_image_done(&img);
        /* without an image the scan only reads the console */
        assert_int_equal(disklog_acks_scan(l.con_path, NULL, &a, NULL, 0), 0);
        assert_int_equal(a.count, 7);
        assert_int_equal(disklog_acks_scan("/nonexistent/serial.log", NULL, &a, NULL, 0), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_intact_log_passes),
                cmocka_unit_test(test_acknowledged_tail_missing_fails),
                cmocka_unit_test(test_flipped_byte_fails),
                cmocka_unit_test(test_hole_fails),
                cmocka_unit_test(test_swapped_blocks_fail),
                cmocka_unit_test(test_record_of_another_log_fails),
                cmocka_unit_test(test_acknowledged_sum_differs_fails),
                cmocka_unit_test(test_console_gaps_and_noise_are_counted),
        };
        return cmocka_run_group_tests_name("disklog", tests, NULL, NULL);
}
