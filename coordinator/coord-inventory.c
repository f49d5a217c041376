/* The coordinator's inventory: the host table, each host's health and
 * figures, and the API's host and guest listings (see coord-priv.h).
 *
 * Hosts come from the configuration's seed list and the API (AddHost,
 * RemoveHost, SetHostState), persisted in the store; a removed host keeps
 * its record, flagged, until coord_free, so pointers taken under the lock
 * stay valid.  The inventory thread asks every host's agent for its figures
 * (GetAgentStats: memory, CPUs, every guest) each heartbeat_ms: an answer
 * makes the host HEALTHY, COORD_MISSES_UNHEALTHY misses in a row (or a
 * first contact that fails) UNREACHABLE.  Listings and planning refresh
 * every host first, so people and placement see figures of now, not of the
 * last heartbeat.  The agent calls are made without coord->lock, on copies
 * of the links; each answer is applied to the host found again by name.
 */
#include "coord-priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

CHost *coord_host_find_locked(Coordinator *c, const char *name) {
        lock_assert_held(&c->lock);
        for (size_t i = 0; i < c->n_hosts; i++)
                if (!c->hosts[i]->removed && strcmp(c->hosts[i]->h.name, name) == 0)
                        return c->hosts[i];
        return NULL;
}

uint64_t coord_host_link_rate(const Coordinator *c, const CHost *h) {
        return h->h.link_bytes_per_s ? h->h.link_bytes_per_s : c->cfg.default_link_bytes_per_s;
}

const char *coord_guest_group(const Coordinator *c, const char *guest) {
        for (size_t i = 0; i < c->cfg.n_aa; i++)
                if (strcmp(c->cfg.aa[i].guest, guest) == 0)
                        return c->cfg.aa[i].group;
        return "";
}

int coord_host_add_locked(Coordinator *c, const StoreHost *h) {
        lock_assert_held(&c->lock);
        if (c->n_hosts >= COORD_MAX_HOSTS)
                return err_set(-ENOSPC, "the inventory holds at most %d hosts", COORD_MAX_HOSTS);
        for (size_t i = 0; i < c->n_hosts; i++)
                if (!c->hosts[i]->removed && (strcmp(c->hosts[i]->h.name, h->name) == 0 ||
                                              strcmp(c->hosts[i]->h.address, h->address) == 0))
                        return err_set(-EEXIST, "host %s (%s) is already known as %s (%s)", h->name, h->address,
                                       c->hosts[i]->h.name, c->hosts[i]->h.address);
        CHost *ch = calloc(1, sizeof(*ch));
        if (!ch)
                return err_set(-ENOMEM, "out of memory");
        ch->h = *h;
        if (ch->h.state == COORD_HOST_STATE_UNSPECIFIED)
                ch->h.state = COORD_HOST_STATE_ENABLED;
        int r = agent_link_open(h->address, &c->tls, &ch->link);
        if (r < 0) {
                free(ch);
                return r;
        }
        c->hosts[c->n_hosts++] = ch;
        return 0;
}

static int validate_host(const StoreHost *h) {
        if (!h->name[0] || !h->address[0] || !strchr(h->address, ':'))
                return err_set(-EINVAL, "host: 'name' and 'address' (HOST:PORT) are required");
        if (h->state < 0 || h->state >= COORD_HOST_STATE_MAX)
                return err_set(-EINVAL, "host %s: unknown state %d", h->name, h->state);
        return 0;
}

int coord_host_add(Coordinator *c, const StoreHost *h) {
        int r = validate_host(h);
        if (r < 0)
                return r;
        lock_acquire(&c->lock);
        r = coord_host_add_locked(c, h);
        StoreHost copy = r >= 0 ? c->hosts[c->n_hosts - 1]->h : *h;
        lock_release(&c->lock);
        if (r >= 0)
                r = c->store->ops->host_put(c->store, &copy);
        return r;
}

int coord_host_remove(Coordinator *c, const char *name) {
        lock_acquire(&c->lock);
        CHost *h = coord_host_find_locked(c, name);
        int r = 0;
        if (!h)
                r = err_set(-ENOENT, "no host '%s'", name);
        else if (h->info.guests_memory_mib > 0 || h->out_running || h->in_running)
                r = err_set(-EBUSY, "host %s still runs guests or migrations: evacuate it first", name);
        else
                h->removed = true;
        lock_release(&c->lock);
        if (r >= 0)
                r = c->store->ops->host_delete(c->store, name);
        return r;
}

void coord_host_view_locked(Coordinator *c, const CHost *h, CoordHostView *v) {
        lock_assert_held(&c->lock);
        memset(v, 0, sizeof(*v));
        v->h = h->h;
        v->health = h->health;
        v->memory_used_mib = h->info.guests_memory_mib;
        v->vcpus_used = h->info.guests_vcpus;
        v->guests = (uint32_t) h->info.n_guests;
        v->last_seen_unix_ms = h->last_seen_ms;
        snprintf(v->last_error, sizeof(v->last_error), "%s", h->last_error);
        if (!v->h.memory_mib)
                v->h.memory_mib = h->info.memory_mib;
        if (!v->h.vcpus)
                v->h.vcpus = h->info.cpus * 4; /* default vCPU overcommit 4:1 */
}

int coord_host_set_state(Coordinator *c, const char *name, int state, CoordHostView *ret) {
        if (state <= COORD_HOST_STATE_UNSPECIFIED || state >= COORD_HOST_STATE_MAX)
                return err_set(-EINVAL, "unknown host state %d", state);
        lock_acquire(&c->lock);
        CHost *h = coord_host_find_locked(c, name);
        if (!h) {
                lock_release(&c->lock);
                return err_set(-ENOENT, "no host '%s'", name);
        }
        StoreHost copy = h->h;
        lock_release(&c->lock);
        int old = copy.state;
        /* stored first: a state the store refused is never acted on */
        copy.state = state;
        int r = c->store->ops->host_put(c->store, &copy);
        if (r < 0)
                return r;
        lock_acquire(&c->lock);
        if ((h = coord_host_find_locked(c, name))) {
                h->h.state = state;
                if (ret)
                        coord_host_view_locked(c, h, ret);
        }
        lock_release(&c->lock);
        if (!h)
                return err_set(-ENOENT, "host '%s' was removed meanwhile", name);
        if (old != state)
                log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.host = name), "host %s: state %s -> %s", name,
                           coord_host_state_to_string(old), coord_host_state_to_string(state));
        return 0;
}

void coord_summary(Coordinator *c, CoordSummary *ret) {
        CoordSummary s = { 0 };
        lock_acquire(&c->lock);
        for (size_t i = 0; i < c->n_hosts; i++) {
                const CHost *h = c->hosts[i];
                if (h->removed)
                        continue;
                s.hosts++;
                s.hosts_up += h->health == COORD_HOST_HEALTH_HEALTHY;
                s.migrations += h->out_running;
        }
        s.jobs = c->n_jobs;
        lock_release(&c->lock);
        *ret = s;
}

int coord_hosts(Coordinator *c, CoordHostView **ret, size_t *ret_n) {
        coord_inventory_refresh(c); /* a listing is read by people and scripts: fresh, not a heartbeat old */
        lock_acquire(&c->lock);
        CoordHostView *v = calloc(c->n_hosts + 1, sizeof(*v));
        size_t n = 0;
        if (v)
                for (size_t i = 0; i < c->n_hosts; i++)
                        if (!c->hosts[i]->removed)
                                coord_host_view_locked(c, c->hosts[i], &v[n++]);
        lock_release(&c->lock);
        if (!v)
                return err_set(-ENOMEM, "out of memory");
        *ret = v;
        *ret_n = n;
        return 0;
}

int coord_guests(Coordinator *c, const char *host, CoordGuestView **ret, size_t *ret_n) {
        size_t cap = 64, n = 0;
        CoordGuestView *v = malloc(cap * sizeof(*v));
        if (!v)
                return err_set(-ENOMEM, "out of memory");
        coord_inventory_refresh(c);
        lock_acquire(&c->lock);
        if (host && host[0] && !coord_host_find_locked(c, host)) {
                lock_release(&c->lock);
                free(v);
                return err_set(-ENOENT, "no host '%s'", host);
        }
        for (size_t i = 0; i < c->n_hosts; i++) {
                CHost *h = c->hosts[i];
                if (h->removed || (host && host[0] && strcmp(h->h.name, host) != 0))
                        continue;
                for (size_t k = 0; k < h->info.n_guests; k++) {
                        AgentGuestInfo *g = &h->info.guests[k];
                        if (n == cap) {
                                CoordGuestView *nv = realloc(v, (cap *= 2) * sizeof(*v));
                                if (!nv)
                                        break;
                                v = nv;
                        }
                        CoordGuestView *o = &v[n++];
                        memset(o, 0, sizeof(*o));
                        snprintf(o->name, sizeof(o->name), "%s", g->name);
                        snprintf(o->uuid, sizeof(o->uuid), "%s", g->uuid);
                        snprintf(o->host, sizeof(o->host), "%s", h->h.name);
                        snprintf(o->cpu_model, sizeof(o->cpu_model), "%s", g->cpu_model);
                        snprintf(o->group, sizeof(o->group), "%s", coord_guest_group(c, g->name));
                        o->state = g->state;
                        o->memory_mib = g->memory_mib;
                        o->vcpus = g->vcpus;
                        o->dirty_bytes_per_s = g->dirty_pages_rate * 4096;
                        o->unmanaged = g->unmanaged;
                }
        }
        lock_release(&c->lock);
        *ret = v;
        *ret_n = n;
        return 0;
}

/* ---- heartbeats ---- */

/* The hosts to ask: the links and names of those not removed, copied under
 * the lock (the calls are made without it).  Returns how many. */
static size_t hosts_to_ask(Coordinator *c, AgentLink **links, char (*names)[STORE_NAME_MAX]) {
        size_t n = 0;
        lock_acquire(&c->lock);
        for (size_t i = 0; i < c->n_hosts; i++)
                if (!c->hosts[i]->removed) {
                        links[n] = c->hosts[i]->link;
                        snprintf(names[n++], STORE_NAME_MAX, "%s", c->hosts[i]->h.name);
                }
        lock_release(&c->lock);
        return n;
}

/* A host's health before and after a heartbeat or refresh, noted under
 * coord->lock and logged by log_health_change() after it is released. */
typedef struct HealthChange {
        CoordHostHealth from, to;
        uint64_t down_ms;  /* how long it had been unreachable (up again) */
        int misses;        /* heartbeats missed in a row (unreachable) */
} HealthChange;

static void log_health_change(const char *host, const HealthChange *hc, const char *why) {
        if (hc->from == hc->to)
                return;
        if (hc->to == COORD_HOST_HEALTH_HEALTHY && hc->from == COORD_HOST_HEALTH_UNREACHABLE)
                log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.host = host), "host %s is up again after %.1f s unreachable",
                           host, (double) hc->down_ms / 1000.0);
        else if (hc->to == COORD_HOST_HEALTH_HEALTHY)
                log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.host = host), "host %s is up", host);
        else if (hc->to == COORD_HOST_HEALTH_UNREACHABLE && hc->from == COORD_HOST_HEALTH_UNKNOWN)
                log_fields(LOG_LEVEL_WARNING, LOG_FIELDS(.host = host), "host %s is unreachable: %s", host, why);
        else if (hc->to == COORD_HOST_HEALTH_UNREACHABLE)
                log_fields(LOG_LEVEL_WARNING, LOG_FIELDS(.host = host),
                           "host %s is unreachable: %d heartbeats missed in a row: %s", host, hc->misses, why);
}

/* An agent answered: its figures replace the host's (@info is taken).
 * *ret says what its health did. */
static void host_answered_locked(Coordinator *c, CHost *h, AgentHostInfo *info, HealthChange *ret) {
        lock_assert_held(&c->lock);
        *ret = (HealthChange){ .from = h->health, .to = COORD_HOST_HEALTH_HEALTHY,
                               .down_ms = h->down_since_ms ? coord_now_ms() - h->down_since_ms : 0 };
        agent_host_info_clear(&h->info);
        h->info = *info;
        h->health = COORD_HOST_HEALTH_HEALTHY;
        h->misses = 0;
        h->down_since_ms = 0;
        h->last_seen_ms = coord_now_ms();
}

void coord_inventory_heartbeat(Coordinator *c) {
        AgentLink *links[COORD_MAX_HOSTS];
        char names[COORD_MAX_HOSTS][STORE_NAME_MAX];
        size_t n = hosts_to_ask(c, links, names);
        for (size_t i = 0; i < n && !atomic_load(&c->stopping); i++) {
                AgentHostInfo info;
                int r = agent_link_stats(links[i], MIN(c->cfg.heartbeat_ms, 5000), &info);
                char why[256];
                snprintf(why, sizeof(why), "%s", r < 0 ? err_str(r) : "");
                HealthChange hc = { 0 };
                lock_acquire(&c->lock);
                CHost *h = coord_host_find_locked(c, names[i]);
                if (h && r >= 0) {
                        host_answered_locked(c, h, &info, &hc);
                        h->last_error[0] = '\0';
                } else if (h) {
                        hc.from = h->health;
                        if (++h->misses >= COORD_MISSES_UNHEALTHY || h->health == COORD_HOST_HEALTH_UNKNOWN) {
                                if (h->health != COORD_HOST_HEALTH_UNREACHABLE)
                                        h->down_since_ms = coord_now_ms();
                                h->health = COORD_HOST_HEALTH_UNREACHABLE;
                        }
                        hc.to = h->health;
                        hc.misses = h->misses;
                        snprintf(h->last_error, sizeof(h->last_error), "%s", why);
                } else if (r >= 0)
                        agent_host_info_clear(&info);
                lock_release(&c->lock);
                log_health_change(names[i], &hc, why);
        }
}

/* A heartbeat every heartbeat_ms: the agents push nothing, so polling them
 * is what a heartbeat is.  Between two it waits on coord->stop, which only
 * coord_stop broadcasts: no wake-up but the period and the stop. */
void *coord_inventory_thread(void *arg) {
        Coordinator *c = arg;
        while (!atomic_load(&c->stopping)) {
                coord_inventory_heartbeat(c);
                Deadline next = deadline_in_ms(c->cfg.heartbeat_ms);
                lock_acquire(&c->lock);
                while (!atomic_load(&c->stopping) && cond_wait(&c->stop, &c->lock, next) == 0)
                        ;
                lock_release(&c->lock);
        }
        return NULL;
}

/* A refresh does not count misses: a host that does not answer keeps its
 * health until the heartbeat decides. */
void coord_inventory_refresh(Coordinator *c) {
        AgentLink *links[COORD_MAX_HOSTS];
        char names[COORD_MAX_HOSTS][STORE_NAME_MAX];
        size_t n = hosts_to_ask(c, links, names);
        for (size_t i = 0; i < n; i++) {
                AgentHostInfo info;
                HealthChange hc = { 0 };
                if (agent_link_stats(links[i], 3000, &info) < 0)
                        continue;
                lock_acquire(&c->lock);
                CHost *h = coord_host_find_locked(c, names[i]);
                if (h)
                        host_answered_locked(c, h, &info, &hc);
                else
                        agent_host_info_clear(&info);
                lock_release(&c->lock);
                log_health_change(names[i], &hc, "");
        }
}
