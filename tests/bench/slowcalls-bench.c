/* Benchmark: slow calls beside incoming migrations (the agent's lanes).
 *
 * Before the lanes, every call held one of the agent's gRPC workers for
 * its whole run, so 24 Shutdowns of guests that ignore ACPI (each waits
 * for its timeout) took every worker, and a source paused in its
 * switch-over waited for a worker to take its MigrateFinish.  This
 * benchmark checks that such a burst no longer costs the migrations or
 * the readers of the destination anything (docs/agent.md, "Lanes" and
 * "Operations").
 *
 * Two real drover-agents on loopback (tests/agentd/agentd-util.h): a, the
 * source, and b, the destination.  b runs 24 tiny guests that ignore ACPI
 * (the dirtying test guest has no ACPI; "mib=1 rate=0 hz=20" keeps it idle);
 * a runs 8 tiny guests (64 MiB, TCG, mib=48 rate=5).  Phases, each with a
 * query client calling ListGuests and GetGuest on b at 100 Hz each:
 *
 *  1. baseline: the 8 migrate a -> b at once (one client thread each:
 *     Migrate, then the client-side wait for its operation);
 *  2. shutdown burst: 24 Shutdowns of b's idle guests at once (timeout
 *     SHUTDOWN_S, default 30 s, no force: they outlast the migrations and
 *     then fail, the guests keep running); once all 24 are in flight, the
 *     same 8 migrations;
 *  3. baseline again (the two baselines tell the run-to-run noise);
 *  4. start burst (unless STARTS is 0): b's 24 guests destroyed, then 24
 *     Starts at once and, once in flight, the 8 migrations.
 * Between phases the 8 guests go back to a (not measured).
 *
 * Reported per migration: Drover's downtime (STOP on a -> RESUME on b),
 * QEMU's, and the source's MigrateFinish round trip
 * (MigrationResult.finish_call_ms), each burst / baseline (the mean of the
 * two baselines) per guest with the median and max; the query latency
 * p50/p99/max per phase; b's lanes (served, refused, max wait) and lock
 * maxima per phase, and the load average around each phase.
 * Targets: burst / baseline <= 1.1, query p99 < 5 ms and max < 20 ms.  It
 * prints figures and never fails for being slow; it fails (exit 1) when a
 * migration fails or an agent dies, and cleans up every guest and agent
 * either way.
 *
 *   slowcalls-bench [SHUTDOWN_S [STARTS [BANDWIDTH_MIB]]]
 *   (meson test -C build --benchmark slowcalls)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentd-util.h"
#include "bench-agent.h"
#include "bench-util.h"
#include "cleanup.h"
#include "deadline.h"
#include "err.h"
#include "log.h"
#include "qemuproc.h"
#include "testutil.h"

#define NMIG 8
#define NIDLE 24
#define MIG_MEM_MIB 64
#define MIG_APPEND "mib=48 rate=5"
#define IDLE_MEM_MIB 32
#define IDLE_APPEND "mib=1 rate=0 hz=20 quiet=1"
#define MIGRATE_TIMEOUT_MS 180000
#define QUERY_HZ 100

static char mig_names[NMIG][8], idle_names[NIDLE][8];
static const char *query_names[NMIG + NIDLE];
static TestAgent a, b;
static uint64_t bandwidth = 32ull << 20; /* per migration; 0 = unlimited */
static int shutdown_timeout_ms = 30000;

typedef enum Burst { BURST_NONE, BURST_SHUTDOWN, BURST_START } Burst;

/* One call of a burst, as the client saw it. */
typedef struct BurstCall {
        int r;
        RpcStatus st;
        char op[128];
        uint64_t lat_ns;
} BurstCall;

typedef struct Phase {
        const char *label;
        Burst burst;
        BenchMig m[NMIG];
        BenchQuerier q;
        Drover__V1__GetAgentStatsResponse *before, *after; /* b, around the phase (locks reset before) */
        double load_before, load_after;                    /* the 1-minute load average */
        BurstCall calls[NIDLE];
        uint64_t burst_ns;    /* the burst's calls all answered after */
        int running_at_end;   /* burst operations still running when the last migration ended */
        int op_ok, op_failed; /* their outcomes, once they ended */
        char op_failure[800]; /* the first failure */
        uint64_t t0_ns, span_ns;
} Phase;

static void cleanup(void) {
        test_agent_stop(&a);
        test_agent_stop(&b);
        test_agent_kill_guests(&a);
        test_agent_kill_guests(&b);
}

static void _printf_(1, 2) die(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "slowcalls-bench: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
        exit(1); /* cleanup() runs at exit */
}

static void check_agents(const char *when) {
        TestAgent *t[] = { &a, &b };
        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                int st;
                if (t[i]->pid > 0 && tu_reap(t[i]->pid, &st)) {
                        t[i]->pid = 0;
                        die("agent %s died %s (wait status %d; log %s)", i ? "b" : "a", when, st, t[i]->log);
                }
        }
}

/* ---- the burst and the migrations ---------------------------------------------------- */

typedef struct Worker {
        Phase *p;
        int i;
        pthread_barrier_t *go;
} Worker;

static void *burst_main(void *arg) {
        Worker *w = arg;
        BurstCall *c = &w->p->calls[w->i];
        Drover__V1__ShutdownRequest sd = DROVER__V1__SHUTDOWN_REQUEST__INIT;
        Drover__V1__StartRequest sr = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GuestStatus *resp = NULL;
        bool shutdown = w->p->burst == BURST_SHUTDOWN;
        sd.guest = sr.guest = idle_names[w->i];
        sd.timeout_ms = (uint32_t) shutdown_timeout_ms;
        sd.force = false;
        pthread_barrier_wait(w->go);
        /* the call itself (it answers at once); the wait comes later */
        uint64_t t0 = now_ns();
        c->r = rpc_client_unary(b.cl, &drover__v1__agent__descriptor, shutdown ? "Shutdown" : "Start",
                                shutdown ? &sd.base : &sr.base, 30000, (ProtobufCMessage **) &resp, &c->st);
        c->lat_ns = now_ns() - t0;
        if (c->r >= 0) {
                snprintf(c->op, sizeof(c->op), "%s", resp->operation_id);
                drover__v1__guest_status__free_unpacked(resp, NULL);
        }
        return NULL;
}

static void *mig_main(void *arg) {
        Worker *w = arg;
        pthread_barrier_wait(w->go);
        bench_migrate(&a, &b, mig_names[w->i], bandwidth, MIGRATE_TIMEOUT_MS, &w->p->m[w->i]);
        return NULL;
}

/* Release @n threads running @fn at once and join them. */
static void run_at_once(Phase *p, int n, void *(*fn)(void *)) {
        pthread_t th[NIDLE];
        Worker w[NIDLE];
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, (unsigned) n + 1);
        for (int i = 0; i < n; i++) {
                w[i] = (Worker){ .p = p, .i = i, .go = &go };
                if (pthread_create(&th[i], NULL, fn, &w[i]) != 0)
                        die("pthread_create failed");
        }
        pthread_barrier_wait(&go);
        for (int i = 0; i < n; i++)
                pthread_join(th[i], NULL);
        pthread_barrier_destroy(&go);
}

/* How many of the burst's operations are still running. */
static int burst_running(const Phase *p) {
        int n = 0;
        for (int i = 0; i < NIDLE; i++) {
                Drover__V1__OperationRef ref = DROVER__V1__OPERATION_REF__INIT;
                Drover__V1__Operation *op = NULL;
                RpcStatus st;
                if (p->calls[i].r < 0)
                        continue;
                ref.op_id = (char *) p->calls[i].op;
                if (rpc_client_unary(b.cl, &drover__v1__agent__descriptor, "GetOperation", &ref.base, 30000,
                                     (ProtobufCMessage **) &op, &st) < 0)
                        continue;
                n += !op->done;
                drover__v1__operation__free_unpacked(op, NULL);
        }
        return n;
}

static void run_phase(Phase *p) {
        printf("phase: %s\n", p->label);
        fflush(stdout);
        p->load_before = bench_load1();
        p->before = bench_agent_stats(&b, true);
        if (bench_querier_start(&p->q, &b, query_names, NMIG + NIDLE, QUERY_HZ) < 0)
                die("no query client");
        sleep_ms(500); /* the queries start half a second before */
        p->t0_ns = now_ns();
        if (p->burst != BURST_NONE) {
                run_at_once(p, NIDLE, burst_main);
                p->burst_ns = now_ns() - p->t0_ns;
                for (int i = 0; i < NIDLE; i++)
                        if (p->calls[i].r < 0)
                                printf("  %s %s refused: %s %s\n", p->burst == BURST_SHUTDOWN ? "Shutdown" : "Start",
                                       idle_names[i], rpc_code_to_string(p->calls[i].st.code),
                                       p->calls[i].st.details);
                sleep_ms(100); /* in flight: the power-downs sent, the launches begun */
        }
        uint64_t t_mig = now_ns();
        run_at_once(p, NMIG, mig_main);
        p->span_ns = now_ns() - t_mig;
        if (p->burst != BURST_NONE)
                p->running_at_end = burst_running(p);
        sleep_ms(500);
        bench_querier_stop(&p->q);
        p->after = bench_agent_stats(&b, false);
        p->load_after = bench_load1();
        check_agents(p->label);
        for (int i = 0; i < NMIG; i++)
                if (!p->m[i].ok)
                        die("%s: migration of %s failed: %s", p->label, mig_names[i], p->m[i].error);
        printf("  8 migrations in %.2f s", (double) p->span_ns / 1e9);
        if (p->burst != BURST_NONE)
                printf("; the %d calls answered within %.1f ms; %d of their operations still running at the "
                       "migrations' end",
                       NIDLE, (double) p->burst_ns / 1e6, p->running_at_end);
        printf("\n");
        fflush(stdout);
}

/* Wait for the burst's operations to end and count how they ended. */
static void burst_wait(Phase *p, int64_t timeout_ms) {
        for (int i = 0; i < NIDLE; i++) {
                Drover__V1__Operation *op = NULL;
                RpcStatus st;
                if (p->calls[i].r < 0)
                        continue;
                int r = ta_op_wait(&b, p->calls[i].op, timeout_ms, &op, &st);
                if (r >= 0)
                        p->op_ok++;
                else {
                        if (!p->op_failed++)
                                snprintf(p->op_failure, sizeof(p->op_failure), "%s: %s %s", idle_names[i],
                                         rpc_code_to_string(st.code), st.details);
                }
                if (op)
                        drover__v1__operation__free_unpacked(op, NULL);
        }
}

/* The 8 guests back to a, one at a time, uncapped (not measured). */
static void all_back(void) {
        BenchMig o;
        for (int i = 0; i < NMIG; i++) {
                bench_migrate(&b, &a, mig_names[i], 0, MIGRATE_TIMEOUT_MS, &o);
                if (!o.ok)
                        die("migration of %s back to a failed: %s", mig_names[i], o.error);
        }
}

static int guests_running(TestAgent *t, const char *prefix) {
        Drover__V1__ListGuestsRequest req = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *resp = NULL;
        RpcStatus st;
        int n = 0;
        if (ta_call(t, "ListGuests", &req.base, (ProtobufCMessage **) &resp, &st) < 0)
                return -1;
        for (size_t i = 0; i < resp->n_guests; i++)
                n += strncmp(resp->guests[i]->name, prefix, strlen(prefix)) == 0 &&
                     resp->guests[i]->state == DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING;
        drover__v1__list_guests_response__free_unpacked(resp, NULL);
        return n;
}

/* ---- the report -------------------------------------------------------------------------- */

static int cmp_double(const void *x, const void *y) {
        double p = *(const double *) x, q = *(const double *) y;
        return p < q ? -1 : p > q;
}

static double ratio(double x, double base) {
        return x / (base > 0 ? base : 1);
}

/* Median and max of @v[0..n) (sorted in place). */
static void med_max(double *v, size_t n, double *med, double *max) {
        qsort(v, n, sizeof(double), cmp_double);
        *med = v[n / 2];
        *max = v[n - 1];
}

/* The median over the 8 guests of the figure at @off in BenchMig. */
static double median_of(const Phase *p, size_t off) {
        double v[NMIG], med, max;
        for (int i = 0; i < NMIG; i++)
                v[i] = (double) *(const uint64_t *) ((const char *) &p->m[i] + off);
        med_max(v, NMIG, &med, &max);
        return med;
}

static void report_burst(const Phase *p, const Phase *b1, const Phase *b2) {
        double rm[NMIG], rq[NMIG], rf[NMIG], med, max;
        printf("\n%s vs baseline (the mean of the two baselines), per guest:\n\n", p->label);
        printf("| guest | baseline 1 ms (QEMU, finish) | baseline 2 ms (QEMU, finish) | burst ms (QEMU, finish) | "
               "ratio | QEMU ratio | finish ratio |\n");
        printf("|-------|-----------------------------:|-----------------------------:|------------------------:|"
               "------:|-----------:|-------------:|\n");
        for (int i = 0; i < NMIG; i++) {
                const BenchMig *x = &b1->m[i], *y = &b2->m[i], *m = &p->m[i];
                rm[i] = ratio((double) m->measured_ms, (double) (x->measured_ms + y->measured_ms) / 2);
                rq[i] = ratio((double) m->downtime_ms, (double) (x->downtime_ms + y->downtime_ms) / 2);
                rf[i] = ratio((double) m->finish_call_ms, (double) (x->finish_call_ms + y->finish_call_ms) / 2);
                printf("| %-5s | %12llu (%5llu, %5llu) | %12llu (%5llu, %5llu) | %7llu (%5llu, %5llu) | %5.2f | "
                       "%10.2f | %12.2f |\n",
                       mig_names[i], (unsigned long long) x->measured_ms, (unsigned long long) x->downtime_ms,
                       (unsigned long long) x->finish_call_ms, (unsigned long long) y->measured_ms,
                       (unsigned long long) y->downtime_ms, (unsigned long long) y->finish_call_ms,
                       (unsigned long long) m->measured_ms, (unsigned long long) m->downtime_ms,
                       (unsigned long long) m->finish_call_ms, rm[i], rq[i], rf[i]);
        }
        med_max(rm, NMIG, &med, &max);
        printf("\n%s: downtime burst / baseline median %.2f, max %.2f (target <= 1.1: %s)\n", p->label, med, max,
               max <= 1.1 ? "met" : "MISSED");
        med_max(rq, NMIG, &med, &max);
        printf("%s: QEMU's downtime burst / baseline median %.2f, max %.2f\n", p->label, med, max);
        med_max(rf, NMIG, &med, &max);
        printf("%s: MigrateFinish call burst / baseline median %.2f, max %.2f (target <= 1.1: %s)\n", p->label, med,
               max, max <= 1.1 ? "met" : "MISSED");
        static const struct { const char *name; size_t off; } fig[] = {
                { "downtime", offsetof(BenchMig, measured_ms) },
                { "QEMU's downtime", offsetof(BenchMig, downtime_ms) },
                { "MigrateFinish call", offsetof(BenchMig, finish_call_ms) },
        };
        for (size_t k = 0; k < ELEMENTSOF(fig); k++) {
                double m1 = median_of(b1, fig[k].off), m2 = median_of(b2, fig[k].off), mb = median_of(p, fig[k].off);
                printf("%s: median %s of the 8: %.0f ms, baselines %.0f and %.0f ms (burst / their mean %.2f)\n",
                       p->label, fig[k].name, mb, m1, m2, ratio(mb, (m1 + m2) / 2));
        }
        Samples lat = { 0 };
        for (int i = 0; i < NIDLE; i++)
                if (p->calls[i].r >= 0)
                        samples_add(&lat, p->calls[i].lat_ns / 1000);
        samples_sort(&lat);
        printf("%s: the %zu calls answered in p50 %.1f ms, max %.1f ms; operations: %d succeeded, %d failed%s%s%s\n",
               p->label, lat.n, (double) samples_q(&lat, 0.5) / 1000, (double) samples_max(&lat) / 1000, p->op_ok,
               p->op_failed, p->op_failed ? " (first: " : "", p->op_failed ? p->op_failure : "",
               p->op_failed ? ")" : "");
        samples_free(&lat);
}

static void report_noise(const Phase *b1, const Phase *b2) {
        double rm[NMIG], rq[NMIG], rf[NMIG], m1, x1, m2, x2, m3, x3;
        for (int i = 0; i < NMIG; i++) {
                rm[i] = ratio((double) b2->m[i].measured_ms, (double) b1->m[i].measured_ms);
                rq[i] = ratio((double) b2->m[i].downtime_ms, (double) b1->m[i].downtime_ms);
                rf[i] = ratio((double) b2->m[i].finish_call_ms, (double) b1->m[i].finish_call_ms);
        }
        med_max(rm, NMIG, &m1, &x1);
        med_max(rq, NMIG, &m2, &x2);
        med_max(rf, NMIG, &m3, &x3);
        printf("\nnoise: baseline 2 / baseline 1 (no burst in either): downtime median %.2f, max %.2f; QEMU's "
               "median %.2f, max %.2f; MigrateFinish call median %.2f, max %.2f\n",
               m1, x1, m2, x2, m3, x3);
}

int main(int argc, char **argv) {
        bool starts = true;
        char machine[512];
        static Phase base1 = { .label = "baseline", .burst = BURST_NONE },
                     shut = { .label = "shutdown burst", .burst = BURST_SHUTDOWN },
                     base2 = { .label = "baseline again", .burst = BURST_NONE },
                     start = { .label = "start burst", .burst = BURST_START };

        if (argc > 1 && atoi(argv[1]) > 0)
                shutdown_timeout_ms = atoi(argv[1]) * 1000;
        if (argc > 2)
                starts = atoi(argv[2]) != 0;
        if (argc > 3)
                bandwidth = (uint64_t) atoll(argv[3]) << 20;
        tu_require_qemu();
        log_set_level(LOG_LEVEL_ERROR);
        for (int i = 0; i < NMIG; i++) {
                snprintf(mig_names[i], sizeof(mig_names[i]), "sc%d", i);
                query_names[i] = mig_names[i];
        }
        for (int i = 0; i < NIDLE; i++) {
                snprintf(idle_names[i], sizeof(idle_names[i]), "ig%d", i);
                query_names[NMIG + i] = idle_names[i];
        }
        const char *dir_a = tu_tmpdir("slowcalls-a"), *dir_b = tu_tmpdir("slowcalls-b");
        atexit(cleanup);
        if (test_agent_start(&a, dir_a, NULL) < 0 || test_agent_start(&b, dir_b, NULL) < 0)
                die("an agent did not start (logs in %s, %s)", dir_a, dir_b);
        bench_machine(machine, sizeof(machine));
        char bw[48];
        if (bandwidth)
                snprintf(bw, sizeof(bw), "%llu MiB/s", (unsigned long long) (bandwidth >> 20));
        else
                snprintf(bw, sizeof(bw), "unlimited");
        printf("slowcalls: %d tiny guests (%d MiB, TCG, %s) migrate from agent a into agent b on loopback,\n"
               "bandwidth %s per migration; b runs %d guests that ignore ACPI (%d MiB, %s);\n"
               "Shutdown timeout %d s, no force; queries on b at %d Hz (ListGuests and GetGuest each)\n"
               "machine: %s\n\n",
               NMIG, MIG_MEM_MIB, MIG_APPEND, bw, NIDLE, IDLE_MEM_MIB, IDLE_APPEND, shutdown_timeout_ms / 1000,
               QUERY_HZ, machine);
        for (int i = 0; i < NMIG; i++)
                if (bench_define_start(&a, mig_names[i], MIG_MEM_MIB, MIG_APPEND) < 0)
                        die("cannot start %s on a", mig_names[i]);
        for (int i = 0; i < NIDLE; i++)
                if (bench_define_start(&b, idle_names[i], IDLE_MEM_MIB, IDLE_APPEND) < 0)
                        die("cannot start %s on b", idle_names[i]);
        sleep_ms(1000);

        /* 1. baseline */
        run_phase(&base1);
        all_back();

        /* 2. shutdown burst; then the shutdowns time out and the guests keep running */
        run_phase(&shut);
        all_back();
        burst_wait(&shut, shutdown_timeout_ms + 60000);
        printf("  the %d shutdowns ended: %d succeeded, %d failed; %d of b's %d idle guests still run\n", NIDLE,
               shut.op_ok, shut.op_failed, guests_running(&b, "ig"), NIDLE);

        /* 3. baseline again */
        run_phase(&base2);
        all_back();

        /* 4. start burst: b's guests shut off first */
        if (starts) {
                for (int i = 0; i < NIDLE; i++) {
                        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
                        ProtobufCMessage *resp = NULL;
                        RpcStatus st;
                        ref.guest = idle_names[i];
                        if (ta_call(&b, "Destroy", &ref.base, &resp, &st) < 0)
                                die("Destroy %s: %s %s", idle_names[i], rpc_code_to_string(st.code), st.details);
                        protobuf_c_message_free_unpacked(resp, NULL);
                }
                sleep_ms(1000);
                run_phase(&start);
                        burst_wait(&start, 120000);
                printf("  the %d starts ended: %d succeeded, %d failed\n", NIDLE, start.op_ok, start.op_failed);
        }
        check_agents("at the end");

        /* the report */
        report_noise(&base1, &base2);
        report_burst(&shut, &base1, &base2);
        if (starts)
                report_burst(&start, &base1, &base2);

        Phase *phases[] = { &base1, &shut, &base2, &start };
        size_t n_phases = starts ? 4 : 3;
        printf("\n| phase                  | query      | calls  | p50 ms  | p99 ms  | max ms  |\n");
        printf("|------------------------|------------|--------|---------|---------|---------|\n");
        for (size_t i = 0; i < n_phases; i++)
                bench_print_queries(phases[i]->label, &phases[i]->q);
        printf("\n");
        for (size_t i = 0; i < n_phases; i++) {
                const Samples *all = &phases[i]->q.all;
                double p99 = (double) samples_q(all, 0.99) / 1000, mx = (double) samples_max(all) / 1000;
                printf("query targets, %s: p99 %.3f ms (< 5 ms: %s), max %.3f ms (< 20 ms: %s); errors %lu; load "
                       "average %.2f before it, %.2f after it\n",
                       phases[i]->label, p99, p99 < 5 ? "met" : "MISSED", mx, mx < 20 ? "met" : "MISSED",
                       phases[i]->q.errors, phases[i]->load_before, phases[i]->load_after);
        }
        printf("\ngRPC lanes of b per phase (docs/agent.md, \"Lanes\"):\n\n");
        bench_print_lanes_header();
        for (size_t i = 0; i < n_phases; i++)
                bench_print_lanes(phases[i]->label, phases[i]->before, phases[i]->after);
        printf("\nlocks of b per phase:\n\n");
        printf("| phase                  | agent | lock class | holds    | max hold ms | max wait ms |\n");
        printf("|------------------------|-------|------------|----------|-------------|-------------|\n");
        for (size_t i = 0; i < n_phases; i++)
                bench_print_locks(phases[i]->label, "b", phases[i]->after);

        for (size_t i = 0; i < ELEMENTSOF(phases); i++) {
                Phase *p = phases[i];
                if (p->before)
                        drover__v1__get_agent_stats_response__free_unpacked(p->before, NULL);
                if (p->after)
                        drover__v1__get_agent_stats_response__free_unpacked(p->after, NULL);
                bench_querier_free(&p->q);
        }
        return 0; /* cleanup() stops the agents and kills the guests */
}
