/* drover-disklog DEVICE INTERVAL_MS: the record writer of the Linux test
 * guest's disk log mode (`drover.disklog=1`, README.md), run by
 * guest-init.sh inside the guest; built static by meson, copied into the
 * initrd by build-linux-guest.sh.
 *
 * Every INTERVAL_MS it writes record N (tests/lib/disklog.h) into block N
 * of DEVICE, opened O_DIRECT | O_DSYNC, calls fdatasync, and only then
 * prints `ACK seq=N sum=S` on stdout (the serial console), in one write().
 * It never skips a record and never falls behind silently: a failed write
 * prints `DISKLOG ERROR seq=N ...` and is retried (same seq) a second
 * later; a slot missed by more than one interval prints `DISKLOG LATE
 * seq=N by=MS` and the pace restarts from now (no catch-up burst); a full
 * device prints `DISKLOG FULL seq=N` and the writer then only sleeps.  It
 * exits (status 1, with a DISKLOG ERROR line) only when DEVICE cannot be
 * opened, and always starts at block 0: each boot begins a new log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "disklog.h"

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
        char line[256];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t) n > sizeof(line) - 2)
                n = (int) sizeof(line) - 2;
        line[n++] = '\n';
        for (int off = 0; off < n;) { /* one write: lines stay whole on the console */
                ssize_t w = write(STDOUT_FILENO, line + off, (size_t) (n - off));
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return;
                off += (int) w;
        }
}

static uint64_t clock_ns(clockid_t id) {
        struct timespec ts;
        clock_gettime(id, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static void sleep_until(uint64_t mono_ns) {
        struct timespec ts = { .tv_sec = (time_t) (mono_ns / 1000000000ull), .tv_nsec = (long) (mono_ns % 1000000000ull) };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
}

int main(int argc, char **argv) {
        if (argc != 3) {
                say("DISKLOG ERROR usage: %s DEVICE INTERVAL_MS", argv[0]);
                return 2;
        }
        const char *dev = argv[1];
        long interval_ms = strtol(argv[2], NULL, 10);
        if (interval_ms < 10 || interval_ms > 60000)
                interval_ms = 200;
        int fd = open(dev, O_RDWR | O_DIRECT | O_DSYNC | O_CLOEXEC);
        if (fd < 0) {
                say("DISKLOG ERROR open %s: %s", dev, strerror(errno));
                return 1;
        }
        uint64_t bytes = 0;
        if (ioctl(fd, BLKGETSIZE64, &bytes) < 0) {
                off_t end = lseek(fd, 0, SEEK_END);
                bytes = end > 0 ? (uint64_t) end : 0;
        }
        uint64_t blocks = bytes / DISKLOG_BLOCK;
        uint8_t *block = NULL;
        if (posix_memalign((void **) &block, 4096, DISKLOG_BLOCK) != 0) {
                say("DISKLOG ERROR out of memory");
                return 1;
        }
        say("DISKLOG start dev=%s blocks=%" PRIu64 " interval_ms=%ld", dev, blocks, interval_ms);

        const uint64_t interval = (uint64_t) interval_ms * 1000000ull;
        uint64_t prev = DISKLOG_SEED, next = clock_ns(CLOCK_MONOTONIC);
        for (uint64_t seq = 0;; seq++) {
                if (seq >= blocks) {
                        say("DISKLOG FULL seq=%" PRIu64, seq);
                        for (;;)
                                pause();
                }
                uint64_t sum = disklog_record_build(block, seq, prev, clock_ns(CLOCK_REALTIME), clock_ns(CLOCK_BOOTTIME));
                for (;;) {
                        ssize_t w = pwrite(fd, block, DISKLOG_BLOCK, (off_t) (seq * DISKLOG_BLOCK));
                        int err = w < 0 ? errno : w != DISKLOG_BLOCK ? EIO : 0;
                        if (!err && fdatasync(fd) < 0)
                                err = errno;
                        if (!err)
                                break;
                        if (err == EINTR)
                                continue;
                        say("DISKLOG ERROR seq=%" PRIu64 " write: %s (retrying)", seq, strerror(err));
                        sleep(1);
                }
                say("ACK seq=%" PRIu64 " sum=%016" PRIx64, seq, sum);
                prev = sum;

                next += interval;
                uint64_t now = clock_ns(CLOCK_MONOTONIC);
                if (now > next + interval) {
                        say("DISKLOG LATE seq=%" PRIu64 " by=%" PRIu64 "ms", seq, (uint64_t) ((now - next) / 1000000u));
                        next = now;
                }
                sleep_until(next);
        }
}
