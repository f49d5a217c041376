/* A fake qemu-ga for the replay tests (see fake-agent.h for why a fake).
 *
 * One thread: accept a client, serve it until it closes (or a step says to
 * close), accept the next.  Every wait polls a wakeup pipe too, so
 * fake_free() can stop the thread even while it is delaying a reply or
 * blocked writing a huge one to a client that stopped reading.
 */
#define _GNU_SOURCE
#include "fake-agent.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FAKE_INBUF_MAX (1024 * 1024)
#define FAKE_MAX_QUEUE 256

static const char parse_error_line[] =
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, stray '\\uFFFD'\"}}\n";

typedef struct OwnedStep {
        char *command;
        char *args;             /* NULL: absent; FAKE_ANY_ARGS: unchecked */
        char *reply;
        size_t reply_len;
        bool has_reply;
        int delay_ms;
        bool close_after;
} OwnedStep;

typedef struct OwnedSync {
        char *prefix;
        size_t prefix_len;
        int delay_ms;
        bool no_reply;
} OwnedSync;

struct FakeAgent {
        /* mu guards everything below it; the thread never holds it across
         * I/O or a delay. */
        pthread_mutex_t mu;
        pthread_cond_t closed;  /* signalled when st.closed grows */
        pthread_t thread;       /* immutable after fake_new */
        int listen_fd;          /* fake thread only */
        int wake[2];            /* immutable; write end wakes the thread */
        char *path;             /* immutable */
        char *info;             /* mu; NULL: guest-info refused */
        OwnedStep steps[FAKE_MAX_QUEUE];        /* mu */
        int step_head, step_tail;               /* mu */
        OwnedSync syncs[FAKE_MAX_QUEUE];        /* mu */
        int sync_head, sync_tail;               /* mu */
        FakeStats st;                           /* mu */
};

/* Per-connection state, fake thread only. */
typedef struct Conn {
        int fd;
        char *in;
        size_t len;
        bool ff_pending;        /* a 0xFF came since the last request */
        bool eof;
} Conn;

static void fake_error(FakeAgent *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fake_error(FakeAgent *f, const char *fmt, ...) {
        va_list ap;
        pthread_mutex_lock(&f->mu);
        if (f->st.errors++ == 0) {
                va_start(ap, fmt);
                vsnprintf(f->st.first_error, sizeof(f->st.first_error), fmt, ap);
                va_end(ap);
        }
        pthread_mutex_unlock(&f->mu);
}

static int64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for @events on @fd (or just the timeout when fd < 0).  1 ready, 0
 * timeout, -1 asked to stop. */
static int wait_io(FakeAgent *f, int fd, short events, int timeout_ms) {
        struct pollfd p[2] = { { .fd = f->wake[0], .events = POLLIN }, { .fd = fd, .events = events } };
        for (;;) {
                int r = poll(p, fd >= 0 ? 2 : 1, timeout_ms);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0 || p[0].revents)
                        return -1;
                return r > 0 ? 1 : 0;
        }
}

/* Read what is there into c->in.  0 ok, -1 EOF or error. */
static int conn_read(FakeAgent *f, Conn *c) {
        char tmp[65536];
        ssize_t n = recv(c->fd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return 0;
        if (n <= 0) {
                c->eof = true;
                return -1;
        }
        if (c->len + (size_t) n > FAKE_INBUF_MAX) {
                fake_error(f, "client sent more than %d bytes without a newline", FAKE_INBUF_MAX);
                c->eof = true;
                return -1;
        }
        c->in = realloc(c->in, c->len + (size_t) n);
        if (!c->in)
                abort();
        memcpy(c->in + c->len, tmp, (size_t) n);
        c->len += (size_t) n;
        for (ssize_t i = 0; i < n; i++)
                if ((unsigned char) tmp[i] == 0xFF) {
                        pthread_mutex_lock(&f->mu);
                        f->st.ff_bytes++;
                        pthread_mutex_unlock(&f->mu);
                }
        return 0;
}

/* Sleep @ms, still collecting input (and noting that it came). */
static int conn_delay(FakeAgent *f, Conn *c, int ms) {
        int64_t end = mono_ms() + ms;
        bool noted = false;
        for (int64_t left; (left = end - mono_ms()) > 0;) {
                int r = wait_io(f, c->eof ? -1 : c->fd, POLLIN, (int) left);
                if (r < 0)
                        return -1;
                if (r > 0) {
                        size_t before = c->len;
                        conn_read(f, c);
                        if (c->len > before && !noted) {
                                noted = true;
                                pthread_mutex_lock(&f->mu);
                                f->st.input_during_delay++;
                                pthread_mutex_unlock(&f->mu);
                        }
                }
        }
        return 0;
}

/* 0 written, 1 the client went away, -1 asked to stop. */
static int conn_write(FakeAgent *f, Conn *c, const void *buf, size_t len) {
        const char *p = buf;
        while (len > 0) {
                ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) {
                        p += n;
                        len -= (size_t) n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        if (wait_io(f, c->fd, POLLOUT, -1) < 0)
                                return -1;
                        continue;
                }
                return 1;
        }
        return 0;
}

static void step_clear(OwnedStep *s) {
        free(s->command);
        if (s->args != FAKE_ANY_ARGS)
                free(s->args);
        free(s->reply);
        memset(s, 0, sizeof(*s));
}

static bool args_match(const char *expected, json_object *got) {
        json_object *want;
        bool eq;
        if (expected == FAKE_ANY_ARGS)
                return true;
        if (!expected)
                return got == NULL;
        want = json_tokener_parse(expected);
        eq = want && got && json_object_equal(want, got);
        json_object_put(want);
        return eq;
}

static int handle_sync(FakeAgent *f, Conn *c, json_object *req) {
        json_object *args = NULL, *idv = NULL;
        OwnedSync s = { 0 };
        bool scripted = false;
        int64_t id;
        char line[64];
        int n;

        json_object_object_get_ex(req, "arguments", &args);
        if (!args || !json_object_object_get_ex(args, "id", &idv) || !json_object_is_type(idv, json_type_int)) {
                fake_error(f, "guest-sync-delimited without an integer id");
                return 0;
        }
        id = json_object_get_int64(idv);
        pthread_mutex_lock(&f->mu);
        if (f->st.syncs < (int) (sizeof(f->st.sync_ids) / sizeof(f->st.sync_ids[0])))
                f->st.sync_ids[f->st.syncs] = (uint64_t) id;
        f->st.syncs++;
        if (!c->ff_pending)
                f->st.syncs_without_ff++;
        if (f->sync_head != f->sync_tail) {
                s = f->syncs[f->sync_head];
                memset(&f->syncs[f->sync_head], 0, sizeof(s));
                f->sync_head = (f->sync_head + 1) % FAKE_MAX_QUEUE;
                scripted = true;
        }
        pthread_mutex_unlock(&f->mu);

        int r = 0;
        if (scripted && s.prefix)
                r = conn_write(f, c, s.prefix, s.prefix_len);
        if (r == 0 && s.delay_ms > 0 && conn_delay(f, c, s.delay_ms) < 0)
                r = -1;
        if (r == 0 && !s.no_reply) {
                n = snprintf(line, sizeof(line), "\xff{\"return\": %" PRId64 "}\n", id);
                r = conn_write(f, c, line, (size_t) n);
        }
        free(s.prefix);
        return r;
}

static int handle_info(FakeAgent *f, Conn *c) {
        char *line = NULL;
        int r;
        pthread_mutex_lock(&f->mu);
        f->st.info_requests++;
        if (f->info)
                r = asprintf(&line, "{\"return\": %s}\n", f->info);
        else
                r = asprintf(&line, "%s",
                             "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"Command guest-info has been disabled\"}}\n");
        pthread_mutex_unlock(&f->mu);
        if (r < 0)
                abort();
        r = conn_write(f, c, line, strlen(line));
        free(line);
        return r;
}

/* 0 continue, 1 close the connection, -1 stop. */
static int handle_command(FakeAgent *f, Conn *c, const char *cmd, json_object *req) {
        OwnedStep s = { 0 };
        json_object *args = NULL;
        bool have = false;
        int r = 0;

        json_object_object_get_ex(req, "arguments", &args);
        pthread_mutex_lock(&f->mu);
        f->st.commands++;
        if (f->step_head != f->step_tail) {
                s = f->steps[f->step_head];
                memset(&f->steps[f->step_head], 0, sizeof(s));
                f->step_head = (f->step_head + 1) % FAKE_MAX_QUEUE;
                have = true;
        }
        pthread_mutex_unlock(&f->mu);

        if (!have) {
                static const char e[] = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"fake: no step\"}}\n";
                fake_error(f, "unexpected command %s (no step left)", cmd);
                return conn_write(f, c, e, sizeof(e) - 1);
        }
        if (strcmp(s.command, cmd) != 0 || !args_match(s.args, args)) {
                static const char e[] = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"fake: mismatch\"}}\n";
                fake_error(f, "expected %s %s, got %s %s", s.command,
                           s.args == FAKE_ANY_ARGS ? "(any)" : s.args ? s.args : "(none)", cmd,
                           args ? json_object_to_json_string(args) : "(none)");
                step_clear(&s);
                return conn_write(f, c, e, sizeof(e) - 1);
        }
        if (s.delay_ms > 0 && conn_delay(f, c, s.delay_ms) < 0)
                r = -1;
        if (r == 0 && s.has_reply)
                r = conn_write(f, c, s.reply, s.reply_len);
        if (r == 0 && s.close_after)
                r = 1;
        step_clear(&s);
        return r;
}

static int handle_line(FakeAgent *f, Conn *c, const char *line, size_t len) {
        json_object *req = json_tokener_parse(line), *ex;
        const char *cmd;
        bool ff = c->ff_pending;
        int r;

        (void) len;
        c->ff_pending = false;
        if (!req || !json_object_object_get_ex(req, "execute", &ex) || !json_object_is_type(ex, json_type_string)) {
                fake_error(f, "client sent a line that is not a request: %.80s", line);
                json_object_put(req);
                return conn_write(f, c, parse_error_line, sizeof(parse_error_line) - 1);
        }
        cmd = json_object_get_string(ex);
        if (strcmp(cmd, "guest-sync-delimited") == 0) {
                c->ff_pending = ff; /* handle_sync reads it */
                r = handle_sync(f, c, req);
                c->ff_pending = false;
        } else if (strcmp(cmd, "guest-info") == 0) {
                r = handle_info(f, c);
        } else {
                r = handle_command(f, c, cmd, req);
        }
        json_object_put(req);
        return r;
}

/* Serve one client until it goes away, a step closes it, or we stop. */
static int serve(FakeAgent *f, Conn *c) {
        for (;;) {
                /* Act on every complete request already buffered. */
                while (c->len > 0) {
                        char *nl, *ff;
                        if ((unsigned char) c->in[0] == 0xFF) {
                                memmove(c->in, c->in + 1, --c->len);
                                c->ff_pending = true;
                                int r = conn_write(f, c, parse_error_line, sizeof(parse_error_line) - 1);
                                if (r != 0)
                                        return r < 0 ? -1 : 0;
                                continue;
                        }
                        nl = memchr(c->in, '\n', c->len);
                        ff = memchr(c->in, 0xFF, c->len);
                        if (ff && (!nl || ff < nl)) {
                                /* A partial request is flushed by the 0xFF. */
                                size_t n = (size_t) (ff - c->in);
                                memmove(c->in, ff, c->len - n);
                                c->len -= n;
                                continue;
                        }
                        if (!nl)
                                break;
                        *nl = '\0';
                        size_t n = (size_t) (nl - c->in) + 1;
                        int r = handle_line(f, c, c->in, n - 1);
                        memmove(c->in, c->in + n, c->len - n);
                        c->len -= n;
                        if (r != 0)
                                return r < 0 ? -1 : 0;
                }
                if (c->eof)
                        return 0;
                int r = wait_io(f, c->fd, POLLIN, -1);
                if (r < 0)
                        return -1;
                conn_read(f, c);
        }
}

static void *fake_main(void *opaque) {
        FakeAgent *f = opaque;
        for (;;) {
                int r = wait_io(f, f->listen_fd, POLLIN, -1);
                if (r < 0)
                        break;
                int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (fd < 0)
                        continue;
                pthread_mutex_lock(&f->mu);
                f->st.connections++;
                pthread_mutex_unlock(&f->mu);
                Conn c = { .fd = fd };
                r = serve(f, &c);
                close(fd);
                free(c.in);
                pthread_mutex_lock(&f->mu);
                f->st.closed++;
                pthread_cond_broadcast(&f->closed);
                pthread_mutex_unlock(&f->mu);
                if (r < 0)
                        break;
        }
        return NULL;
}

static void add_commands(json_object *list, const char *names, bool enabled) {
        char *copy = strdup(names ? names : ""), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                json_object *e = json_object_new_object();
                json_object_object_add(e, "enabled", json_object_new_boolean(enabled));
                json_object_object_add(e, "name", json_object_new_string(t));
                json_object_object_add(e, "success-response", json_object_new_boolean(1));
                json_object_array_add(list, e);
        }
        free(copy);
}

static char *info_from_list(const char *version, const char *enabled, const char *disabled) {
        json_object *o = json_object_new_object(), *list = json_object_new_array();
        char *res;
        add_commands(list, enabled, true);
        add_commands(list, disabled, false);
        json_object_object_add(o, "version", json_object_new_string(version));
        json_object_object_add(o, "supported_commands", list);
        res = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_SPACED));
        json_object_put(o);
        return res;
}

FakeAgent *fake_new(const char *sock_path, const char *default_enabled) {
        FakeAgent *f = calloc(1, sizeof(*f));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (!sock_path || strlen(sock_path) >= sizeof(sa.sun_path) || !f || pipe2(f->wake, O_CLOEXEC) < 0)
                abort();
        pthread_mutex_init(&f->mu, NULL);
        pthread_cond_init(&f->closed, NULL);
        f->path = strdup(sock_path);
        f->info = info_from_list("fake-1.0", default_enabled, NULL);
        memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
        unlink(sock_path);
        f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            listen(f->listen_fd, 4) < 0) {
                perror("fake agent: listen");
                abort();
        }
        if (pthread_create(&f->thread, NULL, fake_main, f) != 0)
                abort();
        return f;
}

void fake_free(FakeAgent *f) {
        if (!f)
                return;
        if (write(f->wake[1], "x", 1) != 1)
                abort();
        pthread_join(f->thread, NULL);
        close(f->listen_fd);
        close(f->wake[0]);
        close(f->wake[1]);
        unlink(f->path);
        for (int i = f->step_head; i != f->step_tail; i = (i + 1) % FAKE_MAX_QUEUE)
                step_clear(&f->steps[i]);
        for (int i = f->sync_head; i != f->sync_tail; i = (i + 1) % FAKE_MAX_QUEUE)
                free(f->syncs[i].prefix);
        pthread_cond_destroy(&f->closed);
        pthread_mutex_destroy(&f->mu);
        free(f->info);
        free(f->path);
        free(f);
}

void fake_set_info(FakeAgent *f, const char *json) {
        pthread_mutex_lock(&f->mu);
        free(f->info);
        f->info = json ? strdup(json) : NULL;
        pthread_mutex_unlock(&f->mu);
}

void fake_set_info_list(FakeAgent *f, const char *version, const char *enabled, const char *disabled) {
        char *info = info_from_list(version, enabled, disabled);
        pthread_mutex_lock(&f->mu);
        free(f->info);
        f->info = info;
        pthread_mutex_unlock(&f->mu);
}

static char *memdup(const void *p, size_t n) {
        char *d = malloc(n ? n : 1);
        if (!d)
                abort();
        memcpy(d, p, n);
        return d;
}

void fake_push(FakeAgent *f, const FakeStep *step) {
        OwnedStep s = {
                .command = strdup(step->command),
                .args = step->args == FAKE_ANY_ARGS ? (char *) FAKE_ANY_ARGS : step->args ? strdup(step->args) : NULL,
                .has_reply = step->reply != NULL,
                .delay_ms = step->delay_ms,
                .close_after = step->close_after,
        };
        if (step->reply) {
                s.reply_len = step->reply_len ? step->reply_len : strlen(step->reply);
                s.reply = memdup(step->reply, s.reply_len);
        }
        pthread_mutex_lock(&f->mu);
        if ((f->step_tail + 1) % FAKE_MAX_QUEUE == f->step_head)
                abort();
        f->steps[f->step_tail] = s;
        f->step_tail = (f->step_tail + 1) % FAKE_MAX_QUEUE;
        pthread_mutex_unlock(&f->mu);
}

void fake_expect(FakeAgent *f, const char *command, const char *args, const char *reply) {
        fake_push(f, &(FakeStep){ .command = command, .args = args, .reply = reply });
}

void fake_push_sync(FakeAgent *f, const FakeSync *sync) {
        OwnedSync s = { .delay_ms = sync->delay_ms, .no_reply = sync->no_reply };
        if (sync->prefix) {
                s.prefix_len = sync->prefix_len ? sync->prefix_len : strlen(sync->prefix);
                s.prefix = memdup(sync->prefix, s.prefix_len);
        }
        pthread_mutex_lock(&f->mu);
        if ((f->sync_tail + 1) % FAKE_MAX_QUEUE == f->sync_head)
                abort();
        f->syncs[f->sync_tail] = s;
        f->sync_tail = (f->sync_tail + 1) % FAKE_MAX_QUEUE;
        pthread_mutex_unlock(&f->mu);
}

void fake_wait_closed(FakeAgent *f, int n) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        pthread_mutex_lock(&f->mu);
        while (f->st.closed < n)
                if (pthread_cond_timedwait(&f->closed, &f->mu, &until) == ETIMEDOUT && f->st.closed < n) {
                        fprintf(stderr, "fake: %d connections closed after 10 s, waited for %d\n", f->st.closed, n);
                        abort();
                }
        pthread_mutex_unlock(&f->mu);
}

void fake_stats(FakeAgent *f, FakeStats *ret) {
        pthread_mutex_lock(&f->mu);
        *ret = f->st;
        ret->steps_left = (f->step_tail - f->step_head + FAKE_MAX_QUEUE) % FAKE_MAX_QUEUE;
        pthread_mutex_unlock(&f->mu);
}
