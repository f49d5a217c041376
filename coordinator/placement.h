/* Placement: where each guest of a job goes, as a pure function.
 *
 * Input: the hosts (capacity, use, state, health, CPU model, link budget)
 * and the guests to move (memory, vCPUs, CPU model, anti-affinity group,
 * source host, optional requested destination).  Output: a plan with one
 * destination per guest and its estimated duration, and the guests that
 * cannot move, each with a reason a person can act on.
 *
 * Rules (docs/coordinator.md): a destination is ENABLED and HEALTHY, is not
 * the source, has the free memory and vCPUs (what its guests use plus what
 * this plan already put there), the same CPU model as the guest, and no
 * guest of the same anti-affinity group (already there or placed there by
 * this plan).  An explicit destination is honoured when it passes the same
 * checks, else the guest is blocked with the failed check named.  Among
 * valid hosts the choice is the one with the most free memory after the
 * move (spreads load; ties by name for determinism).  Guests are placed
 * largest memory first (first-fit decreasing), so big guests are not
 * stranded by small ones.
 *
 * Estimated duration of one migration: disk / rate + memory / max(rate -
 * dirty, rate/10) with rate = the smaller link budget of source and
 * destination (default 1 Gbit/s when unknown), plus a fixed 0.5 s for
 * prepare/finish: a guest's local disks are copied over the same link
 * before its memory (docs/migration.md, "Local disks"), and the guest's
 * memory writes do not slow that copy.  The
 * plan's makespan (place_makespan_s(), placement-makespan.c) replays the
 * scheduler's admission limits on the placed migrations: they run in waves
 * of at most the hosts' slots and the cluster limit, sharing the links.
 *
 * No I/O, no locks, no allocation beyond the caller's arrays and two
 * scratch buffers: it runs on the coordinator's planning thread and in the
 * planning benchmark (1,000 hosts and 20,000 guests, and 10,000 hosts and
 * 200,000 guests; placement.c says what a guest costs).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum PlaceHostState {
        PLACE_HOST_ENABLED,
        PLACE_HOST_DRAINING,
        PLACE_HOST_MAINTENANCE,
} PlaceHostState;

typedef struct PlaceHost {
        char name[64];
        PlaceHostState state;
        bool healthy;
        uint64_t memory_mib;       /* capacity */
        uint32_t vcpus;            /* capacity */
        uint64_t memory_used_mib;  /* by guests it runs now */
        uint32_t vcpus_used;
        char cpu_model[64];
        uint64_t link_bytes_per_s; /* 0 = unknown */
} PlaceHost;

typedef struct PlaceGuest {
        char name[64];
        char source[64];           /* host name */
        char requested[64];        /* "" = any */
        uint64_t memory_mib;
        uint32_t vcpus;
        char cpu_model[64];
        char anti_affinity[64];    /* "" = none */
        uint64_t dirty_bytes_per_s;
        uint64_t disk_bytes;       /* local disks copied before the memory; 0 = none */
} PlaceGuest;

/* Guests that stay where they are, for anti-affinity (all guests of the
 * cluster that are not being moved). */
typedef struct PlaceResident {
        char host[64];
        char anti_affinity[64];
} PlaceResident;

typedef struct PlaceResult {
        int host;                  /* index into hosts, -1 = blocked */
        double estimated_s;
        char reason[160];          /* why blocked, or why this host */
} PlaceResult;

typedef struct PlaceOptions {
        uint64_t default_link_bytes_per_s; /* 0 = 125,000,000 (1 Gbit/s) */
} PlaceOptions;

/* Place @n_guests guests; @results has n_guests entries, in the guests'
 * order.  Returns the number placed, or -EINVAL/-ENOMEM with a detail
 * (err.h) for bad input (a guest's source host unknown, duplicate host
 * names, a NULL array with a nonzero count). */
int place_guests(const PlaceHost *hosts, size_t n_hosts, const PlaceGuest *guests, size_t n_guests,
                 const PlaceResident *residents, size_t n_residents, const PlaceOptions *opts,
                 PlaceResult *results);

/* Estimated seconds for one migration of @memory_mib with @dirty_bytes_per_s
 * over a link of @link_bytes_per_s (see above), without local disks.
 * place_estimate_disk_s(): with @disk_bytes of local disks as well.
 * (placement-makespan.c, with the other model of durations.) */
double place_estimate_s(uint64_t memory_mib, uint64_t dirty_bytes_per_s, uint64_t link_bytes_per_s);
double place_estimate_disk_s(uint64_t memory_mib, uint64_t disk_bytes, uint64_t dirty_bytes_per_s,
                             uint64_t link_bytes_per_s);

/* One placed migration, for the makespan: indices into the hosts. */
typedef struct PlaceFlow {
        int32_t source, destination;
        uint64_t memory_mib;
        uint64_t dirty_bytes_per_s;
        uint64_t disk_bytes;       /* local disks, sent first at the whole share */
} PlaceFlow;

/* The scheduler's admission limits.  A per-host array may be NULL, and an
 * entry of 0 counts as 1 (a host always runs one migration). */
typedef struct PlaceLimits {
        const unsigned *max_outgoing;      /* per host: migrations out at once */
        const unsigned *max_incoming;      /* per host: migrations in at once */
        unsigned cluster;                  /* in the whole cluster; 0: none */
        uint64_t default_link_bytes_per_s; /* for hosts of unknown link; 0 = 1 Gbit/s */
} PlaceLimits;

/* Estimated seconds from the start of @n_flows migrations (queued in this
 * order) to the end of the last, admitted under @lim, each sending its
 * local disks and then its memory at its fair share of both hosts' links
 * (the memory less its dirty rate), then paying the fixed 0.5 s while
 * holding its slots (placement-makespan.c).
 * Returns 0 and *ret_s, or -EINVAL (a flow names no host) / -ENOMEM with a
 * detail (err.h). */
int place_makespan_s(const PlaceHost *hosts, size_t n_hosts, const PlaceFlow *flows, size_t n_flows,
                     const PlaceLimits *lim, double *ret_s);
