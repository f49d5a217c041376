/* QGA channel internals exported for tests only (tests/qga/).
 *
 * The counters let a test prove that the channel did what the protocol
 * requires (it resynchronised, it discarded the stale reply, it probed
 * guest-info when due) instead of inferring it from a lucky result, and they
 * carry the connect+sync time that the integration test prints.
 */
#pragma once

#include <stdint.h>

#include "qga.h"

typedef struct QgaCounters {
        uint64_t connects;      /* successful connect()s */
        uint64_t syncs;         /* completed guest-sync-delimited handshakes */
        uint64_t probes;        /* guest-info requests sent (first probe and re-probes) */
        uint64_t stale_lines;   /* lines dropped: stale replies, our 0xFF's parse error, garbage */
        uint64_t stale_bytes;   /* bytes dropped while resynchronising */
        uint64_t bad_utf8;      /* invalid UTF-8 sequences in replies, replaced with U+FFFD */
        uint64_t last_ready_ns; /* connect (when needed) + sync + probe of the last resync */
        uint64_t last_sync_id;  /* id of the last guest-sync-delimited sent */
} QgaCounters;

/* Copy the channel's counters.  Safe at any time (the fields are atomics);
 * a snapshot taken during a call may mix before and after values. */
void qga_get_counters(QgaAgent *a, QgaCounters *ret);

/* Set the least time between two guest-info probes on @a (default
 * QGA_INFO_REPROBE_MIN_MS), so a test need not wait that long.  Call it
 * before the calls it should govern. */
void qga_set_reprobe_interval_ms(QgaAgent *a, uint64_t ms);
