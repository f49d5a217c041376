/* QMP channel: one QEMU monitor socket, its reader thread and its event
 * thread (contract in qmp.h).
 *
 * Three parties touch a QmpMonitor.  The I/O thread owns the read side of
 * the socket and the read buffer: it cuts the byte stream into `\n`-ended
 * messages (a `\r` before the `\n` is dropped), refuses anything larger
 * than QMP_MESSAGE_MAX, parses each message with json-c, and either hands a
 * reply to the command slot or turns an event into a plain QmpEvent on the
 * event queue.  Callers of qmp_call() own the write side while they hold
 * the command slot (one command in flight): they write their command, then
 * sleep on the monitor's condition variable until the I/O thread fills the
 * slot, the monitor dies, it is aborted, or their deadline passes.  The
 * event thread pops the queue and runs the owner's callback with no lock
 * held, so a slow handler never stalls the reader.  Events are numbered;
 * a reply remembers how many came before it, and its caller returns only
 * once those have been handled (within its deadline), as if events were
 * handled inline like libvirt does, without running handlers on the reader.
 *
 * json-c trees never cross threads: the I/O thread hands over JSON text
 * (the "return" member, an event's "data") and each caller parses its own.
 *
 * A reply matches the command in flight by id (we send integer ids; QEMU
 * echoes them with their JSON type, so "7" does not answer 7).  A reply
 * without id is taken as the answer to the one command in flight (QEMU
 * omits the id only when it could not parse the request).  A reply that
 * matches nothing is a protocol error.  After a timeout or an abort, the id
 * of the abandoned command is remembered as the orphan so that its late
 * reply is recognised and dropped; after a timeout the monitor stays
 * *wedged* (new commands get -EBUSY) until that reply arrives.
 *
 * Death (EOF, read error, malformed or oversized input, a reply that
 * matches nothing, a command write that stalled half way) is decided on
 * the I/O thread only, which then waits briefly for the event thread to
 * deliver what was queued before, and calls the eof callback once.  A
 * reply whose JSON is fine but whose shape is not what a typed call
 * expects fails that call with -EPROTO and leaves the monitor alone: the
 * stream is still in sync.
 *
 * Lock order: the monitor lock is a leaf; no other lock is taken under it
 * and it is never held across I/O, a wait for QEMU, or a callback.
 */
#define _GNU_SOURCE
#include "qmp.h"
#include "qmp-priv.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"
#include "fault.h"
#include "lock.h"
#include "log.h"

static LockClass qmp_lock_class = LOCK_CLASS_INIT("qmp");

#define QMP_READ_CHUNK (64u * 1024)
#define QMP_JSON_DEPTH 64
/* How long a dying monitor waits for the event thread to deliver the events
 * QEMU sent before it went away, so that the eof callback comes last. */
#define QMP_EOF_DRAIN_MS 5000
#define QMP_REASON_MAX 256
#define QMP_COMMAND_NAME_MAX 64

static inline void json_object_putp(json_object **o) {
        if (*o)
                json_object_put(*o);
}
#define _cleanup_json_ _cleanup_(json_object_putp)

static inline void json_tokener_freep(json_tokener **t) {
        if (*t)
                json_tokener_free(*t);
}

typedef struct QmpQueuedEvent {
        QmpEvent ev;
        uint64_t seq;    /* arrival number, from 1 */
        char *data_json; /* owned; ev.data_json points here during delivery */
        size_t bytes;    /* accounted against QMP_EVENT_QUEUE_BYTES_MAX */
} QmpQueuedEvent;

static void queued_event_free(QmpQueuedEvent *qe) {
        if (!qe)
                return;
        free(qe->data_json);
        free(qe);
}

/* The lock protects the command slot, the orphan/wedged/dead/aborted state,
 * the event queue and the stop flag.  Sections are short: flag updates and
 * pointer hand-overs only. */
struct QmpMonitor {
        Lock lock;
        Cond cond;    /* signalled: slot freed or filled, death, abort, greeting */
        Cond ev_cond; /* signalled: event queued, event delivered, armed, stop */
        atomic_int refs; /* atomic */

        int fd;        /* immutable; closed by the last unref */
        int wake_fd;   /* immutable; eventfd that wakes the I/O thread */
        int cancel_fd; /* immutable; eventfd, readable for good once aborted */
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)]; /* immutable */
        QmpCallbacks cb;                /* immutable */
        atomic_uint_fast64_t next_id;   /* atomic */

        pthread_t io_thread;    /* connect/close/free only */
        pthread_t ev_thread;    /* set by connect before arming, then immutable */
        bool io_started;        /* connect/close/free only */
        bool ev_started;        /* connect/close/free only */

        char *rbuf;   /* I/O thread only: bytes read, not yet a whole message */
        size_t rlen;  /* I/O thread only */
        size_t rcap;  /* I/O thread only */
        size_t rscan; /* I/O thread only: rbuf[0..rscan) holds no '\n' */

        bool stopping;      /* lock: close/free asked the threads to exit */
        bool armed;         /* lock: connect succeeded, callbacks may run */
        bool greeted;       /* lock */
        QmpVersion version; /* lock until greeted, then immutable */

        bool dead;                          /* lock */
        int dead_error;                     /* lock: what the command in flight got */
        char dead_reason[QMP_REASON_MAX];   /* lock */
        bool kill_requested;                /* lock: a caller saw the stream desync */
        int kill_error;                     /* lock */
        char kill_reason[QMP_REASON_MAX];   /* lock */
        bool aborted;                       /* lock */
        char abort_reason[QMP_REASON_MAX];  /* lock */

        bool wedged;                                /* lock */
        bool has_orphan;                            /* lock */
        uint64_t orphan_id;                         /* lock */
        char orphan_command[QMP_COMMAND_NAME_MAX];  /* lock */
        uint64_t orphan_since_ns;                   /* lock */

        bool busy;                              /* lock: the command slot is held */
        uint64_t cur_id;                        /* lock */
        char cur_command[QMP_COMMAND_NAME_MAX]; /* lock */
        uint64_t cur_started_ns;                /* lock */
        bool cur_done;                          /* lock: reply stored below */
        int cur_error;                          /* lock */
        uint64_t cur_ev_seq;                    /* lock: events that came before the reply */
        char *cur_ret;                          /* lock: "return" JSON text */
        char cur_detail[ERR_MSG_MAX];           /* lock */

        QmpQueuedEvent *evq[QMP_EVENT_QUEUE_MAX]; /* lock: ring */
        size_t evq_head;                          /* lock */
        size_t evq_len;                           /* lock */
        size_t evq_bytes;                         /* lock */
        bool ev_busy;                             /* lock: a callback is running */
        uint64_t ev_busy_seq;                     /* lock: the event it runs */
        uint64_t ev_seq;                          /* lock: events queued so far */
        uint64_t events_dropped;                  /* lock */
};

/* ---- small helpers ------------------------------------------------------ */

static void eventfd_poke(int fd) {
        uint64_t one = 1;
        /* EAGAIN means the counter is already non-zero: still readable. */
        if (fd >= 0 && write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
                log_debug("qmp: eventfd write: %m");
}

static void eventfd_drain(int fd) {
        uint64_t v;
        while (read(fd, &v, sizeof(v)) > 0)
                ;
}

static uint64_t ms_since(uint64_t t0_ns) {
        uint64_t n = now_ns();
        return n > t0_ns ? (n - t0_ns) / NSEC_PER_MSEC : 0;
}

/* A short, printable excerpt of untrusted input for error details. */
static void excerpt(const char *s, size_t len, char *buf, size_t size) {
        size_t n = 0;
        for (size_t i = 0; i < len && n + 4 < size; i++) {
                unsigned char c = (unsigned char) s[i];
                buf[n++] = (c >= 0x20 && c < 0x7f) ? (char) c : '?';
        }
        if (len > 0 && n + 4 >= size && n >= 3)
                memcpy(buf + n - 3, "...", 3);
        buf[n] = '\0';
}

static json_object *json_parse_text(const char *s, size_t len, char *why, size_t why_size) {
        _cleanup_(json_tokener_freep) json_tokener *tok = json_tokener_new_ex(QMP_JSON_DEPTH);
        json_object *o;
        size_t end;

        if (!tok) {
                snprintf(why, why_size, "out of memory");
                return NULL;
        }
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        if (len > INT32_MAX) {
                snprintf(why, why_size, "too large");
                return NULL;
        }
        o = json_tokener_parse_ex(tok, s, (int) len);
        if (!o) {
                enum json_tokener_error e = json_tokener_get_error(tok);
                snprintf(why, why_size, "%s",
                         e == json_tokener_continue ? "unexpected end of message"
                                                    : json_tokener_error_desc(e));
                return NULL;
        }
        end = json_tokener_get_parse_end(tok);
        for (; end < len; end++)
                if (!strchr(" \t\r\n", s[end])) {
                        json_object_put(o);
                        snprintf(why, why_size, "trailing data after the JSON value");
                        return NULL;
                }
        return o;
}

/* Parse a "return" member handed over as text (caller's thread). */
static int parse_return(const char *text, const char *what, json_object **ret) {
        char why[128];
        json_object *o;

        if (!text)
                return err_set(-EINVAL, "%s: no reply text", what);
        o = json_parse_text(text, strlen(text), why, sizeof(why));
        if (!o)
                return err_set(-EPROTO, "%s: reply is not valid JSON (%s)", what, why);
        *ret = o;
        return 0;
}

static char *json_dup_text(json_object *o) {
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        return s ? strdup(s) : NULL;
}

/* Integer member @key of @o: absent leaves *ret alone; a negative value
 * reads as 0 (counters); anything but a JSON integer is -EPROTO. */
static int member_u64(json_object *o, const char *key, const char *ctx, uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (!json_object_is_type(v, json_type_int))
                return err_set(-EPROTO, "%s: member '%s' is not an integer", ctx, key);
        if (json_object_get_int64(v) < 0)
                *ret = 0;
        else
                *ret = json_object_get_uint64(v);
        return 0;
}

static int member_u64_has(json_object *o, const char *key, const char *ctx, bool *has,
                          uint64_t *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        *has = true;
        return member_u64(o, key, ctx, ret);
}

/* String member into a fixed buffer.  @truncate_ok: text for humans may be
 * cut; an identifier that does not fit is -EPROTO. */
static int member_str(json_object *o, const char *key, const char *ctx, char *buf, size_t size,
                      bool truncate_ok, bool *has) {
        json_object *v;
        const char *s;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (!json_object_is_type(v, json_type_string))
                return err_set(-EPROTO, "%s: member '%s' is not a string", ctx, key);
        s = json_object_get_string(v);
        if (!truncate_ok && strlen(s) >= size)
                return err_set(-EPROTO, "%s: member '%s' is longer than %zu bytes", ctx, key,
                               size - 1);
        snprintf(buf, size, "%s", s);
        if (has)
                *has = true;
        return 0;
}

static int member_bool(json_object *o, const char *key, const char *ctx, bool *ret) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                return 0;
        if (!json_object_is_type(v, json_type_boolean))
                return err_set(-EPROTO, "%s: member '%s' is not a boolean", ctx, key);
        *ret = json_object_get_boolean(v);
        return 0;
}

static json_object *new_u64(uint64_t v) {
        return v <= INT64_MAX ? json_object_new_int64((int64_t) v) : json_object_new_uint64(v);
}

/* ---- death, abort, event queue (lock held) ------------------------------ */

static void event_queue_push_locked(QmpMonitor *m, QmpQueuedEvent *qe) {
        lock_assert_held(&m->lock);
        while (m->evq_len > 0 && (m->evq_len == QMP_EVENT_QUEUE_MAX ||
                                  m->evq_bytes + qe->bytes > QMP_EVENT_QUEUE_BYTES_MAX)) {
                QmpQueuedEvent *old = m->evq[m->evq_head];
                m->evq[m->evq_head] = NULL;
                m->evq_head = (m->evq_head + 1) % QMP_EVENT_QUEUE_MAX;
                m->evq_len--;
                m->evq_bytes -= old->bytes;
                m->events_dropped++;
                log_debug("qmp %s: event queue full, dropped %s (%" PRIu64 " dropped so far)",
                          m->path, old->ev.name, m->events_dropped);
                queued_event_free(old);
        }
        qe->seq = ++m->ev_seq;
        m->evq[(m->evq_head + m->evq_len) % QMP_EVENT_QUEUE_MAX] = qe;
        m->evq_len++;
        m->evq_bytes += qe->bytes;
        cond_broadcast(&m->ev_cond);
}

static QmpQueuedEvent *event_queue_pop_locked(QmpMonitor *m) {
        QmpQueuedEvent *qe;

        lock_assert_held(&m->lock);
        if (m->evq_len == 0)
                return NULL;
        qe = m->evq[m->evq_head];
        m->evq[m->evq_head] = NULL;
        m->evq_head = (m->evq_head + 1) % QMP_EVENT_QUEUE_MAX;
        m->evq_len--;
        m->evq_bytes -= qe->bytes;
        return qe;
}

/* True when every event numbered up to @seq has been handled (or dropped). */
static bool events_handled_locked(QmpMonitor *m, uint64_t seq) {
        lock_assert_held(&m->lock);
        return (m->evq_len == 0 || m->evq[m->evq_head]->seq > seq) &&
               (!m->ev_busy || m->ev_busy_seq > seq);
}

/* I/O thread only: the monitor is dead for good.  Wakes every waiter, lets
 * the event thread deliver what was queued, then calls the eof callback
 * once (unless the owner is closing or connect has not succeeded). */
static void monitor_die(QmpMonitor *m, int error, const char *reason) {
        Deadline d = deadline_in_ms(QMP_EOF_DRAIN_MS);
        bool call;

        lock_acquire(&m->lock);
        if (m->dead) {
                lock_release(&m->lock);
                return;
        }
        m->dead = true;
        m->dead_error = error;
        snprintf(m->dead_reason, sizeof(m->dead_reason), "%s", reason);
        cond_broadcast(&m->cond);
        cond_broadcast(&m->ev_cond);
        while (m->armed && !m->stopping && !events_handled_locked(m, m->ev_seq))
                if (cond_wait(&m->ev_cond, &m->lock, d) < 0)
                        break;
        call = m->armed && !m->stopping;
        lock_release(&m->lock);

        log_debug("qmp %s: monitor dead: %s", m->path, reason);
        /* Let QEMU see us go; the fd itself lives until the last unref. */
        shutdown(m->fd, SHUT_RDWR);
        if (call && m->cb.eof)
                m->cb.eof(m->cb.opaque, error, reason);
}

/* ---- the reader (I/O thread) -------------------------------------------- */

static int handle_greeting(QmpMonitor *m, json_object *msg) {
        QmpVersion v = { 0 };
        json_object *qmp, *ver, *caps;

        json_object_object_get_ex(msg, "QMP", &qmp);
        if (!json_object_is_type(qmp, json_type_object))
                return err_set(-EPROTO, "QMP greeting member 'QMP' is not an object");
        if (json_object_object_get_ex(qmp, "version", &ver) &&
            json_object_is_type(ver, json_type_object)) {
                _cleanup_free_ char *text = json_dup_text(ver);
                if (!text || qmp_parse_version(text, &v) < 0)
                        return err_prefix(-EPROTO, "QMP greeting");
        }
        if (json_object_object_get_ex(qmp, "capabilities", &caps) &&
            json_object_is_type(caps, json_type_array))
                for (size_t i = 0; i < json_object_array_length(caps); i++) {
                        json_object *c = json_object_array_get_idx(caps, i);
                        if (json_object_is_type(c, json_type_string) &&
                            strcmp(json_object_get_string(c), "oob") == 0)
                                v.oob = true;
                }

        lock_acquire(&m->lock);
        if (m->greeted) {
                lock_release(&m->lock);
                return err_set(-EPROTO, "second QMP greeting on an open monitor");
        }
        m->version = v;
        m->greeted = true;
        cond_broadcast(&m->cond);
        lock_release(&m->lock);
        return 0;
}

static const struct {
        const char *name;
        QmpEventType type;
} event_types[] = {
        { "MIGRATION", QMP_EVENT_MIGRATION },
        { "MIGRATION_PASS", QMP_EVENT_MIGRATION_PASS },
        { "STOP", QMP_EVENT_STOP },
        { "RESUME", QMP_EVENT_RESUME },
        { "SHUTDOWN", QMP_EVENT_SHUTDOWN },
};

static int handle_event(QmpMonitor *m, json_object *msg) {
        QmpQueuedEvent *qe;
        json_object *name, *ts, *data, *v;
        const char *n;

        if (!json_object_object_get_ex(msg, "event", &name) ||
            !json_object_is_type(name, json_type_string))
                return err_set(-EPROTO, "QMP event name is not a string");
        qe = calloc(1, sizeof(*qe));
        if (!qe)
                return err_set(-ENOMEM, "out of memory queueing a QMP event");
        n = json_object_get_string(name);
        snprintf(qe->ev.name, sizeof(qe->ev.name), "%s", n);
        qe->ev.type = QMP_EVENT_OTHER;
        for (size_t i = 0; i < ELEMENTSOF(event_types); i++)
                if (strcmp(n, event_types[i].name) == 0)
                        qe->ev.type = event_types[i].type;
        qe->ev.received_ns = now_ns();
        qe->bytes = sizeof(*qe);

        /* Timestamps and data are tolerated in any shape: an event is news,
         * not a reply someone waits on. */
        if (json_object_object_get_ex(msg, "timestamp", &ts) &&
            json_object_is_type(ts, json_type_object)) {
                json_object *s, *us;
                if (json_object_object_get_ex(ts, "seconds", &s) &&
                    json_object_object_get_ex(ts, "microseconds", &us) &&
                    json_object_is_type(s, json_type_int) && json_object_is_type(us, json_type_int) &&
                    json_object_get_int64(s) >= 0 && json_object_get_int64(us) >= 0)
                        qe->ev.qemu_timestamp_us = (uint64_t) json_object_get_int64(s) * 1000000u +
                                                   (uint64_t) json_object_get_int64(us);
        }
        /* A MIGRATION event without a readable status is not "none". */
        if (qe->ev.type == QMP_EVENT_MIGRATION)
                qe->ev.migration_status = MIGRATION_STATUS_UNKNOWN;
        if (json_object_object_get_ex(msg, "data", &data)) {
                qe->data_json = json_dup_text(data);
                if (!qe->data_json) {
                        queued_event_free(qe);
                        return err_set(-ENOMEM, "out of memory queueing a QMP event");
                }
                qe->bytes += strlen(qe->data_json);
                if (!json_object_is_type(data, json_type_object))
                        data = NULL;
        } else
                data = NULL;
        switch (qe->ev.type) {
        case QMP_EVENT_MIGRATION:
                if (data && json_object_object_get_ex(data, "status", &v) &&
                    json_object_is_type(v, json_type_string))
                        qe->ev.migration_status = migration_status_from_string(json_object_get_string(v));
                break;
        case QMP_EVENT_MIGRATION_PASS:
                if (data && json_object_object_get_ex(data, "pass", &v) &&
                    json_object_is_type(v, json_type_int))
                        qe->ev.pass = json_object_get_int64(v);
                break;
        case QMP_EVENT_SHUTDOWN:
                if (data && json_object_object_get_ex(data, "guest", &v) &&
                    json_object_is_type(v, json_type_boolean))
                        qe->ev.guest = json_object_get_boolean(v);
                if (data && json_object_object_get_ex(data, "reason", &v) &&
                    json_object_is_type(v, json_type_string))
                        snprintf(qe->ev.reason, sizeof(qe->ev.reason), "%s", json_object_get_string(v));
                break;
        default:
                break;
        }

        lock_acquire(&m->lock);
        event_queue_push_locked(m, qe);
        lock_release(&m->lock);
        return 0;
}

static bool id_matches(json_object *id, uint64_t want) {
        return json_object_is_type(id, json_type_int) && json_object_get_int64(id) >= 0 &&
               json_object_get_uint64(id) == want;
}

static int handle_reply(QmpMonitor *m, json_object *msg) {
        json_object *id = NULL, *err, *ret;
        bool has_id = json_object_object_get_ex(msg, "id", &id);
        _cleanup_free_ char *ret_text = NULL;
        char detail[ERR_MSG_MAX] = "";
        int error = 0;

        /* Convert before locking: the critical section only hands over. */
        if (json_object_object_get_ex(msg, "error", &err)) {
                const char *cls = "GenericError", *desc = "";
                json_object *v;
                if (json_object_is_type(err, json_type_object)) {
                        if (json_object_object_get_ex(err, "class", &v) &&
                            json_object_is_type(v, json_type_string))
                                cls = json_object_get_string(v);
                        if (json_object_object_get_ex(err, "desc", &v) &&
                            json_object_is_type(v, json_type_string))
                                desc = json_object_get_string(v);
                } else if (json_object_is_type(err, json_type_string))
                        desc = json_object_get_string(err);
                error = strcmp(cls, "CommandNotFound") == 0 ? -EOPNOTSUPP : -EREMOTEIO;
                snprintf(detail, sizeof(detail), "QEMU error %s: %s", cls, desc);
        } else {
                json_object_object_get_ex(msg, "return", &ret);
                ret_text = json_dup_text(ret);
                if (!ret_text)
                        return err_set(-ENOMEM, "out of memory storing a QMP reply");
        }

        lock_acquire(&m->lock);
        if (m->busy && !m->cur_done && (!has_id || id_matches(id, m->cur_id))) {
                m->cur_done = true;
                m->cur_error = error;
                m->cur_ev_seq = m->ev_seq;
                m->cur_ret = TAKE_PTR(ret_text);
                snprintf(m->cur_detail, sizeof(m->cur_detail), "%s", detail);
                cond_broadcast(&m->cond);
                lock_release(&m->lock);
                return 0;
        }
        if (m->has_orphan && (!has_id || id_matches(id, m->orphan_id))) {
                log_debug("qmp %s: late reply to '%s' (id %" PRIu64 ") after %" PRIu64
                          " ms dropped%s", m->path, m->orphan_command, m->orphan_id,
                          ms_since(m->orphan_since_ns), m->wedged ? "; monitor recovered" : "");
                m->has_orphan = false;
                m->wedged = false;
                cond_broadcast(&m->cond);
                lock_release(&m->lock);
                return 0;
        }
        if (m->busy && !m->cur_done) {
                char want[32];
                snprintf(want, sizeof(want), "%" PRIu64, m->cur_id);
                lock_release(&m->lock);
                return err_set(-EPROTO, "QMP reply id %s unknown (command in flight has id %s)",
                               has_id ? json_object_to_json_string(id) : "(none)", want);
        }
        lock_release(&m->lock);
        return err_set(-EPROTO, "QMP reply id %s unknown (no command in flight)",
                       has_id ? json_object_to_json_string(id) : "(none)");
}

static int handle_message(QmpMonitor *m, const char *s, size_t len) {
        _cleanup_json_ json_object *msg = NULL;
        char why[128], ex[96];
        bool greeted;

        msg = json_parse_text(s, len, why, sizeof(why));
        if (!msg) {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "malformed QMP message (%s): %s", why, ex);
        }
        if (!json_object_is_type(msg, json_type_object)) {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "QMP message is not a JSON object: %s", ex);
        }

        lock_acquire(&m->lock);
        greeted = m->greeted;
        lock_release(&m->lock);

        if (json_object_object_get_ex(msg, "QMP", NULL))
                return handle_greeting(m, msg);
        if (!greeted) {
                excerpt(s, len, ex, sizeof(ex));
                return err_set(-EPROTO, "expected the QMP greeting, got: %s", ex);
        }
        if (json_object_object_get_ex(msg, "event", NULL))
                return handle_event(m, msg);
        if (json_object_object_get_ex(msg, "return", NULL) ||
            json_object_object_get_ex(msg, "error", NULL))
                return handle_reply(m, msg);
        excerpt(s, len, ex, sizeof(ex));
        return err_set(-EPROTO, "QMP message is neither a reply nor an event: %s", ex);
}

/* Split what is buffered into messages.  Returns 0 or the error that kills
 * the monitor. */
static int process_buffer(QmpMonitor *m) {
        size_t start = 0;
        int r = 0;

        for (;;) {
                char *nl = memchr(m->rbuf + m->rscan, '\n', m->rlen - m->rscan);
                size_t len;

                if (!nl) {
                        m->rscan = m->rlen;
                        break;
                }
                len = (size_t) (nl - (m->rbuf + start));
                m->rscan = len + start + 1;
                if (len > 0 && m->rbuf[start + len - 1] == '\r')
                        len--;
                if (len > QMP_MESSAGE_MAX)
                        return err_set(-EPROTO, "QMP message of %zu bytes exceeds the %u-byte limit",
                                       len, QMP_MESSAGE_MAX);
                if (strspn(m->rbuf + start, " \t\r") < len)
                        r = handle_message(m, m->rbuf + start, len);
                start = m->rscan;
                if (r < 0)
                        return r;
        }
        if (start > 0) {
                memmove(m->rbuf, m->rbuf + start, m->rlen - start);
                m->rlen -= start;
                m->rscan -= start;
        }
        /* The longest prefix a valid message can leave is QMP_MESSAGE_MAX
         * bytes plus its '\r'. */
        if (m->rlen > QMP_MESSAGE_MAX + 1)
                return err_set(-EPROTO, "QMP message exceeds the %u-byte limit (%zu bytes and no end)",
                               QMP_MESSAGE_MAX, m->rlen);
        return 0;
}

/* Read what is there.  Returns 0, or the error that kills the monitor. */
static int read_some(QmpMonitor *m) {
        ssize_t n;

        if (m->rcap - m->rlen < QMP_READ_CHUNK) {
                size_t cap = m->rcap ? m->rcap * 2 : QMP_READ_CHUNK * 2;
                char *p;
                while (cap - m->rlen < QMP_READ_CHUNK)
                        cap *= 2;
                p = realloc(m->rbuf, cap);
                if (!p)
                        return err_set(-ENOMEM, "out of memory reading the QMP socket");
                m->rbuf = p;
                m->rcap = cap;
        }
        n = recv(m->fd, m->rbuf + m->rlen, QMP_READ_CHUNK, 0);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                /* QEMU killed with our command unread: the kernel resets. */
                if (errno == ECONNRESET)
                        return err_set(-ECONNRESET, "QEMU closed the monitor (connection reset)%s",
                                       m->rlen > 0 ? " inside a message" : "");
                return err_set(-ECONNRESET, "QMP socket read error: %m");
        }
        if (n == 0) {
                if (m->rlen > 0)
                        return err_set(-ECONNRESET,
                                       "QEMU closed the monitor (EOF) inside a message, %zu bytes "
                                       "truncated", m->rlen);
                return err_set(-ECONNRESET, "QEMU closed the monitor (EOF)");
        }
        m->rlen += (size_t) n;
        return process_buffer(m);
}

static void *io_thread_main(void *p) {
        QmpMonitor *m = p;
        char reason[QMP_REASON_MAX];
        int r;

        for (;;) {
                struct pollfd pfd[2] = {
                        { .fd = m->fd, .events = POLLIN },
                        { .fd = m->wake_fd, .events = POLLIN },
                };
                bool stop, kill;
                int kill_error = 0;

                lock_acquire(&m->lock);
                stop = m->stopping;
                kill = m->kill_requested;
                if (kill) {
                        kill_error = m->kill_error;
                        snprintf(reason, sizeof(reason), "%s", m->kill_reason);
                }
                lock_release(&m->lock);
                if (stop)
                        break;
                if (kill) {
                        monitor_die(m, kill_error, reason);
                        break;
                }

                /* Idle wait: woken by QEMU or by wake_fd (stop, kill). */
                r = poll(pfd, 2, -1);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        r = err_set(-errno, "poll on the QMP socket: %m");
                        snprintf(reason, sizeof(reason), "%s", err_msg());
                        monitor_die(m, r, reason);
                        break;
                }
                if (pfd[1].revents)
                        eventfd_drain(m->wake_fd);
                if (pfd[0].revents) {
                        r = read_some(m);
                        if (r < 0) {
                                snprintf(reason, sizeof(reason), "%s", err_msg());
                                monitor_die(m, r == -EPROTO ? -EPROTO : -ECONNRESET, reason);
                                break;
                        }
                }
        }
        return NULL;
}

/* ---- the event thread ---------------------------------------------------- */

static void *ev_thread_main(void *p) {
        QmpMonitor *m = p;

        for (;;) {
                QmpQueuedEvent *qe;

                lock_acquire(&m->lock);
                /* Idle wait: woken by a new event, arming, or the stop flag. */
                while (!m->stopping && (!m->armed || m->evq_len == 0))
                        cond_wait(&m->ev_cond, &m->lock, DEADLINE_NEVER);
                if (m->stopping) {
                        lock_release(&m->lock);
                        break;
                }
                qe = event_queue_pop_locked(m);
                m->ev_busy = true;
                m->ev_busy_seq = qe->seq;
                lock_release(&m->lock);

                if (m->cb.event) {
                        qe->ev.data_json = qe->data_json;
                        m->cb.event(m->cb.opaque, &qe->ev);
                }
                queued_event_free(qe);

                lock_acquire(&m->lock);
                m->ev_busy = false;
                cond_broadcast(&m->ev_cond);
                lock_release(&m->lock);
        }
        return NULL;
}

/* ---- lifecycle ----------------------------------------------------------- */

static void stop_threads(QmpMonitor *m, const char *why) {
        lock_acquire(&m->lock);
        m->stopping = true;
        if (!m->aborted) {
                m->aborted = true;
                snprintf(m->abort_reason, sizeof(m->abort_reason), "%s", why);
        }
        cond_broadcast(&m->cond);
        cond_broadcast(&m->ev_cond);
        lock_release(&m->lock);
        eventfd_poke(m->wake_fd);
        eventfd_poke(m->cancel_fd);

        /* Joining from a callback would wait for ourselves. */
        assert(!(m->io_started && pthread_equal(pthread_self(), m->io_thread)));
        assert(!(m->ev_started && pthread_equal(pthread_self(), m->ev_thread)));
        if (m->io_started) {
                pthread_join(m->io_thread, NULL);
                m->io_started = false;
        }
        if (m->ev_started) {
                pthread_join(m->ev_thread, NULL);
                m->ev_started = false;
        }
        /* Only now: an earlier shutdown would look like QEMU's EOF to the
         * reader.  Let QEMU see us go even if references remain. */
        if (m->fd >= 0)
                shutdown(m->fd, SHUT_RDWR);
}

static void monitor_free(QmpMonitor *m) {
        stop_threads(m, "monitor freed");
        while (m->evq_len > 0) {
                QmpQueuedEvent *qe = m->evq[m->evq_head];
                m->evq_head = (m->evq_head + 1) % QMP_EVENT_QUEUE_MAX;
                m->evq_len--;
                queued_event_free(qe);
        }
        free(m->cur_ret);
        free(m->rbuf);
        if (m->fd >= 0)
                close(m->fd);
        if (m->wake_fd >= 0)
                close(m->wake_fd);
        if (m->cancel_fd >= 0)
                close(m->cancel_fd);
        cond_destroy(&m->cond);
        cond_destroy(&m->ev_cond);
        lock_destroy(&m->lock);
        free(m);
}

QmpMonitor *qmp_monitor_ref(QmpMonitor *m) {
        if (m)
                atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
        return m;
}

void qmp_monitor_unref(QmpMonitor *m) {
        if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
                monitor_free(m);
}

void qmp_monitor_close(QmpMonitor *m) {
        if (!m)
                return;
        stop_threads(m, "monitor closed");
        qmp_monitor_unref(m);
}

void qmp_monitor_abort(QmpMonitor *m, const char *reason) {
        if (!m)
                return;
        lock_acquire(&m->lock);
        if (!m->aborted) {
                m->aborted = true;
                snprintf(m->abort_reason, sizeof(m->abort_reason), "%s",
                         reason && *reason ? reason : "aborted");
        }
        cond_broadcast(&m->cond);
        lock_release(&m->lock);
        eventfd_poke(m->cancel_fd);
}

bool qmp_monitor_is_wedged(QmpMonitor *m) {
        bool w;
        lock_acquire(&m->lock);
        w = m->wedged;
        lock_release(&m->lock);
        return w;
}

bool qmp_monitor_is_dead(QmpMonitor *m) {
        bool d;
        lock_acquire(&m->lock);
        d = m->dead;
        lock_release(&m->lock);
        return d;
}

void qmp_monitor_version(QmpMonitor *m, QmpVersion *ret) {
        lock_acquire(&m->lock);
        *ret = m->version;
        lock_release(&m->lock);
}

uint64_t qmp_monitor_events_dropped(QmpMonitor *m) {
        uint64_t n;
        lock_acquire(&m->lock);
        n = m->events_dropped;
        lock_release(&m->lock);
        return n;
}

bool qmp_monitor_command_in_flight(QmpMonitor *m) {
        bool b;
        lock_acquire(&m->lock);
        b = m->busy;
        lock_release(&m->lock);
        return b;
}

/* ---- commands ------------------------------------------------------------ */

/* Write all of @buf before @d; -ECANCELED as soon as the monitor is aborted.
 * *ret_written says how far it got. */
static int write_all(QmpMonitor *m, const char *buf, size_t len, Deadline d, size_t *ret_written) {
        size_t off = 0;
        int r = 0;

        while (off < len) {
                struct pollfd pfd[2] = {
                        { .fd = m->fd, .events = POLLOUT },
                        { .fd = m->cancel_fd, .events = POLLIN },
                };
                ssize_t n = send(m->fd, buf + off, len - off, MSG_NOSIGNAL);
                if (n > 0) {
                        off += (size_t) n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != EAGAIN) {
                        r = err_set(-ECONNRESET, "QMP socket write error: %m");
                        break;
                }
                n = poll(pfd, 2, deadline_poll_ms(d));
                if (n < 0 && errno != EINTR) {
                        r = err_set(-errno, "poll on the QMP socket: %m");
                        break;
                }
                if (n > 0 && pfd[1].revents) {
                        r = -ECANCELED;
                        break;
                }
                if (n == 0 || deadline_expired(d)) {
                        r = -ETIMEDOUT;
                        break;
                }
        }
        *ret_written = off;
        return r;
}

/* Wait for the command slot (lock held); fails at once when the monitor is
 * aborted, dead or wedged. */
static int slot_acquire_locked(QmpMonitor *m, const char *command, Deadline d, uint64_t t0) {
        lock_assert_held(&m->lock);
        for (;;) {
                if (m->aborted)
                        return err_set(-ECANCELED, "QMP command '%s' not sent: %s", command,
                                       m->abort_reason);
                if (m->dead)
                        return err_set(-ECONNRESET, "QMP command '%s' not sent: monitor is dead: %s",
                                       command, m->dead_reason);
                if (m->wedged)
                        return err_set(-EBUSY,
                                       "QMP command '%s' not sent: monitor wedged, '%s' (id %" PRIu64
                                       ") has been overdue for %" PRIu64 " ms",
                                       command, m->orphan_command, m->orphan_id,
                                       ms_since(m->orphan_since_ns));
                if (!m->busy)
                        return 0;
                if (cond_wait(&m->cond, &m->lock, d) == -ETIMEDOUT && m->busy && !m->aborted &&
                    !m->dead && !m->wedged)
                        return err_set(-ETIMEDOUT,
                                       "QMP command '%s' gave up after %" PRIu64
                                       " ms waiting for the channel: '%s' (id %" PRIu64
                                       ") in flight for %" PRIu64 " ms",
                                       command, ms_since(t0), m->cur_command, m->cur_id,
                                       ms_since(m->cur_started_ns));
        }
}

/* Release the command slot, remembering an unanswered command as the
 * orphan whose late reply must be dropped. */
static void slot_release_locked(QmpMonitor *m, bool orphan) {
        lock_assert_held(&m->lock);
        if (orphan) {
                m->has_orphan = true;
                m->orphan_id = m->cur_id;
                m->orphan_since_ns = m->cur_started_ns;
                snprintf(m->orphan_command, sizeof(m->orphan_command), "%s", m->cur_command);
        }
        m->busy = false;
        m->cur_done = false;
        m->cur_error = 0;
        free(m->cur_ret);
        m->cur_ret = NULL;
        m->cur_detail[0] = '\0';
        cond_broadcast(&m->cond);
}

/* The wire form of a command: {"execute", "arguments", "id"} and CRLF.
 * Takes @args. */
static int command_text(const char *command, json_object *args, uint64_t id, char **ret) {
        _cleanup_json_ json_object *msg = json_object_new_object();
        char *text = NULL;
        const char *s;

        if (!msg) {
                json_object_put(args);
                return err_set(-ENOMEM, "out of memory");
        }
        json_object_object_add(msg, "execute", json_object_new_string(command));
        if (args)
                json_object_object_add(msg, "arguments", args);
        json_object_object_add(msg, "id", new_u64(id));
        s = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN);
        if (!s || asprintf(&text, "%s\r\n", s) < 0)
                return err_set(-ENOMEM, "out of memory");
        if (strlen(text) > QMP_MESSAGE_MAX) {
                free(text);
                return err_set(-EINVAL, "QMP command '%s' is larger than %u bytes", command,
                               QMP_MESSAGE_MAX);
        }
        *ret = text;
        return 0;
}

/* The command could not be (fully) written: name the cause, and if half of
 * it is on the wire, have the I/O thread end the monitor, since the stream
 * cannot be trusted any more. */
static int write_failed_locked(QmpMonitor *m, const char *command, int r, size_t written,
                               size_t len, uint64_t t0) {
        lock_assert_held(&m->lock);
        /* A close or abort also shows up here as a write error. */
        if (r == -ECANCELED || m->aborted)
                r = err_set(-ECANCELED, "QMP command '%s' aborted: %s", command, m->abort_reason);
        else if (r == -ECONNRESET)
                err_prefix(r, "QMP command '%s' failed", command);
        else if (r == -ETIMEDOUT)
                r = err_set(-ETIMEDOUT, "QMP command '%s' could not be written within %" PRIu64
                            " ms (%zu of %zu bytes sent)", command, ms_since(t0), written, len);
        if (written > 0 && r != -ECANCELED && !m->kill_requested) {
                m->kill_requested = true;
                m->kill_error = r;
                snprintf(m->kill_reason, sizeof(m->kill_reason), "%s", err_msg());
        }
        slot_release_locked(m, false);
        return r;
}

/* Let the event thread handle the events QEMU sent before a reply, so that
 * a caller sees their effects when its command returns (after `stop`, the
 * STOP handler has run).  Bounded by the command's deadline; skipped on the
 * event thread itself (a handler issuing a command) and before arming. */
static void events_wait_locked(QmpMonitor *m, uint64_t seq, Deadline d) {
        lock_assert_held(&m->lock);
        if (!m->armed || pthread_equal(pthread_self(), m->ev_thread))
                return;
        while (!m->stopping && !events_handled_locked(m, seq))
                if (cond_wait(&m->ev_cond, &m->lock, d) < 0) {
                        log_debug("qmp %s: events before a reply still unhandled at the deadline",
                                  m->path);
                        return;
                }
}

/* Sleep until the reply, death, abort or @d; releases the slot. */
static int await_reply_locked(QmpMonitor *m, const char *command, uint64_t id, Deadline d,
                              uint64_t t0, char **ret_json) {
        int r;

        lock_assert_held(&m->lock);
        for (;;) {
                if (m->cur_done) {
                        uint64_t seq = m->cur_ev_seq;
                        r = m->cur_error;
                        if (r < 0)
                                err_set(r, "%s", m->cur_detail);
                        else if (ret_json)
                                *ret_json = TAKE_PTR(m->cur_ret);
                        slot_release_locked(m, false);
                        events_wait_locked(m, seq, d);
                        return r;
                }
                if (m->aborted) {
                        slot_release_locked(m, true);
                        return err_set(-ECANCELED, "QMP command '%s' aborted: %s", command,
                                       m->abort_reason);
                }
                if (m->dead) {
                        slot_release_locked(m, false);
                        return err_set(m->dead_error, "QMP command '%s' failed: %s", command,
                                       m->dead_reason);
                }
                if (cond_wait(&m->cond, &m->lock, d) == -ETIMEDOUT && !m->cur_done && !m->dead &&
                    !m->aborted) {
                        m->wedged = true;
                        slot_release_locked(m, true);
                        return err_set(-ETIMEDOUT,
                                       "QMP command '%s' (id %" PRIu64 ") got no reply within %" PRIu64
                                       " ms; monitor wedged until QEMU answers it",
                                       command, id, ms_since(t0));
                }
        }
}

/* One command: take the slot, write, wait.  Takes @args. */
static int call_deadline(QmpMonitor *m, const char *command, json_object *args, Deadline d,
                         char **ret_json) {
        _cleanup_free_ char *text = NULL;
        uint64_t id, t0 = now_ns();
        size_t len, written = 0;
        int r;

        if (!m || !command || !*command || strlen(command) >= QMP_COMMAND_NAME_MAX) {
                json_object_put(args);
                return err_set(-EINVAL, "invalid QMP command name");
        }
        id = atomic_fetch_add_explicit(&m->next_id, 1, memory_order_relaxed);
        r = command_text(command, args, id, &text);
        if (r < 0)
                return r;
        if ((r = fault_hit_in("qmp", command)) < 0)
                return r;
        len = strlen(text);

        lock_acquire(&m->lock);
        r = slot_acquire_locked(m, command, d, t0);
        if (r < 0) {
                lock_release(&m->lock);
                return r;
        }
        m->busy = true;
        m->cur_id = id;
        m->cur_started_ns = now_ns();
        snprintf(m->cur_command, sizeof(m->cur_command), "%s", command);
        lock_release(&m->lock);

        r = write_all(m, text, len, d, &written);

        lock_acquire(&m->lock);
        if (r < 0) {
                r = write_failed_locked(m, command, r, written, len, t0);
                lock_release(&m->lock);
                eventfd_poke(m->wake_fd); /* in case it asked for a kill */
                return r;
        }
        r = await_reply_locked(m, command, id, d, t0, ret_json);
        lock_release(&m->lock);
        return r;
}

static int call_ms(QmpMonitor *m, const char *command, json_object *args, int64_t timeout_ms,
                   char **ret_json) {
        return call_deadline(m, command, args,
                             deadline_in_ms(timeout_ms < 0 ? QMP_DEFAULT_TIMEOUT_MS : timeout_ms),
                             ret_json);
}

int qmp_call(QmpMonitor *m, const char *command, const char *args_json, int64_t timeout_ms,
             char **ret_json) {
        json_object *args = NULL;
        char why[128];

        if (args_json) {
                args = json_parse_text(args_json, strlen(args_json), why, sizeof(why));
                if (!args)
                        return err_set(-EINVAL, "arguments of '%s' are not valid JSON (%s)",
                                       command ? command : "?", why);
                if (!json_object_is_type(args, json_type_object)) {
                        json_object_put(args);
                        return err_set(-EINVAL, "arguments of '%s' are not a JSON object",
                                       command ? command : "?");
                }
        }
        return call_ms(m, command, args, timeout_ms, ret_json);
}

int qmp_monitor_connect(const char *socket_path, const QmpCallbacks *cb, Deadline d,
                        QmpMonitor **ret_mon) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        QmpMonitor *m;
        int r;

        if (!socket_path || !*socket_path || !ret_mon)
                return err_set(-EINVAL, "QMP socket path missing");
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return err_set(-ENAMETOOLONG, "QMP socket path too long: %s", socket_path);

        m = calloc(1, sizeof(*m));
        if (!m)
                return err_set(-ENOMEM, "out of memory");
        lock_init(&m->lock, &qmp_lock_class);
        cond_init(&m->cond);
        cond_init(&m->ev_cond);
        atomic_init(&m->refs, 1);
        atomic_init(&m->next_id, 1);
        m->fd = m->wake_fd = m->cancel_fd = -1;
        snprintf(m->path, sizeof(m->path), "%s", socket_path);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", socket_path);
        if (cb)
                m->cb = *cb;

        m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        m->cancel_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        m->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (m->wake_fd < 0 || m->cancel_fd < 0 || m->fd < 0) {
                r = err_set(-errno, "QMP socket: %m");
                goto fail;
        }
        /* A full listen backlog is EAGAIN on a unix socket: retry until @d. */
        while (connect(m->fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN || deadline_expired(d)) {
                        r = err_set(errno == EAGAIN ? -ETIMEDOUT : -errno,
                                    "connect to QMP socket %s: %m", socket_path);
                        goto fail;
                }
                int64_t left = deadline_remaining_ms(d);
                sleep_ms(left < 0 || left > 10 ? 10 : left);
        }

        if (pthread_create(&m->io_thread, NULL, io_thread_main, m) != 0) {
                r = err_set(-EAGAIN, "cannot start the QMP I/O thread");
                goto fail;
        }
        m->io_started = true;
        if (pthread_create(&m->ev_thread, NULL, ev_thread_main, m) != 0) {
                r = err_set(-EAGAIN, "cannot start the QMP event thread");
                goto fail;
        }
        m->ev_started = true;

        lock_acquire(&m->lock);
        while (!m->greeted && !m->dead)
                if (cond_wait(&m->cond, &m->lock, d) < 0)
                        break;
        if (m->dead)
                r = err_set(m->dead_error, "no QMP greeting from %s: %s", socket_path,
                            m->dead_reason);
        else if (!m->greeted)
                r = err_set(-ETIMEDOUT, "no QMP greeting from %s before the deadline", socket_path);
        else
                r = 0;
        lock_release(&m->lock);
        if (r < 0)
                goto fail;

        r = call_deadline(m, "qmp_capabilities", NULL, d, NULL);
        if (r < 0) {
                err_prefix(r, "QMP capabilities negotiation on %s", socket_path);
                goto fail;
        }

        lock_acquire(&m->lock);
        if (m->dead)
                r = err_set(m->dead_error, "QMP monitor %s died during negotiation: %s",
                            socket_path, m->dead_reason);
        else {
                m->armed = true;
                cond_broadcast(&m->ev_cond);
        }
        lock_release(&m->lock);
        if (r < 0)
                goto fail;

        *ret_mon = m;
        return 0;

fail:
        qmp_monitor_close(m);
        return r;
}

/* ---- parsers and builders ------------------------------------------------ */

int qmp_parse_version(const char *return_json, QmpVersion *ret) {
        _cleanup_json_ json_object *o = NULL;
        QmpVersion v = { 0 };
        json_object *q;
        uint64_t x;
        int r;

        r = parse_return(return_json, "query-version", &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EPROTO, "query-version: reply is not an object");
        if (json_object_object_get_ex(o, "qemu", &q)) {
                if (!json_object_is_type(q, json_type_object))
                        return err_set(-EPROTO, "query-version: member 'qemu' is not an object");
                x = 0;
                if ((r = member_u64(q, "major", "query-version", &x)) < 0)
                        return r;
                v.major = (int) MIN(x, (uint64_t) INT32_MAX);
                x = 0;
                if ((r = member_u64(q, "minor", "query-version", &x)) < 0)
                        return r;
                v.minor = (int) MIN(x, (uint64_t) INT32_MAX);
                x = 0;
                if ((r = member_u64(q, "micro", "query-version", &x)) < 0)
                        return r;
                v.micro = (int) MIN(x, (uint64_t) INT32_MAX);
        }
        r = member_str(o, "package", "query-version", v.package, sizeof(v.package), true, NULL);
        if (r < 0)
                return r;
        *ret = v;
        return 0;
}

int qmp_parse_status(const char *return_json, QmpStatus *ret) {
        _cleanup_json_ json_object *o = NULL;
        QmpStatus st = { 0 };
        int r;

        r = parse_return(return_json, "query-status", &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EPROTO, "query-status: reply is not an object");
        r = member_bool(o, "running", "query-status", &st.running);
        if (r < 0)
                return r;
        /* Very old QEMU omits "status": leave status_name empty. */
        r = member_str(o, "status", "query-status", st.status_name, sizeof(st.status_name), true,
                       NULL);
        if (r < 0)
                return r;
        st.status = st.status_name[0] ? run_state_from_string(st.status_name) : RUN_STATE_UNKNOWN;
        *ret = st;
        return 0;
}

int qmp_parse_migrate_stats(const char *return_json, MigrationStats *ret) {
        static const char ctx[] = "query-migrate";
        _cleanup_json_ json_object *o = NULL;
        MigrationStats s = { 0 };
        char status[64] = "";
        bool has_status = false;
        json_object *ram, *v;
        int r;

        r = parse_return(return_json, ctx, &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EPROTO, "%s: reply is not an object", ctx);
        r = member_str(o, "status", ctx, status, sizeof(status), true, &has_status);
        if (r < 0)
                return r;
        /* No status (before any migration, or a destination still waiting
         * for its connection) means none. */
        s.status = has_status ? migration_status_from_string(status) : MIGRATION_STATUS_NONE;
        if ((r = member_u64(o, "total-time", ctx, &s.total_time_ms)) < 0 ||
            (r = member_u64(o, "downtime", ctx, &s.downtime_ms)) < 0 ||
            (r = member_u64(o, "expected-downtime", ctx, &s.expected_downtime_ms)) < 0 ||
            (r = member_u64(o, "setup-time", ctx, &s.setup_time_ms)) < 0 ||
            (r = member_u64(o, "cpu-throttle-percentage", ctx, &s.cpu_throttle_percentage)) < 0)
                return r;
        r = member_str(o, "error-desc", ctx, s.error_desc, sizeof(s.error_desc), true,
                       &s.has_error_desc);
        if (r < 0)
                return r;

        if (json_object_object_get_ex(o, "ram", &ram) && !json_object_is_type(ram, json_type_null)) {
                static const char rctx[] = "query-migrate ram";
                if (!json_object_is_type(ram, json_type_object))
                        return err_set(-EPROTO, "%s: member 'ram' is not an object", ctx);
                if ((r = member_u64(ram, "transferred", rctx, &s.ram_transferred)) < 0 ||
                    (r = member_u64(ram, "remaining", rctx, &s.ram_remaining)) < 0 ||
                    (r = member_u64(ram, "total", rctx, &s.ram_total)) < 0 ||
                    (r = member_u64(ram, "duplicate", rctx, &s.ram_duplicate)) < 0 ||
                    (r = member_u64(ram, "normal", rctx, &s.ram_normal)) < 0 ||
                    (r = member_u64(ram, "normal-bytes", rctx, &s.ram_normal_bytes)) < 0 ||
                    (r = member_u64(ram, "dirty-pages-rate", rctx, &s.ram_dirty_pages_rate)) < 0 ||
                    (r = member_u64(ram, "page-size", rctx, &s.ram_page_size)) < 0 ||
                    (r = member_u64(ram, "dirty-sync-count", rctx, &s.ram_dirty_sync_count)) < 0 ||
                    (r = member_u64(ram, "postcopy-requests", rctx, &s.ram_postcopy_requests)) < 0)
                        return r;
                if (json_object_object_get_ex(ram, "mbps", &v) &&
                    !json_object_is_type(v, json_type_null)) {
                        if (!json_object_is_type(v, json_type_double) &&
                            !json_object_is_type(v, json_type_int))
                                return err_set(-EPROTO, "%s: member 'mbps' is not a number", rctx);
                        s.ram_mbps = json_object_get_double(v);
                }
        }
        *ret = s;
        return 0;
}

static const struct {
        const char *name;
        size_t has_off, val_off;
} param_u64[] = {
#define P(n, f) { n, offsetof(MigrationParams, has_##f), offsetof(MigrationParams, f) }
        P("max-bandwidth", max_bandwidth),
        P("downtime-limit", downtime_limit),
        P("cpu-throttle-initial", cpu_throttle_initial),
        P("cpu-throttle-increment", cpu_throttle_increment),
        P("max-cpu-throttle", max_cpu_throttle),
        P("multifd-channels", multifd_channels),
        P("max-postcopy-bandwidth", max_postcopy_bandwidth),
#undef P
};

int qmp_parse_migrate_params(const char *return_json, MigrationParams *ret) {
        static const char ctx[] = "query-migrate-parameters";
        _cleanup_json_ json_object *o = NULL;
        MigrationParams p = { 0 };
        int r;

        r = parse_return(return_json, ctx, &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object))
                return err_set(-EPROTO, "%s: reply is not an object", ctx);
        for (size_t i = 0; i < ELEMENTSOF(param_u64); i++) {
                r = member_u64_has(o, param_u64[i].name, ctx,
                                   (bool *) ((char *) &p + param_u64[i].has_off),
                                   (uint64_t *) ((char *) &p + param_u64[i].val_off));
                if (r < 0)
                        return r;
        }
        if ((r = member_str(o, "tls-creds", ctx, p.tls_creds, sizeof(p.tls_creds), false,
                            &p.has_tls_creds)) < 0 ||
            (r = member_str(o, "tls-hostname", ctx, p.tls_hostname, sizeof(p.tls_hostname), false,
                            &p.has_tls_hostname)) < 0)
                return r;
        *ret = p;
        return 0;
}

int qmp_parse_migrate_caps(const char *return_json, MigrationCaps *ret) {
        static const char ctx[] = "query-migrate-capabilities";
        _cleanup_json_ json_object *o = NULL;
        MigrationCaps caps = { 0 };
        int r;

        r = parse_return(return_json, ctx, &o);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_array))
                return err_set(-EPROTO, "%s: reply is not an array", ctx);
        for (size_t i = 0; i < json_object_array_length(o); i++) {
                json_object *e = json_object_array_get_idx(o, i);
                char name[64] = "";
                bool state = false, has = false;
                int c;

                if (!json_object_is_type(e, json_type_object))
                        return err_set(-EPROTO, "%s: element %zu is not an object", ctx, i);
                if ((r = member_str(e, "capability", ctx, name, sizeof(name), true, &has)) < 0 ||
                    (r = member_bool(e, "state", ctx, &state)) < 0)
                        return r;
                if (!has)
                        return err_set(-EPROTO, "%s: element %zu has no 'capability'", ctx, i);
                c = migration_cap_from_string(name);
                if (c < 0)
                        continue; /* a capability this build does not know */
                caps.known |= MIGRATION_CAP_BIT(c);
                if (state)
                        caps.enabled |= MIGRATION_CAP_BIT(c);
        }
        *ret = caps;
        return 0;
}

static json_object *params_to_json(const MigrationParams *p) {
        json_object *o = json_object_new_object();

        if (!o)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(param_u64); i++)
                if (*(const bool *) ((const char *) p + param_u64[i].has_off))
                        json_object_object_add(
                                o, param_u64[i].name,
                                new_u64(*(const uint64_t *) ((const char *) p + param_u64[i].val_off)));
        if (p->has_tls_creds)
                json_object_object_add(o, "tls-creds", json_object_new_string(p->tls_creds));
        if (p->has_tls_hostname)
                json_object_object_add(o, "tls-hostname", json_object_new_string(p->tls_hostname));
        return o;
}

static int caps_to_json(uint64_t mask, bool enable, json_object **ret) {
        json_object *o, *arr;

        if (mask == 0 || (mask >> MIGRATION_CAP_MAX) != 0)
                return err_set(-EINVAL, "migration capability mask %#" PRIx64 " is empty or unknown",
                               mask);
        o = json_object_new_object();
        arr = json_object_new_array();
        if (!o || !arr) {
                json_object_put(o);
                json_object_put(arr);
                return err_set(-ENOMEM, "out of memory");
        }
        for (int c = 0; c < MIGRATION_CAP_MAX; c++) {
                json_object *e;
                if (!(mask & MIGRATION_CAP_BIT(c)))
                        continue;
                e = json_object_new_object();
                json_object_object_add(e, "capability",
                                       json_object_new_string(migration_cap_to_string(c)));
                json_object_object_add(e, "state", json_object_new_boolean(enable));
                json_object_array_add(arr, e);
        }
        json_object_object_add(o, "capabilities", arr);
        *ret = o;
        return 0;
}

int qmp_build_migrate_set_parameters(const MigrationParams *p, char **ret_json) {
        _cleanup_json_ json_object *o = params_to_json(p);
        char *s;

        if (!o || !(s = json_dup_text(o)))
                return err_set(-ENOMEM, "out of memory");
        *ret_json = s;
        return 0;
}

int qmp_build_migrate_set_capabilities(uint64_t mask, bool enable, char **ret_json) {
        _cleanup_json_ json_object *o = NULL;
        char *s;
        int r;

        r = caps_to_json(mask, enable, &o);
        if (r < 0)
                return r;
        if (!(s = json_dup_text(o)))
                return err_set(-ENOMEM, "out of memory");
        *ret_json = s;
        return 0;
}

/* ---- typed calls --------------------------------------------------------- */

static json_object *args_with_str(const char *key, const char *val) {
        json_object *o = json_object_new_object();
        if (o)
                json_object_object_add(o, key, json_object_new_string(val));
        return o;
}

int qmp_query_status(QmpMonitor *m, int64_t timeout_ms, QmpStatus *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-status", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_status(text, ret);
}

int qmp_query_version(QmpMonitor *m, int64_t timeout_ms, QmpVersion *ret) {
        _cleanup_free_ char *text = NULL;
        QmpVersion v;
        int r = call_ms(m, "query-version", NULL, timeout_ms, &text);

        if (r < 0 || (r = qmp_parse_version(text, &v)) < 0)
                return r;
        lock_acquire(&m->lock);
        v.oob = m->version.oob; /* a greeting property, not in query-version */
        lock_release(&m->lock);
        *ret = v;
        return 0;
}

int qmp_stop(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "stop", NULL, timeout_ms, NULL);
}

int qmp_cont(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "cont", NULL, timeout_ms, NULL);
}

int qmp_quit(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "quit", NULL, timeout_ms, NULL);
}

int qmp_migrate_set_capabilities(QmpMonitor *m, int64_t timeout_ms, uint64_t mask, bool enable) {
        json_object *args = NULL;
        int r = caps_to_json(mask, enable, &args);
        return r < 0 ? r : call_ms(m, "migrate-set-capabilities", args, timeout_ms, NULL);
}

int qmp_query_migrate_capabilities(QmpMonitor *m, int64_t timeout_ms, MigrationCaps *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-migrate-capabilities", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_migrate_caps(text, ret);
}

int qmp_migrate_set_parameters(QmpMonitor *m, int64_t timeout_ms, const MigrationParams *p) {
        json_object *args = params_to_json(p);
        if (!args)
                return err_set(-ENOMEM, "out of memory");
        return call_ms(m, "migrate-set-parameters", args, timeout_ms, NULL);
}

int qmp_query_migrate_parameters(QmpMonitor *m, int64_t timeout_ms, MigrationParams *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-migrate-parameters", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_migrate_params(text, ret);
}

int qmp_migrate(QmpMonitor *m, int64_t timeout_ms, const char *uri, bool resume) {
        json_object *args;

        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate: no URI");
        args = args_with_str("uri", uri);
        if (!args)
                return err_set(-ENOMEM, "out of memory");
        /* Only sent when asked for: "resume" needs QEMU 3.0. */
        if (resume)
                json_object_object_add(args, "resume", json_object_new_boolean(true));
        return call_ms(m, "migrate", args, timeout_ms, NULL);
}

int qmp_migrate_incoming(QmpMonitor *m, int64_t timeout_ms, const char *uri) {
        json_object *args;

        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate-incoming: no URI");
        if (!(args = args_with_str("uri", uri)))
                return err_set(-ENOMEM, "out of memory");
        return call_ms(m, "migrate-incoming", args, timeout_ms, NULL);
}

int qmp_query_migrate(QmpMonitor *m, int64_t timeout_ms, MigrationStats *ret) {
        _cleanup_free_ char *text = NULL;
        int r = call_ms(m, "query-migrate", NULL, timeout_ms, &text);
        return r < 0 ? r : qmp_parse_migrate_stats(text, ret);
}

int qmp_migrate_cancel(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "migrate_cancel", NULL, timeout_ms, NULL);
}

int qmp_migrate_start_postcopy(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "migrate-start-postcopy", NULL, timeout_ms, NULL);
}

int qmp_migrate_pause(QmpMonitor *m, int64_t timeout_ms) {
        return call_ms(m, "migrate-pause", NULL, timeout_ms, NULL);
}

int qmp_migrate_recover(QmpMonitor *m, int64_t timeout_ms, const char *uri) {
        json_object *args;

        if (!uri || !*uri)
                return err_set(-EINVAL, "migrate-recover: no URI");
        if (!(args = args_with_str("uri", uri)))
                return err_set(-ENOMEM, "out of memory");
        return call_ms(m, "migrate-recover", args, timeout_ms, NULL);
}

int qmp_migrate_continue(QmpMonitor *m, int64_t timeout_ms, const char *state) {
        json_object *args;

        if (!state || migration_status_from_string(state) == MIGRATION_STATUS_UNKNOWN)
                return err_set(-EINVAL, "migrate-continue: '%s' is not a migration status",
                               state ? state : "(null)");
        if (!(args = args_with_str("state", state)))
                return err_set(-ENOMEM, "out of memory");
        return call_ms(m, "migrate-continue", args, timeout_ms, NULL);
}
