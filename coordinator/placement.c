/* Placement (see placement.h): first-fit decreasing over per-CPU-model
 * rankings of the hosts, most free memory first.
 *
 * Everything lives in two scratch buffers sized up front from the counts:
 *
 *  - three string tables (open addressing, FNV-1a) that turn host names,
 *    CPU models and anti-affinity groups into small integers, so the hot
 *    loop compares integers, never strings;
 *  - `ranked`: the ENABLED and HEALTHY hosts grouped by CPU model (a
 *    "class"), each class a segment sorted best first: most free memory,
 *    then name.  Placing a guest only ever lowers one host's free memory, so
 *    that host sinks within its segment (binary search, then a short
 *    memmove); nothing else moves;
 *  - a hash set of (group, host) pairs holding the residents' groups and
 *    every placement this plan made, for anti-affinity in O(1);
 *  - bitsets over the positions of `ranked` (the second buffer): for each
 *    vCPU count t from 0 to the largest a guest asks for (at most
 *    PLACE_VCPU_BITS), the positions whose host has t vCPUs free; and for
 *    each "large" anti-affinity group (one that guests and residents name
 *    at least PLACE_GROUP_BITS_MIN or positions/64 times), the positions
 *    whose host has it.  A sinking host rotates its stretch of every bitset
 *    by one bit, word by word.
 *
 * A guest's candidates are the top of its class down to the first host that
 * lacks its memory (binary search): the first position there set for its
 * vCPUs and clear for its large group is the destination, unless it is the
 * source or holds a small group (named fewer times than a large one, so on
 * fewer hosts: those are passed one by one).  The hosts passed over, for the
 * reason, follow from the positions.  A blocked guest's reason counts the
 * hosts with room by population count, finds the one with the most vCPUs
 * free from the highest vCPU bitset set in range, and takes a class's
 * draining/maintenance/unhealthy counts from per-class totals.  So a guest
 * costs O(P/64 x (1 + v) + log P + d x (V + B)/64), P the receiving hosts,
 * v its vCPUs up to 64 (a blocked one's reason), d the distance its
 * destination sinks, V + B the bitsets; setup O(H log H + G + R + P x V/64),
 * the guests put in order by a radix sort.  200,000 guests on 10,000 hosts
 * take about 0.2 s, the worst case (every guest in one of 10 groups) about
 * 0.3 s (docs/performance.md).  Still slow: many large groups, or long runs
 * of hosts with the same free memory (large d).
 */
#include "placement.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "text.h"

#define PLACE_DEFAULT_LINK_BYTES_PER_S 125000000ULL /* 1 Gbit/s */
#define PLACE_MAX_ITEMS (1u << 24)                  /* per array: a bound, and int32 ids */
#define PLACE_AA_NAMES 3                            /* hosts named in an anti-affinity reason */
#define PLACE_VCPU_BITS 64                          /* vCPU bitsets: 0 .. this many free */
#define PLACE_GROUP_BITS_MIN 8                      /* a group this large gets a bitset */
#define NO_POS UINT32_MAX

#define TERMINATED(field) (memchr((field), '\0', sizeof(field)) != NULL)

/* String -> id, ids dense from 0; the strings stay the caller's. */
typedef struct StrTable {
        int32_t *slots;     /* id, or -1 when empty; size mask + 1 */
        size_t mask;
        const char **names; /* id -> string */
        size_t n;
} StrTable;

typedef struct GuestKey {
        uint64_t memory_mib;
        uint32_t index;
} GuestKey;

typedef enum PlaceCheck {
        CHECK_OK,
        CHECK_SOURCE,
        CHECK_DRAINING,
        CHECK_MAINTENANCE,
        CHECK_UNHEALTHY,
        CHECK_MODEL,
        CHECK_MEMORY,
        CHECK_VCPUS,
        CHECK_ANTI_AFFINITY,
} PlaceCheck;

#define GUEST_REQ_NONE (-1)
#define GUEST_REQ_UNKNOWN (-2)

typedef struct PlaceCtx {
        const PlaceHost *hosts;
        size_t n_hosts;
        const PlaceGuest *guests;
        size_t n_guests;
        const PlaceResident *residents;
        size_t n_residents;
        uint64_t default_link;

        StrTable host_names;   /* host name -> host index */
        StrTable models;       /* CPU model -> class */
        StrTable groups;       /* anti-affinity group (of a guest) -> group id */
        uint64_t *pairs;       /* ((group << 32) | host) + 1; 0 = empty */
        size_t pair_mask;

        int32_t *host_class;   /* host -> class */
        int32_t *pos;          /* host -> index in ranked, -1 = cannot receive */
        uint64_t *free_mem;    /* host -> MiB free now (this plan included) */
        uint32_t *free_vcpus;  /* host -> vCPUs free now */
        int32_t *ranked;       /* receiving hosts, by class, best first */
        uint32_t *class_start; /* class -> first index in ranked */
        uint32_t *class_len;   /* class -> receiving hosts of that model */

        int32_t *guest_src;    /* guest -> source host */
        int32_t *guest_req;    /* guest -> requested host or GUEST_REQ_* */
        int32_t *guest_class;  /* guest -> class, -1 = no host has its model */
        int32_t *guest_group;  /* guest -> group id, -1 = none */
        GuestKey *order;       /* guests in placement order */
        GuestKey *order_tmp;   /* for sorting them */

        uint32_t *group_refs;  /* group -> guests and residents naming it */
        int32_t *group_bits;   /* group -> its bitset among the group ones, -1 = none */
        uint32_t *class_draining, *class_maintenance, *class_unhealthy; /* class -> hosts */

        uint32_t n_ranked;     /* receiving hosts */
        uint32_t vcpu_max;     /* vCPU bitsets 0 .. vcpu_max */
        size_t n_words;        /* per bitset */
        size_t n_bitsets;      /* vcpu_max + 1, then one per large group */
        uint64_t *bits;        /* n_bitsets x n_words (second buffer) */
} PlaceCtx;

/* ---- small helpers ------------------------------------------------------ */

static uint64_t hash_str(const char *s) {
        uint64_t h = 14695981039346656037ULL;
        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= 1099511628211ULL;
        }
        return h;
}

static uint64_t hash_u64(uint64_t x) {
        x ^= x >> 33;
        x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33;
        x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33;
        return x;
}

/* A power of two >= 2 * @n: tables stay at most half full. */
static size_t table_size(size_t n) {
        size_t s = 2;
        while (s < 2 * n)
                s <<= 1;
        return s;
}

static int32_t strtab_find(const StrTable *t, const char *key) {
        for (size_t i = hash_str(key) & t->mask;; i = (i + 1) & t->mask) {
                int32_t id = t->slots[i];
                if (id < 0 || strcmp(t->names[id], key) == 0)
                        return id;
        }
}

/* The id of @key, added when new.  The table was sized for every key. */
static int32_t strtab_intern(StrTable *t, const char *key, bool *ret_added) {
        size_t i = hash_str(key) & t->mask;
        for (;; i = (i + 1) & t->mask) {
                int32_t id = t->slots[i];
                if (id < 0)
                        break;
                if (strcmp(t->names[id], key) == 0) {
                        if (ret_added)
                                *ret_added = false;
                        return id;
                }
        }
        assert(t->n < t->mask);
        t->names[t->n] = key;
        t->slots[i] = (int32_t) t->n;
        if (ret_added)
                *ret_added = true;
        return (int32_t) t->n++;
}

static uint64_t pair_key(int32_t group, int32_t host) {
        return (((uint64_t) (uint32_t) group << 32) | (uint32_t) host) + 1;
}

static bool pairs_has(const PlaceCtx *c, int32_t group, int32_t host) {
        uint64_t k = pair_key(group, host);
        for (size_t i = hash_u64(k) & c->pair_mask;; i = (i + 1) & c->pair_mask) {
                if (c->pairs[i] == k)
                        return true;
                if (c->pairs[i] == 0)
                        return false;
        }
}

static void pairs_add(PlaceCtx *c, int32_t group, int32_t host) {
        uint64_t k = pair_key(group, host);
        for (size_t i = hash_u64(k) & c->pair_mask;; i = (i + 1) & c->pair_mask) {
                if (c->pairs[i] == k)
                        return;
                if (c->pairs[i] == 0) {
                        c->pairs[i] = k;
                        return;
                }
        }
}

/* Append to a reason, cut with "…" at its size (text_append()). */
static _printf_(3, 4) void reason_add(char *buf, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        (void) text_vappend(buf, size, strnlen(buf, size), fmt, ap);
        va_end(ap);
}

#define REASON_ADD(res, ...) reason_add((res)->reason, sizeof((res)->reason), __VA_ARGS__)

/* A CPU model as shown in a reason: an empty one would vanish. */
static const char *model_str(const char *model) {
        return model[0] ? model : "\"\"";
}

/* In-place heapsort by a strict total order: qsort() may allocate, and this
 * file allocates one buffer only. */
typedef bool (*SortBefore)(const void *a, const void *b, const void *userdata);

static void swap_elems(char *a, char *b, size_t size) {
        char tmp[16];
        assert(size <= sizeof(tmp));
        memcpy(tmp, a, size);
        memcpy(a, b, size);
        memcpy(b, tmp, size);
}

/* Restore the heap below @root: a parent never sorts before its children. */
static void sift_down(char *base, size_t size, size_t root, size_t n, SortBefore before, const void *userdata) {
        for (;;) {
                size_t child = 2 * root + 1;
                if (child >= n)
                        return;
                if (child + 1 < n && before(base + child * size, base + (child + 1) * size, userdata))
                        child++;
                if (!before(base + root * size, base + child * size, userdata))
                        return;
                swap_elems(base + root * size, base + child * size, size);
                root = child;
        }
}

static void heap_sort(void *base, size_t n, size_t size, SortBefore before, const void *userdata) {
        char *b = base;
        for (size_t i = n / 2; i-- > 0;)
                sift_down(b, size, i, n, before, userdata);
        for (size_t end = n; end-- > 1;) {
                swap_elems(b, b + end * size, size);
                sift_down(b, size, 0, end, before, userdata);
        }
}

/* ---- scratch layout ----------------------------------------------------- */

static void *carve(char *base, size_t *off, size_t size) {
        void *p = base ? base + *off : NULL;
        *off += (size + 7) & ~(size_t) 7;
        return p;
}

/* Lay the context's arrays out in @base (NULL: only measure); returns the size. */
static size_t ctx_layout(PlaceCtx *c, char *base) {
        size_t off = 0, nh = c->n_hosts, ng = c->n_guests;
        size_t host_slots = table_size(nh), group_slots = table_size(ng);
        size_t pair_slots = table_size(c->n_residents + ng);

        c->pairs = carve(base, &off, pair_slots * sizeof(uint64_t));
        c->pair_mask = pair_slots - 1;
        c->free_mem = carve(base, &off, nh * sizeof(uint64_t));
        c->order = carve(base, &off, ng * sizeof(GuestKey));
        c->order_tmp = carve(base, &off, ng * sizeof(GuestKey));
        c->host_names = (StrTable) { .slots = carve(base, &off, host_slots * sizeof(int32_t)),
                                     .mask = host_slots - 1,
                                     .names = carve(base, &off, nh * sizeof(char *)) };
        c->models = (StrTable) { .slots = carve(base, &off, host_slots * sizeof(int32_t)),
                                 .mask = host_slots - 1,
                                 .names = carve(base, &off, nh * sizeof(char *)) };
        c->groups = (StrTable) { .slots = carve(base, &off, group_slots * sizeof(int32_t)),
                                 .mask = group_slots - 1,
                                 .names = carve(base, &off, ng * sizeof(char *)) };
        c->host_class = carve(base, &off, nh * sizeof(int32_t));
        c->pos = carve(base, &off, nh * sizeof(int32_t));
        c->free_vcpus = carve(base, &off, nh * sizeof(uint32_t));
        c->ranked = carve(base, &off, nh * sizeof(int32_t));
        c->class_start = carve(base, &off, nh * sizeof(uint32_t));
        c->class_len = carve(base, &off, nh * sizeof(uint32_t));
        c->guest_src = carve(base, &off, ng * sizeof(int32_t));
        c->guest_req = carve(base, &off, ng * sizeof(int32_t));
        c->guest_class = carve(base, &off, ng * sizeof(int32_t));
        c->guest_group = carve(base, &off, ng * sizeof(int32_t));
        c->group_refs = carve(base, &off, ng * sizeof(uint32_t));
        c->group_bits = carve(base, &off, ng * sizeof(int32_t));
        c->class_draining = carve(base, &off, nh * sizeof(uint32_t));
        c->class_maintenance = carve(base, &off, nh * sizeof(uint32_t));
        c->class_unhealthy = carve(base, &off, nh * sizeof(uint32_t));
        if (base) {
                memset(c->group_refs, 0, ng * sizeof(uint32_t));
                memset(c->pairs, 0, pair_slots * sizeof(uint64_t));
                memset(c->host_names.slots, 0xff, host_slots * sizeof(int32_t));
                memset(c->models.slots, 0xff, host_slots * sizeof(int32_t));
                memset(c->groups.slots, 0xff, group_slots * sizeof(int32_t));
        }
        return off;
}

/* ---- input -------------------------------------------------------------- */

static int check_arrays(const PlaceHost *hosts, size_t n_hosts, const PlaceGuest *guests, size_t n_guests,
                        const PlaceResident *residents, size_t n_residents, const PlaceResult *results) {
        if (n_hosts && !hosts)
                return err_set(-EINVAL, "placement: %zu hosts but no host array", n_hosts);
        if (n_guests && !guests)
                return err_set(-EINVAL, "placement: %zu guests but no guest array", n_guests);
        if (n_residents && !residents)
                return err_set(-EINVAL, "placement: %zu residents but no resident array", n_residents);
        if (n_guests && !results)
                return err_set(-EINVAL, "placement: %zu guests but no result array", n_guests);
        if (n_hosts > PLACE_MAX_ITEMS || n_guests > PLACE_MAX_ITEMS || n_residents > PLACE_MAX_ITEMS)
                return err_set(-EINVAL, "placement: %zu hosts, %zu guests, %zu residents: at most %u each",
                               n_hosts, n_guests, n_residents, PLACE_MAX_ITEMS);
        for (size_t i = 0; i < n_hosts; i++) {
                const PlaceHost *h = &hosts[i];
                if (!TERMINATED(h->name) || !TERMINATED(h->cpu_model))
                        return err_set(-EINVAL, "placement: host %zu: a string is not NUL-terminated", i);
                if (!h->name[0])
                        return err_set(-EINVAL, "placement: host %zu has an empty name", i);
                if ((unsigned) h->state > PLACE_HOST_MAINTENANCE)
                        return err_set(-EINVAL, "placement: host %s: state %d unknown", h->name, (int) h->state);
        }
        for (size_t i = 0; i < n_guests; i++) {
                const PlaceGuest *g = &guests[i];
                if (!TERMINATED(g->name) || !TERMINATED(g->source) || !TERMINATED(g->requested) ||
                    !TERMINATED(g->cpu_model) || !TERMINATED(g->anti_affinity))
                        return err_set(-EINVAL, "placement: guest %zu: a string is not NUL-terminated", i);
        }
        for (size_t i = 0; i < n_residents; i++)
                if (!TERMINATED(residents[i].host) || !TERMINATED(residents[i].anti_affinity))
                        return err_set(-EINVAL, "placement: resident %zu: a string is not NUL-terminated", i);
        return 0;
}

static int index_hosts(PlaceCtx *c) {
        for (size_t h = 0; h < c->n_hosts; h++) {
                const PlaceHost *host = &c->hosts[h];
                bool added;
                strtab_intern(&c->host_names, host->name, &added);
                if (!added)
                        return err_set(-EINVAL, "placement: duplicate host name %s", host->name);
                c->host_class[h] = strtab_intern(&c->models, host->cpu_model, NULL);
                c->free_mem[h] = host->memory_mib > host->memory_used_mib ? host->memory_mib - host->memory_used_mib
                                                                          : 0;
                c->free_vcpus[h] = host->vcpus > host->vcpus_used ? host->vcpus - host->vcpus_used : 0;
        }
        return 0;
}

static int index_guests(PlaceCtx *c) {
        for (size_t i = 0; i < c->n_guests; i++) {
                const PlaceGuest *g = &c->guests[i];
                c->guest_src[i] = strtab_find(&c->host_names, g->source);
                if (c->guest_src[i] < 0)
                        return err_set(-EINVAL, "placement: guest %s: source host %s unknown", g->name,
                                       g->source[0] ? g->source : "(none)");
                if (!g->requested[0])
                        c->guest_req[i] = GUEST_REQ_NONE;
                else {
                        int32_t r = strtab_find(&c->host_names, g->requested);
                        c->guest_req[i] = r >= 0 ? r : GUEST_REQ_UNKNOWN;
                }
                c->guest_class[i] = strtab_find(&c->models, g->cpu_model);
                c->guest_group[i] = g->anti_affinity[0] ? strtab_intern(&c->groups, g->anti_affinity, NULL) : -1;
                if (c->guest_group[i] >= 0)
                        c->group_refs[c->guest_group[i]]++;
                c->vcpu_max = MAX(c->vcpu_max, MIN(g->vcpus, (uint32_t) PLACE_VCPU_BITS));
                c->order[i] = (GuestKey) { .memory_mib = g->memory_mib, .index = (uint32_t) i };
        }
        return 0;
}

/* Residents count for the groups some guest of the plan has; one on a host
 * we do not know cannot share a destination with a guest, so it is left out. */
static void index_residents(PlaceCtx *c) {
        for (size_t i = 0; i < c->n_residents; i++) {
                const PlaceResident *r = &c->residents[i];
                if (!r->anti_affinity[0])
                        continue;
                int32_t group = strtab_find(&c->groups, r->anti_affinity);
                int32_t host = group >= 0 ? strtab_find(&c->host_names, r->host) : -1;
                if (host >= 0) {
                        pairs_add(c, group, host);
                        c->group_refs[group]++;
                }
        }
}

/* ---- rankings ----------------------------------------------------------- */

/* Does @a rank before @b: more free memory, then the smaller name. */
static bool host_better(const PlaceCtx *c, int32_t a, int32_t b) {
        if (c->free_mem[a] != c->free_mem[b])
                return c->free_mem[a] > c->free_mem[b];
        return strcmp(c->hosts[a].name, c->hosts[b].name) < 0;
}

static bool rank_before(const void *x, const void *y, const void *userdata) {
        return host_better(userdata, *(const int32_t *) x, *(const int32_t *) y);
}

static bool host_receives(const PlaceHost *h) {
        return h->state == PLACE_HOST_ENABLED && h->healthy;
}

static void build_rankings(PlaceCtx *c) {
        size_t n_classes = c->models.n;

        memset(c->class_len, 0, n_classes * sizeof(uint32_t));
        memset(c->class_draining, 0, n_classes * sizeof(uint32_t));
        memset(c->class_maintenance, 0, n_classes * sizeof(uint32_t));
        memset(c->class_unhealthy, 0, n_classes * sizeof(uint32_t));
        for (size_t h = 0; h < c->n_hosts; h++) {
                const PlaceHost *host = &c->hosts[h];
                int32_t k = c->host_class[h];
                if (host->state == PLACE_HOST_DRAINING)
                        c->class_draining[k]++;
                else if (host->state == PLACE_HOST_MAINTENANCE)
                        c->class_maintenance[k]++;
                else if (!host->healthy)
                        c->class_unhealthy[k]++;
                else
                        c->class_len[k]++;
        }
        uint32_t start = 0;
        for (size_t k = 0; k < n_classes; k++) {
                c->class_start[k] = start;
                start += c->class_len[k];
                c->class_len[k] = 0;
        }
        for (size_t h = 0; h < c->n_hosts; h++) {
                if (!host_receives(&c->hosts[h])) {
                        c->pos[h] = -1;
                        continue;
                }
                int32_t k = c->host_class[h];
                c->ranked[c->class_start[k] + c->class_len[k]++] = (int32_t) h;
        }
        for (size_t k = 0; k < n_classes; k++)
                heap_sort(c->ranked + c->class_start[k], c->class_len[k], sizeof(int32_t), rank_before, c);
        for (uint32_t i = 0; i < start; i++)
                c->pos[c->ranked[i]] = (int32_t) i;
        c->n_ranked = start;
}

/* ---- bitsets over the ranked positions ---------------------------------- */

static uint64_t *bitset(const PlaceCtx *c, size_t b) {
        return c->bits + b * c->n_words;
}

static bool bit_get(const uint64_t *w, uint32_t i) {
        return (w[i / 64] >> (i % 64)) & 1;
}

static void bit_assign(uint64_t *w, uint32_t i, bool on) {
        if (on)
                w[i / 64] |= 1ULL << (i % 64);
        else
                w[i / 64] &= ~(1ULL << (i % 64));
}

/* Bits @p+1 .. @q move down by one, bit @p goes to @q (the host at @p sank
 * to @q).  Words are done in increasing order, so the next one is still old. */
static void bits_rotate(uint64_t *w, size_t n_words, uint32_t p, uint32_t q) {
        bool first = bit_get(w, p);
        for (size_t k = p / 64; k <= q / 64; k++) {
                unsigned lo = k == p / 64 ? p % 64 : 0, hi = k == q / 64 ? q % 64 : 63;
                uint64_t mask = (~0ULL << lo) & (~0ULL >> (63 - hi));
                uint64_t moved = (w[k] >> 1) | (k + 1 < n_words ? w[k + 1] << 63 : 0);
                w[k] = (w[k] & ~mask) | (moved & mask);
        }
        bit_assign(w, q, first);
}

/* The first position in [@from, @to) set in @w and clear in @clear (NULL:
 * none), or @to. */
static uint32_t bits_next(const uint64_t *w, const uint64_t *clear, uint32_t from, uint32_t to) {
        for (uint32_t k = from / 64; from < to && (size_t) k * 64 < to; k++) {
                uint64_t x = w[k] & (clear ? ~clear[k] : ~0ULL);
                if (k == from / 64)
                        x &= ~0ULL << (from % 64);
                if (x) {
                        uint32_t i = k * 64 + (uint32_t) __builtin_ctzll(x);
                        return MIN(i, to);
                }
        }
        return to;
}

/* Without -mpopcnt, __builtin_popcountll() is a call into libgcc. */
static uint32_t popcount64(uint64_t x) {
        x -= (x >> 1) & 0x5555555555555555ULL;
        x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
        x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
        return (uint32_t) ((x * 0x0101010101010101ULL) >> 56);
}

/* The positions in [@from, @to) set in @w. */
static uint32_t bits_count(const uint64_t *w, uint32_t from, uint32_t to) {
        uint32_t n = 0;
        for (uint32_t k = from / 64; from < to && (size_t) k * 64 < to; k++) {
                uint64_t x = w[k];
                if (k == from / 64)
                        x &= ~0ULL << (from % 64);
                if ((size_t) k * 64 + 64 > to)
                        x &= ~0ULL >> (64 - to % 64);
                n += popcount64(x);
        }
        return n;
}

/* Large groups: named by guests and residents at least this often.  A
 * bitset costs P/8 bytes, about what that many (group, host) pairs do. */
static uint32_t group_bits_min(const PlaceCtx *c) {
        return MAX((uint32_t) PLACE_GROUP_BITS_MIN, c->n_ranked / 64);
}

/* Give the large groups their bitsets; returns how many bitsets in all. */
static size_t count_bitsets(PlaceCtx *c) {
        size_t n = c->vcpu_max + 1;
        for (size_t g = 0; g < c->groups.n; g++)
                c->group_bits[g] = c->group_refs[g] >= group_bits_min(c) ? (int32_t) n++ : -1;
        c->n_words = (c->n_ranked + 63) / 64;
        c->n_bitsets = n;
        return n;
}

/* The vCPU bits of host @h at its position, from its vCPUs free. */
static void bits_set_vcpus(PlaceCtx *c, int32_t h) {
        for (uint32_t t = 0; t <= c->vcpu_max; t++)
                bit_assign(bitset(c, t), (uint32_t) c->pos[h], c->free_vcpus[h] >= t);
}

/* Receiving host @h has @group: its bit, when the group has a bitset. */
static void bits_set_group(PlaceCtx *c, int32_t group, int32_t h) {
        if (c->group_bits[group] >= 0)
                bit_assign(bitset(c, (size_t) c->group_bits[group]), (uint32_t) c->pos[h], true);
}

static void build_bitsets(PlaceCtx *c) {
        memset(c->bits, 0, c->n_bitsets * c->n_words * sizeof(uint64_t));
        for (uint32_t i = 0; i < c->n_ranked; i++)
                bits_set_vcpus(c, c->ranked[i]);
        for (size_t i = 0; i <= c->pair_mask; i++) {
                if (!c->pairs[i])
                        continue;
                int32_t group = (int32_t) ((c->pairs[i] - 1) >> 32), host = (int32_t) ((c->pairs[i] - 1) & 0xffffffffu);
                if (c->pos[host] >= 0)
                        bits_set_group(c, group, host);
        }
}

/* @h lost free memory: move it down its class to where it now ranks. */
static void rank_sink(PlaceCtx *c, int32_t h) {
        int32_t k = c->host_class[h];
        uint32_t p = (uint32_t) c->pos[h], end = c->class_start[k] + c->class_len[k];
        uint32_t lo = p + 1, hi = end; /* first index that @h ranks before */

        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (host_better(c, h, c->ranked[mid]))
                        hi = mid;
                else
                        lo = mid + 1;
        }
        uint32_t q = lo - 1; /* the new place of @h */
        if (q == p)
                return;
        memmove(c->ranked + p, c->ranked + p + 1, (q - p) * sizeof(int32_t));
        c->ranked[q] = h;
        for (uint32_t i = p; i <= q; i++)
                c->pos[c->ranked[i]] = (int32_t) i;
        for (size_t b = 0; b < c->n_bitsets; b++)
                bits_rotate(bitset(c, b), c->n_words, p, q);
}

/* The first position of class @k whose host has less than @memory_mib free
 * (the class is sorted by free memory), or the end of the class. */
static uint32_t class_cut(const PlaceCtx *c, int32_t k, uint64_t memory_mib) {
        uint32_t lo = c->class_start[k], hi = lo + c->class_len[k];
        while (lo < hi) {
                uint32_t mid = lo + (hi - lo) / 2;
                if (c->free_mem[c->ranked[mid]] < memory_mib)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        return lo;
}

/* The position of @h if it is in class @k, else NO_POS. */
static uint32_t class_pos(const PlaceCtx *c, int32_t k, int32_t h) {
        return c->pos[h] >= 0 && c->host_class[h] == k ? (uint32_t) c->pos[h] : NO_POS;
}

/* The first position in [@from, @to) set in bitset @b other than @skip. */
static uint32_t next_but(const PlaceCtx *c, size_t b, uint32_t from, uint32_t to, uint32_t skip) {
        uint32_t i = bits_next(bitset(c, b), NULL, from, to);
        return i == skip ? bits_next(bitset(c, b), NULL, i + 1, to) : i;
}

/* Placement order: largest memory first, equal ones in input order.  A
 * stable radix sort of the memory sizes, a byte at a time from the lowest,
 * so the input order (of the indexes) survives among equals; bytes all the
 * guests share are skipped. */
static void sort_guests(PlaceCtx *c) {
        GuestKey *from = c->order, *to = c->order_tmp;
        uint64_t all_or = 0, all_and = ~0ULL;

        for (size_t i = 0; i < c->n_guests; i++) {
                all_or |= ~c->order[i].memory_mib;
                all_and &= ~c->order[i].memory_mib;
        }
        for (unsigned shift = 0; shift < 64; shift += 8) {
                size_t count[257] = { 0 };
                if ((((all_or ^ all_and) >> shift) & 0xff) == 0)
                        continue; /* every guest has this byte */
                for (size_t i = 0; i < c->n_guests; i++)
                        count[((~from[i].memory_mib >> shift) & 0xff) + 1]++;
                for (size_t d = 1; d < 257; d++)
                        count[d] += count[d - 1];
                for (size_t i = 0; i < c->n_guests; i++)
                        to[count[(~from[i].memory_mib >> shift) & 0xff]++] = from[i];
                GuestKey *t = from;
                from = to;
                to = t;
        }
        if (from != c->order)
                memcpy(c->order, from, c->n_guests * sizeof(GuestKey));
}

/* ---- one guest ---------------------------------------------------------- */

/* The first rule @h breaks for guest @gi, in the order a reason names them. */
static PlaceCheck host_check(const PlaceCtx *c, size_t gi, int32_t h) {
        const PlaceGuest *g = &c->guests[gi];
        const PlaceHost *host = &c->hosts[h];

        if (h == c->guest_src[gi])
                return CHECK_SOURCE;
        if (host->state == PLACE_HOST_DRAINING)
                return CHECK_DRAINING;
        if (host->state == PLACE_HOST_MAINTENANCE)
                return CHECK_MAINTENANCE;
        if (!host->healthy)
                return CHECK_UNHEALTHY;
        if (c->host_class[h] != c->guest_class[gi])
                return CHECK_MODEL;
        if (c->free_mem[h] < g->memory_mib)
                return CHECK_MEMORY;
        if (c->free_vcpus[h] < g->vcpus)
                return CHECK_VCPUS;
        if (c->guest_group[gi] >= 0 && pairs_has(c, c->guest_group[gi], h))
                return CHECK_ANTI_AFFINITY;
        return CHECK_OK;
}

/* The requested destination of @gi if it passes every check, else -1 with
 * the failed check in @res. */
static int32_t choose_requested(const PlaceCtx *c, size_t gi, PlaceResult *res) {
        const PlaceGuest *g = &c->guests[gi];
        int32_t h = c->guest_req[gi];

        if (h == GUEST_REQ_UNKNOWN) {
                REASON_ADD(res, "requested destination %s unknown", g->requested);
                return -1;
        }
        const PlaceHost *host = &c->hosts[h];
        switch (host_check(c, gi, h)) {
        case CHECK_OK:
                return h;
        case CHECK_SOURCE:
                REASON_ADD(res, "requested destination %s is the source", host->name);
                break;
        case CHECK_DRAINING:
                REASON_ADD(res, "requested destination %s is draining", host->name);
                break;
        case CHECK_MAINTENANCE:
                REASON_ADD(res, "requested destination %s is in maintenance", host->name);
                break;
        case CHECK_UNHEALTHY:
                REASON_ADD(res, "requested destination %s is unhealthy", host->name);
                break;
        case CHECK_MODEL:
                REASON_ADD(res, "requested destination %s has CPU model %s, the guest needs %s", host->name,
                           model_str(host->cpu_model), model_str(g->cpu_model));
                break;
        case CHECK_MEMORY:
                REASON_ADD(res, "requested destination %s has %" PRIu64 " MiB free, the guest needs %" PRIu64 " MiB",
                           host->name, c->free_mem[h], g->memory_mib);
                break;
        case CHECK_VCPUS:
                REASON_ADD(res, "requested destination %s has %" PRIu32 " vCPUs free, the guest needs %" PRIu32,
                           host->name, c->free_vcpus[h], g->vcpus);
                break;
        case CHECK_ANTI_AFFINITY:
                REASON_ADD(res, "requested destination %s already has anti-affinity group %s", host->name,
                           g->anti_affinity);
                break;
        }
        return -1;
}

/* The valid host with the most free memory for @gi, or -1.  Hosts with more
 * free memory that were passed over: the first in @ret_skipped (or -1), how
 * many in @ret_n_skipped. */
static int32_t choose_best(const PlaceCtx *c, size_t gi, int32_t *ret_skipped, size_t *ret_n_skipped) {
        const PlaceGuest *g = &c->guests[gi];
        int32_t k = c->guest_class[gi], src = c->guest_src[gi], group = c->guest_group[gi];
        const uint64_t *clear = group >= 0 && c->group_bits[group] >= 0 ? bitset(c, (size_t) c->group_bits[group])
                                                                         : NULL;

        *ret_skipped = -1;
        *ret_n_skipped = 0;
        if (k < 0)
                return -1;
        /* candidates: [start, cut), every host with the memory */
        uint32_t start = c->class_start[k], cut = class_cut(c, k, g->memory_mib), sp = class_pos(c, k, src);
        const uint64_t *vcpus = bitset(c, MIN(g->vcpus, c->vcpu_max));
        for (uint32_t i = start;; i++) {
                i = bits_next(vcpus, clear, i, cut);
                if (i >= cut)
                        return -1;
                int32_t h = c->ranked[i];
                if (i == sp || c->free_vcpus[h] < g->vcpus || (group >= 0 && !clear && pairs_has(c, group, h)))
                        continue;
                /* every host above has more memory: passed over, but for the source */
                uint32_t first = start == sp ? start + 1 : start;
                if (first < i) {
                        *ret_skipped = c->ranked[first];
                        *ret_n_skipped = i - start - (sp < i ? 1 : 0);
                }
                return h;
        }
}

/* Why no host of its class takes @gi, when none is enabled and healthy. */
static void explain_no_class(const PlaceCtx *c, size_t gi, PlaceResult *res) {
        const PlaceGuest *g = &c->guests[gi];
        size_t draining = 0, maintenance = 0, unhealthy = 0;

        if (c->guest_class[gi] < 0) {
                REASON_ADD(res, "no host has CPU model %s", model_str(g->cpu_model));
                return;
        }
        /* the class's hosts that cannot receive, but for the source */
        int32_t k = c->guest_class[gi], src = c->guest_src[gi];
        draining = c->class_draining[k];
        maintenance = c->class_maintenance[k];
        unhealthy = c->class_unhealthy[k];
        if (c->host_class[src] == k) {
                if (c->hosts[src].state == PLACE_HOST_DRAINING)
                        draining--;
                else if (c->hosts[src].state == PLACE_HOST_MAINTENANCE)
                        maintenance--;
                else if (!c->hosts[src].healthy)
                        unhealthy--;
        }
        if (draining + maintenance + unhealthy == 0) {
                REASON_ADD(res, "no host other than the source has CPU model %s", model_str(g->cpu_model));
                return;
        }
        REASON_ADD(res, "no enabled healthy host with CPU model %s:", model_str(g->cpu_model));
        const char *sep = " ";
        if (draining) {
                REASON_ADD(res, "%s%zu draining", sep, draining);
                sep = ", ";
        }
        if (maintenance) {
                REASON_ADD(res, "%s%zu in maintenance", sep, maintenance);
                sep = ", ";
        }
        if (unhealthy)
                REASON_ADD(res, "%s%zu unhealthy", sep, unhealthy);
}

/* The hosts in [@start, @cut) but @sp with the vCPUs @gi needs (all of them
 * hold its group, or it would have been placed): how many, the first few in
 * @aa. */
static size_t explain_room(const PlaceCtx *c, size_t gi, uint32_t start, uint32_t cut, uint32_t sp,
                           int32_t aa[PLACE_AA_NAMES]) {
        uint32_t v = c->guests[gi].vcpus, b = MIN(v, c->vcpu_max);
        bool exact = v <= c->vcpu_max; /* bitset b is exactly "v vCPUs free" */
        size_t n = 0;

        for (uint32_t i = start;; i++) {
                i = next_but(c, b, i, cut, sp);
                if (i >= cut || (exact && n == PLACE_AA_NAMES))
                        break;
                if (c->free_vcpus[c->ranked[i]] < v)
                        continue;
                if (n < PLACE_AA_NAMES)
                        aa[n] = c->ranked[i];
                n++;
        }
        if (exact && n == PLACE_AA_NAMES)
                n = bits_count(bitset(c, b), start, cut) - (sp < cut && bit_get(bitset(c, b), sp) ? 1 : 0);
        return n;
}

/* The first host in [@start, @cut) but @sp with the most vCPUs free, or -1;
 * none of them has @vcpus free. */
static int32_t explain_most_vcpus(const PlaceCtx *c, uint32_t vcpus, uint32_t start, uint32_t cut, uint32_t sp) {
        if (vcpus == 0)
                return -1; /* every host has 0 free: there is none */
        for (uint32_t t = MIN(vcpus - 1, c->vcpu_max) + 1; t-- > 0;) {
                uint32_t i = next_but(c, t, start, cut, sp);
                if (i >= cut)
                        continue;
                if (t < c->vcpu_max)
                        return c->ranked[i]; /* none has t + 1 */
                int32_t best = c->ranked[i]; /* t or more: compare them */
                for (i = next_but(c, t, i + 1, cut, sp); i < cut; i = next_but(c, t, i + 1, cut, sp))
                        if (c->free_vcpus[c->ranked[i]] > c->free_vcpus[best])
                                best = c->ranked[i];
                return best;
        }
        return -1;
}

/* Why @gi cannot move anywhere: the check that failed on every host, and
 * the host that came closest. */
static void explain_blocked(const PlaceCtx *c, size_t gi, PlaceResult *res) {
        const PlaceGuest *g = &c->guests[gi];
        int32_t k = c->guest_class[gi];
        int32_t best_mem = -1, best_vcpus = -1, aa[PLACE_AA_NAMES] = { -1, -1, -1 };
        size_t n_room = 0;

        if (k >= 0 && c->class_len[k] > 0) {
                uint32_t start = c->class_start[k], end = start + c->class_len[k];
                uint32_t cut = class_cut(c, k, g->memory_mib), sp = class_pos(c, k, c->guest_src[gi]);
                uint32_t first = start == sp ? start + 1 : start;
                if (first < end)
                        best_mem = c->ranked[first];
                n_room = explain_room(c, gi, start, cut, sp, aa);
                if (n_room == 0)
                        best_vcpus = explain_most_vcpus(c, g->vcpus, start, cut, sp);
        }

        if (best_mem < 0)
                explain_no_class(c, gi, res);
        else if (n_room > 0) {
                REASON_ADD(res, "anti-affinity group %s already on %s", g->anti_affinity, c->hosts[aa[0]].name);
                for (size_t i = 1; i < n_room && i < PLACE_AA_NAMES; i++)
                        REASON_ADD(res, "%s%s", i + 1 == n_room ? " and " : ", ", c->hosts[aa[i]].name);
                if (n_room > PLACE_AA_NAMES)
                        REASON_ADD(res, " and %zu more", n_room - PLACE_AA_NAMES);
                REASON_ADD(res, n_room == 1 ? ", the only host with room" : ", all the hosts with room");
        } else if (best_vcpus >= 0)
                REASON_ADD(res,
                           "no enabled healthy host with %" PRIu32 " vCPUs and %" PRIu64
                           " MiB free and CPU model %s (best: %s, %" PRIu32 " vCPUs free)",
                           g->vcpus, g->memory_mib, model_str(g->cpu_model), c->hosts[best_vcpus].name,
                           c->free_vcpus[best_vcpus]);
        else
                REASON_ADD(res,
                           "no enabled healthy host with %" PRIu64 " MiB free and CPU model %s (best: %s, %" PRIu64
                           " MiB free)",
                           g->memory_mib, model_str(g->cpu_model), c->hosts[best_mem].name, c->free_mem[best_mem]);
}

static uint64_t host_link(const PlaceCtx *c, int32_t h) {
        return c->hosts[h].link_bytes_per_s ? c->hosts[h].link_bytes_per_s : c->default_link;
}

/* Place guest @gi; returns 1 when placed, 0 when blocked (reason in @res). */
static int place_one(PlaceCtx *c, size_t gi, PlaceResult *res) {
        const PlaceGuest *g = &c->guests[gi];
        int32_t h, skipped = -1, src = c->guest_src[gi];
        size_t n_skipped = 0;

        memset(res, 0, sizeof(*res));
        res->host = -1;
        if (c->guest_req[gi] != GUEST_REQ_NONE)
                h = choose_requested(c, gi, res);
        else
                h = choose_best(c, gi, &skipped, &n_skipped);
        if (h < 0) {
                if (!res->reason[0])
                        explain_blocked(c, gi, res);
                return 0;
        }

        assert(c->pos[h] >= 0);
        c->free_mem[h] -= g->memory_mib;
        c->free_vcpus[h] -= g->vcpus;
        rank_sink(c, h);
        bits_set_vcpus(c, h);
        if (c->guest_group[gi] >= 0) {
                pairs_add(c, c->guest_group[gi], h);
                bits_set_group(c, c->guest_group[gi], h);
        }

        res->host = h;
        res->estimated_s = place_estimate_disk_s(g->memory_mib, g->disk_bytes, g->dirty_bytes_per_s,
                                                 MIN(host_link(c, src), host_link(c, h)));
        if (c->guest_req[gi] != GUEST_REQ_NONE) {
                REASON_ADD(res, "requested destination; %" PRIu64 " MiB and %" PRIu32 " vCPUs free after the move",
                           c->free_mem[h], c->free_vcpus[h]);
                return 1;
        }
        REASON_ADD(res, "most free memory after the move (%" PRIu64 " MiB) among hosts with CPU model %s",
                   c->free_mem[h], model_str(g->cpu_model));
        if (skipped >= 0) {
                if (c->free_vcpus[skipped] < g->vcpus)
                        REASON_ADD(res, "; passed over %s (%" PRIu32 " vCPUs free)", c->hosts[skipped].name,
                                   c->free_vcpus[skipped]);
                else
                        REASON_ADD(res, "; passed over %s (anti-affinity group %s)", c->hosts[skipped].name,
                                   g->anti_affinity);
                if (n_skipped > 1)
                        REASON_ADD(res, " and %zu more", n_skipped - 1);
        }
        return 1;
}

/* ---- API ---------------------------------------------------------------- */

int place_guests(const PlaceHost *hosts, size_t n_hosts, const PlaceGuest *guests, size_t n_guests,
                 const PlaceResident *residents, size_t n_residents, const PlaceOptions *opts,
                 PlaceResult *results) {
        PlaceCtx c = {
                .hosts = hosts,
                .n_hosts = n_hosts,
                .guests = guests,
                .n_guests = n_guests,
                .residents = residents,
                .n_residents = n_residents,
                .default_link = opts && opts->default_link_bytes_per_s ? opts->default_link_bytes_per_s
                                                                       : PLACE_DEFAULT_LINK_BYTES_PER_S,
        };
        _cleanup_free_ char *scratch = NULL;
        _cleanup_free_ uint64_t *bits = NULL;
        int r;

        r = check_arrays(hosts, n_hosts, guests, n_guests, residents, n_residents, results);
        if (r < 0)
                return r;
        scratch = malloc(ctx_layout(&c, NULL));
        if (!scratch)
                return err_set(-ENOMEM, "placement: no memory for %zu hosts and %zu guests", n_hosts, n_guests);
        ctx_layout(&c, scratch);

        r = index_hosts(&c);
        if (r < 0)
                return r;
        r = index_guests(&c);
        if (r < 0)
                return r;
        index_residents(&c);
        build_rankings(&c);
        size_t n_bits = count_bitsets(&c) * MAX(c.n_words, (size_t) 1);
        bits = malloc(n_bits * sizeof(uint64_t));
        if (!bits)
                return err_set(-ENOMEM, "placement: no memory for %zu bitsets of %u hosts", c.n_bitsets, c.n_ranked);
        c.bits = bits;
        build_bitsets(&c);
        sort_guests(&c);

        int placed = 0;
        for (size_t i = 0; i < n_guests; i++) {
                size_t gi = c.order[i].index;
                placed += place_one(&c, gi, &results[gi]);
        }
        return placed;
}
