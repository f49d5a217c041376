/* The daemons' /metrics scraped by a real Prometheus (suite 'cluster').
 *
 * Two hosts as network namespaces (cluster.h) whose agents get
 * "metrics_listen" on their host address 10.77.X.N:9464 (a non-loopback
 * address, set explicitly), and drover-coordinator in host a's namespace
 * with metrics on 127.0.0.1:9465.  Debian's /usr/bin/prometheus runs in
 * host a's namespace too (it reaches both agents over the bridge and the
 * coordinator over that namespace's loopback), with its own config and
 * storage in the test folder, scrape interval 1 s, its web listener on a
 * free loopback port of that namespace.  The test reaches it through a
 * socket made inside the namespace (setns on this thread, then back).
 *
 * What it proves, through PromQL over /api/v1/query: Prometheus scrapes
 * all three targets (up == 1), and after one migration through the
 * coordinator the source's drover_migrations_total{role="source",
 * result="succeeded"}, the destination's {role="destination"}, the
 * source's downtime histogram _count and the coordinator's
 * drover_coordinator_migrations_total{result="succeeded"} have each moved
 * up from what Prometheus saw before.  Every wait polls a query until it
 * shows the value or a deadline passes.  Prometheus is stopped in the
 * teardown whatever happened (and cluster_down kills anything left in the
 * namespaces).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "cluster.h"
#include "deadline.h"
#include "testutil.h"

#define PROMETHEUS "/usr/bin/prometheus"
#define AGENT_METRICS_PORT 9464
#define COORD_METRICS_PORT 9465
#define WAIT_MS 60000

static pid_t prom_pid;        /* 0 when not running */
static char prom_ns[40];      /* the namespace it runs in */
static unsigned prom_port;    /* its web port on that namespace's loopback */

/* ---- a socket in another network namespace ---------------------------------------------- */

/* A TCP socket created inside namespace @ns (this thread enters it for the
 * socket() call only; the socket keeps the namespace). */
static int ns_socket(const char *ns) {
        char path[128];
        snprintf(path, sizeof(path), "/run/netns/%s", ns);
        int target = open(path, O_RDONLY | O_CLOEXEC), self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        assert_true(target >= 0 && self >= 0);
        assert_int_equal(setns(target, CLONE_NEWNET), 0);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(setns(self, CLONE_NEWNET), 0);
        close(target);
        close(self);
        assert_true(fd >= 0);
        return fd;
}

static unsigned ns_free_port(const char *ns) {
        int fd = ns_socket(ns);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof(a);
        assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &a, &l), 0);
        close(fd);
        return ntohs(a.sin_port);
}

/* GET @path from Prometheus (HTTP/1.0): the status code (-1 when it cannot
 * be reached) and the body (malloc'ed) in *ret_body. */
static int prom_get(const char *path, char **ret_body) {
        int fd = ns_socket(prom_ns);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(prom_port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        struct timeval tv = { .tv_sec = 10 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        *ret_body = NULL;
        if (connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
                close(fd);
                return -1;
        }
        char req[4096];
        snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
        if (write(fd, req, strlen(req)) != (ssize_t) strlen(req)) {
                close(fd);
                return -1;
        }
        size_t n = 0, cap = 65536;
        char *buf = malloc(cap);
        ssize_t k;
        assert_non_null(buf);
        while ((k = read(fd, buf + n, cap - 1 - n)) > 0) {
                n += (size_t) k;
                if (n + 1 == cap)
                        assert_non_null(buf = realloc(buf, cap *= 2));
        }
        buf[n] = '\0';
        close(fd);
        int code = -1;
        if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
                code = -1;
        char *body = strstr(buf, "\r\n\r\n");
        *ret_body = strdup(body ? body + 4 : "");
        free(buf);
        return code;
}

/* The value of PromQL @query (an instant vector with one series, or a
 * scalar); NAN when the result is empty or Prometheus cannot answer. */
static double prom_query(const char *query) {
        char path[2048] = "/api/v1/query?query=";
        size_t l = strlen(path);
        for (const unsigned char *p = (const unsigned char *) query; *p && l + 4 < sizeof(path); p++)
                l += (size_t) (isalnum(*p) ? snprintf(path + l, sizeof(path) - l, "%c", *p)
                                           : snprintf(path + l, sizeof(path) - l, "%%%02X", *p));
        char *body;
        double v = NAN;
        if (prom_get(path, &body) != 200) {
                free(body);
                return NAN;
        }
        json_object *doc = json_tokener_parse(body);
        json_object *data = cj_get(doc, "data"), *result = cj_get(data, "result"), *value = NULL;
        if (strcmp(cj_str(data, "resultType"), "vector") == 0 && cj_len(result) == 1)
                value = cj_get(cj_idx(result, 0), "value");
        else if (strcmp(cj_str(data, "resultType"), "scalar") == 0)
                value = result;
        if (value && json_object_is_type(value, json_type_array) && json_object_array_length(value) == 2)
                v = strtod(json_object_get_string(json_object_array_get_idx(value, 1)), NULL);
        json_object_put(doc);
        free(body);
        return v;
}

/* Poll @query until its value is at least @min, or fail after @ms. */
static double wait_query_at_least(const char *query, double min, int ms) {
        Deadline d = deadline_in_ms(ms);
        double v;
        while (!((v = prom_query(query)) >= min)) {
                if (deadline_expired(d))
                        fail_msg("PromQL %s: %g after %d s, wanted at least %g", query, v, ms / 1000, min);
                sleep_ms(250);
        }
        return v;
}

/* ---- Prometheus ------------------------------------------------------------------------- */

static void prom_start(Cluster *c, const char *dir) {
        char cfg[512], data[512], log[512];
        snprintf(cfg, sizeof(cfg), "%s/prometheus.yml", dir);
        snprintf(data, sizeof(data), "%s/prometheus-data", dir);
        snprintf(log, sizeof(log), "%s/prometheus.log", dir);
        FILE *f = fopen(cfg, "we");
        assert_non_null(f);
        fprintf(f, "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
                   "scrape_configs:\n"
                   "  - job_name: agents\n    static_configs:\n      - targets: ['%s:%d', '%s:%d']\n"
                   "  - job_name: coordinator\n    static_configs:\n      - targets: ['127.0.0.1:%d']\n",
                c->net.addr[0], AGENT_METRICS_PORT, c->net.addr[1], AGENT_METRICS_PORT, COORD_METRICS_PORT);
        fclose(f);
        snprintf(prom_ns, sizeof(prom_ns), "%s", c->net.ns[0]);
        prom_port = ns_free_port(prom_ns);
        char a_cfg[600], a_data[600], a_web[64];
        snprintf(a_cfg, sizeof(a_cfg), "--config.file=%s", cfg);
        snprintf(a_data, sizeof(a_data), "--storage.tsdb.path=%s", data);
        snprintf(a_web, sizeof(a_web), "--web.listen-address=127.0.0.1:%u", prom_port);
        char nspath[128];
        snprintf(nspath, sizeof(nspath), "/run/netns/%s", prom_ns);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                int nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
                int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
                if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0 || out < 0)
                        _exit(127);
                dup2(out, 1);
                dup2(out, 2);
                execl(PROMETHEUS, "prometheus", a_cfg, a_data, a_web, "--log.level=warn", (char *) NULL);
                _exit(127);
        }
        prom_pid = pid;
        printf("# prometheus (pid %d) in %s on 127.0.0.1:%u\n", (int) pid, prom_ns, prom_port);
}

static void prom_stop(void) {
        if (!prom_pid)
                return;
        kill(prom_pid, SIGTERM);
        Deadline d = deadline_in_ms(10000);
        while (waitpid(prom_pid, NULL, WNOHANG) == 0) {
                if (deadline_expired(d)) {
                        kill(prom_pid, SIGKILL);
                        waitpid(prom_pid, NULL, 0);
                        break;
                }
                sleep_ms(50);
        }
        prom_pid = 0;
}

/* ---- the test --------------------------------------------------------------------------- */

/* Host @i's agent config gets "metrics_listen" on its host address; the
 * agent restarts with it (no guest yet). */
static void agent_with_metrics(Cluster *c, int i) {
        json_object *cfg = json_object_from_file(c->host[i].config);
        char listen[64];
        assert_non_null(cfg);
        snprintf(listen, sizeof(listen), "%s:%d", c->net.addr[i], AGENT_METRICS_PORT);
        json_object_object_add(cfg, "metrics_listen", json_object_new_string(listen));
        assert_int_equal(json_object_to_file_ext(c->host[i].config, cfg, JSON_C_TO_STRING_PRETTY), 0);
        json_object_put(cfg);
        cluster_agent_kill9(c, i);
        assert_int_equal(cluster_agent_start(c, i, NULL), 0);
}

static void test_prometheus_sees_a_migration(void **state) {
        Cluster *c = *state;
        char q[512], dir[300];

        if (access(PROMETHEUS, X_OK) < 0)
                tu_skip(PROMETHEUS " is not installed (Debian package prometheus; tests/scripts/setup.sh)");
        cluster_up(c, 2);
        agent_with_metrics(c, 0);
        agent_with_metrics(c, 1);
        cluster_guest_start(c, 0, "pm0", "6d1d2a4e-0000-4000-8000-0000000000e1", 64, "mib=48 rate=2");
        ClusterCoordOptions o = { .extra = "\"metrics_listen\": \"127.0.0.1:9465\"" };
        cluster_coord_up(c, &o, 1, 20000);

        snprintf(dir, sizeof(dir), "%s/prom", c->coord.dir);
        assert_int_equal(mkdir(dir, 0700), 0);
        prom_start(c, dir);

        /* every target is scraped */
        wait_query_at_least("sum(up{job=\"agents\"})", 2, WAIT_MS);
        wait_query_at_least("sum(up{job=\"coordinator\"})", 1, WAIT_MS);
        wait_query_at_least("sum(drover_coordinator_hosts{health=\"up\"})", 2, WAIT_MS);
        /* what Prometheus holds before the migration (the series exist at 0) */
        char src[64], dst[64];
        snprintf(src, sizeof(src), "%s:%d", c->net.addr[0], AGENT_METRICS_PORT);
        snprintf(dst, sizeof(dst), "%s:%d", c->net.addr[1], AGENT_METRICS_PORT);
        snprintf(q, sizeof(q), "drover_migrations_total{instance=\"%s\",role=\"source\",result=\"succeeded\"}", src);
        double src_before = wait_query_at_least(q, 0, WAIT_MS);
        char q_down[256];
        snprintf(q_down, sizeof(q_down), "drover_migration_downtime_seconds_count{instance=\"%s\"}", src);
        double down_before = wait_query_at_least(q_down, 0, WAIT_MS);
        char q_dst[256];
        snprintf(q_dst, sizeof(q_dst),
                 "drover_migrations_total{instance=\"%s\",role=\"destination\",result=\"succeeded\"}", dst);
        double dst_before = wait_query_at_least(q_dst, 0, WAIT_MS);
        const char *q_coord = "drover_coordinator_migrations_total{result=\"succeeded\"}";
        double coord_before = wait_query_at_least(q_coord, 0, WAIT_MS);
        wait_query_at_least("sum(drover_guests{state=\"running\",job=\"agents\"})", 1, WAIT_MS);
        printf("# before: source %g, destination %g, downtime count %g, coordinator %g\n", src_before, dst_before,
               down_before, coord_before);

        int code;
        json_object *job = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "migrate", "pm0", "--to", "host-b", NULL);
        assert_int_equal(code, 0);
        char id[64];
        snprintf(id, sizeof(id), "%s", cj_str(cj_get(job, "job"), "id"));
        json_object_put(job);
        job = cluster_job_wait_end(c, id, 120000, 200, NULL, NULL);
        assert_string_equal(cj_str(job, "phase"), "succeeded");
        json_object_put(job);

        /* Prometheus's view catches up with what happened */
        double src_after = wait_query_at_least(q, src_before + 1, WAIT_MS);
        double down_after = wait_query_at_least(q_down, down_before + 1, WAIT_MS);
        double dst_after = wait_query_at_least(q_dst, dst_before + 1, WAIT_MS);
        double coord_after = wait_query_at_least(q_coord, coord_before + 1, WAIT_MS);
        snprintf(q, sizeof(q), "drover_migration_downtime_seconds_sum{instance=\"%s\"}", src);
        double down_sum = prom_query(q);
        printf("# after: source %g, destination %g, downtime count %g (sum %.3f s), coordinator %g\n", src_after,
               dst_after, down_after, down_sum, coord_after);
        assert_true(down_sum > 0 && down_sum < 60);
        /* the failure counters did not move */
        snprintf(q, sizeof(q), "sum(drover_migrations_total{result=\"failed\"})");
        assert_true(prom_query(q) == 0);
        /* the lock histograms are there, per class */
        assert_true(wait_query_at_least("count(drover_lock_hold_seconds_count{job=\"agents\"})", 2, WAIT_MS) >= 2);
        c->ok = true;
}

static int teardown(void **state) {
        prom_stop();
        return cluster_fixture_teardown(state);
}

int main(void) {
        netns_require();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_prometheus_sees_a_migration, cluster_fixture_setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
