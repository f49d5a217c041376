/* Unit tests of the gRPC layer (core/rpc.c, core/rpcserver.c,
 * core/rpcclient.c) against
 * the test Echoer service (echo.proto) served in-process.
 *
 * Each test builds what it needs: most share a fixture server listening on
 * loopback TCP and on a unix socket in plaintext development mode; the
 * shutdown, listen-conflict and size-cap tests make their own.  TLS and
 * the role check are in test-rpc-tls.c.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "deadline.h"
#include "echo-service.h"
#include "err.h"
#include "log.h"
#include "rpc-details.h"
#include "rpc-priv.h"
#include "rpcclient.h"
#include "rpcserver.h"
#include "testutil.h"

typedef Drover__Test__V1__EchoRequest EchoRequest;
typedef Drover__Test__V1__EchoReply EchoReply;
#define ECHOER (&drover__test__v1__echoer__descriptor)
#define ECHO_REQUEST_INIT DROVER__TEST__V1__ECHO_REQUEST__INIT

/* ---- log capture ------------------------------------------------------ */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[64 * 1024]; /* lock: log_mu */
static size_t log_len;          /* lock: log_mu */

static void log_capture(LogLevel level, const char *line, void *opaque) {
        pthread_mutex_lock(&log_mu);
        size_t n = strlen(line);
        if (log_len + n + 2 < sizeof(log_buf)) {
                memcpy(log_buf + log_len, line, n);
                log_len += n;
                log_buf[log_len++] = '\n';
                log_buf[log_len] = '\0';
        }
        pthread_mutex_unlock(&log_mu);
        if (level >= LOG_LEVEL_ERROR)
                fprintf(stderr, "%s\n", line);
}

static void log_reset(void) {
        pthread_mutex_lock(&log_mu);
        log_len = 0;
        log_buf[0] = '\0';
        pthread_mutex_unlock(&log_mu);
}

static bool log_contains(const char *s) {
        pthread_mutex_lock(&log_mu);
        bool found = strstr(log_buf, s) != NULL;
        pthread_mutex_unlock(&log_mu);
        return found;
}

/* ---- helpers ---------------------------------------------------------- */

typedef struct Fixture {
        RpcServer *srv;
        EchoService es;
        int port;
        char tcp[64];
        char unix_addr[256];
} Fixture;

/* One scratch folder for the process (tu_tmpdir() keeps a few only). */
static const char *scratch(void) {
        static const char *dir;
        if (!dir)
                dir = tu_tmpdir("rpc");
        return dir;
}

static double ms_since(uint64_t t0) {
        return (double) (now_ns() - t0) / 1e6;
}

/* A dev-mode server with the echo service on 127.0.0.1:0 and a unix socket. */
static Fixture *fixture_new(const RpcServerOptions *opts) {
        Fixture *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        echo_service_init(&fx->es);
        assert_int_equal(rpc_server_new(opts, &fx->srv), 0);
        assert_int_equal(echo_service_register(fx->srv, &fx->es), 0);
        fx->port = rpc_server_listen(fx->srv, "127.0.0.1:0", NULL);
        assert_true(fx->port > 0);
        snprintf(fx->tcp, sizeof(fx->tcp), "127.0.0.1:%d", fx->port);
        static int serial;
        char name[64];
        snprintf(name, sizeof(name), "echo-%d.sock", serial++);
        snprintf(fx->unix_addr, sizeof(fx->unix_addr), "unix:%s", tu_path(scratch(), name));
        assert_int_equal(rpc_server_listen(fx->srv, fx->unix_addr, NULL), 0);
        assert_int_equal(rpc_server_start(fx->srv), 0);
        return fx;
}

static void fixture_free(Fixture *fx) {
        rpc_server_free(fx->srv);
        echo_service_destroy(&fx->es);
        free(fx);
}

static int setup(void **state) {
        *state = fixture_new(NULL);
        return 0;
}

static int teardown(void **state) {
        fixture_free(*state);
        return 0;
}

static RpcClient *client(const char *target) {
        RpcClient *cl = NULL;
        int r = rpc_client_new(target, NULL, &cl);
        if (r < 0)
                fail_msg("rpc_client_new(%s): %s", target, err_str(r));
        return cl;
}

/* Echo @text; returns the rpc result and the reply (caller frees). */
static int echo(RpcClient *cl, const char *text, int64_t timeout_ms, EchoReply **ret, RpcStatus *st) {
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;
        req.text = (char *) text;
        int r = rpc_client_unary(cl, ECHOER, "Echo", &req.base, timeout_ms, &m, st);
        if (r == 0)
                *ret = (EchoReply *) m;
        return r;
}

static void wait_counter(atomic_int *c, int want, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        while (atomic_load(c) < want && !deadline_expired(d))
                sleep_ms(5);
        assert_true(atomic_load(c) >= want);
}

/* ---- tests ------------------------------------------------------------ */

static void test_unary_tcp(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        EchoReply *rep = NULL;
        RpcStatus st;

        assert_int_equal(echo(cl, "hello", 2000, &rep, &st), 0);
        assert_int_equal(st.code, RPC_OK);
        assert_string_equal(rep->text, "hello");
        /* The handler saw our 2 s deadline. */
        assert_true(rep->remaining_ms > 0 && rep->remaining_ms <= 2030);
        drover__test__v1__echo_reply__free_unpacked(rep, NULL);
}

static void test_unary_unix(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->unix_addr);
        EchoReply *rep = NULL;

        assert_int_equal(echo(cl, "over unix", 2000, &rep, NULL), 0);
        assert_string_equal(rep->text, "over unix");
        drover__test__v1__echo_reply__free_unpacked(rep, NULL);
}

static void test_stream(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        _cleanup_(rpc_stream_freep) RpcStream *s = NULL;
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m;

        req.text = "tick";
        req.count = 5;
        req.interval_ms = 10;
        assert_int_equal(rpc_stream_open(cl, ECHOER, "Watch", &req.base, 5000, &s), 0);
        for (int i = 0; i < 5; i++) {
                assert_int_equal(rpc_stream_read(s, &m), 1);
                EchoReply *rep = (EchoReply *) m;
                assert_int_equal(rep->seq, i);
                assert_string_equal(rep->text, "tick");
                protobuf_c_message_free_unpacked(m, NULL);
        }
        assert_int_equal(rpc_stream_read(s, &m), 0);
        assert_int_equal(rpc_stream_read(s, &m), 0); /* the end repeats */
        assert_int_equal(rpc_stream_status(s)->code, RPC_OK);
        wait_counter(&fx->es.watch_done, 1, 2000);
}

static void test_unimplemented(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        void *out = NULL;
        size_t len = 0;
        RpcStatus st;
        uint64_t t0 = now_ns();

        assert_int_equal(rpc_client_unary_raw(cl, "/drover.test.v1.Echoer/Nope", "", 0, 5000, &out, &len, &st),
                         -EOPNOTSUPP);
        assert_int_equal(st.code, RPC_UNIMPLEMENTED);
        assert_string_equal(st.details, "unknown method /drover.test.v1.Echoer/Nope");
        assert_non_null(strstr(err_msg(), "UNIMPLEMENTED"));
        assert_int_equal(rpc_client_unary_raw(cl, "/other.v9.Svc/Thing", "", 0, 5000, &out, &len, &st),
                         -EOPNOTSUPP);
        assert_int_equal(st.code, RPC_UNIMPLEMENTED);
        assert_true(ms_since(t0) < 2000); /* answered, not left to the deadline */

        /* A method of the service without a handler in the table. */
        EchoService es;
        echo_service_init(&es);
        _cleanup_(rpc_server_freep) RpcServer *srv = NULL;
        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        assert_int_equal(echo_service_register_some(srv, &es, (const char *const[]){ "Echo", NULL }), 0);
        int port = rpc_server_listen(srv, "127.0.0.1:0", NULL);
        assert_true(port > 0);
        assert_int_equal(rpc_server_start(srv), 0);
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", port);
        _cleanup_(rpc_client_freep) RpcClient *cl2 = client(target);
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;
        assert_int_equal(rpc_client_unary(cl2, ECHOER, "Fail", &req.base, 5000, &m, &st), -EOPNOTSUPP);
        assert_int_equal(st.code, RPC_UNIMPLEMENTED);
        rpc_server_free(TAKE_PTR(srv));
        echo_service_destroy(&es);

        /* Table errors. */
        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        RpcMethodDef bad_name = { .name = "Nope", .unary = NULL };
        assert_int_equal(rpc_server_add_service(srv, ECHOER, &bad_name, 1, NULL), -ENOENT);
        RpcMethodDef no_fn = { .name = "Echo", .roles = RPC_ROLES_ALL };
        assert_int_equal(rpc_server_add_service(srv, ECHOER, &no_fn, 1, NULL), -EINVAL);
        assert_int_equal(echo_service_register(srv, &fx->es), 0);
        assert_int_equal(echo_service_register(srv, &fx->es), -EEXIST);
        /* The client refuses a method the descriptor does not have. */
        assert_int_equal(rpc_client_unary(cl, ECHOER, "Nope", &req.base, 5000, &m, NULL), -EINVAL);
}

static void test_invalid_argument(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        static const uint8_t garbage[] = { 0x0a, 0xff, 0xff };
        static const uint8_t not_utf8[] = { 0x0a, 0x02, 0xff, 0xfe };
        static const uint8_t hello[] = { 0x0a, 0x02, 'h', 'i' };
        const char *path = "/drover.test.v1.Echoer/Echo";
        void *out = NULL;
        size_t len = 0;
        RpcStatus st;

        assert_int_equal(rpc_client_unary_raw(cl, path, garbage, sizeof(garbage), 5000, &out, &len, &st), -EINVAL);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
        assert_string_equal(st.details, "malformed drover.test.v1.EchoRequest");

        assert_int_equal(rpc_client_unary_raw(cl, path, NULL, 0, 5000, &out, &len, &st), -EINVAL);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
        assert_string_equal(st.details, "missing request message");

        assert_int_equal(rpc_client_unary_raw(cl, path, not_utf8, sizeof(not_utf8), 5000, &out, &len, &st), -EINVAL);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
        assert_non_null(strstr(st.details, "text: invalid UTF-8"));

        /* An empty message is a valid all-default request. */
        assert_int_equal(rpc_client_unary_raw(cl, path, "", 0, 5000, &out, &len, &st), 0);
        assert_int_equal(st.code, RPC_OK);
        free(out);
        out = NULL;
        assert_int_equal(rpc_client_unary_raw(cl, path, hello, sizeof(hello), 5000, &out, &len, &st), 0);
        EchoReply *rep = drover__test__v1__echo_reply__unpack(NULL, len, out);
        assert_non_null(rep);
        assert_string_equal(rep->text, "hi");
        drover__test__v1__echo_reply__free_unpacked(rep, NULL);
        free(out);
}

static int echo_blob(RpcClient *cl, size_t n, RpcStatus *st) {
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;
        uint8_t *blob = calloc(1, n);
        req.blob.data = blob;
        req.blob.len = n;
        int r = rpc_client_unary(cl, ECHOER, "Echo", &req.base, 10000, &m, st);
        free(blob);
        if (m)
                protobuf_c_message_free_unpacked(m, NULL);
        return r;
}

static void test_size_cap(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        RpcStatus st;

        /* Default cap: 4 MiB. */
        assert_int_equal(echo_blob(cl, 5u << 20, &st), -ENOBUFS);
        assert_int_equal(st.code, RPC_RESOURCE_EXHAUSTED);
        assert_int_equal(echo_blob(cl, 3u << 20, &st), 0);

        /* Configured cap. */
        RpcServerOptions o = { .threads = 2, .max_request_bytes = 1024 };
        Fixture *small = fixture_new(&o);
        _cleanup_(rpc_client_freep) RpcClient *cl2 = client(small->tcp);
        assert_int_equal(echo_blob(cl2, 2000, &st), -ENOBUFS);
        assert_int_equal(st.code, RPC_RESOURCE_EXHAUSTED);
        assert_int_equal(echo_blob(cl2, 500, &st), 0);
        fixture_free(small);

        /* The client's reply cap. */
        RpcClientOptions co = { .max_response_bytes = 100 };
        _cleanup_(rpc_client_freep) RpcClient *cl3 = NULL;
        assert_int_equal(rpc_client_new(fx->tcp, &co, &cl3), 0);
        char text[300];
        memset(text, 'x', sizeof(text) - 1);
        text[sizeof(text) - 1] = '\0';
        EchoReply *rep = NULL;
        assert_int_equal(echo(cl3, text, 5000, &rep, &st), -ENOBUFS);
        assert_int_equal(st.code, RPC_RESOURCE_EXHAUSTED);
}

static void test_deadline(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;
        RpcStatus st;
        int before = atomic_load(&fx->es.sleep_cancelled);

        uint64_t t0 = now_ns();
        assert_int_equal(rpc_client_unary(cl, ECHOER, "Sleep", &req.base, 200, &m, &st), -ETIMEDOUT);
        double el = ms_since(t0);
        assert_int_equal(st.code, RPC_DEADLINE_EXCEEDED);
        assert_true(el >= 190 && el < 2000);
        /* The handler saw the deadline and then the cancellation. */
        wait_counter(&fx->es.sleep_cancelled, before + 1, 2000);
        /* The wire rounds grpc-timeout up a little; never past the client's. */
        long long rem = atomic_load(&fx->es.last_remaining_ms);
        if (!(rem > 0 && rem <= 230))
                fail_msg("handler saw %lld ms remaining of 200", rem);

        /* rpc_call_wait's own timeout. */
        req.interval_ms = 50;
        assert_int_equal(rpc_client_unary(cl, ECHOER, "Sleep", &req.base, 5000, &m, &st), 0);
        assert_string_equal(((EchoReply *) m)->outcome, "timeout");
        protobuf_c_message_free_unpacked(m, NULL);
}

typedef struct CancelArg {
        RpcStream *s;
        int delay_ms;
} CancelArg;

static void *cancel_later(void *p) {
        CancelArg *a = p;
        sleep_ms(a->delay_ms);
        rpc_stream_cancel(a->s);
        return NULL;
}

static void test_stream_cancel(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        _cleanup_(rpc_stream_freep) RpcStream *s = NULL;
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;
        pthread_t th;
        int before = atomic_load(&fx->es.watch_cancelled);

        req.count = 1000;
        req.interval_ms = 3000;
        req.text = "slow";
        assert_int_equal(rpc_stream_open(cl, ECHOER, "Watch", &req.base, 20000, &s), 0);
        assert_int_equal(rpc_stream_read(s, &m), 1); /* the first reply comes at once */
        protobuf_c_message_free_unpacked(m, NULL);

        /* Cancel from another thread while this one is blocked reading. */
        CancelArg a = { s, 100 };
        uint64_t t0 = now_ns();
        pthread_create(&th, NULL, cancel_later, &a);
        assert_int_equal(rpc_stream_read(s, &m), -ECANCELED);
        pthread_join(th, NULL);
        assert_true(ms_since(t0) < 1500);
        assert_int_equal(rpc_stream_status(s)->code, RPC_CANCELLED);
        assert_int_equal(rpc_stream_read(s, &m), -ECANCELED);
        wait_counter(&fx->es.watch_cancelled, before + 1, 2000);
}

/* A read that times out leaves its receive pending; the next read (with a
 * timeout or without) gets that very message, so none is lost or reordered. */
static void test_stream_read_timeout_loses_nothing(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        _cleanup_(rpc_stream_freep) RpcStream *s = NULL;
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;

        req.text = "paced";
        req.count = 3;
        req.interval_ms = 300;
        assert_int_equal(rpc_stream_open(cl, ECHOER, "Watch", &req.base, 10000, &s), 0);
        assert_int_equal(rpc_stream_read_timeout(s, 2000, &m), 1);
        assert_int_equal(((EchoReply *) m)->seq, 0);
        protobuf_c_message_free_unpacked(m, NULL);
        uint64_t t0 = now_ns();
        assert_int_equal(rpc_stream_read_timeout(s, 50, &m), -ETIMEDOUT);
        assert_true(ms_since(t0) < 250);
        assert_null(rpc_stream_status(s)); /* only the read timed out */
        assert_int_equal(rpc_stream_read_timeout(s, 0, &m), -ETIMEDOUT);
        assert_int_equal(rpc_stream_read_timeout(s, 2000, &m), 1);
        assert_int_equal(((EchoReply *) m)->seq, 1);
        protobuf_c_message_free_unpacked(m, NULL);
        assert_int_equal(rpc_stream_read_timeout(s, 10, &m), -ETIMEDOUT);
        assert_int_equal(rpc_stream_read(s, &m), 1); /* the pending receive, plain read */
        assert_int_equal(((EchoReply *) m)->seq, 2);
        protobuf_c_message_free_unpacked(m, NULL);
        assert_int_equal(rpc_stream_read_timeout(s, 2000, &m), 0);
        assert_int_equal(rpc_stream_status(s)->code, RPC_OK);
}

/* A bidirectional stream: headers first, the request when we send it,
 * replies while our side is half-closed; misuse refused; a stream freed
 * with a receive pending ends cleanly. */
static void test_bidi_stream(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        RpcStream *s = NULL;
        EchoRequest req = ECHO_REQUEST_INIT;
        EchoReply wrong = DROVER__TEST__V1__ECHO_REPLY__INIT;
        ProtobufCMessage *m = NULL;

        /* Request metadata gRPC would refuse is refused before any call. */
        static const RpcCallMeta bad_meta[][1] = { { { "Upper", "v" } }, { { "grpc-x", "v" } },
                                                   { { "k-bin", "v" } }, { { "k", "line\nbreak" } } };
        for (size_t i = 0; i < ELEMENTSOF(bad_meta); i++)
                assert_int_equal(rpc_bidi_open_meta(cl, ECHOER, "Watch", -1, bad_meta[i], 1, 0, &s), -EINVAL);
        static const RpcCallMeta meta[] = { { "hasleader", "true" } };
        assert_int_equal(rpc_bidi_open_meta(cl, ECHOER, "Watch", -1, meta, 1, 0, &s), 0);
        rpc_stream_free(TAKE_PTR(s));

        assert_int_equal(rpc_bidi_open(cl, ECHOER, "Watch", -1, &s), 0);
        assert_int_equal(rpc_stream_read_timeout(s, 100, &m), -ETIMEDOUT); /* nothing asked yet */
        assert_int_equal(rpc_bidi_send(s, &wrong.base), -EINVAL);
        req.text = "bidi";
        req.count = 2;
        req.interval_ms = 10;
        assert_int_equal(rpc_bidi_send(s, &req.base), 0);
        assert_int_equal(rpc_bidi_close_send(s), 0);
        assert_int_equal(rpc_bidi_send(s, &req.base), -EINVAL);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(rpc_stream_read_timeout(s, 2000, &m), 1);
                assert_int_equal(((EchoReply *) m)->seq, i);
                assert_string_equal(((EchoReply *) m)->text, "bidi");
                protobuf_c_message_free_unpacked(m, NULL);
        }
        assert_int_equal(rpc_stream_read(s, &m), 0);
        rpc_stream_free(s);

        /* A server stream is not bidi: no sends on it. */
        assert_int_equal(rpc_stream_open(cl, ECHOER, "Watch", &req.base, 5000, &s), 0);
        assert_int_equal(rpc_bidi_send(s, &req.base), -EINVAL);
        rpc_stream_free(s);

        /* Freed while a receive is pending, without a deadline: no hang. */
        assert_int_equal(rpc_bidi_open(cl, ECHOER, "Watch", -1, &s), 0);
        assert_int_equal(rpc_stream_read_timeout(s, 20, &m), -ETIMEDOUT);
        uint64_t t0 = now_ns();
        rpc_stream_free(s);
        assert_true(ms_since(t0) < 1000);
}

static void test_errno_table(void **state) {
        static const struct {
                int err;
                RpcCode code;
                int back;
        } t[] = {
                { 0, RPC_OK, 0 },
                { -ENOENT, RPC_NOT_FOUND, -ENOENT },
                { -EEXIST, RPC_ALREADY_EXISTS, -EEXIST },
                { -EINVAL, RPC_INVALID_ARGUMENT, -EINVAL },
                { -ETIMEDOUT, RPC_DEADLINE_EXCEEDED, -ETIMEDOUT },
                { -EBUSY, RPC_FAILED_PRECONDITION, -EBUSY },
                { -EAGAIN, RPC_UNAVAILABLE, -EAGAIN },
                { -EPERM, RPC_PERMISSION_DENIED, -EPERM },
                { -EACCES, RPC_PERMISSION_DENIED, -EPERM },
                { -EOPNOTSUPP, RPC_UNIMPLEMENTED, -EOPNOTSUPP },
                { -ENOSYS, RPC_UNIMPLEMENTED, -EOPNOTSUPP },
                { -ECANCELED, RPC_CANCELLED, -ECANCELED },
                { -ENOSPC, RPC_RESOURCE_EXHAUSTED, -ENOBUFS },
                { -ENOMEM, RPC_RESOURCE_EXHAUSTED, -ENOBUFS },
                { -ERANGE, RPC_OUT_OF_RANGE, -ERANGE },
                { -EDEADLK, RPC_ABORTED, -EDEADLK },
                { -ECONNREFUSED, RPC_UNAVAILABLE, -EAGAIN },
                { -EKEYREJECTED, RPC_UNAUTHENTICATED, -EKEYREJECTED },
                { -EIO, RPC_INTERNAL, -EREMOTEIO },
                { -EPROTO, RPC_INTERNAL, -EREMOTEIO },
                { -9999, RPC_INTERNAL, -EREMOTEIO },
        };
        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                assert_int_equal(rpc_status_from_errno(t[i].err), t[i].code);
                assert_int_equal(rpc_errno_from_status(t[i].code), t[i].back);
        }
        assert_int_equal(rpc_status_from_errno(ENOENT), RPC_NOT_FOUND); /* positive accepted */
        assert_int_equal(rpc_errno_from_status(RPC_UNKNOWN), -EREMOTEIO);
        assert_int_equal(rpc_errno_from_status(RPC_DATA_LOSS), -EBADMSG);
        for (int c = 0; c < RPC_CODE_MAX; c++)
                assert_int_equal(rpc_code_from_string(rpc_code_to_string(c)), c);
        assert_int_equal(rpc_code_from_string("nonsense"), -EINVAL);
        assert_string_equal(rpc_code_to_string(99), "?");
}

static void test_errno_roundtrip(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->unix_addr);
        static const int errs[] = { ENOENT, EEXIST, EINVAL, ETIMEDOUT, EBUSY, EAGAIN, EPERM, EACCES,
                                    EOPNOTSUPP, ECANCELED, EIO, ENOSPC };
        RpcStatus st;

        for (size_t i = 0; i < ELEMENTSOF(errs); i++) {
                EchoRequest req = ECHO_REQUEST_INIT;
                ProtobufCMessage *m = NULL;
                char want[128];
                req.errno_value = errs[i];
                req.text = "x";
                int r = rpc_client_unary(cl, ECHOER, "Fail", &req.base, 5000, &m, &st);
                assert_null(m);
                assert_int_equal(st.code, rpc_status_from_errno(-errs[i]));
                assert_int_equal(r, rpc_errno_from_status(st.code));
                assert_string_equal(st.details, "failing as asked: x");
                snprintf(want, sizeof(want), "/drover.test.v1.Echoer/Fail: %s: failing as asked: x",
                         rpc_code_to_string(st.code));
                assert_string_equal(err_msg(), want);
        }
}

/* The rich error model: Fail with count > 0 attaches an EchoReply detail,
 * which arrives in the trailer and is found by type; a plain failure
 * carries none; a detail too large for the trailer is dropped while the
 * status itself still arrives. */
static void test_status_details_travel_in_the_trailer(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->unix_addr);
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;
        EchoReply *d = NULL;
        RpcStatus st;

        req.errno_value = EBUSY;
        req.text = "held";
        req.count = 7;
        assert_int_equal(rpc_client_unary(cl, ECHOER, "Fail", &req.base, 5000, &m, &st), -EBUSY);
        assert_int_equal(st.code, RPC_FAILED_PRECONDITION);
        assert_string_equal(st.details, "failing as asked: held");
        assert_true(st.details_len > 0);
        assert_int_equal(rpc_status_detail(&st, &drover__test__v1__echo_reply__descriptor, (ProtobufCMessage **) &d), 0);
        assert_string_equal(d->text, "held");
        assert_int_equal(d->seq, 7);
        protobuf_c_message_free_unpacked(&d->base, NULL);
        assert_int_equal(rpc_status_detail(&st, &drover__test__v1__echo_request__descriptor, &m), -ENOENT);

        req.count = 0;
        assert_int_equal(rpc_client_unary(cl, ECHOER, "Fail", &req.base, 5000, &m, &st), -EBUSY);
        assert_int_equal(st.details_len, 0);
        assert_int_equal(rpc_status_detail(&st, &drover__test__v1__echo_reply__descriptor, &m), -ENOENT);

        char big[RPC_STATUS_DETAILS_MAX + 100];
        memset(big, 'b', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        req.text = big;
        req.count = 1;
        assert_int_equal(rpc_client_unary(cl, ECHOER, "Fail", &req.base, 5000, &m, &st), -EBUSY);
        assert_int_equal(st.code, RPC_FAILED_PRECONDITION);
        assert_int_equal(st.details_len, 0);
        assert_null(m);
}

static void test_unavailable(void **state) {
        /* Nothing listens on the port of a server we just stopped. */
        Fixture *tmp = fixture_new(NULL);
        char target[64];
        snprintf(target, sizeof(target), "%s", tmp->tcp);
        fixture_free(tmp);
        _cleanup_(rpc_client_freep) RpcClient *cl = client(target);
        EchoReply *rep = NULL;
        RpcStatus st;
        uint64_t t0 = now_ns();
        assert_int_equal(echo(cl, "anyone?", 5000, &rep, &st), -EAGAIN);
        assert_int_equal(st.code, RPC_UNAVAILABLE);
        assert_true(ms_since(t0) < 3000);
}

static void test_wake(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        _cleanup_(rpc_stream_freep) RpcStream *s = NULL;
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;
        RpcCall *sub = NULL;
        double worst = 0;

        req.count = 3;
        req.interval_ms = 0; /* event stream */
        assert_int_equal(rpc_stream_open(cl, ECHOER, "Watch", &req.base, 10000, &s), 0);
        Deadline d = deadline_in_ms(3000);
        while (!(sub = echo_service_subscriber(&fx->es)) && !deadline_expired(d))
                sleep_ms(2);
        assert_non_null(sub);
        for (int i = 0; i < 3; i++) {
                uint64_t t0 = now_ns();
                rpc_call_wake(sub);
                rpc_call_wake(sub); /* coalesces with the first */
                assert_int_equal(rpc_stream_read(s, &m), 1);
                worst = MAX(worst, ms_since(t0));
                assert_int_equal(((EchoReply *) m)->seq, i);
                assert_string_equal(((EchoReply *) m)->text, "event");
                protobuf_c_message_free_unpacked(m, NULL);
        }
        assert_int_equal(rpc_stream_read(s, &m), 0);
        print_message("wake -> client receive: worst %.3f ms\n", worst);
        assert_true(worst < 500);
        /* Our reference outlives the call; waking it now is a no-op. */
        wait_counter(&fx->es.watch_done, 1, 2000);
        sleep_ms(20);
        rpc_call_wake(sub);
        rpc_call_unref(sub);
}

typedef struct StreamArg {
        RpcClient *cl;
        int result;
        RpcCode code;
        int got;
} StreamArg;

static void *read_stream(void *p) {
        StreamArg *a = p;
        RpcStream *s = NULL;
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m;
        int r;

        req.count = 100;
        req.interval_ms = 1000;
        req.text = "long";
        a->result = rpc_stream_open(a->cl, ECHOER, "Watch", &req.base, 30000, &s);
        if (a->result < 0)
                return NULL;
        while ((r = rpc_stream_read(s, &m)) == 1) {
                a->got++;
                protobuf_c_message_free_unpacked(m, NULL);
        }
        a->result = r;
        a->code = rpc_stream_status(s)->code;
        rpc_stream_free(s);
        return NULL;
}

static void test_shutdown(void **state) {
        /* A stream in flight: shutdown takes the grace period, then cancels. */
        Fixture *fx = fixture_new(NULL);
        RpcClient *cl = client(fx->tcp);
        StreamArg a = { .cl = cl };
        pthread_t th;

        pthread_create(&th, NULL, read_stream, &a);
        wait_counter(&fx->es.watch_started, 1, 3000);
        sleep_ms(50);
        uint64_t t0 = now_ns();
        int n = rpc_server_shutdown(fx->srv, 300);
        double el = ms_since(t0);
        pthread_join(th, NULL);
        print_message("shutdown with a stream in flight, grace 300 ms: %.1f ms\n", el);
        assert_int_equal(n, 1);
        assert_true(el >= 295 && el < 800);
        assert_int_equal(a.result, -EAGAIN);
        assert_int_equal(a.code, RPC_UNAVAILABLE);
        assert_true(a.got >= 1);
        assert_int_equal(atomic_load(&fx->es.watch_cancelled), 1);
        assert_int_equal(rpc_server_shutdown(fx->srv, 300), 1); /* idempotent */
        fixture_free(fx);
        rpc_client_free(cl);

        /* Calls that end within the grace period are not cancelled. */
        fx = fixture_new(NULL);
        cl = client(fx->tcp);
        RpcStream *s = NULL;
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m;
        req.count = 3;
        req.interval_ms = 100;
        assert_int_equal(rpc_stream_open(cl, ECHOER, "Watch", &req.base, 5000, &s), 0);
        assert_int_equal(rpc_stream_read(s, &m), 1);
        protobuf_c_message_free_unpacked(m, NULL);
        t0 = now_ns();
        assert_int_equal(rpc_server_shutdown(fx->srv, 3000), 0);
        el = ms_since(t0);
        assert_true(el < 1500);
        while (rpc_stream_read(s, &m) == 1)
                protobuf_c_message_free_unpacked(m, NULL);
        assert_int_equal(rpc_stream_status(s)->code, RPC_OK);
        rpc_stream_free(s);
        rpc_client_free(cl);
        fixture_free(fx);

        /* Idle server. */
        fx = fixture_new(NULL);
        t0 = now_ns();
        assert_int_equal(rpc_server_shutdown(fx->srv, 300), 0);
        el = ms_since(t0);
        print_message("idle shutdown: %.1f ms\n", el);
        assert_true(el < 250);
        fixture_free(fx);

        /* Never started, with and without listeners. */
        RpcServer *srv = NULL;
        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        assert_true(rpc_server_listen(srv, "127.0.0.1:0", NULL) > 0);
        assert_int_equal(rpc_server_shutdown(srv, 100), 0);
        rpc_server_free(srv);
        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        rpc_server_free(srv);
}

static void test_port_in_use(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_server_freep) RpcServer *srv = NULL;

        log_reset();
        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        assert_int_equal(rpc_server_listen(srv, fx->tcp, NULL), -EADDRINUSE);
        assert_non_null(strstr(err_msg(), "address already in use"));
        assert_non_null(strstr(err_msg(), fx->tcp));
        /* gRPC's own complaint went through log.h, not to stderr. */
        assert_true(log_contains("grpc: "));
        /* The first server still answers. */
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        EchoReply *rep = NULL;
        assert_int_equal(echo(cl, "still mine", 2000, &rep, NULL), 0);
        drover__test__v1__echo_reply__free_unpacked(rep, NULL);
}

static void test_unix_in_use(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_server_freep) RpcServer *srv = NULL;
        const char *dir = scratch();
        char addr[300];

        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        assert_int_equal(rpc_server_listen(srv, fx->unix_addr, NULL), -EADDRINUSE);
        assert_non_null(strstr(err_msg(), "another process is listening"));
        /* Not stolen: the first server still answers on it. */
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->unix_addr);
        EchoReply *rep = NULL;
        assert_int_equal(echo(cl, "still mine", 2000, &rep, NULL), 0);
        drover__test__v1__echo_reply__free_unpacked(rep, NULL);

        /* A path that is not a socket is refused, not unlinked. */
        const char *file = tu_path(dir, "plain-file");
        FILE *f = fopen(file, "w");
        assert_non_null(f);
        fclose(f);
        snprintf(addr, sizeof(addr), "unix:%s", file);
        assert_int_equal(rpc_server_listen(srv, addr, NULL), -EEXIST);
        assert_int_equal(access(file, F_OK), 0);

        /* A stale socket (nobody listening) is taken over. */
        const char *stale = tu_path(dir, "stale.sock");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", stale);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        close(fd);
        snprintf(addr, sizeof(addr), "unix://%s", stale);
        assert_int_equal(rpc_server_listen(srv, addr, NULL), 0);
        assert_int_equal(rpc_server_start(srv), 0);
        /* srv has no service: any call is UNIMPLEMENTED */
        _cleanup_(rpc_client_freep) RpcClient *cl2 = client(addr);
        RpcStatus st;
        assert_int_equal(echo(cl2, "x", 2000, &rep, &st), -EOPNOTSUPP);

        /* Too long for sun_path. */
        char longaddr[300] = "unix:/tmp/";
        memset(longaddr + strlen(longaddr), 'a', 150);
        assert_int_equal(rpc_server_listen(srv, longaddr, NULL), -EBUSY); /* started */
        RpcServer *srv2 = NULL;
        assert_int_equal(rpc_server_new(NULL, &srv2), 0);
        assert_int_equal(rpc_server_listen(srv2, longaddr, NULL), -EINVAL);
        rpc_server_free(srv2);
}

static void test_dev_mode(void **state) {
        static const char *const local[] = { "127.0.0.1:0", "127.5.6.7:1", "[::1]:0", "localhost:50051",
                                             "unix:/run/x.sock", "unix:///run/x.sock", "unix-abstract:drover",
                                             "ipv4:127.0.0.1:80", "dns:///localhost:1", "[::ffff:127.0.0.1]:2" };
        static const char *const remote[] = { "0.0.0.0:0", "[::]:0", ":0", "192.0.2.1:0", "10.1.2.3:50051",
                                              "example.com:443", "[2001:db8::1]:1", "127.0.0.1.nip.io:1",
                                              "ipv4:127.0.0.1:1,10.0.0.1:1", "localhost.example.com:1" };
        RpcServer *srv = NULL;
        RpcClient *cl = NULL;

        for (size_t i = 0; i < ELEMENTSOF(local); i++)
                assert_true(rpc_addr_is_local(local[i]));
        for (size_t i = 0; i < ELEMENTSOF(remote); i++)
                assert_false(rpc_addr_is_local(remote[i]));
        assert_false(rpc_addr_is_local(""));

        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        for (size_t i = 0; i < 5; i++) {
                assert_int_equal(rpc_server_listen(srv, remote[i], NULL), -EPERM);
                assert_non_null(strstr(err_msg(), "development mode"));
        }
        log_reset();
        assert_true(rpc_server_listen(srv, "127.0.0.1:0", NULL) > 0);
        assert_true(log_contains("DEVELOPMENT MODE: plaintext gRPC listener on 127.0.0.1:0"));
        assert_true(log_contains("warning"));
        rpc_server_free(srv);

        assert_int_equal(rpc_client_new("192.0.2.1:50051", NULL, &cl), -EPERM);
        assert_null(cl);
        assert_int_equal(rpc_client_new("example.com:50051", NULL, &cl), -EPERM);
        assert_int_equal(rpc_client_new("", NULL, &cl), -EINVAL);
        log_reset();
        assert_int_equal(rpc_client_new("127.0.0.1:1", NULL, &cl), 0);
        assert_true(log_contains("DEVELOPMENT MODE: plaintext gRPC client"));
        rpc_client_free(cl);
}

/* What client and server build from (rpc.c) keeps its contract on its own:
 * one size cap rule, plaintext only on local addresses, TLS errors that
 * name the side, and proto3's UTF-8 rule on every string field. */
static void test_shared_rules(void **state) {
        RpcPem pem = { 0 };
        RpcTls no_ca = { 0 };

        assert_int_equal(rpc_message_cap(0), RPC_DEFAULT_MAX_MESSAGE);
        assert_int_equal(rpc_message_cap(1000), 1000);
        assert_int_equal(rpc_message_cap(SIZE_MAX), INT32_MAX);

        assert_int_equal(rpc_pem_prepare(NULL, true, "192.0.2.1:1", &pem), -EPERM);
        assert_int_equal(rpc_pem_prepare(NULL, false, "10.0.0.1:1", &pem), -EPERM);
        pem.ca = (char *) "stale";
        assert_int_equal(rpc_pem_prepare(NULL, false, "unix:/run/x.sock", &pem), 0);
        assert_null(pem.ca); /* plaintext: nothing loaded */
        assert_int_equal(rpc_pem_prepare(&no_ca, true, "127.0.0.1:1", &pem), -EINVAL);
        assert_non_null(strstr(err_msg(), "listen on 127.0.0.1:1"));
        assert_int_equal(rpc_pem_prepare(&no_ca, false, "127.0.0.1:2", &pem), -EINVAL);
        assert_non_null(strstr(err_msg(), "client for 127.0.0.1:2"));

        static const char *const good[] = { "", "plain", "h\xc3\xa9llo", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };
        static const char *const bad[] = { "\xff", "\xc3", "\xc3\x28", "\xc0\xaf" /* overlong */,
                                           "\xed\xa0\x80" /* surrogate */, "\xf4\x90\x80\x80" /* > U+10FFFF */ };
        EchoRequest req = ECHO_REQUEST_INIT;
        for (size_t i = 0; i < ELEMENTSOF(good); i++) {
                req.text = (char *) good[i];
                assert_int_equal(rpc_check_strings(&req.base), 0);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                req.text = (char *) bad[i];
                assert_int_equal(rpc_check_strings(&req.base), -EINVAL);
                assert_non_null(strstr(err_msg(), "EchoRequest.text"));
        }
}

typedef struct WorkerArg {
        RpcClient *cl;
        int id;
        int ok;
} WorkerArg;

static void *hammer(void *p) {
        WorkerArg *a = p;
        char text[64];
        for (int i = 0; i < 200; i++) {
                EchoReply *rep = NULL;
                snprintf(text, sizeof(text), "t%d-%d", a->id, i);
                if (echo(a->cl, text, 10000, &rep, NULL) == 0) {
                        if (strcmp(rep->text, text) == 0)
                                a->ok++;
                        drover__test__v1__echo_reply__free_unpacked(rep, NULL);
                }
        }
        /* and a short stream */
        RpcStream *s = NULL;
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m;
        req.count = 3;
        req.interval_ms = 1;
        if (rpc_stream_open(a->cl, ECHOER, "Watch", &req.base, 10000, &s) == 0) {
                int n = 0;
                while (rpc_stream_read(s, &m) == 1) {
                        n++;
                        protobuf_c_message_free_unpacked(m, NULL);
                }
                if (n == 3 && rpc_stream_status(s)->code == RPC_OK)
                        a->ok++;
                rpc_stream_free(s);
        }
        return NULL;
}

static void test_threads(void **state) {
        Fixture *fx = *state;
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        pthread_t th[16];
        WorkerArg a[16];

        uint64_t t0 = now_ns();
        for (int i = 0; i < 16; i++) {
                a[i] = (WorkerArg){ .cl = cl, .id = i };
                pthread_create(&th[i], NULL, hammer, &a[i]);
        }
        for (int i = 0; i < 16; i++)
                pthread_join(th[i], NULL);
        double el = ms_since(t0);
        for (int i = 0; i < 16; i++)
                assert_int_equal(a[i].ok, 201);
        print_message("16 threads x 200 unary + 1 stream on one client: %.0f ms (%.0f calls/s)\n", el,
                      16 * 201 / (el / 1000));
}

int main(int argc, char **argv) {
        if (argc > 1) /* run only the tests matching a pattern: test-rpc 'test_wake' */
                cmocka_set_test_filter(argv[1]);
        log_set_sink(log_capture, NULL);
        log_set_level(LOG_LEVEL_DEBUG);
        /* Hold gRPC for the whole run, as a daemon does, rather than cycling
         * grpc_init/grpc_shutdown with every fixture (see rpc_lib_ref()). */
        rpc_lib_ref();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_unary_tcp, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unary_unix, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unimplemented, setup, teardown),
                cmocka_unit_test_setup_teardown(test_status_details_travel_in_the_trailer, setup, teardown),
                cmocka_unit_test_setup_teardown(test_invalid_argument, setup, teardown),
                cmocka_unit_test_setup_teardown(test_size_cap, setup, teardown),
                cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stream_cancel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stream_read_timeout_loses_nothing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bidi_stream, setup, teardown),
                cmocka_unit_test(test_errno_table),
                cmocka_unit_test_setup_teardown(test_errno_roundtrip, setup, teardown),
                cmocka_unit_test(test_unavailable),
                cmocka_unit_test_setup_teardown(test_wake, setup, teardown),
                cmocka_unit_test(test_shutdown),
                cmocka_unit_test_setup_teardown(test_port_in_use, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unix_in_use, setup, teardown),
                cmocka_unit_test(test_dev_mode),
                cmocka_unit_test(test_shared_rules),
                cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        uint64_t t0 = now_ns();
        rpc_lib_unref();
        print_message("final grpc_shutdown: %.1f ms\n", ms_since(t0));
        return r;
}
