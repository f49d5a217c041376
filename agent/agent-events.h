/* The agent's event bus: guest events for WatchEvents streams.
 *
 * A bounded ring (AGENT_EVENT_RING entries) of events with increasing
 * sequence numbers.  Publishers (RPC handlers, monitor event threads) append
 * under the bus lock and wake every subscriber; they never wait for a
 * reader.  A reader that falls more than a ring behind sees a gap in the
 * sequence numbers (the events it missed are dropped for it alone).
 *
 * Retention (docs/agent.md): the ring is not a history, only the slack a
 * slow watcher has (a watcher starts at the newest event and reads in
 * batches of 64); 1,024 events of 440 bytes, 440 KiB, allocated and touched
 * when the bus is made, so the agent's memory does not creep up while the
 * ring fills for the first time (it did, by 1.7 MiB over the first 4,096
 * events, when the ring was four times larger and left untouched).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_EVENT_RING 1024
#define AGENT_EVENT_SUBSCRIBERS_MAX 256

typedef struct AgentEvent {
        uint64_t seq;
        uint64_t time_unix_ms;
        char guest[64];
        char uuid[37];
        char kind[24];
        char detail[256];
        int state;   /* VmState */
        char reason[32];
} AgentEvent;

typedef struct EventBus EventBus;

/* Wakes a subscriber; called with the bus lock held, must not block. */
typedef void (*EventWakeFn)(void *opaque);

/* A new bus with its whole ring resident; -ENOMEM. */
int event_bus_new(EventBus **ret);
void event_bus_free(EventBus *b);
/* Append (seq and time are filled in) and wake subscribers. */
void event_bus_publish(EventBus *b, AgentEvent *ev);
/* Register a wake-up; -ENOSPC past AGENT_EVENT_SUBSCRIBERS_MAX.  Returns a
 * subscriber id >= 0. */
int event_bus_subscribe(EventBus *b, EventWakeFn wake, void *opaque);
void event_bus_unsubscribe(EventBus *b, int id);
/* Copy up to @max events with seq > @after into @out, oldest first;
 * returns how many.  The first copied may be > after+1 (a gap). */
size_t event_bus_read(EventBus *b, uint64_t after, AgentEvent *out, size_t max);
/* The newest sequence number (0 = none yet). */
uint64_t event_bus_last_seq(EventBus *b);
