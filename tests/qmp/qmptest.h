/* Helpers shared by the QMP tests: an event/eof recorder to plug into
 * QmpCallbacks, the QEMU 7.2 schema, test data files and fakes on fresh
 * sockets.  Test code only: failures abort via cmocka asserts.
 */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "fakeqemu.h"
#include "qapischema.h"
#include "qmp.h"

#define EVREC_MAX 4096

typedef struct EvRec {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        QmpEvent *ev;      /* copies; ev[i].data_json points at data[i] */
        char **data;
        int n, cap;
        bool hold;         /* callbacks block while set (queue overflow test) */
        int in_callback;   /* callbacks currently running */
        int eof_calls;
        int eof_error;
        char eof_reason[256];
        pthread_t event_thread;  /* the thread that ran the last event callback */
        /* Called on the event thread after recording, without the mutex. */
        void (*hook)(struct EvRec *r, const QmpEvent *ev);
        void *hook_arg;
        pthread_t eof_thread;
} EvRec;

void evrec_init(EvRec *r);
void evrec_destroy(EvRec *r);
QmpCallbacks evrec_callbacks(EvRec *r);
int evrec_count(EvRec *r);
/* Wait until at least @n events arrived; false on timeout. */
bool evrec_wait(EvRec *r, int n, int timeout_ms);
bool evrec_wait_eof(EvRec *r, int timeout_ms);
/* Callbacks running now (blocked by evrec_hold). */
int evrec_in_callback(EvRec *r);
/* Block (or release) the event callback. */
void evrec_hold(EvRec *r, bool hold);
/* Index of the first event named @name at or after @from, or -1. */
int evrec_find(EvRec *r, const char *name, int from);

/* The QEMU 7.2.22 schema (loaded once, never freed before exit). */
const QapiSchema *qt_schema(void);
/* Path of tests/data/qmp/@name, and its contents (malloc'ed; asserts). */
const char *qt_data_path(const char *name);
char *qt_data(const char *name);
/* A fake on a fresh socket; *ret_path is valid until exit. */
FakeQemu *qt_fake(const char **ret_path);
/* Connect with a 5 s deadline; asserts success. */
QmpMonitor *qt_connect(const char *path, EvRec *rec);
/* Milliseconds on CLOCK_MONOTONIC, as a double. */
double qt_now_ms(void);
