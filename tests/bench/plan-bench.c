/* Benchmark of placement (coordinator/placement.h) at scale: a generated
 * cluster of 1,000 hosts (four CPU models, a few hosts draining, in
 * maintenance or unhealthy) running 20,000 guests (64 MiB to 16 GiB,
 * log-uniform; a fifth of them in anti-affinity groups of four), planned
 * for evacuations of 1, 10 and 100 hosts, for moving every guest at once,
 * and for a worst case: every guest moving, one CPU model, and all guests
 * in 10 anti-affinity groups of 2,000, so after the first 1,000 of a group
 * each guest scans every host and is blocked (O(guests x hosts)).
 *
 * Prints the best, median and worst time of place_guests() alone over
 * several runs, and the process's peak RSS (getrusage) after each case; the
 * inputs are generated once.  It never fails for being slow (STYLE.md:
 * benchmarks are not timed tests).
 *
 *   plan-bench [RUNS]      (default 7; the worst case runs 3 times)
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cleanup.h"
#include "err.h"
#include "placement.h"
#include "testutil.h"

#define N_HOSTS 1000
#define N_GUESTS 20000

typedef struct World {
        PlaceHost hosts[N_HOSTS];
        PlaceGuest guests[N_GUESTS]; /* source = the host it runs on */
        int guest_host[N_GUESTS];
} World;

static const char *const cpu_models[] = { "Skylake-Server", "Cascadelake-Server", "EPYC-Milan", "Icelake-Server" };

static void world_hosts(World *w, TuRng *rng, bool one_model) {
        static const uint64_t mem_gib[] = { 256, 384, 512, 768 };
        static const uint32_t vcpus[] = { 64, 96, 128 };

        for (int i = 0; i < N_HOSTS; i++) {
                PlaceHost *h = &w->hosts[i];
                memset(h, 0, sizeof(*h));
                snprintf(h->name, sizeof(h->name), "host-%04d", i);
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
        for (int i = 0; i < N_GUESTS; i++) {
                PlaceGuest *g = &w->guests[i];
                memset(g, 0, sizeof(*g));
                snprintf(g->name, sizeof(g->name), "guest-%05d", i);
                g->memory_mib = (uint64_t) (64.0 * exp2(8.0 * tu_rng_unit(rng))); /* 64 MiB .. 16 GiB */
                g->vcpus = 1 + (uint32_t) (g->memory_mib / 2048) + tu_rng_below(rng, 2);
                if (n_groups && i % group_every == 0)
                        snprintf(g->anti_affinity, sizeof(g->anti_affinity), "group-%04d", tu_rng_below(rng, n_groups));
                g->dirty_bytes_per_s = tu_rng_below(rng, 4) ? tu_rng_next(rng) % 50000000 : tu_rng_next(rng) % 400000000;
                for (;;) {
                        int h = (int) tu_rng_below(rng, N_HOSTS);
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
        const char *name;
        PlaceHost *hosts;    /* evacuated hosts marked draining */
        PlaceGuest *movers;
        size_t n_movers;
        PlaceResident *residents;
        size_t n_residents;
        PlaceResult *results;
} Case;

static void case_free(Case *c) {
        free(c->hosts);
        free(c->movers);
        free(c->residents);
        free(c->results);
}

/* Evacuate @n_evac random enabled hosts (0: every guest moves, none stays). */
static void case_build(Case *c, const char *name, const World *w, TuRng *rng, int n_evac) {
        bool *evac = calloc(N_HOSTS, sizeof(bool));
        *c = (Case) { .name = name,
                      .hosts = malloc(sizeof(w->hosts)),
                      .movers = calloc(N_GUESTS, sizeof(PlaceGuest)),
                      .residents = calloc(N_GUESTS, sizeof(PlaceResident)),
                      .results = calloc(N_GUESTS, sizeof(PlaceResult)) };
        if (!evac || !c->hosts || !c->movers || !c->residents || !c->results) {
                fprintf(stderr, "out of memory\n");
                exit(EXIT_FAILURE);
        }
        memcpy(c->hosts, w->hosts, sizeof(w->hosts));
        for (int k = 0; k < n_evac;) {
                int h = (int) tu_rng_below(rng, N_HOSTS);
                if (evac[h] || c->hosts[h].state != PLACE_HOST_ENABLED)
                        continue;
                evac[h] = true;
                c->hosts[h].state = PLACE_HOST_DRAINING; /* what an evacuation does first */
                k++;
        }
        for (int i = 0; i < N_GUESTS; i++) {
                if (n_evac == 0 || evac[w->guest_host[i]])
                        c->movers[c->n_movers++] = w->guests[i];
                else {
                        PlaceResident *r = &c->residents[c->n_residents++];
                        memcpy(r->host, w->guests[i].source, sizeof(r->host));
                        memcpy(r->anti_affinity, w->guests[i].anti_affinity, sizeof(r->anti_affinity));
                }
        }
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

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

/* The makespan's lower bound of placement.h: the bytes each source sends
 * over its link, the largest of those. */
static double makespan_lower_bound(const Case *c) {
        double per_host[N_HOSTS] = { 0 };
        double worst = 0;
        for (size_t i = 0; i < c->n_movers; i++) {
                if (c->results[i].host < 0)
                        continue;
                for (int h = 0; h < N_HOSTS; h++) {
                        if (strcmp(c->hosts[h].name, c->movers[i].source) != 0)
                                continue;
                        uint64_t link = c->hosts[h].link_bytes_per_s ? c->hosts[h].link_bytes_per_s : 125000000;
                        per_host[h] += (double) c->movers[i].memory_mib * 1048576.0 / (double) link;
                        worst = per_host[h] > worst ? per_host[h] : worst;
                        break;
                }
        }
        return worst;
}

static int case_run(Case *c, int runs) {
        double ms[16];
        int placed = 0;

        runs = runs > 16 ? 16 : runs;
        for (int r = 0; r < runs; r++) {
                double t0 = now_ms();
                placed = place_guests(c->hosts, N_HOSTS, c->movers, c->n_movers, c->residents, c->n_residents, NULL,
                                      c->results);
                ms[r] = now_ms() - t0;
                if (placed < 0) {
                        fprintf(stderr, "%s: place_guests: %s\n", c->name, err_str(placed));
                        return placed;
                }
        }
        qsort(ms, (size_t) runs, sizeof(double), cmp_double);
        double sum_s = 0;
        for (size_t i = 0; i < c->n_movers; i++)
                sum_s += c->results[i].estimated_s;
        printf("%-26s %6zu %6zu %6d %6zu %9.2f %9.2f %9.2f %8.1f %9.0f %9.0f\n", c->name, c->n_movers,
               c->n_residents, placed, c->n_movers - (size_t) placed, ms[0], ms[runs / 2], ms[runs - 1],
               maxrss_mib(), sum_s, makespan_lower_bound(c));
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

int main(int argc, char **argv) {
        int runs = argc > 1 ? atoi(argv[1]) : 7;
        TuRng rng = { .s = 0x5eed5eed1234ULL };
        World *w = malloc(sizeof(World));
        int r = 0;

        if (runs < 1 || !w) {
                fprintf(stderr, "usage: plan-bench [RUNS]\n");
                return EXIT_FAILURE;
        }
        double rss0 = maxrss_mib();
        world_hosts(w, &rng, false);
        world_guests(w, &rng, 1000, 5);
        printf("cluster: %d hosts, %d guests; peak RSS %.1f MiB before the cluster, %.1f MiB after it\n", N_HOSTS,
               N_GUESTS, rss0, maxrss_mib());
        printf("times in ms over %d runs (worst case: 3); RSS = process peak after the case; "
               "sum/makespan in s\n\n", runs);
        printf("%-26s %6s %6s %6s %6s %9s %9s %9s %8s %9s %9s\n", "case", "moving", "stay", "placed", "blocked",
               "best", "median", "worst", "RSS MiB", "sum est", "makespan");

        static const struct {
                const char *name;
                int n_evac;
        } evacs[] = { { "evacuate 1 host", 1 }, { "evacuate 10 hosts", 10 }, { "evacuate 100 hosts", 100 },
                      { "move all 20,000 guests", 0 } };
        for (size_t i = 0; i < ELEMENTSOF(evacs) && r == 0; i++) {
                Case c;
                case_build(&c, evacs[i].name, w, &rng, evacs[i].n_evac);
                r = case_run(&c, runs);
                print_blocked_sample(&c, 2);
                case_free(&c);
        }

        /* worst case: one model, 10 groups of 2,000, everything moves */
        world_hosts(w, &rng, true);
        world_guests(w, &rng, 10, 1);
        for (int i = 0; r == 0 && i < 1; i++) {
                Case c;
                case_build(&c, "worst: 10 groups x 2,000", w, &rng, 0);
                r = case_run(&c, 3);
                print_blocked_sample(&c, 2);
                case_free(&c);
        }
        free(w);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
