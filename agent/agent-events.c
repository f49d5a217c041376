/* The agent's event bus (see agent-events.h).
 *
 * The ring is indexed by sequence number modulo its size: publishing is
 * one copy, reading a range is one copy per event, and nothing is ever
 * allocated after event_bus_new(), which touches every page of the ring
 * so that the agent's resident size is final from the start.
 */
#define _GNU_SOURCE
#include "agent-events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "deadline.h"
#include "err.h"
#include "lock.h"

static LockClass bus_lock_class = LOCK_CLASS_INIT("event-bus");

typedef struct Subscriber {
        EventWakeFn wake; /* lock: bus->lock; NULL = free slot */
        void *opaque;     /* lock: bus->lock */
} Subscriber;

/* bus->lock protects everything below it. */
struct EventBus {
        Lock lock;
        AgentEvent ring[AGENT_EVENT_RING];              /* lock: bus->lock */
        uint64_t last_seq;                              /* lock: bus->lock */
        Subscriber subs[AGENT_EVENT_SUBSCRIBERS_MAX];   /* lock: bus->lock */
};

int event_bus_new(EventBus **ret) {
        EventBus *b = malloc(sizeof(*b));
        if (!b)
                return err_set(-ENOMEM, "out of memory");
        /* written, not calloc'ed: a large calloc maps zero pages that only
         * become resident when the ring first goes through them (and the
         * compiler may turn malloc + memset into calloc; not this one) */
        explicit_bzero(b, sizeof(*b));
        lock_init(&b->lock, &bus_lock_class);
        *ret = b;
        return 0;
}

void event_bus_free(EventBus *b) {
        if (!b)
                return;
        lock_destroy(&b->lock);
        free(b);
}

void event_bus_publish(EventBus *b, AgentEvent *ev) {
        ev->time_unix_ms = wall_ns() / NSEC_PER_MSEC;
        lock_acquire(&b->lock);
        ev->seq = ++b->last_seq;
        b->ring[ev->seq % AGENT_EVENT_RING] = *ev;
        for (size_t i = 0; i < AGENT_EVENT_SUBSCRIBERS_MAX; i++)
                if (b->subs[i].wake)
                        b->subs[i].wake(b->subs[i].opaque);
        lock_release(&b->lock);
}

int event_bus_subscribe(EventBus *b, EventWakeFn wake, void *opaque) {
        int id = -1;
        lock_acquire(&b->lock);
        for (int i = 0; i < AGENT_EVENT_SUBSCRIBERS_MAX; i++)
                if (!b->subs[i].wake) {
                        b->subs[i] = (Subscriber){ wake, opaque };
                        id = i;
                        break;
                }
        lock_release(&b->lock);
        if (id < 0)
                return err_set(-ENOSPC, "%d event watchers already connected", AGENT_EVENT_SUBSCRIBERS_MAX);
        return id;
}

void event_bus_unsubscribe(EventBus *b, int id) {
        if (id < 0 || id >= AGENT_EVENT_SUBSCRIBERS_MAX)
                return;
        lock_acquire(&b->lock);
        b->subs[id] = (Subscriber){ 0 };
        lock_release(&b->lock);
}

size_t event_bus_read(EventBus *b, uint64_t after, AgentEvent *out, size_t max) {
        size_t n = 0;
        lock_acquire(&b->lock);
        uint64_t oldest = b->last_seq > AGENT_EVENT_RING ? b->last_seq - AGENT_EVENT_RING + 1 : 1;
        uint64_t from = MAX(after + 1, oldest);
        for (uint64_t s = from; s <= b->last_seq && n < max; s++)
                out[n++] = b->ring[s % AGENT_EVENT_RING];
        lock_release(&b->lock);
        return n;
}

uint64_t event_bus_last_seq(EventBus *b) {
        lock_acquire(&b->lock);
        uint64_t s = b->last_seq;
        lock_release(&b->lock);
        return s;
}
