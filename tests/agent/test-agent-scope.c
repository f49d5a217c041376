/* Unit tests of the guest scopes (agent/agent-scope.h): the decision over
 * every kind of host, the unit built for a guest (name, description,
 * slice, properties), the refusal of bad input, the scope's device rules
 * against drover-agent.service's, and the fallback on a host without
 * systemd as init (this test machine, a container): no scope, an error
 * from systemd's side, never a failure of the caller.
 *
 * The D-Bus exchange runs against a fake manager (a thread serving one
 * direct sd-bus connection on a unix socket, as systemd serves its private
 * socket): it records the StartTransientUnit call (name, mode, every
 * property) and answers as told: the job done (its JobRemoved after the
 * reply, or before it), the job failed, the unit already existing, or no
 * JobRemoved at all.  What cannot run here: a real systemd (no systemd as
 * PID 1): docs/operations.md, "The units", says so.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <cmocka.h>
#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-bus.h>
#endif

#include "agent-scope.h"
#include "cleanup.h"
#include "err.h"
#include "testutil.h"

#define UUID "0f8e3c2a-5b6d-4e7f-8a9b-0c1d2e3f4a5b"

static bool systemd_is_init(void) {
        struct stat st;
        return lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}

/* Scopes only with libsystemd, systemd as init and root; each missing one
 * has its own reason. */
static void test_decide_every_host(void **state) {
        (void) state;
        for (int bits = 0; bits < 8; bits++) {
                AgentScopeHost h = { .have_libsystemd = bits & 1, .systemd_booted = bits & 2, .root = bits & 4 };
                const char *why = NULL;
                bool use = agent_scope_decide(&h, &why);
                assert_int_equal(use, bits == 7);
                assert_non_null(why);
                if (!h.have_libsystemd)
                        assert_non_null(strstr(why, "libsystemd"));
                else if (!h.systemd_booted)
                        assert_non_null(strstr(why, "not the init"));
                else if (!h.root)
                        assert_non_null(strstr(why, "not root"));
                else
                        assert_non_null(strstr(why, AGENT_SCOPE_SLICE));
                assert_int_equal(agent_scope_decide(&h, NULL), use);
        }
}

static void test_unit_names_the_guest(void **state) {
        (void) state;
        AgentScopeUnit u;
        assert_int_equal(agent_scope_unit_for("web-1.prod_a", UUID, 4242, &u), 0);
        assert_string_equal(u.name, "drover-guest-" UUID "-4242.scope");
        assert_string_equal(u.description, "Drover guest web-1.prod_a (QEMU pid 4242)");
        assert_string_equal(u.slice, "machine.slice");
        assert_string_equal(u.collect_mode, "inactive-or-failed");
        assert_string_equal(u.device_policy, "closed");
        assert_int_equal(u.pid, 4242);

        /* only characters systemd takes in a unit name, and under its limit */
        assert_true(strlen(u.name) < 256);
        for (const char *p = u.name; *p; p++)
                assert_non_null(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@", *p));

        /* two QEMUs of one guest (incoming migration on the same host) get
         * two scopes */
        AgentScopeUnit v;
        assert_int_equal(agent_scope_unit_for("web-1.prod_a", UUID, 4243, &v), 0);
        assert_string_not_equal(u.name, v.name);
}

static void test_unit_refuses_bad_input(void **state) {
        (void) state;
        AgentScopeUnit u;
        memset(&u, 0x5a, sizeof(u));
        const AgentScopeUnit before = u;
        assert_int_equal(agent_scope_unit_for("", UUID, 100, &u), -EINVAL);
        assert_int_equal(agent_scope_unit_for("../etc", UUID, 100, &u), -EINVAL);
        assert_int_equal(agent_scope_unit_for("a b", UUID, 100, &u), -EINVAL);
        assert_int_equal(agent_scope_unit_for("web1", "not-a-uuid", 100, &u), -EINVAL);
        assert_int_equal(agent_scope_unit_for("web1", "0F8E3C2A-5B6D-4E7F-8A9B-0C1D2E3F4A5B", 100, &u), -EINVAL);
        assert_non_null(strstr(err_msg(), "lower case"));
        assert_int_equal(agent_scope_unit_for("web1", UUID, 0, &u), -EINVAL);
        assert_int_equal(agent_scope_unit_for("web1", UUID, 1, &u), -EINVAL);
        assert_int_equal(agent_scope_unit_for("web1", UUID, -5, &u), -EINVAL);
        assert_memory_equal(&u, &before, sizeof(u)); /* written only on success */
}

/* The scope keeps the unit's device policy (the one confinement of
 * drover-agent.service that lives in its cgroup): same policy, same rules
 * in the same order. */
static void test_scope_devices_are_the_units(void **state) {
        (void) state;
        AgentScopeUnit u;
        assert_int_equal(agent_scope_unit_for("web1", UUID, 100, &u), 0);
        char *unit = tu_read_file(tu_source_path("agent/systemd/drover-agent.service.in"), NULL);
        assert_non_null(unit);
        size_t n = 0;
        bool policy_seen = false;
        for (char *line = strtok(unit, "\n"); line; line = strtok(NULL, "\n")) {
                if (strncmp(line, "DevicePolicy=", 13) == 0) {
                        assert_string_equal(line + 13, u.device_policy);
                        policy_seen = true;
                }
                if (strncmp(line, "DeviceAllow=", 12) != 0)
                        continue;
                char path[64], access[8];
                assert_int_equal(sscanf(line + 12, "%63s %7s", path, access), 2);
                assert_true(n < u.n_devices);
                assert_string_equal(path, u.devices[n].path);
                assert_string_equal(access, u.devices[n].access);
                n++;
        }
        assert_true(policy_seen);
        assert_int_equal(n, u.n_devices);
        free(unit);
}

static void test_probe_sees_this_host(void **state) {
        (void) state;
        AgentScopeHost h;
        agent_scope_host_probe(&h);
        assert_int_equal(h.root, geteuid() == 0);
        assert_int_equal(h.systemd_booted, systemd_is_init());
}

/* The path every guest start takes on this machine: no systemd as init,
 * so no scope and no failure; and a scope asked for anyway fails with a
 * reason, quickly, which agent_scope_move() turns into a warning. */
static void test_without_systemd_guests_start_anyway(void **state) {
        (void) state;
        if (systemd_is_init())
                skip(); /* systemd is the init here: a scope would really be made */
        AgentScopeHost h;
        agent_scope_host_probe(&h);
        assert_false(agent_scope_decide(&h, NULL));
        assert_false(agent_scope_move("web1", UUID, getpid()));

        AgentScopeUnit u;
        assert_int_equal(agent_scope_unit_for("web1", UUID, getpid(), &u), 0);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int r = agent_scope_start(&u, 2000);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        assert_true(r < 0);
        assert_true(err_msg()[0] != '\0');
        assert_true(t1.tv_sec - t0.tv_sec < 3);
}


#ifdef HAVE_LIBSYSTEMD

typedef enum FakeMode { FAKE_DONE, FAKE_DONE_EARLY, FAKE_JOB_FAILED, FAKE_EXISTS, FAKE_SILENT } FakeMode;

/* A fake systemd manager for one connection, and what it was asked. */
typedef struct Fake {
        FakeMode mode;
        int listen_fd;
        char address[128];
        pthread_t thread;
        /* written by the fake's thread, read after the join */
        bool subscribed;
        char name[128], job_mode[16], description[128], slice[64], collect[32], policy[16];
        uint32_t pids[4];
        size_t n_pids;
        char devices[8][2][32];
        size_t n_devices, n_other;
} Fake;

static void read_string_into(sd_bus_message *m, char *buf, size_t size) {
        const char *v = "";
        assert_true(sd_bus_message_read(m, "s", &v) >= 0);
        snprintf(buf, size, "%s", v);
}

static int on_manager_call(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Fake *f = userdata;
        (void) ret_error;
        if (sd_bus_message_is_method_call(m, "org.freedesktop.systemd1.Manager", "Subscribe")) {
                f->subscribed = true;
                return sd_bus_reply_method_return(m, NULL);
        }
        if (!sd_bus_message_is_method_call(m, "org.freedesktop.systemd1.Manager", "StartTransientUnit"))
                return 0;
        const char *name, *mode, *key, *contents;
        assert_true(sd_bus_message_read(m, "ss", &name, &mode) >= 0);
        snprintf(f->name, sizeof(f->name), "%s", name);
        snprintf(f->job_mode, sizeof(f->job_mode), "%s", mode);
        assert_true(sd_bus_message_enter_container(m, 'a', "(sv)") > 0);
        while (sd_bus_message_enter_container(m, 'r', "sv") > 0) {
                assert_true(sd_bus_message_read(m, "s", &key) >= 0);
                assert_true(sd_bus_message_peek_type(m, NULL, &contents) >= 0);
                assert_true(sd_bus_message_enter_container(m, 'v', contents) > 0);
                if (strcmp(key, "Description") == 0)
                        read_string_into(m, f->description, sizeof(f->description));
                else if (strcmp(key, "Slice") == 0)
                        read_string_into(m, f->slice, sizeof(f->slice));
                else if (strcmp(key, "CollectMode") == 0)
                        read_string_into(m, f->collect, sizeof(f->collect));
                else if (strcmp(key, "DevicePolicy") == 0)
                        read_string_into(m, f->policy, sizeof(f->policy));
                else if (strcmp(key, "PIDs") == 0) {
                        uint32_t pid;
                        assert_true(sd_bus_message_enter_container(m, 'a', "u") > 0);
                        while (sd_bus_message_read(m, "u", &pid) > 0)
                                if (f->n_pids < ELEMENTSOF(f->pids))
                                        f->pids[f->n_pids++] = pid;
                        assert_true(sd_bus_message_exit_container(m) >= 0);
                } else if (strcmp(key, "DeviceAllow") == 0) {
                        const char *path, *access;
                        assert_string_equal(contents, "a(ss)");
                        assert_true(sd_bus_message_enter_container(m, 'a', "(ss)") > 0);
                        while (sd_bus_message_read(m, "(ss)", &path, &access) > 0)
                                if (f->n_devices < ELEMENTSOF(f->devices)) {
                                        snprintf(f->devices[f->n_devices][0], 32, "%s", path);
                                        snprintf(f->devices[f->n_devices++][1], 32, "%s", access);
                                }
                        assert_true(sd_bus_message_exit_container(m) >= 0);
                } else {
                        assert_true(sd_bus_message_skip(m, contents) >= 0);
                        f->n_other++;
                }
                assert_true(sd_bus_message_exit_container(m) >= 0);
                assert_true(sd_bus_message_exit_container(m) >= 0);
        }
        assert_true(sd_bus_message_exit_container(m) >= 0);

        const char *job = "/org/freedesktop/systemd1/job/42";
        sd_bus *bus = sd_bus_message_get_bus(m);
        if (f->mode == FAKE_EXISTS)
                return sd_bus_reply_method_errorf(m, "org.freedesktop.systemd1.UnitExists",
                                                  "Unit %s was already loaded or has a fragment file.", name);
        /* another job's end first: it must not be taken for ours */
        assert_true(sd_bus_emit_signal(bus, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                       "JobRemoved", "uoss", 41, "/org/freedesktop/systemd1/job/41", "other.scope",
                                       "failed") >= 0);
        const char *result = f->mode == FAKE_JOB_FAILED ? "failed" : "done";
        if (f->mode == FAKE_DONE_EARLY)
                assert_true(sd_bus_emit_signal(bus, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                               "JobRemoved", "uoss", 42, job, name, result) >= 0);
        int r = sd_bus_reply_method_return(m, "o", job);
        if (f->mode == FAKE_DONE || f->mode == FAKE_JOB_FAILED)
                assert_true(sd_bus_emit_signal(bus, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager",
                                               "JobRemoved", "uoss", 42, job, name, result) >= 0);
        return r;
}

static void *fake_serve(void *arg) {
        Fake *f = arg;
        int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
                return NULL;
        sd_bus *bus = NULL;
        sd_bus_slot *slot = NULL;
        sd_id128_t id = { .qwords = { 1, 2 } };
        if (sd_bus_new(&bus) < 0 || sd_bus_set_fd(bus, fd, fd) < 0 || sd_bus_set_server(bus, 1, id) < 0 ||
            sd_bus_add_object(bus, &slot, "/org/freedesktop/systemd1", on_manager_call, f) < 0 ||
            sd_bus_start(bus) < 0) {
                close(fd);
                sd_bus_unref(bus);
                return NULL;
        }
        for (int i = 0; i < 1000; i++) { /* until the client hangs up, at most ~10 s */
                int r = sd_bus_process(bus, NULL);
                if (r < 0)
                        break;
                if (r == 0 && sd_bus_wait(bus, 10000) < 0)
                        break;
        }
        sd_bus_slot_unref(slot);
        sd_bus_flush_close_unref(bus);
        return NULL;
}

static void fake_start(Fake *f, FakeMode mode) {
        *f = (Fake){ .mode = mode };
        const char *dir = tu_tmpdir("scope");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%d.sock", dir, (int) mode);
        snprintf(f->address, sizeof(f->address), "unix:path=%s", sa.sun_path);
        f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(f->listen_fd >= 0);
        assert_int_equal(bind(f->listen_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(f->listen_fd, 1), 0);
        assert_int_equal(pthread_create(&f->thread, NULL, fake_serve, f), 0);
}

static void fake_join(Fake *f) {
        assert_int_equal(pthread_join(f->thread, NULL), 0);
        close(f->listen_fd);
}

/* What the manager is asked: the unit of agent_scope_unit_for(), job mode
 * "fail", every property with its D-Bus type, nothing else. */
static void test_start_transient_unit_call(void **state) {
        (void) state;
        static const FakeMode modes[] = { FAKE_DONE, FAKE_DONE_EARLY };
        for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
                Fake f;
                AgentScopeUnit u;
                fake_start(&f, modes[i]);
                assert_int_equal(agent_scope_unit_for("web1", UUID, 4242, &u), 0);
                assert_int_equal(agent_scope_start_at(f.address, &u, 5000), 0);
                fake_join(&f);
                assert_true(f.subscribed);
                assert_string_equal(f.name, u.name);
                assert_string_equal(f.job_mode, "fail");
                assert_string_equal(f.description, "Drover guest web1 (QEMU pid 4242)");
                assert_string_equal(f.slice, "machine.slice");
                assert_string_equal(f.collect, "inactive-or-failed");
                assert_string_equal(f.policy, "closed");
                assert_int_equal(f.n_pids, 1);
                assert_int_equal(f.pids[0], 4242);
                assert_int_equal(f.n_devices, u.n_devices);
                for (size_t k = 0; k < u.n_devices; k++) {
                        assert_string_equal(f.devices[k][0], u.devices[k].path);
                        assert_string_equal(f.devices[k][1], u.devices[k].access);
                }
                assert_int_equal(f.n_other, 0);
        }
}

/* Every way systemd can say no is an error with a reason, within the
 * deadline: the caller then keeps QEMU in the agent's cgroup. */
static void test_start_refusals_are_errors(void **state) {
        (void) state;
        AgentScopeUnit u;
        assert_int_equal(agent_scope_unit_for("web1", UUID, 4242, &u), 0);
        Fake f;

        fake_start(&f, FAKE_EXISTS);
        assert_int_equal(agent_scope_start_at(f.address, &u, 5000), -EEXIST);
        assert_non_null(strstr(err_msg(), "already loaded"));
        fake_join(&f);

        fake_start(&f, FAKE_JOB_FAILED);
        assert_int_equal(agent_scope_start_at(f.address, &u, 5000), -EIO);
        assert_non_null(strstr(err_msg(), "'failed'"));
        fake_join(&f);

        fake_start(&f, FAKE_SILENT);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(agent_scope_start_at(f.address, &u, 300), -ETIMEDOUT);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        int64_t ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        assert_true(ms >= 250 && ms < 3000);
        fake_join(&f);

        const char *dir = tu_tmpdir("noscope");
        char *nobody = tu_asprintf("unix:path=%s/none.sock", dir);
        assert_true(agent_scope_start_at(nobody, &u, 1000) < 0);
        assert_non_null(strstr(err_msg(), "cannot connect"));
        free(nobody);
}

#endif /* HAVE_LIBSYSTEMD */

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_decide_every_host),
                cmocka_unit_test(test_unit_names_the_guest),
                cmocka_unit_test(test_unit_refuses_bad_input),
                cmocka_unit_test(test_scope_devices_are_the_units),
                cmocka_unit_test(test_probe_sees_this_host),
                cmocka_unit_test(test_without_systemd_guests_start_anyway),
#ifdef HAVE_LIBSYSTEMD
                cmocka_unit_test(test_start_transient_unit_call),
                cmocka_unit_test(test_start_refusals_are_errors),
#endif
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
