/* Helpers for the benchmarks that drive real agents (see bench-agent.h). */
#define _GNU_SOURCE
#include "bench-agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deadline.h"
#include "err.h"

void bench_migrate(TestAgent *src, TestAgent *dst, const char *name, uint64_t bandwidth, int64_t timeout_ms,
                   BenchMig *o) {
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus st;
        char dest[64];
        snprintf(dest, sizeof(dest), "127.0.0.1:%d", dst->port);
        req.guest = (char *) name;
        req.destination = dest;
        p.bandwidth_bytes_per_s = bandwidth;
        req.params = &p;
        memset(o, 0, sizeof(*o));
        o->t_start_ns = now_ns();
        /* the agent answers at once; wait (client side) for the migration */
        Drover__V1__MigrationResult *res = ta_migrate(src->cl, &req, true, timeout_ms, &st);
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
                o->finish_call_ms = res->finish_call_ms;
                o->total_ms = res->total_ms;
                o->bytes = res->transferred_bytes;
        }
        drover__v1__migration_result__free_unpacked(res, NULL);
}

/* ---- the query client ----------------------------------------------------------------- */

static void q_add(BenchQuerier *q, uint64_t t, uint64_t lat_ns, bool list) {
        if (q->n == q->cap) {
                size_t cap = q->cap ? 2 * q->cap : 8192;
                BenchQSample *v = realloc(q->s, cap * sizeof(*v));
                if (!v)
                        return; /* drop the sample rather than the run */
                q->s = v;
                q->cap = cap;
        }
        q->s[q->n++] = (BenchQSample){ .t_ns = t, .lat_us = (uint32_t) (lat_ns / 1000), .list = list };
}

/* Every tick: one ListGuests and one GetGuest (NOT_FOUND for a guest not
 * there yet is an answer like any other).  A late tick is not made up for. */
static void *querier_main(void *arg) {
        BenchQuerier *q = arg;
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        for (size_t i = 0; !atomic_load(&q->stop); i++) {
                for (int k = 0; k < 2; k++) {
                        ProtobufCMessage *resp = NULL;
                        RpcStatus st;
                        bool list = k == 0;
                        ref.guest = (char *) q->names[i % q->n_names];
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
                next.tv_nsec += 1000000000L / q->hz;
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

int bench_querier_start(BenchQuerier *q, TestAgent *t, const char *const *names, size_t n_names, int hz) {
        char target[320];
        RpcClientOptions o = { .default_timeout_ms = 30000 };
        memset(q, 0, sizeof(*q));
        q->names = names;
        q->n_names = n_names;
        q->hz = hz > 0 ? hz : 100;
        snprintf(target, sizeof(target), "unix:%s", t->sock);
        int r = rpc_client_new(target, &o, &q->cl);
        if (r < 0) {
                fprintf(stderr, "bench: a query client for %s: %s\n", t->sock, err_msg());
                return r;
        }
        r = -pthread_create(&q->th, NULL, querier_main, q);
        if (r < 0) {
                fprintf(stderr, "bench: the query thread: %s\n", strerror(-r));
                rpc_client_free(q->cl);
                q->cl = NULL;
        }
        return r;
}

void bench_querier_stop(BenchQuerier *q) {
        if (!q->cl)
                return;
        atomic_store(&q->stop, true);
        pthread_join(q->th, NULL);
        rpc_client_free(q->cl);
        q->cl = NULL;
        for (size_t k = 0; k < q->n; k++) {
                samples_add(q->s[k].list ? &q->list : &q->get, q->s[k].lat_us);
                samples_add(&q->all, q->s[k].lat_us);
        }
        samples_sort(&q->list);
        samples_sort(&q->get);
        samples_sort(&q->all);
}

void bench_querier_free(BenchQuerier *q) {
        bench_querier_stop(q);
        free(q->s);
        samples_free(&q->list);
        samples_free(&q->get);
        samples_free(&q->all);
        memset(q, 0, sizeof(*q));
}

static double ms_of_us(uint64_t us) {
        return (double) us / 1000.0;
}

void bench_print_queries(const char *label, const BenchQuerier *q) {
        const struct { const char *name; const Samples *v; } rows[] = { { "ListGuests", &q->list },
                                                                         { "GetGuest", &q->get },
                                                                         { "both", &q->all } };
        for (size_t i = 0; i < 3; i++)
                printf("| %-22s | %-10s | %6zu | %7.3f | %7.3f | %7.3f |\n", label, rows[i].name, rows[i].v->n,
                       ms_of_us(samples_q(rows[i].v, 0.5)), ms_of_us(samples_q(rows[i].v, 0.99)),
                       ms_of_us(samples_max(rows[i].v)));
}

/* ---- agent statistics ------------------------------------------------------------------ */

Drover__V1__GetAgentStatsResponse *bench_agent_stats(TestAgent *t, bool reset) {
        Drover__V1__GetAgentStatsRequest req = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *resp = NULL;
        RpcStatus st;
        req.reset_locks = reset;
        if (ta_call(t, "GetAgentStats", &req.base, (ProtobufCMessage **) &resp, &st) < 0) {
                fprintf(stderr, "bench: GetAgentStats: %s %s\n", rpc_code_to_string(st.code), st.details);
                return NULL;
        }
        return resp;
}

const Drover__V1__LockClassStats *bench_lock_of(const Drover__V1__GetAgentStatsResponse *as, const char *name) {
        for (size_t i = 0; as && i < as->n_locks; i++)
                if (strcmp(as->locks[i]->name, name) == 0)
                        return as->locks[i];
        return NULL;
}

void bench_print_locks(const char *label, const char *agent, const Drover__V1__GetAgentStatsResponse *as) {
        for (size_t i = 0; as && i < as->n_locks; i++) {
                const Drover__V1__LockClassStats *l = as->locks[i];
                if (l->count == 0)
                        continue;
                printf("| %-22s | %-5s | %-10s | %8llu | %11.3f | %11.3f |\n", label, agent, l->name,
                       (unsigned long long) l->count, (double) l->max_ns / 1e6, (double) l->wait_max_ns / 1e6);
        }
}

static const Drover__V1__RpcLaneStats *lane_of(const Drover__V1__GetAgentStatsResponse *as, const char *name) {
        for (size_t i = 0; as && i < as->n_lanes; i++)
                if (strcmp(as->lanes[i]->name, name) == 0)
                        return as->lanes[i];
        return NULL;
}

void bench_print_lanes_header(void) {
        printf("| %-22s | %-8s | workers | busy | queued | served | refused | max wait ms (since start) | "
               "longest wait in phase |\n",
               "phase", "lane");
        printf("|------------------------|----------|--------:|-----:|-------:|-------:|--------:|------------------"
               "--------:|-----------------------|\n");
}

void bench_print_lanes(const char *label, const Drover__V1__GetAgentStatsResponse *before,
                       const Drover__V1__GetAgentStatsResponse *after) {
        static const char *const bound[] = { "< 1 µs", "< 10 µs", "< 100 µs", "< 1 ms", "< 10 ms", "< 100 ms",
                                             "< 1 s", ">= 1 s" };
        for (size_t i = 0; after && i < after->n_lanes; i++) {
                const Drover__V1__RpcLaneStats *l = after->lanes[i], *b = lane_of(before, l->name);
                char longest[48] = "none";
                /* an exact figure when the maximum grew in the phase, else
                 * the decade of the histogram's growth */
                if (l->wait_max_ns > (b ? b->wait_max_ns : 0))
                        snprintf(longest, sizeof(longest), "%.3f ms", (double) l->wait_max_ns / 1e6);
                else
                        for (size_t k = l->n_wait_histogram; k-- > 0;) {
                                uint64_t prev = b && k < b->n_wait_histogram ? b->wait_histogram[k] : 0;
                                if (l->wait_histogram[k] > prev) {
                                        snprintf(longest, sizeof(longest), "%s",
                                                 k < sizeof(bound) / sizeof(bound[0]) ? bound[k] : "?");
                                        break;
                                }
                        }
                printf("| %-22s | %-8s | %7u | %4u | %6u | %6llu | %7llu | %25.3f | %-21s |\n", label, l->name,
                       l->workers, l->busy, l->queued, (unsigned long long) (l->served - (b ? b->served : 0)),
                       (unsigned long long) (l->refused_expired - (b ? b->refused_expired : 0)),
                       (double) l->wait_max_ns / 1e6, longest);
        }
}

/* ---- guests ---------------------------------------------------------------------------- */

int bench_define_start(TestAgent *t, const char *name, int mem_mib, const char *append) {
        char *json = test_guest_json(name, NULL, mem_mib, append);
        Drover__V1__DefineRequest d = DROVER__V1__DEFINE_REQUEST__INIT;
        Drover__V1__StartRequest sr = DROVER__V1__START_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        RpcStatus st;
        if (!json)
                return -ENOMEM;
        d.definition_json = json;
        int r = ta_call(t, "Define", &d.base, &resp, &st);
        free(json);
        if (r >= 0) {
                protobuf_c_message_free_unpacked(resp, NULL);
                resp = NULL;
                sr.guest = (char *) name;
                r = ta_call(t, "Start", &sr.base, &resp, &st);
        }
        if (r < 0) {
                fprintf(stderr, "bench: define/start %s: %s %s\n", name, rpc_code_to_string(st.code), st.details);
                return r;
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
}
