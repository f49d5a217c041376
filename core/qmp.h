/* QMP channel: a client for one QEMU monitor unix socket.
 *
 * qmp_monitor_connect() reads the greeting, negotiates capabilities and
 * starts the monitor's I/O thread.  The I/O thread owns the socket for
 * reading: it splits `\r\n`/`\n`-terminated JSON messages (at most
 * QMP_MESSAGE_MAX bytes each), matches replies to the one command in flight
 * by id, and queues events.  A second per-monitor thread drains the event
 * queue and calls the owner's event callback, so an event handler never runs
 * on the I/O thread and a slow handler delays only its own VM.  Handlers must
 * not wait for a job (docs/threading.md); they update state and wake waiters.
 * A command returns only after the handler has run for every event QEMU sent
 * before its reply (within the command's deadline; not when the command is
 * issued from a handler), so e.g. the STOP handler has run when qmp_stop()
 * returns.
 *
 * Commands: one in flight per monitor (callers queue on the channel lock
 * with their deadline).  Each has a deadline; when it passes with no reply
 * the call fails with -ETIMEDOUT and the monitor becomes *wedged*: further
 * commands fail at once with -EBUSY until the overdue reply arrives (then it
 * recovers) or the monitor is closed.  EOF or a read error means QEMU died:
 * the waiting command fails with -ECONNRESET, the eof callback is called
 * once with the reason, and the monitor is dead for good.
 *
 * Error codes: -EREMOTEIO for a QMP error reply (detail "QEMU error CLASS:
 * desc"), -EOPNOTSUPP when the class is CommandNotFound, -ETIMEDOUT, -EBUSY
 * (wedged), -ECONNRESET (dead), -EPROTO (malformed or oversized input,
 * which also kills the monitor: we cannot resynchronise a JSON stream),
 * -ECANCELED (aborted by qmp_monitor_abort()).  A reply whose id matches
 * no command sent counts as malformed input.
 *
 * Unknown members, events and enum values are tolerated everywhere.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deadline.h"
#include "migtypes.h"

#define QMP_MESSAGE_MAX (10u * 1024 * 1024)
#define QMP_EVENT_QUEUE_MAX 1024
#define QMP_DEFAULT_TIMEOUT_MS 10000

typedef struct QmpMonitor QmpMonitor;

typedef enum QmpEventType {
        QMP_EVENT_OTHER,
        QMP_EVENT_MIGRATION,      /* data.status */
        QMP_EVENT_MIGRATION_PASS, /* data.pass */
        QMP_EVENT_STOP,
        QMP_EVENT_RESUME,
        QMP_EVENT_SHUTDOWN,       /* data.guest, data.reason */
        QMP_EVENT_MAX,
} QmpEventType;

typedef struct QmpEvent {
        QmpEventType type;
        char name[64];                    /* as sent by QEMU */
        uint64_t qemu_timestamp_us;       /* QEMU's wall-clock timestamp */
        uint64_t received_ns;             /* our CLOCK_MONOTONIC at receipt */
        MigrationStatus migration_status; /* MIGRATION */
        int64_t pass;                     /* MIGRATION_PASS */
        bool guest;                       /* SHUTDOWN: guest-initiated */
        char reason[64];                  /* SHUTDOWN reason */
        const char *data_json;            /* the whole "data" member or NULL;
                                             valid during the callback */
} QmpEvent;

typedef struct QmpCallbacks {
        /* Called on the monitor's event thread, in arrival order. */
        void (*event)(void *opaque, const QmpEvent *ev);
        /* Called once when QEMU goes away (EOF, read error, protocol error),
         * on the I/O thread, with a negative errno and a reason. */
        void (*eof)(void *opaque, int error, const char *reason);
        void *opaque;
} QmpCallbacks;

typedef struct QmpVersion {
        int major, minor, micro;
        char package[128];
        bool oob; /* greeting advertised the "oob" capability */
} QmpVersion;

/* Connect to @socket_path, read the greeting and run qmp_capabilities, all
 * before @d.  @cb may be NULL.  On success *ret_mon holds one reference. */
int qmp_monitor_connect(const char *socket_path, const QmpCallbacks *cb, Deadline d,
                        QmpMonitor **ret_mon);
/* Stop the threads and close the socket; a command in flight fails with
 * -ECANCELED.  Callbacks are not called after this returns.  Drops the
 * caller's reference.  Accepts NULL.  Must not be called from a callback
 * (it joins the threads that run them). */
void qmp_monitor_close(QmpMonitor *m);
QmpMonitor *qmp_monitor_ref(QmpMonitor *m);
void qmp_monitor_unref(QmpMonitor *m);
/* Fail the command in flight (and every later one) with -ECANCELED at once;
 * used by destroy so that a thread stuck on a hung QEMU returns promptly.
 * Safe from any thread, never blocks. */
void qmp_monitor_abort(QmpMonitor *m, const char *reason);
bool qmp_monitor_is_wedged(QmpMonitor *m);
bool qmp_monitor_is_dead(QmpMonitor *m);
void qmp_monitor_version(QmpMonitor *m, QmpVersion *ret);

/* Generic command: @args_json is a JSON object text or NULL.  On success
 * *ret_json (if not NULL) receives the "return" member as malloc'ed JSON
 * text.  @timeout_ms < 0 means QMP_DEFAULT_TIMEOUT_MS. */
int qmp_call(QmpMonitor *m, const char *command, const char *args_json, int64_t timeout_ms,
             char **ret_json);

typedef struct QmpStatus {
        bool running;
        RunState status;
        char status_name[32]; /* as sent, also for unknown values */
} QmpStatus;

/* Typed calls for what migration needs.  Each takes a timeout in ms (< 0:
 * default) and returns 0 or a negative errno as above. */
int qmp_query_status(QmpMonitor *m, int64_t timeout_ms, QmpStatus *ret);
int qmp_query_version(QmpMonitor *m, int64_t timeout_ms, QmpVersion *ret);
int qmp_stop(QmpMonitor *m, int64_t timeout_ms);
int qmp_cont(QmpMonitor *m, int64_t timeout_ms);
int qmp_quit(QmpMonitor *m, int64_t timeout_ms);
/* Set the capabilities in @mask to @enable (one command). */
int qmp_migrate_set_capabilities(QmpMonitor *m, int64_t timeout_ms, uint64_t mask, bool enable);
int qmp_query_migrate_capabilities(QmpMonitor *m, int64_t timeout_ms, MigrationCaps *ret);
int qmp_migrate_set_parameters(QmpMonitor *m, int64_t timeout_ms, const MigrationParams *p);
int qmp_query_migrate_parameters(QmpMonitor *m, int64_t timeout_ms, MigrationParams *ret);
int qmp_migrate(QmpMonitor *m, int64_t timeout_ms, const char *uri, bool resume);
int qmp_migrate_incoming(QmpMonitor *m, int64_t timeout_ms, const char *uri);
int qmp_query_migrate(QmpMonitor *m, int64_t timeout_ms, MigrationStats *ret);
int qmp_migrate_cancel(QmpMonitor *m, int64_t timeout_ms);
int qmp_migrate_start_postcopy(QmpMonitor *m, int64_t timeout_ms);
int qmp_migrate_pause(QmpMonitor *m, int64_t timeout_ms);
int qmp_migrate_recover(QmpMonitor *m, int64_t timeout_ms, const char *uri);
/* @state is the MigrationStatus to continue from, e.g. "pre-switchover". */
int qmp_migrate_continue(QmpMonitor *m, int64_t timeout_ms, const char *state);
/* Sealed migration streams (docs/migration.md, "Stream protection").
 * object-add of a tls-creds-x509 object @id loading @dir (ca-cert.pem and
 * server-* or client-*.pem), endpoint server or client, verify-peer on. */
int qmp_object_add_tls_creds_x509(QmpMonitor *m, int64_t timeout_ms, const char *id, const char *dir, bool server);
/* object-add of an authz-simple object @id admitting exactly @identity
 * (for x509: the client certificate's DN as QEMU formats it). */
int qmp_object_add_authz_simple(QmpMonitor *m, int64_t timeout_ms, const char *id, const char *identity);
/* object-del @id. */
int qmp_object_del(QmpMonitor *m, int64_t timeout_ms, const char *id);
/* migrate-set-parameters tls-authz=@authz_id (the destination's; not one of
 * MigrationParams, which the source saves and restores). */
int qmp_migrate_set_tls_authz(QmpMonitor *m, int64_t timeout_ms, const char *authz_id);

/* Local disks over NBD (docs/migration.md, "Local disks").  Destination:
 * nbd-server-start on @host:@port (inet), sealed with @tls_creds and
 * @tls_authz when given (NULL: plaintext); block-export-add of a writable
 * nbd export @name of node @node (export id @id); nbd-server-stop. */
int qmp_nbd_server_start(QmpMonitor *m, int64_t timeout_ms, const char *host, unsigned port, const char *tls_creds,
                         const char *tls_authz);
int qmp_block_export_add_nbd(QmpMonitor *m, int64_t timeout_ms, const char *id, const char *node, const char *name);
int qmp_nbd_server_stop(QmpMonitor *m, int64_t timeout_ms);
/* Source: blockdev-add of an nbd client node @node for @export_name on
 * @host:@port, with @tls_creds (NULL: plaintext) checking the server's
 * certificate for @tls_hostname; blockdev-mirror sync=full of @device into
 * @target as job @job_id, at most @speed bytes/s (0: unlimited), kept
 * after it ends (auto-dismiss off: its error stays readable) until
 * job-dismiss;
 * block-job-cancel (@force: also a READY mirror without completing it;
 * without, a READY mirror ends with a consistent copy); blockdev-del. */
int qmp_blockdev_add_nbd(QmpMonitor *m, int64_t timeout_ms, const char *node, const char *host, unsigned port,
                         const char *export_name, const char *tls_creds, const char *tls_hostname);
int qmp_blockdev_mirror(QmpMonitor *m, int64_t timeout_ms, const char *job_id, const char *device, const char *target,
                        uint64_t speed);
int qmp_block_job_cancel(QmpMonitor *m, int64_t timeout_ms, const char *job_id, bool force);
int qmp_blockdev_del(QmpMonitor *m, int64_t timeout_ms, const char *node);
int qmp_job_dismiss(QmpMonitor *m, int64_t timeout_ms, const char *job_id);
/* block-job-set-speed of job @job_id to @speed bytes/s (0: unlimited). */
int qmp_block_job_set_speed(QmpMonitor *m, int64_t timeout_ms, const char *job_id, uint64_t speed);

/* One entry of query-block-jobs. */
typedef struct QmpBlockJob {
        char id[64];      /* "device": the job id */
        uint64_t len;     /* bytes to copy (grows with guest writes) */
        uint64_t offset;  /* bytes copied */
        bool ready;       /* a mirror in sync */
        char status[16];  /* "running", "ready", "concluded", ... */
        char error[256];  /* set when the job failed */
} QmpBlockJob;
/* query-block-jobs: at most @max jobs into @ret, their count in *ret_n. */
int qmp_query_block_jobs(QmpMonitor *m, int64_t timeout_ms, QmpBlockJob *ret, size_t max, size_t *ret_n);
int qmp_parse_block_jobs(const char *return_json, QmpBlockJob *ret, size_t max, size_t *ret_n);

/* Parsers exposed for replay tests and the status files: parse a "return"
 * member given as JSON text. */
int qmp_parse_migrate_stats(const char *return_json, MigrationStats *ret);
int qmp_parse_migrate_params(const char *return_json, MigrationParams *ret);
int qmp_parse_status(const char *return_json, QmpStatus *ret);
