/* The Coordinator gRPC service (proto/drover/v1/coordinator.proto). */
#pragma once

#include "coord.h"
#include "rpcserver.h"

/* How many WatchJob streams may be open at once (main sets rpc_threads/4). */
extern unsigned coord_rpc_max_watches;

int coord_rpc_register(RpcServer *srv, Coordinator *c);
