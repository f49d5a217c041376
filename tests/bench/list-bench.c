/* Benchmark: ListGuests of 200 guests, hammered over loopback TCP.
 *
 * First, in-process and without gRPC, the agent's cost of building one
 * reply of 200 statuses three ways: a snapshot and a protobuf-c pack of
 * every status per call (what ListGuests did), a cached unpacked message
 * per guest and generation packed per call (the other design considered),
 * and cached packed bytes per guest and generation copied into the reply
 * (agent_status_list(), what ListGuests does).  Then, over gRPC:
 *
 * Starts a real drover-agent (development mode, default configuration,
 * rpc_threads 32), defines 200 guests (shut off: ListGuests lists defined
 * guests, no QEMU needed to run) and calls ListGuests from N client threads,
 * each with its own connection to the agent's 127.0.0.1 port, for DURATION
 * seconds per phase.  Two kinds of client:
 *   - raw:     the reply's bytes only (rpc_client_unary_raw), what the agent
 *              can serve when the client spends nothing on decoding;
 *   - decoded: the reply unpacked into messages (rpc_client_unary), what a
 *              real client such as the coordinator pays too.
 * A last phase runs the raw client while one more thread undefines and
 * defines again one guest after another (each pair replaces a guest's
 * status), so the cost of keeping statuses fresh shows.
 * Each phase prints calls/s, latency p50/p99/max, the agent's CPU (cores and
 * µs per call, from /proc/PID/stat) and this process's CPU (the clients).
 * Client and agent share the machine's CPUs, so calls/s is a lower bound of
 * what the agent serves.
 *
 * It checks once per phase that a reply holds the 200 guests and fails only
 * for a broken setup (the agent does not start, a Define fails, a reply is
 * wrong), never for being slow (STYLE.md).
 *
 *   list-bench [DURATION_S]     (meson test -C build --benchmark list)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "agent-status.h"
#include "agentd-util.h"
#include "bench-util.h"
#include "deadline.h"
#include "err.h"
#include "log.h"
#include "qemuproc.h"
#include "testutil.h"

#define N_GUESTS 200
#define CALL_TIMEOUT_MS 30000
#define LIST_PATH "/drover.v1.Agent/ListGuests"

static char names[N_GUESTS][16];
static TestAgent agent;
static int n_defined; /* guests defined on the agent (0, then N_GUESTS) */

/* ---- in-process: the cost of building one reply --------------------------------- */

#define INPROC_ROUNDS 2000

/* A bump allocator over one buffer, emptied before each reply. */
typedef struct Bump {
        uint8_t *buf;
        size_t used, cap;
} Bump;

static void *bump_alloc(void *data, size_t size) {
        Bump *b = data;
        size = (size + 15) & ~(size_t) 15;
        if (b->used + size > b->cap)
                return NULL;
        void *p = b->buf + b->used;
        b->used += size;
        return p;
}

static void bump_free(void *data, void *p) {
        (void) data;
        (void) p;
}

typedef struct InProc {
        Vm *vms[N_GUESTS];
        VmSnapshot kept[N_GUESTS]; /* the unpacked cache: snapshots by generation */
        Bump b;
        ProtobufCAllocator alloc;
} InProc;

static size_t pack_reply(InProc *ip, const Drover__V1__ListGuestsResponse *resp, uint8_t **ret) {
        size_t len = drover__v1__list_guests_response__get_packed_size(resp);
        *ret = bump_alloc(&ip->b, len);
        return drover__v1__list_guests_response__pack(resp, *ret);
}

/* Every status snapshotted and packed per call. */
static size_t reply_snapshot_each(InProc *ip, uint64_t now, uint8_t **ret) {
        Drover__V1__ListGuestsResponse resp = DROVER__V1__LIST_GUESTS_RESPONSE__INIT;
        resp.guests = bump_alloc(&ip->b, N_GUESTS * sizeof(*resp.guests));
        for (int i = 0; i < N_GUESTS; i++) {
                VmSnapshot *s = bump_alloc(&ip->b, sizeof(*s));
                Drover__V1__GuestStatus *o = bump_alloc(&ip->b, sizeof(*o));
                Drover__V1__MigrationStats *m = bump_alloc(&ip->b, sizeof(*m));
                vm_snapshot(ip->vms[i], s);
                agent_status_view(s, now, o, m);
                resp.guests[resp.n_guests++] = o;
        }
        return pack_reply(ip, &resp, ret);
}

/* Unpacked statuses kept per guest and generation, packed per call. */
static size_t reply_unpacked_cache(InProc *ip, uint64_t now, uint8_t **ret) {
        Drover__V1__ListGuestsResponse resp = DROVER__V1__LIST_GUESTS_RESPONSE__INIT;
        resp.guests = bump_alloc(&ip->b, N_GUESTS * sizeof(*resp.guests));
        for (int i = 0; i < N_GUESTS; i++) {
                bool wedged;
                if (vm_snapshot_generation(ip->vms[i], &wedged) != ip->kept[i].generation ||
                    wedged != ip->kept[i].monitor_wedged)
                        vm_snapshot(ip->vms[i], &ip->kept[i]);
                Drover__V1__GuestStatus *o = bump_alloc(&ip->b, sizeof(*o));
                Drover__V1__MigrationStats *m = bump_alloc(&ip->b, sizeof(*m));
                agent_status_view(&ip->kept[i], now, o, m); /* the copy with this call's ages */
                resp.guests[resp.n_guests++] = o;
        }
        return pack_reply(ip, &resp, ret);
}

/* Packed statuses kept per guest and generation, copied per call. */
static size_t reply_packed_cache(InProc *ip, uint64_t now, uint8_t **ret) {
        Drover__V1__ListGuestsResponse resp = DROVER__V1__LIST_GUESTS_RESPONSE__INIT;
        ProtobufCMessageUnknownField *f = bump_alloc(&ip->b, N_GUESTS * sizeof(*f));
        if (agent_status_list(ip->vms, N_GUESTS, now, &ip->alloc, f) < 0) {
                fprintf(stderr, "list-bench: agent_status_list: %s\n", err_msg());
                exit(1);
        }
        resp.base.unknown_fields = f;
        resp.base.n_unknown_fields = N_GUESTS;
        return pack_reply(ip, &resp, ret);
}

typedef size_t (*ReplyFn)(InProc *ip, uint64_t now, uint8_t **ret);

/* µs per reply over INPROC_ROUNDS; the last reply into @last (malloc'ed). */
static double time_reply(InProc *ip, ReplyFn fn, uint8_t **last, size_t *last_len) {
        uint8_t *out = NULL;
        size_t len = 0;
        uint64_t now = now_ns();
        uint64_t t0 = now_ns();
        for (int r = 0; r < INPROC_ROUNDS; r++) {
                ip->b.used = 0;
                len = fn(ip, now, &out);
        }
        double us = (double) (now_ns() - t0) / 1e3 / INPROC_ROUNDS;
        *last = malloc(len);
        memcpy(*last, out, len);
        *last_len = len;
        return us;
}

static void inproc_costs(void) {
        static InProc ip;
        ip.b = (Bump){ .buf = malloc(4 << 20), .cap = 4 << 20 };
        ip.alloc = (ProtobufCAllocator){ .alloc = bump_alloc, .free = bump_free, .allocator_data = &ip.b };
        for (int i = 0; i < N_GUESTS; i++) {
                char uuid[VM_UUID_LEN];
                vm_uuid_generate(uuid);
                if (!ip.b.buf || vm_new(names[i], uuid, NULL, NULL, &ip.vms[i]) < 0) {
                        fprintf(stderr, "list-bench: vm_new: %s\n", err_msg());
                        exit(1);
                }
                vm_lock(ip.vms[i]);
                vm_set_definition_locked(ip.vms[i], strdup("{}"));
                vm_unlock(ip.vms[i]);
        }
        static const struct {
                const char *what;
                ReplyFn fn;
        } ways[] = {
                { "snapshot + pack every status per call (before)", reply_snapshot_each },
                { "cached unpacked statuses, packed per call", reply_unpacked_cache },
                { "cached packed statuses, copied per call (now)", reply_packed_cache },
        };
        uint8_t *first = NULL;
        size_t first_len = 0;
        printf("in-process, one reply of %d shut-off guests (%d rounds, no gRPC):\n", N_GUESTS, INPROC_ROUNDS);
        for (size_t w = 0; w < ELEMENTSOF(ways); w++) {
                uint8_t *bytes;
                size_t len;
                (void) ways[w].fn(&ip, now_ns(), &bytes); /* fills the caches */
                ip.b.used = 0;
                double us = time_reply(&ip, ways[w].fn, &bytes, &len);
                printf("  %-50s %7.1f µs per reply (%zu bytes)\n", ways[w].what, us, len);
                if (!first) {
                        first = bytes;
                        first_len = len;
                        continue;
                }
                if (len != first_len || memcmp(bytes, first, len) != 0) {
                        fprintf(stderr, "list-bench: '%s' packs other bytes than '%s'\n", ways[w].what, ways[0].what);
                        exit(1);
                }
                free(bytes);
        }
        uint64_t t0 = now_ns();
        for (int r = 0; r < INPROC_ROUNDS; r++)
                for (int i = 0; i < N_GUESTS; i++) {
                        bool wedged;
                        (void) vm_snapshot_generation(ip.vms[i], &wedged);
                }
        printf("  %-50s %7.1f µs per reply\n\n", "of which reading 200 generations under the VM locks",
               (double) (now_ns() - t0) / 1e3 / INPROC_ROUNDS);
        free(first);
        for (int i = 0; i < N_GUESTS; i++)
                vm_unref(ip.vms[i]);
        free(ip.b.buf);
        fflush(stdout);
}

/* ---- over gRPC ------------------------------------------------------------------ */

typedef enum { CLIENT_RAW, CLIENT_DECODED } ClientKind;

typedef struct Worker {
        RpcClient *cl;
        ClientKind kind;
        atomic_bool *stop;
        pthread_barrier_t *go;
        Samples lat;
        unsigned long errors;
        size_t reply_bytes;
} Worker;

/* One ListGuests; the reply's size into *ret_bytes (raw only).  0 or -errno. */
static int list_once(RpcClient *cl, ClientKind kind, size_t *ret_bytes) {
        if (kind == CLIENT_RAW) {
                void *data = NULL;
                size_t len = 0;
                int r = rpc_client_unary_raw(cl, LIST_PATH, "", 0, CALL_TIMEOUT_MS, &data, &len, NULL);
                free(data);
                if (r >= 0)
                        *ret_bytes = len;
                return r;
        }
        Drover__V1__ListGuestsRequest req = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        int r = rpc_client_unary(cl, &drover__v1__agent__descriptor, "ListGuests", &req.base, CALL_TIMEOUT_MS,
                                 &resp, NULL);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return r;
}

static void *worker_main(void *arg) {
        Worker *w = arg;
        pthread_barrier_wait(w->go);
        while (!atomic_load(w->stop)) {
                uint64_t t0 = now_ns();
                int r = list_once(w->cl, w->kind, &w->reply_bytes);
                uint64_t dt = now_ns() - t0;
                if (r < 0)
                        w->errors++;
                else
                        samples_add(&w->lat, dt);
        }
        return NULL;
}

/* Undefine and define again guest after guest until stopped: each pair
 * replaces one guest (a new VM with a new status), the heaviest change a
 * shut-off guest sees. */
typedef struct Churner {
        atomic_bool *stop;
        unsigned long redefines, errors;
} Churner;

static int define_one(const char *name) {
        char *json = test_guest_json(name, NULL, 48, "mib=16 rate=5");
        Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        RpcStatus st;
        req.definition_json = json;
        int r = ta_call(&agent, "Define", &req.base, &resp, &st);
        free(json);
        if (r < 0)
                fprintf(stderr, "list-bench: Define %s: %s %s\n", name, rpc_code_to_string(st.code), st.details);
        else
                protobuf_c_message_free_unpacked(resp, NULL);
        return r;
}

static int undefine_one(const char *name) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ProtobufCMessage *resp = NULL;
        RpcStatus st;
        ref.guest = (char *) name;
        int r = ta_call(&agent, "Undefine", &ref.base, &resp, &st);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return r;
}

static void *churner_main(void *arg) {
        Churner *ch = arg;
        for (int i = 0; !atomic_load(ch->stop); i = (i + 1) % N_GUESTS) {
                if (undefine_one(names[i]) < 0 || define_one(names[i]) < 0)
                        ch->errors++;
                else
                        ch->redefines++;
        }
        return NULL;
}

/* A decoded reply holds every defined guest, sorted by name, shut off, each
 * with a generation.  Exits on a wrong reply (a broken agent, not a slow
 * one). */
static void check_reply(RpcClient *cl) {
        Drover__V1__ListGuestsRequest req = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *resp = NULL;
        RpcStatus st;
        if (rpc_client_unary(cl, &drover__v1__agent__descriptor, "ListGuests", &req.base, CALL_TIMEOUT_MS,
                             (ProtobufCMessage **) &resp, &st) < 0) {
                fprintf(stderr, "list-bench: ListGuests: %s %s\n", rpc_code_to_string(st.code), st.details);
                exit(1);
        }
        bool ok = resp->n_guests == (size_t) n_defined;
        for (size_t i = 0; ok && i < resp->n_guests; i++)
                ok = strcmp(resp->guests[i]->name, names[i]) == 0 && resp->guests[i]->generation > 0 &&
                     resp->guests[i]->state == DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF;
        if (!ok) {
                fprintf(stderr, "list-bench: a ListGuests reply does not hold the %d shut-off guests (%zu)\n",
                        n_defined, resp->n_guests);
                exit(1);
        }
        drover__v1__list_guests_response__free_unpacked(resp, NULL);
}

static double self_cpu_s(void) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 + (double) ru.ru_stime.tv_sec +
               (double) ru.ru_stime.tv_usec / 1e6;
}

typedef struct Phase {
        ClientKind kind;
        int threads, guests;
        bool churn;
        double secs;
        unsigned long calls, errors, defines;
        size_t reply_bytes;
        double p50_ms, p99_ms, max_ms;
        double agent_cores, agent_us_per_call, client_cores;
} Phase;

static Phase phases[8];
static int n_phases;

static void run_phase(ClientKind kind, int threads, bool churn, double secs) {
        Worker w[8] = { 0 };
        pthread_t th[8], churn_th;
        pthread_barrier_t go;
        atomic_bool stop = false;
        Churner ch = { .stop = &stop };
        Phase *p = &phases[n_phases++];
        *p = (Phase){ .kind = kind, .threads = threads, .guests = n_defined, .churn = churn };
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", agent.port);
        RpcClientOptions o = { .default_timeout_ms = CALL_TIMEOUT_MS };
        pthread_barrier_init(&go, NULL, (unsigned) threads + 1);
        for (int i = 0; i < threads; i++) {
                w[i] = (Worker){ .kind = kind, .stop = &stop, .go = &go };
                if (rpc_client_new(target, &o, &w[i].cl) < 0) {
                        fprintf(stderr, "list-bench: a client for %s: %s\n", target, err_msg());
                        exit(1);
                }
                check_reply(w[i].cl); /* connects, so connecting is not timed */
                pthread_create(&th[i], NULL, worker_main, &w[i]);
        }
        unsigned long long c0 = bench_proc_cpu_ticks(agent.pid);
        double s0 = self_cpu_s();
        if (churn)
                pthread_create(&churn_th, NULL, churner_main, &ch);
        pthread_barrier_wait(&go);
        uint64_t t0 = now_ns();
        sleep_ms((int64_t) (secs * 1000));
        atomic_store(&stop, true);
        for (int i = 0; i < threads; i++)
                pthread_join(th[i], NULL);
        if (churn)
                pthread_join(churn_th, NULL);
        p->secs = (double) (now_ns() - t0) / 1e9;
        unsigned long long c1 = bench_proc_cpu_ticks(agent.pid);
        double s1 = self_cpu_s();
        pthread_barrier_destroy(&go);

        Samples all = { 0 };
        for (int i = 0; i < threads; i++) {
                for (size_t k = 0; k < w[i].lat.n; k++)
                        samples_add(&all, w[i].lat.v[k]);
                p->errors += w[i].errors;
                if (w[i].reply_bytes)
                        p->reply_bytes = w[i].reply_bytes;
                check_reply(w[i].cl);
                samples_free(&w[i].lat);
                rpc_client_free(w[i].cl);
        }
        samples_sort(&all);
        p->calls = all.n;
        p->defines = ch.redefines;
        p->errors += ch.errors;
        p->p50_ms = (double) samples_q(&all, 0.50) / 1e6;
        p->p99_ms = (double) samples_q(&all, 0.99) / 1e6;
        p->max_ms = (double) samples_max(&all) / 1e6;
        double cpu_s = (double) (c1 - c0) / (double) sysconf(_SC_CLK_TCK);
        p->agent_cores = cpu_s / p->secs;
        p->agent_us_per_call = all.n ? cpu_s * 1e6 / (double) all.n : 0;
        p->client_cores = (s1 - s0) / p->secs;
        samples_free(&all);
        printf("  ListGuests of %3d, %-7s x%d%s: %8.0f calls/s\n", n_defined, kind == CLIENT_RAW ? "raw" : "decoded",
               threads, churn ? " + a guest redefined meanwhile" : "", (double) p->calls / p->secs);
        fflush(stdout);
}

static int define_all(void) {
        for (int i = 0; i < N_GUESTS; i++)
                if (define_one(names[i]) < 0)
                        return -1;
        n_defined = N_GUESTS;
        return 0;
}

int main(int argc, char **argv) {
        double secs = argc > 1 ? atof(argv[1]) : 3.0;
        char machine[512];
        int ret = 1;

        if (secs <= 0)
                secs = 3.0;
        tu_require_qemu();
        log_set_level(LOG_LEVEL_ERROR);
        for (int i = 0; i < N_GUESTS; i++)
                snprintf(names[i], sizeof(names[i]), "lg%03d", i);
        const char *dir = tu_tmpdir("list-bench");
        if (test_agent_start(&agent, dir, NULL) < 0) {
                char *log = tu_read_file(tu_path(dir, "agent.log"), NULL);
                fprintf(stderr, "list-bench: the agent did not start:\n%s\n", log ? log : "");
                free(log);
                return 1;
        }
        bench_machine(machine, sizeof(machine));
        printf("list: ListGuests of %d defined guests; machine: %s\n\n", N_GUESTS, machine);
        inproc_costs();
        printf("over gRPC: one drover-agent (rpc_threads 32), loopback TCP, each client thread its own connection:\n");
        run_phase(CLIENT_RAW, 4, false, secs); /* no guest yet: the floor of a call */
        if (define_all() < 0)
                goto out;

        run_phase(CLIENT_RAW, 1, false, secs);
        run_phase(CLIENT_RAW, 2, false, secs);
        run_phase(CLIENT_RAW, 4, false, secs);
        run_phase(CLIENT_DECODED, 1, false, secs);
        run_phase(CLIENT_DECODED, 4, false, secs);
        run_phase(CLIENT_RAW, 4, true, secs);

        printf("\n| guests | client  | threads | churn        | calls/s | reply KiB | p50 ms | p99 ms | max ms  "
               "| agent CPU | agent µs/call | client CPU |\n");
        printf("|-------:|---------|--------:|--------------|--------:|----------:|-------:|-------:|--------:"
               "|----------:|--------------:|-----------:|\n");
        for (int i = 0; i < n_phases; i++) {
                Phase *p = &phases[i];
                char churn[32] = "none";
                if (p->churn)
                        snprintf(churn, sizeof(churn), "%.0f redefs/s", (double) p->defines / p->secs);
                char kib[16] = "-";
                if (p->kind == CLIENT_RAW)
                        snprintf(kib, sizeof(kib), "%.1f", (double) p->reply_bytes / 1024);
                printf("| %6d | %-7s | %7d | %-12s | %7.0f | %9s | %6.3f | %6.3f | %7.3f | %9.2f | %13.1f | %10.2f |\n",
                       p->guests, p->kind == CLIENT_RAW ? "raw" : "decoded", p->threads, churn,
                       (double) p->calls / p->secs, kib, p->p50_ms, p->p99_ms, p->max_ms, p->agent_cores,
                       p->agent_us_per_call, p->client_cores);
                if (p->errors)
                        printf("  (%lu calls failed)\n", p->errors);
        }
        ret = 0;
out:
        for (int i = 0; i < N_GUESTS; i++) {
                (void) undefine_one(names[i]);
        }
        test_agent_stop(&agent);
        test_agent_kill_guests(&agent);
        return ret;
}
