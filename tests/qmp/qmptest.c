/* QMP test helpers (see qmptest.h). */
#define _GNU_SOURCE
#include "qmptest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "err.h"
#include "testutil.h"

void evrec_init(EvRec *r) {
        memset(r, 0, sizeof(*r));
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        /* fixed capacity: tests read ev[i] while later events arrive */
        r->cap = EVREC_MAX;
        r->ev = calloc(EVREC_MAX, sizeof(*r->ev));
        r->data = calloc(EVREC_MAX, sizeof(*r->data));
}

void evrec_destroy(EvRec *r) {
        for (int i = 0; i < r->n; i++)
                free(r->data[i]);
        free(r->data);
        free(r->ev);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
}

static void on_event(void *opaque, const QmpEvent *ev) {
        EvRec *r = opaque;
        pthread_mutex_lock(&r->mu);
        r->in_callback++;
        r->event_thread = pthread_self();
        while (r->hold)
                pthread_cond_wait(&r->cv, &r->mu);
        if (r->n == r->cap) {
                fprintf(stderr, "EvRec: more than %d events\n", EVREC_MAX);
                abort();
        }
        r->ev[r->n] = *ev;
        r->data[r->n] = ev->data_json ? strdup(ev->data_json) : NULL;
        r->ev[r->n].data_json = r->data[r->n];
        r->n++;
        r->in_callback--;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (r->hook)
                r->hook(r, ev);
}

static void on_eof(void *opaque, int error, const char *reason) {
        EvRec *r = opaque;
        pthread_mutex_lock(&r->mu);
        r->eof_calls++;
        r->eof_error = error;
        r->eof_thread = pthread_self();
        snprintf(r->eof_reason, sizeof(r->eof_reason), "%s", reason ? reason : "");
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
}

QmpCallbacks evrec_callbacks(EvRec *r) {
        return (QmpCallbacks){ .event = on_event, .eof = on_eof, .opaque = r };
}

int evrec_count(EvRec *r) {
        pthread_mutex_lock(&r->mu);
        int n = r->n;
        pthread_mutex_unlock(&r->mu);
        return n;
}

static void abs_deadline(struct timespec *ts, int timeout_ms) {
        clock_gettime(CLOCK_REALTIME, ts);
        ts->tv_sec += timeout_ms / 1000;
        ts->tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
        if (ts->tv_nsec >= 1000000000L) {
                ts->tv_sec++;
                ts->tv_nsec -= 1000000000L;
        }
}

bool evrec_wait(EvRec *r, int n, int timeout_ms) {
        struct timespec ts;
        bool ok;
        abs_deadline(&ts, timeout_ms);
        pthread_mutex_lock(&r->mu);
        while (r->n < n)
                if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
                        break;
        ok = r->n >= n;
        pthread_mutex_unlock(&r->mu);
        return ok;
}

bool evrec_wait_eof(EvRec *r, int timeout_ms) {
        struct timespec ts;
        bool ok;
        abs_deadline(&ts, timeout_ms);
        pthread_mutex_lock(&r->mu);
        while (r->eof_calls == 0)
                if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) != 0)
                        break;
        ok = r->eof_calls > 0;
        pthread_mutex_unlock(&r->mu);
        return ok;
}

int evrec_in_callback(EvRec *r) {
        pthread_mutex_lock(&r->mu);
        int n = r->in_callback;
        pthread_mutex_unlock(&r->mu);
        return n;
}

void evrec_hold(EvRec *r, bool hold) {
        pthread_mutex_lock(&r->mu);
        r->hold = hold;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
}

int evrec_find(EvRec *r, const char *name, int from) {
        int found = -1;
        pthread_mutex_lock(&r->mu);
        for (int i = from < 0 ? 0 : from; i < r->n && found < 0; i++)
                if (strcmp(r->ev[i].name, name) == 0)
                        found = i;
        pthread_mutex_unlock(&r->mu);
        return found;
}

static QapiSchema *schema;

static void free_schema(void) {
        qapi_schema_free(schema);
}

const QapiSchema *qt_schema(void) {
        if (!schema) {
                schema = qapi_schema_load(qt_data_path("query-qmp-schema.reply.json"));
                assert_non_null(schema);
                atexit(free_schema);
        }
        return schema;
}

const char *qt_data_path(const char *name) {
        char rel[512];
        snprintf(rel, sizeof(rel), "tests/data/qmp/%s", name);
        return tu_source_path(rel);
}

char *qt_data(const char *name) {
        const char *p = qt_data_path(name);
        char *s = tu_read_file(p, NULL);
        if (!s)
                fprintf(stderr, "cannot read %s\n", p);
        assert_non_null(s);
        return s;
}

FakeQemu *qt_fake(const char **ret_path) {
        static char paths[256][108];
        static int seq;
        static const char *dir;
        char name[64];

        if (!dir)
                dir = tu_tmpdir("qmp");
        assert_true(seq < 256);
        snprintf(name, sizeof(name), "fake-%d.sock", seq);
        snprintf(paths[seq], sizeof(paths[seq]), "%s", tu_path(dir, name));
        *ret_path = paths[seq++];
        return fake_new(*ret_path, qt_schema());
}

QmpMonitor *qt_connect(const char *path, EvRec *rec) {
        QmpCallbacks cb = rec ? evrec_callbacks(rec) : (QmpCallbacks){ 0 };
        QmpMonitor *m = NULL;
        int r = qmp_monitor_connect(path, rec ? &cb : NULL, deadline_in_ms(5000), &m);
        if (r < 0)
                fprintf(stderr, "connect %s: %d %s\n", path, r, err_str(r));
        assert_int_equal(r, 0);
        assert_non_null(m);
        return m;
}

double qt_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1000.0 + (double) ts.tv_nsec / 1e6;
}
