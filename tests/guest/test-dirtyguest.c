/* Integration test of the dirtying guest (tests/guest/dirtyguest.elf) under
 * real QEMU with TCG: it must boot to READY quickly on pc, q35 and microvm,
 * through both of its entry points (Multiboot and PVH), and dirty memory at
 * the rate asked for, as the guest itself reports it on its serial line.
 *
 * Each case starts its own qemu-system-x86_64 with tu_spawn() (killed at
 * exit even if the test crashes) and polls the serial file.  Only complete
 * lines are looked at, because QEMU writes the file byte by byte.  Rates
 * are checked on the guest's own figures (TSC-timed, so host load moves
 * them little) plus a loose wall-clock check that a guest second is a real
 * second.  Boot times are printed, not asserted beyond the 5 s bound.
 *
 * The ELF path comes from argv[1] (meson passes it), else
 * $DROVER_GUEST_ELF, else $DROVER_BUILD_ROOT/tests/guest/dirtyguest.elf.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define QEMU            "qemu-system-x86_64"
#define READY_TIMEOUT_S 5.0
#define MB_HEADER_MAGIC 0x1BADB002u

static const char *elf_path;
static const char *tmp;
static bool have_microvm;

struct guest {
        pid_t pid;
        char serial[512];
        char log[512];
        double t_spawn;         /* monotonic seconds */
};

struct sline {
        unsigned sec, mibps, late, pass;
        unsigned long long pages;
};

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void sleep_s(double s) {
        struct timespec ts = { (time_t) s, (long) ((s - (double) (time_t) s) * 1e9) };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* The @idx-th (0-based) complete line of @path starting with @prefix, copied
 * into @buf; false if there is none yet. */
static bool nth_line(const char *path, const char *prefix, int idx, char *buf, size_t size) {
        char *s = tu_read_file(path, NULL);
        size_t pl = strlen(prefix);
        bool found = false;

        if (!s)
                return false;
        for (char *line = s, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
                if (strncmp(line, prefix, pl) != 0 || idx-- > 0)
                        continue;
                snprintf(buf, size, "%.*s", (int) (nl - line), line);
                found = true;
                break;
        }
        free(s);
        return found;
}

static int count_lines(const char *path, const char *prefix) {
        char *s = tu_read_file(path, NULL);
        size_t pl = strlen(prefix);
        int n = 0;

        if (!s)
                return 0;
        for (char *line = s, *nl; (nl = strchr(line, '\n')); line = nl + 1)
                if (strncmp(line, prefix, pl) == 0)
                        n++;
        free(s);
        return n;
}

static void guest_dump(const struct guest *g) {
        char *s = tu_read_file(g->serial, NULL), *l = tu_read_file(g->log, NULL);

        fprintf(stderr, "--- serial %s ---\n%s\n--- qemu log %s ---\n%s\n---\n",
                g->serial, s ? s : "(none)", g->log, l ? l : "(none)");
        free(s);
        free(l);
}

static void guest_start_elf(struct guest *g, const char *elf, const char *machine,
                            int mem_mib, const char *append) {
        static int seq;
        char mem[16], serial_arg[600];

        snprintf(g->serial, sizeof(g->serial), "%s/g%02d.serial", tmp, seq);
        snprintf(g->log, sizeof(g->log), "%s/g%02d.log", tmp, seq);
        seq++;
        snprintf(mem, sizeof(mem), "%d", mem_mib);
        snprintf(serial_arg, sizeof(serial_arg), "file:%s", g->serial);

        char *const argv[] = {
                (char *) QEMU, (char *) "-accel", (char *) "tcg",
                (char *) "-machine", (char *) machine, (char *) "-m", mem,
                (char *) "-nodefaults", (char *) "-no-user-config",
                (char *) "-display", (char *) "none", (char *) "-no-reboot",
                (char *) "-kernel", (char *) elf, (char *) "-append", (char *) append,
                (char *) "-serial", serial_arg, NULL,
        };
        g->t_spawn = now_s();
        g->pid = tu_spawn(argv, g->log);
        if (g->pid < 0)
                fail_msg("spawn %s: %s", QEMU, strerror((int) -g->pid));
}

static void guest_start(struct guest *g, const char *machine, int mem_mib, const char *append) {
        guest_start_elf(g, elf_path, machine, mem_mib, append);
}

static void guest_stop(struct guest *g) {
        tu_kill(g->pid);
        g->pid = 0;
}

/* Wait until the serial log holds @n complete lines starting with @prefix.
 * Returns the monotonic time they were seen, or -1 at @deadline.  Fails
 * the test if QEMU exits first. */
static double guest_wait(struct guest *g, const char *prefix, int n, double deadline) {
        for (;;) {
                int st;

                if (count_lines(g->serial, prefix) >= n)
                        return now_s();
                if (tu_reap(g->pid, &st)) {
                        g->pid = 0;
                        guest_dump(g);
                        fail_msg("QEMU exited (wait status 0x%x) before %d '%s' lines", st, n, prefix);
                }
                if (now_s() > deadline)
                        return -1;
                sleep_s(0.001);
        }
}

/* Wait for READY (within READY_TIMEOUT_S of the exec), parse it and check
 * mib; returns exec -> READY in seconds. */
static double guest_ready(struct guest *g, unsigned want_mib, unsigned *ret_ram) {
        char line[256], rate[32];
        unsigned ram, mib, khz;
        double t = guest_wait(g, "READY ", 1, g->t_spawn + READY_TIMEOUT_S);

        if (t < 0) {
                guest_dump(g);
                fail_msg("no READY within %.1f s", READY_TIMEOUT_S);
        }
        assert_true(nth_line(g->serial, "READY ", 0, line, sizeof(line)));
        if (sscanf(line, "READY ram=%uMiB mib=%u rate=%31s tsc_khz=%u", &ram, &mib, rate, &khz) != 4)
                fail_msg("bad READY line: '%s'", line);
        assert_int_equal(count_lines(g->serial, "BOOT"), 1);
        assert_int_equal(mib, want_mib);
        assert_true(khz > 100000);      /* > 100 MHz: the PIT calibration worked */
        if (ret_ram)
                *ret_ram = ram;
        return t - g->t_spawn;
}

static struct sline parse_sline(const char *line) {
        struct sline s;

        if (sscanf(line, "S %u pages=%llu mibps=%u late=%u pass=%u",
                   &s.sec, &s.pages, &s.mibps, &s.late, &s.pass) != 5)
                fail_msg("bad S line: '%s'", line);
        return s;
}

/* Boot @append on @machine, let it run @n_s seconds, and check every S line
 * against @rate (MiB/s, +-25%; 0: no check) and the protocol; returns the
 * mean mibps.  @tick_hz != 0 means pace=tick at that hz: ticks the guest
 * reports as late may be lost, and with them their pages, so the lower
 * bound is taken from the ticks that did arrive. */
static double run_rate(const char *machine, const char *append, unsigned mib,
                       unsigned rate, unsigned tick_hz, int n_s) {
        struct guest g;
        struct sline s[16];
        unsigned long long total = 0;
        unsigned late = 0;
        double t_ready, t_last, mean;
        char line[256];

        assert_true(n_s <= 16);
        guest_start(&g, machine, 64, append);
        t_ready = g.t_spawn + guest_ready(&g, mib, NULL);
        t_last = guest_wait(&g, "S ", n_s, t_ready + n_s + 5.0);
        if (t_last < 0) {
                guest_dump(&g);
                fail_msg("fewer than %d S lines %d s after READY", n_s, n_s + 5);
        }
        guest_stop(&g);

        printf("# %s \"%s\":", machine, append);
        for (int i = 0; i < n_s; i++) {
                assert_true(nth_line(g.serial, "S ", i, line, sizeof(line)));
                s[i] = parse_sline(line);
                total += s[i].pages;
                printf(" %u", s[i].mibps);
                late += s[i].late;
        }
        mean = (double) total / 256.0 / (double) n_s;
        printf(" MiB/s (mean %.1f), late ticks %u, %d S lines in %.2f s wall\n",
               mean, late, n_s, t_last - t_ready);

        for (int i = 0; i < n_s; i++) {
                double lo = rate * 0.75, hi = rate * 1.25;

                if (tick_hz)
                        lo *= s[i].late >= tick_hz ? 0.0 : (double) (tick_hz - s[i].late) / tick_hz;
                assert_int_equal(s[i].sec, (unsigned) i + 1);
                if (rate && (s[i].mibps < lo || s[i].mibps > hi)) {
                        guest_dump(&g);
                        fail_msg("second %u: %u MiB/s (late=%u), asked %u, allowed %.1f..%.1f",
                                 s[i].sec, s[i].mibps, s[i].late, rate, lo, hi);
                }
                if (i > 0)
                        assert_true(s[i].pass >= s[i - 1].pass);
        }
        /* The sweep count follows from the pages written (fill is not a pass). */
        unsigned long long ws_pages = (unsigned long long) mib * 256;
        assert_true(s[n_s - 1].pass + 1 >= total / ws_pages);
        assert_true(s[n_s - 1].pass <= total / ws_pages + 1);
        /* A guest second is a wall-clock second (TSC calibration), loosely:
         * the host may be busy, but the guest cannot be early. */
        assert_true(t_last - t_ready > n_s - 0.5);
        assert_true(t_last - t_ready < n_s + 4.0);
        return mean;
}

static void test_pc_rate20(void **state) {
        (void) state;
        run_rate("pc", "mib=32 rate=20", 32, 20, 0, 4);
}

static void test_pc_rate100(void **state) {
        (void) state;
        run_rate("pc", "mib=32 rate=100", 32, 100, 0, 4);
}

static void test_pc_tick_pacing(void **state) {
        (void) state;
        run_rate("pc", "mib=16 rate=50 pace=tick wpp=16 hz=250", 16, 50, 250, 3);
}

static void test_microvm_rate20(void **state) {
        (void) state;
        if (!have_microvm)
                skip();
        run_rate("microvm", "mib=32 rate=20", 32, 20, 0, 3);
}

static void test_pc_rate_max(void **state) {
        double mean;

        (void) state;
        mean = run_rate("pc", "mib=32 rate=max", 32, 0, 0, 2);
        assert_true(mean > 100.0);      /* unthrottled: far above any paced rate */
}

/* QEMU's CPU time (user+system) in seconds, from /proc. */
static double proc_cpu_s(pid_t pid) {
        char path[64], *s, *p;
        unsigned long ut = 0, st = 0;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        s = tu_read_file(path, NULL);
        assert_non_null(s);
        p = strrchr(s, ')');
        assert_non_null(p);
        /* after "pid (comm)": state is field 3, utime 14, stime 15 */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
                fail_msg("cannot parse %s", path);
        free(s);
        return (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
}

/* rate=0: READY, then cli;hlt forever: no S lines, QEMU alive and idle. */
static void test_pc_rate0_idle(void **state) {
        struct guest g;
        double cpu0, cpu1;

        (void) state;
        guest_start(&g, "pc", 64, "mib=32 rate=0");
        guest_ready(&g, 32, NULL);
        sleep_s(0.5);
        cpu0 = proc_cpu_s(g.pid);
        sleep_s(2.0);
        cpu1 = proc_cpu_s(g.pid);
        assert_false(tu_reap(g.pid, NULL));
        printf("# pc rate=0: %d S lines, QEMU used %.2f s CPU in 2 s idle\n",
               count_lines(g.serial, "S "), cpu1 - cpu0);
        assert_int_equal(count_lines(g.serial, "S "), 0);
        assert_true(cpu1 - cpu0 < 0.5);
        guest_stop(&g);
}

/* A copy of the ELF without the Multiboot magic, so QEMU has to use the PVH
 * note: pvh.bin on pc, qboot on microvm. */
static const char *make_pvh_only_elf(void) {
        static char path[512];
        size_t len;
        char *d = tu_read_file(elf_path, &len);
        size_t i;
        FILE *f;

        assert_non_null(d);
        for (i = 0; i + 4 <= len && i < 8192; i += 4) {
                uint32_t v;
                memcpy(&v, d + i, 4);
                if (v == MB_HEADER_MAGIC)
                        break;
        }
        if (i + 4 > len || i >= 8192)
                fail_msg("no Multiboot header in the first 8 KiB of %s", elf_path);
        memset(d + i, 0, 4);
        snprintf(path, sizeof(path), "%s/pvh-only.elf", tmp);
        f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(d, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
        free(d);
        return path;
}

static void test_pvh_entry(void **state) {
        const char *machines[] = { "pc", "microvm" };
        const char *pvh = make_pvh_only_elf();

        (void) state;
        for (size_t m = 0; m < 2; m++) {
                struct guest g;
                unsigned ram;
                double t;

                if (strcmp(machines[m], "microvm") == 0 && !have_microvm)
                        continue;
                guest_start_elf(&g, pvh, machines[m], 64, "mib=16 rate=10");
                t = guest_ready(&g, 16, &ram);  /* mib=16 proves the PVH cmdline was read */
                assert_int_equal(ram, 64);      /* and the PVH memory map */
                if (guest_wait(&g, "S ", 1, now_s() + 3.0) < 0) {
                        guest_dump(&g);
                        fail_msg("PVH boot on %s: no S line", machines[m]);
                }
                printf("# PVH entry on %s: READY in %.3f s\n", machines[m], t);
                guest_stop(&g);
        }
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return (x > y) - (x < y);
}

/* Prints exec -> READY (median of 5); asserts only the 5 s bound. */
static void test_boot_times(void **state) {
        static const struct {
                const char *machine;
                int mem;
                unsigned mib;
        } cfgs[] = {
                { "pc", 64, 32 }, { "pc", 64, 56 }, { "pc", 256, 248 },
                { "q35", 64, 32 },
                { "microvm", 64, 32 }, { "microvm", 256, 248 },
        };

        (void) state;
        for (size_t c = 0; c < sizeof(cfgs) / sizeof(cfgs[0]); c++) {
                double t[5];
                char append[64];

                if (strcmp(cfgs[c].machine, "microvm") == 0 && !have_microvm)
                        continue;
                snprintf(append, sizeof(append), "mib=%u rate=0", cfgs[c].mib);
                for (int r = 0; r < 5; r++) {
                        struct guest g;
                        guest_start(&g, cfgs[c].machine, cfgs[c].mem, append);
                        t[r] = guest_ready(&g, cfgs[c].mib, NULL);
                        guest_stop(&g);
                }
                qsort(t, 5, sizeof(t[0]), cmp_double);
                printf("# boot %-7s -m %-4d mib=%-3u exec->READY median %.3f s (min %.3f max %.3f)\n",
                       cfgs[c].machine, cfgs[c].mem, cfgs[c].mib, t[2], t[0], t[4]);
        }
}

static bool qemu_has_machine(const char *name) {
        struct guest g;
        char *const argv[] = { (char *) QEMU, (char *) "-machine", (char *) "help", NULL };
        char *s;
        int st;
        bool found = false;

        snprintf(g.log, sizeof(g.log), "%s/machines.txt", tmp);
        g.pid = tu_spawn(argv, g.log);
        if (g.pid < 0)
                return false;
        for (int i = 0; i < 5000 && !tu_reap(g.pid, &st); i++)
                sleep_s(0.002);
        tu_kill(g.pid);
        s = tu_read_file(g.log, NULL);
        if (s) {
                for (char *line = s; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
                        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ' ')
                                found = true;
                free(s);
        }
        return found;
}

int main(int argc, char **argv) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pc_rate20),
                cmocka_unit_test(test_pc_rate100),
                cmocka_unit_test(test_pc_rate0_idle),
                cmocka_unit_test(test_pc_tick_pacing),
                cmocka_unit_test(test_pc_rate_max),
                cmocka_unit_test(test_microvm_rate20),
                cmocka_unit_test(test_pvh_entry),
                cmocka_unit_test(test_boot_times),
        };

        if (!tu_which(QEMU))
                tu_skip("%s not found in PATH", QEMU);
        elf_path = argc > 1 ? argv[1] : getenv("DROVER_GUEST_ELF");
        if (!elf_path)
                elf_path = strdup(tu_build_path("tests/guest/dirtyguest.elf"));
        if (access(elf_path, R_OK) != 0) {
                fprintf(stderr, "guest kernel %s: %s (build it with ninja first)\n",
                        elf_path, strerror(errno));
                return 1;
        }
        tmp = tu_tmpdir("guest");
        have_microvm = qemu_has_machine("microvm");
        if (!have_microvm)
                printf("# %s has no microvm machine: microvm cases skipped\n", QEMU);
        return cmocka_run_group_tests(tests, NULL, NULL);
}
