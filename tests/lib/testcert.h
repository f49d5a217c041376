/* Test certificates made with the openssl CLI: a CA, and certificates it
 * signs with subject alternative names, extended key usages and Drover roles
 * (URI SANs urn:drover:role:<role>, docs/security.md "Who can call what").
 *
 * Every command runs in the certificate folder with its output appended to
 * openssl.log there, so a failure can be read afterwards.  EC P-256 keys
 * (fast to make), two days of validity.
 */
#pragma once

#include <stdbool.h>

/* Whether the openssl CLI is installed. */
bool tc_available(void);

/* A self-signed CA: @dir/@name.crt and @dir/@name.key.  0 or -1. */
int tc_make_ca(const char *dir, const char *name);

/* What a certificate says (every member but @name and @ca optional). */
typedef struct TcCert {
        const char *name;   /* files @dir/@name.crt, .key */
        const char *ca;     /* the signing CA's name (tc_make_ca) */
        const char *cn;     /* subject CN; NULL = @name */
        const char *san;    /* other SANs: "IP:127.0.0.1,DNS:localhost" */
        const char *roles;  /* role names, comma-separated ("agent,reader"): one
                             * URI SAN each; any name is written, known or not */
        const char *eku;    /* extendedKeyUsage ("serverAuth,clientAuth"); NULL: none */
} TcCert;

/* Make the certificate @c describes in @dir.  0 or -1. */
int tc_make_cert(const char *dir, const TcCert *c);
