/* Prometheus metrics (see metrics.h): the exposition writer, the atomic
 * histograms, the metrics_listen reader and the libmicrohttpd server.
 *
 * The writer appends to one malloc'ed buffer that doubles as it grows; the
 * first failed growth marks it failed and every later write is a no-op, so
 * the scrape code needs no error checks.  The server runs libmicrohttpd
 * with MHD_USE_INTERNAL_POLLING_THREAD: one thread polls every connection
 * and runs the scrape callback, so scrapes never overlap.
 */
#define _GNU_SOURCE
#include "metrics.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double metrics_seconds_bounds[13] = { 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60 };

static const char *const type_names[METRICS_TYPE_MAX] = {
        [METRICS_COUNTER] = "counter",
        [METRICS_GAUGE] = "gauge",
        [METRICS_HISTOGRAM] = "histogram",
};

/* ---- the writer ---- */

void metrics_writer_init(MetricsWriter *w) {
        *w = (MetricsWriter){ 0 };
}

void metrics_writer_free(MetricsWriter *w) {
        free(w->buf);
        *w = (MetricsWriter){ 0 };
}

static bool reserve(MetricsWriter *w, size_t more) {
        if (w->failed)
                return false;
        if (w->len + more + 1 <= w->cap)
                return true;
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + more + 1)
                cap *= 2;
        if (cap > METRICS_SCRAPE_MAX) {
                if (w->len + more + 1 > METRICS_SCRAPE_MAX) {
                        w->failed = true;
                        return false;
                }
                cap = METRICS_SCRAPE_MAX;
        }
        char *b = realloc(w->buf, cap);
        if (!b) {
                w->failed = true;
                return false;
        }
        w->buf = b;
        w->cap = cap;
        return true;
}

static void put(MetricsWriter *w, const char *s, size_t n) {
        if (!reserve(w, n))
                return;
        memcpy(w->buf + w->len, s, n);
        w->len += n;
        w->buf[w->len] = '\0';
}

static void puts_(MetricsWriter *w, const char *s) {
        put(w, s, strlen(s));
}

/* @s with \\ and \n escaped, and \" too when @quote (label values). */
static void put_escaped(MetricsWriter *w, const char *s, bool quote) {
        for (; *s; s++) {
                if (*s == '\\')
                        puts_(w, "\\\\");
                else if (*s == '\n')
                        puts_(w, "\\n");
                else if (*s == '"' && quote)
                        puts_(w, "\\\"");
                else
                        put(w, s, 1);
        }
}

static bool name_valid(const char *n) {
        if (!*n || (*n >= '0' && *n <= '9'))
                return false;
        for (; *n; n++)
                if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') || *n == '_' ||
                      *n == ':'))
                        return false;
        return true;
}

/* Shortest text that reads back as @v, in Prometheus's spelling. */
static void fmt_value(double v, char *buf, size_t size) {
        if (isnan(v))
                snprintf(buf, size, "NaN");
        else if (isinf(v))
                snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
        else if (v == floor(v) && fabs(v) < 9007199254740992.0)
                snprintf(buf, size, "%.0f", v);
        else {
                snprintf(buf, size, "%.15g", v);
                if (strtod(buf, NULL) != v)
                        snprintf(buf, size, "%.17g", v);
        }
}

void metrics_family(MetricsWriter *w, const char *name, MetricsType type, const char *help) {
        assert(name_valid(name) && type >= 0 && type < METRICS_TYPE_MAX);
        puts_(w, "# HELP ");
        puts_(w, name);
        puts_(w, " ");
        put_escaped(w, help, false);
        puts_(w, "\n# TYPE ");
        puts_(w, name);
        puts_(w, " ");
        puts_(w, type_names[type]);
        puts_(w, "\n");
}

/* "{a="x",b="y",le="0.5"}" (no braces when there is nothing to write). */
static void put_labels(MetricsWriter *w, MetricsLabels labels, const char *le) {
        bool any = false;
        for (size_t i = 0; labels && labels[i]; i += 2) {
                assert(labels[i + 1] && name_valid(labels[i]) && !strchr(labels[i], ':'));
                puts_(w, any ? "," : "{");
                puts_(w, labels[i]);
                puts_(w, "=\"");
                put_escaped(w, labels[i + 1], true);
                puts_(w, "\"");
                any = true;
        }
        if (le) {
                puts_(w, any ? ",le=\"" : "{le=\"");
                puts_(w, le);
                puts_(w, "\"");
                any = true;
        }
        if (any)
                puts_(w, "}");
}

static void sample_le(MetricsWriter *w, const char *name, const char *suffix, MetricsLabels labels, const char *le,
                      double value) {
        char v[40];
        fmt_value(value, v, sizeof(v));
        puts_(w, name);
        puts_(w, suffix);
        put_labels(w, labels, le);
        puts_(w, " ");
        puts_(w, v);
        puts_(w, "\n");
}

void metrics_sample(MetricsWriter *w, const char *name, MetricsLabels labels, double value) {
        assert(name_valid(name));
        sample_le(w, name, "", labels, NULL, value);
}

void metrics_histogram(MetricsWriter *w, const char *name, MetricsLabels labels, const double *bounds, size_t n,
                       const uint64_t *counts, double sum) {
        char le[40];
        uint64_t total = 0;
        assert(name_valid(name) && n <= METRICS_MAX_BUCKETS);
        for (size_t i = 0; i <= n; i++) {
                total += counts[i];
                if (i < n)
                        fmt_value(bounds[i], le, sizeof(le));
                else
                        snprintf(le, sizeof(le), "+Inf");
                sample_le(w, name, "_bucket", labels, le, (double) total);
        }
        sample_le(w, name, "_sum", labels, NULL, sum);
        sample_le(w, name, "_count", labels, NULL, (double) total);
}

int metrics_writer_finish(MetricsWriter *w, char **ret, size_t *ret_len) {
        if (w->failed) {
                bool big = w->len + 4096 >= METRICS_SCRAPE_MAX;
                metrics_writer_free(w);
                return big ? err_set(-E2BIG, "metrics: the scrape is larger than %u bytes", METRICS_SCRAPE_MAX)
                           : err_set(-ENOMEM, "metrics: out of memory");
        }
        if (!reserve(w, 0)) {
                metrics_writer_free(w);
                return err_set(-ENOMEM, "metrics: out of memory");
        }
        *ret = w->buf;
        *ret_len = w->len;
        *w = (MetricsWriter){ 0 };
        return 0;
}

/* ---- histograms ---- */

static uint64_t dbits(double d) {
        uint64_t u;
        memcpy(&u, &d, sizeof(u));
        return u;
}

static double bitsd(uint64_t u) {
        double d;
        memcpy(&d, &u, sizeof(d));
        return d;
}

void metrics_histogram_observe(MetricsHistogram *h, double v) {
        size_t i = 0;
        if (!(v >= 0))
                return;
        while (i < h->n && v > h->bounds[i])
                i++;
        atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
        uint64_t cur = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &cur, dbits(bitsd(cur) + v), memory_order_relaxed,
                                                      memory_order_relaxed))
                ;
}

void metrics_histogram_write(MetricsWriter *w, const char *name, MetricsLabels labels, const MetricsHistogram *h) {
        uint64_t counts[METRICS_MAX_BUCKETS + 1];
        for (size_t i = 0; i <= h->n; i++)
                counts[i] = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        metrics_histogram(w, name, labels, h->bounds, h->n, counts,
                          bitsd(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)));
}

/* ---- metrics_listen ---- */

static int bad_listen(const char *text) {
        return err_set(-EINVAL, "'metrics_listen' must be \"\" (off), \"IPv4:PORT\" or \"[IPv6]:PORT\" with a port "
                       "of 1-65535, not '%.80s'", text);
}

int metrics_listen_parse(const char *text, struct sockaddr_storage *ret, socklen_t *ret_len, bool *ret_loopback) {
        char host[METRICS_LISTEN_MAX];
        const char *port;
        struct sockaddr_storage ss = { 0 };
        socklen_t len;
        bool loop;

        if (!*text) {
                *ret_len = 0;
                if (ret_loopback)
                        *ret_loopback = false;
                return 0;
        }
        if (strlen(text) >= sizeof(host))
                return bad_listen(text);
        if (text[0] == '[') {
                const char *close = strchr(text, ']');
                if (!close || close[1] != ':')
                        return bad_listen(text);
                snprintf(host, sizeof(host), "%.*s", (int) (close - text - 1), text + 1);
                port = close + 2;
        } else {
                const char *colon = strrchr(text, ':');
                if (!colon || strchr(text, ':') != colon)
                        return bad_listen(text);
                snprintf(host, sizeof(host), "%.*s", (int) (colon - text), text);
                port = colon + 1;
        }
        /* 1..65535, digits only, no sign, no leading zero */
        if (!*port || strlen(port) > 5 || port[0] == '0' || strspn(port, "0123456789") != strlen(port))
                return bad_listen(text);
        unsigned long p = strtoul(port, NULL, 10);
        if (p < 1 || p > 65535)
                return bad_listen(text);
        if (text[0] == '[') {
                struct sockaddr_in6 *a6 = (struct sockaddr_in6 *) &ss;
                if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
                        return bad_listen(text);
                a6->sin6_family = AF_INET6;
                a6->sin6_port = htons((uint16_t) p);
                len = sizeof(*a6);
                loop = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
        } else {
                struct sockaddr_in *a4 = (struct sockaddr_in *) &ss;
                /* inet_pton takes only dotted quads: no names, no short forms */
                if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
                        return bad_listen(text);
                a4->sin_family = AF_INET;
                a4->sin_port = htons((uint16_t) p);
                len = sizeof(*a4);
                loop = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
        }
        *ret = ss;
        *ret_len = len;
        if (ret_loopback)
                *ret_loopback = loop;
        return 0;
}

/* ---- the server ---- */

struct MetricsServer {
        struct MHD_Daemon *mhd;    /* immutable after start */
        MetricsScrapeFn *scrape;   /* immutable */
        void *opaque;              /* immutable */
        unsigned port;             /* immutable */
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code, char *body, size_t len, bool owned,
                             const char *type) {
        struct MHD_Response *r = MHD_create_response_from_buffer(len, body,
                                                                 owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!r) {
                if (owned)
                        free(body);
                return MHD_NO;
        }
        (void) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
        enum MHD_Result ok = MHD_queue_response(conn, code, r);
        MHD_destroy_response(r);
        return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls) {
        static char not_found[] = "not found: this server has GET /metrics only\n";
        static char failed[] = "the scrape failed\n";
        MetricsServer *s = cls;
        MetricsWriter w;
        char *body;
        size_t len;

        /* a request body (there should be none) is read and dropped */
        if (*upload_data_size) {
                *upload_data_size = 0;
                return MHD_YES;
        }
        if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 || strcmp(url, "/metrics") != 0)
                return reply(conn, MHD_HTTP_NOT_FOUND, not_found, strlen(not_found), false, "text/plain");
        metrics_writer_init(&w);
        s->scrape(&w, s->opaque);
        if (metrics_writer_finish(&w, &body, &len) < 0)
                return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, failed, strlen(failed), false, "text/plain");
        return reply(conn, MHD_HTTP_OK, body, len, true, "text/plain; version=0.0.4; charset=utf-8");
}

/* libmicrohttpd's own complaints go nowhere: a bad client is not our error. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
}

int metrics_server_start(const char *listen, MetricsScrapeFn *scrape, void *opaque, MetricsServer **ret) {
        struct sockaddr_storage ss;
        socklen_t len;
        int r;

        if ((r = metrics_listen_parse(listen, &ss, &len, NULL)) < 0)
                return r;
        if (!len)
                return err_set(-EINVAL, "metrics: no address to listen on");
        MetricsServer *s = calloc(1, sizeof(*s));
        if (!s)
                return err_set(-ENOMEM, "out of memory");
        s->scrape = scrape;
        s->opaque = opaque;
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
        if (ss.ss_family == AF_INET6)
                flags |= MHD_USE_IPv6;
        s->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                                  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &ss,
                                  MHD_OPTION_CONNECTION_LIMIT, (unsigned) METRICS_MAX_CONNECTIONS,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) METRICS_CONNECTION_TIMEOUT_S,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t) 32 * 1024,
                                  MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                  MHD_OPTION_END);
        if (!s->mhd) {
                free(s);
                return err_set(-EADDRNOTAVAIL, "metrics: cannot listen on %s (address in use or not of this host)",
                               listen);
        }
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
        s->port = info ? info->port : 0;
        *ret = s;
        return 0;
}

unsigned metrics_server_port(const MetricsServer *s) {
        return s->port;
}

void metrics_server_free(MetricsServer *s) {
        if (!s)
                return;
        if (s->mhd)
                MHD_stop_daemon(s->mhd);
        free(s);
}
