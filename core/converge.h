/* The convergence policy of an outgoing migration: one pure function from
 * the migration's parameters (MigParams), what the policy did so far
 * (ConvergeState) and the newest reading of QEMU's pre-copy statistics
 * (ConvergePass) to what the source must do now (ConvergeDecision) and the
 * state after this pass.
 *
 * It does no I/O, reads no clock and takes no lock: the caller (the source's
 * perform loop, agent/agent-migrate-out.c) passes the time of each reading,
 * executes the decision on QEMU, and reports a tuning step QEMU accepted with
 * converge_applied(), so the policy's idea of the downtime limit and of the
 * throttle is what QEMU really has.  docs/migration.md ("Convergence
 * policy") describes the steps; tests/unit/test-converge.c checks them case
 * by case and over every small input, like the recovery table.
 *
 * A pass may yield two things, in this order: a tuning step (raise the
 * downtime limit, release the auto-converge throttle) and an end of
 * pre-copy (switch to post-copy, or abort).  The end of pre-copy does not
 * depend on whether the tuning step succeeded.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migparams.h"

typedef enum ConvergeAction {
        CONVERGE_NONE,
        CONVERGE_RAISE_DOWNTIME,  /* tune: set QEMU's downtime limit to .downtime_ms */
        CONVERGE_AUTO_CONVERGE,   /* tune: raise the throttle ceiling to 99 %, +20 % per pass */
        CONVERGE_START_POSTCOPY,  /* end: switch to post-copy now (.reason says why) */
        CONVERGE_ABORT,           /* end: give up (.reason says why) */
        _CONVERGE_ACTION_MAX,
} ConvergeAction;

typedef enum ConvergeReason {
        CONVERGE_REASON_NONE,
        CONVERGE_REASON_POSTCOPY_AFTER,     /* policy AFTER: its pre-copy time is up */
        CONVERGE_REASON_NOT_CONVERGING,     /* stalled with every earlier step used */
        CONVERGE_REASON_NO_PROGRESS,        /* no new low of remaining RAM for the progress timeout */
        CONVERGE_REASON_COMPLETION_TIMEOUT, /* the whole-migration budget is spent */
        _CONVERGE_REASON_MAX,
} ConvergeReason;

/* What the policy remembers between passes; the caller keeps it. */
typedef struct ConvergeState {
        uint64_t start_ns;        /* `migrate` was issued */
        uint64_t completion_ms;   /* budget: completion_s_per_gib for each started GiB of guest RAM */
        uint64_t last_low_ns;     /* remaining RAM made its last new low (by more than 1 MiB) */
        uint64_t last_step_ns;    /* the last stall was handled */
        uint64_t min_remaining;   /* lowest remaining RAM seen; UINT64_MAX before the first reading */
        uint64_t iter_at_low;     /* dirty-sync count at the last new low or handled stall */
        uint32_t downtime_ms;     /* the downtime limit QEMU has */
        bool auto_converge_on;    /* the throttle ceiling was raised */
} ConvergeState;

/* One reading of query-migrate, with the caller's monotonic time. */
typedef struct ConvergePass {
        uint64_t now_ns;          /* monotonic, never before the previous pass */
        bool active;              /* status "active": the RAM figures are pre-copy figures */
        uint64_t ram_remaining;
        uint64_t dirty_sync_count; /* QEMU's pass counter */
} ConvergePass;

typedef struct ConvergeDecision {
        ConvergeAction tune;       /* NONE, RAISE_DOWNTIME or AUTO_CONVERGE; executed first */
        uint32_t downtime_from_ms; /* RAISE_DOWNTIME: the limit before */
        uint32_t downtime_ms;      /* RAISE_DOWNTIME: the new limit */
        uint64_t iteration;        /* tune: the pass (dirty-sync count) that stalled */
        ConvergeAction action;     /* NONE, START_POSTCOPY or ABORT; executed after tune */
        ConvergeReason reason;     /* why .action; NONE with CONVERGE_NONE */
        uint64_t quiet_ms;         /* since remaining RAM made its last new low */
} ConvergeDecision;

/* Start the policy for a migration of a guest with @mem_mib MiB of RAM,
 * whose `migrate` was issued at @now_ns.  @p has had mig_params_defaults(). */
void converge_init(const MigParams *p, uint64_t mem_mib, uint64_t now_ns, ConvergeState *ret);

/* The policy for one pass: what to do now.  Writes the state after this pass
 * to *ret_next (which may be @cur).  A tuning step changes *ret_next only
 * through converge_applied(), after QEMU accepted it.  Pure. */
ConvergeDecision converge_next(const MigParams *p, const ConvergeState *cur, const ConvergePass *pass,
                               ConvergeState *ret_next);

/* Record that QEMU accepted the tuning step of @d. */
void converge_applied(ConvergeState *s, const ConvergeDecision *d);

/* The text of @d's tuning step, for the policy-step record. */
void converge_describe_tune(const ConvergeDecision *d, char *buf, size_t size);
/* The text of @d's action: why post-copy starts, or the abort's error. */
void converge_describe_action(const MigParams *p, const ConvergeState *s, const ConvergeDecision *d, char *buf,
                              size_t size);

const char *converge_action_to_string(ConvergeAction a);
const char *converge_reason_to_string(ConvergeReason r);
