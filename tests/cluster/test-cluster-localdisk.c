/* Live migration of guests with local disks over QEMU's NBD server
 * (docs/migration.md, "Local disks"), between agents in network namespaces
 * talking TLS (suite 'cluster').
 *
 * The hosts of a test cluster share one file system, and a local disk
 * lives at the same path on both hosts.  So each agent gets its own folder
 * at that path: `ip netns exec` bind-mounts every entry of
 * /etc/netns/<namespace>/ over /etc/<entry> in the mount namespace it makes
 * for the agent (and the agent's QEMUs), so /etc/drover-ld-<pid> is
 * /etc/netns/<ns a>/drover-ld-<pid> for host a and the <ns b> one for host
 * b.  The test adds that folder to each agent's image roots and restarts
 * the agents; it reads each host's images through the /etc/netns paths.
 *
 * What each test asserts is what the feature promises:
 *   - a raw (48 MiB of random data) and a qcow2 local disk arrive, and
 *     come back, with the same content (sha256 of
 *     the guest-visible bytes), the source's images are gone after
 *     confirm, the guest runs once, on the destination, and the result
 *     counts the disk bytes;
 *   - a destination whose disk folder is too small (a 4 MiB tmpfs) fails
 *     the migration in prepare with a clear error, creates nothing, and
 *     the guest keeps running on the source;
 *   - MigrateTune during the copy changes the mirror's speed;
 *   - kill -9 of the source agent, or of the destination agent, while the
 *     disks are being copied (64 MiB at 8 MiB/s), the agent started again
 *     half a second later (still during the copy), ends with the guest
 *     running once on the source, its image intact, and the destination's
 *     image deleted.
 * Figures (copy rate, downtime with and without local disks) are printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "cluster.h"
#include "deadline.h"
#include "testutil.h"

#define A 0
#define B 1
#define MIB (1024.0 * 1024.0)

/* The per-host folders of one test (see the top of the file). */
static char shared_dir[128];                /* /etc/drover-ld-<pid>: the path the definition names */
static char host_dir[2][400];               /* /etc/netns/<ns>/drover-ld-<pid>: each host's real folder */
static char netns_dir[2][320];              /* /etc/netns/<ns> */
static bool netns_dir_made[2], tmpfs_mounted;

static void run(const char *cmd) {
        int r = system(cmd);
        if (r != 0)
                fail_msg("'%s' failed (%d)", cmd, r);
}

static void rm_dir_tree(const char *dir) {
        char cmd[400];
        if (!dir[0])
                return;
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        (void) !system(cmd);
}

static void folders_cleanup(void) {
        if (tmpfs_mounted && umount2(host_dir[B], MNT_DETACH) == 0)
                tmpfs_mounted = false;
        for (int i = 0; i < 2; i++) {
                rm_dir_tree(host_dir[i]);
                if (netns_dir_made[i])
                        (void) rmdir(netns_dir[i]);
                netns_dir_made[i] = false;
        }
        if (shared_dir[0])
                (void) rmdir(shared_dir);
}

static int teardown(void **state) {
        int r = cluster_fixture_teardown(state); /* the agents first: they hold the bind mounts */
        folders_cleanup();
        return r;
}

#define LD_TEST(f) cmocka_unit_test_setup_teardown(f, cluster_fixture_setup, teardown)

/* Add /etc/drover-ld-<pid> to host @i's image roots. */
static void add_image_root(Cluster *c, int i) {
        size_t len;
        char *cfg = tu_read_file(c->host[i].config, &len);
        const char *key = "\"image_roots\": [";
        char *at = cfg ? strstr(cfg, key) : NULL;
        if (!at)
                fail_msg("no image_roots in %s", c->host[i].config);
        at += strlen(key);
        FILE *f = fopen(c->host[i].config, "w");
        assert_non_null(f);
        fprintf(f, "%.*s\"%s\", %s", (int) (at - cfg), cfg, shared_dir, at);
        assert_int_equal(fclose(f), 0);
        free(cfg);
}

/* A 2-host cluster whose agents see their own folder at shared_dir; with
 * @small_dest, host b's is a 4 MiB tmpfs. */
static void up(Cluster *c, bool small_dest) {
        cluster_up(c, 2);
        snprintf(shared_dir, sizeof(shared_dir), "/etc/drover-ld-%d", (int) getpid());
        if (mkdir(shared_dir, 0700) < 0 && errno != EEXIST)
                fail_msg("mkdir %s: %s", shared_dir, strerror(errno));
        (void) mkdir("/etc/netns", 0755);
        for (int i = 0; i < 2; i++) {
                snprintf(netns_dir[i], sizeof(netns_dir[i]), "/etc/netns/%.40s", c->net.ns[i]);
                if (mkdir(netns_dir[i], 0755) == 0)
                        netns_dir_made[i] = true;
                snprintf(host_dir[i], sizeof(host_dir[i]), "%.300s/drover-ld-%d", netns_dir[i], (int) getpid());
                if (mkdir(host_dir[i], 0700) < 0)
                        fail_msg("mkdir %s: %s", host_dir[i], strerror(errno));
                add_image_root(c, i);
        }
        if (small_dest) {
                if (mount("tmpfs", host_dir[B], "tmpfs", 0, "size=4m,mode=0700") < 0)
                        fail_msg("mounting a tmpfs on %s: %s", host_dir[B], strerror(errno));
                tmpfs_mounted = true;
        }
        /* restarted: the new image root, and the bind mounts of their
         * new mount namespaces */
        for (int i = 0; i < 2; i++) {
                cluster_agent_kill9(c, i);
                assert_int_equal(cluster_agent_start(c, i, NULL), 0);
        }
}

static void host_path(int i, const char *file, char *buf, size_t size) {
        snprintf(buf, size, "%s/%s", host_dir[i], file);
}

/* sha256 of the guest-visible bytes of the image @path (qemu-img convert
 * to raw first for qcow2), "" when it does not exist. */
static void image_sha(const char *path, const char *format, char ret[65]) {
        char cmd[1200], raw[460];
        ret[0] = '\0';
        if (access(path, F_OK) != 0)
                return;
        snprintf(raw, sizeof(raw), "%s", path);
        if (strcmp(format, "qcow2") == 0) {
                snprintf(raw, sizeof(raw), "%s/sha-%d.raw", tu_tmpdir("ld"), (int) getpid());
                snprintf(cmd, sizeof(cmd), "qemu-img convert -U -f qcow2 -O raw '%s' '%s'", path, raw);
                run(cmd);
        }
        snprintf(cmd, sizeof(cmd), "sha256sum '%s'", raw);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        if (fscanf(p, "%64s", ret) != 1)
                ret[0] = '\0';
        pclose(p);
        if (raw[0] && strcmp(raw, path) != 0)
                unlink(raw);
}

/* A raw image of @mib MiB of random data at host a's @file. */
static void make_raw(const char *file, int mib) {
        char path[460], cmd[700];
        host_path(A, file, path, sizeof(path));
        snprintf(cmd, sizeof(cmd), "dd if=/dev/urandom of='%s' bs=1M count=%d status=none", path, mib);
        run(cmd);
}

/* A qcow2 image of @mib MiB at host a's @file, its first half written
 * with a pattern (qemu-io), the rest unallocated. */
static void make_qcow2(const char *file, int mib) {
        char path[460], cmd[1200];
        host_path(A, file, path, sizeof(path));
        snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 '%s' %dM && qemu-io -f qcow2 -c 'write -P 0x5a 0 %dM' "
                 "'%s' >/dev/null", path, mib, mib / 2, path);
        run(cmd);
}

/* Define and start @name on host a with the local disks @disks (a JSON
 * array's members), and wait for READY on its serial. */
static void guest_start(Cluster *c, const char *name, const char *disks) {
        char *base = test_guest_json(name, NULL, 32, "mib=8 rate=5");
        char *json = NULL;
        assert_non_null(base);
        base[strlen(base) - 1] = '\0'; /* the closing brace */
        assert_true(asprintf(&json, "%s, \"disks\": [%s]}", base, disks) > 0);
        free(base);
        cluster_guest_start_def(c, A, name, json, true);
        free(json);
}

static void disk_json(const char *file, const char *format, char *buf, size_t size) {
        snprintf(buf, size, "{\"path\": \"%s/%s\", \"format\": \"%s\", \"cache\": \"writeback\", \"storage\": \"local\"}",
                 shared_dir, file, format);
}

static void print_result(const char *what, const Drover__V1__MigrationResult *r) {
        printf("# %s: %s in %llu ms, downtime %llu ms (QEMU) / %llu ms (STOP->RESUME), memory %.1f MiB, "
               "disks %.1f MiB, phase %s\n", what, r->success ? "completed" : "FAILED",
               (unsigned long long) r->total_ms, (unsigned long long) r->downtime_ms,
               (unsigned long long) r->measured_downtime_ms, (double) r->transferred_bytes / MIB,
               (double) r->disk_bytes / MIB, r->phase);
        if (!r->success)
                printf("#   error: %s\n", r->error);
        fflush(stdout);
}

/* The copy rate the source agent @i logged last ("local disks in sync"). */
static void print_copy_rate(Cluster *c, int i) {
        char path[300];
        snprintf(path, sizeof(path), "%s/agent.log", c->host[i].dir);
        char *log = tu_read_file(path, NULL);
        const char *last = NULL;
        for (const char *p = log; p && (p = strstr(p, "local disks in sync: ")); p++)
                last = p;
        if (last)
                printf("# copy: %.*s\n", (int) strcspn(last, "\n"), last);
        fflush(stdout);
        free(log);
}

static void assert_runs_once_on(Cluster *c, const char *name, int host) {
        char why[512];
        int owner = cluster_wait_single_owner(c, name, 60000, why, sizeof(why));
        if (owner != host)
                fail_msg("guest %s: expected to run once on host %c, found: owner %d (%s)", name, 'a' + host, owner,
                         owner < 0 ? why : "");
        if (!cluster_serial_only_on(c, name, host, 3000, why, sizeof(why)))
                fail_msg("guest %s: the serial counter does not advance on host %c only: %s", name, 'a' + host, why);
}

/* A raw and a qcow2 local disk move with the guest; then, for the
 * figures, the same guest without local disks moves back. */
static void test_localdisk_migrates(void **state) {
        Cluster *c = *state;
        char d0[400], d1[400], disks[820], src[2][460], dst[2][460], sha[2][65], after[2][65];
        up(c, false);
        make_raw("ld-raw.img", 48);
        make_qcow2("ld-q.qcow2", 8);
        disk_json("ld-raw.img", "raw", d0, sizeof(d0));
        disk_json("ld-q.qcow2", "qcow2", d1, sizeof(d1));
        snprintf(disks, sizeof(disks), "%s, %s", d0, d1);
        const char *files[2] = { "ld-raw.img", "ld-q.qcow2" }, *fmts[2] = { "raw", "qcow2" };
        for (int k = 0; k < 2; k++) {
                host_path(A, files[k], src[k], sizeof(src[k]));
                host_path(B, files[k], dst[k], sizeof(dst[k]));
                image_sha(src[k], fmts[k], sha[k]);
                assert_int_not_equal(sha[k][0], 0);
        }
        guest_start(c, "ld1", disks);

        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus rs;
        Drover__V1__MigrationResult *r = cluster_migrate(c, A, B, "ld1", &p, true, &rs);
        if (!r)
                fail_msg("Migrate: %s %s", rpc_code_to_string(rs.code), rs.details);
        print_result("local disks (48 MiB raw + 8 MiB qcow2), TLS", r);
        print_copy_rate(c, A);
        assert_true(r->success);
        /* the mirrors' length: both disks' virtual sizes */
        assert_int_equal(r->disk_bytes, 56u << 20);
        drover__v1__migration_result__free_unpacked(r, NULL);
        assert_runs_once_on(c, "ld1", B);
        for (int k = 0; k < 2; k++) {
                image_sha(dst[k], fmts[k], after[k]);
                if (strcmp(after[k], sha[k]) != 0)
                        fail_msg("%s on the destination: sha256 %s, the source's was %s", files[k], after[k], sha[k]);
                if (access(src[k], F_OK) == 0)
                        fail_msg("%s is still on the source after confirm", src[k]);
        }

        /* back to a, where its images are created again: they arrive whole */
        r = cluster_migrate(c, B, A, "ld1", &p, true, &rs);
        if (!r)
                fail_msg("Migrate back: %s %s", rpc_code_to_string(rs.code), rs.details);
        print_result("local disks, back", r);
        print_copy_rate(c, B);
        assert_true(r->success);
        drover__v1__migration_result__free_unpacked(r, NULL);
        assert_runs_once_on(c, "ld1", A);
        for (int k = 0; k < 2; k++) {
                image_sha(src[k], fmts[k], after[k]);
                assert_string_equal(after[k], sha[k]);
                assert_int_not_equal(access(dst[k], F_OK), 0);
        }

        /* the figures' baseline: a guest without local disks */
        cluster_guest_start(c, A, "nold", NULL, 32, "mib=8 rate=5");
        r = cluster_migrate(c, A, B, "nold", &p, true, &rs);
        if (!r)
                fail_msg("Migrate nold: %s %s", rpc_code_to_string(rs.code), rs.details);
        print_result("no local disk (baseline), TLS", r);
        assert_true(r->success);
        assert_int_equal(r->disk_bytes, 0);
        drover__v1__migration_result__free_unpacked(r, NULL);
        c->ok = true;
}

/* No room on the destination: refused in prepare, nothing created there,
 * the guest untouched on the source. */
static void test_localdisk_no_space(void **state) {
        Cluster *c = *state;
        char d0[400], src[460], dst[460], sha[65], after[65];
        up(c, true);
        make_raw("big.img", 8);
        host_path(A, "big.img", src, sizeof(src));
        host_path(B, "big.img", dst, sizeof(dst));
        image_sha(src, "raw", sha);
        disk_json("big.img", "raw", d0, sizeof(d0));
        guest_start(c, "ldfull", d0);

        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus rs;
        Drover__V1__MigrationResult *r = cluster_migrate(c, A, B, "ldfull", &p, true, &rs);
        if (!r)
                fail_msg("Migrate: %s %s", rpc_code_to_string(rs.code), rs.details);
        print_result("destination disk folder too small", r);
        assert_false(r->success);
        if (!strstr(r->error, "MiB free: refused before anything was created"))
                fail_msg("the error does not say why: %s", r->error);
        assert_string_equal(r->phase, "prepare");
        drover__v1__migration_result__free_unpacked(r, NULL);
        assert_runs_once_on(c, "ldfull", A);
        assert_int_not_equal(access(dst, F_OK), 0);
        Drover__V1__GuestStatus *gs = NULL;
        assert_int_not_equal(cluster_guest_status(c, B, "ldfull", &gs), 0); /* no record left on b */
        image_sha(src, "raw", after);
        assert_string_equal(after, sha);
        c->ok = true;
}

/* kill -9 host @victim's agent while a 64 MiB disk is copied at 8 MiB/s,
 * start it again: the source keeps the guest on its intact disk, the
 * destination's image goes. */
static void kill_during_copy(Cluster *c, int victim) {
        char d0[400], src[460], dst[460], sha[65], after[65];
        const char *name = victim == A ? "ldks" : "ldkd";
        up(c, false);
        make_raw("copy.img", 64);
        host_path(A, "copy.img", src, sizeof(src));
        host_path(B, "copy.img", dst, sizeof(dst));
        image_sha(src, "raw", sha);
        disk_json("copy.img", "raw", d0, sizeof(d0));
        guest_start(c, name, d0);

        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        p.bandwidth_bytes_per_s = 8u << 20; /* also the mirrors' speed: ~8 s of copy */
        ClusterAsyncMigrate *m = cluster_migrate_async(c, A, B, name, &p, true);
        if (cluster_wait_phase(c, A, name, "migration-out", "storage", 30000) < 0)
                fail_msg("the source never reached the storage phase");
        sleep_ms(2000);
        Drover__V1__GuestStatus *gs = NULL;
        assert_int_equal(cluster_guest_status(c, A, name, &gs), 0);
        printf("# copying: %.1f of %.1f MiB after 2 s; kill -9 of the %s agent\n",
               (double) gs->migration->disk_transferred_bytes / MIB, (double) gs->migration->disk_total_bytes / MIB,
               victim == A ? "source" : "destination");
        fflush(stdout);
        assert_true(gs->migration->disk_transferred_bytes > 0);
        assert_true(gs->migration->disk_transferred_bytes < gs->migration->disk_total_bytes);
        assert_string_equal(gs->phase, "storage");
        uint64_t copied = gs->migration->disk_transferred_bytes;
        drover__v1__guest_status__free_unpacked(gs, NULL);
        if (victim == A) {
                /* MigrateTune moves the mirror's speed too: 8 -> 16 MiB/s */
                Drover__V1__MigrateTuneRequest tr = DROVER__V1__MIGRATE_TUNE_REQUEST__INIT;
                RpcStatus ts;
                tr.guest = (char *) name;
                tr.bandwidth_bytes_per_s = 16u << 20;
                if (cluster_call(c, A, "MigrateTune", &tr.base, (ProtobufCMessage **) &gs, &ts) < 0)
                        fail_msg("MigrateTune: %s %s", rpc_code_to_string(ts.code), ts.details);
                drover__v1__guest_status__free_unpacked(gs, NULL);
                sleep_ms(1000);
                assert_int_equal(cluster_guest_status(c, A, name, &gs), 0);
                double mib = (double) (gs->migration->disk_transferred_bytes - copied) / MIB;
                printf("# after MigrateTune to 16 MiB/s: %.1f MiB copied in the next second\n", mib);
                assert_true(mib > 11.0);
                assert_string_equal(gs->phase, "storage");
                drover__v1__guest_status__free_unpacked(gs, NULL);
        }
        assert_int_equal(access(dst, F_OK), 0); /* the destination's image exists meanwhile */
        cluster_agent_kill9(c, victim);
        /* back during the copy (its QEMU outlived it and still serves or
         * mirrors): the restarted agent settles the interrupted copy */
        sleep_ms(500);
        uint64_t t0 = now_ns();
        assert_int_equal(cluster_agent_start(c, victim, NULL), 0);
        RpcStatus rs;
        Drover__V1__MigrationResult *res = cluster_migrate_join(m, &rs);
        if (res) {
                print_result("migration with a killed agent", res);
                assert_false(res->success);
                drover__v1__migration_result__free_unpacked(res, NULL);
        }
        assert_runs_once_on(c, name, A);
        printf("# settled %.2f s after the restart: the guest runs on the source only\n",
               (double) (now_ns() - t0) / 1e9);
        Deadline d = deadline_in_ms(20000);
        while (access(dst, F_OK) == 0 && !deadline_expired(d))
                sleep_ms(100);
        if (access(dst, F_OK) == 0)
                fail_msg("the destination's image %s is still there 20 s after the guest settled", dst);
        image_sha(src, "raw", after);
        assert_string_equal(after, sha);
        for (int i = 0; i < 2; i++) {
                if (cluster_guest_status(c, i, name, &gs) == 0) {
                        assert_string_equal(gs->async_job, "none");
                        drover__v1__guest_status__free_unpacked(gs, NULL);
                }
        }
        c->ok = true;
}

static void test_localdisk_kill_source_during_copy(void **state) {
        kill_during_copy(*state, A);
}

static void test_localdisk_kill_dest_during_copy(void **state) {
        kill_during_copy(*state, B);
}

int main(void) {
        if (geteuid() != 0)
                tu_skip("cluster tests need root (network namespaces)");
        const struct CMUnitTest tests[] = {
                LD_TEST(test_localdisk_migrates),
                LD_TEST(test_localdisk_no_space),
                LD_TEST(test_localdisk_kill_source_during_copy),
                LD_TEST(test_localdisk_kill_dest_during_copy),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
