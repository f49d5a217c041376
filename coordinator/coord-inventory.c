/* The coordinator's inventory: the host table, each host's health and
 * figures, and the API's host and guest listings (see coord-priv.h).
 *
 * Hosts come from the configuration's seed list and the API (AddHost,
 * RemoveHost, SetHostState, UpdateHost), persisted in the store; a removed
 * host keeps its record, flagged, until coord_free, so pointers taken under
 * the lock stay valid.  A new address is a new agent link: UpdateHost
 * replaces the record (the old one flagged removed) rather than change an
 * immutable link under threads that copied it.  One table, host_members,
 * names the members a record change may touch: UpdateHost's field names,
 * the merge of a change, and the report of a seed host that disagrees
 * with the store all read it.  The inventory thread asks every host's agent for its figures
 * (GetAgentStats: memory, CPUs, every guest) each heartbeat_ms: an answer
 * makes the host HEALTHY, COORD_MISSES_UNHEALTHY misses in a row (or a
 * first contact that fails) UNREACHABLE.  Listings and planning refresh
 * every host first, so people and placement see figures of now, not of the
 * last heartbeat.  The agent calls are made without coord->lock, on copies
 * of the links; each answer is applied to the host found again by name.
 */
#include "coord-priv.h"

#include <errno.h>
#include <stddef.h>
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

/* The migrations @h may run at once, out of it (@out) or into it: its own
 * limit (else the cluster's), and no more than its link carries at the
 * configured per-stream rate; at least 1 (coord-priv.h). */
unsigned coord_host_slots(const Coordinator *c, const CHost *h, bool out) {
        uint64_t per = c->cfg.stream_bytes_per_s ? c->cfg.stream_bytes_per_s : 400000000;
        uint64_t s = coord_host_link_rate(c, h) / per;
        unsigned lim = out ? (h->h.max_outgoing ? h->h.max_outgoing : c->cfg.max_outgoing)
                           : (h->h.max_incoming ? h->h.max_incoming : c->cfg.max_incoming);
        if (s < 1)
                s = 1;
        return (unsigned) MIN((uint64_t) lim, s);
}

const char *coord_guest_group(const Coordinator *c, const char *guest) {
        for (size_t i = 0; i < c->cfg.n_aa; i++)
                if (strcmp(c->cfg.aa[i].guest, guest) == 0)
                        return c->cfg.aa[i].group;
        return "";
}

bool coord_guest_compressible(const Coordinator *c, const char *guest) {
        for (size_t i = 0; i < c->cfg.n_compressible; i++)
                if (strcmp(c->cfg.compressible[i], guest) == 0)
                        return true;
        return false;
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

/* The members of a host record that UpdateHost may change and that a seed
 * host is compared on (state is not: SetHostState changes it, and a seed's
 * state is only its first one). */
typedef enum { MEMBER_TEXT, MEMBER_U64, MEMBER_U32 } MemberKind;
static const struct {
        const char *name; /* the API's field name */
        unsigned bit;     /* CoordHostField */
        size_t offset, size;
        MemberKind kind;
} host_members[] = {
#define M(n, b, k) { #n, b, offsetof(StoreHost, n), sizeof(((StoreHost *) 0)->n), k }
        M(address, COORD_HOST_FIELD_ADDRESS, MEMBER_TEXT),
        M(migration_address, COORD_HOST_FIELD_MIGRATION_ADDRESS, MEMBER_TEXT),
        M(memory_mib, COORD_HOST_FIELD_MEMORY_MIB, MEMBER_U64),
        M(vcpus, COORD_HOST_FIELD_VCPUS, MEMBER_U32),
        M(cpu_model, COORD_HOST_FIELD_CPU_MODEL, MEMBER_TEXT),
        M(link_bytes_per_s, COORD_HOST_FIELD_LINK_BYTES_PER_S, MEMBER_U64),
        M(max_outgoing, COORD_HOST_FIELD_MAX_OUTGOING, MEMBER_U32),
        M(max_incoming, COORD_HOST_FIELD_MAX_INCOMING, MEMBER_U32),
#undef M
};

unsigned coord_host_field_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(host_members); i++)
                if (strcmp(host_members[i].name, s) == 0)
                        return host_members[i].bit;
        return 0;
}

/* Member @i of @h as text, in @buf. */
static const char *member_text(const StoreHost *h, size_t i, char *buf, size_t len) {
        const void *p = (const char *) h + host_members[i].offset;
        if (host_members[i].kind == MEMBER_TEXT)
                snprintf(buf, len, "'%s'", (const char *) p);
        else if (host_members[i].kind == MEMBER_U64)
                snprintf(buf, len, "%llu", (unsigned long long) *(const uint64_t *) p);
        else
                snprintf(buf, len, "%u", *(const uint32_t *) p);
        return buf;
}

static bool member_differs(const StoreHost *a, const StoreHost *b, size_t i) {
        const char *pa = (const char *) a + host_members[i].offset, *pb = (const char *) b + host_members[i].offset;
        if (host_members[i].kind == MEMBER_TEXT)
                return strcmp(pa, pb) != 0;
        return memcmp(pa, pb, host_members[i].size) != 0;
}

size_t coord_host_config_report(const StoreHost *cfg, const StoreHost *stored) {
        size_t n = 0;
        for (size_t i = 0; i < ELEMENTSOF(host_members); i++) {
                char a[160], b[160];
                if (!member_differs(cfg, stored, i))
                        continue;
                n++;
                log_warning("host %s: the configuration's %s %s differs from the store's %s; the store's value "
                            "wins (it holds what the API changed; change it with UpdateHost, droverctl host set)",
                            cfg->name, host_members[i].name, member_text(cfg, i, a, sizeof(a)),
                            member_text(stored, i, b, sizeof(b)));
        }
        return n;
}

/* Why changing host @h's record to @next is unsafe now, or 0. */
static int host_update_check_locked(Coordinator *c, const CHost *h, const StoreHost *next) {
        lock_assert_held(&c->lock);
        const char *name = h->h.name;
        bool new_address = strcmp(h->h.address, next->address) != 0;
        if ((new_address || strcmp(h->h.migration_address, next->migration_address) != 0) &&
            (h->out_running || h->in_running))
                return err_set(-EBUSY,
                               "host %s: its address cannot change while %u migrations out of it and %u into it "
                               "are in flight",
                               name, h->out_running, h->in_running);
        for (size_t i = 0; new_address && i < c->n_hosts; i++)
                if (!c->hosts[i]->removed && c->hosts[i] != h && strcmp(c->hosts[i]->h.address, next->address) == 0)
                        return err_set(-EEXIST, "host %s: address %s is host %s's", name, next->address,
                                       c->hosts[i]->h.name);
        if (next->memory_mib && next->memory_mib < h->info.guests_memory_mib)
                return err_set(-EBUSY, "host %s: memory_mib %llu is below the %llu MiB its guests use", name,
                               (unsigned long long) next->memory_mib,
                               (unsigned long long) h->info.guests_memory_mib);
        if (next->vcpus && next->vcpus < h->info.guests_vcpus)
                return err_set(-EBUSY, "host %s: vcpus %u is below the %u its guests use", name, next->vcpus,
                               (unsigned) h->info.guests_vcpus);
        if (strcmp(h->h.cpu_model, next->cpu_model) != 0 && h->info.n_guests > 0)
                return err_set(-EBUSY, "host %s: its cpu_model cannot change while it runs %zu guests", name,
                               h->info.n_guests);
        return 0;
}

/* Apply a checked change: in place, or for a new address a new record
 * (with the old one's health and figures) and the old one flagged
 * removed.  Returns the record now holding the host. */
static int host_apply_locked(Coordinator *c, CHost *h, const StoreHost *next, CHost **ret) {
        lock_assert_held(&c->lock);
        if (strcmp(h->h.address, next->address) == 0) {
                h->h = *next;
                *ret = h;
                return 0;
        }
        h->removed = true;
        int r = coord_host_add_locked(c, next);
        if (r < 0) {
                h->removed = false;
                return r;
        }
        CHost *n = c->hosts[c->n_hosts - 1];
        n->info = h->info; /* moved: the removed record is never read again */
        memset(&h->info, 0, sizeof(h->info));
        n->health = h->health;
        n->last_seen_ms = h->last_seen_ms;
        n->down_since_ms = h->down_since_ms;
        *ret = n;
        return 0;
}

int coord_host_update(Coordinator *c, const char *name, const StoreHost *want, unsigned fields,
                      CoordHostView *ret) {
        if (!fields || (fields & ~(unsigned) COORD_HOST_FIELD_ALL))
                return err_set(-EINVAL, "host %s: no known field to change", name);
        lock_acquire(&c->lock);
        CHost *h = coord_host_find_locked(c, name);
        if (!h) {
                lock_release(&c->lock);
                return err_set(-ENOENT, "no host '%s'", name);
        }
        StoreHost before = h->h, next = h->h;
        for (size_t i = 0; i < ELEMENTSOF(host_members); i++)
                if (fields & host_members[i].bit)
                        memcpy((char *) &next + host_members[i].offset,
                               (const char *) want + host_members[i].offset, host_members[i].size);
        int r = validate_host(&next);
        if (r >= 0)
                r = host_update_check_locked(c, h, &next);
        lock_release(&c->lock);
        if (r < 0)
                return r;
        /* stored first: a change the store refused is never acted on */
        if ((r = c->store->ops->host_put(c->store, &next)) < 0)
                return r;
        lock_acquire(&c->lock);
        h = coord_host_find_locked(c, name);
        if (!h)
                r = err_set(-ENOENT, "host '%s' was removed meanwhile", name);
        else {
                next.state = h->h.state; /* a SetHostState meanwhile wins */
                if ((r = host_update_check_locked(c, h, &next)) >= 0 && (r = host_apply_locked(c, h, &next, &h)) >= 0 &&
                    ret)
                        coord_host_view_locked(c, h, ret);
        }
        bool busy = r < 0 && h;
        lock_release(&c->lock);
        if (r < 0 && !h) /* removed meanwhile: the put must not bring it back */
                (void) c->store->ops->host_delete(c->store, name);
        if (busy) {
                /* busy meanwhile: the store gets back the record memory still has */
                before.state = next.state;
                (void) c->store->ops->host_put(c->store, &before);
        }
        if (r < 0)
                return r;
        if (next.state != before.state)
                (void) c->store->ops->host_put(c->store, &next);
        return 0;
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
                        o->local_disk_bytes = g->local_disk_bytes;
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
