/* The standard gRPC health service (grpc.health.v1.Health, proto/grpc/
 * health/v1/health.proto) for the agent and the coordinator.
 *
 * A daemon makes one Health object naming the services it serves
 * ("drover.v1.Agent"), registers it on its RpcServer with
 * health_register(), and moves it from NOT_SERVING (the start) to SERVING
 * once it listens and recovered, and back to NOT_SERVING when it begins to
 * stop (before the server's shutdown grace, so watchers hear it).  The
 * empty service name "" (the whole server) and every named service share
 * the one status; any other name is unknown: Check answers NOT_FOUND and
 * Watch sends SERVICE_UNKNOWN and stays open, as the protocol says.
 *
 * Watch streams are woken on every change (not polled); at most
 * HEALTH_MAX_WATCHERS run at once, more get RESOURCE_EXHAUSTED.  Any
 * authenticated role may call either method (docs/security.md).  It lives
 * beside the generated code, in libdrover-health, since core/ does not see
 * protobuf.
 */
#pragma once

#include <stdbool.h>

#include "cleanup.h"
#include "rpcserver.h"

#define HEALTH_MAX_WATCHERS 4 /* each holds a worker of the streams lane */
#define HEALTH_MAX_SERVICES 4

typedef struct Health Health;

/* A Health in NOT_SERVING answering for "" and @services (NULL-terminated,
 * at most HEALTH_MAX_SERVICES, copied).  Returns 0 and *ret or -ENOMEM,
 * -EINVAL (too many). */
int health_new(const char *const *services, Health **ret);
/* Free; after the server it was registered on is shut down.  Accepts NULL. */
void health_free(Health *h);
DEFINE_POINTER_CLEANUP(Health, health_free);

/* Add grpc.health.v1.Health to @srv: Check on lane @check_lane, Watch on
 * lane @watch_lane (a lane for streams: a watcher holds a worker).  Before
 * rpc_server_start(); @h must outlive the server.  Returns as
 * rpc_server_add_service(). */
int health_register(Health *h, RpcServer *srv, unsigned check_lane, unsigned watch_lane);

/* Set SERVING (true) or NOT_SERVING and wake every watcher when it
 * changed.  Any thread; takes the health lock, never held across I/O. */
void health_set_serving(Health *h, bool serving);
/* The current status (any thread). */
bool health_is_serving(Health *h);
