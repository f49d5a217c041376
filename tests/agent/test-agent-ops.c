/* Unit tests of the operation table (agent/agent-ops.c, docs/agent.md
 * "Operations"): an operation's work runs on its own thread and the caller
 * gets the running operation at once; a known id answers that operation and
 * never runs the work twice; an unknown id is -ENOENT; a failure keeps its
 * -errno and text; watchers are woken on every change; a migrate operation
 * ends when its migration's record does; finished operations are kept
 * within the retention bounds, running ones always; the number running at
 * once is bounded.  The operations' work here is a test function on no
 * guest (vm NULL), gated by a condition the test opens.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "agent-migtable.h"
#include "agent-ops-priv.h"
#include "agent-ops.h"
#include "agent.h"
#include "deadline.h"
#include "err.h"

typedef struct Fixture {
        Agent a;
        pthread_mutex_t mu;
        pthread_cond_t cond;
        bool open;                  /* lock: mu; the gate the test work waits for */
        int runs;                   /* lock: mu; how often the test work ran */
        int wakes;                  /* lock: mu; watcher wake-ups */
} Fixture;

static Fixture *fx;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));
        if (!f || agent_ops_new(&f->a.ops) < 0 || agent_migtable_new(&f->a.migrations) < 0)
                return -1;
        pthread_mutex_init(&f->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* deadline_to_timespec() is monotonic */
        pthread_cond_init(&f->cond, &ca);
        pthread_condattr_destroy(&ca);
        fx = f;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        /* the operation threads are gone before the table is */
        for (int i = 0; i < 500 && atomic_load(&f->a.background) > 0; i++)
                sleep_ms(10);
        assert_int_equal(atomic_load(&f->a.background), 0);
        agent_ops_free(f->a.ops);
        agent_migtable_free(f->a.migrations);
        free(f);
        return 0;
}

static void open_gate(Fixture *f) {
        pthread_mutex_lock(&f->mu);
        f->open = true;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->mu);
}

/* The test work: counts itself, waits for the gate, then succeeds with a
 * ping of 42 us, or fails as *args says. */
static int gated_work(Agent *a, Vm *vm, const char *op, void *args, AgentOpResult *res) {
        (void) a;
        (void) vm;
        (void) op;
        pthread_mutex_lock(&fx->mu);
        fx->runs++;
        while (!fx->open)
                pthread_cond_wait(&fx->cond, &fx->mu);
        pthread_mutex_unlock(&fx->mu);
        if (args && *(int *) args < 0)
                return err_set(*(int *) args, "kernel /nowhere/vmlinuz: not found");
        res->ping_us = 42;
        return 0;
}

static int *fail_with(int r) {
        int *p = malloc(sizeof(*p));
        assert_non_null(p);
        *p = r;
        return p;
}

static void on_change(void *opaque) {
        Fixture *f = opaque;
        pthread_mutex_lock(&f->mu);
        f->wakes++;
        pthread_cond_broadcast(&f->cond);
        pthread_mutex_unlock(&f->mu);
}

/* Wait (on watcher wake-ups, at most 5 s) until operation @id is done. */
static void wait_done(Fixture *f, const char *id, AgentOpInfo *ret) {
        Deadline d = deadline_in_ms(5000);
        for (;;) {
                pthread_mutex_lock(&f->mu);
                int seen = f->wakes;
                pthread_mutex_unlock(&f->mu);
                assert_int_equal(agent_ops_get(&f->a, id, ret), 0);
                if (ret->state != AGENT_OP_RUNNING)
                        return;
                agent_op_info_clear(ret);
                if (deadline_expired(d))
                        fail_msg("operation %s still running after 5 s", id);
                struct timespec ts;
                deadline_to_timespec(deadline_in_ms(100), &ts);
                pthread_mutex_lock(&f->mu);
                if (f->wakes == seen)
                        (void) pthread_cond_timedwait(&f->cond, &f->mu, &ts);
                pthread_mutex_unlock(&f->mu);
        }
}

static void test_operation_answers_at_once_then_runs_to_success(void **state) {
        Fixture *f = *state;
        AgentOpInfo o;
        int sub = agent_ops_subscribe(&f->a, on_change, f);
        assert_true(sub >= 0);
        uint64_t t0 = now_ns();
        assert_int_equal(agent_ops_run(&f->a, AGENT_OP_GUEST_PING, NULL, "op-1", gated_work, NULL, &o), 1);
        /* the caller has the running operation while the work still waits */
        assert_true(now_ns() - t0 < 1000 * NSEC_PER_MSEC);
        assert_string_equal(o.id, "op-1");
        assert_int_equal(o.kind, AGENT_OP_GUEST_PING);
        assert_int_equal(o.state, AGENT_OP_RUNNING);
        assert_true(o.created_unix_ms > 0);
        assert_int_equal(o.ended_unix_ms, 0);
        uint64_t gen = o.generation;
        agent_op_info_clear(&o);
        assert_int_equal(agent_ops_get(&f->a, "op-1", &o), 0);
        assert_int_equal(o.state, AGENT_OP_RUNNING);
        agent_op_info_clear(&o);

        open_gate(f);
        wait_done(f, "op-1", &o);
        assert_int_equal(o.state, AGENT_OP_SUCCEEDED);
        assert_int_equal(o.err, 0);
        assert_string_equal(o.error, "");
        assert_int_equal(o.result.ping_us, 42);
        assert_true(o.ended_unix_ms >= o.created_unix_ms);
        assert_true(o.generation > gen);
        agent_op_info_clear(&o);
        pthread_mutex_lock(&f->mu);
        assert_true(f->wakes >= 2); /* begun, ended */
        pthread_mutex_unlock(&f->mu);
        agent_ops_unsubscribe(&f->a, sub);
}

static void test_known_id_answers_that_operation_and_never_runs_twice(void **state) {
        Fixture *f = *state;
        AgentOpInfo o;
        assert_int_equal(agent_ops_run(&f->a, AGENT_OP_GUEST_PING, NULL, "op-r", gated_work, NULL, &o), 1);
        agent_op_info_clear(&o);
        /* a retry while it runs */
        assert_int_equal(agent_ops_run(&f->a, AGENT_OP_GUEST_PING, NULL, "op-r", gated_work, NULL, &o), 0);
        assert_int_equal(o.state, AGENT_OP_RUNNING);
        agent_op_info_clear(&o);
        open_gate(f);
        wait_done(f, "op-r", &o);
        agent_op_info_clear(&o);
        /* a retry once it ended: the same outcome */
        assert_int_equal(agent_ops_run(&f->a, AGENT_OP_GUEST_PING, NULL, "op-r", gated_work, NULL, &o), 0);
        assert_int_equal(o.state, AGENT_OP_SUCCEEDED);
        assert_int_equal(o.result.ping_us, 42);
        agent_op_info_clear(&o);
        pthread_mutex_lock(&f->mu);
        assert_int_equal(f->runs, 1);
        pthread_mutex_unlock(&f->mu);
        /* the same id for another kind is refused, and runs nothing */
        assert_int_equal(agent_ops_run(&f->a, AGENT_OP_GUEST_INFO, NULL, "op-r", gated_work, NULL, &o), -EEXIST);
        assert_non_null(strstr(err_msg(), "guest-ping"));
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_GUEST_PING, "other", "op-r", NULL), -EEXIST);
        pthread_mutex_lock(&f->mu);
        assert_int_equal(f->runs, 1);
        pthread_mutex_unlock(&f->mu);
}

static void test_unknown_id_is_enoent(void **state) {
        Fixture *f = *state;
        AgentOpInfo o;
        assert_int_equal(agent_ops_get(&f->a, "never-started", &o), -ENOENT);
        assert_non_null(strstr(err_msg(), "never-started"));
}

static void test_failed_operation_keeps_its_errno_and_text(void **state) {
        Fixture *f = *state;
        AgentOpInfo o;
        open_gate(f);
        assert_int_equal(agent_ops_run(&f->a, AGENT_OP_START, NULL, "op-f", gated_work, fail_with(-ENOENT), &o), 1);
        agent_op_info_clear(&o);
        wait_done(f, "op-f", &o);
        assert_int_equal(o.state, AGENT_OP_FAILED);
        assert_int_equal(o.err, -ENOENT);
        assert_string_equal(o.error, "kernel /nowhere/vmlinuz: not found");
        assert_true(o.ended_unix_ms > 0);
        agent_op_info_clear(&o);
}

static void test_migrate_operation_ends_with_its_migration_record(void **state) {
        Fixture *f = *state;
        AgentOpInfo o;
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_MIGRATE, "g1", "mig-ok", NULL), 1);
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_MIGRATE, "g2", "mig-bad", NULL), 1);
        /* begun, its migration not started yet: no record is not "gone" */
        assert_int_equal(agent_ops_get(&f->a, "mig-ok", &o), 0);
        assert_int_equal(o.state, AGENT_OP_RUNNING);
        Migration *ok = agent_migtable_add(f->a.migrations, "mig-ok", "g1", true);
        Migration *bad = agent_migtable_add(f->a.migrations, "mig-bad", "g2", true);
        agent_ops_follow_migration(&f->a, "mig-ok");
        agent_ops_follow_migration(&f->a, "mig-bad");
        assert_int_equal(agent_ops_get(&f->a, "mig-ok", &o), 0);
        assert_int_equal(o.state, AGENT_OP_RUNNING);
        agent_migtable_done(f->a.migrations, ok, 0, NULL);
        agent_migtable_done(f->a.migrations, bad, -EIO, "destination went away in perform");
        assert_int_equal(agent_ops_get(&f->a, "mig-ok", &o), 0);
        assert_int_equal(o.state, AGENT_OP_SUCCEEDED);
        assert_int_equal(agent_ops_get(&f->a, "mig-bad", &o), 0);
        assert_int_equal(o.state, AGENT_OP_FAILED);
        assert_int_equal(o.err, AGENT_OP_MIGRATION_FAILED);
        assert_string_equal(o.error, "destination went away in perform");
        /* a followed migration whose record is gone ends failed at the next read, not never */
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_MIGRATE, "g3", "mig-lost", NULL), 1);
        agent_ops_follow_migration(&f->a, "mig-lost");
        assert_int_equal(agent_ops_get(&f->a, "mig-lost", &o), 0);
        assert_int_equal(o.state, AGENT_OP_FAILED);
        assert_non_null(strstr(o.error, "forgotten"));
}

static void test_keeps_newest_finished_and_every_running_operation(void **state) {
        Fixture *f = *state;
        char id[32];
        for (int i = 0; i < 4; i++) {
                snprintf(id, sizeof(id), "run-%d", i);
                assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_SHUTDOWN, "g", id, NULL), 1);
        }
        for (int i = 0; i < 3 * AGENT_OPS_KEEP; i++) {
                snprintf(id, sizeof(id), "done-%d", i);
                assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_SHUTDOWN, "g", id, NULL), 1);
                agent_ops_end(&f->a, id, 0, NULL, NULL);
        }
        assert_int_equal(agent_ops_count(f->a.ops), AGENT_OPS_KEEP + 4);
        AgentOpInfo o;
        assert_int_equal(agent_ops_get(&f->a, "done-0", &o), -ENOENT);
        snprintf(id, sizeof(id), "done-%d", 3 * AGENT_OPS_KEEP - 1);
        assert_int_equal(agent_ops_get(&f->a, id, &o), 0);
        /* past the time bound only the running ones stay, however old */
        agent_ops_prune(f->a.ops, now_ns() + (AGENT_OPS_KEEP_MS + 1000) * NSEC_PER_MSEC);
        assert_int_equal(agent_ops_count(f->a.ops), 4);
        assert_int_equal(agent_ops_get(&f->a, "run-0", &o), 0);
        assert_int_equal(o.state, AGENT_OP_RUNNING);
        /* a forgotten id may begin again */
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_SHUTDOWN, "g", "done-1", NULL), 1);
}

static void test_running_operations_are_bounded(void **state) {
        Fixture *f = *state;
        char id[32];
        for (int i = 0; i < AGENT_OPS_RUNNING_MAX; i++) {
                snprintf(id, sizeof(id), "r-%d", i);
                assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_GUEST_PING, "g", id, NULL), 1);
        }
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_GUEST_PING, "g", "one-more", NULL), -EAGAIN);
        /* a retry of a running one is still answered */
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_GUEST_PING, "g", "r-0", NULL), 0);
        agent_ops_end(&f->a, "r-0", -ETIMEDOUT, "guest agent did not answer", NULL);
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_GUEST_PING, "g", "one-more", NULL), 1);
        /* an abandoned one frees its place and its id */
        agent_ops_abandon(&f->a, "one-more");
        assert_int_equal(agent_ops_begin(&f->a, AGENT_OP_GUEST_PING, "g", "one-more", NULL), 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_operation_answers_at_once_then_runs_to_success, setup, teardown),
                cmocka_unit_test_setup_teardown(test_known_id_answers_that_operation_and_never_runs_twice, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_unknown_id_is_enoent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_failed_operation_keeps_its_errno_and_text, setup, teardown),
                cmocka_unit_test_setup_teardown(test_migrate_operation_ends_with_its_migration_record, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_keeps_newest_finished_and_every_running_operation, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_running_operations_are_bounded, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
