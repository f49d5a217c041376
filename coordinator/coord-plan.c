/* Planning a job (see coord-priv.h): a request and the inventory become
 * placement's input (coordinator/placement.c, pure), and its answer a plan.
 *
 * Runs under coord->lock, on the figures of the last heartbeat or refresh
 * (coord_job_submit refreshes first).  The guests to move are the running
 * or paused ones the request names (by name or UUID), or every running or
 * paused guest of the host to evacuate; the residents that matter to
 * placement are the live guests of an anti-affinity group.  The plan lists
 * each guest's destination and estimated duration (alone on the links),
 * or why it is blocked, and the makespan: the placed migrations replayed
 * under the scheduler's admission limits (per-host slots, the cluster
 * limit), in waves that share the links (place_makespan_s()).
 *
 * A host receives only while it is ENABLED and not the source of an
 * unfinished evacuation (an operator may enable a host an evacuation is
 * emptying).  The scheduler checks a queued sub-task's destination again
 * before admitting it (coord_dest_invalid_locked) and places it again when
 * the destination can no longer receive (coord_replan_sub_locked), so a
 * host that became draining, a maintenance target or unreachable after
 * the plan never receives a guest of it.
 */
#include "coord-priv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "err.h"

void coord_plan_clear(CoordPlan *p) {
        free(p->moves);
        free(p->blocked);
        memset(p, 0, sizeof(*p));
}

/* The makespan of the placed migrations @flows over hosts @ph (host
 * records @hosts_of), under the scheduler's limits (place_makespan_s()). */
static int plan_makespan_locked(Coordinator *c, const PlaceHost *ph, const CHost *const *hosts_of, size_t nh,
                                const PlaceFlow *flows, size_t nf, double *ret_s) {
        lock_assert_held(&c->lock);
        unsigned *slots = calloc(2 * nh + 1, sizeof(*slots));
        if (!slots)
                return err_set(-ENOMEM, "out of memory");
        for (size_t k = 0; k < nh; k++) {
                slots[k] = coord_host_slots(c, hosts_of[k], true);
                slots[nh + k] = coord_host_slots(c, hosts_of[k], false);
        }
        PlaceLimits lim = { .max_outgoing = slots, .max_incoming = slots + nh, .cluster = c->cfg.cluster_limit,
                            .default_link_bytes_per_s = c->cfg.default_link_bytes_per_s };
        int r = place_makespan_s(ph, nh, flows, nf, &lim, ret_s);
        free(slots);
        return r;
}

int coord_plan_locked(Coordinator *c, const CoordJobRequest *req, CoordWant **ret_wants, size_t *ret_nw,
                      CoordPlan *plan) {
        lock_assert_held(&c->lock);
        size_t nh = 0;
        PlaceHost *ph = calloc(c->n_hosts + 1, sizeof(*ph));
        const CHost **hosts_of = calloc(c->n_hosts + 1, sizeof(*hosts_of)); /* ph[k] is hosts_of[k] */
        size_t cap = 64, nw = 0, nr = 0, cap_r = 64;
        CoordWant *w = calloc(cap, sizeof(*w));
        PlaceResident *res = calloc(cap_r, sizeof(*res));
        int r = 0;

        if (!ph || !hosts_of || !w || !res) {
                r = err_set(-ENOMEM, "out of memory");
                goto fail;
        }
        if (req->kind == COORD_JOB_KIND_EVACUATE && !coord_host_find_locked(c, req->host ? req->host : "")) {
                r = err_set(-ENOENT, "no host '%s' in the inventory", req->host ? req->host : "");
                goto fail;
        }
        if (req->to_host && req->to_host[0] && !coord_host_find_locked(c, req->to_host)) {
                r = err_set(-ENOENT, "no host '%s' in the inventory", req->to_host);
                goto fail;
        }
        for (size_t i = 0; i < c->n_hosts; i++) {
                CHost *h = c->hosts[i];
                CoordHostView v;
                if (h->removed)
                        continue;
                coord_host_view_locked(c, h, &v);
                hosts_of[nh] = h;
                PlaceHost *p = &ph[nh++];
                snprintf(p->name, sizeof(p->name), "%s", h->h.name);
                p->state = h->h.state == COORD_HOST_STATE_ENABLED    ? PLACE_HOST_ENABLED
                           : h->h.state == COORD_HOST_STATE_DRAINING ? PLACE_HOST_DRAINING
                                                                     : PLACE_HOST_MAINTENANCE;
                if (p->state == PLACE_HOST_ENABLED && coord_evacuation_of_locked(c, h->h.name))
                        p->state = PLACE_HOST_DRAINING; /* being emptied: it does not receive */
                p->healthy = h->health == COORD_HOST_HEALTH_HEALTHY;
                p->memory_mib = v.h.memory_mib;
                p->vcpus = v.h.vcpus;
                p->memory_used_mib = h->info.guests_memory_mib;
                p->vcpus_used = h->info.guests_vcpus;
                snprintf(p->cpu_model, sizeof(p->cpu_model), "%s", h->h.cpu_model[0] ? h->h.cpu_model : "qemu64");
                p->link_bytes_per_s = coord_host_link_rate(c, h);
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
                        bool live = g->state == COORD_GUEST_STATE_RUNNING || g->state == COORD_GUEST_STATE_PAUSED;
                        bool move = false;
                        if (req->kind == COORD_JOB_KIND_EVACUATE)
                                move = live && strcmp(h->h.name, req->host) == 0;
                        else
                                for (size_t q = 0; q < req->n_guests; q++)
                                        if (strcmp(req->guests[q], g->name) == 0 ||
                                            strcasecmp(req->guests[q], g->uuid) == 0) {
                                                move = live;
                                                found[q] = true;
                                        }
                        if (move) {
                                if (nw == cap) {
                                        CoordWant *nw2 = realloc(w, (cap *= 2) * sizeof(*w));
                                        if (!nw2) {
                                                free(found);
                                                r = err_set(-ENOMEM, "out of memory");
                                                goto fail;
                                        }
                                        w = nw2;
                                }
                                CoordWant *x = &w[nw++];
                                memset(x, 0, sizeof(*x));
                                snprintf(x->name, sizeof(x->name), "%s", g->name);
                                snprintf(x->uuid, sizeof(x->uuid), "%s", g->uuid);
                                snprintf(x->source, sizeof(x->source), "%s", h->h.name);
                                snprintf(x->cpu_model, sizeof(x->cpu_model), "%s", g->cpu_model);
                                x->memory_mib = g->memory_mib;
                                x->vcpus = g->vcpus;
                                x->dirty = g->dirty_pages_rate * 4096;
                                x->disk_bytes = g->local_disk_bytes;
                        } else if (live && coord_guest_group(c, g->name)[0]) {
                                if (nr == cap_r) {
                                        PlaceResident *nr2 = realloc(res, (cap_r *= 2) * sizeof(*res));
                                        if (!nr2)
                                                continue;
                                        res = nr2;
                                }
                                snprintf(res[nr].host, sizeof(res[nr].host), "%s", h->h.name);
                                snprintf(res[nr].anti_affinity, sizeof(res[nr].anti_affinity), "%s",
                                         coord_guest_group(c, g->name));
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
                snprintf(pg[i].anti_affinity, sizeof(pg[i].anti_affinity), "%s", coord_guest_group(c, w[i].name));
                pg[i].dirty_bytes_per_s = w[i].dirty;
                pg[i].disk_bytes = w[i].disk_bytes;
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
        PlaceFlow *flows = calloc(nw + 1, sizeof(*flows));
        if (!flows) {
                free(pr);
                r = err_set(-ENOMEM, "out of memory");
                goto fail;
        }
        size_t nf = 0;
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
                                        flows[nf++] = (PlaceFlow){ .source = (int32_t) k, .destination = pr[i].host,
                                                                   .memory_mib = w[i].memory_mib,
                                                                   .dirty_bytes_per_s = w[i].dirty,
                                                                   .disk_bytes = w[i].disk_bytes };
        }
        r = plan_makespan_locked(c, ph, hosts_of, nh, flows, nf, &plan->makespan_s);
        free(flows);
        if (r < 0) {
                free(pr);
                goto fail;
        }
        free(hosts_of);
        free(ph);
        free(res);
        free(pr);
        *ret_wants = w;
        *ret_nw = nw;
        return 0;
fail:
        free(hosts_of);
        free(ph);
        free(w);
        free(res);
        return r;
}

bool coord_dest_invalid_locked(Coordinator *c, const CJob *j, const CSub *s, char *why, size_t size) {
        lock_assert_held(&c->lock);
        const CHost *d = coord_host_find_locked(c, s->t.destination);
        const CJob *e;
        if (!d)
                snprintf(why, size, "destination %s was removed from the inventory", s->t.destination);
        else if (d->h.state != COORD_HOST_STATE_ENABLED)
                snprintf(why, size, "destination %s is %s", d->h.name, coord_host_state_to_string(d->h.state));
        else if ((e = coord_evacuation_of_locked(c, d->h.name)) && e != j)
                snprintf(why, size, "destination %s is being evacuated by job %s", d->h.name, e->j.id);
        else if (d->health == COORD_HOST_HEALTH_UNREACHABLE) {
                time_t t = (time_t) (d->down_since_ms / 1000);
                struct tm tm;
                char when[32] = "?";
                if (gmtime_r(&t, &tm))
                        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
                snprintf(why, size, "destination %s unreachable since %s (%s)", d->h.name, when,
                         d->last_error[0] ? d->last_error : "no answer");
        } else
                return false;
        return true;
}

int coord_replan_sub_locked(Coordinator *c, CSub *s, char *why, size_t size) {
        lock_assert_held(&c->lock);
        const char *guest = s->t.uuid[0] ? s->t.uuid : s->t.guest;
        bool requested = strncmp(s->t.reason, "requested destination", 21) == 0;
        CoordJobRequest req = { .kind = COORD_JOB_KIND_MIGRATE, .n_guests = 1, .guests = &guest,
                                .to_host = requested ? s->t.destination : NULL };
        CoordPlan plan = { 0 };
        CoordWant *w = NULL;
        size_t nw = 0;
        int r = coord_plan_locked(c, &req, &w, &nw, &plan);
        if (r >= 0 && plan.n_moves == 1) {
                snprintf(s->t.destination, sizeof(s->t.destination), "%s", plan.moves[0].destination);
                snprintf(s->t.reason, sizeof(s->t.reason), "%s", plan.moves[0].reason);
                s->t.estimated_s = plan.moves[0].estimated_s;
                r = 1;
        } else if (r >= 0) {
                snprintf(why, size, "%s", plan.n_blocked ? plan.blocked[0].reason : "no plan");
                r = 0;
        } else
                snprintf(why, size, "%s", err_msg());
        free(w);
        coord_plan_clear(&plan);
        return r;
}

CJob *coord_evacuation_of_locked(Coordinator *c, const char *host) {
        lock_assert_held(&c->lock);
        for (size_t i = 0; i < c->n_jobs; i++)
                if (c->jobs[i]->j.kind == COORD_JOB_KIND_EVACUATE && strcmp(c->jobs[i]->j.host, host) == 0)
                        return c->jobs[i];
        return NULL;
}
