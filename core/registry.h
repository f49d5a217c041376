/* The VM registry: name and UUID maps over the VMs of one agent.
 *
 * A read-write lock guards the two maps and nothing else.  Lookups take the
 * read lock, find the VM, take a reference and release the registry lock
 * BEFORE the caller ever locks the VM; no function here locks a VM at all.
 * Adding a VM whose name or UUID exists fails at once with -EEXIST, without
 * looking at (let alone waiting for) the existing VM: this is what keeps one
 * slow VM from stalling every lookup on the host (libvirt's
 * virDomainObjListAdd cascade, see docs/threading.md).
 */
#pragma once

#include <stddef.h>

#include "vm.h"

typedef struct VmRegistry VmRegistry;

int vm_registry_new(VmRegistry **ret);
/* Drops the registry's references.  Accepts NULL. */
void vm_registry_free(VmRegistry *r);

/* Add @vm (the registry takes its own reference).  -EEXIST naming what
 * clashes; -ENOSPC past @max VMs (see vm_registry_set_max). */
int vm_registry_add(VmRegistry *r, Vm *vm);
/* Remove @vm if it is the VM registered under its name; marks it removed
 * (so queued jobs fail) and drops the registry's reference.  Must be called
 * with vm->lock NOT held.  -ENOENT if not registered. */
int vm_registry_remove(VmRegistry *r, Vm *vm);
/* A new reference, or NULL with -ENOENT in err detail. */
Vm *vm_registry_lookup_name(VmRegistry *r, const char *name);
Vm *vm_registry_lookup_uuid(VmRegistry *r, const char *uuid);
/* Name or UUID. */
Vm *vm_registry_lookup(VmRegistry *r, const char *name_or_uuid);
/* References to every VM, sorted by name; free with vm_registry_list_free. */
int vm_registry_list(VmRegistry *r, Vm ***ret_vms, size_t *ret_n);
void vm_registry_list_free(Vm **vms, size_t n);
size_t vm_registry_count(VmRegistry *r);
/* Cap on the number of VMs (default 4096). */
void vm_registry_set_max(VmRegistry *r, size_t max);
