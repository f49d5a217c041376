/* The migration table: what this agent knows about the migrations it drives
 * (source) or receives (destination), for queries and watchers.
 *
 * One record (a MigResult) per migration, newest first: its phase, the last
 * statistics reading, the convergence policy's steps, the outcome.  The
 * migration code updates a record through the writers below; every change
 * bumps the table's generation counter, stamps the record with it and wakes
 * the subscribers (WatchMigration streams), which then copy the records
 * newer than the generation they saw.  Retention (docs/agent.md): a
 * running record stays; a done one is kept while it is among the 32 newest
 * done records and is less than an hour old, so the table holds at most
 * ~125 KB of done records however long the agent runs.
 *
 * The table also holds the "watched" set: the incoming operations that a
 * MigratePrepare handler or its watchdog drives right now, which the
 * recovery thread leaves alone.
 *
 * One lock (table->lock, class "migrations") protects all of it.  It is a
 * leaf lock (docs/threading.md): taken with no VM lock held, nothing is taken
 * inside it; subscriber wake-ups run under it and must not block.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent.h"
#include "cleanup.h"
#include "deadline.h"
#include "migparams.h"
#include "migtypes.h"

#define MIG_MAX_STEPS 16
/* Retention of done records: the newest MIG_TABLE_KEEP, none older than
 * MIG_TABLE_KEEP_MS (docs/agent.md). */
#define MIG_TABLE_KEEP 32
#define MIG_TABLE_KEEP_MS (3600 * 1000ULL)
/* The safety net of the table's waits: every change wakes them. */
#define MIG_WAIT_SAFETY_MS 30000

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
        uint64_t transferred;    /* bytes on the wire: QEMU's ram.transferred (multifd's included) */
        uint64_t multifd_bytes;  /* of those, sent on multifd channels (compressed, with compression) */
        uint64_t memory_bytes;   /* the guest's memory (its definition); the source's record only */
        uint32_t multifd_channels; /* 1 = one stream; 0 = not known (a destination record) */
        MigCompression compression;
        bool postcopy;
        bool time_synced;
        uint64_t finish_call_ms; /* the source's MigrateFinish round trip; 0: none made */
        uint64_t disk_bytes;     /* local disks copied: the mirror jobs' length, summed; 0: none */
        size_t n_steps;
        char steps[MIG_MAX_STEPS][160];
        MigrationStats stats;    /* last reading */
        uint64_t elapsed_ms;
        uint64_t generation;     /* bumped on every change */
        char last_event[160];
} MigResult;

/* One record; owned by the table, reached only through the functions below. */
typedef struct Migration Migration;

int agent_migtable_new(MigrationTable **ret);
/* Frees every record; nobody may use the table any more.  NULL is fine. */
void agent_migtable_free(MigrationTable *t);

/* ---- writers (the migration code; no VM lock held) ---- */

/* A new record for @op migrating the guest named @guest; NULL when out of
 * memory.  The returned pointer is the writer's (the migration thread's):
 * it stays valid until agent_migtable_done(), after which the record may
 * be forgotten at any time (the retention bounds below); nobody else keeps
 * a pointer to it. */
Migration *agent_migtable_add(MigrationTable *t, const char *op, const char *guest, bool outgoing);
/* Set the record's last event. */
void agent_migtable_event(MigrationTable *t, Migration *m, const char *fmt, ...) _printf_(3, 4);
/* Record a convergence policy step (also the last event, and logged). */
void agent_migtable_step(MigrationTable *t, Migration *m, const char *fmt, ...) _printf_(3, 4);
/* Set the phase and, with @st, the last statistics reading. */
void agent_migtable_phase(MigrationTable *t, Migration *m, JobPhase phase, const MigrationStats *st);
/* How the source streams: the guest's memory in bytes, the multifd
 * channels (1 = one stream) and the compression, once settled (after
 * prepare answered). */
void agent_migtable_stream(MigrationTable *t, Migration *m, uint64_t memory_bytes, uint32_t multifd_channels,
                           MigCompression compression);
/* The migration ended: success when @r >= 0, else @error. */
void agent_migtable_done(MigrationTable *t, Migration *m, int r, const char *error);
/* The figures of a completed migration: QEMU's last reading @st (NULL:
 * keep the last one), Drover's measured downtime, time sync, post-copy. */
void agent_migtable_result(MigrationTable *t, Migration *m, const MigrationStats *st, uint64_t measured_downtime_ms,
                           bool synced, bool postcopy);
/* The source's MigrateFinish call took @ms (its round trip, from the
 * first attempt to the answer; at least 1 once a call was made), also
 * when it failed. */
void agent_migtable_finish_call(MigrationTable *t, Migration *m, uint64_t ms);
/* Record that the migration @op was tuned (@what: the new limits). */
void agent_migtable_tuned(MigrationTable *t, const char *op, const char *what);
/* Record @fmt as a step of the newest migration @op (also its last
 * event), for what happened to it outside its own thread; nothing when
 * no record has @op (a migration found at restart has none). */
void agent_migtable_note(MigrationTable *t, const char *op, const char *fmt, ...) _printf_(3, 4);
/* Copy the newest record of operation @op into *ret; with @wait, first
 * wait until it is done (no deadline: the migration thread always ends it).
 * 0, or -ENOENT when no record has @op (never started, or forgotten). */
int agent_migtable_result_of(MigrationTable *t, const char *op, bool wait, MigResult *ret);

/* ---- incoming operations driven by this process ---- */

/* Mark @op as driven (by a prepare handler, then its watchdog); -EAGAIN
 * when MIG_INCOMING_MAX are already. */
int agent_migtable_watch(MigrationTable *t, const char *op);
void agent_migtable_unwatch(MigrationTable *t, const char *op);
bool agent_migtable_watched(MigrationTable *t, const char *op);

/* ---- the recovery thread's wake-up ---- */

/* A counter of the events after which the recovery thread may have work:
 * a migration ended (agent_migtable_done), an incoming operation stopped
 * being watched (agent_migtable_unwatch), or agent_migtable_kick(). */
uint64_t agent_migtable_ends(MigrationTable *t);
/* Records not done yet (migrations in either direction that run now). */
size_t agent_migtable_running(MigrationTable *t);
/* Wait (no lock held) until the counter is no longer @seen, or @d.
 * Returns true when it moved. */
bool agent_migtable_wait_ends(MigrationTable *t, uint64_t seen, Deadline d);
/* Move the counter and wake every waiter (the agent is stopping). */
void agent_migtable_kick(MigrationTable *t);

/* ---- readers (RPCs) ---- */

/* The running or last migration of the guest named @guest (name). */
int agent_migration_get(Agent *a, const char *guest, MigResult *ret);
/* Copy the records whose generation is newer than *gen (for watchers),
 * oldest change first; returns how many, up to @max, and sets *gen to the
 * last one copied, so a full batch is continued by the next call.  A
 * record changed again meanwhile is copied once, in its newest state. */
size_t agent_migrations_changed(Agent *a, uint64_t *gen, MigResult *out, size_t max);
/* Register a wake-up called on every change (watch streams); it runs under
 * the table lock and must not block.  Returns an id, or -ENOSPC. */
int agent_migrations_subscribe(Agent *a, void (*wake)(void *), void *opaque);
void agent_migrations_unsubscribe(Agent *a, int id);
