/* QGA channel: a synchronous client for the QEMU guest agent (see qga.h).
 *
 * The agent's stream cannot be trusted to start clean: a previous client's
 * reply, a reply to a command we gave up on, or half a line from an agent
 * that restarted may be waiting in it.  So the channel keeps a `synced`
 * flag.  It is cleared on connect, on every timeout, framing error or
 * unexpected idle input, and a call on an unsynced channel first writes
 * 0xFF (the agent's parser resets on it and answers one parse error) and
 * `guest-sync-delimited` with a fresh random id.  The agent prefixes that
 * reply with 0xFF, so resynchronising is a scan: drop every byte before a
 * 0xFF, parse the short line after it, and stop at `{"return": id}`.
 * Everything else (stale replies, our own parse error, older sync replies,
 * garbage) is counted and dropped, and memory stays bounded while doing so.
 * Once synced, the next complete line is the reply to the command just sent:
 * one command is in flight and qemu-ga sends nothing unsolicited.
 *
 * One command in flight per channel.  The "qga" lock guards only a `busy`
 * slot (and the published guest-info); whoever holds the slot owns the
 * socket and read buffer and does the I/O with no lock held.  Waiting for
 * the slot uses the caller's deadline, and that timeout names the command
 * in flight.  A closed socket is noticed at the start of the next call,
 * which reconnects; if an idle connection turns out dead during the sync,
 * the call retries once on a fresh connection (nothing of the command has
 * been sent yet, so this is safe).
 *
 * guest-info (the agent's version and which commands it enables) is probed
 * after a sync, and again after any later sync: a sync follows a connect
 * (the agent may have restarted, or the guest rebooted into another
 * version) or a timeout or framing error (behind virtio-serial the host
 * socket stays open while the agent inside restarts, so this is how a new
 * agent shows).  A probe the agent refused, answered with nonsense or did
 * not answer stays wanted and is tried again on a later call.  Either way
 * no two probes are sent less than QGA_INFO_REPROBE_MIN_MS apart, so a
 * flapping agent costs one extra round trip per interval at most.  While a
 * probe is wanted, the published list is not trusted to refuse a command:
 * the agent's own answer decides.
 *
 * The guest writes what the agent answers, so a reply line is repaired
 * before it is parsed: every invalid UTF-8 sequence becomes U+FFFD
 * (counted, and logged at debug), so a guest's bad hostname shows as
 * "\ufffd" instead of failing the call, and no guest text can make a
 * protobuf string invalid (clients refuse to decode those).  Guest text
 * quoted in an error detail is cut at a character boundary for the same
 * reason.
 *
 * No JSON tree here, and calls run one way: the typed calls
 * (qga-commands.c) send through qga_agent_command() (qga-channel.h), and
 * this file has qga-wire.c frame each request, recognise a sync reply,
 * turn a reply line into text or an error class and description, and read
 * guest-info.
 */
#define _GNU_SOURCE
#include "qga.h"
#include "qga-channel.h"
#include "qga-priv.h"
#include "qga-wire.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanup.h"
#include "deadline.h"
#include "err.h"
#include "fault.h"
#include "json.h"
#include "lock.h"
#include "log.h"
#include "text.h"

#define QGA_READ_CHUNK (64u * 1024)
#define QGA_READ_BUF_MIN 4096u
/* A sync reply is `{"return": <int64>}`; anything longer after a 0xFF is junk. */
#define QGA_SYNC_LINE_MAX 1024u
/* Guest strings quoted in error details are cut to this. */
#define QGA_QUOTE_MAX 200

static LockClass qga_lock_class = LOCK_CLASS_INIT("qga");

typedef enum QgaInfoState {
        QGA_INFO_UNKNOWN,       /* no answer to guest-info yet */
        QGA_INFO_OK,            /* info published */
        QGA_INFO_FAILED,        /* the agent refused guest-info or sent nonsense */
} QgaInfoState;

struct QgaAgent {
        /* @lock guards the in-flight slot (busy and what describes it) and the
         * publication of the guest-info result.  The connection state below
         * it belongs to the slot holder and is used with no lock held. */
        Lock lock;
        Cond idle;                      /* signalled when busy clears */
        char *path;                     /* immutable */
        bool busy;                      /* lock: a call owns the connection */
        char busy_command[64];          /* lock: the command in flight */
        uint64_t busy_since_ns;         /* lock */
        bool want_disconnect;           /* lock: qga_disconnect() during a call */
        QgaInfoState info_state;        /* lock */
        QgaInfo *info;                  /* lock to publish or replace; immutable while published */
        char info_error[256];           /* lock; why the last probe failed */
        bool info_wanted;               /* lock: probe at the next chance (set by every sync) */
        uint64_t info_probed_ns;        /* lock: when the last probe was sent, 0 never */
        uint64_t reprobe_ns;            /* lock: least time between two probes */

        int fd;                         /* slot holder; -1 when closed */
        bool synced;                    /* slot holder */
        uint8_t *rbuf;                  /* slot holder: bytes received, not consumed */
        size_t rlen;                    /* slot holder */
        size_t rcap;                    /* slot holder */
        size_t rscan;                   /* slot holder: rbuf[0..rscan) has no '\n' */
        uint64_t last_id;               /* slot holder */

        atomic_uint_fast64_t n_connects;        /* atomic */
        atomic_uint_fast64_t n_syncs;           /* atomic */
        atomic_uint_fast64_t n_probes;          /* atomic */
        atomic_uint_fast64_t n_stale_lines;     /* atomic */
        atomic_uint_fast64_t n_stale_bytes;     /* atomic */
        atomic_uint_fast64_t n_bad_utf8;        /* atomic */
        atomic_uint_fast64_t last_ready_ns;     /* atomic */
        atomic_uint_fast64_t last_sync_id;      /* atomic */
};

/* One call's context: what is being waited for and until when. */
typedef struct QgaCall {
        const char *command;
        Deadline deadline;
        int64_t timeout_ms;
} QgaCall;

/* ---- small helpers ---------------------------------------------------- */

/* Copy a guest-provided string for an error detail: control bytes become
 * '?', so a hostile guest cannot forge log lines, and a cut never splits a
 * character (the text is valid UTF-8: replies are repaired on arrival). */
static void quote_guest(char *dst, size_t n, const char *src) {
        size_t i = 0;
        for (; src && src[i] && i + 1 < n; i++)
                dst[i] = (unsigned char) src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
        dst[i] = '\0';
        if (src && src[i])
                (void) text_utf8_trim(dst);
}

static uint64_t sync_id_new(uint64_t previous) {
        uint64_t id = 0;
        do {
                if (getrandom(&id, sizeof(id), GRND_NONBLOCK) != (ssize_t) sizeof(id))
                        id ^= now_ns() * UINT64_C(0x9E3779B97F4A7C15) + previous;
                /* The agent's id is a QAPI int: keep it in int64 range. */
                id &= (uint64_t) INT64_MAX;
        } while (id == previous);
        return id;
}

/* ---- connection and read buffer (slot holder only) ---------------------- */

static void conn_close(QgaAgent *a) {
        if (a->fd >= 0) {
                log_debug("qga %s: closing connection", a->path);
                close(a->fd);
        }
        a->fd = -1;
        a->synced = false;
        a->rlen = 0;
        a->rscan = 0;
}

/* Drop the first @n buffered bytes, counting them (and any lines) as stale. */
static void buf_drop(QgaAgent *a, size_t n, bool stale) {
        if (n == 0)
                return;
        if (stale) {
                uint64_t lines = 0;
                for (const uint8_t *p = a->rbuf, *end = a->rbuf + n;
                     (p = memchr(p, '\n', (size_t) (end - p))); p++)
                        lines++;
                atomic_fetch_add(&a->n_stale_lines, lines);
                atomic_fetch_add(&a->n_stale_bytes, n);
        }
        memmove(a->rbuf, a->rbuf + n, a->rlen - n);
        a->rlen -= n;
        a->rscan = a->rscan > n ? a->rscan - n : 0;
}

static int conn_open(QgaAgent *a, const QgaCall *c) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int fd = -1;

        /* qga_new() checked that the path fits. */
        memcpy(sa.sun_path, a->path, strlen(a->path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return err_set(-errno, "QGA socket: %m");
        for (;;) {
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                        break;
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN && !deadline_expired(c->deadline)) {
                        /* The listener's backlog is full; a unix socket
                         * does not queue us, so try again shortly. */
                        int64_t left = deadline_remaining_ms(c->deadline);
                        sleep_ms(left < 0 || left > 5 ? 5 : left);
                        continue;
                }
                if (errno == ENOENT)
                        return err_set(-ENOENT, "QGA socket %s does not exist (no agent channel)",
                                       a->path);
                if (errno == ECONNREFUSED)
                        return err_set(-ECONNREFUSED, "nothing listening on QGA socket %s", a->path);
                if (errno == EAGAIN)
                        return err_set(-ETIMEDOUT, "QGA socket %s: connect did not complete within %" PRId64 " ms",
                                       a->path, c->timeout_ms);
                return err_set(-errno, "connect to QGA socket %s: %m", a->path);
        }
        a->fd = TAKE_FD(fd);
        a->synced = false;
        a->rlen = 0;
        a->rscan = 0;
        atomic_fetch_add(&a->n_connects, 1);
        log_debug("qga %s: connected", a->path);
        return 0;
}

static int send_all(QgaAgent *a, const QgaCall *c, const char *what, const void *buf, size_t len) {
        const uint8_t *p = buf;

        while (len > 0) {
                ssize_t n = send(a->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n >= 0) {
                        p += n;
                        len -= (size_t) n;
                        continue;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN) {
                        struct pollfd pfd = { .fd = a->fd, .events = POLLOUT };
                        int r = poll(&pfd, 1, deadline_poll_ms(c->deadline));
                        if (r < 0 && errno != EINTR)
                                return err_set(-errno, "QGA %s: poll: %m", a->path);
                        if (r == 0) {
                                a->synced = false;
                                return err_set(-ETIMEDOUT, "QGA %s: agent did not accept %s within %" PRId64 " ms",
                                               a->path, what, c->timeout_ms);
                        }
                        continue;
                }
                if (errno == EPIPE || errno == ECONNRESET) {
                        conn_close(a);
                        return err_set(-ECONNRESET, "QGA %s: agent closed the connection before %s was sent",
                                       a->path, what);
                }
                int r = -errno;
                conn_close(a);
                return err_set(r, "QGA %s: sending %s: %s", a->path, what, strerror(-r));
        }
        return 0;
}

/* Make room for one more read without ever holding more than one capped
 * message plus one chunk. */
static int buf_reserve(QgaAgent *a) {
        size_t want = a->rlen + QGA_READ_CHUNK, cap = a->rcap;
        uint8_t *p;

        if (a->rcap >= want)
                return 0;
        while (cap < want)
                cap *= 2;
        p = realloc(a->rbuf, cap);
        if (!p)
                return -ENOMEM;
        a->rbuf = p;
        a->rcap = cap;
        return 0;
}

/* Read whatever the agent has sent, waiting until the call's deadline. */
static int buf_fill(QgaAgent *a, const QgaCall *c, const char *what) {
        int r = buf_reserve(a);
        if (r < 0)
                return err_set(r, "QGA %s: out of memory for the reply to %s", a->path, what);
        for (;;) {
                struct pollfd pfd = { .fd = a->fd, .events = POLLIN };
                ssize_t n;

                r = poll(&pfd, 1, deadline_poll_ms(c->deadline));
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return err_set(-errno, "QGA %s: poll: %m", a->path);
                if (r == 0) {
                        /* The reply may still come: resync before the next command. */
                        a->synced = false;
                        return err_set(-ETIMEDOUT, "QGA %s: no reply to %s within %" PRId64 " ms",
                                       a->path, what, c->timeout_ms);
                }
                n = recv(a->fd, a->rbuf + a->rlen, a->rcap - a->rlen, MSG_DONTWAIT);
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n <= 0) {
                        r = n == 0 ? -ECONNRESET : -errno;
                        conn_close(a);
                        if (r == -ECONNRESET)
                                return err_set(r, "QGA %s: agent closed the connection while %s was pending",
                                               a->path, what);
                        return err_set(r, "QGA %s: receiving the reply to %s: %s", a->path, what,
                                       strerror(-r));
                }
                a->rlen += (size_t) n;
                return 0;
        }
}

/* ---- synchronisation -------------------------------------------------- */

/* Consume input up to and including the 0xFF-prefixed reply to sync @id.
 * Returns 1 when found, 0 when more input is needed. */
static int sync_scan(QgaAgent *a, uint64_t id) {
        for (;;) {
                uint8_t *ff = memchr(a->rbuf, 0xFF, a->rlen), *nl, *ff2;
                size_t window;

                if (!ff) {
                        /* Our reply always starts with 0xFF: all of this is stale. */
                        buf_drop(a, a->rlen, true);
                        return 0;
                }
                buf_drop(a, (size_t) (ff - a->rbuf), true);
                /* rbuf[0] is now a 0xFF. */
                window = MIN(a->rlen, QGA_SYNC_LINE_MAX);
                nl = memchr(a->rbuf + 1, '\n', window - 1);
                ff2 = memchr(a->rbuf + 1, 0xFF, window - 1);
                if (ff2 && (!nl || ff2 < nl)) {
                        /* A newer sentinel resets the parser. */
                        buf_drop(a, (size_t) (ff2 - a->rbuf), true);
                        continue;
                }
                if (!nl) {
                        if (a->rlen < QGA_SYNC_LINE_MAX)
                                return 0;
                        buf_drop(a, 1, true); /* too long to be a sync reply */
                        continue;
                }
                if (qga_wire_is_sync_reply((const char *) a->rbuf + 1, (size_t) (nl - a->rbuf) - 1, id)) {
                        buf_drop(a, (size_t) (nl - a->rbuf) + 1, false);
                        err_clear();
                        return 1;
                }
                /* An older sync reply or junk after a 0xFF. */
                buf_drop(a, (size_t) (nl - a->rbuf) + 1, true);
        }
}

static int channel_sync(QgaAgent *a, const QgaCall *c) {
        uint64_t id = sync_id_new(a->last_id);
        char req[128];
        int n, r;

        /* Bytes received before our 0xFF cannot be the reply to it. */
        buf_drop(a, a->rlen, true);
        a->synced = false;
        a->last_id = id;
        atomic_store(&a->last_sync_id, id);
        n = snprintf(req, sizeof(req), "\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%" PRIu64 "}}\n",
                     id);
        assert(n > 0 && (size_t) n < sizeof(req));
        r = send_all(a, c, "guest-sync-delimited", req, (size_t) n);
        if (r < 0)
                return r;
        for (;;) {
                if (sync_scan(a, id) > 0)
                        break;
                r = buf_fill(a, c, "guest-sync-delimited");
                if (r < 0)
                        return r;
        }
        a->synced = true;
        atomic_fetch_add(&a->n_syncs, 1);
        /* Whoever answers now may not be the agent guest-info described. */
        lock_acquire(&a->lock);
        a->info_wanted = true;
        lock_release(&a->lock);
        log_debug("qga %s: synchronised (id %" PRIu64 ")", a->path, id);
        return 0;
}

/* ---- one request, one reply (channel synced) ---------------------------- */

/* qga_wire_parse_reply() of a reply line with every invalid UTF-8
 * sequence replaced by U+FFFD first (counted, logged at debug). */
static int parse_reply_line(QgaAgent *a, const QgaCall *c, const char *s, size_t len, QgaWireReply *ret) {
        _cleanup_free_ char *fixed = NULL;
        size_t fixed_len = 0;
        int k = text_utf8_sanitize(s, len, &fixed, &fixed_len);
        if (k < 0)
                return k;
        if (k > 0) {
                atomic_fetch_add(&a->n_bad_utf8, (uint64_t) k);
                log_debug("qga %s: reply to %s: %d invalid UTF-8 sequence(s) replaced with U+FFFD", a->path,
                          c->command, k);
                return qga_wire_parse_reply(fixed, fixed_len, ret);
        }
        return qga_wire_parse_reply(s, len, ret);
}

/* Send @req and read the next complete line as a reply carrying "return"
 * or "error" (*ret to be cleared by the caller). */
static int exchange(QgaAgent *a, const QgaCall *c, const char *req, QgaWireReply *ret) {
        int r = send_all(a, c, c->command, req, strlen(req));
        if (r < 0)
                return r;
        for (;;) {
                uint8_t *nl = memchr(a->rbuf + a->rscan, '\n', a->rlen - a->rscan), *start, *ff;
                size_t len;

                if (!nl) {
                        a->rscan = a->rlen;
                        if (a->rlen > QGA_MESSAGE_MAX) {
                                /* The rest of it is dropped by the next sync. */
                                buf_drop(a, a->rlen, true);
                                a->synced = false;
                                return err_set(-EPROTO, "QGA %s: reply to %s exceeds %u bytes", a->path,
                                               c->command, QGA_MESSAGE_MAX);
                        }
                        r = buf_fill(a, c, c->command);
                        if (r < 0)
                                return r;
                        continue;
                }
                len = (size_t) (nl - a->rbuf);
                if (len > QGA_MESSAGE_MAX) {
                        buf_drop(a, len + 1, true);
                        a->synced = false;
                        return err_set(-EPROTO, "QGA %s: reply to %s exceeds %u bytes", a->path, c->command,
                                       QGA_MESSAGE_MAX);
                }
                /* A 0xFF resets the agent's framing: only what follows the last one counts. */
                start = a->rbuf;
                ff = memrchr(a->rbuf, 0xFF, len);
                if (ff) {
                        atomic_fetch_add(&a->n_stale_bytes, (uint64_t) (ff - a->rbuf) + 1);
                        start = ff + 1;
                }
                r = parse_reply_line(a, c, (const char *) start, (size_t) (nl - start), ret);
                if (r == -EPROTO) {
                        bool blank = true;
                        for (const uint8_t *p = start; p < nl; p++)
                                blank = blank && isspace(*p);
                        buf_drop(a, len + 1, true);
                        if (blank)
                                continue;
                        a->synced = false;
                        return err_prefix(r, "QGA %s: reply to %s", a->path, c->command);
                }
                if (r < 0)
                        return err_set(r, "QGA %s: parsing the reply to %s: %s", a->path, c->command,
                                       strerror(-r));
                buf_drop(a, len + 1, false);
                if (ret->kind == QGA_WIRE_OTHER) {
                        qga_wire_reply_clear(ret);
                        a->synced = false;
                        return err_set(-EPROTO, "QGA %s: reply to %s has neither \"return\" nor \"error\"",
                                       a->path, c->command);
                }
                return 0;
        }
}

/* ---- guest-info --------------------------------------------------------- */

/* A probe is wanted and the interval since the last one has passed. */
static bool info_probe_due(QgaAgent *a) {
        bool due;
        lock_acquire(&a->lock);
        due = a->info_wanted &&
              (a->info_probed_ns == 0 || now_ns() - a->info_probed_ns >= a->reprobe_ns);
        lock_release(&a->lock);
        return due;
}

/* Probe guest-info on a synced channel.  Transport errors fail the call
 * (the probe stays wanted); an answer is published: a new info replaces
 * the old one, a refusal or nonsense drops it (it may describe an agent
 * that is gone) and stays wanted. */
static int info_probe(QgaAgent *a, const QgaCall *c) {
        QgaCall pc = { .command = "guest-info", .deadline = c->deadline, .timeout_ms = c->timeout_ms };
        QgaWireReply reply;
        QgaInfo *info = NULL, *old;
        char why[sizeof(a->info_error)] = "";
        int r;

        lock_acquire(&a->lock);
        a->info_probed_ns = now_ns();
        lock_release(&a->lock);
        atomic_fetch_add(&a->n_probes, 1);
        r = exchange(a, &pc, "{\"execute\":\"guest-info\"}\n", &reply);
        if (r < 0)
                return r;
        if (reply.kind == QGA_WIRE_RETURN) {
                r = qga_wire_parse_info(reply.return_json, &info);
                if (r < 0)
                        snprintf(why, sizeof(why), "%s", r == -ENOMEM ? "out of memory" : err_msg());
        } else
                quote_guest(why, sizeof(why), reply.error_desc ? reply.error_desc : "error without description");
        qga_wire_reply_clear(&reply);
        if (r == -ENOMEM)
                return err_set(r, "QGA %s: out of memory parsing guest-info", a->path);

        lock_acquire(&a->lock);
        old = a->info;
        a->info = info;
        if (info) {
                a->info_state = QGA_INFO_OK;
                a->info_wanted = false;
                a->info_error[0] = '\0';
        } else {
                a->info_state = QGA_INFO_FAILED;
                snprintf(a->info_error, sizeof(a->info_error), "%s", why);
        }
        lock_release(&a->lock);
        qga_wire_info_free(old);
        err_clear();
        log_debug("qga %s: guest-info %s", a->path, info ? info->version : why);
        return 0;
}

/* Look @command up in the published guest-info: 1 enabled, 0 disabled,
 * -ENOENT not listed or no info.  @current_only: -ENOENT also while a new
 * probe is wanted (the list may describe an agent that is gone). */
static int info_lookup(QgaAgent *a, const char *command, bool current_only) {
        int r = -ENOENT;
        lock_acquire(&a->lock);
        for (size_t i = 0; a->info && !(current_only && a->info_wanted) && i < a->info->n_commands; i++)
                if (strcmp(a->info->commands[i].name, command) == 0) {
                        r = a->info->commands[i].enabled;
                        break;
                }
        lock_release(&a->lock);
        return r;
}

/* ---- the in-flight slot ------------------------------------------------- */

static int slot_acquire(QgaAgent *a, const QgaCall *c) {
        int r = 0;

        lock_acquire(&a->lock);
        while (a->busy)
                if (cond_wait(&a->idle, &a->lock, c->deadline) == -ETIMEDOUT && a->busy) {
                        r = err_set(-ETIMEDOUT,
                                    "QGA %s: channel busy for %" PRId64 " ms: '%s' in flight for %" PRIu64 " ms",
                                    a->path, c->timeout_ms, a->busy_command,
                                    (now_ns() - a->busy_since_ns) / NSEC_PER_MSEC);
                        break;
                }
        if (r == 0) {
                a->busy = true;
                text_copy_utf8(a->busy_command, sizeof(a->busy_command), c->command);
                a->busy_since_ns = now_ns();
        }
        lock_release(&a->lock);
        return r;
}

static void slot_release(QgaAgent *a) {
        lock_acquire(&a->lock);
        if (a->want_disconnect)
                conn_close(a);
        a->want_disconnect = false;
        a->busy = false;
        cond_signal(&a->idle);
        lock_release(&a->lock);
}

/* ---- a call ------------------------------------------------------------- */

static bool fd_has_input(int fd) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        return poll(&pfd, 1, 0) > 0;
}

/* Connect if needed, resync if needed, probe guest-info when due. */
static int channel_ready(QgaAgent *a, const QgaCall *c) {
        uint64_t t0 = now_ns();
        bool fresh = false, work = false;
        int r;

        /* qemu-ga never talks unasked: idle input is stale data or EOF. */
        if (a->fd >= 0 && (a->rlen > 0 || fd_has_input(a->fd)))
                a->synced = false;
        for (;;) {
                if (a->fd < 0) {
                        r = conn_open(a, c);
                        if (r < 0)
                                return r;
                        fresh = work = true;
                }
                if (a->synced)
                        break;
                work = true;
                r = channel_sync(a, c);
                if (r == 0)
                        break;
                if (r != -ECONNRESET || fresh)
                        return r;
                /* The agent went away while we were idle; nothing of the
                 * command was sent, so one fresh connection is safe. */
                conn_close(a);
        }
        if (info_probe_due(a)) {
                work = true;
                r = info_probe(a, c);
                if (r < 0)
                        return r;
        }
        if (work)
                atomic_store(&a->last_ready_ns, now_ns() - t0);
        return 0;
}

static int call_in_slot(QgaAgent *a, const QgaCall *c, const char *req, QgaWireReply *ret_reply) {
        int r = channel_ready(a, c);
        if (r < 0)
                return r;
        /* After channel_ready(): a reconnect or resync may have made the
         * list stale, and the probe it wanted may have replaced it. */
        if (info_lookup(a, c->command, true) == 0)
                return err_set(-EOPNOTSUPP, "QGA command '%s' unsupported: guest-info lists it as disabled",
                               c->command);
        return exchange(a, c, req, ret_reply);
}

static int reply_error(const QgaCall *c, const QgaWireReply *e) {
        const char *cls = e->error_class, *desc = e->error_desc;
        char qcls[64], qdesc[QGA_QUOTE_MAX];

        quote_guest(qcls, sizeof(qcls), cls ? cls : "(no class)");
        quote_guest(qdesc, sizeof(qdesc), desc ? desc : "(no description)");
        /* qemu-ga >= 5 answers CommandNotFound "Command X has been disabled";
         * older agents (still common inside guests) CommandDisabled or
         * GenericError "The command X has been disabled for this instance". */
        if ((cls && (strcmp(cls, "CommandNotFound") == 0 || strcmp(cls, "CommandDisabled") == 0)) ||
            (desc && strstr(desc, "has been disabled")))
                return err_set(-EOPNOTSUPP, "QGA command '%s' unsupported by the guest agent: %s", c->command,
                               qdesc);
        return err_set(-EREMOTEIO, "QGA command '%s' failed: %s: %s", c->command, qcls, qdesc);
}

int qga_agent_command(QgaAgent *a, const char *command, const char *args_json, int64_t timeout_ms,
                      char **ret_return_json) {
        _cleanup_free_ char *req = NULL;
        QgaCall c = { .command = command, .timeout_ms = timeout_ms < 0 ? QGA_DEFAULT_TIMEOUT_MS : timeout_ms };
        QgaWireReply reply;
        int r;

        c.deadline = deadline_in_ms(c.timeout_ms);
        r = qga_wire_request(command, args_json, &req);
        if (r < 0)
                return r;
        if ((r = fault_hit_in("qga", command)) < 0)
                return r;
        r = slot_acquire(a, &c);
        if (r < 0)
                return r;
        r = call_in_slot(a, &c, req, &reply);
        slot_release(a);
        if (r < 0)
                return r;
        if (reply.kind == QGA_WIRE_ERROR)
                r = reply_error(&c, &reply);
        else if (ret_return_json)
                *ret_return_json = TAKE_PTR(reply.return_json);
        qga_wire_reply_clear(&reply);
        return r;
}

/* ---- public API --------------------------------------------------------- */

int qga_new(const char *socket_path, QgaAgent **ret) {
        struct sockaddr_un sa;
        QgaAgent *a;

        if (!socket_path || !*socket_path)
                return err_set(-EINVAL, "QGA: empty socket path");
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return err_set(-ENAMETOOLONG, "QGA socket path too long (%zu bytes, max %zu): %s",
                               strlen(socket_path), sizeof(sa.sun_path) - 1, socket_path);
        a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->path = strdup(socket_path);
        if (!a->path) {
                free(a);
                return -ENOMEM;
        }
        /* Never NULL, so the scans need no special case before the first read. */
        a->rbuf = malloc(QGA_READ_BUF_MIN);
        if (!a->rbuf) {
                free(a->path);
                free(a);
                return -ENOMEM;
        }
        a->rcap = QGA_READ_BUF_MIN;
        a->fd = -1;
        a->info_wanted = true;
        a->reprobe_ns = QGA_INFO_REPROBE_MIN_MS * NSEC_PER_MSEC;
        lock_init(&a->lock, &qga_lock_class);
        cond_init(&a->idle);
        *ret = a;
        return 0;
}

void qga_free(QgaAgent *a) {
        if (!a)
                return;
        conn_close(a);
        cond_destroy(&a->idle);
        lock_destroy(&a->lock);
        qga_wire_info_free(a->info);
        free(a->rbuf);
        free(a->path);
        free(a);
}

void qga_disconnect(QgaAgent *a) {
        lock_acquire(&a->lock);
        if (a->busy)
                a->want_disconnect = true; /* the holder closes it on release */
        else
                conn_close(a);
        lock_release(&a->lock);
}

const char *qga_path(QgaAgent *a) {
        return a->path;
}

int qga_info(QgaAgent *a, int64_t timeout_ms, const QgaInfo **ret) {
        uint64_t ago_ms;
        int r = 0;

        if (info_probe_due(a))
                /* Any cheap command makes the channel sync and probe; its
                 * own failure matters only if there is no info to give. */
                r = qga_agent_command(a, "guest-ping", NULL, timeout_ms, NULL);
        lock_acquire(&a->lock);
        ago_ms = a->info_probed_ns ? (now_ns() - a->info_probed_ns) / NSEC_PER_MSEC : 0;
        switch (a->info_state) {
        case QGA_INFO_OK:
                *ret = a->info;
                r = 0;
                break;
        case QGA_INFO_FAILED:
                r = err_set(-EOPNOTSUPP,
                            "QGA %s: guest-info unavailable: %s (asked %" PRIu64 " ms ago; asked again "
                            "on a call at least %" PRIu64 " ms after that)",
                            a->path, a->info_error, ago_ms, a->reprobe_ns / NSEC_PER_MSEC);
                break;
        case QGA_INFO_UNKNOWN:
                if (r == 0)
                        /* The first probe got no answer a moment ago. */
                        r = err_set(-EAGAIN,
                                    "QGA %s: guest-info not known yet: the probe %" PRIu64
                                    " ms ago got no answer; asked again on a call at least %" PRIu64
                                    " ms after it",
                                    a->path, ago_ms, a->reprobe_ns / NSEC_PER_MSEC);
                break;
        }
        lock_release(&a->lock);
        return r;
}

bool qga_supports(QgaAgent *a, const char *command) {
        return info_lookup(a, command, false) == 1;
}

void qga_get_counters(QgaAgent *a, QgaCounters *ret) {
        *ret = (QgaCounters){
                .connects = atomic_load(&a->n_connects),
                .syncs = atomic_load(&a->n_syncs),
                .probes = atomic_load(&a->n_probes),
                .stale_lines = atomic_load(&a->n_stale_lines),
                .stale_bytes = atomic_load(&a->n_stale_bytes),
                .bad_utf8 = atomic_load(&a->n_bad_utf8),
                .last_ready_ns = atomic_load(&a->last_ready_ns),
                .last_sync_id = atomic_load(&a->last_sync_id),
        };
}

void qga_set_reprobe_interval_ms(QgaAgent *a, uint64_t ms) {
        lock_acquire(&a->lock);
        a->reprobe_ns = ms * NSEC_PER_MSEC;
        lock_release(&a->lock);
}
