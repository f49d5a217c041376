/* Live migration, destination side: the MigratePrepare, MigrateFinish and
 * MigrateCancel RPCs, the MigrationOwner answer (both sides), and the
 * watchdog of each incoming migration.
 *
 * Prepare defines the guest if needed, takes the MIGRATION_IN async job
 * owned by the operation id, persists `prepare`, starts QEMU with
 * -incoming defer (no lock held), seals the stream (TLS admitting only the
 * certificate that called Prepare, agent-stream.h) and listens on this
 * host's migration address and a random free port of its range (for the
 * SSH transport on loopback: the source's tunnel arrives through this
 * host's sshd); with local disks it also creates their images and exports
 * them over NBD (agent-migrate-storage.c); a retry of
 * the same operation gets the same answer.  Finish waits for the
 * stream, persists `finish` and starts the vCPUs (in post-copy it keeps the
 * job until the last page arrived), then sets the guest time.  Until finish,
 * a watchdog thread checks that QEMU lives and, when the operation stays
 * quiet past the completion timeout, asks the source whether it still
 * migrates this guest; failures are settled by mig_settle()
 * (agent-migrate-settle.c).
 *
 * Locks: the VM lock only around field access; QMP in NESTED jobs of the
 * MIGRATION_IN job; peer RPCs with no lock held.
 */
#define _GNU_SOURCE
#include "agent-migrate-priv.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-metrics.h"
#include "agent-peer.h"
#include "agent-stream.h"
#include "err.h"
#include "log.h"
#include "qmp.h"
#include "status.h"

_Static_assert(VM_MIG_CALLER_MAX >= MIG_TLS_DN_MAX, "a migration keeps the whole DN of its caller");

static Vm *find_by_uuid(Agent *a, const char *uuid) {
        return vm_registry_lookup_uuid(a->vms, uuid);
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
        bool died = !alive && same_op &&
                    (vm->reason == VM_REASON_CRASHED || vm->reason == VM_REASON_VANISHED);
        if (died && !vm->mig.postcopy_started)
                ans = PEER_DEAD; /* this copy died: a whole guest on the other side is the only one */
        else if (!alive || !same_op)
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
                int qr = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
                if (qr < 0 && alive)
                        ans = PEER_UNREACHABLE; /* could not read our own state: unknown, never "gone" */
                if (qr >= 0) {
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

/* Incoming operations driven by this process right now are marked in the
 * table's watched set from the start of MigratePrepare until their watchdog
 * ends.  The recovery thread leaves them alone: only jobs nobody drives
 * (restored at restart) are its business. */

/* One watchdog's arguments: filled by prepare, then owned (and freed) by
 * the watchdog thread. */
typedef struct Watchdog {
        Agent *a;                /* immutable */
        Vm *vm;                  /* immutable; a reference */
        char op[OP_ID_MAX];      /* immutable */
        char source[256];        /* immutable: the source agent's address */
        uint64_t quiet_after_ms; /* immutable */
} Watchdog;

#define WATCHDOG_SAFETY_MS 10000 /* the longest wait between two checks: events wake it before */
#define WATCHDOG_ASK_MS 1000     /* past the quiet period: how often the source is asked */
#define WATCHDOG_POSTCOPY_MS 500 /* post-copy: the longest wait between two looks at the stream */

/* Wait on @vm->cond (vm->lock held) until @d: unlike vm_wait_locked() this
 * also waits for a QEMU that is gone (a deliberate destroy ends the job
 * later: job_end_async() broadcasts async_cond, which is waited on then). */
static void watchdog_wait_locked(Vm *vm, Deadline d) {
        if (vm_is_active_locked(vm))
                (void) vm_wait_locked(vm, d);
        else
                (void) cond_wait(&vm->async_cond, &vm->lock, d);
}

/* While an incoming migration waits for finish, check that QEMU lives and,
 * when it stays quiet too long, ask the source whether it still wants us.
 * Event-driven: it waits on the guest's vm->cond, which QEMU's death (the
 * monitor's EOF), every QMP event, a state change and the agent's stop
 * (agent_migration_stop) broadcast; the job's end is seen with the state
 * change that precedes it (finish sets running, then ends the job under
 * the same lock hold) or by the vm_changed_locked() after it.  Deadlines:
 * the quiet period, then one question every WATCHDOG_ASK_MS; otherwise
 * WATCHDOG_SAFETY_MS as a safety net. */
static void *incoming_watchdog(void *arg) {
        Watchdog *w = arg;
        Agent *agent = w->a;
        Vm *vm = w->vm;
        Deadline ask = deadline_in_ms((int64_t) w->quiet_after_ms); /* the next question to the source */
        PcLink lk = { 0 };
        vm_lock(vm);
        while (!atomic_load(&agent->stopping)) {
                bool still = job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, w->op) && !vm->removed;
                bool alive = vm_is_active_locked(vm);
                JobPhase ph = vm->job.phase;
                if (!still)
                        break;
                if (!alive) {
                        /* a deliberate drop (MigrateCancel, a settle's
                         * kill-destination) ends the job itself: give it
                         * the time to, then settle what is left */
                        if (vm->being_destroyed || vm->mig.dropping || vm->reason == VM_REASON_MIGRATION_CANCELED) {
                                (void) cond_wait(&vm->async_cond, &vm->lock, deadline_in_ms(5000));
                                if (!job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, w->op))
                                        break;
                        }
                        vm_unlock(vm);
                        (void) mig_settle(w->a, vm, w->op, w->source);
                        goto out;
                }
                /* post-copy: the link watch, the pause, the end at
                 * completion (agent-migrate-postcopy.c); a source asked
                 * now would only answer "postcopy" */
                if (vm->mig.postcopy_started) {
                        vm_unlock(vm);
                        int done = mig_postcopy_dest_watch(w->a, vm, w->op, w->source, &lk);
                        vm_lock(vm);
                        if (done)
                                break;
                        watchdog_wait_locked(vm, deadline_in_ms(WATCHDOG_POSTCOPY_MS));
                        continue;
                }
                if (ph != JOB_PHASE_PREPARE || !deadline_expired(ask)) {
                        Deadline d = deadline_in_ms(WATCHDOG_SAFETY_MS);
                        if (ph == JOB_PHASE_PREPARE && deadline_remaining_ms(ask) < WATCHDOG_SAFETY_MS)
                                d = ask;
                        watchdog_wait_locked(vm, d);
                        continue;
                }
                vm_unlock(vm);
                AgentPeer *p;
                PeerAnswer ans = PEER_UNREACHABLE;
                if (agent_peer_open(w->a, w->source, &p) >= 0) {
                        ans = agent_peer_owner(p, w->op, vm->uuid, 5000);
                        agent_peer_close(p);
                }
                /* the source copy died: the table decides (a whole
                 * guest here may be the only copy) */
                if (ans == PEER_DEAD)
                        (void) mig_settle(w->a, vm, w->op, w->source);
                /* the source resumed, or holds nothing for this op:
                 * drop our copy, unless finish began during the
                 * question (decided again under the VM lock) */
                else if ((ans == PEER_RUNNING || ans == PEER_GONE) && mig_mark_dropping(vm, w->op, JOB_PHASE_PREPARE)) {
                        mig_kill_dest(w->a, vm, w->op, "the source no longer migrates this guest");
                        goto out;
                }
                ask = deadline_in_ms(WATCHDOG_ASK_MS);
                vm_lock(vm);
        }
        vm_unlock(vm);
out:
        agent_migtable_unwatch(agent->migrations, w->op);
        vm_unref(vm);
        free(w);
        atomic_fetch_sub(&agent->background, 1);
        return NULL;
}

/* Listen for the stream on this host's migration address (loopback for
 * transport @t SSH) and a random free port of migration_ports (vm->lock
 * held, MIGRATION_IN job of @op), with migrate-incoming, or for a paused
 * post-copy (@recover) with migrate-recover: the first port is random, then the range
 * is walked from there, so every port is tried once; only "in use" moves
 * on, any other failure ends it. */
static int listen_on_free_port(Agent *a, Vm *vm, const char *op, MigTransport t, bool recover, MigStream *ret) {
        char host[64] = "127.0.0.1";
        unsigned lo, hi;
        int r = t == MIG_TRANSPORT_SSH ? 0 : agent_config_migration_host(&a->cfg, host, sizeof(host));
        if (r < 0 || (r = agent_config_migration_ports(&a->cfg, &lo, &hi)) < 0)
                return r;
        unsigned first = agent_stream_first_port(lo, hi), n = hi - lo + 1;
        r = -EADDRINUSE;
        for (unsigned i = 0; i < n; i++) {
                MigStream s;
                if ((r = mig_stream_set(&s, host, lo + (first - lo + i) % n, t)) < 0)
                        return r;
                r = recover ? VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-recover",
                                             qmp_migrate_recover(mon_, -1, s.uri))
                            : VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-incoming",
                                             qmp_migrate_incoming(mon_, -1, s.uri));
                if (r >= 0) {
                        snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", s.uri);
                        *ret = s;
                        return 0;
                }
                if (!strstr(err_msg(), "in use") && !strstr(err_msg(), "Failed to bind"))
                        return r;
        }
        return err_set(r, "no free migration port in %u-%u on %s", lo, hi, host);
}

/* Multifd as the incoming QEMU offers it (vm->lock held, MIGRATION_IN job
 * of @op): p->multifd_channels drops to 1 (the answer tells the source,
 * which follows) when the QEMU lists no multifd capability; compression
 * cannot do without, and is refused.  0 or -errno. */
static int dest_multifd_locked(Vm *vm, const char *op, MigParams *p) {
        MigrationCaps caps;
        int r;

        if (p->multifd_channels < 2)
                return 0;
        r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate-capabilities",
                   qmp_query_migrate_capabilities(mon_, -1, &caps));
        if (r < 0 || (caps.known & MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD)))
                return r;
        if (p->compression != MIG_COMPRESSION_NONE)
                return err_set(-EOPNOTSUPP, "compression %s needs multifd, which this host's QEMU does not offer",
                               mig_compression_to_string(p->compression));
        p->multifd_channels = 1;
        return 0;
}

int agent_migrate_prepare(Agent *a, const char *op, const char *definition_json, const MigParams *p,
                          const char *source_addr, const char *source_dn, MigStorage *storage, MigStream *ret) {
        GuestDef def;
        Vm *vm;
        MigTransport t;
        bool created = false;
        int r;

        if ((r = guest_def_parse(definition_json, strlen(definition_json), &def)) < 0)
                return r;
        if ((r = agent_stream_incoming_transport(a, p->transport, &t)) < 0)
                return err_prefix(r, "prepare");
        if (storage->n && t == MIG_TRANSPORT_SSH)
                return err_set(-EOPNOTSUPP, "prepare: %zu local disk(s): they are not copied over the SSH "
                               "transport; use TLS (docs/migration.md, \"Local disks\")", storage->n);
        if (t == MIG_TRANSPORT_TLS && (!source_dn || !source_dn[0]))
                return err_set(-EACCES, "prepare: the stream is sealed with the caller's certificate, and the "
                               "call carries none");
        vm = find_by_uuid(a, def.uuid);
        if (vm) {
                if ((r = agent_migrate_check_caller(a, op, def.uuid, source_dn)) < 0) {
                        vm_unref(vm);
                        return r;
                }
                vm_lock(vm);
                /* idempotent: the same op asks again */
                if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) && vm->mig.uri[0]) {
                        r = mig_stream_from_uri(vm->mig.uri, t, ret);
                        if (r >= 0)
                                r = mig_storage_dest_answer_locked(a, vm, storage);
                        vm_unlock(vm);
                        vm_unref(vm);
                        return r;
                }
                vm_unlock(vm);
                if (agent_migtable_watched(a->migrations, op)) {
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
        /* driven by this handler, then by its watchdog */
        if ((r = agent_migtable_watch(a->migrations, op)) < 0) {
                if (created)
                        mig_forget_guest(a, vm, "prepare refused");
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
        snprintf(vm->mig.caller, sizeof(vm->mig.caller), "%s", source_dn ? source_dn : "");
        vm->mig.created_by_prepare = created;
        av->def_skip_time_sync = p->skip_time_sync; /* read by finish */
        av->def_completion_s_per_gib = p->completion_s_per_gib; /* finish's limit */
        vm->mig.postcopy_started = false;
        vm->mig.dropping = false;
        vm->mig.resume_ns = 0;
        vm->mig.created_disks = 0;
        vm->mig.nbd_port = 0;
        vm->mig_event = MIGRATION_STATUS_NONE;
        memset(&vm->mig_stats, 0, sizeof(vm->mig_stats));
        QmpMonitor *old = vm_detach_monitor_locked(vm);
        r = job_set_phase(vm, JOB_PHASE_PREPARE);
        vm_unlock(vm);
        qmp_monitor_close(old);
        if (r < 0)
                goto fail_job;
        agent_test_hold(JOB_PHASE_PREPARE, vm->name);

        /* No lock: the local disks' images (checked, recorded, created),
         * host checks, taps, exec of QEMU with -incoming defer. */
        pid_t pid = 0;
        if ((r = mig_storage_dest_create(a, vm, &def, storage)) < 0 ||
            (r = agent_vm_launch_incoming(a, vm, &pid)) < 0)
                goto fail_job;

        vm_lock(vm);
        vm_set_state_locked(vm, VM_STATE_PAUSED, VM_REASON_MIGRATION);
        uint64_t caps = MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS);
        MigParams mp = *p; /* multifd as this QEMU offers it */
        r = dest_multifd_locked(vm, op, &mp);
        if (mp.postcopy != POSTCOPY_POLICY_NEVER)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_POSTCOPY_RAM);
        if (mp.multifd_channels > 1)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD);
        if (r >= 0)
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-set-capabilities",
                           qmp_migrate_set_capabilities(mon_, -1, caps, true));
        MigrationParams mfd = { 0 };
        if (r >= 0 && mig_multifd_params(&mp, &mfd))
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-set-parameters",
                           qmp_migrate_set_parameters(mon_, -1, &mfd));
        /* sealed: only the certificate that called Prepare may stream */
        if (r >= 0 && t == MIG_TRANSPORT_TLS)
                r = agent_stream_tls_setup_locked(a, vm, ASYNC_JOB_MIGRATION_IN, op, source_dn, NULL);
        if (r >= 0)
                r = listen_on_free_port(a, vm, op, t, false, ret);
        /* the local disks' exports, sealed as the stream */
        if (r >= 0)
                r = mig_storage_dest_export_locked(a, vm, op, t == MIG_TRANSPORT_TLS, storage);
        vm_unlock(vm);
        if (r < 0)
                goto fail_job;
        ret->multifd_channels = mp.multifd_channels > 1 ? mp.multifd_channels : 1;
        (void) vm_save_status(vm);
        if (ret->tls)
                agent_emit(a, vm, "migration", "incoming migration %s prepared on %s (TLS, admitting only %s)", op,
                           ret->uri, source_dn);
        else if (t == MIG_TRANSPORT_SSH)
                agent_emit(a, vm, "migration", "incoming migration %s prepared on %s (SSH: the source tunnels "
                           "through this host's sshd)", op, ret->uri);
        else {
                log_warning("guest %s, migration %s: dev_mode: the incoming stream on %s is PLAINTEXT and "
                            "unauthenticated", vm->name, op, ret->uri);
                agent_emit(a, vm, "migration", "incoming migration %s prepared on %s (plaintext: dev_mode)", op,
                           ret->uri);
        }

        Watchdog *w = calloc(1, sizeof(*w));
        if (!w)
                agent_migtable_unwatch(a->migrations, op); /* recovery takes over */
        if (w) {
                pthread_t th;
                w->a = a;
                w->vm = vm_ref(vm);
                snprintf(w->op, sizeof(w->op), "%s", op);
                snprintf(w->source, sizeof(w->source), "%s", source_addr ? source_addr : "");
                /* the disks are copied before memory: they count too */
                w->quiet_after_ms = mig_params_completion_ms(p, av->def.memory_mib + (mig_storage_bytes(storage) >> 20)) +
                                    30000;
                atomic_fetch_add(&a->background, 1);
                if (pthread_create(&th, NULL, incoming_watchdog, w) == 0)
                        pthread_detach(th);
                else {
                        atomic_fetch_sub(&a->background, 1);
                        agent_migtable_unwatch(a->migrations, op); /* recovery takes over */
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
        mig_storage_dest_delete(vm); /* the images this prepare made, if any */
        vm_lock(vm);
        if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op))
                job_end_async(vm);
        vm_unlock(vm);
        agent_metrics_migration_ended(false, false, NAN, NAN, 0);
        err_set(r, "%s", why);
        }
fail_undefine:
        agent_migtable_unwatch(a->migrations, op);
        if (created) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                mig_forget_guest(a, vm, "prepare failed");
                err_set(r, "%s", why);
        }
        vm_unref(vm);
        return r;
}

/* finish failed before `cont` was sent: this copy never ran.  Drop it
 * (marked under the VM lock first, so nothing starts it meanwhile), then
 * answer with the mark the source recognises (agent-peer.h): it keeps the
 * guest.  @r and the detail of the failure are kept. */
static int finish_not_started(Agent *a, Vm *vm, const char *op, int r) {
        char why[ERR_MSG_MAX];
        snprintf(why, sizeof(why), "%s", err_str(r));
        vm_lock(vm);
        JobPhase ph = vm->job.phase;
        bool mine = job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op);
        vm_unlock(vm);
        if (mine && mig_mark_dropping(vm, op, ph))
                mig_kill_dest(a, vm, op, why);
        log_fields(LOG_LEVEL_WARNING, LOG_FIELDS(.guest = vm->name, .op = op, .phase = job_phase_to_string(ph)),
                   "guest %s, migration %s: finish failed before the guest started here (%s); copy dropped",
                   vm->name, op, why);
        return err_set(-EBUSY, "finish on this host failed before the guest started: %s " PEER_FINISH_NOT_STARTED_MARK
                       " (this copy is dropped; the source keeps the guest)", why);
}

int agent_migrate_finish(Agent *a, const char *op, const char *uuid, bool postcopy, bool return_at_cont,
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
                *ret_resume_unix_ms = mig_mono_to_unix_ms(vm->mig.resume_ns);
                vm_unlock(vm);
                return done ? 0 : err_set(-EINVAL, "finish: guest %s has no incoming migration %s", uuid, op);
        }
        /* Until `cont` is sent, every failure leaves a copy that never ran:
         * it is dropped and the source told so (finish_not_started). */
        if (vm->mig.dropping) {
                vm_unlock(vm);
                return err_set(-EBUSY, "finish: this destination is dropping its copy of %s (migration %s) "
                               PEER_FINISH_NOT_STARTED_MARK ": the source keeps the guest", vm->name, op);
        }
        if ((r = job_set_phase(vm, JOB_PHASE_FINISH)) < 0)
                goto not_started;
        vm_unlock(vm);
        agent_test_hold(JOB_PHASE_FINISH, vm->name);
        vm_lock(vm);
        if (postcopy)
                vm->mig.postcopy_started = true;
        /* the limit the source gives this call (mig_params_finish_limit_ms):
         * its post-copy part bounds the wait for the last pages below */
        MigParams lp = { .completion_s_per_gib = av->def_completion_s_per_gib };
        int64_t pages_ms = mig_params_finish_limit_ms(&lp, av->def.memory_mib, postcopy) - MIG_FINISH_BASE_MS;
        Deadline d = deadline_in_ms(MIG_FINISH_STREAM_MS);
        for (;;) {
                uint64_t seen = vm->mig_events;
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
                if (r < 0)
                        goto not_started;
                if (st.status == MIGRATION_STATUS_COMPLETED ||
                    (postcopy && migration_status_is_postcopy(st.status)))
                        break;
                if (st.status == MIGRATION_STATUS_FAILED || st.status == MIGRATION_STATUS_CANCELLED ||
                    deadline_expired(d)) {
                        r = err_set(-EIO, "finish: the incoming stream is %s", migration_status_to_string(st.status));
                        goto not_started;
                }
                if (vm->mig_events == seen)
                        (void) vm_wait_locked(vm, deadline_in_ms(50));
        }
        vm_set_migration_stats_locked(vm, &st);
        /* From here `cont` may have been sent: a failure is no proof that
         * the guest did not start. */
        if ((r = mig_finish_dest_locked(a, vm, op)) < 0)
                goto out;
        vm->mig.resume_ns = vm->mig.resume_ns ? vm->mig.resume_ns : now_ns();
        *ret_resume_unix_ms = mig_mono_to_unix_ms(vm->mig.resume_ns);
        vm->mig.created_by_prepare = false;
        vm->mig.created_disks = 0; /* the guest runs on them now */
        /* In post-copy the destination keeps its job until the stream
         * completes (pages still arrive); the watchdog-free wait is the
         * source's business, the job ends at completion (below). */
        if (!postcopy)
                job_end_async(vm);
        bool want_sync = av->def.guest_agent && !av->def_skip_time_sync;
        vm_unlock(vm);
        if (postcopy) {
                /* wait for the last pages (the completion timeout), then
                 * end the job; MIGRATION events wake the wait, the poll
                 * reads the status the event may have raced */
                vm_lock(vm);
                /* return_at_cont: the source watches the stream (and
                 * recovers it); the watchdog ends the job at completion */
                Deadline pd = deadline_in_ms(return_at_cont ? 0 : pages_ms);
                while (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) && !deadline_expired(pd)) {
                        if (VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, &st)) < 0 ||
                            st.status == MIGRATION_STATUS_COMPLETED || st.status == MIGRATION_STATUS_FAILED)
                                break;
                        (void) vm_wait_locked(vm, deadline_in_ms(200));
                }
                if (return_at_cont &&
                    VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, &st)) < 0)
                        st.status = MIGRATION_STATUS_UNKNOWN;
                if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) && st.status == MIGRATION_STATUS_COMPLETED) {
                        job_end_async(vm);
                        vm_changed_locked(vm); /* the watchdog waits on vm->cond */
                }
                vm_unlock(vm);
        }
        agent_emit(a, vm, "resumed", "incoming migration %s finished%s", op, postcopy ? " (post-copy)" : "");
        agent_metrics_migration_ended(false, true, NAN, NAN, 0);
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
not_started:
        vm_unlock(vm);
        /* in post-copy the destination may hold the only copy of pages */
        return postcopy ? r : finish_not_started(a, vm, op, r);
}

int agent_migrate_check_caller(Agent *a, const char *op, const char *uuid, const char *caller) {
        _cleanup_(vm_unrefp) Vm *vm = find_by_uuid(a, uuid);
        if (!vm)
                return 0;
        vm_lock(vm);
        bool bound = strcmp(vm->mig.op, op) == 0 && vm->mig.caller[0];
        bool same = !bound || (caller && strcmp(vm->mig.caller, caller) == 0);
        char name[VM_NAME_MAX];
        snprintf(name, sizeof(name), "%s", vm->name);
        vm_unlock(vm);
        if (same)
                return 0;
        return err_set(-EPERM, "migration %s of guest %s was prepared by another certificate; only that one may "
                       "finish or cancel it (caller: %s)", op, name, caller && caller[0] ? caller : "none");
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
        return mig_kill_dest(a, vm, op, "cancelled by the source");
}

int agent_migrate_recover(Agent *a, const char *op, const char *uuid, MigStream *ret) {
        MigrationStats st = { 0 };
        _cleanup_(vm_unrefp) Vm *vm = find_by_uuid(a, uuid);
        if (!vm)
                return err_set(-ENOENT, "recover: no incoming guest %s here", uuid);
        /* the stream is sealed as the original one: the TLS objects and
         * the tls-creds/tls-authz parameters prepare set are still in QEMU */
        MigTransport t = agent_stream_tls(a) ? MIG_TRANSPORT_TLS : MIG_TRANSPORT_PLAIN;
        vm_lock(vm);
        int r;
        if (!job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) || !vm->mig.postcopy_started) {
                r = err_set(-EBUSY, "recover: guest %s has no post-copy migration %s here", vm->name, op);
                goto out;
        }
        if ((r = mig_pc_dest_pause_locked(vm, op, &st)) < 0)
                goto out;
        if (st.status != MIGRATION_STATUS_POSTCOPY_PAUSED) {
                r = err_set(-EBUSY, "recover: the incoming stream of %s is %s, not postcopy-paused", vm->name,
                            st.status_name[0] ? st.status_name : migration_status_to_string(st.status));
                goto out;
        }
        char old_uri[sizeof(vm->mig.uri)];
        snprintf(old_uri, sizeof(old_uri), "%s", vm->mig.uri);
        r = listen_on_free_port(a, vm, op, t, true, ret);
        /* a listener from an earlier call still waits for the source
         * (QEMU: "Migrate recovery is triggered already"): the same address */
        if (r < 0 && strstr(err_msg(), "already") && vm->job.phase == JOB_PHASE_POSTCOPY_RECOVER && old_uri[0])
                r = mig_stream_from_uri(old_uri, t, ret);
        if (r < 0)
                goto out;
        if (job_set_phase(vm, JOB_PHASE_POSTCOPY_RECOVER) < 0)
                log_warning("guest %s, migration %s: %s", vm->name, op, err_msg());
        vm_unlock(vm);
        agent_emit(a, vm, "migration", "post-copy recovery of migration %s: listening on %s", op, ret->uri);
        return 0;
out:
        vm_unlock(vm);
        return r;
}
