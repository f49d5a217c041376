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
 * This is the only module that includes json-c for the QGA channel.
 */
#define _GNU_SOURCE
#include "qga.h"
#include "qga-priv.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
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
#include "lock.h"
#include "log.h"

#define QGA_READ_CHUNK (64u * 1024)
#define QGA_READ_BUF_MIN 4096u
/* A sync reply is `{"return": <int64>}`; anything longer after a 0xFF is junk. */
#define QGA_SYNC_LINE_MAX 1024u
#define QGA_JSON_DEPTH 64
/* Guest strings quoted in error details are cut to this. */
#define QGA_QUOTE_MAX 200

DEFINE_POINTER_CLEANUP(json_object, json_object_put)
DEFINE_POINTER_CLEANUP(json_tokener, json_tokener_free)

static LockClass qga_lock_class = LOCK_CLASS_INIT("qga");

typedef enum QgaInfoState {
        QGA_INFO_UNKNOWN,       /* not probed yet: probe after the next sync */
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
        QgaInfo *info;                  /* lock to publish; immutable once set */
        char info_error[256];           /* lock; why the probe failed */

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

/* Copy @src into @dst[@n], cutting at a UTF-8 character boundary. */
static void copy_utf8(char *dst, size_t n, const char *src) {
        size_t len = strlen(src);
        if (len >= n) {
                len = n - 1;
                while (len > 0 && ((unsigned char) src[len] & 0xC0) == 0x80)
                        len--;
        }
        memcpy(dst, src, len);
        dst[len] = '\0';
}

/* Copy a guest-provided string for an error detail: control bytes become
 * '?', so a hostile guest cannot forge log lines. */
static void quote_guest(char *dst, size_t n, const char *src) {
        size_t i = 0;
        for (; src && src[i] && i + 1 < n; i++)
                dst[i] = (unsigned char) src[i] < 0x20 || src[i] == 0x7f ? '?' : src[i];
        dst[i] = '\0';
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

/* Parse @len bytes as exactly one JSON object. */
static int json_parse_object(const char *s, size_t len, json_object **ret) {
        _cleanup_(json_tokener_freep) json_tokener *tok = json_tokener_new_ex(QGA_JSON_DEPTH);
        json_object *o;
        enum json_tokener_error e;

        if (!tok)
                return -ENOMEM;
        if (len > INT_MAX)
                return err_set(-EPROTO, "message too long");
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        o = json_tokener_parse_ex(tok, s, (int) len);
        e = json_tokener_get_error(tok);
        if (!o || e != json_tokener_success) {
                json_object_put(o);
                return err_set(-EPROTO, "not JSON (%s)",
                               e == json_tokener_continue ? "incomplete" : json_tokener_error_desc(e));
        }
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
                if (!isspace((unsigned char) s[i])) {
                        json_object_put(o);
                        return err_set(-EPROTO, "trailing data after the JSON value");
                }
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return err_set(-EPROTO, "a JSON %s, not an object",
                               json_type_to_name(json_object_get_type(o)));
        }
        *ret = o;
        return 0;
}

static const char *json_get_string(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
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
                json_object *o = NULL;

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
                if (json_parse_object((const char *) a->rbuf + 1, (size_t) (nl - a->rbuf) - 1, &o) == 0) {
                        json_object *v;
                        bool match = json_object_object_get_ex(o, "return", &v) &&
                                     json_object_is_type(v, json_type_int) &&
                                     json_object_get_int64(v) == (int64_t) id;
                        json_object_put(o);
                        if (match) {
                                buf_drop(a, (size_t) (nl - a->rbuf) + 1, false);
                                err_clear();
                                return 1;
                        }
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
        log_debug("qga %s: synchronised (id %" PRIu64 ")", a->path, id);
        return 0;
}

/* ---- one request, one reply (channel synced) ---------------------------- */

/* Send @req and read the next complete line as a JSON object carrying
 * "return" or "error". */
static int exchange(QgaAgent *a, const QgaCall *c, const char *req, json_object **ret) {
        int r = send_all(a, c, c->command, req, strlen(req));
        if (r < 0)
                return r;
        for (;;) {
                uint8_t *nl = memchr(a->rbuf + a->rscan, '\n', a->rlen - a->rscan), *start, *ff;
                json_object *o = NULL;
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
                r = json_parse_object((const char *) start, (size_t) (nl - start), &o);
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
                if (!json_object_object_get_ex(o, "return", NULL) && !json_object_object_get_ex(o, "error", NULL)) {
                        json_object_put(o);
                        a->synced = false;
                        return err_set(-EPROTO, "QGA %s: reply to %s has neither \"return\" nor \"error\"",
                                       a->path, c->command);
                }
                *ret = o;
                return 0;
        }
}

/* ---- guest-info --------------------------------------------------------- */

static void info_free(QgaInfo *info) {
        if (!info)
                return;
        free(info->commands);
        free(info);
}
DEFINE_POINTER_CLEANUP(QgaInfo, info_free)

static int info_parse(json_object *ret, QgaInfo **out) {
        _cleanup_(info_freep) QgaInfo *info = calloc(1, sizeof(*info));
        json_object *cmds;
        const char *version;
        size_t n;

        if (!info)
                return -ENOMEM;
        if (!json_object_is_type(ret, json_type_object))
                return err_set(-EPROTO, "guest-info returned no object");
        version = json_get_string(ret, "version");
        if (!version)
                return err_set(-EPROTO, "guest-info has no \"version\"");
        copy_utf8(info->version, sizeof(info->version), version);
        if (!json_object_object_get_ex(ret, "supported_commands", &cmds) ||
            !json_object_is_type(cmds, json_type_array))
                return err_set(-EPROTO, "guest-info has no \"supported_commands\" list");
        n = json_object_array_length(cmds);
        info->commands = calloc(n ? n : 1, sizeof(*info->commands));
        if (!info->commands)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(cmds, i), *en;
                const char *name = e ? json_get_string(e, "name") : NULL;

                if (!name || !json_object_object_get_ex(e, "enabled", &en) ||
                    !json_object_is_type(en, json_type_boolean))
                        return err_set(-EPROTO, "guest-info command %zu has no name or no enabled flag", i);
                if (strlen(name) >= sizeof(info->commands[0].name)) {
                        /* No command of ours has such a name; keep the rest usable. */
                        log_debug("guest-info: ignoring command with a %zu-byte name", strlen(name));
                        continue;
                }
                strcpy(info->commands[info->n_commands].name, name);
                info->commands[info->n_commands].enabled = json_object_get_boolean(en);
                info->n_commands++;
        }
        *out = TAKE_PTR(info);
        return 0;
}

/* Probe guest-info on a freshly synced channel.  Transport errors fail the
 * call (the probe is retried after the next sync); an agent that refuses
 * guest-info or answers nonsense is recorded and never asked again. */
static int info_probe(QgaAgent *a, const QgaCall *c) {
        QgaCall pc = { .command = "guest-info", .deadline = c->deadline, .timeout_ms = c->timeout_ms };
        _cleanup_(json_object_putp) json_object *reply = NULL;
        QgaInfo *info = NULL;
        json_object *v;
        char why[sizeof(a->info_error)] = "";
        int r;

        atomic_fetch_add(&a->n_probes, 1);
        r = exchange(a, &pc, "{\"execute\":\"guest-info\"}\n", &reply);
        if (r < 0)
                return r;
        if (json_object_object_get_ex(reply, "return", &v)) {
                r = info_parse(v, &info);
                if (r < 0)
                        snprintf(why, sizeof(why), "%s", r == -ENOMEM ? "out of memory" : err_msg());
        } else {
                json_object *e = NULL;
                const char *desc = NULL;
                json_object_object_get_ex(reply, "error", &e);
                if (json_object_is_type(e, json_type_object))
                        desc = json_get_string(e, "desc");
                else if (json_object_is_type(e, json_type_string))
                        desc = json_object_get_string(e);
                quote_guest(why, sizeof(why), desc ? desc : "error without description");
        }
        if (r == -ENOMEM)
                return err_set(r, "QGA %s: out of memory parsing guest-info", a->path);

        lock_acquire(&a->lock);
        if (info) {
                a->info = info;
                a->info_state = QGA_INFO_OK;
        } else {
                a->info_state = QGA_INFO_FAILED;
                snprintf(a->info_error, sizeof(a->info_error), "%s", why);
        }
        lock_release(&a->lock);
        err_clear();
        log_debug("qga %s: guest-info %s", a->path, info ? info->version : why);
        return 0;
}

static QgaInfoState info_state(QgaAgent *a) {
        QgaInfoState s;
        lock_acquire(&a->lock);
        s = a->info_state;
        lock_release(&a->lock);
        return s;
}

/* Look @command up in the published guest-info: 1 enabled, 0 disabled,
 * -ENOENT not listed or no info. */
static int info_lookup(QgaAgent *a, const char *command) {
        int r = -ENOENT;
        lock_acquire(&a->lock);
        for (size_t i = 0; a->info && i < a->info->n_commands; i++)
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
                copy_utf8(a->busy_command, sizeof(a->busy_command), c->command);
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

/* Connect if needed, resync if needed, probe guest-info once. */
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
        if (info_state(a) == QGA_INFO_UNKNOWN) {
                r = info_probe(a, c);
                if (r < 0)
                        return r;
        }
        if (work)
                atomic_store(&a->last_ready_ns, now_ns() - t0);
        return 0;
}

static int call_in_slot(QgaAgent *a, const QgaCall *c, const char *req, json_object **ret_reply) {
        int r = channel_ready(a, c);
        if (r < 0)
                return r;
        if (info_lookup(a, c->command) == 0)
                return err_set(-EOPNOTSUPP, "QGA command '%s' unsupported: guest-info lists it as disabled",
                               c->command);
        return exchange(a, c, req, ret_reply);
}

static int reply_error(const QgaCall *c, json_object *e) {
        const char *cls = NULL, *desc = NULL;
        char qcls[64], qdesc[QGA_QUOTE_MAX];

        if (json_object_is_type(e, json_type_object)) {
                cls = json_get_string(e, "class");
                desc = json_get_string(e, "desc");
        } else if (json_object_is_type(e, json_type_string)) {
                /* A bare string: not QMP, but seen in libvirt's test corpus. */
                desc = json_object_get_string(e);
        }
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

static int request_build(const char *command, json_object *args, char **ret) {
        _cleanup_(json_object_putp) json_object *req = json_object_new_object();
        const char *s;
        char *line;

        if (!command || !*command)
                return err_set(-EINVAL, "QGA: empty command name");
        if (!req || json_object_object_add(req, "execute", json_object_new_string(command)) < 0)
                return -ENOMEM;
        if (args && json_object_object_add(req, "arguments", json_object_get(args)) < 0)
                return -ENOMEM;
        s = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!s)
                return -ENOMEM;
        /* A raw 0xFF (invalid UTF-8) would make the agent drop the request. */
        if (strchr(s, '\xff'))
                return err_set(-EINVAL, "QGA command '%s': arguments contain a 0xFF byte", command);
        if (asprintf(&line, "%s\n", s) < 0)
                return -ENOMEM;
        *ret = line;
        return 0;
}

/* Run @command; *ret_return (optional) gets a reference to the "return"
 * member (NULL for JSON null). */
static int agent_call(QgaAgent *a, const char *command, json_object *args, int64_t timeout_ms,
                      json_object **ret_return) {
        _cleanup_(json_object_putp) json_object *reply = NULL;
        _cleanup_free_ char *req = NULL;
        QgaCall c = { .command = command, .timeout_ms = timeout_ms < 0 ? QGA_DEFAULT_TIMEOUT_MS : timeout_ms };
        json_object *v;
        int r;

        c.deadline = deadline_in_ms(c.timeout_ms);
        r = request_build(command, args, &req);
        if (r < 0)
                return r;
        if ((r = fault_hit_in("qga", command)) < 0)
                return r;
        /* Refuse what guest-info already said is disabled without any I/O. */
        if (info_lookup(a, command) == 0)
                return err_set(-EOPNOTSUPP, "QGA command '%s' unsupported: guest-info lists it as disabled",
                               command);
        r = slot_acquire(a, &c);
        if (r < 0)
                return r;
        r = call_in_slot(a, &c, req, &reply);
        slot_release(a);
        if (r < 0)
                return r;
        if (json_object_object_get_ex(reply, "error", &v))
                return reply_error(&c, v);
        json_object_object_get_ex(reply, "return", &v);
        if (ret_return)
                *ret_return = json_object_get(v);
        return 0;
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
        info_free(a->info);
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

int qga_call(QgaAgent *a, const char *command, const char *args_json, int64_t timeout_ms, char **ret_json) {
        _cleanup_(json_object_putp) json_object *args = NULL, *ret = NULL;
        const char *s;
        char *out;
        int r;

        if (args_json) {
                r = json_parse_object(args_json, strlen(args_json), &args);
                if (r < 0)
                        return err_prefix(r == -EPROTO ? -EINVAL : r, "QGA command '%s': arguments",
                                          command ? command : "");
        }
        r = agent_call(a, command, args, timeout_ms, &ret);
        if (r < 0 || !ret_json)
                return r;
        s = json_object_to_json_string_ext(ret, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        out = s ? strdup(s) : NULL;
        if (!out)
                return -ENOMEM;
        *ret_json = out;
        return 0;
}

int qga_ping(QgaAgent *a, int64_t timeout_ms) {
        return agent_call(a, "guest-ping", NULL, timeout_ms, NULL);
}

int qga_info(QgaAgent *a, int64_t timeout_ms, const QgaInfo **ret) {
        int r = 0;

        if (info_state(a) == QGA_INFO_UNKNOWN)
                /* Any cheap command makes the channel sync and probe; its
                 * own failure matters only if the probe did not happen. */
                r = qga_ping(a, timeout_ms);
        lock_acquire(&a->lock);
        switch (a->info_state) {
        case QGA_INFO_OK:
                *ret = a->info;
                r = 0;
                break;
        case QGA_INFO_FAILED:
                r = err_set(-EOPNOTSUPP, "QGA %s: guest-info unavailable: %s", a->path, a->info_error);
                break;
        case QGA_INFO_UNKNOWN:
                assert(r < 0);
                break;
        }
        lock_release(&a->lock);
        return r;
}

bool qga_supports(QgaAgent *a, const char *command) {
        return info_lookup(a, command) == 1;
}

int qga_get_time(QgaAgent *a, int64_t timeout_ms, int64_t *ret_ns) {
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r = agent_call(a, "guest-get-time", NULL, timeout_ms, &v);
        if (r < 0)
                return r;
        if (!json_object_is_type(v, json_type_int))
                return err_set(-EPROTO, "QGA %s: guest-get-time returned a %s, not an integer", a->path,
                               json_type_to_name(json_object_get_type(v)));
        *ret_ns = json_object_get_int64(v);
        return 0;
}

int qga_set_time(QgaAgent *a, int64_t timeout_ms, int64_t ns) {
        _cleanup_(json_object_putp) json_object *args = NULL;

        if (ns >= 0) {
                args = json_object_new_object();
                if (!args || json_object_object_add(args, "time", json_object_new_int64(ns)) < 0)
                        return -ENOMEM;
        }
        return agent_call(a, "guest-set-time", args, timeout_ms, NULL);
}

void qga_interfaces_free(QgaInterface *ifs, size_t n) {
        for (size_t i = 0; ifs && i < n; i++)
                free(ifs[i].addrs);
        free(ifs);
}

/* Append the "ip-addresses" of one reply entry to @ifc. */
static int interface_add_addrs(QgaInterface *ifc, json_object *list) {
        size_t n = json_object_array_length(list);
        char(*addrs)[64];

        if (n == 0)
                return 0;
        addrs = realloc(ifc->addrs, (ifc->n_addrs + n) * sizeof(*addrs));
        if (!addrs)
                return -ENOMEM;
        ifc->addrs = addrs;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(list, i), *p;
                const char *ip = e ? json_get_string(e, "ip-address") : NULL;
                int64_t prefix = -1;

                /* 45 = the longest textual IPv6 address. */
                if (!ip || strlen(ip) > 45)
                        return err_set(-EPROTO, "interface %s: address %zu missing or malformed", ifc->name, i);
                if (json_object_object_get_ex(e, "prefix", &p)) {
                        if (!json_object_is_type(p, json_type_int) || json_object_get_int64(p) < 0 ||
                            json_object_get_int64(p) > 128)
                                return err_set(-EPROTO, "interface %s: address %s has a bad prefix",
                                               ifc->name, ip);
                        prefix = json_object_get_int64(p);
                }
                if (prefix >= 0)
                        snprintf(addrs[ifc->n_addrs], sizeof(addrs[0]), "%s/%" PRId64, ip, prefix);
                else
                        snprintf(addrs[ifc->n_addrs], sizeof(addrs[0]), "%s", ip);
                ifc->n_addrs++;
        }
        return 0;
}

static int interfaces_parse(json_object *ret, QgaInterface **out, size_t *out_n) {
        QgaInterface *ifs;
        size_t n_in, n = 0;
        int r = 0;

        if (!json_object_is_type(ret, json_type_array))
                return err_set(-EPROTO, "guest-network-get-interfaces returned no list");
        n_in = json_object_array_length(ret);
        ifs = calloc(n_in ? n_in : 1, sizeof(*ifs));
        if (!ifs)
                return -ENOMEM;
        for (size_t i = 0; i < n_in && r == 0; i++) {
                json_object *e = json_object_array_get_idx(ret, i), *list;
                const char *name = e ? json_get_string(e, "name") : NULL;
                const char *hw = e ? json_get_string(e, "hardware-address") : NULL;
                char base[sizeof(ifs[0].name)];
                size_t j;

                if (!name) {
                        r = err_set(-EPROTO, "interface %zu has no name", i);
                        break;
                }
                /* Like libvirt, an alias "eth1:0" is reported as part of eth1. */
                copy_utf8(base, sizeof(base), name);
                base[strcspn(base, ":")] = '\0';
                for (j = 0; j < n && strcmp(ifs[j].name, base) != 0; j++)
                        ;
                if (j == n) {
                        memcpy(ifs[n].name, base, sizeof(base));
                        n++;
                }
                /* Hardware addresses that do not fit (InfiniBand: 59 chars)
                 * are left empty rather than cut. */
                if (hw && !ifs[j].hwaddr[0] && strlen(hw) < sizeof(ifs[j].hwaddr))
                        strcpy(ifs[j].hwaddr, hw);
                if (json_object_object_get_ex(e, "ip-addresses", &list)) {
                        if (!json_object_is_type(list, json_type_array))
                                r = err_set(-EPROTO, "interface %s: ip-addresses is not a list", ifs[j].name);
                        else
                                r = interface_add_addrs(&ifs[j], list);
                }
        }
        if (r < 0) {
                qga_interfaces_free(ifs, n);
                return r;
        }
        *out = ifs;
        *out_n = n;
        return 0;
}

int qga_network_get_interfaces(QgaAgent *a, int64_t timeout_ms, QgaInterface **ret, size_t *ret_n) {
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r = agent_call(a, "guest-network-get-interfaces", NULL, timeout_ms, &v);
        if (r < 0)
                return r;
        r = interfaces_parse(v, ret, ret_n);
        if (r == -EPROTO)
                return err_prefix(r, "QGA %s", a->path);
        return r;
}

void qga_get_counters(QgaAgent *a, QgaCounters *ret) {
        *ret = (QgaCounters){
                .connects = atomic_load(&a->n_connects),
                .syncs = atomic_load(&a->n_syncs),
                .probes = atomic_load(&a->n_probes),
                .stale_lines = atomic_load(&a->n_stale_lines),
                .stale_bytes = atomic_load(&a->n_stale_bytes),
                .last_ready_ns = atomic_load(&a->last_ready_ns),
                .last_sync_id = atomic_load(&a->last_sync_id),
        };
}
