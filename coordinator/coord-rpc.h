/* The Coordinator gRPC service (proto/drover/v1/coordinator.proto). */
#pragma once

#include "coord.h"
#include "rpcserver.h"

/* The server's worker lanes (core/rpcserver.h), by method class: a lane
 * never takes another lane's workers, so a burst of one class cannot
 * delay another (docs/coordinator.md, "Lanes"). */
typedef enum CoordLane {
        COORD_LANE_QUERIES, /* ListHosts, ListGuests, ListJobs, GetJob; also answers unknown methods */
        COORD_LANE_CONTROL, /* AddHost, RemoveHost, SetHostState, MigrateGuests, Evacuate, CancelJob */
        COORD_LANE_STREAMS, /* WatchJob, a worker for each stream's life */
        COORD_LANE_COUNT,
} CoordLane;

/* How many WatchJob streams may be open at once: one less than the streams
 * lane's workers (main sets it), so a free worker answers a further stream
 * RESOURCE_EXHAUSTED at once instead of queueing it. */
extern unsigned coord_rpc_max_watches;

/* Fill @o's lanes from @cfg (names and sizes, in CoordLane order). */
void coord_rpc_lanes(const CoordConfig *cfg, RpcServerOptions *o);

int coord_rpc_register(RpcServer *srv, Coordinator *c);
