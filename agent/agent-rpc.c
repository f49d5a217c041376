/* gRPC handlers of drover-agent (see agent-rpc.h): the handler frame,
 * guests, their operations, host statistics and the method table; the
 * migration handlers are in agent-rpc-migrate.c (agent-rpc-priv.h lists
 * what the two share).
 *
 * Every handler has the same frame, kept in one place (Handler,
 * agent-rpc-priv.h; its functions here): it
 * counts itself in flight for its whole life (GetAgentStats reports the
 * number), looks up the guest the request names (INVALID_ARGUMENT without a
 * name, NOT_FOUND for an unknown one) and holds a reference on it, takes the
 * request's operation id or makes one, and maps the result of the agent call
 * to a status once at the end (a guest that is not running answers
 * FAILED_PRECONDITION).  Between arpc_guest()/arpc_enter() and
 * arpc_end*() a handler keeps only its own logic: the agent call and the
 * reply.
 *
 * Response strings and sub-messages live in the call's arena
 * (rpc_call_strdup/rpc_call_alloc); handlers never free.  What a guest's
 * status shows is agent_status_view() (agent-status.h); ListGuests sends
 * statuses packed once per guest and generation from its cache.
 *
 * The method table names each method's lane and the roles that may call
 * it (docs/security.md); the server refuses other callers before a
 * handler runs.
 *
 * Long calls (Start, Shutdown, Migrate, the guest-agent calls) hold their
 * worker only to register an operation (agent-ops.h) and answer with its id
 * and state; GetOperation and WatchOperation read the operation table.
 */
#include "agent-rpc-priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "agent-migrate.h"
#include "agent-ops.h"
#include "agent-peer.h"
#include "agent-status.h"
#include "agent.pb-c.h"
#include "err.h"
#include "lock.h"
#include "log.h"
#include "migparams-pb.h"

#define VERSION "0.1.0"

/* The -errno whose status an agent error @r becomes: core says -ESRCH for
 * "not running"; for an existing guest that is a precondition, not a
 * missing object.  For calls and for operations alike. */
int arpc_status_errno(int r) {
        return r == -ESRCH ? -EBUSY : r;
}

RpcCode arpc_fail(RpcCall *c, int r) {
        return rpc_call_fail_errno(c, arpc_status_errno(r));
}

/* AgentOpState in the order of the proto's OperationState, after UNSPECIFIED */
_Static_assert(DROVER__V1__OPERATION_STATE__OPERATION_STATE_FAILED == AGENT_OP_FAILED + 1, "state order");
Drover__V1__OperationState arpc_op_state(AgentOpState s) {
        return s < AGENT_OP_STATE_MAX ? (Drover__V1__OperationState) (s + 1) : 0;
}

static Drover__V1__GuestState state_of(VmState s) {
        return agent_status_state(s);
}

/* @o from @s (agent-status.h), with a copy of @s in the call's arena for
 * its strings and ages as of now. */
void arpc_fill_status(RpcCall *c, Drover__V1__GuestStatus *o, const VmSnapshot *s) {
        VmSnapshot *copy = rpc_call_alloc(c, sizeof(*copy));
        Drover__V1__MigrationStats *m = rpc_call_alloc(c, sizeof(*m));
        *copy = *s;
        agent_status_view(copy, now_ns(), o, m);
}

static Drover__V1__GuestStatus *new_status(RpcCall *c, Vm *vm) {
        VmSnapshot s;
        Drover__V1__GuestStatus *o = rpc_call_alloc(c, sizeof(*o));
        drover__v1__guest_status__init(o);
        vm_snapshot(vm, &s);
        arpc_fill_status(c, o, &s);
        return o;
}

/* An unmanaged guest (agent.h): state UNSPECIFIED (its monitor is not
 * asked), reason "unmanaged", the full story in last_error. */
static Drover__V1__GuestStatus *unmanaged_status(RpcCall *c, const AgentUnmanaged *u) {
        VmSnapshot s = { .state = VM_STATE_NOSTATE, .pid = u->pid, .migration_age_ms = UINT64_MAX };
        Drover__V1__GuestStatus *o = rpc_call_alloc(c, sizeof(*o));
        drover__v1__guest_status__init(o);
        arpc_fill_status(c, o, &s);
        o->name = rpc_call_strdup(c, u->name);
        o->uuid = rpc_call_strdup(c, u->uuid);
        o->reason = (char *) "unmanaged";
        o->last_error = rpc_call_strdup(c, u->why);
        o->unmanaged = true;
        o->quarantine_file = rpc_call_strdup(c, u->file);
        return o;
}

/* Count the call in flight (host-wide calls: no guest, no operation id). */
void arpc_enter(Handler *h, RpcCall *c, void *user) {
        *h = (Handler){ .c = c, .a = user };
        atomic_fetch_add(&h->a->rpcs_in_flight, 1);
}

/* End the call with @code: drop the guest and count the call out. */
RpcCode arpc_end(Handler *h, RpcCode code) {
        vm_unref(TAKE_PTR(h->vm));
        atomic_fetch_sub(&h->a->rpcs_in_flight, 1);
        return code;
}

/* End the call with the outcome @r of an agent call: OK, or the -errno
 * mapped to a status with its detail. */
RpcCode arpc_end_r(Handler *h, int r) {
        return arpc_end(h, r < 0 ? arpc_fail(h->c, r) : RPC_OK);
}

/* arpc_enter(), then the guest named by @guest (a name or UUID) into
 * h->vm and, when @op_id is not NULL, the operation id it gives (or a new
 * one) into h->op.  Returns RPC_OK, or the status of a missing or unknown
 * guest or of an op id that breaks op_id_check() (INVALID_ARGUMENT) with
 * the call already ended: return it. */
RpcCode arpc_guest(Handler *h, RpcCall *c, void *user, const char *guest, const char *op_id) {
        arpc_enter(h, c, user);
        if (!guest || !guest[0])
                return arpc_end(h, rpc_call_fail(c, RPC_INVALID_ARGUMENT, "'guest' is required (a name or UUID)"));
        h->vm = vm_registry_lookup(h->a->vms, guest);
        if (!h->vm)
                return arpc_end(h, rpc_call_fail(c, RPC_NOT_FOUND, "no guest '%s' on host %s", guest,
                                                 h->a->cfg.host));
        if (op_id && agent_op_id(h->a, op_id, h->op) < 0)
                return arpc_end(h, rpc_call_fail(c, RPC_INVALID_ARGUMENT, "%s", err_msg()));
        return RPC_OK;
}

/* arpc_end_r(), filling @resp (when not NULL) with the guest's status
 * after a successful call. */
RpcCode arpc_end_status(Handler *h, int r, Drover__V1__GuestStatus *resp) {
        if (r >= 0 && resp) {
                VmSnapshot s;
                vm_snapshot(h->vm, &s);
                arpc_fill_status(h->c, resp, &s);
        }
        return arpc_end_r(h, r);
}

/* The guest's status and definition into @resp. */
static void fill_guest(RpcCall *c, Vm *vm, Drover__V1__GetGuestResponse *resp) {
        resp->status = new_status(c, vm);
        vm_lock(vm);
        resp->definition_json = rpc_call_strdup(c, vm->definition_json ? vm->definition_json : "");
        vm_unlock(vm);
}

static RpcCode h_define(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp, void *user) {
        const Drover__V1__DefineRequest *req = (const void *) req_;
        Handler h;
        arpc_enter(&h, c, user);
        if (agent_op_id(h.a, req->op_id, h.op) < 0)
                return arpc_end(&h, rpc_call_fail(c, RPC_INVALID_ARGUMENT, "%s", err_msg()));
        int r = agent_vm_define(h.a, req->definition_json, strlen(req->definition_json), h.op, &h.vm);
        if (r >= 0)
                fill_guest(c, h.vm, (void *) resp);
        return arpc_end_r(&h, r);
}

RpcCode arpc_guest_op(RpcCall *c, void *user, const Drover__V1__GuestRef *req, GuestOpFn fn,
                      Drover__V1__GuestStatus *resp) {
        Handler h;
        RpcCode code = arpc_guest(&h, c, user, req->guest, req->op_id);
        if (code != RPC_OK)
                return code;
        return arpc_end_status(&h, fn(h.a, h.vm, h.op), resp);
}

static RpcCode h_undefine(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user) {
        (void) resp;
        return arpc_guest_op(c, user, (const void *) req, agent_vm_undefine, NULL);
}
static RpcCode h_destroy(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user) {
        return arpc_guest_op(c, user, (const void *) req, agent_vm_destroy, (void *) resp);
}
static RpcCode h_suspend(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user) {
        return arpc_guest_op(c, user, (const void *) req, agent_vm_suspend, (void *) resp);
}
static RpcCode h_resume(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user) {
        return arpc_guest_op(c, user, (const void *) req, agent_vm_resume, (void *) resp);
}

/* End a Start or Shutdown call that registered (or found) operation @o
 * with outcome @r: the guest's status now, with the operation's id and
 * state. */
static RpcCode op_end_status(Handler *h, int r, AgentOpInfo *o, Drover__V1__GuestStatus *resp) {
        if (r < 0)
                return arpc_end_r(h, r);
        VmSnapshot s;
        vm_snapshot(h->vm, &s);
        arpc_fill_status(h->c, resp, &s); /* first: it initialises @resp */
        resp->operation_id = rpc_call_strdup(h->c, o->id);
        resp->operation_state = arpc_op_state(o->state);
        agent_op_info_clear(o);
        return arpc_end(h, RPC_OK);
}

static RpcCode h_start(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp, void *user) {
        const Drover__V1__StartRequest *req = (const void *) req_;
        Handler h;
        RpcCode code = arpc_guest(&h, c, user, req->guest, req->op_id);
        if (code != RPC_OK)
                return code;
        AgentOpInfo o;
        int r = agent_ops_start_guest(h.a, h.vm, h.op, req->paused, req->timeout_ms, &o);
        return op_end_status(&h, r, &o, (void *) resp);
}

static RpcCode h_shutdown(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp, void *user) {
        const Drover__V1__ShutdownRequest *req = (const void *) req_;
        Handler h;
        RpcCode code = arpc_guest(&h, c, user, req->guest, req->op_id);
        if (code != RPC_OK)
                return code;
        AgentOpInfo o;
        int r = agent_ops_shutdown_guest(h.a, h.vm, h.op, req->timeout_ms, req->force, &o);
        return op_end_status(&h, r, &o, (void *) resp);
}

static void *call_alloc(void *c, size_t size) {
        return rpc_call_alloc(c, size);
}

static void call_free(void *c, void *p) {
        (void) c;
        (void) p; /* the arena goes when the call ends */
}

/* The statuses go out pre-packed, as the response's unknown fields with
 * the tag of `guests` (agent-status.h): cached bytes per guest and
 * generation, with the ages as of this call. */
static RpcCode h_list(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp_, void *user) {
        Drover__V1__ListGuestsResponse *resp = (void *) resp_;
        ProtobufCAllocator arena = { .alloc = call_alloc, .free = call_free, .allocator_data = c };
        Handler h;
        Vm **vms;
        size_t n;
        (void) req;
        arpc_enter(&h, c, user);
        AgentUnmanaged *um;
        int nu = agent_unmanaged_list(h.a, &um);
        if (nu < 0)
                return arpc_end_r(&h, nu);
        int r = vm_registry_list(h.a->vms, &vms, &n);
        if (r < 0) {
                free(um);
                return arpc_end_r(&h, r);
        }
        ProtobufCMessageUnknownField *f = rpc_call_alloc(c, (n + (size_t) nu + 1) * sizeof(*f));
        r = agent_status_list(vms, n, now_ns(), &arena, f);
        for (int i = 0; r >= 0 && i < nu; i++)
                r = agent_status_field(unmanaged_status(c, &um[i]), &arena, &f[n + (size_t) i]);
        vm_registry_list_free(vms, n);
        free(um);
        if (r < 0)
                return arpc_end_r(&h, r);
        resp->base.unknown_fields = f;
        resp->base.n_unknown_fields = n + (size_t) nu;
        return arpc_end(&h, RPC_OK);
}

static RpcCode h_get(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp, void *user) {
        const Drover__V1__GuestRef *req = (const void *) req_;
        Handler h;
        RpcCode code = arpc_guest(&h, c, user, req->guest, NULL);
        if (code != RPC_OK)
                return code;
        fill_guest(c, h.vm, (void *) resp);
        return arpc_end(&h, RPC_OK);
}

/* Streams hold a worker of the streams lane for their whole life; one
 * worker stays free to refuse a stream beyond the cap at once instead of
 * queueing it (docs/agent.md, "Lanes"). */
static atomic_uint streams_open;

/* arpc_enter() for a stream: admitted under the cap on open streams,
 * and holding a reference on the call for the subscription that wakes it.
 * Returns RPC_OK, or RESOURCE_EXHAUSTED with the call already ended. */
RpcCode arpc_stream_enter(Handler *h, RpcCall *c, void *user) {
        arpc_enter(h, c, user);
        unsigned cap = h->a->cfg.lane_streams > 1 ? h->a->cfg.lane_streams - 1 : 1;
        if (atomic_fetch_add(&streams_open, 1) >= cap) {
                atomic_fetch_sub(&streams_open, 1);
                return arpc_end(h, rpc_call_fail(c, RPC_RESOURCE_EXHAUSTED,
                                                 "%u watch streams are open on this agent, the most it "
                                                 "serves (rpc_lanes.streams - 1)",
                                                 cap));
        }
        rpc_call_ref(c);
        return RPC_OK;
}

/* End a stream begun with arpc_stream_enter() with @code. */
RpcCode arpc_stream_end(Handler *h, RpcCode code) {
        rpc_call_unref(h->c);
        atomic_fetch_sub(&streams_open, 1);
        return arpc_end(h, code);
}

void arpc_wake_call(void *opaque) {
        rpc_call_wake(opaque);
}

static RpcCode h_watch(RpcCall *c, const ProtobufCMessage *req_, void *user) {
        const Drover__V1__WatchEventsRequest *req = (const void *) req_;
        AgentEvent evs[64];
        Handler h;
        RpcCode code = arpc_stream_enter(&h, c, user);
        if (code != RPC_OK)
                return code;
        Agent *a = h.a;
        int id = event_bus_subscribe(a->events, arpc_wake_call, c);
        if (id < 0)
                return arpc_stream_end(&h, arpc_fail(c, id));
        uint64_t last = event_bus_last_seq(a->events);
        for (;;) {
                size_t n = event_bus_read(a->events, last, evs, ELEMENTSOF(evs));
                for (size_t i = 0; i < n; i++) {
                        last = evs[i].seq;
                        if (req->guest[0] && strcmp(req->guest, evs[i].guest) != 0 &&
                            strcasecmp(req->guest, evs[i].uuid) != 0)
                                continue;
                        Drover__V1__GuestEvent ev = DROVER__V1__GUEST_EVENT__INIT;
                        ev.seq = evs[i].seq;
                        ev.time_unix_ms = evs[i].time_unix_ms;
                        ev.guest = evs[i].guest;
                        ev.uuid = evs[i].uuid;
                        ev.kind = evs[i].kind;
                        ev.detail = evs[i].detail;
                        ev.state = state_of((VmState) evs[i].state);
                        ev.reason = evs[i].reason;
                        if (rpc_call_send(c, &ev.base) < 0)
                                goto done;
                }
                if (n == ELEMENTSOF(evs))
                        continue;
                if (rpc_call_wait(c, -1) == RPC_WAIT_CANCELLED)
                        break;
        }
done:
        event_bus_unsubscribe(a->events, id);
        return arpc_stream_end(&h, code);
}

/* ---- guest agent (operations) ------------------------------------------------------- */

/* The reply of guest-agent call @kind from @res into @resp (that call's
 * response type): for the call's own reply and for Operation's result. */
void arpc_fill_ga_reply(RpcCall *c, AgentOpKind kind, const AgentOpResult *res, ProtobufCMessage *resp) {
        switch (kind) {
        case AGENT_OP_GUEST_PING:
                ((Drover__V1__GuestPingResponse *) resp)->round_trip_us = res->ping_us;
                break;
        case AGENT_OP_GUEST_INFO: {
                Drover__V1__GuestInfoResponse *o = (void *) resp;
                const GaGuestInfo *info = &res->info;
                o->version = rpc_call_strdup(c, info->version);
                o->enabled_commands = rpc_call_alloc(c, (info->n_enabled + 1) * sizeof(char *));
                o->disabled_commands = rpc_call_alloc(c, (info->n_disabled + 1) * sizeof(char *));
                for (size_t i = 0; i < info->n_enabled; i++)
                        o->enabled_commands[i] = rpc_call_strdup(c, info->enabled[i]);
                for (size_t i = 0; i < info->n_disabled; i++)
                        o->disabled_commands[i] = rpc_call_strdup(c, info->disabled[i]);
                o->n_enabled_commands = info->n_enabled;
                o->n_disabled_commands = info->n_disabled;
                break;
        }
        case AGENT_OP_GUEST_SET_TIME:
                ((Drover__V1__GuestSetTimeResponse *) resp)->guest_time_before_ns = res->time_before_ns;
                ((Drover__V1__GuestSetTimeResponse *) resp)->guest_time_after_ns = res->time_after_ns;
                break;
        case AGENT_OP_GUEST_GET_TIME:
                ((Drover__V1__GuestGetTimeResponse *) resp)->guest_time_ns = res->time_ns;
                break;
        default:
                break;
        }
}

/* The guest-agent calls: register operation @kind on the guest @guest
 * names and answer with its id and state (and its reply, when a retry
 * finds it succeeded).  @id_field and @state_field: where the response
 * type keeps them. */
static RpcCode ga_op(RpcCall *c, void *user, const char *guest, const char *op_id, AgentOpKind kind,
                     const AgentGaArgs *args, ProtobufCMessage *resp, char **id_field,
                     Drover__V1__OperationState *state_field) {
        AgentOpInfo o;
        Handler h;
        RpcCode code = arpc_guest(&h, c, user, guest, op_id);
        if (code != RPC_OK)
                return code;
        int r = agent_ops_guest_agent(h.a, h.vm, h.op, kind, args, &o);
        if (r < 0)
                return arpc_end_r(&h, r);
        *id_field = rpc_call_strdup(c, o.id);
        *state_field = arpc_op_state(o.state);
        if (o.state == AGENT_OP_SUCCEEDED)
                arpc_fill_ga_reply(c, kind, &o.result, resp);
        agent_op_info_clear(&o);
        return arpc_end(&h, RPC_OK);
}

/* GuestPing, GuestInfo, GuestGetTime: a GuestRef, no arguments. */
#define GA_HANDLER(name, Resp, kind)                                                                           \
        static RpcCode name(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {   \
                const Drover__V1__GuestRef *req = (const void *) req_;                                          \
                Resp *resp = (void *) resp_;                                                                    \
                return ga_op(c, user, req->guest, req->op_id, kind, NULL, resp_, &resp->operation_id,          \
                             &resp->operation_state);                                                           \
        }
GA_HANDLER(h_guest_ping, Drover__V1__GuestPingResponse, AGENT_OP_GUEST_PING)
GA_HANDLER(h_guest_info, Drover__V1__GuestInfoResponse, AGENT_OP_GUEST_INFO)
GA_HANDLER(h_guest_get_time, Drover__V1__GuestGetTimeResponse, AGENT_OP_GUEST_GET_TIME)

static RpcCode h_guest_set_time(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        const Drover__V1__GuestSetTimeRequest *req = (const void *) req_;
        Drover__V1__GuestSetTimeResponse *resp = (void *) resp_;
        if (req->time_unix_ns < 0)
                return rpc_call_fail(c, RPC_INVALID_ARGUMENT, "'time_unix_ns' must not be negative");
        AgentGaArgs args = { .time_ns = req->time_unix_ns, .from_rtc = req->from_rtc };
        return ga_op(c, user, req->guest, req->op_id, AGENT_OP_GUEST_SET_TIME, &args, resp_,
                     &resp->operation_id, &resp->operation_state);
}

/* Memory, CPUs and CPU model of this host, from /proc. */
static void read_host_facts(RpcCall *c, Drover__V1__GetAgentStatsResponse *resp) {
        char line[512];
        FILE *f = fopen("/proc/meminfo", "re");
        if (f) {
                unsigned long long kb;
                while (fgets(line, sizeof(line), f))
                        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) {
                                resp->host_memory_mib = kb / 1024;
                                break;
                        }
                fclose(f);
        }
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        resp->host_cpus = cpus > 0 ? (uint32_t) cpus : 0;
        resp->host_cpu = (char *) "";
        f = fopen("/proc/cpuinfo", "re");
        if (f) {
                while (fgets(line, sizeof(line), f)) {
                        char *colon = strchr(line, ':');
                        if (strncmp(line, "model name", 10) == 0 && colon) {
                                colon[strcspn(colon, "\n")] = '\0';
                                resp->host_cpu = rpc_call_strdup(c, colon + 2);
                                break;
                        }
                }
                fclose(f);
        }
}

/* Add the unmanaged guests to @resp: counted, their QEMU's memory and
 * vCPUs in the host's load, one marked summary each (resp->guests has room
 * for them: call it right after the managed ones are in). */
static void count_unmanaged(RpcCall *c, Agent *a, Drover__V1__GetAgentStatsResponse *resp) {
        AgentUnmanaged *um;
        int nu = agent_unmanaged_list(a, &um);
        if (nu <= 0)
                return;
        Drover__V1__GuestSummary **all = rpc_call_alloc(c, (resp->n_guests + (size_t) nu + 1) * sizeof(*all));
        memcpy(all, resp->guests, resp->n_guests * sizeof(*all));
        resp->guests = all;
        for (int i = 0; i < nu; i++) {
                Drover__V1__GuestSummary *g = rpc_call_alloc(c, sizeof(*g));
                drover__v1__guest_summary__init(g);
                g->name = rpc_call_strdup(c, um[i].name);
                g->uuid = rpc_call_strdup(c, um[i].uuid);
                g->memory_mib = um[i].memory_mib;
                g->vcpus = um[i].vcpus;
                g->cpu_model = rpc_call_strdup(c, um[i].cpu_model);
                g->async_job = (char *) async_job_to_string(ASYNC_JOB_NONE);
                g->phase = (char *) job_phase_to_string(JOB_PHASE_NONE);
                g->unmanaged = true;
                resp->guests[resp->n_guests++] = g;
                resp->guests_memory_mib += um[i].memory_mib;
                resp->guests_vcpus += um[i].vcpus;
        }
        resp->guests_unmanaged = (uint32_t) nu;
        resp->guests_total += (uint32_t) nu;
        free(um);
}

/* The server this service runs on (set once, before it starts). */
static RpcServer *served_by;

static void fill_lanes(RpcCall *c, Drover__V1__GetAgentStatsResponse *resp) {
        unsigned n = served_by ? rpc_server_n_lanes(served_by) : 0;
        resp->lanes = rpc_call_alloc(c, (n + 1) * sizeof(*resp->lanes));
        for (unsigned i = 0; i < n; i++) {
                RpcLaneStats st;
                if (rpc_server_lane_stats(served_by, i, &st) < 0)
                        continue;
                Drover__V1__RpcLaneStats *l = rpc_call_alloc(c, sizeof(*l));
                drover__v1__rpc_lane_stats__init(l);
                l->name = rpc_call_strdup(c, st.name);
                l->workers = st.workers;
                l->busy = st.busy;
                l->queued = st.queued;
                l->served = st.served;
                l->refused_expired = st.refused_expired;
                l->waited = st.waited;
                l->wait_total_ns = st.wait_total_ns;
                l->wait_max_ns = st.wait_max_ns;
                l->wait_histogram = rpc_call_alloc(c, sizeof(st.wait_hist));
                memcpy(l->wait_histogram, st.wait_hist, sizeof(st.wait_hist));
                l->n_wait_histogram = RPC_LANE_WAIT_BUCKETS;
                resp->lanes[resp->n_lanes++] = l;
        }
}

static RpcCode h_stats(RpcCall *c, const ProtobufCMessage *req_, ProtobufCMessage *resp_, void *user) {
        Agent *a = user;
        Handler h;
        const Drover__V1__GetAgentStatsRequest *req = (const void *) req_;
        Drover__V1__GetAgentStatsResponse *resp = (void *) resp_;
        LockStats ls[32];
        unsigned by_state[VM_STATE_MAX] = { 0 };
        Vm **vms;
        size_t n;
        arpc_enter(&h, c, user);

        size_t nl = MIN(lock_stats_snapshot(ls, ELEMENTSOF(ls)), ELEMENTSOF(ls));
        if (req->reset_locks)
                lock_stats_reset();
        resp->host = a->cfg.host;
        resp->version = (char *) VERSION;
        resp->uptime_ms = (now_ns() - a->started_ns) / NSEC_PER_MSEC;
        resp->locks = rpc_call_alloc(c, (nl + 1) * sizeof(*resp->locks));
        resp->n_locks = nl;
        for (size_t i = 0; i < nl; i++) {
                Drover__V1__LockClassStats *l = rpc_call_alloc(c, sizeof(*l));
                drover__v1__lock_class_stats__init(l);
                l->name = rpc_call_strdup(c, ls[i].name);
                l->count = ls[i].count;
                l->total_ns = ls[i].total_ns;
                l->max_ns = ls[i].max_ns;
                l->wait_max_ns = ls[i].wait_max_ns;
                l->histogram = rpc_call_alloc(c, sizeof(uint64_t) * LOCK_HIST_BUCKETS);
                memcpy(l->histogram, ls[i].hist, sizeof(uint64_t) * LOCK_HIST_BUCKETS);
                l->n_histogram = LOCK_HIST_BUCKETS;
                resp->locks[i] = l;
        }
        if (vm_registry_list(a->vms, &vms, &n) < 0)
                return arpc_end(&h, arpc_fail(c, -ENOMEM));
        resp->guests = rpc_call_alloc(c, (n + 1) * sizeof(*resp->guests));
        for (size_t i = 0; i < n; i++) {
                VmSnapshot s;
                AgentVm *av = vms[i]->ops.opaque;
                vm_snapshot(vms[i], &s);
                by_state[s.state]++;
                resp->jobs_in_flight += s.job != JOB_NONE;
                resp->async_jobs_in_flight += s.async_job != ASYNC_JOB_NONE;
                resp->agent_jobs_in_flight += s.ga_job != GA_JOB_NONE;
                bool live = s.state != VM_STATE_SHUTOFF && s.state != VM_STATE_CRASHED;
                if (live) {
                        resp->guests_memory_mib += av->def.memory_mib;
                        resp->guests_vcpus += av->def.vcpus;
                }
                Drover__V1__GuestSummary *g = rpc_call_alloc(c, sizeof(*g));
                drover__v1__guest_summary__init(g);
                g->name = rpc_call_strdup(c, s.name);
                g->uuid = rpc_call_strdup(c, s.uuid);
                g->state = state_of(s.state);
                g->memory_mib = av->def.memory_mib;
                g->vcpus = av->def.vcpus;
                g->cpu_model = rpc_call_strdup(c, av->def.cpu_model);
                g->async_job = (char *) async_job_to_string(s.async_job);
                g->phase = (char *) job_phase_to_string(s.phase);
                g->dirty_pages_rate = s.migration.ram_dirty_pages_rate;
                g->local_disk_bytes = mig_storage_local_bytes(&av->def);
                resp->guests[resp->n_guests++] = g;
        }
        read_host_facts(c, resp);
        vm_registry_list_free(vms, n);
        resp->guests_total = (uint32_t) n;
        count_unmanaged(c, a, resp);
        resp->guests_by_state = rpc_call_alloc(c, (VM_STATE_MAX + 1) * sizeof(*resp->guests_by_state));
        for (int st = 0; st < VM_STATE_MAX; st++) {
                if (!by_state[st])
                        continue;
                Drover__V1__GetAgentStatsResponse__GuestsByStateEntry *e = rpc_call_alloc(c, sizeof(*e));
                drover__v1__get_agent_stats_response__guests_by_state_entry__init(e);
                e->key = (char *) vm_state_to_string((VmState) st);
                e->value = by_state[st];
                resp->guests_by_state[resp->n_guests_by_state++] = e;
        }
        if (resp->guests_unmanaged) {
                Drover__V1__GetAgentStatsResponse__GuestsByStateEntry *e = rpc_call_alloc(c, sizeof(*e));
                drover__v1__get_agent_stats_response__guests_by_state_entry__init(e);
                e->key = (char *) "unmanaged";
                e->value = resp->guests_unmanaged;
                resp->guests_by_state[resp->n_guests_by_state++] = e;
        }
        resp->rpcs_in_flight = atomic_load(&a->rpcs_in_flight) - 1; /* not counting this one */
        fill_lanes(c, resp);
        return arpc_end(&h, RPC_OK);
}

void agent_rpc_lanes(const AgentConfig *cfg, RpcServerOptions *o) {
        o->lanes[AGENT_LANE_QUERIES] = (RpcLaneOptions){ .name = "queries", .threads = cfg->lane_queries };
        o->lanes[AGENT_LANE_PEER] = (RpcLaneOptions){ .name = "peer", .threads = cfg->lane_peer };
        o->lanes[AGENT_LANE_MIGRATE] = (RpcLaneOptions){ .name = "migrate", .threads = cfg->lane_migrate };
        o->lanes[AGENT_LANE_CONTROL] = (RpcLaneOptions){ .name = "control", .threads = cfg->lane_control };
        o->lanes[AGENT_LANE_STREAMS] = (RpcLaneOptions){ .name = "streams", .threads = cfg->lane_streams };
        o->n_lanes = AGENT_LANE_COUNT;
}

/* Who may call what (docs/security.md, "Who can call what"): the
 * coordinator and operators (agentctl) drive guests and migrations; peer
 * agents only the destination's migration phases; readers the queries. */
#define CONTROL (RPC_ROLES_COORDINATOR | RPC_ROLES_OPERATOR)
#define QUERY (RPC_ROLES_COORDINATOR | RPC_ROLES_OPERATOR | RPC_ROLES_READER)
#define PEER RPC_ROLES_AGENT

static const RpcMethodDef agent_methods[] = {
        { "Define", h_define, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "Undefine", h_undefine, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "Start", h_start, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "Shutdown", h_shutdown, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "Destroy", h_destroy, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "Suspend", h_suspend, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "Resume", h_resume, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "ListGuests", h_list, NULL, AGENT_LANE_QUERIES, QUERY },
        { "GetGuest", h_get, NULL, AGENT_LANE_QUERIES, QUERY },
        { "WatchEvents", NULL, h_watch, AGENT_LANE_STREAMS, QUERY },
        { "GuestPing", h_guest_ping, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "GuestInfo", h_guest_info, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "GuestSetTime", h_guest_set_time, NULL, AGENT_LANE_CONTROL, CONTROL },
        { "GuestGetTime", h_guest_get_time, NULL, AGENT_LANE_CONTROL, CONTROL }, /* runs a guest-agent command */
        { "GetAgentStats", h_stats, NULL, AGENT_LANE_QUERIES, QUERY },
        { "GetOperation", h_get_operation, NULL, AGENT_LANE_QUERIES, QUERY },
        { "WatchOperation", NULL, h_watch_operation, AGENT_LANE_STREAMS, QUERY },
        { "Migrate", h_migrate, NULL, AGENT_LANE_MIGRATE, CONTROL },
        { "MigrateAbort", h_migrate_abort, NULL, AGENT_LANE_MIGRATE, CONTROL },
        { "MigrateTune", h_migrate_tune, NULL, AGENT_LANE_MIGRATE, CONTROL },
        { "MigrateStartPostcopy", h_migrate_postcopy, NULL, AGENT_LANE_MIGRATE, CONTROL },
        { "WatchMigration", NULL, h_watch_migration, AGENT_LANE_STREAMS, QUERY },
        { "GetMigration", h_get_migration, NULL, AGENT_LANE_QUERIES, QUERY },
        { "MigrateRecoverNow", h_migrate_recover_now, NULL, AGENT_LANE_MIGRATE, CONTROL },
        { "MigratePrepare", h_prepare, NULL, AGENT_LANE_PEER, PEER },
        { "MigrateFinish", h_finish, NULL, AGENT_LANE_PEER, PEER },
        { "MigrateCancel", h_cancel, NULL, AGENT_LANE_PEER, PEER },
        { "MigrationOwner", h_owner, NULL, AGENT_LANE_PEER, PEER },
        { "MigrateRecover", h_recover, NULL, AGENT_LANE_PEER, PEER },
};

int agent_rpc_register(RpcServer *srv, Agent *a) {
        served_by = srv;
        return rpc_server_add_service(srv, &drover__v1__agent__descriptor, agent_methods,
                                      ELEMENTSOF(agent_methods), a);
}
