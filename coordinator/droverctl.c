/* droverctl: the operator's command line for the Drover coordinator.
 *
 *   droverctl [options] hosts | vms [HOST] | jobs | job ID | watch ID | cancel ID
 *   droverctl [options] migrate GUEST... [--to HOST] [--dry-run] [--wait]
 *   droverctl [options] evacuate HOST [--dry-run] [--wait] [--maintenance]
 *   droverctl [options] plan evacuate HOST | plan migrate GUEST... [--to HOST]
 *   droverctl [options] host enable|drain|maintenance HOST
 *
 * On a terminal, watch/--wait redraw one line per guest (phase, percent,
 * rate, ETA, downtime when done) under a job summary; piped, they print a
 * plain line per change; --json prints JSON (one object per line while
 * watching).  Exit codes: 0 success, 1 the job failed, 2 usage, 3 partial
 * failure (some guests failed or were blocked/cancelled), 4 the coordinator
 * could not be reached or refused the request.  docs/droverctl.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "coord-enums.h"
#include "coordinator.pb-c.h"
#include "deadline.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "migparams-pb.h"
#include "rpcclient.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_PARTIAL = 3, EXIT_ERROR = 4 };

static struct {
        const char *target;
        RpcTls tls;
        bool have_tls;
        bool json;
        bool wait;
        bool dry_run;
        bool maintenance;
        bool stop_on_failure;
        const char *to;
        MigParams params;   /* zero members: the coordinator's defaults */
        bool bad_postcopy;  /* or a bad --transport after the command */
        int64_t timeout_ms;
} o = { .target = NULL, .timeout_ms = 30000 };

static RpcClient *cl;

static int usage(FILE *f) {
        fprintf(f,
                "usage: droverctl [options] COMMAND\n"
                "commands:\n"
                "  hosts                          list hosts, their state, health and capacity\n"
                "  vms [HOST]                     list guests\n"
                "  migrate GUEST... [--to HOST]   migrate guests (a job)\n"
                "  evacuate HOST                  move every guest off HOST (a job)\n"
                "  plan evacuate HOST | plan migrate GUEST...   show the plan, move nothing\n"
                "  jobs                           list jobs\n"
                "  job ID                         show a job with its history\n"
                "  watch ID                       follow a job until it ends\n"
                "  cancel ID                      cancel a job (running migrations are aborted, sources resume)\n"
                "  host enable|drain|maintenance HOST\n"
                "options:\n"
                "  -c, --coordinator ADDR   unix:/path or HOST:PORT ($DROVER_COORDINATOR, default unix:/run/drover/coordinator.sock)\n"
                "  --tls-cert F --tls-key F --tls-ca F   client certificate ($DROVER_TLS_CERT, _KEY, _CA)\n"
                "  --json                   JSON output\n"
                "  --wait                   migrate/evacuate: follow the job until it ends\n"
                "  --dry-run                plan only\n"
                "  --to HOST                migrate: destination\n"
                "  --maintenance            evacuate: leave the host in maintenance\n"
                "  --stop-on-failure        stop the job at the first failed guest\n"
                "  --bandwidth MIBPS        0..1048576 MiB/s (0: the coordinator's default)\n"
                "  --downtime MS            initial downtime limit, 1..60000 ms\n"
                "  --postcopy allowed|after --auto-converge\n"
                "  --transport tls|ssh|plain  the migration stream (default: each source agent's config)\n"
                "exit codes: 0 success, 1 job failed, 2 usage, 3 partial failure, 4 error\n");
        return EXIT_USAGE;
}

/* Print @j as one line and drop it. */
static void print_json(JsonValue *j) {
        char *text = NULL;
        if (json_to_string(j, false, &text) < 0)
                fprintf(stderr, "droverctl: out of memory\n");
        else
                printf("%s\n", text);
        free(text);
        json_unref(j);
}

static int fail(const char *what, int r) {
        if (o.json) {
                char msg[ERR_MSG_MAX + 64];
                JsonValue *x = json_new_object();
                snprintf(msg, sizeof(msg), "%s: %s", what, err_str(r));
                json_add_string(x, "error", msg);
                print_json(x);
        } else
                fprintf(stderr, "droverctl: %s: %s\n", what, err_str(r));
        return EXIT_ERROR;
}

static int call(const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp) {
        RpcStatus st;
        return rpc_client_unary(cl, &drover__v1__coordinator__descriptor, method, req, o.timeout_ms, resp, &st);
}

/* Names of the API's enums: the tables of coord-enums.h (its values are the
 * API's, checked in coord-rpc.c). */
static const char *host_state(int s) {
        return coord_host_state_to_string(s);
}
static const char *health(int h) {
        return coord_host_health_to_string(h);
}
static const char *guest_state(int s) {
        return coord_guest_state_to_string(s);
}
static const char *job_phase(int p) {
        return coord_job_phase_to_string(p);
}
static const char *sub_phase(int p) {
        return coord_subtask_phase_to_string(p);
}
/* Every job that is not an evacuation shows as a migration. */
static const char *job_kind(int k) {
        return coord_job_kind_to_string(k == COORD_JOB_KIND_EVACUATE ? k : COORD_JOB_KIND_MIGRATE);
}

static int cmd_hosts(void) {
        Drover__V1__ListHostsRequest req = DROVER__V1__LIST_HOSTS_REQUEST__INIT;
        Drover__V1__ListHostsResponse *r;
        int rc = call("ListHosts", &req.base, (ProtobufCMessage **) &r);
        if (rc < 0)
                return fail("hosts", rc);
        JsonValue *arr = o.json ? json_new_array() : NULL;
        if (!o.json)
                printf("%-16s %-12s %-12s %14s %10s %7s  %s\n", "HOST", "STATE", "HEALTH", "MEMORY MiB", "VCPUS", "GUESTS", "ADDRESS");
        for (size_t i = 0; i < r->n_hosts; i++) {
                Drover__V1__Host *h = r->hosts[i];
                if (o.json) {
                        JsonValue *x = json_new_object();
                        json_add_string(x, "name", h->name);
                        json_add_string(x, "address", h->address);
                        json_add_string(x, "state", host_state(h->state));
                        json_add_string(x, "health", health(h->health));
                        json_add_i64(x, "memory_mib", (int64_t) h->memory_mib);
                        json_add_i64(x, "memory_used_mib", (int64_t) h->memory_used_mib);
                        json_add_i64(x, "vcpus", h->vcpus);
                        json_add_i64(x, "vcpus_used", h->vcpus_used);
                        json_add_i64(x, "guests", h->guests);
                        json_add_string(x, "cpu_model", h->cpu_model);
                        json_append(arr, x);
                } else {
                        char mem[32], cpu[32];
                        snprintf(mem, sizeof(mem), "%llu/%llu", (unsigned long long) h->memory_used_mib,
                                 (unsigned long long) h->memory_mib);
                        snprintf(cpu, sizeof(cpu), "%u/%u", h->vcpus_used, h->vcpus);
                        printf("%-16s %-12s %-12s %14s %10s %7u  %s\n", h->name, host_state(h->state), health(h->health), mem,
                               cpu, h->guests, h->address);
                }
        }
        if (o.json)
                print_json(arr);
        drover__v1__list_hosts_response__free_unpacked(r, NULL);
        return EXIT_OK;
}

static int cmd_vms(const char *host) {
        Drover__V1__ListGuestsClusterRequest req = DROVER__V1__LIST_GUESTS_CLUSTER_REQUEST__INIT;
        Drover__V1__ListGuestsClusterResponse *r;
        req.host = (char *) (host ? host : "");
        int rc = call("ListGuests", &req.base, (ProtobufCMessage **) &r);
        if (rc < 0)
                return fail("vms", rc);
        JsonValue *arr = o.json ? json_new_array() : NULL;
        if (!o.json)
                printf("%-20s %-16s %-9s %10s %6s  %s\n", "GUEST", "HOST", "STATE", "MEMORY", "VCPUS", "UUID");
        for (size_t i = 0; i < r->n_guests; i++) {
                Drover__V1__ClusterGuest *g = r->guests[i];
                if (o.json) {
                        JsonValue *x = json_new_object();
                        json_add_string(x, "name", g->name);
                        json_add_string(x, "uuid", g->uuid);
                        json_add_string(x, "host", g->host);
                        json_add_string(x, "state", g->unmanaged ? "unmanaged" : guest_state(g->state));
                        json_add_bool(x, "unmanaged", g->unmanaged);
                        json_add_i64(x, "memory_mib", (int64_t) g->memory_mib);
                        json_add_i64(x, "vcpus", g->vcpus);
                        json_append(arr, x);
                } else
                        printf("%-20s %-16s %-9s %7llu MiB %6u  %s\n", g->name, g->host,
                               g->unmanaged ? "UNMANAGED" : guest_state(g->state),
                               (unsigned long long) g->memory_mib, g->vcpus, g->uuid);
        }
        if (o.json)
                print_json(arr);
        drover__v1__list_guests_cluster_response__free_unpacked(r, NULL);
        return EXIT_OK;
}

static JsonValue *job_json(const Drover__V1__Job *j) {
        JsonValue *x = json_new_object(), *subs = json_new_array(), *hist = json_new_array();
        json_add_string(x, "id", j->id);
        json_add_string(x, "kind", job_kind(j->kind));
        json_add_string(x, "phase", job_phase(j->phase));
        json_add_string(x, "host", j->host);
        json_add_string(x, "error", j->error);
        json_add_i64(x, "created_unix_ms", (int64_t) j->created_unix_ms);
        json_add_i64(x, "finished_unix_ms", (int64_t) j->finished_unix_ms);
        json_add_i64(x, "succeeded", j->succeeded);
        json_add_i64(x, "failed", j->failed);
        json_add_i64(x, "cancelled", j->cancelled);
        for (size_t i = 0; i < j->n_subtasks; i++) {
                Drover__V1__Subtask *s = j->subtasks[i];
                JsonValue *y = json_new_object();
                json_add_string(y, "guest", s->guest);
                json_add_string(y, "source", s->source);
                json_add_string(y, "destination", s->destination);
                json_add_string(y, "phase", sub_phase(s->phase));
                json_add_i64(y, "started_unix_ms", (int64_t) s->started_unix_ms);
                json_add_i64(y, "finished_unix_ms", (int64_t) s->finished_unix_ms);
                json_add_i64(y, "downtime_ms", (int64_t) s->downtime_ms);
                json_add_i64(y, "measured_downtime_ms", (int64_t) s->measured_downtime_ms);
                json_add_i64(y, "transferred_bytes", (int64_t) s->transferred_bytes);
                json_add_string(y, "error", s->error);
                json_add_string(y, "op_id", s->op_id);
                json_append(subs, y);
        }
        json_add(x, "subtasks", subs);
        for (size_t i = 0; i < j->n_history; i++) {
                JsonValue *e = json_new_object();
                json_add_i64(e, "time_unix_ms", (int64_t) j->history[i]->time_unix_ms);
                json_add_string(e, "text", j->history[i]->text);
                json_append(hist, e);
        }
        json_add(x, "history", hist);
        return x;
}

static int job_exit(const Drover__V1__Job *j) {
        if (j->phase == DROVER__V1__JOB_PHASE__JOB_PHASE_SUCCEEDED)
                return EXIT_OK;
        if (j->phase == DROVER__V1__JOB_PHASE__JOB_PHASE_FAILED && j->succeeded == 0)
                return EXIT_FAILED;
        if (j->phase == DROVER__V1__JOB_PHASE__JOB_PHASE_FAILED ||
            j->phase == DROVER__V1__JOB_PHASE__JOB_PHASE_CANCELLED)
                return EXIT_PARTIAL;
        return EXIT_OK;
}

static void human_bytes(double b, char *buf, size_t size) {
        if (b >= 1 << 30)
                snprintf(buf, size, "%.1f GiB", b / (1 << 30));
        else
                snprintf(buf, size, "%.0f MiB", b / (1 << 20));
}

/* Print one display line.  On a terminal it is cleared first and cut to
 * the terminal's width (never at a UTF-8 continuation byte): a line that
 * wrapped would take two rows, and the next redraw, which moves the cursor
 * up one row per line, would leave stale copies behind. */
static void put_line(bool tty, int cols, const char *text) {
        if (!tty) {
                printf("%s\n", text);
                return;
        }
        size_t len = strlen(text);
        if (cols > 1 && len > (size_t) cols - 1) {
                len = (size_t) cols - 1;
                while (len > 0 && ((unsigned char) text[len] & 0xC0) == 0x80)
                        len--;
        }
        printf("\033[2K%.*s\n", (int) len, text);
}

/* One line per guest; a summary line first.  On a terminal, while the job
 * runs, lines are cut to its width and there are at most as many as it has
 * rows (less one): lines scrolled off the top cannot be redrawn in place; the
 * guests left out are counted in a last line.  The final display (the job
 * ended) is printed whole. */
static int render(const Drover__V1__Job *j, bool tty, int prev_lines) {
        char line[512];
        int lines = 0, cols = 0, rows = 0;
        if (tty) {
                struct winsize ws;
                if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0) {
                        cols = ws.ws_col;
                        rows = ws.ws_row;
                }
        }
        if (tty && prev_lines)
                printf("\033[%dA\033[J", prev_lines); /* up to the summary, and clear what was below */
        if (coord_job_phase_is_final(j->phase))
                cols = 0; /* the last redraw: nothing is drawn over it, it may wrap */
        uint64_t now = wall_ns() / NSEC_PER_MSEC;
        double el = (double) ((j->finished_unix_ms ? j->finished_unix_ms : now) - j->created_unix_ms) / 1000.0;
        snprintf(line, sizeof(line), "%s %s %s: %s  %u/%zu done, %u failed, %u cancelled  %.1f s", j->id,
                 job_kind(j->kind), j->host, job_phase(j->phase), j->succeeded, j->n_subtasks,
                 j->failed, j->cancelled, el);
        put_line(tty, cols, line);
        lines++;
        size_t shown = j->n_subtasks;
        if (tty && !coord_job_phase_is_final(j->phase) && rows > 3 && 1 + j->n_subtasks > (size_t) rows - 1)
                shown = (size_t) rows - 3; /* the summary, the guests shown, the "more" line */
        for (size_t i = 0; i < shown; i++) {
                Drover__V1__Subtask *s = j->subtasks[i];
                char detail[160] = "";
                if (s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_MIGRATING && s->stats &&
                    s->stats->ram_total_bytes) {
                        double total = (double) s->stats->ram_total_bytes, rem = (double) s->stats->ram_remaining_bytes;
                        double pct = total > 0 ? 100.0 * (total - MIN(rem, total)) / total : 0;
                        double rate = s->stats->mbps * 1e6 / 8; /* bytes/s */
                        char eta[32] = "?";
                        if (rate > 0)
                                snprintf(eta, sizeof(eta), "%.0f s", rem / rate);
                        snprintf(detail, sizeof(detail), "%-9s %5.1f%%  %6.0f Mbit/s  ETA %-6s pass %llu",
                                 s->migration_phase[0] ? s->migration_phase : "start", pct, s->stats->mbps, eta,
                                 (unsigned long long) s->stats->iteration);
                } else if (s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_SUCCEEDED) {
                        char tx[32];
                        human_bytes((double) s->transferred_bytes, tx, sizeof(tx));
                        snprintf(detail, sizeof(detail), "downtime %llu ms (%llu ms measured)  %s in %.1f s",
                                 (unsigned long long) s->downtime_ms, (unsigned long long) s->measured_downtime_ms, tx,
                                 (double) (s->finished_unix_ms - s->started_unix_ms) / 1000.0);
                } else if (s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_FAILED ||
                           s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_CANCELLED ||
                           s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_BLOCKED)
                        snprintf(detail, sizeof(detail), "%.150s", s->error[0] ? s->error : s->reason);
                else if (s->phase == DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_QUEUED)
                        snprintf(detail, sizeof(detail), "waiting for admission (est. %.1f s)", s->estimated_s);
                snprintf(line, sizeof(line), "  %-18s %-10s -> %-10s %-9s %s", s->guest, s->source, s->destination,
                         sub_phase(s->phase), detail);
                put_line(tty, cols, line);
                lines++;
        }
        if (shown < j->n_subtasks) {
                snprintf(line, sizeof(line), "  ... and %zu more guests (droverctl job %s shows all)",
                         j->n_subtasks - shown, j->id);
                put_line(tty, cols, line);
                lines++;
        }
        fflush(stdout);
        return lines;
}

/* FNV-1a over every guest's name and phase and the job's phase: what a
 * piped watch compares to decide whether to print again (a text of them
 * would need a buffer as large as the job). */
static uint64_t phases_hash(const Drover__V1__Job *j) {
        uint64_t h = 14695981039346656037ULL;
        for (size_t i = 0; i <= j->n_subtasks; i++) {
                const char *name = i < j->n_subtasks ? j->subtasks[i]->guest : "";
                int phase = i < j->n_subtasks ? (int) j->subtasks[i]->phase : (int) j->phase;
                for (const char *p = name; *p; p++)
                        h = (h ^ (unsigned char) *p) * 1099511628211ULL;
                h = (h ^ (uint64_t) (unsigned) phase ^ 0x100) * 1099511628211ULL;
        }
        return h;
}

static int watch(const char *id) {
        Drover__V1__WatchJobRequest req = DROVER__V1__WATCH_JOB_REQUEST__INIT;
        RpcStream *st;
        req.id = (char *) id;
        int r = rpc_stream_open(cl, &drover__v1__coordinator__descriptor, "WatchJob", &req.base, 24 * 3600 * 1000LL, &st);
        if (r < 0)
                return fail("watch", r);
        bool tty = isatty(STDOUT_FILENO) && !o.json;
        int lines = 0, code = EXIT_ERROR;
        uint64_t last = 0;
        for (;;) {
                Drover__V1__Job *j;
                r = rpc_stream_read(st, (ProtobufCMessage **) &j);
                if (r <= 0)
                        break;
                if (o.json)
                        print_json(job_json(j));
                else if (tty)
                        lines = render(j, true, lines);
                else {
                        /* piped: the job again when a phase changed; every
                         * guest counts, however many and however long */
                        uint64_t now = phases_hash(j);
                        if (now != last) {
                                render(j, false, 0);
                                last = now;
                        }
                }
                code = coord_job_phase_is_final(j->phase) ? job_exit(j) : EXIT_OK;
                drover__v1__job__free_unpacked(j, NULL);
        }
        if (r < 0)
                code = fail("watch", r);
        rpc_stream_free(st);
        return code;
}

static int show_result(Drover__V1__JobResponse *r) {
        if (o.json) {
                JsonValue *x = json_new_object();
                if (r->plan) {
                        JsonValue *moves = json_new_array(), *blocked = json_new_array();
                        for (size_t i = 0; i < r->plan->n_moves + r->plan->n_blocked; i++) {
                                bool b = i >= r->plan->n_moves;
                                Drover__V1__PlanEntry *e = b ? r->plan->blocked[i - r->plan->n_moves] : r->plan->moves[i];
                                JsonValue *y = json_new_object();
                                json_add_string(y, "guest", e->guest);
                                json_add_string(y, "source", e->source);
                                json_add_string(y, "destination", e->destination);
                                json_add_double(y, "estimated_s", e->estimated_s);
                                json_add_string(y, "reason", e->reason);
                                json_append(b ? blocked : moves, y);
                        }
                        json_add(x, "moves", moves);
                        json_add(x, "blocked", blocked);
                        json_add_double(x, "estimated_makespan_s", r->plan->estimated_makespan_s);
                }
                if (r->job)
                        json_add(x, "job", job_json(r->job));
                print_json(x);
        } else {
                if (r->plan) {
                        printf("plan: %zu guests move, %zu blocked, estimated makespan %.1f s\n", r->plan->n_moves,
                               r->plan->n_blocked, r->plan->estimated_makespan_s);
                        for (size_t i = 0; i < r->plan->n_moves; i++)
                                printf("  %-18s %-10s -> %-10s %6.1f s  %s\n", r->plan->moves[i]->guest, r->plan->moves[i]->source,
                                       r->plan->moves[i]->destination, r->plan->moves[i]->estimated_s, r->plan->moves[i]->reason);
                        for (size_t i = 0; i < r->plan->n_blocked; i++)
                                printf("  %-18s %-10s BLOCKED: %s\n", r->plan->blocked[i]->guest, r->plan->blocked[i]->source,
                                       r->plan->blocked[i]->reason);
                }
                if (r->job)
                        printf("job %s started\n", r->job->id);
        }
        return r->plan && r->plan->n_blocked ? EXIT_PARTIAL : EXIT_OK;
}

static int submit(const char *method, const ProtobufCMessage *req) {
        Drover__V1__JobResponse *r;
        RpcStatus st;
        int rc = rpc_client_unary(cl, &drover__v1__coordinator__descriptor, method, req, o.timeout_ms,
                                  (ProtobufCMessage **) &r, &st);
        if (rc < 0)
                return fail(method, rc);
        int code = show_result(r);
        char id[64] = "";
        if (r->job)
                snprintf(id, sizeof(id), "%s", r->job->id);
        drover__v1__job_response__free_unpacked(r, NULL);
        if (o.wait && id[0])
                return watch(id);
        return code;
}

static int cmd_migrate(int argc, char **argv) {
        Drover__V1__MigrateGuestsRequest req = DROVER__V1__MIGRATE_GUESTS_REQUEST__INIT;
        Drover__V1__MigrationParams p;
        if (argc < 1)
                return usage(stderr);
        mig_params_to_pb(&o.params, &p);
        req.guests = argv;
        req.n_guests = (size_t) argc;
        req.to_host = (char *) (o.to ? o.to : "");
        req.params = &p;
        req.failure_policy = o.stop_on_failure ? DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_STOP
                                               : DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_CONTINUE;
        req.dry_run = o.dry_run;
        return submit("MigrateGuests", &req.base);
}

static int cmd_evacuate(const char *host) {
        Drover__V1__EvacuateRequest req = DROVER__V1__EVACUATE_REQUEST__INIT;
        Drover__V1__MigrationParams p;
        mig_params_to_pb(&o.params, &p);
        req.host = (char *) host;
        req.params = &p;
        req.failure_policy = o.stop_on_failure ? DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_STOP
                                               : DROVER__V1__FAILURE_POLICY__FAILURE_POLICY_CONTINUE;
        req.dry_run = o.dry_run;
        req.maintenance = o.maintenance;
        return submit("Evacuate", &req.base);
}

static int cmd_jobs(void) {
        Drover__V1__ListJobsRequest req = DROVER__V1__LIST_JOBS_REQUEST__INIT;
        Drover__V1__ListJobsResponse *r;
        req.limit = 50;
        int rc = call("ListJobs", &req.base, (ProtobufCMessage **) &r);
        if (rc < 0)
                return fail("jobs", rc);
        JsonValue *arr = o.json ? json_new_array() : NULL;
        if (!o.json)
                printf("%-28s %-9s %-10s %-10s %s\n", "JOB", "KIND", "HOST", "PHASE", "GUESTS (done/failed/cancelled/total)");
        for (size_t i = 0; i < r->n_jobs; i++) {
                Drover__V1__Job *j = r->jobs[i];
                if (o.json)
                        json_append(arr, job_json(j));
                else
                        printf("%-28s %-9s %-10s %-10s %u/%u/%u/%zu\n", j->id, job_kind(j->kind), j->host,
                               job_phase(j->phase), j->succeeded, j->failed, j->cancelled, j->n_subtasks);
        }
        if (o.json)
                print_json(arr);
        drover__v1__list_jobs_response__free_unpacked(r, NULL);
        return EXIT_OK;
}

static int cmd_job(const char *method, const char *id) {
        Drover__V1__JobRef req = DROVER__V1__JOB_REF__INIT;
        Drover__V1__Job *j;
        req.id = (char *) id;
        int rc = call(method, &req.base, (ProtobufCMessage **) &j);
        if (rc < 0)
                return fail(method, rc);
        if (o.json)
                print_json(job_json(j));
        else {
                render(j, false, 0);
                for (size_t i = 0; i < j->n_history; i++) {
                        time_t t = (time_t) (j->history[i]->time_unix_ms / 1000);
                        struct tm tm;
                        gmtime_r(&t, &tm);
                        printf("  %02d:%02d:%02d  %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec, j->history[i]->text);
                }
        }
        int code = job_exit(j);
        drover__v1__job__free_unpacked(j, NULL);
        return code;
}

static int cmd_host(const char *verb, const char *host) {
        Drover__V1__SetHostStateRequest req = DROVER__V1__SET_HOST_STATE_REQUEST__INIT;
        Drover__V1__Host *h;
        Drover__V1__HostState s = strcmp(verb, "enable") == 0      ? DROVER__V1__HOST_STATE__HOST_STATE_ENABLED
                                  : strcmp(verb, "drain") == 0       ? DROVER__V1__HOST_STATE__HOST_STATE_DRAINING
                                  : strcmp(verb, "maintenance") == 0 ? DROVER__V1__HOST_STATE__HOST_STATE_MAINTENANCE
                                                                     : DROVER__V1__HOST_STATE__HOST_STATE_UNSPECIFIED;
        if (s == DROVER__V1__HOST_STATE__HOST_STATE_UNSPECIFIED)
                return usage(stderr);
        req.host = (char *) host;
        req.state = s;
        int rc = call("SetHostState", &req.base, (ProtobufCMessage **) &h);
        if (rc < 0)
                return fail("host", rc);
        if (o.json) {
                JsonValue *x = json_new_object();
                json_add_string(x, "host", h->name);
                json_add_string(x, "state", host_state(h->state));
                print_json(x);
        } else
                printf("host %s is now %s\n", h->name, host_state(h->state));
        drover__v1__host__free_unpacked(h, NULL);
        return EXIT_OK;
}

/* Most --bandwidth takes: 1 TiB/s in MiB/s, far above any link, and
 * small enough that the bytes per second never wrap. */
#define BANDWIDTH_MIBPS_MAX (1024u * 1024u)
/* The ceiling of migration downtime limits (mig_params_validate()). */
#define DOWNTIME_MS_MAX 60000u

/* @val of option @opt as a whole number in [@min, @max]: true with *ret
 * set, or false with the reason on stderr. */
static bool parse_number(const char *opt, const char *val, uint64_t min, uint64_t max, const char *unit,
                         uint64_t *ret) {
        char *end = NULL;
        unsigned long long v = 0;
        errno = 0;
        if (val && *val >= '0' && *val <= '9')
                v = strtoull(val, &end, 10);
        if (!end || *end || errno || v < min || v > max) {
                fprintf(stderr, "droverctl: --%s: '%s' is not a whole number of %s between %llu and %llu\n", opt,
                        val ? val : "", unit, (unsigned long long) min, (unsigned long long) max);
                return false;
        }
        *ret = v;
        return true;
}

/* --bandwidth MIBPS (0: the coordinator's default) and --downtime MS. */
static bool set_number(int which, const char *val) {
        uint64_t v;
        if (which == 10) {
                if (!parse_number("bandwidth", val, 0, BANDWIDTH_MIBPS_MAX, "MiB/s", &v))
                        return false;
                o.params.bandwidth = v * 1024 * 1024;
        } else {
                if (!parse_number("downtime", val, 1, DOWNTIME_MS_MAX, "milliseconds", &v))
                        return false;
                o.params.downtime_ms = (uint32_t) v;
        }
        return true;
}

/* --postcopy allowed|after */
static bool set_postcopy(const char *v) {
        if (strcmp(v, "allowed") && strcmp(v, "after"))
                return false;
        o.params.postcopy = (PostcopyPolicy) postcopy_policy_from_string(v);
        return true;
}

/* --transport tls|ssh|plain (core/migparams.h) */
static bool set_transport(const char *v) {
        int t = mig_transport_from_string(v);
        if (t <= MIG_TRANSPORT_DEFAULT)
                return false;
        o.params.transport = (MigTransport) t;
        return true;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "coordinator", required_argument, NULL, 'c' }, { "tls-cert", required_argument, NULL, 1 },
                { "tls-key", required_argument, NULL, 2 },       { "tls-ca", required_argument, NULL, 3 },
                { "json", no_argument, NULL, 4 },                { "wait", no_argument, NULL, 5 },
                { "dry-run", no_argument, NULL, 6 },             { "to", required_argument, NULL, 7 },
                { "maintenance", no_argument, NULL, 8 },         { "stop-on-failure", no_argument, NULL, 9 },
                { "bandwidth", required_argument, NULL, 10 },    { "downtime", required_argument, NULL, 11 },
                { "postcopy", required_argument, NULL, 12 },     { "auto-converge", no_argument, NULL, 13 },
                { "transport", required_argument, NULL, 14 },    { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        int c;
        /* a command line shows its own errors; library warnings (e.g. the
         * plaintext notice on a local unix socket) only with DROVER_LOG */
        if (!getenv("DROVER_LOG"))
                log_set_level(LOG_LEVEL_ERROR);
        o.target = getenv("DROVER_COORDINATOR");
        o.tls.cert_file = getenv("DROVER_TLS_CERT");
        o.tls.key_file = getenv("DROVER_TLS_KEY");
        o.tls.ca_file = getenv("DROVER_TLS_CA");
        while ((c = getopt_long(argc, argv, "+c:h", opts, NULL)) >= 0) {
                switch (c) {
                case 'c': o.target = optarg; break;
                case 1: o.tls.cert_file = optarg; break;
                case 2: o.tls.key_file = optarg; break;
                case 3: o.tls.ca_file = optarg; break;
                case 4: o.json = true; break;
                case 5: o.wait = true; break;
                case 6: o.dry_run = true; break;
                case 7: o.to = optarg; break;
                case 8: o.maintenance = true; break;
                case 9: o.stop_on_failure = true; break;
                case 10:
                case 11:
                        if (!set_number(c, optarg))
                                return EXIT_USAGE;
                        break;
                case 12:
                        if (!set_postcopy(optarg))
                                return usage(stderr);
                        break;
                case 13: o.params.auto_converge = true; break;
                case 14:
                        if (!set_transport(optarg))
                                return usage(stderr);
                        break;
                case 'h': return usage(stdout), EXIT_OK;
                default: return usage(stderr);
                }
        }
        /* options may also follow the command: a second pass */
        int first = optind;
        if (first >= argc)
                return usage(stderr);
        char *cmd = argv[first];
        char *args[256];
        int nargs = 0;
        for (int i = first + 1; i < argc; i++) {
                bool is_opt = false;
                for (const struct option *op = opts; op->name; op++) {
                        char buf[64];
                        snprintf(buf, sizeof(buf), "--%s", op->name);
                        if (strcmp(argv[i], buf) == 0) {
                                is_opt = true;
                                char *val = op->has_arg && i + 1 < argc ? argv[++i] : NULL;
                                if (op->has_arg && !val)
                                        return usage(stderr);
                                switch (op->val) {
                                case 4: o.json = true; break;
                                case 5: o.wait = true; break;
                                case 6: o.dry_run = true; break;
                                case 7: o.to = val; break;
                                case 8: o.maintenance = true; break;
                                case 9: o.stop_on_failure = true; break;
                                case 10:
                                case 11:
                                        if (!set_number(op->val, val))
                                                return EXIT_USAGE;
                                        break;
                                case 12: o.bad_postcopy |= !set_postcopy(val); break;
                                case 13: o.params.auto_converge = true; break;
                                case 14: o.bad_postcopy |= !set_transport(val); break;
                                case 'c': o.target = val; break;
                                default: return usage(stderr);
                                }
                        }
                }
                if (!is_opt && nargs < 256)
                        args[nargs++] = argv[i];
        }
        if (o.bad_postcopy)
                return usage(stderr);
        if (!o.target)
                o.target = "unix:/run/drover/coordinator.sock";
        RpcClientOptions co = { .tls = (o.tls.cert_file && o.tls.ca_file) ? &o.tls : NULL, .default_timeout_ms = 30000 };
        int r = rpc_client_new(o.target, &co, &cl);
        if (r < 0)
                return fail(o.target, r);
        int code;
        if (strcmp(cmd, "hosts") == 0 && nargs == 0)
                code = cmd_hosts();
        else if (strcmp(cmd, "vms") == 0 && nargs <= 1)
                code = cmd_vms(nargs ? args[0] : NULL);
        else if (strcmp(cmd, "migrate") == 0)
                code = cmd_migrate(nargs, args);
        else if (strcmp(cmd, "evacuate") == 0 && nargs == 1)
                code = cmd_evacuate(args[0]);
        else if (strcmp(cmd, "plan") == 0 && nargs >= 2) {
                o.dry_run = true;
                code = strcmp(args[0], "evacuate") == 0 && nargs == 2 ? cmd_evacuate(args[1])
                       : strcmp(args[0], "migrate") == 0            ? cmd_migrate(nargs - 1, args + 1)
                                                                    : usage(stderr);
        } else if (strcmp(cmd, "jobs") == 0 && nargs == 0)
                code = cmd_jobs();
        else if (strcmp(cmd, "job") == 0 && nargs == 1)
                code = cmd_job("GetJob", args[0]);
        else if (strcmp(cmd, "watch") == 0 && nargs == 1)
                code = watch(args[0]);
        else if (strcmp(cmd, "cancel") == 0 && nargs == 1)
                code = cmd_job("CancelJob", args[0]);
        else if (strcmp(cmd, "host") == 0 && nargs == 2)
                code = cmd_host(args[0], args[1]);
        else
                code = usage(stderr);
        rpc_client_free(cl);
        return code;
}
