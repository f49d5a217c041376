/* The agent's gRPC service (proto/drover/v1/agent.proto) on libdrover-rpc.
 * Handlers translate messages to agent_vm_* calls and map errors to a
 * status once, here. */
#pragma once

#include "agent.h"
#include "rpcserver.h"

/* Register the Agent service on @srv, serving @a. */
int agent_rpc_register(RpcServer *srv, Agent *a);
