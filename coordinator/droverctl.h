/* droverctl's private interface: what its files share.
 *
 * droverctl.c parses the command line (strictly: an option the command does
 * not take, or a bad number, is a usage error) and dispatches through its
 * command table; droverctl-rpc.c holds the one client, makes every call and
 * turns a failure into a message with a hint and an exit code;
 * droverctl-show.c prints what the coordinator answers (tables or JSON) and
 * submits jobs; droverctl-watch.c follows a job (the live display, the
 * piped lines, Ctrl-C).  One process, one thread: the options are a global
 * set once by main() before any command runs.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "coordinator.pb-c.h"
#include "json.h"
#include "migparams.h"
#include "rpc.h"
#include "rpcclient.h"

/* Exit codes (docs/droverctl.md has the table). */
enum {
        DCTL_EXIT_OK = 0,          /* done; a job succeeded */
        DCTL_EXIT_FAILED = 1,      /* the job failed, no guest moved */
        DCTL_EXIT_USAGE = 2,       /* bad command line; nothing was sent */
        DCTL_EXIT_PARTIAL = 3,     /* some guests moved, some failed, were blocked or cancelled */
        DCTL_EXIT_ERROR = 4,       /* the coordinator refused the request or another error */
        DCTL_EXIT_NOT_FOUND = 5,   /* no such host, guest or job */
        DCTL_EXIT_UNREACHABLE = 6, /* no answer: no connection, or --timeout passed */
        DCTL_EXIT_INTERRUPTED = 130, /* Ctrl-C while following a job (128 + SIGINT) */
};

/* The command line's options; set by main() before a command runs. */
typedef struct DctlOptions {
        const char *target;        /* the coordinators' addresses, comma-separated (tried in order) */
        bool verbose;              /* -v: say which coordinator answered */
        RpcTls tls;
        bool json;
        bool wait;
        bool dry_run;
        bool maintenance;
        bool stop_on_failure;
        bool cancel_on_interrupt;
        const char *to;
        MigParams params;          /* zero members: the coordinator's defaults */
        int64_t timeout_ms;        /* each unary call */
        /* What dctl_fail adds from a refused call's status details: set by
         * main to dctl_blocked_details (the transport below does not call
         * up into the printers); NULL: nothing. */
        void (*error_details)(const RpcStatus *st, JsonValue *json);
} DctlOptions;

extern DctlOptions dctl_opt; /* droverctl-rpc.c */

/* ---- droverctl-rpc.c ---------------------------------------------------- */

/* Create the client for dctl_opt.target.  Returns 0, or an exit code (with
 * the message printed) when the address or TLS material is unusable. */
int dctl_connect(void);
void dctl_disconnect(void);

/* Call unary @method of the Coordinator API with @req; on success returns 0
 * and *ret_resp (the caller frees it).  On failure prints what failed, why
 * and a hint (under @what) and returns the exit code (> 0). */
int dctl_call(const char *what, const char *method, const ProtobufCMessage *req, ProtobufCMessage **ret_resp);

/* Open WatchJob on job @id (no deadline but the job's end) at the current
 * address.  0, or the exit code with the failure printed. */
int dctl_watch_open(const char *id, RpcStream **ret_stream);

/* The watch's stream broke with UNAVAILABLE (no connection, or its
 * coordinator died): open WatchJob on @id at the next --coordinator
 * addresses in turn until one takes it, up to the last (or, with @wrap,
 * once round the list).  A watch is a read, so sending it again is always
 * safe.  0 with *ret_stream; -EAGAIN when none took it; another -errno on
 * a refusal (err.h detail, nothing printed). */
int dctl_watch_next(const char *id, bool wrap, RpcStream **ret_stream);

/* The address the client talks to now. */
const char *dctl_address(void);

#define DCTL_WATCH_FOLLOW_MS 30000 /* a watch that lost its coordinator looks for another this long */

/* Report failure @r (-errno, err.h detail; @st when known) of @what and
 * return its exit code: 5 for NOT_FOUND, 6 when the coordinator did not
 * answer, 4 otherwise.  Prints JSON {"error": ..} with --json. */
int dctl_fail(const char *what, int r, const RpcStatus *st);

/* Print @j as one line of JSON and drop it. */
void dctl_print_json(JsonValue *j);

/* The blocked guests of a refused job request (a BlockedGuests in @st's
 * status details), every one with its reason: added to @json as
 * "blocked" (entries as in a plan) and "blocked_omitted" when @json is not
 * NULL, else printed to stderr in the plan's format.  Nothing when @st
 * carries none.  In droverctl-show.c; dctl_fail reaches it through
 * dctl_opt.error_details. */
void dctl_blocked_details(const RpcStatus *st, JsonValue *json);

/* ---- droverctl-show.c --------------------------------------------------- */

int dctl_cmd_hosts(int argc, char **argv);
int dctl_cmd_vms(int argc, char **argv);
int dctl_cmd_migrate(int argc, char **argv);
int dctl_cmd_evacuate(int argc, char **argv);
int dctl_cmd_plan(int argc, char **argv);
int dctl_cmd_jobs(int argc, char **argv);
int dctl_cmd_job(int argc, char **argv);
int dctl_cmd_cancel(int argc, char **argv);
int dctl_cmd_host(int argc, char **argv);

/* ---- droverctl-watch.c -------------------------------------------------- */

/* The job as JSON (caller owns it); the exit code a finished job maps to. */
JsonValue *dctl_job_json(const Drover__V1__Job *j);
int dctl_job_exit(const Drover__V1__Job *j);
/* Names shown for a job's kind and phases. */
const char *dctl_job_kind(int k);

int dctl_cmd_watch(int argc, char **argv);

/* Before the client exists (its threads inherit the signal mask): route
 * SIGINT and SIGTERM to a thread that ends a watch (dctl_watch). */
void dctl_interrupt_setup(void);

/* Follow job @id until it ends (watch, --wait).  Ctrl-C stops following
 * (the job goes on) or, with --cancel-on-interrupt, cancels it first.
 * Returns the exit code. */
int dctl_watch(const char *id);

/* Print job @j once, whole, in its guests' order (job ID, piped watch). */
void dctl_render_plain(const Drover__V1__Job *j);
/* @b bytes as "12 MiB" or "1.5 GiB" in @buf. */
void dctl_human_bytes(double b, char *buf, size_t size);

/* Redraw job @j on the terminal over the @prev_lines printed last; returns
 * the number of lines printed now. */
int dctl_render_live(const Drover__V1__Job *j, int prev_lines);
