/* grpc.health.v1.Health (see health.h).
 *
 * One lock guards the status, its change counter and the table of watching
 * calls.  A Watch handler registers its call (holding a reference), sends
 * the status, and sleeps in rpc_call_wait(); health_set_serving() bumps the
 * counter and wakes every registered call, taking references under the lock
 * and waking them after it is released, so no lock is held across gRPC.
 * The woken handler sends when the counter moved since its last message. */
#include "health.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "health.pb-c.h"
#include "lock.h"
#include "log.h"

static LockClass health_lock_class = LOCK_CLASS_INIT("health");

struct Health {
        /* The lock guards status, changes and watchers. */
        Lock lock;
        char *services[HEALTH_MAX_SERVICES];     /* immutable */
        size_t n_services;                       /* immutable */
        bool serving;                            /* lock: lock */
        uint64_t changes;                        /* lock: lock */
        RpcCall *watchers[HEALTH_MAX_WATCHERS];  /* lock: lock; each holds a reference */
};

int health_new(const char *const *services, Health **ret) {
        _cleanup_(health_freep) Health *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        lock_init(&h->lock, &health_lock_class);
        for (; services && *services; services++) {
                if (h->n_services == HEALTH_MAX_SERVICES)
                        return err_set(-EINVAL, "health: more than %d services", HEALTH_MAX_SERVICES);
                if (!(h->services[h->n_services] = strdup(*services)))
                        return -ENOMEM;
                h->n_services++;
        }
        *ret = TAKE_PTR(h);
        return 0;
}

void health_free(Health *h) {
        if (!h)
                return;
        for (size_t i = 0; i < HEALTH_MAX_WATCHERS; i++)
                rpc_call_unref(h->watchers[i]);
        for (size_t i = 0; i < h->n_services; i++)
                free(h->services[i]);
        lock_destroy(&h->lock);
        free(h);
}

static bool known_service(Health *h, const char *name) {
        if (!name || !name[0])
                return true;
        for (size_t i = 0; i < h->n_services; i++)
                if (strcmp(h->services[i], name) == 0)
                        return true;
        return false;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus status_locked(Health *h) {
        lock_assert_held(&h->lock);
        return h->serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                          : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

void health_set_serving(Health *h, bool serving) {
        RpcCall *wake[HEALTH_MAX_WATCHERS];
        size_t n = 0;

        lock_acquire(&h->lock);
        if (h->serving != serving) {
                h->serving = serving;
                h->changes++;
                for (size_t i = 0; i < HEALTH_MAX_WATCHERS; i++)
                        if (h->watchers[i])
                                wake[n++] = rpc_call_ref(h->watchers[i]);
        }
        lock_release(&h->lock);
        for (size_t i = 0; i < n; i++) {
                rpc_call_wake(wake[i]);
                rpc_call_unref(wake[i]);
        }
}

bool health_is_serving(Health *h) {
        lock_acquire(&h->lock);
        bool s = h->serving;
        lock_release(&h->lock);
        return s;
}

static RpcCode health_check(RpcCall *call, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Grpc__Health__V1__HealthCheckRequest *req = (const Grpc__Health__V1__HealthCheckRequest *) req_;
        Grpc__Health__V1__HealthCheckResponse *resp = (Grpc__Health__V1__HealthCheckResponse *) resp_;
        Health *h = user;

        if (!known_service(h, req->service))
                return rpc_call_fail(call, RPC_NOT_FOUND, "unknown service %s", req->service);
        lock_acquire(&h->lock);
        resp->status = status_locked(h);
        lock_release(&h->lock);
        return RPC_OK;
}

static RpcCode health_watch(RpcCall *call, const ProtobufCMessage *req_, void *user) {
        const Grpc__Health__V1__HealthCheckRequest *req = (const Grpc__Health__V1__HealthCheckRequest *) req_;
        Health *h = user;
        bool known = known_service(h, req->service);
        size_t slot = HEALTH_MAX_WATCHERS;
        uint64_t sent_at = 0;
        bool sent = false;

        lock_acquire(&h->lock);
        for (size_t i = 0; i < HEALTH_MAX_WATCHERS && slot == HEALTH_MAX_WATCHERS; i++)
                if (!h->watchers[i])
                        h->watchers[slot = i] = rpc_call_ref(call);
        lock_release(&h->lock);
        if (slot == HEALTH_MAX_WATCHERS)
                return rpc_call_fail(call, RPC_RESOURCE_EXHAUSTED, "more than %d health watchers",
                                     HEALTH_MAX_WATCHERS);

        for (;;) {
                Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
                lock_acquire(&h->lock);
                uint64_t changes = h->changes;
                resp.status = known ? status_locked(h)
                                    : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
                lock_release(&h->lock);
                /* an unknown service never changes: it is sent once */
                if ((!sent || (known && changes != sent_at)) && rpc_call_send(call, &resp.base) < 0)
                        break;
                sent = true;
                sent_at = changes;
                if (rpc_call_wait(call, -1) == RPC_WAIT_CANCELLED)
                        break;
        }

        lock_acquire(&h->lock);
        RpcCall *mine = TAKE_PTR(h->watchers[slot]);
        lock_release(&h->lock);
        rpc_call_unref(mine);
        return RPC_CANCELLED; /* a watch ends only when its call does */
}

int health_register(Health *h, RpcServer *srv, unsigned check_lane, unsigned watch_lane) {
        const RpcMethodDef defs[] = {
                { .name = "Check", .unary = health_check, .lane = check_lane, .roles = RPC_ROLES_ALL },
                { .name = "Watch", .stream = health_watch, .lane = watch_lane, .roles = RPC_ROLES_ALL },
        };
        return rpc_server_add_service(srv, &grpc__health__v1__health__descriptor, defs, ELEMENTSOF(defs), h);
}
