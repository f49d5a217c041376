/* The coordinator's daemon object (see coord.h): its construction, its two
 * threads, and its end.  The job engine's parts live in coord-inventory.c,
 * coord-plan.c, coord-jobs.c and coord-scheduler.c; coord-priv.h lays them
 * out and states the lock rules.
 *
 * coord_new opens the store and builds the host table.  With an etcd store
 * the role decides (coord-ha.c): the table is the store's list, and the
 * seed hosts are written by whichever coordinator is elected; coord_start
 * starts campaigning and the scheduler thread takes over when elected.
 * With SQLite the configuration's
 * seed hosts are written to the store when it does not know them, then the
 * store's list is loaded (hosts added, changed or removed through the API
 * persist, so the store's view wins).  A seed host the store knows with
 * other values (address, memory, ...) is reported, member by member, with
 * a warning that says the store's value wins (docs/coordinator.md,
 * "Configuration and store").  coord_start reloads every unfinished
 * job, applies the retention to the store's ended jobs, refreshes the
 * inventory once, and starts the inventory thread and
 * the scheduler thread; coord_stop sets the stop flag and joins them
 * (running migrations go on on the agents; the next start resumes them).
 */
#include "coord-priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

static LockClass coord_lock_class = LOCK_CLASS_INIT("coordinator");

int coord_new(const CoordConfig *cfg, Coordinator **ret) {
        Coordinator *c = calloc(1, sizeof(*c));
        int r;
        if (!c)
                return err_set(-ENOMEM, "out of memory");
        c->cfg = *cfg;
        c->tls = (LinkTls){ .cert = c->cfg.tls_cert, .key = c->cfg.tls_key, .ca = c->cfg.tls_ca };
        lock_init(&c->lock, &coord_lock_class);
        cond_init(&c->changed);
        cond_init(&c->stop);
        if (cfg->store_kind == COORD_STORE_ETCD) {
                if ((r = coord_ha_open(c)) < 0) {
                        coord_free(c);
                        return r;
                }
                *ret = c;
                return 0;
        }
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
                for (size_t k = 0; k < nh && !known; k++)
                        if (strcmp(hs[k].name, cfg->hosts[i].name) == 0) {
                                known = true;
                                (void) coord_host_config_report(&cfg->hosts[i], &hs[k]);
                        }
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
        lock_acquire(&c->lock);
        for (size_t i = 0; i < nh && r >= 0; i++)
                r = coord_host_add_locked(c, &hs[i]);
        lock_release(&c->lock);
        free(hs);
        if (r < 0) {
                coord_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

int coord_start(Coordinator *c) {
        int r;
        if (c->cfg.store_kind == COORD_STORE_ETCD) {
                /* a standby until elected: it reads, the leader writes */
                if ((r = coord_ha_start(c)) < 0)
                        return r;
        } else {
                if ((r = coord_jobs_reload(c, "coordinator restarted")) < 0)
                        return r;
                if (r > 0)
                        log_info("%d unfinished jobs resumed", r);
                (void) coord_jobs_prune(c);
        }
        coord_inventory_refresh(c);
        if (pthread_create(&c->inv_thread, NULL, coord_inventory_thread, c) != 0)
                return err_set(-EAGAIN, "cannot start the inventory thread");
        if (pthread_create(&c->sched_thread, NULL, coord_scheduler_thread, c) != 0) {
                atomic_store(&c->stopping, true);
                pthread_join(c->inv_thread, NULL);
                coord_ha_resign(c);
                return err_set(-EAGAIN, "cannot start the scheduler thread");
        }
        c->started = true;
        return 0;
}

void coord_stop(Coordinator *c) {
        if (!c || !c->started)
                return;
        atomic_store(&c->stopping, true);
        lock_acquire(&c->lock); /* the threads check the flag under it before they wait */
        cond_broadcast(&c->changed);
        cond_broadcast(&c->stop);
        lock_release(&c->lock);
        pthread_join(c->sched_thread, NULL);
        pthread_join(c->inv_thread, NULL);
        c->started = false;
        coord_ha_resign(c);
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
                coord_job_free(c->jobs[i]);
        for (size_t i = 0; i < COORD_ENDED_KEEP; i++)
                coord_job_free(c->ended[i]);
        free(c->jobs);
        free(c->sched_scratch);
        store_close(c->store);
        coord_ha_close(c);
        cond_destroy(&c->changed);
        cond_destroy(&c->stop);
        lock_destroy(&c->lock);
        free(c);
}

/* The daemon's status line (sd_notify STATUS): its role, then the host
 * and job counts. */
void coord_summary(Coordinator *c, CoordSummary *ret) {
        CoordSummary s = { 0 };
        s.standby = !coord_leading(c, s.leader, sizeof(s.leader));
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
