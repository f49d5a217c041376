/* Local-disk migration keeps every acknowledged write, proven by a real
 * Linux guest (suite 'cluster', issue 15).
 *
 * The guest is tests/linux-guest's in its disk log mode (`drover.disklog=1`,
 * tests/linux-guest/README.md): it writes a chained checksum record into
 * block N of its virtio disk every 150 ms, O_DIRECT | O_DSYNC plus
 * fdatasync, and only then prints `ACK seq=N sum=S` on its serial console.
 * The checker (tests/lib/disklog.h) reads an image and proves that it holds
 * records 0..K, intact and chained, nothing but zeros after them, and every
 * acknowledged (seq, sum) of the consoles given.  The console is always
 * copied before the image is read, so an acknowledgement printed while the
 * image is read cannot count against it.
 *
 *   - disklog_single_host: no migration (the guest, the writer and the
 *     checker on their own): start on host a with a plain raw disk, collect
 *     ACKs, check the image while the guest runs, paused, and after it is
 *     destroyed.
 *   - local_disk_migration_keeps_every_ack: the disk is marked
 *     `"storage": "local"`; the guest runs on a and writes; it migrates to b
 *     (the disk copied over NBD before memory); afterwards the guest writes
 *     on b (higher sequence numbers on b's console, none new on a's), runs
 *     exactly once, a's image is gone after confirm, and b's image holds
 *     every write acknowledged on either console, checked while running and
 *     again with the guest paused.
 *
 * A local disk has the same path on both hosts, and here the hosts share
 * one file system.  So the image lives in a folder every agent may use
 * ($DROVER_TEST_IMAGE_ROOT, agentd-util.h), and host b's agent sees a
 * tmpfs of its own there: `ip netns exec` gave it a mount namespace (a
 * slave of ours, so nothing mounted in it shows here), and the test mounts
 * the tmpfs inside it.  Host a's view is ours; b's image is read through
 * /proc/<b's agent>/root.
 * Host folders, agents with TLS and network namespaces are cluster.h's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "cluster.h"
#include "deadline.h"
#include "disklog.h"
#include "qemuproc.h"
#include "testutil.h"

#define A 0
#define B 1
#define MEM_MIB 160
#define DISK_MIB 16
#define DISKLOG_APPEND "drover.disklog=1 drover.disklog_ms=150"

static TestLinuxGuest lg;

static double secs_since(uint64_t t0_ns) {
        return (double) (now_ns() - t0_ns) / 1e9;
}

static const char *serial_path(Cluster *c, int i, const char *name) {
        char file[128];
        snprintf(file, sizeof(file), "run/%s.serial", name);
        return tu_path(c->host[i].dir, file);
}

/* A sparse raw image of DISK_MIB in @dir (one of the agents' image roots). */
static void make_image(const char *dir, const char *file, char *ret_path, size_t size) {
        snprintf(ret_path, size, "%s/%s", dir, file);
        int fd = open(ret_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t) DISK_MIB << 20) < 0)
                fail_msg("creating %s: %s", ret_path, strerror(errno));
        close(fd);
}

/* Define and start the Linux guest in its disk log mode on host @i with
 * the one disk @disk_path, `"storage": "local"` when @local. */
static void guest_start(Cluster *c, int i, const char *name, const char *disk_path, bool local) {
        char disks[700];
        snprintf(disks, sizeof(disks), "[{\"path\": \"%s\", \"format\": \"raw\"%s}]", disk_path,
                 local ? ", \"storage\": \"local\"" : "");
        char *json = test_linux_guest_json_ex(name, &lg, MEM_MIB, DISKLOG_APPEND, disks);
        assert_non_null(json);
        cluster_guest_start_def(c, i, name, json, false);
        free(json);
}

/* A guest RPC taking a GuestRef and answering a GuestStatus (Suspend, Destroy). */
static void guest_call(Cluster *c, int i, const char *method, const char *name) {
        RpcStatus st;
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GuestStatus *gs = NULL;
        ref.guest = (char *) name;
        if (cluster_call(c, i, method, &ref.base, (ProtobufCMessage **) &gs, &st) < 0)
                fail_msg("%s %s on host %c: %s %s", method, name, 'a' + i, rpc_code_to_string(st.code), st.details);
        drover__v1__guest_status__free_unpacked(gs, NULL);
}

/* Scan host @i's console of @name (no image); fails the test on a
 * DISKLOG ERROR line. */
static DisklogAcks acks_on(Cluster *c, int i, const char *name) {
        DisklogAcks a;
        int r = disklog_acks_scan(serial_path(c, i, name), NULL, &a, NULL, 0);
        if (r < 0 && r != -ENOENT)
                fail_msg("reading host %c's console of %s: %s", 'a' + i, name, strerror(-r));
        if (r == -ENOENT)
                memset(&a, 0, sizeof(a));
        if (a.errors) {
                char *text = tu_read_file(serial_path(c, i, name), NULL);
                fail_msg("the disk log writer of %s on host %c reports an error; console:\n%s", name, 'a' + i,
                         text ? text : "");
        }
        return a;
}

/* Wait until host @i's console of @name shows an ACK with seq >= @seq. */
static DisklogAcks wait_ack(Cluster *c, int i, const char *name, uint64_t seq, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                DisklogAcks a = acks_on(c, i, name);
                if (a.count && a.last >= seq)
                        return a;
                if (deadline_expired(d)) {
                        char *text = tu_read_file(serial_path(c, i, name), NULL);
                        fail_msg("host %c's console of %s shows no ACK seq>=%" PRIu64 " after %d ms (%" PRIu64
                                 " ACKs, last %" PRIu64 "); console:\n%s",
                                 'a' + i, name, seq, timeout_ms, a.count, a.last, text ? text : "(none)");
                }
                sleep_ms(50);
        }
}

/* Whether the file at @path ends with an unfinished line. */
static bool ends_mid_line(const char *path) {
        size_t len = 0;
        char *text = tu_read_file(path, &len);
        bool mid = text && len && text[len - 1] != '\n';
        free(text);
        return mid;
}

/* Copy host @i's console of @name to @snap (so that the image read next is
 * at least as new as every ACK in the copy); "" when there is none. */
static void snapshot_console(Cluster *c, int i, const char *name, const char *snap) {
        size_t len = 0;
        char *text = tu_read_file(serial_path(c, i, name), &len);
        FILE *f = fopen(snap, "w");
        if (!f || (text && fwrite(text, 1, len, f) != len) || fclose(f) != 0)
                fail_msg("writing %s: %s", snap, strerror(errno));
        free(text);
}

/* Compare the image at @image with the consoles of @name on the hosts
 * @hosts[0..n), copied first: 0 when it holds every acknowledged write,
 * -EBADMSG with the first it lacks in @why (the image's own damage, if
 * any, is in img->error).  *img is read (disklog_image_done() it), the
 * ACK count and the last seq acknowledged go to *ret_acks, *ret_last. */
static int image_vs_consoles(Cluster *c, const char *name, const int *hosts, int n, const char *image,
                             DisklogImage *img, uint64_t *ret_acks, uint64_t *ret_last, char *why, size_t why_size) {
        const char *dir = tu_tmpdir("disklog-snap");
        char snaps[2][512];
        assert_true(n <= 2);
        for (int k = 0; k < n; k++) {
                snprintf(snaps[k], sizeof(snaps[k]), "%s/host-%c.serial", dir, 'a' + hosts[k]);
                snapshot_console(c, hosts[k], name, snaps[k]);
        }
        int r = disklog_image_read(image, img);
        if (r < 0)
                fail_msg("reading %s: %s", image, strerror(-r));
        uint64_t acks = 0, last = 0;
        int missing = 0;
        for (int k = 0; k < n; k++) {
                DisklogAcks a;
                char w[300];
                r = disklog_acks_scan(snaps[k], img, &a, w, sizeof(w));
                if (r < 0 && r != -EBADMSG)
                        fail_msg("reading %s: %s", snaps[k], strerror(-r));
                if (r == -EBADMSG && !missing) {
                        missing = r;
                        snprintf(why, why_size, "console of host %c: %s", 'a' + hosts[k], w);
                }
                acks += a.count;
                last = a.count && a.last > last ? a.last : last;
        }
        *ret_acks = acks;
        *ret_last = last;
        return missing;
}

/* The image at @image holds every write acknowledged on the consoles of
 * @name on the hosts @hosts[0..n): consistent, and each ACK's record with
 * its sum.  Returns the number of records; the ACKs seen in *ret_acks. */
static uint64_t assert_image_holds_acks(Cluster *c, const char *name, const int *hosts, int n, const char *image,
                                        const char *when, uint64_t *ret_acks) {
        DisklogImage img;
        uint64_t acks, last;
        char why[400];
        if (image_vs_consoles(c, name, hosts, n, image, &img, &acks, &last, why, sizeof(why)) < 0)
                fail_msg("%s: an acknowledged write is not in %s: %s", when, image, why);
        if (img.error[0])
                fail_msg("%s: %s is damaged: %s", when, image, img.error);
        printf("# %s: %s holds records 0..%" PRId64 " (%.1f s of writes), %" PRIu64
               " ACKs on the console%s, the last seq=%" PRIu64 "\n",
               when, image, (int64_t) img.records - 1, (double) (img.last_ns - img.first_ns) / 1e9, acks,
               n > 1 ? "s" : "", last);
        fflush(stdout);
        assert_true(acks > 0);
        assert_true(img.records > last);
        uint64_t records = img.records;
        disklog_image_done(&img);
        if (ret_acks)
                *ret_acks = acks;
        return records;
}

/* Copy the file @src to @dst (a few MiB). */
static void copy_file(const char *src, const char *dst) {
        size_t len = 0;
        char *data = tu_read_file(src, &len);
        FILE *f = data ? fopen(dst, "w") : NULL;
        if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
                fail_msg("copying %s to %s: %s", src, dst, strerror(errno));
        free(data);
}

/* Mount a tmpfs on @dir in the mount namespace of host @i's agent (its
 * QEMUs and qemu-img inherit it).  Fails the test when the agent shares
 * our namespace (a mount there would hide @dir from every host). */
static void private_folder(Cluster *c, int i, const char *dir) {
        char ns[64], mine[64] = "", theirs[64] = "";
        snprintf(ns, sizeof(ns), "/proc/%d/ns/mnt", (int) c->host[i].agent.pid);
        if (readlink("/proc/self/ns/mnt", mine, sizeof(mine) - 1) < 0 || readlink(ns, theirs, sizeof(theirs) - 1) < 0)
                fail_msg("reading the mount namespaces of the test and of host %c's agent: %s", 'a' + i,
                         strerror(errno));
        if (strcmp(mine, theirs) == 0)
                fail_msg("host %c's agent runs in the test's mount namespace (%s): it cannot get a folder of its own",
                         'a' + i, mine);
        int fd = open(ns, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                fail_msg("%s: %s", ns, strerror(errno));
        pid_t pid = fork(); /* setns(CLONE_NEWNS) wants a single-threaded caller */
        if (pid == 0) {
                if (setns(fd, CLONE_NEWNS) < 0)
                        _exit(10);
                if (mount("drover-test", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=0711") < 0)
                        _exit(11);
                _exit(0);
        }
        close(fd);
        int status = 0;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fail_msg("mounting a tmpfs on %s in host %c's mount namespace failed (%s, status %d)", dir, 'a' + i,
                         pid < 0 ? strerror(errno) : "setns=10, mount=11", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        /* a file made in the agent's view is not in ours */
        char probe[400];
        snprintf(probe, sizeof(probe), "/proc/%d/root%s/probe", (int) c->host[i].agent.pid, dir);
        int pfd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (pfd < 0)
                fail_msg("creating %s: %s", probe, strerror(errno));
        close(pfd);
        if (access(tu_path(dir, "probe"), F_OK) == 0)
                fail_msg("%s shows in the test's %s: host %c's folder is not its own", probe, dir, 'a' + i);
        unlink(probe);
}

/* disks[0].path of @name's definition on host @i. */
static void disk_path_on(Cluster *c, int i, const char *name, char *ret, size_t size) {
        RpcStatus st;
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GetGuestResponse *g = NULL;
        ref.guest = (char *) name;
        if (cluster_call(c, i, "GetGuest", &ref.base, (ProtobufCMessage **) &g, &st) < 0)
                fail_msg("GetGuest %s on host %c: %s %s", name, 'a' + i, rpc_code_to_string(st.code), st.details);
        struct json_object *def = json_tokener_parse(g->definition_json);
        const char *path = cj_str(cj_idx(cj_get(def, "disks"), 0), "path");
        if (!path || !*path)
                fail_msg("host %c's definition of %s has no disks[0].path: %s", 'a' + i, name, g->definition_json);
        snprintf(ret, size, "%s", path);
        json_object_put(def);
        drover__v1__get_guest_response__free_unpacked(g, NULL);
}

/* What watch_migration() saw. */
typedef struct MigrationWatch {
        Drover__V1__MigrationResult *result; /* done (free it) */
        char phases[160];                    /* the source's phases in order, e.g. "begin storage perform" */
        uint64_t acks_during;                /* new ACKs on a's console while it ran */
        uint64_t acks_in_storage;            /* of them, while the source showed phase storage */
} MigrationWatch;

/* Follow @name's migration on source host @i every 50 ms until it is
 * done: its phases, and the guest's ACKs meanwhile.  Fails the test after
 * @timeout_ms. */
static MigrationWatch watch_migration(Cluster *c, int i, const char *name, int timeout_ms) {
        MigrationWatch w = { 0 };
        Deadline d = deadline_in_ms(timeout_ms);
        uint64_t start = acks_on(c, i, name).count, last = start;
        for (;;) {
                Drover__V1__GuestStatus *st;
                const char *phase = "";
                if (cluster_guest_status(c, i, name, &st) == 0) {
                        if (strcmp(st->async_job, "migration-out") == 0) {
                                size_t len = strlen(w.phases);
                                const char *tail = strrchr(w.phases, ' ');
                                tail = tail ? tail + 1 : w.phases;
                                if (strcmp(tail, st->phase) != 0 && len + strlen(st->phase) + 2 < sizeof(w.phases))
                                        snprintf(w.phases + len, sizeof(w.phases) - len, "%s%s", len ? " " : "",
                                                 st->phase);
                                phase = strcmp(st->phase, "storage") == 0 ? "storage" : "";
                        }
                        drover__v1__guest_status__free_unpacked(st, NULL);
                }
                uint64_t now = acks_on(c, i, name).count;
                if (*phase)
                        w.acks_in_storage += now - last;
                last = now;
                Drover__V1__MigrationResult *r = cluster_get_migration(c, i, name);
                if (r && r->done) {
                        w.result = r;
                        w.acks_during = acks_on(c, i, name).count - start;
                        return w;
                }
                if (r)
                        drover__v1__migration_result__free_unpacked(r, NULL);
                if (deadline_expired(d))
                        fail_msg("the migration of %s is not done after %d ms (phases seen: %s)", name, timeout_ms,
                                 w.phases);
                sleep_ms(50);
        }
}

/* ---- the guest, the writer and the checker on one host ----------------------------------- */

static void test_disklog_single_host(void **state) {
        Cluster *c = *state;
        const char *name = "dl1";
        char image[300];
        const int hosts[] = { A };
        cluster_up(c, 1);
        make_image(c->host[A].dir, "dl1.img", image, sizeof(image));
        uint64_t t0 = now_ns();
        guest_start(c, A, name, image, false);
        wait_ack(c, A, name, 0, 30000);
        double first = secs_since(t0);
        DisklogAcks a = wait_ack(c, A, name, 12, 30000);
        double rate = (double) (a.last - a.first) / (secs_since(t0) - first);
        printf("# first ACK %.2f s after Start, then %.1f records/s (%" PRIu64 " LATE lines)\n", first, rate, a.late);
        assert_true(a.started);
        assert_int_equal(a.gaps, 0);
        assert_int_equal(a.first, 0);

        uint64_t acks;
        uint64_t running = assert_image_holds_acks(c, name, hosts, 1, image, "running", &acks);
        guest_call(c, A, "Suspend", name);
        uint64_t paused = assert_image_holds_acks(c, name, hosts, 1, image, "paused", &acks);
        assert_true(paused >= running);
        /* paused: every record written was acknowledged, or is the one in flight */
        assert_true(paused <= acks + 1);
        guest_call(c, A, "Destroy", name);
        uint64_t destroyed = assert_image_holds_acks(c, name, hosts, 1, image, "destroyed", NULL);
        assert_int_equal(destroyed, paused);
        c->ok = true;
}

/* ---- local-disk migration ------------------------------------------------------------------ */

static void test_local_disk_migration_keeps_every_ack(void **state) {
        Cluster *c = *state;
        const char *name = "ldl";
        char src_image[300], dst_image[300], b_view[400], why[512];
        const char *disks = tu_tmpdir("ldl-disks");
        setenv("DROVER_TEST_IMAGE_ROOT", disks, 1);
        cluster_up(c, 2);
        private_folder(c, B, disks);
        make_image(disks, "ldl.img", src_image, sizeof(src_image));
        guest_start(c, A, name, src_image, true);
        DisklogAcks before = wait_ack(c, A, name, 8, 30000);

        /* what a copy that missed the writes made during the migration
         * would hold: the check below must tell it from the real one */
        char stale[400];
        snprintf(stale, sizeof(stale), "%s/stale.img", tu_tmpdir("ldl-stale"));
        copy_file(src_image, stale);

        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus rs;
        uint64_t t0 = now_ns();
        Drover__V1__MigrationResult *res = cluster_migrate(c, A, B, name, &p, false, &rs);
        if (!res)
                fail_msg("Migrate: %s %s", rpc_code_to_string(rs.code), rs.details);
        drover__v1__migration_result__free_unpacked(res, NULL);
        MigrationWatch w = watch_migration(c, A, name, 120000);
        res = w.result;
        double wall = secs_since(t0);
        printf("# a->b with a %d MiB local disk: %s in %.2f s (total %" PRIu64 " ms, downtime %" PRIu64
               " ms), %.1f MiB of disk, %.1f MiB in all, phase %s; phases seen: %s\n",
               DISK_MIB, res->success ? "completed" : "FAILED", wall, res->total_ms, res->measured_downtime_ms,
               (double) res->disk_bytes / (1 << 20), (double) res->transferred_bytes / (1 << 20), res->phase,
               w.phases);
        printf("#   the guest acknowledged %" PRIu64 " writes on a while the migration ran, %" PRIu64
               " of them while the disk was copied (phase storage)\n",
               w.acks_during, w.acks_in_storage);
        fflush(stdout);
        if (!res->success)
                fail_msg("migration failed: %s", res->error);
        assert_string_equal(res->phase, "confirm");
        assert_true(w.acks_during > 0); /* the guest wrote while it migrated */
        /* the whole disk went over (its virtual size at least) */
        assert_true(res->disk_bytes >= (uint64_t) DISK_MIB << 20);
        drover__v1__migration_result__free_unpacked(res, NULL);

        /* the guest runs exactly once, on b, and keeps writing there only */
        int owner = cluster_wait_single_owner(c, name, 10000, why, sizeof(why));
        if (owner != B)
                fail_msg("%s does not run exactly once on host b: %s", name, owner < 0 ? why : "it runs on host a");
        DisklogAcks on_a = acks_on(c, A, name);
        assert_true(on_a.last >= before.last);
        DisklogAcks on_b = wait_ack(c, B, name, on_a.last + 10, 20000);
        DisklogAcks on_a2 = acks_on(c, A, name);
        printf("# acknowledged: seq 0..%" PRIu64 " on a (%" PRIu64 " ACKs), then %" PRIu64 "..%" PRIu64
               " on b (%" PRIu64 " ACKs, %" PRIu64 " LATE lines)\n",
               on_a.last, on_a.count, on_b.first, on_b.last, on_b.count, on_b.late);
        assert_int_equal(on_a2.count, on_a.count); /* nothing new on the source */
        /* b goes on where a stopped, skipping none; but the switch-over may
         * cut one ACK line in two (its start on a's console, its end on
         * b's), and then neither holds it whole */
        bool split = ends_mid_line(serial_path(c, A, name));
        if (on_b.first != on_a.last + 1 && !(split && on_b.first == on_a.last + 2))
                fail_msg("b's first ACK is seq=%" PRIu64 ", a's last seq=%" PRIu64 "%s", on_b.first, on_a.last,
                         split ? " (a's console ends mid-line)" : "");
        assert_int_equal(on_a.gaps + on_b.gaps, 0);

        /* b's definition names the same path, which b sees in its own
         * folder; the source's image is removed after confirm */
        disk_path_on(c, B, name, dst_image, sizeof(dst_image));
        assert_string_equal(dst_image, src_image);
        snprintf(b_view, sizeof(b_view), "/proc/%d/root%s", (int) c->host[B].agent.pid, dst_image);
        Deadline gone = deadline_in_ms(10000);
        while (access(src_image, F_OK) == 0)
                if (deadline_expired(gone))
                        fail_msg("the source's image %s is still there 10 s after confirm", src_image);
                else
                        sleep_ms(50);
        if (access(b_view, F_OK) < 0)
                fail_msg("host b has no image at %s (%s)", dst_image, strerror(errno));

        /* b's image holds every write acknowledged on either host */
        const int both[] = { A, B };
        uint64_t acks;
        uint64_t running = assert_image_holds_acks(c, name, both, 2, b_view, "on b, running", &acks);
        guest_call(c, B, "Suspend", name);
        uint64_t paused = assert_image_holds_acks(c, name, both, 2, b_view, "on b, paused", &acks);
        assert_true(paused >= running);
        assert_true(paused <= acks + 1 + split);

        /* the check can fail: the copy taken before the migration (while the
         * guest wrote: its last block may be torn) lacks the writes
         * acknowledged since */
        DisklogImage img;
        uint64_t stale_acks, stale_last;
        assert_int_equal(image_vs_consoles(c, name, both, 2, stale, &img, &stale_acks, &stale_last, why, sizeof(why)),
                         -EBADMSG);
        printf("# the copy taken before the migration (records 0..%" PRId64 ") is refused: %s\n",
               (int64_t) img.records - 1, why);
        disklog_image_done(&img);
        guest_call(c, B, "Destroy", name);
        c->ok = true;
}

int main(void) {
        tu_require_qemu();
        netns_require();
        /* before the cluster: 0.1 s when cached, a few s to rebuild; skips without packages */
        test_linux_guest_build(&lg, 480);
        const struct CMUnitTest tests[] = {
                CLUSTER_TEST(test_disklog_single_host),
                CLUSTER_TEST(test_local_disk_migration_keeps_every_ack),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("cluster-localdisk-linux", tests, NULL, NULL);
}
