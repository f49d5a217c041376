/* The migration stream between two QEMUs: where the destination listens and
 * how the stream is protected (docs/migration.md, "Stream protection").
 *
 * The destination listens on its own migration_address and a random free
 * port of migration_ports (agent-config.h), never where a request says;
 * MigratePrepare answers with a MigStream and the source connects exactly
 * there.  When the agents use TLS, so does the stream: QEMU's
 * tls-creds-x509 objects made from the agent's own certificate files, the
 * source checking the destination's certificate for the name it reached
 * the destination agent by (tls-hostname), and the destination admitting
 * only the certificate that called MigratePrepare (tls-authz with an
 * authz-simple object holding that certificate's DN).  Plain streams only
 * in dev_mode, logged at every migration.
 *
 * Other transports (docs/migration.md, "Stream transports"), chosen per
 * migration (MigParams.transport) or by the source agent's config per
 * destination host: plain TCP in dev_mode only, and SSH for sites without a
 * PKI: the destination's QEMU listens on its loopback, the source agent
 * opens an SSH session to the destination host (known_hosts checked, key
 * authentication only) and pumps the stream between a unix socket its own
 * QEMU migrates to and a direct-tcpip channel to that loopback listener.
 *
 * agent-stream.c holds addresses, ports and the choice of transport,
 * agent-stream-tls.c the TLS objects (the only file that includes GnuTLS),
 * agent-stream-ssh.c the SSH tunnel (the only file that includes libssh).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "agent-config.h"
#include "agent.h"
#include "job.h"
#include "vm.h"

/* Where an incoming stream listens, as MigratePrepare answers it. */
typedef struct MigStream {
        char host[64];   /* an IP literal, no brackets */
        unsigned port;
        bool tls;        /* QEMU TLS with the Prepare caller's certificate only */
        MigTransport transport; /* never DEFAULT; SSH: host is the destination's loopback */
        char uri[96];    /* "tcp:HOST:PORT" or "tcp:[V6]:PORT" */
        /* The multifd channels the destination set up (its prepare answer):
         * 1 = none (its QEMU offers no multifd), 0 = not said (an older
         * destination, or a repeated prepare: it set what it was asked). */
        uint32_t multifd_channels;
} MigStream;

/* Local disks of a migration (docs/migration.md, "Local disks"): what the
 * source tells the destination's prepare (which disks, their virtual size
 * and format), and what it answers (the NBD server and one export per
 * disk, in the same order).  n = 0: none. */
#define MIG_STORAGE_MAX 16   /* GUEST_MAX_DISKS */
#define MIG_NBD_EXPORT_MAX 32

typedef struct MigLocalDisk {
        uint32_t index;        /* disks[index] of the definition */
        uint64_t virtual_size; /* bytes */
        char format[8];        /* raw | qcow2 */
} MigLocalDisk;

typedef struct MigStorage {
        size_t n;
        MigLocalDisk disks[MIG_STORAGE_MAX];
        char nbd_host[64];     /* answer: an IP literal (the stream's host) */
        unsigned nbd_port;     /* answer */
        char exports[MIG_STORAGE_MAX][MIG_NBD_EXPORT_MAX]; /* answer: export of disks[i] */
        /* source, its migration thread only: the copy's last figures */
        uint64_t copy_total, copy_done;
        bool completed;        /* the mirrors ended at switch-over */
} MigStorage;

/* Fill @s from @host (an IP literal), @port and transport @t (tls is
 * @t == MIG_TRANSPORT_TLS), with its URI.  0, or -EINVAL when @host is not
 * an IP literal, @port is 0 or above 65535 or @t is DEFAULT or unknown (an
 * answer from a peer is checked with this). */
int mig_stream_set(MigStream *s, const char *host, unsigned port, MigTransport t);
/* Parse a URI mig_stream_set() made back into @s (transport as given). */
int mig_stream_from_uri(const char *uri, MigTransport t, MigStream *ret);
/* Destination: the transport an incoming stream uses when the source asks
 * for @asked: DEFAULT (an older source) is TLS with a certificate, plain in
 * dev_mode; TLS needs a certificate, PLAIN dev_mode; SSH is always
 * possible (the listener is on loopback).  *@ret, or -EPERM saying why. */
int agent_stream_incoming_transport(const Agent *a, MigTransport asked, MigTransport *ret);
/* Source: how a stream to destination host @dest_host travels when the
 * request asked for @asked (DEFAULT: the config's choice for that host):
 * the settings into *@ret.  0, or -EPERM / -EINVAL saying why not (plain
 * outside dev_mode, TLS without a certificate, SSH without its files or
 * with qemu_chroot, whose QEMU cannot reach the tunnel's socket). */
int agent_stream_outgoing(const Agent *a, const char *dest_host, MigTransport asked, AgentMigPeer *ret);
/* The user QEMU runs as: its ids in *@ret_uid/@ret_gid, or -1 for both
 * when the agent is not root (QEMU then runs as the agent's own user).
 * 0 or -ENOENT when qemu_user is not a user here. */
int agent_stream_qemu_ids(const Agent *a, uid_t *ret_uid, gid_t *ret_gid);
/* Whether this agent's streams use TLS: whenever the agent has a
 * certificate (it is not in dev_mode). */
bool agent_stream_tls(const Agent *a);
/* The first port to try for a new listener: uniformly random in
 * [@low, @high] (getrandom). */
unsigned agent_stream_first_port(unsigned low, unsigned high);

/* ---- TLS (agent-stream-tls.c) ---- */

#define MIG_TLS_CREDS_ID "drover-mtls"  /* the tls-creds-x509 object, both sides */
#define MIG_TLS_AUTHZ_ID "drover-mauthz" /* the destination's authz-simple object */
#define MIG_TLS_DN_MAX 1024

/* The subject DN of the PEM certificate @pem, formatted as QEMU formats a
 * client's identity for tls-authz (GnuTLS's gnutls_x509_crt_get_dn), into
 * @buf.  0 or -EINVAL (not a certificate) / -ENAMETOOLONG. */
int agent_stream_tls_dn(const char *pem, char *buf, size_t size);
/* Make @vm's QEMU ready for a TLS stream: vm->lock held, async job @t of
 * @op (QMP in NESTED jobs).  The agent's CA, certificate and key are
 * copied under QEMU's names into a folder of run_dir that exists only
 * while QEMU loads them (tls-creds-x509 object MIG_TLS_CREDS_ID, replacing
 * one left by an earlier migration).  Destination (@authz_dn not NULL):
 * endpoint server, an authz-simple object for exactly @authz_dn, and the
 * tls-creds and tls-authz parameters.  Source (@authz_dn NULL): endpoint
 * client, tls-creds and tls-hostname=@hostname.  0 or -errno. */
int agent_stream_tls_setup_locked(Agent *a, Vm *vm, AsyncJobType t, const char *op, const char *authz_dn,
                                  const char *hostname);
/* QEMU, once it has dropped to qemu_user, must reach run_dir to read the
 * credentials folder: when the agent is root and has a certificate, every
 * folder from / to @cfg->run_dir must be searchable by qemu_user (as owner,
 * through one of its groups, or by others).  0, or -EACCES naming the first
 * folder that is not (a start-up error: otherwise every TLS migration
 * would fail at prepare). */
int agent_stream_tls_check_run_dir(const AgentConfig *cfg);
/* Source whose QEMU stays: drop the objects of the setup (a missing one is
 * fine).  vm->lock held, async job @t of @op.  The parameters are put back
 * by mig_restore_settings_locked(). */
void agent_stream_tls_drop_locked(Vm *vm, AsyncJobType t, const char *op);

/* ---- SSH (agent-stream-ssh.c) ---- */

/* One SSH tunnel of an outgoing migration: a session to the destination
 * host, a unix socket only the source's QEMU may connect to, and a pump
 * thread moving bytes both ways between each accepted connection and a
 * direct-tcpip channel of its own (several with multifd). */
typedef struct SshTunnel SshTunnel;

/* Open the tunnel (no lock held: network I/O, up to 10 s per step):
 * connect to @peer's ssh_host:ssh_port, check its host key against
 * ssh_known_hosts (anything but a match is -EACCES naming the host and the
 * key's SHA256 fingerprint), authenticate as ssh_user with ssh_identity
 * (keys only), open a direct-tcpip channel to @fwd_host:@fwd_port (as the
 * destination sees it) to prove the forward is allowed, listen on unix
 * socket @sock_path (mode 0600, owned by @uid/@gid unless -1) admitting
 * only process @qemu_pid (SO_PEERCRED), and start the pump thread.  0 and
 * *@ret (the caller's; agent_stream_ssh_close() ends it), or -errno with
 * the reason in err. */
int agent_stream_ssh_open(const AgentMigPeer *peer, const char *fwd_host, unsigned fwd_port, const char *sock_path,
                          uid_t uid, gid_t gid, pid_t qemu_pid, SshTunnel **ret);
/* "user@host:port, host key SHA256:..." of an open tunnel (for events). */
const char *agent_stream_ssh_describe(const SshTunnel *t);
/* The error that ended the pump thread early, or NULL while it has none
 * (any thread: published once, before the thread ends). */
const char *agent_stream_ssh_error(const SshTunnel *t);
/* Stop the pump thread (flag + wakeup; after 5 s the session's socket is
 * shut down under it), join it, close every channel and connection, the
 * session and the socket file.  Accepts NULL. */
void agent_stream_ssh_close(SshTunnel *t);
