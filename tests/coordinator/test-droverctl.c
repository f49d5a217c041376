/* droverctl as a real process against a fake coordinator (suite 'unit').
 *
 * The fake serves the Coordinator API over a unix socket in this process:
 * WatchJob streams scripted jobs (by id: job-1 changes three times,
 * job-many has 40 guests of which the last two still migrate, job-forever
 * runs until the client goes), MigrateGuests records the parameters it was
 * sent, GetJob knows only job-1, CancelJob counts its calls, ListHosts has
 * a host with a last error, Evacuate of host-empty moves nothing, ListJobs
 * answers after 2 s.  What it proves: a piped watch of a job with many long
 * guest names prints every change and never writes past its buffers;
 * --bandwidth, --downtime and --timeout are range-checked with a clear
 * error; every command has --help (exit 0, usage on stdout) and every
 * program --version; an unknown option or one the command does not take is
 * refused (exit 2) and nothing is sent; NOT FOUND is exit 5, no coordinator
 * or no answer in time exit 6 with the address and a hint; an empty
 * evacuation says so and exits 0; hosts shows the last error; the live
 * display on a terminal keeps the guests still moving in view; Ctrl-C
 * stops a watch with exit 130 and, with --cancel-on-interrupt, cancels the
 * job first; `host set` sends UpdateHost exactly the fields given, with
 * their values, and refuses an unknown field or a malformed number without
 * a call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "coordinator.pb-c.h"
#include "deadline.h"
#include "drover-version.h"
#include "migparams-pb.h"
#include "rpcserver.h"
#include "testutil.h"

#define N_GUESTS 60
#define NAME_LEN 100

static struct {
        char names[N_GUESTS + 1][NAME_LEN + 1];
        size_t huge_name;        /* > 0: one more guest with a name this long */
        MigParams got;           /* what MigrateGuests was sent */
        int migrate_calls;
        int evacuate_calls;
        int cancel_calls;        /* CancelJob */
        char cancelled[64];      /* the id it was sent */
        int update_calls;
        char update_fields[64];  /* UpdateHost's fields, space-separated */
        Drover__V1__Host update; /* its host (strings not kept) */
} fake;

#define MANY 40 /* job-many: guests; the last two still migrate */

/* The job as the fake shows it at step @step (0, 1, 2): the last guest
 * migrates at step 1; everything has succeeded at step 2. */
static Drover__V1__Job *job_at(RpcCall *c, int step) {
        Drover__V1__Job *j = rpc_call_alloc(c, sizeof(*j));
        size_t n = N_GUESTS + (fake.huge_name ? 1 : 0);
        drover__v1__job__init(j);
        j->id = (char *) "job-1";
        j->kind = DROVER__V1__JOB_KIND__JOB_KIND_MIGRATE;
        j->phase = step < 2 ? DROVER__V1__JOB_PHASE__JOB_PHASE_RUNNING : DROVER__V1__JOB_PHASE__JOB_PHASE_SUCCEEDED;
        j->subtasks = rpc_call_alloc(c, n * sizeof(*j->subtasks));
        j->n_subtasks = n;
        for (size_t i = 0; i < n; i++) {
                Drover__V1__Subtask *s = rpc_call_alloc(c, sizeof(*s));
                drover__v1__subtask__init(s);
                if (i < N_GUESTS)
                        s->guest = fake.names[i];
                else {
                        s->guest = rpc_call_alloc(c, fake.huge_name + 1);
                        memset(s->guest, 'h', fake.huge_name);
                        s->guest[fake.huge_name] = '\0';
                }
                s->source = (char *) "host-a";
                s->destination = (char *) "host-b";
                s->phase = step == 2                      ? DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_SUCCEEDED
                           : step == 1 && i == N_GUESTS - 1 ? DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_MIGRATING
                                                            : DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_QUEUED;
                j->subtasks[i] = s;
        }
        j->succeeded = step == 2 ? (uint32_t) n : 0;
        return j;
}

/* job-many at @step (0, 1: guests 38 and 39 migrate, the others are
 * done; 2: all done), or job-forever (@step < 0: one guest migrating). */
static Drover__V1__Job *job_many_at(RpcCall *c, const char *id, int step) {
        Drover__V1__Job *j = rpc_call_alloc(c, sizeof(*j));
        size_t n = step < 0 ? 1 : MANY;
        drover__v1__job__init(j);
        j->id = (char *) id;
        j->kind = DROVER__V1__JOB_KIND__JOB_KIND_EVACUATE;
        j->host = (char *) "host-a";
        j->phase = step < 2 ? DROVER__V1__JOB_PHASE__JOB_PHASE_RUNNING : DROVER__V1__JOB_PHASE__JOB_PHASE_SUCCEEDED;
        j->subtasks = rpc_call_alloc(c, n * sizeof(*j->subtasks));
        j->n_subtasks = n;
        for (size_t i = 0; i < n; i++) {
                Drover__V1__Subtask *s = rpc_call_alloc(c, sizeof(*s));
                drover__v1__subtask__init(s);
                s->guest = rpc_call_alloc(c, 16);
                snprintf(s->guest, 16, "m-%02zu", i);
                s->source = (char *) "host-a";
                s->destination = (char *) "host-b";
                bool moving = step < 0 || (step < 2 && i >= MANY - 2);
                s->phase = moving ? DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_MIGRATING
                                  : DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_SUCCEEDED;
                j->succeeded += !moving;
                j->subtasks[i] = s;
        }
        return j;
}

static RpcCode h_watch(RpcCall *c, const ProtobufCMessage *req_, void *user) {
        const Drover__V1__WatchJobRequest *req = (const void *) req_;
        if (strcmp(req->id, "job-many") == 0) {
                for (int step = 0; step < 3; step++) {
                        if (rpc_call_send(c, &job_many_at(c, req->id, step)->base) < 0)
                                return RPC_CANCELLED;
                        rpc_call_wait(c, 100);
                }
                return RPC_OK;
        }
        if (strcmp(req->id, "job-forever") == 0) {
                /* until the client goes (at most 30 s) */
                for (int i = 0; i < 600 && !rpc_call_cancelled(c); i++) {
                        if (rpc_call_send(c, &job_many_at(c, req->id, -1)->base) < 0)
                                return RPC_CANCELLED;
                        rpc_call_wait(c, 50);
                }
                return RPC_CANCELLED;
        }
        if (strcmp(req->id, "job-1") != 0)
                return rpc_call_fail(c, RPC_NOT_FOUND, "no job '%s'", req->id);
        for (int step = 0; step < 3; step++) {
                /* the same job twice: a piped watch prints it once */
                for (int again = 0; again < 2; again++)
                        if (rpc_call_send(c, &job_at(c, step)->base) < 0)
                                return RPC_CANCELLED;
        }
        return RPC_OK;
}

static RpcCode h_migrate(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__MigrateGuestsRequest *req = (const void *) req_;
        mig_params_from_pb(req->params, &fake.got);
        fake.migrate_calls++;
        (void) resp_; /* a dry run: no job, no plan */
        return RPC_OK;
}

/* job-stream: one guest migrated with the source's stream figures, one
 * still copying its local disks. */
static Drover__V1__Job *job_stream(RpcCall *c) {
        Drover__V1__Job *j = job_many_at(c, "job-stream", 0);
        j->n_subtasks = 2;
        Drover__V1__Subtask *done = j->subtasks[0], *disk = j->subtasks[1];
        done->phase = DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_SUCCEEDED;
        done->multifd_channels = 4;
        done->compression = DROVER__V1__MIGRATION_COMPRESSION__MIGRATION_COMPRESSION_ZSTD;
        done->transferred_bytes = 3ULL << 30;
        done->guest_memory_bytes = 4ULL << 30;
        done->multifd_bytes = 1ULL << 30;
        done->disk_bytes = 20ULL << 30;
        done->reason = (char *) "requested destination; stream: zstd on 4 multifd channels: the link is slower";
        Drover__V1__MigrationStats *st = rpc_call_alloc(c, sizeof(*st));
        drover__v1__migration_stats__init(st);
        st->disk_total_bytes = 10ULL << 30;
        st->disk_transferred_bytes = 5ULL << 30;
        disk->phase = DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_MIGRATING;
        disk->stats = st;
        return j;
}

static RpcCode h_get_job(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__JobRef *req = (const void *) req_;
        if (strcmp(req->id, "job-stream") == 0) {
                *(Drover__V1__Job *) resp_ = *job_stream(c);
                return RPC_OK;
        }
        if (strcmp(req->id, "job-1") != 0)
                return rpc_call_fail(c, RPC_NOT_FOUND, "no job '%s'", req->id);
        Drover__V1__Job *j = (void *) resp_, *src = job_at(c, 2);
        *j = *src;
        return RPC_OK;
}

static RpcCode h_cancel(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__JobRef *req = (const void *) req_;
        Drover__V1__Job *j = (void *) resp_;
        fake.cancel_calls++;
        snprintf(fake.cancelled, sizeof(fake.cancelled), "%s", req->id);
        j->id = rpc_call_strdup(c, req->id);
        j->phase = DROVER__V1__JOB_PHASE__JOB_PHASE_CANCELLED;
        return RPC_OK;
}

static RpcCode h_list_hosts(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        Drover__V1__ListHostsResponse *r = (void *) resp_;
        static const char *const names[] = { "host-a", "host-b" };
        r->hosts = rpc_call_alloc(c, 2 * sizeof(*r->hosts));
        for (size_t i = 0; i < 2; i++) {
                Drover__V1__Host *h = rpc_call_alloc(c, sizeof(*h));
                drover__v1__host__init(h);
                h->name = (char *) names[i];
                h->address = (char *) "10.0.0.1:7000";
                h->state = DROVER__V1__HOST_STATE__HOST_STATE_ENABLED;
                h->health = i ? DROVER__V1__HOST_HEALTH__HOST_HEALTH_UNREACHABLE : DROVER__V1__HOST_HEALTH__HOST_HEALTH_HEALTHY;
                h->last_error = (char *) (i ? "GetAgentStats: UNAVAILABLE: connection refused" : "");
                r->hosts[r->n_hosts++] = h;
        }
        return RPC_OK;
}

static RpcCode h_evacuate(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__EvacuateRequest *req = (const void *) req_;
        Drover__V1__JobResponse *r = (void *) resp_;
        fake.evacuate_calls++;
        if (strcmp(req->host, "host-empty") != 0)
                return rpc_call_fail(c, RPC_NOT_FOUND, "no host '%s' in the inventory", req->host);
        /* as the coordinator: no plan, a job of no guests */
        r->job = rpc_call_alloc(c, sizeof(*r->job));
        drover__v1__job__init(r->job);
        r->job->id = (char *) "job-empty";
        r->job->kind = DROVER__V1__JOB_KIND__JOB_KIND_EVACUATE;
        r->job->host = req->host;
        return RPC_OK;
}

/* Answers after 2 s, or when the client went. */
static RpcCode h_list_jobs(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        rpc_call_wait(c, 2000);
        return RPC_OK;
}

static RpcCode h_update(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__UpdateHostRequest *req = (const void *) req_;
        Drover__V1__Host *h = (void *) resp_;
        fake.update_calls++;
        fake.update_fields[0] = '\0';
        for (size_t i = 0; i < req->n_fields; i++)
                snprintf(fake.update_fields + strlen(fake.update_fields),
                         sizeof(fake.update_fields) - strlen(fake.update_fields), "%s%s", i ? " " : "", req->fields[i]);
        fake.update = *req->host;
        h->name = rpc_call_strdup(c, req->host->name);
        h->address = rpc_call_strdup(c, req->host->address);
        h->memory_mib = req->host->memory_mib;
        return RPC_OK;
}

static const RpcMethodDef methods[] = {
        { "UpdateHost", h_update, NULL, 0, RPC_ROLES_ALL },
        { "WatchJob", NULL, h_watch, 0, RPC_ROLES_ALL },
        { "MigrateGuests", h_migrate, NULL, 0, RPC_ROLES_ALL },
        { "GetJob", h_get_job, NULL, 0, RPC_ROLES_ALL },
        { "CancelJob", h_cancel, NULL, 0, RPC_ROLES_ALL },
        { "ListHosts", h_list_hosts, NULL, 0, RPC_ROLES_ALL },
        { "Evacuate", h_evacuate, NULL, 0, RPC_ROLES_ALL },
        { "ListJobs", h_list_jobs, NULL, 0, RPC_ROLES_ALL },
};

static RpcServer *srv;
static char addr[300];
static const char *dir;

static int setup(void **state) {
        dir = tu_tmpdir("droverctl");
        snprintf(addr, sizeof(addr), "unix:%s", tu_path(dir, "coord.sock"));
        for (size_t i = 0; i < N_GUESTS; i++) {
                int k = snprintf(fake.names[i], sizeof(fake.names[i]), "guest-%02zu-", i);
                memset(fake.names[i] + k, 'a' + (char) (i % 26), NAME_LEN - (size_t) k);
                fake.names[i][NAME_LEN] = '\0';
        }
        if (rpc_server_new(&(RpcServerOptions){ .threads = 4 }, &srv) < 0 ||
            rpc_server_add_service(srv, &drover__v1__coordinator__descriptor, methods, ELEMENTSOF(methods), NULL) < 0 ||
            rpc_server_listen(srv, addr, NULL) < 0 || rpc_server_start(srv) < 0)
                return -1;
        return 0;
}

static int teardown(void **state) {
        rpc_server_shutdown(srv, 100);
        rpc_server_free(srv);
        return 0;
}

/* Start @argv with stdout and stderr to files of @dir (out.log, err.log),
 * or stdout to the terminal @pty_slave when >= 0.  Returns the pid. */
static pid_t spawn(char **argv, int pty_slave) {
        const char *out = tu_path(dir, "out.log"), *err = tu_path(dir, "err.log");
        /* no output of an earlier run may be taken for this one's */
        (void) unlink(out);
        (void) unlink(err);
        pid_t p = fork();
        assert_true(p >= 0);
        if (p == 0) {
                int o = pty_slave >= 0 ? pty_slave : open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                int e = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (o < 0 || e < 0 || dup2(o, STDOUT_FILENO) < 0 || dup2(e, STDERR_FILENO) < 0)
                        _exit(127);
                execv(argv[0], argv);
                _exit(127);
        }
        return p;
}

/* Wait up to 30 s for @p; its wait status. */
static int reap(pid_t p) {
        int status = 0;
        for (int i = 0; i < 3000; i++) {
                pid_t r = waitpid(p, &status, WNOHANG);
                if (r == p)
                        return status;
                sleep_ms(10);
        }
        kill(p, SIGKILL);
        waitpid(p, &status, 0);
        fail_msg("%s did not end in 30 s", "droverctl");
        return status;
}

/* The command line of @prog (a build path) with @args (NULL-terminated);
 * droverctl gets "-c ADDR" of the fake first. */
static void build_argv(char **argv, size_t max, const char *prog, va_list ap) {
        size_t n = 0;
        argv[n++] = (char *) tu_build_path(prog);
        if (strcmp(prog, "coordinator/droverctl") == 0) {
                argv[n++] = (char *) "-c";
                argv[n++] = addr;
        }
        for (char *a; n < max - 1 && (a = va_arg(ap, char *));)
                argv[n++] = a;
        argv[n] = NULL;
}

/* Run @prog with the arguments that follow (NULL-terminated); its stdout
 * and stderr in *ret_out and *ret_err.  Returns its exit code (128 + the
 * signal when one killed it). */
static int run(char **ret_out, char **ret_err, const char *prog, ...) {
        char *argv[24];
        va_list ap;
        va_start(ap, prog);
        build_argv(argv, ELEMENTSOF(argv), prog, ap);
        va_end(ap);
        int st = reap(spawn(argv, -1));
        *ret_out = tu_read_file(tu_path(dir, "out.log"), NULL);
        *ret_err = tu_read_file(tu_path(dir, "err.log"), NULL);
        assert_non_null(*ret_out);
        assert_non_null(*ret_err);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Run droverctl with @args (NULL-terminated) against the fake; its output
 * (stdout, then stderr) in *ret_out.  Returns its wait status. */
static int droverctl(char **ret_out, ...) {
        char *argv[24], *out, *err;
        va_list ap;
        va_start(ap, ret_out);
        build_argv(argv, ELEMENTSOF(argv), "coordinator/droverctl", ap);
        va_end(ap);
        int st = reap(spawn(argv, -1));
        out = tu_read_file(tu_path(dir, "out.log"), NULL);
        err = tu_read_file(tu_path(dir, "err.log"), NULL);
        assert_non_null(out);
        assert_non_null(err);
        assert_true(asprintf(ret_out, "%s%s", out, err) > 0);
        free(out);
        free(err);
        return st;
}

/* Run droverctl with @args with its stdout on a terminal of @rows x 80;
 * what it wrote there in *ret_out.  Returns its exit code. */
static int droverctl_on_terminal(char **ret_out, int rows, ...) {
        char *argv[24];
        va_list ap;
        va_start(ap, rows);
        build_argv(argv, ELEMENTSOF(argv), "coordinator/droverctl", ap);
        va_end(ap);
        int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        assert_true(master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0);
        int slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
        struct winsize ws = { .ws_row = (unsigned short) rows, .ws_col = 80 };
        assert_true(slave >= 0 && ioctl(slave, TIOCSWINSZ, &ws) == 0);
        pid_t p = spawn(argv, slave);
        close(slave);
        size_t cap = 1 << 20, len = 0;
        char *buf = malloc(cap);
        assert_non_null(buf);
        /* read until the terminal closes (EIO once the child is gone) */
        for (int i = 0; i < 3000; i++) {
                struct pollfd pfd = { .fd = master, .events = POLLIN };
                if (poll(&pfd, 1, 10) <= 0)
                        continue;
                ssize_t k = read(master, buf + len, cap - len - 1);
                if (k <= 0)
                        break;
                len += (size_t) k;
        }
        buf[len] = '\0';
        close(master);
        int st = reap(p);
        *ret_out = buf;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int count(const char *text, const char *needle) {
        int n = 0;
        for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

/* Piped, watch prints the job once per change, whatever the length of the
 * names: a change of the last of 60 guests of 100-byte names (past 4 KiB
 * of names and phases) is seen, and nothing is written past a buffer. */
static void test_piped_watch_of_many_long_names_prints_every_change(void **state) {
        char *out = NULL;
        fake.huge_name = 0;
        int st = droverctl(&out, "watch", "job-1", NULL);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("droverctl watch: wait status %#x, output:\n%.2000s", st, out);
        /* the summary line of each of the three different states, once */
        assert_int_equal(count(out, "job-1 migrate"), 3);
        assert_int_equal(count(out, fake.names[N_GUESTS - 1]), 3);
        assert_int_equal(count(out, "migrating"), 1);
        free(out);
}

/* One guest name longer than any buffer (2 MiB). */
static void test_piped_watch_of_a_huge_name_does_not_crash(void **state) {
        char *out = NULL;
        fake.huge_name = 2u << 20;
        int st = droverctl(&out, "watch", "job-1", NULL);
        fake.huge_name = 0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("droverctl watch: wait status %#x (signal %d), output:\n%.500s", st,
                         WIFSIGNALED(st) ? WTERMSIG(st) : 0, out);
        if (count(out, "job-1 migrate") != 3)
                fail_msg("output:\n%s", out);
        assert_int_equal(count(out, "job-1 migrate"), 3);
        free(out);
}

/* --bandwidth and --downtime: out of range or not a number is a usage
 * error (exit 2) that names the option and its range; nothing is sent. */
static void test_bandwidth_and_downtime_are_range_checked(void **state) {
        struct { const char *opt, *val, *needle; } bad[] = {
                { "--bandwidth", "17592186044416", "--bandwidth" }, /* * 2^20 wraps to 0 */
                { "--bandwidth", "1048577", "between 0 and 1048576" },
                { "--bandwidth", "-1", "--bandwidth" },
                { "--bandwidth", "10x", "--bandwidth" },
                { "--bandwidth", "", "--bandwidth" },
                { "--downtime", "4294967596", "--downtime" }, /* truncates to 300 in 32 bits */
                { "--downtime", "60001", "between 1 and 60000" },
                { "--downtime", "0", "--downtime" },
                { "--downtime", "abc", "--downtime" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                for (int after = 0; after < 2; after++) {
                        char *out = NULL;
                        int calls = fake.migrate_calls;
                        int st = after ? droverctl(&out, "migrate", "g1", bad[i].opt, bad[i].val, NULL)
                                       : droverctl(&out, bad[i].opt, bad[i].val, "migrate", "g1", NULL);
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != 2 || !strstr(out, bad[i].needle))
                                fail_msg("%s '%s' (%s the command): status %#x, output '%s'", bad[i].opt, bad[i].val,
                                         after ? "after" : "before", st, out);
                        assert_int_equal(fake.migrate_calls, calls);
                        free(out);
                }

        char *out = NULL;
        int st = droverctl(&out, "migrate", "g1", "--bandwidth", "1048576", "--downtime", "60000", NULL);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("valid values refused: status %#x, output '%s'", st, out);
        assert_int_equal(fake.got.bandwidth, 1048576ULL << 20);
        assert_int_equal(fake.got.downtime_ms, 60000);
        free(out);
}

#define assert_contains(text, needle)                                                   \
        do {                                                                            \
                if (!strstr((text), (needle)))                                          \
                        fail_msg("'%s' not in:\n%.3000s", (needle), (text));            \
        } while (0)

/* Every command's --help: exit 0, its usage on stdout, nothing on stderr,
 * no call made; the same through `help COMMAND`, and for droverctl itself. */
static void test_every_command_has_help(void **state) {
        static const char *const cmds[] = { "hosts", "vms",   "migrate", "evacuate", "plan", "jobs",
                                            "job",   "watch", "cancel",  "host",     "help" };
        char *out, *err;
        int calls = fake.migrate_calls + fake.evacuate_calls + fake.cancel_calls;
        for (size_t i = 0; i < ELEMENTSOF(cmds); i++) {
                char want[64];
                snprintf(want, sizeof(want), "usage: droverctl [options] %s", cmds[i]);
                for (int how = 0; how < 3; how++) {
                        int code = how == 0 ? run(&out, &err, "coordinator/droverctl", cmds[i], "--help", NULL)
                                   : how == 1 ? run(&out, &err, "coordinator/droverctl", "--help", cmds[i], NULL)
                                              : run(&out, &err, "coordinator/droverctl", "help", cmds[i], NULL);
                        if (code != 0 || !strstr(out, want) || err[0])
                                fail_msg("droverctl %s --help (%d): exit %d, stdout '%.300s', stderr '%s'", cmds[i], how,
                                         code, out, err);
                        free(out);
                        free(err);
                }
        }
        assert_int_equal(run(&out, &err, "coordinator/droverctl", "--help", NULL), 0);
        for (size_t i = 0; i < ELEMENTSOF(cmds); i++)
                assert_contains(out, cmds[i]);
        assert_contains(out, "exit codes");
        free(out);
        free(err);
        /* the options a command takes are in its help, and only those */
        assert_int_equal(run(&out, &err, "coordinator/droverctl", "migrate", "--help", NULL), 0);
        assert_contains(out, "--cancel-on-interrupt");
        assert_contains(out, "--timeout SECONDS");
        assert_null(strstr(out, "--maintenance"));
        free(out);
        free(err);
        assert_int_equal(fake.migrate_calls + fake.evacuate_calls + fake.cancel_calls, calls);
}

/* Every program prints meson's project version, on stdout, exit 0. */
static void test_every_program_has_version(void **state) {
        static const struct { const char *path, *name; } progs[] = {
                { "coordinator/droverctl", "droverctl" },
                { "agent/drover-agentctl", "drover-agentctl" },
                { "agent/drover-agent", "drover-agent" },
                { "coordinator/drover-coordinator", "drover-coordinator" },
        };
        for (size_t i = 0; i < ELEMENTSOF(progs); i++) {
                char *out, *err, want[64];
                snprintf(want, sizeof(want), "%s %s\n", progs[i].name, DROVER_VERSION);
                int code = run(&out, &err, progs[i].path, "--version", NULL);
                if (code != 0 || strcmp(out, want) != 0)
                        fail_msg("%s --version: exit %d, stdout '%s', stderr '%s'", progs[i].name, code, out, err);
                free(out);
                free(err);
        }
        assert_true(DROVER_VERSION[0] >= '0' && DROVER_VERSION[0] <= '9');
}

/* An unknown option, one the command does not take, a bad value or a wrong
 * count of arguments: exit 2, the reason on stderr, nothing sent. */
static void test_bad_command_lines_are_refused(void **state) {
        static const struct { const char *a[6], *needle; } bad[] = {
                { { "migrate", "g1", "--wiat" }, "--wiat" },
                { { "migrate", "--wiat", "g1" }, "--wiat" },
                { { "--wiat", "migrate", "g1" }, "--wiat" },
                { { "evacuate", "host-a", "--to", "host-b" }, "evacuate does not take --to" },
                { { "hosts", "--wait" }, "hosts does not take --wait" },
                { { "cancel", "job-1", "--cancel-on-interrupt" }, "cancel does not take --cancel-on-interrupt" },
                { { "migrate", "g1", "--bandwidth", "abc" }, "--bandwidth: 'abc'" },
                { { "migrate", "g1", "--timeout", "abc" }, "--timeout: 'abc'" },
                { { "migrate", "g1", "--timeout", "0" }, "--timeout: '0'" },
                { { "migrate", "g1", "--timeout", "-1" }, "--timeout: '-1'" },
                { { "migrate", "g1", "--timeout", "1e3" }, "--timeout: '1e3'" },
                { { "migrate", "g1", "--timeout", "86401" }, "--timeout: '86401'" },
                { { "migrate", "g1", "--postcopy", "sometimes" }, "--postcopy: 'sometimes'" },
                { { "evacuate" }, "evacuate takes HOST" },
                { { "evacuate", "host-a", "host-b" }, "evacuate takes HOST" },
                { { "hosts", "extra" }, "hosts takes no arguments" },
                { { "frobnicate" }, "no command 'frobnicate'" },
                { { "host", "reboot", "host-a" }, "'reboot' is not enable, drain, maintenance, add, remove, set or show" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                char *out, *err;
                int calls = fake.migrate_calls + fake.evacuate_calls + fake.cancel_calls;
                const char *const *a = bad[i].a;
                int code = run(&out, &err, "coordinator/droverctl", a[0], a[1], a[2], a[3], a[4], NULL);
                if (code != 2 || !strstr(err, bad[i].needle) || !strstr(err, "usage: droverctl"))
                        fail_msg("droverctl %s %s %s %s: exit %d, stderr '%s', expected '%s'", a[0], a[1] ? a[1] : "",
                                 a[1] && a[2] ? a[2] : "", a[1] && a[2] && a[3] ? a[3] : "", code, err, bad[i].needle);
                assert_int_equal(fake.migrate_calls + fake.evacuate_calls + fake.cancel_calls, calls);
                free(out);
                free(err);
        }
        /* drover-agentctl: the same strictness */
        static const char *const agentctl_bad[][4] = {
                { "list", "--wiat" }, { "start", "g1", "--timeout", "abc" }, { "list", "extra" }, { "stats", "x" },
        };
        for (size_t i = 0; i < ELEMENTSOF(agentctl_bad); i++) {
                char *out, *err;
                const char *const *a = agentctl_bad[i];
                int code = run(&out, &err, "agent/drover-agentctl", "-a", "unix:/nonexistent", a[0], a[1], a[2], a[3], NULL);
                if (code != 2 || !strstr(err, "drover-agentctl"))
                        fail_msg("drover-agentctl %s %s: exit %d, stderr '%s'", a[0], a[1], code, err);
                free(out);
                free(err);
        }
        char *out, *err;
        assert_int_equal(run(&out, &err, "agent/drover-agentctl", "--help", NULL), 0);
        assert_contains(out, "usage: drover-agentctl");
        free(out);
        free(err);
}

/* No coordinator at the address: exit 6 naming the address, with a hint;
 * a coordinator that does not answer within --timeout: exit 6 too, saying
 * so; --json: the same as a JSON document. */
static void test_unreachable_coordinator_is_exit_6(void **state) {
        char *out, *err, nowhere[300];
        snprintf(nowhere, sizeof(nowhere), "unix:%s", tu_path(dir, "nobody.sock"));
        uint64_t t0 = now_ms();
        int code = run(&out, &err, "coordinator/droverctl", "-c", nowhere, "hosts", NULL);
        if (code != 6 || !strstr(err, nowhere) || !strstr(err, "is drover-coordinator running"))
                fail_msg("no coordinator: exit %d, stderr '%s'", code, err);
        assert_true(now_ms() - t0 < 20000);
        free(out);
        free(err);

        code = run(&out, &err, "coordinator/droverctl", "-c", nowhere, "--json", "jobs", NULL);
        if (code != 6 || !strstr(out, "\"error\"") || !strstr(out, "\"hint\"") || !strstr(out, "\"exit\":6"))
                fail_msg("no coordinator, --json: exit %d, stdout '%s'", code, out);
        free(out);
        free(err);

        /* the fake's ListJobs answers after 2 s */
        t0 = now_ms();
        code = run(&out, &err, "coordinator/droverctl", "--timeout", "0.5", "jobs", NULL);
        if (code != 6 || !strstr(err, "did not answer within 0.5 s"))
                fail_msg("--timeout 0.5: exit %d, stderr '%s'", code, err);
        assert_true(now_ms() - t0 < 1900);
        free(out);
        free(err);
}

/* NOT FOUND: exit 5 with the coordinator's words, for a job and a host. */
static void test_not_found_is_exit_5(void **state) {
        char *out, *err;
        int code = run(&out, &err, "coordinator/droverctl", "job", "job-nosuch", NULL);
        if (code != 5 || !strstr(err, "NOT_FOUND") || !strstr(err, "job-nosuch"))
                fail_msg("job job-nosuch: exit %d, stderr '%s'", code, err);
        free(out);
        free(err);
        code = run(&out, &err, "coordinator/droverctl", "evacuate", "host-z", NULL);
        if (code != 5 || !strstr(err, "host-z"))
                fail_msg("evacuate host-z: exit %d, stderr '%s'", code, err);
        free(out);
        free(err);
        code = run(&out, &err, "coordinator/droverctl", "watch", "job-nosuch", NULL);
        if (code != 5 || !strstr(err, "job-nosuch"))
                fail_msg("watch job-nosuch: exit %d, stderr '%s'", code, err);
        free(out);
        free(err);
        /* and a job that is there: exit 0 */
        assert_int_equal(run(&out, &err, "coordinator/droverctl", "job", "job-1", NULL), 0);
        free(out);
        free(err);
}

/* Evacuating a host with no guest says so and exits 0. */
static void test_empty_evacuation_says_so(void **state) {
        char *out, *err;
        int code = run(&out, &err, "coordinator/droverctl", "evacuate", "host-empty", NULL);
        if (code != 0 || !strstr(out, "host host-empty has no running or paused guest: nothing to move"))
                fail_msg("evacuate host-empty: exit %d, stdout '%s', stderr '%s'", code, out, err);
        free(out);
        free(err);
        code = run(&out, &err, "coordinator/droverctl", "--json", "evacuate", "host-empty", NULL);
        if (code != 0 || !strstr(out, "nothing to move"))
                fail_msg("evacuate host-empty --json: exit %d, stdout '%s'", code, out);
        free(out);
        free(err);
}

/* hosts shows each host's last error, in the table and in JSON. */
static void test_hosts_shows_last_error(void **state) {
        char *out, *err;
        assert_int_equal(run(&out, &err, "coordinator/droverctl", "hosts", NULL), 0);
        assert_contains(out, "last error: GetAgentStats: UNAVAILABLE: connection refused");
        assert_int_equal(count(out, "last error"), 1); /* host-a has none */
        free(out);
        free(err);
        assert_int_equal(run(&out, &err, "coordinator/droverctl", "--json", "hosts", NULL), 0);
        assert_contains(out, "\"last_error\":\"GetAgentStats: UNAVAILABLE: connection refused\"");
        free(out);
        free(err);
}

/* On a 24-row terminal, a job of 40 guests whose last two still migrate:
 * while it runs, the two are on screen (they came first; the others, all
 * done, are counted in the last line), not hidden behind 21 done rows. */
static void test_live_display_keeps_moving_guests_in_view(void **state) {
        char *out;
        int code = droverctl_on_terminal(&out, 24, "watch", "job-many", NULL);
        if (code != 0)
                fail_msg("watch job-many: exit %d, output:\n%.3000s", code, out);
        /* the frames while it ran: everything before the final redraw */
        char *final = strstr(out, "evacuate host-a: succeeded");
        assert_non_null(final);
        *final = '\0';
        for (int i = MANY - 2; i < MANY; i++) {
                char row[64];
                snprintf(row, sizeof(row), "m-%02d", i);
                const char *p = strstr(out, row);
                if (!p || !strstr(p, "migrating"))
                        fail_msg("%s not shown migrating while the job ran:\n%.4000s", row, out);
                /* on its own row, as migrating */
                const char *eol = strchr(p, '\n');
                const char *mig = strstr(p, "migrating");
                assert_true(eol && mig < eol);
        }
        assert_contains(out, "more guests: 19 done, 0 queued"); /* 40 - 21 shown = 19, all done */
        free(out);
}

/* Ctrl-C during a watch: exit 130 and the job goes on (no CancelJob); with
 * --cancel-on-interrupt, CancelJob reaches the coordinator first. */
static void test_interrupt_stops_the_watch_and_cancels_when_asked(void **state) {
        for (int cancel = 0; cancel < 2; cancel++) {
                char *argv[24];
                char *args[] = { (char *) "-c", addr, (char *) "watch", (char *) "job-forever",
                                 cancel ? (char *) "--cancel-on-interrupt" : NULL, NULL };
                argv[0] = (char *) tu_build_path("coordinator/droverctl");
                memcpy(argv + 1, args, sizeof(args));
                int calls = fake.cancel_calls;
                pid_t p = spawn(argv, -1);
                /* until it printed the job once */
                char *text = NULL;
                for (int i = 0; i < 1000; i++) {
                        free(text);
                        text = tu_read_file(tu_path(dir, "out.log"), NULL);
                        if (text && strstr(text, "job-forever"))
                                break;
                        sleep_ms(10);
                }
                assert_non_null(text);
                assert_contains(text, "job-forever");
                free(text);
                assert_int_equal(kill(p, SIGINT), 0);
                int st = reap(p);
                char *err = tu_read_file(tu_path(dir, "err.log"), NULL);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 130)
                        fail_msg("watch --cancel-on-interrupt=%d: status %#x, stderr '%s'", cancel, st, err);
                if (cancel) {
                        assert_int_equal(fake.cancel_calls, calls + 1);
                        assert_string_equal(fake.cancelled, "job-forever");
                        assert_contains(err, "cancelling job job-forever");
                } else {
                        assert_int_equal(fake.cancel_calls, calls);
                        assert_contains(err, "job job-forever goes on");
                }
                free(err);
        }
}

/* host set: UpdateHost gets exactly the fields given, in the order given,
 * with their values, and the record comes back as JSON; an unknown field
 * or a malformed number is a usage error (exit 2) and nothing is sent. */
static void test_host_set_sends_the_fields_given(void **state) {
        char *out = NULL;
        int st = droverctl(&out, "--json", "host", "set", "hv1", "memory_mib=4096", "address=10.0.0.9:7400", NULL);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("host set: status %#x, output '%s'", st, out);
        assert_int_equal(fake.update_calls, 1);
        assert_string_equal(fake.update_fields, "memory_mib address");
        assert_int_equal(fake.update.memory_mib, 4096);
        assert_int_equal(fake.update.vcpus, 0);
        if (!strstr(out, "\"memory_mib\":4096") || !strstr(out, "\"address\":\"10.0.0.9:7400\""))
                fail_msg("host set --json: '%s'", out);
        free(out);
        const char *bad[] = { "bogus=1", "vcpus=-1", "vcpus=4294967296", "memory_mib=1k", "memory_mib" };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                st = droverctl(&out, "host", "set", "hv1", bad[i], NULL);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 2)
                        fail_msg("host set hv1 %s: status %#x, output '%s'", bad[i], st, out);
                free(out);
        }
        assert_int_equal(fake.update_calls, 1);
}

/* --transport reaches the request before or after the command; an
 * unknown name (or "default") is a usage error and nothing is sent. */
static void test_transport_option(void **state) {
        for (int after = 0; after < 2; after++) {
                char *out = NULL;
                int st = after ? droverctl(&out, "migrate", "g1", "--transport", "ssh", NULL)
                               : droverctl(&out, "--transport", "ssh", "migrate", "g1", NULL);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        fail_msg("--transport ssh refused: status %#x, output '%s'", st, out);
                assert_int_equal(fake.got.transport, MIG_TRANSPORT_SSH);
                free(out);
                int calls = fake.migrate_calls;
                st = after ? droverctl(&out, "migrate", "g1", "--transport", "default", NULL)
                           : droverctl(&out, "--transport", "scp", "migrate", "g1", NULL);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 2)
                        fail_msg("a bad --transport was accepted: status %#x, output '%s'", st, out);
                assert_int_equal(fake.migrate_calls, calls);
                free(out);
        }
}

/* A migration request carries only what its command line set: every other
 * member is 0 (unset), so the coordinator's configured defaults apply to
 * it (docs/coordinator.md, "Migration parameters"). */
static void test_request_carries_only_the_options_given(void **state) {
        char *out = NULL, got[MIG_PARAMS_JSON_MAX], want[MIG_PARAMS_JSON_MAX];
        int st = droverctl(&out, "migrate", "g1", "--downtime", "500", NULL);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("status %#x, output '%s'", st, out);
        free(out);
        assert_int_equal(mig_params_to_json(&fake.got, got, sizeof(got)), 0);
        assert_int_equal(mig_params_to_json(&(MigParams){ .downtime_ms = 500 }, want, sizeof(want)), 0);
        assert_string_equal(got, want);
        st = droverctl(&out, "migrate", "g1", NULL);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("status %#x, output '%s'", st, out);
        free(out);
        assert_int_equal(mig_params_to_json(&fake.got, got, sizeof(got)), 0);
        assert_int_equal(mig_params_to_json(&(MigParams){ 0 }, want, sizeof(want)), 0);
        assert_string_equal(got, want);
}

/* `droverctl job` shows each migration's stream: channels, compression,
 * bytes sent against the guest's memory, local disks, and why; the live
 * row of a guest copying its local disks shows that copy. */
static void test_job_shows_the_stream_and_local_disks(void **state) {
        char *out = NULL;
        int st = droverctl(&out, "job", "job-stream", NULL);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("status %#x, output '%s'", st, out);
        assert_contains(out, "m-00               stream: 4 multifd channels, compression zstd; 3.0 GiB sent for 4.0 GiB "
                             "of guest memory (1.0 GiB on multifd channels); local disks 20.0 GiB copied");
        assert_contains(out, "m-00               why: requested destination; stream: zstd on 4");
        assert_contains(out, ", disks 20.0 GiB");
        assert_contains(out, "disks      50.0%  5.0 GiB of 10.0 GiB copied");
        assert_contains(out, "m-01               stream: channels picked by the source agent; local disks 5.0 GiB of 10.0 GiB");
        free(out);
        st = droverctl(&out, "--json", "job", "job-stream", NULL);
        assert_contains(out, "\"disk_bytes\":21474836480");
        assert_contains(out, "\"compression\":\"zstd\"");
        assert_contains(out, "\"disk_transferred_bytes\":5368709120");
        free(out);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_piped_watch_of_many_long_names_prints_every_change),
                cmocka_unit_test(test_piped_watch_of_a_huge_name_does_not_crash),
                cmocka_unit_test(test_bandwidth_and_downtime_are_range_checked),
                cmocka_unit_test(test_every_command_has_help),
                cmocka_unit_test(test_every_program_has_version),
                cmocka_unit_test(test_bad_command_lines_are_refused),
                cmocka_unit_test(test_unreachable_coordinator_is_exit_6),
                cmocka_unit_test(test_not_found_is_exit_5),
                cmocka_unit_test(test_empty_evacuation_says_so),
                cmocka_unit_test(test_hosts_shows_last_error),
                cmocka_unit_test(test_live_display_keeps_moving_guests_in_view),
                cmocka_unit_test(test_interrupt_stops_the_watch_and_cancels_when_asked),
                cmocka_unit_test(test_host_set_sends_the_fields_given),
                cmocka_unit_test(test_transport_option),
                cmocka_unit_test(test_request_carries_only_the_options_given),
                cmocka_unit_test(test_job_shows_the_stream_and_local_disks),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
