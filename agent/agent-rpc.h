/* The agent's gRPC service (proto/drover/v1/agent.proto) on libdrover-rpc.
 * Handlers translate messages to agent_vm_* calls and map errors to a
 * status once, here. */
#pragma once

#include "agent.h"
#include "rpcserver.h"

/* The server's worker lanes (core/rpcserver.h), by method class.  A lane
 * never takes another lane's workers, so slow calls of one class cannot
 * delay another: a burst of Start or Shutdown calls never queues a peer's
 * MigrateFinish or a ListGuests (docs/agent.md, "Lanes"). */
typedef enum AgentLane {
        AGENT_LANE_QUERIES, /* ListGuests, GetGuest, GetAgentStats, GetMigration, GetOperation; unknown methods */
        AGENT_LANE_PEER,    /* MigratePrepare, MigrateFinish, MigrateCancel, MigrationOwner, MigrateRecover
                               (agent to agent) */
        AGENT_LANE_MIGRATE, /* Migrate, MigrateAbort, MigrateTune, MigrateStartPostcopy, MigrateRecoverNow
                               (a source's controls) */
        AGENT_LANE_CONTROL, /* every other unary call: define, start, stop, suspend, guest agent, ... */
        AGENT_LANE_STREAMS, /* WatchEvents, WatchMigration, WatchOperation: a worker for a stream's life */
        AGENT_LANE_COUNT,
} AgentLane;

/* Fill @o's lanes from @cfg (names and sizes, in AgentLane order). */
void agent_rpc_lanes(const AgentConfig *cfg, RpcServerOptions *o);

/* Register the Agent service on @srv, serving @a; GetAgentStats reads
 * @srv's lane statistics. */
int agent_rpc_register(RpcServer *srv, Agent *a);
