/* Coordinator -> agent calls (see coord-agents.h). */
#include "coord-agents.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.pb-c.h"
#include "err.h"
#include "migparams-pb.h"
#include "rpcclient.h"
#include "text.h"

struct AgentLink {
        RpcClient *cl; /* shared by threads */
};

int agent_link_open(const char *addr, const LinkTls *tls, AgentLink **ret) {
        RpcTls t = { 0 };
        RpcClientOptions o = { .default_timeout_ms = 10000 };
        if (tls && tls->cert && tls->cert[0]) {
                t.cert_file = tls->cert;
                t.key_file = tls->key;
                t.ca_file = tls->ca;
                o.tls = &t;
        }
        AgentLink *l = calloc(1, sizeof(*l));
        if (!l)
                return err_set(-ENOMEM, "out of memory");
        int r = rpc_client_new(addr, &o, &l->cl);
        if (r < 0) {
                free(l);
                return err_prefix(r, "agent %s", addr);
        }
        *ret = l;
        return 0;
}

void agent_link_close(AgentLink *l) {
        if (!l)
                return;
        rpc_client_free(l->cl);
        free(l);
}

static int call(AgentLink *l, const char *method, const ProtobufCMessage *req, int64_t timeout_ms,
                ProtobufCMessage **resp) {
        RpcStatus st;
        return rpc_client_unary(l->cl, &drover__v1__agent__descriptor, method, req, timeout_ms, resp, &st);
}

int agent_link_stats(AgentLink *l, int64_t timeout_ms, AgentHostInfo *ret) {
        Drover__V1__GetAgentStatsRequest req = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *r = NULL;
        int rc = call(l, "GetAgentStats", &req.base, timeout_ms, (ProtobufCMessage **) &r);
        memset(ret, 0, sizeof(*ret));
        if (rc < 0)
                return rc;
        ret->memory_mib = r->host_memory_mib;
        ret->cpus = r->host_cpus;
        snprintf(ret->cpu, sizeof(ret->cpu), "%s", r->host_cpu ? r->host_cpu : "");
        ret->guests_memory_mib = r->guests_memory_mib;
        ret->guests_vcpus = r->guests_vcpus;
        ret->guests = calloc(r->n_guests + 1, sizeof(*ret->guests));
        if (!ret->guests) {
                drover__v1__get_agent_stats_response__free_unpacked(r, NULL);
                return err_set(-ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < r->n_guests; i++) {
                AgentGuestInfo *g = &ret->guests[ret->n_guests++];
                snprintf(g->name, sizeof(g->name), "%s", r->guests[i]->name);
                snprintf(g->uuid, sizeof(g->uuid), "%s", r->guests[i]->uuid);
                g->state = r->guests[i]->state;
                g->memory_mib = r->guests[i]->memory_mib;
                g->vcpus = r->guests[i]->vcpus;
                snprintf(g->cpu_model, sizeof(g->cpu_model), "%s", r->guests[i]->cpu_model);
                snprintf(g->async_job, sizeof(g->async_job), "%s", r->guests[i]->async_job);
                g->dirty_pages_rate = r->guests[i]->dirty_pages_rate;
                g->unmanaged = r->guests[i]->unmanaged;
                g->local_disk_bytes = r->guests[i]->local_disk_bytes;
        }
        drover__v1__get_agent_stats_response__free_unpacked(r, NULL);
        return 0;
}

void agent_host_info_clear(AgentHostInfo *h) {
        free(h->guests);
        memset(h, 0, sizeof(*h));
}

int agent_link_migrate(AgentLink *l, const char *guest, const char *op, const char *dest_addr, const MigParams *p,
                       int64_t timeout_ms) {
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        Drover__V1__MigrationParams mp;
        Drover__V1__MigrateResponse *resp = NULL;
        mig_params_to_pb(p, &mp);
        req.guest = (char *) guest;
        req.op_id = (char *) op;
        req.destination = (char *) dest_addr;
        req.params = &mp;
        int r = call(l, "Migrate", &req.base, timeout_ms, (ProtobufCMessage **) &resp);
        if (r >= 0)
                drover__v1__migrate_response__free_unpacked(resp, NULL);
        return r;
}

int agent_link_get_migration(AgentLink *l, const char *guest, int64_t timeout_ms, LinkMigResult *ret) {
        Drover__V1__GuestRef req = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__MigrationResult *m = NULL;
        req.guest = (char *) guest;
        int r = call(l, "GetMigration", &req.base, timeout_ms, (ProtobufCMessage **) &m);
        memset(ret, 0, sizeof(*ret));
        if (r < 0)
                return r;
        snprintf(ret->op, sizeof(ret->op), "%s", m->op_id);
        ret->done = m->done;
        ret->success = m->success;
        snprintf(ret->error, sizeof(ret->error), "%s", m->error);
        snprintf(ret->phase, sizeof(ret->phase), "%s", m->phase);
        ret->total_ms = m->total_ms;
        ret->downtime_ms = m->downtime_ms;
        ret->measured_downtime_ms = m->measured_downtime_ms;
        ret->transferred = m->transferred_bytes;
        ret->guest_memory_bytes = m->guest_memory_bytes;
        ret->multifd_bytes = m->multifd_bytes;
        ret->multifd_channels = m->multifd_channels;
        int comp = (int) m->compression; /* an unknown number from a newer agent: shown as none */
        ret->compression = comp >= 0 && comp < _MIG_COMPRESSION_MAX ? comp : MIG_COMPRESSION_NONE;
        ret->disk_bytes = m->disk_bytes;
        size_t n = 0;
        ret->steps[0] = '\0';
        for (size_t i = 0; i < m->n_policy_steps; i++)
                n = text_append(ret->steps, sizeof(ret->steps), n, "%s%s", i ? "\n" : "", m->policy_steps[i]);
        drover__v1__migration_result__free_unpacked(m, NULL);
        return 0;
}

int agent_link_abort(AgentLink *l, const char *guest, int64_t timeout_ms) {
        Drover__V1__GuestRef req = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__MigrationResult *m = NULL;
        req.guest = (char *) guest;
        int r = call(l, "MigrateAbort", &req.base, timeout_ms, (ProtobufCMessage **) &m);
        if (r >= 0)
                drover__v1__migration_result__free_unpacked(m, NULL);
        return r;
}

int agent_link_tune(AgentLink *l, const char *guest, uint64_t bandwidth, int64_t timeout_ms) {
        Drover__V1__MigrateTuneRequest req = DROVER__V1__MIGRATE_TUNE_REQUEST__INIT;
        Drover__V1__GuestStatus *st = NULL;
        req.guest = (char *) guest;
        req.bandwidth_bytes_per_s = bandwidth;
        int r = call(l, "MigrateTune", &req.base, timeout_ms, (ProtobufCMessage **) &st);
        if (r >= 0)
                drover__v1__guest_status__free_unpacked(st, NULL);
        return r;
}

int agent_link_get_guest(AgentLink *l, const char *guest, int64_t timeout_ms, LinkGuestStatus *ret) {
        Drover__V1__GuestRef req = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GetGuestResponse *g = NULL;
        req.guest = (char *) guest;
        int r = call(l, "GetGuest", &req.base, timeout_ms, (ProtobufCMessage **) &g);
        memset(ret, 0, sizeof(*ret));
        if (r < 0)
                return r;
        ret->state = g->status->state;
        snprintf(ret->reason, sizeof(ret->reason), "%s", g->status->reason);
        snprintf(ret->async_job, sizeof(ret->async_job), "%s", g->status->async_job);
        snprintf(ret->phase, sizeof(ret->phase), "%s", g->status->phase);
        ret->pid = g->status->pid;
        if (g->status->migration) {
                Drover__V1__MigrationStats *m = g->status->migration;
                snprintf(ret->mig_status, sizeof(ret->mig_status), "%s", m->status);
                ret->ram_total = m->ram_total_bytes;
                ret->ram_remaining = m->ram_remaining_bytes;
                ret->ram_transferred = m->ram_transferred_bytes;
                ret->dirty_pages_rate = m->dirty_pages_rate;
                ret->expected_downtime_ms = m->expected_downtime_ms;
                ret->mbps = m->mbps;
                ret->iteration = m->iteration;
                ret->disk_total = m->disk_total_bytes;
                ret->disk_transferred = m->disk_transferred_bytes;
        }
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        return 0;
}
