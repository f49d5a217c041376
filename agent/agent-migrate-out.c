/* Live migration, source side: agent_migrate() and the migration thread,
 * and the controls of a running outgoing migration (abort, tune, post-copy).
 *
 * agent_migrate() runs `begin` in the caller's thread: it takes the
 * MIGRATION_OUT async job, saves QEMU's migration capabilities and
 * parameters and persists them with the phase, then starts the migration
 * thread.  That thread calls the destination's MigratePrepare, copies the
 * local disks in the `storage` phase (agent-migrate-storage.c), runs perform
 * (capabilities, parameters, `migrate`, then one query-migrate per poll fed
 * to the convergence policy of core/converge.h, whose decision it executes,
 * `migrate-continue` at pre-switchover, and a liveness check of the
 * destination agent), persists perform_done, calls MigrateFinish, and
 * confirms (the source QEMU stops and the guest's record goes); in
 * post-copy it watches the stream after finish and recovers it when the
 * link breaks (mig_postcopy_wait(), agent-migrate-postcopy.c).  With the
 * SSH transport the thread opens the tunnel after prepare (no lock held;
 * agent-stream-ssh.c pumps it on a thread of its own) and closes it when
 * the migration ended, whatever the outcome.  A failed
 * finish is handled by finish_failed() (docs/recovery.md, "Ambiguity
 * policy").  Failures are settled by mig_settle() (agent-migrate-settle.c),
 * whose resume of the source puts the settings back with
 * mig_restore_settings_locked() (agent-migrate-settings.c, beside the list
 * of what perform() changes).  Every step is published in the migration
 * table (agent-migtable.h).
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
#include <unistd.h>

#include "agent-peer.h"
#include "agent-stream.h"
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

/* The CPUs this host has online (at least 1). */
static unsigned host_cpus(void) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (unsigned) n : 1;
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
        char dest_name[200];    /* immutable: its host part, the name its certificate is checked for */
        MigStream stream;       /* migration thread only: where the destination listens (prepare's answer) */
        AgentMigPeer route;     /* immutable: the transport (never DEFAULT) and its SSH settings */
        SshTunnel *tunnel;      /* migration thread only: the SSH transport's tunnel, NULL otherwise */
        char sock[330];         /* migration thread only: the tunnel's socket, <run_dir>/<name>.mig */
        MigParams p;            /* immutable; defaults applied, validated */
        char *definition;       /* immutable; owned */
        uint64_t mem_mib;       /* immutable */
        MigStorage storage;     /* migration thread only: the local disks (n = 0: none) and the
                                 * destination's NBD server (agent-migrate-storage.c) */
        bool waiter;            /* unused */
} Source;

/* The SSH transport: the tunnel from a unix socket for this guest's QEMU
 * to the destination's loopback listener (agent-stream-ssh.c).  No lock
 * held during the network steps. */
static int open_tunnel(Source *s) {
        uid_t uid;
        gid_t gid;
        int r = agent_stream_qemu_ids(s->a, &uid, &gid);
        if (r < 0)
                return r;
        vm_lock(s->vm);
        pid_t pid = s->vm->pid;
        snprintf(s->sock, sizeof(s->sock), "%s/%s.mig", s->a->cfg.run_dir, s->vm->name);
        vm_unlock(s->vm);
        if (pid <= 0)
                return err_set(-ESRCH, "the source QEMU is gone");
        /* the destination's host as the session's end sees it: its loopback */
        return agent_stream_ssh_open(&s->route, s->stream.host, s->stream.port, s->sock, uid, gid, pid, &s->tunnel);
}

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
                   qmp_migrate_set_capabilities(mon_, -1, mig_source_caps(&s->p, s->storage.n > 0), true));
        if (r >= 0) {
                /* Bandwidth 0 (or compression) = unlimited: the link decides.  Auto-converge
                 * starts held at 1 % so that it is a later policy step. */
                MigrationParams mp = {
                        .has_max_bandwidth = true,
                        .max_bandwidth = mig_params_qemu_bandwidth(&s->p, s->p.bandwidth),
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
        MigrationParams mfd = { 0 };
        if (r >= 0 && mig_multifd_params(&s->p, &mfd))
                r = set_params(vm, op, &mfd);
        /* the destination's certificate must carry the name its agent was
         * reached by (the name the peer channel's TLS checked) */
        if (r >= 0 && s->stream.tls && !s->storage.n) /* with local disks: set up by the storage phase */
                r = agent_stream_tls_setup_locked(s->a, vm, ASYNC_JOB_MIGRATION_OUT, op, NULL, s->dest_name);
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
                /* the mirrors keep the disks in sync meanwhile: one that
                 * failed ends the migration now, not at switch-over */
                if (s->storage.n && mig_storage_stats_locked(vm, op, &s->storage, &st) == -EIO) {
                        r = -EIO;
                        break;
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
                /* pause-before-switchover (on for local disks, or switched
                 * on by someone else): QEMU stopped the vCPUs and waits,
                 * its disks still active.  The local disks' mirrors
                 * complete here (a consistent copy); then go on, once per
                 * pause (QEMU counts every continue) */
                if (st.status != MIGRATION_STATUS_PRE_SWITCHOVER)
                        continued = false;
                else if (!continued) {
                        if (s->storage.n && !s->storage.completed &&
                            (r = mig_storage_complete_locked(vm, op, &s->storage)) < 0)
                                break;
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
                        if (ans == PEER_GONE || ans == PEER_DEAD) {
                                r = err_set(-ECONNRESET, ans == PEER_DEAD ? "the destination QEMU died during the migration"
                                                                          : "the destination dropped its side of the migration");
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

/* ---- finish and its failures (docs/recovery.md, "Ambiguity policy") ------------------------ */

#define FINISH_UNSENT_RETRY_MS 10000 /* a finish that finds no connection is tried again this long */
#define FINISH_ASK_MS 2000           /* after a lost finish reply: the destination is asked this often */

/* MigrateFinish, with the deadline the destination itself works to
 * (mig_params_finish_limit_ms(); in post-copy the destination answers once
 * its vCPUs run, and the source watches the rest).  A call that never reached
 * the destination is tried again every second for FINISH_UNSENT_RETRY_MS
 * (its agent may be restarting: nothing local announces its return, so
 * this is a plain retry delay); once a call may have been seen, the series
 * ends.  *ret_failure as agent_peer_finish(), for the last call. */
static int call_finish(Source *s, AgentPeer *peer, bool postcopy, uint64_t stop_ms, uint64_t *resume_ms, bool *synced,
                       PeerFinishFailure *ret_failure) {
        Deadline d = deadline_in_ms(FINISH_UNSENT_RETRY_MS);
        /* post-copy: the destination answers at `cont` (return_at_cont),
         * so the base limit; an older one that answers at completion
         * fails the call, which is sent again after completion */
        int64_t limit_ms = mig_params_finish_limit_ms(&s->p, s->mem_mib, false);
        for (;;) {
                PeerFinishFailure f = PEER_FINISH_MAYBE_STARTED;
                int r = agent_peer_finish(peer, s->op, s->vm->uuid, postcopy, stop_ms, limit_ms, resume_ms, synced, &f);
                if (r >= 0 || f != PEER_FINISH_NOT_SENT || deadline_expired(d)) {
                        *ret_failure = f;
                        return r;
                }
                log_info("migration %s of %s: finish did not reach %s (%s); trying again", s->op, s->vm->name, s->dest,
                         err_msg());
                sleep_ms(1000);
        }
}

/* How a settled migration ended for the source copy, for the result. */
static const char *source_outcome(Vm *vm) {
        vm_lock(vm);
        bool running = vm->state == VM_STATE_RUNNING && vm->job.async == ASYNC_JOB_NONE;
        vm_unlock(vm);
        return running ? "the source resumed the guest" : "the source copy was stopped";
}

/* finish failed with @r.  When no call can have started the guest there
 * (@f), the table resumes the source at once.  Otherwise the destination
 * may run the guest: keep the source paused and ask it every 2 s for
 * cfg.finish_ask_ms (in post-copy at least the completion timeout: a
 * post-copy within its limit is not a failure), saying so in GetGuest and
 * the migration's events; then end the migration with the alert and leave
 * the guest paused with its job, which the recovery thread keeps asking
 * about.  Between two questions it waits on vm->cond, so an operator's
 * MigrateAbort (the RESUME event) or Destroy (QEMU's death) ends the wait
 * at once. */
static void finish_failed(Source *s, int r, PeerFinishFailure f, bool postcopy) {
        Agent *a = s->a;
        Vm *vm = s->vm;
        char why[ERR_MSG_MAX], msg[ERR_MSG_MAX + 1536]; /* two addresses, an op id and the text */
        int sr;

        snprintf(why, sizeof(why), "%s", err_str(r));
        if (f != PEER_FINISH_MAYBE_STARTED) {
                log_warning("migration %s of %s: finish %s %s (%s): it cannot run the guest; resuming the source",
                            s->op, vm->name, f == PEER_FINISH_NOT_SENT ? "never reached" : "was refused before cont by",
                            s->dest, why);
                sr = mig_settle_finish_not_started(a, vm, s->op, s->dest);
                snprintf(msg, sizeof(msg), "%s %s (%s): the guest cannot have started there; %s%s",
                         f == PEER_FINISH_NOT_SENT ? "finish never reached" : "finish was not started by", s->dest, why,
                         sr == 1 ? source_outcome(vm) : "resuming the source failed, recovery retries",
                         f == PEER_FINISH_NOT_SENT ? ", and the destination drops its copy when its agent is back" : "");
                vm_lock(vm);
                vm_set_error_locked(vm, "migration %s: %s", s->op, msg);
                vm_unlock(vm);
                agent_migtable_done(a->migrations, s->m, -EIO, msg);
                return;
        }

        log_fields(LOG_LEVEL_WARNING,
                   LOG_FIELDS(.guest = vm->name, .op = s->op, .phase = job_phase_to_string(JOB_PHASE_FINISH)),
                   "migration %s of %s: finish on %s failed: %s; the destination may run the guest: asking it",
                   s->op, vm->name, s->dest, why);
        uint64_t t0 = now_ns();
        int64_t ask_ms = a->cfg.finish_ask_ms;
        if (postcopy && ask_ms < (int64_t) mig_params_completion_ms(&s->p, s->mem_mib))
                ask_ms = (int64_t) mig_params_completion_ms(&s->p, s->mem_mib);
        for (;;) {
                sr = mig_settle(a, vm, s->op, s->dest);
                uint64_t waited_ms = (now_ns() - t0) / NSEC_PER_MSEC;
                if (sr != 0 || waited_ms >= (uint64_t) ask_ms)
                        break;
                snprintf(msg, sizeof(msg), "finish sent to %s, no answer for %llu s: the guest stays paused here "
                         "until %s answers (asked every 2 s; alert after %lld s) or an operator decides "
                         "(docs/recovery.md, \"Ambiguity policy\"); finish failed with: %s", s->dest,
                         (unsigned long long) waited_ms / 1000, s->dest, (long long) ask_ms / 1000, why);
                vm_lock(vm);
                vm_set_error_locked(vm, "migration %s: %s", s->op, msg);
                vm_unlock(vm);
                agent_migtable_event(a->migrations, s->m, "%s", msg);
                /* until the next question, the job's end (an operator's
                 * MigrateAbort) or QEMU's death (Destroy) */
                Deadline next = deadline_in_ms(FINISH_ASK_MS);
                vm_lock(vm);
                while (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_OUT, s->op) && vm_wait_locked(vm, next) == 0)
                        ;
                vm_unlock(vm);
        }
        if (sr == 0) {
                snprintf(msg, sizeof(msg), "ALERT: finish sent to %s, no answer for %lld s: the guest stays "
                         "paused here until %s answers (recovery keeps asking every 2 s) or an operator runs "
                         "MigrateAbort with op_id %s here (it does not run there) or Destroy here (it runs there); "
                         "docs/recovery.md, \"Ambiguity policy\"; finish failed with: %s", s->dest,
                         (long long) ask_ms / 1000, s->dest, s->op, why);
                log_error("guest %s: %s", vm->name, msg);
                vm_lock(vm);
                vm_set_error_locked(vm, "migration %s: %s", s->op, msg);
                vm_unlock(vm);
                agent_migtable_done(a->migrations, s->m, -EIO, msg);
                return;
        }
        Vm *still_here = vm_registry_lookup_uuid(a->vms, vm->uuid);
        bool moved = sr == 1 && !still_here; /* the source killed its copy: the guest moved */
        vm_unref(still_here);
        snprintf(msg, sizeof(msg), "finish on %s failed (%s); asked again: %s", s->dest, why,
                 sr == 1 ? source_outcome(vm) : err_msg());
        agent_migtable_done(a->migrations, s->m, moved ? 0 : -EIO, moved ? NULL : msg);
}

static void *source_thread(void *arg) {
        Source *s = arg;
        Agent *a = s->a;
        Vm *vm = s->vm;
        MigrationTable *t = a->migrations;
        MigrationStats st = { 0 };
        AgentPeer *peer = NULL;
        int r;

        /* prepare (destination) */
        agent_migtable_phase(t, s->m, JOB_PHASE_PREPARE, NULL);
        r = agent_peer_open(a, s->dest, &peer);
        if (r >= 0)
                r = agent_peer_prepare(peer, s->op, s->definition, &s->p, advertised_address(a), 60000, &s->storage,
                                       &s->stream);
        /* both ends use the transport asked for (an older destination
         * answers TLS or plain, whatever it was asked) */
        if (r >= 0 && s->stream.transport != s->p.transport)
                r = err_set(-EPROTO, "the destination listens for a %s stream, and this migration uses %s",
                            mig_transport_to_string(s->stream.transport), mig_transport_to_string(s->p.transport));
        /* a destination whose QEMU offers no multifd set up one stream */
        if (r >= 0 && s->stream.multifd_channels == 1 && s->p.multifd_channels > 1) {
                if (s->p.compression != MIG_COMPRESSION_NONE)
                        r = err_set(-EPROTO, "the destination prepared no multifd, which compression needs");
                else {
                        agent_migtable_event(t, s->m, "the destination's QEMU offers no multifd: one stream "
                                             "instead of %u channels", s->p.multifd_channels);
                        s->p.multifd_channels = 1;
                }
        }
        const char *stage = "prepare";
        if (r >= 0 && s->p.transport == MIG_TRANSPORT_SSH) {
                stage = "the SSH tunnel to";
                r = open_tunnel(s);
        }
        if (r < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s %s failed: %s", stage, s->dest, err_str(r));
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
        if (s->tunnel)
                snprintf(vm->mig.uri, sizeof(vm->mig.uri), "unix:%.200s", s->sock); /* at most 107 bytes: a unix socket */
        else
                snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", s->stream.uri);
        vm_unlock(vm);
        if (s->stream.tls)
                agent_migtable_event(t, s->m, "destination prepared %s (TLS, its certificate checked for %s)",
                                     s->stream.uri, s->dest_name);
        else if (s->tunnel)
                agent_migtable_event(t, s->m, "destination prepared %s, reached through SSH (%s)", s->stream.uri,
                                     agent_stream_ssh_describe(s->tunnel));
        else {
                log_warning("migration %s of %s: dev_mode: the stream to %s is PLAINTEXT and unauthenticated", s->op,
                            vm->name, s->stream.uri);
                agent_migtable_event(t, s->m, "destination prepared %s (plaintext: dev_mode)", s->stream.uri);
        }
        agent_migtable_stream(t, s->m, s->mem_mib << 20, s->p.multifd_channels > 1 ? s->p.multifd_channels : 1,
                              s->p.compression);
        /* storage: the local disks are mirrored into the destination's
         * exports (no memory sent yet); a failure settles as perform's */
        JobPhase failed_in = JOB_PHASE_PERFORM;
        if (s->storage.n &&
            (r = mig_storage_copy(a, vm, s->op, s->m, &s->storage, s->stream.tls ? s->dest_name : NULL,
                                  mig_params_qemu_bandwidth(&s->p, s->p.bandwidth),
                                  mig_params_completion_ms(&s->p, mig_storage_bytes(&s->storage) >> 20))) < 0)
                failed_in = JOB_PHASE_STORAGE;
        if (r >= 0) {
                vm_lock(vm);
                r = job_set_phase(vm, JOB_PHASE_PERFORM);
                vm_unlock(vm);
        }
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
                const char *terr = agent_stream_ssh_error(s->tunnel);
                snprintf(why, sizeof(why), "%s%s%s", err_str(pr), terr ? "; the SSH tunnel: " : "", terr ? terr : "");
                log_fields(LOG_LEVEL_WARNING,
                           LOG_FIELDS(.guest = vm->name, .op = s->op, .phase = job_phase_to_string(failed_in)),
                           "migration %s of %s failed in %s: %s", s->op, vm->name, job_phase_to_string(failed_in), why);
                int sr = mig_settle(a, vm, s->op, s->dest); /* perform: resume the source, drop the destination */
                /* Before perform_done the destination can never have run
                 * the guest (rule 1): whoever settled, its copy goes. */
                if (!postcopy && peer && agent_peer_cancel(peer, s->op, vm->uuid, PEER_CALL_MS) < 0)
                        log_warning("migration %s of %s: telling %s to drop its copy failed: %s (its watchdog will)",
                                    s->op, vm->name, s->dest, err_msg());
                vm_lock(vm);
                vm_set_error_locked(vm, "migration %s failed: %s", s->op, why);
                vm_unlock(vm);
                if (sr != 1) {
                        size_t len = strlen(why);
                        snprintf(why + len, sizeof(why) - len, "; the source is not resumed yet (recovery retries)");
                }
                agent_migtable_done(t, s->m, -EIO, why);
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
        PeerFinishFailure ff;
        uint64_t finish_ns = now_ns();
        r = call_finish(s, peer, postcopy, stop_ms, &resume_ms, &synced, &ff);
        finish_ns = now_ns() - finish_ns;
        /* rounded up: a call made is never 0 */
        agent_migtable_finish_call(t, s->m, (finish_ns + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
        if (r < 0 && !postcopy) {
                finish_failed(s, r, ff, postcopy);
                goto out;
        }

        if (postcopy) {
                /* The destination runs (it answers at `cont`); the source
                 * serves the rest of the pages and watches the stream,
                 * recovering it when the link breaks (docs/migration.md,
                 * "Post-copy recovery").  A finish that failed is sent
                 * again at completion: it is idempotent, and a destination
                 * whose vCPUs never started must start them then. */
                int wr = mig_postcopy_wait(a, vm, s->op, s->dest, s->m, mig_params_completion_ms(&s->p, s->mem_mib),
                                           &st);
                if (wr < 0) {
                        char why[ERR_MSG_MAX];
                        snprintf(why, sizeof(why), "%s", err_str(wr));
                        if (!strstr(why, "ALERT:"))
                                wr = mig_pc_give_up(a, vm, s->op, why);
                        snprintf(why, sizeof(why), "%s", err_str(wr));
                        agent_migtable_phase(t, s->m, JOB_PHASE_POSTCOPY_FAILED, &st);
                        agent_migtable_done(t, s->m, -EIO, why);
                        goto out;
                }
                if (r < 0) {
                        log_info("migration %s of %s: post-copy completed; finish failed earlier (%s): sending it "
                                 "again", s->op, vm->name, err_msg());
                        if ((r = call_finish(s, peer, postcopy, stop_ms, &resume_ms, &synced, &ff)) < 0) {
                                finish_failed(s, r, ff, postcopy);
                                goto out;
                        }
                }
        }

        /* confirm */
        finish_result(s, &st, resume_ms, synced, postcopy);
        agent_migtable_phase(t, s->m, JOB_PHASE_CONFIRM, &st);
        (void) mig_kill_source(a, vm, s->op);
        agent_migtable_done(t, s->m, 0, NULL);
        log_fields(LOG_LEVEL_INFO,
                   LOG_FIELDS(.guest = vm->name, .op = s->op, .phase = job_phase_to_string(JOB_PHASE_CONFIRM)),
                   "migration %s of %s completed", s->op, vm->name);

out:
        agent_stream_ssh_close(s->tunnel);
        agent_peer_close(peer);
        free(s->definition);
        vm_unref(vm);
        free(s);
        atomic_fetch_sub(&a->background, 1);
        return NULL;
}

int agent_migrate(Agent *a, Vm *vm, const char *op, const char *dest_addr, const MigParams *params, bool wait,
                  MigResult *ret) {
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
        host_of(dest_addr, s->dest_name, sizeof(s->dest_name));
        if ((r = agent_stream_outgoing(a, s->dest_name, p.transport, &s->route)) < 0) {
                free(s);
                return err_prefix(r, "cannot migrate %s to %s", vm->name, dest_addr);
        }
        s->p.transport = s->route.transport; /* the destination is told, never left to guess */
        s->mem_mib = ((AgentVm *) vm->ops.opaque)->def.memory_mib;
        /* local disks: their sizes now, and what rules them out */
        if ((r = mig_storage_plan(&((AgentVm *) vm->ops.opaque)->def, &s->p, &s->storage)) < 0) {
                free(s);
                return err_prefix(r, "cannot migrate %s", vm->name);
        }

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
        uint64_t known = 0;
        r = mig_save_settings_locked(vm, op, &known);
        /* multifd by default (core/migparams.h): the link is the bandwidth
         * cap when one is set, else taken as 1 Gbit/s */
        if (r >= 0)
                r = mig_multifd_resolve(&s->p, s->p.bandwidth, host_cpus(),
                                        known & MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD));
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
        bool override = false;
        char peer[sizeof(vm->mig.peer)];
        vm_lock(vm);
        if ((r = job_begin(vm, JOB_ABORT, op, "migrate-abort", -1)) < 0)
                goto out;
        snprintf(peer, sizeof(peer), "%s", vm->mig.peer);
        if (vm->mig.postcopy_started) {
                r = err_set(-EBUSY, "migration of %s is in post-copy: it can only complete", vm->name);
        } else if (vm->job.phase == JOB_PHASE_PERFORM_DONE) {
                /* finish may have started the guest on the destination: only
                 * an operator who checked resumes the source, by naming the
                 * migration (docs/recovery.md, "Ambiguity policy") */
                override = strcmp(op, mop) == 0;
                if (!override)
                        r = err_set(-EBUSY, "migration %s of %s is past perform_done: the destination %s may run the "
                                    "guest, so it is not aborted; if you checked that %s does not run it, call "
                                    "MigrateAbort with op_id %s; if it does, Destroy it here", mop, vm->name, peer,
                                    peer, mop);
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
        if (override) {
                log_warning("guest %s, migration %s: an operator states that %s does not run the guest: resuming the "
                            "source", vm->name, mop, peer);
                RecoveryDecision d = { RECOVER_RESUME_SOURCE,
                                       "an operator checked that the destination does not run the guest" };
                int sr = mig_apply_decision(a, vm, mop, peer, d);
                if (sr < 0)
                        r = sr;
                else if (sr == 0)
                        r = err_set(-EAGAIN, "resuming the source of %s failed: %s", vm->name, err_msg());
        }
        return r;
}

int agent_migrate_tune(Agent *a, Vm *vm, const char *op, uint64_t bandwidth, uint32_t downtime_ms) {
        const char *mop;
        char buf[OP_ID_MAX], what[144];
        int r = with_outgoing(a, vm, &mop, buf);
        if (r < 0)
                return r;
        if (!bandwidth && !downtime_ms)
                return err_set(-EINVAL, "give a bandwidth, a downtime limit, or both");
        if (downtime_ms > 60000)
                return err_set(-EINVAL, "'downtime_limit_ms' above 60000 is not allowed");
        /* a compressed stream keeps no cap (mig_params_qemu_bandwidth()) */
        MigResult rec;
        if (bandwidth && agent_migtable_result_of(a->migrations, mop, false, &rec) == 0 &&
            rec.compression != MIG_COMPRESSION_NONE)
                bandwidth = mig_params_qemu_bandwidth(&(MigParams){ .compression = rec.compression }, bandwidth);
        MigrationParams mp = {
                .has_max_bandwidth = bandwidth != 0, .max_bandwidth = bandwidth,
                .has_downtime_limit = downtime_ms != 0, .downtime_limit = downtime_ms,
        };
        const GuestDef *def = &((AgentVm *) vm->ops.opaque)->def;
        snprintf(what, sizeof(what), "%s%.0llu%s%.0u%s", bandwidth ? "bandwidth " : "", (unsigned long long) bandwidth,
                 bandwidth && downtime_ms ? " B/s, downtime limit " : downtime_ms ? "downtime limit " : " B/s",
                 downtime_ms, downtime_ms ? " ms" : "");
        vm_lock(vm);
        if ((r = job_begin(vm, JOB_MIGRATION_OP, op, "migrate-set-parameters", -1)) >= 0) {
                QmpMonitor *mon;
                if ((r = vm_enter_monitor(vm, &mon)) == 0) {
                        r = qmp_migrate_set_parameters(mon, -1, &mp);
                        /* local disks: their running mirrors follow the cap */
                        if (r >= 0 && bandwidth && mig_storage_set_speed(def, mon, bandwidth) > 0)
                                snprintf(what + strlen(what), sizeof(what) - strlen(what), " (also the disk mirrors)");
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
