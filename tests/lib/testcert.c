/* Test certificates with the openssl CLI (see testcert.h). */
#include "testcert.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"
#include "testutil.h"

#define EC_KEY "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

static int sh(const char *dir, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sh(const char *dir, const char *fmt, ...) {
        char line[2048], full[2600];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        snprintf(full, sizeof(full), "cd '%s' && { %s ; } >>openssl.log 2>&1", dir, line);
        return system(full) == 0 ? 0 : -1;
}

bool tc_available(void) {
        return tu_which("openssl") != NULL;
}

int tc_make_ca(const char *dir, const char *name) {
        return sh(dir, "openssl req -x509 " EC_KEY " -keyout %s.key -out %s.crt -days 2 -subj /CN=%s", name, name,
                  name);
}

/* @c's subjectAltName value: its SANs, then one role URI per role name. */
static int san_line(const TcCert *c, char *buf, size_t size) {
        size_t len = (size_t) snprintf(buf, size, "%s", c->san ? c->san : "");
        const char *p = c->roles;
        while (p && *p && len < size) {
                size_t n = strcspn(p, ",");
                len += (size_t) snprintf(buf + len, size - len, "%sURI:%s%.*s", len ? "," : "", RPC_ROLE_URI_PREFIX,
                                         (int) n, p);
                p += n + (p[n] == ',');
        }
        return len < size ? 0 : -1;
}

int tc_make_cert(const char *dir, const TcCert *c) {
        char san[1024], eku[160] = "";

        if (san_line(c, san, sizeof(san)) < 0)
                return -1;
        if (c->eku)
                snprintf(eku, sizeof(eku), "extendedKeyUsage=%s\\n", c->eku);
        if (sh(dir, "printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\n%s%s%s\\n' > %s.ext",
               eku, san[0] ? "subjectAltName=" : "", san, c->name) < 0)
                return -1;
        if (sh(dir, "openssl req " EC_KEY " -keyout %s.key -out %s.csr -subj '/CN=%s'", c->name, c->name,
               c->cn ? c->cn : c->name) < 0)
                return -1;
        return sh(dir, "openssl x509 -req -in %s.csr -CA %s.crt -CAkey %s.key -CAcreateserial -days 2 -out %s.crt "
                       "-extfile %s.ext",
                  c->name, c->ca, c->ca, c->name, c->name);
}
