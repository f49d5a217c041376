/* droverctl's calls to the coordinator, and what a failed one tells the
 * operator.
 *
 * One client, made once from the options (address, TLS material).  Every
 * unary call has the --timeout deadline, and the client waits at most that
 * long for a connection, so a coordinator that is not there fails fast and
 * is told apart from one that answered (RpcStatus.not_sent).  A failure
 * becomes one line on stderr (or {"error", "hint"} with --json) naming the
 * address tried, with a hint for the usual causes (and, for a refused job
 * request, every blocked guest from the status details), and an exit code: NOT
 * FOUND 5, no answer (no connection, or the deadline passed) 6, anything
 * else the coordinator said 4 (droverctl.h, docs/droverctl.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "droverctl.h"
#include "err.h"

DctlOptions dctl_opt = { .target = "unix:/run/drover/coordinator.sock", .timeout_ms = 30000 };

static RpcClient *cl;

void dctl_print_json(JsonValue *j) {
        char *text = NULL;
        if (json_to_string(j, false, &text) < 0)
                fprintf(stderr, "droverctl: out of memory\n");
        else
                printf("%s\n", text);
        free(text);
        json_unref(j);
}

static bool target_is_unix(void) {
        return strncmp(dctl_opt.target, "unix:", 5) == 0 || strncmp(dctl_opt.target, "unix-abstract:", 14) == 0;
}

static bool have_tls(void) {
        return dctl_opt.tls.cert_file && dctl_opt.tls.ca_file;
}

/* The hint for a call that got no answer. */
static void hint_unreachable(char *buf, size_t size, bool timed_out) {
        int k = snprintf(buf, size,
                         timed_out ? "the coordinator at %s did not answer within %.1f s (--timeout SECONDS); "
                                     "it may be overloaded, or the address may be wrong"
                                   : "is drover-coordinator running and listening at %s? "
                                     "(-c ADDR or $DROVER_COORDINATOR choose the address)",
                         dctl_opt.target, (double) dctl_opt.timeout_ms / 1000.0);
        if (k > 0 && (size_t) k < size && !target_is_unix() && !have_tls())
                snprintf(buf + k, size - (size_t) k,
                         "; a coordinator on TCP needs TLS: --tls-cert, --tls-key and --tls-ca "
                         "($DROVER_TLS_CERT, _KEY, _CA)");
}

int dctl_fail(const char *what, int r, const RpcStatus *st) {
        RpcCode code = st && st->code != RPC_OK ? st->code
                       : r == -ENOENT           ? RPC_NOT_FOUND
                       : r == -ETIMEDOUT        ? RPC_DEADLINE_EXCEEDED
                       : r == -EAGAIN || r == -ECONNREFUSED || r == -EHOSTUNREACH ? RPC_UNAVAILABLE
                                                                                  : RPC_UNKNOWN;
        char msg[ERR_MSG_MAX + 128], hint[512] = "";
        int exit_code = DCTL_EXIT_ERROR;

        snprintf(msg, sizeof(msg), "%s: %s", what, err_str(r)); /* names the status: "...: NOT_FOUND: ..." */
        if (code == RPC_NOT_FOUND)
                exit_code = DCTL_EXIT_NOT_FOUND;
        else if (code == RPC_UNAVAILABLE || code == RPC_DEADLINE_EXCEEDED || (st && st->not_sent)) {
                exit_code = DCTL_EXIT_UNREACHABLE;
                hint_unreachable(hint, sizeof(hint), code == RPC_DEADLINE_EXCEEDED && !(st && st->not_sent));
        } else if (code == RPC_UNAUTHENTICATED || code == RPC_PERMISSION_DENIED)
                snprintf(hint, sizeof(hint),
                         "the coordinator at %s refused this client: check --tls-cert/--tls-key (signed by the "
                         "cluster CA) and the role of the certificate",
                         dctl_opt.target);
        if (dctl_opt.json) {
                JsonValue *x = json_new_object();
                json_add_string(x, "error", msg);
                if (hint[0])
                        json_add_string(x, "hint", hint);
                json_add_i64(x, "exit", exit_code);
                dctl_blocked_details(st, x);
                dctl_print_json(x);
        } else {
                fprintf(stderr, "droverctl: %s%s%s\n", msg, hint[0] ? "\n  hint: " : "", hint);
                dctl_blocked_details(st, NULL);
        }
        return exit_code;
}

int dctl_connect(void) {
        RpcClientOptions co = {
                .tls = have_tls() ? &dctl_opt.tls : NULL,
                .default_timeout_ms = dctl_opt.timeout_ms,
                .connect_timeout_ms = dctl_opt.timeout_ms,
        };
        int r = rpc_client_new(dctl_opt.target, &co, &cl);
        if (r == -EPERM) {
                fprintf(stderr,
                        "droverctl: %s: %s\n  hint: give the client certificate with --tls-cert, --tls-key and "
                        "--tls-ca ($DROVER_TLS_CERT, _KEY, _CA)\n",
                        dctl_opt.target, err_str(r));
                return DCTL_EXIT_USAGE;
        }
        if (r < 0) {
                fprintf(stderr, "droverctl: coordinator address '%s': %s\n", dctl_opt.target, err_str(r));
                return DCTL_EXIT_USAGE;
        }
        return 0;
}

void dctl_disconnect(void) {
        rpc_client_free(cl);
        cl = NULL;
}

int dctl_call(const char *what, const char *method, const ProtobufCMessage *req, ProtobufCMessage **ret_resp) {
        RpcStatus st = { 0 };
        int r = rpc_client_unary(cl, &drover__v1__coordinator__descriptor, method, req, dctl_opt.timeout_ms, ret_resp,
                                 &st);
        return r < 0 ? dctl_fail(what, r, &st) : 0;
}

int dctl_watch_open(const char *id, RpcStream **ret_stream) {
        Drover__V1__WatchJobRequest req = DROVER__V1__WATCH_JOB_REQUEST__INIT;
        RpcStream *st;
        req.id = (char *) id;
        /* the stream lasts as long as the job: a week is "no deadline" */
        int r = rpc_stream_open(cl, &drover__v1__coordinator__descriptor, "WatchJob", &req.base, 7 * 24 * 3600 * 1000LL,
                                &st);
        if (r < 0)
                return dctl_fail("watch", r, NULL);
        *ret_stream = st;
        return 0;
}
