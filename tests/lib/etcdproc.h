/* Real etcd members for tests (Debian's /usr/bin/etcd, 3.4): one on
 * loopback for the store and client tests, three in network namespaces for
 * the ha suite.
 *
 * Every member is a child of the test (tu_spawn: killed at exit, even on
 * failure) with its data folder and log under the cluster's folder
 * (@dir/<name>.data, @dir/<name>.log).  With TLS, the certificates are
 * made there by testcert.h: a CA "etcd-ca", one certificate per member
 * (serverAuth and clientAuth, the member's IP as SAN; used for the peer
 * links too) and a client certificate "etcd-client" (clientAuth).
 *
 * Timing: etcd's defaults (heartbeat 100 ms, election 1000 ms), so a lease
 * may be as short as 2 s.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#define ETCDPROC_MAX 5

typedef struct EtcdMember {
        char name[16];           /* "m0", "m1", ... */
        char ip[40];
        int client_port, peer_port;
        char netns[40];          /* "" = the test's own namespace */
        char data_dir[256];
        char log[256];
        pid_t pid;               /* 0 while not running */
} EtcdMember;

typedef struct EtcdCluster {
        int n;
        bool tls;
        char dir[256];
        char endpoints[512];     /* "ip:port,ip:port,..." (the client URLs without scheme) */
        char ca[300], client_cert[300], client_key[300]; /* with tls */
        EtcdMember m[ETCDPROC_MAX];
} EtcdCluster;

/* Whether /usr/bin/etcd and etcdctl are installed. */
bool etcdproc_available(void);

/* Start @n members (1..ETCDPROC_MAX) forming one new cluster in folder
 * @dir (made if needed).  Member i listens on @ips[i] (@ips NULL: all on
 * 127.0.0.1, each with free ports), inside namespace @netns[i] (@netns NULL
 * or an entry NULL: this one).  @tls: https with client certificates on
 * both the client and the peer URLs.  Waits (up to 20 s) until every member
 * reports healthy.  0, or -1 with the reason on stderr (and the members
 * started so far killed). */
int etcdproc_start(EtcdCluster *c, const char *dir, int n, const char *const *ips, const char *const *netns,
                   bool tls);

/* SIGKILL member @i (no-op when it is not running). */
void etcdproc_kill(EtcdCluster *c, int i);

/* Start member @i again on its data folder (it rejoins the cluster).
 * Does not wait for health. 0 or -1. */
int etcdproc_restart(EtcdCluster *c, int i);

/* Wait up to @timeout_ms until member @i answers `etcdctl endpoint health`
 * (which needs a quorum).  0 or -1. */
int etcdproc_wait_healthy(EtcdCluster *c, int i, int timeout_ms);

/* Run etcdctl against the whole cluster (from member 0's namespace) with
 * @args appended (e.g. "get --prefix /drover"), output in *ret_out
 * (malloc'ed, may be NULL).  Returns etcdctl's exit code, or -1. */
int etcdproc_ctl(EtcdCluster *c, char **ret_out, const char *args);

/* Make member @i etcd's raft leader (`etcdctl move-leader`) and wait up
 * to @timeout_ms until member @i reports itself the leader.  0, or -1 with
 * the reason on stderr. */
int etcdproc_move_leader(EtcdCluster *c, int i, int timeout_ms);

/* Kill every member.  Safe to call twice. */
void etcdproc_stop(EtcdCluster *c);
