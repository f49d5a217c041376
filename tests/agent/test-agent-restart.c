/* Unit tests of the restart's QEMU finder and its quarantine reports
 * (agent/agent-restart.c, agent_reconnect_all), with real processes:
 *
 *   - a process whose command line names a guest's monitor but whose
 *     executable is not qemu_binary (a copy of /bin/sh under another name:
 *     any local user can start one) is never taken for that guest's QEMU:
 *     no unmanaged guest, and it still runs afterwards;
 *   - one whose executable is qemu_binary (here the same copy of /bin/sh,
 *     configured as qemu_binary) and runs as root is, and when its status
 *     file could not even be moved to the quarantine folder (a file stands
 *     where the folder should be: as root, permissions would not stop the
 *     move), its unmanaged entry says "not moved" with the reason, never
 *     "quarantined".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent-vm-priv.h"
#include "agent.h"
#include "deadline.h"
#include "testutil.h"

static void write_file(const char *path, const char *content) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(content, f);
        assert_int_equal(fclose(f), 0);
}

/* A copy of /bin/sh at @path. */
static void copy_sh(const char *path) {
        size_t len = 0;
        char *bin = tu_read_file("/bin/sh", &len);
        assert_non_null(bin);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(fwrite(bin, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(chmod(path, 0755), 0);
        free(bin);
}

/* Run @exe (a shell) with a QEMU-like command line naming @run_dir/@name.qmp
 * as its monitor; it waits until killed. */
static pid_t fake_qemu(const char *exe, const char *run_dir, const char *name) {
        char qmp[600];
        snprintf(qmp, sizeof(qmp), "unix:%s/%s.qmp,server=on,wait=off", run_dir, name);
        char *argv[] = { (char *) exe, (char *) "-c", (char *) "while :; do sleep 1; done", (char *) "qemu",
                         (char *) "-name", (char *) name, (char *) "-qmp", qmp, (char *) "-m", (char *) "64", NULL };
        pid_t pid = tu_spawn(argv, NULL);
        assert_true(pid > 0);
        /* its command line is the shell's own once exec'd */
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
        Deadline d = deadline_in_ms(5000);
        for (;;) {
                size_t n = 0;
                char *cl = tu_read_file(path, &n);
                bool ready = cl && n > 0 && memmem(cl, n, "-qmp", 5) != NULL;
                free(cl);
                if (ready)
                        return pid;
                assert_false(deadline_expired(d));
                sleep_ms(10);
        }
}

static const AgentUnmanaged *find_unmanaged(const Agent *a, const char *name) {
        for (size_t i = 0; i < a->n_unmanaged; i++)
                if (strcmp(a->unmanaged[i].name, name) == 0)
                        return &a->unmanaged[i];
        return NULL;
}

static void test_decoy_is_not_adopted_and_unmoved_status_is_said(void **state) {
        const char *dir = tu_tmpdir("agent-restart");
        Agent a = { 0 };
        char state_dir[200], run_dir[200], qemu[200], decoy[200];

        snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
        snprintf(run_dir, sizeof(run_dir), "%s/run", dir);
        snprintf(qemu, sizeof(qemu), "%s/qemu-system-x86_64", dir);
        snprintf(decoy, sizeof(decoy), "%s/decoy", dir);
        assert_int_equal(mkdir(state_dir, 0700), 0);
        assert_int_equal(mkdir(run_dir, 0711), 0);
        copy_sh(qemu);
        copy_sh(decoy);
        snprintf(a.cfg.state_dir, sizeof(a.cfg.state_dir), "%s", state_dir);
        snprintf(a.cfg.run_dir, sizeof(a.cfg.run_dir), "%s", run_dir);
        snprintf(a.cfg.qemu_binary, sizeof(a.cfg.qemu_binary), "%s", qemu);
        snprintf(a.cfg.qemu_user, sizeof(a.cfg.qemu_user), "nobody");
        assert_int_equal(vm_registry_new(&a.vms), 0);

        /* two unreadable status files, and no quarantine folder to move them to */
        write_file(tu_path(state_dir, "ours.json"), "{ broken");
        write_file(tu_path(state_dir, "fake.json"), "{ broken");
        write_file(tu_path(state_dir, "quarantine"), "a file where the folder should be\n");
        pid_t ours = fake_qemu(qemu, run_dir, "ours");
        pid_t fake = fake_qemu(decoy, run_dir, "fake");

        assert_int_equal(agent_reconnect_all(&a), 0);

        /* the decoy: not this agent's QEMU, never listed, never killed */
        assert_null(find_unmanaged(&a, "fake"));
        assert_true(tu_pid_alive(fake));
        /* qemu_binary running as root on the guest's monitor: unmanaged, and
         * its status file was not moved, which the entry says */
        const AgentUnmanaged *u = find_unmanaged(&a, "ours");
        assert_non_null(u);
        assert_int_equal(u->pid, ours);
        assert_string_equal(u->file, "");
        if (!strstr(u->why, "status file unreadable, not moved: moving ") || !strstr(u->why, "Not a directory") ||
            strstr(u->why, "quarantined"))
                fail_msg("why: '%s'", u->why);
        assert_true(tu_pid_alive(ours));
        /* both files are still where they were */
        assert_int_equal(access(tu_path(state_dir, "ours.json"), F_OK), 0);
        assert_int_equal(access(tu_path(state_dir, "fake.json"), F_OK), 0);

        tu_kill(ours);
        tu_kill(fake);
        vm_registry_free(a.vms);
        free(a.unmanaged);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_decoy_is_not_adopted_and_unmoved_status_is_said),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
