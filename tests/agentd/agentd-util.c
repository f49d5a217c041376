/* drover-agent as a process for tests (see agentd-util.h). */
#define _GNU_SOURCE
#include "agentd-util.h"
#include "agent-opwait.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

#define MAX_AGENT_DIRS 128 /* every agent a test program starts (test-migrate-local starts 18) */
static char *guest_dirs[MAX_AGENT_DIRS];
static int n_guest_dirs;

static void kill_guests_in(const char *run_dir) {
        DIR *d = opendir(run_dir);
        struct dirent *de;
        if (!d)
                return;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n < 5 || strcmp(de->d_name + n - 4, ".pid") != 0)
                        continue;
                char path[600], buf[32] = "";
                snprintf(path, sizeof(path), "%s/%s", run_dir, de->d_name);
                FILE *f = fopen(path, "r");
                if (!f)
                        continue;
                if (fgets(buf, sizeof(buf), f)) {
                        pid_t pid = (pid_t) atoi(buf);
                        char cmd[64], exe[256] = "";
                        snprintf(cmd, sizeof(cmd), "/proc/%d/exe", (int) pid);
                        ssize_t k = readlink(cmd, exe, sizeof(exe) - 1);
                        if (pid > 0 && k > 0 && strstr(exe, "qemu"))
                                kill(pid, SIGKILL);
                }
                fclose(f);
        }
        closedir(d);
}

static void kill_all_guests(void) {
        for (int i = 0; i < n_guest_dirs; i++)
                kill_guests_in(guest_dirs[i]);
}

void test_agent_kill_guests(TestAgent *t) {
        kill_guests_in(t->run_dir);
}

/* Wait for the ready line written after @offset of the log, then open the
 * client over the unix socket. */
static int wait_ready(TestAgent *t, size_t offset, const RpcTls *tls) {
        for (int i = 0; i < 1000; i++) {
                size_t len = 0;
                char *log = tu_read_file(t->log, &len);
                char *ready = log && len > offset ? strstr(log + offset, "drover-agent: ready") : NULL;
                free(log);
                if (ready) {
                        RpcTls ctls;
                        RpcClientOptions o = { .default_timeout_ms = 30000 };
                        char target[320];
                        if (tls) {
                                ctls = *tls;
                                if (!ctls.server_name)
                                        ctls.server_name = "localhost";
                                o.tls = &ctls;
                        }
                        snprintf(target, sizeof(target), "unix:%s", t->sock);
                        return rpc_client_new(target, &o, &t->cl);
                }
                int st;
                if (tu_reap(t->pid, &st)) {
                        t->pid = 0;
                        return -ECHILD;
                }
                struct timespec ts = { 0, 10 * 1000000L };
                nanosleep(&ts, NULL);
        }
        return -ETIMEDOUT;
}

static void remember_run_dir(const char *run_dir) {
        static bool registered;
        if (!registered) {
                atexit(kill_all_guests); /* runs after testutil's child cleanup */
                registered = true;
        }
        for (int i = 0; i < n_guest_dirs; i++)
                if (strcmp(guest_dirs[i], run_dir) == 0)
                        return;
        if (n_guest_dirs >= MAX_AGENT_DIRS) {
                /* a folder not remembered would leak its guests */
                fprintf(stderr, "agentd-util: more than %d agent folders; raise MAX_AGENT_DIRS\n", MAX_AGENT_DIRS);
                abort();
        }
        guest_dirs[n_guest_dirs++] = strdup(run_dir);
}

void test_image_roots(const char *dir, const char *sep, char *buf, size_t size) {
        const char *elf = getenv("DROVER_GUEST_ELF"), *lg = getenv("DROVER_LINUX_GUEST_DIR");
        int n = snprintf(buf, size, "%s", dir);
        if (elf && strrchr(elf, '/') && strrchr(elf, '/') != elf && n >= 0 && (size_t) n < size)
                n += snprintf(buf + n, size - (size_t) n, "%s%.*s", sep, (int) (strrchr(elf, '/') - elf), elf);
        if (lg && lg[0] == '/' && n >= 0 && (size_t) n < size)
                n += snprintf(buf + n, size - (size_t) n, "%s%s", sep, lg);
        const char *shared = getenv("DROVER_TEST_IMAGE_ROOT");
        if (shared && shared[0] == '/' && n >= 0 && (size_t) n < size)
                snprintf(buf + n, size - (size_t) n, "%s%s", sep, shared);
}

static int start_agent(TestAgent *t, const char *dir, const TestAgentOptions *o, int keep_port) {
        const char *agent = tu_build_path("agent/drover-agent");
        const char *ip = NULL;
        char listen_unix[320], listen_tcp[64], roots[1200];
        char *argv[32];
        size_t n = 0, offset = 0;

        memset(t, 0, sizeof(*t));
        snprintf(t->dir, sizeof(t->dir), "%s", dir);
        snprintf(t->state_dir, sizeof(t->state_dir), "%s/state", dir);
        snprintf(t->run_dir, sizeof(t->run_dir), "%s/run", dir);
        snprintf(t->sock, sizeof(t->sock), "%s/agent.sock", dir);
        snprintf(t->log, sizeof(t->log), "%s/agent.log", dir);
        snprintf(listen_unix, sizeof(listen_unix), "unix:%s", t->sock);
        remember_run_dir(t->run_dir);
        if (o->netns && !(ip = tu_which("ip")))
                return -ENOENT;
        if (o->netns) {
                argv[n++] = (char *) ip;
                argv[n++] = (char *) "netns";
                argv[n++] = (char *) "exec";
                argv[n++] = (char *) o->netns;
        }
        argv[n++] = (char *) agent;
        if (o->config) {
                argv[n++] = (char *) "--config";
                argv[n++] = (char *) o->config;
        } else {
                /* a production agent has a fixed port; so does this one (kept across restarts) */
                t->port = keep_port ? keep_port : tu_free_port();
                snprintf(listen_tcp, sizeof(listen_tcp), "127.0.0.1:%d", t->port);
                snprintf(roots, sizeof(roots), "image_roots=");
                test_image_roots(dir, ",", roots + strlen(roots), sizeof(roots) - strlen(roots));
                char *dev[] = { "--dev", "--host", "test-host", "--listen", listen_unix, "--listen", listen_tcp,
                                "--state-dir", t->state_dir, "--run-dir", t->run_dir, "--accel", "tcg",
                                "--log-level", "info", "--set", roots };
                for (size_t i = 0; i < ELEMENTSOF(dev); i++)
                        argv[n++] = dev[i];
        }
        argv[n] = NULL;

        if (o->extra_env)
                putenv(strdup(o->extra_env));
        unlink(t->sock);
        if (o->keep_log) {
                struct stat stl;
                if (stat(t->log, &stl) == 0)
                        offset = (size_t) stl.st_size;
        } else
                truncate(t->log, 0);
        t->pid = tu_spawn(argv, t->log);
        if (o->extra_env) {
                char name[64];
                snprintf(name, sizeof(name), "%.*s", (int) (strchr(o->extra_env, '=') - o->extra_env), o->extra_env);
                unsetenv(name);
        }
        if (t->pid < 0)
                return (int) t->pid;
        return wait_ready(t, offset, o->tls);
}

int test_agent_start(TestAgent *t, const char *dir, const char *extra_env) {
        int keep_port = t->pid == 0 && t->port > 0 && strcmp(t->dir, dir) == 0 ? t->port : 0;
        TestAgentOptions o = { .extra_env = extra_env };
        return start_agent(t, dir, &o, keep_port);
}

int test_agent_start_opts(TestAgent *t, const char *dir, const TestAgentOptions *o) {
        TestAgentOptions none = { 0 };
        int keep_port = t->pid == 0 && t->port > 0 && strcmp(t->dir, dir) == 0 ? t->port : 0;
        return start_agent(t, dir, o ? o : &none, keep_port);
}

void test_agent_kill9(TestAgent *t) {
        rpc_client_free(t->cl);
        t->cl = NULL;
        tu_kill(t->pid);
        t->pid = 0;
}

int test_agent_stop(TestAgent *t) {
        int st = -1;
        rpc_client_free(t->cl);
        t->cl = NULL;
        if (t->pid > 0) {
                tu_signal(t->pid, SIGTERM);
                for (int i = 0; i < 1000 && !tu_reap(t->pid, &st); i++) {
                        struct timespec ts = { 0, 10 * 1000000L };
                        nanosleep(&ts, NULL);
                }
                t->pid = 0;
        }
        return st;
}

char *test_guest_json(const char *name, const char *uuid, int mem_mib, const char *append) {
        char *s = NULL;
        char uuid_member[80] = "";
        if (uuid)
                snprintf(uuid_member, sizeof(uuid_member), "\"uuid\": \"%s\", ", uuid);
        if (asprintf(&s,
                     "{\"name\": \"%s\", %s\"memory_mib\": %d, \"vcpus\": 1, \"machine\": \"pc\", "
                     "\"kernel\": \"%s\", \"append\": \"%s\", \"serial_log\": true}",
                     name, uuid_member, mem_mib, tu_guest_elf(), append ? append : "mib=16 rate=5") < 0)
                return NULL;
        return s;
}

void test_linux_guest_build(TestLinuxGuest *ret, int timeout_s) {
        const char *script = getenv("DROVER_LINUX_GUEST_SCRIPT");
        const char *out = getenv("DROVER_LINUX_GUEST_DIR");
        memset(ret, 0, sizeof(*ret));
        if (!script || !out)
                tu_skip("DROVER_LINUX_GUEST_SCRIPT/DROVER_LINUX_GUEST_DIR unset (run through meson test)");
        const char *log = tu_path(tu_tmpdir("lg-build"), "build.log");
        char limit[16];
        snprintf(limit, sizeof(limit), "%d", timeout_s);
        /* timeout(1) kills the script's whole process group, apt-get included */
        char *argv[] = { "timeout", "-k", "10", limit, (char *) script, (char *) out, NULL };
        uint64_t t0 = now_ns();
        pid_t pid = tu_spawn(argv, log);
        if (pid < 0) {
                fprintf(stderr, "cannot run %s: %s\n", script, strerror((int) -pid));
                exit(1);
        }
        int status = 0;
        while (!tu_reap(pid, &status))
                sleep_ms(20);
        ret->build_ms = (double) (now_ns() - t0) / 1e6;
        char *text = tu_read_file(log, NULL);
        const char *last = "";
        for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n"))
                last = line;
        snprintf(ret->summary, sizeof(ret->summary), "%s", last);
        free(text);
        int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (rc == 2)
                tu_skip("the Linux test guest cannot be built here: %s", ret->summary[0] ? ret->summary : "(no output)");
        if (rc == 124 || rc == 137)
                tu_skip("build-linux-guest.sh did not finish within %d s (slow or no package download)", timeout_s);
        if (rc != 0) {
                char *all = tu_read_file(log, NULL);
                fprintf(stderr, "build-linux-guest.sh %s exited with %d:\n%s\n", out, rc, all ? all : "");
                exit(1);
        }
        snprintf(ret->kernel, sizeof(ret->kernel), "%s/vmlinux", out);
        snprintf(ret->initrd, sizeof(ret->initrd), "%s/initrd.cpio.gz", out);
}

char *test_linux_guest_json(const char *name, const TestLinuxGuest *lg, int mem_mib) {
        return test_linux_guest_json_ex(name, lg, mem_mib, NULL, NULL);
}

char *test_linux_guest_json_ex(const char *name, const TestLinuxGuest *lg, int mem_mib, const char *append_extra,
                               const char *disks_json) {
        char *s = NULL;
        if (asprintf(&s,
                     "{\"name\": \"%s\", \"memory_mib\": %d, \"vcpus\": 1, \"machine\": \"pc\", "
                     "\"kernel\": \"%s\", \"initrd\": \"%s\", \"append\": \"%s%s%s\", "
                     "\"guest_agent\": true, \"serial_log\": true%s%s}",
                     name, mem_mib, lg->kernel, lg->initrd, TEST_LINUX_GUEST_APPEND, append_extra ? " " : "",
                     append_extra ? append_extra : "", disks_json ? ", \"disks\": " : "",
                     disks_json ? disks_json : "") < 0)
                return NULL;
        return s;
}

int test_linux_guest_define(TestAgent *t, const char *name, const TestLinuxGuest *lg, int mem_mib) {
        Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
        Drover__V1__GetGuestResponse *resp = NULL;
        RpcStatus st;
        char *json = test_linux_guest_json(name, lg, mem_mib);
        if (!json) {
                fprintf(stderr, "out of memory for the definition of %s\n", name);
                return -1;
        }
        req.definition_json = json;
        int r = ta_call(t, "Define", &req.base, (ProtobufCMessage **) &resp, &st);
        free(json);
        if (r < 0) {
                fprintf(stderr, "Define failed: %s %s\n", rpc_code_to_string(st.code), st.details);
                return -1;
        }
        bool configured = resp->status->guest_agent_configured;
        drover__v1__get_guest_response__free_unpacked(resp, NULL);
        if (!configured)
                fprintf(stderr, "Define: %s has no guest agent configured\n", name);
        return configured ? 0 : -1;
}

int test_guest_define_start(TestAgent *t, const char *name, int mem_mib, const char *append) {
        Drover__V1__DefineRequest d = DROVER__V1__DEFINE_REQUEST__INIT;
        Drover__V1__StartRequest s = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GetGuestResponse *gr = NULL;
        Drover__V1__GuestStatus *gs = NULL;
        RpcStatus st;
        char *json = test_guest_json(name, NULL, mem_mib, append);
        if (!json) {
                fprintf(stderr, "out of memory for the definition of %s\n", name);
                return -1;
        }
        d.definition_json = json;
        int r = ta_call(t, "Define", &d.base, (ProtobufCMessage **) &gr, &st);
        free(json);
        if (r < 0) {
                fprintf(stderr, "Define %s failed: %s %s\n", name, rpc_code_to_string(st.code), st.details);
                return -1;
        }
        drover__v1__get_guest_response__free_unpacked(gr, NULL);
        s.guest = (char *) name;
        if (ta_call(t, "Start", &s.base, (ProtobufCMessage **) &gs, &st) < 0) {
                fprintf(stderr, "Start %s failed: %s %s\n", name, rpc_code_to_string(st.code), st.details);
                return -1;
        }
        int pid = gs->state == DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING && gs->pid > 0 ? (int) gs->pid : -1;
        if (pid < 0)
                fprintf(stderr, "Start %s: the guest is in state %d with pid %d, not running\n", name, gs->state,
                        (int) gs->pid);
        drover__v1__guest_status__free_unpacked(gs, NULL);
        return pid;
}

int ta_call(TestAgent *t, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp,
            RpcStatus *st) {
        return agent_op_call(t->cl, method, req, 30000, resp, st);
}

int ta_op_wait(TestAgent *t, const char *op_id, int64_t timeout_ms, Drover__V1__Operation **ret, RpcStatus *st) {
        return agent_op_wait(t->cl, op_id, timeout_ms, ret, st);
}

Drover__V1__MigrationResult *ta_migrate(RpcClient *cl, const Drover__V1__MigrateRequest *req, bool wait,
                                        int64_t timeout_ms, RpcStatus *st) {
        return agent_op_migrate(cl, req, wait, timeout_ms, st);
}
