/* The coordinator's job engine, in-process with FAKE agents (see
 * coord-harness.h): who may receive a guest, and when.
 *
 * Each test states a rule of docs/coordinator.md: a host that is draining,
 * in maintenance, the source of another evacuation or unreachable never
 * receives a guest, even one planned before it became so (the scheduler
 * places it again, or fails it with the reason); two evacuations of one
 * host, or one guest in two jobs, are refused naming the other job; an
 * evacuation's host is listed again before it is put in maintenance; an
 * evacuated host in maintenance stays in maintenance.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "coord-harness.h"
#include "err.h"
#include "log.h"

#define GIB 1024

static void assert_contains(const char *text, const char *part) {
        if (!strstr(text, part))
                fail_msg("'%s' does not contain '%s'", text, part);
}

/* Evacuation A places a1 on h2; evacuation B then drains h2 (its guest goes
 * to h3, not to the draining h1).  A's queued guest must not go to h2: it
 * is placed again, on h3, and both hosts end empty. */
static void test_planned_destination_that_became_draining_is_replaced(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB, 8 * GIB };
        Coordinator *c = ch_new("coord-draining-dest", 3, mem);
        char a[STORE_ID_MAX], b[STORE_ID_MAX];
        ch_guest("h1", "a1", 2 * GIB);
        ch_guest("h2", "b1", 2 * GIB);
        assert_int_equal(ch_evacuate(c, "h1", false, a), 0);
        assert_string_equal(ch_sub(c, a, "a1").destination, "h2"); /* the most free memory then */
        assert_int_equal(ch_evacuate(c, "h2", false, b), 0);
        assert_string_equal(ch_sub(c, b, "b1").destination, "h3"); /* not h1: it is draining */

        ch_tick(c);
        assert_string_equal(ch_sub(c, a, "a1").destination, "h3");
        for (int i = 0; i < 5; i++) {
                fake_mig_end("b1", true, NULL, true);
                fake_mig_end("a1", true, NULL, true);
                ch_tick(c);
                assert_string_equal(ch_sub(c, a, "a1").destination, "h3");
        }
        assert_int_equal(ch_job(c, a).phase, COORD_JOB_PHASE_SUCCEEDED);
        assert_int_equal(ch_job(c, b).phase, COORD_JOB_PHASE_SUCCEEDED);
        assert_string_equal(fake_guest_host("a1"), ch_addr("h3"));
        assert_string_equal(fake_guest_host("b1"), ch_addr("h3"));
        ch_free(c);
}

typedef struct Race {
        Coordinator *c;
        const char *host;
        char id[STORE_ID_MAX];
        int r;
        pthread_barrier_t *go;
} Race;

static void *race_evacuate(void *arg) {
        Race *x = arg;
        pthread_barrier_wait(x->go);
        x->r = ch_evacuate(x->c, x->host, false, x->id);
        return NULL;
}

/* Two evacuations submitted at the same moment, each host the best place
 * for the other's guest (h3 is small): whatever the interleaving, no guest
 * is ever started towards either draining host, and both end on h3. */
static void test_concurrent_evacuations_never_fill_each_other(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB, 4 * GIB };
        for (int round = 0; round < 10; round++) {
                char tag[32];
                snprintf(tag, sizeof(tag), "coord-race-%d", round);
                Coordinator *c = ch_new(tag, 3, mem);
                ch_guest("h1", "a1", 1 * GIB);
                ch_guest("h2", "b1", 1 * GIB);
                pthread_barrier_t go;
                pthread_barrier_init(&go, NULL, 2);
                Race x[2] = { { .c = c, .host = "h1", .go = &go }, { .c = c, .host = "h2", .go = &go } };
                pthread_t th[2];
                for (int i = 0; i < 2; i++)
                        pthread_create(&th[i], NULL, race_evacuate, &x[i]);
                for (int i = 0; i < 2; i++)
                        pthread_join(th[i], NULL);
                pthread_barrier_destroy(&go);
                assert_int_equal(x[0].r, 0);
                assert_int_equal(x[1].r, 0);
                for (int step = 0; step < 6; step++) {
                        ch_tick(c);
                        for (int i = 0; i < 2; i++) {
                                StoreSubtask t = ch_sub(c, x[i].id, i ? "b1" : "a1");
                                if (t.phase == COORD_SUBTASK_PHASE_MIGRATING &&
                                    (strcmp(t.destination, "h1") == 0 || strcmp(t.destination, "h2") == 0))
                                        fail_msg("round %d: %s started towards the draining %s", round, t.guest,
                                                 t.destination);
                        }
                        fake_mig_end("a1", true, NULL, true);
                        fake_mig_end("b1", true, NULL, true);
                }
                assert_string_equal(fake_guest_host("a1"), ch_addr("h3"));
                assert_string_equal(fake_guest_host("b1"), ch_addr("h3"));
                ch_free(c);
        }
}

/* A guest that lands on the evacuated host while the evacuation runs (a
 * migration towards it that had already started) keeps the host out of
 * maintenance: the job fails naming it, the host stays draining. */
static void test_maintenance_relists_the_host_first(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-maint-relist", 3, mem);
        char m[STORE_ID_MAX], e[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        ch_guest("h3", "late", 1 * GIB);
        assert_int_equal(ch_migrate(c, "late", "h1", m), 0);
        ch_tick(c);
        assert_int_equal(ch_sub(c, m, "late").phase, COORD_SUBTASK_PHASE_MIGRATING);
        assert_int_equal(ch_evacuate(c, "h1", true, e), 0);
        ch_tick(c);
        assert_int_equal(ch_sub(c, e, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        fake_mig_end("late", true, NULL, true); /* lands on h1 */
        fake_mig_end("a1", true, NULL, true);
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        StoreJob j = ch_job(c, e);
        assert_int_equal(ch_sub(c, e, "a1").phase, COORD_SUBTASK_PHASE_SUCCEEDED);
        assert_int_equal(j.phase, COORD_JOB_PHASE_FAILED);
        assert_contains(j.error, "not set to maintenance");
        assert_contains(j.error, "late");
        assert_int_equal(ch_host_state(c, "h1"), COORD_HOST_STATE_DRAINING);
        ch_free(c);
}

/* A second evacuation of a host, and a guest already in an unfinished job,
 * are refused with FAILED_PRECONDITION (-EBUSY) naming the other job. */
static void test_second_evacuation_and_busy_guest_are_refused(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-busy", 2, mem);
        char e[STORE_ID_MAX], x[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        ch_guest("h2", "b1", 1 * GIB);
        assert_int_equal(ch_evacuate(c, "h1", false, e), 0);
        assert_int_equal(ch_evacuate(c, "h1", false, x), -EBUSY);
        assert_contains(err_msg(), e);
        assert_int_equal(ch_migrate(c, "a1", NULL, x), -EBUSY);
        assert_contains(err_msg(), "a1");
        assert_contains(err_msg(), e);
        assert_int_equal(ch_active_jobs(c), 1);
        ch_free(c);
}

/* Evacuating a host in maintenance keeps it in maintenance (no demotion to
 * draining), and its guests still leave. */
static void test_evacuating_a_host_in_maintenance_keeps_it(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-maint-keep", 2, mem);
        char e[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        assert_int_equal(coord_host_set_state(c, "h1", COORD_HOST_STATE_MAINTENANCE, NULL), 0);
        assert_int_equal(ch_evacuate(c, "h1", false, e), 0);
        assert_int_equal(ch_host_state(c, "h1"), COORD_HOST_STATE_MAINTENANCE);
        ch_tick(c);
        fake_mig_end("a1", true, NULL, true);
        ch_tick(c);
        assert_int_equal(ch_job(c, e).phase, COORD_JOB_PHASE_SUCCEEDED);
        assert_int_equal(ch_host_state(c, "h1"), COORD_HOST_STATE_MAINTENANCE);
        ch_free(c);
}

/* Guests queued for a destination that became unreachable are placed on
 * another host; when no host can take them they fail, the reason naming
 * the unreachable destination, and the job ends. */
static void test_queued_guests_of_an_unreachable_destination(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB, 8 * GIB };
        Coordinator *c = ch_new("coord-unreachable", 3, mem);
        char e[STORE_ID_MAX];
        ch_guest("h1", "a1", 2 * GIB);
        ch_guest("h1", "a2", 1 * GIB);
        assert_int_equal(ch_evacuate(c, "h1", false, e), 0);
        assert_string_equal(ch_sub(c, e, "a2").destination, "h2");
        ch_tick(c); /* a1 starts; a2 waits for h1's one outgoing slot */
        assert_int_equal(ch_sub(c, e, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        assert_int_equal(ch_sub(c, e, "a2").phase, COORD_SUBTASK_PHASE_QUEUED);

        fake_host_down(ch_addr("h2"), true);
        ch_heartbeats(c, COORD_MISSES_UNHEALTHY);
        ch_tick(c);
        StoreSubtask t = ch_sub(c, e, "a2");
        assert_int_equal(t.phase, COORD_SUBTASK_PHASE_QUEUED);
        assert_string_equal(t.destination, "h3");

        fake_host_down(ch_addr("h3"), true);
        ch_heartbeats(c, COORD_MISSES_UNHEALTHY);
        ch_tick(c);
        t = ch_sub(c, e, "a2");
        assert_int_equal(t.phase, COORD_SUBTASK_PHASE_FAILED);
        assert_contains(t.error, "destination h3 unreachable since");
        assert_contains(t.error, "no other host can take it");
        assert_int_equal(fake_migrate_calls(NULL), 1); /* only a1 ever started */
        ch_free(c);
}

static char health_log[4096];

static void capture_log(LogLevel level, const char *line, void *opaque) {
        size_t n = strlen(health_log);
        snprintf(health_log + n, sizeof(health_log) - n, "%s %s\n", log_level_to_string(level), line);
}

/* Host health transitions are logged once each, by the heartbeat that
 * decided them, with the host as a field (HOST= under journald). */
static void test_host_health_transitions_are_logged(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-health-log", 2, mem);
        health_log[0] = '\0';
        log_set_sink(capture_log, NULL);
        log_set_level(LOG_LEVEL_INFO);
        ch_heartbeats(c, 1);
        assert_contains(health_log, "info ");
        assert_contains(health_log, "host h2 is up host=h2\n"); /* the first answer */
        health_log[0] = '\0';

        fake_host_down(ch_addr("h2"), true);
        ch_heartbeats(c, COORD_MISSES_UNHEALTHY - 1);
        assert_null(strstr(health_log, "h2 is unreachable")); /* a miss or two is not a transition */
        ch_heartbeats(c, 1);
        assert_contains(health_log, "warning ");
        assert_contains(health_log, "host h2 is unreachable: 3 heartbeats missed in a row: ");
        assert_contains(health_log, " host=h2\n");
        ch_heartbeats(c, 2);
        const char *first = strstr(health_log, "is unreachable");
        assert_null(strstr(first + 1, "is unreachable")); /* logged once, not per heartbeat */

        fake_host_down(ch_addr("h2"), false);
        ch_heartbeats(c, 1);
        assert_contains(health_log, "host h2 is up again after ");

        assert_int_equal(coord_host_set_state(c, "h1", COORD_HOST_STATE_MAINTENANCE, NULL), 0);
        assert_contains(health_log, "host h1: state enabled -> maintenance host=h1");
        assert_null(strstr(health_log, "h1 is"));
        log_set_sink(NULL, NULL);
        ch_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_planned_destination_that_became_draining_is_replaced),
                cmocka_unit_test(test_concurrent_evacuations_never_fill_each_other),
                cmocka_unit_test(test_maintenance_relists_the_host_first),
                cmocka_unit_test(test_second_evacuation_and_busy_guest_are_refused),
                cmocka_unit_test(test_evacuating_a_host_in_maintenance_keeps_it),
                cmocka_unit_test(test_queued_guests_of_an_unreachable_destination),
                cmocka_unit_test(test_host_health_transitions_are_logged),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
