/* A FAKE QEMU monitor for the QMP replay and fault tests.
 *
 * This is a fake, not an emulator: it exists for what real QEMU cannot be
 * made to do on demand (answer from a recording, put an event between a
 * command and its reply at an exact point, delay or never answer, send
 * malformed JSON, an oversized or truncated message, a reply with a wrong
 * id).  The behaviour of real QEMU is covered by the integration suite.
 *
 * One FakeQemu listens on a unix socket, accepts one client, sends a
 * greeting and then serves a transcript of steps, in order, on its own
 * thread.  Each command the client sends is checked against the next
 * expected one (command name, and arguments compared as JSON objects) and
 * against the QEMU 7.2 QAPI schema (see qapischema.h).  Replies echo the
 * client's id with its JSON type, as QEMU does.  Mismatches are recorded,
 * not asserted on the server thread; fake_finish() reports them.
 *
 * Steps can be appended while the fake runs, so a test can react to what
 * the client did (e.g. send an overdue reply only after a timeout).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "qapischema.h"

typedef struct FakeQemu FakeQemu;

/* The greeting of QEMU 7.2.22 as recorded (with the oob capability). */
#define FAKE_GREETING_7_2                                                                     \
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, "             \
        "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18+b3\"}, \"capabilities\": [\"oob\"]}}"

/* Listen on @path.  @schema (borrowed, may be NULL) checks every command. */
FakeQemu *fake_new(const char *path, const QapiSchema *schema);
/* Greeting to send on accept (JSON text, "\r\n" added); NULL sends none. */
void fake_set_greeting(FakeQemu *f, const char *json);
/* Start serving (accept, greeting, steps).  Steps may be added before or after. */
void fake_start(FakeQemu *f);

/* Expect the next command to be @execute with @args_json (NULL: no
 * arguments or {}), compared as JSON objects.  The schema must accept it. */
void fake_expect(FakeQemu *f, const char *execute, const char *args_json);
/* Same, but the schema must REJECT it (a command a recording sent on
 * purpose to get an error from QEMU). */
void fake_expect_invalid(FakeQemu *f, const char *execute, const char *args_json);
/* Expect any one command (schema-checked). */
void fake_expect_any(FakeQemu *f);
/* Reply like QEMU: @json with "id" replaced by the last command's id (JSON
 * type preserved), or without id if that command had none. */
void fake_reply(FakeQemu *f, const char *json);
/* Send bytes exactly (@len 0: strlen).  "$ID" and "$PREVID" in @raw are
 * replaced by the JSON text of the last and the previous command's id when
 * @tmpl is true. */
void fake_send(FakeQemu *f, const char *raw, size_t len, bool tmpl);
/* An event with a current timestamp; @data_json may be NULL. */
void fake_event(FakeQemu *f, const char *name, const char *data_json);
/* One message of exactly @size bytes before its "\r\n" (a reply with a
 * padded string; @terminate false leaves the line open). */
void fake_send_big(FakeQemu *f, size_t size, bool terminate);
void fake_delay(FakeQemu *f, int ms);
/* Stop until the test calls fake_open_gate() (once per gate). */
void fake_gate(FakeQemu *f);
void fake_open_gate(FakeQemu *f);
/* Nothing may arrive for @ms (one command in flight at a time). */
void fake_quiet(FakeQemu *f, int ms);
/* Wait until the client has sent something, without reading it. */
void fake_wait_unread(FakeQemu *f);
/* Close the connection: the client sees EOF (or a reset if it sent
 * something the fake has not read). */
void fake_close(FakeQemu *f);
/* Wait until the client closes its end (nothing may arrive meanwhile). */
void fake_wait_client_close(FakeQemu *f);

/* Wait up to @timeout_ms for every step to be served.  Returns the number
 * of failures (mismatches, schema verdicts, steps left), each printed to
 * stderr with @label. */
int fake_finish(FakeQemu *f, int timeout_ms, const char *label);
/* Commands received so far. */
int fake_commands_seen(FakeQemu *f);
/* Stop the thread, close everything. */
void fake_free(FakeQemu *f);
