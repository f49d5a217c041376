/* droverctl's calls to the coordinator, and what a failed one tells the
 * operator.
 *
 * One client at a time, made from the options (address, TLS material).
 * Every unary call has the --timeout deadline, and the client waits at
 * most that long for a connection, so a coordinator that is not there
 * fails fast and is told apart from one that answered (RpcStatus.not_sent).
 *
 * Several coordinators (--coordinator A,B,C; with an etcd store one leads,
 * the others stand by): the addresses are tried in order, the next one
 * whenever no connection can be made (nothing was sent, so even a change
 * is safe to send again), with at most DCTL_CONNECT_MS to connect while
 * another address remains.  A standby refuses a change with a NotLeader
 * detail naming the leader: the call goes there (at most DCTL_MAX_FOLLOW
 * times).  -v says on stderr which address answered.  A failure
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

#include "deadline.h"
#include "droverctl.h"
#include "err.h"
#include "rpc-details.h"

DctlOptions dctl_opt = { .target = "unix:/run/drover/coordinator.sock", .timeout_ms = 30000 };

#define DCTL_MAX_TARGETS 8
#define DCTL_MAX_FOLLOW 3      /* NotLeader redirections followed by one call */
#define DCTL_CONNECT_MS 5000   /* connection wait per address while another remains */

static RpcClient *cl;
static char targets[DCTL_MAX_TARGETS][256]; /* the --coordinator list */
static size_t n_targets, cur;               /* cur: the index in use, or n_targets for a followed leader */
static char addr[256];                      /* the address the client talks to */

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
        return strncmp(addr, "unix:", 5) == 0 || strncmp(addr, "unix-abstract:", 14) == 0;
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
                         n_targets > 1 ? dctl_opt.target : addr, (double) dctl_opt.timeout_ms / 1000.0);
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
                         addr);
        if (dctl_opt.json) {
                JsonValue *x = json_new_object();
                json_add_string(x, "error", msg);
                if (hint[0])
                        json_add_string(x, "hint", hint);
                json_add_i64(x, "exit", exit_code);
                if (dctl_opt.error_details)
                        dctl_opt.error_details(st, x);
                dctl_print_json(x);
        } else {
                fprintf(stderr, "droverctl: %s%s%s\n", msg, hint[0] ? "\n  hint: " : "", hint);
                if (dctl_opt.error_details)
                        dctl_opt.error_details(st, NULL);
        }
        return exit_code;
}

/* A client for address @a (the one used from now on).  0, or an exit code
 * with the message printed. */
static int connect_to(const char *a) {
        RpcClientOptions co = {
                .tls = have_tls() ? &dctl_opt.tls : NULL,
                .default_timeout_ms = dctl_opt.timeout_ms,
                .connect_timeout_ms = cur + 1 < n_targets ? MIN(dctl_opt.timeout_ms, DCTL_CONNECT_MS)
                                                          : dctl_opt.timeout_ms,
        };
        rpc_client_free(cl);
        cl = NULL;
        snprintf(addr, sizeof(addr), "%s", a);
        int r = rpc_client_new(addr, &co, &cl);
        if (r == -EPERM) {
                fprintf(stderr,
                        "droverctl: %s: %s\n  hint: give the client certificate with --tls-cert, --tls-key and "
                        "--tls-ca ($DROVER_TLS_CERT, _KEY, _CA)\n",
                        addr, err_str(r));
                return DCTL_EXIT_USAGE;
        }
        if (r < 0) {
                fprintf(stderr, "droverctl: coordinator address '%s': %s\n", addr, err_str(r));
                return DCTL_EXIT_USAGE;
        }
        return 0;
}

int dctl_connect(void) {
        n_targets = cur = 0;
        for (const char *p = dctl_opt.target; *p;) {
                size_t len = strcspn(p, ",");
                if (len == 0 || len >= sizeof(targets[0]) || n_targets == DCTL_MAX_TARGETS) {
                        fprintf(stderr, "droverctl: --coordinator '%s': a list of 1 to %d addresses separated by ','\n",
                                dctl_opt.target, DCTL_MAX_TARGETS);
                        return DCTL_EXIT_USAGE;
                }
                snprintf(targets[n_targets++], sizeof(targets[0]), "%.*s", (int) len, p);
                p += len + (p[len] == ',');
        }
        if (!n_targets) {
                fprintf(stderr, "droverctl: --coordinator is empty\n");
                return DCTL_EXIT_USAGE;
        }
        return connect_to(targets[0]);
}

void dctl_disconnect(void) {
        rpc_client_free(cl);
        cl = NULL;
}

/* Where to go after a failed call (@st): the next address when nothing
 * could be sent, the leader a standby named; false when nowhere. */
static bool move_on(const RpcStatus *st, unsigned *follows) {
        if (st->not_sent && cur + 1 < n_targets) {
                if (dctl_opt.verbose)
                        fprintf(stderr, "droverctl: no connection to %s: trying %s\n", addr, targets[cur + 1]);
                cur++;
                return connect_to(targets[cur]) == 0;
        }
        Drover__V1__NotLeader *d = NULL;
        if (st->code != RPC_FAILED_PRECONDITION ||
            rpc_status_detail(st, &drover__v1__not_leader__descriptor, (ProtobufCMessage **) &d) < 0)
                return false;
        bool go = d->leader_address[0] && strcmp(d->leader_address, addr) != 0 && (*follows)++ < DCTL_MAX_FOLLOW;
        if (go && dctl_opt.verbose)
                fprintf(stderr, "droverctl: %s is a standby: following the leader at %s\n", addr, d->leader_address);
        if (go) {
                char leader[sizeof(addr)];
                snprintf(leader, sizeof(leader), "%s", d->leader_address);
                cur = n_targets;
                go = connect_to(leader) == 0;
        }
        drover__v1__not_leader__free_unpacked(d, NULL);
        return go;
}

int dctl_call(const char *what, const char *method, const ProtobufCMessage *req, ProtobufCMessage **ret_resp) {
        unsigned follows = 0;
        for (;;) {
                RpcStatus st = { 0 };
                int r = rpc_client_unary(cl, &drover__v1__coordinator__descriptor, method, req, dctl_opt.timeout_ms,
                                         ret_resp, &st);
                if (r >= 0) {
                        if (dctl_opt.verbose)
                                fprintf(stderr, "droverctl: %s answered by %s\n", method, addr);
                        return 0;
                }
                if (!cl || !move_on(&st, &follows))
                        return cl ? dctl_fail(what, r, &st) : DCTL_EXIT_USAGE;
        }
}

/* WatchJob on job @id at the current address.  The open sends the
 * request: no coordinator there fails it with -EAGAIN (UNAVAILABLE) or, a
 * connection that did not come up, -ECONNREFUSED / -EHOSTUNREACH; one
 * that dies later shows at a read. */
static int watch_here(const char *id, RpcStream **ret_stream) {
        Drover__V1__WatchJobRequest req = DROVER__V1__WATCH_JOB_REQUEST__INIT;
        req.id = (char *) id;
        /* the stream lasts as long as the job: a week is "no deadline" */
        int r = rpc_stream_open(cl, &drover__v1__coordinator__descriptor, "WatchJob", &req.base, 7 * 24 * 3600 * 1000LL,
                                ret_stream);
        if (r >= 0 && dctl_opt.verbose)
                fprintf(stderr, "droverctl: WatchJob sent to %s\n", addr);
        return r == -ECONNREFUSED || r == -EHOSTUNREACH ? -EAGAIN : r;
}

int dctl_watch_open(const char *id, RpcStream **ret_stream) {
        int r = watch_here(id, ret_stream);
        if (r == -EAGAIN)
                r = dctl_watch_next(id, false, ret_stream); /* as a unary call: the next address */
        return r < 0 ? dctl_fail("watch", r, NULL) : 0;
}

int dctl_watch_next(const char *id, bool wrap, RpcStream **ret_stream) {
        int r = -EAGAIN; /* err_msg() still says why the last one failed */
        for (size_t tried = 0; tried < n_targets; tried++) {
                size_t next = cur < n_targets ? cur + 1 : 0; /* after a followed leader: the list from its start */
                if (next >= n_targets && !wrap)
                        break;
                next %= n_targets;
                if (dctl_opt.verbose)
                        fprintf(stderr, "droverctl: no answer from %s: trying %s\n", addr, targets[next]);
                cur = next;
                if (connect_to(targets[cur]) != 0)
                        return err_set(-EINVAL, "coordinator address '%s' not usable", targets[cur]);
                if ((r = watch_here(id, ret_stream)) != -EAGAIN)
                        return r;
        }
        return r;
}

const char *dctl_address(void) {
        return addr;
}
