/* Two drover-coordinators on a three-member etcd cluster, over the cluster
 * suite's agents: the harness of the ha suite and the failover benchmark.
 *
 * ha_up() builds, in network namespaces (tests/cluster/netns.h), for the
 * test process P:
 *
 *   drvP-a, -b, -c   a drover-agent each (cluster.h) and one etcd member
 *                    each (m0, m1, m2 on 10.77.X.1-3:2379, TLS with client
 *                    certificates: tests/lib/etcdproc.h)
 *   drvP-d, -e       one drover-coordinator each ("coordinator 0" and "1"),
 *                    listening on its unix socket and on 10.77.X.4:7500 and
 *                    10.77.X.5:7500 (advertised there), with the store on
 *                    the three etcd members (prefix /drover, lease TTL
 *                    HA_LEASE_TTL_S)
 *
 * so that netns_cut() of host d or e cuts one coordinator from etcd, the
 * agents and droverctl and nothing else.  droverctl runs in host a's
 * namespace with `-c 10.77.X.4:7500,10.77.X.5:7500` and follows the leader
 * (cluster_ctl and friends work unchanged: Cluster.ctl_target/ctl_netns).
 *
 * Who leads is read two ways: etcd's view (the key under /drover/leader/
 * with the lowest create_revision, whose value is the leader's advertised
 * address; etcdctl from host a) and each coordinator's own log (the lines
 * HA_LOG_LEADING and HA_LOG_STEPPED_DOWN, with their timestamps).
 *
 * Cleanup: ha_fixture_teardown() kills the coordinators and the etcd
 * members, prints their logs when the test did not reach its end, then
 * cluster_down() removes the namespaces (and whatever still runs in them)
 * whatever the test did; the cluster's atexit and signal handlers do the
 * same when the test process dies.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "etcdproc.h"

#define HA_N_COORD 2
#define HA_API_PORT 7500
#define HA_PREFIX "/drover"
#define HA_LEASE_TTL_S 3
/* What a coordinator logs (matched anywhere in a line): the election won
 * (coord-elect.c, with the fence: key and create_revision), the leader
 * acting (coord-ha.c: after its jobs were reloaded and reconciled), the
 * moment it stopped acting because its lease was no longer safely valid
 * (coord-elect.c, logged at that moment by its clock), and a write the
 * fence refused. */
#define HA_LOG_ELECTED "election: leading ("
#define HA_LOG_LEADING "leading: elected ("
#define HA_LOG_STEPPED_DOWN "election: lease lost: stopped acting"
#define HA_LOG_FENCED "fenced"

typedef struct HaCluster {
        Cluster cl;                 /* first: the cluster helpers take &h->cl */
        EtcdCluster etcd;           /* m0..m2 in hosts a..c */
        ClusterCoord co[HA_N_COORD];/* in hosts d, e (ns d, e) */
        char api[HA_N_COORD][40];   /* "10.77.X.4:7500" ... */
        bool etcd_up;
        int lease_ttl_s;            /* the coordinators' lease TTL (HaOptions) */
} HaCluster;

typedef struct HaOptions {
        int n_guests;                      /* ctu guests started on host a (coord-testutil.h) */
        const ClusterCoordOptions *coord;  /* limits; NULL: ctu_limits_2x2 */
        bool start_coords;                 /* start coordinator 0, wait for it to lead, then 1 */
        int lease_ttl_s;                   /* the coordinators' lease_ttl_s; 0: HA_LEASE_TTL_S */
} HaOptions;

/* cmocka fixtures: a zeroed HaCluster in *state; ha_down and free after
 * the test, whatever it did. */
int ha_fixture_setup(void **state);
int ha_fixture_teardown(void **state);
#define HA_TEST(f) cmocka_unit_test_setup_teardown(f, ha_fixture_setup, ha_fixture_teardown)

/* Skip the program (exit 77, with the reason) without root, namespaces,
 * etcd or the openssl CLI. */
void ha_require(void);

/* Namespaces, agents, etcd, guests, both coordinators' configs; with
 * @o->start_coords both coordinators run (0 leads), and the leader sees
 * every host and the guests.  Fails the test on error. */
void ha_up(HaCluster *h, const HaOptions *o);
/* Kill both coordinators and the etcd members (logs printed unless
 * h->cl.ok), then cluster_down. */
void ha_down(HaCluster *h);

/* Start coordinator @i (the ready line waited for).  0 or -errno. */
int ha_coord_start(HaCluster *h, int i);
/* Spawn coordinator @i without waiting (for simultaneous starts). */
int ha_coord_spawn_nowait(HaCluster *h, int i);
/* Wait for coordinator @i's ready line after ha_coord_spawn_nowait. */
int ha_coord_wait_ready(HaCluster *h, int i, int timeout_ms);
void ha_coord_kill9(HaCluster *h, int i);
/* SIGTERM (it resigns: election_stop revokes its lease) and reap; 10 s then SIGKILL. */
void ha_coord_stop(HaCluster *h, int i);
/* Namespace index of coordinator @i in h->cl.net (3 or 4). */
int ha_coord_ns(int i);

/* etcd's view: the index of the coordinator whose address is the value of
 * the oldest /drover/leader/ key; -1 when there is none or etcd does not
 * answer. */
int ha_etcd_leader(HaCluster *h);
/* How many keys are under /drover/leader/ (-1: etcd did not answer). */
int ha_etcd_candidates(HaCluster *h);
/* Wait up to @timeout_ms until etcd names a leader and that coordinator's
 * log says it leads (more HA_LOG_LEADING lines than @leads_before[i], or
 * any when NULL); returns its index or -1. */
int ha_wait_leader(HaCluster *h, const int *leads_before, int timeout_ms);

/* Lines of coordinator @i's log containing @needle. */
int ha_log_count(HaCluster *h, int i, const char *needle);
/* The time (Unix ms, from the line's UTC timestamp) of the first line of
 * coordinator @i's log containing @needle stamped at or after @after_ms;
 * 0 when there is none. */
int64_t ha_log_time(HaCluster *h, int i, const char *needle, int64_t after_ms);
/* Print the lines of coordinator @i's log stamped at or after @after_ms
 * that contain one of the HA_LOG_* words or "etcd" (at most @max). */
void ha_log_print_ha(HaCluster *h, int i, int64_t after_ms, int max);

/* The leader fence coordinator @i last held (from its "election: leading
 * (key K, revision R)" line stamped before @before_ms): 0, or -ENOENT. */
int ha_log_fence(HaCluster *h, int i, int64_t before_ms, char key[160], int64_t *ret_rev);
/* Run tests/ha/ha-fence-probe in coordinator @i's namespace: job_update of
 * job @job_id on the etcd store under the fence (@key, @rev), as that
 * coordinator's writes go.  Returns the probe's exit code (0: refused
 * with -ESTALE, 1: applied, 2: other error) and its line in @out. */
int ha_fence_probe(HaCluster *h, int i, const char *key, int64_t rev, const char *job_id, char *out, size_t size);

struct json_object;
/* The first history event of @job (a `droverctl job --json` document)
 * stamped after @after_ms whose text contains one of @needles
 * (NULL-terminated): its time in Unix ms, 0 when there is none; its text
 * into @text (may be NULL). */
int64_t ha_first_event_after(struct json_object *job, int64_t after_ms, const char *const *needles, char *text,
                             size_t size);
/* A migration started or one recorded as done: the scheduling acts. */
extern const char *const HA_EVENTS_ACT[];

/* The wall clock in Unix ms (what the logs and the job history use). */
int64_t ha_now_ms(void);
