/* FAKE QEMU monitor (see fakeqemu.h): a transcript server for the QMP tests.
 *
 * One server thread per fake: accept one client, send the greeting, then
 * walk the steps.  Incoming bytes are parsed as a JSON stream (like QEMU,
 * not by lines).  Writes poll on the socket and on a stop pipe, so a
 * client that stopped reading never blocks fake_free().
 */
#define _GNU_SOURCE
#include "fakeqemu.h"

#include <errno.h>
#include <fcntl.h>
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


#define FAKE_READ_TIMEOUT_MS 10000
#define FAKE_MAX_FAILURES 32

typedef enum StepKind {
        STEP_EXPECT,
        STEP_EXPECT_ANY,
        STEP_REPLY,
        STEP_SEND,
        STEP_SEND_BIG,
        STEP_EVENT,
        STEP_DELAY,
        STEP_GATE,
        STEP_QUIET,
        STEP_CLOSE,
        STEP_WAIT_CLOSE,
        STEP_WAIT_UNREAD,
} StepKind;

static const char *const step_names[] = {
        "expect", "expect-any", "reply", "send", "send-big", "event",
        "delay", "gate", "quiet", "close", "wait-client-close", "wait-unread",
};

typedef struct Step {
        StepKind kind;
        char *execute;
        json_object *args; /* owned */
        bool want_invalid;
        char *data;
        size_t len;
        bool tmpl;
        bool terminate;
        int ms;
} Step;

struct FakeQemu {
        pthread_mutex_t mu;
        pthread_cond_t cv;
        Step *steps;       /* mu */
        size_t n_steps;    /* mu */
        size_t cap_steps;  /* mu */
        size_t next;       /* mu: first step not yet served */
        bool all_served;   /* mu: next == n_steps after serving */
        int gates_open;    /* mu */
        bool stop;         /* mu */
        char *failures[FAKE_MAX_FAILURES]; /* mu */
        int n_failures;    /* mu */
        int commands;      /* mu */

        const QapiSchema *schema; /* immutable */
        char *greeting;           /* immutable after start */
        char path[108];           /* immutable */
        int listen_fd;            /* immutable */
        int stop_pipe[2];         /* immutable */
        pthread_t thread;
        bool started;

        /* server thread only */
        int conn;
        char *rbuf;
        size_t rlen, rcap;
        bool peer_closed;
        json_object *last_id, *prev_id;
};

static void failf(FakeQemu *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(FakeQemu *f, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        pthread_mutex_lock(&f->mu);
        if (f->n_failures < FAKE_MAX_FAILURES)
                f->failures[f->n_failures] = s;
        else
                free(s);
        f->n_failures++;
        pthread_mutex_unlock(&f->mu);
}

FakeQemu *fake_new(const char *path, const QapiSchema *schema) {
        FakeQemu *f = calloc(1, sizeof(*f));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        pthread_mutex_init(&f->mu, NULL);
        pthread_cond_init(&f->cv, NULL);
        f->schema = schema;
        f->greeting = strdup(FAKE_GREETING_7_2);
        f->conn = -1;
        snprintf(f->path, sizeof(f->path), "%s", path);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        unlink(path);
        f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (f->listen_fd < 0 || bind(f->listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            listen(f->listen_fd, 4) < 0 || pipe2(f->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
                perror("fake_new");
                abort();
        }
        return f;
}

void fake_set_greeting(FakeQemu *f, const char *json) {
        free(f->greeting);
        f->greeting = json ? strdup(json) : NULL;
}

static Step *add_step(FakeQemu *f, StepKind kind) {
        Step *s;
        pthread_mutex_lock(&f->mu);
        if (f->n_steps == f->cap_steps) {
                f->cap_steps = f->cap_steps ? f->cap_steps * 2 : 32;
                f->steps = realloc(f->steps, f->cap_steps * sizeof(Step));
        }
        s = &f->steps[f->n_steps];
        memset(s, 0, sizeof(*s));
        s->kind = kind;
        return s;
}

static void commit_step(FakeQemu *f) {
        f->n_steps++;
        f->all_served = false;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
}

static json_object *parse_or_die(const char *what, const char *text) {
        json_object *o = json_tokener_parse(text);
        if (!o) {
                fprintf(stderr, "fake: %s is not JSON: %s\n", what, text);
                abort();
        }
        return o;
}

static void add_expect(FakeQemu *f, const char *execute, const char *args_json, bool invalid) {
        json_object *args = args_json ? parse_or_die("expected arguments", args_json) : NULL;
        Step *s = add_step(f, STEP_EXPECT);
        s->execute = strdup(execute);
        s->args = args;
        s->want_invalid = invalid;
        commit_step(f);
}

void fake_expect(FakeQemu *f, const char *execute, const char *args_json) {
        add_expect(f, execute, args_json, false);
}

void fake_expect_invalid(FakeQemu *f, const char *execute, const char *args_json) {
        add_expect(f, execute, args_json, true);
}

void fake_expect_any(FakeQemu *f) {
        add_step(f, STEP_EXPECT_ANY);
        commit_step(f);
}

void fake_reply(FakeQemu *f, const char *json) {
        json_object_put(parse_or_die("reply", json));
        Step *s = add_step(f, STEP_REPLY);
        s->data = strdup(json);
        commit_step(f);
}

void fake_send(FakeQemu *f, const char *raw, size_t len, bool tmpl) {
        Step *s = add_step(f, STEP_SEND);
        s->len = len ? len : strlen(raw);
        s->data = malloc(s->len + 1);
        memcpy(s->data, raw, s->len);
        s->data[s->len] = '\0';
        s->tmpl = tmpl;
        commit_step(f);
}

void fake_event(FakeQemu *f, const char *name, const char *data_json) {
        Step *s = add_step(f, STEP_EVENT);
        s->execute = strdup(name);
        s->data = data_json ? strdup(data_json) : NULL;
        commit_step(f);
}

void fake_send_big(FakeQemu *f, size_t size, bool terminate) {
        Step *s = add_step(f, STEP_SEND_BIG);
        s->len = size;
        s->terminate = terminate;
        commit_step(f);
}

void fake_delay(FakeQemu *f, int ms) {
        Step *s = add_step(f, STEP_DELAY);
        s->ms = ms;
        commit_step(f);
}

void fake_gate(FakeQemu *f) {
        add_step(f, STEP_GATE);
        commit_step(f);
}

void fake_open_gate(FakeQemu *f) {
        pthread_mutex_lock(&f->mu);
        f->gates_open++;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
}

void fake_quiet(FakeQemu *f, int ms) {
        Step *s = add_step(f, STEP_QUIET);
        s->ms = ms;
        commit_step(f);
}

void fake_close(FakeQemu *f) {
        add_step(f, STEP_CLOSE);
        commit_step(f);
}

void fake_wait_unread(FakeQemu *f) {
        add_step(f, STEP_WAIT_UNREAD);
        commit_step(f);
}

void fake_wait_client_close(FakeQemu *f) {
        add_step(f, STEP_WAIT_CLOSE);
        commit_step(f);
}

static bool stopping(FakeQemu *f) {
        bool s;
        pthread_mutex_lock(&f->mu);
        s = f->stop;
        pthread_mutex_unlock(&f->mu);
        return s;
}

static int64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Send all of @buf; false if the client is gone or the fake stops. */
static bool send_all(FakeQemu *f, const char *buf, size_t len) {
        size_t off = 0;
        while (off < len) {
                ssize_t n = send(f->conn, buf + off, len - off, MSG_NOSIGNAL);
                if (n > 0) {
                        off += (size_t) n;
                        continue;
                }
                if (n < 0 && errno != EAGAIN && errno != EINTR)
                        return false;
                struct pollfd p[2] = { { f->conn, POLLOUT, 0 }, { f->stop_pipe[0], POLLIN, 0 } };
                if (poll(p, 2, -1) < 0 && errno != EINTR)
                        return false;
                if (p[1].revents)
                        return false;
        }
        return true;
}

/* Wait up to @timeout_ms for readable data; false on timeout or stop. */
static bool wait_readable(FakeQemu *f, int timeout_ms) {
        struct pollfd p[2] = { { f->conn, POLLIN, 0 }, { f->stop_pipe[0], POLLIN, 0 } };
        int r;
        do
                r = poll(p, 2, timeout_ms);
        while (r < 0 && errno == EINTR);
        return r > 0 && !p[1].revents;
}

/* Read more bytes; false on EOF/error (peer_closed set) or nothing there. */
static bool read_more(FakeQemu *f) {
        if (f->rcap - f->rlen < 4096) {
                f->rcap = f->rcap ? f->rcap * 2 : 65536;
                f->rbuf = realloc(f->rbuf, f->rcap);
        }
        ssize_t n = recv(f->conn, f->rbuf + f->rlen, f->rcap - f->rlen, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
                f->peer_closed = true;
                return false;
        }
        if (n > 0)
                f->rlen += (size_t) n;
        return n > 0;
}

/* Take one complete JSON value from the buffer, or NULL if none yet.  A
 * parse error is recorded and the buffer dropped. */
static json_object *take_value(FakeQemu *f) {
        size_t skip = 0;
        json_tokener *tok;
        json_object *o;

        while (skip < f->rlen && strchr(" \t\r\n", f->rbuf[skip]))
                skip++;
        if (skip == f->rlen) {
                f->rlen = 0;
                return NULL;
        }
        tok = json_tokener_new();
        o = json_tokener_parse_ex(tok, f->rbuf + skip, (int) (f->rlen - skip));
        enum json_tokener_error e = json_tokener_get_error(tok);
        size_t end = skip + json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (!o && e == json_tokener_continue)
                return NULL;
        if (!o) {
                failf(f, "client sent malformed JSON (%s): %.*s", json_tokener_error_desc(e),
                      (int) (f->rlen - skip > 200 ? 200 : f->rlen - skip), f->rbuf + skip);
                f->rlen = 0;
                return NULL;
        }
        memmove(f->rbuf, f->rbuf + end, f->rlen - end);
        f->rlen -= end;
        return o;
}

/* Next command from the client, waiting up to @timeout_ms.  NULL on EOF,
 * timeout or stop. */
static json_object *read_command(FakeQemu *f, int timeout_ms) {
        int64_t until = mono_ms() + timeout_ms;
        for (;;) {
                json_object *o = take_value(f);
                if (o) {
                        pthread_mutex_lock(&f->mu);
                        f->commands++;
                        pthread_mutex_unlock(&f->mu);
                        return o;
                }
                if (f->peer_closed)
                        return NULL;
                int64_t left = until - mono_ms();
                if (left <= 0 || !wait_readable(f, (int) left))
                        return NULL;
                read_more(f);
        }
}

static void remember_id(FakeQemu *f, json_object *cmd) {
        json_object *id;
        json_object_put(f->prev_id);
        f->prev_id = f->last_id;
        f->last_id = json_object_object_get_ex(cmd, "id", &id) ? json_object_get(id) : NULL;
}

static void serve_expect(FakeQemu *f, Step *s, size_t idx) {
        json_object *cmd = read_command(f, FAKE_READ_TIMEOUT_MS), *args = NULL, *empty;
        const char *exec;
        char why[512];
        bool valid;

        if (!cmd) {
                failf(f, "step %zu: expected '%s' but the client %s", idx,
                      s->kind == STEP_EXPECT ? s->execute : "(any command)",
                      f->peer_closed ? "closed the connection" : "sent nothing");
                return;
        }
        remember_id(f, cmd);
        exec = json_object_is_type(cmd, json_type_object) &&
                               json_object_object_get_ex(cmd, "execute", &args)
                       ? json_object_get_string(args)
                       : NULL;
        args = NULL;
        if (s->kind == STEP_EXPECT && (!exec || strcmp(exec, s->execute) != 0))
                failf(f, "step %zu: expected '%s', got %s", idx, s->execute,
                      json_object_to_json_string(cmd));
        if (s->kind == STEP_EXPECT) {
                empty = json_object_new_object();
                if (!json_object_object_get_ex(cmd, "arguments", &args))
                        args = empty;
                if (!json_object_equal(args, s->args ? s->args : empty))
                        failf(f, "step %zu: '%s' arguments %s, expected %s", idx, s->execute,
                              json_object_to_json_string(args),
                              s->args ? json_object_to_json_string(s->args) : "{}");
                json_object_put(empty);
        }
        if (f->schema) {
                valid = qapi_schema_check_command(f->schema, cmd, why, sizeof(why));
                if (!valid && !s->want_invalid)
                        failf(f, "step %zu: QEMU 7.2 would reject %s: %s", idx,
                              json_object_to_json_string(cmd), why);
                if (valid && s->want_invalid)
                        failf(f, "step %zu: schema accepted %s, which QEMU rejected in the recording",
                              idx, json_object_to_json_string(cmd));
        }
        json_object_put(cmd);
}

static char *expand_ids(FakeQemu *f, const char *tmpl) {
        const char *id = f->last_id ? json_object_to_json_string(f->last_id) : "null";
        const char *prev = f->prev_id ? json_object_to_json_string(f->prev_id) : "null";
        size_t cap = strlen(tmpl) * 2 + strlen(id) + strlen(prev) + 64, n = 0;
        char *out = malloc(cap);
        for (const char *p = tmpl; *p;) {
                const char *rep = NULL;
                size_t skip = 0;
                if (strncmp(p, "$PREVID", 7) == 0)
                        rep = prev, skip = 7;
                else if (strncmp(p, "$ID", 3) == 0)
                        rep = id, skip = 3;
                if (rep) {
                        size_t l = strlen(rep);
                        if (n + l + 1 > cap)
                                out = realloc(out, cap = (n + l) * 2 + 1);
                        memcpy(out + n, rep, l);
                        n += l;
                        p += skip;
                } else {
                        if (n + 2 > cap)
                                out = realloc(out, cap = cap * 2);
                        out[n++] = *p++;
                }
        }
        out[n] = '\0';
        return out;
}

static void serve_reply(FakeQemu *f, Step *s) {
        json_object *r = json_tokener_parse(s->data);
        char *line = NULL;
        json_object_object_del(r, "id");
        if (f->last_id)
                json_object_object_add(r, "id", json_object_get(f->last_id));
        if (asprintf(&line, "%s\r\n", json_object_to_json_string_ext(r, JSON_C_TO_STRING_SPACED)) > 0)
                send_all(f, line, strlen(line));
        free(line);
        json_object_put(r);
}

static void serve_event(FakeQemu *f, Step *s) {
        struct timespec ts;
        char *line = NULL;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (asprintf(&line,
                     "{\"timestamp\": {\"seconds\": %lld, \"microseconds\": %ld}, \"event\": \"%s\"%s%s}\r\n",
                     (long long) ts.tv_sec, ts.tv_nsec / 1000, s->execute, s->data ? ", \"data\": " : "",
                     s->data ? s->data : "") > 0)
                send_all(f, line, strlen(line));
        free(line);
}

static void serve_big(FakeQemu *f, Step *s) {
        static const char head[] = "{\"return\": {\"pad\": \"", tail[] = "\"}}";
        size_t fixed = strlen(head) + strlen(tail);
        size_t total = s->len + 2;
        char *buf;
        if (s->len < fixed) {
                failf(f, "send-big: %zu bytes is too small", s->len);
                return;
        }
        buf = malloc(total);
        memcpy(buf, head, strlen(head));
        memset(buf + strlen(head), 'x', s->len - fixed);
        memcpy(buf + s->len - strlen(tail), tail, strlen(tail));
        memcpy(buf + s->len, "\r\n", 2);
        send_all(f, buf, s->terminate ? total : s->len);
        free(buf);
}

static void serve_quiet(FakeQemu *f, Step *s, size_t idx) {
        json_object *cmd = read_command(f, s->ms);
        if (cmd) {
                failf(f, "step %zu: a second command arrived while one was in flight: %s", idx,
                      json_object_to_json_string(cmd));
                remember_id(f, cmd);
                json_object_put(cmd);
        }
}

static void serve_wait_close(FakeQemu *f, size_t idx) {
        int64_t until = mono_ms() + FAKE_READ_TIMEOUT_MS;
        while (!f->peer_closed && mono_ms() < until && !stopping(f)) {
                json_object *cmd = read_command(f, (int) (until - mono_ms()));
                if (cmd) {
                        failf(f, "step %zu: unexpected command while waiting for close: %s", idx,
                              json_object_to_json_string(cmd));
                        json_object_put(cmd);
                }
        }
        if (!f->peer_closed)
                failf(f, "step %zu: the client did not close its end", idx);
}

static void serve_step(FakeQemu *f, Step *s, size_t idx) {
        switch (s->kind) {
        case STEP_EXPECT:
        case STEP_EXPECT_ANY:
                serve_expect(f, s, idx);
                break;
        case STEP_REPLY:
                serve_reply(f, s);
                break;
        case STEP_SEND: {
                char *out = s->tmpl ? expand_ids(f, s->data) : NULL;
                send_all(f, out ? out : s->data, out ? strlen(out) : s->len);
                free(out);
                break;
        }
        case STEP_SEND_BIG:
                serve_big(f, s);
                break;
        case STEP_EVENT:
                serve_event(f, s);
                break;
        case STEP_DELAY: {
                struct timespec ts = { s->ms / 1000, (long) (s->ms % 1000) * 1000000L };
                nanosleep(&ts, NULL);
                break;
        }
        case STEP_GATE:
                pthread_mutex_lock(&f->mu);
                while (f->gates_open == 0 && !f->stop)
                        pthread_cond_wait(&f->cv, &f->mu);
                if (f->gates_open > 0)
                        f->gates_open--;
                pthread_mutex_unlock(&f->mu);
                break;
        case STEP_QUIET:
                serve_quiet(f, s, idx);
                break;
        case STEP_CLOSE:
                /* close(), not shutdown(): with unread input the client
                 * must see a reset, as when QEMU is killed */
                close(f->conn);
                f->conn = -1;
                f->peer_closed = true;
                break;
        case STEP_WAIT_CLOSE:
                serve_wait_close(f, idx);
                break;
        case STEP_WAIT_UNREAD:
                if (f->rlen == 0 && !wait_readable(f, FAKE_READ_TIMEOUT_MS))
                        failf(f, "step %zu: the client sent nothing", idx);
                break;
        }
}

static void *server_main(void *p) {
        FakeQemu *f = p;
        struct pollfd pl[2] = { { f->listen_fd, POLLIN, 0 }, { f->stop_pipe[0], POLLIN, 0 } };

        if (poll(pl, 2, -1) <= 0 || pl[1].revents)
                return NULL;
        f->conn = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (f->conn < 0) {
                failf(f, "accept: %s", strerror(errno));
                return NULL;
        }
        if (f->greeting) {
                char *line = NULL;
                if (asprintf(&line, "%s\r\n", f->greeting) > 0)
                        send_all(f, line, strlen(line));
                free(line);
        }
        for (;;) {
                Step s;
                size_t idx;

                pthread_mutex_lock(&f->mu);
                while (!f->stop && f->next == f->n_steps) {
                        f->all_served = true;
                        pthread_cond_broadcast(&f->cv);
                        pthread_cond_wait(&f->cv, &f->mu);
                }
                if (f->stop) {
                        pthread_mutex_unlock(&f->mu);
                        break;
                }
                idx = f->next;
                s = f->steps[idx];
                pthread_mutex_unlock(&f->mu);

                if (f->conn < 0 && s.kind != STEP_DELAY && s.kind != STEP_GATE)
                        failf(f, "step %zu (%s): connection already closed", idx, step_names[s.kind]);
                else
                        serve_step(f, &s, idx);

                pthread_mutex_lock(&f->mu);
                f->next++;
                pthread_mutex_unlock(&f->mu);
        }
        return NULL;
}

void fake_start(FakeQemu *f) {
        if (pthread_create(&f->thread, NULL, server_main, f) != 0)
                abort();
        f->started = true;
}

int fake_commands_seen(FakeQemu *f) {
        int n;
        pthread_mutex_lock(&f->mu);
        n = f->commands;
        pthread_mutex_unlock(&f->mu);
        return n;
}

int fake_finish(FakeQemu *f, int timeout_ms, const char *label) {
        struct timespec ts;
        int n;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&f->mu);
        while (!(f->all_served && f->next == f->n_steps))
                if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0)
                        break;
        if (f->next < f->n_steps) {
                fprintf(stderr, "fake %s: transcript stopped at step %zu of %zu (%s)\n", label,
                        f->next, f->n_steps, step_names[f->steps[f->next].kind]);
                f->n_failures++;
        }
        n = f->n_failures;
        for (int i = 0; i < f->n_failures && i < FAKE_MAX_FAILURES; i++)
                if (f->failures[i])
                        fprintf(stderr, "fake %s: %s\n", label, f->failures[i]);
        pthread_mutex_unlock(&f->mu);
        return n;
}

void fake_free(FakeQemu *f) {
        if (!f)
                return;
        pthread_mutex_lock(&f->mu);
        f->stop = true;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&f->mu);
        if (write(f->stop_pipe[1], "x", 1) < 0)
                perror("fake stop");
        if (f->started)
                pthread_join(f->thread, NULL);
        if (f->conn >= 0)
                close(f->conn);
        close(f->listen_fd);
        close(f->stop_pipe[0]);
        close(f->stop_pipe[1]);
        unlink(f->path);
        for (size_t i = 0; i < f->n_steps; i++) {
                free(f->steps[i].execute);
                free(f->steps[i].data);
                json_object_put(f->steps[i].args);
        }
        for (int i = 0; i < f->n_failures && i < FAKE_MAX_FAILURES; i++)
                free(f->failures[i]);
        free(f->steps);
        free(f->greeting);
        free(f->rbuf);
        json_object_put(f->last_id);
        json_object_put(f->prev_id);
        pthread_mutex_destroy(&f->mu);
        pthread_cond_destroy(&f->cv);
        free(f);
}
