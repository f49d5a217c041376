/* Helpers shared by the benchmarks (see bench-util.h). */
#define _GNU_SOURCE
#include "bench-util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

void samples_add(Samples *s, uint64_t x) {
        if (s->n == s->cap) {
                size_t cap = s->cap ? 2 * s->cap : 1024;
                uint64_t *v = realloc(s->v, cap * sizeof(*v));
                if (!v)
                        return; /* drop the sample rather than the run */
                s->v = v;
                s->cap = cap;
        }
        s->v[s->n++] = x;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

void samples_sort(Samples *s) {
        if (s->n)
                qsort(s->v, s->n, sizeof(*s->v), cmp_u64);
}

uint64_t samples_q(const Samples *s, double q) {
        if (s->n == 0)
                return 0;
        size_t i = (size_t) (q * (double) s->n);
        return s->v[i < s->n ? i : s->n - 1];
}

uint64_t samples_max(const Samples *s) {
        return s->n ? s->v[s->n - 1] : 0;
}

void samples_free(Samples *s) {
        free(s->v);
        *s = (Samples){ 0 };
}

double bench_load1(void) {
        double l = -1;
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
                if (fscanf(f, "%lf", &l) != 1)
                        l = -1;
                fclose(f);
        }
        return l;
}

void bench_machine(char *buf, size_t size) {
        char model[128] = "unknown CPU", line[256], load[64] = "?";
        FILE *f = fopen("/proc/cpuinfo", "r");
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, "model name", 10) == 0) {
                        const char *c = strchr(line, ':');
                        if (c) {
                                snprintf(model, sizeof(model), "%s", c + 2);
                                model[strcspn(model, "\n")] = '\0';
                        }
                        break;
                }
        if (f)
                fclose(f);
        f = fopen("/proc/loadavg", "r");
        if (f) {
                if (fgets(line, sizeof(line), f)) {
                        /* the three averages only */
                        char *p = line;
                        for (int k = 0; k < 3 && p; k++)
                                p = strchr(p + 1, ' ');
                        snprintf(load, sizeof(load), "%.*s", p ? (int) (p - line) : (int) strcspn(line, "\n"), line);
                }
                fclose(f);
        }
        struct utsname u;
        if (uname(&u) < 0)
                snprintf(u.release, sizeof(u.release), "?");
        double mem_gib = (double) sysconf(_SC_PHYS_PAGES) * (double) sysconf(_SC_PAGESIZE) / (1024.0 * 1024 * 1024);
        snprintf(buf, size, "%ld CPUs (%s), %.1f GiB, Linux %s, load average %s", sysconf(_SC_NPROCESSORS_ONLN),
                 model, mem_gib, u.release, load);
}

long bench_proc_kib(pid_t pid, const char *member) {
        char path[64], line[256];
        size_t n = strlen(member);
        long kib = -1;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, member, n) == 0 && line[n] == ':') {
                        kib = strtol(line + n + 1, NULL, 10);
                        break;
                }
        if (f)
                fclose(f);
        return kib;
}

/* minflt (field 10), utime (14) and stime (15) of /proc/@pid/stat; false
 * when the process is gone. */
static bool proc_stat(pid_t pid, unsigned long long *minflt, unsigned long long *ticks) {
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return false;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        unsigned long long mf = 0, ut = 0, st = 0;
        /* fields after the command: state(3) ppid pgrp session tty tpgid flags minflt(10) cminflt majflt
         * cmajflt utime(14) stime(15) */
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %llu %*u %*u %*u %llu %llu", &mf, &ut, &st) != 3)
                return false;
        *minflt = mf;
        *ticks = ut + st;
        return true;
}

unsigned long long bench_proc_cpu_ticks(pid_t pid) {
        unsigned long long mf, ticks;
        return proc_stat(pid, &mf, &ticks) ? ticks : 0;
}

unsigned long long bench_proc_minflt(pid_t pid) {
        unsigned long long mf, ticks;
        return proc_stat(pid, &mf, &ticks) ? mf : 0;
}

const char *bench_out_dir(void) {
        const char *d = getenv("DROVER_BENCH_OUT");
        return d && d[0] ? d : ".";
}

FILE *bench_open(const char *name) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", bench_out_dir(), name);
        FILE *f = fopen(path, "w");
        if (!f)
                fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
        return f;
}

int bench_plot(const char *gp_name) {
        if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
                printf("(gnuplot is not installed: %s/%s not rendered; tests/scripts/setup.sh installs it)\n",
                       bench_out_dir(), gp_name);
                return -ENOENT;
        }
        char cmd[1200];
        snprintf(cmd, sizeof(cmd), "cd '%s' && gnuplot '%s' 2>&1", bench_out_dir(), gp_name);
        int st = system(cmd);
        if (st != 0) {
                printf("(gnuplot %s/%s failed: status %d)\n", bench_out_dir(), gp_name, st);
                return -EIO;
        }
        printf("plot: %s/%.*s.png\n", bench_out_dir(), (int) (strrchr(gp_name, '.') ? strrchr(gp_name, '.') - gp_name
                                                                                   : (long) strlen(gp_name)),
               gp_name);
        return 0;
}
