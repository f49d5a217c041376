/* The SSH transport of the migration stream (see agent-stream.h): a libssh
 * session from the source agent to the destination host, and a pump thread
 * per migration.
 *
 * Opening runs in the migration thread with no lock held: connect, check
 * the server's host key against the configured known_hosts file (only an
 * exact match passes: a changed key, a key of another type and an unknown
 * host are refused, each naming the host and the key's SHA256 fingerprint),
 * authenticate with the configured private key (no passwords, no agent, no
 * ~/.ssh/config), and open one direct-tcpip channel to the destination
 * QEMU's loopback listener at once, so that a server refusing the forward
 * fails the migration before the source QEMU sends anything.  The source
 * QEMU migrates to a unix socket in run_dir (mode 0600, owned by the QEMU
 * user) and a connection is admitted only from the QEMU process itself
 * (SO_PEERCRED): nobody else on the source host can feed the tunnel.
 *
 * From then on the session belongs to the pump thread.  Each accepted
 * connection gets a channel (the pre-opened one first; more for multifd).
 * The thread polls the wakeup fd, the listening socket, the session's
 * socket and every connection; bytes from QEMU are written to their channel
 * (blocking libssh writes, which process incoming packets while they wait
 * for the window, so the return path never stalls them), and data libssh
 * already buffered is drained before each poll.  EOF travels both ways
 * (shutdown of the sending side); a connection ends when both directions
 * did.  A session error ends every connection, which QEMU sees as a failed
 * stream; the reason is kept for the migration's error.  Stopping is a flag
 * plus an eventfd; a thread stuck in a write (a dead link) is freed by
 * shutting the session's socket down under it after 5 s.
 */
#define _GNU_SOURCE
#include "agent-stream.h"

#include <errno.h>
#include <fcntl.h>
#include <libssh/libssh.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

#define TUNNEL_MAX_CONNS 65         /* the main stream and up to 64 multifd channels */
#define TUNNEL_BUF (256 * 1024)
#define TUNNEL_STEP_TIMEOUT_S 10    /* each blocking libssh step (connect, auth, channel open) */
#define TUNNEL_IDLE_POLL_MS 500
#define TUNNEL_STOP_GRACE_S 5

/* One QEMU connection and its channel. */
typedef struct TunnelConn {
        int fd;          /* pump thread; -1 when closed */
        ssh_channel ch;  /* pump thread; NULL when closed */
        bool local_eof;  /* QEMU shut its sending side: EOF sent on the channel */
        bool remote_eof; /* the channel's EOF arrived: our sending side to QEMU is shut */
} TunnelConn;

struct SshTunnel {
        ssh_session session;          /* the opener, then the pump thread only */
        ssh_channel spare;            /* pump thread: the channel opened at setup, until a connection takes it */
        int listen_fd;                /* pump thread (closed by close) */
        int wake_fd;                  /* immutable: eventfd */
        int ssh_fd;                   /* immutable once open: the session's socket */
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)]; /* immutable */
        pid_t qemu_pid;               /* immutable */
        char fwd_host[64];            /* immutable */
        unsigned fwd_port;            /* immutable */
        char describe[400];           /* immutable once open */
        atomic_bool stop;             /* atomic */
        atomic_bool failed;           /* atomic: error is written before it is set */
        char error[ERR_MSG_MAX];      /* pump thread, then read-only once failed is set */
        bool started;                 /* the owner's */
        pthread_t thread;             /* the owner's */
        TunnelConn conns[TUNNEL_MAX_CONNS]; /* pump thread */
        size_t n_conns;               /* pump thread */
        char *buf;                    /* pump thread: TUNNEL_BUF bytes */
};

/* ---- opening ------------------------------------------------------------------------ */

/* "SHA256:..." of the server's key and its type into @fp / @type. */
static void server_key(ssh_session s, char *fp, size_t fp_size, char *type, size_t type_size) {
        ssh_key key = NULL;
        unsigned char *hash = NULL;
        size_t hlen = 0;
        snprintf(fp, fp_size, "(no key)");
        snprintf(type, type_size, "unknown");
        if (ssh_get_server_publickey(s, &key) != SSH_OK)
                return;
        snprintf(type, type_size, "%s", ssh_key_type_to_char(ssh_key_type(key)) ?: "unknown");
        if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) == 0) {
                char *f = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
                if (f)
                        snprintf(fp, fp_size, "%s", f);
                ssh_string_free_char(f);
                ssh_clean_pubkey_hash(&hash);
        }
        ssh_key_free(key);
}

/* Only a known_hosts entry that matches passes. */
static int check_host_key(ssh_session s, const AgentMigPeer *p, char *fp, size_t fp_size) {
        char type[32];
        server_key(s, fp, fp_size, type, sizeof(type));
        enum ssh_known_hosts_e k = ssh_session_is_known_server(s);
        switch (k) {
        case SSH_KNOWN_HOSTS_OK:
                return 0;
        case SSH_KNOWN_HOSTS_CHANGED:
                return err_set(-EACCES, "SSH host key of %s port %u does not match %s: the server presents %s %s "
                               "(a changed key, or someone in the middle); refused",
                               p->ssh_host, p->ssh_port, p->ssh_known_hosts, type, fp);
        case SSH_KNOWN_HOSTS_OTHER:
                return err_set(-EACCES, "SSH host %s port %u presents %s %s, and %s holds a key of another type "
                               "for it; refused", p->ssh_host, p->ssh_port, type, fp, p->ssh_known_hosts);
        case SSH_KNOWN_HOSTS_NOT_FOUND:
        case SSH_KNOWN_HOSTS_UNKNOWN:
                return err_set(-EACCES, "SSH host %s port %u is not in %s (it presents %s %s); refused",
                               p->ssh_host, p->ssh_port, p->ssh_known_hosts, type, fp);
        case SSH_KNOWN_HOSTS_ERROR:
        default:
                return err_set(-EACCES, "SSH host key of %s port %u (%s %s) cannot be checked against %s: %s",
                               p->ssh_host, p->ssh_port, type, fp, p->ssh_known_hosts, ssh_get_error(s));
        }
}

static int session_open(const AgentMigPeer *p, ssh_session *ret, char *fp, size_t fp_size) {
        ssh_session s = ssh_new();
        ssh_key priv = NULL;
        long timeout = TUNNEL_STEP_TIMEOUT_S;
        int port = (int) p->ssh_port, no = 0, r;

        if (!s)
                return err_set(-ENOMEM, "out of memory");
        /* AES-GCM first: AES-NI makes it the fastest here (docs/performance.md) */
        if (ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_HOST, p->ssh_host) < 0 || ssh_options_set(s, SSH_OPTIONS_PORT, &port) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_USER, p->ssh_user) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, p->ssh_known_hosts) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, p->ssh_known_hosts) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_TIMEOUT, &timeout) < 0 ||
            ssh_options_set(s, SSH_OPTIONS_CIPHERS_C_S,
                            "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr") < 0 ||
            ssh_options_set(s, SSH_OPTIONS_CIPHERS_S_C,
                            "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr") < 0) {
                r = err_set(-EINVAL, "SSH options for %s: %s", p->ssh_host, ssh_get_error(s));
                goto fail;
        }
        if (ssh_connect(s) != SSH_OK) {
                r = err_set(-EHOSTUNREACH, "SSH to %s port %u: %s", p->ssh_host, p->ssh_port, ssh_get_error(s));
                goto fail;
        }
        if ((r = check_host_key(s, p, fp, fp_size)) < 0)
                goto fail;
        if (ssh_pki_import_privkey_file(p->ssh_identity, NULL, NULL, NULL, &priv) != SSH_OK) {
                r = err_set(-EINVAL, "SSH identity %s cannot be read (a key without a passphrase is needed)",
                            p->ssh_identity);
                goto fail;
        }
        int a = ssh_userauth_publickey(s, NULL, priv);
        ssh_key_free(priv);
        if (a != SSH_AUTH_SUCCESS) {
                r = err_set(-EACCES, "SSH %s@%s port %u refused the key %s: %s", p->ssh_user, p->ssh_host,
                            p->ssh_port, p->ssh_identity, a == SSH_AUTH_ERROR ? ssh_get_error(s) : "not authorized");
                goto fail;
        }
        *ret = s;
        return 0;
fail:
        ssh_disconnect(s);
        ssh_free(s);
        return r;
}

/* A direct-tcpip channel to the destination's listener (blocking). */
static int channel_open(SshTunnel *t, ssh_channel *ret) {
        ssh_channel ch = ssh_channel_new(t->session);
        if (!ch)
                return err_set(-ENOMEM, "SSH channel: %s", ssh_get_error(t->session));
        if (ssh_channel_open_forward(ch, t->fwd_host, (int) t->fwd_port, "127.0.0.1", 0) != SSH_OK) {
                int r = err_set(-ECONNREFUSED, "SSH server refused to forward to %s:%u on the destination: %s",
                                t->fwd_host, t->fwd_port, ssh_get_error(t->session));
                ssh_channel_free(ch);
                return r;
        }
        *ret = ch;
        return 0;
}

static int listener_open(SshTunnel *t, uid_t uid, gid_t gid) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", t->path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return err_set(-errno, "tunnel socket: %s", strerror(errno));
        (void) unlink(t->path); /* a crash's leftover */
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            (uid != (uid_t) -1 && chown(t->path, uid, gid) < 0) || chmod(t->path, 0600) < 0 || listen(fd, 16) < 0) {
                int r = err_set(-errno, "tunnel socket %s: %s", t->path, strerror(errno));
                close(fd);
                (void) unlink(t->path);
                return r;
        }
        t->listen_fd = fd;
        return 0;
}

/* ---- the pump thread ---------------------------------------------------------------- */

static void pump_fail(SshTunnel *t, const char *fmt, ...) _printf_(2, 3);
static void pump_fail(SshTunnel *t, const char *fmt, ...) {
        va_list ap;
        if (atomic_load(&t->failed))
                return;
        va_start(ap, fmt);
        vsnprintf(t->error, sizeof(t->error), fmt, ap);
        va_end(ap);
        atomic_store(&t->failed, true);
}

static void conn_close(TunnelConn *c) {
        if (c->ch) {
                ssh_channel_close(c->ch);
                ssh_channel_free(c->ch);
                c->ch = NULL;
        }
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
}

static bool write_all(int fd, const char *p, size_t n) {
        while (n) {
                ssize_t k = send(fd, p, n, MSG_NOSIGNAL); /* QEMU gone: an error, never SIGPIPE */
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return false;
                p += k;
                n -= (size_t) k;
        }
        return true;
}

/* A new connection on the socket: QEMU's, or refused. */
static void pump_accept(SshTunnel *t) {
        int fd = accept4(t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        struct ucred cred = { 0 };
        socklen_t len = sizeof(cred);
        if (fd < 0)
                return;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.pid != t->qemu_pid) {
                log_warning("SSH tunnel %s: refused a connection from pid %d (only QEMU %d may stream)", t->path,
                            (int) cred.pid, (int) t->qemu_pid);
                close(fd);
                return;
        }
        if (t->n_conns == TUNNEL_MAX_CONNS) {
                close(fd);
                return;
        }
        TunnelConn *c = &t->conns[t->n_conns];
        *c = (TunnelConn) { .fd = fd };
        if (t->spare) {
                c->ch = t->spare;
                t->spare = NULL;
        } else if (channel_open(t, &c->ch) < 0) {
                pump_fail(t, "%s", err_msg());
                close(fd);
                return;
        }
        t->n_conns++;
}

/* Channel to QEMU for every connection: what libssh has (it reads the
 * socket without blocking).  Returns whether bytes moved; false with
 * t->failed set on a session error. */
static bool pump_down(SshTunnel *t) {
        bool moved = false;
        for (size_t i = 0; i < t->n_conns; i++) {
                TunnelConn *c = &t->conns[i];
                if (!c->ch || c->remote_eof)
                        continue;
                int n = ssh_channel_poll(c->ch, 0);
                if (n == SSH_ERROR) {
                        pump_fail(t, "SSH session broke: %s", ssh_get_error(t->session));
                        return false;
                }
                if (n == SSH_EOF) {
                        c->remote_eof = true;
                        (void) shutdown(c->fd, SHUT_WR);
                        continue;
                }
                if (n <= 0)
                        continue;
                int k = ssh_channel_read_nonblocking(c->ch, t->buf, (uint32_t) MIN(n, TUNNEL_BUF), 0);
                if (k == SSH_ERROR) {
                        pump_fail(t, "SSH session broke: %s", ssh_get_error(t->session));
                        return false;
                }
                if (k > 0 && !write_all(c->fd, t->buf, (size_t) k))
                        conn_close(c); /* QEMU went away: its side of the migration failed */
                moved |= k > 0;
        }
        return moved;
}

/* QEMU to its channel: one read's worth. */
static void pump_up(SshTunnel *t, TunnelConn *c) {
        ssize_t k = read(c->fd, t->buf, TUNNEL_BUF);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (k < 0) {
                conn_close(c);
                return;
        }
        if (k == 0) {
                c->local_eof = true;
                (void) ssh_channel_send_eof(c->ch);
                return;
        }
        if (ssh_channel_write(c->ch, t->buf, (uint32_t) k) != k)
                pump_fail(t, "SSH session broke while sending: %s", ssh_get_error(t->session));
}

static void *pump_thread(void *arg) {
        SshTunnel *t = arg;
        struct pollfd pfd[TUNNEL_MAX_CONNS + 3];
        TunnelConn *who[TUNNEL_MAX_CONNS + 3];
        bool moved = false;

        while (!atomic_load(&t->stop) && !atomic_load(&t->failed)) {
                moved = pump_down(t);
                if (atomic_load(&t->failed))
                        break;
                size_t n = 0;
                pfd[n++] = (struct pollfd) { .fd = t->wake_fd, .events = POLLIN };
                /* the session's socket matters while a channel can receive:
                 * pump_down() reads it (nothing else would, and poll
                 * would spin on it) */
                bool receiving = false;
                for (size_t i = 0; i < t->n_conns; i++)
                        receiving |= t->conns[i].ch && !t->conns[i].remote_eof;
                pfd[n++] = (struct pollfd) { .fd = receiving ? t->ssh_fd : -1, .events = POLLIN };
                if (t->n_conns < TUNNEL_MAX_CONNS)
                        pfd[n++] = (struct pollfd) { .fd = t->listen_fd, .events = POLLIN };
                for (size_t i = 0; i < t->n_conns; i++) {
                        TunnelConn *c = &t->conns[i];
                        if (c->fd >= 0 && c->local_eof && c->remote_eof)
                                conn_close(c);
                        if (c->fd < 0 || c->local_eof)
                                continue;
                        who[n] = c;
                        pfd[n++] = (struct pollfd) { .fd = c->fd, .events = POLLIN };
                }
                if (poll(pfd, n, moved ? 0 : TUNNEL_IDLE_POLL_MS) < 0 && errno != EINTR) {
                        pump_fail(t, "tunnel poll: %s", strerror(errno));
                        break;
                }
                if (pfd[0].revents)
                        break;
                for (size_t i = 2; i < n && !atomic_load(&t->failed); i++) {
                        if (!pfd[i].revents)
                                continue;
                        if (pfd[i].fd == t->listen_fd)
                                pump_accept(t);
                        else
                                pump_up(t, who[i]);
                }
        }
        /* a broken session ends every stream: QEMU sees its connection go */
        if (atomic_load(&t->failed))
                for (size_t i = 0; i < t->n_conns; i++)
                        if (t->conns[i].fd >= 0)
                                (void) shutdown(t->conns[i].fd, SHUT_RDWR);
        return NULL;
}

/* ---- the owner's side --------------------------------------------------------------- */

int agent_stream_ssh_open(const AgentMigPeer *peer, const char *fwd_host, unsigned fwd_port, const char *sock_path,
                          uid_t uid, gid_t gid, pid_t qemu_pid, SshTunnel **ret) {
        char fp[128] = "";
        int r;

        if (strlen(sock_path) >= sizeof(((SshTunnel *) 0)->path) || strlen(fwd_host) >= 64)
                return err_set(-ENAMETOOLONG, "tunnel socket path or forward host too long");
        SshTunnel *t = calloc(1, sizeof(*t));
        if (!t || !(t->buf = malloc(TUNNEL_BUF))) {
                free(t);
                return err_set(-ENOMEM, "out of memory");
        }
        t->listen_fd = t->wake_fd = t->ssh_fd = -1;
        snprintf(t->path, sizeof(t->path), "%s", sock_path);
        snprintf(t->fwd_host, sizeof(t->fwd_host), "%s", fwd_host);
        t->fwd_port = fwd_port;
        t->qemu_pid = qemu_pid;
        if ((t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
                r = err_set(-errno, "eventfd: %s", strerror(errno));
                goto fail;
        }
        if ((r = session_open(peer, &t->session, fp, sizeof(fp))) < 0)
                goto fail;
        t->ssh_fd = ssh_get_fd(t->session);
        snprintf(t->describe, sizeof(t->describe), "%s@%s port %u, host key %s", peer->ssh_user, peer->ssh_host,
                 peer->ssh_port, fp);
        if ((r = channel_open(t, &t->spare)) < 0 || (r = listener_open(t, uid, gid)) < 0)
                goto fail;
        if (pthread_create(&t->thread, NULL, pump_thread, t) != 0) {
                r = err_set(-EAGAIN, "cannot start the tunnel thread");
                goto fail;
        }
        t->started = true;
        *ret = t;
        return 0;
fail:
        agent_stream_ssh_close(t);
        return r;
}

const char *agent_stream_ssh_describe(const SshTunnel *t) {
        return t->describe;
}

const char *agent_stream_ssh_error(const SshTunnel *t) {
        return t && atomic_load(&((SshTunnel *) t)->failed) ? t->error : NULL;
}

void agent_stream_ssh_close(SshTunnel *t) {
        if (!t)
                return;
        if (t->started) {
                uint64_t one = 1;
                struct timespec until;
                atomic_store(&t->stop, true);
                (void) !write(t->wake_fd, &one, sizeof(one));
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += TUNNEL_STOP_GRACE_S;
                if (pthread_timedjoin_np(t->thread, NULL, &until) != 0) {
                        /* stuck in a blocking write to a dead link */
                        (void) shutdown(t->ssh_fd, SHUT_RDWR);
                        pthread_join(t->thread, NULL);
                }
        }
        for (size_t i = 0; i < t->n_conns; i++)
                conn_close(&t->conns[i]);
        if (t->spare) {
                ssh_channel_close(t->spare);
                ssh_channel_free(t->spare);
        }
        if (t->listen_fd >= 0) {
                close(t->listen_fd);
                (void) unlink(t->path);
        }
        if (t->session) {
                ssh_disconnect(t->session);
                ssh_free(t->session);
        }
        if (t->wake_fd >= 0)
                close(t->wake_fd);
        free(t->buf);
        free(t);
}
