/* The test Echoer service (echo.proto) on top of core/rpcserver.h, shared by
 * the unit tests, the interop echo-server and the benchmark.
 *
 * Counters let in-process tests see what handlers observed (cancellation,
 * deadlines); a Watch with interval_ms = 0 is an event stream that sends one
 * reply per rpc_call_wake() from another thread (the subscriber slot).  Slow
 * holds its worker until the test opens the gate (echo_service_open_gate);
 * a Slow call still blocked after 30 s fails with ABORTED rather than hang
 * a broken test forever.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

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
        atomic_int slow_started;        /* atomic */
        atomic_int slow_done;           /* atomic */
        pthread_mutex_t mu;             /* protects subscriber and gate_open */
        pthread_cond_t gate;            /* signals gate_open */
        RpcCall *subscriber;            /* lock: mu; holds a reference */
        bool gate_open;                 /* lock: mu; Slow calls return */
} EchoService;

void echo_service_init(EchoService *es);
void echo_service_destroy(EchoService *es);
/* Register all methods on @srv (lane 0). */
int echo_service_register(RpcServer *srv, EchoService *es);
/* Register only the methods named in @names (NULL-terminated), on lane 0. */
int echo_service_register_some(RpcServer *srv, EchoService *es, const char *const *names);
/* The same on lane @lane. */
int echo_service_register_lane(RpcServer *srv, EchoService *es, const char *const *names, unsigned lane);
/* Let every Slow call, blocked or future, return. */
void echo_service_open_gate(EchoService *es);
/* The current event-stream subscriber with a new reference, or NULL. */
RpcCall *echo_service_subscriber(EchoService *es);
