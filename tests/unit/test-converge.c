/* Unit tests for the convergence policy (core/converge.c): the rules of
 * docs/migration.md ("Convergence policy") one by one on a simulated
 * migration, then invariants checked over every small input (one pass from
 * every small state) and over whole simulated migrations that never
 * converge. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "cleanup.h"
#include "converge.h"
#include "deadline.h"

#define MIB (UINT64_C(1) << 20)
#define MS(x) ((uint64_t) (x) * NSEC_PER_MSEC)
#define SEC(x) ((uint64_t) (x) * NSEC_PER_SEC)

/* A migration as the source's perform loop sees it. */
typedef struct Sim {
        MigParams p;
        ConvergeState s;
        uint64_t now;
        uint64_t iter;
        uint64_t remaining;
        bool qemu_refuses; /* migrate-set-parameters fails */
} Sim;

static void sim_init(Sim *x, MigParams p, uint64_t mem_mib) {
        memset(x, 0, sizeof(*x));
        mig_params_defaults(&p);
        x->p = p;
        x->now = SEC(100);
        x->remaining = 1000 * MIB;
        converge_init(&x->p, mem_mib, x->now, &x->s);
}

/* One poll @dt_ms after the last, with QEMU's pass counter advanced by
 * @passes and remaining RAM now @remaining; executes a tuning step the way
 * perform() does (applied only when QEMU takes it). */
static ConvergeDecision sim_pass(Sim *x, uint64_t dt_ms, uint64_t passes, uint64_t remaining) {
        x->now += MS(dt_ms);
        x->iter += passes;
        x->remaining = remaining;
        ConvergePass pass = { .now_ns = x->now, .active = true, .ram_remaining = remaining,
                              .dirty_sync_count = x->iter };
        ConvergeDecision d = converge_next(&x->p, &x->s, &pass, &x->s);
        if (d.tune != CONVERGE_NONE && !x->qemu_refuses)
                converge_applied(&x->s, &d);
        return d;
}

/* A stalled pass: two more passes, no new low, 2.5 s later. */
static ConvergeDecision stall(Sim *x) {
        return sim_pass(x, 2500, 2, x->remaining);
}

/* The first reading 250 ms after `migrate`: it sets the first low. */
static void first_reading(Sim *x) {
        ConvergeDecision d = sim_pass(x, 250, 1, x->remaining);
        assert_int_equal(d.tune, CONVERGE_NONE);
        assert_int_equal(d.action, CONVERGE_NONE);
        assert_int_equal(x->s.min_remaining, x->remaining);
}

static void test_completion_budget_per_started_gib(void **state) {
        MigParams p = { .completion_s_per_gib = 10 };
        Sim x;
        sim_init(&x, p, 1);
        assert_int_equal(x.s.completion_ms, 10000);
        sim_init(&x, p, 1024);
        assert_int_equal(x.s.completion_ms, 10000);
        sim_init(&x, p, 1025);
        assert_int_equal(x.s.completion_ms, 20000);
        assert_int_equal(x.s.downtime_ms, 300); /* the default */
        assert_int_equal(x.s.min_remaining, UINT64_MAX);
}

static void test_steady_progress_takes_no_step(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ .auto_converge = true, .postcopy = POSTCOPY_POLICY_ALLOWED }, 4096);
        for (int i = 0; i < 200; i++) { /* 100 s, each pass a new low by 2 MiB */
                ConvergeDecision d = sim_pass(&x, 500, 1, x.remaining - 2 * MIB);
                assert_int_equal(d.tune, CONVERGE_NONE);
                assert_int_equal(d.action, CONVERGE_NONE);
                assert_int_equal(d.quiet_ms, 0);
        }
        assert_int_equal(x.s.downtime_ms, 300);
}

static void test_stall_needs_two_passes_and_two_seconds(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ 0 }, 1024);
        assert_int_equal(sim_pass(&x, 250, 1, 900 * MIB).tune, CONVERGE_NONE); /* first reading: the low */
        /* two passes without a new low, but within 2 s of the start */
        assert_int_equal(sim_pass(&x, 1000, 2, 900 * MIB).tune, CONVERGE_NONE);
        /* 2 s passed, still two passes since the low: stalled */
        ConvergeDecision d = sim_pass(&x, 1000, 0, 900 * MIB);
        assert_int_equal(d.tune, CONVERGE_RAISE_DOWNTIME);
        /* right after a step: one more pass is not a stall, nor is 2 s without passes */
        assert_int_equal(sim_pass(&x, 2500, 1, 900 * MIB).tune, CONVERGE_NONE);
        assert_int_equal(sim_pass(&x, 2500, 0, 900 * MIB).tune, CONVERGE_NONE);
        assert_int_equal(sim_pass(&x, 100, 1, 900 * MIB).tune, CONVERGE_RAISE_DOWNTIME);
}

static void test_small_lows_are_not_progress(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ 0 }, 1024);
        sim_pass(&x, 250, 1, 900 * MIB);
        /* lower, but by less than 1 MiB: the stall counts on */
        ConvergeDecision d = sim_pass(&x, 2500, 2, 900 * MIB - MIB / 2);
        assert_int_equal(d.tune, CONVERGE_RAISE_DOWNTIME);
        assert_int_equal(x.s.min_remaining, 900 * MIB - MIB / 2);
        assert_int_equal(d.quiet_ms, 2500);
        /* a low by more than 1 MiB restarts the count */
        d = sim_pass(&x, 2500, 2, 800 * MIB);
        assert_int_equal(d.tune, CONVERGE_NONE);
        assert_int_equal(d.quiet_ms, 0);
        /* readings outside "active" never make a low */
        ConvergePass pass = { .now_ns = x.now + SEC(0.5), .active = false, .ram_remaining = 1,
                              .dirty_sync_count = x.iter };
        ConvergeState before = x.s;
        converge_next(&x.p, &x.s, &pass, &x.s);
        assert_int_equal(x.s.min_remaining, before.min_remaining);
        assert_int_equal(x.s.last_low_ns, before.last_low_ns);
}

static void test_ladder_downtime_then_autoconverge_then_postcopy(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ .downtime_ms = 300, .max_downtime_ms = 2000, .auto_converge = true,
                                  .postcopy = POSTCOPY_POLICY_ALLOWED, .progress_timeout_s = 3600 }, 1024);
        first_reading(&x);
        ConvergeDecision d = stall(&x);
        assert_int_equal(d.tune, CONVERGE_RAISE_DOWNTIME);
        assert_int_equal(d.downtime_from_ms, 300);
        assert_int_equal(d.downtime_ms, 600);
        assert_int_equal(d.iteration, 3);
        assert_int_equal(stall(&x).downtime_ms, 1200);
        d = stall(&x);
        assert_int_equal(d.downtime_ms, 2000); /* capped at the ceiling */
        assert_int_equal(x.s.downtime_ms, 2000);
        d = stall(&x);
        assert_int_equal(d.tune, CONVERGE_AUTO_CONVERGE);
        assert_int_equal(d.action, CONVERGE_NONE);
        assert_true(x.s.auto_converge_on);
        d = stall(&x);
        assert_int_equal(d.tune, CONVERGE_NONE);
        assert_int_equal(d.action, CONVERGE_START_POSTCOPY);
        assert_int_equal(d.reason, CONVERGE_REASON_NOT_CONVERGING);
}

static void test_ladder_ends_in_abort_after_half_the_progress_timeout(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ .downtime_ms = 500, .max_downtime_ms = 1000, .progress_timeout_s = 20 }, 1024);
        first_reading(&x);
        assert_int_equal(stall(&x).tune, CONVERGE_RAISE_DOWNTIME); /* 1000: every step used */
        /* stalled again, but only 5 s without a new low: keep going */
        ConvergeDecision d = stall(&x);
        assert_int_equal(d.tune, CONVERGE_NONE);
        assert_int_equal(d.action, CONVERGE_NONE);
        d = stall(&x);
        assert_int_equal(d.action, CONVERGE_NONE); /* 7.5 s */
        d = stall(&x);
        assert_int_equal(d.action, CONVERGE_NONE); /* 10 s: not more than half */
        d = stall(&x);
        assert_int_equal(d.action, CONVERGE_ABORT); /* 12.5 s */
        assert_int_equal(d.reason, CONVERGE_REASON_NOT_CONVERGING);
}

static void test_refused_step_is_tried_again(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ .downtime_ms = 300, .max_downtime_ms = 2000 }, 1024);
        first_reading(&x);
        x.qemu_refuses = true;
        ConvergeDecision d = stall(&x);
        assert_int_equal(d.downtime_ms, 600);
        assert_int_equal(x.s.downtime_ms, 300);
        x.qemu_refuses = false;
        d = stall(&x);
        assert_int_equal(d.downtime_from_ms, 300);
        assert_int_equal(d.downtime_ms, 600);
        assert_int_equal(x.s.downtime_ms, 600);
}

static void test_postcopy_after_its_time(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ .postcopy = POSTCOPY_POLICY_AFTER, .postcopy_after_s = 5 }, 1024);
        assert_int_equal(sim_pass(&x, 4900, 1, 10 * MIB).action, CONVERGE_NONE);
        ConvergeDecision d = sim_pass(&x, 100, 1, 5 * MIB);
        assert_int_equal(d.action, CONVERGE_START_POSTCOPY);
        assert_int_equal(d.reason, CONVERGE_REASON_POSTCOPY_AFTER);
        /* AFTER is not ALLOWED: a stalled ladder never switches by itself */
        sim_init(&x, (MigParams){ .postcopy = POSTCOPY_POLICY_AFTER, .postcopy_after_s = 3600,
                                  .progress_timeout_s = 3600 }, 1024);
        first_reading(&x);
        for (int i = 0; i < 20; i++)
                assert_int_not_equal(stall(&x).action, CONVERGE_START_POSTCOPY);
        /* the default time of AFTER is 10 s */
        sim_init(&x, (MigParams){ .postcopy = POSTCOPY_POLICY_AFTER }, 1024);
        assert_int_equal(x.p.postcopy_after_s, 10);
}

static void test_no_progress_aborts(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ .progress_timeout_s = 10, .max_downtime_ms = 60000 }, 1024);
        sim_pass(&x, 250, 1, 500 * MIB);
        /* no pass ends (link cut): no stall, only the progress timeout */
        ConvergeDecision d = sim_pass(&x, 10000, 0, 500 * MIB);
        assert_int_equal(d.action, CONVERGE_NONE);
        d = sim_pass(&x, 10, 0, 500 * MIB);
        assert_int_equal(d.action, CONVERGE_ABORT);
        assert_int_equal(d.reason, CONVERGE_REASON_NO_PROGRESS);
        assert_int_equal(d.tune, CONVERGE_NONE);
}

static void test_timeout_in_the_same_pass_as_a_step(void **state) {
        Sim x;
        sim_init(&x, (MigParams){ .progress_timeout_s = 2 }, 1024);
        first_reading(&x);
        /* stalled and no new low for more than the progress timeout: the
         * step is taken and the migration is aborted in the same pass */
        ConvergeDecision d = stall(&x);
        assert_int_equal(d.tune, CONVERGE_RAISE_DOWNTIME);
        assert_int_equal(d.action, CONVERGE_ABORT);
        assert_int_equal(d.reason, CONVERGE_REASON_NO_PROGRESS);
}

static void test_completion_timeout(void **state) {
        Sim x;
        /* 1 s per GiB, 1 GiB: switch to post-copy where allowed ... */
        sim_init(&x, (MigParams){ .completion_s_per_gib = 1, .postcopy = POSTCOPY_POLICY_ALLOWED }, 1024);
        assert_int_equal(sim_pass(&x, 1000, 1, 100 * MIB).action, CONVERGE_NONE);
        ConvergeDecision d = sim_pass(&x, 10, 0, 10 * MIB);
        assert_int_equal(d.action, CONVERGE_START_POSTCOPY);
        assert_int_equal(d.reason, CONVERGE_REASON_COMPLETION_TIMEOUT);
        /* ... and with AFTER (before its time) ... */
        sim_init(&x, (MigParams){ .completion_s_per_gib = 1, .postcopy = POSTCOPY_POLICY_AFTER,
                                  .postcopy_after_s = 60 }, 1024);
        d = sim_pass(&x, 1500, 1, 10 * MIB);
        assert_int_equal(d.action, CONVERGE_START_POSTCOPY);
        assert_int_equal(d.reason, CONVERGE_REASON_COMPLETION_TIMEOUT);
        /* ... else abort */
        sim_init(&x, (MigParams){ .completion_s_per_gib = 1 }, 1024);
        d = sim_pass(&x, 1500, 1, 10 * MIB);
        assert_int_equal(d.action, CONVERGE_ABORT);
        assert_int_equal(d.reason, CONVERGE_REASON_COMPLETION_TIMEOUT);
}

static void test_texts(void **state) {
        Sim x;
        char buf[160];
        sim_init(&x, (MigParams){ .completion_s_per_gib = 7, .progress_timeout_s = 9 }, 2048);
        ConvergeDecision d = { .tune = CONVERGE_RAISE_DOWNTIME, .downtime_from_ms = 300, .downtime_ms = 600,
                               .iteration = 4 };
        converge_describe_tune(&d, buf, sizeof(buf));
        assert_string_equal(buf, "downtime 300->600 ms (iteration 4 stalled)");
        d = (ConvergeDecision){ .tune = CONVERGE_AUTO_CONVERGE };
        converge_describe_tune(&d, buf, sizeof(buf));
        assert_string_equal(buf, "auto-converge (throttle up to 99 %, +20 % per pass)");
        d = (ConvergeDecision){ .action = CONVERGE_ABORT, .reason = CONVERGE_REASON_COMPLETION_TIMEOUT };
        converge_describe_action(&x.p, &x.s, &d, buf, sizeof(buf));
        assert_string_equal(buf, "did not complete within 14 s (7 s per GiB)");
        d = (ConvergeDecision){ .action = CONVERGE_ABORT, .reason = CONVERGE_REASON_NOT_CONVERGING, .quiet_ms = 4567 };
        converge_describe_action(&x.p, &x.s, &d, buf, sizeof(buf));
        assert_string_equal(buf, "did not converge: every policy step used, remaining RAM made no new low for 4.6 s");
        d = (ConvergeDecision){ .action = CONVERGE_ABORT, .reason = CONVERGE_REASON_NO_PROGRESS };
        converge_describe_action(&x.p, &x.s, &d, buf, sizeof(buf));
        assert_string_equal(buf, "no progress for 9 s (remaining RAM made no new low): link cut or stalled");
        d = (ConvergeDecision){ .action = CONVERGE_START_POSTCOPY, .reason = CONVERGE_REASON_NOT_CONVERGING };
        converge_describe_action(&x.p, &x.s, &d, buf, sizeof(buf));
        assert_string_equal(buf, "pre-copy did not converge");
        d.reason = CONVERGE_REASON_COMPLETION_TIMEOUT;
        converge_describe_action(&x.p, &x.s, &d, buf, sizeof(buf));
        assert_string_equal(buf, "completion timeout");
        d.reason = CONVERGE_REASON_POSTCOPY_AFTER;
        converge_describe_action(&x.p, &x.s, &d, buf, sizeof(buf));
        assert_string_equal(buf, "after the configured pre-copy time");
        for (int a = 0; a < _CONVERGE_ACTION_MAX; a++)
                assert_string_not_equal(converge_action_to_string(a), "?");
        for (int r = 0; r < _CONVERGE_REASON_MAX; r++)
                assert_string_not_equal(converge_reason_to_string(r), "?");
        assert_string_equal(converge_action_to_string(_CONVERGE_ACTION_MAX), "?");
}

/* ---- invariants over every small input ---------------------------------------------- */

/* Small parameter sets: every downtime start/ceiling pair up to 4 ms (the
 * doubling still runs into the ceiling), both auto-converge settings, every
 * post-copy policy, short timeouts.  Calls @fn for each, returns the count. */
typedef void (*ParamsFn)(const MigParams *p, long *count);

static void for_each_params(ParamsFn fn, long *count) {
        for (uint32_t dt = 1; dt <= 3; dt++)
        for (uint32_t max = dt; max <= 4; max++)
        for (int ac = 0; ac < 2; ac++)
        for (int pc = 0; pc < _POSTCOPY_POLICY_MAX; pc++)
        for (uint32_t after = 1; after <= 3; after += 2)
        for (uint32_t prog = 1; prog <= 4; prog *= 4)
        for (uint32_t comp = 2; comp <= 2; comp++) {
                MigParams p = { .downtime_ms = dt, .max_downtime_ms = max, .auto_converge = ac, .postcopy = pc,
                                .postcopy_after_s = after, .progress_timeout_s = prog,
                                .completion_s_per_gib = comp };
                fn(&p, count);
        }
}

static bool ladder_used_up(const MigParams *p, const ConvergeState *s) {
        return s->downtime_ms >= p->max_downtime_ms && (!p->auto_converge || s->auto_converge_on);
}

/* Member by member: the structs have padding, which a copy need not keep
 * (a byte compare failed under one compiler's choices). */
static void assert_decision_equal(const ConvergeDecision *a, const ConvergeDecision *b) {
        assert_int_equal(a->tune, b->tune);
        assert_int_equal(a->downtime_from_ms, b->downtime_from_ms);
        assert_int_equal(a->downtime_ms, b->downtime_ms);
        assert_int_equal(a->iteration, b->iteration);
        assert_int_equal(a->action, b->action);
        assert_int_equal(a->reason, b->reason);
        assert_int_equal(a->quiet_ms, b->quiet_ms);
}

static void assert_state_equal(const ConvergeState *a, const ConvergeState *b) {
        assert_int_equal(a->start_ns, b->start_ns);
        assert_int_equal(a->completion_ms, b->completion_ms);
        assert_int_equal(a->last_low_ns, b->last_low_ns);
        assert_int_equal(a->last_step_ns, b->last_step_ns);
        assert_int_equal(a->min_remaining, b->min_remaining);
        assert_int_equal(a->iter_at_low, b->iter_at_low);
        assert_int_equal(a->downtime_ms, b->downtime_ms);
        assert_int_equal(a->auto_converge_on, b->auto_converge_on);
}

static void check_one_pass(const MigParams *p, const ConvergeState *cur, const ConvergePass *pass) {
        ConvergeState next, again_next;
        ConvergeState copy = *cur;
        ConvergeDecision d = converge_next(p, cur, pass, &next);
        ConvergeDecision again = converge_next(p, cur, pass, &again_next);

        /* pure: same answer twice, input untouched */
        assert_decision_equal(&d, &again);
        assert_state_equal(&next, &again_next);
        assert_state_equal(cur, &copy);

        assert_true(d.tune == CONVERGE_NONE || d.tune == CONVERGE_RAISE_DOWNTIME || d.tune == CONVERGE_AUTO_CONVERGE);
        assert_true(d.action == CONVERGE_NONE || d.action == CONVERGE_START_POSTCOPY || d.action == CONVERGE_ABORT);
        assert_int_equal(d.action == CONVERGE_NONE, d.reason == CONVERGE_REASON_NONE);

        /* the downtime limit only rises, one doubling at most, never past the ceiling */
        if (d.tune == CONVERGE_RAISE_DOWNTIME) {
                assert_int_equal(d.downtime_from_ms, cur->downtime_ms);
                assert_true(d.downtime_ms > cur->downtime_ms);
                assert_true(d.downtime_ms <= p->max_downtime_ms);
                assert_true(d.downtime_ms <= 2 * cur->downtime_ms);
                assert_int_equal(d.iteration, pass->dirty_sync_count);
        }
        ConvergeState applied = next;
        converge_applied(&applied, &d);
        assert_true(applied.downtime_ms >= cur->downtime_ms);
        assert_true(applied.downtime_ms <= MAX(p->max_downtime_ms, cur->downtime_ms));
        assert_int_equal(next.downtime_ms, cur->downtime_ms); /* only an accepted step changes it */
        assert_true(applied.auto_converge_on >= cur->auto_converge_on);

        /* the ladder in order: auto-converge only with the downtime at its
         * ceiling, and only when allowed and not yet on */
        if (d.tune == CONVERGE_AUTO_CONVERGE) {
                assert_true(p->auto_converge);
                assert_false(cur->auto_converge_on);
                assert_true(cur->downtime_ms >= p->max_downtime_ms);
        }
        /* post-copy only where the policy allows it at all */
        if (d.action == CONVERGE_START_POSTCOPY) {
                assert_int_not_equal(p->postcopy, POSTCOPY_POLICY_NEVER);
                if (d.reason == CONVERGE_REASON_NOT_CONVERGING) {
                        assert_int_equal(p->postcopy, POSTCOPY_POLICY_ALLOWED);
                        assert_true(ladder_used_up(p, cur));
                }
                if (d.reason == CONVERGE_REASON_POSTCOPY_AFTER)
                        assert_int_equal(p->postcopy, POSTCOPY_POLICY_AFTER);
                assert_int_not_equal(d.reason, CONVERGE_REASON_NO_PROGRESS);
        }
        /* a non-convergence abort only after every step is used (post-copy
         * included); the completion timeout aborts only without post-copy;
         * the progress timeout only after that long without a new low */
        if (d.action == CONVERGE_ABORT) {
                assert_int_not_equal(d.reason, CONVERGE_REASON_POSTCOPY_AFTER);
                if (d.reason == CONVERGE_REASON_NOT_CONVERGING) {
                        assert_true(ladder_used_up(p, cur));
                        assert_int_not_equal(p->postcopy, POSTCOPY_POLICY_ALLOWED);
                        assert_true(d.quiet_ms > (uint64_t) p->progress_timeout_s * 500);
                        assert_int_equal(d.tune, CONVERGE_NONE);
                }
                if (d.reason == CONVERGE_REASON_COMPLETION_TIMEOUT)
                        assert_int_equal(p->postcopy, POSTCOPY_POLICY_NEVER);
                if (d.reason == CONVERGE_REASON_NO_PROGRESS)
                        assert_true(d.quiet_ms > (uint64_t) p->progress_timeout_s * 1000);
        }
        /* a step and an end of the ladder never come from one stall */
        if (d.reason == CONVERGE_REASON_NOT_CONVERGING)
                assert_int_equal(d.tune, CONVERGE_NONE);
        /* bookkeeping: the low mark never rises, time marks never go back */
        assert_true(next.min_remaining <= cur->min_remaining);
        assert_true(next.last_low_ns >= cur->last_low_ns);
        assert_true(next.last_step_ns >= cur->last_step_ns);
        assert_int_equal(next.start_ns, cur->start_ns);
        assert_int_equal(next.completion_ms, cur->completion_ms);
        assert_int_equal(d.quiet_ms, (pass->now_ns - next.last_low_ns) / NSEC_PER_MSEC);
        /* with progress this pass (a new low of more than 1 MiB), no timeout of progress */
        if (pass->active && cur->min_remaining != UINT64_MAX && pass->ram_remaining + MIB < cur->min_remaining)
                assert_int_not_equal(d.reason, CONVERGE_REASON_NO_PROGRESS);
}

/* One pass from every small state with every small reading. */
static void sweep_one_pass(const MigParams *p, long *count) {
        static const uint64_t offsets_s[] = { 0, 1, 9 };
        static const uint64_t remainings[] = { UINT64_MAX, 5 * MIB, 3 * MIB };
        ConvergeState s0;
        converge_init(p, 1024, SEC(1000), &s0);
        for (uint32_t dt = p->downtime_ms; dt <= p->max_downtime_ms; dt++)
        for (int ac = 0; ac < 2; ac++)
        for (size_t low = 0; low < 3; low++)
        for (size_t step = 0; step < 3; step++)
        for (size_t mr = 0; mr < 3; mr++)
        for (uint64_t iter_low = 0; iter_low < 3; iter_low++)
        for (size_t now = 0; now < 3; now++)
        for (int active = 0; active < 2; active++)
        for (uint64_t rem = 2 * MIB; rem <= 6 * MIB; rem += 2 * MIB)
        for (uint64_t passes = 0; passes < 4; passes++) {
                ConvergeState s = s0;
                s.downtime_ms = dt;
                s.auto_converge_on = ac;
                s.last_low_ns = s0.start_ns + SEC(offsets_s[low]);
                s.last_step_ns = s0.start_ns + SEC(offsets_s[step]);
                s.min_remaining = remainings[mr];
                s.iter_at_low = iter_low;
                uint64_t at = MAX(s.last_low_ns, s.last_step_ns) + SEC(offsets_s[now]) + MS(500) * (now & 1);
                ConvergePass pass = { .now_ns = at, .active = active, .ram_remaining = rem,
                                      .dirty_sync_count = iter_low + passes };
                check_one_pass(p, &s, &pass);
                (*count)++;
        }
}

static void test_invariants_one_pass_exhaustive(void **state) {
        long count = 0;
        for_each_params(sweep_one_pass, &count);
        printf("# %ld (parameters, state, reading) combinations checked\n", count);
        assert_true(count > 1000000);
}

/* A migration that never converges, every combination of small
 * parameters, each pass stalled or not (all 2^n patterns), QEMU accepting or
 * refusing steps: it must end in post-copy or abort, with the ladder
 * climbed in order and never skipped. */
static void run_until_end(const MigParams *p, unsigned pattern, bool refuse_first, long *count) {
        Sim x;
        sim_init(&x, *p, 1024);
        int raises = 0, acs = 0;
        uint32_t last = x.s.downtime_ms;
        bool tuned = false;
        for (int i = 0; i < 400; i++) {
                x.qemu_refuses = refuse_first && !tuned;
                bool stalled = pattern & (1u << (i % 8));
                ConvergeState before = x.s;
                ConvergeDecision d = stalled ? stall(&x) : sim_pass(&x, 300, 0, x.remaining);
                (*count)++;
                tuned = tuned || d.tune != CONVERGE_NONE;
                if (d.tune == CONVERGE_RAISE_DOWNTIME) {
                        assert_int_equal(acs, 0); /* downtime first */
                        raises++;
                }
                if (d.tune == CONVERGE_AUTO_CONVERGE)
                        acs++;
                assert_true(x.s.downtime_ms >= last);
                assert_true(x.s.downtime_ms <= x.p.max_downtime_ms);
                last = x.s.downtime_ms;
                if (d.action == CONVERGE_START_POSTCOPY)
                        assert_int_not_equal(x.p.postcopy, POSTCOPY_POLICY_NEVER);
                if (d.action == CONVERGE_ABORT && d.reason == CONVERGE_REASON_NOT_CONVERGING)
                        assert_true(ladder_used_up(&x.p, &before));
                if (d.action != CONVERGE_NONE)
                        return;
        }
        fail_msg("a migration that never converges did not end within 400 passes");
}

static void sweep_runs(const MigParams *p, long *count) {
        for (unsigned pattern = 0; pattern < 256; pattern++)
                for (int refuse = 0; refuse < 2; refuse++)
                        run_until_end(p, pattern, refuse, count);
}

static void test_invariants_whole_runs_exhaustive(void **state) {
        long count = 0;
        for_each_params(sweep_runs, &count);
        printf("# %ld passes of never-converging migrations checked\n", count);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_completion_budget_per_started_gib),
                cmocka_unit_test(test_steady_progress_takes_no_step),
                cmocka_unit_test(test_stall_needs_two_passes_and_two_seconds),
                cmocka_unit_test(test_small_lows_are_not_progress),
                cmocka_unit_test(test_ladder_downtime_then_autoconverge_then_postcopy),
                cmocka_unit_test(test_ladder_ends_in_abort_after_half_the_progress_timeout),
                cmocka_unit_test(test_refused_step_is_tried_again),
                cmocka_unit_test(test_postcopy_after_its_time),
                cmocka_unit_test(test_no_progress_aborts),
                cmocka_unit_test(test_timeout_in_the_same_pass_as_a_step),
                cmocka_unit_test(test_completion_timeout),
                cmocka_unit_test(test_texts),
                cmocka_unit_test(test_invariants_one_pass_exhaustive),
                cmocka_unit_test(test_invariants_whole_runs_exhaustive),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
