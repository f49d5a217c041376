/* Live migration of guests with local disks: their images are copied over
 * QEMU's NBD server, the way libvirt's --copy-storage-all does it
 * (docs/migration.md, "Local disks").
 *
 * Destination, in prepare: mig_storage_dest_create() checks the free space
 * of every target folder against the disks' virtual sizes, then claims
 * each image (O_EXCL: an existing file is never overwritten), records it in
 * vm->mig.created_disks and persists that before `qemu-img create` fills
 * it, so a restart knows which images this operation made.  Once QEMU runs
 * (-incoming defer), mig_storage_dest_export_locked() starts QEMU's NBD
 * server on the migration address and a free port of migration_ports,
 * sealed with the stream's TLS objects (tls-authz admits only the Prepare
 * caller), and exports each disk's node writable.  Finish stops the
 * server before `cont`; a dropped copy deletes the images it created.
 *
 * Source, in the `storage` phase between prepare and perform:
 * mig_storage_copy() adds an nbd client node per export (TLS with the
 * stream's client credentials, the destination's certificate checked for
 * the name its agent was reached by), starts a blockdev-mirror sync=full
 * into it (auto-dismiss off: a failed job stays readable), and polls
 * query-block-jobs until every mirror is READY.  perform() then streams
 * memory with pause-before-switchover on: at pre-switchover (vCPUs
 * stopped, disks still active) mig_storage_complete_locked() ends each
 * READY mirror with block-job-cancel, which leaves a consistent copy
 * without a pivot, and only then the stream continues, so perform_done
 * always means "disks copied".  Every failure before perform_done goes
 * through the recovery table (phase storage or perform: resume the
 * source), whose resume calls mig_storage_drop_locked() to cancel the
 * jobs and delete the nbd nodes; the source keeps running on its own
 * images.  After confirm the source's images are deleted
 * (mig_storage_remove_source_images()).
 *
 * Locks: the VM lock around field access; QMP in NESTED jobs of the async
 * migration job (vm->lock is released during each call); every wait is
 * vm_wait_locked() (the lock released) with a deadline.  File work
 * (statvfs, qemu-img, unlink) runs with no lock held.
 */
#define _GNU_SOURCE
#include "agent-migrate-priv.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent-stream.h"
#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "qmp.h"
#include "status.h"

extern char **environ;

#define JOB_PREFIX "drover-mirror-"
#define STORAGE_POLL_MS 250       /* query-block-jobs while copying */
#define STORAGE_STALL_MS 60000    /* no byte copied for this long: the copy failed */
#define STORAGE_END_MS 30000      /* completing or cancelling the mirrors */
#define QEMU_IMG_MS 30000         /* qemu-img create */
#define MAX_DISK_BYTES (64ull << 40)
#define MAX_JOBS 64

static void node_name(uint32_t i, char buf[32]) {
        snprintf(buf, 32, "drover-nbd-%u", i);
}
static void job_name(uint32_t i, char buf[32]) {
        snprintf(buf, 32, JOB_PREFIX "%u", i);
}
/* The disk's node in QEMU (agent-def.c: "diskN"), also its export's name. */
static void disk_node(uint32_t i, char buf[32]) {
        snprintf(buf, 32, "disk%u", i);
}

static const GuestDef *def_of(Vm *vm) {
        return &((AgentVm *) vm->ops.opaque)->def;
}

static bool has_local_disks(const GuestDef *def) {
        for (size_t i = 0; i < def->n_disks; i++)
                if (def->disks[i].local)
                        return true;
        return false;
}

/* ---- sizes -------------------------------------------------------------------------- */

/* The virtual size of the image at @path in @format: a raw file's length,
 * a block device's size, a qcow2 header's size field. */
static int virtual_size(const char *path, const char *format, uint64_t *ret) {
        struct stat st;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || fstat(fd, &st) < 0)
                return err_set(-errno, "'%s': %s", path, strerror(errno));
        if (strcmp(format, "qcow2") == 0) {
                uint8_t h[32];
                if (pread(fd, h, sizeof(h), 0) != (ssize_t) sizeof(h) || memcmp(h, "QFI\xfb", 4) != 0)
                        return err_set(-EINVAL, "'%s' is not a qcow2 image", path);
                uint64_t v = 0;
                for (int i = 24; i < 32; i++)
                        v = v << 8 | h[i];
                *ret = v;
                return 0;
        }
        if (S_ISBLK(st.st_mode)) {
                uint64_t v;
                if (ioctl(fd, BLKGETSIZE64, &v) < 0)
                        return err_set(-errno, "'%s': size: %s", path, strerror(errno));
                *ret = v;
                return 0;
        }
        if (!S_ISREG(st.st_mode))
                return err_set(-EINVAL, "'%s' is neither a file nor a block device", path);
        *ret = (uint64_t) st.st_size;
        return 0;
}

uint64_t mig_storage_local_bytes(const GuestDef *def) {
        uint64_t sum = 0, v;
        for (size_t i = 0; i < def->n_disks; i++)
                if (def->disks[i].local && virtual_size(def->disks[i].path, def->disks[i].format, &v) >= 0)
                        sum += v;
        err_clear();
        return sum;
}

/* ---- source --------------------------------------------------------------------------- */

int mig_storage_plan(const GuestDef *def, const MigParams *p, MigStorage *ret) {
        MigStorage st = { 0 };
        int r;
        for (size_t i = 0; i < def->n_disks && i < MIG_STORAGE_MAX; i++) {
                const GuestDisk *d = &def->disks[i];
                if (!d->local)
                        continue;
                if (d->readonly)
                        return err_set(-EOPNOTSUPP, "disks[%zu] ('%s') is local and readonly: a read-only local disk "
                                       "is not copied (its NBD export would have to be writable); put it on shared "
                                       "storage (docs/migration.md, \"Local disks\")", i, d->path);
                MigLocalDisk *ld = &st.disks[st.n];
                ld->index = (uint32_t) i;
                snprintf(ld->format, sizeof(ld->format), "%s", d->format);
                if ((r = virtual_size(d->path, d->format, &ld->virtual_size)) < 0)
                        return err_prefix(r, "local disk disks[%zu]", i);
                st.n++;
        }
        if (st.n && p->transport == MIG_TRANSPORT_SSH)
                return err_set(-EOPNOTSUPP, "the guest has %zu local disk(s): they are not copied over the SSH "
                               "transport; use TLS (docs/migration.md, \"Local disks\")", st.n);
        if (st.n && p->postcopy != POSTCOPY_POLICY_NEVER)
                return err_set(-EOPNOTSUPP, "the guest has %zu local disk(s): post-copy is not offered with them "
                               "(the disks complete at switch-over, which post-copy moves); use postcopy never", st.n);
        *ret = st;
        return 0;
}

uint64_t mig_storage_bytes(const MigStorage *st) {
        uint64_t sum = 0;
        for (size_t i = 0; i < st->n; i++)
                sum += st->disks[i].virtual_size;
        return sum;
}

/* Our mirror jobs (vm->lock held, async job @t of @op): lengths and offsets
 * summed into *@st's runtime figures, *ret_ready when every one is READY,
 * *ret_concluded when every one has ended.  -EIO when one is missing or
 * failed. */
static int read_jobs_locked(Vm *vm, AsyncJobType t, const char *op, MigStorage *st, bool *ret_ready,
                            bool *ret_concluded) {
        QmpBlockJob jobs[MAX_JOBS];
        size_t n = 0;
        int r = VM_NESTED_CALL(vm, t, op, "query-block-jobs", qmp_query_block_jobs(mon_, -1, jobs, MAX_JOBS, &n));
        if (r < 0)
                return r;
        uint64_t total = 0, done = 0;
        bool ready = true, concluded = true;
        for (size_t i = 0; i < st->n; i++) {
                char id[32];
                const QmpBlockJob *j = NULL;
                job_name(st->disks[i].index, id);
                for (size_t k = 0; k < n && !j; k++)
                        if (strcmp(jobs[k].id, id) == 0)
                                j = &jobs[k];
                if (!j)
                        return err_set(-EIO, "the mirror of local disk disks[%u] is gone", st->disks[i].index);
                if (j->error[0])
                        return err_set(-EIO, "copying local disk disks[%u] failed: %s", st->disks[i].index, j->error);
                total += j->len;
                done += j->offset;
                ready = ready && (j->ready || strcmp(j->status, "ready") == 0);
                concluded = concluded && (strcmp(j->status, "concluded") == 0 || strcmp(j->status, "null") == 0);
        }
        st->copy_total = total;
        st->copy_done = done;
        *ret_ready = ready;
        *ret_concluded = concluded;
        return 0;
}

/* Publish the copy's figures (vm->lock held) in the guest's snapshot and,
 * when @m, the migration's record. */
static void publish_locked(Agent *a, Vm *vm, Migration *m, const MigStorage *st) {
        MigrationStats ms = vm->mig_stats;
        ms.disk_total = st->copy_total;
        ms.disk_transferred = st->copy_done;
        vm_set_migration_stats_locked(vm, &ms);
        if (m) {
                vm_unlock(vm);
                agent_migtable_phase(a->migrations, m, JOB_PHASE_STORAGE, &ms);
                vm_lock(vm);
        }
}

int mig_storage_copy(Agent *a, Vm *vm, const char *op, Migration *m, MigStorage *st, const char *tls_hostname,
                     uint64_t speed, uint64_t budget_ms) {
        const AsyncJobType t = ASYNC_JOB_MIGRATION_OUT;
        bool ready = false, concluded;
        int r;

        vm_lock(vm);
        r = job_set_phase(vm, JOB_PHASE_STORAGE);
        vm_unlock(vm);
        if (r < 0)
                return r;
        agent_migtable_phase(a->migrations, m, JOB_PHASE_STORAGE, NULL);
        agent_migtable_event(a->migrations, m, "copying %zu local disk(s), %.1f MiB, to the NBD server %s:%u (%s)",
                             st->n, (double) mig_storage_bytes(st) / 1048576.0, st->nbd_host, st->nbd_port,
                             tls_hostname ? "TLS" : "plaintext: dev_mode");
        agent_test_hold(JOB_PHASE_STORAGE, vm->name);

        vm_lock(vm);
        if (tls_hostname)
                r = agent_stream_tls_setup_locked(a, vm, t, op, NULL, tls_hostname);
        for (size_t i = 0; r >= 0 && i < st->n; i++) {
                char node[32], job[32], dev[32];
                node_name(st->disks[i].index, node);
                job_name(st->disks[i].index, job);
                disk_node(st->disks[i].index, dev);
                r = VM_NESTED_CALL(vm, t, op, "blockdev-add",
                                   qmp_blockdev_add_nbd(mon_, -1, node, st->nbd_host, st->nbd_port, st->exports[i],
                                                        tls_hostname ? MIG_TLS_CREDS_ID : NULL, tls_hostname));
                if (r >= 0)
                        r = VM_NESTED_CALL(vm, t, op, "blockdev-mirror",
                                           qmp_blockdev_mirror(mon_, -1, job, dev, node, speed));
                if (r < 0)
                        r = err_prefix(r, "local disk disks[%u]", st->disks[i].index);
        }
        uint64_t start = now_ns(), progress_ns = start, last_done = 0;
        Deadline d = deadline_in_ms((int64_t) budget_ms);
        while (r >= 0) {
                if ((r = read_jobs_locked(vm, t, op, st, &ready, &concluded)) < 0)
                        break;
                publish_locked(a, vm, m, st);
                if (ready)
                        break;
                uint64_t now = now_ns();
                if (vm->job.abort_requested) {
                        r = err_set(-ECANCELED, "migration aborted on request");
                        break;
                }
                if (st->copy_done > last_done) {
                        last_done = st->copy_done;
                        progress_ns = now;
                } else if (now - progress_ns > (uint64_t) STORAGE_STALL_MS * NSEC_PER_MSEC) {
                        r = err_set(-ETIMEDOUT, "the local disk copy made no progress for %d s (%llu of %llu bytes)",
                                    STORAGE_STALL_MS / 1000, (unsigned long long) st->copy_done,
                                    (unsigned long long) st->copy_total);
                        break;
                }
                if (deadline_expired(d)) {
                        r = err_set(-ETIMEDOUT, "the local disks were not copied within %llu s (%llu of %llu bytes; "
                                    "the completion timeout, counted for memory and disks)",
                                    (unsigned long long) budget_ms / 1000, (unsigned long long) st->copy_done,
                                    (unsigned long long) st->copy_total);
                        break;
                }
                (void) vm_wait_locked(vm, deadline_in_ms(STORAGE_POLL_MS));
        }
        vm_unlock(vm);
        if (r >= 0) {
                double s = (double) (now_ns() - start) / 1e9, mib = (double) st->copy_total / 1048576.0;
                agent_migtable_event(a->migrations, m, "local disks in sync: %.1f MiB in %.2f s (%.1f MiB/s); "
                                     "streaming memory", mib, s, s > 0 ? mib / s : 0.0);
                log_info("guest %s, migration %s: local disks in sync: %.1f MiB in %.2f s (%.1f MiB/s)", vm->name, op,
                         mib, s, s > 0 ? mib / s : 0.0);
        }
        return r;
}

int mig_storage_stats_locked(Vm *vm, const char *op, MigStorage *st, MigrationStats *io) {
        bool ready, concluded;
        int r = 0;
        if (!st->completed)
                r = read_jobs_locked(vm, ASYNC_JOB_MIGRATION_OUT, op, st, &ready, &concluded);
        io->disk_total = st->copy_total;
        io->disk_transferred = st->copy_done;
        return r;
}

/* Dismiss our concluded jobs and delete our nbd nodes (vm->lock held):
 * best effort, errors cleared. */
static void release_locked(Vm *vm, AsyncJobType t, const char *op, const GuestDef *def) {
        QmpBlockJob jobs[MAX_JOBS];
        size_t n = 0;
        if (VM_NESTED_CALL(vm, t, op, "query-block-jobs", qmp_query_block_jobs(mon_, -1, jobs, MAX_JOBS, &n)) >= 0)
                for (size_t k = 0; k < n; k++)
                        if (strncmp(jobs[k].id, JOB_PREFIX, strlen(JOB_PREFIX)) == 0 &&
                            strcmp(jobs[k].status, "concluded") == 0)
                                (void) VM_NESTED_CALL(vm, t, op, "job-dismiss", qmp_job_dismiss(mon_, -1, jobs[k].id));
        for (size_t i = 0; i < def->n_disks; i++) {
                char node[32];
                if (!def->disks[i].local)
                        continue;
                node_name((uint32_t) i, node);
                (void) VM_NESTED_CALL(vm, t, op, "blockdev-del", qmp_blockdev_del(mon_, -1, node));
        }
        err_clear();
}

int mig_storage_complete_locked(Vm *vm, const char *op, MigStorage *st) {
        const AsyncJobType t = ASYNC_JOB_MIGRATION_OUT;
        bool ready, concluded = false;
        int r = 0;
        for (size_t i = 0; r >= 0 && i < st->n; i++) {
                char job[32];
                job_name(st->disks[i].index, job);
                r = VM_NESTED_CALL(vm, t, op, "block-job-cancel", qmp_block_job_cancel(mon_, -1, job, false));
        }
        Deadline d = deadline_in_ms(STORAGE_END_MS);
        while (r >= 0 && !concluded) {
                if ((r = read_jobs_locked(vm, t, op, st, &ready, &concluded)) < 0 || concluded)
                        break;
                if (deadline_expired(d)) {
                        r = err_set(-ETIMEDOUT, "the local disk mirrors did not complete within %d s",
                                    STORAGE_END_MS / 1000);
                        break;
                }
                (void) vm_wait_locked(vm, deadline_in_ms(20));
        }
        if (r < 0)
                return err_prefix(r, "completing the local disk copy at switch-over");
        st->completed = true;
        release_locked(vm, t, op, def_of(vm));
        return 0;
}

void mig_storage_drop_locked(Vm *vm, AsyncJobType t, const char *op) {
        const GuestDef *def = def_of(vm);
        QmpBlockJob jobs[MAX_JOBS];
        size_t n = 0;
        vm_assert_locked(vm);
        if (!has_local_disks(def))
                return;
        Deadline d = deadline_in_ms(STORAGE_END_MS);
        for (int round = 0;; round++) {
                bool live = false;
                if (VM_NESTED_CALL(vm, t, op, "query-block-jobs", qmp_query_block_jobs(mon_, -1, jobs, MAX_JOBS, &n)) < 0)
                        break;
                for (size_t k = 0; k < n; k++) {
                        if (strncmp(jobs[k].id, JOB_PREFIX, strlen(JOB_PREFIX)) != 0 ||
                            strcmp(jobs[k].status, "concluded") == 0 || strcmp(jobs[k].status, "null") == 0)
                                continue;
                        live = true;
                        if (round == 0)
                                (void) VM_NESTED_CALL(vm, t, op, "block-job-cancel",
                                                      qmp_block_job_cancel(mon_, -1, jobs[k].id, true));
                }
                if (!live || deadline_expired(d))
                        break;
                (void) vm_wait_locked(vm, deadline_in_ms(50));
        }
        release_locked(vm, t, op, def);
}

int mig_storage_set_speed(const GuestDef *def, QmpMonitor *mon, uint64_t speed) {
        int n = 0;
        for (size_t i = 0; i < def->n_disks; i++) {
                char job[32];
                if (!def->disks[i].local)
                        continue;
                job_name((uint32_t) i, job);
                /* no such job (not started yet, or completed): nothing to tune */
                n += qmp_block_job_set_speed(mon, -1, job, speed) >= 0;
        }
        err_clear();
        return n;
}

void mig_storage_remove_source_images(Agent *a, Vm *vm) {
        const GuestDef *def = def_of(vm);
        for (size_t i = 0; i < def->n_disks; i++) {
                const char *path = def->disks[i].path;
                if (!def->disks[i].local)
                        continue;
                if (unlink(path) < 0 && errno != ENOENT) {
                        log_warning("guest %s: removing the local disk image %s after the migration failed: %s",
                                    vm->name, path, strerror(errno));
                        continue;
                }
                log_info("guest %s: local disk image %s removed: the guest and its copy of the disk run on the "
                         "destination", vm->name, path);
                agent_emit(a, vm, "migration", "local disk image %s removed (copied to the destination)", path);
        }
}

/* ---- destination ------------------------------------------------------------------------ */

/* The qemu-img beside the configured QEMU binary, else the one in PATH. */
static void qemu_img_path(const Agent *a, char *buf, size_t size) {
        const char *slash = strrchr(a->cfg.qemu_binary, '/');
        if (slash) {
                snprintf(buf, size, "%.*s/qemu-img", (int) (slash - a->cfg.qemu_binary), a->cfg.qemu_binary);
                if (access(buf, X_OK) == 0)
                        return;
        }
        snprintf(buf, size, "qemu-img");
}

/* qemu-img create -q -f @format @path @size (no lock held). */
static int qemu_img_create(const Agent *a, const char *format, const char *path, uint64_t size) {
        char bin[300], sz[32];
        qemu_img_path(a, bin, sizeof(bin));
        snprintf(sz, sizeof(sz), "%llu", (unsigned long long) size);
        char *argv[] = { bin, "create", "-q", "-f", (char *) format, (char *) path, sz, NULL };
        posix_spawn_file_actions_t fa;
        pid_t pid;
        int status = 0;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
        int e = posix_spawnp(&pid, bin, &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (e != 0)
                return err_set(-e, "running %s: %s", bin, strerror(e));
        Deadline d = deadline_in_ms(QEMU_IMG_MS);
        for (;;) {
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid)
                        break;
                if (w < 0 && errno != EINTR)
                        return err_set(-errno, "waiting for qemu-img: %s", strerror(errno));
                if (deadline_expired(d)) {
                        (void) kill(pid, SIGKILL);
                        (void) waitpid(pid, &status, 0);
                        return err_set(-ETIMEDOUT, "qemu-img create %s took over %d s", path, QEMU_IMG_MS / 1000);
                }
                sleep_ms(10);
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return err_set(-EIO, "qemu-img create -f %s %s %s failed (status %d)", format, path, sz,
                               WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return 0;
}

/* The folder of @path into @buf ("/" for a file at the top). */
static void dir_of(const char *path, char *buf, size_t size) {
        const char *slash = strrchr(path, '/');
        snprintf(buf, size, "%.*s", slash && slash != path ? (int) (slash - path) : 1, path);
}

/* Refuse before anything is created: each disk marked local, in its
 * format, of a sane size, not present yet, and room for all of them on
 * every file system they land on. */
static int dest_check(const GuestDef *def, const MigStorage *st) {
        struct statvfs fs[MIG_STORAGE_MAX];
        uint32_t seen = 0;
        for (size_t i = 0; i < st->n; i++) {
                const MigLocalDisk *ld = &st->disks[i];
                char dir[256];
                struct stat sb;
                if (ld->index >= def->n_disks || !def->disks[ld->index].local || (seen & (1u << ld->index)))
                        return err_set(-EINVAL, "prepare: local disk %zu names disks[%u], which the definition does "
                                       "not mark \"storage\": \"local\" (or names twice)", i, ld->index);
                seen |= 1u << ld->index;
                const GuestDisk *d = &def->disks[ld->index];
                if (strcmp(ld->format, d->format) != 0)
                        return err_set(-EINVAL, "prepare: local disk disks[%u] is %s on the source and %s in the "
                                       "definition", ld->index, ld->format, d->format);
                if (ld->virtual_size == 0 || ld->virtual_size > MAX_DISK_BYTES || ld->virtual_size % 512)
                        return err_set(-EINVAL, "prepare: local disk disks[%u] has an unusable size of %llu bytes",
                                       ld->index, (unsigned long long) ld->virtual_size);
                if (lstat(d->path, &sb) == 0)
                        return err_set(-EEXIST, "prepare: local disk disks[%u] '%s' already exists on this host; it "
                                       "is never overwritten (remove it, or mark the disk \"storage\": \"shared\" "
                                       "if it is the same image)", ld->index, d->path);
                dir_of(d->path, dir, sizeof(dir));
                if (statvfs(dir, &fs[i]) < 0)
                        return err_set(-errno, "prepare: the folder '%s' of local disk disks[%u]: %s", dir, ld->index,
                                       strerror(errno));
        }
        for (size_t i = 0; i < st->n; i++) {
                uint64_t need = 0, avail = (uint64_t) fs[i].f_bavail * fs[i].f_frsize;
                for (size_t j = 0; j < st->n; j++)
                        if (fs[j].f_fsid == fs[i].f_fsid)
                                need += st->disks[j].virtual_size;
                if (avail < need) {
                        char dir[256];
                        dir_of(def->disks[st->disks[i].index].path, dir, sizeof(dir));
                        return err_set(-ENOSPC, "prepare: the local disks need %.1f MiB on the file system of '%s', "
                                       "which has %.1f MiB free: refused before anything was created",
                                       (double) need / 1048576.0, dir, (double) avail / 1048576.0);
                }
        }
        return 0;
}

int mig_storage_dest_create(Agent *a, Vm *vm, const GuestDef *def, const MigStorage *st) {
        int r;
        if (st->n == 0)
                return 0;
        if ((r = dest_check(def, st)) < 0)
                return r;
        for (size_t i = 0; i < st->n; i++) {
                const MigLocalDisk *ld = &st->disks[i];
                const char *path = def->disks[ld->index].path;
                /* claimed first (never an existing file), recorded and
                 * persisted, then filled: a restart deletes only ours */
                int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd < 0) {
                        r = err_set(-errno, "prepare: creating local disk disks[%u] '%s': %s", ld->index, path,
                                    strerror(errno));
                        break;
                }
                close(fd);
                vm_lock(vm);
                vm->mig.created_disks |= 1u << ld->index;
                vm_unlock(vm);
                if ((r = vm_save_status(vm)) < 0)
                        break;
                if ((r = qemu_img_create(a, ld->format, path, ld->virtual_size)) < 0) {
                        r = err_prefix(r, "prepare: local disk disks[%u]", ld->index);
                        break;
                }
        }
        if (r < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                mig_storage_dest_delete(vm);
                return err_set(r, "%s", why);
        }
        log_info("guest %s: %zu local disk image(s) created for the incoming migration (%.1f MiB)", vm->name, st->n,
                 (double) mig_storage_bytes(st) / 1048576.0);
        return 0;
}

/* The answer part of @st for a server on @host:@port. */
static void dest_answer(MigStorage *st, const char *host, unsigned port) {
        snprintf(st->nbd_host, sizeof(st->nbd_host), "%s", host);
        st->nbd_port = port;
        for (size_t i = 0; i < st->n; i++)
                disk_node(st->disks[i].index, st->exports[i]);
}

int mig_storage_dest_export_locked(Agent *a, Vm *vm, const char *op, bool tls, MigStorage *st) {
        const AsyncJobType t = ASYNC_JOB_MIGRATION_IN;
        char host[64];
        unsigned lo, hi;
        int r;

        vm_assert_locked(vm);
        if (st->n == 0)
                return 0;
        if ((r = agent_config_migration_host(&a->cfg, host, sizeof(host))) < 0 ||
            (r = agent_config_migration_ports(&a->cfg, &lo, &hi)) < 0)
                return r;
        unsigned first = agent_stream_first_port(lo, hi), n = hi - lo + 1, port = 0;
        r = -EADDRINUSE;
        for (unsigned i = 0; i < n; i++) {
                port = lo + (first - lo + i) % n;
                r = VM_NESTED_CALL(vm, t, op, "nbd-server-start",
                                   qmp_nbd_server_start(mon_, -1, host, port, tls ? MIG_TLS_CREDS_ID : NULL,
                                                        tls ? MIG_TLS_AUTHZ_ID : NULL));
                if (r >= 0 || (!strstr(err_msg(), "in use") && !strstr(err_msg(), "Failed to bind")))
                        break;
        }
        if (r < 0)
                return err_prefix(r, "prepare: the NBD server for the local disks (%s, ports %u-%u)", host, lo, hi);
        for (size_t i = 0; r >= 0 && i < st->n; i++) {
                char id[32], node[32];
                snprintf(id, sizeof(id), "drover-export-%u", st->disks[i].index);
                disk_node(st->disks[i].index, node);
                r = VM_NESTED_CALL(vm, t, op, "block-export-add", qmp_block_export_add_nbd(mon_, -1, id, node, node));
                if (r < 0)
                        r = err_prefix(r, "prepare: exporting local disk disks[%u]", st->disks[i].index);
        }
        if (r < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                (void) VM_NESTED_CALL(vm, t, op, "nbd-server-stop", qmp_nbd_server_stop(mon_, -1));
                return err_set(r, "%s", why);
        }
        vm->mig.nbd_port = port;
        dest_answer(st, host, port);
        return 0;
}

int mig_storage_dest_answer_locked(Agent *a, Vm *vm, MigStorage *st) {
        char host[64];
        int r;
        vm_assert_locked(vm);
        if (st->n == 0)
                return 0;
        if (vm->mig.nbd_port == 0)
                return err_set(-EBUSY, "prepare: this migration exports no local disk here");
        if ((r = agent_config_migration_host(&a->cfg, host, sizeof(host))) < 0)
                return r;
        dest_answer(st, host, vm->mig.nbd_port);
        return 0;
}

void mig_storage_dest_stop_locked(Vm *vm, const char *op) {
        vm_assert_locked(vm);
        /* also when nbd_port was lost with a restart of this agent */
        if (!has_local_disks(def_of(vm)))
                return;
        if (VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "nbd-server-stop", qmp_nbd_server_stop(mon_, -1)) < 0 &&
            !strstr(err_msg(), "not running"))
                log_warning("guest %s, migration %s: nbd-server-stop: %s", vm->name, op, err_msg());
        vm->mig.nbd_port = 0;
        err_clear();
}

void mig_storage_dest_delete(Vm *vm) {
        const GuestDef *def = def_of(vm);
        vm_lock(vm);
        uint32_t bits = vm->mig.created_disks;
        vm_unlock(vm);
        if (!bits)
                return;
        for (size_t i = 0; i < def->n_disks && i < 32; i++) {
                if (!(bits & (1u << i)))
                        continue;
                if (unlink(def->disks[i].path) < 0 && errno != ENOENT)
                        log_warning("guest %s: deleting the image %s made for the incoming migration: %s", vm->name,
                                    def->disks[i].path, strerror(errno));
                else
                        log_info("guest %s: image %s made for the incoming migration deleted", vm->name,
                                 def->disks[i].path);
        }
        vm_lock(vm);
        vm->mig.created_disks &= ~bits;
        vm_unlock(vm);
        (void) vm_save_status(vm);
}
