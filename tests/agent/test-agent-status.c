/* Unit tests of the ListGuests status cache (agent/agent-status.c): the
 * cached statuses are byte for byte what protobuf-c packs for a fresh
 * snapshot, ages included; a change of a guest shows in the next list, and
 * only the changed guest is packed again; a list never shows a guest older
 * than a change that finished before it began, with a writer changing the
 * guest all the time; undefined guests leave the cache.  Then the same
 * through the real handler over gRPC: a ListGuests after a state change
 * shows it, and an unmanaged guest is listed after the managed ones.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent-rpc.h"
#include "agent-status-priv.h"
#include "agent-status.h"
#include "agent-vm-priv.h"
#include "agent.h"
#include "deadline.h"
#include "rpcclient.h"
#include "rpcserver.h"
#include "status.h"
#include "testutil.h"

#define N 4

/* A bump allocator over one buffer, emptied before each list. */
static uint8_t arena_buf[1 << 20];
static size_t arena_used;

static void *arena_alloc(void *data, size_t size) {
        (void) data;
        size = (size + 15) & ~(size_t) 15;
        if (arena_used + size > sizeof(arena_buf))
                return NULL;
        void *p = arena_buf + arena_used;
        arena_used += size;
        return p;
}

static void arena_free(void *data, void *p) {
        (void) data;
        (void) p;
}

static ProtobufCAllocator arena = { .alloc = arena_alloc, .free = arena_free };

static Vm *new_vm(const char *name) {
        char uuid[VM_UUID_LEN];
        Vm *vm;
        vm_uuid_generate(uuid);
        assert_int_equal(vm_new(name, uuid, NULL, NULL, &vm), 0);
        vm_lock(vm);
        vm_set_definition_locked(vm, strdup("{}"));
        vm_unlock(vm);
        return vm;
}

static uint64_t get_varint(const uint8_t *p, size_t len, size_t *at) {
        uint64_t v = 0;
        for (unsigned shift = 0; *at < len && shift < 64; shift += 7) {
                uint8_t b = p[(*at)++];
                v |= (uint64_t) (b & 0x7f) << shift;
                if (!(b & 0x80))
                        return v;
        }
        fail_msg("a bad varint");
        return 0;
}

/* The packed GuestStatus inside one element of `guests`. */
static const uint8_t *status_bytes(const ProtobufCMessageUnknownField *f, size_t *ret_len) {
        size_t at = 0;
        assert_int_equal(f->tag, 1);
        assert_int_equal(f->wire_type, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
        uint64_t len = get_varint(f->data, f->len, &at);
        assert_int_equal(at + len, f->len);
        *ret_len = len;
        return f->data + at;
}

/* List @vms as of @now into @out (arena emptied first). */
static void list(Vm **vms, size_t n, uint64_t now, ProtobufCMessageUnknownField *out) {
        arena_used = 0;
        assert_int_equal(agent_status_list(vms, n, now, &arena, out), 0);
}

static Drover__V1__GuestStatus *decode(const ProtobufCMessageUnknownField *f) {
        size_t len;
        const uint8_t *b = status_bytes(f, &len);
        Drover__V1__GuestStatus *g = drover__v1__guest_status__unpack(NULL, len, b);
        assert_non_null(g);
        return g;
}

/* Guest 0 plain; 1 with a normal job, an error and a guest-agent check;
 * 2 in an outgoing migration's perform phase with statistics; 3 paused. */
static void make_varied(Vm **vms) {
        MigrationStats st = { .status = MIGRATION_STATUS_ACTIVE, .total_time_ms = 1234, .ram_transferred = 1 << 30,
                              .ram_remaining = 77777, .ram_total = 2ull << 30, .ram_mbps = 812.5,
                              .ram_dirty_sync_count = 3, .has_error_desc = true };
        /* an error text that makes the migration sub-message 126 bytes with
         * its age 0, so its age makes the length prefix grow to two bytes */
        for (size_t k = 0; k + 1 < sizeof(st.error_desc); k++) {
                VmSnapshot s = { .migration = st };
                Drover__V1__GuestStatus o;
                Drover__V1__MigrationStats m;
                agent_status_view(&s, 0, &o, &m);
                if (drover__v1__migration_stats__get_packed_size(&m) >= 126)
                        break;
                st.error_desc[k] = 'e';
        }
        const char *names[N] = { "plain", "busy", "migrating", "paused" };
        for (int i = 0; i < N; i++)
                vms[i] = new_vm(names[i]);
        vm_lock(vms[1]);
        assert_int_equal(job_begin(vms[1], JOB_QUERY, "op-query", "query", 1000), 0);
        vm_set_error_locked(vms[1], "something failed");
        vm_note_ga_result_locked(vms[1], -ETIMEDOUT, "guest agent timed out");
        vm_unlock(vms[1]);
        vm_lock(vms[2]);
        assert_int_equal(job_restore_async(vms[2], ASYNC_JOB_MIGRATION_OUT, "op-mig", JOB_PHASE_PERFORM), 0);
        vm_set_state_locked(vms[2], VM_STATE_RUNNING, VM_REASON_BOOTED);
        vm_set_migration_stats_locked(vms[2], &st);
        vm_unlock(vms[2]);
        vm_lock(vms[3]);
        vm_set_state_locked(vms[3], VM_STATE_PAUSED, VM_REASON_USER);
        vm_unlock(vms[3]);
}

static void free_vms(Vm **vms, size_t n) {
        for (size_t i = 0; i < n; i++)
                vm_unref(vms[i]);
}

static void test_cached_status_is_exactly_what_protobuf_c_packs(void **state) {
        (void) state;
        Vm *vms[N];
        ProtobufCMessageUnknownField out[N];
        make_varied(vms);
        /* ages of 0, under 128 ms (one byte), an hour, 40 days (longer varints) */
        const uint64_t offsets_ms[] = { 0, 100, 3600ull * 1000, 40ull * 86400 * 1000 };
        for (int round = 0; round < 2; round++) /* a fill, then from the cache */
                for (size_t k = 0; k < ELEMENTSOF(offsets_ms); k++) {
                        uint64_t now = now_ns() + offsets_ms[k] * NSEC_PER_MSEC;
                        list(vms, N, now, out);
                        for (int i = 0; i < N; i++) {
                                VmSnapshot s;
                                Drover__V1__GuestStatus o;
                                Drover__V1__MigrationStats m;
                                uint8_t want[4096];
                                size_t len;
                                vm_snapshot(vms[i], &s);
                                agent_status_view(&s, now, &o, &m);
                                size_t want_len = drover__v1__guest_status__pack(&o, want);
                                const uint8_t *got = status_bytes(&out[i], &len);
                                assert_int_equal(len, want_len);
                                assert_memory_equal(got, want, len);
                        }
                }
        /* every aged field was set at the longest offset */
        Drover__V1__GuestStatus *busy = decode(&out[1]), *mig = decode(&out[2]);
        assert_true(busy->job_age_ms >= 40ull * 86400 * 1000);
        assert_true(busy->guest_agent_checked_age_ms >= 40ull * 86400 * 1000);
        assert_string_equal(busy->guest_agent_error, "guest agent timed out");
        assert_true(mig->phase_age_ms >= 40ull * 86400 * 1000);
        assert_true(mig->migration->age_ms >= 40ull * 86400 * 1000);
        assert_int_equal(mig->migration->ram_remaining_bytes, 77777);
        assert_true(strlen(mig->migration->error) > 40);
        drover__v1__guest_status__free_unpacked(busy, NULL);
        drover__v1__guest_status__free_unpacked(mig, NULL);
        vm_lock(vms[1]);
        job_end(vms[1]);
        vm_unlock(vms[1]);
        free_vms(vms, N);
}

static void test_a_change_shows_in_the_next_list_and_only_it_is_repacked(void **state) {
        (void) state;
        Vm *vms[N];
        ProtobufCMessageUnknownField out[N];
        AgentStatusCacheCounts c0, c1, c2;
        make_varied(vms);
        list(vms, N, now_ns(), out);
        agent_status_cache_counts(&c0);
        list(vms, N, now_ns(), out); /* nothing changed: all from the cache */
        agent_status_cache_counts(&c1);
        assert_int_equal(c1.misses, c0.misses);
        assert_int_equal(c1.hits, c0.hits + N);

        vm_lock(vms[0]);
        vm_set_state_locked(vms[0], VM_STATE_CRASHED, VM_REASON_CRASHED);
        vm_set_error_locked(vms[0], "QEMU went away");
        uint64_t gen = vms[0]->generation;
        vm_unlock(vms[0]);
        list(vms, N, now_ns(), out);
        agent_status_cache_counts(&c2);
        assert_int_equal(c2.misses, c1.misses + 1);
        assert_int_equal(c2.hits, c1.hits + N - 1);
        Drover__V1__GuestStatus *g = decode(&out[0]);
        assert_int_equal(g->state, DROVER__V1__GUEST_STATE__GUEST_STATE_CRASHED);
        assert_string_equal(g->reason, "crashed");
        assert_string_equal(g->last_error, "QEMU went away");
        assert_int_equal(g->generation, gen);
        drover__v1__guest_status__free_unpacked(g, NULL);
        vm_lock(vms[1]);
        job_end(vms[1]);
        vm_unlock(vms[1]);
        free_vms(vms, N);
}

static void test_undefined_guests_leave_the_cache(void **state) {
        (void) state;
        Vm *vms[N];
        ProtobufCMessageUnknownField out[N];
        AgentStatusCacheCounts c;
        for (int i = 0; i < N; i++) {
                char name[16];
                snprintf(name, sizeof(name), "g%d", i);
                vms[i] = new_vm(name);
        }
        list(vms, N, now_ns(), out);
        agent_status_cache_counts(&c);
        assert_int_equal(c.entries, N);
        list(vms + 2, 1, now_ns(), out);
        agent_status_cache_counts(&c);
        assert_int_equal(c.entries, 1);
        free_vms(vms, N);
}

/* The writer changes the guest's state all the time and publishes each
 * generation once its change is done (VM lock released).  Each change
 * bumps the generation by one: generation base + 1 + i is RUNNING for
 * even i, PAUSED for odd i. */
typedef struct Race {
        Vm *vm;
        uint64_t base;
        atomic_uint_fast64_t published;
        atomic_bool stop;
} Race;

static void *writer_main(void *arg) {
        Race *r = arg;
        for (unsigned i = 0; !atomic_load(&r->stop); i++) {
                vm_lock(r->vm);
                vm_set_state_locked(r->vm, i % 2 ? VM_STATE_PAUSED : VM_STATE_RUNNING, VM_REASON_USER);
                uint64_t gen = r->vm->generation;
                vm_unlock(r->vm);
                atomic_store(&r->published, gen);
        }
        return NULL;
}

static Drover__V1__GuestState state_at(const Race *r, uint64_t gen) {
        return (gen - r->base - 1) % 2 ? DROVER__V1__GUEST_STATE__GUEST_STATE_PAUSED
                                       : DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING;
}

static void test_a_list_is_never_older_than_a_change_done_before_it(void **state) {
        (void) state;
        Vm *vms[N];
        ProtobufCMessageUnknownField out[N];
        Race r = { 0 };
        pthread_t th;
        for (int i = 0; i < N; i++) {
                char name[16];
                snprintf(name, sizeof(name), "r%d", i);
                vms[i] = new_vm(name);
        }
        r.vm = vms[1];
        r.base = vms[1]->generation; /* no other thread yet */
        atomic_store(&r.published, r.base);
        assert_int_equal(pthread_create(&th, NULL, writer_main, &r), 0);
        Deadline d = deadline_in_ms(500);
        unsigned lists = 0, moved = 0;
        uint64_t last = 0;
        while (!deadline_expired(d) || lists < 200) {
                uint64_t done = atomic_load(&r.published);
                list(vms, N, now_ns(), out);
                Drover__V1__GuestStatus *g = decode(&out[1]);
                assert_true(g->generation >= done);
                if (g->generation > r.base) /* state and generation from one snapshot */
                        assert_int_equal(g->state, state_at(&r, g->generation));
                moved += g->generation != last;
                last = g->generation;
                drover__v1__guest_status__free_unpacked(g, NULL);
                lists++;
        }
        atomic_store(&r.stop, true);
        pthread_join(th, NULL);
        assert_true(moved > 1); /* the writer really ran during the lists */
        free_vms(vms, N);
}

/* ---- through the handler, over gRPC --------------------------------------------- */

static Drover__V1__ListGuestsResponse *list_rpc(RpcClient *cl) {
        Drover__V1__ListGuestsRequest req = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *resp = NULL;
        assert_int_equal(rpc_client_unary(cl, &drover__v1__agent__descriptor, "ListGuests", &req.base, 5000,
                                          (ProtobufCMessage **) &resp, NULL),
                         0);
        return resp;
}

static void test_list_guests_shows_a_state_change_at_once(void **state) {
        (void) state;
        Agent a = { 0 };
        RpcServer *srv = NULL;
        RpcClient *cl = NULL;
        char addr[400];
        Vm *vms[N];
        snprintf(a.cfg.host, sizeof(a.cfg.host), "test-host");
        assert_int_equal(vm_registry_new(&a.vms), 0);
        for (int i = 0; i < N; i++) {
                char name[16];
                snprintf(name, sizeof(name), "rpc%d", i);
                vms[i] = new_vm(name);
                assert_int_equal(vm_registry_add(a.vms, vms[i]), 0);
        }
        AgentUnmanaged u = { .pid = getpid(), .pid_start_time = status_pid_start_time(getpid()) };
        snprintf(u.name, sizeof(u.name), "zz-unmanaged");
        snprintf(u.why, sizeof(u.why), "status file quarantined: test");
        agent_unmanaged_append(&a, &u);

        snprintf(addr, sizeof(addr), "unix:%s", tu_path(tu_tmpdir("agent-status"), "agent.sock"));
        RpcServerOptions o = { 0 };
        a.cfg.lane_queries = a.cfg.lane_peer = a.cfg.lane_migrate = a.cfg.lane_control = a.cfg.lane_streams = 2;
        agent_rpc_lanes(&a.cfg, &o);
        assert_int_equal(rpc_server_new(&o, &srv), 0);
        assert_int_equal(agent_rpc_register(srv, &a), 0);
        assert_true(rpc_server_listen(srv, addr, NULL) >= 0);
        assert_int_equal(rpc_server_start(srv), 0);
        assert_int_equal(rpc_client_new(addr, NULL, &cl), 0);

        Drover__V1__ListGuestsResponse *r = list_rpc(cl);
        assert_int_equal(r->n_guests, N + 1);
        for (int i = 0; i < N; i++) {
                assert_string_equal(r->guests[i]->name, vms[i]->name);
                assert_int_equal(r->guests[i]->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        }
        assert_true(r->guests[N]->unmanaged);
        assert_string_equal(r->guests[N]->name, "zz-unmanaged");
        assert_string_equal(r->guests[N]->last_error, "status file quarantined: test");
        drover__v1__list_guests_response__free_unpacked(r, NULL);

        vm_lock(vms[2]);
        vm_set_state_locked(vms[2], VM_STATE_PAUSED, VM_REASON_MIGRATION);
        uint64_t gen = vms[2]->generation;
        vm_unlock(vms[2]);
        r = list_rpc(cl);
        assert_int_equal(r->n_guests, N + 1);
        assert_int_equal(r->guests[2]->state, DROVER__V1__GUEST_STATE__GUEST_STATE_PAUSED);
        assert_string_equal(r->guests[2]->reason, "migration");
        assert_int_equal(r->guests[2]->generation, gen);
        assert_int_equal(r->guests[1]->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        drover__v1__list_guests_response__free_unpacked(r, NULL);

        rpc_client_free(cl);
        rpc_server_free(srv);
        free_vms(vms, N);
        vm_registry_free(a.vms);
        free(a.unmanaged);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cached_status_is_exactly_what_protobuf_c_packs),
                cmocka_unit_test(test_a_change_shows_in_the_next_list_and_only_it_is_repacked),
                cmocka_unit_test(test_undefined_guests_leave_the_cache),
                cmocka_unit_test(test_a_list_is_never_older_than_a_change_done_before_it),
                cmocka_unit_test(test_list_guests_shows_a_state_change_at_once),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
