/* Shared pieces of the libFuzzer harnesses (contract in fuzz-util.h): the
 * quiet logs, the per-process temporary folder, inputs as memfd files and
 * the scripted channel peer.  The peer's thread polls three things: the
 * listening socket (a client connects: the newest connection replaces any
 * older one), the connection (requests in, segments out) and an eventfd
 * that ends the run. */
#define _GNU_SOURCE
#include "fuzz-util.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static void die(const char *what) {
        fprintf(stderr, "fuzz harness: %s: %s\n", what, strerror(errno));
        abort();
}

void fuzz_init(void) {
        log_set_level(LOG_LEVEL_MAX);
}

static char tmpdir[64];

void fuzz_empty_dir(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *e;
        if (!d)
                return;
        while ((e = readdir(d))) {
                char p[512];
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                        continue;
                snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
                if (unlink(p) < 0 && (errno == EISDIR || errno == EPERM)) {
                        fuzz_empty_dir(p);
                        rmdir(p);
                }
        }
        closedir(d);
}

static void tmpdir_remove(void) {
        fuzz_empty_dir(tmpdir);
        rmdir(tmpdir);
}

const char *fuzz_tmpdir(void) {
        if (!tmpdir[0]) {
                snprintf(tmpdir, sizeof(tmpdir), "/tmp/drover-fuzz-XXXXXX");
                if (!mkdtemp(tmpdir))
                        die("mkdtemp");
                atexit(tmpdir_remove);
        }
        return tmpdir;
}

int fuzz_memfd_path(const uint8_t *data, size_t size, char path[64]) {
        int fd = memfd_create("fuzz-input", MFD_CLOEXEC);
        if (fd < 0)
                die("memfd_create");
        for (size_t off = 0; off < size;) {
                ssize_t n = write(fd, data + off, size - off);
                if (n <= 0)
                        die("write memfd");
                off += (size_t) n;
        }
        snprintf(path, 64, "/proc/self/fd/%d", fd);
        return fd;
}

/* ---- the scripted peer ------------------------------------------------- */

#define PEER_MAX_SEGMENTS 64
#define PEER_LINE_MAX 4096

struct FuzzPeer {
        int listen_fd;
        int stop_fd;
        char path[108];
        pthread_t thread;
        bool running;
        /* the run's script, owned by the thread while it runs */
        char *data;
        size_t size;
        bool greet;
        size_t seg_off[PEER_MAX_SEGMENTS + 1]; /* segment i is [seg_off[i], seg_end[i]) */
        size_t seg_end[PEER_MAX_SEGMENTS + 1];
        size_t n_seg, next_seg;
        int conn;
        char line[PEER_LINE_MAX];
        size_t line_len;
        unsigned long long last_id;
};

static void split_segments(FuzzPeer *p) {
        size_t start = 0;
        p->n_seg = 0;
        for (size_t i = 0; i <= p->size && p->n_seg < PEER_MAX_SEGMENTS; i++) {
                bool at_line = i == 0 || p->data[i - 1] == '\n';
                bool sep = at_line && i + 3 <= p->size && memcmp(p->data + i, "%%\n", 3) == 0;
                if (i == p->size || sep) {
                        p->seg_off[p->n_seg] = start;
                        p->seg_end[p->n_seg] = i;
                        p->n_seg++;
                        start = i + 3;
                        if (i == p->size)
                                break;
                        i += 2;
                }
        }
}

static void send_all(int fd, const char *buf, size_t len) {
        while (len) {
                ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
                if (n <= 0)
                        return; /* the client went away or stopped reading: its problem */
                buf += n;
                len -= (size_t) n;
        }
}

/* Write the next segment with "@ID@" replaced, or close when none is left. */
static void send_next(FuzzPeer *p) {
        if (p->next_seg >= p->n_seg) {
                close(p->conn);
                p->conn = -1;
                return;
        }
        const char *s = p->data + p->seg_off[p->next_seg];
        size_t len = p->seg_end[p->next_seg] - p->seg_off[p->next_seg];
        p->next_seg++;
        char id[32];
        int idlen = snprintf(id, sizeof(id), "%llu", p->last_id);
        for (;;) {
                const char *m = memmem(s, len, "@ID@", 4);
                size_t head = m ? (size_t) (m - s) : len;
                send_all(p->conn, s, head);
                if (!m)
                        break;
                send_all(p->conn, id, (size_t) idlen);
                s = m + 4;
                len -= head + 4;
        }
}

/* The last "id": N of a request line, for @ID@. */
static void note_id(FuzzPeer *p, const char *s, size_t len) {
        const char *last = NULL;
        for (const char *q = s; (q = memmem(q, len - (size_t) (q - s), "\"id\"", 4)); q += 4)
                last = q;
        if (!last)
                return;
        last += 4;
        while (last < s + len && (*last == ' ' || *last == ':'))
                last++;
        unsigned long long v = 0;
        bool any = false;
        for (; last < s + len && *last >= '0' && *last <= '9'; last++, any = true)
                v = v * 10 + (unsigned long long) (*last - '0');
        if (any)
                p->last_id = v;
}

static void conn_readable(FuzzPeer *p) {
        char buf[4096];
        ssize_t n = recv(p->conn, buf, sizeof(buf), 0);
        if (n <= 0) {
                close(p->conn);
                p->conn = -1;
                return;
        }
        for (ssize_t i = 0; i < n && p->conn >= 0; i++) {
                if (p->line_len < sizeof(p->line))
                        p->line[p->line_len++] = buf[i];
                if (buf[i] != '\n')
                        continue;
                note_id(p, p->line, p->line_len);
                p->line_len = 0;
                send_next(p);
        }
}

static void *peer_main(void *arg) {
        FuzzPeer *p = arg;
        for (;;) {
                struct pollfd fds[3] = {
                        { .fd = p->stop_fd, .events = POLLIN },
                        { .fd = p->listen_fd, .events = POLLIN },
                        { .fd = p->conn, .events = POLLIN },
                };
                if (poll(fds, p->conn >= 0 ? 3 : 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        die("poll");
                }
                if (fds[0].revents)
                        break;
                if (fds[1].revents & POLLIN) {
                        int c = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
                        if (c >= 0) {
                                if (p->conn >= 0)
                                        close(p->conn);
                                p->conn = c;
                                p->line_len = 0;
                                struct timeval tv = { .tv_sec = 1 };
                                setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
                                if (p->next_seg >= p->n_seg) {
                                        close(p->conn);
                                        p->conn = -1;
                                } else if (p->greet && p->next_seg == 0)
                                        send_next(p);
                        }
                }
                if (p->conn >= 0 && fds[2].revents)
                        conn_readable(p);
        }
        return NULL;
}

FuzzPeer *fuzz_peer_get(void) {
        static FuzzPeer *peer;
        if (peer)
                return peer;
        FuzzPeer *p = calloc(1, sizeof(*p));
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (!p)
                die("calloc");
        snprintf(p->path, sizeof(p->path), "%s/peer.sock", fuzz_tmpdir());
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
        p->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        p->stop_fd = eventfd(0, EFD_CLOEXEC);
        p->conn = -1;
        if (p->listen_fd < 0 || p->stop_fd < 0 || bind(p->listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            listen(p->listen_fd, 16) < 0)
                die("peer socket");
        return peer = p;
}

const char *fuzz_peer_path(FuzzPeer *p) {
        return p->path;
}

void fuzz_peer_serve(FuzzPeer *p, const uint8_t *data, size_t size, bool greet) {
        p->data = malloc(size + 1);
        if (!p->data)
                die("malloc");
        memcpy(p->data, data, size);
        p->size = size;
        p->greet = greet;
        p->next_seg = 0;
        p->last_id = 0;
        p->line_len = 0;
        split_segments(p);
        if (pthread_create(&p->thread, NULL, peer_main, p) != 0)
                die("pthread_create");
        p->running = true;
}

void fuzz_peer_finish(FuzzPeer *p) {
        uint64_t one = 1;
        if (!p->running)
                return;
        if (write(p->stop_fd, &one, sizeof(one)) != sizeof(one))
                die("eventfd write");
        pthread_join(p->thread, NULL);
        p->running = false;
        if (read(p->stop_fd, &one, sizeof(one)) != sizeof(one))
                die("eventfd read");
        if (p->conn >= 0)
                close(p->conn);
        p->conn = -1;
        /* connections the client made after the thread stopped looking */
        for (;;) {
                struct pollfd pfd = { .fd = p->listen_fd, .events = POLLIN };
                if (poll(&pfd, 1, 0) <= 0)
                        break;
                int c = accept4(p->listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        break;
                close(c);
        }
        free(p->data);
        p->data = NULL;
}
