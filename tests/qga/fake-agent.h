/* A FAKE qemu-ga for the replay tests.
 *
 * It is a fake, not real qemu-ga, on purpose: real qemu-ga cannot be told to
 * leave stale replies in the stream, answer garbage or an oversized line,
 * close the socket half way through a reply, or hang (or answer late) on
 * cue, and those are exactly the cases the channel must survive.  The
 * integration suite runs the real agent for everything it can do.
 *
 * The fake speaks qemu-ga's wire format as qemu-ga 7.2.22 does (checked
 * against the real binary): one JSON object per line ending in "\n"; a 0xFF
 * byte resets its parser and is answered with a GenericError "JSON parse
 * error" line; `guest-sync-delimited` is answered with 0xFF + `{"return":
 * id}`; `guest-info` is answered from a configurable list.  Every other
 * command must match the next scripted step (command name and arguments),
 * and is answered with the step's raw bytes.  One client at a time, like
 * qemu-ga; when it goes away the next connection is served.
 *
 * It runs on its own thread; mismatches are recorded (never asserted on
 * that thread) and the test checks them with fake_stats().
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Pass as a step's @args to skip the arguments check. */
#define FAKE_ANY_ARGS ((const char *) 1)

typedef struct FakeStep {
        const char *command;    /* expected "execute" */
        const char *args;       /* expected "arguments" JSON; NULL: must be absent */
        const void *reply;      /* bytes to write; NULL: never answer */
        size_t reply_len;       /* 0: strlen(reply) */
        int delay_ms;           /* wait this long before answering */
        bool close_after;       /* close the connection after writing the reply */
} FakeStep;

/* How the fake answers one guest-sync-delimited. */
typedef struct FakeSync {
        const void *prefix;     /* raw bytes written before the reply (stale data) */
        size_t prefix_len;      /* 0: strlen(prefix) */
        int delay_ms;           /* answer late */
        bool no_reply;          /* never answer this one */
} FakeSync;

typedef struct FakeStats {
        int connections;        /* accepted */
        int closed;             /* connections the fake has closed */
        int syncs;              /* guest-sync-delimited requests received */
        int syncs_without_ff;   /* ... not preceded by a 0xFF byte */
        int ff_bytes;           /* 0xFF bytes received */
        int info_requests;      /* guest-info requests received */
        int commands;           /* scripted commands received */
        int steps_left;         /* scripted steps not yet consumed */
        int errors;             /* mismatches (see first_error) */
        int input_during_delay; /* requests that arrived while a reply was delayed */
        uint64_t sync_ids[64];  /* ids of the syncs received (first 64) */
        char first_error[256];
} FakeStats;

typedef struct FakeAgent FakeAgent;

/* Listen on @sock_path (created) and serve on a new thread.  Aborts on setup
 * failure (a test bug).  The default guest-info lists @default_enabled as
 * enabled ("a,b,c"); NULL lists nothing. */
FakeAgent *fake_new(const char *sock_path, const char *default_enabled);
/* Stop the thread, close everything, unlink the socket.  Accepts NULL. */
void fake_free(FakeAgent *f);

/* Replace the guest-info "return" with @json; NULL makes guest-info answer
 * CommandNotFound. */
void fake_set_info(FakeAgent *f, const char *json);
/* Replace the guest-info "return" with one naming @version and listing
 * @enabled as enabled and @disabled as disabled (comma-separated, either
 * NULL): what a restarted agent of another version or configuration says. */
void fake_set_info_list(FakeAgent *f, const char *version, const char *enabled, const char *disabled);
void fake_push(FakeAgent *f, const FakeStep *step);
/* Shorthand: expect @command with @args, answer @reply. */
void fake_expect(FakeAgent *f, const char *command, const char *args, const char *reply);
/* Script the next guest-sync-delimited (queued; later syncs answer normally). */
void fake_push_sync(FakeAgent *f, const FakeSync *s);

void fake_stats(FakeAgent *f, FakeStats *ret);
/* Wait until the fake has closed @n connections in all (a step's
 * close_after has landed); aborts after 10 s (a test bug or a hang). */
void fake_wait_closed(FakeAgent *f, int n);
