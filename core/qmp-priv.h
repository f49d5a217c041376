/* QMP channel internals exported for the tests only (tests/qmp/).
 *
 * Nothing outside tests/ includes this header.  The builders and parsers
 * here are the ones the typed calls use, so a replay test can compare what
 * Drover would send with a recorded command without a socket.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "qmp.h"

/* Events dropped because the queue was full (QMP_EVENT_QUEUE_MAX events or
 * QMP_EVENT_QUEUE_BYTES_MAX bytes waiting for the event thread). */
#define QMP_EVENT_QUEUE_BYTES_MAX (32u * 1024 * 1024)
uint64_t qmp_monitor_events_dropped(QmpMonitor *m);
/* Invalid UTF-8 sequences QEMU sent, each replaced with U+FFFD. */
uint64_t qmp_monitor_bad_utf8(QmpMonitor *m);

/* True while a caller holds the command slot (a command written or being
 * written and not yet answered, timed out or cancelled). */
bool qmp_monitor_command_in_flight(QmpMonitor *m);

/* The arguments object migrate-set-parameters would carry for @p, as
 * malloc'ed JSON text in *ret_json. */
int qmp_build_migrate_set_parameters(const MigrationParams *p, char **ret_json);
/* The arguments object migrate-set-capabilities would carry. */
int qmp_build_migrate_set_capabilities(uint64_t mask, bool enable, char **ret_json);

/* Parse a "return" member given as JSON text (query-migrate-capabilities,
 * query-version). */
int qmp_parse_migrate_caps(const char *return_json, MigrationCaps *ret);
int qmp_parse_version(const char *return_json, QmpVersion *ret);
