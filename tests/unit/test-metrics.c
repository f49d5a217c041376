/* core/metrics: the exposition text (HELP/TYPE, label and help escaping,
 * cumulative histogram buckets), the atomic histograms, the metrics_listen
 * reader, and the HTTP server's answers (GET /metrics, 404 otherwise). */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "err.h"
#include "metrics.h"

static char *finish(MetricsWriter *w) {
        char *text;
        size_t len;
        assert_int_equal(metrics_writer_finish(w, &text, &len), 0);
        assert_int_equal(strlen(text), len);
        return text;
}

/* One family: HELP (backslash and newline escaped), TYPE, samples with
 * label values escaped (backslash, quote, newline) and numbers spelled as
 * Prometheus reads them. */
static void test_family_lines_and_escaping(void **state) {
        MetricsWriter w;
        metrics_writer_init(&w);
        metrics_family(&w, "drover_x_total", METRICS_COUNTER, "a \\ b\nc \"q\"");
        metrics_sample(&w, "drover_x_total", (const char *const[]){ "a", "x\\y\"z\nw", "b", "", NULL }, 3);
        metrics_sample(&w, "drover_x_total", NULL, 0.25);
        metrics_sample(&w, "drover_x_total", NULL, INFINITY);
        metrics_sample(&w, "drover_x_total", NULL, NAN);
        metrics_sample(&w, "drover_x_total", NULL, 1e20);
        metrics_sample(&w, "drover_x_total", NULL, 0.1 + 0.2); /* needs 17 digits to read back */
        char *t = finish(&w);
        assert_string_equal(t, "# HELP drover_x_total a \\\\ b\\nc \"q\"\n"
                               "# TYPE drover_x_total counter\n"
                               "drover_x_total{a=\"x\\\\y\\\"z\\nw\",b=\"\"} 3\n"
                               "drover_x_total 0.25\n"
                               "drover_x_total +Inf\n"
                               "drover_x_total NaN\n"
                               "drover_x_total 1e+20\n"
                               "drover_x_total 0.30000000000000004\n");
        free(t);
        metrics_writer_free(&w);
}

/* Buckets are written cumulatively from per-bucket counts, end with
 * le="+Inf" equal to _count, and keep the series' labels before le. */
static void test_histogram_buckets_are_cumulative(void **state) {
        static const double b[] = { 0.5, 1, 2.5 };
        const uint64_t counts[] = { 2, 0, 3, 1 };
        MetricsWriter w;
        metrics_writer_init(&w);
        metrics_family(&w, "drover_h_seconds", METRICS_HISTOGRAM, "h");
        metrics_histogram(&w, "drover_h_seconds", (const char *const[]){ "class", "vm", NULL }, b, 3, counts, 9.5);
        metrics_histogram(&w, "drover_h_seconds", NULL, b, 0, (const uint64_t[]){ 4 }, 1);
        char *t = finish(&w);
        assert_string_equal(t, "# HELP drover_h_seconds h\n"
                               "# TYPE drover_h_seconds histogram\n"
                               "drover_h_seconds_bucket{class=\"vm\",le=\"0.5\"} 2\n"
                               "drover_h_seconds_bucket{class=\"vm\",le=\"1\"} 2\n"
                               "drover_h_seconds_bucket{class=\"vm\",le=\"2.5\"} 5\n"
                               "drover_h_seconds_bucket{class=\"vm\",le=\"+Inf\"} 6\n"
                               "drover_h_seconds_sum{class=\"vm\"} 9.5\n"
                               "drover_h_seconds_count{class=\"vm\"} 6\n"
                               "drover_h_seconds_bucket{le=\"+Inf\"} 4\n"
                               "drover_h_seconds_sum 1\n"
                               "drover_h_seconds_count 4\n");
        free(t);
        metrics_writer_free(&w);
}

/* A value equal to a bound counts in that bucket (le is "less or equal"),
 * larger ones in the next; negative and NaN values are not counted. */
static void test_histogram_observe_puts_values_in_le_buckets(void **state) {
        static const double b[] = { 1, 2 };
        static MetricsHistogram h = METRICS_HISTOGRAM_INIT(b);
        metrics_histogram_observe(&h, 1);
        metrics_histogram_observe(&h, 1.5);
        metrics_histogram_observe(&h, 0);
        metrics_histogram_observe(&h, 7);
        metrics_histogram_observe(&h, -1);
        metrics_histogram_observe(&h, NAN);
        MetricsWriter w;
        metrics_writer_init(&w);
        metrics_histogram_write(&w, "drover_o", NULL, &h);
        char *t = finish(&w);
        assert_string_equal(t, "drover_o_bucket{le=\"1\"} 2\n"
                               "drover_o_bucket{le=\"2\"} 3\n"
                               "drover_o_bucket{le=\"+Inf\"} 4\n"
                               "drover_o_sum 9.5\n"
                               "drover_o_count 4\n");
        free(t);
        metrics_writer_free(&w);
}

static MetricsHistogram shared_hist = METRICS_HISTOGRAM_INIT(metrics_seconds_bounds);

static void *observer(void *arg) {
        for (int i = 0; i < 20000; i++)
                metrics_histogram_observe(&shared_hist, 0.5);
        return NULL;
}

/* Observations from several threads at once are all counted and summed. */
static void test_histogram_observe_from_threads_loses_nothing(void **state) {
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
                assert_int_equal(pthread_create(&th[i], NULL, observer, NULL), 0);
        for (int i = 0; i < 4; i++)
                pthread_join(th[i], NULL);
        uint64_t total = 0;
        for (size_t i = 0; i <= shared_hist.n; i++)
                total += atomic_load(&shared_hist.counts[i]);
        assert_int_equal(total, 80000);
        double sum;
        uint64_t bits = atomic_load(&shared_hist.sum_bits);
        memcpy(&sum, &bits, sizeof(sum));
        assert_true(sum == 40000.0);
}

/* A scrape past METRICS_SCRAPE_MAX fails as a whole, with -E2BIG. */
static void test_writer_is_bounded(void **state) {
        MetricsWriter w;
        metrics_writer_init(&w);
        for (unsigned i = 0; i < METRICS_SCRAPE_MAX / 8; i++)
                metrics_sample(&w, "drover_big", NULL, 1);
        char *t;
        size_t len;
        assert_int_equal(metrics_writer_finish(&w, &t, &len), -E2BIG);
        assert_null(w.buf);
}

static void test_listen_parse(void **state) {
        struct sockaddr_storage ss;
        socklen_t len;
        bool loop;
        assert_int_equal(metrics_listen_parse("", &ss, &len, &loop), 0);
        assert_int_equal(len, 0);
        assert_int_equal(metrics_listen_parse("127.0.0.1:9464", &ss, &len, &loop), 0);
        assert_int_equal(ss.ss_family, AF_INET);
        assert_int_equal(ntohs(((struct sockaddr_in *) &ss)->sin_port), 9464);
        assert_true(loop);
        assert_int_equal(metrics_listen_parse("10.1.2.3:1", &ss, &len, &loop), 0);
        assert_false(loop);
        assert_int_equal(metrics_listen_parse("[::1]:65535", &ss, &len, &loop), 0);
        assert_int_equal(ss.ss_family, AF_INET6);
        assert_true(loop);
        static const char *const bad[] = {
                "localhost:9464", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:09464",
                "127.0.0.1:+80", "127.1:9464", "::1:9464", "[::1]9464", "[::1]:", "127.0.0.1:9464 ", " 127.0.0.1:9464",
                "http://127.0.0.1:9464", "[127.0.0.1]:80", "1.2.3.4.5:80",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                assert_int_equal(metrics_listen_parse(bad[i], &ss, &len, &loop), -EINVAL);
                assert_non_null(strstr(err_msg(), "metrics_listen"));
        }
}

/* ---- the server ---- */

static int scrapes;

static void scrape(MetricsWriter *w, void *opaque) {
        scrapes++;
        metrics_family(w, "drover_test", METRICS_GAUGE, "test");
        metrics_sample(w, "drover_test", (const char *const[]){ "who", opaque, NULL }, 42);
}

/* One HTTP/1.0 request; the status code, and the body in @body. */
static int http(unsigned port, const char *method, const char *path, char *body, size_t size) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
        char req[256], resp[8192];
        size_t n = 0;
        ssize_t k;
        assert_true(fd >= 0);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: x\r\n\r\n", method, path);
        assert_int_equal(write(fd, req, strlen(req)), (ssize_t) strlen(req));
        while (n < sizeof(resp) - 1 && (k = read(fd, resp + n, sizeof(resp) - 1 - n)) > 0)
                n += (size_t) k;
        resp[n] = '\0';
        close(fd);
        int code = 0;
        assert_int_equal(sscanf(resp, "HTTP/1.%*d %d", &code), 1);
        const char *b = strstr(resp, "\r\n\r\n");
        snprintf(body, size, "%s", b ? b + 4 : "");
        return code;
}

static unsigned free_port(void) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET };
        socklen_t l = sizeof(a);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &a, &l), 0);
        close(fd);
        return ntohs(a.sin_port);
}

/* GET /metrics runs the scrape callback and returns its text; any other
 * path or method is a 404 that runs nothing. */
static void test_server_serves_get_metrics_only(void **state) {
        char listen[32], body[4096];
        MetricsServer *s;
        unsigned port = free_port();
        snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
        assert_int_equal(metrics_server_start(listen, scrape, (void *) "q\"", &s), 0);
        assert_int_equal(metrics_server_port(s), port);

        assert_int_equal(http(port, "GET", "/metrics", body, sizeof(body)), 200);
        assert_string_equal(body, "# HELP drover_test test\n# TYPE drover_test gauge\ndrover_test{who=\"q\\\"\"} 42\n");
        assert_int_equal(scrapes, 1);
        assert_int_equal(http(port, "GET", "/", body, sizeof(body)), 404);
        assert_int_equal(http(port, "GET", "/metrics/x", body, sizeof(body)), 404);
        assert_int_equal(http(port, "POST", "/metrics", body, sizeof(body)), 404);
        assert_int_equal(http(port, "DELETE", "/metrics", body, sizeof(body)), 404);
        assert_int_equal(scrapes, 1);

        /* the same address twice: the second cannot bind */
        MetricsServer *s2 = NULL;
        assert_true(metrics_server_start(listen, scrape, NULL, &s2) < 0);
        assert_null(s2);
        metrics_server_free(s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_family_lines_and_escaping),
                cmocka_unit_test(test_histogram_buckets_are_cumulative),
                cmocka_unit_test(test_histogram_observe_puts_values_in_le_buckets),
                cmocka_unit_test(test_histogram_observe_from_threads_loses_nothing),
                cmocka_unit_test(test_writer_is_bounded),
                cmocka_unit_test(test_listen_parse),
                cmocka_unit_test(test_server_serves_get_metrics_only),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
