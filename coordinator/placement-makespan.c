/* The estimated makespan of a plan (see placement.h): how long the
 * scheduler will take to run a set of placed migrations, as a pure
 * function.
 *
 * It replays the scheduler's admission on a fluid model instead of adding
 * up the guests' estimates: the sum assumed one migration after the other
 * on each source, but the scheduler (coord-scheduler.c) runs up to a host's
 * outgoing and incoming slots and the cluster limit at once, so the fixed
 * cost of each migration (prepare, switch-over) overlaps with the others',
 * and guests going to different destinations whose links are the narrower
 * ones move side by side.  The sum was off most for many small guests: 40
 * guests of 64 MiB were 40 x 0.5 s of fixed cost in a row, where the
 * scheduler pays it once per wave.
 *
 * The model: migrations wait in the plan's order; whenever one ends, the
 * waiting ones are admitted in that order while the source has an outgoing
 * slot, the destination an incoming one and the cluster limit allows.  A running
 * migration first sends its local disks at its fair share of both links
 * (each link divided among the migrations sending over it), then its memory
 * at that share less its dirty rate (at least a tenth of the share:
 * place_estimate_s()'s rule), then holds its slots for the fixed cost
 * without using the links.  A disk's bytes take the link like memory's: a
 * guest with local disks holds its share, and its slots, that much longer.  Time advances
 * from one end of a phase to the next: O(F) steps for F migrations, each
 * O(H + R) for H hosts and R running at once, plus the waiting ones passed
 * over because their destination is full.  The scheduler's
 * other rule (a migration waits while its share would not outrun its dirty
 * rate) and jobs already running are not modelled.
 */
#include "placement.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/types.h>

#include "cleanup.h"
#include "err.h"

#define FIXED_S 0.5 /* prepare + finish */
#define DEFAULT_LINK 125000000.0

typedef struct Run {
        size_t flow;
        bool sending;      /* counted in send_out/send_in */
        double disk_left;  /* while sending: local disk bytes, sent first */
        double bytes_left; /* while sending: then memory */
        double fixed_left; /* then this much fixed cost */
} Run;

typedef struct Sim {
        const PlaceHost *hosts;
        const PlaceFlow *flows;
        const PlaceLimits *lim;
        unsigned *out, *in;           /* slots taken, per host */
        unsigned *send_out, *send_in; /* migrations sending over the host's link */
        unsigned *queued;             /* flows waiting, per source */
        ssize_t head, *next;          /* the flows waiting, in their order */
        Run *run;
        size_t n_run, n_hosts;
} Sim;

static unsigned limit_of(const unsigned *arr, size_t h) {
        return arr && arr[h] ? arr[h] : 1;
}

static double link_of(const Sim *s, int32_t h) {
        if (s->hosts[h].link_bytes_per_s)
                return (double) s->hosts[h].link_bytes_per_s;
        return s->lim->default_link_bytes_per_s ? (double) s->lim->default_link_bytes_per_s : DEFAULT_LINK;
}

static bool source_open(const Sim *s, size_t h) {
        return s->queued[h] > 0 && s->out[h] < limit_of(s->lim->max_outgoing, h);
}

/* Admit waiting flows in their order while the limits hold, as the
 * scheduler does.  The scan ends as soon as no source with a flow waiting
 * has a free slot, so an evacuation (one source, its slots taken) costs
 * O(H) per call, not O(F). */
static void admit(Sim *s) {
        unsigned cluster = s->lim->cluster ? s->lim->cluster : UINT32_MAX;
        size_t open = 0;
        for (size_t h = 0; h < s->n_hosts; h++)
                open += source_open(s, h);
        for (ssize_t *link = &s->head; *link >= 0 && open > 0 && s->n_run < cluster;) {
                size_t f = (size_t) *link;
                size_t h = (size_t) s->flows[f].source, d = (size_t) s->flows[f].destination;
                if (!source_open(s, h) || s->in[d] >= limit_of(s->lim->max_incoming, d)) {
                        link = &s->next[f]; /* it waits; a later one may go */
                        continue;
                }
                bool sending = s->flows[f].memory_mib > 0 || s->flows[f].disk_bytes > 0;
                *link = s->next[f];
                s->queued[h]--;
                s->out[h]++;
                s->in[d]++;
                s->send_out[h] += sending;
                s->send_in[d] += sending;
                s->run[s->n_run++] = (Run){ .flow = f, .sending = sending,
                                            .disk_left = (double) s->flows[f].disk_bytes,
                                            .bytes_left = (double) s->flows[f].memory_mib * 1048576.0,
                                            .fixed_left = FIXED_S };
                open -= !source_open(s, h);
        }
}

/* The rate at which running migration @r sends now: its whole share while
 * it copies its disks, less its dirty rate for the memory. */
static double rate_of(const Sim *s, const Run *r) {
        const PlaceFlow *f = &s->flows[r->flow];
        double share = MIN(link_of(s, f->source) / s->send_out[f->source],
                           link_of(s, f->destination) / s->send_in[f->destination]);
        double net = share - (double) f->dirty_bytes_per_s;
        return r->disk_left > 0 ? share : MAX(net, share / 10.0);
}

/* Seconds until running migration @r ends its current phase. */
static double phase_left(const Sim *s, const Run *r) {
        if (!r->sending)
                return r->fixed_left;
        return (r->disk_left > 0 ? r->disk_left : r->bytes_left) / rate_of(s, r);
}

int place_makespan_s(const PlaceHost *hosts, size_t n_hosts, const PlaceFlow *flows, size_t n_flows,
                     const PlaceLimits *lim, double *ret_s) {
        if ((!hosts && n_hosts) || (!flows && n_flows) || !lim)
                return err_set(-EINVAL, "makespan: missing array");
        for (size_t i = 0; i < n_flows; i++)
                if (flows[i].source < 0 || (size_t) flows[i].source >= n_hosts || flows[i].destination < 0 ||
                    (size_t) flows[i].destination >= n_hosts)
                        return err_set(-EINVAL, "makespan: migration %zu names no host", i);
        _cleanup_free_ unsigned *counts = calloc(5 * n_hosts + 1, sizeof(unsigned));
        _cleanup_free_ ssize_t *next = malloc((n_flows + 1) * sizeof(ssize_t));
        _cleanup_free_ Run *run = malloc((n_flows + 1) * sizeof(Run));
        if (!counts || !next || !run)
                return err_set(-ENOMEM, "makespan: out of memory for %zu migrations", n_flows);
        Sim s = { .hosts = hosts, .flows = flows, .lim = lim, .out = counts, .in = counts + n_hosts,
                  .send_out = counts + 2 * n_hosts, .send_in = counts + 3 * n_hosts, .queued = counts + 4 * n_hosts,
                  .head = n_flows ? 0 : -1, .next = next, .run = run, .n_hosts = n_hosts };
        for (size_t i = 0; i < n_flows; i++) {
                s.next[i] = i + 1 < n_flows ? (ssize_t) i + 1 : -1;
                s.queued[flows[i].source]++;
        }

        double t = 0;
        for (admit(&s); s.n_run > 0; admit(&s)) {
                double dt = INFINITY;
                for (size_t k = 0; k < s.n_run; k++) {
                        Run *r = &s.run[k];
                        dt = MIN(dt, phase_left(&s, r));
                }
                /* every rate at the start of the step, then the step */
                for (size_t k = 0; k < s.n_run; k++) {
                        Run *r = &s.run[k];
                        if (r->sending && r->disk_left > 0)
                                r->disk_left -= rate_of(&s, r) * dt;
                        else if (r->sending)
                                r->bytes_left -= rate_of(&s, r) * dt;
                        else
                                r->fixed_left -= dt;
                }
                t += dt;
                for (size_t k = 0; k < s.n_run;) {
                        Run *r = &s.run[k];
                        const PlaceFlow *f = &flows[r->flow];
                        if (r->sending && r->disk_left > 0) {
                                if (r->disk_left <= 1e-9 * (double) f->disk_bytes)
                                        r->disk_left = 0; /* copied: the memory follows */
                        } else if (r->sending && r->bytes_left <= 1e-9 * (double) f->memory_mib * 1048576.0) {
                                r->sending = false; /* sent: the links are free for the others */
                                s.send_out[f->source]--;
                                s.send_in[f->destination]--;
                        } else if (!r->sending && r->fixed_left <= 1e-9) {
                                s.out[f->source]--;
                                s.in[f->destination]--;
                                s.run[k] = s.run[--s.n_run];
                                continue;
                        }
                        k++;
                }
        }
        *ret_s = t;
        return 0;
}

double place_estimate_disk_s(uint64_t memory_mib, uint64_t disk_bytes, uint64_t dirty_bytes_per_s,
                             uint64_t link_bytes_per_s) {
        double rate = link_bytes_per_s ? (double) link_bytes_per_s : DEFAULT_LINK;
        double net = rate - (double) dirty_bytes_per_s; /* <= 0 when the guest dirties faster */

        return (double) disk_bytes / rate + (double) memory_mib * 1048576.0 / MAX(net, rate / 10.0) + FIXED_S;
}

double place_estimate_s(uint64_t memory_mib, uint64_t dirty_bytes_per_s, uint64_t link_bytes_per_s) {
        return place_estimate_disk_s(memory_mib, 0, dirty_bytes_per_s, link_bytes_per_s);
}
