/* Internals of agent/agent-peer.c exported only for tests. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "agent-peer.h"
#include "rpcclient.h"

/* agent_peer_cache_sweep() as if the monotonic clock read @now (ns). */
void agent_peer_cache_sweep_at(AgentPeerCache *c, uint64_t now);
/* Channels listed now. */
size_t agent_peer_cache_size(AgentPeerCache *c);
/* The client behind @p (tells whether two handles share a channel). */
RpcClient *agent_peer_client(AgentPeer *p);
