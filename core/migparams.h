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

typedef struct MigParams {
        uint64_t bandwidth;              /* bytes/s; 0 = unlimited */
        uint32_t downtime_ms;            /* initial limit */
        uint32_t max_downtime_ms;        /* policy ceiling */
        bool auto_converge;
        PostcopyPolicy postcopy;
        uint32_t postcopy_after_s;
        uint32_t multifd_channels;
        uint32_t completion_s_per_gib;
        uint32_t progress_timeout_s;
        bool skip_time_sync;
        MigTransport transport;
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
/* 0, or -EINVAL with a detail naming the member and its range. */
int mig_params_validate(const MigParams *p);

/* The JSON form (the coordinator's stored jobs and its config "defaults"):
 *   { "bandwidth": 0, "downtime_ms": 300, "max_downtime_ms": 2000,
 *     "auto_converge": false, "postcopy": "never", "postcopy_after_s": 0,
 *     "multifd_channels": 0, "completion_s_per_gib": 150,
 *     "progress_timeout_s": 30, "skip_time_sync": false, "transport": "ssh" }
 * Every member is optional (absent = 0, the default).  "postcopy" is a
 * PostcopyPolicy name; the integers of agent.proto's PostcopyMode (0, 1, 2),
 * which stored jobs and configurations used before, are read too.
 * "transport" is a MigTransport name, written only when not "default" (so
 * documents of older versions read and compare alike).  Reading
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
