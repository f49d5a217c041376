/* Unit tests for the job engine under real threads (core/job.c, core/vm.c).
 *
 * No QEMU here: VMs are marked running by hand, and the one test that needs
 * a monitor talks to a FAKE QEMU (a socket that greets, negotiates, and then
 * never answers) because real QEMU cannot be made to hang on cue.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "err.h"
#include "job.h"
#include "qmp.h"
#include "status.h"
#include "testutil.h"
#include "vm.h"

static Vm *new_running_vm(const char *name, const char *status_dir) {
        Vm *vm;
        char uuid[VM_UUID_LEN];
        vm_uuid_generate(uuid);
        assert_int_equal(vm_new(name, uuid, status_dir, NULL, &vm), 0);
        vm_lock(vm);
        vm_set_state_locked(vm, VM_STATE_RUNNING, VM_REASON_BOOTED);
        vm_unlock(vm);
        return vm;
}

/* A thread that takes a job, holds it for hold_ms, and records timings. */
typedef struct Holder {
        Vm *vm;
        int kind; /* 0 normal, 1 async, 2 agent */
        int type;
        const char *op;
        int64_t timeout_ms;
        int hold_ms;
        int result;
        uint64_t got_ns, released_ns;
        char error[512];
        pthread_t thread;
} Holder;

static void *holder_main(void *arg) {
        Holder *h = arg;
        vm_lock(h->vm);
        if (h->kind == 0)
                h->result = job_begin(h->vm, (JobType) h->type, h->op, "holder", h->timeout_ms);
        else if (h->kind == 1)
                h->result = job_begin_async(h->vm, (AsyncJobType) h->type, h->op, h->timeout_ms);
        else
                h->result = job_begin_ga(h->vm, (GaJobType) h->type, h->op, "holder", h->timeout_ms);
        h->got_ns = now_ns();
        if (h->result < 0) {
                snprintf(h->error, sizeof(h->error), "%s", err_msg());
                vm_unlock(h->vm);
                return NULL;
        }
        vm_unlock(h->vm);
        sleep_ms(h->hold_ms); /* holding the job, not the VM lock */
        vm_lock(h->vm);
        h->released_ns = now_ns();
        if (h->kind == 0)
                job_end(h->vm);
        else if (h->kind == 1)
                job_end_async(h->vm);
        else
                job_end_ga(h->vm);
        vm_unlock(h->vm);
        return NULL;
}

static void holder_start(Holder *h) {
        pthread_create(&h->thread, NULL, holder_main, h);
}

static void holder_join(Holder *h) {
        pthread_join(h->thread, NULL);
}

static void wait_until_held(Vm *vm, int kind) {
        for (int i = 0; i < 1000; i++) {
                VmSnapshot s;
                vm_snapshot(vm, &s);
                if ((kind == 0 && s.job != JOB_NONE) || (kind == 1 && s.async_job != ASYNC_JOB_NONE) ||
                    (kind == 2 && s.ga_job != GA_JOB_NONE))
                        return;
                sleep_ms(1);
        }
        fail_msg("job never taken");
}

static void test_queries_served_during_async_job(void **state) {
        Vm *vm = new_running_vm("q1", NULL);
        Holder mig = { .vm = vm, .kind = 1, .type = ASYNC_JOB_MIGRATION_OUT, .op = "mig-1",
                       .timeout_ms = 1000, .hold_ms = 400 };
        holder_start(&mig);
        wait_until_held(vm, 1);

        /* Snapshots need no job at all and return at once. */
        uint64_t worst = 0;
        for (int i = 0; i < 200; i++) {
                VmSnapshot s;
                uint64_t t0 = now_ns();
                vm_snapshot(vm, &s);
                worst = MAX(worst, now_ns() - t0);
                assert_int_equal(s.async_job, ASYNC_JOB_MIGRATION_OUT);
                assert_string_equal(s.async_owner, "mig-1");
        }
        assert_true(worst < 5 * NSEC_PER_MSEC);

        /* A QUERY job is admitted by the outgoing mask while the async job runs. */
        vm_lock(vm);
        uint64_t t0 = now_ns();
        assert_int_equal(job_begin(vm, JOB_QUERY, "reader", "query-migrate", 1000), 0);
        assert_true(now_ns() - t0 < 50 * NSEC_PER_MSEC);
        job_end(vm);
        vm_unlock(vm);

        holder_join(&mig);
        assert_int_equal(mig.result, 0);
        vm_unref(vm);
}

static void test_masks_admit_and_refuse(void **state) {
        Vm *vm = new_running_vm("m1", NULL);

        /* Incoming migration: SUSPEND and MODIFY refused, DESTROY and QUERY admitted. */
        vm_lock(vm);
        assert_int_equal(job_begin_async(vm, ASYNC_JOB_MIGRATION_IN, "in-op", 100), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PREPARE), 0);

        uint64_t t0 = now_ns();
        int r = job_begin(vm, JOB_SUSPEND, "user-op", "suspend", 150);
        uint64_t waited = now_ns() - t0;
        assert_int_equal(r, -ETIMEDOUT);
        assert_true(waited >= 150 * NSEC_PER_MSEC && waited < 1500 * NSEC_PER_MSEC);
        /* the error names the holder, its phase and how long */
        assert_non_null(strstr(err_msg(), "migration-in"));
        assert_non_null(strstr(err_msg(), "in-op"));
        assert_non_null(strstr(err_msg(), "prepare"));
        assert_non_null(strstr(err_msg(), "suspend"));
        assert_non_null(strstr(err_msg(), " s"));

        assert_int_equal(job_begin(vm, JOB_MODIFY, "user-op", "modify", 50), -ETIMEDOUT);
        assert_int_equal(job_begin(vm, JOB_MIGRATION_OP, "user-op", "set-speed", 50), -ETIMEDOUT);
        assert_int_equal(job_begin(vm, JOB_QUERY, "user-op", "query", 50), 0);
        job_end(vm);
        assert_int_equal(job_begin(vm, JOB_DESTROY, "user-op", "destroy", 50), 0);
        job_end(vm);
        /* even a mask that names nothing keeps DESTROY */
        job_set_mask(vm, 0);
        assert_int_equal(job_begin(vm, JOB_QUERY, "user-op", "query", 30), -ETIMEDOUT);
        assert_int_equal(job_begin(vm, JOB_DESTROY, "user-op", "destroy", 50), 0);
        job_end(vm);
        job_end_async(vm);

        /* Outgoing migration: SUSPEND and MIGRATION_OP admitted, MODIFY refused. */
        assert_int_equal(job_begin_async(vm, ASYNC_JOB_MIGRATION_OUT, "out-op", 100), 0);
        assert_int_equal(job_begin(vm, JOB_SUSPEND, "user-op", "suspend", 50), 0);
        job_end(vm);
        assert_int_equal(job_begin(vm, JOB_MIGRATION_OP, "user-op", "set-speed", 50), 0);
        job_end(vm);
        assert_int_equal(job_begin(vm, JOB_ABORT, "user-op", "abort", 50), 0);
        job_end(vm);
        assert_int_equal(job_begin(vm, JOB_MODIFY, "user-op", "modify", 50), -ETIMEDOUT);
        /* a second async job waits for the first, then times out naming it */
        assert_int_equal(job_begin_async(vm, ASYNC_JOB_START, "other", 50), -ETIMEDOUT);
        assert_non_null(strstr(err_msg(), "migration-out"));
        job_end_async(vm);

        /* With no async job, everything is admitted. */
        assert_int_equal(job_begin(vm, JOB_MODIFY, "user-op", "modify", 50), 0);
        job_end(vm);
        vm_unlock(vm);
        vm_unref(vm);
}

static void test_mask_refusal_ends_when_async_ends(void **state) {
        Vm *vm = new_running_vm("m2", NULL);
        Holder mig = { .vm = vm, .kind = 1, .type = ASYNC_JOB_MIGRATION_IN, .op = "in",
                       .timeout_ms = 1000, .hold_ms = 150 };
        holder_start(&mig);
        wait_until_held(vm, 1);
        vm_lock(vm);
        assert_int_equal(job_begin(vm, JOB_MODIFY, "user", "modify", 3000), 0);
        uint64_t got = now_ns();
        job_end(vm);
        vm_unlock(vm);
        holder_join(&mig);
        /* admitted right after the async job ended, not before */
        assert_true(got >= mig.released_ns);
        assert_true(got - mig.released_ns < 200 * NSEC_PER_MSEC);
        vm_unref(vm);
}

static void test_nested_jobs_queue(void **state) {
        Vm *vm = new_running_vm("n1", NULL);

        vm_lock(vm);
        assert_int_equal(job_begin_async(vm, ASYNC_JOB_MIGRATION_OUT, "mig", 100), 0);
        vm_unlock(vm);

        /* Another operation holds a QUERY job (allowed by the mask)... */
        Holder q = { .vm = vm, .kind = 0, .type = JOB_QUERY, .op = "reader", .timeout_ms = 1000,
                     .hold_ms = 200 };
        holder_start(&q);
        wait_until_held(vm, 0);

        /* ...so the async owner's nested job queues behind it. */
        vm_lock(vm);
        assert_int_equal(job_begin_nested(vm, ASYNC_JOB_MIGRATION_OUT, "mig", "query-migrate", 2000), 0);
        uint64_t got = now_ns();
        VmSnapshot s;
        vm_unlock(vm);
        vm_snapshot(vm, &s);
        assert_int_equal(s.job, JOB_NESTED);
        holder_join(&q);
        assert_true(got >= q.released_ns);

        /* While the nested job runs, a QUERY waits for the slot. */
        vm_lock(vm);
        assert_int_equal(job_begin(vm, JOB_QUERY, "reader2", "q", 50), -ETIMEDOUT);
        assert_non_null(strstr(err_msg(), "nested"));
        job_end(vm);

        /* A nested job for an op that does not own the async job is refused. */
        assert_int_equal(job_begin_nested(vm, ASYNC_JOB_MIGRATION_OUT, "intruder", "x", 50), -EPERM);
        assert_int_equal(job_begin_nested(vm, ASYNC_JOB_MIGRATION_IN, "mig", "x", 50), -EPERM);
        /* Nested jobs skip the mask: set an empty mask, the owner still gets in. */
        job_set_mask(vm, 0);
        assert_int_equal(job_begin_nested(vm, ASYNC_JOB_MIGRATION_OUT, "mig", "cont", 50), 0);
        job_end(vm);
        job_end_async(vm);
        vm_unlock(vm);
        vm_unref(vm);
}

static void test_agent_and_normal_never_combined(void **state) {
        Vm *vm = new_running_vm("a1", NULL);

        vm_lock(vm);
        assert_int_equal(job_begin(vm, JOB_MODIFY, "op-a", "set-time", 50), 0);
        assert_int_equal(job_begin_ga(vm, GA_JOB_MODIFY, "op-a", "guest-set-time", 50), -EDEADLK);
        job_end(vm);
        assert_int_equal(job_begin_ga(vm, GA_JOB_QUERY, "op-a", "guest-ping", 50), 0);
        assert_int_equal(job_begin(vm, JOB_QUERY, "op-a", "q", 50), -EDEADLK);
        job_end_ga(vm);
        vm_unlock(vm);

        /* A hung guest-agent call (a guest-agent job held for long) never blocks
         * management: another op takes MODIFY and DESTROY jobs meanwhile. */
        Holder hung = { .vm = vm, .kind = 2, .type = GA_JOB_QUERY, .op = "guest-call",
                        .timeout_ms = 1000, .hold_ms = 500 };
        holder_start(&hung);
        wait_until_held(vm, 2);
        vm_lock(vm);
        uint64_t t0 = now_ns();
        assert_int_equal(job_begin(vm, JOB_MODIFY, "mgmt", "suspend", 100), 0);
        assert_true(now_ns() - t0 < 50 * NSEC_PER_MSEC);
        job_end(vm);
        /* a second guest-agent job waits for the first and names it on timeout */
        assert_int_equal(job_begin_ga(vm, GA_JOB_QUERY, "other", "guest-info", 50), -ETIMEDOUT);
        assert_non_null(strstr(err_msg(), "guest-agent job 'query' (op guest-call"));
        vm_unlock(vm);
        holder_join(&hung);
        vm_unref(vm);
}

static void test_wait_timeout_names_holder(void **state) {
        Vm *vm = new_running_vm("t1", NULL);
        Holder h = { .vm = vm, .kind = 0, .type = JOB_MODIFY, .op = "op-slow", .timeout_ms = 1000,
                     .hold_ms = 700 };
        holder_start(&h);
        wait_until_held(vm, 0);
        sleep_ms(300);
        vm_lock(vm);
        uint64_t t0 = now_ns();
        int r = job_begin(vm, JOB_QUERY, "op-fast", "query-status", 100);
        uint64_t waited = now_ns() - t0;
        vm_unlock(vm);
        assert_int_equal(r, -ETIMEDOUT);
        assert_true(waited >= 100 * NSEC_PER_MSEC && waited < 1000 * NSEC_PER_MSEC);
        const char *m = err_msg();
        assert_non_null(strstr(m, "VM 't1'"));
        assert_non_null(strstr(m, "op op-fast"));
        assert_non_null(strstr(m, "held by job 'modify' (op op-slow, 'holder') for 0.")); /* ~0.4 s */
        holder_join(&h);

        /* Default timeout is used for a negative timeout and is settable. */
        job_set_default_timeout(120);
        Holder h2 = { .vm = vm, .kind = 0, .type = JOB_MODIFY, .op = "op-slow", .timeout_ms = 1000,
                      .hold_ms = 400 };
        holder_start(&h2);
        wait_until_held(vm, 0);
        vm_lock(vm);
        t0 = now_ns();
        assert_int_equal(job_begin(vm, JOB_QUERY, "x", "q", -1), -ETIMEDOUT);
        waited = now_ns() - t0;
        vm_unlock(vm);
        assert_true(waited >= 120 * NSEC_PER_MSEC && waited < 390 * NSEC_PER_MSEC);
        holder_join(&h2);
        job_set_default_timeout(JOB_DEFAULT_TIMEOUT_MS);
        assert_int_equal(job_default_timeout(), JOB_DEFAULT_TIMEOUT_MS);
        vm_unref(vm);
}

enum { EXCL_THREADS = 8, EXCL_ROUNDS = 200 };
static atomic_int excl_inside, excl_max_inside;
typedef struct ExclArg {
        Vm *vm;
        int id;
} ExclArg;

static void *excl_worker(void *p) {
        ExclArg *a = p;
        char op[16];
        snprintf(op, sizeof(op), "w%d", a->id);
        for (int i = 0; i < EXCL_ROUNDS; i++) {
                vm_lock(a->vm);
                int r = job_begin(a->vm, JOB_MODIFY, op, "m", 10000);
                vm_unlock(a->vm);
                if (r < 0)
                        continue;
                int now = atomic_fetch_add(&excl_inside, 1) + 1;
                int cur = atomic_load(&excl_max_inside);
                while (now > cur && !atomic_compare_exchange_weak(&excl_max_inside, &cur, now))
                        ;
                atomic_fetch_sub(&excl_inside, 1);
                vm_lock(a->vm);
                job_end(a->vm);
                vm_unlock(a->vm);
        }
        return NULL;
}

static void test_normal_jobs_are_exclusive(void **state) {
        /* N threads each take MODIFY, count who is inside, release. */
        Vm *vm = new_running_vm("x1", NULL);
        pthread_t t[EXCL_THREADS];
        ExclArg args[EXCL_THREADS];
        atomic_store(&excl_inside, 0);
        atomic_store(&excl_max_inside, 0);
        for (int i = 0; i < EXCL_THREADS; i++) {
                args[i] = (ExclArg){ vm, i };
                pthread_create(&t[i], NULL, excl_worker, &args[i]);
        }
        for (int i = 0; i < EXCL_THREADS; i++)
                pthread_join(t[i], NULL);
        assert_int_equal(atomic_load(&excl_max_inside), 1);
        vm_unref(vm);
}

static void test_queue_bound(void **state) {
        Vm *vm = new_running_vm("b1", NULL);
        vm_lock(vm);
        assert_int_equal(job_begin(vm, JOB_MODIFY, "holder", "m", 50), 0);
        vm->job.queued = JOB_MAX_QUEUED; /* pretend the queue is full */
        assert_int_equal(job_begin(vm, JOB_QUERY, "late", "q", 50), -EAGAIN);
        assert_non_null(strstr(err_msg(), "already wait"));
        assert_int_equal(job_begin_ga(vm, GA_JOB_QUERY, "late", "q", 50), -EAGAIN);
        /* DESTROY is exempt from the bound (it still waits for the slot) */
        assert_int_equal(job_begin(vm, JOB_DESTROY, "destroyer", "destroy", 30), -ETIMEDOUT);
        vm->job.queued = 0;
        job_end(vm);
        vm_unlock(vm);
        vm_unref(vm);
}

static void test_phases_persisted_and_ordered(void **state) {
        const char *dir = tu_tmpdir("job-phase");
        Vm *vm = new_running_vm("p1", dir);
        VmStatusRecord rec;

        vm_lock(vm);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_BEGIN), -EINVAL); /* no async job */
        assert_int_equal(job_begin_async(vm, ASYNC_JOB_MIGRATION_OUT, "op-77", 50), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PREPARE), -EINVAL); /* a destination phase */
        assert_int_equal(job_set_phase(vm, JOB_PHASE_BEGIN), 0);
        vm_unlock(vm);
        /* written before job_set_phase returned */
        assert_int_equal(status_read(tu_path(dir, "p1.json"), &rec), 0);
        assert_int_equal(rec.async_job, ASYNC_JOB_MIGRATION_OUT);
        assert_int_equal(rec.phase, JOB_PHASE_BEGIN);
        assert_string_equal(rec.op_id, "op-77");
        status_record_clear(&rec);

        vm_lock(vm);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PERFORM), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PERFORM), 0); /* idempotent */
        assert_int_equal(job_set_phase(vm, JOB_PHASE_BEGIN), -EINVAL); /* backwards */
        assert_non_null(strstr(err_msg(), "cannot go from phase 'perform' to 'begin'"));
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PERFORM_DONE), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_CONFIRM), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_CONFIRM_CANCELLED), -EINVAL);
        vm_unlock(vm);
        assert_int_equal(status_read(tu_path(dir, "p1.json"), &rec), 0);
        assert_int_equal(rec.phase, JOB_PHASE_CONFIRM);
        status_record_clear(&rec);

        vm_lock(vm);
        job_end_async(vm);
        vm_unlock(vm);
        assert_int_equal(status_read(tu_path(dir, "p1.json"), &rec), 0);
        assert_int_equal(rec.async_job, ASYNC_JOB_NONE);
        status_record_clear(&rec);

        /* A failed write is reported, and the phase goes back in memory too:
         * memory never runs ahead of the file.  A directory where the file
         * should be makes the rename fail even for root. */
        vm_lock(vm);
        assert_int_equal(job_begin_async(vm, ASYNC_JOB_MIGRATION_OUT, "op-78", 50), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PERFORM), 0);
        vm_unlock(vm);
        assert_int_equal(unlink(tu_path(dir, "p1.json")), 0);
        assert_int_equal(mkdir(tu_path(dir, "p1.json"), 0700), 0);
        assert_int_equal(mkdir(tu_path(dir, "p1.json/x"), 0700), 0);
        vm_lock(vm);
        int r = job_set_phase(vm, JOB_PHASE_PERFORM_DONE);
        assert_true(r < 0);
        assert_non_null(strstr(err_msg(), "phase 'perform_done' could not be persisted, still 'perform'"));
        assert_int_equal(vm->job.phase, JOB_PHASE_PERFORM);
        vm_unlock(vm);
        assert_int_equal(rmdir(tu_path(dir, "p1.json/x")), 0);
        assert_int_equal(rmdir(tu_path(dir, "p1.json")), 0);
        vm_lock(vm);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PERFORM_DONE), 0); /* retried once the disk is back */
        job_end_async(vm);
        vm_unlock(vm);

        /* post-copy failure can be recovered into the resume phases */
        vm_lock(vm);
        assert_int_equal(job_restore_async(vm, ASYNC_JOB_MIGRATION_OUT, "op-79", JOB_PHASE_POSTCOPY_FAILED), 0);
        assert_int_equal(job_restore_async(vm, ASYNC_JOB_MIGRATION_OUT, "op-80", JOB_PHASE_BEGIN), -EBUSY);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PERFORM), 0);
        job_end_async(vm);
        assert_int_equal(job_restore_async(vm, ASYNC_JOB_START, "op-81", JOB_PHASE_FINISH), -EINVAL);

        /* post-copy recovery: paused, recover and failed follow each
         * other in any order (a failed attempt, a give-up, an operator's
         * retry) and end in confirm; never back to a pre-copy phase; a
         * restart restores each of them */
        assert_int_equal(job_restore_async(vm, ASYNC_JOB_MIGRATION_OUT, "op-82", JOB_PHASE_PERFORM_DONE), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_POSTCOPY_PAUSED), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_POSTCOPY_RECOVER), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_POSTCOPY_PAUSED), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_POSTCOPY_FAILED), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_POSTCOPY_PAUSED), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_PERFORM_DONE), -EINVAL);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_CONFIRM), 0);
        job_end_async(vm);
        assert_int_equal(job_restore_async(vm, ASYNC_JOB_MIGRATION_IN, "op-83", JOB_PHASE_POSTCOPY_RECOVER), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_FINISH), 0);
        job_end_async(vm);
        assert_int_equal(job_restore_async(vm, ASYNC_JOB_MIGRATION_IN, "op-84", JOB_PHASE_FINISH), 0);
        assert_int_equal(job_set_phase(vm, JOB_PHASE_POSTCOPY_PAUSED), 0);
        job_end_async(vm);
        vm_unlock(vm);
        vm_unref(vm);
}

static void test_removed_vm_fails_waiters(void **state) {
        Vm *vm = new_running_vm("r1", NULL);
        Holder h = { .vm = vm, .kind = 0, .type = JOB_MODIFY, .op = "holder", .timeout_ms = 1000,
                     .hold_ms = 300 };
        Holder waiter = { .vm = vm, .kind = 0, .type = JOB_QUERY, .op = "waiter", .timeout_ms = 5000,
                          .hold_ms = 0 };
        holder_start(&h);
        wait_until_held(vm, 0);
        holder_start(&waiter);
        sleep_ms(50);
        vm_lock(vm);
        vm->removed = true; /* what vm_registry_remove does */
        cond_broadcast(&vm->job_cond);
        vm_unlock(vm);
        holder_join(&h);
        holder_join(&waiter);
        assert_int_equal(waiter.result, -ESRCH);
        vm_unref(vm);
}

/* --- destroy during a hung monitor command ------------------------------- */

typedef struct FakeHungQemu {
        int listen_fd;
        int conn_fd;
        pthread_t thread;
} FakeHungQemu;

/* FAKE QEMU: greets, accepts qmp_capabilities, then reads and never answers. */
static void *fake_hung_qemu(void *arg) {
        FakeHungQemu *f = arg;
        char buf[4096];
        f->conn_fd = accept(f->listen_fd, NULL, NULL);
        if (f->conn_fd < 0)
                return NULL;
        const char *greeting =
                "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "
                "\"package\": \"fake\"}, \"capabilities\": [\"oob\"]}}\r\n";
        if (write(f->conn_fd, greeting, strlen(greeting)) < 0)
                return NULL;
        ssize_t n = read(f->conn_fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return NULL;
        buf[n] = '\0';
        char reply[256];
        char *id = strstr(buf, "\"id\"");
        if (id) {
                char idval[64] = "";
                sscanf(id, "\"id\" : %63[^,}]", idval);
                if (!idval[0])
                        sscanf(id, "\"id\":%63[^,}]", idval);
                snprintf(reply, sizeof(reply), "{\"return\": {}, \"id\": %s}\r\n", idval);
        } else
                snprintf(reply, sizeof(reply), "{\"return\": {}}\r\n");
        if (write(f->conn_fd, reply, strlen(reply)) < 0)
                return NULL;
        while (read(f->conn_fd, buf, sizeof(buf)) > 0)
                ; /* swallow commands, never answer */
        return NULL;
}

typedef struct Caller {
        Vm *vm;
        int enter_result, call_result, exit_result;
        uint64_t returned_ns;
        pthread_t thread;
} Caller;

static void *call_hung(void *arg) {
        Caller *c = arg;
        QmpMonitor *mon;
        vm_lock(c->vm);
        assert_int_equal(job_begin(c->vm, JOB_QUERY, "stuck-op", "query-status", 1000), 0);
        c->enter_result = vm_enter_monitor(c->vm, &mon);
        if (c->enter_result == 0) {
                QmpStatus st;
                c->call_result = qmp_query_status(mon, 30000, &st);
                c->returned_ns = now_ns();
                c->exit_result = vm_exit_monitor(c->vm, mon);
        }
        job_end(c->vm);
        vm_unlock(c->vm);
        return NULL;
}

static void test_destroy_during_hung_monitor_command(void **state) {
        const char *dir = tu_tmpdir("job-destroy");
        const char *sock = tu_path(dir, "qmp.sock");
        FakeHungQemu f = { .conn_fd = -1 };
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Vm *vm = new_running_vm("d1", dir);
        QmpMonitor *mon;

        f.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
        assert_int_equal(bind(f.listen_fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(listen(f.listen_fd, 1), 0);
        pthread_create(&f.thread, NULL, fake_hung_qemu, &f);

        QmpCallbacks cb = { .event = vm_handle_qmp_event, .eof = vm_handle_qmp_eof, .opaque = vm };
        assert_int_equal(qmp_monitor_connect(sock, &cb, deadline_in_ms(5000), &mon), 0);
        vm_lock(vm);
        vm_attach_monitor_locked(vm, mon, 0);
        vm_unlock(vm);

        Caller c = { .vm = vm };
        pthread_create(&c.thread, NULL, call_hung, &c);
        sleep_ms(200); /* the caller is now stuck in query-status */

        uint64_t t0 = now_ns();
        int r = vm_destroy(vm, "destroyer", VM_REASON_DESTROYED, 5000);
        uint64_t took = now_ns() - t0;
        assert_int_equal(r, 0);
        pthread_join(c.thread, NULL);
        printf("# destroy with a hung monitor command returned in %.1f ms\n", (double) took / 1e6);
        assert_true(took < 1000 * NSEC_PER_MSEC);
        assert_int_equal(c.enter_result, 0);
        assert_true(c.call_result < 0);          /* aborted, not answered */
        assert_int_equal(c.exit_result, -ESRCH); /* and told the VM is gone */

        VmSnapshot s;
        vm_snapshot(vm, &s);
        assert_int_equal(s.state, VM_STATE_SHUTOFF);
        assert_int_equal(s.reason, VM_REASON_DESTROYED);
        assert_int_equal(s.job, JOB_NONE);
        VmStatusRecord rec;
        assert_int_equal(status_read(tu_path(dir, "d1.json"), &rec), 0);
        assert_int_equal(rec.state, VM_STATE_SHUTOFF);
        assert_int_equal(rec.reason, VM_REASON_DESTROYED);
        status_record_clear(&rec);

        vm_unref(vm);
        shutdown(f.listen_fd, SHUT_RDWR);
        if (f.conn_fd >= 0)
                shutdown(f.conn_fd, SHUT_RDWR);
        pthread_join(f.thread, NULL);
        close(f.listen_fd);
        if (f.conn_fd >= 0)
                close(f.conn_fd);
}

static void test_enter_monitor_requires_running_vm(void **state) {
        Vm *vm = new_running_vm("e1", NULL);
        QmpMonitor *mon;
        vm_lock(vm);
        assert_int_equal(job_begin(vm, JOB_QUERY, "op", "q", 50), 0);
        assert_int_equal(vm_enter_monitor(vm, &mon), -ESRCH); /* no monitor attached */
        assert_true(lock_held(&vm->lock));                   /* lock kept on failure */
        job_end(vm);
        vm_mark_shutoff_locked(vm, VM_REASON_CRASHED);
        assert_int_equal(vm_enter_monitor_async(vm, ASYNC_JOB_MIGRATION_OUT, "op", "x", &mon), -EPERM);
        vm_unlock(vm);
        vm_unref(vm);
}

static void test_lock_statistics_recorded(void **state) {
        Vm *vm = new_running_vm("s1", NULL);
        lock_stats_reset();
        for (int i = 0; i < 100; i++) {
                VmSnapshot s;
                vm_snapshot(vm, &s);
        }
        LockStats all[64], vmst = { 0 };
        size_t n = lock_stats_snapshot(all, 64);
        bool found = false;
        for (size_t i = 0; i < n && i < 64; i++)
                if (strcmp(all[i].name, "vm") == 0) {
                        vmst = all[i];
                        found = true;
                }
        assert_true(found);
        assert_true(vmst.count >= 100);
        assert_true(vmst.max_ns < 10 * NSEC_PER_MSEC);
        vm_unref(vm);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_queries_served_during_async_job),
                cmocka_unit_test(test_masks_admit_and_refuse),
                cmocka_unit_test(test_mask_refusal_ends_when_async_ends),
                cmocka_unit_test(test_nested_jobs_queue),
                cmocka_unit_test(test_agent_and_normal_never_combined),
                cmocka_unit_test(test_wait_timeout_names_holder),
                cmocka_unit_test(test_normal_jobs_are_exclusive),
                cmocka_unit_test(test_queue_bound),
                cmocka_unit_test(test_phases_persisted_and_ordered),
                cmocka_unit_test(test_removed_vm_fails_waiters),
                cmocka_unit_test(test_enter_monitor_requires_running_vm),
                cmocka_unit_test(test_destroy_during_hung_monitor_command),
                cmocka_unit_test(test_lock_statistics_recorded),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
