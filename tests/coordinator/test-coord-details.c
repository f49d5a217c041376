/* The rich error model end to end (suite 'unit'): the real Coordinator
 * service (coord-rpc.c) on a real gRPC unix socket, its engine on the real
 * SQLite store with fake agents (coord-harness.h), asked by the real
 * client and by droverctl as a process.
 *
 * What it proves: an evacuation refused because guests cannot be placed
 * answers FAILED_PRECONDITION with a short message (the first guests and
 * "and N more") and trailing metadata grpc-status-details-bin that
 * decodes, with the generated google.rpc.Status code alone (not through
 * rpc-details.c), as a Status repeating the code and message whose one
 * Any is "type.googleapis.com/drover.v1.BlockedGuests" listing every
 * blocked guest with its reason; rpc_status_detail() finds the same;
 * droverctl prints every blocked guest (text and --json); and a list too
 * long for gRPC's metadata limit is cut to fit (the cut counted in
 * `omitted`), so the call still ends with its status and details.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "coord-harness.h"
#include "coord-rpc.h"
#include "coordinator.pb-c.h"
#include "err.h"
#include "google/rpc/status.pb-c.h"
#include "rpc-details.h"
#include "rpcclient.h"
#include "testutil.h"

#define GIB 1024
#define MANY 30 /* guests in the cut-list test (the fake agents hold 32) */

static const char *dir;
static char addr[300];

static void assert_contains(const char *text, const char *part) {
        if (!strstr(text, part))
                fail_msg("'%s' does not contain '%s'", text, part);
}

/* Serve the Coordinator API of @c on a unix socket of @tag. */
static RpcServer *serve(Coordinator *c, const char *tag) {
        static CoordConfig cfg; /* large: not on the stack */
        RpcServerOptions o = { 0 };
        RpcServer *srv;
        dir = tu_tmpdir(tag);
        snprintf(addr, sizeof(addr), "unix:%s", tu_path(dir, "coord.sock"));
        coord_config_defaults(&cfg);
        coord_rpc_lanes(&cfg, &o);
        if (rpc_server_new(&o, &srv) < 0 || coord_rpc_register(srv, c) < 0 || rpc_server_listen(srv, addr, NULL) < 0 ||
            rpc_server_start(srv) < 0)
                fail_msg("serve: %s", err_msg());
        return srv;
}

static void stop(RpcServer *srv) {
        rpc_server_shutdown(srv, 100);
        rpc_server_free(srv);
}

/* Evacuate @host through the API: the call's result, its status in @st. */
static int evacuate(const char *host, RpcStatus *st) {
        Drover__V1__EvacuateRequest req = DROVER__V1__EVACUATE_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        RpcClient *cl;
        req.host = (char *) host;
        assert_int_equal(rpc_client_new(addr, NULL, &cl), 0);
        int r = rpc_client_unary(cl, &drover__v1__coordinator__descriptor, "Evacuate", &req.base, 10000, &resp, st);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        rpc_client_free(cl);
        return r;
}

/* The BlockedGuests in @st, decoded with the generated google.rpc.Status
 * (asserting its code, message and the one Any's type URL). */
static Drover__V1__BlockedGuests *blocked_of(const RpcStatus *st) {
        assert_true(st->details_len > 0);
        assert_true(st->details_len <= RPC_STATUS_DETAILS_MAX);
        Google__Rpc__Status *s = google__rpc__status__unpack(NULL, st->details_len, st->details_bin);
        assert_non_null(s);
        assert_int_equal(s->code, RPC_FAILED_PRECONDITION);
        assert_string_equal(s->message, st->details);
        assert_int_equal(s->n_details, 1);
        assert_string_equal(s->details[0]->type_url, "type.googleapis.com/drover.v1.BlockedGuests");
        Drover__V1__BlockedGuests *b =
                drover__v1__blocked_guests__unpack(NULL, s->details[0]->value.len, s->details[0]->value.data);
        assert_non_null(b);
        google__rpc__status__free_unpacked(s, NULL);
        return b;
}

/* The entry of @guest in @b, or NULL. */
static const Drover__V1__PlanEntry *entry(const Drover__V1__BlockedGuests *b, const char *guest) {
        for (size_t i = 0; i < b->n_blocked; i++)
                if (strcmp(b->blocked[i]->guest, guest) == 0)
                        return b->blocked[i];
        return NULL;
}

/* Run droverctl -c ADDR with the arguments that follow (NULL-terminated);
 * stdout then stderr in *ret_out.  Returns its exit code. */
static int droverctl(char **ret_out, ...) {
        char *argv[16];
        size_t n = 0;
        va_list ap;
        const char *out = tu_path(dir, "out.log"), *err = tu_path(dir, "err.log");
        argv[n++] = (char *) tu_build_path("coordinator/droverctl");
        argv[n++] = (char *) "-c";
        argv[n++] = addr;
        va_start(ap, ret_out);
        for (char *a; n < ELEMENTSOF(argv) - 1 && (a = va_arg(ap, char *));)
                argv[n++] = a;
        va_end(ap);
        argv[n] = NULL;
        pid_t p = fork();
        assert_true(p >= 0);
        if (p == 0) {
                int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int e = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (o < 0 || e < 0 || dup2(o, STDOUT_FILENO) < 0 || dup2(e, STDERR_FILENO) < 0)
                        _exit(127);
                execv(argv[0], argv);
                _exit(127);
        }
        int status = 0;
        assert_int_equal(waitpid(p, &status, 0), p); /* droverctl's --timeout bounds it */
        char *o = tu_read_file(out, NULL), *e = tu_read_file(err, NULL);
        assert_non_null(o);
        assert_non_null(e);
        assert_true(asprintf(ret_out, "%s%s", o, e) > 0);
        free(o);
        free(e);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Three of four guests of h1 fit nowhere: the refusal's details list all
 * three with their reasons, though the message names only two. */
static void test_refused_evacuation_details_list_every_blocked_guest(void **state) {
        const uint64_t mem[] = { 32 * GIB, 4 * GIB };
        const char *big[] = { "big-1", "big-2", "big-3" };
        Coordinator *c = ch_new("coord-details", 2, mem);
        RpcStatus st = { 0 };
        ch_guest("h1", "big-1", 8 * GIB);
        ch_guest("h1", "big-2", 7 * GIB);
        ch_guest("h1", "big-3", 6 * GIB);
        ch_guest("h1", "small", GIB / 2);
        RpcServer *srv = serve(c, "coord-details-rpc");

        assert_int_equal(evacuate("h1", &st), -EBUSY);
        assert_int_equal(st.code, RPC_FAILED_PRECONDITION);
        assert_contains(st.details, "3 of 4 guests cannot be placed, nothing was changed:");
        assert_contains(st.details, "and 1 more (see the status details)");

        Drover__V1__BlockedGuests *b = blocked_of(&st);
        assert_int_equal(b->n_blocked, 3);
        assert_int_equal(b->omitted, 0);
        assert_int_equal(b->guests, 4);
        for (size_t i = 0; i < ELEMENTSOF(big); i++) {
                const Drover__V1__PlanEntry *e = entry(b, big[i]);
                if (!e)
                        fail_msg("%s is not in the details", big[i]);
                assert_string_equal(e->source, "h1");
                assert_string_equal(e->destination, "");
                assert_true(strlen(e->reason) > 0);
        }
        assert_null(entry(b, "small")); /* it fits: not blocked */

        /* the typed reader finds the same list */
        Drover__V1__BlockedGuests *b2 = NULL;
        assert_int_equal(rpc_status_detail(&st, &drover__v1__blocked_guests__descriptor, (ProtobufCMessage **) &b2), 0);
        assert_int_equal(b2->n_blocked, 3);
        drover__v1__blocked_guests__free_unpacked(b2, NULL);
        /* and reports a type that is not there as absent */
        ProtobufCMessage *none = NULL;
        assert_int_equal(rpc_status_detail(&st, &drover__v1__plan__descriptor, &none), -ENOENT);

        /* droverctl prints every blocked guest with its reason, on text... */
        char *out;
        assert_int_equal(droverctl(&out, "evacuate", "h1", NULL), 4);
        print_message("%s", out);
        assert_contains(out, "and 1 more (see the status details)");
        assert_contains(out, "3 blocked guests:");
        for (size_t i = 0; i < ELEMENTSOF(big); i++) {
                char line[256];
                snprintf(line, sizeof(line), "%-18s %-10s BLOCKED: %s", big[i], "h1", entry(b, big[i])->reason);
                assert_contains(out, line);
        }
        free(out);
        /* ... and in --json */
        assert_int_equal(droverctl(&out, "--json", "evacuate", "h1", NULL), 4);
        assert_contains(out, "\"blocked\":[");
        for (size_t i = 0; i < ELEMENTSOF(big); i++) {
                char field[128];
                snprintf(field, sizeof(field), "\"guest\":\"%s\"", big[i]);
                assert_contains(out, field);
        }
        assert_contains(out, "\"blocked_omitted\":0");
        free(out);

        drover__v1__blocked_guests__free_unpacked(b, NULL);
        stop(srv);
        ch_free(c);
}

/* MANY blocked guests with long names: all of them would not fit in the
 * trailer under gRPC's metadata limit, so the list is cut from its end and
 * the cut counted; the call still ends with its status and the details. */
static void test_blocked_list_too_long_for_the_trailer_is_cut_and_counted(void **state) {
        const uint64_t mem[] = { 64 * GIB, GIB };
        Coordinator *c = ch_new("coord-details-many", 2, mem);
        RpcStatus st = { 0 };
        for (int i = 0; i < MANY; i++) {
                char name[64];
                snprintf(name, sizeof(name), "a-guest-with-a-long-name-to-fill-the-trailer-quickly-%02d", i);
                ch_guest("h1", name, 2 * GIB);
        }
        RpcServer *srv = serve(c, "coord-details-many-rpc");

        assert_int_equal(evacuate("h1", &st), -EBUSY);
        assert_int_equal(st.code, RPC_FAILED_PRECONDITION);
        Drover__V1__BlockedGuests *b = blocked_of(&st);
        assert_true(b->n_blocked > 0);
        assert_true(b->omitted > 0);
        assert_int_equal(b->n_blocked + b->omitted, MANY);
        assert_int_equal(b->guests, MANY);
        drover__v1__blocked_guests__free_unpacked(b, NULL);

        char *out;
        assert_int_equal(droverctl(&out, "evacuate", "h1", NULL), 4);
        char count[64];
        snprintf(count, sizeof(count), "%d blocked guests:", MANY);
        assert_contains(out, count);
        assert_contains(out, "more (too many for the error details;");
        free(out);
        stop(srv);
        ch_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_refused_evacuation_details_list_every_blocked_guest),
                cmocka_unit_test(test_blocked_list_too_long_for_the_trailer_is_cut_and_counted),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
