/* drover-agent confines guests (real agent, real QEMU under TCG): a guest
 * whose kernel and disk lie in an image root starts, its QEMU runs as the
 * unprivileged qemu_user (Uid in /proc/PID/status) and still has the disk,
 * a root-only file, open (the agent opened it and passed the descriptor:
 * no path of the definition is on QEMU's command line); a definition that
 * names a file outside the roots or through a link is refused at Define;
 * a file replaced by a link after Define is refused at Start; and an agent
 * whose qemu_user does not exist refuses to start.  An agent started with
 * umask 0 still gives QEMU's own files (QMP and QGA sockets, serial log)
 * no group or other bits.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "agentd-util.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

/* A 1 MiB raw image only root can read or write. */
static void make_disk(const char *path) {
        int fd = open(path, O_CREAT | O_RDWR | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 1 << 20), 0);
        close(fd);
}

static char *guest_json(const char *name, const char *disk, const char *format) {
        char *s = NULL;
        assert_true(asprintf(&s,
                             "{\"name\": \"%s\", \"memory_mib\": 48, \"kernel\": \"%s\", \"append\": \"mib=8 rate=5\", "
                             "\"disks\": [{\"path\": \"%s\", \"format\": \"%s\", \"cache\": \"writeback\"}]}",
                             name, tu_guest_elf(), disk, format) > 0);
        return s;
}

/* Define @name with @disk of @format: 0, or the failed call's status in @ret_st. */
static int define_fmt(TestAgent *t, const char *name, const char *disk, const char *format, RpcStatus *ret_st) {
        Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
        Drover__V1__GetGuestResponse *resp = NULL;
        char *json = guest_json(name, disk, format);
        req.definition_json = json;
        int r = ta_call(t, "Define", &req.base, (ProtobufCMessage **) &resp, ret_st);
        free(json);
        if (resp)
                drover__v1__get_guest_response__free_unpacked(resp, NULL);
        return r;
}

static int define(TestAgent *t, const char *name, const char *disk, RpcStatus *ret_st) {
        return define_fmt(t, name, disk, "raw", ret_st);
}

static int start(TestAgent *t, const char *name, int *ret_pid, RpcStatus *ret_st) {
        Drover__V1__StartRequest req = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GuestStatus *st = NULL;
        req.guest = (char *) name;
        int r = ta_call(t, "Start", &req.base, (ProtobufCMessage **) &st, ret_st);
        if (st) {
                *ret_pid = st->pid;
                drover__v1__guest_status__free_unpacked(st, NULL);
        }
        return r;
}

/* The value of @field ("Uid:") in /proc/@pid/status, first number. */
static long proc_status_field(int pid, const char *field) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
        char *text = tu_read_file(path, NULL);
        assert_non_null(text);
        char *p = strstr(text, field);
        assert_non_null(p);
        long v = strtol(p + strlen(field), NULL, 10);
        free(text);
        return v;
}

/* Whether @pid holds a descriptor on @path. */
static bool has_open(int pid, const char *path) {
        char dir[64], link[600], target[600];
        snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
        DIR *d = opendir(dir);
        struct dirent *e;
        bool found = false;
        assert_non_null(d);
        while (!found && (e = readdir(d))) {
                snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
                ssize_t n = readlink(link, target, sizeof(target) - 1);
                if (n > 0) {
                        target[n] = '\0';
                        found = strcmp(target, path) == 0;
                }
        }
        closedir(d);
        return found;
}

static bool cmdline_contains(int pid, const char *needle) {
        char path[64];
        size_t len = 0;
        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
        char *text = tu_read_file(path, &len);
        bool found = false;
        for (size_t i = 0; text && i < len; i += strlen(text + i) + 1)
                found |= strstr(text + i, needle) != NULL;
        free(text);
        return found;
}

static void test_guest_confined_and_unprivileged(void **state) {
        if (geteuid() != 0)
                tu_skip("-runas needs root to drop from");
        const char *dir = tu_tmpdir("agentd-confine");
        TestAgent t = { 0 };
        RpcStatus st;
        int pid = 0;
        struct passwd *nobody = getpwnam("nobody");
        assert_non_null(nobody);
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);

        /* a guest with its disk in a root starts, and QEMU runs as nobody */
        char *disk = strdup(tu_path(dir, "c1.raw"));
        make_disk(disk);
        if (define(&t, "c1", disk, &st) < 0)
                fail_msg("Define: %s %s", rpc_code_to_string(st.code), st.details);
        if (start(&t, "c1", &pid, &st) < 0)
                fail_msg("Start: %s %s", rpc_code_to_string(st.code), st.details);
        assert_true(pid > 0);
        TuQemu q = { 0 };
        snprintf(q.serial_path, sizeof(q.serial_path), "%.200s/c1.serial", t.run_dir);
        assert_true(tu_serial_wait(&q, "READY", 10000));
        assert_int_equal(proc_status_field(pid, "\nUid:\t"), (long) nobody->pw_uid);
        assert_int_equal(proc_status_field(pid, "\nGid:\t"), (long) nobody->pw_gid);
        /* the disk is root's alone (0600), yet QEMU has it: the agent's descriptor */
        assert_true(has_open(pid, disk));
        assert_false(cmdline_contains(pid, disk));
        assert_true(cmdline_contains(pid, "/dev/fdset/0"));
        assert_false(cmdline_contains(pid, tu_guest_elf()));

        /* outside the roots, and /etc/shadow: refused at Define, naming member and roots */
        char roots[1200];
        test_image_roots(dir, ", ", roots, sizeof(roots));
        assert_true(define(&t, "c2", "/etc/shadow", &st) < 0);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
        char *want = NULL;
        assert_true(asprintf(&want, "'disks[0].path' '/etc/shadow' is outside the image roots (image roots: %s)",
                             roots) > 0);
        if (!strstr(st.details, want))
                fail_msg("got '%s', want '%s'", st.details, want);
        free(want);

        /* a link in a root to a file outside: refused at Define */
        const char *link = tu_path(dir, "shadow.raw");
        assert_int_equal(symlink("/etc/shadow", link), 0);
        assert_true(define(&t, "c3", link, &st) < 0);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
        assert_non_null(strstr(st.details, "goes through the symbolic link"));

        /* a file that was fine at Define and is a link at Start: refused then */
        char *later = strdup(tu_path(dir, "c4.raw"));
        make_disk(later);
        if (define(&t, "c4", later, &st) < 0)
                fail_msg("Define: %s %s", rpc_code_to_string(st.code), st.details);
        assert_int_equal(unlink(later), 0);
        assert_int_equal(symlink("/etc/shadow", later), 0);
        assert_true(start(&t, "c4", &pid, &st) < 0);
        assert_non_null(strstr(st.details, "goes through the symbolic link"));
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GetGuestResponse *g = NULL;
        ref.guest = (char *) "c4";
        assert_int_equal(ta_call(&t, "GetGuest", &ref.base, (ProtobufCMessage **) &g, &st), 0);
        assert_int_equal(g->status->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        assert_int_equal(g->status->pid, 0);
        drover__v1__get_guest_response__free_unpacked(g, NULL);

        test_agent_kill_guests(&t);
        assert_int_equal(test_agent_stop(&t), 0);
        free(disk);
        free(later);
}

/* A qemu_user that does not exist is a configuration error at start. */
static void test_missing_qemu_user(void **state) {
        const char *dir = tu_tmpdir("agentd-nouser");
        char listen[320];
        snprintf(listen, sizeof(listen), "unix:%s/agent.sock", dir);
        char *argv[] = { (char *) tu_build_path("agent/drover-agent"), "--dev", "--listen", listen,
                         "--state-dir", (char *) tu_path(dir, "s"), "--run-dir", (char *) tu_path(dir, "r"),
                         "--set", "qemu_user=drover-no-such-user", NULL };
        const char *log = tu_path(dir, "agent.log");
        pid_t p = tu_spawn(argv, log);
        int status = 0;
        bool done = false;
        for (int i = 0; i < 500 && !(done = tu_reap(p, &status)); i++)
                sleep_ms(10);
        if (!done)
                tu_kill(p);
        assert_true(done && WIFEXITED(status) && WEXITSTATUS(status) == 1);
        char *text = tu_read_file(log, NULL);
        assert_non_null(text);
        assert_non_null(strstr(text, "'qemu_user' 'drover-no-such-user' is not a user on this host"));
        free(text);
}

static void run_ok(const char *cmd) {
        if (system(cmd) != 0)
                fail_msg("'%s' failed", cmd);
}

/* A qcow2 image names its backing file by a path QEMU would open as root,
 * wherever it points: the agent refuses such an image at Define (and at
 * Start, when the header was written after Define), naming the file; a
 * qcow2 image without one starts (its -blockdev carries "backing": null). */
static void test_qcow2_backing_file_refused(void **state) {
        if (geteuid() != 0)
                tu_skip("-runas needs root to drop from");
        const char *dir = tu_tmpdir("agentd-qcow2");
        const char *outside = tu_tmpdir("agentd-qcow2-out");
        TestAgent t = { 0 };
        RpcStatus st;
        int pid = 0;
        char cmd[1200], plain[300], backed[300], later[300], secret[300];
        snprintf(plain, sizeof(plain), "%s/plain.qcow2", dir);
        snprintf(backed, sizeof(backed), "%s/backed.qcow2", dir);
        snprintf(later, sizeof(later), "%s/later.qcow2", dir);
        snprintf(secret, sizeof(secret), "%s/secret.raw", outside);
        make_disk(secret);
        snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s 1M && qemu-img create -q -f qcow2 -b %s -F raw %s 1M",
                 plain, secret, backed);
        run_ok(cmd);
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);

        /* refused at Define, naming the image and its backing file */
        assert_true(define_fmt(&t, "q1", backed, "qcow2", &st) < 0);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
        char *want = NULL;
        assert_true(asprintf(&want, "'disks[0].path' '%s' is a qcow2 image with the backing file '%s'", backed,
                             secret) > 0);
        if (!strstr(st.details, want))
                fail_msg("got '%s', want '%s'", st.details, want);

        /* fine at Define (no image yet), backed by Start: refused then */
        if (define_fmt(&t, "q2", later, "qcow2", &st) < 0)
                fail_msg("Define: %s %s", rpc_code_to_string(st.code), st.details);
        snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 -b %s -F raw %s 1M", secret, later);
        run_ok(cmd);
        assert_true(start(&t, "q2", &pid, &st) < 0);
        assert_non_null(strstr(st.details, "is a qcow2 image with the backing file"));
        assert_non_null(strstr(st.details, secret));

        /* a qcow2 image without a backing file starts */
        if (define_fmt(&t, "q3", plain, "qcow2", &st) < 0)
                fail_msg("Define: %s %s", rpc_code_to_string(st.code), st.details);
        if (start(&t, "q3", &pid, &st) < 0)
                fail_msg("Start: %s %s", rpc_code_to_string(st.code), st.details);
        TuQemu q = { 0 };
        snprintf(q.serial_path, sizeof(q.serial_path), "%.200s/q3.serial", t.run_dir);
        assert_true(tu_serial_wait(&q, "READY", 10000));
        assert_true(cmdline_contains(pid, "\"backing\":null"));

        test_agent_kill_guests(&t);
        assert_int_equal(test_agent_stop(&t), 0);
        free(want);
}

/* The mode bits of @path, without its type. */
static mode_t mode_of(const char *path) {
        struct stat st;
        if (lstat(path, &st) < 0)
                fail_msg("%s: %s", path, strerror(errno));
        return st.st_mode & 07777;
}

/* QEMU creates its sockets and serial log itself, as root before -runas:
 * whatever umask the agent has, they are root's alone (0 for group and
 * other: a local user can neither read a guest's console nor drive its
 * QEMU). */
static void test_qemu_files_private_under_umask_0(void **state) {
        if (geteuid() != 0)
                tu_skip("-runas needs root to drop from");
        const char *dir = tu_tmpdir("agentd-umask");
        TestAgent t = { 0 };
        RpcStatus st;
        int pid = 0;
        mode_t old = umask(0); /* the agent inherits it */
        int r = test_agent_start(&t, dir, NULL);
        umask(old);
        assert_int_equal(r, 0);

        char *disk = strdup(tu_path(dir, "u1.raw"));
        make_disk(disk);
        Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
        Drover__V1__GetGuestResponse *resp = NULL;
        char *json = NULL;
        assert_true(asprintf(&json,
                             "{\"name\": \"u1\", \"memory_mib\": 48, \"kernel\": \"%s\", \"append\": \"mib=8 rate=5\", "
                             "\"guest_agent\": true, \"serial_log\": true, "
                             "\"disks\": [{\"path\": \"%s\", \"format\": \"raw\", \"cache\": \"writeback\"}]}",
                             tu_guest_elf(), disk) > 0);
        req.definition_json = json;
        if (ta_call(&t, "Define", &req.base, (ProtobufCMessage **) &resp, &st) < 0)
                fail_msg("Define: %s %s", rpc_code_to_string(st.code), st.details);
        if (resp)
                drover__v1__get_guest_response__free_unpacked(resp, NULL);
        if (start(&t, "u1", &pid, &st) < 0)
                fail_msg("Start: %s %s", rpc_code_to_string(st.code), st.details);
        const char *files[] = { "u1.qmp", "u1.qga", "u1.serial" };
        for (size_t i = 0; i < 3; i++) {
                char path[400];
                snprintf(path, sizeof(path), "%.300s/%s", t.run_dir, files[i]);
                mode_t m = mode_of(path);
                printf("# %s: %04o\n", files[i], (unsigned) m);
                if (m & 077)
                        fail_msg("%s is %04o under umask 0: group or other may use it", path, (unsigned) m);
        }
        test_agent_kill_guests(&t);
        assert_int_equal(test_agent_stop(&t), 0);
        free(json);
        free(disk);
}

int main(void) {
        tu_require_qemu();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_guest_confined_and_unprivileged),
                cmocka_unit_test(test_missing_qemu_user),
                cmocka_unit_test(test_qemu_files_private_under_umask_0),
                cmocka_unit_test(test_qcow2_backing_file_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
