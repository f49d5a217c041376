/* drover-coordinator: entry point.
 *
 *   drover-coordinator --config /etc/drover/coordinator.json
 *   drover-coordinator --version | --help
 *
 * Loads and validates the configuration, opens the job store, resumes
 * unfinished jobs, serves the Coordinator API until SIGTERM/SIGINT.  Prints
 * "drover-coordinator: ready listen=... jobs_resumed=N" on stdout.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "coord-metrics.h"
#include "coord-rpc.h"
#include "coord.h"
#include "drover-version.h"
#include "err.h"
#include "log.h"

int main(int argc, char **argv) {
        static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                                              { "help", no_argument, NULL, 'h' },
                                              { "version", no_argument, NULL, 'V' }, { 0 } };
        const char *config = NULL;
        CoordConfig cfg;
        int c, r;

        while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) >= 0) {
                if (c == 'c')
                        config = optarg;
                else if (c == 'V') {
                        printf("drover-coordinator %s\n", DROVER_VERSION);
                        return 0;
                } else {
                        fprintf(c == 'h' ? stdout : stderr, "usage: drover-coordinator --config FILE | --version | --help\n");
                        return c == 'h' ? 0 : 2;
                }
        }
        if (!config || optind < argc) {
                fprintf(stderr, "usage: drover-coordinator --config FILE | --version | --help\n");
                return 2;
        }
        if ((r = coord_config_load(config, &cfg)) < 0 || (r = coord_config_validate(&cfg)) < 0) {
                fprintf(stderr, "drover-coordinator: bad configuration: %s\n", err_str(r));
                return 1;
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
        if (cfg.rpc_threads_given)
                log_warning("config: 'rpc_threads' is replaced by 'rpc_lanes' (docs/coordinator.md) and is ignored");
        RpcServer *srv;
        RpcTls tls = { .cert_file = cfg.tls_cert, .key_file = cfg.tls_key, .ca_file = cfg.tls_ca };
        bool use_tls = cfg.tls_cert[0] != '\0';
        coord_rpc_max_watches = cfg.lane_streams > 1 ? cfg.lane_streams - 1 : 1;
        if ((r = rpc_server_new(&so, &srv)) < 0 || (r = coord_rpc_register(srv, co)) < 0) {
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

        int sig = 0;
        sigwait(&stop, &sig);
        log_info("signal %d: stopping (running migrations go on; jobs resume at the next start)", sig);
        metrics_server_free(metrics); /* its scrapes read the coordinator */
        coord_stop(co);
        rpc_server_shutdown(srv, 2000);
        rpc_server_free(srv);
        coord_free(co);
        return 0;
}
