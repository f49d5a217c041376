/* Live migration, source side: agent_migrate() and the migration thread,
 * and the controls of a running outgoing migration (abort, tune, post-copy).
 *
 * agent_migrate() runs `begin` in the caller's thread: it takes the
 * MIGRATION_OUT async job, saves QEMU's migration capabilities and
 * parameters and persists them with the phase, then starts the migration
 * thread.  That thread calls the destination's MigratePrepare, runs perform
 * (capabilities, parameters, `migrate`, then one query-migrate per poll fed
 * to the convergence policy of core/converge.h, whose decision it executes,
 * `migrate-continue` at pre-switchover, and a liveness check of the
 * destination agent), persists perform_done, calls MigrateFinish, and
 * confirms (the source QEMU stops and the guest's record goes).  Failures
 * are settled by mig_settle() (agent-migrate-settle.c), whose resume of the
 * source puts the settings back with mig_restore_settings_locked(), which
 * lives here beside what perform() changes.  Every step is published in
 * the migration table (agent-migtable.h).
 *
 * Locks: the VM lock only around field access (dropped for table updates
 * and peer RPCs); QMP in NESTED jobs of the MIGRATION_OUT job.
 */
#define _GNU_SOURCE
#include "agent-migrate-priv.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-peer.h"
#include "converge.h"
#include "err.h"
#include "log.h"
#include "qmp.h"
#include "status.h"

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

/* ---- source --------------------------------------------------------------------------- */

/* One outgoing migration: filled by agent_migrate(), then owned by its
 * migration thread, which frees it. */
typedef struct Source {
        Agent *a;               /* immutable */
        Vm *vm;                 /* immutable; a reference */
        Migration *m;           /* immutable; the table record */
        char op[OP_ID_MAX];     /* immutable */
        char dest[256];         /* immutable: the destination agent's HOST:PORT */
        char stream_host[128];  /* immutable */
        MigParams p;            /* immutable; defaults applied, validated */
        char *definition;       /* immutable; owned */
        uint64_t mem_mib;       /* immutable */
        bool waiter;            /* unused */
} Source;

static int set_params(Vm *vm, const char *op, const MigrationParams *mp) {
        return VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate-set-parameters",
                      qmp_migrate_set_parameters(mon_, -1, mp));
}

/* ---- QEMU's migration settings: what the source changes, saved and put back ----------- */

/* The capabilities perform() switches on for a migration with @p.  The
 * restore switches off only capabilities of SOURCE_CAPS that were off. */
#define SOURCE_CAPS                                                                               \
        (MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS) | MIGRATION_CAP_BIT(MIGRATION_CAP_POSTCOPY_RAM) | \
         MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD) | MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE))

static uint64_t source_caps(const MigParams *p) {
        uint64_t caps = MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS);
        if (p->postcopy != POSTCOPY_POLICY_NEVER)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_POSTCOPY_RAM);
        if (p->multifd_channels > 1)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD);
        if (p->auto_converge)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE);
        assert((caps & ~SOURCE_CAPS) == 0);
        return caps;
}

/* The parameters the source may change: perform(), the convergence policy
 * (tune_locked()) and MigrateTune.  Only these are put back. */
static bool source_param(const MigrationParamInfo *i) {
        static const size_t changed[] = {
                offsetof(MigrationParams, max_bandwidth),
                offsetof(MigrationParams, downtime_limit),
                offsetof(MigrationParams, cpu_throttle_initial),
                offsetof(MigrationParams, cpu_throttle_increment),
                offsetof(MigrationParams, max_cpu_throttle),
                offsetof(MigrationParams, multifd_channels),
        };
        for (size_t k = 0; k < ELEMENTSOF(changed); k++)
                if (i->value_offset == changed[k])
                        return i->kind == MIGRATION_PARAM_U64;
        return false;
}

/* begin: read QEMU's capabilities and parameters into vm->mig (persisted
 * with the phase that follows), before the source changes either.
 * has_orig_params says both were read.  vm->lock held, MIGRATION_OUT job
 * of @op.  0 or -errno. */
static int save_settings_locked(Vm *vm, const char *op) {
        MigrationCaps caps;
        MigrationParams params;
        int r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "query-migrate-capabilities",
                       qmp_query_migrate_capabilities(mon_, -1, &caps));
        if (r >= 0)
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "query-migrate-parameters",
                           qmp_query_migrate_parameters(mon_, -1, &params));
        if (r < 0)
                return err_prefix(r, "reading QEMU's migration settings");
        vm->mig.orig_caps = caps.enabled;
        vm->mig.orig_params = params;
        vm->mig.has_orig_params = true;
        return 0;
}

int mig_restore_settings_locked(Vm *vm, AsyncJobType t, const char *op) {
        vm_assert_locked(vm);
        if (!vm->mig.has_orig_params)
                return 0;
        /* copies: vm->lock is dropped around every command */
        uint64_t orig_caps = vm->mig.orig_caps;
        MigrationParams orig = vm->mig.orig_params, now, put = { 0 };
        MigrationCaps caps;
        char first[ERR_MSG_MAX] = "";
        int r = 0, q;

        q = VM_NESTED_CALL(vm, t, op, "query-migrate-capabilities",
                   qmp_query_migrate_capabilities(mon_, -1, &caps));
        uint64_t off = (q >= 0 ? caps.enabled : SOURCE_CAPS) & SOURCE_CAPS & ~orig_caps;
        if (off && (q = VM_NESTED_CALL(vm, t, op, "migrate-set-capabilities",
                                       qmp_migrate_set_capabilities(mon_, -1, off, false))) < 0) {
                r = q;
                snprintf(first, sizeof(first), "capabilities: %s", err_msg());
        }

        q = VM_NESTED_CALL(vm, t, op, "query-migrate-parameters", qmp_query_migrate_parameters(mon_, -1, &now));
        size_t n = 0;
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                if (!source_param(i) || !migration_param_is_set(&orig, i))
                        continue;
                uint64_t v = migration_param_get_u64(&orig, i);
                if (q >= 0 && migration_param_is_set(&now, i) && migration_param_get_u64(&now, i) == v)
                        continue;
                *migration_param_has_ref(&put, i) = true;
                *migration_param_u64_ref(&put, i) = v;
                n++;
        }
        if (n && (q = VM_NESTED_CALL(vm, t, op, "migrate-set-parameters",
                                     qmp_migrate_set_parameters(mon_, -1, &put))) < 0 && r >= 0) {
                r = q;
                snprintf(first, sizeof(first), "parameters: %s", err_msg());
        }
        return r < 0 ? err_set(r, "%s", first) : 0;
}

static int start_postcopy_locked(Source *s, const char *why) {
        int r = VM_NESTED_CALL(s->vm, ASYNC_JOB_MIGRATION_OUT, s->op, "migrate-start-postcopy",
                       qmp_migrate_start_postcopy(mon_, -1));
        if (r >= 0) {
                s->vm->mig.postcopy_started = true;
                vm_unlock(s->vm);
                (void) vm_save_status(s->vm);
                agent_migtable_step(s->a->migrations, s->m, "post-copy (%s)", why);
                vm_lock(s->vm);
        }
        return r;
}

/* Execute the tuning step of @d (vm->lock held): 0 when QEMU took it. */
static int tune_locked(Source *s, const ConvergeDecision *d) {
        MigrationParams mp = { 0 };
        char what[128];
        if (d->tune == CONVERGE_RAISE_DOWNTIME) {
                mp.has_downtime_limit = true;
                mp.downtime_limit = d->downtime_ms;
        } else {
                mp.has_max_cpu_throttle = mp.has_cpu_throttle_increment = true;
                mp.max_cpu_throttle = 99;
                mp.cpu_throttle_increment = 20;
        }
        int r = set_params(s->vm, s->op, &mp);
        if (r >= 0) {
                converge_describe_tune(d, what, sizeof(what));
                vm_unlock(s->vm);
                agent_migtable_step(s->a->migrations, s->m, "%s", what);
                vm_lock(s->vm);
        }
        return r;
}

/* Stream until completed (0), post-copy active (1), or failure (-errno).
 * Every reading goes through the convergence policy (core/converge.h),
 * whose decision is executed here. */
static int perform(Source *s) {
        Vm *vm = s->vm;
        const char *op = s->op;
        MigrationStats st = { 0 };
        int r;

        vm_lock(vm);
        if (vm->mig.orig_caps & MIGRATION_CAP_BIT(MIGRATION_CAP_PAUSE_BEFORE_SWITCHOVER)) {
                vm_unlock(vm);
                agent_migtable_event(s->a->migrations, s->m,
                                     "pause-before-switchover is on: the source continues at pre-switchover");
                vm_lock(vm);
        }
        r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate-set-capabilities",
                   qmp_migrate_set_capabilities(mon_, -1, source_caps(&s->p), true));
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

        uint64_t t0 = now_ns();
        ConvergeState cs;
        converge_init(&s->p, s->mem_mib, t0, &cs);
        uint64_t peer_check_ns = t0, peer_down_since = 0;
        bool continued = false; /* migrate-continue sent for this pre-switchover */
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
                agent_migtable_phase(s->a->migrations, s->m, JOB_PHASE_PERFORM, &st);
                vm_lock(vm);
                uint64_t now = now_ns();

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
                /* pause-before-switchover, switched on by someone else:
                 * QEMU stopped the vCPUs and waits; nothing needs doing
                 * here (shared storage), so go on at once, once per pause
                 * (QEMU counts every continue) */
                if (st.status != MIGRATION_STATUS_PRE_SWITCHOVER)
                        continued = false;
                else if (!continued) {
                        r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate-continue",
                                   qmp_migrate_continue(mon_, -1, "pre-switchover"));
                        if (r < 0) {
                                r = err_prefix(r, "migrate-continue at pre-switchover");
                                break;
                        }
                        continued = true;
                        continue;
                }
                ConvergePass pass = {
                        .now_ns = now,
                        .active = st.status == MIGRATION_STATUS_ACTIVE,
                        .ram_remaining = st.ram_remaining,
                        .dirty_sync_count = st.ram_dirty_sync_count,
                };
                ConvergeDecision d = converge_next(&s->p, &cs, &pass, &cs);
                uint64_t quiet_ms = d.quiet_ms;
                if (d.tune != CONVERGE_NONE && tune_locked(s, &d) >= 0)
                        converge_applied(&cs, &d);
                if (d.action != CONVERGE_NONE) {
                        char why[160];
                        converge_describe_action(&s->p, &cs, &d, why, sizeof(why));
                        if (d.action == CONVERGE_ABORT) {
                                r = err_set(-ETIMEDOUT, "%s", why);
                                break;
                        }
                        if ((r = start_postcopy_locked(s, why)) < 0)
                                break;
                        continue;
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
        vm_lock(s->vm);
        uint64_t stop = mig_mono_to_unix_ms(s->vm->mig.stop_ns);
        vm_unlock(s->vm);
        agent_migtable_result(s->a->migrations, s->m, st, stop && resume_unix_ms > stop ? resume_unix_ms - stop : 0,
                              synced, postcopy);
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
        agent_migtable_phase(t, s->m, JOB_PHASE_PREPARE, NULL);
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
                agent_migtable_done(t, s->m, -EIO, why);
                goto out;
        }
        vm_lock(vm);
        snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", uri);
        r = job_set_phase(vm, JOB_PHASE_PERFORM);
        vm_unlock(vm);
        agent_migtable_event(t, s->m, "destination prepared %s", uri);
        agent_test_hold(JOB_PHASE_PERFORM, vm->name);

        /* perform */
        int pr = r < 0 ? r : perform(s);
        bool postcopy = pr == 1;
        if (pr >= 0) {
                vm_lock(vm);
                st = vm->mig_stats;
                /* Not written, not acted on: without a durable perform_done
                 * a restart would resume this source, so finish must never
                 * start the destination.  In post-copy there is no way back:
                 * the settle below keeps both sides for recovery. */
                if ((r = job_set_phase(vm, JOB_PHASE_PERFORM_DONE)) < 0)
                        pr = r;
                vm_unlock(vm);
        }
        if (pr < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(pr));
                log_warning("migration %s of %s failed in perform: %s", s->op, vm->name, why);
                int sr = mig_settle(a, vm, s->op, s->dest); /* perform: resume the source, drop the destination */
                /* Before perform_done the destination can never have run
                 * the guest (rule 1): whoever settled, its copy goes. */
                if (!postcopy && peer && agent_peer_cancel(peer, s->op, vm->uuid, PEER_CALL_MS) < 0)
                        log_warning("migration %s of %s: telling %s to drop its copy failed: %s (its watchdog will)",
                                    s->op, vm->name, s->dest, err_msg());
                vm_lock(vm);
                vm_set_error_locked(vm, "migration %s failed: %s", s->op, why);
                vm_unlock(vm);
                agent_migtable_done(t, s->m, -EIO, sr == 1 ? why : "failed, and the source could not be resumed yet");
                goto out;
        }
        agent_migtable_phase(t, s->m, JOB_PHASE_PERFORM_DONE, &st);
        agent_test_hold(JOB_PHASE_PERFORM_DONE, vm->name);

        /* finish (destination): its vCPUs start */
        uint64_t resume_ms = 0;
        bool synced = false;
        agent_migtable_phase(t, s->m, JOB_PHASE_FINISH, NULL);
        vm_lock(vm);
        uint64_t stop_ms = mig_mono_to_unix_ms(vm->mig.stop_ns);
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
                        sr = mig_settle(a, vm, s->op, s->dest);
                        if (sr == 0)
                                sleep_ms(2000);
                }
                Vm *still_here = vm_registry_lookup_uuid(a->vms, vm->uuid);
                bool moved = sr == 1 && !still_here; /* the source killed its copy: the guest moved */
                vm_unref(still_here);
                agent_migtable_done(t, s->m, moved ? 0 : -EIO,
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
                        agent_migtable_phase(t, s->m, JOB_PHASE_PERFORM_DONE, &st);
                        vm_lock(vm);
                        (void) vm_wait_locked(vm, deadline_in_ms(POLL_MS));
                }
                vm_unlock(vm);
                if (st.status != MIGRATION_STATUS_COMPLETED) {
                        RecoveryDecision d2 = { RECOVER_POSTCOPY_FAILED, "post-copy did not complete" };
                        (void) mig_apply_decision(a, vm, s->op, s->dest, d2);
                        agent_migtable_done(t, s->m, -EIO, "post-copy failed: both sides paused for recovery");
                        goto out;
                }
        }

        /* confirm */
        finish_result(s, &st, resume_ms, synced, postcopy);
        agent_migtable_phase(t, s->m, JOB_PHASE_CONFIRM, &st);
        (void) mig_kill_source(a, vm, s->op);
        agent_migtable_done(t, s->m, 0, NULL);
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
        /* Registered before the VM lock is first dropped: the recovery
         * thread leaves alone every migration the table shows running, and
         * would otherwise settle this one ("nothing was sent") in the gap. */
        s->m = agent_migtable_add(a->migrations, op, vm->name, true);
        s->definition = strdup(vm->definition_json ? vm->definition_json : "{}");
        if (!s->m || !s->definition) {
                job_end_async(vm);
                vm_unlock(vm);
                if (s->m)
                        agent_migtable_done(a->migrations, s->m, -ENOMEM, "out of memory");
                free(s->definition);
                free(s);
                return err_set(-ENOMEM, "out of memory");
        }
        memset(&vm->mig, 0, sizeof(vm->mig));
        snprintf(vm->mig.op, sizeof(vm->mig.op), "%s", op);
        snprintf(vm->mig.peer, sizeof(vm->mig.peer), "%s", dest_addr);
        memset(&vm->mig_stats, 0, sizeof(vm->mig_stats));
        vm->mig_event = MIGRATION_STATUS_NONE;
        r = save_settings_locked(vm, op);
        if (r >= 0)
                r = job_set_phase(vm, JOB_PHASE_BEGIN);
        if (r >= 0) {
                vm_unlock(vm);
                agent_test_hold(JOB_PHASE_BEGIN, vm->name);
                vm_lock(vm);
        }
        if (r < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                job_end_async(vm);
                vm_unlock(vm);
                agent_migtable_done(a->migrations, s->m, r, why);
                free(s->definition);
                free(s);
                return err_set(r, "%s", why);
        }
        vm_unlock(vm);

        s->vm = vm_ref(vm);
        Migration *m = s->m;
        agent_migtable_phase(a->migrations, m, JOB_PHASE_BEGIN, NULL);
        agent_emit(a, vm, "migration", "outgoing migration %s to %s started", op, dest_addr);

        pthread_t th;
        atomic_fetch_add(&a->background, 1);
        if (pthread_create(&th, NULL, source_thread, s) != 0) {
                atomic_fetch_sub(&a->background, 1);
                vm_lock(vm);
                job_end_async(vm);
                vm_unlock(vm);
                agent_migtable_done(a->migrations, m, -EAGAIN, "cannot start a migration thread");
                vm_unref(vm);
                free(s->definition);
                free(s);
                return err_set(-EAGAIN, "cannot start a migration thread");
        }
        pthread_detach(th);
        /* by op: once done, the record may be forgotten under our feet */
        if (agent_migtable_result_of(a->migrations, op, wait, ret) < 0)
                return err_set(-ENOENT, "migration %s of %s: its record was forgotten before it was read", op,
                               vm->name);
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
                agent_migtable_tuned(a->migrations, mop, what);
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
