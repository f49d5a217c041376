/* Helpers shared by the benchmarks that drive real drover-agents
 * (tests/agentd/agentd-util.h) with migrations and queries: storm and
 * slowcalls.
 *
 * - bench_migrate(): one Migrate call and the client-side wait for its
 *   operation (ta_migrate), with the figures of its record (Drover's and
 *   QEMU's downtime, the MigrateFinish call, bytes) and wall times;
 * - the query client: a thread that calls ListGuests and GetGuest on one
 *   agent at a fixed rate each over its own connection and keeps every
 *   sample (time, latency, kind), the way `virsh list` would poll;
 * - GetAgentStats and a table of the gRPC server's lanes between two
 *   readings (the lane counters are cumulative: the table prints the
 *   difference, and the phase's longest wait as the decade of the
 *   histogram's difference);
 * - Define + Start of a tiny test guest.
 *
 * The functions print their errors; none exits.  One thread owns a
 * BenchQuerier; the agents' clients (TestAgent.cl) are shared by threads.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentd-util.h"
#include "bench-util.h"

/* One migration's outcome, as its client saw it. */
typedef struct BenchMig {
        bool ok;
        char error[600];
        uint64_t downtime_ms;    /* QEMU's own figure */
        uint64_t measured_ms;    /* Drover's: STOP on the source to RESUME on the destination */
        uint64_t finish_call_ms; /* the source's MigrateFinish round trip */
        uint64_t total_ms, bytes;
        uint64_t t_start_ns, t_end_ns; /* now_ns() around the call and its wait */
} BenchMig;

/* Migrate @name from @src to @dst (its TCP port on loopback) with
 * @bandwidth bytes/s (0: unlimited) and wait up to @timeout_ms for the end.
 * *o says what happened (o->ok false with o->error on any failure). */
void bench_migrate(TestAgent *src, TestAgent *dst, const char *name, uint64_t bandwidth, int64_t timeout_ms,
                   BenchMig *o);

/* One query: made at @t_ns (now_ns()), answered after @lat_us. */
typedef struct BenchQSample {
        uint64_t t_ns;
        uint32_t lat_us;
        bool list; /* ListGuests; false: GetGuest */
} BenchQSample;

/* The query client.  Start it with bench_querier_start(), stop it with
 * bench_querier_stop(); then s[0..n) are the samples in call order and
 * list/get/all their latencies in µs, sorted. */
typedef struct BenchQuerier {
        BenchQSample *s;
        size_t n, cap;
        unsigned long errors; /* failed calls (NOT_FOUND is an answer, not an error) */
        Samples list, get, all;
        /* private */
        RpcClient *cl;
        pthread_t th;
        atomic_bool stop;
        const char *const *names;
        size_t n_names;
        int hz;
} BenchQuerier;

/* Start calling ListGuests and GetGuest (round robin over @names, which
 * must outlive the querier) @hz times a second each on @t's unix socket,
 * over a connection of its own; a late tick is not made up for.  0 or
 * -errno (printed). */
int bench_querier_start(BenchQuerier *q, TestAgent *t, const char *const *names, size_t n_names, int hz);
/* Stop and join it, close its connection, fill list/get/all. */
void bench_querier_stop(BenchQuerier *q);
void bench_querier_free(BenchQuerier *q);
/* Three rows "| @label | ListGuests/GetGuest/both | calls | p50 | p99 | max |" (ms). */
void bench_print_queries(const char *label, const BenchQuerier *q);

/* GetAgentStats of @t (@reset: zero its lock statistics after reading);
 * NULL on error (printed).  Free with
 * drover__v1__get_agent_stats_response__free_unpacked(). */
Drover__V1__GetAgentStatsResponse *bench_agent_stats(TestAgent *t, bool reset);
/* The lock class @name of @as, or NULL. */
const Drover__V1__LockClassStats *bench_lock_of(const Drover__V1__GetAgentStatsResponse *as, const char *name);
/* One row per lock class that was taken: "| @label | @agent | class | holds |
 * max hold ms | max wait ms |" (the agent's figures since its last reset). */
void bench_print_locks(const char *label, const char *agent, const Drover__V1__GetAgentStatsResponse *as);
/* One row per lane: "| @label | lane | workers | busy | queued | served | refused | max wait |
 * longest wait in phase |", counting what happened between @before and @after
 * (either may be NULL: then since the agent started). */
void bench_print_lanes_header(void);
void bench_print_lanes(const char *label, const Drover__V1__GetAgentStatsResponse *before,
                       const Drover__V1__GetAgentStatsResponse *after);

/* Define the tiny test guest @name (@mem_mib, kernel command line @append)
 * on @t and start it (waiting for the start).  0 or -errno (printed). */
int bench_define_start(TestAgent *t, const char *name, int mem_mib, const char *append);
