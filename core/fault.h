/* Fault injection: named fault points, inert unless the environment asks.
 *
 * SQLite's method for "exactly once, whatever fails": every place where the
 * outside world can fail us is a named point, and a test can make any hit
 * of any point fail.  The points are every status-file write
 * ("status.write"), every QMP command ("qmp.<command>"), every guest-agent
 * command ("qga.<command>"), every agent-to-agent RPC ("peer.<Method>") and
 * every coordinator store commit ("store.commit"); docs/recovery.md lists
 * them and how the `fault` suite sweeps them.
 *
 * A hook is one line at the entry of the function every such call goes
 * through:
 *
 *     if ((r = fault_hit("status.write")) < 0)
 *             return r;
 *
 * Configuration is read once, before main() (a constructor), from:
 *
 *   DROVER_FAULT=RULE[,RULE...]     RULE = POINT:N[+]:KIND[:MS]
 *       POINT  a point name, or `*` for any point (then N counts every hit
 *              of every point: the global count)
 *       N      the hit that fails (1 = the first); `N+` fails that hit and
 *              every later one
 *       KIND   fail     return -EIO
 *              timeout  return -ETIMEDOUT, after sleeping MS milliseconds
 *                       (default 0: at once)
 *              eof      return -EPIPE (the peer hung up)
 *              crash    _exit(FAULT_CRASH_EXIT) right there: like kill -9 at
 *                       that instant (no cleanup, no flush), but recognisable
 *                       by its exit code
 *   DROVER_FAULT_TRACE=FILE         append one line per hit to FILE:
 *       "<point> <count> <global> <pid>" and, when a fault fires there,
 *       " <kind>" at the end of that line
 *   DROVER_FAULT_ARM=FILE           hits are neither counted nor traced
 *       (and no rule fires) until FILE exists: a test creates it just
 *       before the operation under test, so "the 1st hit" means the first
 *       one of that operation, whatever the process did before
 *
 * A bad DROVER_FAULT stops the process at start with a message naming the
 * rule (a test must never run believing it injects when it does not).
 *
 * Cost when neither variable is set: fault_hit() is an inline test of one
 * boolean written before main() (one predictable branch).  When enabled,
 * hits take the fault lock (a leaf: nothing is taken inside it, nothing is
 * held while sleeping or exiting; docs/threading.md), so points may be hit
 * from any thread with any other lock held.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* The exit status of a process stopped by a `crash` fault. */
#define FAULT_CRASH_EXIT 86

/* Longest point name ("qmp.<command>" included). */
#define FAULT_POINT_MAX 64

/* True when DROVER_FAULT or DROVER_FAULT_TRACE was set at start.  Written
 * before main() (or by the test-only fault_configure()), read-only after. */
extern bool fault_active;

/* The slow path of fault_hit(): counts the hit of "@prefix.@name" (or
 * @prefix alone when @name is NULL), traces it, and applies the first rule
 * that matches.  Returns 0, or a negative errno with err_set() detail; does
 * not return for a crash. */
int fault_hit_slow(const char *prefix, const char *name);

/* Hit the point @point.  0 (carry on) or -EIO / -ETIMEDOUT / -EPIPE with an
 * err_set() detail naming the point; never returns when a crash is asked.
 * No lock precondition: any thread, any lock held. */
static inline int fault_hit(const char *point) {
        if (__builtin_expect(fault_active, 0))
                return fault_hit_slow(point, NULL);
        return 0;
}

/* The same for the point "@prefix.@name", e.g. ("qmp", "cont") hits
 * "qmp.cont"; names longer than FAULT_POINT_MAX are cut. */
static inline int fault_hit_in(const char *prefix, const char *name) {
        if (__builtin_expect(fault_active, 0))
                return fault_hit_slow(prefix, name);
        return 0;
}
