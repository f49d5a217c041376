/* The Agent service's migration handlers (see agent-rpc-priv.h): Migrate
 * and its controls, the progress stream, the peer calls of the
 * destination side (MigratePrepare, MigrateFinish, MigrateCancel,
 * MigrationOwner, MigrateRecover), MigrateRecoverNow and the reads of operations (GetOperation,
 * WatchOperation), which follow a migrate operation's record in the
 * migration table.  The frame and the shared fillers are agent-rpc.c's. */
#include "agent-rpc-priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-migrate.h"
#include "agent-peer.h"
#include "err.h"
#include "log.h"
#include "migparams-pb.h"

/* ---- migration ---------------------------------------------------------------- */

static Drover__V1__MigrationStats *new_stats(RpcCall *c, const MigrationStats *st) {
        VmSnapshot s = { 0 };
        Drover__V1__GuestStatus tmp = DROVER__V1__GUEST_STATUS__INIT;
        s.migration = *st;
        s.migration_age_ms = 0;
        arpc_fill_status(c, &tmp, &s);
        return tmp.migration;
}

static Drover__V1__MigrationResult *new_result(RpcCall *c, const MigResult *m) {
        Drover__V1__MigrationResult *o = rpc_call_alloc(c, sizeof(*o));
        drover__v1__migration_result__init(o);
        o->op_id = rpc_call_strdup(c, m->op);
        o->guest = rpc_call_strdup(c, m->guest);
        o->done = m->done;
        o->success = m->success;
        o->error = rpc_call_strdup(c, m->error);
        o->phase = (char *) job_phase_to_string(m->phase);
        o->total_ms = m->total_ms;
        o->downtime_ms = m->downtime_ms;
        o->measured_downtime_ms = m->measured_downtime_ms;
        o->transferred_bytes = m->transferred;
        o->multifd_bytes = m->multifd_bytes;
        o->guest_memory_bytes = m->memory_bytes;
        o->multifd_channels = m->multifd_channels;
        o->compression = (Drover__V1__MigrationCompression) m->compression; /* the same numbers */
        o->postcopy = m->postcopy;
        o->guest_time_synced = m->time_synced;
        o->finish_call_ms = m->finish_call_ms;
        o->disk_bytes = m->disk_bytes;
        o->n_policy_steps = m->n_steps;
        o->policy_steps = rpc_call_alloc(c, (m->n_steps + 1) * sizeof(char *));
        for (size_t i = 0; i < m->n_steps; i++)
                o->policy_steps[i] = rpc_call_strdup(c, m->steps[i]);
        return o;
}

RpcCode h_migrate(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__MigrateRequest *req = (const void *) req_;
        Drover__V1__MigrateResponse *resp = (void *) resp_;
        MigParams p;
        MigResult res;
        AgentOpInfo o;
        Handler h;
        RpcCode code = arpc_guest(&h, c, user, req->guest, req->op_id);
        if (code != RPC_OK)
                return code;
        mig_params_from_pb(req->params, &p);
        mig_params_defaults(&p);
        /* the deprecated `wait` is not read: the call answers at once and the
         * client follows the operation (docs/agent.md, "Operations") */
        /* destination_stream_host is deprecated and ignored: the
         * destination says where it listens */
        int r = agent_ops_migrate(h.a, h.vm, h.op, req->destination, &p, &o, &res);
        if (r < 0)
                return arpc_end_r(&h, r);
        if (res.op[0])
                resp->result = new_result(c, &res);
        resp->operation_id = rpc_call_strdup(c, o.id);
        resp->operation_state = arpc_op_state(o.state);
        agent_op_info_clear(&o);
        return arpc_end(&h, RPC_OK);
}

RpcCode h_migrate_abort(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__GuestRef *req = (const void *) req_;
        MigResult res;
        Handler h;
        RpcCode code = arpc_guest(&h, c, user, req->guest, req->op_id);
        if (code != RPC_OK)
                return code;
        int r = agent_migrate_abort(h.a, h.vm, h.op);
        if (r < 0)
                return arpc_end_r(&h, r);
        /* answer when the migration thread has resumed the source */
        Deadline d = deadline_in_ms(30000);
        while (agent_migration_get(h.a, h.vm->name, &res) == 0 && !res.done && !deadline_expired(d))
                sleep_ms(20);
        Drover__V1__MigrationResult *o = new_result(c, &res);
        *(Drover__V1__MigrationResult *) resp_ = *o;
        return arpc_end(&h, RPC_OK);
}

RpcCode h_migrate_tune(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__MigrateTuneRequest *req = (const void *) req_;
        Handler h;
        RpcCode code = arpc_guest(&h, c, user, req->guest, req->op_id);
        if (code != RPC_OK)
                return code;
        int r = agent_migrate_tune(h.a, h.vm, h.op, req->bandwidth_bytes_per_s, req->downtime_limit_ms);
        return arpc_end_status(&h, r, (void *) resp_);
}

RpcCode h_migrate_postcopy(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        return arpc_guest_op(c, user, (const void *) req_, agent_migrate_start_postcopy, (void *) resp_);
}

RpcCode h_get_migration(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__GuestRef *req = (const void *) req_;
        Agent *a = user;
        Handler h;
        MigResult res;
        arpc_enter(&h, c, user);
        if (!req->guest[0])
                return arpc_end(&h, rpc_call_fail(c, RPC_INVALID_ARGUMENT, "'guest' is required"));
        int r = agent_migration_get(a, req->guest, &res);
        if (r < 0)
                return arpc_end_r(&h, r);
        *(Drover__V1__MigrationResult *) resp_ = *new_result(c, &res);
        return arpc_end(&h, RPC_OK);
}

RpcCode h_watch_migration(RpcCall *c, const ProtobufCMessage *req_, void *user) {
        const Drover__V1__WatchMigrationRequest *req = (const void *) req_;
        uint64_t gen = 0;
        Handler h;
        RpcCode code = arpc_stream_enter(&h, c, user);
        if (code != RPC_OK)
                return code;
        Agent *a = h.a;
        MigResult *batch = malloc(16 * sizeof(*batch));
        int id = batch ? agent_migrations_subscribe(a, arpc_wake_call, c) : -ENOMEM;
        if (id < 0) {
                free(batch);
                return arpc_stream_end(&h, arpc_fail(c, id));
        }
        for (;;) {
                size_t n = agent_migrations_changed(a, &gen, batch, 16);
                for (size_t i = 0; i < n; i++) {
                        if (req->guest[0] && strcmp(req->guest, batch[i].guest) != 0)
                                continue;
                        Drover__V1__MigrationProgress ev = DROVER__V1__MIGRATION_PROGRESS__INIT;
                        ev.op_id = batch[i].op;
                        ev.guest = batch[i].guest;
                        ev.side = (char *) (batch[i].outgoing ? "source" : "destination");
                        ev.phase = (char *) job_phase_to_string(batch[i].phase);
                        ev.stats = new_stats(c, &batch[i].stats);
                        ev.event = batch[i].last_event;
                        ev.elapsed_ms = batch[i].elapsed_ms;
                        if (batch[i].done)
                                ev.result = new_result(c, &batch[i]);
                        if (rpc_call_send(c, &ev.base) < 0)
                                goto done;
                }
                if (n == 16)
                        continue;
                if (rpc_call_wait(c, -1) == RPC_WAIT_CANCELLED)
                        break;
        }
done:
        agent_migrations_unsubscribe(a, id);
        free(batch);
        return arpc_stream_end(&h, code);
}

/* The op id a peer call or an operation read names: required, and never
 * cut or compared against a cut copy (op_id_check()).  RPC_OK, or
 * INVALID_ARGUMENT with the call ended (stream: whether @h began with
 * arpc_stream_enter()). */
static RpcCode peer_op_check(Handler *h, const char *op_id, bool stream) {
        if (op_id_check(op_id) >= 0)
                return RPC_OK;
        RpcCode code = rpc_call_fail(h->c, RPC_INVALID_ARGUMENT, "%s", err_msg());
        return stream ? arpc_stream_end(h, code) : arpc_end(h, code);
}

/* The DN of the certificate that makes call @c into @dn ("" on a
 * plaintext call: dev_mode).  0, or -EACCES with the detail. */
static int caller_dn(RpcCall *c, const char *what, char *dn, size_t size) {
        char *pem = NULL;
        dn[0] = '\0';
        if (rpc_call_peer_cert_pem(c, &pem) < 0)
                return 0;
        int r = agent_stream_tls_dn(pem, dn, size);
        free(pem);
        err_clear();
        return r < 0 ? err_set(-EACCES, "%s: the caller's certificate cannot be read", what) : 0;
}

RpcCode h_prepare(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        Agent *a = user;
        Handler h;
        const Drover__V1__MigratePrepareRequest *req = (const void *) req_;
        Drover__V1__MigratePrepareResponse *resp = (void *) resp_;
        MigParams p;
        MigStream s;
        char dn[MIG_TLS_DN_MAX];
        arpc_enter(&h, c, user);
        RpcCode code = peer_op_check(&h, req->op_id, false);
        if (code != RPC_OK)
                return code;
        /* the stream admits the certificate of this call, nothing else, and
         * only it may finish or cancel; req->stream_host is deprecated and
         * ignored */
        int dr = caller_dn(c, "prepare", dn, sizeof(dn));
        if (dr < 0)
                return arpc_end_r(&h, dr);
        err_clear();
        mig_params_from_pb(req->params, &p);
        mig_params_defaults(&p);
        if (mig_params_validate(&p) < 0) /* the same rules as the source's (core/migparams.h) */
                return arpc_end(&h, rpc_call_fail(c, RPC_INVALID_ARGUMENT, "%s", err_msg()));
        if (p.postcopy != POSTCOPY_POLICY_NEVER && !agent_postcopy_available())
                return arpc_end(&h, rpc_call_fail(c, RPC_FAILED_PRECONDITION,
                                                  "post-copy is unavailable on this host: QEMU runs unprivileged and "
                                                  "vm.unprivileged_userfaultfd is 0 (docs/agent.md, \"Guest files and "
                                                  "the QEMU user\")"));
        MigStorage st = { 0 };
        if (req->n_local_disks > MIG_STORAGE_MAX)
                return arpc_end(&h, rpc_call_fail(c, RPC_INVALID_ARGUMENT, "prepare: %zu local disks, at most %d",
                                                  req->n_local_disks, MIG_STORAGE_MAX));
        for (size_t i = 0; i < req->n_local_disks; i++) {
                const Drover__V1__MigrateLocalDisk *d = req->local_disks[i];
                st.disks[i].index = d->index;
                st.disks[i].virtual_size = d->virtual_size;
                snprintf(st.disks[i].format, sizeof(st.disks[i].format), "%s", d->format ? d->format : "");
        }
        st.n = req->n_local_disks;
        int r = agent_migrate_prepare(a, req->op_id, req->definition_json, &p, req->source, dn[0] ? dn : NULL,
                                      &st, &s);
        if (r < 0)
                return arpc_end_r(&h, r);
        if (st.n) {
                char **ex = rpc_call_alloc(c, st.n * sizeof(*ex));
                if (!ex)
                        return arpc_end(&h, rpc_call_fail(c, RPC_RESOURCE_EXHAUSTED, "out of memory"));
                for (size_t i = 0; i < st.n; i++)
                        ex[i] = rpc_call_strdup(c, st.exports[i]);
                resp->nbd_host = rpc_call_strdup(c, st.nbd_host);
                resp->nbd_port = st.nbd_port;
                resp->nbd_exports = ex;
                resp->n_nbd_exports = st.n;
        }
        resp->uri = rpc_call_strdup(c, s.uri);
        resp->host = rpc_call_strdup(c, s.host);
        resp->port = s.port;
        resp->tls = s.tls;
        resp->transport = (Drover__V1__MigrationTransport) s.transport;
        resp->multifd_channels = s.multifd_channels;
        return arpc_end(&h, RPC_OK);
}

RpcCode h_finish(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        Agent *a = user;
        Handler h;
        const Drover__V1__MigrateFinishRequest *req = (const void *) req_;
        Drover__V1__MigrateFinishResponse *resp = (void *) resp_;
        bool synced = false;
        char dn[MIG_TLS_DN_MAX];
        arpc_enter(&h, c, user);
        RpcCode code = peer_op_check(&h, req->op_id, false);
        if (code != RPC_OK)
                return code;
        int r = caller_dn(c, "finish", dn, sizeof(dn));
        if (r < 0 || (r = agent_migrate_check_caller(a, req->op_id, req->guest, dn)) < 0)
                return arpc_end_r(&h, r);
        r = agent_migrate_finish(a, req->op_id, req->guest, req->postcopy, req->postcopy_return_at_cont,
                                 req->source_stop_unix_ms,
                                     &resp->resume_unix_ms, &synced);
        resp->guest_time_synced = synced;
        return arpc_end_r(&h, r);
}

RpcCode h_cancel(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        Agent *a = user;
        Handler h;
        const Drover__V1__MigrateCancelRequest *req = (const void *) req_;
        char dn[MIG_TLS_DN_MAX];
        (void) resp_;
        arpc_enter(&h, c, user);
        RpcCode code = peer_op_check(&h, req->op_id, false);
        if (code != RPC_OK)
                return code;
        int r = caller_dn(c, "cancel", dn, sizeof(dn));
        if (r < 0 || (r = agent_migrate_check_caller(a, req->op_id, req->guest, dn)) < 0)
                return arpc_end_r(&h, r);
        r = agent_migrate_cancel(a, req->op_id, req->guest);
        return arpc_end_r(&h, r);
}

/* Bound to the preparer, as Finish and Cancel: the new listener admits
 * only the certificate that called Prepare. */
RpcCode h_recover(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        Agent *a = user;
        Handler h;
        const Drover__V1__MigrateRecoverRequest *req = (const void *) req_;
        Drover__V1__MigratePrepareResponse *resp = (void *) resp_;
        MigStream s;
        char dn[MIG_TLS_DN_MAX];
        arpc_enter(&h, c, user);
        RpcCode code = peer_op_check(&h, req->op_id, false);
        if (code != RPC_OK)
                return code;
        int r = caller_dn(c, "recover", dn, sizeof(dn));
        if (r < 0 || (r = agent_migrate_check_caller(a, req->op_id, req->guest, dn)) < 0)
                return arpc_end_r(&h, r);
        if ((r = agent_migrate_recover(a, req->op_id, req->guest, &s)) < 0)
                return arpc_end_r(&h, r);
        resp->uri = rpc_call_strdup(c, s.uri);
        resp->host = rpc_call_strdup(c, s.host);
        resp->port = s.port;
        resp->tls = s.tls;
        resp->transport = (Drover__V1__MigrationTransport) s.transport;
        return arpc_end(&h, RPC_OK);
}

RpcCode h_migrate_recover_now(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        return arpc_guest_op(c, user, (const void *) req_, agent_migrate_recover_now, (void *) resp_);
}

/* Any agent may ask, not only the one that prepared: the question changes
 * nothing, its answer is a phase of a migration whose op id the asker
 * knows already, and it goes both ways (a destination asks the source of
 * an outgoing migration, for which no Prepare bound a certificate). */
RpcCode h_owner(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        Agent *a = user;
        Handler h;
        const Drover__V1__MigrationOwnerRequest *req = (const void *) req_;
        Drover__V1__MigrationOwnerResponse *resp = (void *) resp_;
        char detail[256];
        JobPhase phase;
        arpc_enter(&h, c, user);
        RpcCode code = peer_op_check(&h, req->op_id, false);
        if (code != RPC_OK)
                return code;
        PeerAnswer ans = agent_migration_owner(a, req->op_id, req->guest, detail, sizeof(detail), &phase);
        switch (ans) {
        case PEER_RUNNING: resp->state = DROVER__V1__PEER_STATE__PEER_STATE_RUNNING; break;
        case PEER_PAUSED_COMPLETE: resp->state = DROVER__V1__PEER_STATE__PEER_STATE_PAUSED_COMPLETE; break;
        case PEER_PAUSED: resp->state = DROVER__V1__PEER_STATE__PEER_STATE_PAUSED; break;
        case PEER_POSTCOPY: resp->state = DROVER__V1__PEER_STATE__PEER_STATE_POSTCOPY; break;
        case PEER_DEAD: resp->state = DROVER__V1__PEER_STATE__PEER_STATE_DEAD; break;
        case PEER_GONE: resp->state = DROVER__V1__PEER_STATE__PEER_STATE_GONE; break;
        /* this side could not read its own state: never "gone", which
         * would let the asker act */
        case PEER_UNREACHABLE:
        case PEER_NOT_ASKED:
        case PEER_MAX: resp->state = DROVER__V1__PEER_STATE__PEER_STATE_UNKNOWN; break;
        }
        resp->phase = (char *) job_phase_to_string(phase);
        resp->detail = rpc_call_strdup(c, detail);
        return arpc_end(&h, RPC_OK);
}

/* ---- operations ---------------------------------------------------------------- */

/* Operation @o as a message in the call's arena; @mig: the migration's
 * record for a migrate operation (NULL: none). */
static Drover__V1__Operation *new_operation(RpcCall *c, const AgentOpInfo *o, const MigResult *mig) {
        Drover__V1__Operation *m = rpc_call_alloc(c, sizeof(*m));
        drover__v1__operation__init(m);
        m->op_id = rpc_call_strdup(c, o->id);
        m->kind = (char *) agent_op_kind_to_string(o->kind);
        m->guest = rpc_call_strdup(c, o->guest);
        m->state = arpc_op_state(o->state);
        m->done = o->state != AGENT_OP_RUNNING;
        m->error_code = o->state == AGENT_OP_FAILED ? (int32_t) rpc_status_from_errno(arpc_status_errno(o->err)) : 0;
        m->error = rpc_call_strdup(c, o->error);
        m->created_unix_ms = o->created_unix_ms;
        m->ended_unix_ms = o->ended_unix_ms;
        m->generation = o->generation;
        if (o->result.has_status) {
                m->guest_status = rpc_call_alloc(c, sizeof(*m->guest_status));
                drover__v1__guest_status__init(m->guest_status);
                arpc_fill_status(c, m->guest_status, &o->result.status);
        }
        if (mig)
                m->migration = new_result(c, mig);
        if (o->state != AGENT_OP_SUCCEEDED)
                return m;
        ProtobufCMessage *reply = NULL; /* the guest-agent reply, in the member of its kind */
        switch (o->kind) {
        case AGENT_OP_GUEST_PING:
                drover__v1__guest_ping_response__init(m->guest_ping = rpc_call_alloc(c, sizeof(*m->guest_ping)));
                reply = &m->guest_ping->base;
                break;
        case AGENT_OP_GUEST_INFO:
                drover__v1__guest_info_response__init(m->guest_info = rpc_call_alloc(c, sizeof(*m->guest_info)));
                reply = &m->guest_info->base;
                break;
        case AGENT_OP_GUEST_SET_TIME:
                m->guest_set_time = rpc_call_alloc(c, sizeof(*m->guest_set_time));
                drover__v1__guest_set_time_response__init(m->guest_set_time);
                reply = &m->guest_set_time->base;
                break;
        case AGENT_OP_GUEST_GET_TIME:
                m->guest_get_time = rpc_call_alloc(c, sizeof(*m->guest_get_time));
                drover__v1__guest_get_time_response__init(m->guest_get_time);
                reply = &m->guest_get_time->base;
                break;
        default:
                break;
        }
        if (reply)
                arpc_fill_ga_reply(c, o->kind, &o->result, reply);
        return m;
}

/* Operation @id into *ret and, for a migrate operation whose record the
 * migration table still has, that record into *mig (*ret_has_mig says).
 * 0 or -ENOENT. */
static int read_operation(Agent *a, const char *id, AgentOpInfo *ret, MigResult *mig, bool *ret_has_mig) {
        int r = agent_ops_get(a, id, ret);
        if (r < 0)
                return r;
        *ret_has_mig = ret->kind == AGENT_OP_MIGRATE && agent_migtable_result_of(a->migrations, id, false, mig) >= 0;
        return 0;
}

RpcCode h_get_operation(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__OperationRef *req = (const void *) req_;
        AgentOpInfo o;
        MigResult mig;
        bool has_mig;
        Handler h;
        arpc_enter(&h, c, user);
        RpcCode code = peer_op_check(&h, req->op_id, false);
        if (code != RPC_OK)
                return code;
        int r = read_operation(h.a, req->op_id, &o, &mig, &has_mig);
        if (r < 0)
                return arpc_end_r(&h, r);
        *(Drover__V1__Operation *) resp_ = *new_operation(c, &o, has_mig ? &mig : NULL);
        agent_op_info_clear(&o);
        return arpc_end(&h, RPC_OK);
}

/* The current state, then every change (for a migrate operation also
 * every change of its migration's record), until a message with done. */
RpcCode h_watch_operation(RpcCall *c, const ProtobufCMessage *req_, void *user) {
        const Drover__V1__OperationRef *req = (const void *) req_;
        uint64_t sent_gen = 0, sent_mig_gen = 0;
        int mid = -1;
        Handler h;
        RpcCode code = arpc_stream_enter(&h, c, user);
        if (code != RPC_OK)
                return code;
        if ((code = peer_op_check(&h, req->op_id, true)) != RPC_OK)
                return code;
        Agent *a = h.a;
        MigResult *mig = malloc(sizeof(*mig));
        /* subscribed before the first read: no change can fall in between */
        int id = mig ? agent_ops_subscribe(a, arpc_wake_call, c) : -ENOMEM;
        if (id < 0) {
                free(mig);
                return arpc_stream_end(&h, arpc_fail(c, id));
        }
        for (;;) {
                AgentOpInfo o;
                bool has_mig;
                int r = read_operation(a, req->op_id, &o, mig, &has_mig);
                if (r < 0) {
                        code = arpc_fail(c, r);
                        break;
                }
                if (o.kind == AGENT_OP_MIGRATE && mid < 0) {
                        /* its progress is in the migration table: wake on that too, then read again */
                        agent_op_info_clear(&o);
                        if ((mid = agent_migrations_subscribe(a, arpc_wake_call, c)) < 0) {
                                code = arpc_fail(c, mid);
                                break;
                        }
                        continue;
                }
                bool running = o.state == AGENT_OP_RUNNING;
                int s = 0;
                if (o.generation != sent_gen || (has_mig && mig->generation != sent_mig_gen)) {
                        sent_gen = o.generation;
                        sent_mig_gen = has_mig ? mig->generation : 0;
                        s = rpc_call_send(c, &new_operation(c, &o, has_mig ? mig : NULL)->base);
                }
                agent_op_info_clear(&o);
                if (s < 0 || !running || rpc_call_wait(c, -1) == RPC_WAIT_CANCELLED)
                        break;
        }
        if (mid >= 0)
                agent_migrations_unsubscribe(a, mid);
        agent_ops_unsubscribe(a, id);
        free(mig);
        return arpc_stream_end(&h, code);
}
