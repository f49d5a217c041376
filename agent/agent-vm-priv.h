/* Internals of the guest lifecycle (agent-vm.c) shared with restart
 * recovery (agent-restart.c), and the unmanaged-guest check both use.
 * Not part of the agent's interface (agent.h). */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "agent.h"

/* A new, unregistered Vm for @def with its AgentVm (paths under run_dir,
 * the guest-agent channel when configured) and @canonical_json as its
 * definition (copied).  Returns 0 with a reference in @ret_vm. */
int agent_vm_new(Agent *a, const GuestDef *def, const char *canonical_json, Vm **ret_vm);

/* Free what the host holds for a guest whose QEMU is gone: its taps, the
 * stale monitor socket and pidfile.  Never call it while a QEMU may still
 * use them. */
void agent_vm_cleanup_host(AgentVm *av);

/* @pid runs and is not a zombie. */
bool agent_process_alive(pid_t pid);
/* (agent-vm.c) Wait until @pid is gone (or a zombie), woken by its exit
 * through a pidfd (a /proc poll every 2 ms without one), at most until @d;
 * no lock held.  Returns whether it is gone. */
bool agent_process_wait_gone(pid_t pid, Deadline d);

/* -EBUSY (FAILED_PRECONDITION at the RPC boundary), naming the pid and the
 * quarantined status file, when a running unmanaged QEMU (agent.h,
 * AgentUnmanaged) owns the guest name @name or its monitor path; 0 when
 * none does.  No lock needed (the list is immutable after start). */
int agent_unmanaged_check(Agent *a, const char *name);
/* (agent-restart.c, before the RPC server starts) Record @u as an unmanaged
 * guest; logged.  The list is read-only afterwards. */
void agent_unmanaged_append(Agent *a, const AgentUnmanaged *u);
