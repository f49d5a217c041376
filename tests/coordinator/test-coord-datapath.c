/* The coordinator's side of a migration's data path, in-process with FAKE
 * agents (see coord-harness.h), each test a rule of docs/coordinator.md:
 * the scheduler chooses the stream (multifd channels, zstd) of a
 * migration whose parameters leave it unset, sends it to the source agent
 * and records it with its reason in the sub-task; the source's result
 * figures (bytes on the wire, guest memory, the stream, local disks) are
 * kept in the sub-task and the store; the configuration's "defaults" fill
 * what a request leaves unset (request > config defaults > built-in);
 * and a guest's local disks lengthen its estimate, take the link in the
 * makespan's replay of admission, and show in the inventory and the
 * live figures.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "coord-harness.h"
#include "coord-stream.h"
#include "err.h"
#include "placement.h"

#define GIB 1024
#define GIB_BYTES (UINT64_C(1) << 30)
#define LINK 125000000.0 /* the harness's hosts: the default link, 1 Gbit/s */

static void assert_contains(const char *text, const char *part) {
        if (!strstr(text, part))
                fail_msg("'%s' does not contain '%s'", text, part);
}

/* The sub-task of job @id's @seq as the store has it. */
static StoreSubtask stored_sub(Coordinator *c, const char *id, int seq) {
        StoreSubtask *l, t;
        size_t n;
        assert_int_equal(c->store->ops->subtask_list(c->store, id, &l, &n), 0);
        assert_true((size_t) seq < n);
        t = l[seq];
        free(l);
        return t;
}

static int submit(Coordinator *c, const char *guest, const MigParams *p, char id[STORE_ID_MAX]) {
        CoordJobRequest req = { .kind = COORD_JOB_KIND_MIGRATE, .n_guests = 1, .guests = &guest, .to_host = "h2",
                                .failure_policy = COORD_FAILURE_POLICY_CONTINUE, .have_params = p != NULL };
        if (p)
                req.params = *p;
        CoordPlan plan;
        int r = coord_job_submit(c, &req, &plan, id);
        coord_plan_clear(&plan);
        return r;
}

/* A compressible guest on a 1 Gbit/s share between hosts of 8 CPUs gets
 * zstd on 7 channels (the source keeps a core); another guest gets the
 * channels its link calls for (one); an explicit count is kept.  Each
 * choice reaches the agent's Migrate, the sub-task (channels, compression,
 * "; stream: why" after the placement's reason, stored before the start)
 * and the history. */
static void test_stream_is_chosen_sent_and_recorded(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-stream-sched", 2, mem);
        char id[STORE_ID_MAX];
        MigParams got;
        c->cfg.n_compressible = 1;
        snprintf(c->cfg.compressible[0], sizeof(c->cfg.compressible[0]), "z1");
        ch_guest("h1", "z1", 1 * GIB);
        ch_guest("h1", "p1", 1 * GIB);
        ch_guest("h1", "e1", 1 * GIB);

        assert_int_equal(submit(c, "z1", NULL, id), 0);
        ch_tick(c);
        assert_true(fake_migrate_params("z1", &got));
        assert_int_equal(got.compression, MIG_COMPRESSION_ZSTD);
        assert_int_equal(got.multifd_channels, 7);
        StoreSubtask t = stored_sub(c, id, 0); /* stored with its start */
        assert_int_equal(t.multifd_channels, 7);
        assert_int_equal(t.compression, MIG_COMPRESSION_ZSTD);
        assert_contains(t.reason, "requested destination");
        assert_contains(t.reason, COORD_STREAM_MARK "zstd on 7 multifd channels");
        assert_true(ch_history_has(c, id, "stream: zstd on 7 multifd channels"));
        fake_mig_end("z1", true, NULL, true);
        ch_tick(c);

        assert_int_equal(submit(c, "p1", NULL, id), 0);
        ch_tick(c);
        assert_true(fake_migrate_params("p1", &got));
        assert_int_equal(got.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(got.multifd_channels, 1);
        t = ch_sub(c, id, "p1");
        assert_int_equal(t.multifd_channels, 1);
        assert_contains(t.reason, COORD_STREAM_MARK "1 multifd channel(s) for 125 MB/s; no compression");
        fake_mig_end("p1", true, NULL, true);
        ch_tick(c);

        MigParams three = { .multifd_channels = 3 };
        assert_int_equal(submit(c, "e1", &three, id), 0);
        ch_tick(c);
        assert_true(fake_migrate_params("e1", &got));
        assert_int_equal(got.multifd_channels, 3);
        assert_int_equal(got.compression, MIG_COMPRESSION_NONE);
        t = ch_sub(c, id, "e1");
        assert_int_equal(t.multifd_channels, 3);
        assert_contains(t.reason, COORD_STREAM_MARK "as the job's parameters ask: 3 multifd channel(s)");
        ch_free(c);
}

/* The source's result figures end in the sub-task, in memory and in the
 * store: guest memory, bytes sent and on multifd, local disks, and the
 * stream as the source reports it (here fewer channels than chosen: the
 * destination set up 4). */
static void test_result_figures_are_kept(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-figures", 2, mem);
        char id[STORE_ID_MAX];
        c->cfg.n_compressible = 1;
        snprintf(c->cfg.compressible[0], sizeof(c->cfg.compressible[0]), "g1");
        ch_guest("h1", "g1", 4 * GIB);
        assert_int_equal(submit(c, "g1", NULL, id), 0);
        ch_tick(c);
        LinkMigResult f = { .guest_memory_bytes = 4 * GIB_BYTES, .transferred = 3 * GIB_BYTES,
                            .multifd_bytes = 2 * GIB_BYTES, .multifd_channels = 4,
                            .compression = MIG_COMPRESSION_ZSTD, .disk_bytes = 20 * GIB_BYTES };
        fake_mig_figures("g1", &f);
        fake_mig_end("g1", true, NULL, true);
        ch_tick(c);
        StoreSubtask mine = ch_sub(c, id, "g1"), st = stored_sub(c, id, 0);
        assert_int_equal(mine.phase, COORD_SUBTASK_PHASE_SUCCEEDED);
        for (int i = 0; i < 2; i++) {
                const StoreSubtask *t = i ? &st : &mine;
                assert_int_equal(t->guest_memory_bytes, 4 * GIB_BYTES);
                assert_int_equal(t->transferred_bytes, 3 * GIB_BYTES);
                assert_int_equal(t->multifd_bytes, 2 * GIB_BYTES);
                assert_int_equal(t->multifd_channels, 4);
                assert_int_equal(t->compression, MIG_COMPRESSION_ZSTD);
                assert_int_equal(t->disk_bytes, 20 * GIB_BYTES);
        }
        ch_free(c);
}

/* The merge itself: what the request sets wins, what it leaves unset comes
 * from the configuration's defaults, and a default that cannot go with
 * the request's own choice is not taken. */
static void test_defaults_fill_only_unset_members(void **state) {
        MigParams d = { .downtime_ms = 300, .max_downtime_ms = 4000, .auto_converge = true,
                        .transport = MIG_TRANSPORT_SSH, .compression = MIG_COMPRESSION_ZSTD, .zstd_level = 3,
                        .bandwidth = 50000000 };
        MigParams p;
        coord_params_merge(&(MigParams){ .downtime_ms = 500 }, &d, &p);
        assert_int_equal(p.downtime_ms, 500);
        assert_int_equal(p.max_downtime_ms, 4000);
        assert_true(p.auto_converge);
        assert_int_equal(p.transport, MIG_TRANSPORT_SSH);
        assert_int_equal(p.compression, MIG_COMPRESSION_ZSTD);
        assert_int_equal(p.zstd_level, 3);
        assert_int_equal(p.bandwidth, 50000000);
        assert_int_equal(mig_params_validate(&p), 0);
        /* no parameters at all: the defaults */
        coord_params_merge(NULL, &d, &p);
        assert_int_equal(p.downtime_ms, 300);
        assert_int_equal(p.compression, MIG_COMPRESSION_ZSTD);
        /* the request's post-copy or one stream excludes the default's compression */
        coord_params_merge(&(MigParams){ .postcopy = POSTCOPY_POLICY_ALLOWED }, &d, &p);
        assert_int_equal(p.postcopy, POSTCOPY_POLICY_ALLOWED);
        assert_int_equal(p.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(p.zstd_level, 0);
        assert_int_equal(mig_params_validate(&p), 0);
        coord_params_merge(&(MigParams){ .multifd_channels = 1 }, &d, &p);
        assert_int_equal(p.compression, MIG_COMPRESSION_NONE);
        assert_int_equal(mig_params_validate(&p), 0);
        /* the request's compression excludes the default's post-copy and one stream */
        MigParams d2 = { .postcopy = POSTCOPY_POLICY_AFTER, .postcopy_after_s = 20, .multifd_channels = 1 };
        coord_params_merge(&(MigParams){ .compression = MIG_COMPRESSION_ZSTD }, &d2, &p);
        assert_int_equal(p.postcopy, POSTCOPY_POLICY_NEVER);
        assert_int_equal(p.postcopy_after_s, 0);
        assert_int_equal(p.multifd_channels, 0);
        assert_int_equal(mig_params_validate(&p), 0);
        /* post-copy and several channels: the request's choice of either wins over the default of the other */
        MigParams d3 = { .postcopy = POSTCOPY_POLICY_ALLOWED, .multifd_channels = 4 };
        coord_params_merge(&(MigParams){ .multifd_channels = 2 }, &d3, &p);
        assert_int_equal(p.multifd_channels, 2);
        assert_int_equal(p.postcopy, POSTCOPY_POLICY_NEVER);
        assert_int_equal(mig_params_validate(&p), 0);
        coord_params_merge(&(MigParams){ .postcopy = POSTCOPY_POLICY_AFTER, .postcopy_after_s = 9 }, &d3, &p);
        assert_int_equal(p.postcopy, POSTCOPY_POLICY_AFTER);
        assert_int_equal(p.multifd_channels, 0);
        assert_int_equal(mig_params_validate(&p), 0);
}

/* A request with parameters (as droverctl always sends) still gets the
 * configuration's defaults for the members it left unset, in the job's
 * stored parameters and in the agent's Migrate; a request whose own
 * members contradict each other is refused before anything is planned. */
static void test_config_defaults_reach_requests_with_parameters(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-defaults", 2, mem);
        char id[STORE_ID_MAX];
        MigParams got;
        c->cfg.defaults.downtime_ms = 700;
        c->cfg.defaults.auto_converge = true;
        ch_guest("h1", "g1", 1 * GIB);
        MigParams bw = { .bandwidth = 100 << 20 };
        assert_int_equal(submit(c, "g1", &bw, id), 0);
        assert_contains(ch_job(c, id).params_json, "\"downtime_ms\":700");
        assert_contains(ch_job(c, id).params_json, "\"auto_converge\":true");
        ch_tick(c);
        assert_true(fake_migrate_params("g1", &got));
        assert_int_equal(got.downtime_ms, 700);
        assert_true(got.auto_converge);
        assert_int_equal(got.bandwidth, 100 << 20);
        fake_mig_end("g1", true, NULL, true);
        ch_tick(c);

        MigParams bad = { .compression = MIG_COMPRESSION_ZSTD, .multifd_channels = 1 };
        assert_int_equal(submit(c, "g1", &bad, id), -EINVAL);
        assert_contains(err_msg(), "over the configuration's defaults");
        assert_contains(err_msg(), "needs multifd");
        ch_free(c);
}

/* Local disks: the estimate adds the disks at the link's rate (the guest's
 * memory writes do not slow that copy), and in the makespan a guest's
 * disks hold its share of the link (and its slots) until copied, so two
 * guests off one link take as long as all their bytes over it. */
static void test_local_disks_lengthen_the_estimate_and_take_the_link(void **state) {
        double mem_only = place_estimate_s(1024, 0, 125000000);
        double with = place_estimate_disk_s(1024, 10 * GIB_BYTES, 0, 125000000);
        assert_float_equal(with - mem_only, 10.0 * (double) GIB_BYTES / LINK, 1e-9);
        /* dirtying slows the memory, not the disks */
        assert_float_equal(place_estimate_disk_s(1024, 10 * GIB_BYTES, 25000000, 125000000) -
                                   place_estimate_s(1024, 25000000, 125000000),
                           10.0 * (double) GIB_BYTES / LINK, 1e-9);

        PlaceHost hosts[3] = { { .name = "a" }, { .name = "b" }, { .name = "c" } };
        unsigned out[3] = { 2, 2, 2 }, in[3] = { 2, 2, 2 };
        PlaceLimits lim = { .max_outgoing = out, .max_incoming = in };
        PlaceFlow flows[2] = { { .source = 0, .destination = 1, .memory_mib = 1024, .disk_bytes = 10 * GIB_BYTES },
                               { .source = 0, .destination = 2, .memory_mib = 1024 } };
        double t, t_mem;
        assert_int_equal(place_makespan_s(hosts, 3, flows, 2, &lim, &t), 0);
        assert_float_equal(t, 12.0 * (double) GIB_BYTES / LINK + 0.5, 1e-6);
        flows[0].disk_bytes = 0;
        assert_int_equal(place_makespan_s(hosts, 3, flows, 2, &lim, &t_mem), 0);
        assert_float_equal(t_mem, 2.0 * (double) GIB_BYTES / LINK + 0.5, 1e-6);
}

/* The engine: a guest's local disks are in the inventory's guest listing,
 * lengthen its sub-task's estimate and the plan's makespan, and the
 * source's figures of their copy reach the job's live figures. */
static void test_local_disks_in_inventory_plan_and_progress(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-disks", 2, mem);
        char id[STORE_ID_MAX], id2[STORE_ID_MAX];
        ch_guest("h1", "d1", 1 * GIB);
        ch_guest("h1", "m1", 1 * GIB);
        fake_guest_disks("d1", 10 * GIB_BYTES);
        coord_inventory_refresh(c);
        CoordGuestView *v;
        size_t n;
        assert_int_equal(coord_guests(c, "h1", &v, &n), 0);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(v[i].local_disk_bytes, strcmp(v[i].name, "d1") == 0 ? 10 * GIB_BYTES : 0);
        free(v);

        assert_int_equal(submit(c, "d1", NULL, id), 0);
        assert_int_equal(submit(c, "m1", NULL, id2), 0);
        double ed = ch_sub(c, id, "d1").estimated_s, em = ch_sub(c, id2, "m1").estimated_s;
        assert_float_equal(ed - em, 10.0 * (double) GIB_BYTES / LINK, 1e-6);

        ch_tick(c);
        fake_mig_disks("d1", 10 * GIB_BYTES, 3 * GIB_BYTES);
        ch_tick(c);
        CoordJobView jv;
        assert_int_equal(coord_job_get(c, id, false, &jv), 0);
        assert_non_null(jv.live);
        assert_int_equal(jv.live[0].disk_total, 10 * GIB_BYTES);
        assert_int_equal(jv.live[0].disk_transferred, 3 * GIB_BYTES);
        coord_job_view_clear(&jv);
        ch_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_stream_is_chosen_sent_and_recorded),
                cmocka_unit_test(test_result_figures_are_kept),
                cmocka_unit_test(test_defaults_fill_only_unset_members),
                cmocka_unit_test(test_config_defaults_reach_requests_with_parameters),
                cmocka_unit_test(test_local_disks_lengthen_the_estimate_and_take_the_link),
                cmocka_unit_test(test_local_disks_in_inventory_plan_and_progress),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
