/* How one migration streams, as the coordinator chooses it: the multifd
 * channels and whether to compress them (zstd), from the link the
 * migration gets, the CPUs of both hosts and whether the guest's memory is
 * known to compress.  Pure: no I/O, no clock, no lock; the scheduler calls
 * it when it builds a migration's parameters (docs/migration.md, "Multifd
 * and compression", says where and why).
 *
 * The rule: compression pays only where the link, not the CPU, is the
 * bottleneck.  One core compresses zstd level 1 at about
 * COORD_ZSTD_BYTES_PER_S_PER_CORE of guest memory (measured here: 463 MB/s
 * with `zstd -b1` on one core of this machine's CPU, text and random data
 * mixed; QEMU's multifd adds page bookkeeping, so the constant is lower).
 * The source keeps one core for the guest's vCPUs; the others compress.  So
 * compress when the guest is compressible, post-copy is not allowed
 * (QEMU 7.2 sends post-copy pages outside multifd) and the link is slower
 * than those cores can compress.  Channels follow the link and the smaller
 * host's CPUs (mig_multifd_default_channels()), except that a migration
 * that may go post-copy keeps one stream, as the source agent's own rule
 * does.  Whether memory compresses cannot be told
 * from the dirty rate or from zero pages (QEMU sends zero pages as a flag
 * already, compressed or not): it is a hint about the guest, given by
 * whoever knows its workload.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "migparams.h"

/* zstd level 1 compression of guest memory by one core, bytes/s. */
#define COORD_ZSTD_BYTES_PER_S_PER_CORE UINT64_C(400000000)

typedef struct CoordStreamInput {
        uint64_t link_bytes_per_s; /* this migration's share of the link; 0 = unknown: 1 Gbit/s */
        unsigned source_cpus;      /* 0 = unknown: taken as 1 */
        unsigned dest_cpus;        /* 0 = unknown: taken as the source's */
        bool compressible;         /* the guest's memory is known to compress well (a per-guest hint) */
        bool postcopy;             /* post-copy may run (params.postcopy is not never) */
} CoordStreamInput;

typedef struct CoordStreamChoice {
        uint32_t multifd_channels; /* 1 = one stream */
        MigCompression compression;
        char why[160];             /* one line for the job's record */
} CoordStreamChoice;

/* What precedes the choice's line at the end of a sub-task's reason. */
#define COORD_STREAM_MARK "; stream: "

/* Choose channels and compression for @in into *ret (always fills it). */
void coord_stream_choose(const CoordStreamInput *in, CoordStreamChoice *ret);

/* Put @c into @p where the operator's parameters leave the stream to
 * Drover: multifd_channels 0 and compression none.  An explicit count (1
 * included) or an explicit compression is kept.  Returns whether @p
 * changed. */
bool coord_stream_apply(const CoordStreamChoice *c, MigParams *p);
