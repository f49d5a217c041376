/* Calls from one agent to another (the internal migration RPCs).  The only
 * migration code that sees protobuf-c or the gRPC client.
 *
 * Peers are reached with the agent's own TLS material (its certificate is
 * presented as a client certificate) or, in development mode, in plaintext
 * (loopback only, enforced by libdrover-rpc).  Every call has a deadline,
 * and first waits at most PEER_CONNECT_MS for a connection: a call that
 * finds none fails before anything is sent, and the caller can tell that
 * from a lost reply (rpcclient.h, RpcStatus.not_sent).
 *
 * Channels are reused: each agent keeps one per peer address in its
 * AgentPeerCache (Agent.peers), shared by concurrent migrations, and makes a
 * new one when the TLS files changed, gRPC gave up on the old one, a call on
 * it failed in transport, or it sat unused for PEER_IDLE_MS (agent-peer.c
 * says why and how).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent-stream.h"
#include "migparams.h"
#include "recovery.h" /* PeerAnswer */

typedef struct Agent Agent;

typedef struct AgentPeer AgentPeer;
typedef struct AgentPeerCache AgentPeerCache;

#define PEER_CONNECT_MS 5000
#define PEER_IDLE_MS 30000 /* a channel no handle used for this long is closed */
#define PEER_CACHE_MAX 32  /* channels kept per agent (peer addresses) */

/* The mark a destination puts in a failed MigrateFinish's details
 * (FAILED_PRECONDITION) when it never ran `cont` for the operation and has
 * dropped its copy: the source keeps the guest. */
#define PEER_FINISH_NOT_STARTED_MARK "[guest not started here]"

/* What a failed finish tells the source about the destination. */
typedef enum PeerFinishFailure {
        PEER_FINISH_MAYBE_STARTED, /* sent, no usable answer: the destination may run the guest */
        PEER_FINISH_NOT_SENT,      /* the call never reached the destination */
        PEER_FINISH_NOT_STARTED,   /* the destination answered that it did not start the guest
                                    * and dropped its copy */
} PeerFinishFailure;

/* An empty cache (agent_new).  Returns 0 or -ENOMEM. */
int agent_peer_cache_new(AgentPeerCache **ret);
/* Close every channel.  No handle may be open (no migration thread, RPC
 * handler or watchdog runs).  Accepts NULL. */
void agent_peer_cache_free(AgentPeerCache *c);
/* Close the channels idle for PEER_IDLE_MS (or broken) that no handle
 * uses.  Any thread, no lock held; @c may be NULL. */
void agent_peer_cache_sweep(AgentPeerCache *c);

/* A handle on a channel to the agent at @addr: a cached one of a->peers
 * when usable, else a new one (listed in the cache; a->peers NULL: not
 * cached).  Any thread, no lock held (it may read the TLS files).  Returns
 * 0 and *ret (agent_peer_close() it), or -errno (bad address or TLS
 * material).  A handle keeps its channel for its lifetime, also after the
 * channel left the cache. */
int agent_peer_open(Agent *a, const char *addr, AgentPeer **ret);
/* Let go of the handle (the channel stays cached).  Accepts NULL. */
void agent_peer_close(AgentPeer *p);

/* MigratePrepare: *ret is where the destination listens, as it answered
 * (checked: an IP literal and a port); -EPROTO for an unusable answer.
 * @storage (NULL or n = 0: no local disk) sends the local disks and gets
 * the NBD server and its exports back (checked: an IP literal, a port and
 * one export name per disk). */
int agent_peer_prepare(AgentPeer *p, const char *op, const char *definition_json, const MigParams *mp,
                       const char *source_addr, int64_t timeout_ms, MigStorage *storage, MigStream *ret);
/* MigrateRecover: *ret is the new listener of a paused post-copy's
 * destination (checked as prepare's answer). */
int agent_peer_recover(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms, MigStream *ret);
/* MigrateFinish: 0 when the destination runs the guest (in post-copy it
 * answers once its vCPUs run; an older destination at completion).  On failure
 * returns -errno and, when @ret_failure is not NULL, what the failure
 * proves (PEER_FINISH_MAYBE_STARTED unless the call provably never reached
 * the destination or it answered with PEER_FINISH_NOT_STARTED_MARK). */
int agent_peer_finish(AgentPeer *p, const char *op, const char *uuid, bool postcopy, uint64_t stop_unix_ms,
                      int64_t timeout_ms, uint64_t *ret_resume_unix_ms, bool *ret_synced,
                      PeerFinishFailure *ret_failure);
int agent_peer_cancel(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms);
/* PEER_UNREACHABLE when the call fails. */
PeerAnswer agent_peer_owner(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms);
