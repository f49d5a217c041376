/* Guest statuses on the wire (see agent-status.h).
 *
 * A status shows what vm_snapshot() copied plus four ages counted from
 * start times (job, phase, migration statistics, last guest-agent check).
 * All but the ages change only with the VM's generation (vm.h: every change
 * a snapshot shows bumps it) or its monitor's wedged flag.  So the cache
 * keeps, per VM, the GuestStatus packed with every age 0 (proto3 leaves
 * zero fields out), keyed by (vm->serial, generation, wedged), with the
 * four start times and the offsets where the ages belong: before the first
 * field numbered above job_age_ms, above phase_age_ms, at the end of the
 * migration sub-message (its age_ms is the last field there, so the
 * sub-message's length prefix is rewritten), and above
 * guest_agent_checked_age_ms.  Emitting a status copies the pieces and
 * writes the ages as of the call between them: the result is byte for byte
 * what protobuf-c packs (fields in number order), which test-agent-status
 * checks with every age set.  The field numbers come from the generated
 * descriptors and are checked once.
 *
 * A list call reads each VM's key under that VM's lock (one VM at a time),
 * then, under the cache's read lock, copies every entry that matches into
 * the caller's memory.  It snapshots and packs the others with no lock
 * held, then inserts them under the write lock, keeping the newer
 * generation when two calls raced.  Entries are immutable once inserted and
 * freed only under the write lock.  A list call that finds more entries than
 * VMs listed drops those of VMs it did not list (undefined guests).
 *
 * The cache is process-wide (serials are unique in the process) under an
 * RwLock of class "status-cache", a leaf lock: nothing else is taken while
 * it is held, and it is never held while snapshotting or packing.
 */
#include "agent-status.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "agent-status-priv.h"
#include "cleanup.h"
#include "deadline.h"
#include "err.h"
#include "lock.h"

static uint64_t age_ms(uint64_t since_ns, uint64_t now) {
        return since_ns && now > since_ns ? (now - since_ns) / NSEC_PER_MSEC : 0;
}

Drover__V1__GuestState agent_status_state(VmState s) {
        switch (s) {
        case VM_STATE_RUNNING: return DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING;
        case VM_STATE_PAUSED: return DROVER__V1__GUEST_STATE__GUEST_STATE_PAUSED;
        case VM_STATE_SHUTDOWN: return DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTDOWN;
        case VM_STATE_SHUTOFF: return DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF;
        case VM_STATE_CRASHED: return DROVER__V1__GUEST_STATE__GUEST_STATE_CRASHED;
        default: return DROVER__V1__GUEST_STATE__GUEST_STATE_UNSPECIFIED;
        }
}

void agent_status_view(const VmSnapshot *s, uint64_t now, Drover__V1__GuestStatus *o,
                       Drover__V1__MigrationStats *m) {
        drover__v1__guest_status__init(o);
        drover__v1__migration_stats__init(m);
        o->name = (char *) s->name;
        o->uuid = (char *) s->uuid;
        o->state = agent_status_state(s->state);
        o->reason = (char *) vm_reason_to_string(s->reason);
        o->pid = s->pid;
        o->job = (char *) job_type_to_string(s->job);
        o->job_owner = (char *) s->job_owner;
        o->job_age_ms = age_ms(s->job_started_ns, now);
        o->async_job = (char *) async_job_to_string(s->async_job);
        o->async_owner = (char *) s->async_owner;
        o->phase = (char *) job_phase_to_string(s->phase);
        o->phase_age_ms = age_ms(s->phase_started_ns, now);
        o->agent_job = (char *) ga_job_to_string(s->ga_job);
        o->monitor_wedged = s->monitor_wedged;
        m->status = (char *) migration_status_to_string(s->migration.status);
        m->total_time_ms = s->migration.total_time_ms;
        m->downtime_ms = s->migration.downtime_ms;
        m->expected_downtime_ms = s->migration.expected_downtime_ms;
        m->setup_time_ms = s->migration.setup_time_ms;
        m->ram_transferred_bytes = s->migration.ram_transferred;
        m->ram_remaining_bytes = s->migration.ram_remaining;
        m->ram_total_bytes = s->migration.ram_total;
        m->dirty_pages_rate = s->migration.ram_dirty_pages_rate;
        m->mbps = s->migration.ram_mbps;
        m->iteration = s->migration.ram_dirty_sync_count;
        m->cpu_throttle_percent = s->migration.cpu_throttle_percentage;
        m->postcopy_requests = s->migration.ram_postcopy_requests;
        m->disk_total_bytes = s->migration.disk_total;
        m->disk_transferred_bytes = s->migration.disk_transferred;
        m->error = (char *) (s->migration.has_error_desc ? s->migration.error_desc : "");
        m->age_ms = age_ms(s->migration_ns, now);
        o->migration = m;
        o->guest_agent_configured = s->agent.configured;
        o->guest_agent_ok = s->agent.ok;
        o->guest_agent_checked_age_ms = age_ms(s->agent.checked_ns, now);
        o->guest_agent_error = (char *) s->agent.error;
        o->last_error = (char *) s->last_error;
        o->generation = s->generation;
}

/* ---- wire pieces ---------------------------------------------------------------- */

/* The numbers of the aged fields, from the descriptors (fields_init). */
static struct {
        uint32_t job, phase, migration, ga; /* GuestStatus: job_age_ms, phase_age_ms, migration,
                                               guest_agent_checked_age_ms */
        uint32_t migration_age;             /* MigrationStats.age_ms */
} F;

static uint32_t field_id(const ProtobufCMessageDescriptor *d, const char *name, ProtobufCType type) {
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
        assert(f && f->type == type && f->label != PROTOBUF_C_LABEL_REPEATED);
        return f->id;
}

/* Check what the splicing relies on: the aged fields are in this order.
 * MigrationStats.age_ms goes before the fields numbered above it (the
 * local disks' figures), in field order as protobuf-c packs. */
static void fields_init(void) {
        const ProtobufCMessageDescriptor *g = &drover__v1__guest_status__descriptor;
        const ProtobufCMessageDescriptor *m = &drover__v1__migration_stats__descriptor;
        F.job = field_id(g, "job_age_ms", PROTOBUF_C_TYPE_UINT64);
        F.phase = field_id(g, "phase_age_ms", PROTOBUF_C_TYPE_UINT64);
        F.migration = field_id(g, "migration", PROTOBUF_C_TYPE_MESSAGE);
        F.ga = field_id(g, "guest_agent_checked_age_ms", PROTOBUF_C_TYPE_UINT64);
        F.migration_age = field_id(m, "age_ms", PROTOBUF_C_TYPE_UINT64);
        assert(F.job < F.phase && F.phase < F.migration && F.migration < F.ga);
}

static size_t varint_size(uint64_t v) {
        size_t n = 1;
        for (; v >= 0x80; v >>= 7)
                n++;
        return n;
}

static size_t put_varint(uint8_t *o, uint64_t v) {
        size_t n = 0;
        for (; v >= 0x80; v >>= 7)
                o[n++] = (uint8_t) (v | 0x80);
        o[n++] = (uint8_t) v;
        return n;
}

/* A varint of our own packed bytes at *at (advanced past it). */
static uint64_t get_varint(const uint8_t *p, size_t len, size_t *at) {
        uint64_t v = 0;
        for (unsigned shift = 0;; shift += 7) {
                assert(*at < len && shift < 64);
                uint8_t b = p[(*at)++];
                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80))
                        return v;
        }
}

/* The offset of the first field numbered above @field, at or after @at, in
 * the packed message p[0..len) (our own bytes), or @len if none. */
static size_t field_after(const uint8_t *p, size_t len, size_t at, uint32_t field) {
        while (at < len) {
                size_t start = at;
                uint64_t key = get_varint(p, len, &at);
                if (key >> 3 > field)
                        return start;
                switch (key & 7) {
                case PROTOBUF_C_WIRE_TYPE_VARINT: (void) get_varint(p, len, &at); break;
                case PROTOBUF_C_WIRE_TYPE_64BIT: at += 8; break;
                case PROTOBUF_C_WIRE_TYPE_32BIT: at += 4; break;
                case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED: {
                        uint64_t n = get_varint(p, len, &at);
                        at += n;
                        break;
                }
                default: assert(!"a wire type protobuf-c does not pack");
                }
                assert(at <= len);
        }
        return len;
}

static size_t age_size(uint32_t field, uint64_t age) {
        return age ? varint_size((uint64_t) field << 3) + varint_size(age) : 0;
}

static size_t put_age(uint8_t *o, uint32_t field, uint64_t age) {
        if (!age)
                return 0;
        size_t n = put_varint(o, (uint64_t) field << 3 | PROTOBUF_C_WIRE_TYPE_VARINT);
        return n + put_varint(o + n, age);
}

/* One VM's packed status of one generation, ages left out; immutable once
 * built. */
typedef struct StatusEntry {
        uint64_t serial;        /* vm->serial */
        uint64_t generation;    /* of the snapshot packed */
        bool wedged;            /* likewise */
        uint64_t job_ns, phase_ns, migration_ns, ga_ns; /* starts of the ages, 0 = none */
        size_t job_at;          /* where job_age_ms goes: the first field above it */
        size_t phase_at;        /* likewise for phase_age_ms */
        size_t mig_at;          /* the migration field's length prefix (after its tag) */
        size_t mig_data;        /* its data */
        size_t mig_age_at;      /* where its age_ms goes: the first field above it */
        size_t mig_end;
        size_t ga_at;           /* where guest_agent_checked_age_ms goes */
        size_t len;
        uint8_t bytes[];        /* the packed GuestStatus */
} StatusEntry;

/* Snapshot @vm and pack its status.  NULL when out of memory. */
static StatusEntry *entry_build(Vm *vm) {
        VmSnapshot s;
        Drover__V1__GuestStatus o;
        Drover__V1__MigrationStats m;

        vm_snapshot(vm, &s);
        agent_status_view(&s, 0, &o, &m);
        size_t len = drover__v1__guest_status__get_packed_size(&o);
        StatusEntry *e = malloc(sizeof(*e) + len);
        if (!e)
                return NULL;
        memset(e, 0, sizeof(*e));
        e->serial = vm->serial;
        e->generation = s.generation;
        e->wedged = s.monitor_wedged;
        e->job_ns = s.job_started_ns;
        e->phase_ns = s.phase_started_ns;
        e->migration_ns = s.migration_ns;
        e->ga_ns = s.agent.checked_ns;
        e->len = drover__v1__guest_status__pack(&o, e->bytes);
        assert(e->len == len);
        e->job_at = field_after(e->bytes, len, 0, F.job);
        e->phase_at = field_after(e->bytes, len, e->job_at, F.phase);
        size_t at = field_after(e->bytes, len, e->phase_at, F.migration - 1);
        uint64_t key = get_varint(e->bytes, len, &at);
        assert(key == ((uint64_t) F.migration << 3 | PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)); /* always set */
        e->mig_at = at;
        uint64_t mig_len = get_varint(e->bytes, len, &at);
        e->mig_data = at;
        e->mig_end = at + mig_len;
        e->mig_age_at = field_after(e->bytes, e->mig_end, e->mig_data, F.migration_age);
        e->ga_at = field_after(e->bytes, len, e->mig_end, F.ga);
        return e;
}

/* An entry's status as of a time: its ages and sizes. */
typedef struct Emit {
        uint64_t job, phase, migration, ga; /* ages, ms */
        size_t mig_len;                     /* data of the migration field */
        size_t status_len;                  /* the GuestStatus */
} Emit;

static void emit_plan(const StatusEntry *e, uint64_t now, Emit *p) {
        p->job = age_ms(e->job_ns, now);
        p->phase = age_ms(e->phase_ns, now);
        p->migration = age_ms(e->migration_ns, now);
        p->ga = age_ms(e->ga_ns, now);
        p->mig_len = e->mig_end - e->mig_data + age_size(F.migration_age, p->migration);
        p->status_len = e->len - (e->mig_data - e->mig_at) + varint_size(p->mig_len) + age_size(F.job, p->job) +
                        age_size(F.phase, p->phase) + age_size(F.migration_age, p->migration) +
                        age_size(F.ga, p->ga);
}

/* The data of the `guests` field: length prefix and status. */
static size_t emit_size(const Emit *p) {
        return varint_size(p->status_len) + p->status_len;
}

static size_t copy(uint8_t *o, const StatusEntry *e, size_t from, size_t to) {
        memcpy(o, e->bytes + from, to - from);
        return to - from;
}

/* Write emit_size(@p) bytes to @o; returns their number. */
static size_t emit(const StatusEntry *e, const Emit *p, uint8_t *o) {
        size_t n = put_varint(o, p->status_len), start = n;
        n += copy(o + n, e, 0, e->job_at);
        n += put_age(o + n, F.job, p->job);
        n += copy(o + n, e, e->job_at, e->phase_at);
        n += put_age(o + n, F.phase, p->phase);
        n += copy(o + n, e, e->phase_at, e->mig_at);
        n += put_varint(o + n, p->mig_len);
        n += copy(o + n, e, e->mig_data, e->mig_age_at);
        n += put_age(o + n, F.migration_age, p->migration);
        n += copy(o + n, e, e->mig_age_at, e->mig_end);
        n += copy(o + n, e, e->mig_end, e->ga_at);
        n += put_age(o + n, F.ga, p->ga);
        n += copy(o + n, e, e->ga_at, e->len);
        assert(n - start == p->status_len);
        return n;
}

static ProtobufCMessageUnknownField guests_field(uint8_t *data, size_t len) {
        return (ProtobufCMessageUnknownField){
                .tag = 1, /* ListGuestsResponse.guests */
                .wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED,
                .len = len,
                .data = data,
        };
}

int agent_status_field(const Drover__V1__GuestStatus *o, ProtobufCAllocator *alloc,
                       ProtobufCMessageUnknownField *ret) {
        size_t len = drover__v1__guest_status__get_packed_size(o);
        uint8_t *b = alloc->alloc(alloc->allocator_data, varint_size(len) + len);
        if (!b)
                return err_set(-ENOMEM, "out of memory for a status");
        size_t k = put_varint(b, len);
        drover__v1__guest_status__pack(o, b + k);
        *ret = guests_field(b, k + len);
        return 0;
}

/* ---- the cache ------------------------------------------------------------------ */

static LockClass status_cache_class = LOCK_CLASS_INIT("status-cache");

/* cache.lock protects the table and the entries' lifetime (entries are
 * immutable: readers copy them under the read lock). */
static struct {
        RwLock lock;
        StatusEntry **slots;               /* lock: cache.lock; by serial, linear probing, NULL = free */
        size_t cap;                        /* lock: cache.lock; a power of two (or 0), at most half full */
        size_t count;                      /* lock: cache.lock */
        atomic_uint_fast64_t hits, misses; /* atomic */
} cache;

static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_init(void) {
        rwlock_init(&cache.lock, &status_cache_class);
        fields_init();
}

/* The slot of @serial, or the free slot where it would go.  Either lock held. */
static StatusEntry **cache_slot(uint64_t serial) {
        for (size_t i = serial & (cache.cap - 1);; i = (i + 1) & (cache.cap - 1))
                if (!cache.slots[i] || cache.slots[i]->serial == serial)
                        return &cache.slots[i];
}

static StatusEntry *cache_find(uint64_t serial) {
        return cache.cap ? *cache_slot(serial) : NULL;
}

/* A table of @cap slots with the entries @keep accepts; the others are
 * freed.  Write lock held.  -ENOMEM leaves the table as it was. */
static int cache_rebuild(size_t cap, bool (*keep)(const StatusEntry *e, const void *data), const void *data) {
        StatusEntry **old = cache.slots;
        size_t old_cap = cache.cap;
        StatusEntry **slots = calloc(cap, sizeof(*slots));
        if (!slots)
                return -ENOMEM;
        cache.slots = slots;
        cache.cap = cap;
        cache.count = 0;
        for (size_t i = 0; i < old_cap; i++) {
                if (!old[i])
                        continue;
                if (keep && !keep(old[i], data)) {
                        free(old[i]);
                        continue;
                }
                *cache_slot(old[i]->serial) = old[i];
                cache.count++;
        }
        free(old);
        return 0;
}

/* Insert @e (taken) unless a newer generation is there.  Write lock held.
 * Out of memory, the entry is dropped: the cache only caches less. */
static void cache_put(StatusEntry *e) {
        if ((cache.count + 1) * 2 > cache.cap && cache_rebuild(cache.cap ? 2 * cache.cap : 64, NULL, NULL) < 0) {
                free(e);
                return;
        }
        StatusEntry **slot = cache_slot(e->serial);
        if (!*slot) {
                *slot = e;
                cache.count++;
        } else if ((*slot)->generation > e->generation)
                free(e);
        else {
                free(*slot);
                *slot = e;
        }
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

typedef struct Live {
        const uint64_t *serials; /* sorted */
        size_t n;
} Live;

static bool is_live(const StatusEntry *e, const void *data) {
        const Live *l = data;
        return bsearch(&e->serial, l->serials, l->n, sizeof(uint64_t), cmp_u64) != NULL;
}

/* Drop the entries of VMs not in @vms.  Write lock held. */
static void cache_sweep(Vm *const *vms, size_t n) {
        uint64_t *serials = malloc((n + 1) * sizeof(*serials));
        if (!serials)
                return; /* swept by a later call */
        for (size_t i = 0; i < n; i++)
                serials[i] = vms[i]->serial;
        qsort(serials, n, sizeof(*serials), cmp_u64);
        Live live = { serials, n };
        (void) cache_rebuild(cache.cap, is_live, &live);
        free(serials);
}

void agent_status_cache_counts(AgentStatusCacheCounts *ret) {
        pthread_once(&cache_once, cache_init);
        uint64_t since = rwlock_read_acquire(&cache.lock);
        ret->entries = cache.count;
        rwlock_read_release(&cache.lock, since);
        ret->hits = atomic_load_explicit(&cache.hits, memory_order_relaxed);
        ret->misses = atomic_load_explicit(&cache.misses, memory_order_relaxed);
}

/* ---- a list --------------------------------------------------------------------- */

typedef struct Item {
        uint64_t generation; /* read under the VM's lock */
        bool wedged;
        bool done;           /* out[i] is written */
        StatusEntry *fresh;  /* built by this call, to insert */
        StatusEntry *hit;    /* the cache's entry, valid under its read lock */
        Emit plan;
} Item;

/* Copy the cached statuses that match into @out (items marked done); the
 * number of entries the cache holds into *ret_entries.  Read lock taken
 * here.  0 or -ENOMEM. */
static int copy_hits(Vm *const *vms, size_t n, uint64_t now, ProtobufCAllocator *alloc, Item *items,
                     ProtobufCMessageUnknownField *out, size_t *ret_entries) {
        size_t total = 0, hits = 0;
        int r = 0;
        uint64_t since = rwlock_read_acquire(&cache.lock);
        for (size_t i = 0; i < n; i++) {
                StatusEntry *e = cache_find(vms[i]->serial);
                if (!e || e->generation != items[i].generation || e->wedged != items[i].wedged)
                        continue;
                items[i].hit = e;
                emit_plan(e, now, &items[i].plan);
                total += emit_size(&items[i].plan);
        }
        uint8_t *b = total ? alloc->alloc(alloc->allocator_data, total) : NULL;
        for (size_t i = 0; i < n; i++) {
                if (!items[i].hit)
                        continue;
                if (b) {
                        size_t len = emit(items[i].hit, &items[i].plan, b);
                        out[i] = guests_field(b, len);
                        items[i].done = true;
                        b += len;
                        hits++;
                }
                items[i].hit = NULL;
        }
        *ret_entries = cache.count;
        rwlock_read_release(&cache.lock, since);
        if (total && !b)
                r = err_set(-ENOMEM, "out of memory for %zu bytes of statuses", total);
        atomic_fetch_add_explicit(&cache.hits, hits, memory_order_relaxed);
        return r;
}

/* Snapshot and pack the statuses copy_hits() did not write; no lock held. */
static int pack_misses(Vm *const *vms, size_t n, uint64_t now, ProtobufCAllocator *alloc, Item *items,
                       ProtobufCMessageUnknownField *out, size_t *ret_packed) {
        *ret_packed = 0;
        for (size_t i = 0; i < n; i++) {
                if (items[i].done)
                        continue;
                StatusEntry *e = entry_build(vms[i]);
                if (!e)
                        return err_set(-ENOMEM, "out of memory for the status of '%s'", vms[i]->name);
                items[i].fresh = e;
                Emit p;
                emit_plan(e, now, &p);
                uint8_t *b = alloc->alloc(alloc->allocator_data, emit_size(&p));
                if (!b)
                        return err_set(-ENOMEM, "out of memory for the status of '%s'", vms[i]->name);
                out[i] = guests_field(b, emit(e, &p, b));
                items[i].done = true;
                (*ret_packed)++;
        }
        atomic_fetch_add_explicit(&cache.misses, *ret_packed, memory_order_relaxed);
        return 0;
}

int agent_status_list(Vm *const *vms, size_t n, uint64_t now, ProtobufCAllocator *alloc,
                      ProtobufCMessageUnknownField *out) {
        size_t entries = 0, packed = 0;
        pthread_once(&cache_once, cache_init);
        Item *items = calloc(n + 1, sizeof(*items));
        if (!items)
                return err_set(-ENOMEM, "out of memory");
        for (size_t i = 0; i < n; i++)
                items[i].generation = vm_snapshot_generation(vms[i], &items[i].wedged);
        int r = copy_hits(vms, n, now, alloc, items, out, &entries);
        if (r >= 0)
                r = pack_misses(vms, n, now, alloc, items, out, &packed);
        if (r >= 0 && (packed || entries > n)) {
                rwlock_write_acquire(&cache.lock);
                for (size_t i = 0; i < n; i++)
                        if (items[i].fresh)
                                cache_put(TAKE_PTR(items[i].fresh));
                if (cache.count > n)
                        cache_sweep(vms, n);
                rwlock_write_release(&cache.lock);
        }
        for (size_t i = 0; i < n; i++)
                free(items[i].fresh);
        free(items);
        return r;
}
