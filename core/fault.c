/* Fault injection (see fault.h for the points, the grammar and the cost).
 *
 * A constructor reads DROVER_FAULT and DROVER_FAULT_TRACE before main() and
 * sets fault_active when either is present; fault_hit() tests only that
 * flag, so an uninstrumented run pays one branch per point.  When active,
 * every hit takes the fault lock (a leaf) to bump two counters (the point's
 * and the global one) and to choose the rule that fires; the trace line is
 * written, and the sleep or the exit happens, after the lock is released.
 * With an arm file, hits are ignored until the file exists (one access(2)
 * per hit until then; the armed flag is atomic and sticks).
 * Rules are immutable after start, the point table only grows, and the
 * trace is one write(2) of one line to an O_APPEND file, so lines from the
 * threads of one process and from several processes never interleave.
 */
#define _GNU_SOURCE
#include "fault-priv.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "lock.h"

#define FAULT_POINTS_MAX 256
#define FAULT_SLEEP_MAX_MS 600000u
#define FAULT_NTH_MAX 1000000000ull

typedef struct FaultPointCount {
        char name[FAULT_POINT_MAX];
        uint64_t count;
} FaultPointCount;

/* The fault lock protects the counters below; the rules and the trace fd are
 * written before main() (or by fault_configure() in tests) and read-only
 * after. */
static LockClass fault_lock_class = LOCK_CLASS_INIT("fault");
static Lock fault_lock;
static bool fault_lock_ready;                         /* immutable after start */
static FaultRule rules[FAULT_RULES_MAX];              /* immutable after start */
static size_t n_rules;                                /* immutable after start */
static int trace_fd = -1;                             /* immutable after start */
static char *arm_path;                                /* immutable after start; NULL: armed from the start */
static atomic_bool armed;                             /* atomic */
static FaultPointCount points[FAULT_POINTS_MAX];      /* lock: fault_lock */
static size_t n_points;                               /* lock: fault_lock */
static uint64_t global_count;                         /* lock: fault_lock */
static bool fired[FAULT_RULES_MAX];                   /* lock: fault_lock */

bool fault_active;

static const char *const kind_names[_FAULT_KIND_MAX] = {
        [FAULT_KIND_FAIL] = "fail",
        [FAULT_KIND_TIMEOUT] = "timeout",
        [FAULT_KIND_EOF] = "eof",
        [FAULT_KIND_CRASH] = "crash",
};

const char *fault_kind_to_string(FaultKind k) {
        return k >= 0 && k < _FAULT_KIND_MAX ? kind_names[k] : NULL;
}

int fault_kind_from_string(const char *s) {
        for (int k = 0; k < _FAULT_KIND_MAX; k++)
                if (s && strcmp(s, kind_names[k]) == 0)
                        return k;
        return -EINVAL;
}

static bool point_name_ok(const char *s) {
        if (strcmp(s, "*") == 0)
                return true;
        if (!*s || strlen(s) >= FAULT_POINT_MAX)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      *s == '.' || *s == '-' || *s == '_'))
                        return false;
        return true;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        if (*s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || *end || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

/* One "POINT:N[+]:KIND[:MS]" (modified in place). */
static int parse_rule(char *text, FaultRule *r) {
        char *f[5];
        int n = 0;
        for (char *p = text, *colon;; p = colon + 1) {
                if (n == 5)
                        return err_set(-EINVAL, "fault rule '%s': too many ':' fields", text);
                f[n++] = p;
                if (!(colon = strchr(p, ':')))
                        break;
                *colon = '\0';
        }
        if (n < 3)
                return err_set(-EINVAL, "fault rule '%s': expected POINT:N:KIND[:MS]", f[0]);
        if (n > 4)
                return err_set(-EINVAL, "fault rule for '%s': expected POINT:N:KIND[:MS]", f[0]);
        memset(r, 0, sizeof(*r));
        if (!point_name_ok(f[0]))
                return err_set(-EINVAL, "fault rule: '%s' is not a point name ([A-Za-z0-9._-], under %d bytes, or *)",
                               f[0], FAULT_POINT_MAX);
        snprintf(r->point, sizeof(r->point), "%s", f[0]);
        size_t len = strlen(f[1]);
        if (len && f[1][len - 1] == '+') {
                r->and_later = true;
                f[1][len - 1] = '\0';
        }
        if (parse_u64(f[1], FAULT_NTH_MAX, &r->nth) < 0 || r->nth == 0)
                return err_set(-EINVAL, "fault rule for '%s': hit number '%s' is not an integer in 1..%llu", r->point,
                               f[1], FAULT_NTH_MAX);
        int k = fault_kind_from_string(f[2]);
        if (k < 0)
                return err_set(-EINVAL, "fault rule for '%s': unknown kind '%s' (fail, timeout, eof, crash)", r->point,
                               f[2]);
        r->kind = (FaultKind) k;
        if (n == 4) {
                uint64_t ms;
                if (r->kind != FAULT_KIND_TIMEOUT)
                        return err_set(-EINVAL, "fault rule for '%s': only a timeout takes a sleep time", r->point);
                if (parse_u64(f[3], FAULT_SLEEP_MAX_MS, &ms) < 0)
                        return err_set(-EINVAL, "fault rule for '%s': sleep '%s' is not a number of ms in 0..%u",
                                       r->point, f[3], FAULT_SLEEP_MAX_MS);
                r->sleep_ms = (unsigned) ms;
        }
        return 0;
}

int fault_parse(const char *spec, FaultRule *ret_rules) {
        FaultRule parsed[FAULT_RULES_MAX];
        int n = 0, r;
        if (!spec)
                return 0;
        _cleanup_free_ char *copy = strdup(spec);
        if (!copy)
                return err_set(-ENOMEM, "out of memory");
        if (!*copy)
                return err_set(-EINVAL, "DROVER_FAULT is empty (unset it to disable fault injection)");
        for (char *p = copy, *comma;; p = comma + 1) {
                if ((comma = strchr(p, ',')))
                        *comma = '\0';
                if (n == FAULT_RULES_MAX)
                        return err_set(-EINVAL, "more than %d fault rules", FAULT_RULES_MAX);
                if ((r = parse_rule(p, &parsed[n])) < 0)
                        return r;
                n++;
                if (!comma)
                        break;
        }
        memcpy(ret_rules, parsed, sizeof(parsed[0]) * (size_t) n);
        return n;
}

int fault_configure(const char *spec, const char *trace_path, const char *arm) {
        FaultRule parsed[FAULT_RULES_MAX];
        int n = fault_parse(spec, parsed), fd = -1;
        char *arm_copy = NULL;
        if (n < 0)
                return n;
        if (arm && !(arm_copy = strdup(arm)))
                return err_set(-ENOMEM, "out of memory");
        if (trace_path) {
                fd = open(trace_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
                if (fd < 0) {
                        free(arm_copy);
                        return err_set(-errno, "cannot open the fault trace %s: %m", trace_path);
                }
        }
        if (!fault_lock_ready) {
                lock_init(&fault_lock, &fault_lock_class);
                fault_lock_ready = true;
        }
        if (trace_fd >= 0)
                close(trace_fd);
        trace_fd = fd;
        free(arm_path);
        arm_path = arm_copy;
        atomic_store(&armed, !arm_path);
        memcpy(rules, parsed, sizeof(parsed[0]) * (size_t) n);
        n_rules = (size_t) n;
        memset(fired, 0, sizeof(fired));
        memset(points, 0, sizeof(points));
        n_points = 0;
        global_count = 0;
        fault_active = n > 0 || fd >= 0;
        return 0;
}

__attribute__((constructor)) static void fault_init_from_env(void) {
        const char *spec = getenv("DROVER_FAULT"), *trace = getenv("DROVER_FAULT_TRACE");
        const char *arm = getenv("DROVER_FAULT_ARM");
        if (!spec && !(trace && *trace))
                return;
        if (fault_configure(spec, trace && *trace ? trace : NULL, arm && *arm ? arm : NULL) < 0) {
                fprintf(stderr, "fault injection: %s\n", err_msg());
                _exit(2);
        }
}

static uint64_t *point_count_locked(const char *name) {
        lock_assert_held(&fault_lock);
        for (size_t i = 0; i < n_points; i++)
                if (strcmp(points[i].name, name) == 0)
                        return &points[i].count;
        if (n_points == FAULT_POINTS_MAX)
                return NULL; /* table full: only the global count sees this point */
        snprintf(points[n_points].name, sizeof(points[n_points].name), "%s", name);
        return &points[n_points++].count;
}

static bool rule_matches(const FaultRule *r, bool was_fired, uint64_t count) {
        return r->and_later ? count >= r->nth : !was_fired && count == r->nth;
}

uint64_t fault_count(const char *point) {
        uint64_t v = 0;
        if (!fault_lock_ready)
                return 0;
        lock_acquire(&fault_lock);
        if (strcmp(point, "*") == 0)
                v = global_count;
        else
                for (size_t i = 0; i < n_points; i++)
                        if (strcmp(points[i].name, point) == 0)
                                v = points[i].count;
        lock_release(&fault_lock);
        return v;
}

static void trace_line(const char *name, uint64_t count, uint64_t global, const FaultRule *r) {
        char line[FAULT_POINT_MAX + 96];
        int len = snprintf(line, sizeof(line), "%s %" PRIu64 " %" PRIu64 " %ld%s%s\n", name, count, global,
                           (long) getpid(), r ? " " : "", r ? kind_names[r->kind] : "");
        if (trace_fd >= 0 && len > 0 && (size_t) len < sizeof(line))
                (void) !write(trace_fd, line, (size_t) len);
}

int fault_hit_slow(const char *prefix, const char *name) {
        char point[FAULT_POINT_MAX];
        const FaultRule *fire = NULL;
        uint64_t count = 0, global;

        if (!atomic_load(&armed)) {
                if (access(arm_path, F_OK) < 0)
                        return 0;
                atomic_store(&armed, true);
        }
        snprintf(point, sizeof(point), "%s%s%s", prefix, name ? "." : "", name ? name : "");
        lock_acquire(&fault_lock);
        uint64_t *pc = point_count_locked(point);
        if (pc)
                count = ++*pc;
        global = ++global_count;
        for (size_t i = 0; i < n_rules && !fire; i++) {
                bool any = strcmp(rules[i].point, "*") == 0;
                if ((any || (pc && strcmp(rules[i].point, point) == 0)) &&
                    rule_matches(&rules[i], fired[i], any ? global : count)) {
                        fired[i] = true;
                        fire = &rules[i];
                }
        }
        lock_release(&fault_lock);

        trace_line(point, count, global, fire);
        if (!fire)
                return 0;
        switch (fire->kind) {
        case FAULT_KIND_CRASH: {
                char msg[FAULT_POINT_MAX + 64];
                int len = snprintf(msg, sizeof(msg), "fault injection: crash at %s (hit %" PRIu64 ")\n", point, count);
                if (len > 0 && (size_t) len < sizeof(msg))
                        (void) !write(STDERR_FILENO, msg, (size_t) len);
                _exit(FAULT_CRASH_EXIT);
        }
        case FAULT_KIND_TIMEOUT:
                if (fire->sleep_ms) {
                        struct timespec ts = { fire->sleep_ms / 1000, (long) (fire->sleep_ms % 1000) * 1000000L };
                        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                                ;
                }
                return err_set(-ETIMEDOUT, "%s timed out (fault injected at hit %" PRIu64 ")", point, count);
        case FAULT_KIND_EOF:
                return err_set(-EPIPE, "%s: connection closed (fault injected at hit %" PRIu64 ")", point, count);
        case FAULT_KIND_FAIL:
        default:
                return err_set(-EIO, "%s failed (fault injected at hit %" PRIu64 ")", point, count);
        }
}
