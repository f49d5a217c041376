/* A live migration between two local QEMU processes driven through the job
 * core only (async jobs with persisted phases, nested monitor jobs, event
 * waits).  Used by the core demo and the integration test.  It is the
 * single-host skeleton of the agent-to-agent migration of issue 4: no peer
 * RPCs, no recovery, fixed policy.
 */
#pragma once

#include "job.h"
#include "migtypes.h"
#include "vm.h"

typedef struct CoreMigParams {
        const char *uri;             /* e.g. tcp:127.0.0.1:PORT */
        const char *op;              /* operation id */
        uint64_t max_bandwidth;      /* bytes/s; 0 = leave QEMU's default */
        uint64_t downtime_limit_ms;  /* 0 = leave QEMU's default */
        int64_t timeout_ms;          /* the whole migration */
        int poll_ms;                 /* statistics poll interval (default 100) */
} CoreMigParams;

typedef struct CoreMigResult {
        MigrationStats final;           /* source's last query-migrate */
        uint64_t wall_ms;               /* begin to confirm */
        uint64_t measured_downtime_ms;  /* source STOP event to destination RESUME event */
        int polls;                      /* query-migrate calls on the source */
} CoreMigResult;

/* Called at each phase change and every poll, with no lock held. */
typedef void (*CoreMigProgressFn)(void *opaque, const char *side, JobPhase phase,
                                  const MigrationStats *st);

/* Migrate @src (running) into @dst (QEMU started with -S -incoming defer),
 * both with a monitor attached.  On success the destination runs, the source
 * QEMU is quit and marked shut off (migrated).  On failure the source is
 * resumed if it had been paused and the destination destroyed. */
int coremig_run(Vm *src, Vm *dst, const CoreMigParams *p, CoreMigProgressFn cb, void *opaque,
                CoreMigResult *ret);
