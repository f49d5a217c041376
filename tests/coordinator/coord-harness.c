/* The in-process coordinator of the engine tests (see coord-harness.h). */
#include "coord-harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "testutil.h"

const char *ch_addr(const char *host) {
        static __thread char buf[4][80];
        static __thread int next;
        char *b = buf[next++ % 4];
        snprintf(b, sizeof(buf[0]), "%s:7400", host);
        return b;
}

Coordinator *ch_new(const char *tag, size_t n, const uint64_t *mem_mib) {
        static CoordConfig cfg; /* large: not on the stack */
        Coordinator *c = NULL;
        fake_reset();
        coord_config_defaults(&cfg);
        snprintf(cfg.db_path, sizeof(cfg.db_path), "%s", tu_path(tu_tmpdir(tag), "store.db"));
        cfg.n_hosts = n;
        for (size_t i = 0; i < n; i++) {
                StoreHost *h = &cfg.hosts[i];
                memset(h, 0, sizeof(*h));
                snprintf(h->name, sizeof(h->name), "h%zu", i + 1);
                snprintf(h->address, sizeof(h->address), "%s", ch_addr(h->name));
                h->state = COORD_HOST_STATE_ENABLED;
                fake_host_add(h->address, mem_mib[i], 8);
        }
        if (coord_new(&cfg, &c) < 0)
                fail_msg("coord_new: %s", err_msg());
        return c;
}

void ch_free(Coordinator *c) {
        coord_free(c);
}

void ch_guest(const char *host, const char *name, uint64_t mem_mib) {
        char uuid[37];
        unsigned h = 0;
        for (const char *p = name; *p; p++)
                h = h * 31 + (unsigned char) *p;
        snprintf(uuid, sizeof(uuid), "00000000-0000-4000-8000-%012x", h);
        fake_guest_add(ch_addr(host), name, uuid, mem_mib, 1);
}

int ch_evacuate(Coordinator *c, const char *host, bool maintenance, char ret_id[STORE_ID_MAX]) {
        CoordJobRequest req = { .kind = COORD_JOB_KIND_EVACUATE, .host = host, .maintenance = maintenance,
                                .failure_policy = COORD_FAILURE_POLICY_CONTINUE };
        CoordPlan plan;
        ret_id[0] = '\0';
        int r = coord_job_submit(c, &req, &plan, ret_id);
        coord_plan_clear(&plan);
        return r;
}

int ch_migrate(Coordinator *c, const char *guest, const char *to, char ret_id[STORE_ID_MAX]) {
        CoordJobRequest req = { .kind = COORD_JOB_KIND_MIGRATE, .n_guests = 1, .guests = &guest, .to_host = to,
                                .failure_policy = COORD_FAILURE_POLICY_CONTINUE };
        CoordPlan plan;
        ret_id[0] = '\0';
        int r = coord_job_submit(c, &req, &plan, ret_id);
        coord_plan_clear(&plan);
        return r;
}

void ch_tick(Coordinator *c) {
        bool freed, finishing;
        assert_int_equal(coord_scheduler_tick(c, &freed, &finishing), 0);
}

void ch_heartbeats(Coordinator *c, int n) {
        for (int i = 0; i < n; i++)
                coord_inventory_heartbeat(c);
}

StoreSubtask ch_sub(Coordinator *c, const char *id, const char *guest) {
        CoordJobView v;
        StoreSubtask t = { 0 };
        bool found = false;
        assert_int_equal(coord_job_get(c, id, false, &v), 0);
        for (size_t i = 0; i < v.n_subs; i++)
                if (strcmp(v.subs[i].guest, guest) == 0) {
                        t = v.subs[i];
                        found = true;
                }
        coord_job_view_clear(&v);
        if (!found)
                fail_msg("job %s has no sub-task for %s", id, guest);
        return t;
}

StoreJob ch_job(Coordinator *c, const char *id) {
        CoordJobView v;
        assert_int_equal(coord_job_get(c, id, false, &v), 0);
        StoreJob j = v.job;
        coord_job_view_clear(&v);
        return j;
}

int ch_host_state(Coordinator *c, const char *host) {
        lock_acquire(&c->lock);
        CHost *h = coord_host_find_locked(c, host);
        int s = h ? h->h.state : -1;
        lock_release(&c->lock);
        return s;
}

size_t ch_active_jobs(Coordinator *c) {
        lock_acquire(&c->lock);
        size_t n = c->n_jobs;
        lock_release(&c->lock);
        return n;
}

bool ch_history_has(Coordinator *c, const char *id, const char *part) {
        CoordJobView v;
        bool found = false;
        assert_int_equal(coord_job_get(c, id, true, &v), 0);
        for (size_t i = 0; i < v.n_events && !found; i++)
                found = strstr(v.events[i].text, part) != NULL;
        coord_job_view_clear(&v);
        return found;
}
