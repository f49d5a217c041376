/* Migration parameters: the one shape of "how to migrate this guest" for the
 * whole cluster.
 *
 * droverctl and the coordinator's API fill a MigParams, the coordinator
 * stores and forwards it, the source agent drives its convergence policy by
 * it and the destination prepares with it.  Defaults (with their reasons in
 * docs/migration.md), validation and the JSON form live here and nowhere
 * else.  QEMU's own parameter set (MigrationParams in migtypes.h) is a
 * different thing: what the source agent derives from a MigParams and sends
 * to one QEMU.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"

typedef enum PostcopyPolicy {
        POSTCOPY_POLICY_NEVER,
        POSTCOPY_POLICY_ALLOWED, /* last step of the convergence policy */
        POSTCOPY_POLICY_AFTER,   /* after postcopy_after_s seconds of pre-copy */
        _POSTCOPY_POLICY_MAX,
} PostcopyPolicy;

const char *postcopy_policy_to_string(PostcopyPolicy p);
/* -1 for an unknown name */
int postcopy_policy_from_string(const char *s);

/* How the stream travels (docs/migration.md, "Stream transports"); the
 * numbers are agent.proto's MigrationTransport. */
typedef enum MigTransport {
        MIG_TRANSPORT_DEFAULT, /* the source agent's config decides */
        MIG_TRANSPORT_TLS,
        MIG_TRANSPORT_SSH,
        MIG_TRANSPORT_PLAIN,   /* dev_mode only */
        _MIG_TRANSPORT_MAX,
} MigTransport;

/* "default", "tls", "ssh", "plain" */
const char *mig_transport_to_string(MigTransport t);
/* -1 for an unknown name */
int mig_transport_from_string(const char *s);

/* Multifd compression (docs/migration.md, "Multifd and compression"); the
 * numbers are agent.proto's MigrationCompression. */
typedef enum MigCompression {
        MIG_COMPRESSION_NONE,
        MIG_COMPRESSION_ZSTD, /* QEMU multifd-compression zstd: needs multifd */
        _MIG_COMPRESSION_MAX,
} MigCompression;

/* "none", "zstd" */
const char *mig_compression_to_string(MigCompression c);
/* -1 for an unknown name */
int mig_compression_from_string(const char *s);

/* zstd levels Drover lets through (QEMU takes 0-20; above 9 costs far more
 * CPU than a link it could help ever repays). */
#define MIG_ZSTD_LEVEL_DEFAULT 1
#define MIG_ZSTD_LEVEL_MAX 9

typedef struct MigParams {
        uint64_t bandwidth;              /* bytes/s; 0 = unlimited */
        uint32_t downtime_ms;            /* initial limit */
        uint32_t max_downtime_ms;        /* policy ceiling */
        bool auto_converge;
        PostcopyPolicy postcopy;
        uint32_t postcopy_after_s;
        uint32_t multifd_channels;       /* 0 = the source picks (mig_multifd_resolve()); 1 = no multifd */
        uint32_t completion_s_per_gib;
        uint32_t progress_timeout_s;
        bool skip_time_sync;
        MigTransport transport;
        MigCompression compression;      /* needs multifd and post-copy never */
        uint32_t zstd_level;             /* with ZSTD; 0 = MIG_ZSTD_LEVEL_DEFAULT */
} MigParams;

/* The default of completion_s_per_gib (docs/migration.md says why). */
#define MIG_COMPLETION_S_PER_GIB_DEFAULT 150
/* MigrateFinish without post-copy: the destination waits up to 30 s for the
 * stream's end, sends `cont` and sets the guest time (docs/migration.md). */
#define MIG_FINISH_BASE_MS 60000

/* The completion timeout of a guest of @mem_mib MiB: completion_s_per_gib
 * (its default when 0) for each started GiB, in ms. */
uint64_t mig_params_completion_ms(const MigParams *p, uint64_t mem_mib);
/* How long MigrateFinish may take, for both sides: the destination bounds
 * its parts by it (the wait for the last pages in post-copy is the
 * completion timeout) and the source gives its call this deadline, so the
 * source always hears the destination's own answer.  MIG_FINISH_BASE_MS,
 * plus the completion timeout when @postcopy.  In ms. */
int64_t mig_params_finish_limit_ms(const MigParams *p, uint64_t mem_mib, bool postcopy);

/* Fill zero members with the defaults (docs/migration.md says why each). */
void mig_params_defaults(MigParams *p);
/* 0, or -EINVAL with a detail naming the member and its range.  Refused
 * combinations: compression with multifd_channels 1 (multifd turned off:
 * compression travels only on multifd channels) or with post-copy allowed
 * (QEMU 7.2 does not send post-copy pages through multifd). */
int mig_params_validate(const MigParams *p);

/* Multifd channels by default (docs/migration.md, "Multifd and
 * compression"): one channel per started MIG_MULTIFD_CHANNEL_BYTES_PER_S of
 * @link_bytes_per_s (0 = unknown: taken as 1 Gbit/s), at most @ncpus and
 * MIG_MULTIFD_AUTO_MAX; 1 (no multifd) when that comes to 1 or less. */
#define MIG_MULTIFD_CHANNEL_BYTES_PER_S UINT64_C(125000000) /* 1 Gbit/s */
#define MIG_MULTIFD_AUTO_MAX 8
uint32_t mig_multifd_default_channels(uint64_t link_bytes_per_s, unsigned ncpus);

/* Settle p->multifd_channels before the source prepares the destination
 * (pure; the source agent calls it at begin).  Unset (0): 1 when the source
 * QEMU lacks multifd (@supported false) or post-copy may run (QEMU 7.2
 * sends post-copy pages outside multifd), else
 * mig_multifd_default_channels(@link_bytes_per_s, @ncpus), at least 2 with
 * compression.  Set: kept.  @p has been validated.  0, or -EOPNOTSUPP with
 * a detail when multifd or compression was asked of a QEMU without
 * multifd. */
int mig_multifd_resolve(MigParams *p, uint64_t link_bytes_per_s, unsigned ncpus, bool supported);

/* QEMU's max-bandwidth for a migration with @p whose cap is @bandwidth
 * (bytes/s, 0 = none).  QEMU's own default (128 MiB/s) would throttle a
 * fast link, so no cap becomes MIG_QEMU_BANDWIDTH_UNLIMITED.  With
 * compression the cap is lifted too: QEMU 7.2 meters multifd pages before
 * compression (multifd_send_pages() accounts whole pages), so a cap meant
 * for the link would hold the guest's memory to the link's rate and the
 * compression would gain no time; the link decides instead. */
#define MIG_QEMU_BANDWIDTH_UNLIMITED UINT64_C(107374182400) /* 100 GiB/s */
uint64_t mig_params_qemu_bandwidth(const MigParams *p, uint64_t bandwidth);

/* The JSON form (the coordinator's stored jobs and its config "defaults"):
 *   { "bandwidth": 0, "downtime_ms": 300, "max_downtime_ms": 2000,
 *     "auto_converge": false, "postcopy": "never", "postcopy_after_s": 0,
 *     "multifd_channels": 0, "completion_s_per_gib": 150,
 *     "progress_timeout_s": 30, "skip_time_sync": false, "transport": "ssh",
 *     "compression": "zstd", "zstd_level": 1 }
 * Every member is optional (absent = 0, the default).  "postcopy" is a
 * PostcopyPolicy name; the integers of agent.proto's PostcopyMode (0, 1, 2),
 * which stored jobs and configurations used before, are read too.
 * "transport" is a MigTransport name, written only when not "default" (so
 * documents of older versions read and compare alike); "compression" (a
 * MigCompression name) and "zstd_level" likewise only when set.  Reading
 * checks types and integer ranges (uint32 members, uint64 bandwidth);
 * mig_params_validate() checks the limits. */
#define MIG_PARAMS_JSON_MAX 512

/* Compact JSON of @p into @buf: 0 or -ENOBUFS. */
int mig_params_to_json(const MigParams *p, char *buf, size_t size);
/* Parse a JSON document into *ret (zeroed first); -EINVAL with a detail
 * naming the member ("params: 'downtime_ms' must be ..."). */
int mig_params_from_json(const char *json, size_t len, MigParams *ret);
/* Read the members of object @obj that are present into @p (others are
 * left as they are); unknown members are refused.  Errors name the path. */
int mig_params_read_json(const JsonNode *obj, MigParams *p);
