/* The test Echoer service (see echo-service.h). */
#include "echo-service.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "rpc-details.h"

typedef Drover__Test__V1__EchoRequest EchoRequest;
typedef Drover__Test__V1__EchoReply EchoReply;

static RpcCode do_echo(RpcCall *c, const ProtobufCMessage *reqm, ProtobufCMessage *respm, void *user) {
        EchoService *es = user;
        const EchoRequest *req = (const EchoRequest *) reqm;
        EchoReply *resp = (EchoReply *) respm;
        char id[256];

        atomic_fetch_add(&es->echo_calls, 1);
        resp->text = req->text;                 /* pointing into the request is allowed */
        resp->seq = req->count;
        resp->remaining_ms = rpc_call_remaining_ms(c);
        resp->outcome = rpc_call_strdup(c, rpc_identity_format(rpc_call_identity(c), id, sizeof(id)));
        return RPC_OK;
}

static RpcCode do_fail(RpcCall *c, const ProtobufCMessage *reqm, ProtobufCMessage *respm, void *user) {
        const EchoRequest *req = (const EchoRequest *) reqm;
        if (req->count > 0) {
                /* the rich error model: an EchoReply detail (text, seq = count) */
                EchoReply d = DROVER__TEST__V1__ECHO_REPLY__INIT;
                d.text = req->text;
                d.seq = req->count;
                return rpc_call_fail_detail(c, rpc_status_from_errno(-req->errno_value), &d.base,
                                            "failing as asked: %s", req->text);
        }
        return rpc_call_fail_errno(c, err_set(-req->errno_value, "failing as asked: %s", req->text));
}

static RpcCode do_sleep(RpcCall *c, const ProtobufCMessage *reqm, ProtobufCMessage *respm, void *user) {
        EchoService *es = user;
        const EchoRequest *req = (const EchoRequest *) reqm;
        EchoReply *resp = (EchoReply *) respm;

        atomic_fetch_add(&es->sleep_started, 1);
        resp->remaining_ms = rpc_call_remaining_ms(c);
        atomic_store(&es->last_remaining_ms, resp->remaining_ms);
        switch (rpc_call_wait(c, req->interval_ms > 0 ? req->interval_ms : -1)) {
        case RPC_WAIT_TIMEOUT:
                resp->outcome = "timeout";
                return RPC_OK;
        case RPC_WAIT_WOKEN:
                resp->outcome = "woken";
                return RPC_OK;
        case RPC_WAIT_CANCELLED:
        default:
                atomic_fetch_add(&es->sleep_cancelled, 1);
                return rpc_call_fail(c, RPC_CANCELLED, "sleep cancelled");
        }
}

static RpcCode do_watch(RpcCall *c, const ProtobufCMessage *reqm, void *user) {
        EchoService *es = user;
        const EchoRequest *req = (const EchoRequest *) reqm;
        bool events = req->interval_ms <= 0;
        RpcCode code = RPC_OK;

        atomic_fetch_add(&es->watch_started, 1);
        if (events) {
                pthread_mutex_lock(&es->mu);
                rpc_call_unref(es->subscriber);
                es->subscriber = rpc_call_ref(c);
                pthread_mutex_unlock(&es->mu);
        }
        for (int i = 0; i < req->count; i++) {
                if (events || i > 0) {
                        RpcWait w = rpc_call_wait(c, events ? -1 : req->interval_ms);
                        if (w == RPC_WAIT_CANCELLED) {
                                atomic_fetch_add(&es->watch_cancelled, 1);
                                code = rpc_call_fail(c, RPC_CANCELLED, "watch cancelled");
                                goto out;
                        }
                }
                EchoReply r = DROVER__TEST__V1__ECHO_REPLY__INIT;
                r.text = events ? "event" : req->text;
                r.seq = i;
                int e = rpc_call_send(c, &r.base);
                if (e < 0) {
                        atomic_fetch_add(&es->watch_cancelled, 1);
                        code = rpc_call_fail_errno(c, e);
                        goto out;
                }
        }
        atomic_fetch_add(&es->watch_done, 1);
out:
        if (events) {
                pthread_mutex_lock(&es->mu);
                if (es->subscriber == c) {
                        es->subscriber = NULL;
                        rpc_call_unref(c);
                }
                pthread_mutex_unlock(&es->mu);
        }
        return code;
}

static RpcCode do_slow(RpcCall *c, const ProtobufCMessage *reqm, ProtobufCMessage *respm, void *user) {
        EchoService *es = user;
        const EchoRequest *req = (const EchoRequest *) reqm;
        EchoReply *resp = (EchoReply *) respm;
        struct timespec limit;
        int e = 0;

        atomic_fetch_add(&es->slow_started, 1);
        clock_gettime(CLOCK_REALTIME, &limit);
        limit.tv_sec += 30;
        pthread_mutex_lock(&es->mu);
        while (!es->gate_open && e == 0)
                e = pthread_cond_timedwait(&es->gate, &es->mu, &limit);
        pthread_mutex_unlock(&es->mu);
        atomic_fetch_add(&es->slow_done, 1);
        if (e != 0)
                return rpc_call_fail(c, RPC_ABORTED, "the gate stayed shut for 30 s");
        resp->text = req->text;
        return RPC_OK;
}

/* Any role may call these, except Fail: operators only, so the TLS test
 * sees a refusal (test-rpc.c, test_tls). */
static const RpcMethodDef echo_methods[] = {
        { .name = "Echo", .unary = do_echo, .roles = RPC_ROLES_ALL },
        { .name = "Watch", .stream = do_watch, .roles = RPC_ROLES_ALL },
        { .name = "Fail", .unary = do_fail, .roles = RPC_ROLES_OPERATOR },
        { .name = "Sleep", .unary = do_sleep, .roles = RPC_ROLES_ALL },
        { .name = "Slow", .unary = do_slow, .roles = RPC_ROLES_ALL },
};

void echo_service_init(EchoService *es) {
        memset(es, 0, sizeof(*es));
        pthread_mutex_init(&es->mu, NULL);
        pthread_cond_init(&es->gate, NULL);
}

void echo_service_destroy(EchoService *es) {
        rpc_call_unref(es->subscriber);
        es->subscriber = NULL;
        pthread_cond_destroy(&es->gate);
        pthread_mutex_destroy(&es->mu);
}

void echo_service_open_gate(EchoService *es) {
        pthread_mutex_lock(&es->mu);
        es->gate_open = true;
        pthread_cond_broadcast(&es->gate);
        pthread_mutex_unlock(&es->mu);
}

int echo_service_register(RpcServer *srv, EchoService *es) {
        return rpc_server_add_service(srv, &drover__test__v1__echoer__descriptor, echo_methods,
                                      sizeof(echo_methods) / sizeof(echo_methods[0]), es);
}

int echo_service_register_some(RpcServer *srv, EchoService *es, const char *const *names) {
        return echo_service_register_lane(srv, es, names, 0);
}

int echo_service_register_lane(RpcServer *srv, EchoService *es, const char *const *names, unsigned lane) {
        for (; *names; names++)
                for (size_t i = 0; i < sizeof(echo_methods) / sizeof(echo_methods[0]); i++)
                        if (strcmp(echo_methods[i].name, *names) == 0) {
                                RpcMethodDef d = echo_methods[i];
                                d.lane = lane;
                                int r = rpc_server_add_service(srv, &drover__test__v1__echoer__descriptor, &d, 1, es);
                                if (r < 0)
                                        return r;
                        }
        return 0;
}

RpcCall *echo_service_subscriber(EchoService *es) {
        pthread_mutex_lock(&es->mu);
        RpcCall *c = es->subscriber ? rpc_call_ref(es->subscriber) : NULL;
        pthread_mutex_unlock(&es->mu);
        return c;
}
