/* Benchmark: evacuation makespan (issue 6, benchmark 2).
 *
 * Three hosts as network namespaces with a drover-agent each, over TLS (the
 * cluster harness, tests/cluster/cluster.h); every host's link shaped with
 * tbf to 1 Gbit/s.  Sixteen tiny real guests (64-256 MiB, TCG, the dirtying
 * test guest; some idle, some dirtying 2-16 MiB/s) run on host a, and host
 * a is evacuated to b and c four times, each time from the same state (the
 * guests are destroyed everywhere and started afresh on a in between):
 *
 *   drover        the coordinator's admission control as configured for a
 *                 1 Gbit/s link: link_bytes_per_s 125,000,000 (the tbf rate),
 *                 everything else default (max_outgoing 2, stream 400 MB/s);
 *   one-at-a-time the coordinator with max_outgoing 1 and a link budget too
 *                 large to bind (10 GB/s): one migration at a time, QEMU
 *                 not capped (the tbf decides);
 *   fixed-2       KubeVirt's default: max_outgoing 2, max_incoming 2, the
 *                 same large link budget, so only the limit binds;
 *   all-at-once   the 16 Migrate calls sent to host a's agent at once by
 *                 this program, no bandwidth cap, the destinations of the
 *                 drover run.  (The coordinator cannot run 16 off one host:
 *                 its admission needs each migration to get at least an
 *                 eighth of the link, docs/coordinator.md, so it stops at 8.)
 *
 * Each coordinator run: drover-coordinator in host a's namespace with a fresh
 * database, `droverctl evacuate host-a --json`, then `droverctl job ID
 * --json` until the job ends (tests/scripts/demo.sh does the same by hand).
 * Before the modes, one 256 MiB idle guest migrates alone with no cap to
 * measure what one migration stream carries over the shaped link.
 *
 * Reported per mode: makespan (the job's creation to its last sub-task's
 * end), the bandwidth lower bound (bytes transferred, failed migrations
 * included, / 125,000,000 B/s), their ratio, failed migrations, sum and
 * max of downtime (Drover's STOP->RESUME figure and QEMU's), the most
 * migrations at once, and the time no migration ran.  Writes makespan*.dat,
 * makespan.gp / makespan.png (makespan against the bound) and
 * makespan-gantt.gp / .png (every sub-task over time, per mode) into
 * $DROVER_BENCH_OUT.
 *
 * Target (issue 6): drover <= 1.15 x the bound, no failures, best of the
 * four.  A second table sets every mode against the raw bound (memory /
 * link) and the wire bound (host a's eth0 bytes / link); target (issue
 * 15): drover-zstd below the raw bound and within 1.05x the wire bound.  It prints figures and never fails for being slow; it fails when
 * the cluster cannot be built or a guest does not start.  Needs root
 * (network namespaces); skipped (77) otherwise.
 *
 *   makespan-bench [MODES]   MODES: comma-separated subset, default
 *                            drover,one-at-a-time,fixed-2,all-at-once;
 *                            drover-zstd (only when named): the drover
 *                            mode, the Evacuate call's parameters with
 *                            compression zstd (issue 15: the guests' pages
 *                            hold one written word each: compressible)
 *   (meson test -C build --benchmark makespan)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "bench-util.h"
#include "coordinator.pb-c.h"
#include "cluster.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

#define A 0
#define B 1
#define C 2
#define N 16
#define LINK_RATE "1gbit"
#define LINK_BPS 125000000.0
#define BIG_LINK 10000000000ull
#define JOB_TIMEOUT_MS 900000

static const int mems[N] = { 256, 224, 192, 160, 128, 96, 64, 256, 224, 192, 160, 128, 96, 64, 128, 192 };
static const int rates[N] = { 16, 0, 8, 2, 16, 0, 4, 2, 8, 0, 16, 2, 4, 0, 8, 2 };
static char names[N][8];
static const char *modes_arg;

typedef enum { M_DROVER, M_ONE, M_FIXED2, M_ALL, M_ZSTD, M_COUNT } Mode;
static const char *const mode_names[M_COUNT] = { "drover", "one-at-a-time", "fixed-2", "all-at-once",
                                                 "drover-zstd" };

typedef struct Sub {
        int dst;                 /* host index */
        bool ok;
        char error[600];
        double start_s, end_s;   /* since the mode's t0 */
        uint64_t bytes, downtime_ms, measured_ms;
} Sub;

typedef struct Result {
        bool ran;
        Sub s[N];
        double makespan_s;
        uint64_t bytes;
        int failed, max_conc;
        uint64_t dt_sum, dt_max, qdt_sum, qdt_max;
        double idle_s;
        double load_before;
        /* host a's eth0 transmit rate, sampled every 100 ms from the mode's t0 */
        float link_mbs[4096];
        int n_link;
        double link_avg_mbs;            /* over the makespan */
        double wire_bytes;              /* host a's eth0 bytes sent over the makespan (the samples') */
        int64_t t0_unix_ms;             /* the mode's t0 (the job's creation) */
        int64_t link_start_unix_ms;     /* the first sample's interval starts here */
} Result;

static Result results[M_COUNT];
static int plan_dst[N]; /* destinations of the drover run (for all-at-once) */
static bool have_plan;
static double stream_mbps; /* calibration: one stream over the shaped link */

static int guest_index(const char *name) {
        for (int i = 0; i < N; i++)
                if (strcmp(names[i], name) == 0)
                        return i;
        return -1;
}

/* ---- guests -------------------------------------------------------------------------------- */

static void start_guests(Cluster *c) {
        char append[64];
        for (int i = 0; i < N; i++) {
                snprintf(append, sizeof(append), "mib=%d rate=%d", mems[i] - 16, rates[i]);
                cluster_guest_start(c, A, names[i], NULL, mems[i], append);
        }
        sleep_ms(1500); /* the dirtying guests reach their rate */
}

static void call_ignore(Cluster *c, int h, const char *method, const char *name) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ProtobufCMessage *resp = NULL;
        RpcStatus st;
        ref.guest = (char *) name;
        if (cluster_call(c, h, method, &ref.base, &resp, &st) >= 0 && resp)
                protobuf_c_message_free_unpacked(resp, NULL);
}

/* Destroy and undefine every guest on every host; wait until no QEMU is left. */
static void remove_guests(Cluster *c) {
        for (int h = 0; h < c->n; h++)
                for (int i = 0; i < N; i++) {
                        call_ignore(c, h, "Destroy", names[i]);
                        call_ignore(c, h, "Undefine", names[i]);
                }
        Deadline d = deadline_in_ms(30000);
        for (;;) {
                int live = 0, pids[4];
                for (int h = 0; h < c->n; h++)
                        for (int i = 0; i < N; i++)
                                live += cluster_qemu_pids(c, h, names[i], pids, 4);
                if (!live)
                        return;
                if (deadline_expired(d))
                        fail_msg("%d QEMUs still alive 30 s after every guest was destroyed", live);
                sleep_ms(100);
        }
}

/* ---- the coordinator ----------------------------------------------------------------------- */

/* Evacuate host a with compression zstd through the Coordinator API
 * (droverctl has no flag for it; docs/migration.md, "Multifd and
 * compression"); the job's id into @id. */
static void evacuate_zstd(Cluster *c, char *id, size_t size) {
        Drover__V1__EvacuateRequest req = DROVER__V1__EVACUATE_REQUEST__INIT;
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        Drover__V1__JobResponse *resp = NULL;
        RpcStatus st;
        p.compression = DROVER__V1__MIGRATION_COMPRESSION__MIGRATION_COMPRESSION_ZSTD;
        req.host = (char *) "host-a";
        req.params = &p;
        RpcClient *cl = cluster_coord_client(c);
        if (!cl || rpc_client_unary(cl, &drover__v1__coordinator__descriptor, "Evacuate", &req.base, CLUSTER_CTL_MS,
                                    (ProtobufCMessage **) &resp, &st) < 0 || !resp->job)
                fail_msg("Evacuate host-a with zstd: %s %s", cl ? rpc_code_to_string(st.code) : "no client",
                         cl ? st.details : "");
        snprintf(id, size, "%s", resp->job->id);
        drover__v1__job_response__free_unpacked(resp, NULL);
        rpc_client_free(cl);
}

static void run_coordinator(Cluster *c, Mode m, Result *res) {
        ClusterCoordOptions o = { .heartbeat_ms = 1000 };
        switch (m) {
        case M_ZSTD: /* the Evacuate call below carries compression */
        case M_DROVER:
                for (int i = 0; i < c->n; i++)
                        o.link_bytes_per_s[i] = (uint64_t) LINK_BPS;
                break;
        case M_ONE:
                o.max_outgoing = 1;
                for (int i = 0; i < c->n; i++)
                        o.link_bytes_per_s[i] = BIG_LINK;
                break;
        case M_FIXED2:
                o.max_outgoing = 2;
                o.max_incoming = 2;
                for (int i = 0; i < c->n; i++)
                        o.link_bytes_per_s[i] = BIG_LINK;
                break;
        default:
                fail_msg("mode %d is not a coordinator mode", m);
        }
        cluster_coord_drop_db(c); /* hosts come from the file, no job history */
        cluster_coord_up(c, &o, N, 30000);
        char id[64];
        if (m == M_ZSTD)
                evacuate_zstd(c, id, sizeof(id));
        else {
                int code;
                json_object *r = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "evacuate", "host-a", NULL);
                json_object *j0 = cj_get(r, "job");
                if (code != 0 || !j0)
                        fail_msg("droverctl evacuate host-a --json: exit %d", code);
                snprintf(id, sizeof(id), "%s", cj_str(j0, "id"));
                json_object_put(r);
        }
        json_object *job;

        job = cluster_job_wait_end(c, id, JOB_TIMEOUT_MS, 500, NULL, NULL);
        int64_t t0 = cj_int(job, "created_unix_ms"), last = t0;
        res->t0_unix_ms = t0;
        json_object *subs = cj_get(job, "subtasks");
        if (cj_len(subs) != N)
                fail_msg("job %s has %zu sub-tasks, expected %d", id, cj_len(subs), N);
        for (size_t k = 0; k < cj_len(subs); k++) {
                json_object *s = cj_idx(subs, k);
                int gi = guest_index(cj_str(s, "guest"));
                if (gi < 0)
                        fail_msg("job %s: unknown guest %s", id, cj_str(s, "guest"));
                Sub *x = &res->s[gi];
                x->dst = cluster_host_index(cj_str(s, "destination"));
                x->ok = strcmp(cj_str(s, "phase"), "done") == 0;
                snprintf(x->error, sizeof(x->error), "%s", cj_str(s, "error"));
                int64_t st = cj_int(s, "started_unix_ms"), fi = cj_int(s, "finished_unix_ms");
                x->start_s = st ? (double) (st - t0) / 1000.0 : 0;
                x->end_s = fi ? (double) (fi - t0) / 1000.0 : 0;
                x->bytes = (uint64_t) cj_int(s, "transferred_bytes");
                x->downtime_ms = (uint64_t) cj_int(s, "downtime_ms");
                x->measured_ms = (uint64_t) cj_int(s, "measured_downtime_ms");
                if (fi > last)
                        last = fi;
        }
        res->makespan_s = (double) (last - t0) / 1000.0;
        printf("  job %s %s\n", id, cj_str(job, "phase"));
        json_object_put(job);
        cluster_coord_stop(c);
}

/* ---- the link: host a's eth0 bytes sent ------------------------------------------------------ */

/* Bytes sent on eth0 in the namespace of process @pid (/proc/PID/net/dev). */
static uint64_t eth0_tx(pid_t pid) {
        char path[64], line[512];
        uint64_t tx = 0;
        snprintf(path, sizeof(path), "/proc/%d/net/dev", (int) pid);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f)) {
                char *p = strstr(line, "eth0:");
                unsigned long long v[9];
                if (p && sscanf(p + 5, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                                &v[4], &v[5], &v[6], &v[7], &v[8]) == 9)
                        tx = v[8];
        }
        if (f)
                fclose(f);
        return tx;
}

typedef struct Sampler {
        pthread_t th;
        pid_t pid;
        atomic_bool stop;
        Result *r;
} Sampler;

static void *sampler_main(void *arg) {
        Sampler *s = arg;
        uint64_t last = eth0_tx(s->pid), t_last = now_ns();
        s->r->link_start_unix_ms = (int64_t) (wall_ns() / NSEC_PER_MSEC);
        while (!atomic_load(&s->stop) && s->r->n_link < (int) (sizeof(s->r->link_mbs) / sizeof(float))) {
                sleep_ms(100);
                uint64_t tx = eth0_tx(s->pid), t = now_ns();
                s->r->link_mbs[s->r->n_link++] = (float) ((double) (tx - last) / ((double) (t - t_last) / 1e9) / 1e6);
                last = tx;
                t_last = t;
        }
        return NULL;
}

/* ---- all at once, without the coordinator ------------------------------------------------- */

static void run_all_at_once(Cluster *c, Result *res) {
        ClusterAsyncMigrate *m[N];
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        uint64_t t0 = now_ns();
        res->t0_unix_ms = (int64_t) (wall_ns() / NSEC_PER_MSEC);
        for (int i = 0; i < N; i++) {
                int dst = have_plan ? plan_dst[i] : (i % 2 ? C : B);
                res->s[i].dst = dst;
                m[i] = cluster_migrate_async(c, A, dst, names[i], &p, true);
        }
        for (int i = 0; i < N; i++) {
                RpcStatus st;
                Drover__V1__MigrationResult *r = cluster_migrate_join(m[i], &st);
                Sub *x = &res->s[i];
                x->end_s = (double) (now_ns() - t0) / 1e9; /* joined in order: an upper bound, fixed below */
                if (!r) {
                        snprintf(x->error, sizeof(x->error), "Migrate: %s %s", rpc_code_to_string(st.code), st.details);
                        continue;
                }
                x->ok = r->success;
                snprintf(x->error, sizeof(x->error), "%s", r->success ? "" : r->error);
                x->bytes = r->transferred_bytes;
                x->downtime_ms = r->downtime_ms;
                x->measured_ms = r->measured_downtime_ms;
                /* the agent's own duration (begin to confirm) is exact; the call started at t0 */
                x->start_s = 0;
                x->end_s = r->total_ms ? (double) r->total_ms / 1000.0 : x->end_s;
                drover__v1__migration_result__free_unpacked(r, NULL);
        }
        res->makespan_s = (double) (now_ns() - t0) / 1e9;
}

/* ---- calibration: one stream over the shaped link ------------------------------------------ */

static void calibrate(Cluster *c) {
        cluster_guest_start(c, A, "cal", NULL, 256, "mib=240 rate=0");
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        ClusterAsyncMigrate *m = cluster_migrate_async(c, A, B, "cal", &p, true);
        /* the agent's readings of QEMU's counters, each dated by its age */
        uint64_t first_t = 0, last_t = 0, first_b = 0, last_b = 0;
        for (int k = 0; k < 600; k++) {
                Drover__V1__GuestStatus *st = NULL;
                if (cluster_guest_status(c, A, "cal", &st) != 0)
                        break;
                bool active = st->migration && strcmp(st->migration->status, "active") == 0;
                uint64_t b = st->migration ? st->migration->ram_transferred_bytes : 0;
                uint64_t t = now_ns() - (st->migration ? st->migration->age_ms : 0) * NSEC_PER_MSEC;
                drover__v1__guest_status__free_unpacked(st, NULL);
                if (active && b > 0) {
                        if (!first_t) {
                                first_t = t;
                                first_b = b;
                        }
                        if (b != last_b) {
                                last_t = t;
                                last_b = b;
                        }
                }
                if (!active && first_t)
                        break;
                sleep_ms(50);
        }
        RpcStatus st;
        Drover__V1__MigrationResult *r = cluster_migrate_join(m, &st);
        if (r) {
                if (last_t > first_t)
                        stream_mbps = (double) (last_b - first_b) / ((double) (last_t - first_t) / 1e9) / 1e6;
                printf("calibration: one 256 MiB idle guest alone, no cap: %s in %llu ms, %.1f MiB; stream rate "
                       "%.1f MB/s (%.1f %% of the %s link), downtime %llu ms\n",
                       r->success ? "migrated" : "FAILED", (unsigned long long) r->total_ms,
                       (double) r->transferred_bytes / 1048576.0, stream_mbps, stream_mbps * 1e6 / LINK_BPS * 100,
                       LINK_RATE, (unsigned long long) r->measured_downtime_ms);
                drover__v1__migration_result__free_unpacked(r, NULL);
        } else
                printf("calibration: Migrate failed: %s %s\n", rpc_code_to_string(st.code), st.details);
        call_ignore(c, B, "Destroy", "cal");
        call_ignore(c, B, "Undefine", "cal");
        call_ignore(c, A, "Destroy", "cal");
        call_ignore(c, A, "Undefine", "cal");
}

/* ---- figures --------------------------------------------------------------------------------- */

typedef struct Edge {
        double t;
        int d;
} Edge;

static int cmp_edge(const void *x, const void *y) {
        const Edge *a = x, *b = y;
        if (a->t != b->t)
                return a->t < b->t ? -1 : 1;
        return a->d - b->d; /* ends before starts at the same instant */
}

static void summarize(Result *r) {
        Edge e[2 * N];
        size_t n = 0;
        for (int i = 0; i < N; i++) {
                Sub *s = &r->s[i];
                r->bytes += s->bytes;
                r->failed += !s->ok;
                r->dt_sum += s->measured_ms;
                r->dt_max = s->measured_ms > r->dt_max ? s->measured_ms : r->dt_max;
                r->qdt_sum += s->downtime_ms;
                r->qdt_max = s->downtime_ms > r->qdt_max ? s->downtime_ms : r->qdt_max;
                if (s->end_s > s->start_s) {
                        e[n++] = (Edge){ s->start_s, +1 };
                        e[n++] = (Edge){ s->end_s, -1 };
                }
        }
        qsort(e, n, sizeof(e[0]), cmp_edge);
        int cur = 0;
        double busy = 0, since = 0;
        for (size_t i = 0; i < n; i++) {
                if (cur == 0 && e[i].d > 0)
                        since = e[i].t;
                cur += e[i].d;
                if (cur == 0)
                        busy += e[i].t - since;
                r->max_conc = cur > r->max_conc ? cur : r->max_conc;
        }
        r->idle_s = r->makespan_s - busy;
}

static bool mode_wanted(Mode m) {
        if (!modes_arg || !modes_arg[0])
                return m != M_ZSTD; /* the issue-6 comparison; drover-zstd when named */
        size_t l = strlen(mode_names[m]);
        for (const char *p = strstr(modes_arg, mode_names[m]); p; p = strstr(p + 1, mode_names[m]))
                if ((p == modes_arg || p[-1] == ',') && (p[l] == '\0' || p[l] == ','))
                        return true;
        return false;
}

static void write_plots(void) {
        FILE *f = bench_open("makespan.dat");
        if (f) {
                fprintf(f, "# mode makespan_s bound_s ratio failed mib_sent\n");
                for (int m = 0; m < M_COUNT; m++)
                        if (results[m].ran)
                                fprintf(f, "%s %.2f %.2f %.2f %d %.0f\n", mode_names[m], results[m].makespan_s,
                                        (double) results[m].bytes / LINK_BPS,
                                        results[m].makespan_s / ((double) results[m].bytes / LINK_BPS),
                                        results[m].failed, (double) results[m].bytes / 1048576.0);
                fclose(f);
        }
        f = bench_open("makespan.gp");
        if (f) {
                fprintf(f, "set terminal pngcairo size 640,320 font ',9'\n"
                           "set output 'makespan.png'\n"
                           "set title 'Evacuation of 16 guests (2.5 GiB) over a 1 Gbit/s link: makespan against the "
                           "bandwidth bound'\n"
                           "set style data histograms\nset style histogram clustered gap 1\n"
                           "set style fill solid 0.7 border -1\nset boxwidth 0.9\n"
                           "set ylabel 'seconds'\nset yrange [0:*]\nset offsets 0,0,graph 0.15,0\nset grid ytics\n"
                           "set key top left\n"
                           "plot 'makespan.dat' using 2:xtic(1) title 'makespan' lc rgb '#4477aa', "
                           "'' using 3 title 'bound: bytes / 125 MB/s' lc rgb '#bbbbbb', "
                           "'' using 0:2:(sprintf('%%.2fx, %%.0f MiB%%s', $4, $6, $5 > 0 ? sprintf(', %%d failed', "
                           "$5) : '')) with labels offset -1.5,0.7 notitle\n");
                fclose(f);
                bench_plot("makespan.gp");
        }
        f = bench_open("makespan-gantt.dat");
        int blocks = 0;
        if (f) {
                for (int m = 0; m < M_COUNT; m++) {
                        if (!results[m].ran)
                                continue;
                        fprintf(f, "# %s: guest start_s end_s ok dst\n", mode_names[m]);
                        for (int i = 0; i < N; i++) {
                                const Sub *s = &results[m].s[i];
                                fprintf(f, "%d %.3f %.3f %d %d\n", i, s->start_s, s->end_s, s->ok, s->dst);
                        }
                        fprintf(f, "\n\n");
                        blocks++;
                }
                fclose(f);
        }
        f = bench_open("makespan-link.dat");
        if (f) {
                for (int m = 0; m < M_COUNT; m++) {
                        const Result *r = &results[m];
                        if (!r->ran)
                                continue;
                        fprintf(f, "# %s: seconds since t0, MB/s sent by host a in the 100 ms before\n", mode_names[m]);
                        double off = (double) (r->link_start_unix_ms - r->t0_unix_ms) / 1000.0;
                        for (int k = 0; k < r->n_link; k++) {
                                double t = off + 0.1 * (k + 1);
                                if (t >= -0.5 && t <= r->makespan_s + 0.5)
                                        fprintf(f, "%.2f %.1f\n", t, r->link_mbs[k]);
                        }
                        fprintf(f, "\n\n");
                }
                fclose(f);
        }
        f = bench_open("makespan-gantt.gp");
        if (f && blocks) {
                double xmax = 0;
                for (int m = 0; m < M_COUNT; m++)
                        if (results[m].ran && results[m].makespan_s > xmax)
                                xmax = results[m].makespan_s;
                fprintf(f, "set terminal pngcairo size 720,%d font ',9'\n"
                           "set output 'makespan-gantt.png'\n"
                           "set multiplot layout %d,1 title 'Sub-tasks over time (blue: to host b, green: to host c, "
                           "red: failed); grey: MB/s host a sent (right axis)'\n"
                           "set xrange [0:%.1f]\nset yrange [-0.7:15.7]\nset ytics 0,3,15 nomirror\nset ylabel 'guest'\n"
                           "set y2range [0:140]\nset y2tics 0,40,120\nset y2label 'MB/s sent'\n"
                           "set grid x\nunset key\nset lmargin 9\nset rmargin 9\n",
                        150 + 150 * blocks, blocks, xmax * 1.02);
                int k = 0;
                for (int m = 0; m < M_COUNT; m++) {
                        if (!results[m].ran)
                                continue;
                        if (k == blocks - 1)
                                fprintf(f, "set xlabel 'seconds since the evacuation started'\n");
                        fprintf(f,
                                "set title '%s: %.1f s, bound %.1f s'\n"
                                "plot 'makespan-gantt.dat' index %d using 2:1:($3-$2):(0):($4 == 0 ? 7 : ($5 == 1 ? 3 "
                                ": 2)) with vectors nohead lw 5 lc variable, 'makespan-link.dat' index %d using 1:2 "
                                "axes x1y2 with lines lw 1 lc rgb '#555555'\n",
                                mode_names[m], results[m].makespan_s, (double) results[m].bytes / LINK_BPS, k, k);
                        k++;
                }
                fprintf(f, "unset multiplot\n");
                fclose(f);
                bench_plot("makespan-gantt.gp");
        } else if (f)
                fclose(f);
}

/* Makespan against the raw bound (the guests' memory / the link rate: what
 * an uncompressed stream cannot beat) and the wire bound (host a's eth0
 * bytes during the makespan / the link rate); QEMU 7.2 counts compressed
 * multifd pages whole, so "bytes" above is no wire figure for drover-zstd.
 * Target (issue 15): drover-zstd below the raw bound, within 1.05x the wire
 * bound. */
static void report_bounds(int total_mib) {
        double raw = (double) total_mib * 1048576.0 / LINK_BPS;
        printf("\n| mode          | makespan s | raw bound s (memory / link) | wire MiB | wire bound s | vs raw | vs "
               "wire |\n|---------------|-----------:|----------------------------:|---------:|-------------:|-------:|"
               "--------:|\n");
        for (int m = 0; m < M_COUNT; m++) {
                const Result *r = &results[m];
                if (!r->ran)
                        continue;
                double wire = r->wire_bytes / LINK_BPS;
                printf("| %-13s | %10.2f | %27.2f | %8.1f | %12.2f | %6.2f | %7.2f |\n", mode_names[m], r->makespan_s,
                       raw, r->wire_bytes / 1048576.0, wire, r->makespan_s / raw,
                       wire > 0 ? r->makespan_s / wire : 0);
        }
        const Result *z = &results[M_ZSTD];
        if (z->ran) {
                double wire = z->wire_bytes / LINK_BPS;
                printf("target: drover-zstd %.2fx the raw bound (< 1: %s), %.2fx the wire bound (<= 1.05: %s), "
                       "%d failed\n", z->makespan_s / raw, z->makespan_s < raw ? "met" : "MISSED",
                       wire > 0 ? z->makespan_s / wire : 0,
                       wire > 0 && z->makespan_s <= 1.05 * wire ? "met" : "MISSED", z->failed);
        }
}

/* ---- the test -------------------------------------------------------------------------------- */

static void test_makespan(void **state) {
        Cluster *c = *state;
        char machine[512];
        int total_mib = 0;
        for (int i = 0; i < N; i++)
                total_mib += mems[i];
        cluster_up(c, 3);
        for (int i = 0; i < c->n; i++)
                if (netns_shape(&c->net, i, LINK_RATE) < 0)
                        fail_msg("tbf %s on host %c failed", LINK_RATE, 'a' + i);
        bench_machine(machine, sizeof(machine));
        printf("makespan: evacuation of host a (%d guests, %d MiB, TCG) to b and c; every host link tbf %s\n"
               "(burst 128kb latency 100ms); agents over TLS in network namespaces\nmachine: %s\n\n",
               N, total_mib, LINK_RATE, machine);
        fflush(stdout);
        calibrate(c);

        for (int m = 0; m < M_COUNT; m++) {
                if (!mode_wanted((Mode) m))
                        continue;
                Result *r = &results[m];
                start_guests(c);
                r->load_before = bench_load1();
                printf("%s: started (load average %.2f)\n", mode_names[m], r->load_before);
                fflush(stdout);
                Sampler smp = { .pid = c->host[A].agent.pid, .r = r };
                pthread_create(&smp.th, NULL, sampler_main, &smp);
                if (m == M_ALL)
                        run_all_at_once(c, r);
                else
                        run_coordinator(c, (Mode) m, r);
                atomic_store(&smp.stop, true);
                pthread_join(smp.th, NULL);
                /* the samples inside [t0, t0 + makespan] */
                double sum = 0, off = (double) (r->link_start_unix_ms - r->t0_unix_ms) / 1000.0;
                for (int k = 0; k < r->n_link; k++) {
                        double t = off + 0.1 * k;
                        if (t >= 0 && t + 0.1 <= r->makespan_s + 0.05)
                                sum += r->link_mbs[k] * 0.1;
                }
                r->link_avg_mbs = sum / r->makespan_s;
                r->wire_bytes = sum * 1e6;
                r->ran = true;
                summarize(r);
                if (m == M_DROVER) {
                        for (int i = 0; i < N; i++)
                                plan_dst[i] = r->s[i].dst;
                        have_plan = true;
                }
                printf("%s: makespan %.2f s, bound %.2f s (%.2fx), %d failed\n", mode_names[m], r->makespan_s,
                       (double) r->bytes / LINK_BPS, r->makespan_s / ((double) r->bytes / LINK_BPS), r->failed);
                for (int i = 0; i < N; i++) {
                        const Sub *s = &r->s[i];
                        printf("  %-4s %3d MiB rate %2d -> %c  %+7.2f .. %+7.2f s  %6.1f MiB  downtime %4llu ms (QEMU "
                               "%4llu)%s%s\n",
                               names[i], mems[i], rates[i], 'a' + (s->dst < 0 ? 0 : s->dst), s->start_s, s->end_s,
                               (double) s->bytes / 1048576.0, (unsigned long long) s->measured_ms,
                               (unsigned long long) s->downtime_ms, s->ok ? "" : "  FAILED: ", s->ok ? "" : s->error);
                }
                fflush(stdout);
                remove_guests(c);
        }

        uint64_t min_bytes = 0;
        for (int m = 0; m < M_COUNT; m++)
                if (results[m].ran && (!min_bytes || results[m].bytes < min_bytes))
                        min_bytes = results[m].bytes;
        printf("\n| mode          | makespan s | bound s | ratio | vs smallest bound | failed | MiB sent | link MB/s "
               "| downtime sum / max ms | QEMU downtime sum / max ms | most at once | no migration running s | load "
               "before |\n");
        printf("|---------------|-----------:|--------:|------:|------------------:|-------:|---------:|----------:"
               "|----------------------:|---------------------------:|-------------:|-----------------------:|-----"
               "-------:|\n");
        for (int m = 0; m < M_COUNT; m++) {
                const Result *r = &results[m];
                if (!r->ran)
                        continue;
                double bound = (double) r->bytes / LINK_BPS;
                printf("| %-13s | %10.2f | %7.2f | %5.2f | %17.2f | %6d | %8.1f | %9.1f | %11llu / %7llu | %15llu / "
                       "%7llu | %12d | %22.2f | %11.2f |\n",
                       mode_names[m], r->makespan_s, bound, r->makespan_s / bound,
                       r->makespan_s / ((double) min_bytes / LINK_BPS), r->failed,
                       (double) r->bytes / 1048576.0, r->link_avg_mbs, (unsigned long long) r->dt_sum,
                       (unsigned long long) r->dt_max,
                       (unsigned long long) r->qdt_sum, (unsigned long long) r->qdt_max, r->max_conc, r->idle_s,
                       r->load_before);
        }
        if (stream_mbps > 0)
                printf("\none stream over the shaped link carried %.1f MB/s: the bound at that rate is %.1f %% longer\n",
                       stream_mbps, (LINK_BPS / (stream_mbps * 1e6) - 1) * 100);
        if (results[M_DROVER].ran) {
                const Result *d = &results[M_DROVER];
                double ratio = d->makespan_s / ((double) d->bytes / LINK_BPS);
                bool best = true;
                for (int m = 1; m < M_ZSTD; m++)
                        if (results[m].ran && results[m].makespan_s < d->makespan_s)
                                best = false;
                printf("target: drover %.2fx the bound (<= 1.15: %s), %d failed (%s), %s\n", ratio,
                       ratio <= 1.15 ? "met" : "MISSED", d->failed, d->failed ? "MISSED" : "met",
                       best ? "the shortest makespan of the modes run" : "NOT the shortest makespan");
        }
        report_bounds(total_mib);
        fflush(stdout);
        write_plots();
        c->ok = true;
}

static int setup(void **state) {
        Cluster *c = calloc(1, sizeof(*c));
        *state = c;
        return c ? 0 : -1;
}

static int teardown(void **state) {
        Cluster *c = *state;
        cluster_down(c);
        free(c);
        return 0;
}

int main(int argc, char **argv) {
        modes_arg = argc > 1 ? argv[1] : getenv("DROVER_MAKESPAN_MODES");
        tu_require_qemu();
        netns_require();
        for (int i = 0; i < N; i++)
                snprintf(names[i], sizeof(names[i]), "ev%02d", i);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_makespan, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
