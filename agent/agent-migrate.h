/* Live migration between agents (peer to peer).
 *
 * The source agent drives: begin (here) -> prepare (destination RPC) ->
 * perform (here: QEMU streams, the convergence policy escalates) ->
 * perform_done -> finish (destination RPC: vCPUs start there) -> confirm
 * (here: the source QEMU is stopped and its record removed).  Each phase is
 * persisted on its side before acting on it; each phase RPC carries the
 * operation id and is idempotent.  A failure at any point is resolved by the
 * recovery table (core/recovery.h), the same one an agent applies to its
 * guests at restart.  docs/migration.md describes the protocol, the
 * parameters and their defaults; docs/recovery.md the failure handling.
 *
 * This header is the public API (agent-rpc.c, main.c).  The code:
 * agent-migrate-out.c (source), agent-migrate-in.c (destination),
 * agent-migrate-settle.c (recovery actions and the recovery thread), with
 * their shared private declarations in agent-migrate-priv.h;
 * agent-migtable.c (the records queries and watchers read);
 * core/converge.c (the convergence policy).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent-migtable.h"
#include "agent-stream.h"
#include "agent.h"
#include "migparams.h"
#include "migtypes.h"
#include "recovery.h"

/* Source: start migrating @vm to the agent at @dest_addr.  Begin runs here
 * (errors such as "not running" or "another migration" come back at once);
 * the rest runs on a migration thread.  With @wait, returns when it ended.
 * *ret holds the result so far (done=false without @wait). */
int agent_migrate(Agent *a, Vm *vm, const char *op, const char *dest_addr, const MigParams *p, bool wait,
                  MigResult *ret);
/* The virtual sizes of @def's disks marked "storage": "local", summed
 * (unreadable images count 0): GuestSummary.local_disk_bytes.  Reads the
 * image files; no lock needed. */
uint64_t mig_storage_local_bytes(const GuestDef *def);
/* Abort the migration of @vm (its source resumes).  -ENOENT when none runs;
 * -EBUSY once post-copy started (it can only complete). */
int agent_migrate_abort(Agent *a, Vm *vm, const char *op);
/* Change bandwidth and/or downtime limit of a running outgoing migration. */
int agent_migrate_tune(Agent *a, Vm *vm, const char *op, uint64_t bandwidth, uint32_t downtime_ms);
/* Switch a running outgoing migration to post-copy now. */
int agent_migrate_start_postcopy(Agent *a, Vm *vm, const char *op);
/* Post-copy recovery now (MigrateRecoverNow, an operator): for a source
 * whose post-copy is paused, also after its retries gave up: a fresh
 * retry budget and one attempt at once (docs/migration.md, "Post-copy
 * recovery").  0 when the stream was resumed; -EBUSY when @vm has no
 * paused post-copy out of this host; the attempt's -errno otherwise.  No
 * lock held. */
int agent_migrate_recover_now(Agent *a, Vm *vm, const char *op);
/* The read side (agent_migration_get, agent_migrations_changed, ...) is in
 * agent-migtable.h. */

/* Destination side, called through the internal RPCs. */
/* Prepare: @source_addr is the source agent's address (for recovery),
 * @source_dn the DN of the certificate that made the call (the only
 * identity the stream admits; NULL on a plaintext call, refused unless in
 * dev_mode).  *ret says where the source connects.  @storage lists the
 * local disks to create and export (n = 0: none); its answer part is
 * filled (docs/migration.md, "Local disks"). */
int agent_migrate_prepare(Agent *a, const char *op, const char *definition_json, const MigParams *p,
                          const char *source_addr, const char *source_dn, MigStorage *storage, MigStream *ret);
/* Finish: start the vCPUs.  In post-copy with @return_at_cont the call
 * answers once they run, and the watchdog ends the job at completion;
 * without, it waits for the last page (an older source). */
int agent_migrate_finish(Agent *a, const char *op, const char *uuid, bool postcopy, bool return_at_cont,
                         uint64_t source_stop_unix_ms, uint64_t *ret_resume_unix_ms, bool *ret_synced);
int agent_migrate_cancel(Agent *a, const char *op, const char *uuid);
/* Post-copy recovery (MigrateRecover, called by the source agent that
 * prepared @op): pause this side if it still streams, listen again with
 * migrate-recover on this host's migration address and a random free port
 * of its range, sealed as the original stream, and persist
 * postcopy_recover.  While a recover listener waits, the same address.
 * *ret as prepare's.  -EBUSY when @uuid has no paused post-copy of @op
 * here.  No lock held. */
int agent_migrate_recover(Agent *a, const char *op, const char *uuid, MigStream *ret);
/* Whether @caller (the DN of the calling certificate; NULL or "" for a
 * plaintext call) may act on migration @op of guest @uuid: the one that
 * prepared it, when Prepare recorded one (not in dev_mode).  A guest or op
 * this host does not know is not judged here (the call itself answers).
 * 0, or -EPERM naming the migration.  No lock held. */
int agent_migrate_check_caller(Agent *a, const char *op, const char *uuid, const char *caller);
/* What this agent holds for (@op, @uuid): the peer answer of recovery.h. */
PeerAnswer agent_migration_owner(Agent *a, const char *op, const char *uuid, char *detail, size_t size,
                                 JobPhase *ret_phase);

/* Recovery: a thread that settles every guest holding a migration job
 * that no migration thread of this process runs (restored from a status
 * file at restart, or left ambiguous by a failed migration), asking peers
 * where the table says so, every 2 s until each one resolves; with nothing
 * left it sleeps until the migration table says a migration ended (60 s
 * safety net).  Start it after the RPC server (peers may ask us at the
 * same time). */
void agent_migration_recover_all(Agent *a);
/* Stop the recovery thread and make watchdogs end (the flag, then a
 * wake-up of the table and of every guest's vm->cond); before agent_free. */
void agent_migration_stop(Agent *a);
