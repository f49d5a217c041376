/* Benchmark: the agent's own overhead (issue 6, benchmark 3).
 *
 * Starts a real drover-agent (default configuration, development mode, a
 * unix socket) and measures:
 *   - its memory (VmRSS and VmHWM from /proc/PID/status) right after start,
 *     after a second of queries with no guest, with 200 defined guests, and
 *     after the query phases below;
 *   - query calls/s: GetGuest (one guest per call, round robin) and
 *     ListGuests (all 200 guests per call), from 1 and from 4 client
 *     threads, each thread with its own connection, for DURATION seconds
 *     each; latency p50/p99/max per phase, the agent's CPU per call (from
 *     /proc/PID/stat) and the registry and VM lock max hold of the phase
 *     (GetAgentStats, reset before it);
 *   - then the same with 16 of the 200 guests running (48 MiB tiny TCG
 *     guests dirtying 5 MiB/s), and the memory again.
 * The client threads run on the same machine as the agent and share its
 * CPUs, so calls/s is a lower bound of what the agent can serve.
 *
 * Targets (issue 6): >= 5,000 calls/s; RSS < 20 MiB + 256 KiB per guest.
 * It prints figures and never fails for being slow; only for a broken
 * setup (the agent does not start, a Define or Start fails).
 *
 *   overhead-bench [DURATION_S]    (meson test -C build --benchmark overhead)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentd-util.h"
#include "bench-util.h"
#include "deadline.h"
#include "err.h"
#include "log.h"
#include "qemuproc.h"
#include "testutil.h"

#define N_DEFINED 200
#define N_RUNNING 16
#define CALL_TIMEOUT_MS 30000

static char names[N_DEFINED][16];
static TestAgent agent;

typedef enum { Q_GET, Q_LIST } QueryKind;

typedef struct Worker {
        RpcClient *cl;
        QueryKind kind;
        int index;             /* first guest of the round robin */
        atomic_bool *stop;
        pthread_barrier_t *go;
        Samples lat;
        unsigned long errors;
} Worker;

static void *worker_main(void *arg) {
        Worker *w = arg;
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        pthread_barrier_wait(w->go);
        for (unsigned i = (unsigned) w->index; !atomic_load(w->stop); i++) {
                ProtobufCMessage *resp = NULL;
                uint64_t t0 = now_ns();
                int r;
                if (w->kind == Q_LIST)
                        r = rpc_client_unary(w->cl, &drover__v1__agent__descriptor, "ListGuests", &lreq.base,
                                             CALL_TIMEOUT_MS, &resp, NULL);
                else {
                        ref.guest = names[i % N_DEFINED];
                        r = rpc_client_unary(w->cl, &drover__v1__agent__descriptor, "GetGuest", &ref.base,
                                             CALL_TIMEOUT_MS, &resp, NULL);
                }
                uint64_t dt = now_ns() - t0;
                if (r < 0) {
                        w->errors++;
                        continue;
                }
                samples_add(&w->lat, dt);
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        return NULL;
}

static Drover__V1__GetAgentStatsResponse *agent_stats(bool reset) {
        Drover__V1__GetAgentStatsRequest req = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *resp = NULL;
        RpcStatus st;
        req.reset_locks = reset;
        if (ta_call(&agent, "GetAgentStats", &req.base, (ProtobufCMessage **) &resp, &st) < 0) {
                fprintf(stderr, "overhead-bench: GetAgentStats: %s %s\n", rpc_code_to_string(st.code), st.details);
                return NULL;
        }
        return resp;
}

static double lock_max_ms(const Drover__V1__GetAgentStatsResponse *as, const char *name) {
        for (size_t i = 0; as && i < as->n_locks; i++)
                if (strcmp(as->locks[i]->name, name) == 0)
                        return (double) as->locks[i]->max_ns / 1e6;
        return 0;
}

typedef struct Phase {
        const char *guests; /* "200 defined" */
        QueryKind kind;
        int threads;
        double secs;
        unsigned long calls, errors;
        double p50_ms, p99_ms, max_ms;
        double cpu_us_per_call, cpu_cores;
        double reg_max_ms, vm_max_ms;
} Phase;

static Phase phases[16];
static int n_phases;

static void run_phase(const char *guests, QueryKind kind, int threads, double secs) {
        Worker w[8] = { 0 };
        pthread_t th[8];
        pthread_barrier_t go;
        atomic_bool stop = false;
        Phase *p = &phases[n_phases++];
        *p = (Phase){ .guests = guests, .kind = kind, .threads = threads };
        char target[320];
        snprintf(target, sizeof(target), "unix:%s", agent.sock);
        RpcClientOptions o = { .default_timeout_ms = CALL_TIMEOUT_MS };
        pthread_barrier_init(&go, NULL, (unsigned) threads + 1);
        for (int i = 0; i < threads; i++) {
                w[i] = (Worker){ .kind = kind, .index = i * 50, .stop = &stop, .go = &go };
                if (rpc_client_new(target, &o, &w[i].cl) < 0) {
                        fprintf(stderr, "overhead-bench: a client for %s: %s\n", target, err_msg());
                        exit(1);
                }
                pthread_create(&th[i], NULL, worker_main, &w[i]);
        }
        /* each connection makes one call first, so connecting is not timed */
        for (int i = 0; i < threads; i++) {
                Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                if (rpc_client_unary(w[i].cl, &drover__v1__agent__descriptor, "ListGuests", &lreq.base,
                                     CALL_TIMEOUT_MS, &resp, NULL) == 0)
                        protobuf_c_message_free_unpacked(resp, NULL);
        }
        Drover__V1__GetAgentStatsResponse *as = agent_stats(true);
        if (as)
                drover__v1__get_agent_stats_response__free_unpacked(as, NULL);
        unsigned long long c0 = bench_proc_cpu_ticks(agent.pid);
        pthread_barrier_wait(&go);
        uint64_t t0 = now_ns();
        sleep_ms((int64_t) (secs * 1000));
        atomic_store(&stop, true);
        for (int i = 0; i < threads; i++)
                pthread_join(th[i], NULL);
        p->secs = (double) (now_ns() - t0) / 1e9;
        unsigned long long c1 = bench_proc_cpu_ticks(agent.pid);
        as = agent_stats(false);
        p->reg_max_ms = lock_max_ms(as, "registry");
        p->vm_max_ms = lock_max_ms(as, "vm");
        if (as)
                drover__v1__get_agent_stats_response__free_unpacked(as, NULL);
        pthread_barrier_destroy(&go);

        Samples all = { 0 };
        for (int i = 0; i < threads; i++) {
                for (size_t k = 0; k < w[i].lat.n; k++)
                        samples_add(&all, w[i].lat.v[k]);
                p->errors += w[i].errors;
                samples_free(&w[i].lat);
                rpc_client_free(w[i].cl);
        }
        samples_sort(&all);
        p->calls = all.n;
        p->p50_ms = (double) samples_q(&all, 0.50) / 1e6;
        p->p99_ms = (double) samples_q(&all, 0.99) / 1e6;
        p->max_ms = (double) samples_max(&all) / 1e6;
        double cpu_s = (double) (c1 - c0) / (double) sysconf(_SC_CLK_TCK);
        p->cpu_cores = cpu_s / p->secs;
        p->cpu_us_per_call = all.n ? cpu_s * 1e6 / (double) all.n : 0;
        samples_free(&all);
        printf("  %-10s x%d, %s: %8.0f calls/s\n", kind == Q_GET ? "GetGuest" : "ListGuests", threads, guests,
               (double) p->calls / p->secs);
        fflush(stdout);
}

typedef struct Mem {
        const char *when;
        int guests;
        long rss_kib, hwm_kib;
} Mem;

static Mem mems[8];
static int n_mems;

static void sample_mem(const char *when, int guests) {
        Mem *m = &mems[n_mems++];
        m->when = when;
        m->guests = guests;
        m->rss_kib = bench_proc_kib(agent.pid, "VmRSS");
        m->hwm_kib = bench_proc_kib(agent.pid, "VmHWM");
}

static void idle_queries(double secs) {
        /* warm the RPC workers up with no guest defined (ListGuests only) */
        Worker w = { .kind = Q_LIST };
        atomic_bool stop = false;
        pthread_barrier_t go;
        pthread_t th;
        char target[320];
        snprintf(target, sizeof(target), "unix:%s", agent.sock);
        RpcClientOptions o = { .default_timeout_ms = CALL_TIMEOUT_MS };
        if (rpc_client_new(target, &o, &w.cl) < 0)
                exit(1);
        w.stop = &stop;
        w.go = &go;
        pthread_barrier_init(&go, NULL, 2);
        pthread_create(&th, NULL, worker_main, &w);
        pthread_barrier_wait(&go);
        sleep_ms((int64_t) (secs * 1000));
        atomic_store(&stop, true);
        pthread_join(th, NULL);
        pthread_barrier_destroy(&go);
        samples_free(&w.lat);
        rpc_client_free(w.cl);
}

typedef struct Starter {
        int first, step;
        int failed;
} Starter;

static void *starter_main(void *arg) {
        Starter *s = arg;
        for (int i = s->first; i < N_RUNNING; i += s->step) {
                Drover__V1__StartRequest req = DROVER__V1__START_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                RpcStatus st;
                req.guest = names[i];
                if (ta_call(&agent, "Start", &req.base, &resp, &st) < 0) {
                        fprintf(stderr, "overhead-bench: Start %s: %s %s\n", names[i], rpc_code_to_string(st.code),
                                st.details);
                        s->failed++;
                } else
                        protobuf_c_message_free_unpacked(resp, NULL);
        }
        return NULL;
}

static void query_phases(const char *guests, double secs) {
        run_phase(guests, Q_GET, 1, secs);
        run_phase(guests, Q_GET, 4, secs);
        run_phase(guests, Q_LIST, 1, secs);
        run_phase(guests, Q_LIST, 4, secs);
}

int main(int argc, char **argv) {
        double secs = argc > 1 ? atof(argv[1]) : 3.0;
        char machine[512];
        int ret = 1;

        if (secs <= 0)
                secs = 3.0;
        tu_require_qemu();
        log_set_level(LOG_LEVEL_ERROR);
        for (int i = 0; i < N_DEFINED; i++)
                snprintf(names[i], sizeof(names[i]), "ov%03d", i);
        const char *dir = tu_tmpdir("overhead-bench");
        if (test_agent_start(&agent, dir, NULL) < 0) {
                char *log = tu_read_file(tu_path(dir, "agent.log"), NULL);
                fprintf(stderr, "overhead-bench: the agent did not start:\n%s\n", log ? log : "");
                free(log);
                return 1;
        }
        bench_machine(machine, sizeof(machine));
        printf("overhead: one drover-agent (default configuration and lanes) over a unix socket;\n"
               "machine: %s\n\n", machine);
        sample_mem("just started", 0);
        idle_queries(1.0);
        sample_mem("after 1 s of ListGuests", 0);

        uint64_t t0 = now_ns();
        for (int i = 0; i < N_DEFINED; i++) {
                char *json = test_guest_json(names[i], NULL, 48, "mib=16 rate=5");
                Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                RpcStatus st;
                req.definition_json = json;
                int r = ta_call(&agent, "Define", &req.base, &resp, &st);
                free(json);
                if (r < 0) {
                        fprintf(stderr, "overhead-bench: Define %s: %s %s\n", names[i], rpc_code_to_string(st.code),
                                st.details);
                        goto out;
                }
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        double define_ms = (double) (now_ns() - t0) / 1e6;
        printf("defined %d guests in %.0f ms (%.2f ms each: a status file written with fsync)\n", N_DEFINED,
               define_ms, define_ms / N_DEFINED);
        sample_mem("200 defined", N_DEFINED);
        query_phases("200 defined", secs);
        sample_mem("200 defined, after the queries", N_DEFINED);

        /* 16 of them running */
        Starter st[4];
        pthread_t th[4];
        int failed = 0;
        for (int i = 0; i < 4; i++) {
                st[i] = (Starter){ .first = i, .step = 4 };
                pthread_create(&th[i], NULL, starter_main, &st[i]);
        }
        for (int i = 0; i < 4; i++) {
                pthread_join(th[i], NULL);
                failed += st[i].failed;
        }
        if (failed)
                goto out;
        sleep_ms(1000);
        sample_mem("200 defined, 16 running", N_DEFINED);
        query_phases("200 defined, 16 running", secs);
        sample_mem("200 defined, 16 running, after the queries", N_DEFINED);

        printf("\n| query      | threads | guests                  | calls/s | p50 ms | p99 ms | max ms  | agent CPU "
               "| agent µs/call | registry max ms | vm max ms |\n");
        printf("|------------|--------:|-------------------------|--------:|-------:|-------:|--------:|----------:"
               "|--------------:|----------------:|----------:|\n");
        for (int i = 0; i < n_phases; i++) {
                Phase *p = &phases[i];
                printf("| %-10s | %7d | %-23s | %7.0f | %6.3f | %6.3f | %7.3f | %9.2f | %13.1f | %15.3f | %9.3f |\n",
                       p->kind == Q_GET ? "GetGuest" : "ListGuests", p->threads, p->guests,
                       (double) p->calls / p->secs, p->p50_ms, p->p99_ms, p->max_ms, p->cpu_cores,
                       p->cpu_us_per_call, p->reg_max_ms, p->vm_max_ms);
                if (p->errors)
                        printf("  (%lu calls failed)\n", p->errors);
        }
        long base_kib = mems[0].rss_kib;
        printf("\n| agent memory                               | guests | VmRSS MiB | VmHWM MiB | target MiB |\n");
        printf("|--------------------------------------------|-------:|----------:|----------:|-----------:|\n");
        for (int i = 0; i < n_mems; i++)
                printf("| %-42s | %6d | %9.1f | %9.1f | %10.1f |\n", mems[i].when, mems[i].guests,
                       (double) mems[i].rss_kib / 1024, (double) mems[i].hwm_kib / 1024,
                       20.0 + 0.25 * mems[i].guests);
        printf("\nper defined guest: %.1f KiB (VmRSS with 200 defined minus just started, / 200)\n",
               (double) (mems[2].rss_kib - base_kib) / N_DEFINED);

        /* data and a plot: calls/s per phase */
        FILE *f = bench_open("overhead.dat");
        if (f) {
                fprintf(f, "# label calls_per_s\n");
                for (int i = 0; i < n_phases; i++)
                        fprintf(f, "\"%s x%d%s\" %.0f\n", phases[i].kind == Q_GET ? "Get" : "List", phases[i].threads,
                                strstr(phases[i].guests, "running") ? ", 16 run" : "",
                                (double) phases[i].calls / phases[i].secs);
                fclose(f);
        }
        f = bench_open("overhead.gp");
        if (f) {
                fprintf(f, "set terminal pngcairo size 640,300 font ',9'\n"
                           "set output 'overhead.png'\n"
                           "set title 'Agent with 200 defined guests: query calls/s (client on the same 2 CPUs)'\n"
                           "set style data histograms\nset style fill solid 0.6 border -1\nset boxwidth 0.7\n"
                           "set ylabel 'calls/s'\nset yrange [0:*]\nset grid ytics\nset xtics rotate by -25\nset rmargin 8\n"
                           "set bmargin 5\n"
                           "plot 'overhead.dat' using 2:xtic(1) title 'calls/s' lc rgb '#4477aa', "
                           "5000 with lines dt 2 lc rgb '#cc3311' title 'target 5,000/s'\n");
                fclose(f);
                bench_plot("overhead.gp");
        }
        ret = 0;
out:
        for (int i = 0; i < N_DEFINED; i++) {
                Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
                ProtobufCMessage *resp = NULL;
                RpcStatus s2;
                ref.guest = names[i];
                if (i < N_RUNNING && ta_call(&agent, "Destroy", &ref.base, &resp, &s2) >= 0)
                        protobuf_c_message_free_unpacked(resp, NULL);
                resp = NULL;
                if (ta_call(&agent, "Undefine", &ref.base, &resp, &s2) >= 0)
                        protobuf_c_message_free_unpacked(resp, NULL);
        }
        test_agent_stop(&agent);
        test_agent_kill_guests(&agent);
        return ret;
}
