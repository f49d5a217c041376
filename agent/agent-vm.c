/* Guest lifecycle on one host (see agent.h).
 *
 * Start runs as a START async job: phase `launch` (persisted) covers the
 * host checks, tap creation, exec of QEMU and the wait for its monitor, all
 * with no lock held; phase `connect` covers attaching the monitor and the
 * first commands.  QEMU always starts with -S, so a guest never runs before
 * its monitor is attached; a restart that finds a START job in its status
 * file kills that QEMU (half-started guests are never trusted).
 *
 * Every QEMU this agent starts goes through launch_qemu(): the guest's
 * files are checked and opened here (agent-files.h: inside the image
 * roots, no links), their descriptors are inherited by QEMU at the numbers
 * its command line names, and QEMU drops to qemu_user (-runas, optionally
 * -chroot) once it has opened everything it needs, so nothing on the host
 * has to be made accessible to that user.  Like Define and Start, the spawn
 * refuses a guest name that a running unmanaged QEMU owns (agent-restart.c
 * finds those at start).  QEMU outlives the agent: it runs in its own
 * session and, when systemd is the init, in a systemd scope of its own
 * (agent-scope.c; else in the agent's cgroup, kept alive by the unit's
 * KillMode=process).  Restart recovery itself lives in agent-restart.c.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent-files.h"
#include "agent-net.h"
#include "agent-scope.h"
#include "agent-vm-priv.h"
#include "err.h"
#include "log.h"
#include "qga.h"
#include "qmp.h"
#include "status.h"

/* ---- per-VM hooks ------------------------------------------------------------ */

void agent_vm_cleanup_host(AgentVm *av) {
        for (size_t i = 0; i < av->def.n_nics; i++) {
                char tap[16];
                guest_tap_name(av->def.uuid, i, tap);
                if (agent_tap_delete(tap) < 0)
                        log_warning("guest %s: %s", av->def.name, err_msg());
        }
        unlink(av->paths.qmp);
        unlink(av->paths.pidfile);
}

static void on_qmp_event(Vm *vm, const QmpEvent *ev, void *opaque) {
        AgentVm *av = opaque;
        const char *kind = NULL;
        switch (ev->type) {
        case QMP_EVENT_STOP: kind = "paused"; break;
        case QMP_EVENT_RESUME: kind = "resumed"; break;
        case QMP_EVENT_SHUTDOWN: kind = "shutdown"; break;
        case QMP_EVENT_MIGRATION: kind = "migration"; break;
        default: return;
        }
        if (ev->type == QMP_EVENT_MIGRATION)
                agent_emit(av->agent, vm, kind, "status %s", migration_status_to_string(ev->migration_status));
        else
                agent_emit(av->agent, vm, kind, "QEMU event %s", ev->name);
}

static void on_qmp_eof(Vm *vm, void *opaque) {
        AgentVm *av = opaque;
        VmSnapshot s;
        /* QEMU is gone: free its taps and stale socket, persist, tell. */
        agent_vm_cleanup_host(av);
        (void) vm_save_status(vm);
        vm_snapshot(vm, &s);
        agent_emit(av->agent, vm, s.reason == VM_REASON_CRASHED ? "crashed" : "stopped", "%s",
                   s.last_error[0] ? s.last_error : vm_reason_to_string(s.reason));
}

static int fill_status(Vm *vm, VmStatusRecord *rec, void *opaque) {
        (void) vm;
        (void) rec;
        (void) opaque;
        return 0; /* the definition travels in vm->definition_json */
}

/* Copy @src into @dst of @size bytes, refusing to truncate. */
static int copy_path(char *dst, size_t size, const char *src) {
        size_t n = strlen(src);
        if (n >= size)
                return err_set(-ENAMETOOLONG, "path too long (%zu bytes, at most %zu): %s", n, size - 1, src);
        memcpy(dst, src, n + 1);
        return 0;
}

static void free_agent_vm(void *opaque) {
        free(opaque);
}

int agent_vm_new(Agent *a, const GuestDef *def, const char *canonical_json, Vm **ret_vm) {
        AgentVm *av = calloc(1, sizeof(*av));
        Vm *vm;
        int r;

        if (!av)
                return err_set(-ENOMEM, "out of memory");
        av->agent = a;
        av->def = *def;
        if ((r = guest_paths(a->cfg.run_dir, def->name, &av->paths)) < 0) {
                free(av);
                return r;
        }
        if (strlen(av->paths.qmp) >= VM_PATH_MAX || strlen(av->paths.qga) >= VM_PATH_MAX ||
            strlen(av->paths.qmp) >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
                free(av);
                return err_set(-ENAMETOOLONG, "run_dir is too long for guest %s's socket paths", def->name);
        }
        VmOps ops = { .fill_status = fill_status, .event = on_qmp_event, .eof = on_qmp_eof,
                      .free = free_agent_vm, .opaque = av };
        if ((r = vm_new(def->name, def->uuid, a->cfg.state_dir, &ops, &vm)) < 0) {
                free(av);
                return r;
        }
        char *copy = strdup(canonical_json);
        QgaAgent *qga = NULL;
        if (!copy || (def->guest_agent && qga_new(av->paths.qga, &qga) < 0)) {
                free(copy);
                vm_unref(vm);
                return err_set(-ENOMEM, "out of memory");
        }
        vm_lock(vm);
        vm_set_definition_locked(vm, copy);
        (void) copy_path(vm->qmp_path, sizeof(vm->qmp_path), av->paths.qmp); /* checked above */
        if (def->guest_agent)
                (void) copy_path(vm->qga_path, sizeof(vm->qga_path), av->paths.qga);
        vm_attach_agent_locked(vm, qga);
        vm_unlock(vm);
        *ret_vm = vm;
        return 0;
}

/* ---- define / undefine ----------------------------------------------------- */

int agent_vm_define(Agent *a, const char *json, size_t len, const char *op, Vm **ret_vm) {
        _cleanup_free_ char *canonical = NULL;
        GuestDef def;
        Vm *vm;
        int r;

        if ((r = guest_def_parse(json, len, &def)) < 0)
                return r;
        if ((r = guest_def_check_files(&def, &a->cfg)) < 0) /* again at every start */
                return r;
        if ((r = guest_def_to_json(&def, &canonical)) < 0)
                return r;
        if ((r = agent_unmanaged_check(a, def.name)) < 0)
                return r;
        if ((r = agent_vm_new(a, &def, canonical, &vm)) < 0)
                return r;
        if ((r = vm_registry_add(a->vms, vm)) < 0) {
                vm_unref(vm);
                return r;
        }
        if ((r = vm_save_status(vm)) < 0) {
                (void) vm_registry_remove(a->vms, vm);
                vm_unref(vm);
                return err_prefix(r, "guest %s not defined", def.name);
        }
        log_info("guest %s (%s) defined by op %s", def.name, def.uuid, op);
        agent_emit(a, vm, "defined", "op %s", op);
        *ret_vm = vm;
        return 0;
}

int agent_vm_undefine(Agent *a, Vm *vm, const char *op) {
        int r;
        vm_lock(vm);
        if ((r = job_begin(vm, JOB_MODIFY, op, "undefine", -1)) < 0)
                goto out;
        if (vm->job.async != ASYNC_JOB_NONE || vm_is_active_locked(vm) || vm->state == VM_STATE_SHUTDOWN) {
                r = err_set(-EBUSY, "guest %s is %s%s%s: destroy or shut it down first", vm->name,
                            vm_state_to_string(vm->state), vm->job.async ? " with a running " : "",
                            vm->job.async ? async_job_to_string(vm->job.async) : "");
                job_end(vm);
                goto out;
        }
        vm_unlock(vm);
        agent_emit(a, vm, "undefined", "op %s", op);
        r = vm_registry_remove(a->vms, vm);
        vm_lock(vm);
        job_end(vm);
        vm_unlock(vm);
        if (r >= 0)
                r = vm_remove_status(vm);
        log_info("guest %s undefined by op %s", vm->name, op);
        return r;
out:
        vm_unlock(vm);
        return r;
}

/* ---- start ------------------------------------------------------------------- */

/* In the child, before exec: the guest's files survive it. */
static void keep_open(const GuestFiles *f) {
        int fds[2 + 2 * GUEST_MAX_DISKS] = { f->kernel, f->initrd };
        for (size_t i = 0; i < GUEST_MAX_DISKS; i++) {
                fds[2 + 2 * i] = f->disk_ro[i];
                fds[3 + 2 * i] = f->disk_rw[i];
        }
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                if (fds[i] > STDERR_FILENO)
                        (void) fcntl(fds[i], F_SETFD, 0);
}

/* Start QEMU in its own session so it outlives the agent (double fork),
 * with the guest's files (@files, O_CLOEXEC here) inherited at their
 * numbers, and in a systemd scope of its own when systemd is the init
 * (agent-scope.h): the process that will exec QEMU waits on @go until the
 * scope holds it, or until the agent gives up on it (EOF: it exits
 * without exec'ing).  Returns the pid of QEMU; exec failures are reported
 * with their errno. */
static int spawn_detached(char **argv, const GuestFiles *files, const GuestDef *def, const char *log_path,
                          pid_t *ret_pid) {
        int pid_pipe[2], err_pipe[2], go[2];
        pid_t child, qemu = 0;
        int exec_errno = 0, st;

        if (pipe2(pid_pipe, O_CLOEXEC) < 0)
                return err_set(-errno, "pipe: %m");
        if (pipe2(err_pipe, O_CLOEXEC) < 0) {
                close(pid_pipe[0]);
                close(pid_pipe[1]);
                return err_set(-errno, "pipe: %m");
        }
        if (pipe2(go, O_CLOEXEC) < 0) {
                int r = -errno;
                close(pid_pipe[0]); close(pid_pipe[1]); close(err_pipe[0]); close(err_pipe[1]);
                return err_set(r, "pipe: %s", strerror(-r));
        }
        child = fork();
        if (child < 0) {
                int r = -errno;
                close(pid_pipe[0]); close(pid_pipe[1]); close(err_pipe[0]); close(err_pipe[1]);
                close(go[0]); close(go[1]);
                return err_set(r, "fork: %s", strerror(-r));
        }
        if (child == 0) {
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_DFL);
                setsid();
                pid_t g = fork();
                if (g != 0) {
                        ssize_t _unused_ w = write(pid_pipe[1], &g, sizeof(g));
                        _exit(g < 0 ? 1 : 0);
                }
                close(go[1]);
                char c;
                ssize_t k;
                while ((k = read(go[0], &c, 1)) < 0 && errno == EINTR)
                        ;
                if (k != 1)
                        _exit(127);
                /* QEMU creates its QMP and QGA sockets and the serial log
                 * (as root, before -runas): root's alone, whatever umask the
                 * agent was started with */
                umask(0077);
                int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                if (nul >= 0)
                        dup2(nul, STDIN_FILENO);
                keep_open(files);
                execv(argv[0], argv);
                int e = errno;
                ssize_t _unused_ w2 = write(err_pipe[1], &e, sizeof(e));
                _exit(127);
        }
        close(pid_pipe[1]);
        close(err_pipe[1]);
        close(go[0]);
        while (waitpid(child, &st, 0) < 0 && errno == EINTR)
                ;
        ssize_t n = read(pid_pipe[0], &qemu, sizeof(qemu));
        close(pid_pipe[0]);
        if (n == sizeof(qemu) && qemu > 0) {
                (void) agent_scope_move(def->name, def->uuid, qemu);
                ssize_t _unused_ w = write(go[1], "g", 1);
        }
        close(go[1]);
        ssize_t m = read(err_pipe[0], &exec_errno, sizeof(exec_errno)); /* EOF on a good exec */
        close(err_pipe[0]);
        if (n != sizeof(qemu) || qemu <= 0)
                return err_set(-ECHILD, "could not start %s", argv[0]);
        if (m == sizeof(exec_errno))
                return err_set(-exec_errno, "cannot execute %s: %s", argv[0], strerror(exec_errno));
        *ret_pid = qemu;
        return 0;
}

static char *log_tail(const char *path) {
        static _Thread_local char buf[512];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        buf[0] = '\0';
        if (fd < 0)
                return buf;
        off_t end = lseek(fd, 0, SEEK_END);
        off_t from = end > (off_t) sizeof(buf) - 1 ? end - (off_t) sizeof(buf) + 1 : 0;
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
        close(fd);
        buf[n > 0 ? n : 0] = '\0';
        for (ssize_t i = n - 1; i >= 0 && (buf[i] == '\n' || buf[i] == ' '); i--)
                buf[i] = '\0';
        for (char *p = buf; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        return buf;
}


/* Wait for QEMU's monitor socket to accept, watching that QEMU lives. */
bool agent_process_wait_gone(pid_t pid, Deadline d) {
        int fd = -1;
#ifdef SYS_pidfd_open
        fd = pid > 0 ? (int) syscall(SYS_pidfd_open, pid, 0) : -1;
#endif
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        while (agent_process_alive(pid) && !deadline_expired(d)) {
                if (fd >= 0)
                        (void) poll(&pfd, 1, deadline_poll_ms(d)); /* readable once it exited */
                else
                        sleep_ms(2); /* no pidfd (kernel before 5.3): poll /proc */
        }
        if (fd >= 0)
                close(fd);
        return !agent_process_alive(pid);
}

/* Polls on purpose, every 5 ms: what it waits for is QEMU's listen() on
 * the socket, which no event announces (inotify would show the file at
 * bind(), before listen(), so a connect would still need retrying).  It
 * happens once per start and lasts ~50-200 ms, bounded by @d. */
static int wait_for_monitor(const char *path, pid_t pid, const char *log_path, Deadline d) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int r = copy_path(sa.sun_path, sizeof(sa.sun_path), path);
        if (r < 0)
                return r;
        for (;;) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return err_set(-errno, "socket: %m");
                int ok = connect(fd, (struct sockaddr *) &sa, sizeof(sa));
                close(fd);
                if (ok == 0)
                        return 0;
                if (!agent_process_alive(pid))
                        return err_set(-ECHILD, "QEMU exited during start: %s", log_tail(log_path));
                if (deadline_expired(d))
                        return err_set(-ETIMEDOUT, "QEMU did not open its monitor %s in time", path);
                sleep_ms(5);
        }
}

static int argv_append(char ***argv, const char *arg) {
        size_t n = 0;
        while ((*argv)[n])
                n++;
        char **v = realloc(*argv, (n + 2) * sizeof(char *));
        if (!v)
                return -ENOMEM;
        v[n] = strdup(arg);
        v[n + 1] = NULL;
        *argv = v;
        return v[n] ? 0 : -ENOMEM;
}

/* Exec QEMU (@argv, @files inherited) for @vm, record its pid, wait for its
 * monitor and attach it (agent.h, agent_vm_launch_incoming). */
static int spawn_qemu(Agent *a, Vm *vm, char **argv, const GuestFiles *files, int64_t timeout_ms, pid_t *ret_pid) {
        AgentVm *av = vm->ops.opaque;
        QmpMonitor *mon = NULL;
        pid_t pid = 0;
        int r;

        if ((r = agent_unmanaged_check(a, vm->name)) < 0)
                return r;
        if ((r = spawn_detached(argv, files, &av->def, av->paths.log, &pid)) < 0)
                return r;
        vm_lock(vm);
        vm->pid = pid; /* so destroy and recovery can find it */
        bool aborted = vm->job.abort_requested;
        vm_unlock(vm);
        (void) vm_save_status(vm);
        if (aborted) {
                r = err_set(-ECANCELED, "guest %s was destroyed while QEMU started", vm->name);
                goto fail;
        }
        Deadline d = deadline_in_ms(timeout_ms > 0 ? timeout_ms : a->cfg.start_timeout_ms);
        if ((r = wait_for_monitor(av->paths.qmp, pid, av->paths.log, d)) < 0)
                goto fail;
        QmpCallbacks cb = { .event = vm_handle_qmp_event, .eof = vm_handle_qmp_eof, .opaque = vm };
        if ((r = qmp_monitor_connect(av->paths.qmp, &cb, d, &mon)) < 0)
                goto fail;
        vm_lock(vm);
        if (vm->job.abort_requested) {
                vm_unlock(vm);
                r = err_set(-ECANCELED, "guest %s was destroyed while QEMU started", vm->name);
                goto fail;
        }
        vm_attach_monitor_locked(vm, TAKE_PTR(mon), pid);
        vm_unlock(vm);
        *ret_pid = pid;
        return 0;
fail:
        qmp_monitor_close(mon);
        kill(pid, SIGKILL);
        vm_lock(vm);
        if (vm->pid == pid)
                vm->pid = 0;
        vm_unlock(vm);
        return r;
}

/* Check and open the guest's files, make its taps (a start, not an
 * incoming guest), build the command line (-S always) and spawn QEMU. */
static int launch_qemu(Agent *a, Vm *vm, bool incoming, int64_t timeout_ms, pid_t *ret_pid) {
        AgentVm *av = vm->ops.opaque;
        GuestLaunch l = { .qemu_binary = a->cfg.qemu_binary, .accel = a->cfg.accel, .incoming = incoming,
                          .user = a->cfg.qemu_user, .chroot = a->cfg.qemu_chroot };
        GuestFiles files;
        char **argv = NULL;
        int r;

        if ((r = guest_def_check_host(&av->def, &a->cfg, &files)) < 0)
                return r;
        for (size_t i = 0; !incoming && i < av->def.n_nics; i++) {
                char tap[16];
                guest_tap_name(av->def.uuid, i, tap);
                if ((r = agent_tap_create(tap, av->def.nics[i].bridge)) < 0)
                        goto out;
        }
        if (!incoming) {
                unlink(av->paths.qmp);
                unlink(av->paths.qga);
                unlink(av->paths.pidfile);
        }
        if ((r = guest_build_argv(&av->def, &av->paths, &files, &l, &argv)) < 0)
                goto out;
        if (!incoming && argv_append(&argv, "-S") < 0) {
                r = err_set(-ENOMEM, "out of memory");
                goto out;
        }
        r = spawn_qemu(a, vm, argv, &files, timeout_ms, ret_pid);
out:
        guest_argv_free(argv);
        guest_files_close(&files);
        return r;
}

int agent_vm_launch_incoming(Agent *a, Vm *vm, pid_t *ret_pid) {
        return launch_qemu(a, vm, true, -1, ret_pid);
}

static void kill_pid(pid_t pid) {
        if (pid > 0)
                kill(pid, SIGKILL);
}


int agent_vm_start(Agent *a, Vm *vm, const char *op, bool paused, int64_t timeout_ms) {
        AgentVm *av = vm->ops.opaque;
        QmpMonitor *old = NULL, *mon = NULL;
        pid_t pid = 0;
        int r;

        if ((r = agent_unmanaged_check(a, vm->name)) < 0)
                return r;
        vm_lock(vm);
        if ((r = job_begin_async(vm, ASYNC_JOB_START, op, -1)) < 0) {
                vm_unlock(vm);
                return r;
        }
        if (vm->state != VM_STATE_SHUTOFF && vm->state != VM_STATE_CRASHED) {
                r = err_set(-EBUSY, "guest %s is already %s", vm->name, vm_state_to_string(vm->state));
                job_end_async(vm);
                vm_unlock(vm);
                return r;
        }
        old = vm_detach_monitor_locked(vm); /* the dead monitor of the last run */
        vm->last_error[0] = '\0';
        r = job_set_phase(vm, JOB_PHASE_LAUNCH);
        vm_unlock(vm);
        qmp_monitor_close(old);
        if (r < 0)
                goto fail;

        /* No lock held: host checks, taps, exec, waiting for the monitor. */
        if ((r = launch_qemu(a, vm, false, timeout_ms, &pid)) < 0)
                goto fail;
        agent_test_hold(JOB_PHASE_LAUNCH, vm->name);
        vm_lock(vm);
        if (vm->job.abort_requested) {
                vm_unlock(vm);
                r = err_set(-ECANCELED, "start of guest %s was cancelled by a destroy", vm->name);
                goto fail;
        }
        vm_set_state_locked(vm, VM_STATE_PAUSED, VM_REASON_STARTING_UP);
        if ((r = job_set_phase(vm, JOB_PHASE_CONNECT)) >= 0 && !paused)
                r = VM_NESTED_CALL(vm, ASYNC_JOB_START, op, "cont", qmp_cont(mon_, a->cfg.qmp_timeout_ms));
        if (r >= 0) {
                if (paused)
                        vm_set_state_locked(vm, VM_STATE_PAUSED, VM_REASON_USER);
                else
                        vm_set_state_locked(vm, VM_STATE_RUNNING, VM_REASON_BOOTED);
                job_end_async(vm);
                vm_unlock(vm);
                log_info("guest %s started (pid %d) by op %s", vm->name, (int) pid, op);
                agent_emit(a, vm, "started", "pid %d, op %s", (int) pid, op);
                return 0;
        }
        vm_unlock(vm);

fail: {
        char why[ERR_MSG_MAX];
        snprintf(why, sizeof(why), "%s", err_str(r));
        qmp_monitor_close(mon);
        kill_pid(pid);
        vm_lock(vm);
        QmpMonitor *dead = vm_detach_monitor_locked(vm);
        /* A start that never got as far as QEMU changes nothing but the
         * last error; one that did leaves the guest shut off (failed). */
        if (pid > 0 && (vm->state != VM_STATE_SHUTOFF || vm->reason != VM_REASON_DESTROYED))
                vm_mark_shutoff_locked(vm, VM_REASON_FAILED);
        vm_set_error_locked(vm, "start failed: %s", why);
        if (vm->job.async == ASYNC_JOB_START)
                job_end_async(vm);
        vm_unlock(vm);
        qmp_monitor_close(dead);
        agent_vm_cleanup_host(av);
        (void) vm_save_status(vm);
        log_warning("guest %s: start failed: %s", vm->name, why);
        agent_emit(a, vm, "failed", "start failed: %s", why);
        return err_set(r, "%s", why);
        }
}

/* ---- shutdown, destroy, suspend, resume ---------------------------------------- */

/* Run one monitor command under a normal job of @type. */
static int monitor_command(Agent *a, Vm *vm, JobType type, const char *op, const char *what,
                           int (*fn)(QmpMonitor *m, int64_t timeout_ms, void *arg), void *arg) {
        QmpMonitor *mon;
        int r;

        vm_lock(vm);
        if ((r = job_begin(vm, type, op, what, -1)) < 0)
                goto out;
        if ((r = vm_enter_monitor(vm, &mon)) == 0) {
                r = fn(mon, a->cfg.qmp_timeout_ms, arg);
                int e = vm_exit_monitor(vm, mon);
                if (r >= 0)
                        r = e;
        }
        job_end(vm);
out:
        vm_unlock(vm);
        return r;
}

static int do_powerdown(QmpMonitor *m, int64_t t, void *arg) {
        (void) arg;
        return qmp_call(m, "system_powerdown", NULL, t, NULL);
}
static int do_stop(QmpMonitor *m, int64_t t, void *arg) {
        (void) arg;
        return qmp_stop(m, t);
}
static int do_cont(QmpMonitor *m, int64_t t, void *arg) {
        (void) arg;
        return qmp_cont(m, t);
}
static int do_rtc_reset(QmpMonitor *m, int64_t t, void *arg) {
        (void) arg;
        return qmp_call(m, "rtc-reset-reinjection", NULL, t, NULL);
}

int agent_vm_shutdown(Agent *a, Vm *vm, const char *op, int64_t timeout_ms, bool force) {
        int r = monitor_command(a, vm, JOB_MODIFY, op, "system_powerdown", do_powerdown, NULL);
        if (r < 0)
                return r;
        Deadline d = deadline_in_ms(timeout_ms > 0 ? timeout_ms : 60000);
        vm_lock(vm);
        while (vm_is_active_locked(vm) && !deadline_expired(d))
                (void) vm_wait_locked(vm, d);
        bool off = !vm_is_active_locked(vm);
        vm_unlock(vm);
        if (off)
                return 0;
        if (!force)
                return err_set(-ETIMEDOUT, "guest %s did not power off within %lld ms (it may not handle ACPI)",
                               vm->name, (long long) (timeout_ms > 0 ? timeout_ms : 60000));
        log_info("guest %s: no power-off within the timeout, destroying it (op %s)", vm->name, op);
        return agent_vm_destroy(a, vm, op);
}

int agent_vm_destroy(Agent *a, Vm *vm, const char *op) {
        VmSnapshot snap;
        vm_snapshot(vm, &snap);
        int r = vm_destroy(vm, op, VM_REASON_DESTROYED, -1);
        /* SIGKILL is sent; wait (no lock held, bounded) until QEMU is really
         * gone, so a start right after does not meet its disk locks */
        if (snap.pid > 0)
                (void) agent_process_wait_gone(snap.pid, deadline_in_ms(5000));
        agent_vm_cleanup_host(vm->ops.opaque);
        if (r >= 0) {
                log_info("guest %s destroyed by op %s", vm->name, op);
                agent_emit(a, vm, "destroyed", "op %s", op);
        }
        return r;
}

int agent_vm_suspend(Agent *a, Vm *vm, const char *op) {
        return monitor_command(a, vm, JOB_SUSPEND, op, "stop", do_stop, NULL);
}

int agent_vm_resume(Agent *a, Vm *vm, const char *op) {
        return monitor_command(a, vm, JOB_MODIFY, op, "cont", do_cont, NULL);
}

/* ---- guest agent ------------------------------------------------------------------ */

typedef int (*GaCallFn)(QgaAgent *qga, int64_t timeout_ms, void *arg);

static int ga_call(Agent *a, Vm *vm, GaJobType type, const char *op, const char *what,
                      GaCallFn fn, void *arg) {
        QgaAgent *qga;
        int r;

        vm_lock(vm);
        if ((r = job_begin_ga(vm, type, op, what, -1)) < 0)
                goto out;
        if ((r = vm_enter_ga(vm, &qga)) == 0) {
                r = fn(qga, a->cfg.qga_timeout_ms, arg);
                char detail[ERR_MSG_MAX];
                snprintf(detail, sizeof(detail), "%s", r < 0 ? err_str(r) : "");
                int e = vm_exit_ga(vm, qga);
                vm_note_ga_result_locked(vm, r, detail);
                if (r < 0)
                        err_set(r, "guest agent of %s: %s", vm->name, detail);
                else
                        r = e;
        }
        job_end_ga(vm);
out:
        vm_unlock(vm);
        return r;
}

static int do_ping(QgaAgent *q, int64_t t, void *arg) {
        uint64_t t0 = now_ns();
        int r = qga_ping(q, t);
        *(uint64_t *) arg = (now_ns() - t0) / 1000;
        return r;
}

int agent_vm_guest_ping(Agent *a, Vm *vm, const char *op, uint64_t *ret_us) {
        return ga_call(a, vm, GA_JOB_QUERY, op, "guest-ping", do_ping, ret_us);
}

static int do_info(QgaAgent *q, int64_t t, void *arg) {
        GaGuestInfo *info = arg;
        const QgaInfo *qi;
        int r = qga_info(q, t, &qi);
        if (r < 0)
                return r;
        snprintf(info->version, sizeof(info->version), "%s", qi->version);
        info->enabled = calloc(qi->n_commands + 1, sizeof(*info->enabled));
        info->disabled = calloc(qi->n_commands + 1, sizeof(*info->disabled));
        if (!info->enabled || !info->disabled)
                return err_set(-ENOMEM, "out of memory");
        for (size_t i = 0; i < qi->n_commands; i++) {
                if (qi->commands[i].enabled)
                        snprintf(info->enabled[info->n_enabled++], 64, "%s", qi->commands[i].name);
                else
                        snprintf(info->disabled[info->n_disabled++], 64, "%s", qi->commands[i].name);
        }
        return 0;
}

int agent_vm_guest_info(Agent *a, Vm *vm, const char *op, GaGuestInfo *ret) {
        memset(ret, 0, sizeof(*ret));
        int r = ga_call(a, vm, GA_JOB_QUERY, op, "guest-info", do_info, ret);
        if (r < 0)
                ga_guest_info_clear(ret);
        return r;
}

void ga_guest_info_clear(GaGuestInfo *info) {
        free(info->enabled);
        free(info->disabled);
        memset(info, 0, sizeof(*info));
}

typedef struct SetTimeArg {
        int64_t ns;
        bool from_rtc;
        int64_t before, after;
} SetTimeArg;

static int do_set_time(QgaAgent *q, int64_t t, void *arg) {
        SetTimeArg *s = arg;
        int r;
        if (qga_get_time(q, t, &s->before) < 0)
                s->before = 0;
        if ((r = qga_set_time(q, t, s->from_rtc ? -1 : (s->ns > 0 ? s->ns : (int64_t) wall_ns()))) < 0)
                return r;
        if (qga_get_time(q, t, &s->after) < 0)
                s->after = 0;
        return 0;
}

int agent_vm_guest_set_time(Agent *a, Vm *vm, const char *op, int64_t ns, bool from_rtc,
                            int64_t *ret_before, int64_t *ret_after) {
        SetTimeArg s = { .ns = ns, .from_rtc = from_rtc };
        int r = ga_call(a, vm, GA_JOB_MODIFY, op, "guest-set-time", do_set_time, &s);
        if (r < 0)
                return r;
        /* x86 guests need the RTC interrupt backlog dropped after a jump:
         * a separate MODIFY job, never held together with the agent job. */
        if (monitor_command(a, vm, JOB_MODIFY, op, "rtc-reset-reinjection", do_rtc_reset, NULL) < 0)
                log_debug("guest %s: rtc-reset-reinjection: %s", vm->name, err_msg());
        *ret_before = s.before;
        *ret_after = s.after;
        return 0;
}

static int do_get_time(QgaAgent *q, int64_t t, void *arg) {
        return qga_get_time(q, t, arg);
}

int agent_vm_guest_get_time(Agent *a, Vm *vm, const char *op, int64_t *ret_ns) {
        return ga_call(a, vm, GA_JOB_QUERY, op, "guest-get-time", do_get_time, ret_ns);
}
