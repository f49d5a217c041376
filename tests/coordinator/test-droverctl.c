/* droverctl as a real process against a fake coordinator (suite 'unit').
 *
 * The fake serves the Coordinator API over a unix socket in this process:
 * WatchJob streams a scripted series of jobs, MigrateGuests records the
 * parameters it was sent.  What it proves: a piped watch of a job with
 * many long guest names prints every change and never writes past its
 * buffers; --bandwidth and --downtime are range-checked with a clear error
 * instead of wrapping or truncating, and valid values arrive unchanged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "coordinator.pb-c.h"
#include "deadline.h"
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
} fake;

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

static RpcCode h_watch(RpcCall *c, const ProtobufCMessage *req, void *user) {
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

static const RpcMethodDef methods[] = {
        { "WatchJob", NULL, h_watch, 0, RPC_ROLES_ALL },
        { "MigrateGuests", h_migrate, NULL, 0, RPC_ROLES_ALL },
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
        if (rpc_server_new(&(RpcServerOptions){ .threads = 2 }, &srv) < 0 ||
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

/* Run droverctl with @args (NULL-terminated) against the fake; its output
 * (stdout and stderr, piped) in *ret_out.  Returns its wait status. */
static int droverctl(char **ret_out, ...) {
        char *argv[16] = { (char *) tu_build_path("coordinator/droverctl"), (char *) "-c", addr };
        int n = 3, status = 0;
        va_list ap;
        va_start(ap, ret_out);
        for (char *a; n < 15 && (a = va_arg(ap, char *));)
                argv[n++] = a;
        va_end(ap);
        const char *log = tu_path(dir, "out.log");
        (void) unlink(log); /* tu_spawn() appends */
        pid_t p = tu_spawn(argv, log);
        assert_true(p > 0);
        for (int i = 0; i < 3000 && !tu_reap(p, &status); i++)
                sleep_ms(10);
        *ret_out = tu_read_file(log, NULL);
        assert_non_null(*ret_out);
        return status;
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

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_piped_watch_of_many_long_names_prints_every_change),
                cmocka_unit_test(test_piped_watch_of_a_huge_name_does_not_crash),
                cmocka_unit_test(test_bandwidth_and_downtime_are_range_checked),
                cmocka_unit_test(test_transport_option),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
