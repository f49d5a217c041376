/* Prometheus metrics: a text-exposition writer, lock-free histograms, and
 * a small HTTP server that serves GET /metrics.
 *
 * The writer (MetricsWriter) builds one scrape in a growing buffer, in the
 * text exposition format 0.0.4: a "# HELP" and a "# TYPE" line per family,
 * then its samples, label values escaped (\\, \", \n).  Histograms are
 * written from per-bucket counts (not cumulative); the writer makes the
 * `_bucket{le=...}` lines cumulative, ends them with le="+Inf", and adds
 * `_sum` and `_count`.  Writes never fail one by one: a buffer that cannot
 * grow (out of memory, or past METRICS_SCRAPE_MAX) marks the writer failed
 * and metrics_writer_finish() reports it once.
 *
 * MetricsHistogram is a fixed-bucket histogram updated with atomics, so a
 * hot path (a commit, the end of a migration) observes a value without a
 * lock, and a scrape reads it without one (the buckets may be a few
 * observations apart from the sum; Prometheus tolerates that).
 *
 * MetricsServer wraps libmicrohttpd: one internal polling thread of its own
 * (class of its own in docs/threading.md), at most METRICS_MAX_CONNECTIONS
 * connections, each with a 10 s idle timeout.  GET /metrics calls the scrape
 * callback on that thread; any other path or method is answered 404.  The
 * callback must not wait for long: it copies snapshots and statistics
 * (docs/threading.md, "Metrics").
 *
 * metrics_listen_parse() is the one reader of the "metrics_listen" setting
 * of both daemons: "" (off), "IPv4:PORT" or "[IPv6]:PORT".
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "err.h"

/* The largest scrape the writer builds (a daemon's is a few tens of KiB). */
#define METRICS_SCRAPE_MAX (8u * 1024 * 1024)
#define METRICS_MAX_CONNECTIONS 8
#define METRICS_CONNECTION_TIMEOUT_S 10
/* The most buckets (bounds, +Inf excluded) of a histogram. */
#define METRICS_MAX_BUCKETS 16
/* Longest "metrics_listen" text. */
#define METRICS_LISTEN_MAX 64

/* ---- the exposition writer ---------------------------------------------- */

typedef struct MetricsWriter {
        char *buf;
        size_t len, cap;
        bool failed;   /* out of memory or over METRICS_SCRAPE_MAX */
} MetricsWriter;

typedef enum MetricsType {
        METRICS_COUNTER,
        METRICS_GAUGE,
        METRICS_HISTOGRAM,
        METRICS_TYPE_MAX,
} MetricsType;

/* Labels are a NULL-terminated list of name, value pairs:
 * (const char *const[]){ "role", "source", "result", "succeeded", NULL }
 * or NULL for none.  Names are ours ([a-zA-Z_][a-zA-Z0-9_]*, asserted);
 * values are any text and are escaped. */
typedef const char *const *MetricsLabels;

void metrics_writer_init(MetricsWriter *w);
/* Free the buffer; the writer may be reused after metrics_writer_init(). */
void metrics_writer_free(MetricsWriter *w);
/* The text built so far (NUL-terminated) into *ret, which the caller owns
 * (free()); the writer is left empty.  0, or -ENOMEM / -E2BIG when a write
 * failed (nothing is returned then). */
int metrics_writer_finish(MetricsWriter *w, char **ret, size_t *ret_len);

/* "# HELP name help" and "# TYPE name type": once per family, before its
 * samples.  @name is a metric name of ours (asserted); @help is escaped. */
void metrics_family(MetricsWriter *w, const char *name, MetricsType type, const char *help);
/* One sample "name{labels} value".  Integral values up to 2^53 are written
 * as integers; NaN and infinities as Prometheus spells them. */
void metrics_sample(MetricsWriter *w, const char *name, MetricsLabels labels, double value);
/* One histogram series: @bounds (ascending upper bounds, @n of them,
 * at most METRICS_MAX_BUCKETS) and @counts (@n + 1 per-bucket counts, the
 * last for values above every bound).  Writes name_bucket{labels,le=...}
 * cumulatively up to le="+Inf", name_sum (@sum) and name_count. */
void metrics_histogram(MetricsWriter *w, const char *name, MetricsLabels labels, const double *bounds, size_t n,
                       const uint64_t *counts, double sum);

/* ---- lock-free histograms ----------------------------------------------- */

typedef struct MetricsHistogram {
        const double *bounds;                               /* immutable; ascending */
        size_t n;                                           /* immutable; <= METRICS_MAX_BUCKETS */
        atomic_uint_fast64_t counts[METRICS_MAX_BUCKETS + 1]; /* atomic */
        atomic_uint_fast64_t sum_bits;                      /* atomic; a double's bits */
} MetricsHistogram;

#define METRICS_HISTOGRAM_INIT(b) { .bounds = (b), .n = sizeof(b) / sizeof((b)[0]) }

/* Count @v in its bucket (the first bound >= @v) and add it to the sum.
 * Any thread, no lock; negative and NaN values are ignored. */
void metrics_histogram_observe(MetricsHistogram *h, double v);
/* Write @h as one series (see metrics_histogram()). */
void metrics_histogram_write(MetricsWriter *w, const char *name, MetricsLabels labels, const MetricsHistogram *h);

/* Bucket bounds in seconds shared by the daemons' latency histograms. */
extern const double metrics_seconds_bounds[13]; /* 1 ms .. 60 s */

/* ---- the HTTP server ---------------------------------------------------- */

/* Fill @w with the whole scrape.  Runs on the server's thread, one scrape
 * at a time; must not block for long (no VM lock held across anything). */
typedef void MetricsScrapeFn(MetricsWriter *w, void *opaque);

typedef struct MetricsServer MetricsServer;

/* Parse a metrics_listen value: "" -> 0 with *ret_len 0 (off); "A.B.C.D:P"
 * or "[v6]:P" with P 1..65535 -> 0 and the address (any IP literal,
 * wildcards included: exposing it is the operator's explicit choice).
 * Names, short forms, missing or zero ports, extra text: -EINVAL naming
 * "metrics_listen".  @ret_loopback (may be NULL) tells whether the address
 * is a loopback one. */
int metrics_listen_parse(const char *text, struct sockaddr_storage *ret, socklen_t *ret_len, bool *ret_loopback);

/* Bind @listen (metrics_listen_parse()) and start serving on a thread of
 * the server's own.  @scrape and @opaque must stay valid until
 * metrics_server_free().  0 and *ret, or -errno (bind failure: the detail
 * names the address). */
int metrics_server_start(const char *listen, MetricsScrapeFn *scrape, void *opaque, MetricsServer **ret);
/* The port the server listens on (useful with port 0 in tests). */
unsigned metrics_server_port(const MetricsServer *s);
/* Stop the thread (waits for a scrape in progress) and free.  NULL is fine. */
void metrics_server_free(MetricsServer *s);
DEFINE_POINTER_CLEANUP(MetricsServer, metrics_server_free)
