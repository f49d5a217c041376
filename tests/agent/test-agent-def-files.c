/* Unit tests of a guest's files on the host (agent/agent-files.h): the
 * image roots that confine kernel, initrd and disks (every way out is
 * refused: outside the roots, through a symbolic link, "..", /proc magic
 * links, FIFOs and devices, /etc/shadow), the Define-time and start-time
 * checks, the descriptors handed to QEMU (what was checked is what QEMU
 * gets, whatever happens to the path afterwards), and the older host checks
 * (missing files, permissions, qcow2 magic, O_DIRECT, bridges) against real
 * files in a scratch folder.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent-config.h"
#include "agent-def.h"
#include "agent-files.h"
#include "err.h"
#include "testutil.h"

static const char *tmp;     /* the image root */
static const char *outside; /* a folder outside it */
static AgentConfig cfg;     /* defaults, image_roots = [tmp] */

static int parse(const char *json, GuestDef *d) {
        return guest_def_parse(json, strlen(json), d);
}

/* guest_def_check_host, closing what it opened. */
static int check_host(const GuestDef *d) {
        GuestFiles f;
        int r = guest_def_check_host(d, &cfg, &f);
        if (r == 0)
                guest_files_close(&f);
        return r;
}


static void write_file(const char *path, const void *data, size_t len, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, data, len), (ssize_t) len);
        close(fd);
        assert_int_equal(chmod(path, mode), 0);
}

static GuestDef host_def(void) {
        GuestDef d;
        char *j = tu_asprintf("{\"name\":\"h\",\"memory_mib\":64,\"kernel\":\"%s\",\"initrd\":\"%s\","
                            "\"disks\":[{\"path\":\"%s\",\"cache\":\"writeback\"},"
                            "{\"path\":\"%s\",\"format\":\"qcow2\",\"cache\":\"writeback\"}]}",
                            tu_path(tmp, "vmlinuz"), tu_path(tmp, "initrd"), tu_path(tmp, "disk.raw"),
                            tu_path(tmp, "disk.qcow2"));
        assert_int_equal(parse(j, &d), 0);
        free(j);
        return d;
}

static void check_err(const GuestDef *d, int err, const char *detail) {
        err_clear();
        int r = check_host(d);
        if (r != err || strcmp(err_msg(), detail) != 0)
                fail_msg("got %d '%s'\nwant %d '%s'", r, err_msg(), err, detail);
}

static void test_host_ok_and_missing(void **state) {
        GuestDef d = host_def();
        char *want;

        assert_int_equal(check_host(&d), 0);

        snprintf(d.kernel, sizeof(d.kernel), "%s", tu_path(tmp, "missing-kernel"));
        want = tu_asprintf("definition: 'kernel' file '%s' does not exist", d.kernel);
        check_err(&d, -ENOENT, want);
        free(want);

        d = host_def();
        snprintf(d.initrd, sizeof(d.initrd), "%s", tu_path(tmp, "nodir/initrd"));
        want = tu_asprintf("definition: 'initrd' file '%s' does not exist", d.initrd);
        check_err(&d, -ENOENT, want);
        free(want);

        d = host_def();
        snprintf(d.kernel, sizeof(d.kernel), "%s", tu_path(tmp, "subdir"));
        want = tu_asprintf("definition: 'kernel' '%s' is a directory, not a regular file", d.kernel);
        check_err(&d, -EINVAL, want);
        free(want);

        d = host_def();
        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", tu_path(tmp, "gone.qcow2"));
        want = tu_asprintf("definition: 'disks[1].path' file '%s' does not exist", d.disks[1].path);
        check_err(&d, -ENOENT, want);
        free(want);
}

static void test_host_qcow2_magic(void **state) {
        GuestDef d = host_def();
        char *want;

        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", tu_path(tmp, "fake.qcow2"));
        want = tu_asprintf("definition: 'disks[1].path' '%s' is not a qcow2 image (no qcow2 magic)", d.disks[1].path);
        check_err(&d, -EINVAL, want);
        free(want);

        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", tu_path(tmp, "short.qcow2"));
        want = tu_asprintf("definition: 'disks[1].path' '%s' is not a qcow2 image (no qcow2 magic)", d.disks[1].path);
        check_err(&d, -EINVAL, want);
        free(want);

        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", tu_path(tmp, "cut.qcow2"));
        want = tu_asprintf("definition: 'disks[1].path' '%s' has a truncated qcow2 header (8 bytes)", d.disks[1].path);
        check_err(&d, -EINVAL, want);
        free(want);

        /* raw may hold anything, even qcow2 bytes: the format is never probed */
        snprintf(d.disks[0].path, sizeof(d.disks[0].path), "%s", tu_path(tmp, "disk.qcow2"));
        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", tu_path(tmp, "disk.raw"));
        snprintf(d.disks[1].format, sizeof(d.disks[1].format), "raw");
        assert_int_equal(check_host(&d), 0);
}

/* Run qemu-img with @args (a shell word list); 0 when it succeeded. */
static int qemu_img(const char *args) {
        char *cmd = tu_asprintf("qemu-img %s >/dev/null 2>&1", args);
        int st = system(cmd);
        free(cmd);
        return st == 0 ? 0 : -1;
}

/* A qcow2 image names its backing file (and an external data file) by a
 * path that QEMU would open itself, as root, wherever it points: such an
 * image is refused at Define and at Start, naming the file; one without
 * passes.  Real images, made by qemu-img. */
static void test_qcow2_backing_and_data_files_refused(void **state) {
        if (qemu_img("--version") < 0)
                tu_skip("qemu-img is not installed");
        char *plain = strdup(tu_path(tmp, "plain.qcow2")), *backed = strdup(tu_path(tmp, "backed.qcow2"));
        char *data = strdup(tu_path(tmp, "data.qcow2")), *secret = strdup(tu_path(outside, "secret"));
        char *a = tu_asprintf("create -q -f qcow2 %s 1M", plain);
        char *b = tu_asprintf("create -q -f qcow2 -b %s -F raw %s 1M", secret, backed);
        char *c = tu_asprintf("create -q -f qcow2 -o data_file=%s/data.bin %s 1M", outside, data);
        assert_int_equal(qemu_img(a), 0);
        assert_int_equal(qemu_img(b), 0);
        assert_int_equal(qemu_img(c), 0);

        GuestDef d = host_def();
        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", plain);
        assert_int_equal(guest_def_check_files(&d, &cfg), 0);
        assert_int_equal(check_host(&d), 0);

        char *want = tu_asprintf("definition: 'disks[1].path' '%s' is a qcow2 image with the backing file '%s'; "
                               "backing files are not supported (QEMU would open them outside the image roots): "
                               "convert it to a standalone image (qemu-img convert -O qcow2)", backed, secret);
        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", backed);
        err_clear();
        assert_int_equal(guest_def_check_files(&d, &cfg), -EINVAL);
        assert_string_equal(err_msg(), want);
        check_err(&d, -EINVAL, want);
        free(want);

        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", data);
        err_clear();
        assert_int_equal(guest_def_check_files(&d, &cfg), -EINVAL);
        assert_non_null(strstr(err_msg(), "is a qcow2 image with an external data file"));
        assert_int_equal(check_host(&d), -EINVAL);
        assert_non_null(strstr(err_msg(), "is a qcow2 image with an external data file"));

        /* a qcow2 disk that does not exist yet is still fine at Define */
        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "%s", tu_path(tmp, "later.qcow2"));
        assert_int_equal(guest_def_check_files(&d, &cfg), 0);
        free(a); free(b); free(c);
        free(plain); free(backed); free(data); free(secret);
}

static void test_host_bridges(void **state) {
        GuestDef d;
        char *j = tu_asprintf("{\"name\":\"h\",\"memory_mib\":64,\"kernel\":\"%s\",\"nics\":[{\"bridge\":\"drvnobr0\"}]}",
                            tu_path(tmp, "vmlinuz"));
        assert_int_equal(parse(j, &d), 0);
        free(j);
        check_err(&d, -ENOENT, "definition: 'nics[0].bridge' 'drvnobr0' does not exist on this host");

        /* lo exists in every network namespace and is never a bridge */
        snprintf(d.nics[0].bridge, sizeof(d.nics[0].bridge), "lo");
        check_err(&d, -EINVAL, "definition: 'nics[0].bridge' 'lo' is not a bridge");
}

static int child_failures;

/* Permission checks must hold for the agent's user; as root (which reads
 * everything) they run in a child that has become nobody. */
static void run_as_unprivileged(void (*fn)(void)) {
        if (geteuid() != 0) {
                fn();
                return;
        }
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
                    setresuid(65534, 65534, 65534) < 0)
                        _exit(3);
                fn();
                _exit(child_failures ? 1 : 0);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
}

static void child_expect(const GuestDef *d, int err, const char *detail) {
        err_clear();
        int r = check_host(d);
        if (r != err || strcmp(err_msg(), detail) != 0) {
                fprintf(stderr, "got %d '%s'\nwant %d '%s'\n", r, err_msg(), err, detail);
                child_failures++;
        }
}

/* Counts mismatches in child_failures (the exit status of the child). */
static void permission_checks(void) {
        GuestDef d = host_def();
        char want[1024];

        snprintf(d.kernel, sizeof(d.kernel), "%s", tu_path(tmp, "unreadable"));
        snprintf(want, sizeof(want), "definition: 'kernel' file '%s' is not readable: Permission denied", d.kernel);
        child_expect(&d, -EACCES, want);

        d = host_def();
        snprintf(d.disks[0].path, sizeof(d.disks[0].path), "%s", tu_path(tmp, "readonly.raw"));
        snprintf(want, sizeof(want), "definition: 'disks[0].path' file '%s' is not readable and writable: "
                 "Permission denied", d.disks[0].path);
        child_expect(&d, -EACCES, want);

        d.disks[0].readonly = true; /* read-only use of a read-only file is fine */
        child_expect(&d, 0, "");
}

static void test_host_permissions(void **state) {
        run_as_unprivileged(permission_checks);
        if (geteuid() != 0 && child_failures)
                fail();
}

/* cache none/directsync on a file system without O_DIRECT (an older tmpfs). */
static void test_host_odirect(void **state) {
        GuestDef d = host_def();
        char p[128], want[512];
        int r_none, r_writeback;
        struct stat st;

        if (stat("/dev/shm", &st) < 0 || !S_ISDIR(st.st_mode) || access("/dev/shm", W_OK) < 0)
                skip();
        snprintf(cfg.image_roots[1], sizeof(cfg.image_roots[1]), "/dev/shm");
        cfg.n_image_roots = 2;
        snprintf(p, sizeof(p), "/dev/shm/drover-test-odirect-%d.raw", (int) getpid());
        write_file(p, "x", 1, 0600);
        int fd = open(p, O_RDONLY | O_DIRECT);
        if (fd >= 0) /* this tmpfs supports O_DIRECT (Linux >= 6.6) */
                close(fd);
        else {
                snprintf(d.disks[0].path, sizeof(d.disks[0].path), "%s", p);
                snprintf(d.disks[0].cache, sizeof(d.disks[0].cache), "none");
                err_clear();
                r_none = check_host(&d);
                snprintf(want, sizeof(want), "%s", err_msg());
                snprintf(d.disks[0].cache, sizeof(d.disks[0].cache), "writeback");
                r_writeback = check_host(&d);
        }
        unlink(p);
        cfg.n_image_roots = 1;
        if (fd >= 0)
                skip();
        assert_int_equal(r_none, -EINVAL);
        assert_int_equal(r_writeback, 0);
        char *expected = tu_asprintf("definition: 'disks[0].cache' is none, but the file system of '%s' does not "
                                   "support O_DIRECT (use writeback or writethrough)", p);
        assert_string_equal(want, expected);
        free(expected);
}



/* ---- image roots ---- */

/* A one-kernel definition with @kernel, parse rules bypassed (so that the
 * walk's own defences are what is tested). */
static GuestDef kernel_def(const char *kernel) {
        GuestDef d = host_def();
        d.n_disks = 0;
        d.initrd[0] = '\0';
        snprintf(d.kernel, sizeof(d.kernel), "%s", kernel);
        return d;
}

/* Both checks (Define and start) refuse @path as the kernel with @detail. */
static void expect_refused(const char *path, const char *detail) {
        GuestDef d = kernel_def(path);
        err_clear();
        int r = guest_def_check_files(&d, &cfg);
        if (r != -EINVAL || strcmp(err_msg(), detail) != 0)
                fail_msg("define: got %d '%s'\nwant '%s'", r, err_msg(), detail);
        err_clear();
        r = check_host(&d);
        if (r != -EINVAL || strcmp(err_msg(), detail) != 0)
                fail_msg("start: got %d '%s'\nwant '%s'", r, err_msg(), detail);
}

static void test_roots_outside(void **state) {
        char *want;

        want = tu_asprintf("definition: 'kernel' '%s' is outside the image roots (image roots: %s)",
                         tu_path(outside, "secret"), tmp);
        expect_refused(tu_path(outside, "secret"), want);
        free(want);

        want = tu_asprintf("definition: 'kernel' '/etc/shadow' is outside the image roots (image roots: %s)", tmp);
        expect_refused("/etc/shadow", want);
        free(want);

        /* a root's name as a prefix of another folder's is not that root */
        char *sibling = tu_asprintf("%s-sibling/k", tmp);
        want = tu_asprintf("definition: 'kernel' '%s' is outside the image roots (image roots: %s)", sibling, tmp);
        expect_refused(sibling, want);
        free(want);
        free(sibling);

        /* /proc magic links are outside too */
        want = tu_asprintf("definition: 'kernel' '/proc/self/fd/0' is outside the image roots (image roots: %s)", tmp);
        expect_refused("/proc/self/fd/0", want);
        free(want);

        /* ".." never gets past the syntax, nor past the walk */
        char *up = tu_asprintf("%s/../%s", tmp, "etc/shadow");
        want = tu_asprintf("definition: 'kernel' '%s' is outside the image roots (image roots: %s)", up, tmp);
        expect_refused(up, want);
        free(want);
        GuestDef d;
        char *j = tu_asprintf("{\"name\":\"x\",\"memory_mib\":64,\"kernel\":\"%s\"}", up);
        assert_int_equal(parse(j, &d), -EINVAL);
        assert_non_null(strstr(err_msg(), "must be a normalised path"));
        free(j);
        free(up);

        /* the error names every root, and the member */
        snprintf(cfg.image_roots[1], sizeof(cfg.image_roots[1]), "/srv/images");
        cfg.n_image_roots = 2;
        d = host_def();
        snprintf(d.disks[1].path, sizeof(d.disks[1].path), "/etc/shadow");
        err_clear();
        assert_int_equal(guest_def_check_files(&d, &cfg), -EINVAL);
        want = tu_asprintf("definition: 'disks[1].path' '/etc/shadow' is outside the image roots (image roots: %s, "
                         "/srv/images)", tmp);
        assert_string_equal(err_msg(), want);
        free(want);
        cfg.n_image_roots = 1;
}

static void test_roots_symlinks(void **state) {
        char *want;

        /* a link to a file outside */
        want = tu_asprintf("definition: 'kernel' '%s' goes through the symbolic link '%s'; links are not followed "
                         "below an image root (image roots: %s)", tu_path(tmp, "shadow-link"),
                         tu_path(tmp, "shadow-link"), tmp);
        expect_refused(tu_path(tmp, "shadow-link"), want);
        free(want);

        /* a link to a folder outside, in the middle of the path */
        want = tu_asprintf("definition: 'kernel' '%s' goes through the symbolic link '%s'; links are not followed "
                         "below an image root (image roots: %s)", tu_path(tmp, "etc-link/shadow"),
                         tu_path(tmp, "etc-link"), tmp);
        expect_refused(tu_path(tmp, "etc-link/shadow"), want);
        free(want);

        /* a link that stays inside the root is refused as well: no links at all */
        want = tu_asprintf("definition: 'kernel' '%s' goes through the symbolic link '%s'; links are not followed "
                         "below an image root (image roots: %s)", tu_path(tmp, "subdir-link/k"),
                         tu_path(tmp, "subdir-link"), tmp);
        expect_refused(tu_path(tmp, "subdir-link/k"), want);
        free(want);

        /* a link to a /proc magic link */
        want = tu_asprintf("definition: 'kernel' '%s' goes through the symbolic link '%s'; links are not followed "
                         "below an image root (image roots: %s)", tu_path(tmp, "fd-link"), tu_path(tmp, "fd-link"),
                         tmp);
        expect_refused(tu_path(tmp, "fd-link"), want);
        free(want);

        /* the real file next to them is fine */
        GuestDef d = kernel_def(tu_path(tmp, "subdir/k"));
        assert_int_equal(guest_def_check_files(&d, &cfg), 0);
        assert_int_equal(check_host(&d), 0);
}

static void test_roots_file_types(void **state) {
        char *want;

        /* a FIFO is refused without ever blocking on it */
        want = tu_asprintf("definition: 'kernel' '%s' is a FIFO, not a regular file", tu_path(tmp, "fifo"));
        expect_refused(tu_path(tmp, "fifo"), want);
        free(want);

        if (geteuid() != 0)
                skip(); /* device nodes need root */
        want = tu_asprintf("definition: 'kernel' '%s' is a character device, not a regular file", tu_path(tmp, "null"));
        expect_refused(tu_path(tmp, "null"), want);
        free(want);

        /* block devices: refused unless allowed, and then for disks only */
        GuestDef d = host_def();
        d.n_disks = 1;
        snprintf(d.disks[0].path, sizeof(d.disks[0].path), "%s", tu_path(tmp, "blk"));
        d.disks[0].readonly = true;
        err_clear();
        assert_int_equal(guest_def_check_files(&d, &cfg), -EINVAL);
        want = tu_asprintf("definition: 'disks[0].path' '%s' is a block device, and allow_block_devices is off",
                         d.disks[0].path);
        assert_string_equal(err_msg(), want);
        free(want);
        cfg.allow_block_devices = true;
        assert_int_equal(guest_def_check_files(&d, &cfg), 0);
        want = tu_asprintf("definition: 'kernel' '%s' is a block device, not a regular file", tu_path(tmp, "blk"));
        expect_refused(tu_path(tmp, "blk"), want);
        free(want);
        cfg.allow_block_devices = false;
}

/* Define accepts a file that does not exist yet (inside a root); start
 * does not. */
static void test_roots_missing_at_define(void **state) {
        GuestDef d = kernel_def(tu_path(tmp, "later/vmlinuz"));
        assert_int_equal(guest_def_check_files(&d, &cfg), 0);
        err_clear();
        assert_int_equal(check_host(&d), -ENOENT);
        char *want = tu_asprintf("definition: 'kernel' file '%s' does not exist", d.kernel);
        assert_string_equal(err_msg(), want);
        free(want);
}

/* What QEMU gets is the file that was checked: the descriptors stay on it
 * when the path is replaced by a link to /etc/shadow afterwards. */
static void test_descriptors_are_the_checked_files(void **state) {
        char *k = tu_asprintf("%s", tu_path(tmp, "swap-kernel"));
        char *disk = tu_asprintf("%s", tu_path(tmp, "swap-disk"));
        write_file(k, "checked-kernel", 14, 0644);
        write_file(disk, "checked-disk", 12, 0644);
        GuestDef d = kernel_def(k);
        d.n_disks = 1;
        snprintf(d.disks[0].path, sizeof(d.disks[0].path), "%s", disk);
        snprintf(d.disks[0].format, sizeof(d.disks[0].format), "raw");
        snprintf(d.disks[0].cache, sizeof(d.disks[0].cache), "writeback");
        d.disks[0].readonly = false;

        GuestFiles f;
        assert_int_equal(guest_def_check_host(&d, &cfg, &f), 0);
        assert_true(f.kernel > 2 && f.disk_ro[0] > 2 && f.disk_rw[0] > 2);
        assert_int_equal(f.initrd, -1);
        assert_false(f.disk_blk[0]);
        assert_int_equal(fcntl(f.disk_rw[0], F_GETFL) & O_ACCMODE, O_RDWR);
        assert_int_equal(fcntl(f.disk_ro[0], F_GETFL) & O_ACCMODE, O_RDONLY);
        assert_true(fcntl(f.kernel, F_GETFD) & FD_CLOEXEC); /* only QEMU's child clears it */

        assert_int_equal(unlink(k), 0);
        assert_int_equal(symlink("/etc/shadow", k), 0);
        assert_int_equal(unlink(disk), 0);
        assert_int_equal(symlink("/etc/shadow", disk), 0);
        char buf[32] = "";
        assert_int_equal(pread(f.kernel, buf, sizeof(buf), 0), 14);
        assert_memory_equal(buf, "checked-kernel", 14);
        assert_int_equal(pread(f.disk_ro[0], buf, sizeof(buf), 0), 12);
        assert_memory_equal(buf, "checked-disk", 12);
        guest_files_close(&f);
        assert_int_equal(f.kernel, -1);

        /* and the next start refuses the links */
        err_clear();
        assert_int_equal(check_host(&d), -EINVAL);
        assert_non_null(strstr(err_msg(), "goes through the symbolic link"));
        unlink(k);
        unlink(disk);
        free(k);
        free(disk);
}

static int setup_files(void **state) {
        static char qcow2[104] = "QFI\xfb\0\0\0\3"; /* a version 3 header, nothing else set */
        tmp = tu_tmpdir("agentdef");
        chmod(tmp, 0755); /* reachable by the unprivileged child */
        write_file(tu_path(tmp, "vmlinuz"), "kernel", 6, 0644);
        write_file(tu_path(tmp, "initrd"), "initrd", 6, 0644);
        write_file(tu_path(tmp, "disk.raw"), "rawdata", 7, 0666);
        write_file(tu_path(tmp, "disk.qcow2"), qcow2, sizeof(qcow2), 0666);
        write_file(tu_path(tmp, "cut.qcow2"), qcow2, 8, 0666);
        write_file(tu_path(tmp, "fake.qcow2"), "QFI?not a qcow2", 15, 0666);
        write_file(tu_path(tmp, "short.qcow2"), "QF", 2, 0666);
        write_file(tu_path(tmp, "unreadable"), "secret", 6, 0000);
        write_file(tu_path(tmp, "readonly.raw"), "ro", 2, 0444);
        assert_int_equal(mkdir(tu_path(tmp, "subdir"), 0755), 0);
        write_file(tu_path(tmp, "subdir/k"), "k2", 2, 0644);
        outside = tu_tmpdir("agentdef-out");
        assert_int_equal(symlink("/etc/shadow", tu_path(tmp, "shadow-link")), 0);
        assert_int_equal(symlink("/etc", tu_path(tmp, "etc-link")), 0);
        assert_int_equal(symlink(tu_path(tmp, "subdir"), tu_path(tmp, "subdir-link")), 0);
        assert_int_equal(symlink("/proc/self/fd/0", tu_path(tmp, "fd-link")), 0);
        assert_int_equal(mkfifo(tu_path(tmp, "fifo"), 0644), 0);
        if (geteuid() == 0) {
                assert_int_equal(mknod(tu_path(tmp, "null"), S_IFCHR | 0666, makedev(1, 3)), 0);
                assert_int_equal(mknod(tu_path(tmp, "blk"), S_IFBLK | 0600, makedev(7, 0)), 0);
        }
        write_file(tu_path(outside, "secret"), "secret", 6, 0644);
        agent_config_defaults(&cfg);
        snprintf(cfg.image_roots[0], sizeof(cfg.image_roots[0]), "%s", tmp);
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_host_ok_and_missing),
                cmocka_unit_test(test_host_qcow2_magic),
                cmocka_unit_test(test_qcow2_backing_and_data_files_refused),
                cmocka_unit_test(test_host_bridges),
                cmocka_unit_test(test_host_permissions),
                cmocka_unit_test(test_host_odirect),
                cmocka_unit_test(test_roots_outside),
                cmocka_unit_test(test_roots_symlinks),
                cmocka_unit_test(test_roots_file_types),
                cmocka_unit_test(test_roots_missing_at_define),
                cmocka_unit_test(test_descriptors_are_the_checked_files),
        };
        return cmocka_run_group_tests(tests, setup_files, NULL);
}
