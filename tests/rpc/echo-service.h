/* The test Echoer service (echo.proto) on top of core/rpcserver.h, shared by
 * the unit tests, the interop echo-server and the benchmark.
 *
 * Counters let in-process tests see what handlers observed (cancellation,
 * deadlines); a Watch with interval_ms = 0 is an event stream that sends one
 * reply per rpc_call_wake() from another thread (the subscriber slot).
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>

#include "echo.pb-c.h"
#include "rpcserver.h"

typedef struct EchoService {
        atomic_int echo_calls;          /* atomic */
        atomic_int sleep_started;       /* atomic */
        atomic_int sleep_cancelled;     /* atomic */
        atomic_int watch_started;       /* atomic */
        atomic_int watch_cancelled;     /* atomic */
        atomic_int watch_done;          /* atomic */
        atomic_llong last_remaining_ms; /* atomic */
        pthread_mutex_t mu;             /* protects subscriber */
        RpcCall *subscriber;            /* lock: mu; holds a reference */
} EchoService;

void echo_service_init(EchoService *es);
void echo_service_destroy(EchoService *es);
/* Register all four methods on @srv. */
int echo_service_register(RpcServer *srv, EchoService *es);
/* Register only the methods named in @names (NULL-terminated). */
int echo_service_register_some(RpcServer *srv, EchoService *es, const char *const *names);
/* The current event-stream subscriber with a new reference, or NULL. */
RpcCall *echo_service_subscriber(EchoService *es);
