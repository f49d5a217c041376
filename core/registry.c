/* The VM registry (see registry.h).
 *
 * Two chained hash tables (FNV-1a) keyed by name and by UUID, each entry a
 * pointer to a Vm holding one registry reference.  Tables double when the
 * load passes 1; nothing shrinks.
 */
#include "registry.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static LockClass registry_lock_class = LOCK_CLASS_INIT("registry");

typedef struct Entry {
        Vm *vm;             /* lock: registry->lock */
        struct Entry *next; /* lock: registry->lock */
} Entry;

typedef struct Table {
        Entry **buckets;
        size_t n_buckets;
} Table;

/* registry->lock protects both tables and count. */
struct VmRegistry {
        RwLock lock;
        Table by_name; /* lock: registry->lock */
        Table by_uuid; /* lock: registry->lock */
        size_t count;  /* lock: registry->lock */
        size_t max;    /* lock: registry->lock */
};

static uint64_t hash(const char *s) {
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= 1099511628211ULL;
        }
        return h;
}

static int table_init(Table *t, size_t n) {
        t->buckets = calloc(n, sizeof(*t->buckets));
        t->n_buckets = n;
        return t->buckets ? 0 : -ENOMEM;
}

static void table_free(Table *t) {
        for (size_t i = 0; i < t->n_buckets; i++)
                for (Entry *e = t->buckets[i], *next; e; e = next) {
                        next = e->next;
                        free(e);
                }
        free(t->buckets);
}

static const char *key_name(Vm *vm) {
        return vm->name;
}
static const char *key_uuid(Vm *vm) {
        return vm->uuid;
}

static Vm *table_find(Table *t, const char *key, const char *(*key_of)(Vm *)) {
        for (Entry *e = t->buckets[hash(key) % t->n_buckets]; e; e = e->next)
                if (strcmp(key_of(e->vm), key) == 0)
                        return e->vm;
        return NULL;
}

static void table_grow(Table *t, const char *(*key_of)(Vm *)) {
        Table n;
        if (table_init(&n, t->n_buckets * 2) < 0)
                return; /* keep the longer chains */
        for (size_t i = 0; i < t->n_buckets; i++)
                for (Entry *e = t->buckets[i], *next; e; e = next) {
                        next = e->next;
                        size_t b = hash(key_of(e->vm)) % n.n_buckets;
                        e->next = n.buckets[b];
                        n.buckets[b] = e;
                }
        free(t->buckets);
        *t = n;
}

static int table_insert(Table *t, Vm *vm, const char *(*key_of)(Vm *), Entry *e) {
        size_t b = hash(key_of(vm)) % t->n_buckets;
        e->vm = vm;
        e->next = t->buckets[b];
        t->buckets[b] = e;
        return 0;
}

static bool table_remove(Table *t, Vm *vm, const char *(*key_of)(Vm *)) {
        for (Entry **p = &t->buckets[hash(key_of(vm)) % t->n_buckets]; *p; p = &(*p)->next)
                if ((*p)->vm == vm) {
                        Entry *e = *p;
                        *p = e->next;
                        free(e);
                        return true;
                }
        return false;
}

int vm_registry_new(VmRegistry **ret) {
        VmRegistry *r = calloc(1, sizeof(*r));
        if (!r || table_init(&r->by_name, 64) < 0 || table_init(&r->by_uuid, 64) < 0) {
                if (r) {
                        free(r->by_name.buckets);
                        free(r);
                }
                return err_set(-ENOMEM, "out of memory");
        }
        rwlock_init(&r->lock, &registry_lock_class);
        r->max = 4096;
        *ret = r;
        return 0;
}

void vm_registry_free(VmRegistry *r) {
        if (!r)
                return;
        for (size_t i = 0; i < r->by_name.n_buckets; i++)
                for (Entry *e = r->by_name.buckets[i]; e; e = e->next)
                        vm_unref(e->vm);
        table_free(&r->by_name);
        table_free(&r->by_uuid);
        rwlock_destroy(&r->lock);
        free(r);
}

void vm_registry_set_max(VmRegistry *r, size_t max) {
        rwlock_write_acquire(&r->lock);
        r->max = max;
        rwlock_write_release(&r->lock);
}

int vm_registry_add(VmRegistry *r, Vm *vm) {
        Entry *e1 = malloc(sizeof(*e1)), *e2 = malloc(sizeof(*e2));
        Vm *clash;
        int ret = 0;

        if (!e1 || !e2) {
                free(e1);
                free(e2);
                return err_set(-ENOMEM, "out of memory");
        }
        rwlock_write_acquire(&r->lock);
        if ((clash = table_find(&r->by_name, vm->name, key_name)))
                ret = err_set(-EEXIST, "a VM named '%s' already exists (UUID %s)", vm->name, clash->uuid);
        else if ((clash = table_find(&r->by_uuid, vm->uuid, key_uuid)))
                ret = err_set(-EEXIST, "UUID %s is already used by VM '%s'", vm->uuid, clash->name);
        else if (r->count >= r->max)
                ret = err_set(-ENOSPC, "this agent already holds its maximum of %zu VMs", r->max);
        else {
                table_insert(&r->by_name, vm_ref(vm), key_name, e1);
                table_insert(&r->by_uuid, vm, key_uuid, e2);
                e1 = e2 = NULL;
                r->count++;
                if (r->count > r->by_name.n_buckets) {
                        table_grow(&r->by_name, key_name);
                        table_grow(&r->by_uuid, key_uuid);
                }
        }
        rwlock_write_release(&r->lock);
        free(e1);
        free(e2);
        return ret;
}

int vm_registry_remove(VmRegistry *r, Vm *vm) {
        bool found;

        rwlock_write_acquire(&r->lock);
        found = table_find(&r->by_name, vm->name, key_name) == vm;
        if (found) {
                table_remove(&r->by_name, vm, key_name);
                table_remove(&r->by_uuid, vm, key_uuid);
                r->count--;
        }
        rwlock_write_release(&r->lock);
        if (!found)
                return err_set(-ENOENT, "VM '%s' is not registered", vm->name);

        /* Outside the registry lock: wake and fail whoever queues for it. */
        vm_lock(vm);
        vm->removed = true;
        cond_broadcast(&vm->job_cond);
        cond_broadcast(&vm->async_cond);
        cond_broadcast(&vm->cond);
        vm_unlock(vm);
        vm_unref(vm);
        return 0;
}

static Vm *lookup(VmRegistry *r, Table *t, const char *key, const char *(*key_of)(Vm *)) {
        uint64_t since = rwlock_read_acquire(&r->lock);
        Vm *vm = vm_ref(table_find(t, key, key_of));
        rwlock_read_release(&r->lock, since);
        if (!vm)
                err_set(-ENOENT, "no VM '%s' on this agent", key);
        return vm;
}

Vm *vm_registry_lookup_name(VmRegistry *r, const char *name) {
        return name ? lookup(r, &r->by_name, name, key_name) : NULL;
}

Vm *vm_registry_lookup_uuid(VmRegistry *r, const char *uuid) {
        char lower[VM_UUID_LEN];
        if (!vm_uuid_is_valid(uuid)) {
                err_set(-ENOENT, "no VM '%s' on this agent", uuid ? uuid : "");
                return NULL;
        }
        for (int i = 0; i < VM_UUID_LEN; i++)
                lower[i] = (char) ((uuid[i] >= 'A' && uuid[i] <= 'F') ? uuid[i] - 'A' + 'a' : uuid[i]);
        return lookup(r, &r->by_uuid, lower, key_uuid);
}

Vm *vm_registry_lookup(VmRegistry *r, const char *name_or_uuid) {
        Vm *vm = vm_registry_lookup_name(r, name_or_uuid);
        if (!vm && vm_uuid_is_valid(name_or_uuid))
                vm = vm_registry_lookup_uuid(r, name_or_uuid);
        return vm;
}

static int cmp_name(const void *a, const void *b) {
        return strcmp((*(Vm *const *) a)->name, (*(Vm *const *) b)->name);
}

int vm_registry_list(VmRegistry *r, Vm ***ret_vms, size_t *ret_n) {
        uint64_t since = rwlock_read_acquire(&r->lock);
        size_t n = 0;
        Vm **vms = malloc((r->count ? r->count : 1) * sizeof(*vms));
        if (!vms) {
                rwlock_read_release(&r->lock, since);
                return err_set(-ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < r->by_name.n_buckets; i++)
                for (Entry *e = r->by_name.buckets[i]; e; e = e->next)
                        vms[n++] = vm_ref(e->vm);
        rwlock_read_release(&r->lock, since);
        /* Sorting happens outside the lock: the names are immutable. */
        qsort(vms, n, sizeof(*vms), cmp_name);
        *ret_vms = vms;
        *ret_n = n;
        return 0;
}

void vm_registry_list_free(Vm **vms, size_t n) {
        for (size_t i = 0; i < n; i++)
                vm_unref(vms[i]);
        free(vms);
}

size_t vm_registry_count(VmRegistry *r) {
        uint64_t since = rwlock_read_acquire(&r->lock);
        size_t n = r->count;
        rwlock_read_release(&r->lock, since);
        return n;
}
