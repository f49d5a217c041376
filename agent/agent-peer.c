/* Agent-to-agent calls (see agent-peer.h). */
#include "agent-peer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "agent.pb-c.h"
#include "err.h"
#include "fault.h"
#include "migparams-pb.h"
#include "rpcclient.h"

struct AgentPeer {
        RpcClient *cl; /* shared by threads; the client locks itself */
};

int agent_peer_open(Agent *a, const char *addr, AgentPeer **ret) {
        RpcTls tls = { .cert_file = a->cfg.tls_cert, .key_file = a->cfg.tls_key, .ca_file = a->cfg.tls_ca };
        RpcClientOptions o = { .tls = a->cfg.tls_cert[0] ? &tls : NULL, .default_timeout_ms = 10000,
                               .connect_timeout_ms = PEER_CONNECT_MS };
        AgentPeer *p = calloc(1, sizeof(*p));
        int r;
        if (!p)
                return err_set(-ENOMEM, "out of memory");
        if ((r = rpc_client_new(addr, &o, &p->cl)) < 0) {
                free(p);
                return err_prefix(r, "peer agent %s", addr);
        }
        *ret = p;
        return 0;
}

void agent_peer_close(AgentPeer *p) {
        if (!p)
                return;
        rpc_client_free(p->cl);
        free(p);
}

/* One call; @st (may be NULL) receives its status.  An injected fault
 * counts as "may have been seen" (not_sent false). */
static int call_status(AgentPeer *p, const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                       ProtobufCMessage **resp, RpcStatus *st) {
        RpcStatus local = { 0 };
        int r;
        st = st ? st : &local;
        *st = (RpcStatus){ 0 };
        if ((r = fault_hit_in("peer", method)) < 0) {
                st->code = RPC_UNAVAILABLE;
                return r;
        }
        return rpc_client_unary(p->cl, &drover__v1__agent__descriptor, method, req, timeout_ms, resp, st);
}

static int call(AgentPeer *p, const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                ProtobufCMessage **resp) {
        return call_status(p, method, req, timeout_ms, resp, NULL);
}

int agent_peer_prepare(AgentPeer *p, const char *op, const char *definition_json, const MigParams *mp,
                       const char *stream_host, const char *source_addr, int64_t timeout_ms, char *ret_uri,
                       size_t uri_size) {
        Drover__V1__MigratePrepareRequest req = DROVER__V1__MIGRATE_PREPARE_REQUEST__INIT;
        Drover__V1__MigrationParams params;
        Drover__V1__MigratePrepareResponse *resp = NULL;
        mig_params_to_pb(mp, &params);
        req.op_id = (char *) op;
        req.definition_json = (char *) definition_json;
        req.params = &params;
        req.stream_host = (char *) stream_host;
        req.source = (char *) source_addr;
        int r = call(p, "MigratePrepare", &req.base, timeout_ms, (ProtobufCMessage **) &resp);
        if (r < 0)
                return r;
        if (!resp->uri || strlen(resp->uri) >= uri_size || strncmp(resp->uri, "tcp:", 4) != 0) {
                r = err_set(-EPROTO, "destination answered an unusable migration URI '%s'", resp->uri ? resp->uri : "");
                drover__v1__migrate_prepare_response__free_unpacked(resp, NULL);
                return r;
        }
        snprintf(ret_uri, uri_size, "%s", resp->uri);
        drover__v1__migrate_prepare_response__free_unpacked(resp, NULL);
        return 0;
}

int agent_peer_finish(AgentPeer *p, const char *op, const char *uuid, bool postcopy, uint64_t stop_unix_ms,
                      int64_t timeout_ms, uint64_t *ret_resume_unix_ms, bool *ret_synced,
                      PeerFinishFailure *ret_failure) {
        Drover__V1__MigrateFinishRequest req = DROVER__V1__MIGRATE_FINISH_REQUEST__INIT;
        Drover__V1__MigrateFinishResponse *resp = NULL;
        RpcStatus st;
        req.op_id = (char *) op;
        req.guest = (char *) uuid;
        req.postcopy = postcopy;
        req.source_stop_unix_ms = stop_unix_ms;
        int r = call_status(p, "MigrateFinish", &req.base, timeout_ms, (ProtobufCMessage **) &resp, &st);
        if (r < 0) {
                PeerFinishFailure f = PEER_FINISH_MAYBE_STARTED;
                if (st.not_sent)
                        f = PEER_FINISH_NOT_SENT;
                else if (st.code == RPC_FAILED_PRECONDITION && strstr(st.details, PEER_FINISH_NOT_STARTED_MARK))
                        f = PEER_FINISH_NOT_STARTED;
                if (ret_failure)
                        *ret_failure = f;
                return r;
        }
        *ret_resume_unix_ms = resp->resume_unix_ms;
        *ret_synced = resp->guest_time_synced;
        drover__v1__migrate_finish_response__free_unpacked(resp, NULL);
        return 0;
}

int agent_peer_cancel(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms) {
        Drover__V1__MigrateCancelRequest req = DROVER__V1__MIGRATE_CANCEL_REQUEST__INIT;
        Drover__V1__Empty *resp = NULL;
        req.op_id = (char *) op;
        req.guest = (char *) uuid;
        int r = call(p, "MigrateCancel", &req.base, timeout_ms, (ProtobufCMessage **) &resp);
        if (r >= 0)
                drover__v1__empty__free_unpacked(resp, NULL);
        return r;
}

PeerAnswer agent_peer_owner(AgentPeer *p, const char *op, const char *uuid, int64_t timeout_ms) {
        Drover__V1__MigrationOwnerRequest req = DROVER__V1__MIGRATION_OWNER_REQUEST__INIT;
        Drover__V1__MigrationOwnerResponse *resp = NULL;
        req.op_id = (char *) op;
        req.guest = (char *) uuid;
        if (call(p, "MigrationOwner", &req.base, timeout_ms, (ProtobufCMessage **) &resp) < 0)
                return PEER_UNREACHABLE;
        PeerAnswer a;
        switch (resp->state) {
        case DROVER__V1__PEER_STATE__PEER_STATE_RUNNING: a = PEER_RUNNING; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_PAUSED_COMPLETE: a = PEER_PAUSED_COMPLETE; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_PAUSED: a = PEER_PAUSED; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_GONE: a = PEER_GONE; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_POSTCOPY: a = PEER_POSTCOPY; break;
        case DROVER__V1__PEER_STATE__PEER_STATE_DEAD: a = PEER_DEAD; break;
        /* UNKNOWN (the peer could not read its own state) and anything a
         * newer peer may send: no answer, never "gone" */
        default: a = PEER_UNREACHABLE; break;
        }
        drover__v1__migration_owner_response__free_unpacked(resp, NULL);
        return a;
}
