/* Migration parameters (see migparams.h). */
#include "migparams.h"

#include <errno.h>
#include <string.h>

#include "err.h"

static const char *const postcopy_policy_names[_POSTCOPY_POLICY_MAX] = {
        [POSTCOPY_POLICY_NEVER] = "never",
        [POSTCOPY_POLICY_ALLOWED] = "allowed",
        [POSTCOPY_POLICY_AFTER] = "after",
};

const char *postcopy_policy_to_string(PostcopyPolicy p) {
        return p >= 0 && p < _POSTCOPY_POLICY_MAX ? postcopy_policy_names[p] : "unknown";
}

int postcopy_policy_from_string(const char *s) {
        for (int i = 0; i < _POSTCOPY_POLICY_MAX; i++)
                if (strcmp(s, postcopy_policy_names[i]) == 0)
                        return i;
        return -1;
}

void mig_params_defaults(MigParams *p) {
        if (!p->downtime_ms)
                p->downtime_ms = 300;
        if (!p->max_downtime_ms)
                p->max_downtime_ms = 2000;
        if (p->max_downtime_ms < p->downtime_ms)
                p->max_downtime_ms = p->downtime_ms;
        if (!p->completion_s_per_gib)
                p->completion_s_per_gib = 150;
        if (!p->progress_timeout_s)
                p->progress_timeout_s = 30;
        if (p->postcopy == POSTCOPY_POLICY_AFTER && !p->postcopy_after_s)
                p->postcopy_after_s = 10;
}

int mig_params_validate(const MigParams *p) {
        if (p->downtime_ms > 60000 || p->max_downtime_ms > 60000)
                return err_set(-EINVAL, "params: downtime limits above 60000 ms are not allowed");
        if (p->multifd_channels > 64)
                return err_set(-EINVAL, "params: 'multifd_channels' must be at most 64");
        if (p->progress_timeout_s > 3600 || p->completion_s_per_gib > 86400)
                return err_set(-EINVAL, "params: timeouts out of range");
        return 0;
}
