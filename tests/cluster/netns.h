/* Several "hosts" on one machine: network namespaces for the cluster suite.
 *
 * netns_up() builds an isolated cluster for this test process (pid P):
 *
 *   drvP-sw             holds bridge br0 and nothing else
 *   drvP-a, -b, -c ...  one namespace per host (up to five, a to e): lo
 *                       up, eth0 = a veth whose peer (port hpa, hpb ...) is
 *                       enslaved to br0, address 10.77.X.1, .2 ... /24
 *
 * Nothing is added to the root namespace; the test process reaches the
 * agents and QEMUs inside through unix sockets and files.  X (the subnet
 * byte) is claimed with an abstract unix socket named after it, so
 * concurrent test processes never use the same subnet (their namespaces are
 * separate anyway; the unique subnet only keeps logs unambiguous).
 *
 * Link faults: netns_shape() puts a tbf qdisc on a host's eth0, netns_cut()
 * and netns_heal() set it down and up.
 *
 * Cleanup: netns_down() SIGKILLs every process whose network namespace is
 * one of the cluster's (agents, QEMUs) and deletes the namespaces.  It runs
 * from an atexit handler and from handlers for SIGTERM (meson's timeout),
 * SIGINT, SIGHUP, SIGABRT, SIGSEGV and SIGBUS as well, which then chain to
 * the handler installed before them; as a fallback it deletes any namespace
 * named drvP-*, and netns_up() first removes namespaces left by a test
 * process that no longer exists (one that was SIGKILLed).
 */
#pragma once

#include <stdbool.h>

/* Three hosts with agents, and two more for the ha suite's coordinators. */
#define NETNS_MAX_HOSTS 5

typedef struct NetnsCluster {
        int n_hosts;
        int subnet;                        /* X of 10.77.X.0/24 */
        char prefix[24];                   /* "drv<pid>" */
        char sw[40];                       /* "drv<pid>-sw" */
        char ns[NETNS_MAX_HOSTS][40];      /* "drv<pid>-a", ... */
        char addr[NETNS_MAX_HOSTS][20];    /* "10.77.X.1", ... */
        bool up;
} NetnsCluster;

/* Skip the whole test program (exit 77, with the reason) unless this process
 * is root and `ip netns add` works. */
void netns_require(void);

/* Create the cluster with @n_hosts (1..NETNS_MAX_HOSTS) hosts.  0, or -errno with the
 * failing command in err_msg()-style text on stderr; a half-built cluster
 * is torn down. */
int netns_up(NetnsCluster *c, int n_hosts);

/* tbf on host @i's eth0: @rate as tc spells it ("100mbit", "10mbit"); NULL
 * or "off" removes the shaping. */
int netns_shape(const NetnsCluster *c, int i, const char *rate);

/* Link down / up of host @i's eth0 (the address and its route come back
 * with the link). */
int netns_cut(const NetnsCluster *c, int i);
int netns_heal(const NetnsCluster *c, int i);

/* The pids of every live (non-zombie) process in host @i's namespace;
 * returns how many (at most @max). */
int netns_pids(const NetnsCluster *c, int i, int *pids, int max);

/* SIGKILL every process inside the cluster's namespaces, then delete them.
 * Safe to call twice and on a half-built cluster. */
void netns_down(NetnsCluster *c);
