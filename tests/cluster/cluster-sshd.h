/* A real OpenSSH sshd in one host's namespace of a cluster (cluster.h), the
 * far end of the SSH stream transport (docs/migration.md, "Stream
 * transports"), for the cluster-ssh test and the streams benchmark.
 *
 * cluster_sshd_up() makes, in a fresh temporary folder, the host key, a
 * second "wrong" host key and a client key (ssh-keygen, ed25519, no
 * passphrase), authorized_keys with the client key, known_hosts (the host
 * key for "[ADDR]:PORT") and known_hosts.wrong (the other key for the same
 * name), and an sshd_config: the host's address and @port, keys only, root
 * without password, local forwarding to the host's loopback only.  sshd
 * runs as `ip netns exec NS unshare -m sh -c 'mount tmpfs /run; mkdir
 * /run/sshd; exec sshd -D -e'` (root sshd insists on /run/sshd; the private
 * mount namespace gives it one without touching the machine), logging to
 * sshd.log, and is up when its port listens in the namespace.
 * cluster_sshd_down() kills it; cluster_down() would too (every process of
 * the namespace), and tu_spawn's exit handler.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "cluster.h"

typedef struct ClusterSshd {
        pid_t pid;          /* 0 when not running */
        char dir[256];      /* host_key, wrong_key, client_key (+ .pub), known_hosts(.wrong), sshd_config, sshd.log */
        int host, port;
        char fingerprint[128]; /* "SHA256:..." of the host key, as ssh-keygen prints it */
} ClusterSshd;

/* Keys and files as above, sshd on host @host's address and @port.  Fails
 * the test (cmocka) when it does not come up in 10 s. */
void cluster_sshd_up(Cluster *c, int host, int port, ClusterSshd *ret);
/* Kill and reap it (no-op when not running). */
void cluster_sshd_down(ClusterSshd *s);
/* Make host @i's agent a client of it: its config gets an "ssh" section
 * (user root, the client key, @known_hosts: "known_hosts" or
 * "known_hosts.wrong") and the agent restarts.  Fails the test on error. */
void cluster_sshd_client(Cluster *c, int i, const ClusterSshd *s, const char *known_hosts);
/* How many times sshd.log says @what (e.g. "Accepted publickey for root"). */
int cluster_sshd_log_count(const ClusterSshd *s, const char *what);
/* Append @members to host @i's agent config and restart the agent (kill
 * -9: its guests stay and are found again).  Fails the test on error. */
void cluster_agent_reconfigure(Cluster *c, int i, const char *members);
