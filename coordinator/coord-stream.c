/* The coordinator's choice of multifd channels and compression (see
 * coord-stream.h for the rule and its figures). */
#include "coord-stream.h"

#include <stdio.h>

void coord_stream_choose(const CoordStreamInput *in, CoordStreamChoice *ret) {
        uint64_t link = in->link_bytes_per_s ? in->link_bytes_per_s : MIG_MULTIFD_CHANNEL_BYTES_PER_S;
        unsigned src = in->source_cpus ? in->source_cpus : 1;
        unsigned dst = in->dest_cpus ? in->dest_cpus : src;
        unsigned cpus = src < dst ? src : dst;
        /* cores free to compress: the source keeps one for the guest */
        unsigned spare = src > 1 ? src - 1 : 1;
        if (spare > MIG_MULTIFD_AUTO_MAX)
                spare = MIG_MULTIFD_AUTO_MAX;
        uint64_t can_compress = spare * COORD_ZSTD_BYTES_PER_S_PER_CORE;

        ret->compression = MIG_COMPRESSION_NONE;
        if (in->postcopy) {
                /* one stream whatever the guest: the source agent's own rule
                 * (mig_multifd_resolve()), now sent explicitly */
                snprintf(ret->why, sizeof(ret->why), "one stream, no compression: post-copy may run (QEMU 7.2 "
                         "sends its pages outside multifd)");
                ret->multifd_channels = 1;
                return;
        }
        ret->multifd_channels = mig_multifd_default_channels(link, cpus);
        if (!in->compressible) {
                snprintf(ret->why, sizeof(ret->why), "%u multifd channel(s) for %llu MB/s; no compression: "
                         "the guest is not known to compress", ret->multifd_channels,
                         (unsigned long long) (link / 1000000));
                return;
        }
        if (link >= can_compress) {
                snprintf(ret->why, sizeof(ret->why), "no compression: %u core(s) compress ~%llu MB/s, the link "
                         "carries %llu MB/s (the CPU would be the bottleneck)", spare,
                         (unsigned long long) (can_compress / 1000000), (unsigned long long) (link / 1000000));
                return;
        }
        ret->compression = MIG_COMPRESSION_ZSTD;
        ret->multifd_channels = spare < 2 ? 2 : spare;
        snprintf(ret->why, sizeof(ret->why), "zstd on %u multifd channels: the link (%llu MB/s) is slower than "
                 "%u core(s) compress (~%llu MB/s)", ret->multifd_channels, (unsigned long long) (link / 1000000),
                 spare, (unsigned long long) (can_compress / 1000000));
}

bool coord_stream_apply(const CoordStreamChoice *c, MigParams *p) {
        if (p->multifd_channels || p->compression != MIG_COMPRESSION_NONE)
                return false;
        p->multifd_channels = c->multifd_channels;
        p->compression = c->compression;
        return true;
}
