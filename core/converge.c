/* The convergence policy (see converge.h and docs/migration.md).
 *
 * Order inside one pass matters and is the documented one: the post-copy
 * time of policy AFTER first (it ends pre-copy whatever else happens), then
 * a stalled pass takes the next step of the ladder (downtime, auto-converge,
 * post-copy, abort), then the two timeouts (progress, completion).  A
 * post-copy switch or an abort ends the pass; a tuning step does not, so a
 * timeout in the same pass still counts.
 */
#include "converge.h"

#include <stdio.h>

#include "cleanup.h"
#include "deadline.h"

static const char *const action_names[_CONVERGE_ACTION_MAX] = {
        [CONVERGE_NONE] = "none",
        [CONVERGE_RAISE_DOWNTIME] = "raise-downtime",
        [CONVERGE_AUTO_CONVERGE] = "auto-converge",
        [CONVERGE_START_POSTCOPY] = "start-postcopy",
        [CONVERGE_ABORT] = "abort",
};

static const char *const reason_names[_CONVERGE_REASON_MAX] = {
        [CONVERGE_REASON_NONE] = "none",
        [CONVERGE_REASON_POSTCOPY_AFTER] = "postcopy-after",
        [CONVERGE_REASON_NOT_CONVERGING] = "not-converging",
        [CONVERGE_REASON_NO_PROGRESS] = "no-progress",
        [CONVERGE_REASON_COMPLETION_TIMEOUT] = "completion-timeout",
};

const char *converge_action_to_string(ConvergeAction a) {
        return a >= 0 && a < _CONVERGE_ACTION_MAX ? action_names[a] : "?";
}

const char *converge_reason_to_string(ConvergeReason r) {
        return r >= 0 && r < _CONVERGE_REASON_MAX ? reason_names[r] : "?";
}

void converge_init(const MigParams *p, uint64_t mem_mib, uint64_t now_ns, ConvergeState *ret) {
        *ret = (ConvergeState){
                .start_ns = now_ns,
                .completion_ms = mig_params_completion_ms(p, mem_mib),
                .last_low_ns = now_ns,
                .last_step_ns = now_ns,
                .min_remaining = UINT64_MAX,
                .iter_at_low = 0,
                .downtime_ms = p->downtime_ms,
                .auto_converge_on = false,
        };
}

static ConvergeDecision end(ConvergeDecision d, ConvergeAction action, ConvergeReason reason) {
        d.action = action;
        d.reason = reason;
        return d;
}

/* The next rung of the ladder for a stalled pass; @n already has the stall
 * booked.  Sets d->tune, or returns an end of pre-copy (else NONE). */
static ConvergeAction next_step(const MigParams *p, const ConvergeState *n, uint64_t iteration,
                                ConvergeDecision *d) {
        if (n->downtime_ms < p->max_downtime_ms) {
                d->tune = CONVERGE_RAISE_DOWNTIME;
                d->downtime_from_ms = n->downtime_ms;
                d->downtime_ms = MIN(n->downtime_ms * 2, p->max_downtime_ms);
                d->iteration = iteration;
        } else if (p->auto_converge && !n->auto_converge_on) {
                d->tune = CONVERGE_AUTO_CONVERGE;
                d->iteration = iteration;
        } else if (p->postcopy == POSTCOPY_POLICY_ALLOWED)
                return CONVERGE_START_POSTCOPY;
        else if (d->quiet_ms > (uint64_t) p->progress_timeout_s * 1000 / 2)
                return CONVERGE_ABORT;
        return CONVERGE_NONE;
}

ConvergeDecision converge_next(const MigParams *p, const ConvergeState *cur, const ConvergePass *pass,
                               ConvergeState *ret_next) {
        ConvergeState n = *cur;
        ConvergeDecision d = { 0 };
        uint64_t now = pass->now_ns;

        /* a new low of remaining RAM: progress (lows under 1 MiB only lower the mark) */
        if (pass->active && pass->ram_remaining < n.min_remaining) {
                if (n.min_remaining == UINT64_MAX || pass->ram_remaining + (1u << 20) < n.min_remaining)
                        n.last_low_ns = now, n.iter_at_low = pass->dirty_sync_count;
                n.min_remaining = pass->ram_remaining;
        }
        bool stalled = pass->dirty_sync_count >= n.iter_at_low + 2 && now - n.last_step_ns > 2 * NSEC_PER_SEC;
        d.quiet_ms = (now - n.last_low_ns) / NSEC_PER_MSEC;

        if (p->postcopy == POSTCOPY_POLICY_AFTER && (double) (now - n.start_ns) / 1e9 >= p->postcopy_after_s) {
                d = end(d, CONVERGE_START_POSTCOPY, CONVERGE_REASON_POSTCOPY_AFTER);
                goto out;
        }
        if (stalled) {
                n.last_step_ns = now;
                n.iter_at_low = pass->dirty_sync_count;
                ConvergeAction a = next_step(p, &n, pass->dirty_sync_count, &d);
                if (a != CONVERGE_NONE) {
                        d = end(d, a, CONVERGE_REASON_NOT_CONVERGING);
                        goto out;
                }
        }
        if (d.quiet_ms > (uint64_t) p->progress_timeout_s * 1000) {
                d = end(d, CONVERGE_ABORT, CONVERGE_REASON_NO_PROGRESS);
                goto out;
        }
        if ((now - n.start_ns) / NSEC_PER_MSEC > n.completion_ms)
                d = end(d, p->postcopy != POSTCOPY_POLICY_NEVER ? CONVERGE_START_POSTCOPY : CONVERGE_ABORT,
                        CONVERGE_REASON_COMPLETION_TIMEOUT);
out:
        *ret_next = n;
        return d;
}

void converge_applied(ConvergeState *s, const ConvergeDecision *d) {
        if (d->tune == CONVERGE_RAISE_DOWNTIME)
                s->downtime_ms = d->downtime_ms;
        else if (d->tune == CONVERGE_AUTO_CONVERGE)
                s->auto_converge_on = true;
}

void converge_describe_tune(const ConvergeDecision *d, char *buf, size_t size) {
        if (d->tune == CONVERGE_RAISE_DOWNTIME)
                snprintf(buf, size, "downtime %u->%u ms (iteration %llu stalled)", d->downtime_from_ms,
                         d->downtime_ms, (unsigned long long) d->iteration);
        else if (d->tune == CONVERGE_AUTO_CONVERGE)
                snprintf(buf, size, "auto-converge (throttle up to 99 %%, +20 %% per pass)");
        else
                snprintf(buf, size, "none");
}

void converge_describe_action(const MigParams *p, const ConvergeState *s, const ConvergeDecision *d, char *buf,
                              size_t size) {
        bool postcopy = d->action == CONVERGE_START_POSTCOPY;
        switch (d->reason) {
        case CONVERGE_REASON_POSTCOPY_AFTER:
                snprintf(buf, size, "after the configured pre-copy time");
                break;
        case CONVERGE_REASON_NOT_CONVERGING:
                if (postcopy)
                        snprintf(buf, size, "pre-copy did not converge");
                else
                        snprintf(buf, size,
                                 "did not converge: every policy step used, remaining RAM made no new low for %.1f s",
                                 (double) d->quiet_ms / 1000);
                break;
        case CONVERGE_REASON_NO_PROGRESS:
                snprintf(buf, size, "no progress for %u s (remaining RAM made no new low): link cut or stalled",
                         p->progress_timeout_s);
                break;
        case CONVERGE_REASON_COMPLETION_TIMEOUT:
                if (postcopy)
                        snprintf(buf, size, "completion timeout");
                else
                        snprintf(buf, size, "did not complete within %llu s (%u s per GiB)",
                                 (unsigned long long) s->completion_ms / 1000, p->completion_s_per_gib);
                break;
        case CONVERGE_REASON_NONE:
        default:
                snprintf(buf, size, "none");
                break;
        }
}
