/* Live migration between agents (see agent-migrate.h, docs/migration.md).
 *
 * Source: agent_migrate() takes the MIGRATION_OUT async job and persists
 * `begin` in the caller's thread, then a migration thread runs prepare,
 * perform (with the convergence policy), perform_done, finish and confirm.
 * Destination: the prepare/finish/cancel RPCs act under a MIGRATION_IN job
 * owned by the operation id; a watchdog thread per incoming migration asks
 * the source about an operation that went quiet.
 *
 * Every failure is settled by recovery_decide() and apply_decision(), which
 * restart recovery uses too.  The VM lock is held only for field access;
 * QMP runs in NESTED jobs of the async job; peer RPCs run with no lock held.
 */
#define _GNU_SOURCE
#include "agent-migrate.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent-peer.h"
#include "err.h"
#include "log.h"
#include "qmp.h"
#include "status.h"

#define MIG_PORT_MIN 49152
#define MIG_PORT_MAX 49215
#define MIG_TABLE_KEEP 256
#define MIG_SUBSCRIBERS 64
#define PEER_CALL_MS 10000
#define POLL_MS 250

/* ---- the migration table ---------------------------------------------------------- */

typedef struct Migration {
        struct Migration *next; /* lock: table->lock */
        MigResult r;            /* lock: table->lock */
        uint64_t started_ns;    /* immutable */
} Migration;

typedef struct Sub {
        void (*wake)(void *); /* lock: table->lock */
        void *opaque;
} Sub;

/* table->lock protects the list, every record in it and the subscribers. */
struct MigrationTable {
        Lock lock;
        Cond changed;          /* any record changed (waiters for done) */
        Migration *list;       /* lock: table->lock; newest first */
        size_t n;              /* lock: table->lock */
        uint64_t gen;          /* lock: table->lock */
        Sub subs[MIG_SUBSCRIBERS];
};

static LockClass table_lock_class = LOCK_CLASS_INIT("migrations");

int migration_table_new(MigrationTable **ret) {
        MigrationTable *t = calloc(1, sizeof(*t));
        if (!t)
                return err_set(-ENOMEM, "out of memory");
        lock_init(&t->lock, &table_lock_class);
        cond_init(&t->changed);
        *ret = t;
        return 0;
}

void migration_table_free(MigrationTable *t) {
        if (!t)
                return;
        for (Migration *m = t->list, *next; m; m = next) {
                next = m->next;
                free(m);
        }
        cond_destroy(&t->changed);
        lock_destroy(&t->lock);
        free(t);
}

static void changed_locked(MigrationTable *t, Migration *m) {
        m->r.generation = ++t->gen;
        m->r.elapsed_ms = (now_ns() - m->started_ns) / NSEC_PER_MSEC;
        cond_broadcast(&t->changed);
        for (size_t i = 0; i < MIG_SUBSCRIBERS; i++)
                if (t->subs[i].wake)
                        t->subs[i].wake(t->subs[i].opaque);
}

static Migration *table_add(MigrationTable *t, const char *op, const char *guest, bool outgoing) {
        Migration *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        snprintf(m->r.op, sizeof(m->r.op), "%s", op);
        snprintf(m->r.guest, sizeof(m->r.guest), "%s", guest);
        m->r.outgoing = outgoing;
        m->started_ns = now_ns();
        lock_acquire(&t->lock);
        m->next = t->list;
        t->list = m;
        t->n++;
        /* forget the oldest finished records past the bound */
        if (t->n > MIG_TABLE_KEEP) {
                Migration **pp = &t->list;
                size_t i = 0;
                while (*pp) {
                        if (++i > MIG_TABLE_KEEP && (*pp)->r.done) {
                                Migration *dead = *pp;
                                *pp = dead->next;
                                free(dead);
                                t->n--;
                        } else
                                pp = &(*pp)->next;
                }
        }
        changed_locked(t, m);
        lock_release(&t->lock);
        return m;
}

static void m_event(MigrationTable *t, Migration *m, const char *fmt, ...) _printf_(3, 4);
static void m_event(MigrationTable *t, Migration *m, const char *fmt, ...) {
        va_list ap;
        lock_acquire(&t->lock);
        va_start(ap, fmt);
        vsnprintf(m->r.last_event, sizeof(m->r.last_event), fmt, ap);
        va_end(ap);
        changed_locked(t, m);
        lock_release(&t->lock);
}

static void m_step(MigrationTable *t, Migration *m, const char *fmt, ...) _printf_(3, 4);
static void m_step(MigrationTable *t, Migration *m, const char *fmt, ...) {
        va_list ap;
        char buf[128];
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        lock_acquire(&t->lock);
        snprintf(m->r.last_event, sizeof(m->r.last_event), "policy: %s", buf);
        if (m->r.n_steps < MIG_MAX_STEPS)
                snprintf(m->r.steps[m->r.n_steps++], sizeof(m->r.steps[0]), "%s at %.1f s", buf,
                         (double) (now_ns() - m->started_ns) / 1e9);
        changed_locked(t, m);
        lock_release(&t->lock);
        log_info("migration %s of %s: policy step: %s", m->r.op, m->r.guest, buf);
}

static void m_phase(MigrationTable *t, Migration *m, JobPhase phase, const MigrationStats *st) {
        lock_acquire(&t->lock);
        if (m->r.phase != phase)
                snprintf(m->r.last_event, sizeof(m->r.last_event), "phase %s", job_phase_to_string(phase));
        else
                m->r.last_event[0] = '\0';
        m->r.phase = phase;
        if (st) {
                m->r.stats = *st;
                /* cumulative; a cancelled or failed reading has no RAM section */
                if (st->ram_transferred > m->r.transferred)
                        m->r.transferred = st->ram_transferred;
        }
        changed_locked(t, m);
        lock_release(&t->lock);
}

static void m_done(MigrationTable *t, Migration *m, int r, const char *error) {
        lock_acquire(&t->lock);
        m->r.done = true;
        m->r.success = r >= 0;
        snprintf(m->r.error, sizeof(m->r.error), "%s", r >= 0 ? "" : error);
        m->r.total_ms = (now_ns() - m->started_ns) / NSEC_PER_MSEC;
        snprintf(m->r.last_event, sizeof(m->r.last_event), "%s", r >= 0 ? "completed" : "failed");
        changed_locked(t, m);
        lock_release(&t->lock);
}

static void m_copy(MigrationTable *t, Migration *m, MigResult *ret) {
        lock_acquire(&t->lock);
        *ret = m->r;
        lock_release(&t->lock);
}

int agent_migration_get(Agent *a, const char *guest, MigResult *ret) {
        MigrationTable *t = a->migrations;
        int r = -ENOENT;
        lock_acquire(&t->lock);
        for (Migration *m = t->list; m; m = m->next)
                if (strcmp(m->r.guest, guest) == 0) {
                        *ret = m->r;
                        r = 0;
                        break;
                }
        lock_release(&t->lock);
        return r < 0 ? err_set(r, "no migration of guest '%s' is known to this agent", guest) : 0;
}

size_t agent_migrations_changed(Agent *a, uint64_t *gen, MigResult *out, size_t max) {
        MigrationTable *t = a->migrations;
        size_t n = 0;
        uint64_t newest = *gen;
        lock_acquire(&t->lock);
        for (Migration *m = t->list; m && n < max; m = m->next)
                if (m->r.generation > *gen) {
                        out[n++] = m->r;
                        newest = MAX(newest, m->r.generation);
                }
        lock_release(&t->lock);
        *gen = newest;
        return n;
}

int agent_migrations_subscribe(Agent *a, void (*wake)(void *), void *opaque) {
        MigrationTable *t = a->migrations;
        int id = -1;
        lock_acquire(&t->lock);
        for (int i = 0; i < MIG_SUBSCRIBERS; i++)
                if (!t->subs[i].wake) {
                        t->subs[i] = (Sub){ wake, opaque };
                        id = i;
                        break;
                }
        lock_release(&t->lock);
        return id < 0 ? err_set(-ENOSPC, "too many migration watchers") : id;
}

void agent_migrations_unsubscribe(Agent *a, int id) {
        MigrationTable *t = a->migrations;
        if (id < 0 || id >= MIG_SUBSCRIBERS)
                return;
        lock_acquire(&t->lock);
        t->subs[id] = (Sub){ 0 };
        lock_release(&t->lock);
}

/* ---- helpers ------------------------------------------------------------------------ */


static uint64_t mono_to_unix_ms(uint64_t mono_ns) {
        if (!mono_ns)
                return 0;
        uint64_t now_m = now_ns(), now_w = wall_ns();
        return (now_w - (now_m > mono_ns ? now_m - mono_ns : 0)) / NSEC_PER_MSEC;
}

static const char *advertised_address(Agent *a) {
        for (size_t i = 0; i < a->cfg.n_listen; i++)
                if (strncmp(a->cfg.listen[i], "unix:", 5) != 0)
                        return a->cfg.listen[i];
        return a->cfg.n_listen ? a->cfg.listen[0] : "";
}

static void host_of(const char *addr, char *ret, size_t size) {
        const char *colon = strrchr(addr, ':');
        if (addr[0] == '[') {
                const char *end = strchr(addr, ']');
                snprintf(ret, size, "%.*s", end ? (int) (end - addr - 1) : 0, addr + 1);
        } else
                snprintf(ret, size, "%.*s", colon ? (int) (colon - addr) : (int) strlen(addr), addr);
}

static Vm *find_by_uuid(Agent *a, const char *uuid) {
        return vm_registry_lookup_uuid(a->vms, uuid);
}

/* Remove the guest's record from this agent (source after confirm, or a
 * destination copy that never became the guest). */
static void forget_guest(Agent *a, Vm *vm, const char *why) {
        if (vm_registry_remove(a->vms, vm) >= 0) {
                (void) vm_remove_status(vm);
                log_info("guest %s: record removed (%s)", vm->name, why);
                agent_emit(a, vm, "undefined", "%s", why);
        }
}

/* ---- applying a recovery decision ------------------------------------------------- */

static int resume_source(Agent *a, Vm *vm, const char *op, const char *peer_addr) {
        MigrationStats st = { 0 };
        int r;

        vm_lock(vm);
        AsyncJobType t = ASYNC_JOB_MIGRATION_OUT;
        if (!job_async_owned_by(vm, t, op)) {
                vm_unlock(vm);
                return 0;
        }
        if (vm->job.phase != JOB_PHASE_CONFIRM_CANCELLED && vm->job.phase >= JOB_PHASE_PERFORM)
                (void) job_set_phase(vm, JOB_PHASE_CONFIRM_CANCELLED);
        r = VM_NESTED_CALL(vm, t, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
        if (r >= 0 && migration_status_is_active(st.status)) {
                (void) VM_NESTED_CALL(vm, t, op, "migrate_cancel", qmp_migrate_cancel(mon_, -1));
                Deadline d = deadline_in_ms(10000);
                while (!deadline_expired(d)) {
                        if (VM_NESTED_CALL(vm, t, op, "query-migrate", qmp_query_migrate(mon_, -1, &st)) < 0 ||
                            !migration_status_is_active(st.status))
                                break;
                        (void) vm_wait_locked(vm, deadline_in_ms(100));
                }
        }
        if (vm->mig.has_orig_params) {
                MigrationParams orig = vm->mig.orig_params;
                orig.has_tls_creds = orig.has_tls_hostname = false;
                (void) VM_NESTED_CALL(vm, t, op, "migrate-set-parameters", qmp_migrate_set_parameters(mon_, -1, &orig));
        }
        QmpStatus qs;
        r = VM_NESTED_CALL(vm, t, op, "query-status", qmp_query_status(mon_, -1, &qs));
        if (r >= 0 && !qs.running)
                r = VM_NESTED_CALL(vm, t, op, "cont", qmp_cont(mon_, -1));
        if (r >= 0)
                vm_set_state_locked(vm, VM_STATE_RUNNING, VM_REASON_MIGRATION_CANCELED);
        if (job_async_owned_by(vm, t, op))
                job_end_async(vm);
        vm_unlock(vm);
        if (peer_addr && peer_addr[0]) {
                AgentPeer *p;
                if (agent_peer_open(a, peer_addr, &p) >= 0) {
                        if (agent_peer_cancel(p, op, vm->uuid, PEER_CALL_MS) < 0)
                                log_warning("guest %s: telling %s to drop its copy failed: %s (its watchdog will)",
                                            vm->name, peer_addr, err_msg());
                        agent_peer_close(p);
                }
        }
        if (r >= 0)
                agent_emit(a, vm, "resumed", "migration %s cancelled, source resumed", op);
        return r;
}

static int kill_source(Agent *a, Vm *vm, const char *op) {
        QmpMonitor *dead = NULL;
        vm_lock(vm);
        if (vm->job.phase != JOB_PHASE_CONFIRM) {
                (void) job_set_phase(vm, JOB_PHASE_CONFIRM);
                vm_unlock(vm);
                agent_test_hold(JOB_PHASE_CONFIRM, vm->name);
                vm_lock(vm);
        }
        if (vm_is_active_locked(vm)) {
                (void) VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "quit", qmp_quit(mon_, 2000));
                Deadline d = deadline_in_ms(3000);
                while (vm_is_active_locked(vm) && !deadline_expired(d))
                        (void) vm_wait_locked(vm, d);
        }
        vm_unlock(vm);
        /* a QEMU that ignored quit is killed: the guest lives on the peer */
        (void) vm_destroy(vm, op, VM_REASON_MIGRATED, 5000);
        vm_lock(vm);
        vm->reason = VM_REASON_MIGRATED;
        if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_OUT, op))
                job_end_async(vm);
        dead = vm_detach_monitor_locked(vm);
        vm_unlock(vm);
        qmp_monitor_close(dead);
        agent_emit(a, vm, "migrated", "op %s: the guest runs on the destination", op);
        forget_guest(a, vm, "migrated away");
        return 0;
}

static int kill_dest(Agent *a, Vm *vm, const char *op, const char *why) {
        (void) vm_destroy(vm, op, VM_REASON_MIGRATION_CANCELED, 5000);
        vm_lock(vm);
        vm_set_error_locked(vm, "incoming migration %s dropped: %s", op, why);
        bool created = vm->mig.created_by_prepare;
        if (vm->job.async == ASYNC_JOB_MIGRATION_IN && job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op))
                job_end_async(vm);
        vm_unlock(vm);
        agent_emit(a, vm, "stopped", "incoming migration %s dropped: %s", op, why);
        if (created)
                forget_guest(a, vm, "incoming migration dropped");
        return 0;
}

static int finish_dest_locked(Agent *a, Vm *vm, const char *op) {
        int r = 0;
        if (vm->job.phase != JOB_PHASE_FINISH && vm->job.phase != JOB_PHASE_POSTCOPY_FAILED)
                if ((r = job_set_phase(vm, JOB_PHASE_FINISH)) < 0)
                        return r;
        QmpStatus qs;
        r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-status", qmp_query_status(mon_, -1, &qs));
        if (r >= 0 && !qs.running)
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "cont", qmp_cont(mon_, a->cfg.qmp_timeout_ms));
        if (r >= 0)
                vm_set_state_locked(vm, VM_STATE_RUNNING, VM_REASON_MIGRATED);
        return r;
}

static int keep_dest(Agent *a, Vm *vm, const char *op) {
        vm_lock(vm);
        if (!job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op)) {
                vm_unlock(vm); /* finished meanwhile by the source's MigrateFinish */
                return 0;
        }
        int r = finish_dest_locked(a, vm, op);
        if (r >= 0) {
                vm->mig.created_by_prepare = false; /* the guest lives here now */
                job_end_async(vm);
        }
        vm_unlock(vm);
        if (r >= 0)
                agent_emit(a, vm, "resumed", "op %s: the guest runs here", op);
        return r;
}

/* Apply @d for @vm whose async migration job is owned by @op.  Returns 1
 * when resolved, 0 when it must be retried later, -errno on error. */
static int apply_decision(Agent *a, Vm *vm, const char *op, const char *peer_addr, RecoveryDecision d) {
        log_info("guest %s, migration %s: %s (%s)", vm->name, op, recovery_action_to_string(d.action), d.reason);
        switch (d.action) {
        case RECOVER_NONE:
                vm_lock(vm);
                if (vm->job.async != ASYNC_JOB_NONE)
                        job_end_async(vm);
                vm_unlock(vm);
                return 1;
        case RECOVER_RESUME_SOURCE:
                return resume_source(a, vm, op, peer_addr) < 0 ? -EIO : 1;
        case RECOVER_KILL_SOURCE:
                return kill_source(a, vm, op) < 0 ? -EIO : 1;
        case RECOVER_FINISH_PEER: {
                AgentPeer *p;
                uint64_t resume;
                bool synced;
                if (agent_peer_open(a, peer_addr, &p) < 0)
                        return 0;
                int r = agent_peer_finish(p, op, vm->uuid, false, 0, 30000, &resume, &synced);
                agent_peer_close(p);
                if (r < 0)
                        return 0; /* ask again */
                return kill_source(a, vm, op) < 0 ? -EIO : 1;
        }
        case RECOVER_KILL_DEST:
                return kill_dest(a, vm, op, d.reason) < 0 ? -EIO : 1;
        case RECOVER_FINISH_DEST:
        case RECOVER_KEEP_DEST:
                return keep_dest(a, vm, op) < 0 ? -EIO : 1;
        case RECOVER_KILL_GONE: {
                vm_lock(vm);
                bool created = vm->mig.created_by_prepare && vm->job.async == ASYNC_JOB_MIGRATION_IN;
                if (vm->state != VM_STATE_SHUTOFF)
                        vm_mark_shutoff_locked(vm, VM_REASON_CRASHED);
                vm_set_error_locked(vm, "QEMU died during migration %s", op);
                if (vm->job.async != ASYNC_JOB_NONE)
                        job_end_async(vm);
                vm_unlock(vm);
                if (created)
                        forget_guest(a, vm, "incoming QEMU died");
                return 1;
        }
        case RECOVER_POSTCOPY_FAILED:
                vm_lock(vm);
                if (vm->job.async != ASYNC_JOB_NONE && vm->job.phase != JOB_PHASE_POSTCOPY_FAILED)
                        (void) job_set_phase(vm, JOB_PHASE_POSTCOPY_FAILED);
                vm_set_state_locked(vm, vm->state, VM_REASON_POSTCOPY_FAILED);
                vm_unlock(vm);
                return 0;
        case RECOVER_WAIT_POSTCOPY:
        case RECOVER_KEEP_PAUSED:
        case RECOVER_ASK_PEER:
        default:
                return 0;
        }
}

/* Gather the local facts for @vm (its async job owned by op). */
static void local_facts(Vm *vm, const char *op, RecoveryInput *in) {
        MigrationStats st = { 0 };
        QmpStatus qs = { 0 };
        vm_lock(vm);
        in->dir = vm->job.async == ASYNC_JOB_MIGRATION_IN ? MIG_DIR_IN : MIG_DIR_OUT;
        in->phase = vm->job.phase;
        in->postcopy_started = vm->mig.postcopy_started;
        in->qemu_alive = vm_is_active_locked(vm) && vm->mon && !qmp_monitor_is_dead(vm->mon);
        in->peer = PEER_NOT_ASKED;
        if (in->qemu_alive) {
                AsyncJobType t = vm->job.async;
                int r1 = VM_NESTED_CALL(vm, t, op, "query-status", qmp_query_status(mon_, -1, &qs));
                int r2 = VM_NESTED_CALL(vm, t, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
                if (r1 < 0 && r2 < 0 && (r1 == -ESRCH || r1 == -ECONNRESET))
                        in->qemu_alive = false;
        }
        in->vcpus_running = qs.running;
        in->mig_status = st.status;
        vm_unlock(vm);
}

/* Decide (asking the peer when the table says so) and apply.  Several
 * paths may try to settle one guest (the migration thread, the recovery
 * thread, a peer's RPC): whoever finds the job already ended is done. */
static int settle(Agent *a, Vm *vm, const char *op, const char *peer_addr) {
        RecoveryInput in;
        vm_lock(vm);
        bool owned = job_async_owned_by(vm, ASYNC_JOB_NONE, op) &&
                     (vm->job.async == ASYNC_JOB_MIGRATION_IN || vm->job.async == ASYNC_JOB_MIGRATION_OUT);
        vm_unlock(vm);
        if (!owned)
                return 1;
        local_facts(vm, op, &in);
        RecoveryDecision d = recovery_decide(&in);
        if (d.action == RECOVER_ASK_PEER) {
                AgentPeer *p;
                in.peer = PEER_UNREACHABLE;
                if (peer_addr && peer_addr[0] && agent_peer_open(a, peer_addr, &p) >= 0) {
                        in.peer = agent_peer_owner(p, op, vm->uuid, 5000);
                        agent_peer_close(p);
                }
                log_info("guest %s, migration %s: peer %s says %s", vm->name, op, peer_addr,
                         peer_answer_to_string(in.peer));
                d = recovery_decide(&in);
        }
        return apply_decision(a, vm, op, peer_addr, d);
}

/* ---- owner query (both sides) --------------------------------------------------------- */

PeerAnswer agent_migration_owner(Agent *a, const char *op, const char *uuid, char *detail, size_t size,
                                 JobPhase *ret_phase) {
        Vm *vm = find_by_uuid(a, uuid);
        PeerAnswer ans = PEER_GONE;
        *ret_phase = JOB_PHASE_NONE;
        if (!vm) {
                snprintf(detail, size, "no guest %s here", uuid);
                return PEER_GONE;
        }
        vm_lock(vm);
        bool mine = job_async_owned_by(vm, ASYNC_JOB_NONE, op);
        bool same_op = mine || strcmp(vm->mig.op, op) == 0;
        bool alive = vm_is_active_locked(vm);
        *ret_phase = mine ? vm->job.phase : JOB_PHASE_NONE;
        if (!alive || !same_op)
                ans = alive && vm->state == VM_STATE_RUNNING ? PEER_RUNNING : PEER_GONE;
        else if (vm->mig.postcopy_started && mine)
                ans = PEER_POSTCOPY;
        else if (vm->state == VM_STATE_RUNNING)
                ans = PEER_RUNNING;
        else if (mine && vm->job.async == ASYNC_JOB_MIGRATION_IN)
                ans = (vm->mig_event == MIGRATION_STATUS_COMPLETED ||
                       vm->mig_stats.status == MIGRATION_STATUS_COMPLETED) ? PEER_PAUSED_COMPLETE : PEER_GONE;
        else if (mine && vm->job.async == ASYNC_JOB_MIGRATION_OUT)
                ans = PEER_PAUSED;
        else
                ans = PEER_GONE;
        if (mine && vm->job.async == ASYNC_JOB_MIGRATION_IN && ans == PEER_GONE) {
                /* the event may not have arrived: ask QEMU */
                MigrationStats st;
                if (VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, &st)) >= 0) {
                        if (st.status == MIGRATION_STATUS_COMPLETED)
                                ans = PEER_PAUSED_COMPLETE;
                        else if (alive && st.status != MIGRATION_STATUS_FAILED &&
                                 st.status != MIGRATION_STATUS_CANCELLED)
                                /* Still receiving (or waiting for) the stream: a
                                 * live, paused copy for this operation, not
                                 * "gone".  The source's liveness check reads
                                 * this as alive; in perform_done the table
                                 * answers paused with "keep paused, ask again"
                                 * until the stream completes here. */
                                ans = PEER_PAUSED;
                }
        }
        snprintf(detail, size, "guest %s is %s here (%s)", vm->name, vm_state_to_string(vm->state),
                 mine ? async_job_to_string(vm->job.async) : "no migration job");
        vm_unlock(vm);
        vm_unref(vm);
        return ans;
}

/* ---- destination ------------------------------------------------------------------------ */

/* Incoming operations driven by this process right now: from the start of
 * MigratePrepare until their watchdog ends (lock: watch_lock).  The
 * recovery thread leaves them alone: only jobs nobody drives (restored at
 * restart) are its business. */
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
#define MIG_INCOMING_MAX 256
static char watched[MIG_INCOMING_MAX][OP_ID_MAX];

/* Returns false when @on and every slot is taken. */
static bool watch_set(const char *op, bool on) {
        bool done = !on;
        pthread_mutex_lock(&watch_lock);
        for (int i = 0; i < MIG_INCOMING_MAX; i++) {
                if (on && !watched[i][0]) {
                        snprintf(watched[i], OP_ID_MAX, "%s", op);
                        done = true;
                        break;
                }
                if (!on && strcmp(watched[i], op) == 0) {
                        watched[i][0] = '\0';
                        break;
                }
        }
        pthread_mutex_unlock(&watch_lock);
        return done;
}

static bool incoming_watched(Agent *a, const char *op) {
        bool found = false;
        (void) a;
        pthread_mutex_lock(&watch_lock);
        for (int i = 0; i < MIG_INCOMING_MAX && !found; i++)
                found = watched[i][0] && strcmp(watched[i], op) == 0;
        pthread_mutex_unlock(&watch_lock);
        return found;
}

typedef struct Watchdog {
        Agent *a;
        Vm *vm;
        char op[OP_ID_MAX];
        char source[256];
        uint64_t quiet_after_ms;
} Watchdog;

/* While an incoming migration waits for finish, check that QEMU lives and,
 * when it stays quiet too long, ask the source whether it still wants us. */
static void *incoming_watchdog(void *arg) {
        Watchdog *w = arg;
        Agent *agent = w->a;
        uint64_t t0 = now_ns();
        while (!atomic_load(&w->a->stopping)) {
                sleep_ms(1000);
                vm_lock(w->vm);
                bool still = job_async_owned_by(w->vm, ASYNC_JOB_MIGRATION_IN, w->op) && !w->vm->removed;
                bool alive = vm_is_active_locked(w->vm);
                JobPhase ph = w->vm->job.phase;
                vm_unlock(w->vm);
                if (!still)
                        break;
                if (!alive) {
                        (void) settle(w->a, w->vm, w->op, w->source);
                        break;
                }
                if (ph == JOB_PHASE_PREPARE && (now_ns() - t0) / NSEC_PER_MSEC > w->quiet_after_ms) {
                        AgentPeer *p;
                        PeerAnswer ans = PEER_UNREACHABLE;
                        if (agent_peer_open(w->a, w->source, &p) >= 0) {
                                ans = agent_peer_owner(p, w->op, w->vm->uuid, 5000);
                                agent_peer_close(p);
                        }
                        /* the source resumed, or holds nothing for this op: drop our copy */
                        if (ans == PEER_RUNNING || ans == PEER_GONE) {
                                kill_dest(w->a, w->vm, w->op, "the source no longer migrates this guest");
                                break;
                        }
                }
        }
        watch_set(w->op, false);
        vm_unref(w->vm);
        free(w);
        atomic_fetch_sub(&agent->background, 1);
        return NULL;
}

static int pick_port_and_listen(Agent *a, Vm *vm, const char *op, const char *host, char *ret_uri, size_t size) {
        static atomic_uint next = 0;
        int r = -EADDRINUSE;
        for (int i = 0; i <= MIG_PORT_MAX - MIG_PORT_MIN; i++) {
                int port = MIG_PORT_MIN + (int) ((atomic_fetch_add(&next, 1)) % (MIG_PORT_MAX - MIG_PORT_MIN + 1));
                char uri[sizeof(vm->mig.uri)];
                if (strchr(host, ':'))
                        snprintf(uri, sizeof(uri), "tcp:[%s]:%d", host, port);
                else
                        snprintf(uri, sizeof(uri), "tcp:%s:%d", host, port);
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-incoming", qmp_migrate_incoming(mon_, -1, uri));
                if (r >= 0) {
                        snprintf(ret_uri, size, "%s", uri);
                        snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", uri);
                        return 0;
                }
                if (!strstr(err_msg(), "in use") && !strstr(err_msg(), "Failed to bind"))
                        return r;
        }
        return err_set(r, "no free migration port in %d-%d on %s", MIG_PORT_MIN, MIG_PORT_MAX, host);
}

int agent_migrate_prepare(Agent *a, const char *op, const char *definition_json, const MigParams *p,
                          const char *stream_host, const char *source_addr, char *ret_uri, size_t uri_size) {
        GuestDef def;
        Vm *vm;
        bool created = false;
        int r;

        if ((r = guest_def_parse(definition_json, strlen(definition_json), &def)) < 0)
                return r;
        if (!stream_host || !stream_host[0])
                return err_set(-EINVAL, "prepare: 'stream_host' is required");
        vm = find_by_uuid(a, def.uuid);
        if (vm) {
                vm_lock(vm);
                /* idempotent: the same op asks again */
                if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) && vm->mig.uri[0]) {
                        snprintf(ret_uri, uri_size, "%s", vm->mig.uri);
                        vm_unlock(vm);
                        vm_unref(vm);
                        return 0;
                }
                vm_unlock(vm);
                if (incoming_watched(a, op)) {
                        vm_unref(vm);
                        return err_set(-EBUSY, "prepare of migration %s is already running", op);
                }
                vm_lock(vm);
                bool busy = vm->state != VM_STATE_SHUTOFF && vm->state != VM_STATE_CRASHED;
                bool name_differs = strcmp(vm->name, def.name) != 0;
                vm_unlock(vm);
                if (busy || name_differs) {
                        r = err_set(busy ? -EBUSY : -EEXIST, "guest %s (%s) is %s on this host", vm->name, vm->uuid,
                                    busy ? "already running" : "defined under another name");
                        vm_unref(vm);
                        return r;
                }
        } else {
                if ((r = agent_vm_define(a, definition_json, strlen(definition_json), op, &vm)) < 0)
                        return err_prefix(r, "prepare of incoming guest %s", def.name);
                created = true;
        }

        AgentVm *av = vm->ops.opaque;
        if (!watch_set(op, true)) { /* driven by this handler, then by its watchdog */
                r = err_set(-EAGAIN, "this agent already receives %d migrations", MIG_INCOMING_MAX);
                if (created)
                        forget_guest(a, vm, "prepare refused");
                vm_unref(vm);
                return r;
        }
        vm_lock(vm);
        if ((r = job_begin_async(vm, ASYNC_JOB_MIGRATION_IN, op, -1)) < 0) {
                vm_unlock(vm);
                goto fail_undefine;
        }
        snprintf(vm->mig.op, sizeof(vm->mig.op), "%s", op);
        snprintf(vm->mig.peer, sizeof(vm->mig.peer), "%s", source_addr ? source_addr : "");
        vm->mig.created_by_prepare = created;
        av->def_skip_time_sync = p->skip_time_sync; /* read by finish */
        vm->mig.postcopy_started = false;
        vm->mig.resume_ns = 0;
        vm->mig_event = MIGRATION_STATUS_NONE;
        memset(&vm->mig_stats, 0, sizeof(vm->mig_stats));
        QmpMonitor *old = vm_detach_monitor_locked(vm);
        r = job_set_phase(vm, JOB_PHASE_PREPARE);
        vm_unlock(vm);
        qmp_monitor_close(old);
        if (r < 0)
                goto fail_job;
        agent_test_hold(JOB_PHASE_PREPARE, vm->name);

        /* No lock: host checks, taps, exec of QEMU with -incoming defer. */
        char **argv = NULL;
        pid_t pid = 0;
        if ((r = guest_def_check_host(&av->def)) < 0 ||
            (r = guest_build_argv(&av->def, &av->paths, a->cfg.qemu_binary, a->cfg.accel, true, &argv)) < 0)
                goto fail_job;
        r = agent_vm_spawn(a, vm, argv, -1, &pid);
        guest_argv_free(argv);
        if (r < 0)
                goto fail_job;

        vm_lock(vm);
        vm_set_state_locked(vm, VM_STATE_PAUSED, VM_REASON_MIGRATION);
        uint64_t caps = MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS);
        if (p->postcopy != POSTCOPY_POLICY_NEVER)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_POSTCOPY_RAM);
        if (p->multifd_channels > 1)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD);
        r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-set-capabilities",
                   qmp_migrate_set_capabilities(mon_, -1, caps, true));
        if (r >= 0 && p->multifd_channels > 1) {
                MigrationParams mp = { .has_multifd_channels = true, .multifd_channels = p->multifd_channels };
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-set-parameters",
                           qmp_migrate_set_parameters(mon_, -1, &mp));
        }
        if (r >= 0)
                r = pick_port_and_listen(a, vm, op, stream_host, ret_uri, uri_size);
        vm_unlock(vm);
        if (r < 0)
                goto fail_job;
        (void) vm_save_status(vm);
        agent_emit(a, vm, "migration", "incoming migration %s prepared on %s", op, ret_uri);

        Watchdog *w = calloc(1, sizeof(*w));
        if (!w)
                watch_set(op, false); /* recovery takes over */
        if (w) {
                pthread_t th;
                w->a = a;
                w->vm = vm_ref(vm);
                snprintf(w->op, sizeof(w->op), "%s", op);
                snprintf(w->source, sizeof(w->source), "%s", source_addr ? source_addr : "");
                w->quiet_after_ms = (uint64_t) p->completion_s_per_gib * 1000 *
                                            ((av->def.memory_mib + 1023) / 1024) + 30000;
                atomic_fetch_add(&a->background, 1);
                if (pthread_create(&th, NULL, incoming_watchdog, w) == 0)
                        pthread_detach(th);
                else {
                        atomic_fetch_sub(&a->background, 1);
                        watch_set(op, false); /* recovery takes over */
                        vm_unref(w->vm);
                        free(w);
                }
        }
        vm_unref(vm);
        return 0;

fail_job: {
        char why[ERR_MSG_MAX];
        snprintf(why, sizeof(why), "%s", err_str(r));
        (void) vm_destroy(vm, op, VM_REASON_FAILED, 5000);
        vm_lock(vm);
        if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op))
                job_end_async(vm);
        vm_unlock(vm);
        err_set(r, "%s", why);
        }
fail_undefine:
        watch_set(op, false);
        if (created) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                forget_guest(a, vm, "prepare failed");
                err_set(r, "%s", why);
        }
        vm_unref(vm);
        return r;
}

int agent_migrate_finish(Agent *a, const char *op, const char *uuid, bool postcopy,
                         uint64_t source_stop_unix_ms, uint64_t *ret_resume_unix_ms, bool *ret_synced) {
        MigrationStats st = { 0 };
        int r;
        _cleanup_(vm_unrefp) Vm *vm = find_by_uuid(a, uuid);
        if (!vm)
                return err_set(-ENOENT, "finish: no incoming guest %s here", uuid);
        AgentVm *av = vm->ops.opaque;
        *ret_synced = false;

        vm_lock(vm);
        if (!job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op)) {
                /* idempotent: a retry after a lost reply finds the guest running */
                bool done = strcmp(vm->mig.op, op) == 0 && vm->state == VM_STATE_RUNNING;
                *ret_resume_unix_ms = mono_to_unix_ms(vm->mig.resume_ns);
                vm_unlock(vm);
                return done ? 0 : err_set(-EINVAL, "finish: guest %s has no incoming migration %s", uuid, op);
        }
        if ((r = job_set_phase(vm, JOB_PHASE_FINISH)) < 0)
                goto out;
        vm_unlock(vm);
        agent_test_hold(JOB_PHASE_FINISH, vm->name);
        vm_lock(vm);
        if (postcopy)
                vm->mig.postcopy_started = true;
        Deadline d = deadline_in_ms(30000);
        for (;;) {
                uint64_t seen = vm->mig_events;
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
                if (r < 0)
                        goto out;
                if (st.status == MIGRATION_STATUS_COMPLETED ||
                    (postcopy && migration_status_is_postcopy(st.status)))
                        break;
                if (st.status == MIGRATION_STATUS_FAILED || st.status == MIGRATION_STATUS_CANCELLED ||
                    deadline_expired(d)) {
                        r = err_set(-EIO, "finish: the incoming stream is %s", migration_status_to_string(st.status));
                        goto out;
                }
                if (vm->mig_events == seen)
                        (void) vm_wait_locked(vm, deadline_in_ms(50));
        }
        vm_set_migration_stats_locked(vm, &st);
        if ((r = finish_dest_locked(a, vm, op)) < 0)
                goto out;
        vm->mig.resume_ns = vm->mig.resume_ns ? vm->mig.resume_ns : now_ns();
        *ret_resume_unix_ms = mono_to_unix_ms(vm->mig.resume_ns);
        vm->mig.created_by_prepare = false;
        /* In post-copy the destination keeps its job until the stream
         * completes (pages still arrive); the watchdog-free wait is the
         * source's business, the job ends at completion (below). */
        if (!postcopy)
                job_end_async(vm);
        bool want_sync = av->def.guest_agent && !av->def_skip_time_sync;
        vm_unlock(vm);
        if (postcopy) {
                /* wait for the last pages, then end the job */
                vm_lock(vm);
                Deadline pd = deadline_in_ms(600000);
                while (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) && !deadline_expired(pd)) {
                        if (VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, &st)) < 0 ||
                            st.status == MIGRATION_STATUS_COMPLETED || st.status == MIGRATION_STATUS_FAILED)
                                break;
                        (void) vm_wait_locked(vm, deadline_in_ms(200));
                }
                if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) && st.status == MIGRATION_STATUS_COMPLETED)
                        job_end_async(vm);
                vm_unlock(vm);
        }
        agent_emit(a, vm, "resumed", "incoming migration %s finished%s", op, postcopy ? " (post-copy)" : "");
        if (want_sync) {
                int64_t before, after;
                char sync_op[OP_ID_MAX + 8];
                snprintf(sync_op, sizeof(sync_op), "%.56s-time", op);
                *ret_synced = agent_vm_guest_set_time(a, vm, sync_op, 0, false, &before, &after) >= 0;
                if (!*ret_synced)
                        log_info("guest %s: time sync after migration failed (not fatal): %s", vm->name, err_msg());
        }
        (void) source_stop_unix_ms;
        return 0;
out:
        vm_unlock(vm);
        return r;
}

int agent_migrate_cancel(Agent *a, const char *op, const char *uuid) {
        _cleanup_(vm_unrefp) Vm *vm = find_by_uuid(a, uuid);
        if (!vm)
                return 0; /* nothing here: already gone */
        vm_lock(vm);
        bool mine = job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op);
        bool post = vm->mig.postcopy_started;
        bool running = vm->state == VM_STATE_RUNNING;
        vm_unlock(vm);
        if (!mine)
                return 0;
        if (post || running)
                return err_set(-EBUSY, "incoming guest %s already runs here (op %s): it cannot be dropped", vm->name, op);
        return kill_dest(a, vm, op, "cancelled by the source");
}

/* ---- source --------------------------------------------------------------------------- */

typedef struct Source {
        Agent *a;
        Vm *vm;
        Migration *m;
        char op[OP_ID_MAX];
        char dest[256];
        char stream_host[128];
        MigParams p;
        char *definition;
        uint64_t mem_mib;
        bool waiter;
} Source;

static int set_params(Vm *vm, const char *op, const MigrationParams *mp) {
        return VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate-set-parameters",
                      qmp_migrate_set_parameters(mon_, -1, mp));
}

static int start_postcopy_locked(Source *s, const char *why) {
        int r = VM_NESTED_CALL(s->vm, ASYNC_JOB_MIGRATION_OUT, s->op, "migrate-start-postcopy",
                       qmp_migrate_start_postcopy(mon_, -1));
        if (r >= 0) {
                s->vm->mig.postcopy_started = true;
                vm_unlock(s->vm);
                (void) vm_save_status(s->vm);
                m_step(s->a->migrations, s->m, "post-copy (%s)", why);
                vm_lock(s->vm);
        }
        return r;
}

/* Stream until completed (0), post-copy active (1), or failure (-errno). */
static int perform(Source *s) {
        Vm *vm = s->vm;
        const char *op = s->op;
        MigrationStats st = { 0 };
        int r;

        vm_lock(vm);
        uint64_t caps = MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS);
        if (s->p.postcopy != POSTCOPY_POLICY_NEVER)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_POSTCOPY_RAM);
        if (s->p.multifd_channels > 1)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD);
        if (s->p.auto_converge)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE);
        r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate-set-capabilities",
                   qmp_migrate_set_capabilities(mon_, -1, caps, true));
        if (r >= 0) {
                /* Bandwidth 0 = unlimited: the link decides.  Auto-converge
                 * starts held at 1 % so that it is a later policy step. */
                MigrationParams mp = {
                        .has_max_bandwidth = true,
                        .max_bandwidth = s->p.bandwidth ? s->p.bandwidth : UINT64_C(107374182400),
                        .has_downtime_limit = true,
                        .downtime_limit = s->p.downtime_ms,
                };
                if (s->p.auto_converge) {
                        mp.has_cpu_throttle_initial = mp.has_cpu_throttle_increment = true;
                        mp.has_max_cpu_throttle = true;
                        mp.cpu_throttle_initial = mp.cpu_throttle_increment = mp.max_cpu_throttle = 1;
                }
                r = set_params(vm, op, &mp);
        }
        if (r >= 0 && s->p.multifd_channels > 1) {
                MigrationParams mp = { .has_multifd_channels = true, .multifd_channels = s->p.multifd_channels };
                r = set_params(vm, op, &mp);
        }
        if (r >= 0)
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate", qmp_migrate(mon_, -1, vm->mig.uri, false));
        if (r < 0) {
                vm_unlock(vm);
                return r;
        }

        uint64_t t0 = now_ns(), last_low_ns = t0, last_step_ns = t0;
        uint64_t min_remaining = UINT64_MAX, iter_at_low = 0;
        uint32_t downtime = s->p.downtime_ms;
        bool ac_on = false;
        uint64_t completion_ms = (uint64_t) s->p.completion_s_per_gib * 1000 * ((s->mem_mib + 1023) / 1024);
        uint64_t peer_check_ns = t0, peer_down_since = 0;
        AgentPeer *peer = NULL;
        (void) agent_peer_open(s->a, s->dest, &peer);

        for (;;) {
                uint64_t seen = vm->mig_events;
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
                if (r < 0)
                        break;
                bool repoll = false;
                if (st.status == MIGRATION_STATUS_COMPLETED && st.total_time_ms == 0) {
                        st.status = MIGRATION_STATUS_ACTIVE; /* QEMU 7.2 race: re-poll at once */
                        repoll = true;
                }
                vm_set_migration_stats_locked(vm, &st);
                vm_unlock(vm);
                m_phase(s->a->migrations, s->m, JOB_PHASE_PERFORM, &st);
                vm_lock(vm);
                uint64_t now = now_ns();
                double el = (double) (now - t0) / 1e9;

                if (st.status == MIGRATION_STATUS_COMPLETED) {
                        r = 0;
                        break;
                }
                if (st.status == MIGRATION_STATUS_POSTCOPY_ACTIVE) {
                        vm->mig.postcopy_started = true;
                        r = 1;
                        break;
                }
                /* before the status: MigrateAbort's own migrate_cancel shows
                 * up as "cancelled", which is not QEMU's failure */
                if (vm->job.abort_requested) {
                        r = err_set(-ECANCELED, "migration aborted on request");
                        break;
                }
                if (st.status == MIGRATION_STATUS_FAILED || st.status == MIGRATION_STATUS_CANCELLED) {
                        r = err_set(-EIO, "QEMU reports the migration %s: %s", migration_status_to_string(st.status),
                                    st.has_error_desc ? st.error_desc : "no reason given");
                        break;
                }
                if (st.status == MIGRATION_STATUS_ACTIVE && st.ram_remaining < min_remaining) {
                        if (min_remaining == UINT64_MAX || st.ram_remaining + (1u << 20) < min_remaining)
                                last_low_ns = now, iter_at_low = st.ram_dirty_sync_count;
                        min_remaining = st.ram_remaining;
                }
                bool stalled = st.ram_dirty_sync_count >= iter_at_low + 2 && now - last_step_ns > 2 * NSEC_PER_SEC;
                uint64_t quiet_ms = (now - last_low_ns) / NSEC_PER_MSEC;

                if (s->p.postcopy == POSTCOPY_POLICY_AFTER && el >= s->p.postcopy_after_s) {
                        if ((r = start_postcopy_locked(s, "after the configured pre-copy time")) < 0)
                                break;
                        continue;
                }
                if (stalled) {
                        last_step_ns = now;
                        iter_at_low = st.ram_dirty_sync_count;
                        if (downtime < s->p.max_downtime_ms) {
                                uint32_t next = MIN(downtime * 2, s->p.max_downtime_ms);
                                MigrationParams mp = { .has_downtime_limit = true, .downtime_limit = next };
                                if (set_params(vm, op, &mp) >= 0) {
                                        vm_unlock(vm);
                                        m_step(s->a->migrations, s->m, "downtime %u->%u ms (iteration %llu stalled)",
                                               downtime, next, (unsigned long long) st.ram_dirty_sync_count);
                                        vm_lock(vm);
                                        downtime = next;
                                }
                        } else if (s->p.auto_converge && !ac_on) {
                                MigrationParams mp = { .has_max_cpu_throttle = true, .max_cpu_throttle = 99,
                                                        .has_cpu_throttle_increment = true, .cpu_throttle_increment = 20 };
                                if (set_params(vm, op, &mp) >= 0) {
                                        ac_on = true;
                                        vm_unlock(vm);
                                        m_step(s->a->migrations, s->m, "auto-converge (throttle up to 99 %%, +20 %% per pass)");
                                        vm_lock(vm);
                                }
                        } else if (s->p.postcopy == POSTCOPY_POLICY_ALLOWED) {
                                if ((r = start_postcopy_locked(s, "pre-copy did not converge")) < 0)
                                        break;
                                continue;
                        } else if (quiet_ms > (uint64_t) s->p.progress_timeout_s * 1000 / 2) {
                                r = err_set(-ETIMEDOUT, "did not converge: every policy step used, remaining RAM made no new low for %.1f s",
                                            (double) quiet_ms / 1000);
                                break;
                        }
                }
                if (quiet_ms > (uint64_t) s->p.progress_timeout_s * 1000) {
                        r = err_set(-ETIMEDOUT, "no progress for %u s (remaining RAM made no new low): link cut or stalled",
                                    s->p.progress_timeout_s);
                        break;
                }
                if ((now - t0) / NSEC_PER_MSEC > completion_ms) {
                        if (s->p.postcopy != POSTCOPY_POLICY_NEVER) {
                                if ((r = start_postcopy_locked(s, "completion timeout")) < 0)
                                        break;
                                continue;
                        }
                        r = err_set(-ETIMEDOUT, "did not complete within %llu s (%u s per GiB)",
                                    (unsigned long long) completion_ms / 1000, s->p.completion_s_per_gib);
                        break;
                }
                /* peer liveness: a dead or cut-off destination shows here
                 * long before TCP gives up */
                if (peer && now - peer_check_ns > 2 * NSEC_PER_SEC) {
                        peer_check_ns = now;
                        vm_unlock(vm);
                        PeerAnswer ans = agent_peer_owner(peer, op, vm->uuid, 2000);
                        vm_lock(vm);
                        if (ans == PEER_UNREACHABLE) {
                                if (!peer_down_since)
                                        peer_down_since = now;
                        } else
                                peer_down_since = 0;
                        if (ans == PEER_GONE) {
                                r = err_set(-ECONNRESET, "the destination dropped its side of the migration");
                                break;
                        }
                        if (peer_down_since && quiet_ms > 5000 && now - peer_down_since > 5 * NSEC_PER_SEC) {
                                r = err_set(-EHOSTUNREACH, "destination agent unreachable for %.1f s and no progress for %.1f s",
                                            (double) (now - peer_down_since) / 1e9, (double) quiet_ms / 1000);
                                break;
                        }
                }
                if (vm->mig_events == seen)
                        (void) vm_wait_locked(vm, deadline_in_ms(repoll ? 5 : POLL_MS));
        }
        vm_unlock(vm);
        agent_peer_close(peer);
        return r;
}

static void finish_result(Source *s, const MigrationStats *st, uint64_t resume_unix_ms, bool synced, bool postcopy) {
        MigrationTable *t = s->a->migrations;
        vm_lock(s->vm);
        uint64_t stop = mono_to_unix_ms(s->vm->mig.stop_ns);
        vm_unlock(s->vm);
        lock_acquire(&t->lock);
        if (st)
                s->m->r.stats = *st;
        s->m->r.downtime_ms = s->m->r.stats.downtime_ms;
        s->m->r.transferred = s->m->r.stats.ram_transferred;
        s->m->r.measured_downtime_ms = stop && resume_unix_ms > stop ? resume_unix_ms - stop : 0;
        s->m->r.time_synced = synced;
        s->m->r.postcopy = postcopy;
        lock_release(&t->lock);
}

static void *source_thread(void *arg) {
        Source *s = arg;
        Agent *a = s->a;
        Vm *vm = s->vm;
        MigrationTable *t = a->migrations;
        MigrationStats st = { 0 };
        AgentPeer *peer = NULL;
        char uri[sizeof(vm->mig.uri)];
        int r;

        /* prepare (destination) */
        m_phase(t, s->m, JOB_PHASE_PREPARE, NULL);
        r = agent_peer_open(a, s->dest, &peer);
        if (r >= 0)
                r = agent_peer_prepare(peer, s->op, s->definition, &s->p, s->stream_host, advertised_address(a),
                                       60000, uri, sizeof(uri));
        if (r < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "prepare on %s failed: %s", s->dest, err_str(r));
                if (peer)
                        (void) agent_peer_cancel(peer, s->op, vm->uuid, 5000);
                vm_lock(vm);
                job_end_async(vm); /* phase begin: the guest never left */
                vm_set_error_locked(vm, "migration %s: %s", s->op, why);
                vm_unlock(vm);
                m_done(t, s->m, -EIO, why);
                goto out;
        }
        vm_lock(vm);
        snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", uri);
        r = job_set_phase(vm, JOB_PHASE_PERFORM);
        vm_unlock(vm);
        m_event(t, s->m, "destination prepared %s", uri);
        agent_test_hold(JOB_PHASE_PERFORM, vm->name);

        /* perform */
        int pr = r < 0 ? r : perform(s);
        if (pr < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(pr));
                log_warning("migration %s of %s failed in perform: %s", s->op, vm->name, why);
                int sr = settle(a, vm, s->op, s->dest); /* perform: resume the source, drop the destination */
                vm_lock(vm);
                vm_set_error_locked(vm, "migration %s failed: %s", s->op, why);
                vm_unlock(vm);
                m_done(t, s->m, -EIO, sr == 1 ? why : "failed, and the source could not be resumed yet");
                goto out;
        }
        bool postcopy = pr == 1;
        vm_lock(vm);
        st = vm->mig_stats;
        r = job_set_phase(vm, JOB_PHASE_PERFORM_DONE);
        vm_unlock(vm);
        m_phase(t, s->m, JOB_PHASE_PERFORM_DONE, &st);
        agent_test_hold(JOB_PHASE_PERFORM_DONE, vm->name);

        /* finish (destination): its vCPUs start */
        uint64_t resume_ms = 0;
        bool synced = false;
        m_phase(t, s->m, JOB_PHASE_FINISH, NULL);
        vm_lock(vm);
        uint64_t stop_ms = mono_to_unix_ms(vm->mig.stop_ns);
        vm_unlock(vm);
        r = agent_peer_finish(peer, s->op, vm->uuid, postcopy, stop_ms, 60000, &resume_ms, &synced);
        if (r < 0) {
                /* The reply may be lost after the destination started the
                 * guest: never resume blindly, ask (docs/recovery.md rule 2). */
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "finish on %s failed: %s", s->dest, err_str(r));
                log_warning("migration %s of %s: %s; asking the destination", s->op, vm->name, why);
                Deadline d = deadline_in_ms(60000);
                int sr = 0;
                while (sr == 0 && !deadline_expired(d)) {
                        sr = settle(a, vm, s->op, s->dest);
                        if (sr == 0)
                                sleep_ms(2000);
                }
                Vm *still_here = vm_registry_lookup_uuid(a->vms, vm->uuid);
                bool moved = sr == 1 && !still_here; /* the source killed its copy: the guest moved */
                vm_unref(still_here);
                m_done(t, s->m, moved ? 0 : -EIO,
                       sr == 1 ? why : "finish failed and the destination cannot be asked: the source stays paused, recovery keeps asking");
                goto out;
        }

        if (postcopy) {
                /* The destination runs; the source serves the last pages. */
                vm_lock(vm);
                Deadline d = deadline_in_ms(600000);
                for (;;) {
                        if (VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, s->op, "query-migrate", qmp_query_migrate(mon_, -1, &st)) < 0)
                                break;
                        vm_set_migration_stats_locked(vm, &st);
                        if (st.status == MIGRATION_STATUS_COMPLETED || st.status == MIGRATION_STATUS_FAILED ||
                            deadline_expired(d))
                                break;
                        vm_unlock(vm);
                        m_phase(t, s->m, JOB_PHASE_PERFORM_DONE, &st);
                        vm_lock(vm);
                        (void) vm_wait_locked(vm, deadline_in_ms(POLL_MS));
                }
                vm_unlock(vm);
                if (st.status != MIGRATION_STATUS_COMPLETED) {
                        RecoveryDecision d2 = { RECOVER_POSTCOPY_FAILED, "post-copy did not complete" };
                        (void) apply_decision(a, vm, s->op, s->dest, d2);
                        m_done(t, s->m, -EIO, "post-copy failed: both sides paused for recovery");
                        goto out;
                }
        }

        /* confirm */
        finish_result(s, &st, resume_ms, synced, postcopy);
        m_phase(t, s->m, JOB_PHASE_CONFIRM, &st);
        (void) kill_source(a, vm, s->op);
        m_done(t, s->m, 0, NULL);
        log_info("migration %s of %s completed", s->op, vm->name);

out:
        agent_peer_close(peer);
        free(s->definition);
        vm_unref(vm);
        free(s);
        atomic_fetch_sub(&a->background, 1);
        return NULL;
}

int agent_migrate(Agent *a, Vm *vm, const char *op, const char *dest_addr, const char *stream_host,
                  const MigParams *params, bool wait, MigResult *ret) {
        MigrationParams orig;
        MigParams p = *params;
        int r;

        mig_params_defaults(&p);
        if ((r = mig_params_validate(&p)) < 0)
                return r;
        if (!dest_addr || !dest_addr[0] || !strchr(dest_addr, ':'))
                return err_set(-EINVAL, "'destination' must be the destination agent's HOST:PORT");

        Source *s = calloc(1, sizeof(*s));
        if (!s)
                return err_set(-ENOMEM, "out of memory");
        s->a = a;
        s->p = p;
        snprintf(s->op, sizeof(s->op), "%s", op);
        snprintf(s->dest, sizeof(s->dest), "%s", dest_addr);
        if (stream_host && stream_host[0])
                snprintf(s->stream_host, sizeof(s->stream_host), "%s", stream_host);
        else
                host_of(dest_addr, s->stream_host, sizeof(s->stream_host));
        s->mem_mib = ((AgentVm *) vm->ops.opaque)->def.memory_mib;

        /* begin: checks, the async job, original parameters, persisted */
        vm_lock(vm);
        if ((r = job_begin_async(vm, ASYNC_JOB_MIGRATION_OUT, op, -1)) < 0) {
                vm_unlock(vm);
                free(s);
                return err_prefix(r, "cannot migrate %s", vm->name);
        }
        if (vm->state != VM_STATE_RUNNING) {
                r = err_set(-EBUSY, "guest %s is %s: only a running guest is live-migrated", vm->name,
                            vm_state_to_string(vm->state));
                job_end_async(vm);
                vm_unlock(vm);
                free(s);
                return r;
        }
        s->definition = strdup(vm->definition_json ? vm->definition_json : "{}");
        memset(&vm->mig, 0, sizeof(vm->mig));
        snprintf(vm->mig.op, sizeof(vm->mig.op), "%s", op);
        snprintf(vm->mig.peer, sizeof(vm->mig.peer), "%s", dest_addr);
        memset(&vm->mig_stats, 0, sizeof(vm->mig_stats));
        vm->mig_event = MIGRATION_STATUS_NONE;
        r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "query-migrate-parameters",
                   qmp_query_migrate_parameters(mon_, -1, &orig));
        if (r >= 0) {
                vm->mig.has_orig_params = true;
                vm->mig.orig_params = orig;
                r = job_set_phase(vm, JOB_PHASE_BEGIN);
        }
        if (r >= 0) {
                vm_unlock(vm);
                agent_test_hold(JOB_PHASE_BEGIN, vm->name);
                vm_lock(vm);
        }
        if (r < 0) {
                job_end_async(vm);
                vm_unlock(vm);
                free(s->definition);
                free(s);
                return r;
        }
        vm_unlock(vm);

        s->vm = vm_ref(vm);
        s->m = table_add(a->migrations, op, vm->name, true);
        if (!s->m || !s->definition) {
                vm_lock(vm);
                job_end_async(vm);
                vm_unlock(vm);
                vm_unref(vm);
                free(s->definition);
                free(s);
                return err_set(-ENOMEM, "out of memory");
        }
        Migration *m = s->m;
        m_phase(a->migrations, m, JOB_PHASE_BEGIN, NULL);
        agent_emit(a, vm, "migration", "outgoing migration %s to %s started", op, dest_addr);

        pthread_t th;
        atomic_fetch_add(&a->background, 1);
        if (pthread_create(&th, NULL, source_thread, s) != 0) {
                atomic_fetch_sub(&a->background, 1);
                vm_lock(vm);
                job_end_async(vm);
                vm_unlock(vm);
                m_done(a->migrations, m, -EAGAIN, "cannot start a migration thread");
                vm_unref(vm);
                free(s->definition);
                free(s);
                return err_set(-EAGAIN, "cannot start a migration thread");
        }
        pthread_detach(th);
        if (wait) {
                MigrationTable *t = a->migrations;
                lock_acquire(&t->lock);
                while (!m->r.done)
                        (void) cond_wait(&t->changed, &t->lock, deadline_in_ms(1000));
                lock_release(&t->lock);
        }
        m_copy(a->migrations, m, ret);
        return 0;
}

static int with_outgoing(Agent *a, Vm *vm, const char **ret_op, char buf[OP_ID_MAX]) {
        vm_lock(vm);
        bool out = vm->job.async == ASYNC_JOB_MIGRATION_OUT;
        snprintf(buf, OP_ID_MAX, "%s", vm->job.async_owner);
        vm_unlock(vm);
        (void) a;
        if (!out)
                return err_set(-ENOENT, "guest %s has no outgoing migration", vm->name);
        *ret_op = buf;
        return 0;
}

int agent_migrate_abort(Agent *a, Vm *vm, const char *op) {
        const char *mop;
        char buf[OP_ID_MAX];
        int r = with_outgoing(a, vm, &mop, buf);
        if (r < 0)
                return r;
        vm_lock(vm);
        if ((r = job_begin(vm, JOB_ABORT, op, "migrate-abort", -1)) < 0)
                goto out;
        if (vm->mig.postcopy_started) {
                r = err_set(-EBUSY, "migration of %s is in post-copy: it can only complete", vm->name);
        } else {
                job_request_abort(vm);
                QmpMonitor *mon;
                if (vm_enter_monitor(vm, &mon) == 0) {
                        (void) qmp_migrate_cancel(mon, -1); /* the migration thread sees cancelled */
                        (void) vm_exit_monitor(vm, mon);
                }
        }
        job_end(vm);
out:
        vm_unlock(vm);
        return r;
}

int agent_migrate_tune(Agent *a, Vm *vm, const char *op, uint64_t bandwidth, uint32_t downtime_ms) {
        const char *mop;
        char buf[OP_ID_MAX], what[112];
        int r = with_outgoing(a, vm, &mop, buf);
        if (r < 0)
                return r;
        if (!bandwidth && !downtime_ms)
                return err_set(-EINVAL, "give a bandwidth, a downtime limit, or both");
        if (downtime_ms > 60000)
                return err_set(-EINVAL, "'downtime_limit_ms' above 60000 is not allowed");
        MigrationParams mp = {
                .has_max_bandwidth = bandwidth != 0, .max_bandwidth = bandwidth,
                .has_downtime_limit = downtime_ms != 0, .downtime_limit = downtime_ms,
        };
        snprintf(what, sizeof(what), "%s%.0llu%s%.0u%s", bandwidth ? "bandwidth " : "", (unsigned long long) bandwidth,
                 bandwidth && downtime_ms ? " B/s, downtime limit " : downtime_ms ? "downtime limit " : " B/s",
                 downtime_ms, downtime_ms ? " ms" : "");
        vm_lock(vm);
        if ((r = job_begin(vm, JOB_MIGRATION_OP, op, "migrate-set-parameters", -1)) >= 0) {
                QmpMonitor *mon;
                if ((r = vm_enter_monitor(vm, &mon)) == 0) {
                        r = qmp_migrate_set_parameters(mon, -1, &mp);
                        int e = vm_exit_monitor(vm, mon);
                        if (r >= 0)
                                r = e;
                }
                job_end(vm);
        }
        vm_unlock(vm);
        if (r >= 0) {
                MigrationTable *t = a->migrations;
                lock_acquire(&t->lock);
                for (Migration *m = t->list; m; m = m->next)
                        if (strcmp(m->r.op, mop) == 0) {
                                snprintf(m->r.last_event, sizeof(m->r.last_event), "tuned: %s", what);
                                if (m->r.n_steps < MIG_MAX_STEPS)
                                        snprintf(m->r.steps[m->r.n_steps++], sizeof(m->r.steps[0]), "tuned %s at %.1f s",
                                                 what, (double) (now_ns() - m->started_ns) / 1e9);
                                changed_locked(t, m);
                                break;
                        }
                lock_release(&t->lock);
        }
        return r;
}

int agent_migrate_start_postcopy(Agent *a, Vm *vm, const char *op) {
        const char *mop;
        char buf[OP_ID_MAX];
        int r = with_outgoing(a, vm, &mop, buf);
        if (r < 0)
                return r;
        vm_lock(vm);
        if ((r = job_begin(vm, JOB_MIGRATION_OP, op, "migrate-start-postcopy", -1)) >= 0) {
                QmpMonitor *mon;
                if ((r = vm_enter_monitor(vm, &mon)) == 0) {
                        r = qmp_migrate_start_postcopy(mon, -1);
                        int e = vm_exit_monitor(vm, mon);
                        if (r >= 0) {
                                r = e;
                                vm->mig.postcopy_started = true;
                        }
                }
                job_end(vm);
        }
        vm_unlock(vm);
        if (r == -EREMOTEIO || r == -EOPNOTSUPP)
                return err_prefix(-EBUSY, "post-copy cannot start (was it allowed in the migration's parameters?)");
        if (r >= 0) {
                (void) vm_save_status(vm);
        }
        return r;
}

/* ---- restart recovery ------------------------------------------------------------------- */

static void *recover_thread(void *arg) {
        Agent *a = arg;
        while (!atomic_load(&a->stopping)) {
                Vm **vms;
                size_t n;
                if (vm_registry_list(a->vms, &vms, &n) < 0)
                        break;
                for (size_t i = 0; i < n && !atomic_load(&a->stopping); i++) {
                        char op[OP_ID_MAX], peer[256];
                        vm_lock(vms[i]);
                        AsyncJobType t = vms[i]->job.async;
                        snprintf(op, sizeof(op), "%s", vms[i]->job.async_owner);
                        snprintf(peer, sizeof(peer), "%s", vms[i]->mig.peer);
                        vm_unlock(vms[i]);
                        if (t != ASYNC_JOB_MIGRATION_IN && t != ASYNC_JOB_MIGRATION_OUT)
                                continue;
                        /* a migration running in this process settles itself */
                        MigResult mr;
                        if (agent_migration_get(a, vms[i]->name, &mr) == 0 && strcmp(mr.op, op) == 0 && !mr.done)
                                continue;
                        /* an incoming migration waiting for its source is the
                         * watchdog's business while its QEMU lives */
                        if (t == ASYNC_JOB_MIGRATION_IN && incoming_watched(a, op))
                                continue;
                        (void) settle(a, vms[i], op, peer);
                }
                vm_registry_list_free(vms, n);
                for (int k = 0; k < 20 && !atomic_load(&a->stopping); k++)
                        sleep_ms(100);
        }
        return NULL;
}

void agent_migration_recover_all(Agent *a) {
        if (pthread_create(&a->recover_thread, NULL, recover_thread, a) == 0)
                a->recover_started = true;
        else
                log_error("cannot start the migration recovery thread");
}

void agent_migration_stop(Agent *a) {
        atomic_store(&a->stopping, true);
        if (a->recover_started)
                pthread_join(a->recover_thread, NULL);
        a->recover_started = false;
}
