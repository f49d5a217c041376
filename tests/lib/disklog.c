/* The disk checksum log's records and its checker (disklog.h).
 *
 * The checksum is FNV-1a over 64 bits, seeded with the previous record's
 * sum (it is also stored in the record, so a record is checked by itself,
 * and the chain by comparing the stored prev_sum with the sum before).
 * The filler is xorshift64 seeded with seq and prev_sum, so that no two
 * records look alike and a block copied to the wrong place is caught.
 * The image is read whole: the test disks are a few MiB.
 */
#define _GNU_SOURCE
#include "disklog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t disklog_get64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--)
                v = v << 8 | p[i];
        return v;
}

void disklog_put64(uint8_t *p, uint64_t v) {
        for (int i = 0; i < 8; i++, v >>= 8)
                p[i] = (uint8_t) v;
}

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n) {
        h ^= 0xcbf29ce484222325ull;
        for (size_t i = 0; i < n; i++) {
                h ^= p[i];
                h *= 0x100000001b3ull;
        }
        return h;
}

static void fill(uint8_t *block, uint64_t seq, uint64_t prev_sum) {
        uint64_t x = (seq + 1) * 0x9e3779b97f4a7c15ull ^ prev_sum;
        for (size_t off = DISKLOG_OFF_FILL; off < DISKLOG_OFF_SUM; off += 8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                disklog_put64(block + off, x);
        }
}

uint64_t disklog_record_build(uint8_t *block, uint64_t seq, uint64_t prev_sum, uint64_t realtime_ns,
                              uint64_t boot_ns) {
        memcpy(block + DISKLOG_OFF_MAGIC, DISKLOG_MAGIC, 8);
        disklog_put64(block + DISKLOG_OFF_SEQ, seq);
        disklog_put64(block + DISKLOG_OFF_REALTIME_NS, realtime_ns);
        disklog_put64(block + DISKLOG_OFF_BOOT_NS, boot_ns);
        disklog_put64(block + DISKLOG_OFF_PREV_SUM, prev_sum);
        fill(block, seq, prev_sum);
        uint64_t sum = fnv1a(prev_sum, block, DISKLOG_OFF_SUM);
        disklog_put64(block + DISKLOG_OFF_SUM, sum);
        return sum;
}

bool disklog_record_valid(const uint8_t *block, uint64_t seq, uint64_t prev_sum, uint64_t *ret_sum, char *why,
                          size_t why_size) {
        char dummy[8];
        if (!why) {
                why = dummy;
                why_size = sizeof(dummy);
        }
        if (memcmp(block + DISKLOG_OFF_MAGIC, DISKLOG_MAGIC, 8) != 0) {
                snprintf(why, why_size, "no record magic");
                return false;
        }
        uint64_t s = disklog_get64(block + DISKLOG_OFF_SEQ);
        if (s != seq) {
                snprintf(why, why_size, "holds seq %" PRIu64 ", expected %" PRIu64, s, seq);
                return false;
        }
        uint64_t p = disklog_get64(block + DISKLOG_OFF_PREV_SUM);
        if (p != prev_sum) {
                snprintf(why, why_size, "chained to sum %016" PRIx64 ", the record before has %016" PRIx64, p,
                         prev_sum);
                return false;
        }
        uint64_t sum = fnv1a(prev_sum, block, DISKLOG_OFF_SUM), stored = disklog_get64(block + DISKLOG_OFF_SUM);
        if (sum != stored) {
                snprintf(why, why_size, "checksum %016" PRIx64 " stored, %016" PRIx64 " computed", stored, sum);
                return false;
        }
        uint8_t expect[DISKLOG_BLOCK];
        fill(expect, seq, prev_sum);
        if (memcmp(block + DISKLOG_OFF_FILL, expect + DISKLOG_OFF_FILL, DISKLOG_OFF_SUM - DISKLOG_OFF_FILL) != 0) {
                snprintf(why, why_size, "filler bytes differ");
                return false;
        }
        if (ret_sum)
                *ret_sum = sum;
        return true;
}

static bool all_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

static int read_all(const char *path, uint8_t **ret, uint64_t *ret_size) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct stat st;
        uint64_t size = 0;
        if (fstat(fd, &st) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        if (S_ISREG(st.st_mode))
                size = (uint64_t) st.st_size;
        else {
                off_t end = lseek(fd, 0, SEEK_END);
                size = end > 0 ? (uint64_t) end : 0;
        }
        uint8_t *buf = malloc(size ? size : 1);
        if (!buf) {
                close(fd);
                return -ENOMEM;
        }
        uint64_t got = 0;
        while (got < size) {
                ssize_t n = pread(fd, buf + got, size - got, (off_t) got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        int r = n < 0 ? -errno : -EIO;
                        free(buf);
                        close(fd);
                        return r;
                }
                got += (uint64_t) n;
        }
        close(fd);
        *ret = buf;
        *ret_size = size;
        return 0;
}

int disklog_image_read(const char *path, DisklogImage *ret) {
        memset(ret, 0, sizeof(*ret));
        uint8_t *buf = NULL;
        uint64_t size = 0;
        int r = read_all(path, &buf, &size);
        if (r < 0)
                return r;
        ret->blocks = size / DISKLOG_BLOCK;
        ret->sums = calloc(ret->blocks ? ret->blocks : 1, sizeof(uint64_t));
        if (!ret->sums) {
                free(buf);
                return -ENOMEM;
        }
        uint64_t prev = DISKLOG_SEED, i = 0;
        char why[160];
        for (; i < ret->blocks; i++) {
                const uint8_t *b = buf + i * DISKLOG_BLOCK;
                if (!disklog_record_valid(b, i, prev, &ret->sums[i], why, sizeof(why)))
                        break;
                prev = ret->sums[i];
        }
        ret->records = i;
        if (i > 0) {
                ret->first_ns = disklog_get64(buf + DISKLOG_OFF_REALTIME_NS);
                ret->last_ns = disklog_get64(buf + (i - 1) * DISKLOG_BLOCK + DISKLOG_OFF_REALTIME_NS);
        }
        /* after the last record: nothing but zeros (a torn or misplaced block
         * would show here, and so would a hole followed by more records) */
        for (uint64_t j = i; j < ret->blocks; j++)
                if (!all_zero(buf + j * DISKLOG_BLOCK, DISKLOG_BLOCK)) {
                        if (j == i)
                                snprintf(ret->error, sizeof(ret->error),
                                         "block %" PRIu64 " after %" PRIu64 " valid records is not zero: %s", j, i,
                                         why);
                        else
                                snprintf(ret->error, sizeof(ret->error),
                                         "block %" PRIu64 " is not zero, %" PRIu64 " blocks after the last of %" PRIu64
                                         " valid records",
                                         j, j - i, i);
                        break;
                }
        free(buf);
        return 0;
}

void disklog_image_done(DisklogImage *img) {
        free(img->sums);
        img->sums = NULL;
}

/* One complete line of a console log (guest-side CR LF: the CR is dropped). */
static void scan_line(char *line, const DisklogImage *img, DisklogAcks *a, bool *have_prev, int *r, char *why,
                      size_t why_size) {
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r')
                line[len - 1] = '\0';
        if (strstr(line, "DISKLOG start"))
                a->started = true;
        if (strstr(line, "DISKLOG LATE"))
                a->late++;
        if (strstr(line, "DISKLOG ERROR"))
                a->errors++;
        /* anywhere in the line: a kernel message may have started it */
        const char *p = strstr(line, "ACK seq=");
        uint64_t seq, sum;
        if (!p || sscanf(p, "ACK seq=%" SCNu64 " sum=%" SCNx64, &seq, &sum) != 2)
                return;
        if (*have_prev && seq != a->last + 1)
                a->gaps++;
        if (!a->count)
                a->first = seq;
        a->last = seq;
        a->count++;
        *have_prev = true;
        if (!img || *r < 0)
                return;
        if (seq >= img->records) {
                snprintf(why, why_size,
                         "ACK seq=%" PRIu64 " sum=%016" PRIx64 " was acknowledged, the image holds records 0..%" PRId64
                         " only",
                         seq, sum, (int64_t) img->records - 1);
                *r = -EBADMSG;
        } else if (img->sums[seq] != sum) {
                snprintf(why, why_size,
                         "ACK seq=%" PRIu64 " sum=%016" PRIx64 " was acknowledged, the image's record has sum %016" PRIx64,
                         seq, sum, img->sums[seq]);
                *r = -EBADMSG;
        }
}

int disklog_acks_scan(const char *path, const DisklogImage *img, DisklogAcks *ret, char *why, size_t why_size) {
        memset(ret, 0, sizeof(*ret));
        if (why && why_size)
                why[0] = '\0';
        char dummy[8];
        if (!why) {
                why = dummy;
                why_size = sizeof(dummy);
        }
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        bool have_prev = false;
        int r = 0;
        while ((n = getline(&line, &cap, f)) > 0) {
                if (line[n - 1] != '\n')
                        break; /* the guest is still writing this one */
                line[n - 1] = '\0';
                scan_line(line, img, ret, &have_prev, &r, why, why_size);
        }
        free(line);
        fclose(f);
        return r;
}
