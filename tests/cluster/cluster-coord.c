/* The coordinator and droverctl over a cluster of agents (see cluster.h):
 * the coordinator's config and its process in host 0's namespace, droverctl
 * runs with the test client's certificate, and the readers of droverctl's
 * --json documents that the coordinator tests and the makespan benchmark
 * share (waiting for the coordinator to see the cluster, following a job to
 * its end).  The TLS material comes from cluster.c (cluster-priv.h).
 */
#define _GNU_SOURCE
#include "cluster.h"
#include "cluster-priv.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "deadline.h"
#include "err.h"
#include "testutil.h"

static void coord_paths(Cluster *c) {
        ClusterCoord *k = &c->coord;
        if (k->dir[0])
                return;
        snprintf(k->dir, sizeof(k->dir), "%s/coord", c->host[0].dir);
        if (mkdir(k->dir, 0700) < 0 && errno != EEXIST)
                fail_msg("mkdir %s: %s", k->dir, strerror(errno));
        snprintf(k->config, sizeof(k->config), "%s/coordinator.json", k->dir);
        snprintf(k->db, sizeof(k->db), "%s/coordinator.db", k->dir);
        snprintf(k->sock, sizeof(k->sock), "%s/coordinator.sock", k->dir);
        snprintf(k->log, sizeof(k->log), "%s/coordinator.log", k->dir);
}

#define JSON_ADD(buf, len, ...)                                                                   \
        do {                                                                                      \
                if ((len) < sizeof(buf))                                                          \
                        (len) += (size_t) snprintf((buf) + (len), sizeof(buf) - (len), __VA_ARGS__); \
        } while (0)

void cluster_coord_config(Cluster *c, const ClusterCoordOptions *o) {
        static const ClusterCoordOptions none;
        char json[8192];
        size_t n = 0;
        if (!o)
                o = &none;
        coord_paths(c);
        ClusterCoord *k = &c->coord;
        const char *tls_dir = cluster_tls_dir();
        JSON_ADD(json, n,
                 "{ \"listen\": [\"unix:%s\"],\n"
                 "  \"tls\": { \"cert\": \"%s/coordinator.crt\", \"key\": \"%s/coordinator.key\", \"ca\": \"%s\" },\n"
                 "  \"db\": \"%s\",\n"
                 "  \"heartbeat_ms\": %d,\n"
                 "  \"log_level\": \"info\",\n",
                 k->sock, tls_dir, tls_dir, cluster_client_tls()->ca_file, k->db,
                 o->heartbeat_ms > 0 ? o->heartbeat_ms : 1000);
        if (o->max_outgoing)
                JSON_ADD(json, n, "  \"max_outgoing\": %u,\n", o->max_outgoing);
        if (o->max_incoming)
                JSON_ADD(json, n, "  \"max_incoming\": %u,\n", o->max_incoming);
        if (o->cluster_limit)
                JSON_ADD(json, n, "  \"cluster_limit\": %u,\n", o->cluster_limit);
        if (o->stream_bytes_per_s)
                JSON_ADD(json, n, "  \"stream_bytes_per_s\": %llu,\n", (unsigned long long) o->stream_bytes_per_s);
        if (o->extra && o->extra[0])
                JSON_ADD(json, n, "  %s,\n", o->extra);
        JSON_ADD(json, n, "  \"hosts\": [\n");
        for (int i = 0; i < c->n; i++) {
                JSON_ADD(json, n, "    { \"name\": \"host-%c\", \"address\": \"%s\"", 'a' + i, c->host[i].grpc);
                if (o->memory_mib[i])
                        JSON_ADD(json, n, ", \"memory_mib\": %llu", (unsigned long long) o->memory_mib[i]);
                if (o->vcpus[i])
                        JSON_ADD(json, n, ", \"vcpus\": %u", o->vcpus[i]);
                if (o->link_bytes_per_s[i])
                        JSON_ADD(json, n, ", \"link_bytes_per_s\": %llu", (unsigned long long) o->link_bytes_per_s[i]);
                JSON_ADD(json, n, " }%s\n", i + 1 < c->n ? "," : "");
        }
        JSON_ADD(json, n, "  ] }\n");
        if (n >= sizeof(json))
                fail_msg("the coordinator's config does not fit %zu bytes", sizeof(json));
        FILE *f = fopen(k->config, "w");
        if (!f || fputs(json, f) < 0 || fclose(f) != 0)
                fail_msg("writing %s: %s", k->config, strerror(errno));
}

#define COORD_ENV_MAX 8

/* Put back what env_push() replaced for the first @n entries of @env. */
static void env_restore(const char *const *env, char *old[COORD_ENV_MAX], int n) {
        for (int i = 0; i < n; i++) {
                char name[64];
                snprintf(name, sizeof(name), "%.*s", (int) (strchr(env[i], '=') - env[i]), env[i]);
                if (old[i])
                        setenv(name, old[i], 1);
                else
                        unsetenv(name);
                free(old[i]);
        }
}

/* Set the "NAME=VALUE"s of @env in this process, saving what they replace
 * in @old (NULL: unset).  Returns how many (for env_restore) or -EINVAL
 * (more than COORD_ENV_MAX, or not NAME=VALUE: nothing left changed). */
static int env_push(const char *const *env, char *old[COORD_ENV_MAX]) {
        int n = 0;
        for (; env && env[n]; n++) {
                char name[64];
                const char *eq = strchr(env[n], '=');
                if (n >= COORD_ENV_MAX || !eq || (size_t) (eq - env[n]) >= sizeof(name)) {
                        env_restore(env, old, n);
                        return -EINVAL;
                }
                snprintf(name, sizeof(name), "%.*s", (int) (eq - env[n]), env[n]);
                const char *was = getenv(name);
                old[n] = was ? strdup(was) : NULL;
                setenv(name, eq + 1, 1);
        }
        return n;
}

int cluster_coord_start(Cluster *c) {
        return cluster_coord_start_env(c, NULL);
}

int cluster_coord_start_env(Cluster *c, const char *const *env) {
        return cluster_coord_spawn(c, &c->coord, env);
}

int cluster_coord_spawn(Cluster *c, ClusterCoord *k, const char *const *env) {
        char *old[COORD_ENV_MAX];
        struct stat stl;
        size_t offset = 0;
        const char *ip = tu_which("ip");
        if (!k->config[0] || !ip)
                return -ENOENT;
        if (k->pid > 0)
                return -EBUSY;
        if (stat(k->log, &stl) == 0)
                offset = (size_t) stl.st_size;
        if (k->starts > 0) {
                FILE *f = fopen(k->log, "a");
                if (f) {
                        fprintf(f, "---- test: coordinator restarted ----\n");
                        fclose(f);
                        if (stat(k->log, &stl) == 0)
                                offset = (size_t) stl.st_size;
                }
        }
        char *argv[] = { (char *) ip, (char *) "netns", (char *) "exec", k->ns[0] ? k->ns : c->net.ns[0],
                         (char *) tu_build_path("coordinator/drover-coordinator"), (char *) "--config", k->config,
                         NULL };
        char *gdb_argv[] = { (char *) ip, (char *) "netns", (char *) "exec", k->ns[0] ? k->ns : c->net.ns[0],
                             (char *) "gdb", (char *) "-q", (char *) "-batch", (char *) "-ex", (char *) "run",
                             (char *) "-ex", (char *) "thread apply all bt 25", (char *) "--args",
                             (char *) tu_build_path("coordinator/drover-coordinator"), (char *) "--config", k->config,
                             NULL };
        int n_env = env_push(env, old);
        if (n_env < 0)
                return n_env;
        k->starts++;
        k->pid = tu_spawn(getenv("DROVER_TEST_COORD_GDB") ? gdb_argv : argv, k->log);
        env_restore(env, old, n_env);
        if (k->pid < 0) {
                int r = (int) k->pid;
                k->pid = 0;
                return r;
        }
        Deadline d = deadline_in_ms(20000);
        for (;;) {
                size_t len = 0;
                char *log = tu_read_file(k->log, &len);
                bool ready = log && len > offset && strstr(log + offset, "drover-coordinator: ready");
                free(log);
                if (ready)
                        return 0;
                int st;
                if (tu_reap(k->pid, &st)) {
                        k->pid = 0;
                        return -ECHILD;
                }
                if (deadline_expired(d)) {
                        cluster_coord_kill9_k(k);
                        return -ETIMEDOUT;
                }
                sleep_ms(10);
        }
}

void cluster_coord_kill9_k(ClusterCoord *k) {
        tu_kill(k->pid);
        k->pid = 0;
}

void cluster_coord_kill9(Cluster *c) {
        cluster_coord_kill9_k(&c->coord);
}

int cluster_coord_stop(Cluster *c) {
        int st = -1;
        pid_t pid = c->coord.pid;
        if (pid <= 0)
                return -1;
        tu_signal(pid, SIGTERM);
        Deadline d = deadline_in_ms(10000);
        while (!tu_reap(pid, &st)) {
                if (deadline_expired(d)) {
                        tu_kill(pid);
                        st = -1;
                        break;
                }
                sleep_ms(10);
        }
        c->coord.pid = 0;
        return st;
}

RpcClient *cluster_coord_client(Cluster *c) {
        RpcClient *cl = NULL;
        char target[300];
        RpcClientOptions o = { .tls = cluster_client_tls(), .default_timeout_ms = 30000 };
        snprintf(target, sizeof(target), "unix:%s", c->coord.sock);
        if (rpc_client_new(target, &o, &cl) < 0)
                fail_msg("a client for %s: %s", target, err_msg());
        return cl;
}

#define CTL_MAX_ARGS 48

/* argv of droverctl with the connection options, then @args (behind `ip
 * netns exec NS` with Cluster.ctl_netns). */
static int ctl_argv(Cluster *c, const char *const *args, char **argv, char *target, size_t target_size) {
        const RpcTls *tls = cluster_client_tls();
        int n = 0;
        if (c->ctl_target[0])
                snprintf(target, target_size, "%s", c->ctl_target);
        else
                snprintf(target, target_size, "unix:%s", c->coord.sock);
        if (c->ctl_netns[0]) {
                const char *ip = tu_which("ip");
                argv[n++] = (char *) (ip ? ip : "/usr/sbin/ip");
                argv[n++] = (char *) "netns";
                argv[n++] = (char *) "exec";
                argv[n++] = c->ctl_netns;
        }
        argv[n++] = (char *) tu_build_path("coordinator/droverctl");
        argv[n++] = (char *) "-c";
        argv[n++] = target;
        argv[n++] = (char *) "--tls-cert";
        argv[n++] = (char *) tls->cert_file;
        argv[n++] = (char *) "--tls-key";
        argv[n++] = (char *) tls->key_file;
        argv[n++] = (char *) "--tls-ca";
        argv[n++] = (char *) tls->ca_file;
        for (size_t i = 0; args[i]; i++) {
                if (n >= CTL_MAX_ARGS - 1)
                        return -E2BIG;
                argv[n++] = (char *) args[i];
        }
        argv[n] = NULL;
        return n;
}

static pid_t ctl_fork(Cluster *c, const char *const *args, const char *out_path, const char *err_path) {
        char *argv[CTL_MAX_ARGS], target[300];
        int r = ctl_argv(c, args, argv, target, sizeof(target));
        if (r < 0)
                return r;
        pid_t parent = getpid();
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (out < 0 || err < 0 || nul < 0)
                        _exit(126);
                dup2(out, STDOUT_FILENO);
                dup2(err, STDERR_FILENO);
                dup2(nul, STDIN_FILENO);
                signal(SIGPIPE, SIG_DFL);
                unsetenv("DROVER_LOG");
                execv(argv[0], argv);
                _exit(127);
        }
        return pid;
}

static int wait_exit(pid_t pid, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                int st;
                pid_t w = waitpid(pid, &st, WNOHANG);
                if (w == pid)
                        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                if (w < 0 && errno != EINTR)
                        return -errno;
                if (deadline_expired(d))
                        return -ETIMEDOUT;
                sleep_ms(5);
        }
}

int cluster_ctlv(Cluster *c, int timeout_ms, char **ret_out, char **ret_err, const char *const *args) {
        char out_path[300], err_path[310];
        coord_paths(c);
        int run = ++c->coord.ctl_runs;
        snprintf(out_path, sizeof(out_path), "%s/ctl-%03d.out", c->coord.dir, run);
        snprintf(err_path, sizeof(err_path), "%s/ctl-%03d.err", c->coord.dir, run);
        pid_t pid = ctl_fork(c, args, out_path, err_path);
        if (pid < 0)
                return (int) pid;
        int code = wait_exit(pid, timeout_ms);
        if (code == -ETIMEDOUT) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
        }
        if (ret_out) {
                *ret_out = tu_read_file(out_path, NULL);
                if (!*ret_out)
                        *ret_out = strdup("");
        }
        if (ret_err) {
                *ret_err = tu_read_file(err_path, NULL);
                if (!*ret_err)
                        *ret_err = strdup("");
        }
        return code;
}

static int collect_args(const char **args, int max, va_list ap) {
        int n = 0;
        for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
                if (n >= max - 2)
                        return -E2BIG;
                args[n++] = a;
        }
        args[n] = NULL;
        return n;
}

int cluster_ctl(Cluster *c, int timeout_ms, char **ret_out, char **ret_err, ...) {
        const char *args[CTL_MAX_ARGS];
        va_list ap;
        va_start(ap, ret_err);
        int n = collect_args(args, CTL_MAX_ARGS, ap);
        va_end(ap);
        if (n < 0)
                return n;
        return cluster_ctlv(c, timeout_ms, ret_out, ret_err, args);
}

struct json_object *cluster_ctl_json(Cluster *c, int timeout_ms, int *ret_code, ...) {
        const char *args[CTL_MAX_ARGS];
        char *out = NULL;
        va_list ap;
        va_start(ap, ret_code);
        int n = collect_args(args, CTL_MAX_ARGS, ap);
        va_end(ap);
        if (n < 0) {
                *ret_code = n;
                return NULL;
        }
        args[n++] = "--json";
        args[n] = NULL;
        *ret_code = cluster_ctlv(c, timeout_ms, &out, NULL, args);
        json_object *last = NULL;
        for (char *line = out, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                json_object *j = line[0] ? json_tokener_parse(line) : NULL;
                if (j) {
                        json_object_put(last);
                        last = j;
                }
        }
        free(out);
        return last;
}

pid_t cluster_ctl_spawn(Cluster *c, const char *out_path, ...) {
        const char *args[CTL_MAX_ARGS];
        char err_path[400];
        va_list ap;
        va_start(ap, out_path);
        int n = collect_args(args, CTL_MAX_ARGS, ap);
        va_end(ap);
        if (n < 0)
                return n;
        coord_paths(c);
        snprintf(err_path, sizeof(err_path), "%s.err", out_path);
        int slot = -1;
        for (int i = 0; i < CLUSTER_MAX_CTL_BG && slot < 0; i++)
                if (c->ctl_bg[i] <= 0)
                        slot = i;
        if (slot < 0)
                return -EMFILE;
        pid_t pid = ctl_fork(c, args, out_path, err_path);
        if (pid > 0)
                c->ctl_bg[slot] = pid;
        return pid;
}

int cluster_ctl_wait(Cluster *c, pid_t pid, int timeout_ms) {
        int code = wait_exit(pid, timeout_ms);
        if (code != -ETIMEDOUT)
                for (int i = 0; i < CLUSTER_MAX_CTL_BG; i++)
                        if (c->ctl_bg[i] == pid)
                                c->ctl_bg[i] = 0;
        return code;
}

void cluster_ctl_shell(Cluster *c, char *buf, size_t size) {
        const RpcTls *tls = cluster_client_tls();
        char target[320];
        if (c->ctl_target[0])
                snprintf(target, sizeof(target), "%s", c->ctl_target);
        else
                snprintf(target, sizeof(target), "unix:%s", c->coord.sock);
        snprintf(buf, size, "%s%s%s'%s' -c '%s' --tls-cert '%s' --tls-key '%s' --tls-ca '%s'",
                 c->ctl_netns[0] ? "ip netns exec " : "", c->ctl_netns, c->ctl_netns[0] ? " " : "",
                 tu_build_path("coordinator/droverctl"), target, tls->cert_file, tls->key_file, tls->ca_file);
}

/* ---- reading droverctl --json documents ------------------------------------------------- */

json_object *cj_get(json_object *o, const char *k) {
        json_object *v = NULL;
        if (o && json_object_is_type(o, json_type_object))
                json_object_object_get_ex(o, k, &v);
        return v;
}

const char *cj_str(json_object *o, const char *k) {
        json_object *v = cj_get(o, k);
        return v ? json_object_get_string(v) : "";
}

int64_t cj_int(json_object *o, const char *k) {
        json_object *v = cj_get(o, k);
        return v ? json_object_get_int64(v) : 0;
}

size_t cj_len(json_object *a) {
        return a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;
}

json_object *cj_idx(json_object *a, size_t i) {
        return json_object_array_get_idx(a, i);
}

int cluster_host_index(const char *name) {
        if (strncmp(name, "host-", 5) != 0 || name[5] < 'a' || name[5] >= 'a' + NETNS_MAX_HOSTS || name[6])
                return -1;
        return name[5] - 'a';
}

/* ---- the coordinator's view and its jobs ------------------------------------------------ */

void cluster_coord_drop_db(Cluster *c) {
        static const char *const sfx[] = { "", "-wal", "-shm" };
        coord_paths(c);
        for (size_t i = 0; i < ELEMENTSOF(sfx); i++) {
                char p[300];
                snprintf(p, sizeof(p), "%s%s", c->coord.db, sfx[i]);
                unlink(p);
        }
}

void cluster_coord_up(Cluster *c, const ClusterCoordOptions *o, int guests_on_a, int timeout_ms) {
        cluster_coord_config(c, o);
        int r = cluster_coord_start_env(c, o ? o->env : NULL);
        if (r < 0)
                fail_msg("drover-coordinator did not start: %s", strerror(-r));
        cluster_coord_wait_hosts(c, guests_on_a, timeout_ms);
}

void cluster_coord_wait_hosts(Cluster *c, int guests_on_a, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                int code, healthy = 0, on_a = -1;
                json_object *h = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "hosts", NULL);
                for (size_t i = 0; i < cj_len(h); i++) {
                        healthy += strcmp(cj_str(cj_idx(h, i), "health"), "healthy") == 0;
                        if (strcmp(cj_str(cj_idx(h, i), "name"), "host-a") == 0)
                                on_a = (int) cj_int(cj_idx(h, i), "guests");
                }
                json_object_put(h);
                if (code == 0 && healthy == c->n && on_a == guests_on_a)
                        return;
                if (deadline_expired(d))
                        fail_msg("the coordinator does not see %d healthy hosts and %d guests on host a (exit %d, "
                                 "%d healthy, %d on a)", c->n, guests_on_a, code, healthy, on_a);
                sleep_ms(200);
        }
}

json_object *cluster_job_get(Cluster *c, const char *id) {
        int code;
        json_object *j = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "job", id, NULL);
        if (!j || !cj_get(j, "subtasks"))
                fail_msg("droverctl job %s --json: exit %d, no job document", id, code);
        return j;
}

bool cluster_job_ended(json_object *job) {
        const char *p = cj_str(job, "phase");
        return strcmp(p, "succeeded") == 0 || strcmp(p, "failed") == 0 || strcmp(p, "cancelled") == 0;
}

json_object *cluster_job_wait_end(Cluster *c, const char *id, int timeout_ms, int poll_ms, ClusterJobSeen *seen,
                                  void *arg) {
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                json_object *job = cluster_job_get(c, id);
                if (seen)
                        seen(job, arg);
                if (cluster_job_ended(job))
                        return job;
                if (deadline_expired(d))
                        fail_msg("job %s still %s after %d s", id, cj_str(job, "phase"), timeout_ms / 1000);
                json_object_put(job);
                sleep_ms(poll_ms);
        }
}
