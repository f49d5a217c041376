/* TLS for the migration stream (see agent-stream.h): QEMU's tls-creds-x509
 * and authz-simple objects, made from the agent's own certificate files.
 *
 * QEMU reads a credentials folder holding ca-cert.pem and server-cert.pem
 * / server-key.pem (endpoint server) or client-cert.pem / client-key.pem
 * (endpoint client).  The agent copies its CA, certificate and key under
 * those names into <run_dir>/mtls-<op>/ (0700, files 0600, owned by
 * qemu_user when the agent is root: QEMU has dropped to that user when it
 * reads them; run_dir is 0711 so it can pass through, not list), QEMU
 * loads them when the object is added, and the folder is removed right after: no key
 * copy outlives the object-add, and a rotated certificate is used by the
 * next migration.  The same certificate serves both ends, so agent
 * certificates must allow TLS server and client use.
 *
 * The destination admits only the source's certificate: the DN of the
 * certificate that called MigratePrepare (verified by the agents' gRPC
 * TLS), formatted with GnuTLS exactly as QEMU formats a client's identity
 * (gnutls_x509_crt_get_dn), in an authz-simple object named by tls-authz.
 * A TLS client with any other certificate of the cluster's CA is refused
 * by QEMU's authorization check, a client without one by the handshake.
 */
#define _GNU_SOURCE
#include "agent-stream.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/x509.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"
#include "qmp.h"

#define PEM_MAX (256 * 1024)
#define DIR_MAX 400 /* <run_dir>/mtls-<op>: 256 + 6 + 64 fit */

int agent_stream_tls_dn(const char *pem, char *buf, size_t size) {
        gnutls_x509_crt_t crt;
        gnutls_datum_t d = { .data = (unsigned char *) pem, .size = (unsigned) strlen(pem) };
        size_t n = size;
        int r;
        if (gnutls_x509_crt_init(&crt) < 0)
                return err_set(-ENOMEM, "out of memory");
        if ((r = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM)) < 0) {
                gnutls_x509_crt_deinit(crt);
                return err_set(-EINVAL, "the peer certificate cannot be read: %s", gnutls_strerror(r));
        }
        r = gnutls_x509_crt_get_dn(crt, buf, &n);
        gnutls_x509_crt_deinit(crt);
        if (r == GNUTLS_E_SHORT_MEMORY_BUFFER)
                return err_set(-ENAMETOOLONG, "the peer certificate's subject is longer than %zu bytes", size - 1);
        if (r < 0 || !buf[0])
                return err_set(-EINVAL, "the peer certificate has no usable subject: %s", gnutls_strerror(r));
        return 0;
}

/* Whether a process of @uid with groups @gids may search the folder @st. */
static bool searchable(const struct stat *st, uid_t uid, const gid_t *gids, int n_gids) {
        if (st->st_uid == uid)
                return st->st_mode & S_IXUSR;
        for (int i = 0; i < n_gids; i++)
                if (st->st_gid == gids[i])
                        return st->st_mode & S_IXGRP;
        return st->st_mode & S_IXOTH;
}

int agent_stream_tls_check_run_dir(const AgentConfig *cfg) {
        char buf[4096], path[sizeof(cfg->run_dir)];
        struct passwd pw, *found = NULL;
        gid_t gids[64];
        int n_gids = (int) ELEMENTSOF(gids);
        if (geteuid() != 0 || !cfg->tls_cert[0] || !cfg->qemu_user[0])
                return 0;
        (void) getpwnam_r(cfg->qemu_user, &pw, buf, sizeof(buf), &found);
        if (!found)
                return 0; /* the configuration check says so */
        if (getgrouplist(pw.pw_name, pw.pw_gid, gids, &n_gids) < 0)
                n_gids = 0; /* more than 64 groups: judged by the first ones */
        snprintf(path, sizeof(path), "%s", cfg->run_dir);
        for (char *end = path + strlen(path);;) {
                struct stat st;
                if (stat(path[0] ? path : "/", &st) < 0)
                        return err_set(-errno, "run_dir: cannot read %s: %s", path[0] ? path : "/", strerror(errno));
                if (!searchable(&st, pw.pw_uid, gids, n_gids))
                        return err_set(-EACCES, "run_dir %s: %s (mode %04o) cannot be searched by qemu_user '%s', "
                                       "which reads its migration TLS credentials below run_dir "
                                       "(docs/agent.md, \"Guest files and the QEMU user\")",
                                       cfg->run_dir, path[0] ? path : "/", (unsigned) (st.st_mode & 07777),
                                       cfg->qemu_user);
                if (!path[0])
                        return 0;
                while (end > path && *end != '/')
                        end--;
                *end = '\0';
        }
}

/* Copy @from to @dir/@name, mode 0600, owned by @uid/@gid (-1: ours). */
static int copy_pem(const char *from, const char *dir, const char *name, uid_t uid, gid_t gid) {
        char to[DIR_MAX + 32], data[8192];
        _cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (in < 0)
                return err_set(-errno, "reading %s: %s", from, strerror(errno));
        snprintf(to, sizeof(to), "%s/%s", dir, name);
        _cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (out < 0)
                return err_set(-errno, "creating %s: %s", to, strerror(errno));
        if (uid != (uid_t) -1 && fchown(out, uid, gid) < 0)
                return err_set(-errno, "handing %s to the QEMU user: %s", to, strerror(errno));
        size_t total = 0;
        for (;;) {
                ssize_t k = read(in, data, sizeof(data));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return err_set(-errno, "reading %s: %s", from, strerror(errno));
                if (k == 0)
                        break;
                if ((total += (size_t) k) > PEM_MAX)
                        return err_set(-EFBIG, "%s is larger than %d bytes", from, PEM_MAX);
                for (ssize_t w = 0; w < k;) {
                        ssize_t m = write(out, data + w, (size_t) (k - w));
                        if (m < 0 && errno != EINTR)
                                return err_set(-errno, "writing %s: %s", to, strerror(errno));
                        w += m > 0 ? m : 0;
                }
        }
        return 0;
}

static const char *const pem_names[2][3] = {
        { "ca-cert.pem", "client-cert.pem", "client-key.pem" },
        { "ca-cert.pem", "server-cert.pem", "server-key.pem" },
};

static void creds_dir_remove(const char *dir, bool server) {
        char p[DIR_MAX + 32];
        for (int i = 0; i < 3; i++) {
                snprintf(p, sizeof(p), "%s/%s", dir, pem_names[server][i]);
                (void) unlink(p);
        }
        (void) rmdir(dir);
}

/* The folder QEMU loads (no lock needed: files only). */
static int creds_dir_make(const Agent *a, const char *op, bool server, char *dir, size_t size) {
        const char *from[3] = { a->cfg.tls_ca, a->cfg.tls_cert, a->cfg.tls_key };
        uid_t uid;
        gid_t gid;
        int r = agent_stream_qemu_ids(a, &uid, &gid);
        if (r < 0)
                return r;
        snprintf(dir, size, "%s/mtls-%s", a->cfg.run_dir, op);
        creds_dir_remove(dir, server); /* a crash's leftover */
        if (mkdir(dir, 0700) < 0)
                return err_set(-errno, "creating %s: %s", dir, strerror(errno));
        if (uid != (uid_t) -1 && chown(dir, uid, gid) < 0)
                r = err_set(-errno, "handing %s to the QEMU user: %s", dir, strerror(errno));
        for (int i = 0; i < 3 && r >= 0; i++)
                r = copy_pem(from[i], dir, pem_names[server][i], uid, gid);
        if (r < 0)
                creds_dir_remove(dir, server);
        return r;
}

int agent_stream_tls_setup_locked(Agent *a, Vm *vm, AsyncJobType t, const char *op, const char *authz_dn,
                                  const char *hostname) {
        bool server = authz_dn != NULL;
        char dir[DIR_MAX];
        int r;

        vm_assert_locked(vm);
        /* an object of an earlier migration of this QEMU goes first */
        agent_stream_tls_drop_locked(vm, t, op);
        if ((r = creds_dir_make(a, op, server, dir, sizeof(dir))) < 0)
                return err_prefix(r, "migration TLS credentials");
        r = VM_NESTED_CALL(vm, t, op, "object-add", qmp_object_add_tls_creds_x509(mon_, -1, MIG_TLS_CREDS_ID, dir, server));
        creds_dir_remove(dir, server);
        if (r < 0)
                return err_prefix(r, "QEMU refused the migration TLS credentials");
        MigrationParams mp = { .has_tls_creds = true };
        snprintf(mp.tls_creds, sizeof(mp.tls_creds), "%s", MIG_TLS_CREDS_ID);
        if (server) {
                r = VM_NESTED_CALL(vm, t, op, "object-add", qmp_object_add_authz_simple(mon_, -1, MIG_TLS_AUTHZ_ID, authz_dn));
                if (r >= 0)
                        r = VM_NESTED_CALL(vm, t, op, "migrate-set-parameters",
                                           qmp_migrate_set_tls_authz(mon_, -1, MIG_TLS_AUTHZ_ID));
        } else {
                if (!hostname || !hostname[0] || strlen(hostname) >= sizeof(mp.tls_hostname))
                        return err_set(-EINVAL, "migration TLS: no usable name for the destination's certificate");
                mp.has_tls_hostname = true;
                snprintf(mp.tls_hostname, sizeof(mp.tls_hostname), "%s", hostname);
        }
        if (r >= 0)
                r = VM_NESTED_CALL(vm, t, op, "migrate-set-parameters", qmp_migrate_set_parameters(mon_, -1, &mp));
        return r < 0 ? err_prefix(r, "migration TLS") : 0;
}

void agent_stream_tls_drop_locked(Vm *vm, AsyncJobType t, const char *op) {
        vm_assert_locked(vm);
        (void) VM_NESTED_CALL(vm, t, op, "object-del", qmp_object_del(mon_, -1, MIG_TLS_AUTHZ_ID));
        (void) VM_NESTED_CALL(vm, t, op, "object-del", qmp_object_del(mon_, -1, MIG_TLS_CREDS_ID));
        err_clear();
}
