/* Benchmark: 16 concurrent starts on one real drover-agent.
 *
 * Starts the agent as a process (tests/agentd/agentd-util.h, default
 * configuration), defines 16 tiny guests (48 MiB, TCG, the dirtying test
 * guest), then releases 16 client threads at once, each calling Start for
 * one guest, while one more thread calls ListGuests and GetGuest in a loop
 * as fast as it can.  It prints the start latency per guest (p50/p90/max),
 * the query latency during the burst (count, p50/p99/max) and the agent's
 * lock figures per class from GetAgentStats (reset right before the burst).
 * Then the same query loop runs for as long again with no start in flight
 * (the 16 guests running), for comparison, with its own lock figures.
 *
 * It prints figures and is not a timed test (STYLE.md): it fails only when
 * the agent does not come up or a start fails, never for being slow.  Every
 * guest is destroyed and undefined, the agent stopped, and any QEMU left
 * over killed at exit.
 *
 *   agent-bench        (meson test -C build --benchmark agent-start16)
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
#include "log.h"
#include "qemuproc.h"
#include "testutil.h"

#define N_GUESTS 16
#define CALL_TIMEOUT_MS 60000

/* The @q quantile (0..1) of a sorted list of ns, in ms. */
static double q_ms(const Samples *l, double q) {
        return (double) samples_q(l, q) / 1e6;
}

typedef struct Starter {
        TestAgent *t;
        const char *name;
        pthread_barrier_t *go;
        uint64_t lat_ns;
        int r;
        RpcStatus st;
} Starter;

static void *starter_main(void *arg) {
        Starter *s = arg;
        Drover__V1__StartRequest req = DROVER__V1__START_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        req.guest = (char *) s->name;
        pthread_barrier_wait(s->go);
        uint64_t t0 = now_ns();
        /* the agent answers at once: this waits for the start to end (client side) */
        s->r = ta_call(s->t, "Start", &req.base, &resp, &s->st);
        s->lat_ns = now_ns() - t0;
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return NULL;
}

typedef struct Querier {
        RpcClient *cl;
        char (*names)[16];
        pthread_barrier_t *go; /* NULL: start at once */
        atomic_bool stop;
        Samples list, get;
        int errors;
} Querier;

static void *querier_main(void *arg) {
        Querier *q = arg;
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__GuestRef gref = DROVER__V1__GUEST_REF__INIT;
        if (q->go)
                pthread_barrier_wait(q->go);
        for (unsigned i = 0; !atomic_load(&q->stop); i++) {
                ProtobufCMessage *resp = NULL;
                bool list = i % 2 == 0;
                gref.guest = q->names[(i / 2) % N_GUESTS];
                uint64_t t0 = now_ns();
                int r = list ? rpc_client_unary(q->cl, &drover__v1__agent__descriptor, "ListGuests", &lreq.base,
                                                CALL_TIMEOUT_MS, &resp, NULL)
                             : rpc_client_unary(q->cl, &drover__v1__agent__descriptor, "GetGuest", &gref.base,
                                                CALL_TIMEOUT_MS, &resp, NULL);
                uint64_t dt = now_ns() - t0;
                if (r < 0) {
                        q->errors++;
                        continue;
                }
                samples_add(list ? &q->list : &q->get, dt);
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        samples_sort(&q->list);
        samples_sort(&q->get);
        return NULL;
}

static void querier_free(Querier *q) {
        samples_free(&q->list);
        samples_free(&q->get);
}

/* GetAgentStats; with @reset the lock figures restart from zero after this read. */
static Drover__V1__GetAgentStatsResponse *agent_stats(TestAgent *t, bool reset) {
        Drover__V1__GetAgentStatsRequest req = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *resp = NULL;
        RpcStatus st;
        req.reset_locks = reset;
        if (ta_call(t, "GetAgentStats", &req.base, (ProtobufCMessage **) &resp, &st) < 0) {
                fprintf(stderr, "agent-bench: GetAgentStats: %s %s\n", rpc_code_to_string(st.code), st.details);
                return NULL;
        }
        return resp;
}

static void print_queries(const char *when, const Querier *q, double secs) {
        const struct { const char *name; const Samples *l; } rows[] = { { "ListGuests", &q->list },
                                                                    { "GetGuest", &q->get } };
        for (size_t i = 0; i < 2; i++)
                printf("| %-10s | %-22s | %6zu | %7.0f | %8.3f | %8.3f | %8.3f |\n", rows[i].name, when,
                       rows[i].l->n, (double) rows[i].l->n / secs, q_ms(rows[i].l, 0.50),
                       q_ms(rows[i].l, 0.99), (double) samples_max(rows[i].l) / 1e6);
}

static void print_locks(const char *when, const Drover__V1__GetAgentStatsResponse *as) {
        for (size_t i = 0; as && i < as->n_locks; i++) {
                const Drover__V1__LockClassStats *l = as->locks[i];
                if (l->count == 0)
                        continue;
                printf("| %-10s | %-22s | %8llu | %11.3f | %11.3f | %10.3f |\n", l->name, when,
                       (unsigned long long) l->count, (double) l->max_ns / 1e6, (double) l->wait_max_ns / 1e6,
                       (double) l->total_ns / 1e6);
        }
}

/* Run the query loop for @ms with nothing else going on. */
static void run_idle_queries(Querier *q, int64_t ms) {
        pthread_t th;
        q->go = NULL;
        pthread_create(&th, NULL, querier_main, q);
        sleep_ms(ms);
        atomic_store(&q->stop, true);
        pthread_join(th, NULL);
}

static int define_all(TestAgent *t, char (*names)[16]) {
        for (int i = 0; i < N_GUESTS; i++) {
                char *json = test_guest_json(names[i], NULL, 48, "mib=16 rate=5");
                Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                RpcStatus st;
                req.definition_json = json;
                int r = ta_call(t, "Define", &req.base, &resp, &st);
                free(json);
                if (r < 0) {
                        fprintf(stderr, "agent-bench: Define %s: %s %s\n", names[i], rpc_code_to_string(st.code),
                                st.details);
                        return r;
                }
                protobuf_c_message_free_unpacked(resp, NULL);
        }
        return 0;
}

static void destroy_all(TestAgent *t, char (*names)[16]) {
        for (int i = 0; i < N_GUESTS; i++) {
                Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
                ProtobufCMessage *resp = NULL;
                RpcStatus st;
                ref.guest = names[i];
                if (ta_call(t, "Destroy", &ref.base, &resp, &st) >= 0)
                        protobuf_c_message_free_unpacked(resp, NULL);
                resp = NULL;
                if (ta_call(t, "Undefine", &ref.base, &resp, &st) >= 0)
                        protobuf_c_message_free_unpacked(resp, NULL);
                else
                        fprintf(stderr, "agent-bench: Undefine %s: %s %s\n", names[i],
                                rpc_code_to_string(st.code), st.details);
        }
}

int main(void) {
        char names[N_GUESTS][16];
        Starter starters[N_GUESTS];
        pthread_t th[N_GUESTS], qth;
        pthread_barrier_t go;
        TestAgent t = { 0 };
        Querier busy = { 0 }, idle = { 0 };
        Drover__V1__GetAgentStatsResponse *burst_locks = NULL, *idle_locks = NULL;
        int failed = 0, ret = 1;

        tu_require_qemu();
        log_set_level(LOG_LEVEL_ERROR); /* no development-mode warnings in the figures */
        for (int i = 0; i < N_GUESTS; i++)
                snprintf(names[i], sizeof(names[i]), "bench%02d", i);
        const char *dir = tu_tmpdir("agent-bench");
        if (test_agent_start(&t, dir, NULL) < 0) {
                char *log = tu_read_file(tu_path(dir, "agent.log"), NULL);
                fprintf(stderr, "agent-bench: the agent did not start:\n%s\n", log ? log : "");
                free(log);
                return 1;
        }
        if (define_all(&t, names) < 0)
                goto out;
        RpcClientOptions o = { .default_timeout_ms = CALL_TIMEOUT_MS };
        char target[320];
        snprintf(target, sizeof(target), "unix:%s", t.sock);
        if (rpc_client_new(target, &o, &busy.cl) < 0 || rpc_client_new(target, &o, &idle.cl) < 0)
                goto out;
        busy.names = idle.names = names;

        /* warm both channels up, then zero the lock figures */
        for (int k = 0; k < 2; k++) {
                Querier warm = { .cl = k ? idle.cl : busy.cl, .names = names };
                run_idle_queries(&warm, 200);
                querier_free(&warm);
        }
        busy.go = &go;
        Drover__V1__GetAgentStatsResponse *discard = agent_stats(&t, true);
        if (discard)
                drover__v1__get_agent_stats_response__free_unpacked(discard, NULL);

        /* the burst: 16 starters and the query thread leave the barrier together */
        pthread_barrier_init(&go, NULL, N_GUESTS + 2);
        for (int i = 0; i < N_GUESTS; i++) {
                starters[i] = (Starter){ .t = &t, .name = names[i], .go = &go };
                pthread_create(&th[i], NULL, starter_main, &starters[i]);
        }
        pthread_create(&qth, NULL, querier_main, &busy);
        pthread_barrier_wait(&go);
        uint64_t t0 = now_ns();
        for (int i = 0; i < N_GUESTS; i++)
                pthread_join(th[i], NULL);
        uint64_t burst_ns = now_ns() - t0;
        atomic_store(&busy.stop, true);
        pthread_join(qth, NULL);
        pthread_barrier_destroy(&go);
        burst_locks = agent_stats(&t, true);

        Samples starts = { 0 };
        for (int i = 0; i < N_GUESTS; i++) {
                if (starters[i].r < 0) {
                        fprintf(stderr, "agent-bench: Start %s: %s %s\n", names[i],
                                rpc_code_to_string(starters[i].st.code), starters[i].st.details);
                        failed++;
                } else
                        samples_add(&starts, starters[i].lat_ns);
        }
        samples_sort(&starts);

        /* the comparison: the same loop for as long, no start in flight */
        int64_t idle_ms = (int64_t) (burst_ns / NSEC_PER_MSEC);
        run_idle_queries(&idle, idle_ms < 1000 ? 1000 : idle_ms);
        idle_locks = agent_stats(&t, false);

        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        double mem_gib = (double) sysconf(_SC_PHYS_PAGES) * (double) sysconf(_SC_PAGESIZE) / (1024.0 * 1024 * 1024);
        printf("agent-start16: %d guests (48 MiB, TCG) started at once by %d client threads, one query thread;\n"
               "agent with its default configuration, over a unix socket; host: %ld CPUs, %.1f GiB\n\n",
               N_GUESTS, N_GUESTS, ncpu, mem_gib);
        printf("| Start      | guests | ok | p50 ms   | p90 ms   | max ms   | burst ms |\n");
        printf("|------------|--------|----|----------|----------|----------|----------|\n");
        printf("| 16 at once | %6d | %2zu | %8.1f | %8.1f | %8.1f | %8.1f |\n\n", N_GUESTS, starts.n,
               q_ms(&starts, 0.50), q_ms(&starts, 0.90),
               (double) samples_max(&starts) / 1e6, (double) burst_ns / 1e6);
        printf("| Query      | when                   | calls  | calls/s | p50 ms   | p99 ms   | max ms   |\n");
        printf("|------------|------------------------|--------|---------|----------|----------|----------|\n");
        print_queries("during the 16 starts", &busy, (double) burst_ns / 1e9);
        print_queries("no starts (16 running)", &idle, (double) (idle_ms < 1000 ? 1000 : idle_ms) / 1e3);
        if (busy.errors || idle.errors)
                printf("(query errors: %d during the starts, %d without)\n", busy.errors, idle.errors);
        printf("\n| Lock class | when                   | holds    | max hold ms | max wait ms | total ms   |\n");
        printf("|------------|------------------------|----------|-------------|-------------|------------|\n");
        print_locks("during the 16 starts", burst_locks);
        print_locks("no starts (16 running)", idle_locks);
        fflush(stdout);
        ret = failed ? 1 : 0;
        if (failed)
                fprintf(stderr, "agent-bench: %d of %d starts failed\n", failed, N_GUESTS);
        samples_free(&starts);

out:
        if (burst_locks)
                drover__v1__get_agent_stats_response__free_unpacked(burst_locks, NULL);
        if (idle_locks)
                drover__v1__get_agent_stats_response__free_unpacked(idle_locks, NULL);
        querier_free(&busy);
        querier_free(&idle);
        rpc_client_free(busy.cl);
        rpc_client_free(idle.cl);
        destroy_all(&t, names);
        test_agent_stop(&t);
        test_agent_kill_guests(&t);
        return ret;
}
