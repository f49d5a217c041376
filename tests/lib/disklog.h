/* The disk checksum log of the Linux test guest (tests/linux-guest,
 * `drover.disklog=1`): the record format, shared by the writer that runs
 * inside the guest (tests/linux-guest/disklog-writer.c) and by the checker
 * the tests run on the image afterwards.
 *
 * The guest writes record N into 512-byte block N of its first virtio disk
 * (O_DIRECT and O_DSYNC, then fdatasync), and only once the write returned
 * prints `ACK seq=N sum=S` on its serial console.  Each record carries the
 * previous record's checksum, and its own checksum covers every other byte
 * of it, the previous checksum included: the sums form a chain, so record N
 * vouches for records 0..N-1 as well.  The checker proves what a storage
 * migration promises: the image holds records 0..K, each intact and chained,
 * nothing but zeros after them, and every (seq, sum) acknowledged on a
 * console is in the image, with the same sum.
 *
 * Pure C with no dependency beyond libc: it is linked statically into the
 * guest's writer.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DISKLOG_BLOCK 512
#define DISKLOG_MAGIC "DRVDLOG1"       /* 8 bytes, no NUL */
#define DISKLOG_SEED 0x6472766c6f673031ull /* prev_sum of record 0 */

/* One record, one block; integers little-endian (the guest and the host are
 * both x86-64, the checker reads them through disklog_get64 anyway). */
enum {
        DISKLOG_OFF_MAGIC = 0,
        DISKLOG_OFF_SEQ = 8,
        DISKLOG_OFF_REALTIME_NS = 16, /* CLOCK_REALTIME in the guest when written */
        DISKLOG_OFF_BOOT_NS = 24,     /* CLOCK_BOOTTIME */
        DISKLOG_OFF_PREV_SUM = 32,    /* the previous record's sum (DISKLOG_SEED for record 0) */
        DISKLOG_OFF_FILL = 40,        /* pseudo-random bytes derived from seq and prev_sum */
        DISKLOG_OFF_SUM = 504,        /* checksum of bytes [0, 504) */
};

/* Build record @seq chained to @prev_sum into @block (DISKLOG_BLOCK bytes);
 * returns its sum. */
uint64_t disklog_record_build(uint8_t *block, uint64_t seq, uint64_t prev_sum, uint64_t realtime_ns,
                              uint64_t boot_ns);

/* Whether @block is record @seq chained to @prev_sum, intact; its sum in
 * *ret_sum when it is.  false with the reason in @why (may be NULL). */
bool disklog_record_valid(const uint8_t *block, uint64_t seq, uint64_t prev_sum, uint64_t *ret_sum, char *why,
                          size_t why_size);

/* What the image holds. */
typedef struct DisklogImage {
        uint64_t blocks;    /* size / DISKLOG_BLOCK */
        uint64_t records;   /* valid chained records from block 0: K + 1 (0 = none) */
        uint64_t *sums;     /* sums[i] of record i, i < records (malloc'ed) */
        uint64_t first_ns, last_ns; /* CLOCK_REALTIME of record 0 and of record K */
        char error[256];    /* "" when consistent: records 0..K, then only zero blocks */
} DisklogImage;

/* Read the image at @path (a raw file or a block device) and check it.
 * Returns 0 when it could be read (consistent or not: see ret->error), or
 * -errno; free ret->sums with disklog_image_done(). */
int disklog_image_read(const char *path, DisklogImage *ret);
void disklog_image_done(DisklogImage *img);

/* The acknowledgements found on a serial console log. */
typedef struct DisklogAcks {
        uint64_t count;     /* complete ACK lines */
        uint64_t first, last; /* their first and last seq (count > 0) */
        uint64_t gaps;      /* times a seq did not follow the previous one by 1 */
        uint64_t late;      /* DISKLOG LATE lines: the writer missed its pace */
        uint64_t errors;    /* DISKLOG ERROR lines */
        bool started;       /* a DISKLOG start line */
} DisklogAcks;

/* Scan the serial log @path; for every complete ACK line also check it
 * against @img when not NULL: the image must hold that seq with that sum.
 * Returns 0, -errno when the log cannot be read, or -EBADMSG for the first
 * acknowledged write the image lacks (reason in @why). */
int disklog_acks_scan(const char *path, const DisklogImage *img, DisklogAcks *ret, char *why, size_t why_size);

/* Little-endian helpers (exported for the writer and the tests). */
uint64_t disklog_get64(const uint8_t *p);
void disklog_put64(uint8_t *p, uint64_t v);
