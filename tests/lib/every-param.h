/* A MigrationParams with every member the agent sets, for the tests that
 * prove the member table (core/migtypes.c) reaches QEMU and the status
 * files: tests/unit/test-migtypes.c, tests/qmp/test-qmp-schema.c and
 * tests/qmp/test-qmp-status.c.
 *
 * Written out member by member, not through migration_param_table, so that
 * a member missing from the table fails their round trips.  No two members
 * share a value, so a member read into the wrong field shows.  Header-only
 * because the test helper library does not depend on core.
 */
#pragma once

#include <stdio.h>
#include <string.h>

#include "migtypes.h"

static inline void tu_fill_every_param(MigrationParams *p) {
        memset(p, 0, sizeof(*p)); /* padding too: the round trips compare bytes */
        p->has_max_bandwidth = true;
        p->max_bandwidth = UINT64_C(1) << 40;
        p->has_downtime_limit = true;
        p->downtime_limit = 301;
        p->has_cpu_throttle_initial = true;
        p->cpu_throttle_initial = 21;
        p->has_cpu_throttle_increment = true;
        p->cpu_throttle_increment = 11;
        p->has_max_cpu_throttle = true;
        p->max_cpu_throttle = 97;
        p->has_multifd_channels = true;
        p->multifd_channels = 5;
        p->has_multifd_compression = true;
        snprintf(p->multifd_compression, sizeof(p->multifd_compression), "zstd");
        p->has_multifd_zstd_level = true;
        p->multifd_zstd_level = 3;
        p->has_max_postcopy_bandwidth = true;
        p->max_postcopy_bandwidth = 123456789;
        p->has_tls_creds = true;
        snprintf(p->tls_creds, sizeof(p->tls_creds), "tls0");
        p->has_tls_hostname = true;
        snprintf(p->tls_hostname, sizeof(p->tls_hostname), "dst.example");
}
