/* Status files (see status.h).  Records are read through core/json; the
 * writer and the QMP parameter set (params_to_json/params_from_json, which
 * move with the QMP commands) still build json-c trees directly.
 *
 * Layout of a file (version 1):
 *   { "format": "drover-vm-status", "version": 1,
 *     "name", "uuid", "state", "reason", "pid", "pid_start_time",
 *     "qmp_socket", "qga_socket", "definition": {...},
 *     "job": { "async": "migration-out", "phase": "perform", "op": "..." },
 *     "migration": { "peer", "uri", "postcopy_started", "orig_caps",
 *                    "orig_params": { "max-bandwidth": ..., ... },
 *                    "caller" (optional: files of older agents lack it),
 *                    "created_disks" (optional: images a destination's prepare made) },
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

#include "deadline.h"
#include "err.h"
#include "fault.h"
#include "json.h"

DEFINE_POINTER_CLEANUP(json_object, json_object_put)

void status_record_clear(VmStatusRecord *rec) {
        free(rec->definition_json);
        free(rec->extra_json);
        memset(rec, 0, sizeof(*rec));
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

/* The members of migration_param_table that are set. */
static json_object *params_to_json(const MigrationParams *p) {
        json_object *o = json_object_new_object();
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                if (!migration_param_is_set(p, i))
                        continue;
                if (i->kind == MIGRATION_PARAM_U64)
                        add_u64(o, i->name, migration_param_get_u64(p, i));
                else
                        add_str(o, i->name, migration_param_get_str(p, i));
        }
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
        if (rec->mig.caller[0])
                add_str(mig, "caller", rec->mig.caller);
        add_str(mig, "uri", rec->mig.uri);
        json_object_object_add(mig, "postcopy_started", json_object_new_boolean(rec->mig.postcopy_started));
        if (rec->mig.created_disks)
                add_u64(mig, "created_disks", rec->mig.created_disks);
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

/* A string member that names a value of an enum (@from: its from_string). */
static int get_enum(const JsonNode *o, const char *k, int (*from)(const char *), int *ret) {
        char buf[64], sh[SHOWN_MAX + 4];
        JsonNode m;
        int r;

        if ((r = json_member(o, k, true, &m)) < 0 || (r = json_read_string(&m, buf, sizeof(buf))) < 0)
                return r;
        if ((r = from(buf)) < 0)
                return err_set(-EINVAL, "'%s' has unknown value '%s'", m.path, text_shown(buf, sh));
        *ret = r;
        return 0;
}

/* An optional object member kept as compact JSON text (malloc'ed). */
static int get_object_text(const JsonNode *o, const char *k, char **ret) {
        JsonNode m;
        int r = json_get_object(o, k, false, &m);
        if (r <= 0)
                return r;
        if (json_to_string(m.value, false, ret) < 0)
                return err_set(-ENOMEM, "out of memory");
        return 0;
}

/* Every member of migration_param_table that @o carries (null: absent). */
static int params_from_json(json_object *o, MigrationParams *p) {
        int r;
        memset(p, 0, sizeof(*p));
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                bool u64 = i->kind == MIGRATION_PARAM_U64;
                json_object *v;

                if ((r = get_member(o, i->name, u64 ? json_type_int : json_type_string, false, &v)) < 0)
                        return r;
                if (!v)
                        continue;
                *migration_param_has_ref(p, i) = true;
                r = u64 ? get_u64(o, i->name, true, migration_param_u64_ref(p, i))
                        : get_str(o, i->name, true, migration_param_str_ref(p, i), i->value_size);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int read_job(const JsonNode *job, VmStatusRecord *rec) {
        int e, r;

        if ((r = get_enum(job, "async", async_job_from_string, &e)) < 0)
                return r;
        rec->async_job = (AsyncJobType) e;
        if ((r = get_enum(job, "phase", job_phase_from_string, &e)) < 0)
                return r;
        rec->phase = (JobPhase) e;
        if ((r = json_get_string(job, "op", false, rec->op_id, sizeof(rec->op_id))) < 0)
                return r;
        if (rec->async_job != ASYNC_JOB_NONE && !rec->op_id[0])
                return err_set(-EINVAL, "async job '%s' without an operation id", async_job_to_string(rec->async_job));
        return 0;
}

static int read_migration(const JsonNode *mig, VmMigration *m) {
        JsonNode p;
        int r;

        if ((r = json_get_string(mig, "op", false, m->op, sizeof(m->op))) < 0 ||
            (r = json_get_string(mig, "peer", false, m->peer, sizeof(m->peer))) < 0 ||
            (r = json_get_string(mig, "caller", false, m->caller, sizeof(m->caller))) < 0 ||
            (r = json_get_string(mig, "uri", false, m->uri, sizeof(m->uri))) < 0 ||
            (r = json_get_u64(mig, "orig_caps", false, 0, UINT64_MAX, &m->orig_caps)) < 0 ||
            (r = json_get_bool(mig, "postcopy_started", false, &m->postcopy_started)) < 0 ||
            (r = json_get_bool(mig, "created_by_prepare", false, &m->created_by_prepare)) < 0 ||
            (r = json_get_u32(mig, "created_disks", false, 0, UINT32_MAX, &m->created_disks)) < 0 ||
            (r = json_get_object(mig, "orig_params", false, &p)) < 0)
                return r;
        if (r > 0) {
                m->has_orig_params = true;
                if ((r = params_from_json(p.value, &m->orig_params)) < 0)
                        return err_prefix(r, "in '%s'", p.path);
        }
        return 0;
}

/* The record in @root; unknown members are ignored (a later minor change
 * may add some). */
static int record_from_root(JsonValue *root, VmStatusRecord *rec) {
        char format[64], sh[SHOWN_MAX + 4];
        JsonNode o, v;
        int64_t version;
        uint64_t pid;
        int e, r;

        json_node_root(root, &o);
        if ((r = json_get_string(&o, "format", true, format, sizeof(format))) < 0)
                return r;
        if (strcmp(format, STATUS_FORMAT) != 0)
                return err_set(-EPROTONOSUPPORT, "format '%s' is not '%s'", text_shown(format, sh), STATUS_FORMAT);
        if ((r = json_get_i64(&o, "version", true, INT64_MIN, INT64_MAX, &version)) < 0)
                return r;
        if (version != STATUS_VERSION)
                return err_set(-EPROTONOSUPPORT, "version %lld is not supported (this agent reads version %d)",
                               (long long) version, STATUS_VERSION);

        if ((r = json_get_string(&o, "name", true, rec->name, sizeof(rec->name))) < 0 ||
            (r = json_get_string(&o, "uuid", true, rec->uuid, sizeof(rec->uuid))) < 0)
                return r;
        if (!vm_name_is_valid(rec->name))
                return err_set(-EINVAL, "invalid VM name '%s'", text_shown(rec->name, sh));
        if (!vm_uuid_is_valid(rec->uuid))
                return err_set(-EINVAL, "invalid UUID '%s'", text_shown(rec->uuid, sh));
        if ((r = get_enum(&o, "state", vm_state_from_string, &e)) < 0)
                return r;
        rec->state = (VmState) e;
        if ((r = get_enum(&o, "reason", vm_reason_from_string, &e)) < 0)
                return r;
        rec->reason = (VmReason) e;
        if ((r = json_get_u64(&o, "pid", true, 0, INT32_MAX, &pid)) < 0)
                return r;
        rec->pid = (pid_t) pid;
        if ((r = json_get_u64(&o, "pid_start_time", false, 0, UINT64_MAX, &rec->pid_start_time)) < 0 ||
            (r = json_get_string(&o, "qmp_socket", false, rec->qmp_path, sizeof(rec->qmp_path))) < 0 ||
            (r = json_get_string(&o, "qga_socket", false, rec->qga_path, sizeof(rec->qga_path))) < 0 ||
            (r = get_object_text(&o, "definition", &rec->definition_json)) < 0 ||
            (r = get_object_text(&o, "extra", &rec->extra_json)) < 0)
                return r;
        if ((r = json_get_object(&o, "job", false, &v)) < 0 || (r > 0 && (r = read_job(&v, rec)) < 0))
                return r;
        if ((r = json_get_object(&o, "migration", false, &v)) < 0 || (r > 0 && (r = read_migration(&v, &rec->mig)) < 0))
                return r;
        return 0;
}

int status_record_from_json(const char *json, size_t len, VmStatusRecord *ret) {
        _cleanup_(json_unrefp) JsonValue *root = NULL;
        VmStatusRecord rec = { 0 };
        int r;

        if (len > STATUS_FILE_MAX)
                return err_set(-EFBIG, "status file larger than %u bytes", STATUS_FILE_MAX);
        r = json_parse_object(json, len, STATUS_FILE_MAX, &root);
        if (r < 0)
                return err_prefix(r == -EINVAL ? -EBADMSG : r, "status file");
        r = record_from_root(root, &rec);
        if (r < 0) {
                status_record_clear(&rec);
                return err_prefix(r, "status file");
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
                return err_set(r, "writing %s: %s", path, strerror(-r)); /* names the disk and the file */
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                unlink(tmp);
                return err_set(r, "renaming %s to %s: %s", tmp, path, strerror(-r));
        }
        return fsync_dir(dir);
}

/* "a FIFO (named pipe)", "a folder", ...: what a file that is not a regular file is. */
static const char *file_kind(mode_t mode) {
        return S_ISFIFO(mode)   ? "a FIFO (named pipe)"
               : S_ISDIR(mode)  ? "a folder"
               : S_ISSOCK(mode) ? "a socket"
               : S_ISCHR(mode)  ? "a character device"
               : S_ISBLK(mode)  ? "a block device"
               : S_ISLNK(mode)  ? "a symbolic link"
                                : "not a regular file";
}

int status_read(const char *path, VmStatusRecord *ret) {
        /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is
         * refused below); O_NOFOLLOW: a link is refused, never followed. */
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t len = 0;
        int r;

        if (fd < 0 && errno == ELOOP)
                return err_set(-EBADMSG, "status file %s is a symbolic link; status files must be regular files",
                               path);
        if (fd < 0)
                return err_set(-errno, "cannot open status file %s: %m", path);
        if (fstat(fd, &st) < 0)
                return err_set(-errno, "cannot stat %s: %m", path);
        if (!S_ISREG(st.st_mode))
                return err_set(-EBADMSG, "status file %s is %s, not a regular file", path, file_kind(st.st_mode));
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

/* Write @reason and a newline to the new file @path, synced.  0 or -errno. */
static int write_note(const char *path, const char *reason) {
        _cleanup_free_ char *text = NULL;
        if (asprintf(&text, "%s\n", reason ? reason : "") < 0)
                return -ENOMEM;
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        for (size_t done = 0, len = strlen(text); done < len;) {
                ssize_t n = write(fd, text + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                done += (size_t) n;
        }
        if (fsync(fd) < 0)
                return -errno;
        int fd2 = TAKE_FD(fd);
        return close(fd2) < 0 && errno != EINTR ? -errno : 0;
}

int status_quarantine(const char *dir, const char *path, const char *reason, char *ret_path, size_t size) {
        char qdir[VM_PATH_MAX + 16], dst[VM_PATH_MAX * 2 + 64], note[sizeof(dst) + 8];
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;

        if (ret_path && size)
                ret_path[0] = '\0';
        snprintf(qdir, sizeof(qdir), "%s/quarantine", dir);
        if (mkdir(qdir, 0700) < 0 && errno != EEXIST)
                return err_set(-errno, "creating %s: %m", qdir);
        snprintf(dst, sizeof(dst), "%s/%s.%llu", qdir, base, (unsigned long long) wall_ns());
        if (rename(path, dst) < 0)
                return err_set(-errno, "moving %s to %s: %m", path, dst);
        if (ret_path && size)
                snprintf(ret_path, size, "%s", dst);
        snprintf(note, sizeof(note), "%s.reason", dst);
        int r = write_note(note, reason);
        int rq = fsync_dir(qdir), rd = fsync_dir(dir);
        if (r < 0)
                return err_set(r, "moved %s to %s, but its note %s cannot be written: %s", path, dst, note,
                               strerror(-r));
        if (rq < 0 || rd < 0)
                return err_set(rq < 0 ? rq : rd, "moved %s to %s, but the move cannot be synced: %s", path, dst,
                               strerror(-(rq < 0 ? rq : rd)));
        return 0;
}

int status_load_all(const char *dir,
                    void (*good)(VmStatusRecord *rec, void *opaque),
                    void (*bad)(const char *file, const char *quarantined, int error, const char *detail,
                                const char *quarantine_error, void *opaque),
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
                err_clear(); /* a detail-less failure must not show the last file's error */
                int r = status_read(path, &rec);
                if (r >= 0 && (strlen(rec.name) != len - 5 || strncmp(rec.name, de->d_name, len - 5) != 0))
                        r = err_set(-EINVAL, "%s: records VM '%s', which does not match the file name", path,
                                    rec.name);
                if (r < 0) {
                        char detail[ERR_MSG_MAX + sizeof(path)], moved[VM_PATH_MAX * 2 + 64], qerr[ERR_MSG_MAX];
                        const char *e = err_str(r);
                        if (strstr(e, path))
                                snprintf(detail, sizeof(detail), "%s", e);
                        else /* every note names its file */
                                snprintf(detail, sizeof(detail), "%s: %s", path, e);
                        status_record_clear(&rec);
                        err_clear();
                        int q = status_quarantine(dir, path, detail, moved, sizeof(moved));
                        snprintf(qerr, sizeof(qerr), "%s", q < 0 ? err_str(q) : "");
                        if (bad)
                                bad(de->d_name, moved, r, detail, qerr, opaque);
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
