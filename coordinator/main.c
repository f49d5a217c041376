/* drover-coordinator: entry point.
 *
 *   drover-coordinator --config /etc/drover/coordinator.json
 *   drover-coordinator --version | --help
 *   drover-coordinator --check-config /etc/drover/coordinator.json
 *
 * Loads and validates the configuration, opens the job store, resumes
 * unfinished jobs, serves the Coordinator API until SIGTERM/SIGINT.  Prints
 * "drover-coordinator: ready listen=..." on stdout.  --check-config FILE
 * loads and validates FILE as a start would, prints "config OK" or the
 * error, exits 0 or 1 and starts nothing.
 *
 * Under systemd (Type=notify, core/notify.h) it says READY=1 with the ready
 * line, STATUS="N hosts (M up), J jobs, K migrations" as it changes (checked every
 * STATUS_PERIOD_S, or every half watchdog interval with WATCHDOG=1 when
 * WatchdogSec= is set; with an etcd store it starts with "leading" or
 * "standby, leader at ADDR", and each role change says so at once) and
 * STOPPING=1 at the signal; the gRPC health service (proto/health.h) says
 * SERVING from READY to the signal, on a standby too (it answers reads).
 * At the signal a leader resigns (coord_stop: the election's lease is
 * revoked) so that a standby takes over at once.
 * docs/operations.md has both.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord-metrics.h"
#include "coord-rpc.h"
#include "coord.h"
#include "drover-version.h"
#include "err.h"
#include "health.h"
#include "log.h"
#include "notify.h"

#define STATUS_PERIOD_S 10

/* "3 hosts (2 up), 1 job, 2 migrations": the STATUS= line, into @buf;
 * with an etcd store it starts with the role ("leading: ...", "standby,
 * leader at 10.0.0.11:7500: ..."). */
static const char *status_line(Coordinator *co, const CoordConfig *cfg, char *buf, size_t size) {
        CoordSummary s;
        char role[300] = "";
        coord_summary(co, &s);
        if (cfg->store_kind == COORD_STORE_ETCD)
                snprintf(role, sizeof(role), "%s%s: ", s.standby ? "standby, leader at " : "leading",
                         s.standby ? (s.leader[0] ? s.leader : "(none yet)") : "");
        snprintf(buf, size, "%s%zu host%s (%zu up), %zu job%s, %zu migration%s", role, s.hosts, s.hosts == 1 ? "" : "s",
                 s.hosts_up, s.jobs, s.jobs == 1 ? "" : "s", s.migrations, s.migrations == 1 ? "" : "s");
        return buf;
}

int main(int argc, char **argv) {
        static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                                              { "check-config", required_argument, NULL, 'C' },
                                              { "help", no_argument, NULL, 'h' },
                                              { "version", no_argument, NULL, 'V' }, { 0 } };
        static const char usage[] = "usage: drover-coordinator --config FILE | --check-config FILE | --version | --help\n";
        const char *config = NULL;
        bool check_only = false;
        CoordConfig cfg;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) >= 0) {
                if (c == 'c' || c == 'C') {
                        config = optarg;
                        check_only = c == 'C';
                } else if (c == 'V') {
                        printf("drover-coordinator %s\n", DROVER_VERSION);
                        return 0;
                } else {
                        fputs(usage, c == 'h' ? stdout : stderr);
                        return c == 'h' ? 0 : 2;
                }
        }
        if (!config || optind < argc) {
                fputs(usage, stderr);
                return 2;
        }
        if ((r = coord_config_load(config, &cfg)) < 0 || (r = coord_config_validate(&cfg)) < 0) {
                fprintf(stderr, "drover-coordinator: bad configuration: %s\n", err_str(r));
                return 1;
        }
        if (check_only) {
                printf("config OK\n");
                return 0;
        }
        int lvl = log_level_from_string(cfg.log_level);
        if (lvl >= 0)
                log_set_level((LogLevel) lvl);

        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        pthread_sigmask(SIG_BLOCK, &stop, NULL);

        Coordinator *co;
        if ((r = coord_new(&cfg, &co)) < 0) {
                fprintf(stderr, "drover-coordinator: %s\n", err_str(r));
                return 1;
        }
        RpcServerOptions so = { 0 };
        coord_rpc_lanes(&cfg, &so);
        if (cfg.db_given)
                log_warning("config: 'db' is replaced by \"store\": \"sqlite:%s\" (docs/coordinator.md) and still read",
                            cfg.db_path);
        if (cfg.rpc_threads_given)
                log_warning("config: 'rpc_threads' is replaced by 'rpc_lanes' (docs/coordinator.md) and is ignored");
        RpcServer *srv;
        RpcTls tls = { .cert_file = cfg.tls_cert, .key_file = cfg.tls_key, .ca_file = cfg.tls_ca };
        bool use_tls = cfg.tls_cert[0] != '\0';
        coord_rpc_max_watches = cfg.lane_streams > 1 ? cfg.lane_streams - 1 : 1;
        _cleanup_(health_freep) Health *health = NULL;
        if ((r = health_new((const char *const[]){ "drover.v1.Coordinator", NULL }, &health)) < 0 ||
            (r = rpc_server_new(&so, &srv)) < 0 || (r = coord_rpc_register(srv, co)) < 0 ||
            (r = health_register(health, srv, COORD_LANE_QUERIES, COORD_LANE_STREAMS)) < 0) {
                fprintf(stderr, "drover-coordinator: %s\n", err_str(r));
                coord_free(co);
                return 1;
        }
        char addrs[1024] = "";
        for (size_t i = 0; i < cfg.n_listen; i++) {
                int port = rpc_server_listen(srv, cfg.listen[i], use_tls ? &tls : NULL);
                if (port < 0) {
                        fprintf(stderr, "drover-coordinator: cannot listen on %s: %s\n", cfg.listen[i], err_str(port));
                        rpc_server_free(srv);
                        coord_free(co);
                        return 1;
                }
                size_t l = strlen(addrs);
                snprintf(addrs + l, sizeof(addrs) - l, "%s%s", i ? "," : "", cfg.listen[i]);
        }
        if ((r = coord_start(co)) < 0 || (r = rpc_server_start(srv)) < 0) {
                fprintf(stderr, "drover-coordinator: %s\n", err_str(r));
                rpc_server_free(srv);
                coord_free(co);
                return 1;
        }
        MetricsServer *metrics;
        if ((r = coord_metrics_start(co, &metrics)) < 0) {
                fprintf(stderr, "drover-coordinator: %s\n", err_str(r));
                coord_stop(co);
                rpc_server_shutdown(srv, 0);
                rpc_server_free(srv);
                coord_free(co);
                return 1;
        }
        if (metrics)
                log_info("metrics on http://%s/metrics", cfg.metrics_listen);
        if (!use_tls)
                log_warning("development mode: plaintext gRPC without authentication on %s", addrs);
        printf("drover-coordinator: ready listen=%s\n", addrs);
        fflush(stdout);
        health_set_serving(health, true);
        char status[512];
        notify_ready(status_line(co, &cfg, status, sizeof(status)));

        int64_t watchdog_ms = notify_watchdog_period_ms();
        int64_t wake_ms = STATUS_PERIOD_S * 1000;
        if (watchdog_ms > 0 && watchdog_ms < wake_ms)
                wake_ms = watchdog_ms;
        int sig = -1;
        while (sig <= 0) {
                struct timespec period = { .tv_sec = wake_ms / 1000, .tv_nsec = (wake_ms % 1000) * 1000000 };
                sig = sigtimedwait(&stop, NULL, &period);
                if (sig > 0 || (sig < 0 && errno != EAGAIN))
                        continue;
                if (watchdog_ms > 0)
                        notify_watchdog();
                notify_status("%s", status_line(co, &cfg, status, sizeof(status)));
        }
        log_info("signal %d: stopping (running migrations go on; jobs resume at the next start)", sig);
        health_set_serving(health, false);
        notify_stopping("stopping: running migrations go on; jobs resume at the next start");
        metrics_server_free(metrics); /* its scrapes read the coordinator */
        coord_stop(co);
        rpc_server_shutdown(srv, 2000);
        rpc_server_free(srv);
        coord_free(co);
        return 0;
}
