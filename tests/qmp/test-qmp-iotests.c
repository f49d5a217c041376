/* Replay of QEMU's own two-VM migration tests (qemu-iotests 234 and 262)
 * from their reference output, tests/data/qmp/iotest-{234,262}.out.
 *
 * The .out files log the replies and events of each VM in the order the
 * Python test printed them, without the commands.  A small script per file
 * (written from the test's source: which VM answered, to which command)
 * gives every logged line to a fake QEMU per VM; Drover then issues the
 * matching commands through its typed calls, receives the MIGRATION events
 * (with the placeholder "SECS"/"USECS" timestamps, which must be tolerated)
 * and reads query-migrate and query-status as QEMU's test did.
 *
 * Script op "VM:what": caps (migrate-set-capabilities events), snap
 * (blockdev-snapshot), bdadd (blockdev-add), migrate, events=s1,s2,...
 * (MIGRATION events up to completed, with the expected statuses), qm
 * (query-migrate; the .out logs only the status), qs (query-status).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "qmptest.h"

#define MAX_VMS 4
#define MAX_OPS 32

typedef struct Vm {
        char name[8];
        FakeQemu *fake;
        const char *path;
        EvRec rec;
        QmpMonitor *m;
        int events_seen;
} Vm;

typedef struct Op {
        Vm *vm;
        char what[16];
        char statuses[128]; /* events=... */
        int first, count;   /* lines consumed */
} Op;

typedef struct Replay {
        char *lines[128];
        int n_lines;
        Vm vms[MAX_VMS];
        int n_vms;
        Op ops[MAX_OPS];
        int n_ops;
} Replay;

static const char *const script_234[] = {
        "A:caps", "B:caps", "A:snap", "B:snap", "A:migrate",
        "A:events=setup,active,completed", "B:events=active,completed",
        "A:qm", "B:qm", "A:qs", "B:qs", "B:bdadd",
        /* A restarted with -incoming: a new QEMU, a new monitor */
        "A2:caps", "A2:snap", "B:migrate",
        "B:events=setup,active,completed", "A2:events=active,completed",
        "A2:qm", "B:qm", "A2:qs", "B:qs", NULL,
};

static const char *const script_262[] = {
        "B:caps", "A:caps", "A:migrate",
        "A:events=setup,active,completed", "B:events=active,completed",
        "A:qm", "B:qm", "A:qs", "B:qs", NULL,
};

static bool is_data_line(const char *l) {
        return l[0] == '{' || strcmp(l, "completed") == 0;
}

static Vm *vm_get(Replay *rp, const char *name) {
        for (int i = 0; i < rp->n_vms; i++)
                if (strcmp(rp->vms[i].name, name) == 0)
                        return &rp->vms[i];
        assert_true(rp->n_vms < MAX_VMS);
        Vm *vm = &rp->vms[rp->n_vms++];
        snprintf(vm->name, sizeof(vm->name), "%s", name);
        vm->fake = qt_fake(&vm->path);
        evrec_init(&vm->rec);
        fake_expect(vm->fake, "qmp_capabilities", NULL);
        fake_reply(vm->fake, "{\"return\": {}}");
        return vm;
}

static const char *uri_for(const Vm *vm) {
        static char buf[64];
        snprintf(buf, sizeof(buf), "exec:cat >/tmp/mig_fifo_%s", vm->name);
        return buf;
}

/* Pass 1: give each logged line to the fake of the VM that produced it. */
static void build(Replay *rp, const char *file, const char *const *script) {
        char *text = qt_data(file), *save = NULL;
        int next = 0;

        memset(rp, 0, sizeof(*rp));
        for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                if (is_data_line(l))
                        rp->lines[rp->n_lines++] = strdup(l);
        free(text);

        for (int i = 0; script[i]; i++) {
                Op *op = &rp->ops[rp->n_ops++];
                char vmname[8];
                const char *colon = strchr(script[i], ':');
                snprintf(vmname, sizeof(vmname), "%.*s", (int) (colon - script[i]), script[i]);
                op->vm = vm_get(rp, vmname);
                snprintf(op->what, sizeof(op->what), "%.*s", (int) strcspn(colon + 1, "="), colon + 1);
                if (strchr(colon, '='))
                        snprintf(op->statuses, sizeof(op->statuses), "%s", strchr(colon, '=') + 1);
                op->first = next;
                FakeQemu *f = op->vm->fake;

                if (strcmp(op->what, "events") == 0) {
                        fake_gate(f); /* sent when the replay reaches this point */
                        for (;;) {
                                char line[512];
                                assert_true(next < rp->n_lines);
                                assert_non_null(strstr(rp->lines[next], "\"event\""));
                                snprintf(line, sizeof(line), "%s\r\n", rp->lines[next]);
                                fake_send(f, line, 0, false);
                                if (strstr(rp->lines[next++], "\"completed\""))
                                        break;
                        }
                } else if (strcmp(op->what, "qm") == 0) {
                        char reply[128];
                        assert_true(next < rp->n_lines && rp->lines[next][0] != '{');
                        snprintf(reply, sizeof(reply), "{\"return\": {\"status\": \"%s\"}}", rp->lines[next++]);
                        fake_expect(f, "query-migrate", NULL);
                        fake_reply(f, reply);
                } else {
                        assert_true(next < rp->n_lines && strncmp(rp->lines[next], "{\"return\"", 9) == 0);
                        if (strcmp(op->what, "caps") == 0)
                                fake_expect(f, "migrate-set-capabilities",
                                            "{\"capabilities\": [{\"capability\": \"events\", \"state\": true}]}");
                        else if (strcmp(op->what, "snap") == 0)
                                fake_expect(f, "blockdev-snapshot",
                                            "{\"node\": \"drive0-backing\", \"overlay\": \"drive0\"}");
                        else if (strcmp(op->what, "bdadd") == 0)
                                fake_expect(f, "blockdev-add",
                                            "{\"driver\": \"raw\", \"file\": \"drive0-file\", \"node-name\": \"drive0-raw\"}");
                        else if (strcmp(op->what, "migrate") == 0) {
                                char args[128];
                                snprintf(args, sizeof(args), "{\"uri\": \"%s\"}", uri_for(op->vm));
                                fake_expect(f, "migrate", args);
                        } else if (strcmp(op->what, "qs") == 0)
                                fake_expect(f, "query-status", NULL);
                        else
                                fail_msg("unknown op %s", script[i]);
                        fake_reply(f, rp->lines[next++]);
                }
                op->count = next - op->first;
        }
        /* every logged reply and event belongs to a step */
        assert_int_equal(next, rp->n_lines);
}

/* Pass 2: Drover drives the VMs in the logged order. */
static void run(Replay *rp, int *n_events) {
        for (int i = 0; i < rp->n_vms; i++) {
                fake_start(rp->vms[i].fake);
                rp->vms[i].m = qt_connect(rp->vms[i].path, &rp->vms[i].rec);
        }
        for (int i = 0; i < rp->n_ops; i++) {
                Op *op = &rp->ops[i];
                Vm *vm = op->vm;
                const char *line = rp->lines[op->first];
                if (strcmp(op->what, "caps") == 0) {
                        assert_int_equal(qmp_migrate_set_capabilities(vm->m, 2000,
                                                                      MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS), true), 0);
                } else if (strcmp(op->what, "snap") == 0) {
                        assert_int_equal(qmp_call(vm->m, "blockdev-snapshot",
                                                  "{\"node\": \"drive0-backing\", \"overlay\": \"drive0\"}", 2000, NULL), 0);
                } else if (strcmp(op->what, "bdadd") == 0) {
                        assert_int_equal(qmp_call(vm->m, "blockdev-add",
                                                  "{\"driver\": \"raw\", \"file\": \"drive0-file\", \"node-name\": \"drive0-raw\"}",
                                                  2000, NULL), 0);
                } else if (strcmp(op->what, "migrate") == 0) {
                        assert_int_equal(qmp_migrate(vm->m, 2000, uri_for(vm), false), 0);
                } else if (strcmp(op->what, "events") == 0) {
                        char want[128], *save = NULL;
                        int k = vm->events_seen;
                        fake_open_gate(vm->fake);
                        assert_true(evrec_wait(&vm->rec, vm->events_seen + op->count, 3000));
                        snprintf(want, sizeof(want), "%s", op->statuses);
                        for (char *s = strtok_r(want, ",", &save); s; s = strtok_r(NULL, ",", &save), k++) {
                                const QmpEvent *ev = &vm->rec.ev[k];
                                assert_int_equal(ev->type, QMP_EVENT_MIGRATION);
                                assert_int_equal(ev->migration_status, migration_status_from_string(s));
                                assert_int_not_equal(ev->migration_status, MIGRATION_STATUS_UNKNOWN);
                                assert_int_equal(ev->qemu_timestamp_us, 0); /* "SECS"/"USECS" */
                        }
                        assert_int_equal(k, vm->events_seen + op->count);
                        vm->events_seen = k;
                        *n_events += op->count;
                } else if (strcmp(op->what, "qm") == 0) {
                        MigrationStats ms;
                        assert_int_equal(qmp_query_migrate(vm->m, 2000, &ms), 0);
                        assert_int_equal(ms.status, migration_status_from_string(line));
                        assert_int_equal(ms.status, MIGRATION_STATUS_COMPLETED);
                } else if (strcmp(op->what, "qs") == 0) {
                        QmpStatus st;
                        json_object *o = json_tokener_parse(line), *ret, *v;
                        assert_int_equal(qmp_query_status(vm->m, 2000, &st), 0);
                        json_object_object_get_ex(o, "return", &ret);
                        json_object_object_get_ex(ret, "running", &v);
                        assert_int_equal(st.running, json_object_get_boolean(v));
                        json_object_object_get_ex(ret, "status", &v);
                        assert_int_equal(st.status, run_state_from_string(json_object_get_string(v)));
                        /* QEMU's own expectation: source postmigrate, destination running */
                        assert_true(st.status == (st.running ? RUN_STATE_RUNNING : RUN_STATE_POSTMIGRATE));
                        json_object_put(o);
                }
        }
}

static void finish(Replay *rp, const char *label) {
        for (int i = 0; i < rp->n_vms; i++) {
                Vm *vm = &rp->vms[i];
                assert_int_equal(fake_finish(vm->fake, 3000, label), 0);
                assert_int_equal(evrec_count(&vm->rec), vm->events_seen);
                assert_int_equal(vm->rec.eof_calls, 0);
                qmp_monitor_close(vm->m);
                fake_free(vm->fake);
                evrec_destroy(&vm->rec);
        }
        for (int i = 0; i < rp->n_lines; i++)
                free(rp->lines[i]);
}

static void test_iotest_234(void **state) {
        Replay rp;
        int n_events = 0;
        (void) state;
        build(&rp, "iotest-234.out", script_234);
        assert_int_equal(rp.n_vms, 3);
        run(&rp, &n_events);
        assert_int_equal(n_events, 10);
        finish(&rp, "234");
}

static void test_iotest_262(void **state) {
        Replay rp;
        int n_events = 0;
        (void) state;
        build(&rp, "iotest-262.out", script_262);
        run(&rp, &n_events);
        assert_int_equal(n_events, 5);
        finish(&rp, "262");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_iotest_234),
                cmocka_unit_test(test_iotest_262),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
