/* QMP channel: one QEMU monitor socket, its reader thread and its event
 * thread (contract in qmp.h).  Calls run one way: the typed calls
 * (qmp-commands.c) send through qmp_monitor_command() (qmp-channel.h), and
 * this file has qmp-wire.c classify what QEMU sends and frame what it
 * writes; it never sees a JSON tree.
 *
 * Every line is repaired before it is parsed: an invalid UTF-8 sequence
 * becomes U+FFFD (counted: qmp_monitor_bad_utf8()), since QEMU relays guest
 * text and a protobuf string must stay valid UTF-8.
 *
 * Three parties touch a QmpMonitor.  The I/O thread owns the read side of
 * the socket and the read buffer: it cuts the byte stream into `\n`-ended
 * messages (a `\r` before the `\n` is dropped), refuses anything larger
 * than QMP_MESSAGE_MAX, has qmp_wire_parse() classify each message, and
 * either hands a reply to the command slot or puts an event (already a
 * plain QmpEvent) on the event queue.  Callers of qmp_monitor_command()
 * (every typed call goes through it) own the write side while they hold
 * the command slot (one command in flight): they write their command, then
 * sleep on the monitor's condition variable until the I/O thread fills the
 * slot, the monitor dies, it is aborted, or their deadline passes.  The
 * event thread pops the queue and runs the owner's callback with no lock
 * held, so a slow handler never stalls the reader.  Events are numbered;
 * a reply remembers how many came before it, and its caller returns only
 * once those have been handled (within its deadline), as if events were
 * handled inline like libvirt does, without running handlers on the reader.
 *
 * JSON trees never cross threads: the I/O thread hands over JSON text
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
#include "qmp-channel.h"
#include "qmp-priv.h"
#include "qmp-wire.h"

#include <errno.h>
#include <inttypes.h>
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
#include "text.h"

static LockClass qmp_lock_class = LOCK_CLASS_INIT("qmp");

#define QMP_READ_CHUNK (64u * 1024)
/* How long a dying monitor waits for the event thread to deliver the events
 * QEMU sent before it went away, so that the eof callback comes last. */
#define QMP_EOF_DRAIN_MS 5000
#define QMP_REASON_MAX 256

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
        atomic_uint_fast64_t bad_utf8;  /* atomic: invalid UTF-8 sequences replaced */

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

static int handle_greeting(QmpMonitor *m, const QmpVersion *v) {
        lock_acquire(&m->lock);
        if (m->greeted) {
                lock_release(&m->lock);
                return err_set(-EPROTO, "second QMP greeting on an open monitor");
        }
        m->version = *v;
        m->greeted = true;
        cond_broadcast(&m->cond);
        lock_release(&m->lock);
        return 0;
}

/* Queue the event in @msg, taking its data text. */
static int handle_event(QmpMonitor *m, QmpWireMessage *msg) {
        QmpQueuedEvent *qe = calloc(1, sizeof(*qe));

        if (!qe)
                return err_set(-ENOMEM, "out of memory queueing a QMP event");
        qe->ev = msg->event;
        qe->ev.received_ns = now_ns();
        qe->data_json = TAKE_PTR(msg->data_json);
        qe->bytes = sizeof(*qe) + (qe->data_json ? strlen(qe->data_json) : 0);

        lock_acquire(&m->lock);
        event_queue_push_locked(m, qe);
        lock_release(&m->lock);
        return 0;
}

static bool id_matches(const QmpWireMessage *msg, uint64_t want) {
        return msg->id_is_u64 && msg->id == want;
}

/* Hand the reply in @msg to the command it answers (taking its return
 * text), or drop it as the orphan's late reply. */
static int handle_reply(QmpMonitor *m, QmpWireMessage *msg) {
        bool has_id = msg->has_id;

        lock_acquire(&m->lock);
        if (m->busy && !m->cur_done && (!has_id || id_matches(msg, m->cur_id))) {
                m->cur_done = true;
                m->cur_error = msg->error;
                m->cur_ev_seq = m->ev_seq;
                m->cur_ret = TAKE_PTR(msg->return_json);
                snprintf(m->cur_detail, sizeof(m->cur_detail), "%s", msg->detail);
                cond_broadcast(&m->cond);
                lock_release(&m->lock);
                return 0;
        }
        if (m->has_orphan && (!has_id || id_matches(msg, m->orphan_id))) {
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
                               has_id ? msg->id_text : "(none)", want);
        }
        lock_release(&m->lock);
        return err_set(-EPROTO, "QMP reply id %s unknown (no command in flight)",
                       has_id ? msg->id_text : "(none)");
}

static int handle_message(QmpMonitor *m, const char *s, size_t len) {
        _cleanup_free_ char *fixed = NULL;
        QmpWireMessage msg;
        bool greeted;
        size_t fixed_len;
        int r;

        /* QEMU passes guest text along (a device's or the guest agent's):
         * an invalid UTF-8 sequence becomes U+FFFD, counted, instead of a
         * malformed message that kills the monitor or a protobuf string
         * clients refuse to decode. */
        r = text_utf8_sanitize(s, len, &fixed, &fixed_len);
        if (r < 0)
                return err_set(r, "out of memory reading the QMP socket");
        if (r > 0) {
                atomic_fetch_add(&m->bad_utf8, (uint64_t) r);
                log_debug("qmp %s: %d invalid UTF-8 sequence(s) replaced with U+FFFD", m->path, r);
                s = fixed;
                len = fixed_len;
        }

        lock_acquire(&m->lock);
        greeted = m->greeted;
        lock_release(&m->lock);

        r = qmp_wire_parse(s, len, greeted, &msg);
        if (r < 0)
                return r;
        switch (msg.kind) {
        case QMP_WIRE_GREETING:
                r = handle_greeting(m, &msg.version);
                break;
        case QMP_WIRE_EVENT:
                r = handle_event(m, &msg);
                break;
        case QMP_WIRE_REPLY:
                r = handle_reply(m, &msg);
                break;
        }
        qmp_wire_message_clear(&msg);
        return r;
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

uint64_t qmp_monitor_bad_utf8(QmpMonitor *m) {
        return atomic_load(&m->bad_utf8);
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

/* The budget @d gave a command that started at @t0, for timeout details:
 * "10 s" for whole seconds (within the few microseconds between setting
 * the deadline and starting), else "1500 ms". */
static void budget_text(Deadline d, uint64_t t0, char *buf, size_t size) {
        uint64_t ms = d.at_ns > t0 ? (d.at_ns - t0 + NSEC_PER_MSEC / 2) / NSEC_PER_MSEC : 0;
        uint64_t s = (ms + 500) / 1000;

        if (s > 0 && (ms > s * 1000 ? ms - s * 1000 : s * 1000 - ms) <= 10)
                snprintf(buf, size, "%" PRIu64 " s", s);
        else
                snprintf(buf, size, "%" PRIu64 " ms", ms);
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


/* The command could not be (fully) written: name the cause, and if half of
 * it is on the wire, have the I/O thread end the monitor, since the stream
 * cannot be trusted any more. */
static int write_failed_locked(QmpMonitor *m, const char *command, int r, size_t written,
                               size_t len, Deadline d, uint64_t t0) {
        char budget[32];

        lock_assert_held(&m->lock);
        /* A close or abort also shows up here as a write error. */
        if (r == -ECANCELED || m->aborted)
                r = err_set(-ECANCELED, "QMP command '%s' aborted: %s", command, m->abort_reason);
        else if (r == -ECONNRESET)
                err_prefix(r, "QMP command '%s' failed", command);
        else if (r == -ETIMEDOUT) {
                budget_text(d, t0, budget, sizeof(budget));
                r = err_set(-ETIMEDOUT, "QEMU did not read '%s' in %s (frozen?): %zu of %zu bytes sent",
                            command, budget, written, len);
        }
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
                        char budget[32];
                        budget_text(d, t0, budget, sizeof(budget));
                        m->wedged = true;
                        slot_release_locked(m, true);
                        return err_set(-ETIMEDOUT,
                                       "QEMU did not answer '%s' (id %" PRIu64 ") in %s (frozen?); "
                                       "monitor wedged until it answers",
                                       command, id, budget);
                }
        }
}

/* One command: take the slot, write, wait. */
int qmp_monitor_command(QmpMonitor *m, const char *command, const char *args_json, Deadline d,
                        char **ret_json) {
        _cleanup_free_ char *text = NULL;
        uint64_t id, t0 = now_ns();
        size_t len, written = 0;
        int r;

        if (!m || !command || !*command || strlen(command) >= QMP_COMMAND_NAME_MAX)
                return err_set(-EINVAL, "invalid QMP command name");
        id = atomic_fetch_add_explicit(&m->next_id, 1, memory_order_relaxed);
        r = qmp_wire_command_text(command, args_json, id, &text);
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
                r = write_failed_locked(m, command, r, written, len, d, t0);
                lock_release(&m->lock);
                eventfd_poke(m->wake_fd); /* in case it asked for a kill */
                return r;
        }
        r = await_reply_locked(m, command, id, d, t0, ret_json);
        lock_release(&m->lock);
        return r;
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
        atomic_init(&m->bad_utf8, 0);
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

        r = qmp_monitor_command(m, "qmp_capabilities", NULL, d, NULL);
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

