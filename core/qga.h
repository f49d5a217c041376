/* QGA channel: a client for the QEMU guest agent (qemu-ga) on a unix socket.
 *
 * There is no greeting.  On connect and after any timeout or framing error
 * the client writes a 0xFF byte (the agent's parser treats it as a flush)
 * and then `guest-sync-delimited` with a fresh random id; it discards
 * everything up to the 0xFF that precedes the matching reply, skipping the
 * parse error our own 0xFF provokes.  `guest-info` is probed after the
 * first successful sync, to learn the agent's version and which commands
 * it enables, and probed again after every later sync (a reconnect, or a
 * resync after a timeout or framing error: the agent may have restarted as
 * another version) and after a probe that failed, but never twice within
 * QGA_INFO_REPROBE_MIN_MS.
 *
 * Calls are synchronous with a deadline (default QGA_DEFAULT_TIMEOUT_MS,
 * covering connect, sync and reply); one command in flight per channel.  A
 * closed socket (guest rebooted, agent restarted) is reconnected on the next
 * call.  Error codes: -EOPNOTSUPP for CommandNotFound/CommandDisabled or a
 * command the current guest-info lists as disabled (refused without
 * sending it; a list due for a re-probe refuses nothing; detail names the
 * command),
 * -EREMOTEIO for any other agent error, -ETIMEDOUT, -ECONNREFUSED/-ENOENT
 * when nothing listens, -ECONNRESET when the agent closed the connection
 * during the call (the next call reconnects), -EPROTO for malformed or
 * oversized replies.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QGA_DEFAULT_TIMEOUT_MS 5000
/* N = 10 s: no two guest-info probes on one channel are sent less than this
 * apart.  A probe wanted sooner (a resync right after a probe, a refusal)
 * waits for the first call after it. */
#define QGA_INFO_REPROBE_MIN_MS 10000
#define QGA_MESSAGE_MAX (10u * 1024 * 1024)

typedef struct QgaAgent QgaAgent;

/* Create a channel for @socket_path; does not connect yet. */
int qga_new(const char *socket_path, QgaAgent **ret);
/* Close and free; accepts NULL.  Not safe against concurrent calls. */
void qga_free(QgaAgent *a);
/* Close the socket now (the next call reconnects and resyncs). */
void qga_disconnect(QgaAgent *a);

typedef struct QgaInfo {
        char version[64];
        size_t n_commands;
        struct {
                char name[64];
                bool enabled;
        } *commands; /* owned by the QgaInfo */
} QgaInfo;

/* Generic command; @args_json is an object text or NULL; *ret_json gets the
 * "return" member as malloc'ed JSON text (may be NULL when not wanted).
 * @timeout_ms < 0 means the default. */
int qga_call(QgaAgent *a, const char *command, const char *args_json, int64_t timeout_ms,
             char **ret_json);

int qga_ping(QgaAgent *a, int64_t timeout_ms);
/* The last guest-info the agent gave, probing first when a probe is due.
 * *ret is owned by the channel and valid until the next call on it (from
 * any thread: a call may re-probe and replace it) or qga_free(); copy what
 * you keep.  -EOPNOTSUPP when the agent refused guest-info or answered
 * nonsense (the detail says why and when it is asked again), -EAGAIN when
 * the last probe got no answer and the next is not due yet, or the error
 * of the call that tried to probe. */
int qga_info(QgaAgent *a, int64_t timeout_ms, const QgaInfo **ret);
/* True if the last guest-info listed @command as enabled (false before a
 * probe and after a refused one). */
bool qga_supports(QgaAgent *a, const char *command);
int qga_get_time(QgaAgent *a, int64_t timeout_ms, int64_t *ret_ns);
/* Set the guest clock to @ns since the epoch; @ns < 0 tells the guest to
 * read its RTC instead (guest-set-time with no argument). */
int qga_set_time(QgaAgent *a, int64_t timeout_ms, int64_t ns);

typedef struct QgaInterface {
        char name[64];
        char hwaddr[32];
        size_t n_addrs;
        char (*addrs)[64]; /* "10.0.0.2/24" */
} QgaInterface;

/* The guest's interfaces; *ret (free with qga_interfaces_free()) and *ret_n
 * are written only on success.  An alias such as "eth1:0" is merged into
 * "eth1" (its addresses first, as libvirt does). */
int qga_network_get_interfaces(QgaAgent *a, int64_t timeout_ms, QgaInterface **ret,
                               size_t *ret_n);
void qga_interfaces_free(QgaInterface *ifs, size_t n);
