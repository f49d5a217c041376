/* Unit tests for the VM registry: maps, references, and the rule that the
 * registry never waits for a VM lock (a slow VM cannot stall lookups or the
 * add of an incoming migration). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "registry.h"

static Vm *make_vm(const char *name, const char *uuid) {
        Vm *vm;
        char u[VM_UUID_LEN];
        if (!uuid) {
                vm_uuid_generate(u);
                uuid = u;
        }
        assert_int_equal(vm_new(name, uuid, NULL, NULL, &vm), 0);
        return vm;
}

static void test_add_lookup_remove(void **state) {
        VmRegistry *r;
        assert_int_equal(vm_registry_new(&r), 0);
        Vm *a = make_vm("alpha", "11111111-2222-3333-4444-555555555555");
        Vm *b = make_vm("beta", NULL);
        assert_int_equal(vm_registry_add(r, a), 0);
        assert_int_equal(vm_registry_add(r, b), 0);
        assert_int_equal(vm_registry_count(r), 2);

        Vm *x = vm_registry_lookup_name(r, "alpha");
        assert_ptr_equal(x, a);
        vm_unref(x);
        x = vm_registry_lookup_uuid(r, "11111111-2222-3333-4444-555555555555");
        assert_ptr_equal(x, a);
        vm_unref(x);
        /* UUIDs match case-insensitively */
        x = vm_registry_lookup(r, "11111111-2222-3333-4444-555555555555");
        assert_ptr_equal(x, a);
        vm_unref(x);
        assert_null(vm_registry_lookup_name(r, "gamma"));
        assert_non_null(strstr(err_msg(), "no VM 'gamma'"));
        assert_null(vm_registry_lookup_uuid(r, "not-a-uuid"));

        Vm **list;
        size_t n;
        assert_int_equal(vm_registry_list(r, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0]->name, "alpha");
        assert_string_equal(list[1]->name, "beta");
        vm_registry_list_free(list, n);

        assert_int_equal(vm_registry_remove(r, a), 0);
        assert_int_equal(vm_registry_remove(r, a), -ENOENT);
        assert_null(vm_registry_lookup_name(r, "alpha"));
        assert_true(a->removed);
        assert_int_equal(vm_registry_count(r), 1);

        vm_unref(a);
        vm_unref(b);
        vm_registry_free(r);
}

static void test_duplicates_rejected(void **state) {
        VmRegistry *r;
        assert_int_equal(vm_registry_new(&r), 0);
        Vm *a = make_vm("alpha", "11111111-2222-3333-4444-555555555555");
        Vm *same_name = make_vm("alpha", NULL);
        Vm *same_uuid = make_vm("other", "11111111-2222-3333-4444-555555555555");
        assert_int_equal(vm_registry_add(r, a), 0);
        assert_int_equal(vm_registry_add(r, same_name), -EEXIST);
        assert_non_null(strstr(err_msg(), "named 'alpha' already exists"));
        assert_int_equal(vm_registry_add(r, same_uuid), -EEXIST);
        assert_non_null(strstr(err_msg(), "already used by VM 'alpha'"));
        assert_int_equal(vm_registry_count(r), 1);
        vm_unref(a);
        vm_unref(same_name);
        vm_unref(same_uuid);
        vm_registry_free(r);
}

static void test_capacity_bound(void **state) {
        VmRegistry *r;
        assert_int_equal(vm_registry_new(&r), 0);
        vm_registry_set_max(r, 2);
        Vm *v[3] = { make_vm("a", NULL), make_vm("b", NULL), make_vm("c", NULL) };
        assert_int_equal(vm_registry_add(r, v[0]), 0);
        assert_int_equal(vm_registry_add(r, v[1]), 0);
        assert_int_equal(vm_registry_add(r, v[2]), -ENOSPC);
        for (int i = 0; i < 3; i++)
                vm_unref(v[i]);
        vm_registry_free(r);
}

typedef struct Sitter {
        Vm *vm;
        int ms;
        pthread_t t;
        atomic_bool holding;
} Sitter;

/* Holds a VM's mutex for a long time: what a badly written slow path would do. */
static void *sit_on_vm_lock(void *arg) {
        Sitter *s = arg;
        vm_lock(s->vm);
        atomic_store(&s->holding, true);
        sleep_ms(s->ms);
        vm_unlock(s->vm);
        return NULL;
}

static void test_registry_never_waits_for_vm_lock(void **state) {
        VmRegistry *r;
        assert_int_equal(vm_registry_new(&r), 0);
        Vm *slow = make_vm("slow", "aaaaaaaa-2222-3333-4444-555555555555");
        assert_int_equal(vm_registry_add(r, slow), 0);

        Sitter s = { .vm = slow, .ms = 1500 };
        pthread_create(&s.t, NULL, sit_on_vm_lock, &s);
        while (!atomic_load(&s.holding))
                sleep_ms(1);

        /* While 'slow' is locked: adding a VM with its UUID (an incoming
         * migration of the same guest), adding other VMs, lookups and lists
         * all return at once. */
        uint64_t t0 = now_ns();
        Vm *dup = make_vm("slow-incoming", "aaaaaaaa-2222-3333-4444-555555555555");
        assert_int_equal(vm_registry_add(r, dup), -EEXIST);
        Vm *other = make_vm("other", NULL);
        assert_int_equal(vm_registry_add(r, other), 0);
        Vm *x = vm_registry_lookup_name(r, "slow");
        assert_ptr_equal(x, slow);
        vm_unref(x);
        Vm **list;
        size_t n;
        assert_int_equal(vm_registry_list(r, &list, &n), 0);
        assert_int_equal(n, 2);
        vm_registry_list_free(list, n);
        uint64_t took = now_ns() - t0;
        printf("# add/lookup/list while a VM lock was held: %.3f ms\n", (double) took / 1e6);
        assert_true(took < 100 * NSEC_PER_MSEC);
        assert_true(atomic_load(&s.holding));

        pthread_join(s.t, NULL);
        vm_unref(dup);
        vm_unref(other);
        vm_unref(slow);
        vm_registry_free(r);
}

enum { STRESS_THREADS = 6, STRESS_ROUNDS = 300 };
typedef struct StressArg {
        VmRegistry *r;
        int id;
} StressArg;

static void *stress(void *p) {
        StressArg *a = p;
        char name[32];
        for (int i = 0; i < STRESS_ROUNDS; i++) {
                snprintf(name, sizeof(name), "vm-%d-%d", a->id, i % 16);
                Vm *vm = vm_registry_lookup_name(a->r, name);
                if (vm) {
                        (void) vm_registry_remove(a->r, vm);
                        vm_unref(vm);
                } else {
                        vm = make_vm(name, NULL);
                        assert_int_equal(vm_registry_add(a->r, vm), 0);
                        vm_unref(vm);
                }
                Vm **list;
                size_t n;
                assert_int_equal(vm_registry_list(a->r, &list, &n), 0);
                vm_registry_list_free(list, n);
        }
        return NULL;
}

static void test_concurrent_add_remove_lookup(void **state) {
        VmRegistry *r;
        pthread_t t[STRESS_THREADS];
        StressArg args[STRESS_THREADS];
        assert_int_equal(vm_registry_new(&r), 0);
        for (int i = 0; i < STRESS_THREADS; i++) {
                args[i] = (StressArg){ r, i };
                pthread_create(&t[i], NULL, stress, &args[i]);
        }
        for (int i = 0; i < STRESS_THREADS; i++)
                pthread_join(t[i], NULL);
        /* each thread toggles 16 names 300 times: names 0-11 are toggled 19
         * times (present at the end), names 12-15 18 times (absent) */
        assert_int_equal(vm_registry_count(r), STRESS_THREADS * 12);
        vm_registry_free(r);
}

static void test_growth(void **state) {
        VmRegistry *r;
        char name[32];
        assert_int_equal(vm_registry_new(&r), 0);
        for (int i = 0; i < 1000; i++) {
                snprintf(name, sizeof(name), "g%04d", i);
                Vm *vm = make_vm(name, NULL);
                assert_int_equal(vm_registry_add(r, vm), 0);
                vm_unref(vm);
        }
        for (int i = 0; i < 1000; i += 97) {
                snprintf(name, sizeof(name), "g%04d", i);
                Vm *vm = vm_registry_lookup_name(r, name);
                assert_non_null(vm);
                Vm *by_uuid = vm_registry_lookup_uuid(r, vm->uuid);
                assert_ptr_equal(vm, by_uuid);
                vm_unref(by_uuid);
                vm_unref(vm);
        }
        assert_int_equal(vm_registry_count(r), 1000);
        vm_registry_free(r);
}

static void test_name_and_uuid_validation(void **state) {
        Vm *vm;
        assert_true(vm_name_is_valid("web-1.example_2"));
        assert_false(vm_name_is_valid(""));
        assert_false(vm_name_is_valid("-x"));
        assert_false(vm_name_is_valid(".x"));
        assert_false(vm_name_is_valid("a/b"));
        assert_false(vm_name_is_valid("a b"));
        assert_false(vm_name_is_valid("0123456789012345678901234567890123456789012345678901234567890123"));
        assert_true(vm_uuid_is_valid("11111111-2222-3333-4444-555555555555"));
        assert_true(vm_uuid_is_valid("ABCDEF11-2222-3333-4444-555555555555"));
        assert_false(vm_uuid_is_valid("11111111-2222-3333-4444-55555555555"));
        assert_false(vm_uuid_is_valid("11111111x2222-3333-4444-555555555555"));
        assert_false(vm_uuid_is_valid("g1111111-2222-3333-4444-555555555555"));
        char u[VM_UUID_LEN];
        vm_uuid_generate(u);
        assert_true(vm_uuid_is_valid(u));
        assert_int_equal(u[14], '4');
        assert_int_equal(vm_new("bad name", u, NULL, NULL, &vm), -EINVAL);
        assert_non_null(strstr(err_msg(), "invalid VM name 'bad name'"));
        assert_int_equal(vm_new("good", "nope", NULL, NULL, &vm), -EINVAL);
        assert_non_null(strstr(err_msg(), "invalid UUID 'nope'"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_add_lookup_remove),
                cmocka_unit_test(test_duplicates_rejected),
                cmocka_unit_test(test_capacity_bound),
                cmocka_unit_test(test_registry_never_waits_for_vm_lock),
                cmocka_unit_test(test_concurrent_add_remove_lookup),
                cmocka_unit_test(test_growth),
                cmocka_unit_test(test_name_and_uuid_validation),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
