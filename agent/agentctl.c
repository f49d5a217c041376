/* drover-agentctl: talk to one drover-agent directly (debugging, demos,
 * bootstrapping guests).  Normal operations go through the coordinator
 * (droverctl); this tool is for the agent's own API.
 *
 *   drover-agentctl [-a ADDR] [--tls-cert F --tls-key F --tls-ca F] COMMAND
 *     define FILE|-          define a guest from a JSON definition (docs/agent.md)
 *     start NAME             start a defined guest
 *     destroy NAME | undefine NAME | suspend NAME | resume NAME
 *     list                   guests with state and pid
 *     stats                  the agent's lock statistics and guest counts
 *
 * ADDR: $DROVER_AGENT or unix:/run/drover/agent.sock.  Exit 0 on success,
 * 1 when the agent refused (the gRPC status is printed), 2 on usage.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.pb-c.h"
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
        fprintf(f, "usage: drover-agentctl [-a ADDR] [--tls-cert F --tls-key F --tls-ca F] "
                   "define FILE|- | start NAME | destroy NAME | undefine NAME | suspend NAME | resume NAME | list | stats\n");
        return 2;
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

int main(int argc, char **argv) {
        static const struct option opts[] = { { "agent", required_argument, NULL, 'a' }, { "tls-cert", required_argument, NULL, 1 },
                                              { "tls-key", required_argument, NULL, 2 }, { "tls-ca", required_argument, NULL, 3 },
                                              { 0 } };
        const char *addr = getenv("DROVER_AGENT");
        RpcTls tls = { 0 };
        int c;
        if (!getenv("DROVER_LOG"))
                log_set_level(LOG_LEVEL_ERROR);
        while ((c = getopt_long(argc, argv, "+a:", opts, NULL)) >= 0) {
                switch (c) {
                case 'a': addr = optarg; break;
                case 1: tls.cert_file = optarg; break;
                case 2: tls.key_file = optarg; break;
                case 3: tls.ca_file = optarg; break;
                default: return usage(stderr);
                }
        }
        if (optind >= argc)
                return usage(stderr);
        const char *cmd = argv[optind], *arg = optind + 1 < argc ? argv[optind + 1] : NULL;
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
        } else if (strcmp(cmd, "start") == 0 && arg) {
                Drover__V1__StartRequest req = DROVER__V1__START_REQUEST__INIT;
                Drover__V1__GuestStatus *st;
                req.guest = (char *) arg;
                if ((r = call("Start", &req.base, (ProtobufCMessage **) &st)) >= 0) {
                        printf("%s %s (pid %d)\n", st->name, state(st->state), st->pid);
                        drover__v1__guest_status__free_unpacked(st, NULL);
                }
        } else if ((strcmp(cmd, "destroy") == 0 || strcmp(cmd, "suspend") == 0 || strcmp(cmd, "resume") == 0 ||
                    strcmp(cmd, "undefine") == 0) && arg) {
                Drover__V1__GuestRef req = DROVER__V1__GUEST_REF__INIT;
                ProtobufCMessage *resp;
                char method[16];
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
