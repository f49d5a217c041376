/* Monotonic time and deadlines.
 *
 * Every wait in Drover has a deadline.  A Deadline is an absolute point on
 * CLOCK_MONOTONIC, so it survives being passed down through helpers: each
 * helper waits for "whatever is left" rather than restarting a timeout.
 * DEADLINE_NEVER exists only for idle worker loops that are woken by a stop
 * flag; any wait for another party (a lock holder, QEMU, a guest, a peer)
 * must use a finite deadline.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

typedef struct Deadline {
        uint64_t at_ns; /* CLOCK_MONOTONIC; UINT64_MAX = never */
} Deadline;

#define DEADLINE_NEVER ((Deadline){ .at_ns = UINT64_MAX })
#define NSEC_PER_MSEC UINT64_C(1000000)
#define NSEC_PER_USEC UINT64_C(1000)
#define NSEC_PER_SEC UINT64_C(1000000000)

uint64_t now_ns(void);
static inline uint64_t now_ms(void) {
        return now_ns() / NSEC_PER_MSEC;
}
/* Wall clock (CLOCK_REALTIME) in ns since the epoch. */
uint64_t wall_ns(void);

/* A deadline @ms milliseconds from now; a negative @ms means never. */
Deadline deadline_in_ms(int64_t ms);
bool deadline_expired(Deadline d);
bool deadline_is_never(Deadline d);
/* Milliseconds left, rounded up (0 when expired, -1 when never). */
int64_t deadline_remaining_ms(Deadline d);
/* A poll(2) timeout for this deadline (-1 when never, capped at INT_MAX). */
int deadline_poll_ms(Deadline d);
/* The earlier of two deadlines. */
Deadline deadline_min(Deadline a, Deadline b);
/* Absolute CLOCK_MONOTONIC timespec for pthread_cond_timedwait. */
void deadline_to_timespec(Deadline d, struct timespec *ret_ts);
/* Sleep until @d or @ms, whichever is first (nanosleep; used by tests and
 * pacing loops, never while holding a lock). */
void sleep_ms(int64_t ms);
