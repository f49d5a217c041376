/* Unit tests of what a long-running agent keeps (docs/agent.md,
 * "Retention"): the migration table (agent/agent-migtable.c) keeps the
 * newest MIG_TABLE_KEEP done records, none older than MIG_TABLE_KEEP_MS,
 * and every running one; results are found by operation id; watchers never
 * miss a record when more changed than one batch holds.  The event bus
 * (agent/agent-events.c) is resident from the start and never grows.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "agent-events.h"
#include "agent-migtable-priv.h"
#include "agent-migtable.h"
#include "agent.h"
#include "deadline.h"

typedef struct Fixture {
        Agent a;
        MigrationTable *t;
} Fixture;

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));
        if (!f || agent_migtable_new(&f->t) < 0)
                return -1;
        f->a.migrations = f->t;
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        agent_migtable_free(f->t);
        free(f);
        return 0;
}

/* Add the migration "op-@i" of guest "g@i"; done (successfully) when @done. */
static Migration *add(Fixture *f, int i, bool done) {
        char op[32], guest[32];
        snprintf(op, sizeof(op), "op-%d", i);
        snprintf(guest, sizeof(guest), "g%d", i);
        Migration *m = agent_migtable_add(f->t, op, guest, true);
        assert_non_null(m);
        if (done)
                agent_migtable_done(f->t, m, 0, NULL);
        return m;
}

static bool known(Fixture *f, int i) {
        char guest[32];
        MigResult r;
        snprintf(guest, sizeof(guest), "g%d", i);
        return agent_migration_get(&f->a, guest, &r) == 0;
}

static void test_migtable_keeps_only_the_newest_done_records(void **state) {
        Fixture *f = *state;
        for (int i = 0; i < 3 * MIG_TABLE_KEEP; i++)
                add(f, i, true);
        assert_int_equal(agent_migtable_count(f->t), MIG_TABLE_KEEP);
        for (int i = 0; i < 3 * MIG_TABLE_KEEP; i++)
                assert_int_equal(known(f, i), i >= 2 * MIG_TABLE_KEEP);
}

static void test_migtable_never_forgets_a_running_record(void **state) {
        Fixture *f = *state;
        Migration *running[MIG_TABLE_KEEP + 8];
        for (int i = 0; i < MIG_TABLE_KEEP + 8; i++)
                running[i] = add(f, i, false);
        for (int i = 100; i < 100 + 2 * MIG_TABLE_KEEP; i++)
                add(f, i, true);
        agent_migtable_prune(f->t, now_ns() + 2 * MIG_TABLE_KEEP_MS * NSEC_PER_MSEC);
        /* the running ones whatever their number and age; the done ones gone by age */
        assert_int_equal(agent_migtable_count(f->t), MIG_TABLE_KEEP + 8);
        for (int i = 0; i < MIG_TABLE_KEEP + 8; i++) {
                assert_true(known(f, i));
                agent_migtable_done(f->t, running[i], -EIO, "failed");
        }
        agent_migtable_prune(f->t, now_ns());
        assert_int_equal(agent_migtable_count(f->t), MIG_TABLE_KEEP);
}

static void test_migtable_forgets_done_records_after_the_time_bound(void **state) {
        Fixture *f = *state;
        for (int i = 0; i < 3; i++)
                add(f, i, true);
        add(f, 3, false);
        uint64_t now = now_ns();
        agent_migtable_prune(f->t, now + (MIG_TABLE_KEEP_MS - 1000) * NSEC_PER_MSEC);
        assert_int_equal(agent_migtable_count(f->t), 4);
        agent_migtable_prune(f->t, now + (MIG_TABLE_KEEP_MS + 1000) * NSEC_PER_MSEC);
        assert_int_equal(agent_migtable_count(f->t), 1);
        assert_false(known(f, 0));
        assert_true(known(f, 3));
}

static void test_migtable_result_of_finds_an_operation_or_says_forgotten(void **state) {
        Fixture *f = *state;
        MigResult r;
        add(f, 0, true);
        Migration *m = add(f, 1, false);
        assert_int_equal(agent_migtable_result_of(f->t, "op-0", true, &r), 0);
        assert_string_equal(r.guest, "g0");
        assert_true(r.done && r.success);
        assert_int_equal(agent_migtable_result_of(f->t, "op-1", false, &r), 0);
        assert_false(r.done);
        agent_migtable_done(f->t, m, -EIO, "broken");
        assert_int_equal(agent_migtable_result_of(f->t, "op-1", true, &r), 0);
        assert_true(r.done && !r.success);
        assert_string_equal(r.error, "broken");
        for (int i = 2; i < 2 + MIG_TABLE_KEEP; i++)
                add(f, i, true);
        assert_int_equal(agent_migtable_result_of(f->t, "op-0", true, &r), -ENOENT);
}

/* More records changed than a watcher's batch holds: every one of them is
 * still copied, oldest change first, across consecutive calls. */
static void test_migtable_watcher_batches_never_skip_a_record(void **state) {
        Fixture *f = *state;
        enum { BATCH = 8, N = 20 };
        MigResult out[BATCH];
        bool seen[N] = { false };
        uint64_t gen = 0, last = 0;
        for (int i = 0; i < N; i++)
                add(f, i, true);
        size_t total = 0, n;
        while ((n = agent_migrations_changed(&f->a, &gen, out, BATCH)) > 0) {
                for (size_t k = 0; k < n; k++) {
                        int i = atoi(out[k].op + 3);
                        assert_true(i >= 0 && i < N);
                        assert_false(seen[i]);
                        seen[i] = true;
                        assert_true(out[k].generation > last);
                        last = out[k].generation;
                }
                total += n;
        }
        assert_int_equal(total, N);
        assert_int_equal(gen, last);
}

/* Anonymous resident memory (heap, stacks), KiB: code pages paged in on
 * first use are not counted. */
static long rss_anon_kib(void) {
        char line[256];
        long kib = -1;
        FILE *f = fopen("/proc/self/status", "r");
        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, "RssAnon:", 8) == 0)
                        kib = strtol(line + 8, NULL, 10);
        if (f)
                fclose(f);
        return kib;
}

/* The ring is resident once made: going through it three times adds no
 * memory (an untouched calloc'ed ring grew by its size, 440 KiB). */
static void test_event_bus_is_resident_from_the_start(void **state) {
        (void) state;
        EventBus *b;
        AgentEvent ev = { 0 }, out[4];
        assert_int_equal(event_bus_new(&b), 0);
        event_bus_publish(b, &ev); /* first-use paths (stdio, the clock, lock accounting) */
        long before = rss_anon_kib();
        assert_true(before > 0);
        for (int i = 1; i < 3 * AGENT_EVENT_RING; i++) {
                snprintf(ev.detail, sizeof(ev.detail), "event %d", i);
                event_bus_publish(b, &ev);
        }
        long grown = rss_anon_kib() - before;
        if (grown >= 64)
                fail_msg("publishing %d events grew the anonymous RSS by %ld KiB", 3 * AGENT_EVENT_RING, grown);
        /* the oldest event still held is a ring behind the newest */
        assert_int_equal(event_bus_read(b, 0, out, 1), 1);
        assert_int_equal(out[0].seq, 2 * AGENT_EVENT_RING + 1);
        assert_int_equal(event_bus_last_seq(b), 3 * AGENT_EVENT_RING);
        event_bus_free(b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_migtable_keeps_only_the_newest_done_records, setup, teardown),
                cmocka_unit_test_setup_teardown(test_migtable_never_forgets_a_running_record, setup, teardown),
                cmocka_unit_test_setup_teardown(test_migtable_forgets_done_records_after_the_time_bound, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_migtable_result_of_finds_an_operation_or_says_forgotten, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_migtable_watcher_batches_never_skip_a_record, setup, teardown),
                cmocka_unit_test(test_event_bus_is_resident_from_the_start),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
