/* Small helpers shared by the benchmarks (agent-start16, storm, makespan, overhead):
 * latency samples with quantiles, the machine's description, a process's
 * memory from /proc, and gnuplot rendering of a plot into the output folder
 * ($DROVER_BENCH_OUT, set by meson to the build folder of tests/bench).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* A growable list of samples (ns, or any unit); owned by one thread at a time. */
typedef struct Samples {
        uint64_t *v;
        size_t n, cap;
} Samples;

void samples_add(Samples *s, uint64_t x);
void samples_sort(Samples *s);
/* The @q quantile (0..1) of a sorted list (nearest rank); 0 when empty. */
uint64_t samples_q(const Samples *s, double q);
uint64_t samples_max(const Samples *s);
void samples_free(Samples *s);

/* "2 CPUs (AMD EPYC), 23.5 GiB, Linux 6.18, load 1.02 0.98 0.90". */
void bench_machine(char *buf, size_t size);
/* The 1-minute load average, or -1. */
double bench_load1(void);

/* A member of /proc/@pid/status in KiB ("VmRSS", "VmHWM"), or -1. */
long bench_proc_kib(pid_t pid, const char *member);

/* utime + stime of @pid in clock ticks (sysconf(_SC_CLK_TCK) a second), or 0. */
unsigned long long bench_proc_cpu_ticks(pid_t pid);
/* Its minor page faults so far (/proc/@pid/stat minflt), or 0 when it is gone. */
unsigned long long bench_proc_minflt(pid_t pid);

/* The folder for data files and plots: $DROVER_BENCH_OUT, or ".". */
const char *bench_out_dir(void);
/* Open @name in the output folder for writing (NULL on error, printed). */
FILE *bench_open(const char *name);
/* Run gnuplot on the script @gp_name (in the output folder; it writes its
 * PNG there).  Prints the PNG's path; when gnuplot is missing says so and
 * returns -ENOENT.  A plot never fails a benchmark. */
int bench_plot(const char *gp_name);
