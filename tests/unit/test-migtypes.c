/* Unit tests for core/migtypes.c: the status predicates, cell by cell
 * and over every value (a status from a newer QEMU is never taken for a
 * finished or never-started migration), and the one member list of QEMU's
 * migration parameters (migration_param_table): it covers every member of
 * MigrationParams, and a status file keeps every member.  The QMP side of
 * the same table (typed -> JSON -> QEMU 7.2's schema -> typed) is tested in
 * tests/qmp/test-qmp-schema.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "err.h"
#include "migtypes.h"
#include "every-param.h"
#include "status.h"

/* The table lists the members in struct order and leaves no gap: each
 * has_* flag starts right after the previous value (bools need no
 * alignment), each value right after its flag (after alignment), and the
 * last value ends the struct.  A member added to MigrationParams but not
 * to the table leaves a gap and fails here. */
static void test_table_covers_every_member(void **state) {
        size_t end = 0;
        (void) state;

        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                size_t align = i->kind == MIGRATION_PARAM_U64 ? alignof(uint64_t) : 1;
                size_t want_value = (i->has_offset + sizeof(bool) + align - 1) / align * align;

                assert_non_null(i->name);
                if (i->has_offset != end || i->value_offset != want_value)
                        fail_msg("member '%s' does not follow the previous one (has at %zu, want %zu; "
                                 "value at %zu, want %zu)",
                                 i->name, i->has_offset, end, i->value_offset, want_value);
                assert_true(i->kind == MIGRATION_PARAM_U64 ? i->value_size == sizeof(uint64_t)
                                                           : i->value_size > 1);
                end = i->value_offset + i->value_size;
                for (size_t j = 0; j < k; j++)
                        assert_string_not_equal(i->name, migration_param_table[j].name);
        }
        end = (end + alignof(MigrationParams) - 1) / alignof(MigrationParams) * alignof(MigrationParams);
        assert_int_equal(end, sizeof(MigrationParams));
}

/* Each of the eleven parameters the agent sets is in the table, by its QAPI
 * name and kind. */
static void test_table_has_every_agent_param(void **state) {
        static const struct {
                const char *name;
                MigrationParamKind kind;
        } want[] = {
                { "max-bandwidth", MIGRATION_PARAM_U64 },
                { "downtime-limit", MIGRATION_PARAM_U64 },
                { "cpu-throttle-initial", MIGRATION_PARAM_U64 },
                { "cpu-throttle-increment", MIGRATION_PARAM_U64 },
                { "max-cpu-throttle", MIGRATION_PARAM_U64 },
                { "multifd-channels", MIGRATION_PARAM_U64 },
                { "multifd-compression", MIGRATION_PARAM_STR },
                { "multifd-zstd-level", MIGRATION_PARAM_U64 },
                { "max-postcopy-bandwidth", MIGRATION_PARAM_U64 },
                { "tls-creds", MIGRATION_PARAM_STR },
                { "tls-hostname", MIGRATION_PARAM_STR },
        };
        (void) state;

        assert_int_equal(MIGRATION_PARAM_COUNT, sizeof(want) / sizeof(want[0]));
        for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
                size_t k = 0;
                while (k < MIGRATION_PARAM_COUNT && strcmp(migration_param_table[k].name, want[w].name))
                        k++;
                if (k == MIGRATION_PARAM_COUNT)
                        fail_msg("'%s' is not in migration_param_table", want[w].name);
                assert_int_equal(migration_param_table[k].kind, want[w].kind);
        }
}

/* Every MigrationStatus, cell by cell: terminal, active, post-copy.  A
 * status added to the enum without a row here fails. */
static void test_status_predicates_cell_by_cell(void **state) {
        static const struct {
                MigrationStatus s;
                bool terminal, active, postcopy;
        } rows[] = {
                { MIGRATION_STATUS_NONE, false, false, false },
                { MIGRATION_STATUS_SETUP, false, true, false },
                { MIGRATION_STATUS_CANCELLING, false, true, false },
                { MIGRATION_STATUS_CANCELLED, true, false, false },
                { MIGRATION_STATUS_ACTIVE, false, true, false },
                { MIGRATION_STATUS_POSTCOPY_ACTIVE, false, true, true },
                { MIGRATION_STATUS_POSTCOPY_PAUSED, false, true, true },
                { MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP, false, true, true },
                { MIGRATION_STATUS_POSTCOPY_RECOVER, false, true, true },
                { MIGRATION_STATUS_COMPLETED, true, false, false },
                { MIGRATION_STATUS_FAILED, true, false, false },
                { MIGRATION_STATUS_COLO, false, true, false },
                { MIGRATION_STATUS_PRE_SWITCHOVER, false, true, false },
                { MIGRATION_STATUS_DEVICE, false, true, false },
                { MIGRATION_STATUS_WAIT_UNPLUG, false, true, false },
                /* a newer QEMU's status: possibly in flight, so a source
                 * cancels before it resumes; never finished */
                { MIGRATION_STATUS_UNKNOWN, false, true, false },
        };
        bool seen[MIGRATION_STATUS_MAX] = { false };
        (void) state;

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                const char *name = migration_status_to_string(rows[i].s);
                if (migration_status_is_terminal(rows[i].s) != rows[i].terminal ||
                    migration_status_is_active(rows[i].s) != rows[i].active ||
                    migration_status_is_postcopy(rows[i].s) != rows[i].postcopy)
                        fail_msg("status %s: terminal %d active %d postcopy %d, want %d %d %d", name,
                                 migration_status_is_terminal(rows[i].s),
                                 migration_status_is_active(rows[i].s),
                                 migration_status_is_postcopy(rows[i].s), rows[i].terminal,
                                 rows[i].active, rows[i].postcopy);
                assert_false(seen[rows[i].s]);
                seen[rows[i].s] = true;
        }
        for (int st = 0; st < MIGRATION_STATUS_MAX; st++)
                if (!seen[st])
                        fail_msg("MigrationStatus %d (%s) has no row", st,
                                 migration_status_to_string((MigrationStatus) st));
}

/* Over every value: a status reads as "no migration in flight" only when
 * it is known to be over (terminal) or known never to have started (none).
 * Nothing is both terminal and active. */
static void test_only_known_states_are_inactive(void **state) {
        (void) state;
        for (int i = 0; i < MIGRATION_STATUS_MAX; i++) {
                MigrationStatus st = (MigrationStatus) i;
                if (!migration_status_is_active(st) && !migration_status_is_terminal(st) &&
                    st != MIGRATION_STATUS_NONE)
                        fail_msg("status %s reads as inactive without being over",
                                 migration_status_to_string(st));
                assert_false(migration_status_is_active(st) && migration_status_is_terminal(st));
        }
}

/* Strings QEMU 7.2 does not send map to UNKNOWN, which is in flight as far
 * as any caller can tell; the known names round-trip. */
static void test_future_status_strings(void **state) {
        static const char *const future[] = { "wait-unplug-2", "device-xyz", "", "ACTIVE",
                                              "completed ", "x-status-from-qemu-12" };
        (void) state;

        for (size_t i = 0; i < sizeof(future) / sizeof(future[0]); i++) {
                MigrationStatus st = migration_status_from_string(future[i]);
                assert_int_equal(st, MIGRATION_STATUS_UNKNOWN);
                assert_true(migration_status_is_active(st));
                assert_false(migration_status_is_terminal(st));
        }
        assert_string_equal(migration_status_to_string(MIGRATION_STATUS_UNKNOWN), "unknown");
        assert_int_equal(migration_status_from_string(NULL), MIGRATION_STATUS_NONE);
        for (int i = 0; i < MIGRATION_STATUS_MAX; i++)
                if (i != MIGRATION_STATUS_UNKNOWN)
                        assert_int_equal(migration_status_from_string(
                                                 migration_status_to_string((MigrationStatus) i)),
                                         i);
}

static void fill_record(VmStatusRecord *rec) {
        memset(rec, 0, sizeof(*rec));
        snprintf(rec->name, sizeof(rec->name), "web1");
        vm_uuid_generate(rec->uuid);
        rec->state = VM_STATE_PAUSED;
        rec->reason = VM_REASON_MIGRATION;
        rec->pid = getpid();
        rec->async_job = ASYNC_JOB_MIGRATION_OUT;
        rec->phase = JOB_PHASE_PERFORM;
        snprintf(rec->op_id, sizeof(rec->op_id), "op-web1");
        rec->mig.has_orig_params = true;
        tu_fill_every_param(&rec->mig.orig_params);
}

/* A status file keeps every member of the original parameters, under its
 * QAPI name, and reads back exactly what was written. */
static void test_status_file_keeps_every_param(void **state) {
        VmStatusRecord a, b;
        char *json = NULL;
        (void) state;

        fill_record(&a);
        assert_int_equal(status_record_to_json(&a, &json), 0);
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                char key[80];
                snprintf(key, sizeof(key), "\"%s\"", migration_param_table[k].name);
                if (!strstr(json, key))
                        fail_msg("status file lacks %s:\n%s", key, json);
        }
        assert_int_equal(status_record_from_json(json, strlen(json), &b), 0);
        assert_true(b.mig.has_orig_params);
        assert_memory_equal(&a.mig.orig_params, &b.mig.orig_params, sizeof(MigrationParams));
        free(json);
        status_record_clear(&a);
        status_record_clear(&b);
}

/* One member at a time: only that member is written and read back set. */
static void test_status_file_one_param_at_a_time(void **state) {
        (void) state;

        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                VmStatusRecord a, b;
                MigrationParams all;
                char *json = NULL;

                fill_record(&a);
                all = a.mig.orig_params;
                memset(&a.mig.orig_params, 0, sizeof(a.mig.orig_params));
                *migration_param_has_ref(&a.mig.orig_params, i) = true;
                memcpy((char *) &a.mig.orig_params + i->value_offset, (char *) &all + i->value_offset,
                       i->value_size);
                assert_int_equal(status_record_to_json(&a, &json), 0);
                assert_int_equal(status_record_from_json(json, strlen(json), &b), 0);
                for (size_t j = 0; j < MIGRATION_PARAM_COUNT; j++)
                        assert_int_equal(migration_param_is_set(&b.mig.orig_params, &migration_param_table[j]),
                                         j == k);
                assert_memory_equal(&a.mig.orig_params, &b.mig.orig_params, sizeof(MigrationParams));
                free(json);
                status_record_clear(&a);
                status_record_clear(&b);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_status_predicates_cell_by_cell),
                cmocka_unit_test(test_only_known_states_are_inactive),
                cmocka_unit_test(test_future_status_strings),
                cmocka_unit_test(test_table_covers_every_member),
                cmocka_unit_test(test_table_has_every_agent_param),
                cmocka_unit_test(test_status_file_keeps_every_param),
                cmocka_unit_test(test_status_file_one_param_at_a_time),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
