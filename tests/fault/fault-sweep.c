/* The fault sweeps' shared parts (see fault-sweep.h): the known-failure
 * list, the sample's order, trace reading and the report lines. */
#define _GNU_SOURCE
#include "fault-sweep.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fault.h"
#include "testutil.h"

static const char *const outcome_name[_FS_OUT_MAX] = { "PASS", "FAIL", "KNOWN", "FIXED?", "UNREACHED" };
static char *known_text;

bool fs_full_requested(int argc, char **argv) {
        bool full = false;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--full") == 0)
                        full = true;
                else {
                        fprintf(stderr, "usage: %s [--full]\n", argv[0]);
                        exit(2);
                }
        }
        /* DROVER_LONG: the long run of every suite (README "Tests") */
        const char *f = getenv("DROVER_FAULT_FULL"), *l = getenv("DROVER_LONG");
        return full || (f && *f && strcmp(f, "0") != 0) || (l && *l && strcmp(l, "0") != 0);
}

int fs_env_int(const char *name, int def) {
        const char *v = getenv(name);
        return v && *v ? atoi(v) : def;
}

void fs_known_load(void) {
        const char *path = getenv("DROVER_FAULT_KNOWN");
        if (path && *path && !(known_text = tu_read_file(path, NULL))) {
                fprintf(stderr, "DROVER_FAULT_KNOWN=%s cannot be read\n", path);
                exit(1);
        }
}

/* The defect a known-failure line gives for @id, or NULL.  Lines are
 * "ID  defect text"; '#' starts a comment line. */
static const char *known_reason(const char *id, char *buf, size_t size) {
        size_t len = strlen(id);
        for (const char *l = known_text; l && *l;) {
                const char *end = strchr(l, '\n');
                size_t ll = end ? (size_t) (end - l) : strlen(l);
                if (*l != '#' && ll >= len && strncmp(l, id, len) == 0 && (ll == len || l[len] == ' ' || l[len] == '\t')) {
                        const char *r = l + len;
                        while (r < l + ll && (*r == ' ' || *r == '\t'))
                                r++;
                        snprintf(buf, size, "%.*s", (int) (l + ll - r), r);
                        return buf;
                }
                l = end ? end + 1 : l + ll;
        }
        return NULL;
}

void fs_touch(const char *path) {
        FILE *f = fopen(path, "w");
        if (!f)
                fail_msg("cannot create %s: %s", path, strerror(errno));
        fclose(f);
}

bool fs_trace_fired(const char *trace, char *what, size_t size) {
        char *text = tu_read_file(trace, NULL);
        bool fired = false;
        for (char *l = text, *next; l && *l && !fired; l = next) {
                char point[FAULT_POINT_MAX], kind[16];
                unsigned long long count, global;
                long pid;
                if ((next = strchr(l, '\n')))
                        *next++ = '\0';
                if (sscanf(l, "%63s %llu %llu %ld %15s", point, &count, &global, &pid, kind) == 5) {
                        snprintf(what, size, "%s at %s hit %llu (pid %ld)", kind, point, count, pid);
                        fired = true;
                }
        }
        free(text);
        return fired;
}

#define CASE_AT(cases, i, size) ((char *) (cases) + (size_t) (i) * (size))

int fs_filter_only(void *cases, int n, size_t size) {
        const char *only = getenv("DROVER_FAULT_ONLY");
        int m = 0;
        for (int i = 0; i < n; i++)
                if (!only || !*only || strstr(CASE_AT(cases, i, size), only)) {
                        if (m != i)
                                memcpy(CASE_AT(cases, m, size), CASE_AT(cases, i, size), size);
                        m++;
                }
        return m;
}

/* FNV-1a of the case id mixed with the seed: a case's place in the sample
 * depends on its id only, so a run whose trace polled once more or less
 * still samples the same cases. */
static uint64_t sample_key(const char *id) {
        uint64_t h = 1469598103934665603ull ^ (uint64_t) fs_env_int("DROVER_FAULT_SEED", 1) * 0x9E3779B97F4A7C15ull;
        for (const char *p = id; *p; p++)
                h = (h ^ (unsigned char) *p) * 1099511628211ull;
        return h ^ (h >> 29);
}

static int by_sample_key(const void *a, const void *b) {
        uint64_t ka = sample_key(a), kb = sample_key(b);
        return ka < kb ? -1 : ka > kb;
}

void fs_sample_order(void *cases, int n, size_t size) {
        qsort(cases, (size_t) n, size, by_sample_key);
}

int fs_regressions_first(void *cases, int n, size_t size, const char *const *ids, size_t n_ids) {
        int front = 0;
        char *tmp = malloc(size);
        if (!tmp)
                fail_msg("out of memory");
        for (size_t r = 0; r < n_ids; r++)
                for (int i = front; i < n; i++)
                        if (strcmp(CASE_AT(cases, i, size), ids[r]) == 0) {
                                memcpy(tmp, CASE_AT(cases, front, size), size);
                                memcpy(CASE_AT(cases, front, size), CASE_AT(cases, i, size), size);
                                memcpy(CASE_AT(cases, i, size), tmp, size);
                                front++;
                                break;
                        }
        free(tmp);
        return front;
}

FsOutcome fs_report(FsTally *t, const char *id, FsOutcome out, double secs, const char *why) {
        char kb[300];
        const char *known = known_reason(id, kb, sizeof(kb));
        if (out == FS_FAIL && known)
                out = FS_KNOWN;
        else if (out == FS_PASS && known)
                out = FS_FIXED;
        t->n[out]++;
        printf("%-9s %-52s %5.1f s  %s%s%s%s\n", outcome_name[out], id, secs, why, known ? "  [known: " : "",
               known ? known : "", known ? "]" : "");
        fflush(stdout);
        return out;
}

void fs_print_summary(const char *what, int matrix, int ran, const FsTally *t) {
        printf("# %s: matrix %d cases, ran %d: %d PASS, %d FAIL, %d KNOWN, %d FIXED? (known but passed: remove the "
               "line), %d UNREACHED\n",
               what, matrix, ran, t->n[FS_PASS], t->n[FS_FAIL], t->n[FS_KNOWN], t->n[FS_FIXED], t->n[FS_UNREACHED]);
        fflush(stdout);
}
