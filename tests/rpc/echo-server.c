/* A standalone Echoer server for the interop test and manual checks.
 *
 *   echo-server [-t THREADS] [-g GRACE_MS] ADDR...
 *
 * Listens in development mode (loopback/unix only) on every ADDR, prints
 * "LISTEN <addr> <port>" for each and then "READY", and serves until
 * SIGINT/SIGTERM; then shuts down with the grace period and prints
 * "SHUTDOWN <ms> <cancelled calls>".  SIGINT and SIGTERM are blocked before
 * any thread starts, so every thread (ours and gRPC's) inherits the mask and
 * main collects them with sigwait().
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "deadline.h"
#include "echo-service.h"
#include "err.h"
#include "log.h"
#include "rpcserver.h"

int main(int argc, char **argv) {
        RpcServerOptions opts = { .threads = 8 };
        int64_t grace_ms = 300;
        EchoService es;
        RpcServer *srv = NULL;
        sigset_t set;
        int opt, sig, r;

        while ((opt = getopt(argc, argv, "t:g:")) != -1) {
                if (opt == 't')
                        opts.threads = (unsigned) atoi(optarg);
                else if (opt == 'g')
                        grace_ms = atoll(optarg);
                else {
                        fprintf(stderr, "usage: %s [-t THREADS] [-g GRACE_MS] ADDR...\n", argv[0]);
                        return 2;
                }
        }
        if (optind >= argc) {
                fprintf(stderr, "usage: %s [-t THREADS] [-g GRACE_MS] ADDR...\n", argv[0]);
                return 2;
        }
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);

        echo_service_init(&es);
        r = rpc_server_new(&opts, &srv);
        if (r >= 0)
                r = echo_service_register(srv, &es);
        for (int i = optind; r >= 0 && i < argc; i++) {
                r = rpc_server_listen(srv, argv[i], NULL);
                if (r >= 0)
                        printf("LISTEN %s %d\n", argv[i], r);
        }
        if (r >= 0)
                r = rpc_server_start(srv);
        if (r < 0) {
                log_error("echo-server: %s", err_str(r));
                rpc_server_free(srv);
                return 1;
        }
        printf("READY\n");
        fflush(stdout);

        while (sigwait(&set, &sig) != 0)
                ;
        uint64_t t0 = now_ns();
        int cancelled = rpc_server_shutdown(srv, grace_ms);
        printf("SHUTDOWN %.1f %d\n", (double) (now_ns() - t0) / 1e6, cancelled);
        fflush(stdout);
        rpc_server_free(srv);
        echo_service_destroy(&es);
        return 0;
}
