/* Migration parameters (see migparams.h). */
#include "migparams.h"

#include <errno.h>
#include <stdio.h>
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

static const char *const mig_transport_names[_MIG_TRANSPORT_MAX] = {
        [MIG_TRANSPORT_DEFAULT] = "default",
        [MIG_TRANSPORT_TLS] = "tls",
        [MIG_TRANSPORT_SSH] = "ssh",
        [MIG_TRANSPORT_PLAIN] = "plain",
};

const char *mig_transport_to_string(MigTransport t) {
        return t >= 0 && t < _MIG_TRANSPORT_MAX ? mig_transport_names[t] : "unknown";
}

int mig_transport_from_string(const char *s) {
        for (int i = 0; i < _MIG_TRANSPORT_MAX; i++)
                if (strcmp(s, mig_transport_names[i]) == 0)
                        return i;
        return -1;
}

static const char *const mig_compression_names[_MIG_COMPRESSION_MAX] = {
        [MIG_COMPRESSION_NONE] = "none",
        [MIG_COMPRESSION_ZSTD] = "zstd",
};

const char *mig_compression_to_string(MigCompression c) {
        return c >= 0 && c < _MIG_COMPRESSION_MAX ? mig_compression_names[c] : "unknown";
}

int mig_compression_from_string(const char *s) {
        for (int i = 0; i < _MIG_COMPRESSION_MAX; i++)
                if (strcmp(s, mig_compression_names[i]) == 0)
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
                p->completion_s_per_gib = MIG_COMPLETION_S_PER_GIB_DEFAULT;
        if (!p->progress_timeout_s)
                p->progress_timeout_s = 30;
        if (p->postcopy == POSTCOPY_POLICY_AFTER && !p->postcopy_after_s)
                p->postcopy_after_s = 10;
        if (p->compression == MIG_COMPRESSION_ZSTD && !p->zstd_level)
                p->zstd_level = MIG_ZSTD_LEVEL_DEFAULT;
}

uint64_t mig_params_completion_ms(const MigParams *p, uint64_t mem_mib) {
        uint64_t per_gib = p->completion_s_per_gib ? p->completion_s_per_gib : MIG_COMPLETION_S_PER_GIB_DEFAULT;
        return per_gib * 1000 * ((mem_mib + 1023) / 1024);
}

int64_t mig_params_finish_limit_ms(const MigParams *p, uint64_t mem_mib, bool postcopy) {
        return MIG_FINISH_BASE_MS + (postcopy ? (int64_t) mig_params_completion_ms(p, mem_mib) : 0);
}

int mig_params_validate(const MigParams *p) {
        if (p->downtime_ms > 60000 || p->max_downtime_ms > 60000)
                return err_set(-EINVAL, "params: downtime limits above 60000 ms are not allowed");
        if (p->multifd_channels > 64)
                return err_set(-EINVAL, "params: 'multifd_channels' must be at most 64");
        if (p->progress_timeout_s > 3600 || p->completion_s_per_gib > 86400)
                return err_set(-EINVAL, "params: timeouts out of range");
        if ((unsigned) p->transport >= _MIG_TRANSPORT_MAX)
                return err_set(-EINVAL, "params: 'transport' must be default, tls, ssh or plain");
        if ((unsigned) p->compression >= _MIG_COMPRESSION_MAX)
                return err_set(-EINVAL, "params: 'compression' must be none or zstd");
        if (p->zstd_level > MIG_ZSTD_LEVEL_MAX)
                return err_set(-EINVAL, "params: 'zstd_level' must be at most %d", MIG_ZSTD_LEVEL_MAX);
        if (p->multifd_channels > 1 && p->postcopy != POSTCOPY_POLICY_NEVER)
                return err_set(-EINVAL, "params: 'multifd_channels' above 1 needs 'postcopy' never (QEMU 7.2's "
                               "destination aborts when post-copy runs beside multifd channels; 0 lets the source "
                               "pick one stream for post-copy)");
        if (p->compression == MIG_COMPRESSION_NONE)
                return 0;
        if (p->multifd_channels == 1)
                return err_set(-EINVAL, "params: 'compression' %s needs multifd: 'multifd_channels' 1 turns it "
                               "off (0 lets the source pick, or give 2 or more)",
                               mig_compression_to_string(p->compression));
        if (p->postcopy != POSTCOPY_POLICY_NEVER)
                return err_set(-EINVAL, "params: 'compression' needs 'postcopy' never (QEMU 7.2 sends post-copy "
                               "pages outside multifd)");
        return 0;
}

uint32_t mig_multifd_default_channels(uint64_t link_bytes_per_s, unsigned ncpus) {
        uint64_t link = link_bytes_per_s ? link_bytes_per_s : MIG_MULTIFD_CHANNEL_BYTES_PER_S;
        uint64_t n = link / MIG_MULTIFD_CHANNEL_BYTES_PER_S + (link % MIG_MULTIFD_CHANNEL_BYTES_PER_S != 0);
        uint64_t cap = ncpus < MIG_MULTIFD_AUTO_MAX ? ncpus : MIG_MULTIFD_AUTO_MAX;

        if (n > cap)
                n = cap;
        return n <= 1 ? 1 : (uint32_t) n;
}

int mig_multifd_resolve(MigParams *p, uint64_t link_bytes_per_s, unsigned ncpus, bool supported) {
        bool compress = p->compression != MIG_COMPRESSION_NONE;

        if (!supported && (compress || p->multifd_channels > 1))
                return err_set(-EOPNOTSUPP, "%s needs multifd, which the source QEMU does not offer",
                               compress ? "compression" : "'multifd_channels' above 1");
        if (p->multifd_channels)
                return 0;
        if (!supported || p->postcopy != POSTCOPY_POLICY_NEVER) {
                p->multifd_channels = 1;
                return 0;
        }
        p->multifd_channels = mig_multifd_default_channels(link_bytes_per_s, ncpus);
        if (compress && p->multifd_channels < 2)
                p->multifd_channels = 2;
        return 0;
}

uint64_t mig_params_qemu_bandwidth(const MigParams *p, uint64_t bandwidth) {
        if (!bandwidth || p->compression != MIG_COMPRESSION_NONE)
                return MIG_QEMU_BANDWIDTH_UNLIMITED;
        return bandwidth;
}

int mig_params_to_json(const MigParams *p, char *buf, size_t size) {
        _cleanup_(json_unrefp) JsonValue *o = json_new_object();
        _cleanup_free_ char *text = NULL;

        if (json_add_u64(o, "bandwidth", p->bandwidth) < 0 || json_add_u64(o, "downtime_ms", p->downtime_ms) < 0 ||
            json_add_u64(o, "max_downtime_ms", p->max_downtime_ms) < 0 ||
            json_add_bool(o, "auto_converge", p->auto_converge) < 0 ||
            json_add_string(o, "postcopy", postcopy_policy_to_string(p->postcopy)) < 0 ||
            json_add_u64(o, "postcopy_after_s", p->postcopy_after_s) < 0 ||
            json_add_u64(o, "multifd_channels", p->multifd_channels) < 0 ||
            json_add_u64(o, "completion_s_per_gib", p->completion_s_per_gib) < 0 ||
            json_add_u64(o, "progress_timeout_s", p->progress_timeout_s) < 0 ||
            json_add_bool(o, "skip_time_sync", p->skip_time_sync) < 0 ||
            (p->transport != MIG_TRANSPORT_DEFAULT &&
             json_add_string(o, "transport", mig_transport_to_string(p->transport)) < 0) ||
            (p->compression != MIG_COMPRESSION_NONE &&
             json_add_string(o, "compression", mig_compression_to_string(p->compression)) < 0) ||
            (p->zstd_level && json_add_u64(o, "zstd_level", p->zstd_level) < 0) ||
            json_to_string(o, false, &text) < 0)
                return err_set(-ENOMEM, "out of memory");
        if (strlen(text) >= size)
                return err_set(-ENOBUFS, "parameters do not fit %zu bytes", size);
        memcpy(buf, text, strlen(text) + 1);
        return 0;
}

static int read_postcopy(const JsonNode *obj, PostcopyPolicy *ret) {
        char sh[SHOWN_MAX + 4];
        const char *name;
        JsonNode m;
        uint32_t x;
        int r = json_member(obj, "postcopy", false, &m);

        if (r <= 0)
                return r;
        if (json_read_string_ref(&m, &name, NULL) >= 0) {
                if ((r = postcopy_policy_from_string(name)) < 0)
                        return err_set(-EINVAL, "'%s' must be never, allowed or after, not '%s'", m.path,
                                       text_shown(name, sh));
                *ret = (PostcopyPolicy) r;
                return 0;
        }
        int64_t any;
        if (json_read_i64(&m, INT64_MIN, INT64_MAX, &any) < 0)
                return err_set(-EINVAL, "'%s' must be never, allowed or after, not %s", m.path, json_type_name(&m));
        if ((r = json_read_u32(&m, 0, _POSTCOPY_POLICY_MAX - 1, &x)) < 0)
                return r;
        *ret = (PostcopyPolicy) x; /* PostcopyMode numbers the policies alike */
        return 0;
}

static int read_transport(const JsonNode *obj, MigTransport *ret) {
        char sh[SHOWN_MAX + 4];
        const char *name;
        JsonNode m;
        int r = json_member(obj, "transport", false, &m);

        if (r <= 0)
                return r;
        if ((r = json_read_string_ref(&m, &name, NULL)) < 0)
                return r;
        if ((r = mig_transport_from_string(name)) < 0)
                return err_set(-EINVAL, "'%s' must be default, tls, ssh or plain, not '%s'", m.path,
                               text_shown(name, sh));
        *ret = (MigTransport) r;
        return 0;
}

static int read_compression(const JsonNode *obj, MigCompression *ret) {
        char sh[SHOWN_MAX + 4];
        const char *name;
        JsonNode m;
        int r = json_member(obj, "compression", false, &m);

        if (r <= 0)
                return r;
        if ((r = json_read_string_ref(&m, &name, NULL)) < 0)
                return r;
        if ((r = mig_compression_from_string(name)) < 0)
                return err_set(-EINVAL, "'%s' must be none or zstd, not '%s'", m.path, text_shown(name, sh));
        *ret = (MigCompression) r;
        return 0;
}

int mig_params_read_json(const JsonNode *obj, MigParams *p) {
        static const char *const known[] = {
                "bandwidth", "downtime_ms", "max_downtime_ms", "auto_converge", "postcopy", "postcopy_after_s",
                "multifd_channels", "completion_s_per_gib", "progress_timeout_s", "skip_time_sync", "transport",
                "compression", "zstd_level", NULL,
        };
        MigParams q = *p;
        int r;

        if ((r = json_want_object(obj)) < 0 || (r = json_check_members(obj, known)) < 0)
                return r;
        if ((r = json_get_u64(obj, "bandwidth", false, 0, UINT64_MAX, &q.bandwidth)) < 0 ||
            (r = json_get_u32(obj, "downtime_ms", false, 0, UINT32_MAX, &q.downtime_ms)) < 0 ||
            (r = json_get_u32(obj, "max_downtime_ms", false, 0, UINT32_MAX, &q.max_downtime_ms)) < 0 ||
            (r = json_get_bool(obj, "auto_converge", false, &q.auto_converge)) < 0 ||
            (r = read_postcopy(obj, &q.postcopy)) < 0 ||
            (r = json_get_u32(obj, "postcopy_after_s", false, 0, UINT32_MAX, &q.postcopy_after_s)) < 0 ||
            (r = json_get_u32(obj, "multifd_channels", false, 0, UINT32_MAX, &q.multifd_channels)) < 0 ||
            (r = json_get_u32(obj, "completion_s_per_gib", false, 0, UINT32_MAX, &q.completion_s_per_gib)) < 0 ||
            (r = json_get_u32(obj, "progress_timeout_s", false, 0, UINT32_MAX, &q.progress_timeout_s)) < 0 ||
            (r = json_get_bool(obj, "skip_time_sync", false, &q.skip_time_sync)) < 0 ||
            (r = read_transport(obj, &q.transport)) < 0 || (r = read_compression(obj, &q.compression)) < 0 ||
            (r = json_get_u32(obj, "zstd_level", false, 0, UINT32_MAX, &q.zstd_level)) < 0)
                return r;
        *p = q;
        return 0;
}

int mig_params_from_json(const char *json, size_t len, MigParams *ret) {
        _cleanup_(json_unrefp) JsonValue *root = NULL;
        MigParams p = { 0 };
        JsonNode n;
        int r;

        if ((r = json_parse_object(json, len, MIG_PARAMS_JSON_MAX * 8, &root)) < 0)
                return err_prefix(r, "params");
        json_node_root(root, &n);
        if ((r = mig_params_read_json(&n, &p)) < 0)
                return err_prefix(r, "params");
        *ret = p;
        return 0;
}
