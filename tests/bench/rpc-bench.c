/* Benchmark of the gRPC layer: unary Echo round trips against an in-process
 * server, one client thread over loopback TCP and over a unix socket, then
 * several threads sharing one client.  Prints calls/s and p50/p99 latency;
 * it never fails for being slow (STYLE.md: benchmarks are not timed tests).
 *
 *   rpc-bench [CALLS] [THREADS]      (defaults: 10000 calls, 4 threads)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "echo-service.h"
#include "err.h"
#include "log.h"
#include "rpcclient.h"
#include "rpcserver.h"

typedef struct Run {
        RpcClient *cl;
        int calls;
        uint64_t *lat_ns;
        int errors;
} Run;

static void *run_calls(void *p) {
        Run *r = p;
        Drover__Test__V1__EchoRequest req = DROVER__TEST__V1__ECHO_REQUEST__INIT;
        req.text = "0123456789abcdef"; /* 16-byte payload */
        for (int i = 0; i < r->calls; i++) {
                ProtobufCMessage *m = NULL;
                uint64_t t0 = now_ns();
                int e = rpc_client_unary(r->cl, &drover__test__v1__echoer__descriptor, "Echo", &req.base,
                                         5000, &m, NULL);
                if (r->lat_ns)
                        r->lat_ns[i] = now_ns() - t0;
                if (e < 0)
                        r->errors++;
                else
                        protobuf_c_message_free_unpacked(m, NULL);
        }
        return NULL;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void bench_one(const char *label, const char *target, int calls) {
        RpcClient *cl = NULL;
        if (rpc_client_new(target, NULL, &cl) < 0) {
                printf("%-12s client: %s\n", label, err_msg());
                return;
        }
        Run warm = { .cl = cl, .calls = 500 };
        run_calls(&warm);
        Run r = { .cl = cl, .calls = calls, .lat_ns = calloc((size_t) calls, sizeof(uint64_t)) };
        uint64_t t0 = now_ns();
        run_calls(&r);
        double s = (double) (now_ns() - t0) / 1e9;
        qsort(r.lat_ns, (size_t) calls, sizeof(uint64_t), cmp_u64);
        printf("%-12s 1 thread : %6d calls in %.3f s = %7.0f calls/s, p50 %5.0f us, p99 %5.0f us, errors %d\n",
               label, calls, s, calls / s, r.lat_ns[calls / 2] / 1e3, r.lat_ns[calls * 99 / 100] / 1e3, r.errors);
        free(r.lat_ns);
        rpc_client_free(cl);
}

static void bench_threads(const char *label, const char *target, int calls, int threads) {
        RpcClient *cl = NULL;
        pthread_t th[64];
        Run runs[64];
        int errors = 0;

        if (threads > 64)
                threads = 64;
        if (rpc_client_new(target, NULL, &cl) < 0)
                return;
        uint64_t t0 = now_ns();
        for (int i = 0; i < threads; i++) {
                runs[i] = (Run){ .cl = cl, .calls = calls / threads };
                pthread_create(&th[i], NULL, run_calls, &runs[i]);
        }
        for (int i = 0; i < threads; i++) {
                pthread_join(th[i], NULL);
                errors += runs[i].errors;
        }
        double s = (double) (now_ns() - t0) / 1e9;
        int total = calls / threads * threads;
        printf("%-12s %d threads: %6d calls in %.3f s = %7.0f calls/s (one shared client), errors %d\n",
               label, threads, total, s, total / s, errors);
        rpc_client_free(cl);
}

int main(int argc, char **argv) {
        int calls = argc > 1 ? atoi(argv[1]) : 10000;
        int threads = argc > 2 ? atoi(argv[2]) : 4;
        RpcServerOptions opts = { .threads = 8 };
        RpcServer *srv = NULL;
        EchoService es;
        char tcp[64], unix_addr[128];

        if (calls < 100)
                calls = 100;
        log_set_level(LOG_LEVEL_ERROR); /* no development-mode warnings in the figures */
        echo_service_init(&es);
        snprintf(unix_addr, sizeof(unix_addr), "unix:/tmp/drover-rpc-bench-%d.sock", (int) getpid());
        int port;
        if (rpc_server_new(&opts, &srv) < 0 || echo_service_register(srv, &es) < 0 ||
            (port = rpc_server_listen(srv, "127.0.0.1:0", NULL)) <= 0 ||
            rpc_server_listen(srv, unix_addr, NULL) < 0 || rpc_server_start(srv) < 0) {
                fprintf(stderr, "rpc-bench: server: %s\n", err_msg());
                return 1;
        }
        snprintf(tcp, sizeof(tcp), "127.0.0.1:%d", port);
        printf("rpc-bench: unary Echo, 16-byte payload, server 8 workers, in-process\n");
        bench_one("tcp", tcp, calls);
        bench_one("unix", unix_addr, calls);
        bench_threads("tcp", tcp, calls, threads);
        bench_threads("tcp", tcp, calls, 16);

        uint64_t t0 = now_ns();
        rpc_server_shutdown(srv, 1000);
        printf("idle shutdown: %.1f ms\n", (double) (now_ns() - t0) / 1e6);
        rpc_server_free(srv);
        echo_service_destroy(&es);
        return 0;
}
