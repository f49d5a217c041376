/* Monotonic deadlines (see deadline.h). */
#include "deadline.h"

#include <errno.h>
#include <limits.h>

uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

uint64_t wall_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

Deadline deadline_in_ms(int64_t ms) {
        if (ms < 0)
                return DEADLINE_NEVER;
        return (Deadline){ .at_ns = now_ns() + (uint64_t) ms * NSEC_PER_MSEC };
}

bool deadline_is_never(Deadline d) {
        return d.at_ns == UINT64_MAX;
}

bool deadline_expired(Deadline d) {
        return !deadline_is_never(d) && now_ns() >= d.at_ns;
}

int64_t deadline_remaining_ms(Deadline d) {
        if (deadline_is_never(d))
                return -1;
        uint64_t n = now_ns();
        if (n >= d.at_ns)
                return 0;
        return (int64_t) ((d.at_ns - n + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
}

int deadline_poll_ms(Deadline d) {
        int64_t r = deadline_remaining_ms(d);
        if (r < 0)
                return -1;
        return r > INT_MAX ? INT_MAX : (int) r;
}

Deadline deadline_min(Deadline a, Deadline b) {
        return a.at_ns <= b.at_ns ? a : b;
}

void deadline_to_timespec(Deadline d, struct timespec *ret_ts) {
        uint64_t at = deadline_is_never(d) ? (uint64_t) INT32_MAX * NSEC_PER_SEC : d.at_ns;
        ret_ts->tv_sec = (time_t) (at / NSEC_PER_SEC);
        ret_ts->tv_nsec = (long) (at % NSEC_PER_SEC);
}

void sleep_ms(int64_t ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}
