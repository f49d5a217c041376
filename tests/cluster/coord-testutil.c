/* The coordinator cluster tests' shared guests, job readers and checks
 * (see coord-testutil.h). */
#define _GNU_SOURCE
#include "coord-testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "deadline.h"
#include "testutil.h"

const char *const ctu_names[N_GUESTS] = { "ev0", "ev1", "ev2", "ev3", "ev4", "ev5", "ev6", "ev7" };
const int ctu_mems[N_GUESTS] = { 128, 96, 64, 128, 96, 64, 128, 96 };

double ctu_secs_since(uint64_t t0_ns) {
        return (double) (now_ns() - t0_ns) / 1e9;
}

int ctu_guest_index(const char *name) {
        for (int i = 0; i < N_GUESTS; i++)
                if (strcmp(ctu_names[i], name) == 0)
                        return i;
        return -1;
}

int ctu_count_phase(json_object *job, const char *phase) {
        json_object *subs = cj_get(job, "subtasks");
        int n = 0;
        for (size_t i = 0; i < cj_len(subs); i++)
                n += strcmp(cj_str(cj_idx(subs, i), "phase"), phase) == 0;
        return n;
}

json_object *ctu_sub_of(json_object *job, const char *guest) {
        json_object *subs = cj_get(job, "subtasks");
        for (size_t i = 0; i < cj_len(subs); i++)
                if (strcmp(cj_str(cj_idx(subs, i), "guest"), guest) == 0)
                        return cj_idx(subs, i);
        return NULL;
}

int ctu_count_events(json_object *job, const char *prefix, bool anywhere) {
        json_object *h = cj_get(job, "history");
        int n = 0;
        for (size_t i = 0; i < cj_len(h); i++) {
                const char *t = cj_str(cj_idx(h, i), "text");
                n += anywhere ? strstr(t, prefix) != NULL : strncmp(t, prefix, strlen(prefix)) == 0;
        }
        return n;
}

void ctu_print_history(json_object *job) {
        json_object *h = cj_get(job, "history");
        uint64_t t0 = (uint64_t) cj_int(job, "created_unix_ms");
        for (size_t i = 0; i < cj_len(h); i++)
                printf("#     %+8.3f s  %s\n", (double) ((uint64_t) cj_int(cj_idx(h, i), "time_unix_ms") - t0) / 1000.0,
                       cj_str(cj_idx(h, i), "text"));
        fflush(stdout);
}

void ctu_start_guests(Cluster *c, int n) {
        char uuid[64], append[64];
        for (int i = 0; i < n; i++) {
                snprintf(uuid, sizeof(uuid), "6d1d2a4e-0000-4000-8000-00000000c0%02d", i);
                snprintf(append, sizeof(append), "mib=%d rate=%d", ctu_mems[i] - 16, 2 + i % 3);
                cluster_guest_start(c, A, ctu_names[i], uuid, ctu_mems[i], append);
        }
}

const ClusterCoordOptions ctu_limits_2x2 = {
        .max_outgoing = 2,
        .max_incoming = 2,
        /* 1,250,000,000 / the default 400,000,000 per stream = 3 slots, capped at 2 */
        .link_bytes_per_s = { 1250000000, 1250000000, 1250000000 },
};

void ctu_assert_all_run_once(Cluster *c, const int expect[N_GUESTS], int n) {
        char why[512];
        int before[N_GUESTS][NETNS_MAX_HOSTS];
        for (int i = 0; i < n; i++) {
                int owner = cluster_wait_single_owner(c, ctu_names[i], 20000, why, sizeof(why));
                if (owner < 0)
                        fail_msg("%s does not run exactly once: %s", ctu_names[i], why);
                if (owner != expect[i])
                        fail_msg("%s runs on host %c, expected host %c", ctu_names[i], 'a' + owner, 'a' + expect[i]);
        }
        for (int i = 0; i < n; i++)
                for (int h = 0; h < c->n; h++)
                        before[i][h] = cluster_serial_seconds(c, h, ctu_names[i]);
        /* every owner must print 2 more lines; on a loaded 2-core machine a
         * guest that just migrated may take longer than 2 s for them, so
         * wait up to 8 s (the other hosts must stay silent all along) */
        sleep_ms(3000);
        for (int waited = 3000; waited < 8000; waited += 250) {
                bool all = true;
                for (int i = 0; i < n; i++)
                        all &= cluster_serial_seconds(c, expect[i], ctu_names[i]) >= before[i][expect[i]] + 2;
                if (all)
                        break;
                sleep_ms(250);
        }
        for (int i = 0; i < n; i++)
                for (int h = 0; h < c->n; h++) {
                        int now = cluster_serial_seconds(c, h, ctu_names[i]);
                        if (h == expect[i] && now < before[i][h] + 2)
                                fail_msg("%s: its serial counter does not advance on host %c (%d -> %d)", ctu_names[i],
                                         'a' + h, before[i][h], now);
                        if (h != expect[i] && now != before[i][h])
                                fail_msg("%s: its serial counter advances on host %c too (%d -> %d)", ctu_names[i],
                                         'a' + h, before[i][h], now);
                }
}

void ctu_assert_migrated_once(Cluster *c, json_object *sub, bool agent_forgot) {
        const char *g = cj_str(sub, "guest"), *op = cj_str(sub, "op_id");
        Drover__V1__MigrationResult *r = cluster_get_migration(c, A, g);
        if (!r && !agent_forgot)
                fail_msg("%s: GetMigration on host a knows no migration", g);
        if (r && (strcmp(r->op_id, op) != 0 || !r->done || !r->success))
                fail_msg("%s: host a's last migration is %s (done %d, success %d), the sub-task's op is %s", g, r->op_id,
                         r->done, r->success, op);
        if (r)
                drover__v1__migration_result__free_unpacked(r, NULL);
        int dest = cluster_host_index(cj_str(sub, "destination"));
        r = dest >= 0 ? cluster_get_migration(c, dest, g) : NULL;
        if (r && strcmp(r->op_id, op) != 0)
                fail_msg("%s: %s's last migration is %s, the sub-task's op is %s", g, cj_str(sub, "destination"),
                         r->op_id, op);
        if (r)
                drover__v1__migration_result__free_unpacked(r, NULL);
        char needle[160], *log = tu_read_file(tu_path(c->host[A].dir, "agent.log"), NULL);
        int completed = 0, failed = 0;
        snprintf(needle, sizeof(needle), "migration %s of %s ", op, g);
        for (char *p = log; p && (p = strstr(p, needle)); p += strlen(needle)) {
                const char *rest = p + strlen(needle);
                completed += strncmp(rest, "completed", 9) == 0;
                failed += strncmp(rest, "failed", 6) == 0;
        }
        free(log);
        if (completed != 1 || failed != 0)
                fail_msg("%s: host a's log shows op %s completed %d times, failed %d times", g, op, completed, failed);
}

void ctu_assert_op_ids_distinct(json_object *job) {
        json_object *subs = cj_get(job, "subtasks");
        for (size_t i = 0; i < cj_len(subs); i++) {
                const char *op = cj_str(cj_idx(subs, i), "op_id");
                if (!op[0])
                        continue;
                for (size_t k = i + 1; k < cj_len(subs); k++)
                        if (strcmp(op, cj_str(cj_idx(subs, k), "op_id")) == 0)
                                fail_msg("op id %s is used by two sub-tasks", op);
        }
}

void ctu_print_subtasks(json_object *job) {
        json_object *subs = cj_get(job, "subtasks");
        int64_t t0 = cj_int(job, "created_unix_ms");
        for (size_t i = 0; i < cj_len(subs); i++) {
                json_object *s = cj_idx(subs, i);
                int64_t st = cj_int(s, "started_unix_ms"), fi = cj_int(s, "finished_unix_ms");
                printf("#   %-4s %s -> %s  %-9s  start %+7.2f s  end %+7.2f s  downtime %lld ms (%lld measured)  "
                       "%.1f MiB  op %s%s%s\n",
                       cj_str(s, "guest"), cj_str(s, "source"), cj_str(s, "destination"), cj_str(s, "phase"),
                       st ? (double) (st - t0) / 1000.0 : 0.0, fi ? (double) (fi - t0) / 1000.0 : 0.0,
                       (long long) cj_int(s, "downtime_ms"), (long long) cj_int(s, "measured_downtime_ms"),
                       (double) cj_int(s, "transferred_bytes") / MIB, cj_str(s, "op_id"),
                       cj_str(s, "error")[0] ? ": " : "", cj_str(s, "error"));
        }
        fflush(stdout);
}

void ctu_evacuate_async(Cluster *c, const char *bandwidth_mib, char *id, size_t size) {
        int code;
        json_object *r = bandwidth_mib ? cluster_ctl_json(c, CTL_MS, &code, "evacuate", "host-a", "--bandwidth",
                                                          bandwidth_mib, NULL)
                                       : cluster_ctl_json(c, CTL_MS, &code, "evacuate", "host-a", NULL);
        json_object *job = cj_get(r, "job");
        if (code != 0 || !job)
                fail_msg("droverctl evacuate host-a --json: exit %d", code);
        snprintf(id, size, "%s", cj_str(job, "id"));
        assert_int_equal(cj_len(cj_get(job, "subtasks")), N_GUESTS);
        json_object_put(r);
}

json_object *ctu_wait_mid_run(Cluster *c, const char *id, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                json_object *j = cluster_job_get(c, id);
                int done = ctu_count_phase(j, "done"), mig = ctu_count_phase(j, "migrating");
                int q = ctu_count_phase(j, "queued");
                if (done >= 1 && mig >= 1 && q >= 1)
                        return j;
                if (deadline_expired(d) || strcmp(cj_str(j, "phase"), "running") != 0)
                        fail_msg("job %s never had a migrated, a migrating and a queued guest at once (phase %s, %d "
                                 "done, %d migrating, %d queued)", id, cj_str(j, "phase"), done, mig, q);
                json_object_put(j);
                sleep_ms(100);
        }
}

void ctu_assert_each_migrated_once(Cluster *c, json_object *job, int expect[N_GUESTS]) {
        for (int i = 0; i < N_GUESTS; i++) {
                json_object *s = ctu_sub_of(job, ctu_names[i]);
                char p[96];
                expect[i] = cluster_host_index(cj_str(s, "destination"));
                if (expect[i] != B && expect[i] != C)
                        fail_msg("%s: destination '%s', expected host-b or host-c", ctu_names[i],
                                 cj_str(s, "destination"));
                /* exactly one migration per guest; a re-queued one ("never ran") may start twice, or
                 * once: a coordinator killed after storing the sub-task as migrating but before the
                 * agent's answer never logged the first "started" (the agent never got the call) */
                snprintf(p, sizeof(p), "%s migrated:", ctu_names[i]);
                int migrated = ctu_count_events(job, p, false);
                snprintf(p, sizeof(p), "%s started:", ctu_names[i]);
                int started = ctu_count_events(job, p, false);
                snprintf(p, sizeof(p), "%s: its migration never ran", ctu_names[i]);
                int requeued = ctu_count_events(job, p, false);
                if (migrated != 1 || started < 1 || started > 1 + requeued)
                        fail_msg("%s: %d migrated, %d started, %d re-queued events", ctu_names[i], migrated, started,
                                 requeued);
                ctu_assert_migrated_once(c, s, false);
        }
}
