/* A cluster of drover-agents in network namespaces, for the cluster suite.
 *
 * cluster_up() builds the namespaces (netns.h), and starts one agent per
 * host as `ip netns exec drvP-a drover-agent --config agent.json`, each
 * with TLS: a certificate valid for serverAuth and clientAuth with IP SANs
 * 10.77.X.N and 127.0.0.1 and DNS localhost, signed by a CA made at test
 * time with the openssl CLI.  Agents listen on their unix socket (the test
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
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

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

typedef struct Cluster {
        NetnsCluster net;
        int n;
        ClusterHost host[NETNS_MAX_HOSTS];
        bool ok;              /* set at the end of a test: cluster_down prints logs otherwise */
} Cluster;

/* Namespaces, certificates (once per process), configs, agents.  Fails the
 * current test (cmocka) when something cannot be built. */
void cluster_up(Cluster *c, int n_hosts);
/* The same, with an extra "NAME=VALUE" for some agents' first start:
 * @env[i] for host i (NULL entries: none). */
void cluster_up_env(Cluster *c, int n_hosts, const char *const env[]);
void cluster_down(Cluster *c);

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
