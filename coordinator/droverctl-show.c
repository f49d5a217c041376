/* droverctl's commands that ask once and print the answer: hosts, vms,
 * jobs, job, cancel, host STATE, and the job requests (migrate, evacuate,
 * plan), which print the plan and the job, then follow it with --wait.
 *
 * Each prints a table on a terminal or a pipe, or one JSON value with
 * --json; names of states and phases come from coord-enums.h, the same
 * tables the coordinator uses.  A failed call is reported by dctl_call()
 * (droverctl-rpc.c), which also chooses the exit code and prints the
 * blocked guests a refused job request lists in its status details
 * (dctl_blocked_details, here beside the plan's own lines).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord-enums.h"
#include "droverctl-host.h"
#include "droverctl.h"
#include "migparams-pb.h"
#include "rpc-details.h"
#include "text.h"

int dctl_cmd_hosts(int argc, char **argv) {
        Drover__V1__ListHostsRequest req = DROVER__V1__LIST_HOSTS_REQUEST__INIT;
        Drover__V1__ListHostsResponse *r;
        int rc = dctl_call("hosts", "ListHosts", &req.base, (ProtobufCMessage **) &r);
        if (rc)
                return rc;
        JsonValue *arr = dctl_opt.json ? json_new_array() : NULL;
        if (!dctl_opt.json)
                printf("%-16s %-12s %-12s %14s %10s %7s  %s\n", "HOST", "STATE", "HEALTH", "MEMORY MiB", "VCPUS", "GUESTS",
                       "ADDRESS");
        for (size_t i = 0; i < r->n_hosts; i++) {
                Drover__V1__Host *h = r->hosts[i];
                if (dctl_opt.json) {
                        JsonValue *x = json_new_object();
                        json_add_string(x, "name", h->name);
                        json_add_string(x, "address", h->address);
                        json_add_string(x, "state", coord_host_state_to_string(h->state));
                        json_add_string(x, "health", coord_host_health_to_string(h->health));
                        json_add_i64(x, "memory_mib", (int64_t) h->memory_mib);
                        json_add_i64(x, "memory_used_mib", (int64_t) h->memory_used_mib);
                        json_add_i64(x, "vcpus", h->vcpus);
                        json_add_i64(x, "vcpus_used", h->vcpus_used);
                        json_add_i64(x, "guests", h->guests);
                        json_add_string(x, "cpu_model", h->cpu_model);
                        json_add_i64(x, "last_seen_unix_ms", (int64_t) h->last_seen_unix_ms);
                        json_add_string(x, "last_error", h->last_error);
                        json_append(arr, x);
                        continue;
                }
                char mem[48], cpu[32];
                snprintf(mem, sizeof(mem), "%llu/%llu", (unsigned long long) h->memory_used_mib,
                         (unsigned long long) h->memory_mib);
                snprintf(cpu, sizeof(cpu), "%u/%u", h->vcpus_used, h->vcpus);
                printf("%-16s %-12s %-12s %14s %10s %7u  %s\n", h->name, coord_host_state_to_string(h->state),
                       coord_host_health_to_string(h->health), mem, cpu, h->guests, h->address);
                if (h->last_error[0])
                        printf("    last error: %s\n", h->last_error);
        }
        if (dctl_opt.json)
                dctl_print_json(arr);
        drover__v1__list_hosts_response__free_unpacked(r, NULL);
        return DCTL_EXIT_OK;
}

int dctl_cmd_vms(int argc, char **argv) {
        Drover__V1__ListGuestsClusterRequest req = DROVER__V1__LIST_GUESTS_CLUSTER_REQUEST__INIT;
        Drover__V1__ListGuestsClusterResponse *r;
        req.host = argc ? argv[0] : (char *) "";
        int rc = dctl_call("vms", "ListGuests", &req.base, (ProtobufCMessage **) &r);
        if (rc)
                return rc;
        JsonValue *arr = dctl_opt.json ? json_new_array() : NULL;
        if (!dctl_opt.json)
                printf("%-20s %-16s %-9s %10s %6s  %s\n", "GUEST", "HOST", "STATE", "MEMORY", "VCPUS", "UUID");
        for (size_t i = 0; i < r->n_guests; i++) {
                Drover__V1__ClusterGuest *g = r->guests[i];
                const char *state = g->unmanaged ? "unmanaged" : coord_guest_state_to_string(g->state);
                if (dctl_opt.json) {
                        JsonValue *x = json_new_object();
                        json_add_string(x, "name", g->name);
                        json_add_string(x, "uuid", g->uuid);
                        json_add_string(x, "host", g->host);
                        json_add_string(x, "state", state);
                        json_add_bool(x, "unmanaged", g->unmanaged);
                        json_add_i64(x, "memory_mib", (int64_t) g->memory_mib);
                        json_add_i64(x, "vcpus", g->vcpus);
                        json_add_i64(x, "local_disk_bytes", (int64_t) g->local_disk_bytes);
                        json_append(arr, x);
                } else
                        printf("%-20s %-16s %-9s %7llu MiB %6u  %s\n", g->name, g->host, g->unmanaged ? "UNMANAGED" : state,
                               (unsigned long long) g->memory_mib, g->vcpus, g->uuid);
        }
        if (dctl_opt.json)
                dctl_print_json(arr);
        else if (r->n_guests == 0 && argc)
                printf("(no guests on %s)\n", argv[0]);
        else if (r->n_guests == 0)
                printf("(no guests)\n");
        drover__v1__list_guests_cluster_response__free_unpacked(r, NULL);
        return DCTL_EXIT_OK;
}

static void plan_entry_json(JsonValue *arr, const Drover__V1__PlanEntry *e) {
        JsonValue *y = json_new_object();
        json_add_string(y, "guest", e->guest);
        json_add_string(y, "source", e->source);
        json_add_string(y, "destination", e->destination);
        json_add_double(y, "estimated_s", e->estimated_s);
        json_add_string(y, "reason", e->reason);
        json_append(arr, y);
}

/* One blocked guest as a plan prints it ("  web1  hv3  BLOCKED: why"). */
static void blocked_line(FILE *f, const Drover__V1__PlanEntry *e) {
        fprintf(f, "  %-18s %-10s BLOCKED: %s\n", e->guest, e->source, e->reason);
}

void dctl_blocked_details(const RpcStatus *st, JsonValue *json) {
        Drover__V1__BlockedGuests *d = NULL;
        if (rpc_status_detail(st, &drover__v1__blocked_guests__descriptor, (ProtobufCMessage **) &d) < 0)
                return; /* none attached, or unreadable: the message still names the first guests */
        if (json) {
                JsonValue *blocked = json_new_array();
                for (size_t i = 0; i < d->n_blocked; i++)
                        plan_entry_json(blocked, d->blocked[i]);
                json_add(json, "blocked", blocked);
                json_add_i64(json, "blocked_omitted", d->omitted);
        } else {
                fprintf(stderr, "%zu blocked guests:\n", d->n_blocked + d->omitted);
                for (size_t i = 0; i < d->n_blocked; i++)
                        blocked_line(stderr, d->blocked[i]);
                if (d->omitted)
                        fprintf(stderr, "  ... and %u more (too many for the error details; 'droverctl plan' "
                                        "lists them all)\n", d->omitted);
        }
        drover__v1__blocked_guests__free_unpacked(d, NULL);
}

/* Print a job request's answer; @empty: the request had nothing to move. */
static int show_result(const Drover__V1__JobResponse *r, const char *empty) {
        const Drover__V1__Plan *p = r->plan;
        if (dctl_opt.json) {
                JsonValue *x = json_new_object();
                if (p) {
                        JsonValue *moves = json_new_array(), *blocked = json_new_array();
                        for (size_t i = 0; i < p->n_moves; i++)
                                plan_entry_json(moves, p->moves[i]);
                        for (size_t i = 0; i < p->n_blocked; i++)
                                plan_entry_json(blocked, p->blocked[i]);
                        json_add(x, "moves", moves);
                        json_add(x, "blocked", blocked);
                        json_add_double(x, "estimated_makespan_s", p->estimated_makespan_s);
                }
                if (empty)
                        json_add_string(x, "message", empty);
                if (r->job)
                        json_add(x, "job", dctl_job_json(r->job));
                dctl_print_json(x);
        } else {
                if (empty)
                        printf("%s\n", empty);
                if (p) {
                        printf("plan: %zu guests move, %zu blocked, estimated makespan %.1f s\n", p->n_moves, p->n_blocked,
                               p->estimated_makespan_s);
                        for (size_t i = 0; i < p->n_moves; i++)
                                printf("  %-18s %-10s -> %-10s %6.1f s  %s\n", p->moves[i]->guest, p->moves[i]->source,
                                       p->moves[i]->destination, p->moves[i]->estimated_s, p->moves[i]->reason);
                        for (size_t i = 0; i < p->n_blocked; i++)
                                blocked_line(stdout, p->blocked[i]);
                }
                if (r->job)
                        printf("job %s started\n", r->job->id);
        }
        return p && p->n_blocked ? DCTL_EXIT_PARTIAL : DCTL_EXIT_OK;
}

/* Send job request @req by @method; print the plan and the job; with
 * --wait follow it.  @host: the evacuated host (for the empty message). */
static int submit(const char *method, const ProtobufCMessage *req, const char *host) {
        Drover__V1__JobResponse *r;
        int code = dctl_call(method, method, req, (ProtobufCMessage **) &r);
        if (code)
                return code;
        char empty[200] = "", id[64] = "";
        bool nothing = (!r->plan || (r->plan->n_moves == 0 && r->plan->n_blocked == 0)) &&
                       (!r->job || r->job->n_subtasks == 0);
        if (nothing && host)
                snprintf(empty, sizeof(empty), "host %.100s has no running or paused guest: nothing to move", host);
        else if (nothing)
                snprintf(empty, sizeof(empty), "no guest to move");
        code = show_result(r, nothing ? empty : NULL);
        if (r->job)
                snprintf(id, sizeof(id), "%s", r->job->id);
        drover__v1__job_response__free_unpacked(r, NULL);
        if (dctl_opt.wait && id[0] && !dctl_opt.dry_run)
                return dctl_watch(id);
        return code;
}

static Drover__V1__FailurePolicy failure_policy(void) {
        return dctl_opt.stop_on_failure ? DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_STOP
                                        : DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_CONTINUE;
}

int dctl_cmd_migrate(int argc, char **argv) {
        Drover__V1__MigrateGuestsRequest req = DROVER__V1__MIGRATE_GUESTS_REQUEST__INIT;
        Drover__V1__MigrationParams p;
        mig_params_to_pb(&dctl_opt.params, &p);
        req.guests = argv;
        req.n_guests = (size_t) argc;
        req.to_host = (char *) (dctl_opt.to ? dctl_opt.to : "");
        req.params = &p;
        req.failure_policy = failure_policy();
        req.dry_run = dctl_opt.dry_run;
        return submit("MigrateGuests", &req.base, NULL);
}

int dctl_cmd_evacuate(int argc, char **argv) {
        Drover__V1__EvacuateRequest req = DROVER__V1__EVACUATE_REQUEST__INIT;
        Drover__V1__MigrationParams p;
        mig_params_to_pb(&dctl_opt.params, &p);
        req.host = argv[0];
        req.params = &p;
        req.failure_policy = failure_policy();
        req.dry_run = dctl_opt.dry_run;
        req.maintenance = dctl_opt.maintenance;
        return submit("Evacuate", &req.base, argv[0]);
}

int dctl_cmd_plan(int argc, char **argv) {
        dctl_opt.dry_run = true;
        if (strcmp(argv[0], "evacuate") == 0 && argc == 2)
                return dctl_cmd_evacuate(argc - 1, argv + 1);
        if (strcmp(argv[0], "migrate") == 0)
                return dctl_cmd_migrate(argc - 1, argv + 1);
        fprintf(stderr, "droverctl: plan: '%s' is not 'evacuate HOST' or 'migrate GUEST...'\n"
                        "usage: droverctl [options] plan evacuate HOST | migrate GUEST... (droverctl plan --help)\n",
                argv[0]);
        return DCTL_EXIT_USAGE;
}

int dctl_cmd_jobs(int argc, char **argv) {
        Drover__V1__ListJobsRequest req = DROVER__V1__LIST_JOBS_REQUEST__INIT;
        Drover__V1__ListJobsResponse *r;
        req.limit = 50;
        int rc = dctl_call("jobs", "ListJobs", &req.base, (ProtobufCMessage **) &r);
        if (rc)
                return rc;
        JsonValue *arr = dctl_opt.json ? json_new_array() : NULL;
        if (!dctl_opt.json)
                printf("%-28s %-9s %-10s %-10s %s\n", "JOB", "KIND", "HOST", "PHASE", "GUESTS (done/failed/cancelled/total)");
        for (size_t i = 0; i < r->n_jobs; i++) {
                Drover__V1__Job *j = r->jobs[i];
                if (dctl_opt.json)
                        json_append(arr, dctl_job_json(j));
                else
                        printf("%-28s %-9s %-10s %-10s %u/%u/%u/%zu\n", j->id, dctl_job_kind(j->kind), j->host,
                               coord_job_phase_to_string(j->phase), j->succeeded, j->failed, j->cancelled, j->n_subtasks);
        }
        if (dctl_opt.json)
                dctl_print_json(arr);
        drover__v1__list_jobs_response__free_unpacked(r, NULL);
        return DCTL_EXIT_OK;
}

/* The stream of guest @s's migration, once it has one: the channels and
 * compression (chosen at the start, then as the source reported them),
 * the bytes on the wire against the guest's memory, the local disks
 * copied, and why it was placed and streamed so. */
static void print_stream(const Drover__V1__Subtask *s) {
        char line[512], a[32], b[32];
        size_t n = 0;
        if (!s->multifd_channels && !s->transferred_bytes && !s->disk_bytes && !s->guest_memory_bytes &&
            !(s->stats && s->stats->disk_total_bytes))
                return;
        if (s->multifd_channels)
                n = text_append(line, sizeof(line), 0, "%u multifd channel%s, compression %s", s->multifd_channels,
                                s->multifd_channels == 1 ? " (one stream)" : "s",
                                mig_compression_to_string((MigCompression) s->compression));
        else
                n = text_append(line, sizeof(line), 0, "channels picked by the source agent");
        if (s->transferred_bytes || s->guest_memory_bytes) {
                dctl_human_bytes((double) s->transferred_bytes, a, sizeof(a));
                dctl_human_bytes((double) s->guest_memory_bytes, b, sizeof(b));
                n = text_append(line, sizeof(line), n, "; %s sent for %s of guest memory", a, b);
                if (s->multifd_bytes) {
                        dctl_human_bytes((double) s->multifd_bytes, a, sizeof(a));
                        n = text_append(line, sizeof(line), n, " (%s on multifd channels)", a);
                }
        }
        if (s->disk_bytes) {
                dctl_human_bytes((double) s->disk_bytes, a, sizeof(a));
                n = text_append(line, sizeof(line), n, "; local disks %s copied", a);
        } else if (s->stats && s->stats->disk_total_bytes) {
                dctl_human_bytes((double) s->stats->disk_transferred_bytes, a, sizeof(a));
                dctl_human_bytes((double) s->stats->disk_total_bytes, b, sizeof(b));
                n = text_append(line, sizeof(line), n, "; local disks %s of %s copied", a, b);
        }
        printf("  %-18s stream: %s\n", s->guest, line);
        if (s->reason[0])
                printf("  %-18s why: %s\n", s->guest, s->reason);
}

static int job_call(const char *what, const char *method, const char *id) {
        Drover__V1__JobRef req = DROVER__V1__JOB_REF__INIT;
        Drover__V1__Job *j;
        req.id = (char *) id;
        int rc = dctl_call(what, method, &req.base, (ProtobufCMessage **) &j);
        if (rc)
                return rc;
        if (dctl_opt.json)
                dctl_print_json(dctl_job_json(j));
        else {
                dctl_render_plain(j);
                for (size_t i = 0; i < j->n_subtasks; i++)
                        print_stream(j->subtasks[i]);
                for (size_t i = 0; i < j->n_history; i++) {
                        time_t t = (time_t) (j->history[i]->time_unix_ms / 1000);
                        struct tm tm;
                        gmtime_r(&t, &tm);
                        printf("  %02d:%02d:%02d  %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec, j->history[i]->text);
                }
        }
        int code = dctl_job_exit(j);
        drover__v1__job__free_unpacked(j, NULL);
        return code;
}

int dctl_cmd_job(int argc, char **argv) {
        return job_call("job", "GetJob", argv[0]);
}

int dctl_cmd_cancel(int argc, char **argv) {
        return job_call("cancel", "CancelJob", argv[0]);
}

int dctl_cmd_host(int argc, char **argv) {
        static const struct { const char *verb; Drover__V1__HostState state; } verbs[] = {
                { "enable", DROVER__V1__HOST_STATE__HOST_STATE_ENABLED },
                { "drain", DROVER__V1__HOST_STATE__HOST_STATE_DRAINING },
                { "maintenance", DROVER__V1__HOST_STATE__HOST_STATE_MAINTENANCE },
        };
        Drover__V1__SetHostStateRequest req = DROVER__V1__SET_HOST_STATE_REQUEST__INIT;
        Drover__V1__Host *h;
        size_t i = 0;
        if (droverctl_host_handles(argv[0]))
                return droverctl_host(argc, argv);
        if (argc != 2) {
                fprintf(stderr, "droverctl: host %s takes one HOST\n", argv[0]);
                return DCTL_EXIT_USAGE;
        }
        while (i < sizeof(verbs) / sizeof(verbs[0]) && strcmp(argv[0], verbs[i].verb))
                i++;
        if (i == sizeof(verbs) / sizeof(verbs[0])) {
                fprintf(stderr, "droverctl: host: '%s' is not enable, drain, maintenance, add, remove, set or show\n"
                                "usage: droverctl [options] host enable|drain|maintenance HOST | add|remove|set|show ... "
                                "(droverctl host --help)\n",
                        argv[0]);
                return DCTL_EXIT_USAGE;
        }
        req.host = argv[1];
        req.state = verbs[i].state;
        int rc = dctl_call("host", "SetHostState", &req.base, (ProtobufCMessage **) &h);
        if (rc)
                return rc;
        if (dctl_opt.json) {
                JsonValue *x = json_new_object();
                json_add_string(x, "host", h->name);
                json_add_string(x, "state", coord_host_state_to_string(h->state));
                dctl_print_json(x);
        } else
                printf("host %s is now %s\n", h->name, coord_host_state_to_string(h->state));
        drover__v1__host__free_unpacked(h, NULL);
        return DCTL_EXIT_OK;
}
