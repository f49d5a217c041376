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
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent.h"
#include "migparams.h"
#include "migtypes.h"
#include "recovery.h"

#define MIG_MAX_STEPS 16

typedef struct MigResult {
        char op[OP_ID_MAX];
        char guest[64];
        bool outgoing;
        bool done;
        bool success;
        char error[512];
        JobPhase phase;
        uint64_t total_ms;
        uint64_t downtime_ms;
        uint64_t measured_downtime_ms;
        uint64_t transferred;
        bool postcopy;
        bool time_synced;
        size_t n_steps;
        char steps[MIG_MAX_STEPS][160];
        MigrationStats stats;    /* last reading */
        uint64_t elapsed_ms;
        uint64_t generation;     /* bumped on every change */
        char last_event[160];
} MigResult;

typedef struct MigrationTable MigrationTable;

int migration_table_new(MigrationTable **ret);
void migration_table_free(MigrationTable *t);

/* Source: start migrating @vm to the agent at @dest_addr.  Begin runs here
 * (errors such as "not running" or "another migration" come back at once);
 * the rest runs on a migration thread.  With @wait, returns when it ended.
 * *ret holds the result so far (done=false without @wait). */
int agent_migrate(Agent *a, Vm *vm, const char *op, const char *dest_addr, const char *stream_host,
                  const MigParams *p, bool wait, MigResult *ret);
/* Abort the migration of @vm (its source resumes).  -ENOENT when none runs;
 * -EBUSY once post-copy started (it can only complete). */
int agent_migrate_abort(Agent *a, Vm *vm, const char *op);
/* Change bandwidth and/or downtime limit of a running outgoing migration. */
int agent_migrate_tune(Agent *a, Vm *vm, const char *op, uint64_t bandwidth, uint32_t downtime_ms);
/* Switch a running outgoing migration to post-copy now. */
int agent_migrate_start_postcopy(Agent *a, Vm *vm, const char *op);
/* The running or last migration of the guest named @guest (name). */
int agent_migration_get(Agent *a, const char *guest, MigResult *ret);
/* Copy every migration's state whose generation is newer than *gen (for
 * watchers); returns how many, up to @max, and updates *gen. */
size_t agent_migrations_changed(Agent *a, uint64_t *gen, MigResult *out, size_t max);
/* Register a wake-up called on every change (watch streams). */
int agent_migrations_subscribe(Agent *a, void (*wake)(void *), void *opaque);
void agent_migrations_unsubscribe(Agent *a, int id);

/* Destination side, called through the internal RPCs. */
int agent_migrate_prepare(Agent *a, const char *op, const char *definition_json, const MigParams *p,
                          const char *stream_host, const char *source_addr, char *ret_uri, size_t uri_size);
int agent_migrate_finish(Agent *a, const char *op, const char *uuid, bool postcopy,
                         uint64_t source_stop_unix_ms, uint64_t *ret_resume_unix_ms, bool *ret_synced);
int agent_migrate_cancel(Agent *a, const char *op, const char *uuid);
/* What this agent holds for (@op, @uuid): the peer answer of recovery.h. */
PeerAnswer agent_migration_owner(Agent *a, const char *op, const char *uuid, char *detail, size_t size,
                                 JobPhase *ret_phase);

/* Recovery: a thread that every 2 s settles every guest holding a
 * migration job that no migration thread of this process runs (restored
 * from a status file at restart, or left ambiguous by a failed migration),
 * asking peers where the table says so, until each one resolves.  Start it
 * after the RPC server (peers may ask us at the same time). */
void agent_migration_recover_all(Agent *a);
/* Stop the recovery thread (and make watchdogs end); before agent_free. */
void agent_migration_stop(Agent *a);
