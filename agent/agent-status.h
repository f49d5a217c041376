/* Guest statuses on the wire: the GuestStatus message of a VM's snapshot,
 * and the packed statuses ListGuests reuses (agent-status.c).
 *
 * agent_status_view() is the one place that says what a status shows; every
 * handler answering a status uses it (agent-rpc.c).  agent_status_list()
 * serves ListGuests from a process-wide cache of packed statuses, one per
 * VM and generation, so a list of unchanged guests costs a copy of bytes,
 * never a snapshot and a pack per guest (docs/agent.md, "Lifecycle").
 */
#pragma once

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "agent.pb-c.h"
#include "vm.h"

/* The wire form of a VM state (VM_STATE_NOSTATE: UNSPECIFIED). */
Drover__V1__GuestState agent_status_state(VmState s);

/* Fill @o and @m (o->migration = @m; both initialised here) from @s.
 * Strings point into @s or static tables: @s must outlive the message.  The
 * ages (job, phase, migration statistics, last guest-agent check) are as of
 * @now (CLOCK_MONOTONIC ns); @now 0 leaves every age 0. */
void agent_status_view(const VmSnapshot *s, uint64_t now, Drover__V1__GuestStatus *o,
                       Drover__V1__MigrationStats *m);

/* The statuses of the @n VMs @vms, in that order, in wire form: out[i]
 * becomes field 1 of a ListGuestsResponse (tag 1, length-delimited), whose
 * data is the packed GuestStatus of vms[i], byte for byte what protobuf-c
 * packs for agent_status_view() of a fresh snapshot with ages as of @now.
 * Put them in the response's unknown fields and protobuf-c packs them as
 * its `guests`.
 *
 * A VM whose generation and wedged flag (vm_snapshot_generation(), read
 * under its lock) match its cached entry costs a copy; any other is
 * snapshotted, packed and cached.  A status is never older than the VM's
 * generation when this call read it.  The caller holds references on @vms
 * and no lock; each VM's lock is taken briefly, one at a time, never with
 * the cache's lock.  The data of @out is allocated with @alloc (never
 * freed here: a call arena, or the caller frees it).  Entries of VMs not in
 * @vms are dropped when the cache holds more than @n.  Returns 0, or
 * -ENOMEM (@alloc or the cache failed; @out is then incomplete). */
int agent_status_list(Vm *const *vms, size_t n, uint64_t now, ProtobufCAllocator *alloc,
                      ProtobufCMessageUnknownField *out);

/* @o packed the same way, as one element of `guests` (for statuses built
 * per call, such as unmanaged guests').  Data from @alloc.  0 or -ENOMEM. */
int agent_status_field(const Drover__V1__GuestStatus *o, ProtobufCAllocator *alloc,
                       ProtobufCMessageUnknownField *ret);
