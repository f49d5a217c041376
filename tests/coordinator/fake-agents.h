/* FAKE drover-agents for in-process coordinator tests: an implementation
 * of coordinator/coord-agents.h (agent_link_*) over an in-memory table of
 * hosts, linked into the test instead of coord-agents.c.
 *
 * It is a fake, not a model of the agent: it exists for the agent answers
 * a real agent cannot be made to give on demand (a migration it forgot, a
 * failure report for a guest that landed on the destination, a host that
 * stops answering at a chosen moment) and for races the real cluster test
 * cannot time.  Migrations never progress by themselves: the test ends
 * them with fake_mig_end().  Hosts are named by their address; every
 * function is thread-safe (one mutex).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "coord-agents.h"

void fake_reset(void);
/* A host answering at @addr, with @memory_mib and @cpus. */
void fake_host_add(const char *addr, uint64_t memory_mib, uint32_t cpus);
/* A running guest on host @addr. */
void fake_guest_add(const char *addr, const char *name, const char *uuid, uint64_t memory_mib, uint32_t vcpus);
/* The host stops (true) or starts again (false) answering: every call fails with UNAVAILABLE. */
void fake_host_down(const char *addr, bool down);
/* The source's migration of @guest ends: @success or not (with @error);
 * @lands: the guest now runs on the destination (else on the source). */
void fake_mig_end(const char *guest, bool success, const char *error, bool lands);
/* Guest @guest has @bytes of local disks (GuestSummary.local_disk_bytes). */
void fake_guest_disks(const char *guest, uint64_t bytes);
/* The running migration of @guest reports the stream's figures of @f
 * (guest_memory_bytes, transferred, multifd_bytes, multifd_channels,
 * compression, disk_bytes) in GetMigration from now on. */
void fake_mig_figures(const char *guest, const LinkMigResult *f);
/* The running migration of @guest has copied @done of @total bytes of
 * local disks (GetGuest's MigrationStats on the source). */
void fake_mig_disks(const char *guest, uint64_t total, uint64_t done);
/* The source agent forgets its migration of @guest (as a restarted agent
 * with a lost record would): GetMigration answers NOT_FOUND; the guest
 * stays on the source, idle. */
void fake_mig_forget(const char *guest);
/* The source's running migration of @guest reports @phase from now on
 * (e.g. "postcopy_paused", "postcopy_recover", "postcopy_active"); while
 * paused or recovering MigrateAbort is refused (FAILED_PRECONDITION), as a
 * real agent does (docs/migration.md, "Post-copy recovery"). */
void fake_mig_phase(const char *guest, const char *phase);
/* The source gave up recovering the post-copy of @guest: done, not
 * successful, phase postcopy_failed, error @alert ("ALERT: ..."); the
 * guest stays listed on its source (paused on both hosts in truth). */
void fake_mig_postcopy_failed(const char *guest, const char *alert);
/* MigrateAbort calls the host at @addr received (NULL: all hosts). */
unsigned fake_abort_calls(const char *addr);
/* Migrate calls the host at @addr received (NULL: all hosts). */
unsigned fake_migrate_calls(const char *addr);
/* The parameters of the last Migrate call for @guest into *@ret; false
 * when there was none. */
bool fake_migrate_params(const char *guest, MigParams *ret);
/* The host (address) @guest runs on now, or NULL. */
const char *fake_guest_host(const char *guest);
