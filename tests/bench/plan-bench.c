/* Benchmark of placement (coordinator/placement.h) at scale, at two sizes:
 * 1,000 hosts running 20,000 guests, and ten times that, 10,000 hosts
 * running 200,000 guests.  Each cluster has four CPU models, a few hosts
 * draining, in maintenance or unhealthy, guests of 64 MiB to 16 GiB
 * (log-uniform), a fifth of them in anti-affinity groups of four.  It is
 * planned for evacuations of 1, 10, 100 (and, at 10,000 hosts, 1,000)
 * hosts, for moving every guest at once, and for a worst case: every guest
 * moving, one CPU model, and all guests in 10 anti-affinity groups of a
 * tenth of the guests each, so once a group is on every host each further
 * guest of it is blocked (the path that used to cost O(guests x hosts)).
 *
 * Prints the best, median and worst time of place_guests() alone over
 * several runs; the process's peak RSS after each case (kept across the
 * cases of one size; each size runs in its own child process, so a size's
 * peak is its own); and the placement's own peak: how far the resident set
 * grew during the first call above what it was before (malloc_trim()
 * first hands free heap memory back, so nothing the call uses is resident
 * yet; Linux's /proc/self/clear_refs resets the high-water mark; the
 * kernel's counters make this good to about 0.3 MiB).  So the first call
 * pays the page faults of its scratch, the later ones mostly reuse it.  The inputs are
 * generated once per size, from the same seed, so the 1,000-host rows are
 * those of earlier versions of this benchmark.  It never fails for being
 * slow (STYLE.md: benchmarks are not timed tests).
 *
 *   plan-bench [RUNS [HOSTS]]   (RUNS default 7, the worst case runs 3 times;
 *                                HOSTS 1000 or 10000, default both)
 */
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"
#include "placement.h"
#include "testutil.h"

/* One cluster size and the evacuations timed at it. */
typedef struct Size {
        int n_hosts, n_guests, n_groups;
        int evacs[4]; /* hosts to evacuate; 0 ends the list */
} Size;

static const Size sizes[] = {
        { 1000, 20000, 1000, { 1, 10, 100, 0 } },
        { 10000, 200000, 10000, { 1, 10, 100, 1000 } },
};

typedef struct World {
        int n_hosts, n_guests;
        PlaceHost *hosts;
        PlaceGuest *guests; /* source = the host it runs on */
        int *guest_host;
} World;

static void *xcalloc(size_t n, size_t size) {
        void *p = calloc(n ? n : 1, size);
        if (!p) {
                fprintf(stderr, "out of memory\n");
                exit(EXIT_FAILURE);
        }
        return p;
}

static const char *const cpu_models[] = { "Skylake-Server", "Cascadelake-Server", "EPYC-Milan", "Icelake-Server" };

static void world_hosts(World *w, TuRng *rng, bool one_model) {
        static const uint64_t mem_gib[] = { 256, 384, 512, 768 };
        static const uint32_t vcpus[] = { 64, 96, 128 };

        for (int i = 0; i < w->n_hosts; i++) {
                PlaceHost *h = &w->hosts[i];
                memset(h, 0, sizeof(*h));
                snprintf(h->name, sizeof(h->name), w->n_hosts > 1000 ? "host-%05d" : "host-%04d", i);
                uint32_t m = tu_rng_below(rng, 10); /* 40/30/20/10 % */
                snprintf(h->cpu_model, sizeof(h->cpu_model), "%s",
                         cpu_models[one_model ? 0 : m < 4 ? 0 : m < 7 ? 1 : m < 9 ? 2 : 3]);
                uint32_t s = tu_rng_below(rng, 100);
                h->state = s < 2 ? PLACE_HOST_DRAINING : s < 3 ? PLACE_HOST_MAINTENANCE : PLACE_HOST_ENABLED;
                h->healthy = tu_rng_below(rng, 100) >= 2;
                h->memory_mib = mem_gib[tu_rng_below(rng, 4)] * 1024;
                h->vcpus = vcpus[tu_rng_below(rng, 3)];
                h->link_bytes_per_s = tu_rng_below(rng, 10) == 0 ? 0 : tu_rng_below(rng, 2) ? 1250000000 : 3125000000;
        }
}

/* Guests on random hosts that are not in maintenance, as long as they fit. */
static void world_guests(World *w, TuRng *rng, int n_groups, int group_every) {
        for (int i = 0; i < w->n_guests; i++) {
                PlaceGuest *g = &w->guests[i];
                memset(g, 0, sizeof(*g));
                snprintf(g->name, sizeof(g->name), w->n_guests > 100000 ? "guest-%06d" : "guest-%05d", i);
                g->memory_mib = (uint64_t) (64.0 * exp2(8.0 * tu_rng_unit(rng))); /* 64 MiB .. 16 GiB */
                g->vcpus = 1 + (uint32_t) (g->memory_mib / 2048) + tu_rng_below(rng, 2);
                if (n_groups && i % group_every == 0)
                        snprintf(g->anti_affinity, sizeof(g->anti_affinity), "group-%04d",
                                 tu_rng_below(rng, (uint32_t) n_groups));
                g->dirty_bytes_per_s = tu_rng_below(rng, 4) ? tu_rng_next(rng) % 50000000 : tu_rng_next(rng) % 400000000;
                for (;;) {
                        int h = (int) tu_rng_below(rng, (uint32_t) w->n_hosts);
                        PlaceHost *host = &w->hosts[h];
                        if (host->state == PLACE_HOST_MAINTENANCE ||
                            host->memory_used_mib + g->memory_mib > host->memory_mib ||
                            host->vcpus_used + g->vcpus > host->vcpus)
                                continue;
                        host->memory_used_mib += g->memory_mib;
                        host->vcpus_used += g->vcpus;
                        w->guest_host[i] = h;
                        snprintf(g->source, sizeof(g->source), "%s", host->name);
                        snprintf(g->cpu_model, sizeof(g->cpu_model), "%s", host->cpu_model);
                        break;
                }
        }
}

typedef struct Case {
        char name[48];
        int n_hosts;
        PlaceHost *hosts;    /* evacuated hosts marked draining */
        PlaceGuest *movers;
        int *mover_host;     /* index of each mover's source */
        size_t n_movers;
        PlaceResident *residents;
        size_t n_residents;
        PlaceResult *results;
} Case;

static void case_free(Case *c) {
        free(c->hosts);
        free(c->movers);
        free(c->mover_host);
        free(c->residents);
        free(c->results);
}

/* Evacuate @n_evac random enabled hosts (0: every guest moves, none stays). */
static void case_build(Case *c, const char *name, const World *w, TuRng *rng, int n_evac) {
        bool *evac = xcalloc((size_t) w->n_hosts, sizeof(bool));
        *c = (Case) { .n_hosts = w->n_hosts,
                      .hosts = xcalloc((size_t) w->n_hosts, sizeof(PlaceHost)),
                      .movers = xcalloc((size_t) w->n_guests, sizeof(PlaceGuest)),
                      .mover_host = xcalloc((size_t) w->n_guests, sizeof(int)),
                      .residents = xcalloc((size_t) w->n_guests, sizeof(PlaceResident)),
                      .results = xcalloc((size_t) w->n_guests, sizeof(PlaceResult)) };
        snprintf(c->name, sizeof(c->name), "%s", name);
        memcpy(c->hosts, w->hosts, (size_t) w->n_hosts * sizeof(PlaceHost));
        for (int k = 0; k < n_evac;) {
                int h = (int) tu_rng_below(rng, (uint32_t) w->n_hosts);
                if (evac[h] || c->hosts[h].state != PLACE_HOST_ENABLED)
                        continue;
                evac[h] = true;
                c->hosts[h].state = PLACE_HOST_DRAINING; /* what an evacuation does first */
                k++;
        }
        for (int i = 0; i < w->n_guests; i++) {
                if (n_evac == 0 || evac[w->guest_host[i]]) {
                        c->mover_host[c->n_movers] = w->guest_host[i];
                        c->movers[c->n_movers++] = w->guests[i];
                } else {
                        PlaceResident *r = &c->residents[c->n_residents++];
                        memcpy(r->host, w->guests[i].source, sizeof(r->host));
                        memcpy(r->anti_affinity, w->guests[i].anti_affinity, sizeof(r->anti_affinity));
                }
        }
        /* touched, so the placement's own peak is not the results' first write */
        memset(c->results, 0, (size_t) w->n_guests * sizeof(PlaceResult));
        free(evac);
}

static double now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec * 1e3 + (double) ts.tv_nsec / 1e6;
}

static double maxrss_mib(void) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double) ru.ru_maxrss / 1024.0;
}

/* A "Vm...:" line of /proc/self/status in MiB, or -1. */
static double proc_status_mib(const char *key) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        size_t n = strlen(key);

        while (f && fgets(line, sizeof(line), f))
                if (strncmp(line, key, n) == 0 && line[n] == ':')
                        return (double) strtoull(line + n + 1, NULL, 10) / 1024.0;
        return -1;
}

/* Reset the high-water mark of the resident set to what it is now. */
static bool reset_peak(void) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/clear_refs", "we");
        return f && fputs("5", f) >= 0 && fflush(f) == 0;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

/* The makespan's lower bound of placement.h: the bytes each source sends
 * over its link, the largest of those. */
static double makespan_lower_bound(const Case *c) {
        double *per_host = xcalloc((size_t) c->n_hosts, sizeof(double));
        double worst = 0;
        for (size_t i = 0; i < c->n_movers; i++) {
                if (c->results[i].host < 0)
                        continue;
                int h = c->mover_host[i];
                uint64_t link = c->hosts[h].link_bytes_per_s ? c->hosts[h].link_bytes_per_s : 125000000;
                per_host[h] += (double) c->movers[i].memory_mib * 1048576.0 / (double) link;
                worst = per_host[h] > worst ? per_host[h] : worst;
        }
        free(per_host);
        return worst;
}

static int case_run(Case *c, int runs) {
        double ms[16], own_mib = -1;
        int placed = 0;

        runs = runs > 16 ? 16 : runs;
        for (int r = 0; r < runs; r++) {
                double rss = -1;
                /* free heap memory back to the kernel first, so whatever
                 * the first call uses shows as growth */
                if (r == 0 && malloc_trim(0) >= 0 && reset_peak())
                        rss = proc_status_mib("VmRSS");
                double t0 = now_ms();
                placed = place_guests(c->hosts, (size_t) c->n_hosts, c->movers, c->n_movers, c->residents,
                                      c->n_residents, NULL, c->results);
                ms[r] = now_ms() - t0;
                if (rss >= 0)
                        own_mib = proc_status_mib("VmHWM") - rss;
                if (placed < 0) {
                        fprintf(stderr, "%s: place_guests: %s\n", c->name, err_str(placed));
                        return placed;
                }
        }
        qsort(ms, (size_t) runs, sizeof(double), cmp_double);
        double sum_s = 0;
        for (size_t i = 0; i < c->n_movers; i++)
                sum_s += c->results[i].estimated_s;
        printf("%-28s %7zu %7zu %7d %7zu %9.2f %9.2f %9.2f %8.1f %8.1f %9.0f %9.0f\n", c->name, c->n_movers,
               c->n_residents, placed, c->n_movers - (size_t) placed, ms[0], ms[runs / 2], ms[runs - 1],
               maxrss_mib(), own_mib, sum_s, makespan_lower_bound(c));
        return 0;
}

static void print_blocked_sample(const Case *c, int n) {
        for (size_t i = 0; i < c->n_movers && n > 0; i++)
                if (c->results[i].host < 0) {
                        printf("  blocked %s (%" PRIu64 " MiB): %s\n", c->movers[i].name, c->movers[i].memory_mib,
                               c->results[i].reason);
                        n--;
                }
}

static int size_run(const Size *sz, int runs) {
        TuRng rng = { .s = 0x5eed5eed1234ULL };
        World w = { .n_hosts = sz->n_hosts,
                    .n_guests = sz->n_guests,
                    .hosts = xcalloc((size_t) sz->n_hosts, sizeof(PlaceHost)),
                    .guests = xcalloc((size_t) sz->n_guests, sizeof(PlaceGuest)),
                    .guest_host = xcalloc((size_t) sz->n_guests, sizeof(int)) };
        char name[48];
        int r = 0;

        double rss0 = maxrss_mib();
        world_hosts(&w, &rng, false);
        world_guests(&w, &rng, sz->n_groups, 5);
        printf("cluster: %d hosts, %d guests; peak RSS %.1f MiB before the cluster, %.1f MiB after it\n",
               sz->n_hosts, sz->n_guests, rss0, maxrss_mib());
        printf("times in ms over %d runs (worst case: 3); RSS = process peak after the case, own = growth "
               "during the first call; sum/makespan in s\n\n", runs);
        printf("%-28s %7s %7s %7s %7s %9s %9s %9s %8s %8s %9s %9s\n", "case", "moving", "stay", "placed",
               "blocked", "best", "median", "worst", "RSS MiB", "own MiB", "sum est", "makespan");

        for (size_t i = 0; i <= ELEMENTSOF(sz->evacs) && r == 0; i++) {
                int n_evac = i < ELEMENTSOF(sz->evacs) ? sz->evacs[i] : 0;
                if (n_evac == 0 && i < ELEMENTSOF(sz->evacs))
                        continue;
                if (n_evac)
                        snprintf(name, sizeof(name), "evacuate %d host%s", n_evac, n_evac > 1 ? "s" : "");
                else
                        snprintf(name, sizeof(name), "move all %d guests", sz->n_guests);
                Case c;
                case_build(&c, name, &w, &rng, n_evac);
                r = case_run(&c, runs);
                print_blocked_sample(&c, 2);
                case_free(&c);
        }

        /* worst case: one model, 10 groups of a tenth of the guests, everything moves */
        world_hosts(&w, &rng, true);
        world_guests(&w, &rng, 10, 1);
        if (r == 0) {
                Case c;
                snprintf(name, sizeof(name), "worst: 10 groups x %d", sz->n_guests / 10);
                case_build(&c, name, &w, &rng, 0);
                r = case_run(&c, 3);
                print_blocked_sample(&c, 2);
                case_free(&c);
        }
        printf("\n");
        free(w.hosts);
        free(w.guests);
        free(w.guest_host);
        return r;
}

int main(int argc, char **argv) {
        int runs = argc > 1 ? atoi(argv[1]) : 7;
        int only = argc > 2 ? atoi(argv[2]) : 0;
        int failed = 0;

        if (runs < 1 || (only && only != 1000 && only != 10000)) {
                fprintf(stderr, "usage: plan-bench [RUNS [1000|10000]]\n");
                return EXIT_FAILURE;
        }
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                if (only && sizes[i].n_hosts != only)
                        continue;
                fflush(stdout);
                pid_t pid = fork();
                if (pid < 0) {
                        perror("fork");
                        return EXIT_FAILURE;
                }
                if (pid == 0) {
                        int r = size_run(&sizes[i], runs);
                        fflush(stdout);
                        _exit(r < 0 ? EXIT_FAILURE : EXIT_SUCCESS);
                }
                int status;
                if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        failed = 1;
        }
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
