/* A cluster of drover-agents in network namespaces, for the cluster suite.
 *
 * cluster_up() builds the namespaces (netns.h), and starts one agent per
 * host as `ip netns exec drvP-a drover-agent --config agent.json`, each
 * with TLS: a certificate valid for serverAuth and clientAuth with IP SANs
 * 10.77.X.N and 127.0.0.1, DNS localhost and the role agent, signed by a CA
 * made at test time with the openssl CLI (the coordinator has its own, role
 * coordinator; the test client's has role operator).  Agents listen on their unix socket (the test
 * process talks to them there, over TLS with its own client certificate)
 * and on 10.77.X.N:7400 (the peers call each other there, presenting their
 * own certificate).  cluster_down() kills the agents and every process
 * left in the namespaces (QEMUs outlive their agent on purpose), deletes
 * the namespaces and, when the test did not reach its end, prints the
 * agents' logs.
 *
 * The helpers below check what a migration promises across hosts: where
 * a guest runs (GetGuest on every agent, the live QEMUs found in /proc, the
 * serial counter of the tiny guest), and that the agents' records agree.
 * The last part (cluster-coord.c) runs drover-coordinator in host 0's
 * namespace over the cluster's agents, and droverctl against it, and reads
 * droverctl's --json documents (README.md).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agentd-util.h"
#include "netns.h"

#define CLUSTER_AGENT_PORT 7400

typedef struct ClusterHost {
        char dir[200];        /* state/, run/, agent.sock, agent.log, agent.json */
        char config[240];
        char grpc[40];        /* "10.77.X.N:7400" */
        TestAgent agent;
        int starts;
} ClusterHost;

/* A drover-coordinator run by the test in host 0's namespace (see
 * cluster_coord_start below), or in the namespace @ns names (the ha
 * suite's two coordinators: cluster_coord_spawn); zeroed by cluster_up. */
typedef struct ClusterCoord {
        char dir[220];        /* <host 0's dir>/coord: coordinator.json, .db, .log, .sock, droverctl output */
        char ns[40];          /* the namespace it runs in; "": host 0's */
        char config[260];
        char db[260];
        char sock[260];       /* the coordinator's unix socket: droverctl and the test use it */
        char log[260];
        pid_t pid;            /* 0 when not running */
        int starts;
        int ctl_runs;         /* droverctl runs so far (names their output files) */
} ClusterCoord;

#define CLUSTER_MAX_CTL_BG 8

typedef struct Cluster {
        NetnsCluster net;
        int n;
        ClusterHost host[NETNS_MAX_HOSTS];
        bool ok;              /* set at the end of a test: cluster_down prints logs otherwise */
        ClusterCoord coord;
        pid_t ctl_bg[CLUSTER_MAX_CTL_BG]; /* background droverctl runs, killed by cluster_down */
        char ctl_target[300]; /* droverctl's -c; "": unix:<coord.sock> */
        char ctl_netns[40];   /* the namespace droverctl runs in; "": the test's */
} Cluster;

/* Namespaces, certificates (once per process), configs, agents.  Fails the
 * current test (cmocka) when something cannot be built. */
void cluster_up(Cluster *c, int n_hosts);
/* The same, with an extra "NAME=VALUE" for some agents' first start:
 * @env[i] for host i (NULL entries: none). */
void cluster_up_env(Cluster *c, int n_hosts, const char *const env[]);
/* cluster_up() with @n_spare more namespaces after the hosts (hosts d, e:
 * addresses 10.77.X.4, .5), with nothing running in them: for processes
 * the test starts there (the ha suite's coordinators).  c->n counts the
 * hosts with an agent only. */
void cluster_up_spare(Cluster *c, int n_hosts, int n_spare);
void cluster_down(Cluster *c);
/* cmocka fixtures: a zeroed Cluster in *state before the test (-1 when out of
 * memory); cluster_down() and free after it, whatever the test did. */
int cluster_fixture_setup(void **state);
int cluster_fixture_teardown(void **state);
/* A cmocka test with those fixtures. */
#define CLUSTER_TEST(f) cmocka_unit_test_setup_teardown(f, cluster_fixture_setup, cluster_fixture_teardown)

/* (Re)start host @i's agent with its config, state and run folders; the log
 * is appended to.  @extra_env "NAME=VALUE" or NULL.  0 or -errno. */
int cluster_agent_start(Cluster *c, int i, const char *extra_env);
/* kill -9 host @i's agent (its guests keep running). */
void cluster_agent_kill9(Cluster *c, int i);

/* Unary call to host @i's agent over its unix socket (TLS). */
int cluster_call(Cluster *c, int i, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp,
                 RpcStatus *st);

/* The tiny guest: define and start @name on host @i and wait until its serial
 * shows READY.  Fails the test on error. */
void cluster_guest_start(Cluster *c, int i, const char *name, const char *uuid, int mem_mib, const char *append);
/* Define the guest of definition @json (not taken) on host @i and start
 * it; with @wait_ready wait until its serial shows READY (the tiny test
 * guest's line).  Fails the test on error. */
void cluster_guest_start_def(Cluster *c, int i, const char *name, const char *json, bool wait_ready);
/* GetGuest on host @i: 0 and *ret (free with drover__v1__guest_status__free_unpacked), or the RPC code. */
int cluster_guest_status(Cluster *c, int i, const char *name, Drover__V1__GuestStatus **ret);
/* "S " lines in host @i's serial log of @name. */
int cluster_serial_seconds(Cluster *c, int i, const char *name);
/* Live (non-zombie) QEMU processes of @name on host @i: found by their
 * monitor socket path in /proc/PID/cmdline and by the pidfile. */
int cluster_qemu_pids(Cluster *c, int i, const char *name, int *pids, int max);
/* Poll GetGuest on host @i until its async job is @async_job and its phase
 * @phase; 0 or -ETIMEDOUT. */
int cluster_wait_phase(Cluster *c, int i, const char *name, const char *async_job, const char *phase,
                       int timeout_ms);

/* Migrate on host @src to host @dst's agent address.  NULL on an RPC error
 * (*ret_st says which).  Free with drover__v1__migration_result__free_unpacked. */
Drover__V1__MigrationResult *cluster_migrate(Cluster *c, int src, int dst, const char *name,
                                             Drover__V1__MigrationParams *params, bool wait, RpcStatus *ret_st);
/* GetMigration on host @i (NULL when none). */
Drover__V1__MigrationResult *cluster_get_migration(Cluster *c, int i, const char *name);

/* The same Migrate in a thread of its own with its own client: for phases
 * where the source agent is killed while the call is in flight. */
typedef struct ClusterAsyncMigrate ClusterAsyncMigrate;
ClusterAsyncMigrate *cluster_migrate_async(Cluster *c, int src, int dst, const char *name,
                                           const Drover__V1__MigrationParams *params, bool wait);
/* Join; returns the result or NULL (with the status in *ret_st). */
Drover__V1__MigrationResult *cluster_migrate_join(ClusterAsyncMigrate *m, RpcStatus *ret_st);

/* Wait up to @timeout_ms until @name runs exactly once across the hosts:
 * one host reports RUNNING with no async job and has exactly one live QEMU
 * (GetGuest's pid); every other host has no record or a shut-off one with
 * no async job, and no live QEMU.  Returns the owner's index, or -1 with the
 * last violation in @why. */
int cluster_wait_single_owner(Cluster *c, const char *name, int timeout_ms, char *why, size_t why_size);
/* Over @ms: the serial counter of @name advances on host @owner (by at
 * least 1 line per 1.5 s) and on no other host.  false with the counts in
 * @why otherwise. */
bool cluster_serial_only_on(Cluster *c, const char *name, int owner, int ms, char *why, size_t why_size);

/* Print the last @lines lines of every agent log. */
void cluster_dump_logs(Cluster *c, int lines);
/* Print the last @lines lines of the file @path under a title, each line
 * after "# " and @tag (e.g. "[coord] "). */
void cluster_dump_file_tail(const char *path, const char *title, const char *tag, int lines);

/* ---- the coordinator and droverctl (cluster-coord.c) ------------------------------------ */

struct json_object; /* json-c */

/* How long one droverctl run may take in the helpers below (ms). */
#define CLUSTER_CTL_MS 30000

/* What cluster_coord_config() writes besides the fixed parts: hosts
 * "host-a".. with address 10.77.X.N:7400 (the cluster's agents), TLS with
 * the coordinator's certificate and the test CA, listen on ClusterCoord.sock, the db
 * in ClusterCoord.dir, log level info.  Zero members are left out (the
 * coordinator's defaults or what the agents report apply). */
typedef struct ClusterCoordOptions {
        unsigned max_outgoing, max_incoming, cluster_limit;
        uint64_t stream_bytes_per_s;
        uint64_t link_bytes_per_s[NETNS_MAX_HOSTS];
        uint64_t memory_mib[NETNS_MAX_HOSTS];
        unsigned vcpus[NETNS_MAX_HOSTS];
        int heartbeat_ms;                /* 0: 1000 */
        const char *extra;               /* more top-level members, e.g. "\"anti_affinity\": {...}" */
        const char *const *env;          /* NULL-terminated "NAME=VALUE"s for cluster_coord_up's start (NULL: none) */
} ClusterCoordOptions;

/* Write ClusterCoord.config for the cluster's agents.  Fails the test on error. */
void cluster_coord_config(Cluster *c, const ClusterCoordOptions *o);
/* Start (or restart, with the same config and db) drover-coordinator as
 * `ip netns exec <host 0's ns> drover-coordinator --config ...` and wait for
 * its ready line; its log is appended to.  0 or -errno. */
int cluster_coord_start(Cluster *c);
/* The same with @env (NULL, or NULL-terminated "NAME=VALUE"s) added to the
 * coordinator's environment for this start only, e.g. DROVER_FAULT (read
 * once at process start, core/fault.h); the test's own environment is
 * left as it was.  0 or -errno. */
int cluster_coord_start_env(Cluster *c, const char *const *env);
/* Start drover-coordinator with @k's config (written by the caller) in
 * namespace @k->ns ("": host 0's), appending to @k->log, with @env as
 * cluster_coord_start_env; wait for its ready line.  @k is the cluster's
 * own (cluster_coord_start) or one the test keeps (the ha suite: kill it
 * with cluster_coord_kill9_k before cluster_down).  0 or -errno. */
int cluster_coord_spawn(Cluster *c, ClusterCoord *k, const char *const *env);
/* kill -9 the coordinator @k (no-op when it is not running). */
void cluster_coord_kill9_k(ClusterCoord *k);
/* kill -9 the coordinator (the agents and their migrations go on). */
void cluster_coord_kill9(Cluster *c);
/* SIGTERM and wait (10 s, then SIGKILL); returns the wait status or -1. */
int cluster_coord_stop(Cluster *c);
/* A gRPC client of the coordinator's unix socket with the test client's
 * certificate (free with rpc_client_free). */
RpcClient *cluster_coord_client(Cluster *c);
/* The test client's TLS material (valid after cluster_up). */
const RpcTls *cluster_client_tls(void);

/* droverctl with -c unix:<sock> (or Cluster.ctl_target, run inside
 * Cluster.ctl_netns when set) and the test client's certificate, then
 * the NULL-terminated arguments; stdout and stderr are captured (malloc'ed
 * into *ret_out / *ret_err when not NULL).  Waits at most @timeout_ms, then
 * kills it.  Returns its exit code, -ETIMEDOUT, or -errno. */
int cluster_ctl(Cluster *c, int timeout_ms, char **ret_out, char **ret_err, ...) __attribute__((sentinel));
int cluster_ctlv(Cluster *c, int timeout_ms, char **ret_out, char **ret_err, const char *const *args);
/* The same with --json: the last JSON document of stdout (NULL when none;
 * free with json_object_put), the exit code in *ret_code. */
struct json_object *cluster_ctl_json(Cluster *c, int timeout_ms, int *ret_code, ...) __attribute__((sentinel));
/* droverctl in the background: stdout to @out_path, stderr to @out_path.err.
 * Returns its pid (killed by cluster_down if still running) or -errno. */
pid_t cluster_ctl_spawn(Cluster *c, const char *out_path, ...) __attribute__((sentinel));
/* Wait for a background droverctl: its exit code, or -ETIMEDOUT (still
 * running: it is left alone). */
int cluster_ctl_wait(Cluster *c, pid_t pid, int timeout_ms);
/* The droverctl command line (quoted for sh) without a command, for
 * running it elsewhere (e.g. in a terminal). */
void cluster_ctl_shell(Cluster *c, char *buf, size_t size);

/* Readers of droverctl's --json documents, short because the tests' checks
 * are made of them.  Each takes NULL or the wrong type and then answers
 * NULL, "", 0 or 0; the results are borrowed from the document. */
struct json_object *cj_get(struct json_object *o, const char *k);
const char *cj_str(struct json_object *o, const char *k);
int64_t cj_int(struct json_object *o, const char *k);
size_t cj_len(struct json_object *a);
struct json_object *cj_idx(struct json_object *a, size_t i);
/* "host-a" -> 0, "host-b" -> 1 ... as cluster_coord_config names them; -1
 * for anything else. */
int cluster_host_index(const char *name);

/* Remove the coordinator's database (and its -wal, -shm) so that the next
 * start begins without job history, hosts taken from the config. */
void cluster_coord_drop_db(Cluster *c);
/* cluster_coord_config(@o), cluster_coord_start_env(@o->env), then wait up to
 * @timeout_ms until `droverctl hosts` shows every host healthy and
 * @guests_on_a guests on host a.  Fails the test otherwise. */
void cluster_coord_up(Cluster *c, const ClusterCoordOptions *o, int guests_on_a, int timeout_ms);
/* Its last part: wait up to @timeout_ms until `droverctl hosts` shows every
 * host healthy and @guests_on_a guests on host a.  Fails the test otherwise. */
void cluster_coord_wait_hosts(Cluster *c, int guests_on_a, int timeout_ms);
/* `droverctl job ID --json`: the job with its sub-tasks and history (free
 * with json_object_put).  Fails the test without a job document. */
struct json_object *cluster_job_get(Cluster *c, const char *id);
/* The job's phase is final: succeeded, failed or cancelled. */
bool cluster_job_ended(struct json_object *job);
/* Called with every view of the job cluster_job_wait_end() reads, the last
 * one included; the view is borrowed. */
typedef void ClusterJobSeen(struct json_object *job, void *arg);
/* cluster_job_get() every @poll_ms until the job ends; @seen (may be NULL)
 * sees each view.  Returns the final view (json_object_put); fails the test
 * after @timeout_ms, naming the job's phase. */
struct json_object *cluster_job_wait_end(Cluster *c, const char *id, int timeout_ms, int poll_ms,
                                         ClusterJobSeen *seen, void *arg);
