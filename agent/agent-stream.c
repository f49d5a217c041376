/* Where an incoming migration stream listens (see agent-stream.h): the
 * MigStream answer of MigratePrepare, its URI, and the random first port
 * of a new listener.  The destination's loop over ports is in
 * agent-migrate-in.c (it needs QEMU's migrate-incoming to tell which port
 * is taken).
 */
#define _GNU_SOURCE
#include "agent-stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "err.h"

int mig_stream_set(MigStream *s, const char *host, unsigned port, bool tls) {
        struct in_addr in4;
        struct in6_addr in6;
        bool v6 = inet_pton(AF_INET6, host, &in6) == 1;
        if (!v6 && inet_pton(AF_INET, host, &in4) != 1)
                return err_set(-EINVAL, "stream host '%.64s' is not an IP address", host);
        if (port == 0 || port > 65535)
                return err_set(-EINVAL, "stream port %u is not 1..65535", port);
        if (strlen(host) >= sizeof(s->host))
                return err_set(-EINVAL, "stream host is too long");
        snprintf(s->host, sizeof(s->host), "%s", host);
        s->port = port;
        s->tls = tls;
        snprintf(s->uri, sizeof(s->uri), v6 ? "tcp:[%s]:%u" : "tcp:%s:%u", host, port);
        return 0;
}

int mig_stream_from_uri(const char *uri, bool tls, MigStream *ret) {
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
        return mig_stream_set(ret, host, port > 65535 ? 0 : (unsigned) port, tls);
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
