/* gRPC handlers of drover-coordinator (see coord-rpc.h).  Messages are
 * built in the call's arena; errors map to a status once, here.  The
 * method table at the end names who may call each method; handlers that
 * change something name their caller ("operator:alice", rpc.h
 * RpcIdentity) in the history of the jobs it concerns and in the log.
 * Reads are served by every coordinator; a change sent to a standby is
 * refused with the leader's address (standby_refuses). */
#include "coord-rpc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdatomic.h>

#include "coordinator.pb-c.h"
#include "err.h"
#include "migparams-pb.h"
#include "rpc-details.h"

/* The coordinator's enums (coord-enums.h) are the API's, value for value:
 * the casts between them below, and droverctl's use of the names, rely on
 * it. */
#define SAME_VALUE(ours, proto) _Static_assert((int) (ours) == (int) (proto), #ours " != " #proto)
SAME_VALUE(COORD_HOST_STATE_UNSPECIFIED, DROVER__V1__HOST_STATE__HOST_STATE_UNSPECIFIED);
SAME_VALUE(COORD_HOST_STATE_ENABLED, DROVER__V1__HOST_STATE__HOST_STATE_ENABLED);
SAME_VALUE(COORD_HOST_STATE_DRAINING, DROVER__V1__HOST_STATE__HOST_STATE_DRAINING);
SAME_VALUE(COORD_HOST_STATE_MAINTENANCE, DROVER__V1__HOST_STATE__HOST_STATE_MAINTENANCE);
SAME_VALUE(COORD_HOST_STATE_MAX, DROVER__V1__HOST_STATE__HOST_STATE_MAINTENANCE + 1);
SAME_VALUE(COORD_HOST_HEALTH_UNKNOWN, DROVER__V1__HOST_HEALTH__HOST_HEALTH_UNKNOWN);
SAME_VALUE(COORD_HOST_HEALTH_HEALTHY, DROVER__V1__HOST_HEALTH__HOST_HEALTH_HEALTHY);
SAME_VALUE(COORD_HOST_HEALTH_UNREACHABLE, DROVER__V1__HOST_HEALTH__HOST_HEALTH_UNREACHABLE);
SAME_VALUE(COORD_HOST_HEALTH_MAX, DROVER__V1__HOST_HEALTH__HOST_HEALTH_UNREACHABLE + 1);
SAME_VALUE(COORD_JOB_KIND_UNSPECIFIED, DROVER__V1__JOB_KIND__JOB_KIND_UNSPECIFIED);
SAME_VALUE(COORD_JOB_KIND_MIGRATE, DROVER__V1__JOB_KIND__JOB_KIND_MIGRATE);
SAME_VALUE(COORD_JOB_KIND_EVACUATE, DROVER__V1__JOB_KIND__JOB_KIND_EVACUATE);
SAME_VALUE(COORD_JOB_KIND_MAX, DROVER__V1__JOB_KIND__JOB_KIND_EVACUATE + 1);
SAME_VALUE(COORD_JOB_PHASE_UNSPECIFIED, DROVER__V1__JOB_PHASE__JOB_PHASE_UNSPECIFIED);
SAME_VALUE(COORD_JOB_PHASE_PLANNING, DROVER__V1__JOB_PHASE__JOB_PHASE_PLANNING);
SAME_VALUE(COORD_JOB_PHASE_RUNNING, DROVER__V1__JOB_PHASE__JOB_PHASE_RUNNING);
SAME_VALUE(COORD_JOB_PHASE_VERIFYING, DROVER__V1__JOB_PHASE__JOB_PHASE_VERIFYING);
SAME_VALUE(COORD_JOB_PHASE_SUCCEEDED, DROVER__V1__JOB_PHASE__JOB_PHASE_SUCCEEDED);
SAME_VALUE(COORD_JOB_PHASE_FAILED, DROVER__V1__JOB_PHASE__JOB_PHASE_FAILED);
SAME_VALUE(COORD_JOB_PHASE_CANCELLED, DROVER__V1__JOB_PHASE__JOB_PHASE_CANCELLED);
SAME_VALUE(COORD_JOB_PHASE_MAX, DROVER__V1__JOB_PHASE__JOB_PHASE_CANCELLED + 1);
SAME_VALUE(COORD_FAILURE_POLICY_CONTINUE, DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_CONTINUE);
SAME_VALUE(COORD_FAILURE_POLICY_STOP, DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_STOP);
SAME_VALUE(COORD_FAILURE_POLICY_MAX, DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_STOP + 1);
SAME_VALUE(COORD_SUBTASK_PHASE_UNSPECIFIED, DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_UNSPECIFIED);
SAME_VALUE(COORD_SUBTASK_PHASE_QUEUED, DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_QUEUED);
SAME_VALUE(COORD_SUBTASK_PHASE_MIGRATING, DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_MIGRATING);
SAME_VALUE(COORD_SUBTASK_PHASE_SUCCEEDED, DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_SUCCEEDED);
SAME_VALUE(COORD_SUBTASK_PHASE_FAILED, DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_FAILED);
SAME_VALUE(COORD_SUBTASK_PHASE_CANCELLED, DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_CANCELLED);
SAME_VALUE(COORD_SUBTASK_PHASE_BLOCKED, DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_BLOCKED);
SAME_VALUE(COORD_SUBTASK_PHASE_MAX, DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_BLOCKED + 1);
SAME_VALUE(COORD_GUEST_STATE_UNSPECIFIED, DROVER__V1__GUEST_STATE__GUEST_STATE_UNSPECIFIED);
SAME_VALUE(COORD_GUEST_STATE_RUNNING, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
SAME_VALUE(COORD_GUEST_STATE_PAUSED, DROVER__V1__GUEST_STATE__GUEST_STATE_PAUSED);
SAME_VALUE(COORD_GUEST_STATE_SHUTDOWN, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTDOWN);
SAME_VALUE(COORD_GUEST_STATE_SHUTOFF, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
SAME_VALUE(COORD_GUEST_STATE_CRASHED, DROVER__V1__GUEST_STATE__GUEST_STATE_CRASHED);
SAME_VALUE(COORD_GUEST_STATE_MAX, DROVER__V1__GUEST_STATE__GUEST_STATE_CRASHED + 1);

/* The caller as histories name it ("operator:alice"), in the call's arena. */
static const char *caller(RpcCall *c) {
        char buf[RPC_IDENTITY_NAME_MAX + 64];
        return rpc_call_strdup(c, rpc_identity_format(rpc_call_identity(c), buf, sizeof(buf)));
}

/* A change sent to a standby (coord-ha.c) is refused: FAILED_PRECONDITION
 * with the leader's address in the message and as a NotLeader in the
 * status details, which droverctl and the Ansible modules follow.  True
 * (and *ret the code to return) when refused. */
static bool standby_refuses(RpcCall *c, Coordinator *co, RpcCode *ret) {
        Drover__V1__NotLeader d = DROVER__V1__NOT_LEADER__INIT;
        char leader[256];
        if (coord_leading(co, leader, sizeof(leader)))
                return false;
        d.leader_address = leader;
        *ret = leader[0] ? rpc_call_fail_detail(c, RPC_FAILED_PRECONDITION, &d.base, "not the leader; the leader is at %s",
                                                leader)
                         : rpc_call_fail_detail(c, RPC_FAILED_PRECONDITION, &d.base,
                                                "not the leader; no leader is known now (an election is under way, or "
                                                "this coordinator is taking over): try again in a few seconds");
        return true;
}

/* A change failed with @r: a write the store's fence refused (-ESTALE,
 * coord-ha.c) means this coordinator is no longer the leader, answered as
 * a standby answers; anything else as usual. */
static RpcCode fail_change(RpcCall *c, Coordinator *co, int r) {
        RpcCode refused;
        if (r == -ESTALE && standby_refuses(c, co, &refused))
                return refused;
        return rpc_call_fail_errno(c, r);
}

/* Host @host changed as @what says ("added"): the log and the histories
 * of the jobs it concerns name the change and the caller. */
static void note_host(RpcCall *c, Coordinator *co, const char *host, const char *what) {
        char text[256];
        snprintf(text, sizeof(text), "%s by %s", what, caller(c));
        coord_jobs_note_host(co, host, text);
}

static Drover__V1__Host *host_msg(RpcCall *c, const CoordHostView *v) {
        Drover__V1__Host *h = rpc_call_alloc(c, sizeof(*h));
        drover__v1__host__init(h);
        h->name = rpc_call_strdup(c, v->h.name);
        h->address = rpc_call_strdup(c, v->h.address);
        h->migration_address = rpc_call_strdup(c, v->h.migration_address);
        h->state = (Drover__V1__HostState) v->h.state;
        h->health = (Drover__V1__HostHealth) v->health;
        h->memory_mib = v->h.memory_mib;
        h->vcpus = v->h.vcpus;
        h->cpu_model = rpc_call_strdup(c, v->h.cpu_model);
        h->link_bytes_per_s = v->h.link_bytes_per_s;
        h->max_outgoing = v->h.max_outgoing;
        h->max_incoming = v->h.max_incoming;
        h->memory_used_mib = v->memory_used_mib;
        h->vcpus_used = v->vcpus_used;
        h->guests = v->guests;
        h->last_seen_unix_ms = v->last_seen_unix_ms;
        h->last_error = rpc_call_strdup(c, v->last_error);
        return h;
}

static RpcCode h_list_hosts(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp_, void *user) {
        Drover__V1__ListHostsResponse *resp = (void *) resp_;
        CoordHostView *v;
        size_t n;
        (void) req;
        int r = coord_hosts(user, &v, &n);
        if (r < 0)
                return rpc_call_fail_errno(c, r);
        resp->hosts = rpc_call_alloc(c, (n + 1) * sizeof(*resp->hosts));
        for (size_t i = 0; i < n; i++)
                resp->hosts[resp->n_hosts++] = host_msg(c, &v[i]);
        free(v);
        return RPC_OK;
}

static int host_view(Coordinator *co, const char *name, CoordHostView *ret) {
        CoordHostView *v;
        size_t n;
        int r = coord_hosts(co, &v, &n);
        if (r < 0)
                return r;
        r = err_set(-ENOENT, "no host '%s'", name);
        for (size_t i = 0; i < n; i++)
                if (strcmp(v[i].h.name, name) == 0) {
                        *ret = v[i];
                        r = 0;
                }
        free(v);
        return r;
}

static RpcCode h_add_host(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__AddHostRequest *req = (const void *) req_;
        StoreHost h = { 0 };
        CoordHostView v;
        RpcCode refused;
        if (standby_refuses(c, user, &refused))
                return refused;
        if (!req->host)
                return rpc_call_fail(c, RPC_INVALID_ARGUMENT, "'host' is required");
        if (strlen(req->host->name) >= sizeof(h.name) || strlen(req->host->address) >= sizeof(h.address) ||
            strlen(req->host->migration_address) >= sizeof(h.migration_address) ||
            strlen(req->host->cpu_model) >= sizeof(h.cpu_model))
                return rpc_call_fail(c, RPC_INVALID_ARGUMENT, "a host field is too long");
        snprintf(h.name, sizeof(h.name), "%s", req->host->name);
        snprintf(h.address, sizeof(h.address), "%s", req->host->address);
        snprintf(h.migration_address, sizeof(h.migration_address), "%s", req->host->migration_address);
        snprintf(h.cpu_model, sizeof(h.cpu_model), "%s", req->host->cpu_model);
        h.state = req->host->state ? (int) req->host->state : COORD_HOST_STATE_ENABLED;
        h.memory_mib = req->host->memory_mib;
        h.vcpus = req->host->vcpus;
        h.link_bytes_per_s = req->host->link_bytes_per_s;
        h.max_outgoing = req->host->max_outgoing;
        h.max_incoming = req->host->max_incoming;
        int r = coord_host_add(user, &h);
        if (r >= 0) {
                note_host(c, user, h.name, "added");
                r = host_view(user, h.name, &v);
        }
        if (r < 0)
                return fail_change(c, user, r);
        *(Drover__V1__Host *) resp_ = *host_msg(c, &v);
        return RPC_OK;
}

static RpcCode h_remove_host(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__HostRef *req = (const void *) req_;
        (void) resp_;
        RpcCode refused;
        if (standby_refuses(c, user, &refused))
                return refused;
        int r = coord_host_remove(user, req->host);
        if (r < 0)
                return fail_change(c, user, r);
        note_host(c, user, req->host, "removed");
        return RPC_OK;
}

static RpcCode h_set_state(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__SetHostStateRequest *req = (const void *) req_;
        CoordHostView v;
        RpcCode refused;
        if (standby_refuses(c, user, &refused))
                return refused;
        int r = coord_host_set_state(user, req->host, (int) req->state, &v);
        if (r < 0)
                return fail_change(c, user, r);
        char what[64];
        snprintf(what, sizeof(what), "set to %s", coord_host_state_to_string((int) req->state));
        note_host(c, user, req->host, what);
        *(Drover__V1__Host *) resp_ = *host_msg(c, &v);
        return RPC_OK;
}

static RpcCode h_update_host(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__UpdateHostRequest *req = (const void *) req_;
        StoreHost h = { 0 };
        CoordHostView v;
        unsigned fields = 0;
        char what[256] = "changed:";
        RpcCode refused;
        if (standby_refuses(c, user, &refused))
                return refused;
        if (!req->host || !req->host->name[0])
                return rpc_call_fail(c, RPC_INVALID_ARGUMENT, "'host.name' is required");
        if (strlen(req->host->address) >= sizeof(h.address) ||
            strlen(req->host->migration_address) >= sizeof(h.migration_address) ||
            strlen(req->host->cpu_model) >= sizeof(h.cpu_model))
                return rpc_call_fail(c, RPC_INVALID_ARGUMENT, "a host field is too long");
        for (size_t i = 0; i < req->n_fields; i++) {
                unsigned f = coord_host_field_from_string(req->fields[i]);
                if (!f)
                        return rpc_call_fail(c, RPC_INVALID_ARGUMENT, "fields: '%s' is not a host field UpdateHost changes",
                                             req->fields[i]);
                fields |= f;
                if (strlen(what) + strlen(req->fields[i]) + 2 < sizeof(what))
                        strcat(strcat(what, " "), req->fields[i]);
        }
        snprintf(h.address, sizeof(h.address), "%s", req->host->address);
        snprintf(h.migration_address, sizeof(h.migration_address), "%s", req->host->migration_address);
        snprintf(h.cpu_model, sizeof(h.cpu_model), "%s", req->host->cpu_model);
        h.memory_mib = req->host->memory_mib;
        h.vcpus = req->host->vcpus;
        h.link_bytes_per_s = req->host->link_bytes_per_s;
        h.max_outgoing = req->host->max_outgoing;
        h.max_incoming = req->host->max_incoming;
        int r = coord_host_update(user, req->host->name, &h, fields, &v);
        if (r < 0)
                return fail_change(c, user, r);
        note_host(c, user, req->host->name, what);
        *(Drover__V1__Host *) resp_ = *host_msg(c, &v);
        return RPC_OK;
}

static RpcCode h_list_guests(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__ListGuestsClusterRequest *req = (const void *) req_;
        Drover__V1__ListGuestsClusterResponse *resp = (void *) resp_;
        CoordGuestView *v;
        size_t n;
        int r = coord_guests(user, req->host, &v, &n);
        if (r < 0)
                return rpc_call_fail_errno(c, r);
        resp->guests = rpc_call_alloc(c, (n + 1) * sizeof(*resp->guests));
        for (size_t i = 0; i < n; i++) {
                Drover__V1__ClusterGuest *g = rpc_call_alloc(c, sizeof(*g));
                drover__v1__cluster_guest__init(g);
                g->name = rpc_call_strdup(c, v[i].name);
                g->uuid = rpc_call_strdup(c, v[i].uuid);
                g->host = rpc_call_strdup(c, v[i].host);
                g->state = (Drover__V1__GuestState) v[i].state;
                g->memory_mib = v[i].memory_mib;
                g->vcpus = v[i].vcpus;
                g->cpu_model = rpc_call_strdup(c, v[i].cpu_model);
                g->anti_affinity_group = rpc_call_strdup(c, v[i].group);
                g->dirty_rate_bytes_per_s = v[i].dirty_bytes_per_s;
                g->unmanaged = v[i].unmanaged;
                g->local_disk_bytes = v[i].local_disk_bytes;
                resp->guests[resp->n_guests++] = g;
        }
        free(v);
        return RPC_OK;
}

static Drover__V1__MigrationParams *params_msg(RpcCall *c, const char *json) {
        MigParams p = { 0 };
        Drover__V1__MigrationParams *m = rpc_call_alloc(c, sizeof(*m));
        (void) mig_params_from_json(json, strlen(json), &p); /* unreadable: all defaults */
        mig_params_to_pb(&p, m);
        return m;
}

static Drover__V1__PlanEntry *plan_entry(RpcCall *c, const CoordPlanEntry *e) {
        Drover__V1__PlanEntry *p = rpc_call_alloc(c, sizeof(*p));
        drover__v1__plan_entry__init(p);
        p->guest = rpc_call_strdup(c, e->guest);
        p->source = rpc_call_strdup(c, e->source);
        p->destination = rpc_call_strdup(c, e->destination);
        p->estimated_s = e->estimated_s;
        p->memory_mib = e->memory_mib;
        p->reason = rpc_call_strdup(c, e->reason);
        return p;
}

static Drover__V1__Plan *plan_msg(RpcCall *c, const CoordPlan *plan) {
        Drover__V1__Plan *p = rpc_call_alloc(c, sizeof(*p));
        drover__v1__plan__init(p);
        p->moves = rpc_call_alloc(c, (plan->n_moves + 1) * sizeof(*p->moves));
        p->blocked = rpc_call_alloc(c, (plan->n_blocked + 1) * sizeof(*p->blocked));
        for (size_t i = 0; i < plan->n_moves; i++)
                p->moves[p->n_moves++] = plan_entry(c, &plan->moves[i]);
        for (size_t i = 0; i < plan->n_blocked; i++)
                p->blocked[p->n_blocked++] = plan_entry(c, &plan->blocked[i]);
        p->estimated_makespan_s = plan->makespan_s;
        return p;
}

static Drover__V1__Job *job_msg(RpcCall *c, const CoordJobView *v) {
        Drover__V1__Job *j = rpc_call_alloc(c, sizeof(*j));
        drover__v1__job__init(j);
        j->id = rpc_call_strdup(c, v->job.id);
        j->kind = (Drover__V1__JobKind) v->job.kind;
        j->phase = (Drover__V1__JobPhase) v->job.phase;
        j->host = rpc_call_strdup(c, v->job.host);
        j->failure_policy = (Drover__V1__FailurePolicy) v->job.failure_policy;
        j->params = params_msg(c, v->job.params_json);
        j->created_unix_ms = v->job.created_unix_ms;
        j->finished_unix_ms = v->job.finished_unix_ms;
        j->error = rpc_call_strdup(c, v->job.error);
        j->subtasks = rpc_call_alloc(c, (v->n_subs + 1) * sizeof(*j->subtasks));
        for (size_t i = 0; i < v->n_subs; i++) {
                const StoreSubtask *t = &v->subs[i];
                Drover__V1__Subtask *s = rpc_call_alloc(c, sizeof(*s));
                Drover__V1__MigrationStats *st = rpc_call_alloc(c, sizeof(*st));
                drover__v1__subtask__init(s);
                drover__v1__migration_stats__init(st);
                s->guest = rpc_call_strdup(c, t->guest);
                s->uuid = rpc_call_strdup(c, t->uuid);
                s->source = rpc_call_strdup(c, t->source);
                s->destination = rpc_call_strdup(c, t->destination);
                s->phase = (Drover__V1__SubtaskPhase) t->phase;
                s->migration_phase = rpc_call_strdup(c, v->live ? v->live[i].mig_phase : "");
                if (v->live) {
                        st->status = rpc_call_strdup(c, v->live[i].mig_status);
                        st->ram_total_bytes = v->live[i].ram_total;
                        st->ram_remaining_bytes = v->live[i].ram_remaining;
                        st->ram_transferred_bytes = v->live[i].ram_transferred;
                        st->dirty_pages_rate = v->live[i].dirty_pages_rate;
                        st->iteration = v->live[i].iteration;
                        st->mbps = v->live[i].mbps;
                        st->disk_total_bytes = v->live[i].disk_total;
                        st->disk_transferred_bytes = v->live[i].disk_transferred;
                } else
                        st->status = (char *) "";
                st->error = (char *) "";
                s->stats = st;
                s->downtime_ms = t->downtime_ms;
                s->measured_downtime_ms = t->measured_downtime_ms;
                s->transferred_bytes = t->transferred_bytes;
                s->guest_memory_bytes = t->guest_memory_bytes;
                s->multifd_bytes = t->multifd_bytes;
                s->multifd_channels = t->multifd_channels;
                s->compression = (Drover__V1__MigrationCompression) t->compression;
                s->disk_bytes = t->disk_bytes;
                s->estimated_s = t->estimated_s;
                s->started_unix_ms = t->started_unix_ms;
                s->finished_unix_ms = t->finished_unix_ms;
                s->error = rpc_call_strdup(c, t->error);
                s->reason = rpc_call_strdup(c, t->reason);
                s->op_id = rpc_call_strdup(c, t->op_id);
                /* policy steps: newline-separated in the store */
                size_t nsteps = 0;
                for (const char *p = t->policy_steps; *p; p++)
                        nsteps += *p == '\n';
                nsteps += t->policy_steps[0] != '\0';
                s->policy_steps = rpc_call_alloc(c, (nsteps + 1) * sizeof(char *));
                char *copy = rpc_call_strdup(c, t->policy_steps), *save = NULL;
                for (char *tok = strtok_r(copy, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save))
                        s->policy_steps[s->n_policy_steps++] = tok;
                j->subtasks[j->n_subtasks++] = s;
                j->succeeded += t->phase == COORD_SUBTASK_PHASE_SUCCEEDED;
                j->failed += t->phase == COORD_SUBTASK_PHASE_FAILED;
                j->cancelled += t->phase == COORD_SUBTASK_PHASE_CANCELLED;
                j->blocked += t->phase == COORD_SUBTASK_PHASE_BLOCKED;
        }
        j->history = rpc_call_alloc(c, (v->n_events + 1) * sizeof(*j->history));
        for (size_t i = 0; i < v->n_events; i++) {
                Drover__V1__JobEvent *e = rpc_call_alloc(c, sizeof(*e));
                drover__v1__job_event__init(e);
                e->time_unix_ms = v->events[i].time_unix_ms;
                e->text = rpc_call_strdup(c, v->events[i].text);
                j->history[j->n_history++] = e;
        }
        return j;
}

/* FAILED_PRECONDITION for a plan with blocked guests: this thread's short
 * error detail as the message, and every blocked guest of @plan (with its
 * reason) as a BlockedGuests in the status details.  A list too long for
 * gRPC's metadata limit is cut from its end, the cut counted in
 * `omitted`; the plan itself is a dry run away. */
static RpcCode fail_blocked(RpcCall *c, const Drover__V1__Plan *plan, size_t n_guests) {
        Drover__V1__BlockedGuests d = DROVER__V1__BLOCKED_GUESTS__INIT;
        char msg[ERR_MSG_MAX];

        snprintf(msg, sizeof(msg), "%s", err_msg());
        err_clear();
        d.guests = (uint32_t) n_guests;
        d.blocked = plan ? plan->blocked : NULL;
        d.n_blocked = plan ? plan->n_blocked : 0;
        while (d.n_blocked > 0 && rpc_detail_status_size(&d.base, strlen(msg)) > RPC_STATUS_DETAILS_MAX) {
                size_t cut = d.n_blocked / 8 + 1;
                d.n_blocked -= cut;
                d.omitted += (uint32_t) cut;
        }
        return rpc_call_fail_detail(c, RPC_FAILED_PRECONDITION, &d.base, "%s", msg);
}

static RpcCode submit(RpcCall *c, Coordinator *co, const CoordJobRequest *req, Drover__V1__JobResponse *resp) {
        CoordPlan plan;
        char id[STORE_ID_MAX] = "";
        RpcCode refused;
        if (!req->dry_run && standby_refuses(c, co, &refused)) /* a dry run changes nothing: any coordinator plans it */
                return refused;
        int r = coord_job_submit(co, req, &plan, id);
        size_t n_guests = plan.n_moves + plan.n_blocked;
        if (n_guests)
                resp->plan = plan_msg(c, &plan);
        coord_plan_clear(&plan);
        if (r == -ENOSPC)
                return fail_blocked(c, resp->plan, n_guests);
        if (r < 0)
                return fail_change(c, co, r);
        if (id[0]) {
                CoordJobView v;
                if ((r = coord_job_get(co, id, false, &v)) < 0)
                        return rpc_call_fail_errno(c, r);
                resp->job = job_msg(c, &v);
                coord_job_view_clear(&v);
        }
        return RPC_OK;
}

static RpcCode h_migrate(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__MigrateGuestsRequest *req = (const void *) req_;
        CoordJobRequest jr = { .kind = COORD_JOB_KIND_MIGRATE,
                               .n_guests = req->n_guests, .guests = (const char *const *) req->guests,
                               .to_host = req->to_host[0] ? req->to_host : NULL,
                               .failure_policy = (int) req->failure_policy, .dry_run = req->dry_run,
                               .caller = caller(c) };
        if (req->params) {
                mig_params_from_pb(req->params, &jr.params);
                jr.have_params = true;
        }
        return submit(c, user, &jr, (void *) resp_);
}

static RpcCode h_evacuate(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__EvacuateRequest *req = (const void *) req_;
        CoordJobRequest jr = { .kind = COORD_JOB_KIND_EVACUATE, .host = req->host, .failure_policy = (int) req->failure_policy,
                               .dry_run = req->dry_run, .maintenance = req->maintenance, .caller = caller(c) };
        if (req->params) {
                mig_params_from_pb(req->params, &jr.params);
                jr.have_params = true;
        }
        return submit(c, user, &jr, (void *) resp_);
}

static RpcCode h_list_jobs(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__ListJobsRequest *req = (const void *) req_;
        Drover__V1__ListJobsResponse *resp = (void *) resp_;
        StoreJob *jobs;
        size_t n;
        int r = coord_job_list(user, req->unfinished_only, req->limit ? req->limit : 100, &jobs, &n);
        if (r < 0)
                return rpc_call_fail_errno(c, r);
        resp->jobs = rpc_call_alloc(c, (n + 1) * sizeof(*resp->jobs));
        for (size_t i = 0; i < n; i++) {
                CoordJobView v;
                if (coord_job_get(user, jobs[i].id, false, &v) < 0)
                        continue;
                resp->jobs[resp->n_jobs++] = job_msg(c, &v);
                coord_job_view_clear(&v);
        }
        free(jobs);
        return RPC_OK;
}

static RpcCode h_get_job(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__JobRef *req = (const void *) req_;
        CoordJobView v;
        int r = coord_job_get(user, req->id, true, &v);
        if (r < 0)
                return rpc_call_fail_errno(c, r);
        *(Drover__V1__Job *) resp_ = *job_msg(c, &v);
        coord_job_view_clear(&v);
        return RPC_OK;
}

static RpcCode h_cancel_job(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__JobRef *req = (const void *) req_;
        CoordJobView v;
        RpcCode refused;
        if (standby_refuses(c, user, &refused))
                return refused;
        int r = coord_job_cancel(user, req->id, caller(c));
        if (r >= 0)
                r = coord_job_get(user, req->id, false, &v);
        if (r < 0)
                return fail_change(c, user, r);
        *(Drover__V1__Job *) resp_ = *job_msg(c, &v);
        coord_job_view_clear(&v);
        return RPC_OK;
}

/* Streams hold a worker each: at most a quarter of them (the rest serve
 * everything else). */
static atomic_uint watches;
unsigned coord_rpc_max_watches = 4;

static RpcCode watch_loop(RpcCall *c, Coordinator *co, const char *id);

static RpcCode h_watch_job(RpcCall *c, const ProtobufCMessage *req_, void *user) {
        const Drover__V1__WatchJobRequest *req = (const void *) req_;
        if (atomic_fetch_add(&watches, 1) >= coord_rpc_max_watches) {
                atomic_fetch_sub(&watches, 1);
                return rpc_call_fail(c, RPC_RESOURCE_EXHAUSTED, "%u job watchers are connected, the most this coordinator serves",
                                     coord_rpc_max_watches);
        }
        RpcCode code = watch_loop(c, user, req->id);
        atomic_fetch_sub(&watches, 1);
        return code;
}

static RpcCode watch_loop(RpcCall *c, Coordinator *co, const char *id) {
        uint64_t gen = (uint64_t) -1;
        struct { const char *id; } r0 = { id }, *req = &r0;
        for (;;) {
                CoordJobView v;
                int r = coord_job_get(co, req->id, false, &v);
                if (r < 0)
                        return rpc_call_fail_errno(c, r);
                bool done = coord_job_phase_is_final(v.job.phase);
                if (v.generation != gen) {
                        gen = v.generation;
                        /* messages are built in the call arena: a long watch
                         * grows it, bounded by the job's number of changes */
                        int s = rpc_call_send(c, &job_msg(c, &v)->base);
                        coord_job_view_clear(&v);
                        if (s < 0)
                                return RPC_CANCELLED;
                } else
                        coord_job_view_clear(&v);
                if (done)
                        return RPC_OK;
                /* at most two updates a second: a display needs no more */
                if (rpc_call_wait(c, 500) == RPC_WAIT_CANCELLED)
                        return RPC_CANCELLED;
                coord_job_wait(co, req->id, gen, 1000);
                if (rpc_call_cancelled(c))
                        return RPC_CANCELLED;
        }
}

/* Who may call what (docs/security.md, "Who can call what"): operators
 * everything, readers the queries; agents and the coordinator's own
 * certificate nothing here. */
#define CHANGE RPC_ROLES_OPERATOR
#define QUERY (RPC_ROLES_OPERATOR | RPC_ROLES_READER)

static const RpcMethodDef coord_methods[] = {
        { "ListHosts", h_list_hosts, NULL, COORD_LANE_QUERIES, QUERY },
        { "ListGuests", h_list_guests, NULL, COORD_LANE_QUERIES, QUERY },
        { "ListJobs", h_list_jobs, NULL, COORD_LANE_QUERIES, QUERY },
        { "GetJob", h_get_job, NULL, COORD_LANE_QUERIES, QUERY },
        { "AddHost", h_add_host, NULL, COORD_LANE_CONTROL, CHANGE },
        { "RemoveHost", h_remove_host, NULL, COORD_LANE_CONTROL, CHANGE },
        { "SetHostState", h_set_state, NULL, COORD_LANE_CONTROL, CHANGE },
        { "UpdateHost", h_update_host, NULL, COORD_LANE_CONTROL, CHANGE },
        { "MigrateGuests", h_migrate, NULL, COORD_LANE_CONTROL, CHANGE },
        { "Evacuate", h_evacuate, NULL, COORD_LANE_CONTROL, CHANGE },
        { "CancelJob", h_cancel_job, NULL, COORD_LANE_CONTROL, CHANGE },
        { "WatchJob", NULL, h_watch_job, COORD_LANE_STREAMS, QUERY },
};

void coord_rpc_lanes(const CoordConfig *cfg, RpcServerOptions *o) {
        o->lanes[COORD_LANE_QUERIES] = (RpcLaneOptions){ .name = "queries", .threads = cfg->lane_queries };
        o->lanes[COORD_LANE_CONTROL] = (RpcLaneOptions){ .name = "control", .threads = cfg->lane_control };
        o->lanes[COORD_LANE_STREAMS] = (RpcLaneOptions){ .name = "streams", .threads = cfg->lane_streams };
        o->n_lanes = COORD_LANE_COUNT;
}

int coord_rpc_register(RpcServer *srv, Coordinator *c) {
        return rpc_server_add_service(srv, &drover__v1__coordinator__descriptor, coord_methods,
                                      ELEMENTSOF(coord_methods), c);
}
