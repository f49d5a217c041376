/* Calls from one agent to another (the internal migration RPCs).  The only
 * migration code that sees protobuf-c or the gRPC client.
 *
 * Peers are reached with the agent's own TLS material (its certificate is
 * presented as a client certificate) or, in development mode, in plaintext
 * (loopback only, enforced by libdrover-rpc).  Every call has a deadline.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migparams.h"
#include "recovery.h" /* PeerAnswer */

typedef struct Agent Agent;

typedef struct AgentPeer AgentPeer;

int agent_peer_open(Agent *a, const char *addr, AgentPeer **ret);
void agent_peer_close(AgentPeer *p);

int agent_peer_prepare(AgentPeer *p, const char *op, const char *definition_json, const MigParams *mp,
                       const char *stream_host, const char *source_addr, int64_t timeout_ms, char *ret_uri,
                       size_t uri_size);
int agent_peer_finish(AgentPeer *p, const char *op, const char *uuid, bool postcopy, uint64_t stop_unix_ms,
                      int64_t timeout_ms, uint64_t *ret_resume_unix_ms, bool *ret_synced);
int agent_peer_cancel(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms);
/* PEER_UNREACHABLE when the call fails. */
PeerAnswer agent_peer_owner(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms);
