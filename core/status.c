/* Status files (see status.h).  The only json-c user besides the channels.
 *
 * Layout of a file (version 1):
 *   { "format": "drover-vm-status", "version": 1,
 *     "name", "uuid", "state", "reason", "pid", "pid_start_time",
 *     "qmp_socket", "qga_socket", "definition": {...},
 *     "job": { "async": "migration-out", "phase": "perform", "op": "..." },
 *     "migration": { "peer", "uri", "postcopy_started", "orig_caps",
 *                    "orig_params": { "max-bandwidth": ..., ... } },
 *     "extra": {...} }
 */
#define _GNU_SOURCE
#include "status.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fault.h"

DEFINE_POINTER_CLEANUP(json_object, json_object_put)

void status_record_clear(VmStatusRecord *rec) {
        free(rec->definition_json);
        free(rec->extra_json);
        memset(rec, 0, sizeof(*rec));
}

int status_record_from_vm_locked(Vm *vm, VmStatusRecord *rec) {
        vm_assert_locked(vm);
        memset(rec, 0, sizeof(*rec));
        memcpy(rec->name, vm->name, sizeof(rec->name));
        memcpy(rec->uuid, vm->uuid, sizeof(rec->uuid));
        if (vm->definition_json && !(rec->definition_json = strdup(vm->definition_json)))
                return err_set(-ENOMEM, "out of memory");
        rec->state = vm->state;
        rec->reason = vm->reason;
        rec->pid = vm->pid;
        rec->pid_start_time = vm->pid > 0 ? status_pid_start_time(vm->pid) : 0;
        memcpy(rec->qmp_path, vm->qmp_path, sizeof(rec->qmp_path));
        memcpy(rec->qga_path, vm->qga_path, sizeof(rec->qga_path));
        rec->async_job = vm->job.async;
        rec->phase = vm->job.phase;
        memcpy(rec->op_id, vm->job.async_owner, sizeof(rec->op_id));
        rec->mig = vm->mig;
        if (vm->ops.fill_status)
                return vm->ops.fill_status(vm, rec, vm->ops.opaque);
        return 0;
}

static void add_str(json_object *o, const char *k, const char *v) {
        json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

static void add_u64(json_object *o, const char *k, uint64_t v) {
        json_object_object_add(o, k, json_object_new_uint64(v));
}

static int add_raw(json_object *o, const char *k, const char *json_text) {
        if (!json_text)
                return 0;
        json_object *v = json_tokener_parse(json_text);
        if (!v || !json_object_is_type(v, json_type_object)) {
                json_object_put(v);
                return err_set(-EINVAL, "status record: '%s' is not a JSON object", k);
        }
        json_object_object_add(o, k, v);
        return 0;
}

static json_object *params_to_json(const MigrationParams *p) {
        json_object *o = json_object_new_object();
        if (p->has_max_bandwidth)
                add_u64(o, "max-bandwidth", p->max_bandwidth);
        if (p->has_downtime_limit)
                add_u64(o, "downtime-limit", p->downtime_limit);
        if (p->has_cpu_throttle_initial)
                add_u64(o, "cpu-throttle-initial", p->cpu_throttle_initial);
        if (p->has_cpu_throttle_increment)
                add_u64(o, "cpu-throttle-increment", p->cpu_throttle_increment);
        if (p->has_max_cpu_throttle)
                add_u64(o, "max-cpu-throttle", p->max_cpu_throttle);
        if (p->has_multifd_channels)
                add_u64(o, "multifd-channels", p->multifd_channels);
        if (p->has_max_postcopy_bandwidth)
                add_u64(o, "max-postcopy-bandwidth", p->max_postcopy_bandwidth);
        if (p->has_tls_creds)
                add_str(o, "tls-creds", p->tls_creds);
        if (p->has_tls_hostname)
                add_str(o, "tls-hostname", p->tls_hostname);
        return o;
}

int status_record_to_json(const VmStatusRecord *rec, char **ret_json) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *job, *mig;
        int r;

        add_str(o, "format", STATUS_FORMAT);
        json_object_object_add(o, "version", json_object_new_int(STATUS_VERSION));
        add_str(o, "name", rec->name);
        add_str(o, "uuid", rec->uuid);
        add_str(o, "state", vm_state_to_string(rec->state));
        add_str(o, "reason", vm_reason_to_string(rec->reason));
        json_object_object_add(o, "pid", json_object_new_int64(rec->pid));
        add_u64(o, "pid_start_time", rec->pid_start_time);
        add_str(o, "qmp_socket", rec->qmp_path);
        add_str(o, "qga_socket", rec->qga_path);
        if ((r = add_raw(o, "definition", rec->definition_json)) < 0)
                return r;
        job = json_object_new_object();
        add_str(job, "async", async_job_to_string(rec->async_job));
        add_str(job, "phase", job_phase_to_string(rec->phase));
        add_str(job, "op", rec->op_id);
        json_object_object_add(o, "job", job);
        mig = json_object_new_object();
        add_str(mig, "op", rec->mig.op);
        json_object_object_add(mig, "created_by_prepare", json_object_new_boolean(rec->mig.created_by_prepare));
        add_str(mig, "peer", rec->mig.peer);
        add_str(mig, "uri", rec->mig.uri);
        json_object_object_add(mig, "postcopy_started", json_object_new_boolean(rec->mig.postcopy_started));
        add_u64(mig, "orig_caps", rec->mig.orig_caps);
        if (rec->mig.has_orig_params)
                json_object_object_add(mig, "orig_params", params_to_json(&rec->mig.orig_params));
        json_object_object_add(o, "migration", mig);
        if ((r = add_raw(o, "extra", rec->extra_json)) < 0)
                return r;

        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!(*ret_json = strdup(s)))
                return err_set(-ENOMEM, "out of memory");
        return 0;
}

/* Field readers: each fails with a detail naming the field. */
static int get_member(json_object *o, const char *k, json_type t, bool required, json_object **ret) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, k, &v) || json_object_is_type(v, json_type_null)) {
                *ret = NULL;
                return required ? err_set(-EBADMSG, "status file: member '%s' is missing", k) : 0;
        }
        if (!json_object_is_type(v, t))
                return err_set(-EBADMSG, "status file: member '%s' has the wrong type (want %s)", k,
                               json_type_to_name(t));
        *ret = v;
        return 0;
}

static int get_str(json_object *o, const char *k, bool required, char *buf, size_t size) {
        json_object *v;
        int r = get_member(o, k, json_type_string, required, &v);
        if (r < 0)
                return r;
        buf[0] = '\0';
        if (!v)
                return 0;
        if ((size_t) json_object_get_string_len(v) >= size)
                return err_set(-EINVAL, "status file: member '%s' is longer than %zu bytes", k, size - 1);
        memcpy(buf, json_object_get_string(v), (size_t) json_object_get_string_len(v) + 1);
        return 0;
}

static int get_u64(json_object *o, const char *k, bool required, uint64_t *ret) {
        json_object *v;
        int r = get_member(o, k, json_type_int, required, &v);
        if (r < 0)
                return r;
        if (!v) {
                *ret = 0;
                return 0;
        }
        errno = 0;
        int64_t s = json_object_get_int64(v);
        if (s < 0)
                return err_set(-EINVAL, "status file: member '%s' is negative", k);
        *ret = json_object_get_uint64(v);
        return 0;
}

static int get_enum(json_object *o, const char *k, int (*from)(const char *), int *ret) {
        char buf[64];
        int r = get_str(o, k, true, buf, sizeof(buf));
        if (r < 0)
                return r;
        if ((r = from(buf)) < 0)
                return err_set(-EINVAL, "status file: member '%s' has unknown value '%s'", k, buf);
        *ret = r;
        return 0;
}

static int get_object_text(json_object *o, const char *k, char **ret) {
        json_object *v;
        int r = get_member(o, k, json_type_object, false, &v);
        if (r < 0 || !v)
                return r;
        if (!(*ret = strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN))))
                return err_set(-ENOMEM, "out of memory");
        return 0;
}

static int params_from_json(json_object *o, MigrationParams *p) {
        int r;
        memset(p, 0, sizeof(*p));
#define U64_PARAM(key, field)                                                      \
        do {                                                                       \
                json_object *v_;                                                   \
                if ((r = get_member(o, key, json_type_int, false, &v_)) < 0)       \
                        return r;                                                  \
                if (v_) {                                                          \
                        p->has_##field = true;                                     \
                        if ((r = get_u64(o, key, true, &p->field)) < 0)            \
                                return r;                                          \
                }                                                                  \
        } while (0)
        U64_PARAM("max-bandwidth", max_bandwidth);
        U64_PARAM("downtime-limit", downtime_limit);
        U64_PARAM("cpu-throttle-initial", cpu_throttle_initial);
        U64_PARAM("cpu-throttle-increment", cpu_throttle_increment);
        U64_PARAM("max-cpu-throttle", max_cpu_throttle);
        U64_PARAM("multifd-channels", multifd_channels);
        U64_PARAM("max-postcopy-bandwidth", max_postcopy_bandwidth);
#undef U64_PARAM
        json_object *v;
        if ((r = get_member(o, "tls-creds", json_type_string, false, &v)) < 0)
                return r;
        if (v && (p->has_tls_creds = true) &&
            (r = get_str(o, "tls-creds", true, p->tls_creds, sizeof(p->tls_creds))) < 0)
                return r;
        if ((r = get_member(o, "tls-hostname", json_type_string, false, &v)) < 0)
                return r;
        if (v && (p->has_tls_hostname = true) &&
            (r = get_str(o, "tls-hostname", true, p->tls_hostname, sizeof(p->tls_hostname))) < 0)
                return r;
        return 0;
}

static int record_from_object(json_object *o, VmStatusRecord *rec) {
        char format[64];
        json_object *v, *job, *mig;
        uint64_t u;
        int e, r;

        if (!json_object_is_type(o, json_type_object))
                return err_set(-EBADMSG, "status file: top level is not a JSON object");
        if ((r = get_str(o, "format", true, format, sizeof(format))) < 0)
                return r;
        if (strcmp(format, STATUS_FORMAT) != 0)
                return err_set(-EPROTONOSUPPORT, "status file: format '%s' is not '%s'", format, STATUS_FORMAT);
        if ((r = get_member(o, "version", json_type_int, true, &v)) < 0)
                return r;
        if (json_object_get_int64(v) != STATUS_VERSION)
                return err_set(-EPROTONOSUPPORT, "status file: version %lld is not supported (this agent reads version %d)",
                               (long long) json_object_get_int64(v), STATUS_VERSION);

        if ((r = get_str(o, "name", true, rec->name, sizeof(rec->name))) < 0 ||
            (r = get_str(o, "uuid", true, rec->uuid, sizeof(rec->uuid))) < 0)
                return r;
        if (!vm_name_is_valid(rec->name))
                return err_set(-EINVAL, "status file: invalid VM name '%s'", rec->name);
        if (!vm_uuid_is_valid(rec->uuid))
                return err_set(-EINVAL, "status file: invalid UUID '%s'", rec->uuid);
        if ((r = get_enum(o, "state", vm_state_from_string, &e)) < 0)
                return r;
        rec->state = (VmState) e;
        if ((r = get_enum(o, "reason", vm_reason_from_string, &e)) < 0)
                return r;
        rec->reason = (VmReason) e;
        if ((r = get_u64(o, "pid", true, &u)) < 0)
                return r;
        if (u > (uint64_t) INT32_MAX)
                return err_set(-EINVAL, "status file: pid %llu out of range", (unsigned long long) u);
        rec->pid = (pid_t) u;
        if ((r = get_u64(o, "pid_start_time", false, &rec->pid_start_time)) < 0 ||
            (r = get_str(o, "qmp_socket", false, rec->qmp_path, sizeof(rec->qmp_path))) < 0 ||
            (r = get_str(o, "qga_socket", false, rec->qga_path, sizeof(rec->qga_path))) < 0 ||
            (r = get_object_text(o, "definition", &rec->definition_json)) < 0 ||
            (r = get_object_text(o, "extra", &rec->extra_json)) < 0)
                return r;

        if ((r = get_member(o, "job", json_type_object, false, &job)) < 0)
                return r;
        if (job) {
                if ((r = get_enum(job, "async", async_job_from_string, &e)) < 0)
                        return err_prefix(r, "in 'job'");
                rec->async_job = (AsyncJobType) e;
                if ((r = get_enum(job, "phase", job_phase_from_string, &e)) < 0)
                        return err_prefix(r, "in 'job'");
                rec->phase = (JobPhase) e;
                if ((r = get_str(job, "op", false, rec->op_id, sizeof(rec->op_id))) < 0)
                        return err_prefix(r, "in 'job'");
                if (rec->async_job != ASYNC_JOB_NONE && !rec->op_id[0])
                        return err_set(-EINVAL, "status file: async job '%s' without an operation id",
                                       async_job_to_string(rec->async_job));
        }

        if ((r = get_member(o, "migration", json_type_object, false, &mig)) < 0)
                return r;
        if (mig) {
                json_object *p;
                if ((r = get_str(mig, "op", false, rec->mig.op, sizeof(rec->mig.op))) < 0 ||
                    (r = get_str(mig, "peer", false, rec->mig.peer, sizeof(rec->mig.peer))) < 0 ||
                    (r = get_str(mig, "uri", false, rec->mig.uri, sizeof(rec->mig.uri))) < 0 ||
                    (r = get_u64(mig, "orig_caps", false, &rec->mig.orig_caps)) < 0)
                        return err_prefix(r, "in 'migration'");
                if ((r = get_member(mig, "postcopy_started", json_type_boolean, false, &v)) < 0)
                        return err_prefix(r, "in 'migration'");
                rec->mig.postcopy_started = v && json_object_get_boolean(v);
                if ((r = get_member(mig, "created_by_prepare", json_type_boolean, false, &v)) < 0)
                        return err_prefix(r, "in 'migration'");
                rec->mig.created_by_prepare = v && json_object_get_boolean(v);
                if ((r = get_member(mig, "orig_params", json_type_object, false, &p)) < 0)
                        return err_prefix(r, "in 'migration'");
                if (p) {
                        rec->mig.has_orig_params = true;
                        if ((r = params_from_json(p, &rec->mig.orig_params)) < 0)
                                return err_prefix(r, "in 'migration.orig_params'");
                }
        }
        return 0;
}

int status_record_from_json(const char *json, size_t len, VmStatusRecord *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_tokener *tok = json_tokener_new();
        enum json_tokener_error jerr;
        VmStatusRecord rec = { 0 };
        int r;

        if (!tok)
                return err_set(-ENOMEM, "out of memory");
        if (len > STATUS_FILE_MAX) {
                json_tokener_free(tok);
                return err_set(-EFBIG, "status file larger than %u bytes", STATUS_FILE_MAX);
        }
        o = json_tokener_parse_ex(tok, json, (int) len);
        jerr = json_tokener_get_error(tok);
        size_t used = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        if (!o || jerr != json_tokener_success)
                return err_set(-EBADMSG, "status file is not valid JSON: %s",
                               jerr == json_tokener_continue ? "truncated" : json_tokener_error_desc(jerr));
        for (; used < len; used++)
                if (json[used] != ' ' && json[used] != '\n' && json[used] != '\t' && json[used] != '\r')
                        return err_set(-EBADMSG, "status file has trailing data after the JSON object");
        r = record_from_object(o, &rec);
        if (r < 0) {
                status_record_clear(&rec);
                return r;
        }
        *ret = rec;
        return 0;
}

static int fsync_dir(const char *dir) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return err_set(-errno, "fsync of folder %s: %m", dir);
        return 0;
}

static int write_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, buf, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf += n;
                len -= (size_t) n;
        }
        return 0;
}

int status_write(const char *dir, const VmStatusRecord *rec) {
        _cleanup_free_ char *json = NULL;
        char path[VM_PATH_MAX + VM_NAME_MAX + 16], tmp[sizeof(path) + 16];
        _cleanup_close_ int fd = -1;
        int r;

        if ((r = fault_hit("status.write")) < 0)
                return r;
        if (!vm_name_is_valid(rec->name))
                return err_set(-EINVAL, "status record has an invalid name");
        if ((r = status_record_to_json(rec, &json)) < 0)
                return r;
        snprintf(path, sizeof(path), "%s/%s.json", dir, rec->name);
        snprintf(tmp, sizeof(tmp), "%s/.%s.json.XXXXXX", dir, rec->name);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return err_set(-errno, "cannot create a temporary status file in %s: %m", dir);
        r = write_all(fd, json, strlen(json));
        if (r >= 0)
                r = write_all(fd, "\n", 1);
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && fchmod(fd, 0600) < 0)
                r = -errno;
        if (r < 0) {
                unlink(tmp);
                return err_set(r, "writing status file %s: %s", tmp, strerror(-r));
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                unlink(tmp);
                return err_set(r, "renaming %s to %s: %s", tmp, path, strerror(-r));
        }
        return fsync_dir(dir);
}

int status_read(const char *path, VmStatusRecord *ret) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;
        int r;

        if (fd < 0)
                return err_set(-errno, "cannot open status file %s: %m", path);
        if (fstat(fd, &st) < 0)
                return err_set(-errno, "cannot stat %s: %m", path);
        if (!S_ISREG(st.st_mode))
                return err_set(-EBADMSG, "%s is not a regular file", path);
        if ((uint64_t) st.st_size > STATUS_FILE_MAX)
                return err_set(-EFBIG, "status file %s is %lld bytes, more than %u", path,
                               (long long) st.st_size, STATUS_FILE_MAX);
        buf = malloc((size_t) st.st_size + 1);
        if (!buf)
                return err_set(-ENOMEM, "out of memory");
        while (len < (size_t) st.st_size) {
                ssize_t n = read(fd, buf + len, (size_t) st.st_size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return err_set(-errno, "reading %s: %m", path);
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        buf[len] = '\0';
        r = status_record_from_json(buf, len, ret);
        if (r < 0)
                return err_prefix(r, "%s", path);
        return 0;
}

int status_remove(const char *dir, const char *name) {
        char path[VM_PATH_MAX + VM_NAME_MAX + 16];
        if (!vm_name_is_valid(name))
                return err_set(-EINVAL, "invalid VM name");
        snprintf(path, sizeof(path), "%s/%s.json", dir, name);
        if (unlink(path) < 0 && errno != ENOENT)
                return err_set(-errno, "removing %s: %m", path);
        return fsync_dir(dir);
}

int status_quarantine(const char *dir, const char *path, const char *reason) {
        char qdir[VM_PATH_MAX + 16], dst[VM_PATH_MAX * 2 + 64], note[sizeof(dst) + 8];
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;

        snprintf(qdir, sizeof(qdir), "%s/quarantine", dir);
        if (mkdir(qdir, 0700) < 0 && errno != EEXIST)
                return err_set(-errno, "creating %s: %m", qdir);
        snprintf(dst, sizeof(dst), "%s/%s.%llu", qdir, base, (unsigned long long) wall_ns());
        if (rename(path, dst) < 0)
                return err_set(-errno, "moving %s to %s: %m", path, dst);
        snprintf(note, sizeof(note), "%s.reason", dst);
        _cleanup_fclose_ FILE *f = fopen(note, "we");
        if (f)
                fprintf(f, "%s\n", reason ? reason : "");
        (void) fsync_dir(qdir);
        return fsync_dir(dir);
}

int status_load_all(const char *dir,
                    void (*good)(VmStatusRecord *rec, void *opaque),
                    void (*bad)(const char *file, int error, const char *detail, void *opaque),
                    void *opaque) {
        DIR *d = opendir(dir);
        struct dirent *de;
        int n = 0;

        if (!d)
                return errno == ENOENT ? 0 : err_set(-errno, "cannot read status folder %s: %m", dir);
        while ((de = readdir(d))) {
                size_t len = strlen(de->d_name);
                char path[VM_PATH_MAX * 2];
                VmStatusRecord rec = { 0 };

                if (de->d_name[0] == '.' || len < 6 || strcmp(de->d_name + len - 5, ".json") != 0)
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
                int r = status_read(path, &rec);
                if (r >= 0 && (strlen(rec.name) != len - 5 || strncmp(rec.name, de->d_name, len - 5) != 0))
                        r = err_set(-EINVAL, "%s: records VM '%s', which does not match the file name", path,
                                    rec.name);
                if (r < 0) {
                        char detail[ERR_MSG_MAX];
                        snprintf(detail, sizeof(detail), "%s", err_str(r));
                        status_record_clear(&rec);
                        (void) status_quarantine(dir, path, detail);
                        if (bad)
                                bad(de->d_name, r, detail, opaque);
                        continue;
                }
                n++;
                good(&rec, opaque);
                status_record_clear(&rec);
        }
        closedir(d);
        return n;
}

uint64_t status_pid_start_time(pid_t pid) {
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return 0;
        buf[n] = '\0';
        /* comm may contain spaces and parentheses: skip past the last ')' */
        char *p = strrchr(buf, ')');
        if (!p)
                return 0;
        p++;
        /* after ')' comes field 3 (state); start time is field 22 */
        for (int field = 3; field < 22 && p; field++) {
                p = strchr(p + 1, ' ');
        }
        return p ? strtoull(p + 1, NULL, 10) : 0;
}
