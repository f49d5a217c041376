/* Migration parameters <-> protobuf (see migparams-pb.h). */
#include "migparams-pb.h"

#include <string.h>

void mig_params_to_pb(const MigParams *in, Drover__V1__MigrationParams *out) {
        drover__v1__migration_params__init(out);
        out->bandwidth_bytes_per_s = in->bandwidth;
        out->downtime_limit_ms = in->downtime_ms;
        out->max_downtime_limit_ms = in->max_downtime_ms;
        out->auto_converge = in->auto_converge;
        out->postcopy = in->postcopy == POSTCOPY_POLICY_ALLOWED ? DROVER__V1__POSTCOPY_MODE__POSTCOPY_ALLOWED
                        : in->postcopy == POSTCOPY_POLICY_AFTER ? DROVER__V1__POSTCOPY_MODE__POSTCOPY_AFTER
                                                                : DROVER__V1__POSTCOPY_MODE__POSTCOPY_NOT_ALLOWED;
        out->postcopy_after_s = in->postcopy_after_s;
        out->multifd_channels = in->multifd_channels;
        out->completion_timeout_s_per_gib = in->completion_s_per_gib;
        out->progress_timeout_s = in->progress_timeout_s;
        out->skip_time_sync = in->skip_time_sync;
        out->transport = (Drover__V1__MigrationTransport) in->transport; /* the same numbers */
        out->compression = (Drover__V1__MigrationCompression) in->compression; /* likewise */
        out->zstd_level = in->zstd_level;
}

void mig_params_from_pb(const Drover__V1__MigrationParams *in, MigParams *out) {
        memset(out, 0, sizeof(*out));
        if (!in)
                return;
        out->bandwidth = in->bandwidth_bytes_per_s;
        out->downtime_ms = in->downtime_limit_ms;
        out->max_downtime_ms = in->max_downtime_limit_ms;
        out->auto_converge = in->auto_converge;
        out->postcopy = in->postcopy == DROVER__V1__POSTCOPY_MODE__POSTCOPY_ALLOWED ? POSTCOPY_POLICY_ALLOWED
                        : in->postcopy == DROVER__V1__POSTCOPY_MODE__POSTCOPY_AFTER ? POSTCOPY_POLICY_AFTER
                                                                                   : POSTCOPY_POLICY_NEVER;
        out->postcopy_after_s = in->postcopy_after_s;
        out->multifd_channels = in->multifd_channels;
        out->completion_s_per_gib = in->completion_timeout_s_per_gib;
        out->progress_timeout_s = in->progress_timeout_s;
        out->skip_time_sync = in->skip_time_sync;
        /* an unknown number (a newer peer) is kept: mig_params_validate() refuses it */
        out->transport = (MigTransport) in->transport;
        out->compression = (MigCompression) in->compression; /* likewise */
        out->zstd_level = in->zstd_level;
}
