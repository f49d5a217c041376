/* drover-agentctl: talk to one drover-agent directly (debugging, demos,
 * bootstrapping guests).  Normal operations go through the coordinator
 * (droverctl); this tool is for the agent's own API.
 *
 *   drover-agentctl [-a ADDR] [--tls-cert F --tls-key F --tls-ca F] COMMAND [OPTIONS]
 *     define FILE|-          define a guest from a JSON definition (docs/agent.md)
 *     start NAME [--paused]  start a defined guest
 *     shutdown NAME [--power-off-timeout S] [--force]
 *                            ACPI power-down; the guest may take S s (default 60),
 *                            then the shutdown fails, or with --force the guest is destroyed
 *     migrate NAME DEST      live-migrate NAME to the agent at DEST (HOST:PORT)
 *     recover-now NAME       post-copy recovery of NAME's paused migration now
 *                            (MigrateRecoverNow: a fresh retry budget, one attempt at once)
 *     guest-ping NAME        ping the guest's agent (qemu-ga)
 *     destroy NAME | undefine NAME | suspend NAME | resume NAME
 *     operation ID           show an operation (with --wait: until it ends)
 *     list                   guests with state and pid
 *     stats                  the agent's lock statistics and guest counts
 *
 * start, shutdown, migrate and guest-ping are operations on the agent: the
 * call answers at once with an operation id, and agentctl waits for the
 * operation to end (--wait, the default; WatchOperation, agent-opwait.h)
 * for at most --timeout S seconds (default: start 120, shutdown the
 * power-off timeout + 60, migrate 3600, others 60).  --no-wait prints the
 * operation id and returns; `operation ID --wait` waits for it later.
 *
 * ADDR: $DROVER_AGENT or unix:/run/drover/agent.sock.  Exit 0 on success,
 * 1 when the agent refused or the operation failed (the gRPC status is
 * printed), 2 on usage, 3 when --timeout passed with the operation still
 * running (it goes on; the id is printed).  An unknown option, a bad
 * number or a surplus argument is a usage error; --help prints the usage
 * on stdout, --version the version (drover-version.h).
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-opwait.h"
#include "agent.pb-c.h"
#include "drover-version.h"
#include "err.h"
#include "log.h"
#include "rpcclient.h"

static RpcClient *cl;

static int call(const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp) {
        RpcStatus st;
        int r = rpc_client_unary(cl, &drover__v1__agent__descriptor, method, req, 60000, resp, &st);
        if (r < 0)
                fprintf(stderr, "drover-agentctl: %s: %s\n", method, err_str(r));
        return r;
}

static const char *state(int s) {
        static const char *n[] = { "?", "running", "paused", "shutdown", "shutoff", "crashed" };
        return s >= 0 && s <= 5 ? n[s] : "?";
}

static int usage(FILE *f) {
        fprintf(f, "usage: drover-agentctl [-a ADDR] [--tls-cert F --tls-key F --tls-ca F] COMMAND\n"
                   "  define FILE|- | start NAME [--paused] | shutdown NAME [--power-off-timeout S] [--force]\n"
                   "  | migrate NAME DEST | recover-now NAME | guest-ping NAME | operation ID\n"
                   "  | destroy NAME | undefine NAME | suspend NAME | resume NAME | list | stats\n"
                   "  operations: --wait (default) | --no-wait, --timeout S (client side)\n"
                   "  --help, --version\n");
        return 2;
}

/* How the operation commands behave (options). */
typedef struct OpOptions {
        int wait;                  /* 1 --wait, 0 --no-wait, -1 the command's default */
        int64_t timeout_ms;        /* --timeout; 0 = the command's default */
        bool paused, force;
        uint32_t power_off_ms;     /* --power-off-timeout */
} OpOptions;

#define EXIT_STILL_RUNNING 3

static void print_operation(const Drover__V1__Operation *op) {
        static const char *st[] = { "?", "running", "succeeded", "failed" };
        printf("operation %s: %s of %s %s", op->op_id, op->kind, op->guest,
               op->state >= 0 && op->state <= 3 ? st[op->state] : "?");
        if (op->state == DROVER__V1__OPERATION_STATE__OPERATION_STATE_FAILED)
                printf(": %s: %s", rpc_code_to_string((RpcCode) op->error_code), op->error);
        if (op->done && op->ended_unix_ms >= op->created_unix_ms)
                printf(" (%.1f s)", (double) (op->ended_unix_ms - op->created_unix_ms) / 1000);
        printf("\n");
}

/* Wait for operation @id (or, without o->wait, say it runs); the exit
 * code.  *ret: the final operation (NULL when not waited or none read). */
static int finish_op(const OpOptions *o, const char *id, int64_t default_ms, Drover__V1__Operation **ret) {
        RpcStatus st;
        *ret = NULL;
        if (!o->wait) {
                printf("operation %s running (drover-agentctl operation %s --wait follows it)\n", id, id);
                return 0;
        }
        int r = agent_op_wait(cl, id, o->timeout_ms ? o->timeout_ms : default_ms, ret, &st);
        if (r == -ETIMEDOUT) {
                fprintf(stderr, "drover-agentctl: operation %s still running after the timeout; it goes on\n", id);
                return EXIT_STILL_RUNNING;
        }
        if (r < 0) {
                fprintf(stderr, "drover-agentctl: %s\n", err_str(r));
                return 1;
        }
        return 0;
}

/* start, shutdown, guest-ping, migrate, operation: the exit code. */
static int op_command(const char *cmd, const char *name, const char *dest, OpOptions *o) {
        Drover__V1__Operation *op = NULL;
        int rc;
        if (o->wait < 0)
                o->wait = strcmp(cmd, "operation") != 0;
        if (strcmp(cmd, "operation") == 0) {
                Drover__V1__OperationRef ref = DROVER__V1__OPERATION_REF__INIT;
                ref.op_id = (char *) name;
                if (o->wait) {
                        rc = finish_op(o, name, 3600000, &op);
                } else {
                        rc = call("GetOperation", &ref.base, (ProtobufCMessage **) &op) < 0 ? 1 : 0;
                        if (op && op->done && op->state != DROVER__V1__OPERATION_STATE__OPERATION_STATE_SUCCEEDED)
                                rc = 1;
                }
        } else if (strcmp(cmd, "migrate") == 0) {
                Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
                Drover__V1__MigrateResponse *resp;
                req.guest = (char *) name;
                req.destination = (char *) dest;
                if (call("Migrate", &req.base, (ProtobufCMessage **) &resp) < 0)
                        return 1;
                rc = finish_op(o, resp->operation_id, 3600000, &op);
                drover__v1__migrate_response__free_unpacked(resp, NULL);
                if (op && op->migration && op->migration->done)
                        printf("%s: migration %s, %llu ms, downtime %llu ms, %.1f MiB on the wire for %.1f MiB "
                               "of memory (%u multifd channels, compression %s)%s%.1f%s%s%s\n",
                               name, op->migration->success ? "succeeded" : "failed",
                               (unsigned long long) op->migration->total_ms,
                               (unsigned long long) op->migration->measured_downtime_ms,
                               (double) op->migration->transferred_bytes / 1048576.0,
                               (double) op->migration->guest_memory_bytes / 1048576.0,
                               op->migration->multifd_channels,
                               op->migration->compression == DROVER__V1__MIGRATION_COMPRESSION__MIGRATION_COMPRESSION_ZSTD
                                       ? "zstd"
                                       : "none",
                               op->migration->disk_bytes ? ", local disks " : "",
                               (double) op->migration->disk_bytes / 1048576.0,
                               op->migration->disk_bytes ? " MiB copied" : "",
                               op->migration->success ? "" : ": ", op->migration->error);
        } else {
                ProtobufCMessage *resp;
                const char *method = "GuestPing", *id;
                int64_t def = 60000;
                Drover__V1__StartRequest sreq = DROVER__V1__START_REQUEST__INIT;
                Drover__V1__ShutdownRequest dreq = DROVER__V1__SHUTDOWN_REQUEST__INIT;
                Drover__V1__GuestRef greq = DROVER__V1__GUEST_REF__INIT;
                const ProtobufCMessage *req = &greq.base;
                sreq.guest = dreq.guest = greq.guest = (char *) name;
                if (strcmp(cmd, "start") == 0) {
                        method = "Start", req = &sreq.base, def = 120000;
                        sreq.paused = o->paused;
                } else if (strcmp(cmd, "shutdown") == 0) {
                        method = "Shutdown", req = &dreq.base;
                        dreq.timeout_ms = o->power_off_ms;
                        dreq.force = o->force;
                        def = (o->power_off_ms ? o->power_off_ms : 60000) + 60000;
                }
                if (call(method, req, &resp) < 0)
                        return 1;
                if (resp->descriptor == &drover__v1__guest_status__descriptor)
                        id = ((Drover__V1__GuestStatus *) resp)->operation_id;
                else
                        id = ((Drover__V1__GuestPingResponse *) resp)->operation_id;
                rc = finish_op(o, id, def, &op);
                protobuf_c_message_free_unpacked(resp, NULL);
                if (op && op->guest_status && op->done)
                        printf("%s %s (pid %d)\n", name, state(op->guest_status->state), op->guest_status->pid);
                if (op && op->guest_ping)
                        printf("%s: guest agent answered in %llu us\n", name,
                               (unsigned long long) op->guest_ping->round_trip_us);
        }
        if (op) {
                print_operation(op);
                drover__v1__operation__free_unpacked(op, NULL);
        }
        return rc;
}

static char *slurp(const char *path) {
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "re");
        size_t cap = 4096, n = 0;
        char *buf = malloc(cap);
        if (!f || !buf)
                return NULL;
        size_t k;
        while ((k = fread(buf + n, 1, cap - n - 1, f)) > 0) {
                n += k;
                if (n + 1 == cap && !(buf = realloc(buf, cap *= 2)))
                        return NULL;
        }
        buf[n] = '\0';
        if (f != stdin)
                fclose(f);
        return buf;
}

/* How many words a command line from the command on may have. */
static int max_args(const char *cmd) {
        return strcmp(cmd, "migrate") == 0 ? 3 : strcmp(cmd, "list") == 0 || strcmp(cmd, "stats") == 0 ? 1 : 2;
}

int main(int argc, char **argv) {
        static const struct option opts[] = { { "agent", required_argument, NULL, 'a' }, { "tls-cert", required_argument, NULL, 1 },
                                              { "tls-key", required_argument, NULL, 2 }, { "tls-ca", required_argument, NULL, 3 },
                                              { "wait", no_argument, NULL, 4 }, { "no-wait", no_argument, NULL, 5 },
                                              { "timeout", required_argument, NULL, 6 }, { "paused", no_argument, NULL, 7 },
                                              { "force", no_argument, NULL, 8 },
                                              { "power-off-timeout", required_argument, NULL, 9 },
                                              { "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' },
                                              { 0 } };
        const char *addr = getenv("DROVER_AGENT");
        RpcTls tls = { 0 };
        OpOptions oo = { .wait = -1 };
        char *end;
        double secs;
        int c;
        if (!getenv("DROVER_LOG"))
                log_set_level(LOG_LEVEL_ERROR);
        while ((c = getopt_long(argc, argv, "a:h", opts, NULL)) >= 0) {
                switch (c) {
                case 'a': addr = optarg; break;
                case 1: tls.cert_file = optarg; break;
                case 2: tls.key_file = optarg; break;
                case 3: tls.ca_file = optarg; break;
                case 4: oo.wait = 1; break;
                case 5: oo.wait = 0; break;
                case 6:
                case 9:
                        secs = optarg[0] >= '0' && optarg[0] <= '9' ? strtod(optarg, &end) : -1;
                        if (secs < 0 || *end || !(secs > 0 && secs < 86400 * 7)) {
                                fprintf(stderr, "drover-agentctl: --%s wants seconds, not '%s'\n",
                                        c == 6 ? "timeout" : "power-off-timeout", optarg);
                                return 2;
                        }
                        if (c == 6)
                                oo.timeout_ms = (int64_t) (secs * 1000);
                        else
                                oo.power_off_ms = (uint32_t) (secs * 1000);
                        break;
                case 7: oo.paused = true; break;
                case 8: oo.force = true; break;
                case 'h': usage(stdout); return 0;
                case 'V': printf("drover-agentctl %s\n", DROVER_VERSION); return 0;
                default: return usage(stderr);
                }
        }
        if (optind >= argc || argc - optind > max_args(argv[optind])) {
                if (optind < argc)
                        fprintf(stderr, "drover-agentctl: too many arguments for %s\n", argv[optind]);
                return usage(stderr);
        }
        const char *cmd = argv[optind], *arg = optind + 1 < argc ? argv[optind + 1] : NULL;
        const char *arg2 = optind + 2 < argc ? argv[optind + 2] : NULL;
        RpcClientOptions o = { .tls = tls.ca_file ? &tls : NULL, .default_timeout_ms = 60000 };
        if (rpc_client_new(addr ? addr : "unix:/run/drover/agent.sock", &o, &cl) < 0) {
                fprintf(stderr, "drover-agentctl: %s\n", err_msg());
                return 1;
        }
        int r = 0;
        if (strcmp(cmd, "define") == 0 && arg) {
                Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
                Drover__V1__GetGuestResponse *resp;
                req.definition_json = slurp(arg);
                if (!req.definition_json) {
                        fprintf(stderr, "drover-agentctl: cannot read %s\n", arg);
                        return 1;
                }
                if ((r = call("Define", &req.base, (ProtobufCMessage **) &resp)) >= 0) {
                        printf("defined %s (%s)\n", resp->status->name, resp->status->uuid);
                        drover__v1__get_guest_response__free_unpacked(resp, NULL);
                }
                free(req.definition_json);
        } else if ((strcmp(cmd, "start") == 0 || strcmp(cmd, "shutdown") == 0 || strcmp(cmd, "guest-ping") == 0 ||
                    strcmp(cmd, "operation") == 0) && arg) {
                int rc = op_command(cmd, arg, NULL, &oo);
                rpc_client_free(cl);
                return rc;
        } else if (strcmp(cmd, "migrate") == 0 && arg && arg2) {
                int rc = op_command(cmd, arg, arg2, &oo);
                rpc_client_free(cl);
                return rc;
        } else if ((strcmp(cmd, "destroy") == 0 || strcmp(cmd, "suspend") == 0 || strcmp(cmd, "resume") == 0 ||
                    strcmp(cmd, "undefine") == 0 || strcmp(cmd, "recover-now") == 0) && arg) {
                Drover__V1__GuestRef req = DROVER__V1__GUEST_REF__INIT;
                ProtobufCMessage *resp;
                char method[24];
                if (strcmp(cmd, "recover-now") == 0)
                        snprintf(method, sizeof(method), "MigrateRecoverNow");
                else
                        snprintf(method, sizeof(method), "%c%s", cmd[0] - 32, cmd + 1);
                req.guest = (char *) arg;
                if ((r = call(method, &req.base, &resp)) >= 0) {
                        printf("%s: %s done\n", arg, cmd);
                        protobuf_c_message_free_unpacked(resp, NULL);
                }
        } else if (strcmp(cmd, "list") == 0) {
                Drover__V1__ListGuestsRequest req = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
                Drover__V1__ListGuestsResponse *resp;
                if ((r = call("ListGuests", &req.base, (ProtobufCMessage **) &resp)) >= 0) {
                        for (size_t i = 0; i < resp->n_guests; i++)
                                printf("%-20s %-9s %-10s pid %-7d %s %s\n", resp->guests[i]->name, state(resp->guests[i]->state),
                                       resp->guests[i]->reason, resp->guests[i]->pid, resp->guests[i]->async_job,
                                       resp->guests[i]->phase);
                        drover__v1__list_guests_response__free_unpacked(resp, NULL);
                }
        } else if (strcmp(cmd, "stats") == 0) {
                Drover__V1__GetAgentStatsRequest req = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
                Drover__V1__GetAgentStatsResponse *resp;
                if ((r = call("GetAgentStats", &req.base, (ProtobufCMessage **) &resp)) >= 0) {
                        printf("host %s, %u guests, %u jobs, %u async jobs in flight\n", resp->host, resp->guests_total,
                               resp->jobs_in_flight, resp->async_jobs_in_flight);
                        for (size_t i = 0; i < resp->n_locks; i++)
                                printf("  lock %-12s %10llu holds  max %.3f ms  longest wait %.3f ms\n", resp->locks[i]->name,
                                       (unsigned long long) resp->locks[i]->count, (double) resp->locks[i]->max_ns / 1e6,
                                       (double) resp->locks[i]->wait_max_ns / 1e6);
                        drover__v1__get_agent_stats_response__free_unpacked(resp, NULL);
                }
        } else
                return usage(stderr);
        rpc_client_free(cl);
        return r < 0 ? 1 : 0;
}
