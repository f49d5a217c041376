/* FAKE agents for in-process coordinator tests (see fake-agents.h): the
 * agent_link_* calls of coordinator/coord-agents.h answered from an
 * in-memory table.  Errors are the ones coord-agents.c returns for the
 * matching gRPC status: -EAGAIN (UNAVAILABLE), -ENOENT (NOT_FOUND),
 * -EBUSY (FAILED_PRECONDITION). */
#include "fake-agents.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "coord-enums.h"
#include "err.h"

#define FAKE_HOSTS 8
#define FAKE_GUESTS 32

typedef struct FakeGuest {
        char name[64], uuid[37];
        uint64_t memory_mib;
        uint32_t vcpus;
        char async_job[24];
        uint64_t disk_bytes; /* local disks (GuestSummary.local_disk_bytes) */
} FakeGuest;

typedef struct FakeMig {
        char guest[64], op[64], dest[128];
        bool done, success;
        char error[256];
        char phase[24];   /* reported by GetMigration when set (fake_mig_phase) */
        MigParams params; /* as the coordinator sent them */
        LinkMigResult figures; /* the stream's figures GetMigration reports (fake_mig_figures) */
        uint64_t disk_total, disk_done; /* the disks' copy GetGuest reports while it runs (fake_mig_disks) */
} FakeMig;

typedef struct FakeHost {
        char addr[128];
        uint64_t memory_mib;
        uint32_t cpus;
        bool down;
        FakeGuest guests[FAKE_GUESTS];
        size_t n_guests;
        FakeMig migs[FAKE_GUESTS];
        size_t n_migs;
        unsigned migrate_calls;
        unsigned abort_calls;
} FakeHost;

struct AgentLink {
        char addr[128];
};

static pthread_mutex_t fake_mutex = PTHREAD_MUTEX_INITIALIZER;
static FakeHost fake_hosts[FAKE_HOSTS];
static size_t fake_n_hosts;

static FakeHost *host_of(const char *addr) {
        for (size_t i = 0; i < fake_n_hosts; i++)
                if (strcmp(fake_hosts[i].addr, addr) == 0)
                        return &fake_hosts[i];
        return NULL;
}

static FakeGuest *guest_on(FakeHost *h, const char *name) {
        for (size_t i = 0; h && i < h->n_guests; i++)
                if (strcmp(h->guests[i].name, name) == 0 || strcasecmp(h->guests[i].uuid, name) == 0)
                        return &h->guests[i];
        return NULL;
}

static FakeMig *mig_of(FakeHost *h, const char *guest) {
        for (size_t i = h->n_migs; i-- > 0;)
                if (strcmp(h->migs[i].guest, guest) == 0)
                        return &h->migs[i];
        return NULL;
}

/* A host for a call: NULL with -EAGAIN when it is down or unknown. */
static FakeHost *reach(const AgentLink *l, int *r) {
        FakeHost *h = host_of(l->addr);
        *r = !h || h->down ? err_set(-EAGAIN, "agent %s: UNAVAILABLE (fake: down)", l->addr) : 0;
        return *r < 0 ? NULL : h;
}

void fake_reset(void) {
        pthread_mutex_lock(&fake_mutex);
        memset(fake_hosts, 0, sizeof(fake_hosts));
        fake_n_hosts = 0;
        pthread_mutex_unlock(&fake_mutex);
}

void fake_host_add(const char *addr, uint64_t memory_mib, uint32_t cpus) {
        pthread_mutex_lock(&fake_mutex);
        FakeHost *h = &fake_hosts[fake_n_hosts++];
        memset(h, 0, sizeof(*h));
        snprintf(h->addr, sizeof(h->addr), "%s", addr);
        h->memory_mib = memory_mib;
        h->cpus = cpus;
        pthread_mutex_unlock(&fake_mutex);
}

static void guest_put(FakeHost *h, const FakeGuest *g) {
        h->guests[h->n_guests] = *g;
        snprintf(h->guests[h->n_guests++].async_job, sizeof(g->async_job), "none");
}

static void guest_drop(FakeHost *h, FakeGuest *g) {
        *g = h->guests[--h->n_guests];
}

void fake_guest_add(const char *addr, const char *name, const char *uuid, uint64_t memory_mib, uint32_t vcpus) {
        FakeGuest g = { .memory_mib = memory_mib, .vcpus = vcpus };
        snprintf(g.name, sizeof(g.name), "%s", name);
        snprintf(g.uuid, sizeof(g.uuid), "%s", uuid);
        pthread_mutex_lock(&fake_mutex);
        guest_put(host_of(addr), &g);
        pthread_mutex_unlock(&fake_mutex);
}

void fake_host_down(const char *addr, bool down) {
        pthread_mutex_lock(&fake_mutex);
        host_of(addr)->down = down;
        pthread_mutex_unlock(&fake_mutex);
}

void fake_mig_end(const char *guest, bool success, const char *error, bool lands) {
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++) {
                FakeHost *h = &fake_hosts[i];
                FakeMig *m = mig_of(h, guest);
                FakeGuest *g = guest_on(h, guest);
                if (!m || m->done || !g)
                        continue;
                m->done = true;
                m->success = success;
                snprintf(m->error, sizeof(m->error), "%s", error ? error : "");
                snprintf(g->async_job, sizeof(g->async_job), "none");
                FakeHost *d = host_of(m->dest);
                if (lands && d) {
                        guest_put(d, g);
                        guest_drop(h, g);
                }
        }
        pthread_mutex_unlock(&fake_mutex);
}

void fake_guest_disks(const char *guest, uint64_t bytes) {
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++) {
                FakeGuest *g = guest_on(&fake_hosts[i], guest);
                if (g)
                        g->disk_bytes = bytes;
        }
        pthread_mutex_unlock(&fake_mutex);
}

void fake_mig_figures(const char *guest, const LinkMigResult *f) {
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++) {
                FakeMig *m = mig_of(&fake_hosts[i], guest);
                if (m && !m->done)
                        m->figures = *f;
        }
        pthread_mutex_unlock(&fake_mutex);
}

void fake_mig_disks(const char *guest, uint64_t total, uint64_t done) {
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++) {
                FakeMig *m = mig_of(&fake_hosts[i], guest);
                if (m && !m->done) {
                        m->disk_total = total;
                        m->disk_done = done;
                }
        }
        pthread_mutex_unlock(&fake_mutex);
}

void fake_mig_phase(const char *guest, const char *phase) {
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++) {
                FakeMig *m = mig_of(&fake_hosts[i], guest);
                if (m && !m->done)
                        snprintf(m->phase, sizeof(m->phase), "%s", phase);
        }
        pthread_mutex_unlock(&fake_mutex);
}

void fake_mig_postcopy_failed(const char *guest, const char *alert) {
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++) {
                FakeMig *m = mig_of(&fake_hosts[i], guest);
                if (!m || m->done)
                        continue;
                m->done = true;
                m->success = false;
                snprintf(m->phase, sizeof(m->phase), "postcopy_failed");
                snprintf(m->error, sizeof(m->error), "%s", alert);
        }
        pthread_mutex_unlock(&fake_mutex);
}

unsigned fake_abort_calls(const char *addr) {
        unsigned n = 0;
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++)
                if (!addr || strcmp(fake_hosts[i].addr, addr) == 0)
                        n += fake_hosts[i].abort_calls;
        pthread_mutex_unlock(&fake_mutex);
        return n;
}

void fake_mig_forget(const char *guest) {
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++) {
                FakeHost *h = &fake_hosts[i];
                FakeMig *m = mig_of(h, guest);
                FakeGuest *g = guest_on(h, guest);
                if (m) {
                        *m = h->migs[--h->n_migs];
                        if (g)
                                snprintf(g->async_job, sizeof(g->async_job), "none");
                }
        }
        pthread_mutex_unlock(&fake_mutex);
}

unsigned fake_migrate_calls(const char *addr) {
        unsigned n = 0;
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++)
                if (!addr || strcmp(fake_hosts[i].addr, addr) == 0)
                        n += fake_hosts[i].migrate_calls;
        pthread_mutex_unlock(&fake_mutex);
        return n;
}

bool fake_migrate_params(const char *guest, MigParams *ret) {
        bool found = false;
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts; i++)
                for (size_t j = 0; j < fake_hosts[i].n_migs; j++)
                        if (strcmp(fake_hosts[i].migs[j].guest, guest) == 0) {
                                *ret = fake_hosts[i].migs[j].params;
                                found = true;
                        }
        pthread_mutex_unlock(&fake_mutex);
        return found;
}

const char *fake_guest_host(const char *guest) {
        const char *at = NULL;
        pthread_mutex_lock(&fake_mutex);
        for (size_t i = 0; i < fake_n_hosts && !at; i++)
                if (guest_on(&fake_hosts[i], guest))
                        at = fake_hosts[i].addr;
        pthread_mutex_unlock(&fake_mutex);
        return at;
}

/* ---- coord-agents.h ---- */

int agent_link_open(const char *addr, const LinkTls *tls, AgentLink **ret) {
        AgentLink *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        snprintf(l->addr, sizeof(l->addr), "%s", addr);
        *ret = l;
        return 0;
}

void agent_link_close(AgentLink *l) {
        free(l);
}

int agent_link_stats(AgentLink *l, int64_t timeout_ms, AgentHostInfo *ret) {
        int r;
        pthread_mutex_lock(&fake_mutex);
        FakeHost *h = reach(l, &r);
        if (h) {
                memset(ret, 0, sizeof(*ret));
                ret->memory_mib = h->memory_mib;
                ret->cpus = h->cpus;
                ret->guests = calloc(h->n_guests + 1, sizeof(*ret->guests));
                for (size_t i = 0; i < h->n_guests; i++) {
                        AgentGuestInfo *g = &ret->guests[ret->n_guests++];
                        snprintf(g->name, sizeof(g->name), "%s", h->guests[i].name);
                        snprintf(g->uuid, sizeof(g->uuid), "%s", h->guests[i].uuid);
                        snprintf(g->cpu_model, sizeof(g->cpu_model), "qemu64");
                        snprintf(g->async_job, sizeof(g->async_job), "%s", h->guests[i].async_job);
                        g->state = COORD_GUEST_STATE_RUNNING;
                        g->memory_mib = h->guests[i].memory_mib;
                        g->vcpus = h->guests[i].vcpus;
                        g->local_disk_bytes = h->guests[i].disk_bytes;
                        ret->guests_memory_mib += g->memory_mib;
                        ret->guests_vcpus += g->vcpus;
                }
        }
        pthread_mutex_unlock(&fake_mutex);
        return r;
}

void agent_host_info_clear(AgentHostInfo *h) {
        free(h->guests);
        memset(h, 0, sizeof(*h));
}

int agent_link_migrate(AgentLink *l, const char *guest, const char *op, const char *dest_addr, const MigParams *p,
                       int64_t timeout_ms) {
        int r;
        pthread_mutex_lock(&fake_mutex);
        FakeHost *h = reach(l, &r);
        FakeGuest *g = guest_on(h, guest);
        FakeMig *m = h ? mig_of(h, guest) : NULL;
        if (h && !g)
                r = err_set(-ENOENT, "agent %s: NOT_FOUND: no guest %s (fake)", l->addr, guest);
        else if (h && m && !m->done)
                r = err_set(-EBUSY, "agent %s: FAILED_PRECONDITION: %s is migrating (fake)", l->addr, guest);
        else if (h) {
                h->migrate_calls++;
                m = &h->migs[h->n_migs++];
                memset(m, 0, sizeof(*m));
                snprintf(m->guest, sizeof(m->guest), "%s", g->name);
                snprintf(m->op, sizeof(m->op), "%s", op);
                snprintf(m->dest, sizeof(m->dest), "%s", dest_addr);
                m->params = *p;
                snprintf(g->async_job, sizeof(g->async_job), "migration-out");
        }
        pthread_mutex_unlock(&fake_mutex);
        return r;
}

int agent_link_get_migration(AgentLink *l, const char *guest, int64_t timeout_ms, LinkMigResult *ret) {
        int r;
        pthread_mutex_lock(&fake_mutex);
        FakeHost *h = reach(l, &r);
        FakeMig *m = h ? mig_of(h, guest) : NULL;
        if (h && !m)
                r = err_set(-ENOENT, "agent %s: NOT_FOUND: no migration of %s (fake)", l->addr, guest);
        else if (m) {
                memset(ret, 0, sizeof(*ret));
                snprintf(ret->op, sizeof(ret->op), "%s", m->op);
                ret->done = m->done;
                ret->success = m->success;
                snprintf(ret->error, sizeof(ret->error), "%s", m->error);
                snprintf(ret->phase, sizeof(ret->phase), "%s", m->phase[0] ? m->phase : m->done ? "done" : "perform");
                ret->guest_memory_bytes = m->figures.guest_memory_bytes;
                ret->multifd_bytes = m->figures.multifd_bytes;
                ret->multifd_channels = m->figures.multifd_channels;
                ret->compression = m->figures.compression;
                ret->disk_bytes = m->figures.disk_bytes;
                ret->transferred = m->figures.transferred;
        }
        pthread_mutex_unlock(&fake_mutex);
        return r;
}

int agent_link_abort(AgentLink *l, const char *guest, int64_t timeout_ms) {
        int r;
        pthread_mutex_lock(&fake_mutex);
        FakeHost *h = reach(l, &r);
        FakeMig *m = h ? mig_of(h, guest) : NULL;
        FakeGuest *g = guest_on(h, guest);
        if (h)
                h->abort_calls++;
        if (m && !m->done && (!strcmp(m->phase, "postcopy_paused") || !strcmp(m->phase, "postcopy_recover")))
                r = err_set(-EBUSY, "agent %s: FAILED_PRECONDITION: post-copy of %s is %s (fake)", l->addr, guest,
                            m->phase);
        else if (m && !m->done) {
                m->done = true;
                snprintf(m->error, sizeof(m->error), "aborted");
                if (g)
                        snprintf(g->async_job, sizeof(g->async_job), "none");
        }
        pthread_mutex_unlock(&fake_mutex);
        return r;
}

int agent_link_tune(AgentLink *l, const char *guest, uint64_t bandwidth, int64_t timeout_ms) {
        int r;
        pthread_mutex_lock(&fake_mutex);
        (void) reach(l, &r);
        pthread_mutex_unlock(&fake_mutex);
        return r;
}

int agent_link_get_guest(AgentLink *l, const char *guest, int64_t timeout_ms, LinkGuestStatus *ret) {
        int r;
        pthread_mutex_lock(&fake_mutex);
        FakeHost *h = reach(l, &r);
        FakeGuest *g = guest_on(h, guest);
        if (h && !g)
                r = err_set(-ENOENT, "agent %s: NOT_FOUND: no guest %s (fake)", l->addr, guest);
        else if (g) {
                memset(ret, 0, sizeof(*ret));
                ret->state = COORD_GUEST_STATE_RUNNING;
                snprintf(ret->async_job, sizeof(ret->async_job), "%s", g->async_job);
                snprintf(ret->phase, sizeof(ret->phase), "%s", strcmp(g->async_job, "none") ? "perform" : "");
                FakeMig *m = mig_of(h, g->name); /* asked by UUID */
                if (m && !m->done) {
                        ret->disk_total = m->disk_total;
                        ret->disk_transferred = m->disk_done;
                }
        }
        pthread_mutex_unlock(&fake_mutex);
        return r;
}
