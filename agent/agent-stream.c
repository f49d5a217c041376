/* Where an incoming migration stream listens (see agent-stream.h): the
 * MigStream answer of MigratePrepare, its URI, the random first port of a
 * new listener, and the transport each side uses.  The destination's loop over ports is in
 * agent-migrate-in.c (it needs QEMU's migrate-incoming to tell which port
 * is taken).
 */
#define _GNU_SOURCE
#include "agent-stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "err.h"

int mig_stream_set(MigStream *s, const char *host, unsigned port, MigTransport t) {
        struct in_addr in4;
        struct in6_addr in6;
        bool v6 = inet_pton(AF_INET6, host, &in6) == 1;
        if (!v6 && inet_pton(AF_INET, host, &in4) != 1)
                return err_set(-EINVAL, "stream host '%.64s' is not an IP address", host);
        if (port == 0 || port > 65535)
                return err_set(-EINVAL, "stream port %u is not 1..65535", port);
        if (strlen(host) >= sizeof(s->host))
                return err_set(-EINVAL, "stream host is too long");
        if (t == MIG_TRANSPORT_DEFAULT || (unsigned) t >= _MIG_TRANSPORT_MAX)
                return err_set(-EINVAL, "stream transport %d is unknown", (int) t);
        snprintf(s->host, sizeof(s->host), "%s", host);
        s->port = port;
        s->tls = t == MIG_TRANSPORT_TLS;
        s->transport = t;
        snprintf(s->uri, sizeof(s->uri), v6 ? "tcp:[%s]:%u" : "tcp:%s:%u", host, port);
        return 0;
}

int mig_stream_from_uri(const char *uri, MigTransport t, MigStream *ret) {
        char host[64];
        const char *colon = strrchr(uri, ':');
        const char *h = uri + 4;
        size_t n;
        if (strncmp(uri, "tcp:", 4) != 0 || !colon || colon < h)
                return err_set(-EINVAL, "'%.96s' is not a tcp: stream URI", uri);
        n = (size_t) (colon - h);
        if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
                h++;
                n -= 2;
        }
        if (n >= sizeof(host))
                return err_set(-EINVAL, "'%.96s' is not a tcp: stream URI", uri);
        snprintf(host, sizeof(host), "%.*s", (int) n, h);
        char *end;
        unsigned long port = strtoul(colon + 1, &end, 10);
        if (*end || end == colon + 1)
                return err_set(-EINVAL, "'%.96s' is not a tcp: stream URI", uri);
        return mig_stream_set(ret, host, port > 65535 ? 0 : (unsigned) port, t);
}

bool agent_stream_tls(const Agent *a) {
        return a->cfg.tls_cert[0] != '\0';
}

unsigned agent_stream_first_port(unsigned low, unsigned high) {
        unsigned x = 0;
        if (getrandom(&x, sizeof(x), GRND_NONBLOCK) != sizeof(x))
                x = (unsigned) random(); /* entropy not ready: still not the range's first port */
        return low + x % (high - low + 1);
}

int agent_stream_incoming_transport(const Agent *a, MigTransport asked, MigTransport *ret) {
        bool dev = a->cfg.dev_mode && !agent_stream_tls(a);
        MigTransport t = asked == MIG_TRANSPORT_DEFAULT ? (dev ? MIG_TRANSPORT_PLAIN : MIG_TRANSPORT_TLS) : asked;
        if (t == MIG_TRANSPORT_TLS && !agent_stream_tls(a))
                return err_set(-EPERM, "a TLS stream needs a certificate, and this agent has none (dev_mode)");
        if (t == MIG_TRANSPORT_PLAIN && !dev)
                return err_set(-EPERM, "a plaintext stream is refused outside dev_mode");
        if ((unsigned) t >= _MIG_TRANSPORT_MAX)
                return err_set(-EPERM, "stream transport %d is unknown here", (int) t);
        *ret = t;
        return 0;
}

int agent_stream_outgoing(const Agent *a, const char *dest_host, MigTransport asked, AgentMigPeer *ret) {
        AgentMigPeer p;
        int r = agent_config_migration_peer(&a->cfg, dest_host, &p);
        if (r < 0)
                return r;
        if (asked != MIG_TRANSPORT_DEFAULT)
                p.transport = asked;
        if (p.transport == MIG_TRANSPORT_TLS && !agent_stream_tls(a))
                return err_set(-EPERM, "a TLS stream needs a certificate, and this agent has none (dev_mode)");
        if (p.transport == MIG_TRANSPORT_PLAIN && !a->cfg.dev_mode)
                return err_set(-EPERM, "a plaintext stream is refused outside dev_mode");
        if (p.transport == MIG_TRANSPORT_SSH) {
                if (!p.ssh_identity[0] || !p.ssh_known_hosts[0])
                        return err_set(-EPERM, "the ssh transport to %s needs ssh.identity and ssh.known_hosts in "
                                       "the agent's config", dest_host);
                if (a->cfg.qemu_chroot[0])
                        return err_set(-EPERM, "the ssh transport needs QEMU to reach run_dir, and qemu_chroot "
                                       "is set");
        }
        *ret = p;
        return 0;
}

int agent_stream_qemu_ids(const Agent *a, uid_t *ret_uid, gid_t *ret_gid) {
        char buf[4096];
        struct passwd pw, *found = NULL;
        *ret_uid = (uid_t) -1;
        *ret_gid = (gid_t) -1;
        if (geteuid() != 0 || !a->cfg.qemu_user[0])
                return 0;
        int e = getpwnam_r(a->cfg.qemu_user, &pw, buf, sizeof(buf), &found);
        if (!found)
                return err_set(e ? -e : -ENOENT, "qemu_user '%s' is not a user on this host", a->cfg.qemu_user);
        *ret_uid = pw.pw_uid;
        *ret_gid = pw.pw_gid;
        return 0;
}
