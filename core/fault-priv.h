/* Fault injection internals exported for tests/unit/test-fault.c only.
 *
 * A daemon reads its configuration once, before main(); the unit tests
 * reconfigure between cases instead.  Nothing here is for production code.
 */
#pragma once

#include <stdint.h>

#include "fault.h"

typedef enum FaultKind {
        FAULT_KIND_FAIL,    /* -EIO */
        FAULT_KIND_TIMEOUT, /* -ETIMEDOUT, after sleeping */
        FAULT_KIND_EOF,     /* -EPIPE */
        FAULT_KIND_CRASH,   /* _exit(FAULT_CRASH_EXIT) */
        _FAULT_KIND_MAX,
} FaultKind;

#define FAULT_RULES_MAX 16

typedef struct FaultRule {
        char point[FAULT_POINT_MAX]; /* "*" = any point, counted globally */
        uint64_t nth;                /* 1-based */
        bool and_later;              /* "N+": every hit from the nth on */
        FaultKind kind;
        unsigned sleep_ms;           /* timeout only */
} FaultRule;

/* "fail", "timeout", "eof", "crash"; NULL / -EINVAL for anything else. */
const char *fault_kind_to_string(FaultKind k);
int fault_kind_from_string(const char *s);

/* Parse a DROVER_FAULT value (grammar in fault.h) into @rules (at most
 * FAULT_RULES_MAX).  Returns the number of rules, or -EINVAL with a detail
 * naming the bad rule; @rules is written only on success. */
int fault_parse(const char *spec, FaultRule *rules);

/* Replace the configuration as if the process had started with
 * DROVER_FAULT=@spec, DROVER_FAULT_TRACE=@trace_path and
 * DROVER_FAULT_ARM=@arm_path (each may be NULL): counters restart at zero.
 * Not safe while other threads hit points.  0 or -errno (the old
 * configuration is then kept). */
int fault_configure(const char *spec, const char *trace_path, const char *arm_path);

/* Hits of @point so far ("*": every point). */
uint64_t fault_count(const char *point);
