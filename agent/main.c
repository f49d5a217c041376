/* drover-agent: entry point.
 *
 *   drover-agent --config /etc/drover/agent.json
 *   drover-agent --dev --listen unix:/run/drover/agent.sock --state-dir D --run-dir R
 *   drover-agent --check-config /etc/drover/agent.json
 *
 * Loads and validates the configuration (command-line options override the
 * file), reconnects to the guests that outlived the previous agent, serves
 * the Agent API until SIGTERM or SIGINT, then stops serving with a grace
 * period.  Guests keep running when the agent stops.  On start it prints
 * one line "drover-agent: ready host=H listen=ADDR[,ADDR] ports=P[,P]" on
 * stdout (tests and the demo wait for it).  --check-config FILE loads and
 * validates FILE (with any other options applied) exactly as a start would,
 * prints "config OK" or the error, exits 0 or 1 and starts nothing.
 *
 * Under systemd (Type=notify, core/notify.h) it says READY=1 at that same
 * moment, STATUS="N guests, M migrations" as it changes, WATCHDOG=1 when
 * WatchdogSec= is set and STOPPING=1 at the signal; the gRPC health service
 * (proto/health.h) says SERVING from READY to the signal, NOT_SERVING
 * before and after.  docs/operations.md has both.
 *
 * While it waits for the signal, the main thread wakes every TRIM_PERIOD_S
 * (or every half systemd watchdog interval when that is shorter) to send
 * WATCHDOG=1 and a changed status; every TRIM_PERIOD_S it also closes the
 * channels to peer agents that sat idle (agent-peer.h), and gives freed heap
 * back to the kernel when guests changed (an event was published) and no
 * migration runs: see trim_when_quiet().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent-config.h"
#include "agent-metrics.h"
#include "agent-migrate.h"
#include "agent-peer.h"
#include "deadline.h"
#include "agent-rpc.h"
#include "agent.h"
#include "drover-version.h"
#include "agent-migtable.h"
#include "err.h"
#include "health.h"
#include "log.h"
#include "notify.h"

#define TRIM_PERIOD_S 10

/* Resident size of this process in KiB (/proc/self/statm), or 0. */
static long rss_kib(void) {
        long pages = 0, resident = 0;
        FILE *f = fopen("/proc/self/statm", "r");
        if (f && fscanf(f, "%ld %ld", &pages, &resident) != 2)
                resident = 0;
        if (f)
                fclose(f);
        return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Every migration runs on threads of its own (the source thread, the
 * destination's watchdog, two monitor threads per QEMU), and glibc serves
 * them from up to 8 arenas per CPU.  What they free stays in those arenas'
 * heaps, fragmented; only the top of a heap is given back by free().
 * malloc_trim() returns every free page of every arena: in the soak
 * benchmark each trim gave back 0.6-0.7 MiB (of ~24) and took 2-22 ms,
 * holding each arena's lock in turn.  So it runs here, on the otherwise
 * idle main thread, only after guests changed (the event bus's sequence
 * moved) and while no migration runs: never during a migration's
 * downtime, and an idle agent does not trim again and again.
 * docs/performance.md ("Soak") has the figures. */
static void trim_when_quiet(Agent *a, uint64_t *trimmed_at_seq) {
        uint64_t seq = event_bus_last_seq(a->events);
        if (seq == *trimmed_at_seq || atomic_load(&a->background) > 0)
                return;
        long before = rss_kib();
        uint64_t t0 = now_ns();
        malloc_trim(0);
        *trimmed_at_seq = seq;
        log_debug("heap trimmed: RSS %ld -> %ld KiB in %.2f ms", before, rss_kib(),
                  (double) (now_ns() - t0) / 1e6);
}

/* "12 guests, 1 migration": the STATUS= line, into @buf. */
static const char *status_line(Agent *a, char *buf, size_t size) {
        size_t guests = vm_registry_count(a->vms), migrations = agent_migtable_running(a->migrations);
        snprintf(buf, size, "%zu guest%s, %zu migration%s", guests, guests == 1 ? "" : "s", migrations,
                 migrations == 1 ? "" : "s");
        return buf;
}

static void usage(FILE *f) {
        fprintf(f,
                "usage: drover-agent [--config FILE] [options]\n"
                "  --config FILE       JSON configuration (docs/agent.md)\n"
                "  --check-config FILE validate FILE (and the options), print \"config OK\" or the error\n"
                "  --listen ADDR       listen address (repeatable; replaces the file's list)\n"
                "  --host NAME         host name reported to clients\n"
                "  --state-dir DIR     status files\n"
                "  --run-dir DIR       sockets, serial logs, pidfiles\n"
                "  --qemu PATH         QEMU binary\n"
                "  --accel kvm|tcg     accelerator\n"
                "  --dev               plaintext gRPC (loopback and unix sockets only)\n"
                "  --set NAME=VALUE    any other configuration member\n"
                "  --log-level LEVEL   debug, info, warning, error\n"
                "  --version           print the version\n");
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' }, { "listen", required_argument, NULL, 'l' },
                { "host", required_argument, NULL, 'H' },   { "state-dir", required_argument, NULL, 's' },
                { "run-dir", required_argument, NULL, 'r' }, { "qemu", required_argument, NULL, 'q' },
                { "accel", required_argument, NULL, 'a' },  { "dev", no_argument, NULL, 'd' },
                { "set", required_argument, NULL, 'S' },    { "log-level", required_argument, NULL, 'L' },
                { "check-config", required_argument, NULL, 'C' },
                { "help", no_argument, NULL, 'h' },         { "version", no_argument, NULL, 'V' },
                { 0 },
        };
        const char *config = NULL;
        struct { const char *name; char *value; } sets[64];
        size_t n_sets = 0, n_listen = 0;
        const char *listen[AGENT_MAX_LISTEN];
        AgentConfig cfg;
        bool check_only = false;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:l:h", opts, NULL)) >= 0) {
                const char *name = NULL;
                switch (c) {
                case 'c': config = optarg; continue;
                case 'C': config = optarg; check_only = true; continue;
                case 'l':
                        if (n_listen == AGENT_MAX_LISTEN) {
                                fprintf(stderr, "drover-agent: at most %d --listen\n", AGENT_MAX_LISTEN);
                                return 2;
                        }
                        listen[n_listen++] = optarg;
                        continue;
                case 'H': name = "host"; break;
                case 's': name = "state_dir"; break;
                case 'r': name = "run_dir"; break;
                case 'q': name = "qemu_binary"; break;
                case 'a': name = "accel"; break;
                case 'd': name = "dev_mode"; optarg = (char *) "true"; break;
                case 'L': name = "log_level"; break;
                case 'S': {
                        char *eq = strchr(optarg, '=');
                        if (!eq) {
                                fprintf(stderr, "drover-agent: --set wants NAME=VALUE\n");
                                return 2;
                        }
                        *eq = '\0';
                        name = optarg;
                        optarg = eq + 1;
                        break;
                }
                case 'h': usage(stdout); return 0;
                case 'V': printf("drover-agent %s\n", DROVER_VERSION); return 0;
                default: usage(stderr); return 2;
                }
                if (n_sets < ELEMENTSOF(sets))
                        sets[n_sets++] = (typeof(sets[0])){ name, optarg };
        }
        if (optind < argc) {
                usage(stderr);
                return 2;
        }

        if (config)
                r = agent_config_load(config, &cfg);
        else {
                agent_config_defaults(&cfg);
                r = 0;
        }
        for (size_t i = 0; r >= 0 && i < n_sets; i++)
                r = agent_config_set(&cfg, sets[i].name, sets[i].value);
        if (r >= 0 && n_listen) {
                cfg.n_listen = n_listen;
                for (size_t i = 0; i < n_listen; i++)
                        snprintf(cfg.listen[i], sizeof(cfg.listen[i]), "%s", listen[i]);
        }
        if (r >= 0)
                r = agent_config_validate(&cfg);
        if (r < 0) {
                fprintf(stderr, "drover-agent: bad configuration: %s\n", err_str(r));
                return 1;
        }
        if (check_only) {
                printf("config OK\n");
                return 0;
        }
        int lvl = log_level_from_string(cfg.log_level);
        if (lvl >= 0)
                log_set_level((LogLevel) lvl);

        /* Block the stop signals before gRPC starts threads: they inherit
         * the mask and main takes them with sigwait. */
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        pthread_sigmask(SIG_BLOCK, &stop, NULL);

        Agent *a;
        if ((r = agent_new(&cfg, &a)) < 0) {
                fprintf(stderr, "drover-agent: %s\n", err_str(r));
                return 1;
        }
        int loaded = agent_reconnect_all(a);
        if (loaded < 0)
                log_error("reading %s: %s", cfg.state_dir, err_str(loaded));
        else
                log_info("%d guests loaded from %s", loaded, cfg.state_dir);

        RpcServerOptions so = { .max_request_bytes = cfg.max_request_bytes };
        agent_rpc_lanes(&cfg, &so);
        if (cfg.rpc_threads)
                log_warning("config: 'rpc_threads' is replaced by 'rpc_lanes' (docs/agent.md) and is ignored");
        RpcServer *srv;
        RpcTls tls = { .cert_file = cfg.tls_cert, .key_file = cfg.tls_key, .ca_file = cfg.tls_ca };
        bool use_tls = cfg.tls_cert[0] != '\0';
        char ports[256] = "", addrs[2048] = "";
        _cleanup_(health_freep) Health *health = NULL;
        if ((r = health_new((const char *const[]){ "drover.v1.Agent", NULL }, &health)) < 0 ||
            (r = rpc_server_new(&so, &srv)) < 0 || (r = agent_rpc_register(srv, a)) < 0 ||
            (r = health_register(health, srv, AGENT_LANE_QUERIES, AGENT_LANE_STREAMS)) < 0) {
                fprintf(stderr, "drover-agent: %s\n", err_str(r));
                agent_free(a);
                return 1;
        }
        for (size_t i = 0; i < cfg.n_listen; i++) {
                int port = rpc_server_listen(srv, cfg.listen[i], use_tls ? &tls : NULL);
                if (port < 0) {
                        fprintf(stderr, "drover-agent: cannot listen on %s: %s\n", cfg.listen[i], err_str(port));
                        rpc_server_free(srv);
                        agent_free(a);
                        return 1;
                }
                size_t pl = strlen(ports), al = strlen(addrs);
                snprintf(ports + pl, sizeof(ports) - pl, "%s%d", i ? "," : "", port);
                snprintf(addrs + al, sizeof(addrs) - al, "%s%s", i ? "," : "", cfg.listen[i]);
        }
        if ((r = rpc_server_start(srv)) < 0) {
                fprintf(stderr, "drover-agent: %s\n", err_str(r));
                rpc_server_free(srv);
                agent_free(a);
                return 1;
        }
        AgentMetricsCtx mctx = { .agent = a, .srv = srv };
        MetricsServer *metrics;
        if ((r = agent_metrics_start(&mctx, &metrics)) < 0) {
                fprintf(stderr, "drover-agent: %s\n", err_str(r));
                rpc_server_shutdown(srv, 0);
                rpc_server_free(srv);
                agent_free(a);
                return 1;
        }
        if (metrics)
                log_info("metrics on http://%s/metrics", cfg.metrics_listen);
        if (!use_tls)
                log_warning("development mode: plaintext gRPC without authentication on %s", addrs);
        /* peers may ask about our interrupted migrations now: settle them */
        agent_migration_recover_all(a);
        printf("drover-agent: ready host=%s listen=%s ports=%s guests=%d\n", cfg.host, addrs, ports,
               loaded < 0 ? 0 : loaded);
        fflush(stdout);
        health_set_serving(health, true);
        char status[128];
        notify_ready(status_line(a, status, sizeof(status)));

        int sig = -1;
        uint64_t trimmed_at_seq = 0, trim_due_ns = now_ns() + TRIM_PERIOD_S * NSEC_PER_SEC;
        int64_t watchdog_ms = notify_watchdog_period_ms();
        int64_t wake_ms = TRIM_PERIOD_S * 1000;
        if (watchdog_ms > 0 && watchdog_ms < wake_ms)
                wake_ms = watchdog_ms;
        while (sig <= 0) {
                struct timespec period = { .tv_sec = wake_ms / 1000, .tv_nsec = (wake_ms % 1000) * 1000000 };
                sig = sigtimedwait(&stop, NULL, &period);
                if (sig > 0 || (sig < 0 && errno != EAGAIN))
                        continue;
                if (watchdog_ms > 0)
                        notify_watchdog();
                notify_status("%s", status_line(a, status, sizeof(status)));
                if (now_ns() >= trim_due_ns) {
                        agent_peer_cache_sweep(a->peers); /* before the trim: what it frees is given back */
                        trim_when_quiet(a, &trimmed_at_seq);
                        trim_due_ns = now_ns() + TRIM_PERIOD_S * NSEC_PER_SEC;
                }
        }
        log_info("signal %d: stopping (guests keep running)", sig);
        health_set_serving(health, false);
        notify_stopping("stopping: guests keep running");
        metrics_server_free(metrics); /* its scrapes read the agent and the server */
        agent_migration_stop(a);
        int cancelled = rpc_server_shutdown(srv, 2000);
        if (cancelled > 0)
                log_info("%d calls cancelled at shutdown", cancelled);
        rpc_server_free(srv);
        /* Watchdogs end within a second; a migration thread does not stop
         * mid-phase.  Every phase is persisted, so exiting under a running
         * migration is safe: the next start settles it. */
        for (int i = 0; i < 30 && atomic_load(&a->background) > 0; i++)
                sleep_ms(100);
        int busy = atomic_load(&a->background);
        if (busy > 0) {
                log_warning("%d migrations still in flight: exiting without waiting; recovery settles them at the next start",
                            busy);
                return 0;
        }
        agent_free(a);
        return 0;
}
