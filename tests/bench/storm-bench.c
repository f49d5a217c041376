/* Benchmark: the compounding-downtime storm (issue 6, benchmark 1).
 *
 * The scenario from libvirt's list: ten guests migrate into one host at
 * once, one of them slow to prepare; there the slow guest's VM lock and the
 * domain list lock made every other migration's finish, and every `virsh
 * list`, wait behind it, and downtimes grew from ~2 s to tens of seconds.
 *
 * Two real drover-agents on loopback (tests/agentd/agentd-util.h): a, the
 * source, and b, the destination, started with
 * DROVER_TEST_HOLD=prepare:HOLD_MS:st4 (docs/agent.md): guest st4's
 * incoming preparation sleeps HOLD_MS (default 10 s) after its phase is
 * persisted, with no lock held, as slow NIC setup would.  Ten tiny real
 * guests (64 MiB, TCG, the dirtying test guest with mib=48 rate=5) run on a.
 *
 *  1. solo: each guest migrates a -> b alone and back, SOLO_REPS times
 *     (default 3); its solo downtime is the median of its a -> b runs;
 *  2. the storm: (first the queries alone for 10 s, the machine's own noise)
 *     the lock statistics of both agents are reset, a query
 *     client starts calling ListGuests and GetGuest on b at 100 Hz each,
 *     and ten client threads call Migrate (wait) on a for the ten guests at
 *     once; when all ten are done the lock statistics are read;
 *  3. control: every guest back to a, b restarted without the hold, the
 *     same storm again (no slow guest), so the effect of the slow guest can
 *     be told from that of ten streams on two CPUs.
 * Reported: per guest, its storm downtime / its solo downtime (Drover's
 * STOP->RESUME figure; QEMU's own beside it), the query latency p50/p99/max
 * during each storm, and b's lock max holds (registry, vm, the others).
 * Writes storm-*.dat, storm.gp and storm.png into $DROVER_BENCH_OUT.
 *
 * Targets (issue 6): downtime ratio <= 1.25, query p99 < 5 ms and max < 20 ms,
 * registry max hold < 1 ms, VM lock max hold < 10 ms.  It prints figures and
 * never fails for being slow; it fails when an agent does not come up or a
 * migration fails.
 *
 * Every migration gets a bandwidth of BANDWIDTH_MIB MiB/s (default 32, as
 * a coordinator would give each of ten migrations a share of one link; 0 =
 * unlimited): without a cap, ten loopback streams are limited only by the
 * two CPUs they share, and the figures measure CPU contention.
 *
 *   storm-bench [HOLD_MS [SOLO_REPS [BANDWIDTH_MIB]]]
 *   (meson test -C build --benchmark storm)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agentd-util.h"
#include "bench-util.h"
#include "deadline.h"
#include "err.h"
#include "log.h"
#include "qemuproc.h"
#include "testutil.h"

#define N 10
#define SLOW 4
#define MEM_MIB 64
#define APPEND "mib=48 rate=5"
#define MIGRATE_TIMEOUT_MS 180000
#define QUERY_HZ 100

static char names[N][8];
static TestAgent a, b;
static int hold_ms = 10000;
static uint64_t bandwidth = 32ull << 20; /* per migration; 0 = unlimited */

typedef struct MigOut {
        bool ok;
        char error[600];
        uint64_t downtime_ms, measured_ms, total_ms, bytes;
        uint64_t t_start_ns, t_end_ns;
} MigOut;

/* Migrate @name from @src to @dst and wait for the end. */
static void migrate_bw(TestAgent *src, TestAgent *dst, const char *name, uint64_t bw, MigOut *o) {
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus st;
        char dest[64];
        snprintf(dest, sizeof(dest), "127.0.0.1:%d", dst->port);
        req.guest = (char *) name;
        req.destination = dest;
        p.bandwidth_bytes_per_s = bw;
        req.params = &p;
        memset(o, 0, sizeof(*o));
        o->t_start_ns = now_ns();
        /* the agent answers at once; wait (client side) for the migration */
        Drover__V1__MigrationResult *res = ta_migrate(src->cl, &req, true, MIGRATE_TIMEOUT_MS, &st);
        o->t_end_ns = now_ns();
        if (!res) {
                snprintf(o->error, sizeof(o->error), "Migrate: %s %s", rpc_code_to_string(st.code), st.details);
                return;
        }
        if (!res->success)
                snprintf(o->error, sizeof(o->error), "%s", res->error);
        else {
                o->ok = true;
                o->downtime_ms = res->downtime_ms;
                o->measured_ms = res->measured_downtime_ms;
                o->total_ms = res->total_ms;
                o->bytes = res->transferred_bytes;
        }
        drover__v1__migration_result__free_unpacked(res, NULL);
}

static void migrate(TestAgent *src, TestAgent *dst, const char *name, MigOut *o) {
        migrate_bw(src, dst, name, bandwidth, o);
}

static void migrate_or_die(TestAgent *src, TestAgent *dst, const char *name, MigOut *o) {
        migrate(src, dst, name, o);
        if (!o->ok) {
                fprintf(stderr, "storm-bench: migration of %s failed: %s\n", name, o->error);
                exit(1);
        }
}

/* ---- the query client ----------------------------------------------------------------- */

typedef struct QSample {
        uint64_t t_ns; /* now_ns() when the call was made */
        uint32_t lat_us;
        bool list;
} QSample;

typedef struct Querier {
        RpcClient *cl;
        atomic_bool stop;
        QSample *s;
        size_t n, cap;
        unsigned long errors;
} Querier;

static void q_add(Querier *q, uint64_t t, uint64_t lat_ns, bool list) {
        if (q->n == q->cap) {
                size_t cap = q->cap ? 2 * q->cap : 8192;
                QSample *v = realloc(q->s, cap * sizeof(*v));
                if (!v)
                        return;
                q->s = v;
                q->cap = cap;
        }
        q->s[q->n++] = (QSample){ .t_ns = t, .lat_us = (uint32_t) (lat_ns / 1000), .list = list };
}

/* Every 10 ms: one ListGuests and one GetGuest (round robin over the ten
 * names; NOT_FOUND for a guest not there yet is an answer like any other).
 * A late tick is not made up for. */
static void *querier_main(void *arg) {
        Querier *q = arg;
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        for (unsigned i = 0; !atomic_load(&q->stop); i++) {
                for (int k = 0; k < 2; k++) {
                        ProtobufCMessage *resp = NULL;
                        RpcStatus st;
                        bool list = k == 0;
                        ref.guest = names[i % N];
                        uint64_t t0 = now_ns();
                        int r = list ? rpc_client_unary(q->cl, &drover__v1__agent__descriptor, "ListGuests",
                                                        &lreq.base, 30000, &resp, &st)
                                     : rpc_client_unary(q->cl, &drover__v1__agent__descriptor, "GetGuest", &ref.base,
                                                        30000, &resp, &st);
                        uint64_t t1 = now_ns();
                        if (r < 0 && st.code != RPC_NOT_FOUND)
                                q->errors++;
                        else
                                q_add(q, t0, t1 - t0, list);
                        if (resp)
                                protobuf_c_message_free_unpacked(resp, NULL);
                }
                next.tv_nsec += 1000000000L / QUERY_HZ;
                if (next.tv_nsec >= 1000000000L) {
                        next.tv_sec++;
                        next.tv_nsec -= 1000000000L;
                }
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                if (now.tv_sec > next.tv_sec || (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
                        next = now; /* late: start the next tick now, no burst */
                else
                        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        }
        return NULL;
}

/* ---- agent statistics ------------------------------------------------------------------ */

static Drover__V1__GetAgentStatsResponse *agent_stats(TestAgent *t, bool reset) {
        Drover__V1__GetAgentStatsRequest req = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *resp = NULL;
        RpcStatus st;
        req.reset_locks = reset;
        if (ta_call(t, "GetAgentStats", &req.base, (ProtobufCMessage **) &resp, &st) < 0) {
                fprintf(stderr, "storm-bench: GetAgentStats: %s %s\n", rpc_code_to_string(st.code), st.details);
                return NULL;
        }
        return resp;
}

static const Drover__V1__LockClassStats *lock_of(const Drover__V1__GetAgentStatsResponse *as, const char *name) {
        for (size_t i = 0; as && i < as->n_locks; i++)
                if (strcmp(as->locks[i]->name, name) == 0)
                        return as->locks[i];
        return NULL;
}

static double lock_max_ms(const Drover__V1__GetAgentStatsResponse *as, const char *name) {
        const Drover__V1__LockClassStats *l = lock_of(as, name);
        return l ? (double) l->max_ns / 1e6 : 0;
}

/* ---- one storm --------------------------------------------------------------------------- */

typedef struct Storm {
        const char *label;
        MigOut m[N];
        Querier q;
        uint64_t t0_ns, span_ns;
        Drover__V1__GetAgentStatsResponse *locks_b, *locks_a;
        Samples list, get, all;
} Storm;

typedef struct Mig {
        Storm *s;
        int i;
        pthread_barrier_t *go;
} Mig;

static void *mig_main(void *arg) {
        Mig *m = arg;
        pthread_barrier_wait(m->go);
        migrate(&a, &b, names[m->i], &m->s->m[m->i]);
        return NULL;
}

static void run_storm(Storm *s) {
        pthread_t th[N], qth;
        Mig mg[N];
        pthread_barrier_t go;
        char target[320];
        RpcClientOptions o = { .default_timeout_ms = 30000 };

        snprintf(target, sizeof(target), "unix:%s", b.sock);
        if (rpc_client_new(target, &o, &s->q.cl) < 0) {
                fprintf(stderr, "storm-bench: a client for b: %s\n", err_msg());
                exit(1);
        }
        Drover__V1__GetAgentStatsResponse *x = agent_stats(&b, true);
        if (x)
                drover__v1__get_agent_stats_response__free_unpacked(x, NULL);
        x = agent_stats(&a, true);
        if (x)
                drover__v1__get_agent_stats_response__free_unpacked(x, NULL);

        /* the queries start half a second before the migrations */
        pthread_create(&qth, NULL, querier_main, &s->q);
        sleep_ms(500);
        pthread_barrier_init(&go, NULL, N + 1);
        for (int i = 0; i < N; i++) {
                mg[i] = (Mig){ .s = s, .i = i, .go = &go };
                pthread_create(&th[i], NULL, mig_main, &mg[i]);
        }
        pthread_barrier_wait(&go);
        s->t0_ns = now_ns();
        for (int i = 0; i < N; i++)
                pthread_join(th[i], NULL);
        s->span_ns = now_ns() - s->t0_ns;
        sleep_ms(500);
        atomic_store(&s->q.stop, true);
        pthread_join(qth, NULL);
        pthread_barrier_destroy(&go);
        s->locks_b = agent_stats(&b, false);
        s->locks_a = agent_stats(&a, false);
        rpc_client_free(s->q.cl);
        s->q.cl = NULL;

        for (size_t k = 0; k < s->q.n; k++) {
                samples_add(s->q.s[k].list ? &s->list : &s->get, s->q.s[k].lat_us);
                samples_add(&s->all, s->q.s[k].lat_us);
        }
        samples_sort(&s->list);
        samples_sort(&s->get);
        samples_sort(&s->all);
        for (int i = 0; i < N; i++)
                if (!s->m[i].ok) {
                        fprintf(stderr, "storm-bench: %s: migration of %s failed: %s\n", s->label, names[i],
                                s->m[i].error);
                        exit(1);
                }
}

/* Every guest back to a, one at a time, with no bandwidth cap (not measured). */
static void all_back(void) {
        MigOut o;
        for (int i = 0; i < N; i++) {
                migrate_bw(&b, &a, names[i], 0, &o);
                if (!o.ok) {
                        fprintf(stderr, "storm-bench: migration of %s back to a failed: %s\n", names[i], o.error);
                        exit(1);
                }
        }
}

static double ms_of(uint64_t us) {
        return (double) us / 1000.0;
}

static void print_queries(const Storm *s) {
        const struct { const char *name; const Samples *v; } rows[] = { { "ListGuests", &s->list },
                                                                         { "GetGuest", &s->get },
                                                                         { "both", &s->all } };
        for (size_t i = 0; i < 3; i++)
                printf("| %-22s | %-10s | %6zu | %7.3f | %7.3f | %7.3f |\n", s->label, rows[i].name, rows[i].v->n,
                       ms_of(samples_q(rows[i].v, 0.5)), ms_of(samples_q(rows[i].v, 0.99)),
                       ms_of(samples_max(rows[i].v)));
}

static void print_locks(const char *label, const char *agent, const Drover__V1__GetAgentStatsResponse *as) {
        for (size_t i = 0; as && i < as->n_locks; i++) {
                const Drover__V1__LockClassStats *l = as->locks[i];
                if (l->count == 0)
                        continue;
                printf("| %-22s | %-5s | %-10s | %8llu | %11.3f | %11.3f |\n", label, agent, l->name,
                       (unsigned long long) l->count, (double) l->max_ns / 1e6, (double) l->wait_max_ns / 1e6);
        }
}

static int cmp_double(const void *x, const void *y) {
        double p = *(const double *) x, q = *(const double *) y;
        return p < q ? -1 : p > q;
}

int main(int argc, char **argv) {
        int solo_reps = 3;
        char hold_env[96], machine[512];
        static Storm slow = { .label = "storm, st4 slow" }, ctl = { .label = "control, no slow guest" };
        double solo_meas[N], solo_qemu[N];

        if (argc > 1)
                hold_ms = atoi(argv[1]);
        if (argc > 2)
                solo_reps = atoi(argv[2]);
        if (argc > 3)
                bandwidth = (uint64_t) atoll(argv[3]) << 20;
        if (hold_ms < 0)
                hold_ms = 10000;
        if (solo_reps < 1)
                solo_reps = 1;
        tu_require_qemu();
        log_set_level(LOG_LEVEL_ERROR);
        for (int i = 0; i < N; i++)
                snprintf(names[i], sizeof(names[i]), "st%d", i);
        snprintf(hold_env, sizeof(hold_env), "DROVER_TEST_HOLD=prepare:%d:%s", hold_ms, names[SLOW]);
        const char *dir_a = tu_tmpdir("storm-a"), *dir_b = tu_tmpdir("storm-b");
        if (test_agent_start(&a, dir_a, NULL) < 0 || test_agent_start(&b, dir_b, hold_env) < 0) {
                fprintf(stderr, "storm-bench: an agent did not start (logs in %s, %s)\n", dir_a, dir_b);
                return 1;
        }
        bench_machine(machine, sizeof(machine));
        char bw[48];
        if (bandwidth)
                snprintf(bw, sizeof(bw), "%llu MiB/s", (unsigned long long) (bandwidth >> 20));
        else
                snprintf(bw, sizeof(bw), "unlimited");
        printf("storm: %d tiny guests (%d MiB, TCG, %s) migrate from agent a into agent b on loopback,\n"
               "bandwidth %s per migration; b runs with %s;\nqueries on b at %d Hz (ListGuests and GetGuest each)\n"
               "machine: %s\n\n",
               N, MEM_MIB, APPEND, bw, hold_env, QUERY_HZ, machine);
        for (int i = 0; i < N; i++) {
                char *json = test_guest_json(names[i], NULL, MEM_MIB, APPEND);
                Drover__V1__DefineRequest d = DROVER__V1__DEFINE_REQUEST__INIT;
                Drover__V1__StartRequest sr = DROVER__V1__START_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                RpcStatus st;
                d.definition_json = json;
                int r = ta_call(&a, "Define", &d.base, &resp, &st);
                free(json);
                if (r >= 0) {
                        protobuf_c_message_free_unpacked(resp, NULL);
                        resp = NULL;
                        sr.guest = names[i];
                        r = ta_call(&a, "Start", &sr.base, &resp, &st);
                }
                if (r < 0) {
                        fprintf(stderr, "storm-bench: define/start %s: %s %s\n", names[i], rpc_code_to_string(st.code),
                                st.details);
                        return 1;
                }
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        sleep_ms(1000);

        /* 1. solo */
        for (int i = 0; i < N; i++) {
                double m[16], q[16];
                int reps = solo_reps < 16 ? solo_reps : 16;
                for (int k = 0; k < reps; k++) {
                        MigOut o, back;
                        migrate_or_die(&a, &b, names[i], &o);
                        migrate_bw(&b, &a, names[i], 0, &back);
                        if (!back.ok) {
                                fprintf(stderr, "storm-bench: %s back to a: %s\n", names[i], back.error);
                                exit(1);
                        }
                        m[k] = (double) o.measured_ms;
                        q[k] = (double) o.downtime_ms;
                }
                qsort(m, (size_t) reps, sizeof(double), cmp_double);
                qsort(q, (size_t) reps, sizeof(double), cmp_double);
                solo_meas[i] = m[reps / 2];
                solo_qemu[i] = q[reps / 2];
                printf("solo %s: downtime %.0f ms (QEMU %.0f ms), median of %d\n", names[i], solo_meas[i],
                       solo_qemu[i], reps);
                fflush(stdout);
        }

        /* the same queries for 10 s with nothing migrating: the machine's own noise */
        static Storm quiet = { .label = "quiet, no migration" };
        {
                char target[320];
                RpcClientOptions o = { .default_timeout_ms = 30000 };
                pthread_t qth;
                snprintf(target, sizeof(target), "unix:%s", b.sock);
                if (rpc_client_new(target, &o, &quiet.q.cl) < 0)
                        return 1;
                pthread_create(&qth, NULL, querier_main, &quiet.q);
                sleep_ms(10000);
                atomic_store(&quiet.q.stop, true);
                pthread_join(qth, NULL);
                rpc_client_free(quiet.q.cl);
                for (size_t k = 0; k < quiet.q.n; k++) {
                        samples_add(quiet.q.s[k].list ? &quiet.list : &quiet.get, quiet.q.s[k].lat_us);
                        samples_add(&quiet.all, quiet.q.s[k].lat_us);
                }
                samples_sort(&quiet.list);
                samples_sort(&quiet.get);
                samples_sort(&quiet.all);
        }

        /* 2. the storm with the slow guest */
        run_storm(&slow);
        printf("storm: all %d migrated in %.2f s\n", N, (double) slow.span_ns / 1e9);
        fflush(stdout);

        /* 3. the control storm: b without the hold */
        all_back();
        test_agent_stop(&b);
        if (test_agent_start(&b, dir_b, NULL) < 0) {
                fprintf(stderr, "storm-bench: agent b did not restart\n");
                return 1;
        }
        sleep_ms(500);
        run_storm(&ctl);
        printf("control: all %d migrated in %.2f s\n\n", N, (double) ctl.span_ns / 1e9);

        /* the report */
        double ratios[N], ratios_ctl[N];
        printf("| guest | solo ms (QEMU) | storm ms (QEMU) | ratio | control ms (QEMU) | ratio | storm: Migrate "
               "returned at s | storm MiB |\n");
        printf("|-------|---------------:|----------------:|------:|------------------:|------:|---------------------"
               "---------:|----------:|\n");
        for (int i = 0; i < N; i++) {
                const MigOut *m = &slow.m[i], *c = &ctl.m[i];
                double base = solo_meas[i] > 0 ? solo_meas[i] : 1;
                ratios[i] = (double) m->measured_ms / base;
                ratios_ctl[i] = (double) c->measured_ms / base;
                printf("| %-5s | %6.0f (%5.0f) | %7llu (%5llu) | %5.2f | %9llu (%5llu) | %5.2f | %28.2f | %9.1f |%s\n",
                       names[i], solo_meas[i], solo_qemu[i], (unsigned long long) m->measured_ms,
                       (unsigned long long) m->downtime_ms, ratios[i], (unsigned long long) c->measured_ms,
                       (unsigned long long) c->downtime_ms, ratios_ctl[i],
                       (double) (m->t_end_ns - slow.t0_ns) / 1e9, (double) m->bytes / (1024.0 * 1024),
                       i == SLOW ? " slow" : "");
        }
        double sr[N], sc[N];
        memcpy(sr, ratios, sizeof(sr));
        memcpy(sc, ratios_ctl, sizeof(sc));
        qsort(sr, N, sizeof(double), cmp_double);
        qsort(sc, N, sizeof(double), cmp_double);
        double added[N], added_ctl[N];
        for (int i = 0; i < N; i++) {
                added[i] = (double) slow.m[i].measured_ms - solo_meas[i];
                added_ctl[i] = (double) ctl.m[i].measured_ms - solo_meas[i];
        }
        qsort(added, N, sizeof(double), cmp_double);
        qsort(added_ctl, N, sizeof(double), cmp_double);
        double others_last = 0;
        for (int i = 0; i < N; i++)
                if (i != SLOW && (double) (slow.m[i].t_end_ns - slow.t0_ns) / 1e9 > others_last)
                        others_last = (double) (slow.m[i].t_end_ns - slow.t0_ns) / 1e9;
        printf("\ndowntime ratio (storm / solo): median %.2f, max %.2f (%s); control storm: median %.2f, max %.2f\n",
               sr[N / 2], sr[N - 1], sr[N - 1] <= 1.25 ? "target <= 1.25 met" : "target <= 1.25 MISSED",
               sc[N / 2], sc[N - 1]);
        printf("downtime added by the storm (storm - solo): median %+.0f ms, max %+.0f ms; control storm: median "
               "%+.0f ms, max %+.0f ms\n",
               added[N / 2], added[N - 1], added_ctl[N / 2], added_ctl[N - 1]);
        printf("the nine other guests were all done %.2f s after the start; the slow guest %.2f s (hold %d ms)\n\n",
               others_last, (double) (slow.m[SLOW].t_end_ns - slow.t0_ns) / 1e9, hold_ms);

        printf("| run                    | query      | calls  | p50 ms  | p99 ms  | max ms  |\n");
        printf("|------------------------|------------|--------|---------|---------|---------|\n");
        print_queries(&quiet);
        print_queries(&slow);
        print_queries(&ctl);
        if (slow.q.errors || ctl.q.errors)
                printf("(query errors: %lu in the storm, %lu in the control)\n", slow.q.errors, ctl.q.errors);
        printf("\nquery targets (storm): p99 %.3f ms (< 5 ms: %s), max %.3f ms (< 20 ms: %s)\n\n",
               ms_of(samples_q(&slow.all, 0.99)), ms_of(samples_q(&slow.all, 0.99)) < 5 ? "met" : "MISSED",
               ms_of(samples_max(&slow.all)), ms_of(samples_max(&slow.all)) < 20 ? "met" : "MISSED");

        printf("| run                    | agent | lock class | holds    | max hold ms | max wait ms |\n");
        printf("|------------------------|-------|------------|----------|-------------|-------------|\n");
        print_locks(slow.label, "b", slow.locks_b);
        print_locks(slow.label, "a", slow.locks_a);
        print_locks(ctl.label, "b", ctl.locks_b);
        printf("\nhold-time histograms on b during the storm (holds < 1 µs, < 10 µs, < 100 µs, < 1 ms, < 10 ms, "
               "< 100 ms, < 1 s, >= 1 s):\n");
        const char *hist_names[] = { "registry", "vm", "vm-status" };
        for (size_t h = 0; h < 3; h++) {
                const Drover__V1__LockClassStats *l = lock_of(slow.locks_b, hist_names[h]);
                printf("  %-9s", hist_names[h]);
                for (size_t k = 0; l && k < l->n_histogram; k++)
                        printf(" %7llu", (unsigned long long) l->histogram[k]);
                printf("\n");
        }
        printf("\nlock targets (storm, agent b): registry max hold %.3f ms (< 1 ms: %s), vm max hold %.3f ms "
               "(< 10 ms: %s)\n",
               lock_max_ms(slow.locks_b, "registry"), lock_max_ms(slow.locks_b, "registry") < 1 ? "met" : "MISSED",
               lock_max_ms(slow.locks_b, "vm"), lock_max_ms(slow.locks_b, "vm") < 10 ? "met" : "MISSED");

        /* data and the plot: the migrations as bars over time, the query latency below */
        FILE *f = bench_open("storm-migrations.dat");
        if (f) {
                fprintf(f, "# index name start_s end_s slow\n");
                for (int i = 0; i < N; i++)
                        fprintf(f, "%d %s %.3f %.3f %d\n", i, names[i],
                                (double) ((int64_t) slow.m[i].t_start_ns - (int64_t) slow.t0_ns) / 1e9,
                                (double) (slow.m[i].t_end_ns - slow.t0_ns) / 1e9, i == SLOW);
                fclose(f);
        }
        f = bench_open("storm-queries.dat");
        if (f) {
                fprintf(f, "# t_s latency_ms kind(0 list, 1 get)\n");
                for (size_t k = 0; k < slow.q.n; k++)
                        fprintf(f, "%.4f %.3f %d\n",
                                (double) ((int64_t) slow.q.s[k].t_ns - (int64_t) slow.t0_ns) / 1e9,
                                slow.q.s[k].lat_us / 1000.0, slow.q.s[k].list ? 0 : 1);
                fclose(f);
        }
        f = bench_open("storm-downtime.dat");
        if (f) {
                fprintf(f, "# name solo_ms storm_ms control_ms\n");
                for (int i = 0; i < N; i++)
                        fprintf(f, "%s%s %.0f %llu %llu\n", names[i], i == SLOW ? "(slow)" : "", solo_meas[i],
                                (unsigned long long) slow.m[i].measured_ms, (unsigned long long) ctl.m[i].measured_ms);
                fclose(f);
        }
        f = bench_open("storm.gp");
        if (f) {
                double xmax = (double) slow.span_ns / 1e9 + 0.6, ymax = 10;
                for (int i = 0; i < N; i++) {
                        double v[3] = { solo_meas[i], (double) slow.m[i].measured_ms, (double) ctl.m[i].measured_ms };
                        for (int k = 0; k < 3; k++)
                                ymax = v[k] * 1.45 > ymax ? v[k] * 1.45 : ymax;
                }
                fprintf(f,
                        "set terminal pngcairo size 760,620 font ',9'\n"
                        "set output 'storm.png'\n"
                        "set multiplot layout 3,1 title 'Storm: 10 guests into one agent, st4 held %d ms in prepare "
                        "(no lock held)'\n"
                        "set xrange [-0.5:%.2f]\n"
                        "set lmargin 10\n"
                        "set title 'Migrate calls on the source (start to end)'\n"
                        "set ytics 1\nset yrange [-0.7:%d.7]\nset ylabel 'guest'\nset grid x\nunset key\n"
                        "plot 'storm-migrations.dat' using 3:1:($4-$3):(0):($5 > 0.5 ? 7 : 3) with vectors nohead "
                        "lw 6 lc variable\n"
                        "set title 'Query latency on the destination agent (100 Hz ListGuests + 100 Hz GetGuest)'\n"
                        "set logscale y\nset yrange [0.02:100]\nset ytics auto\nset ylabel 'ms'\nset xlabel "
                        "'seconds since the migrations started'\nset key top center horizontal opaque\n"
                        "plot 'storm-queries.dat' using 1:($3==0 ? $2 : 1/0) with points pt 7 ps 0.3 lc rgb "
                        "'#4477aa' title 'ListGuests', '' using 1:($3==1 ? $2 : 1/0) with points pt 7 ps 0.3 lc rgb "
                        "'#ee7733' title 'GetGuest', 20 with lines dt 2 lc rgb '#cc3311' title 'max target 20 ms', "
                        "5 with lines dt 3 lc rgb '#999999' title 'p99 target 5 ms'\n"
                        "unset logscale y\nunset xlabel\nset autoscale x\nset xrange [*:*]\n"
                        "set title 'Downtime per guest (STOP on a -> RESUME on b)'\nset ylabel 'ms'\nset yrange "
                        "[0:%.0f]\n"
                        "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.7 "
                        "border -1\nset boxwidth 0.9\nset key top left horizontal\n"
                        "plot 'storm-downtime.dat' using 2:xtic(1) title 'solo (median)' lc rgb '#bbbbbb', '' using 3 "
                        "title 'storm' lc rgb '#4477aa', '' using 4 title 'control storm (no slow guest)' lc rgb "
                        "'#66ccee'\n"
                        "unset multiplot\n",
                        hold_ms, xmax, N - 1, ymax);
                fclose(f);
                bench_plot("storm.gp");
        }

        for (int i = 0; i < N; i++) {
                Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
                ProtobufCMessage *resp = NULL;
                RpcStatus st;
                ref.guest = names[i];
                if (ta_call(&b, "Destroy", &ref.base, &resp, &st) >= 0)
                        protobuf_c_message_free_unpacked(resp, NULL);
        }
        if (slow.locks_a)
                drover__v1__get_agent_stats_response__free_unpacked(slow.locks_a, NULL);
        if (slow.locks_b)
                drover__v1__get_agent_stats_response__free_unpacked(slow.locks_b, NULL);
        if (ctl.locks_a)
                drover__v1__get_agent_stats_response__free_unpacked(ctl.locks_a, NULL);
        if (ctl.locks_b)
                drover__v1__get_agent_stats_response__free_unpacked(ctl.locks_b, NULL);
        test_agent_stop(&a);
        test_agent_stop(&b);
        test_agent_kill_guests(&a);
        test_agent_kill_guests(&b);
        return 0;
}
