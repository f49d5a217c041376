/* Helpers shared by the test programs: scratch folders, child processes that
 * never outlive the test, waiting for sockets, and skip-with-a-reason.
 *
 * Every child started with tu_spawn() gets PR_SET_PDEATHSIG=SIGKILL, is
 * recorded, and is killed by an atexit handler, so a failing or crashing
 * test leaves no QEMU or qemu-ga behind.  Scratch folders from tu_tmpdir()
 * are removed at exit unless DROVER_KEEP_TMP is set.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Exit code meson reads as "skipped". */
#define TU_EXIT_SKIP 77

/* Print "SKIP: <reason>" and exit with TU_EXIT_SKIP. */
void tu_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A fresh folder under $TMPDIR (or /tmp), removed at exit.  Never NULL. */
const char *tu_tmpdir(const char *tag);
/* Join into a static rotating buffer (8 slots): tu_path(dir, "x.sock"). */
const char *tu_path(const char *dir, const char *name);
/* $DROVER_SOURCE_ROOT/@rel, or @rel relative to the current folder. */
const char *tu_source_path(const char *rel);
/* $DROVER_BUILD_ROOT/@rel. */
const char *tu_build_path(const char *rel);
/* vasprintf into a new string (free it); aborts when out of memory. */
char *tu_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Start argv[0] (searched in PATH) with stdout+stderr to @log_path (NULL:
 * /dev/null).  Returns the pid or a negative errno. */
pid_t tu_spawn(char *const argv[], const char *log_path);
/* SIGKILL and reap @pid (no-op for pid <= 0); forgets it. */
void tu_kill(pid_t pid);
/* Send @sig without reaping. */
void tu_signal(pid_t pid, int sig);
/* Reap @pid if it exited; returns true and its wait status if so. */
bool tu_reap(pid_t pid, int *ret_status);
/* True while @pid runs (any process, not only ours); a zombie counts as dead,
 * since this sandbox's init may be slow to reap what it inherits. */
bool tu_pid_alive(pid_t pid);
/* Wait up to @timeout_ms for @path to exist (and, for a socket, accept a
 * connection when @connect is true).  0 or -ETIMEDOUT. */
int tu_wait_path(const char *path, int timeout_ms, bool connect);
/* Absolute path of @prog in PATH, or NULL. */
const char *tu_which(const char *prog);
/* Read a whole file (malloc'ed, NUL-terminated) or NULL. */
char *tu_read_file(const char *path, size_t *ret_len);
/* Count lines of @path that start with @prefix. */
int tu_count_lines(const char *path, const char *prefix);

/* A small deterministic generator (xorshift64) for property tests and
 * benchmarks: the same seed gives the same run.  Seed it with any s != 0. */
typedef struct TuRng {
        uint64_t s;
} TuRng;
uint64_t tu_rng_next(TuRng *r);
/* Uniform enough in [0, @n) for tests (@n > 0). */
uint32_t tu_rng_below(TuRng *r, uint32_t n);
/* In [0, 1), 53 random bits. */
double tu_rng_unit(TuRng *r);
