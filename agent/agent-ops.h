/* The operation table: long agent calls answer at once with an operation id.
 *
 * Start, Shutdown, Migrate and the guest-agent calls used to hold a gRPC
 * worker for the whole of their work (up to a minute for a shutdown, no
 * bound at all for Migrate with wait).  Now each registers an operation
 * here, its work runs on a thread of the agent's own (agent_ops_run), and
 * the call answers with the id; clients follow it with GetOperation /
 * WatchOperation.  A migration already has its thread (agent-migrate-out.c):
 * its operation is registered with agent_ops_begin() and ends when the
 * migration table shows its record done (read whenever the table is read).
 *
 * An operation: id (the request's op_id or a generated one), kind, guest,
 * state (running, succeeded, failed), -errno and text of a failure,
 * created/ended times, a generation bumped on every change, and the result
 * of its kind (AgentOpResult).  Ids are unique in the table: a request with
 * an id the table knows answers that operation and never starts another.
 *
 * Bounds (docs/agent.md, "Operations"): every running operation is kept;
 * a finished one while it is among the AGENT_OPS_KEEP newest finished and
 * ended less than AGENT_OPS_KEEP_MS ago; at most AGENT_OPS_RUNNING_MAX run
 * at once (more: -EAGAIN, UNAVAILABLE at the RPC boundary).  The table lives
 * in memory: a restarted agent knows none.
 *
 * One lock (class "operations") protects the table.  It is a leaf lock
 * (docs/threading.md): taken with no VM lock held, and nothing else is
 * taken inside it (the migration table is read with it released);
 * subscriber wake-ups run under it and must not block.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent-migtable.h"
#include "agent.h"
#include "err.h"
#include "migparams.h"

/* Retention of finished operations and the bound on running ones. */
#define AGENT_OPS_KEEP 128
#define AGENT_OPS_KEEP_MS (3600 * 1000ULL)
#define AGENT_OPS_RUNNING_MAX 128

/* The -errno of a migration that ended without success (its text says
 * why): ABORTED at the RPC boundary, like a transaction that rolled back. */
#define AGENT_OP_MIGRATION_FAILED (-ESTALE)

typedef struct AgentOps AgentOps;

typedef enum AgentOpKind {
        AGENT_OP_START,
        AGENT_OP_SHUTDOWN,
        AGENT_OP_MIGRATE,
        AGENT_OP_GUEST_PING,
        AGENT_OP_GUEST_INFO,
        AGENT_OP_GUEST_SET_TIME,
        AGENT_OP_GUEST_GET_TIME,
        AGENT_OP_KIND_MAX,
} AgentOpKind;

typedef enum AgentOpState {
        AGENT_OP_RUNNING,
        AGENT_OP_SUCCEEDED,
        AGENT_OP_FAILED,
        AGENT_OP_STATE_MAX,
} AgentOpState;

/* "start", "shutdown", "migrate", "guest-ping", ...; "?" out of range. */
const char *agent_op_kind_to_string(AgentOpKind k);
/* "running", "succeeded", "failed"; "?" out of range. */
const char *agent_op_state_to_string(AgentOpState s);

/* What an operation produced; which members are set depends on its kind. */
typedef struct AgentOpResult {
        bool has_status;
        VmSnapshot status;          /* start, shutdown: the guest when the work ended */
        uint64_t ping_us;           /* guest-ping: agent <-> guest agent round trip */
        GaGuestInfo info;           /* guest-info: its arrays are owned by the result */
        int64_t time_before_ns;     /* guest-set-time: guest clock before, 0 = unknown */
        int64_t time_after_ns;      /* guest-set-time: and after */
        int64_t time_ns;            /* guest-get-time */
} AgentOpResult;

/* Free what @r owns and zero it.  NULL is fine. */
void agent_op_result_clear(AgentOpResult *r);

/* A copy of one operation, for readers. */
typedef struct AgentOpInfo {
        char id[OP_ID_MAX];
        AgentOpKind kind;
        char guest[VM_NAME_MAX];
        AgentOpState state;
        int err;                    /* FAILED: the -errno */
        char error[ERR_MSG_MAX];    /* FAILED: what went wrong */
        uint64_t created_unix_ms;
        uint64_t ended_unix_ms;     /* 0 while running */
        uint64_t generation;        /* increases on every change (table-wide counter) */
        AgentOpResult result;       /* a deep copy: agent_op_info_clear() */
} AgentOpInfo;

/* Free the copy's result.  NULL is fine. */
void agent_op_info_clear(AgentOpInfo *o);

/* The work of an operation: runs on the operation's thread with no lock
 * held and the operation's id as @op; fills @res, returns 0 or -errno with
 * an err_set() detail.  @args is what agent_ops_run() was given. */
typedef int (*AgentOpFn)(Agent *a, Vm *vm, const char *op, void *args, AgentOpResult *res);

int agent_ops_new(AgentOps **ret);
/* Free the table and every record; no operation thread may run (the agent
 * counts them in Agent.background).  NULL is fine. */
void agent_ops_free(AgentOps *t);

/* Register operation @id of @kind on the guest named @guest as running,
 * for work the caller starts itself.  Returns 1 when registered, 0 when
 * the table already knows @id (then *ret is that operation and nothing is
 * registered), -EEXIST when it knows @id as another kind or guest, -EAGAIN
 * when AGENT_OPS_RUNNING_MAX run, -ENOMEM.  *ret (when not NULL) is the
 * operation on 0 and 1.  Takes the table lock (no VM lock held). */
int agent_ops_begin(Agent *a, AgentOpKind kind, const char *guest, const char *id, AgentOpInfo *ret);
/* Forget operation @id, begun by the caller, whose work never started (the
 * call failed before acting and says so itself). */
void agent_ops_abandon(Agent *a, const char *id);
/* The migration of migrate operation @id has its record in the migration
 * table now: the operation ends when that record is done (or is found
 * forgotten).  Before this, a missing record means "not started yet". */
void agent_ops_follow_migration(Agent *a, const char *id);
/* End the running operation @id: succeeded when @r >= 0, else failed with
 * @r and @error (NULL: err_str(@r)).  Takes over what @res owns (NULL: no
 * result).  Nothing when @id is not running. */
void agent_ops_end(Agent *a, const char *id, int r, const char *error, AgentOpResult *res);

/* agent_ops_begin(), then @fn(@a, @vm, @id, @args) on a new detached
 * thread holding a reference on @vm (counted in a->background).  @args
 * (malloc'ed, or NULL) is freed after @fn, or here when nothing starts.
 * Returns 1 (started) or 0 (already known: *ret is that operation), or
 * agent_ops_begin()'s errors, or -EAGAIN when no thread can be made. */
int agent_ops_run(Agent *a, AgentOpKind kind, Vm *vm, const char *id, AgentOpFn fn, void *args,
                  AgentOpInfo *ret);

/* Copy operation @id into *ret (agent_op_info_clear() it): 0, or -ENOENT
 * when the table does not know it (never started, forgotten, or from
 * before the agent restarted).  Brings migrate operations up to date with
 * the migration table first.  Takes the table lock. */
int agent_ops_get(Agent *a, const char *id, AgentOpInfo *ret);

/* Call @wake(@opaque) on every change of any operation (watch streams); it
 * runs under the table lock and must not block.  Returns an id, -ENOSPC. */
int agent_ops_subscribe(Agent *a, void (*wake)(void *), void *opaque);
void agent_ops_unsubscribe(Agent *a, int id);

/* ---- the operations of the agent's long calls (each returns as agent_ops_run) ---- */

/* Start @vm (agent_vm_start) as operation @id. */
int agent_ops_start_guest(Agent *a, Vm *vm, const char *id, bool paused, int64_t timeout_ms, AgentOpInfo *ret);
/* Shut @vm down (agent_vm_shutdown; @timeout_ms <= 0: 60 s) as operation @id. */
int agent_ops_shutdown_guest(Agent *a, Vm *vm, const char *id, int64_t timeout_ms, bool force,
                             AgentOpInfo *ret);

/* What a guest-agent operation is asked (guest-set-time only uses it). */
typedef struct AgentGaArgs {
        int64_t time_ns;            /* 0 = the host's time now */
        bool from_rtc;
} AgentGaArgs;
/* Run guest-agent call @kind (AGENT_OP_GUEST_*) on @vm as operation @id;
 * @args may be NULL for the calls that take none. */
int agent_ops_guest_agent(Agent *a, Vm *vm, const char *id, AgentOpKind kind, const AgentGaArgs *args,
                          AgentOpInfo *ret);

/* Migrate @vm as operation @id (agent_migrate without waiting: the begin
 * checks run here and their errors come back at once, registering
 * nothing).  On 0 and 1, *ret is the operation and *ret_mig the migration's
 * record when the reply leaves. */
int agent_ops_migrate(Agent *a, Vm *vm, const char *id, const char *dest_addr,
                      const MigParams *p, AgentOpInfo *ret, MigResult *ret_mig);
