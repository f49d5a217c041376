/* The ha suite's cluster: agents and etcd members in hosts a-c, two
 * coordinators in hosts d and e (see ha-harness.h).
 *
 * The coordinators' config is the cluster suite's (cluster_coord_config:
 * hosts, TLS, limits) turned into an HA one with json-c: the unix socket
 * plus the host's address in "listen", "advertise", "store": "etcd:..."
 * and the "etcd" section in place of "db".  Who leads is read from etcd
 * with `etcdctl get --prefix /drover/leader/ -w fields` (no base64 to
 * decode) and from the coordinators' logs, whose lines begin with a UTC
 * timestamp (core/log.c).
 */
#define _GNU_SOURCE
#include "ha-harness.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "coord-testutil.h"
#include "deadline.h"
#include "testcert.h"
#include "testutil.h"

int ha_coord_ns(int i) {
        return 3 + i;
}

int64_t ha_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ha_require(void) {
        netns_require();
        if (!etcdproc_available())
                tu_skip("etcd and etcdctl (Debian's etcd-server, etcd-client) are not installed");
        if (!tc_available())
                tu_skip("the openssl CLI is not installed; cannot make the certificates");
}

int ha_fixture_setup(void **state) {
        HaCluster *h = calloc(1, sizeof(*h));
        *state = h;
        return h ? 0 : -1;
}

int ha_fixture_teardown(void **state) {
        HaCluster *h = *state;
        ha_down(h);
        free(h);
        return 0;
}

/* ---- config ------------------------------------------------------------------------------- */

/* Turn the cluster suite's single-coordinator config into coordinator @i's HA config. */
static void write_ha_config(HaCluster *h, int i) {
        ClusterCoord *k = &h->co[i];
        json_object *root = json_object_from_file(h->cl.coord.config);
        if (!root)
                fail_msg("cannot read %s back", h->cl.coord.config);
        char unix_listen[300], store[600];
        snprintf(unix_listen, sizeof(unix_listen), "unix:%s", k->sock);
        json_object *listen = json_object_new_array();
        json_object_array_add(listen, json_object_new_string(unix_listen));
        json_object_array_add(listen, json_object_new_string(h->api[i]));
        json_object_object_add(root, "listen", listen);
        json_object_object_del(root, "db");
        json_object_object_add(root, "advertise", json_object_new_string(h->api[i]));
        snprintf(store, sizeof(store), "etcd:%s", h->etcd.endpoints);
        json_object_object_add(root, "store", json_object_new_string(store));
        json_object *e = json_object_new_object();
        json_object_object_add(e, "cert", json_object_new_string(h->etcd.client_cert));
        json_object_object_add(e, "key", json_object_new_string(h->etcd.client_key));
        json_object_object_add(e, "ca", json_object_new_string(h->etcd.ca));
        json_object_object_add(e, "prefix", json_object_new_string(HA_PREFIX));
        json_object_object_add(e, "lease_ttl_s", json_object_new_int(h->lease_ttl_s));
        json_object_object_add(root, "etcd", e);
        if (json_object_to_file_ext(k->config, root, JSON_C_TO_STRING_PRETTY) < 0)
                fail_msg("writing %s: %s", k->config, json_util_get_last_err());
        json_object_put(root);
}

static void coord_paths(HaCluster *h, int i) {
        ClusterCoord *k = &h->co[i];
        memset(k, 0, sizeof(*k));
        snprintf(k->dir, sizeof(k->dir), "%s/ha-%c", h->cl.host[0].dir, 'd' + i);
        if (mkdir(k->dir, 0700) < 0 && errno != EEXIST)
                fail_msg("mkdir %s: %s", k->dir, strerror(errno));
        snprintf(k->ns, sizeof(k->ns), "%s", h->cl.net.ns[ha_coord_ns(i)]);
        snprintf(k->config, sizeof(k->config), "%s/coordinator.json", k->dir);
        snprintf(k->sock, sizeof(k->sock), "%s/coordinator.sock", k->dir);
        snprintf(k->log, sizeof(k->log), "%s/coordinator.log", k->dir);
        snprintf(h->api[i], sizeof(h->api[i]), "%s:%d", h->cl.net.addr[ha_coord_ns(i)], HA_API_PORT);
}

/* ---- up and down ---------------------------------------------------------------------------- */

void ha_up(HaCluster *h, const HaOptions *o) {
        Cluster *c = &h->cl;
        cluster_up_spare(c, 3, HA_N_COORD);
        const char *ips[3] = { c->net.addr[0], c->net.addr[1], c->net.addr[2] };
        const char *nss[3] = { c->net.ns[0], c->net.ns[1], c->net.ns[2] };
        char dir[300];
        snprintf(dir, sizeof(dir), "%s/etcd", c->host[0].dir);
        if (etcdproc_start(&h->etcd, dir, 3, ips, nss, true) < 0)
                fail_msg("the three etcd members did not start (logs in %s)", dir);
        h->etcd_up = true;
        h->lease_ttl_s = o && o->lease_ttl_s ? o->lease_ttl_s : HA_LEASE_TTL_S;
        if (o && o->n_guests)
                ctu_start_guests(c, o->n_guests);
        cluster_coord_config(c, o && o->coord ? o->coord : &ctu_limits_2x2);
        for (int i = 0; i < HA_N_COORD; i++) {
                coord_paths(h, i);
                write_ha_config(h, i);
        }
        snprintf(c->ctl_target, sizeof(c->ctl_target), "%s,%s", h->api[0], h->api[1]);
        snprintf(c->ctl_netns, sizeof(c->ctl_netns), "%s", c->net.ns[0]);
        if (!o || !o->start_coords)
                return;
        int r = ha_coord_start(h, 0);
        if (r < 0)
                fail_msg("coordinator 0 did not start: %s", strerror(-r));
        if (ha_wait_leader(h, NULL, 20000) != 0)
                fail_msg("coordinator 0, alone, does not lead after 20 s (etcd's view: %d)", ha_etcd_leader(h));
        if ((r = ha_coord_start(h, 1)) < 0)
                fail_msg("coordinator 1 did not start: %s", strerror(-r));
        cluster_coord_wait_hosts(c, o->n_guests, COORD_UP_MS);
}

void ha_down(HaCluster *h) {
        for (int i = 0; i < HA_N_COORD; i++)
                cluster_coord_kill9_k(&h->co[i]);
        if (h->etcd_up)
                etcdproc_stop(&h->etcd);
        if (!h->cl.ok && h->cl.net.up) {
                for (int i = 0; i < HA_N_COORD; i++) {
                        char title[64];
                        snprintf(title, sizeof(title), "coordinator %d (host %c) log", i, 'd' + i);
                        if (h->co[i].log[0])
                                cluster_dump_file_tail(h->co[i].log, title, "| ", 60);
                }
                for (int i = 0; h->etcd_up && i < h->etcd.n; i++)
                        cluster_dump_file_tail(h->etcd.m[i].log, h->etcd.m[i].name, "| ", 8);
        }
        h->etcd_up = false;
        cluster_down(&h->cl);
}

/* ---- the coordinators --------------------------------------------------------------------- */

int ha_coord_start(HaCluster *h, int i) {
        return cluster_coord_spawn(&h->cl, &h->co[i], NULL);
}

int ha_coord_spawn_nowait(HaCluster *h, int i) {
        ClusterCoord *k = &h->co[i];
        const char *ip = tu_which("ip");
        if (!ip || k->pid > 0)
                return -EINVAL;
        char *argv[] = { (char *) ip, (char *) "netns", (char *) "exec", k->ns,
                         (char *) tu_build_path("coordinator/drover-coordinator"), (char *) "--config", k->config,
                         NULL };
        unlink(k->log);
        k->starts++;
        k->pid = tu_spawn(argv, k->log);
        if (k->pid < 0) {
                int r = (int) k->pid;
                k->pid = 0;
                return r;
        }
        return 0;
}

int ha_coord_wait_ready(HaCluster *h, int i, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        while (ha_log_count(h, i, "drover-coordinator: ready") < 1) {
                int st;
                if (tu_reap(h->co[i].pid, &st)) {
                        h->co[i].pid = 0;
                        return -ECHILD;
                }
                if (deadline_expired(d))
                        return -ETIMEDOUT;
                sleep_ms(10);
        }
        return 0;
}

void ha_coord_kill9(HaCluster *h, int i) {
        cluster_coord_kill9_k(&h->co[i]);
}

void ha_coord_stop(HaCluster *h, int i) {
        ClusterCoord *k = &h->co[i];
        int st;
        if (k->pid <= 0)
                return;
        tu_signal(k->pid, SIGTERM);
        Deadline d = deadline_in_ms(10000);
        while (!tu_reap(k->pid, &st)) {
                if (deadline_expired(d)) {
                        tu_kill(k->pid);
                        break;
                }
                sleep_ms(10);
        }
        k->pid = 0;
}

/* ---- who leads ------------------------------------------------------------------------------ */

/* The leader keys as etcd has them: their values and create revisions. */
static int etcd_leader_keys(HaCluster *h, char vals[][64], int64_t *revs, int max) {
        char *out = NULL, args[160];
        snprintf(args, sizeof(args), "get --prefix %s/leader/ -w fields", HA_PREFIX);
        if (etcdproc_ctl(&h->etcd, &out, args) != 0) {
                free(out);
                return -1;
        }
        int n = 0;
        int64_t rev = 0;
        for (char *line = out, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                long long v;
                char val[64];
                if (sscanf(line, "\"CreateRevision\" : %lld", &v) == 1)
                        rev = v;
                else if (sscanf(line, "\"Value\" : \"%63[^\"]\"", val) == 1 && n < max) {
                        snprintf(vals[n], 64, "%s", val);
                        revs[n++] = rev;
                }
        }
        free(out);
        return n;
}

int ha_etcd_candidates(HaCluster *h) {
        char vals[8][64];
        int64_t revs[8];
        return etcd_leader_keys(h, vals, revs, 8);
}

int ha_etcd_leader(HaCluster *h) {
        char vals[8][64];
        int64_t revs[8];
        int n = etcd_leader_keys(h, vals, revs, 8), best = -1;
        for (int k = 0; k < n; k++)
                if (best < 0 || revs[k] < revs[best])
                        best = k;
        if (best < 0)
                return -1;
        for (int i = 0; i < HA_N_COORD; i++)
                if (strcmp(vals[best], h->api[i]) == 0)
                        return i;
        return -1;
}

int ha_wait_leader(HaCluster *h, const int *leads_before, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                int l = ha_etcd_leader(h);
                if (l >= 0 && ha_log_count(h, l, HA_LOG_LEADING) > (leads_before ? leads_before[l] : 0))
                        return l;
                if (deadline_expired(d))
                        return -1;
                sleep_ms(50);
        }
}

/* ---- logs ----------------------------------------------------------------------------------- */

int ha_log_count(HaCluster *h, int i, const char *needle) {
        char *log = tu_read_file(h->co[i].log, NULL);
        int n = 0;
        for (char *p = log; p && (p = strstr(p, needle)); p += strlen(needle))
                n++;
        free(log);
        return n;
}

/* "2026-12-03T02:07:12.123Z ..." -> Unix ms; 0 when the line has no stamp. */
static int64_t line_time(const char *line) {
        struct tm tm = { 0 };
        int ms = 0;
        if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec, &ms) != 7)
                return 0;
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        return (int64_t) timegm(&tm) * 1000 + ms;
}

/* Call @f on each line of coordinator @i's log stamped at or after @after_ms. */
static void each_line(HaCluster *h, int i, int64_t after_ms, bool (*f)(const char *line, int64_t t, void *arg),
                      void *arg) {
        char *log = tu_read_file(h->co[i].log, NULL);
        for (char *line = log, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                int64_t t = line_time(line);
                if (t && t >= after_ms && !f(line, t, arg))
                        break;
        }
        free(log);
}

typedef struct Find {
        const char *needle;
        int64_t t;
} Find;

static bool find_line(const char *line, int64_t t, void *arg) {
        Find *f = arg;
        if (!strstr(line, f->needle))
                return true;
        f->t = t;
        return false;
}

int64_t ha_log_time(HaCluster *h, int i, const char *needle, int64_t after_ms) {
        Find f = { .needle = needle };
        each_line(h, i, after_ms, find_line, &f);
        return f.t;
}

typedef struct PrintHa {
        int i, left;
} PrintHa;

static bool print_ha(const char *line, int64_t t, void *arg) {
        PrintHa *p = arg;
        (void) t;
        if (strstr(line, HA_LOG_LEADING) || strstr(line, HA_LOG_STEPPED_DOWN) || strstr(line, HA_LOG_FENCED) ||
            strstr(line, "etcd") || strstr(line, "leader")) {
                printf("#   [%c] %s\n", 'd' + p->i, line);
                p->left--;
        }
        return p->left > 0;
}

void ha_log_print_ha(HaCluster *h, int i, int64_t after_ms, int max) {
        PrintHa p = { .i = i, .left = max };
        each_line(h, i, after_ms, print_ha, &p);
        fflush(stdout);
}

/* ---- the fence --------------------------------------------------------------------------------- */

typedef struct LastFence {
        int64_t before;
        char key[160];
        int64_t rev;
        bool found;
} LastFence;

static bool last_fence(const char *line, int64_t t, void *arg) {
        LastFence *f = arg;
        const char *p = strstr(line, HA_LOG_ELECTED);
        long long rev;
        char key[160];
        if (t >= f->before)
                return false;
        if (p && sscanf(p + strlen(HA_LOG_ELECTED), "key %159[^,], revision %lld)", key, &rev) == 2) {
                snprintf(f->key, sizeof(f->key), "%s", key);
                f->rev = rev;
                f->found = true;
        }
        return true;
}

int ha_log_fence(HaCluster *h, int i, int64_t before_ms, char key[160], int64_t *ret_rev) {
        LastFence f = { .before = before_ms };
        each_line(h, i, 0, last_fence, &f);
        if (!f.found)
                return -ENOENT;
        snprintf(key, 160, "%s", f.key);
        *ret_rev = f.rev;
        return 0;
}

int ha_fence_probe(HaCluster *h, int i, const char *key, int64_t rev, const char *job_id, char *out, size_t size) {
        char revs[32], log[400];
        const char *ip = tu_which("ip");
        snprintf(revs, sizeof(revs), "%lld", (long long) rev);
        snprintf(log, sizeof(log), "%s/fence-probe.out", h->co[i].dir);
        char *argv[] = { (char *) (ip ? ip : "/usr/sbin/ip"), (char *) "netns", (char *) "exec", h->co[i].ns,
                         (char *) tu_build_path("tests/ha/ha-fence-probe"), h->etcd.endpoints, h->etcd.ca,
                         h->etcd.client_cert, h->etcd.client_key, (char *) HA_PREFIX, (char *) key, revs,
                         (char *) job_id, NULL };
        pid_t pid = tu_spawn(argv, log);
        int st = 0;
        if (pid < 0)
                return 2;
        Deadline d = deadline_in_ms(30000);
        while (!tu_reap(pid, &st)) {
                if (deadline_expired(d)) {
                        tu_kill(pid);
                        snprintf(out, size, "the probe did not end in 30 s");
                        return 2;
                }
                sleep_ms(20);
        }
        char *text = tu_read_file(log, NULL);
        snprintf(out, size, "%s", text ? text : "");
        free(text);
        size_t n = strlen(out);
        while (n && out[n - 1] == '\n')
                out[--n] = '\0';
        return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}

/* ---- the job's history ------------------------------------------------------------------------ */

const char *const HA_EVENTS_ACT[] = { " started:", " migrated:", NULL };

int64_t ha_first_event_after(json_object *job, int64_t after_ms, const char *const *needles, char *text,
                             size_t size) {
        json_object *hist = cj_get(job, "history");
        int64_t best = 0;
        for (size_t i = 0; i < cj_len(hist); i++) {
                int64_t t = cj_int(cj_idx(hist, i), "time_unix_ms");
                const char *s = cj_str(cj_idx(hist, i), "text");
                bool match = false;
                for (size_t k = 0; needles[k]; k++)
                        match |= strstr(s, needles[k]) != NULL;
                if (t > after_ms && match && (!best || t < best)) {
                        best = t;
                        if (text)
                                snprintf(text, size, "%s", s);
                }
        }
        return best;
}
