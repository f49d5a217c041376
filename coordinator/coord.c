/* The coordinator's job engine (see coord.h, docs/coordinator.md).
 *
 * One inventory thread polls every agent's GetAgentStats; one scheduler
 * thread runs every job: it admits queued sub-tasks (limits, link budget),
 * starts them on the source agents (the sub-task with its operation id is
 * persisted first), follows them (GetMigration, GetGuest), re-tunes the
 * bandwidth of running migrations when their link's share changes, verifies
 * finished jobs, and persists every change.  coord->lock is held only to
 * read or change the tables, never across an agent or store call.
 */
#define _GNU_SOURCE
#include "coord.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "deadline.h"
#include "err.h"
#include "log.h"

/* the enums of coordinator.proto / agent.proto, by value */
enum { HS_ENABLED = 1, HS_DRAINING = 2, HS_MAINTENANCE = 3 };
enum { HH_UNKNOWN = 0, HH_HEALTHY = 1, HH_UNREACHABLE = 2 };
enum { JK_MIGRATE = 1, JK_EVACUATE = 2 };
enum { JP_PLANNING = 1, JP_RUNNING = 2, JP_VERIFYING = 3, JP_SUCCEEDED = 4, JP_FAILED = 5, JP_CANCELLED = 6 };
enum { FP_CONTINUE = 0, FP_STOP = 1 };
enum { SP_QUEUED = 1, SP_MIGRATING = 2, SP_SUCCEEDED = 3, SP_FAILED = 4, SP_CANCELLED = 5, SP_BLOCKED = 6 };
enum { GS_RUNNING = 1, GS_PAUSED = 2, GS_SHUTOFF = 4, GS_CRASHED = 5 };

#define CALL_MS 10000
#define MISSES_UNHEALTHY 3

static LockClass coord_lock_class = LOCK_CLASS_INIT("coordinator");

typedef struct CHost {
        StoreHost h;              /* lock: coord->lock */
        AgentLink *link;          /* immutable; closed at coord_free */
        bool removed;             /* lock */
        int health;               /* lock */
        int misses;               /* lock */
        uint64_t last_seen_ms;    /* lock */
        char last_error[256];     /* lock */
        AgentHostInfo info;       /* lock */
        unsigned out_running;     /* lock */
        unsigned in_running;      /* lock */
} CHost;

typedef struct CSub {
        StoreSubtask t;           /* lock */
        CoordLive live;           /* lock */
        uint64_t bw;              /* lock: bandwidth given to the migration */
        uint64_t dirty;           /* lock: bytes/s the guest dirtied (at plan time) */
        bool reconcile;           /* lock: reloaded after a restart: ask before trusting */
        bool abort_sent;          /* lock */
} CSub;

typedef struct CJob {
        StoreJob j;               /* lock */
        MigParams params;     /* immutable */
        CSub *subs;               /* lock */
        size_t n;                 /* immutable */
        bool cancel;              /* lock */
        uint64_t gen;             /* lock */
} CJob;

struct Coordinator {
        CoordConfig cfg;          /* immutable */
        LinkTls tls;              /* immutable */
        Store *store;             /* immutable pointer */
        Lock lock;
        Cond changed;             /* any job changed */
        CHost *hosts[COORD_MAX_HOSTS]; /* lock */
        size_t n_hosts;           /* lock */
        CJob **jobs;              /* lock */
        size_t n_jobs, cap_jobs;  /* lock */
        pthread_t inv_thread, sched_thread;
        bool started;
        atomic_bool stopping;
        atomic_ullong counter;
};

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t unix_ms(void) {
        return wall_ns() / NSEC_PER_MSEC;
}

static CHost *host_by_name_locked(Coordinator *c, const char *name) {
        for (size_t i = 0; i < c->n_hosts; i++)
                if (!c->hosts[i]->removed && strcmp(c->hosts[i]->h.name, name) == 0)
                        return c->hosts[i];
        return NULL;
}

static CJob *job_by_id_locked(Coordinator *c, const char *id) {
        for (size_t i = 0; i < c->n_jobs; i++)
                if (strcmp(c->jobs[i]->j.id, id) == 0)
                        return c->jobs[i];
        return NULL;
}

static uint64_t link_of(Coordinator *c, const CHost *h) {
        return h->h.link_bytes_per_s ? h->h.link_bytes_per_s : c->cfg.default_link_bytes_per_s;
}

static unsigned slots(Coordinator *c, const CHost *h, bool out) {
        uint64_t per = c->cfg.stream_bytes_per_s ? c->cfg.stream_bytes_per_s : 400000000;
        uint64_t s = link_of(c, h) / per;
        unsigned lim = out ? (h->h.max_outgoing ? h->h.max_outgoing : c->cfg.max_outgoing)
                           : (h->h.max_incoming ? h->h.max_incoming : c->cfg.max_incoming);
        if (s < 1)
                s = 1;
        return (unsigned) MIN((uint64_t) lim, s);
}

static const char *mig_addr_host(const CHost *h, char *buf, size_t size) {
        if (h->h.migration_address[0]) {
                snprintf(buf, size, "%s", h->h.migration_address);
                return buf;
        }
        const char *a = h->h.address;
        const char *colon = strrchr(a, ':');
        snprintf(buf, size, "%.*s", colon ? (int) (colon - a) : (int) strlen(a), a);
        return buf;
}

static void bump_locked(Coordinator *c, CJob *j) {
        j->gen++;
        cond_broadcast(&c->changed);
}

static void event(Coordinator *c, const char *job_id, const char *fmt, ...) _printf_(3, 4);
static void event(Coordinator *c, const char *job_id, const char *fmt, ...) {
        char text[STORE_TEXT_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        if (c->store->ops->event_add(c->store, job_id, unix_ms(), text) < 0)
                log_warning("job %s: event not stored: %s", job_id, err_msg());
        log_info("job %s: %s", job_id, text);
}

static bool sub_terminal(int phase) {
        return phase == SP_SUCCEEDED || phase == SP_FAILED || phase == SP_CANCELLED || phase == SP_BLOCKED;
}

/* ---- inventory ------------------------------------------------------------------- */

static int add_host_locked(Coordinator *c, const StoreHost *h) {
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
        if (!ch->h.state)
                ch->h.state = HS_ENABLED;
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
        if (h->state < 0 || h->state > HS_MAINTENANCE)
                return err_set(-EINVAL, "host %s: unknown state %d", h->name, h->state);
        return 0;
}

int coord_host_add(Coordinator *c, const StoreHost *h) {
        int r = validate_host(h);
        if (r < 0)
                return r;
        lock_acquire(&c->lock);
        r = add_host_locked(c, h);
        StoreHost copy = r >= 0 ? c->hosts[c->n_hosts - 1]->h : *h;
        lock_release(&c->lock);
        if (r >= 0)
                r = c->store->ops->host_put(c->store, &copy);
        return r;
}

int coord_host_remove(Coordinator *c, const char *name) {
        lock_acquire(&c->lock);
        CHost *h = host_by_name_locked(c, name);
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

static void view_of(const CHost *h, CoordHostView *v) {
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
        if (state < HS_ENABLED || state > HS_MAINTENANCE)
                return err_set(-EINVAL, "unknown host state %d", state);
        lock_acquire(&c->lock);
        CHost *h = host_by_name_locked(c, name);
        if (!h) {
                lock_release(&c->lock);
                return err_set(-ENOENT, "no host '%s'", name);
        }
        h->h.state = state;
        StoreHost copy = h->h;
        if (ret)
                view_of(h, ret);
        lock_release(&c->lock);
        return c->store->ops->host_put(c->store, &copy);
}

static void refresh_now(Coordinator *c);

int coord_hosts(Coordinator *c, CoordHostView **ret, size_t *ret_n) {
        refresh_now(c); /* a listing is read by people and scripts: fresh, not a heartbeat old */
        lock_acquire(&c->lock);
        CoordHostView *v = calloc(c->n_hosts + 1, sizeof(*v));
        size_t n = 0;
        if (v)
                for (size_t i = 0; i < c->n_hosts; i++)
                        if (!c->hosts[i]->removed)
                                view_of(c->hosts[i], &v[n++]);
        lock_release(&c->lock);
        if (!v)
                return err_set(-ENOMEM, "out of memory");
        *ret = v;
        *ret_n = n;
        return 0;
}

static const char *group_of(Coordinator *c, const char *guest) {
        for (size_t i = 0; i < c->cfg.n_aa; i++)
                if (strcmp(c->cfg.aa[i].guest, guest) == 0)
                        return c->cfg.aa[i].group;
        return "";
}

int coord_guests(Coordinator *c, const char *host, CoordGuestView **ret, size_t *ret_n) {
        size_t cap = 64, n = 0;
        CoordGuestView *v = malloc(cap * sizeof(*v));
        if (!v)
                return err_set(-ENOMEM, "out of memory");
        refresh_now(c);
        lock_acquire(&c->lock);
        if (host && host[0] && !host_by_name_locked(c, host)) {
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
                        snprintf(o->group, sizeof(o->group), "%s", group_of(c, g->name));
                        o->state = g->state;
                        o->memory_mib = g->memory_mib;
                        o->vcpus = g->vcpus;
                        o->dirty_bytes_per_s = g->dirty_pages_rate * 4096;
                }
        }
        lock_release(&c->lock);
        *ret = v;
        *ret_n = n;
        return 0;
}

static void *inventory_thread(void *arg) {
        Coordinator *c = arg;
        while (!atomic_load(&c->stopping)) {
                AgentLink *links[COORD_MAX_HOSTS];
                char names[COORD_MAX_HOSTS][STORE_NAME_MAX];
                size_t n = 0;
                lock_acquire(&c->lock);
                for (size_t i = 0; i < c->n_hosts; i++)
                        if (!c->hosts[i]->removed) {
                                links[n] = c->hosts[i]->link;
                                snprintf(names[n++], STORE_NAME_MAX, "%s", c->hosts[i]->h.name);
                        }
                lock_release(&c->lock);
                for (size_t i = 0; i < n && !atomic_load(&c->stopping); i++) {
                        AgentHostInfo info;
                        int r = agent_link_stats(links[i], MIN(c->cfg.heartbeat_ms, 5000), &info);
                        char why[256];
                        snprintf(why, sizeof(why), "%s", r < 0 ? err_str(r) : "");
                        lock_acquire(&c->lock);
                        CHost *h = host_by_name_locked(c, names[i]);
                        if (h && r >= 0) {
                                agent_host_info_clear(&h->info);
                                h->info = info;
                                h->health = HH_HEALTHY;
                                h->misses = 0;
                                h->last_seen_ms = unix_ms();
                                h->last_error[0] = '\0';
                        } else if (h) {
                                if (++h->misses >= MISSES_UNHEALTHY || h->health == HH_UNKNOWN)
                                        h->health = HH_UNREACHABLE;
                                snprintf(h->last_error, sizeof(h->last_error), "%s", why);
                        } else if (r >= 0)
                                agent_host_info_clear(&info);
                        lock_release(&c->lock);
                }
                for (int64_t k = 0; k < c->cfg.heartbeat_ms / 100 && !atomic_load(&c->stopping); k++)
                        sleep_ms(100);
        }
        return NULL;
}

/* Refresh one host's inventory now (before planning). */
static void refresh_now(Coordinator *c) {
        AgentLink *links[COORD_MAX_HOSTS];
        char names[COORD_MAX_HOSTS][STORE_NAME_MAX];
        size_t n = 0;
        lock_acquire(&c->lock);
        for (size_t i = 0; i < c->n_hosts; i++)
                if (!c->hosts[i]->removed) {
                        links[n] = c->hosts[i]->link;
                        snprintf(names[n++], STORE_NAME_MAX, "%s", c->hosts[i]->h.name);
                }
        lock_release(&c->lock);
        for (size_t i = 0; i < n; i++) {
                AgentHostInfo info;
                if (agent_link_stats(links[i], 3000, &info) < 0)
                        continue;
                lock_acquire(&c->lock);
                CHost *h = host_by_name_locked(c, names[i]);
                if (h) {
                        agent_host_info_clear(&h->info);
                        h->info = info;
                        h->health = HH_HEALTHY;
                        h->misses = 0;
                        h->last_seen_ms = unix_ms();
                } else
                        agent_host_info_clear(&info);
                lock_release(&c->lock);
        }
}

/* ---- planning ---------------------------------------------------------------------- */

void coord_plan_clear(CoordPlan *p) {
        free(p->moves);
        free(p->blocked);
        memset(p, 0, sizeof(*p));
}

typedef struct Want {
        char name[64], uuid[37], source[64];
        uint64_t memory_mib, dirty;
        uint32_t vcpus;
        char cpu_model[64];
} Want;

static int plan_locked(Coordinator *c, const CoordJobRequest *req, Want **ret_wants, size_t *ret_nw,
                       PlaceResult **ret_res, CoordPlan *plan) {
        size_t nh = 0;
        PlaceHost *ph = calloc(c->n_hosts + 1, sizeof(*ph));
        size_t cap = 64, nw = 0, nr = 0, cap_r = 64;
        Want *w = calloc(cap, sizeof(*w));
        PlaceResident *res = calloc(cap_r, sizeof(*res));
        int r = 0;

        if (!ph || !w || !res) {
                r = err_set(-ENOMEM, "out of memory");
                goto fail;
        }
        if (req->kind == JK_EVACUATE && !host_by_name_locked(c, req->host ? req->host : "")) {
                r = err_set(-ENOENT, "no host '%s' in the inventory", req->host ? req->host : "");
                goto fail;
        }
        if (req->to_host && req->to_host[0] && !host_by_name_locked(c, req->to_host)) {
                r = err_set(-ENOENT, "no host '%s' in the inventory", req->to_host);
                goto fail;
        }
        for (size_t i = 0; i < c->n_hosts; i++) {
                CHost *h = c->hosts[i];
                CoordHostView v;
                if (h->removed)
                        continue;
                view_of(h, &v);
                PlaceHost *p = &ph[nh++];
                snprintf(p->name, sizeof(p->name), "%s", h->h.name);
                p->state = h->h.state == HS_ENABLED ? PLACE_HOST_ENABLED
                           : h->h.state == HS_DRAINING ? PLACE_HOST_DRAINING : PLACE_HOST_MAINTENANCE;
                p->healthy = h->health == HH_HEALTHY;
                p->memory_mib = v.h.memory_mib;
                p->vcpus = v.h.vcpus;
                p->memory_used_mib = h->info.guests_memory_mib;
                p->vcpus_used = h->info.guests_vcpus;
                snprintf(p->cpu_model, sizeof(p->cpu_model), "%s", h->h.cpu_model[0] ? h->h.cpu_model : "qemu64");
                p->link_bytes_per_s = link_of(c, h);
        }
        /* the guests to move, and the residents */
        bool *found = calloc(req->n_guests + 1, sizeof(bool));
        if (!found) {
                r = err_set(-ENOMEM, "out of memory");
                goto fail;
        }
        for (size_t i = 0; i < c->n_hosts; i++) {
                CHost *h = c->hosts[i];
                if (h->removed)
                        continue;
                for (size_t k = 0; k < h->info.n_guests; k++) {
                        AgentGuestInfo *g = &h->info.guests[k];
                        bool live = g->state == GS_RUNNING || g->state == GS_PAUSED;
                        bool move = false;
                        if (req->kind == JK_EVACUATE)
                                move = live && strcmp(h->h.name, req->host) == 0;
                        else
                                for (size_t q = 0; q < req->n_guests; q++)
                                        if (strcmp(req->guests[q], g->name) == 0 || strcasecmp(req->guests[q], g->uuid) == 0) {
                                                move = live;
                                                found[q] = true;
                                        }
                        if (move) {
                                if (nw == cap) {
                                        Want *nw2 = realloc(w, (cap *= 2) * sizeof(*w));
                                        if (!nw2) {
                                                free(found);
                                                r = err_set(-ENOMEM, "out of memory");
                                                goto fail;
                                        }
                                        w = nw2;
                                }
                                Want *x = &w[nw++];
                                memset(x, 0, sizeof(*x));
                                snprintf(x->name, sizeof(x->name), "%s", g->name);
                                snprintf(x->uuid, sizeof(x->uuid), "%s", g->uuid);
                                snprintf(x->source, sizeof(x->source), "%s", h->h.name);
                                snprintf(x->cpu_model, sizeof(x->cpu_model), "%s", g->cpu_model);
                                x->memory_mib = g->memory_mib;
                                x->vcpus = g->vcpus;
                                x->dirty = g->dirty_pages_rate * 4096;
                        } else if (live && group_of(c, g->name)[0]) {
                                if (nr == cap_r) {
                                        PlaceResident *nr2 = realloc(res, (cap_r *= 2) * sizeof(*res));
                                        if (!nr2)
                                                continue;
                                        res = nr2;
                                }
                                snprintf(res[nr].host, sizeof(res[nr].host), "%s", h->h.name);
                                snprintf(res[nr].anti_affinity, sizeof(res[nr].anti_affinity), "%s", group_of(c, g->name));
                                nr++;
                        }
                }
        }
        for (size_t q = 0; q < req->n_guests; q++)
                if (!found[q]) {
                        r = err_set(-ENOENT, "no running guest '%s' on any host of the inventory", req->guests[q]);
                        free(found);
                        goto fail;
                }
        free(found);

        PlaceGuest *pg = calloc(nw + 1, sizeof(*pg));
        PlaceResult *pr = calloc(nw + 1, sizeof(*pr));
        if (!pg || !pr) {
                free(pg);
                free(pr);
                r = err_set(-ENOMEM, "out of memory");
                goto fail;
        }
        for (size_t i = 0; i < nw; i++) {
                snprintf(pg[i].name, sizeof(pg[i].name), "%s", w[i].name);
                snprintf(pg[i].source, sizeof(pg[i].source), "%s", w[i].source);
                if (req->to_host)
                        snprintf(pg[i].requested, sizeof(pg[i].requested), "%s", req->to_host);
                pg[i].memory_mib = w[i].memory_mib;
                pg[i].vcpus = w[i].vcpus;
                snprintf(pg[i].cpu_model, sizeof(pg[i].cpu_model), "%s", w[i].cpu_model[0] ? w[i].cpu_model : "qemu64");
                snprintf(pg[i].anti_affinity, sizeof(pg[i].anti_affinity), "%s", group_of(c, w[i].name));
                pg[i].dirty_bytes_per_s = w[i].dirty;
        }
        PlaceOptions po = { .default_link_bytes_per_s = c->cfg.default_link_bytes_per_s };
        /* during an evacuation its own host must not receive: placement
         * refuses draining hosts, and the source is excluded anyway */
        r = place_guests(ph, nh, pg, nw, res, nr, &po, pr);
        free(pg);
        if (r < 0) {
                free(pr);
                goto fail;
        }
        plan->moves = calloc(nw + 1, sizeof(*plan->moves));
        plan->blocked = calloc(nw + 1, sizeof(*plan->blocked));
        if (!plan->moves || !plan->blocked) {
                free(pr);
                r = err_set(-ENOMEM, "out of memory");
                goto fail;
        }
        double per_source[COORD_MAX_HOSTS] = { 0 };
        for (size_t i = 0; i < nw; i++) {
                CoordPlanEntry *e = pr[i].host >= 0 ? &plan->moves[plan->n_moves++] : &plan->blocked[plan->n_blocked++];
                snprintf(e->guest, sizeof(e->guest), "%s", w[i].name);
                snprintf(e->source, sizeof(e->source), "%s", w[i].source);
                if (pr[i].host >= 0)
                        snprintf(e->destination, sizeof(e->destination), "%s", ph[pr[i].host].name);
                e->estimated_s = pr[i].estimated_s;
                e->memory_mib = w[i].memory_mib;
                snprintf(e->reason, sizeof(e->reason), "%s", pr[i].reason);
                if (pr[i].host >= 0)
                        for (size_t k = 0; k < nh; k++)
                                if (strcmp(ph[k].name, w[i].source) == 0)
                                        per_source[k] += pr[i].estimated_s;
        }
        for (size_t k = 0; k < nh; k++)
                plan->makespan_s = MAX(plan->makespan_s, per_source[k]);
        free(ph);
        free(res);
        *ret_wants = w;
        *ret_nw = nw;
        *ret_res = pr;
        return 0;
fail:
        free(ph);
        free(w);
        free(res);
        return r;
}

/* ---- jobs ------------------------------------------------------------------------------ */

static int add_job_locked(Coordinator *c, CJob *j) {
        if (c->n_jobs == c->cap_jobs) {
                size_t cap = c->cap_jobs ? c->cap_jobs * 2 : 16;
                CJob **n = realloc(c->jobs, cap * sizeof(*n));
                if (!n)
                        return err_set(-ENOMEM, "out of memory");
                c->jobs = n;
                c->cap_jobs = cap;
        }
        c->jobs[c->n_jobs++] = j;
        return 0;
}

static void free_job(CJob *j) {
        if (!j)
                return;
        free(j->subs);
        free(j);
}

int coord_job_submit(Coordinator *c, const CoordJobRequest *req, CoordPlan *plan, char ret_id[STORE_ID_MAX]) {
        Want *w = NULL;
        PlaceResult *pr = NULL;
        size_t nw = 0;
        int r;

        memset(plan, 0, sizeof(*plan));
        if (req->kind != JK_MIGRATE && req->kind != JK_EVACUATE)
                return err_set(-EINVAL, "unknown job kind %d", req->kind);
        if (req->kind == JK_MIGRATE && req->n_guests == 0)
                return err_set(-EINVAL, "'guests' must name at least one guest");
        if (req->kind == JK_EVACUATE && (!req->host || !req->host[0]))
                return err_set(-EINVAL, "'host' is required");
        if (req->failure_policy != FP_CONTINUE && req->failure_policy != FP_STOP)
                return err_set(-EINVAL, "unknown failure policy %d", req->failure_policy);

        refresh_now(c);
        lock_acquire(&c->lock);
        r = plan_locked(c, req, &w, &nw, &pr, plan);
        lock_release(&c->lock);
        if (r < 0)
                return r;
        if (req->dry_run)
                goto out;
        if (plan->n_blocked > 0) {
                r = err_set(-ENOSPC, "%zu of %zu guests cannot be placed (first: %s: %s); nothing was changed",
                            plan->n_blocked, nw, plan->blocked[0].guest, plan->blocked[0].reason);
                goto out;
        }

        CJob *j = calloc(1, sizeof(*j));
        if (!j || !(j->subs = calloc(nw + 1, sizeof(*j->subs)))) {
                free(j);
                r = err_set(-ENOMEM, "out of memory");
                goto out;
        }
        j->n = nw;
        j->params = req->have_params ? req->params : c->cfg.defaults;
        snprintf(j->j.id, sizeof(j->j.id), "job-%llu-%llu", (unsigned long long) unix_ms(),
                 (unsigned long long) atomic_fetch_add(&c->counter, 1) + 1);
        j->j.kind = req->kind;
        j->j.phase = JP_RUNNING;
        snprintf(j->j.host, sizeof(j->j.host), "%s", req->host ? req->host : "");
        j->j.failure_policy = req->failure_policy;
        j->j.maintenance = req->maintenance;
        mig_params_to_json(&j->params, j->j.params_json, sizeof(j->j.params_json));
        j->j.created_unix_ms = unix_ms();
        StoreSubtask *subs = calloc(nw + 1, sizeof(*subs));
        if (!subs) {
                free_job(j);
                r = err_set(-ENOMEM, "out of memory");
                goto out;
        }
        /* sub-tasks in plan order: largest first, as placement chose */
        for (size_t i = 0; i < nw; i++) {
                StoreSubtask *t = &j->subs[i].t;
                snprintf(t->job_id, sizeof(t->job_id), "%s", j->j.id);
                t->seq = (int) i;
                snprintf(t->guest, sizeof(t->guest), "%s", w[i].name);
                snprintf(t->uuid, sizeof(t->uuid), "%s", w[i].uuid);
                snprintf(t->source, sizeof(t->source), "%s", w[i].source);
                snprintf(t->destination, sizeof(t->destination), "%s", plan->moves[i].destination);
                for (size_t k = 0; k < plan->n_moves; k++)
                        if (strcmp(plan->moves[k].guest, w[i].name) == 0) {
                                snprintf(t->destination, sizeof(t->destination), "%s", plan->moves[k].destination);
                                snprintf(t->reason, sizeof(t->reason), "%s", plan->moves[k].reason);
                                t->estimated_s = plan->moves[k].estimated_s;
                        }
                t->phase = SP_QUEUED;
                j->subs[i].dirty = w[i].dirty;
                subs[i] = *t;
        }
        /* persisted before anything moves */
        r = c->store->ops->job_create(c->store, &j->j, subs, nw);
        free(subs);
        if (r < 0) {
                free_job(j);
                goto out;
        }
        event(c, j->j.id, "%s planned: %zu guests, estimated makespan %.1f s",
              req->kind == JK_EVACUATE ? "evacuation" : "migration", nw, plan->makespan_s);
        if (req->kind == JK_EVACUATE) {
                (void) coord_host_set_state(c, req->host, HS_DRAINING, NULL);
                event(c, j->j.id, "host %s set to draining", req->host);
        }
        lock_acquire(&c->lock);
        r = add_job_locked(c, j);
        if (r >= 0)
                bump_locked(c, j);
        lock_release(&c->lock);
        if (r < 0) {
                free_job(j);
                goto out;
        }
        snprintf(ret_id, STORE_ID_MAX, "%s", j->j.id);
out:
        free(w);
        free(pr);
        return r;
}

void coord_job_view_clear(CoordJobView *v) {
        free(v->subs);
        free(v->live);
        free(v->events);
        memset(v, 0, sizeof(*v));
}

int coord_job_get(Coordinator *c, const char *id, bool with_history, CoordJobView *ret) {
        memset(ret, 0, sizeof(*ret));
        lock_acquire(&c->lock);
        CJob *j = job_by_id_locked(c, id);
        if (j) {
                ret->job = j->j;
                ret->generation = j->gen;
                ret->n_subs = j->n;
                ret->subs = calloc(j->n + 1, sizeof(*ret->subs));
                ret->live = calloc(j->n + 1, sizeof(*ret->live));
                if (ret->subs && ret->live)
                        for (size_t i = 0; i < j->n; i++) {
                                ret->subs[i] = j->subs[i].t;
                                ret->live[i] = j->subs[i].live;
                        }
        }
        lock_release(&c->lock);
        int r = 0;
        if (!j) {
                /* a finished job of an earlier run: from the store */
                r = c->store->ops->job_get(c->store, id, &ret->job);
                if (r < 0)
                        return r == -ENOENT ? err_set(-ENOENT, "no job '%s'", id) : r;
                r = c->store->ops->subtask_list(c->store, id, &ret->subs, &ret->n_subs);
                if (r < 0)
                        return r;
                ret->live = calloc(ret->n_subs + 1, sizeof(*ret->live));
        } else if (!ret->subs || !ret->live) {
                coord_job_view_clear(ret);
                return err_set(-ENOMEM, "out of memory");
        }
        if (with_history && (r = c->store->ops->event_list(c->store, id, &ret->events, &ret->n_events)) < 0) {
                coord_job_view_clear(ret);
                return r;
        }
        return 0;
}

int coord_job_list(Coordinator *c, bool unfinished_only, size_t limit, StoreJob **ret, size_t *ret_n) {
        return c->store->ops->job_list(c->store, unfinished_only, limit ? limit : 100, ret, ret_n);
}

int coord_job_cancel(Coordinator *c, const char *id) {
        lock_acquire(&c->lock);
        CJob *j = job_by_id_locked(c, id);
        int r = 0;
        if (!j)
                r = err_set(-ENOENT, "no running job '%s'", id);
        else if (j->j.phase >= JP_SUCCEEDED)
                r = err_set(-EBUSY, "job %s already ended", id);
        else {
                j->cancel = true;
                bump_locked(c, j);
        }
        lock_release(&c->lock);
        if (r >= 0)
                event(c, id, "cancel requested: queued guests are dropped, running migrations aborted (their sources resume)");
        return r;
}

uint64_t coord_job_generation(Coordinator *c, const char *id) {
        lock_acquire(&c->lock);
        CJob *j = job_by_id_locked(c, id);
        uint64_t g = j ? j->gen : 0;
        lock_release(&c->lock);
        return g;
}

void coord_job_wait(Coordinator *c, const char *id, uint64_t gen, int64_t timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        lock_acquire(&c->lock);
        for (;;) {
                CJob *j = job_by_id_locked(c, id);
                if (!j || j->gen != gen)
                        break;
                if (cond_wait(&c->changed, &c->lock, d) < 0)
                        break;
        }
        lock_release(&c->lock);
}

/* ---- the scheduler --------------------------------------------------------------------- */

typedef struct Action {
        enum { ACT_START, ACT_POLL, ACT_ABORT, ACT_TUNE } kind;
        char job[STORE_ID_MAX];
        int seq;
        AgentLink *src;
        AgentLink *dst;
        char guest[64], uuid[37], op[64], dest_addr[128], stream_host[128];
        uint64_t bw;
        bool reconcile;
        MigParams params;
} Action;

static uint64_t need_of(Coordinator *c, const CSub *s, const CHost *src, const CHost *dst) {
        uint64_t floor = MIN(link_of(c, src), link_of(c, dst)) / 8;
        return MAX(s->dirty * 3 / 2, floor);
}

/* A migration about to end: its stream is done, or what remains of this pass
 * takes less than a second at its rate (the live figures of the last poll). */
static bool sub_finishing(const CSub *s) {
        const CoordLive *l = &s->live;
        return strcmp(l->mig_phase, "perform_done") == 0 || strcmp(l->mig_phase, "finish") == 0 ||
               strcmp(l->mig_phase, "confirm") == 0 ||
               (l->mbps > 0 && l->ram_transferred > 0 && (double) l->ram_remaining * 8 < l->mbps * 1e6);
}

/* Under the lock: decide the admissions and polls of this tick. */
static size_t plan_tick_locked(Coordinator *c, Action *acts, size_t max) {
        size_t n = 0;
        unsigned running = 0;
        for (size_t i = 0; i < c->n_jobs; i++)
                for (size_t k = 0; k < c->jobs[i]->n; k++)
                        running += c->jobs[i]->subs[k].t.phase == SP_MIGRATING;

        for (size_t i = 0; i < c->n_jobs && n < max; i++) {
                CJob *j = c->jobs[i];
                if (j->j.phase != JP_RUNNING)
                        continue;
                bool failed = false;
                for (size_t k = 0; k < j->n; k++)
                        failed |= j->subs[k].t.phase == SP_FAILED;
                for (size_t k = 0; k < j->n && n < max; k++) {
                        CSub *s = &j->subs[k];
                        CHost *src = host_by_name_locked(c, s->t.source), *dst = host_by_name_locked(c, s->t.destination);
                        if (s->t.phase == SP_QUEUED && (j->cancel || (failed && j->j.failure_policy == FP_STOP))) {
                                s->t.phase = SP_CANCELLED;
                                snprintf(s->t.error, sizeof(s->t.error), "%s", j->cancel ? "job cancelled before it started"
                                                                                         : "dropped: an earlier guest failed (stop policy)");
                                s->t.finished_unix_ms = unix_ms();
                                Action *a = &acts[n++];
                                memset(a, 0, sizeof(*a));
                                a->kind = ACT_POLL; /* persists the change */
                                snprintf(a->job, sizeof(a->job), "%s", j->j.id);
                                a->seq = s->t.seq;
                                a->src = NULL;
                                bump_locked(c, j);
                                continue;
                        }
                        if (!src || !dst)
                                continue;
                        if (s->t.phase == SP_MIGRATING) {
                                Action *a = &acts[n++];
                                memset(a, 0, sizeof(*a));
                                a->kind = (j->cancel && !s->abort_sent) ? ACT_ABORT : ACT_POLL;
                                if (a->kind == ACT_ABORT)
                                        s->abort_sent = true;
                                snprintf(a->job, sizeof(a->job), "%s", j->j.id);
                                a->seq = s->t.seq;
                                a->src = src->link;
                                a->dst = dst->link;
                                snprintf(a->guest, sizeof(a->guest), "%s", s->t.guest);
                                snprintf(a->uuid, sizeof(a->uuid), "%s", s->t.uuid);
                                snprintf(a->op, sizeof(a->op), "%s", s->t.op_id);
                                a->reconcile = s->reconcile;
                                continue; /* its share: below, once this tick's admissions are counted */
                        }
                        if (s->t.phase != SP_QUEUED || j->cancel)
                                continue;
                        /* admission control */
                        if (src->health != HH_HEALTHY || dst->health != HH_HEALTHY)
                                continue;
                        if (running >= c->cfg.cluster_limit || src->out_running >= slots(c, src, true) ||
                            dst->in_running >= slots(c, dst, false))
                                continue;
                        uint64_t share = MIN(link_of(c, src) / (src->out_running + 1), link_of(c, dst) / (dst->in_running + 1));
                        if (share < need_of(c, s, src, dst) && (src->out_running || dst->in_running))
                                continue; /* it would not converge next to the others: wait */
                        src->out_running++;
                        dst->in_running++;
                        running++;
                        s->bw = share;
                        s->t.phase = SP_MIGRATING;
                        s->t.started_unix_ms = unix_ms();
                        snprintf(s->t.op_id, sizeof(s->t.op_id), "%s-%d", j->j.id, s->t.seq);
                        Action *a = &acts[n++];
                        memset(a, 0, sizeof(*a));
                        a->kind = ACT_START;
                        snprintf(a->job, sizeof(a->job), "%s", j->j.id);
                        a->seq = s->t.seq;
                        a->src = src->link;
                        a->dst = dst->link;
                        snprintf(a->guest, sizeof(a->guest), "%s", s->t.guest);
                        snprintf(a->uuid, sizeof(a->uuid), "%s", s->t.uuid);
                        snprintf(a->op, sizeof(a->op), "%s", s->t.op_id);
                        snprintf(a->dest_addr, sizeof(a->dest_addr), "%s", dst->h.address);
                        mig_addr_host(dst, a->stream_host, sizeof(a->stream_host));
                        a->bw = share;
                        a->params = j->params;
                        bump_locked(c, j);
                }
        }

        /* Fair shares of the links, from the counts after this tick's
         * admissions (a share computed before a later admission on the same
         * link would oversubscribe it until the next tick), capped by the
         * bandwidth the request asked for (a re-share never lifts it).  A
         * migration started in this tick starts with its share; a running
         * one is re-tuned when its share moves by more than 10 %. */
        size_t n_first = n;
        for (size_t i = 0; i < c->n_jobs; i++) {
                CJob *j = c->jobs[i];
                if (j->j.phase != JP_RUNNING || j->cancel)
                        continue;
                for (size_t k = 0; k < j->n; k++) {
                        CSub *s = &j->subs[k];
                        CHost *src, *dst;
                        if (s->t.phase != SP_MIGRATING || s->reconcile ||
                            !(src = host_by_name_locked(c, s->t.source)) ||
                            !(dst = host_by_name_locked(c, s->t.destination)))
                                continue;
                        uint64_t share = MIN(link_of(c, src) / MAX(src->out_running, 1u),
                                             link_of(c, dst) / MAX(dst->in_running, 1u));
                        if (j->params.bandwidth)
                                share = MIN(share, j->params.bandwidth);
                        Action *start = NULL;
                        for (size_t q = 0; q < n_first && !start; q++)
                                if (acts[q].kind == ACT_START && acts[q].seq == s->t.seq &&
                                    strcmp(acts[q].job, j->j.id) == 0)
                                        start = &acts[q];
                        if (start) {
                                start->bw = s->bw = share;
                                continue;
                        }
                        if (!s->bw || (share <= s->bw * 11 / 10 && share >= s->bw * 9 / 10) || n >= max)
                                continue;
                        if (strcmp(s->live.mig_phase, "perform") != 0)
                                continue; /* not streaming yet: the source agent sets the bandwidth it
                                           * started with when the stream starts, and would undo a
                                           * re-tune sent before; s->bw unchanged, so the next tick
                                           * tries again */
                        s->bw = share;
                        Action *t = &acts[n++];
                        memset(t, 0, sizeof(*t));
                        t->kind = ACT_TUNE;
                        snprintf(t->job, sizeof(t->job), "%s", j->j.id);
                        t->seq = s->t.seq;
                        t->src = src->link;
                        t->dst = dst->link;
                        snprintf(t->guest, sizeof(t->guest), "%s", s->t.guest);
                        snprintf(t->uuid, sizeof(t->uuid), "%s", s->t.uuid);
                        snprintf(t->op, sizeof(t->op), "%s", s->t.op_id);
                        t->bw = share;
                }
        }
        return n;
}

static CSub *sub_locked(Coordinator *c, const char *job, int seq, CJob **ret_j) {
        CJob *j = job_by_id_locked(c, job);
        if (!j || seq < 0 || (size_t) seq >= j->n)
                return NULL;
        *ret_j = j;
        return &j->subs[seq];
}

static void release_locked(Coordinator *c, CSub *s) {
        CHost *src = host_by_name_locked(c, s->t.source), *dst = host_by_name_locked(c, s->t.destination);
        if (src && src->out_running)
                src->out_running--;
        if (dst && dst->in_running)
                dst->in_running--;
}

/* Finish sub-task @seq with @phase (lock NOT held); persists. */
static void end_sub(Coordinator *c, const char *job, int seq, int phase, const LinkMigResult *res, const char *error) {
        StoreSubtask copy;
        CJob *j;
        lock_acquire(&c->lock);
        CSub *s = sub_locked(c, job, seq, &j);
        if (!s || sub_terminal(s->t.phase)) {
                lock_release(&c->lock);
                return;
        }
        if (s->t.phase == SP_MIGRATING)
                release_locked(c, s);
        s->t.phase = phase;
        s->t.finished_unix_ms = unix_ms();
        if (res) {
                s->t.downtime_ms = res->downtime_ms;
                s->t.measured_downtime_ms = res->measured_downtime_ms;
                s->t.transferred_bytes = res->transferred;
                snprintf(s->t.policy_steps, sizeof(s->t.policy_steps), "%s", res->steps);
        }
        snprintf(s->t.error, sizeof(s->t.error), "%s", error ? error : "");
        s->reconcile = false;
        copy = s->t;
        bump_locked(c, j);
        lock_release(&c->lock);
        if (c->store->ops->subtask_update(c->store, &copy) < 0)
                log_error("job %s: sub-task %d not stored: %s", job, seq, err_msg());
        event(c, job, "%s %s: %s -> %s%s%s", copy.guest,
              phase == SP_SUCCEEDED ? "migrated" : phase == SP_FAILED ? "FAILED" : "cancelled", copy.source,
              copy.destination, error && error[0] ? ": " : "", error ? error : "");
}

static void persist_sub(Coordinator *c, const char *job, int seq) {
        StoreSubtask copy;
        CJob *j;
        lock_acquire(&c->lock);
        CSub *s = sub_locked(c, job, seq, &j);
        if (s)
                copy = s->t;
        lock_release(&c->lock);
        if (s && c->store->ops->subtask_update(c->store, &copy) < 0)
                log_error("job %s: sub-task %d not stored: %s", job, seq, err_msg());
}

static void do_start(Coordinator *c, Action *a) {
        MigParams p = a->params;
        /* the operation id is persisted before the agent hears of it, so a
         * restarted coordinator can ask about it */
        persist_sub(c, a->job, a->seq);
        event(c, a->job, "%s started: bandwidth %.0f MB/s, op %s", a->guest, (double) a->bw / 1e6, a->op);
        p.bandwidth = p.bandwidth ? MIN(p.bandwidth, a->bw) : a->bw;
        int r = agent_link_migrate(a->src, a->guest, a->op, a->dest_addr, a->stream_host, &p, CALL_MS);
        if (r < 0) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "the source agent refused the migration: %s", err_str(r));
                end_sub(c, a->job, a->seq, SP_FAILED, NULL, why);
        }
}

static void do_poll(Coordinator *c, Action *a) {
        LinkMigResult res;
        LinkGuestStatus gs;
        if (!a->src) { /* a queued sub-task dropped under the lock: persist it, and say so */
                StoreSubtask t = { 0 };
                CJob *j;
                persist_sub(c, a->job, a->seq);
                lock_acquire(&c->lock);
                CSub *s = sub_locked(c, a->job, a->seq, &j);
                if (s)
                        t = s->t;
                lock_release(&c->lock);
                if (s)
                        event(c, a->job, "%s cancelled: %s -> %s: %s", t.guest, t.source, t.destination, t.error);
                return;
        }
        int r = agent_link_get_migration(a->src, a->guest, CALL_MS, &res);
        bool ours = r >= 0 && strcmp(res.op, a->op) == 0;
        if (ours && res.done) {
                /* a migration that ended without success after the job's
                 * cancel aborted it is cancelled (its source resumed), not
                 * failed: the job then ends cancelled */
                bool aborted = false;
                if (!res.success) {
                        CJob *j;
                        lock_acquire(&c->lock);
                        CSub *s = sub_locked(c, a->job, a->seq, &j);
                        aborted = s && s->abort_sent;
                        lock_release(&c->lock);
                }
                if (aborted) {
                        char why[STORE_TEXT_MAX];
                        snprintf(why, sizeof(why), "aborted by the job's cancel, the source resumed (%.400s)", res.error);
                        end_sub(c, a->job, a->seq, SP_CANCELLED, &res, why);
                } else
                        end_sub(c, a->job, a->seq, res.success ? SP_SUCCEEDED : SP_FAILED, &res,
                                res.success ? NULL : res.error);
                return;
        }
        if (!ours && (r >= 0 || r == -ENOENT) && a->reconcile) {
                /* the source agent does not know this migration (restarted,
                 * or the coordinator died before it was sent): where is the
                 * guest? */
                LinkGuestStatus d;
                if (agent_link_get_guest(a->dst, a->uuid, CALL_MS, &d) >= 0 && d.state == GS_RUNNING &&
                    strcmp(d.async_job, "none") == 0) {
                        end_sub(c, a->job, a->seq, SP_SUCCEEDED, NULL, NULL);
                        event(c, a->job, "%s: found running on %s after a restart: recorded as migrated, not redone",
                              a->guest, "its destination");
                        return;
                }
                if (agent_link_get_guest(a->src, a->uuid, CALL_MS, &gs) >= 0 && strcmp(gs.async_job, "none") == 0) {
                        /* still on the source, nothing in flight: queue it again */
                        CJob *j;
                        lock_acquire(&c->lock);
                        CSub *s = sub_locked(c, a->job, a->seq, &j);
                        if (s && s->t.phase == SP_MIGRATING) {
                                release_locked(c, s);
                                s->t.phase = SP_QUEUED;
                                s->reconcile = false;
                                bump_locked(c, j);
                        }
                        lock_release(&c->lock);
                        persist_sub(c, a->job, a->seq);
                        event(c, a->job, "%s: its migration never ran (coordinator restart): queued again", a->guest);
                }
                return;
        }
        if (ours) {
                CJob *j;
                lock_acquire(&c->lock);
                CSub *s = sub_locked(c, a->job, a->seq, &j);
                if (s)
                        s->reconcile = false;
                lock_release(&c->lock);
        }
        /* live figures for displays */
        if (agent_link_get_guest(a->src, a->uuid, CALL_MS, &gs) >= 0) {
                CJob *j;
                lock_acquire(&c->lock);
                CSub *s = sub_locked(c, a->job, a->seq, &j);
                if (s) {
                        snprintf(s->live.mig_status, sizeof(s->live.mig_status), "%s", gs.mig_status);
                        snprintf(s->live.mig_phase, sizeof(s->live.mig_phase), "%s", gs.phase);
                        s->live.ram_total = gs.ram_total;
                        s->live.ram_remaining = gs.ram_remaining;
                        s->live.ram_transferred = gs.ram_transferred;
                        s->live.dirty_pages_rate = gs.dirty_pages_rate;
                        s->live.iteration = gs.iteration;
                        s->live.mbps = gs.mbps;
                        bump_locked(c, j);
                }
                lock_release(&c->lock);
        }
}

/* When every sub-task ended: verify where the guests run, then close. */
static void close_jobs(Coordinator *c) {
        char ids[64][STORE_ID_MAX];
        size_t n = 0;
        lock_acquire(&c->lock);
        for (size_t i = 0; i < c->n_jobs && n < 64; i++) {
                CJob *j = c->jobs[i];
                if (j->j.phase != JP_RUNNING)
                        continue;
                bool all = true;
                for (size_t k = 0; k < j->n; k++)
                        all &= sub_terminal(j->subs[k].t.phase);
                if (all) {
                        j->j.phase = JP_VERIFYING;
                        bump_locked(c, j);
                        snprintf(ids[n++], STORE_ID_MAX, "%s", j->j.id);
                }
        }
        lock_release(&c->lock);

        for (size_t i = 0; i < n; i++) {
                CoordJobView v;
                if (coord_job_get(c, ids[i], false, &v) < 0)
                        continue;
                (void) c->store->ops->job_update(c->store, &v.job);
                unsigned ok = 0, bad = 0, cancelled = 0;
                for (size_t k = 0; k < v.n_subs; k++) {
                        StoreSubtask *t = &v.subs[k];
                        if (t->phase == SP_SUCCEEDED) {
                                LinkGuestStatus d;
                                AgentLink *dl = NULL;
                                lock_acquire(&c->lock);
                                CHost *dh = host_by_name_locked(c, t->destination);
                                if (dh)
                                        dl = dh->link;
                                lock_release(&c->lock);
                                if (!dl || agent_link_get_guest(dl, t->uuid, CALL_MS, &d) < 0 || d.state != GS_RUNNING) {
                                        bad++;
                                        event(c, ids[i], "verify: %s is NOT running on %s", t->guest, t->destination);
                                } else
                                        ok++;
                        } else if (t->phase == SP_CANCELLED)
                                cancelled++;
                        else
                                bad++;
                }
                lock_acquire(&c->lock);
                CJob *j = job_by_id_locked(c, ids[i]);
                if (j) {
                        j->j.phase = bad ? JP_FAILED : (j->cancel || cancelled) ? JP_CANCELLED : JP_SUCCEEDED;
                        if (bad)
                                snprintf(j->j.error, sizeof(j->j.error), "%u of %zu guests did not move", bad, j->n);
                        j->j.finished_unix_ms = unix_ms();
                        v.job = j->j;
                        bump_locked(c, j);
                }
                lock_release(&c->lock);
                (void) c->store->ops->job_update(c->store, &v.job);
                event(c, ids[i], "job %s: %u migrated, %u failed, %u cancelled",
                      v.job.phase == JP_SUCCEEDED ? "succeeded" : v.job.phase == JP_CANCELLED ? "cancelled" : "failed",
                      ok, bad, cancelled);
                if (v.job.kind == JK_EVACUATE && v.job.phase == JP_SUCCEEDED && v.job.maintenance) {
                        (void) coord_host_set_state(c, v.job.host, HS_MAINTENANCE, NULL);
                        event(c, ids[i], "host %s set to maintenance", v.job.host);
                }
                coord_job_view_clear(&v);
        }
}

/* Sub-tasks migrating now; *ret_finishing: one of them is about to end. */
static unsigned migrating_locked(Coordinator *c, bool *ret_finishing) {
        unsigned n = 0;
        bool fin = false;
        for (size_t i = 0; i < c->n_jobs; i++)
                for (size_t k = 0; k < c->jobs[i]->n; k++) {
                        const CSub *s = &c->jobs[i]->subs[k];
                        if (s->t.phase != SP_MIGRATING)
                                continue;
                        n++;
                        fin |= sub_finishing(s);
                }
        if (ret_finishing)
                *ret_finishing = fin;
        return n;
}

static void *scheduler_thread(void *arg) {
        Coordinator *c = arg;
        Action *acts = calloc(256, sizeof(*acts));
        if (!acts)
                return NULL;
        while (!atomic_load(&c->stopping)) {
                lock_acquire(&c->lock);
                size_t n = plan_tick_locked(c, acts, 256);
                unsigned before = migrating_locked(c, NULL);
                lock_release(&c->lock);
                for (size_t i = 0; i < n && !atomic_load(&c->stopping); i++) {
                        switch (acts[i].kind) {
                        case ACT_START:
                                do_start(c, &acts[i]);
                                break;
                        case ACT_POLL:
                                do_poll(c, &acts[i]);
                                break;
                        case ACT_ABORT:
                                if (agent_link_abort(acts[i].src, acts[i].guest, 30000) < 0)
                                        log_warning("job %s: abort of %s: %s", acts[i].job, acts[i].guest, err_msg());
                                do_poll(c, &acts[i]);
                                break;
                        case ACT_TUNE:
                                if (agent_link_tune(acts[i].src, acts[i].guest, acts[i].bw, CALL_MS) >= 0)
                                        event(c, acts[i].job, "%s: bandwidth re-shared to %.0f MB/s", acts[i].guest,
                                              (double) acts[i].bw / 1e6);
                                break;
                        }
                }
                close_jobs(c);
                /* A migration that ended in this tick freed its slots: plan
                 * again at once, so the next one starts within milliseconds
                 * instead of after a tick with the link idle.  While one is
                 * about to end, poll every 50 ms, so its end is seen soon
                 * (docs/performance.md, "Evacuation makespan"). */
                bool finishing;
                lock_acquire(&c->lock);
                bool freed = migrating_locked(c, &finishing) < before;
                lock_release(&c->lock);
                if (!freed)
                        sleep_ms(finishing ? 50 : 250);
        }
        free(acts);
        return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

int coord_new(const CoordConfig *cfg, Coordinator **ret) {
        Coordinator *c = calloc(1, sizeof(*c));
        int r;
        if (!c)
                return err_set(-ENOMEM, "out of memory");
        c->cfg = *cfg;
        c->tls = (LinkTls){ .cert = c->cfg.tls_cert, .key = c->cfg.tls_key, .ca = c->cfg.tls_ca };
        lock_init(&c->lock, &coord_lock_class);
        cond_init(&c->changed);
        if ((r = store_sqlite_open(cfg->db_path, &c->store)) < 0) {
                coord_free(c);
                return r;
        }
        /* hosts: the store's view wins over the seed (API changes persist) */
        StoreHost *hs = NULL;
        size_t nh = 0;
        if ((r = c->store->ops->host_list(c->store, &hs, &nh)) < 0) {
                coord_free(c);
                return r;
        }
        for (size_t i = 0; i < cfg->n_hosts; i++) {
                bool known = false;
                for (size_t k = 0; k < nh; k++)
                        known |= strcmp(hs[k].name, cfg->hosts[i].name) == 0;
                if (!known && (r = c->store->ops->host_put(c->store, &cfg->hosts[i])) < 0) {
                        free(hs);
                        coord_free(c);
                        return r;
                }
        }
        free(hs);
        if ((r = c->store->ops->host_list(c->store, &hs, &nh)) < 0) {
                coord_free(c);
                return r;
        }
        for (size_t i = 0; i < nh && r >= 0; i++)
                r = add_host_locked(c, &hs[i]);
        free(hs);
        if (r < 0) {
                coord_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

/* Reload unfinished jobs from the store; their migrating sub-tasks are
 * reconciled with the agents by operation id. */
static int reload_jobs(Coordinator *c) {
        StoreJob *jobs = NULL;
        size_t n = 0;
        int r = c->store->ops->job_list(c->store, true, 10000, &jobs, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                CJob *j = calloc(1, sizeof(*j));
                StoreSubtask *subs = NULL;
                size_t ns = 0;
                if (!j || c->store->ops->subtask_list(c->store, jobs[i].id, &subs, &ns) < 0) {
                        free(j);
                        continue;
                }
                j->j = jobs[i];
                if (j->j.phase == JP_PLANNING || j->j.phase == JP_VERIFYING)
                        j->j.phase = JP_RUNNING;
                (void) mig_params_from_json(j->j.params_json, strlen(j->j.params_json), &j->params);
                j->subs = calloc(ns + 1, sizeof(*j->subs));
                j->n = ns;
                for (size_t k = 0; j->subs && k < ns; k++) {
                        j->subs[k].t = subs[k];
                        if (subs[k].phase == SP_MIGRATING)
                                j->subs[k].reconcile = true;
                }
                free(subs);
                lock_acquire(&c->lock);
                for (size_t k = 0; k < j->n; k++)
                        if (j->subs[k].t.phase == SP_MIGRATING) {
                                CHost *s = host_by_name_locked(c, j->subs[k].t.source);
                                CHost *d = host_by_name_locked(c, j->subs[k].t.destination);
                                if (s)
                                        s->out_running++;
                                if (d)
                                        d->in_running++;
                        }
                r = add_job_locked(c, j);
                lock_release(&c->lock);
                if (r < 0) {
                        free_job(j);
                        break;
                }
                event(c, j->j.id, "coordinator restarted: job resumed (%zu sub-tasks)", j->n);
        }
        free(jobs);
        return r < 0 ? r : (int) n;
}

int coord_start(Coordinator *c) {
        int r = reload_jobs(c);
        if (r < 0)
                return r;
        if (r > 0)
                log_info("%d unfinished jobs resumed", r);
        refresh_now(c);
        if (pthread_create(&c->inv_thread, NULL, inventory_thread, c) != 0)
                return err_set(-EAGAIN, "cannot start the inventory thread");
        if (pthread_create(&c->sched_thread, NULL, scheduler_thread, c) != 0) {
                atomic_store(&c->stopping, true);
                pthread_join(c->inv_thread, NULL);
                return err_set(-EAGAIN, "cannot start the scheduler thread");
        }
        c->started = true;
        return 0;
}

void coord_stop(Coordinator *c) {
        if (!c || !c->started)
                return;
        atomic_store(&c->stopping, true);
        pthread_join(c->sched_thread, NULL);
        pthread_join(c->inv_thread, NULL);
        c->started = false;
}

void coord_free(Coordinator *c) {
        if (!c)
                return;
        coord_stop(c);
        for (size_t i = 0; i < c->n_hosts; i++) {
                agent_link_close(c->hosts[i]->link);
                agent_host_info_clear(&c->hosts[i]->info);
                free(c->hosts[i]);
        }
        for (size_t i = 0; i < c->n_jobs; i++)
                free_job(c->jobs[i]);
        free(c->jobs);
        store_close(c->store);
        cond_destroy(&c->changed);
        lock_destroy(&c->lock);
        free(c);
}
