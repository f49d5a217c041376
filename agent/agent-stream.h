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
 * agent-stream.c holds addresses and ports, agent-stream-tls.c the TLS
 * objects (the only file that includes GnuTLS).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "agent.h"
#include "job.h"
#include "vm.h"

/* Where an incoming stream listens, as MigratePrepare answers it. */
typedef struct MigStream {
        char host[64];   /* an IP literal, no brackets */
        unsigned port;
        bool tls;        /* QEMU TLS with the Prepare caller's certificate only */
        char uri[96];    /* "tcp:HOST:PORT" or "tcp:[V6]:PORT" */
} MigStream;

/* Fill @s from @host (an IP literal) and @port, with its URI.  0, or
 * -EINVAL when @host is not an IP literal or @port is 0 or above 65535
 * (an answer from a peer is checked with this). */
int mig_stream_set(MigStream *s, const char *host, unsigned port, bool tls);
/* Parse a URI mig_stream_set() made back into @s (tls as given). */
int mig_stream_from_uri(const char *uri, bool tls, MigStream *ret);
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
