/* The etcd store's records as JSON (store-etcd-codec.h): one table of
 * fields per record type (name, type, offset, size) drives both the
 * encoder and the strict decoder, so a field added to a record is added
 * in one place.  A field added after records were first written is
 * optional (FIELD_OPT): a record written before it reads with 0 there, so
 * the layout's version (PREFIX/schema) stays 1.  The decoder takes values
 * from the network: an unknown or missing (required) member, a wrong type, a string too long for its field, a number
 * out of range, or a record that fails the store's input checks
 * (store-common.c) is -EIO naming the key, never a crash.  Strings that
 * are not valid UTF-8 are written with U+FFFD in place of the bad bytes.
 */
#include "store-etcd-codec.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "json.h"
#include "text.h"

#define STORE_ETCD_VALUE_MAX 65536 /* a record's JSON: far above the largest (about 2.5 KiB) */

typedef enum FieldType {
        F_STR,  /* char[size] */
        F_INT,  /* int (an enum or seq), checked by store-common.c after reading */
        F_U64,
        F_U32,
        F_BOOL,
        F_DOUBLE,
} FieldType;

typedef struct Field {
        const char *name;
        FieldType type;
        size_t off, size;
        bool optional; /* added later: absent in older records (read as 0) */
} Field;

#define FIELD(T, f, type) { #f, (type), offsetof(T, f), sizeof(((T *) 0)->f), false }
#define FIELD_OPT(T, f, type) { #f, (type), offsetof(T, f), sizeof(((T *) 0)->f), true }

static const Field host_fields[] = {
        FIELD(StoreHost, name, F_STR), FIELD(StoreHost, address, F_STR),
        FIELD(StoreHost, migration_address, F_STR), FIELD(StoreHost, state, F_INT),
        FIELD(StoreHost, memory_mib, F_U64), FIELD(StoreHost, vcpus, F_U32),
        FIELD(StoreHost, cpu_model, F_STR), FIELD(StoreHost, link_bytes_per_s, F_U64),
        FIELD(StoreHost, max_outgoing, F_U32), FIELD(StoreHost, max_incoming, F_U32),
};

static const Field job_fields[] = {
        FIELD(StoreJob, id, F_STR), FIELD(StoreJob, kind, F_INT), FIELD(StoreJob, phase, F_INT),
        FIELD(StoreJob, host, F_STR), FIELD(StoreJob, failure_policy, F_INT),
        FIELD(StoreJob, params_json, F_STR), FIELD(StoreJob, created_unix_ms, F_U64),
        FIELD(StoreJob, finished_unix_ms, F_U64), FIELD(StoreJob, error, F_STR),
        FIELD(StoreJob, maintenance, F_BOOL),
};

static const Field sub_fields[] = {
        FIELD(StoreSubtask, job_id, F_STR), FIELD(StoreSubtask, seq, F_INT),
        FIELD(StoreSubtask, guest, F_STR), FIELD(StoreSubtask, uuid, F_STR),
        FIELD(StoreSubtask, source, F_STR), FIELD(StoreSubtask, destination, F_STR),
        FIELD(StoreSubtask, phase, F_INT), FIELD(StoreSubtask, op_id, F_STR),
        FIELD(StoreSubtask, estimated_s, F_DOUBLE), FIELD(StoreSubtask, started_unix_ms, F_U64),
        FIELD(StoreSubtask, finished_unix_ms, F_U64), FIELD(StoreSubtask, downtime_ms, F_U64),
        FIELD(StoreSubtask, measured_downtime_ms, F_U64), FIELD(StoreSubtask, transferred_bytes, F_U64),
        FIELD(StoreSubtask, error, F_STR), FIELD(StoreSubtask, reason, F_STR),
        FIELD(StoreSubtask, policy_steps, F_STR),
        /* the stream's figures (coordinator.proto Subtask 18-22) */
        FIELD_OPT(StoreSubtask, guest_memory_bytes, F_U64), FIELD_OPT(StoreSubtask, multifd_bytes, F_U64),
        FIELD_OPT(StoreSubtask, multifd_channels, F_U32), FIELD_OPT(StoreSubtask, compression, F_INT),
        FIELD_OPT(StoreSubtask, disk_bytes, F_U64),
};

static const Field event_fields[] = {
        FIELD(StoreEvent, time_unix_ms, F_U64), FIELD(StoreEvent, text, F_STR),
};

#define MAX_FIELDS 24

/* A string member of a @size-byte field, made valid UTF-8 when it is not
 * (U+FFFD for each bad sequence, cut at a character to fit the field
 * again, so that it reads back). */
static int add_text(JsonValue *o, const char *name, const char *s, size_t size) {
        _cleanup_free_ char *fixed = NULL;
        char buf[STORE_TEXT_MAX];
        size_t len;
        int r = text_utf8_sanitize(s, strlen(s), &fixed, &len);
        if (r <= 0)
                return r < 0 ? r : json_add_string(o, name, s);
        assert(size <= sizeof(buf));
        text_copy_utf8(buf, size, fixed);
        return json_add_string(o, name, buf);
}

/* @rec (a record of @fields) as a malloc'ed JSON object text. */
static int record_encode(const Field *fields, size_t n, const void *rec, char **ret) {
        _cleanup_(json_unrefp) JsonValue *o = json_new_object();
        const char *base = rec;
        int r = o ? 0 : -ENOMEM;
        for (size_t i = 0; i < n && r >= 0; i++) {
                const Field *f = &fields[i];
                const void *p = base + f->off;
                switch (f->type) {
                case F_STR: r = add_text(o, f->name, p, f->size); break;
                case F_INT: r = json_add_i64(o, f->name, *(const int *) p); break;
                case F_U64: r = json_add_u64(o, f->name, *(const uint64_t *) p); break;
                case F_U32: r = json_add_u64(o, f->name, *(const uint32_t *) p); break;
                case F_BOOL: r = json_add_bool(o, f->name, *(const bool *) p); break;
                case F_DOUBLE: r = json_add_double(o, f->name, *(const double *) p); break;
                }
        }
        if (r >= 0)
                r = json_to_string(o, false, ret);
        return r < 0 ? err_set(-ENOMEM, "out of memory for a store record") : 0;
}

/* -EIO "store etcd: record KEY is damaged: <the reader's detail>". */
static int damaged(const char *key, int r) {
        char detail[ERR_MSG_MAX];
        snprintf(detail, sizeof(detail), "%s", err_str(r));
        return err_set(-EIO, "store etcd: record %s is damaged: %s", key, detail);
}

/* Fill @rec (zeroed first) from the value of @kv: every member of @fields
 * present (an optional one may be absent) with its type and range, nothing
 * else.  -EIO naming the key. */
static int record_decode(const Field *fields, size_t n, const EtcdKv *kv, void *rec, size_t rec_size) {
        _cleanup_(json_unrefp) JsonValue *root = NULL;
        const char *known[MAX_FIELDS + 1] = { 0 };
        JsonNode obj;
        char *base = rec;
        int r;

        assert(n <= MAX_FIELDS);
        memset(rec, 0, rec_size);
        if ((r = json_parse_object(kv->value, kv->value_len, STORE_ETCD_VALUE_MAX, &root)) < 0)
                return damaged(kv->key, r);
        json_node_root(root, &obj);
        for (size_t i = 0; i < n; i++)
                known[i] = fields[i].name;
        if ((r = json_check_members(&obj, known)) < 0)
                return damaged(kv->key, r);
        for (size_t i = 0; i < n && r >= 0; i++) {
                const Field *f = &fields[i];
                void *p = base + f->off;
                bool req = !f->optional;
                int64_t v = 0;
                uint64_t u = 0;
                switch (f->type) {
                case F_STR: r = json_get_string(&obj, f->name, req, p, f->size); break;
                case F_INT:
                        r = json_get_i64(&obj, f->name, req, INT32_MIN, INT32_MAX, &v);
                        *(int *) p = (int) v;
                        break;
                case F_U64: r = json_get_u64(&obj, f->name, req, 0, UINT64_MAX, p); break;
                case F_U32:
                        r = json_get_u64(&obj, f->name, req, 0, UINT32_MAX, &u);
                        *(uint32_t *) p = (uint32_t) u;
                        break;
                case F_BOOL: r = json_get_bool(&obj, f->name, req, p); break;
                case F_DOUBLE: {
                        JsonNode m;
                        if ((r = json_member(&obj, f->name, req, &m)) > 0)
                                r = json_read_number(&m, p);
                        break;
                }
                }
        }
        return r < 0 ? damaged(kv->key, r) : 0;
}

/* The store's own checks on a record read back: -EIO naming the key. */
static int record_checked(const EtcdKv *kv, int r) {
        return r < 0 ? damaged(kv->key, r) : 0;
}

int store_etcd_host_decode(const EtcdKv *kv, StoreHost *h) {
        int r = record_decode(host_fields, ELEMENTSOF(host_fields), kv, h, sizeof(*h));
        return r < 0 ? r : record_checked(kv, store_check_host(h));
}

int store_etcd_job_decode(const EtcdKv *kv, StoreJob *j) {
        int r = record_decode(job_fields, ELEMENTSOF(job_fields), kv, j, sizeof(*j));
        return r < 0 ? r : record_checked(kv, store_check_job(j));
}

int store_etcd_sub_decode(const EtcdKv *kv, StoreSubtask *t) {
        int r = record_decode(sub_fields, ELEMENTSOF(sub_fields), kv, t, sizeof(*t));
        return r < 0 ? r : record_checked(kv, store_check_subtask(t));
}

int store_etcd_event_decode(const EtcdKv *kv, StoreEvent *e) {
        int r = record_decode(event_fields, ELEMENTSOF(event_fields), kv, e, sizeof(*e));
        if (r < 0)
                return r;
        return record_checked(kv, store_check_time("event time_unix_ms", e->time_unix_ms));
}

int store_etcd_host_encode(const StoreHost *h, char **ret) {
        return record_encode(host_fields, ELEMENTSOF(host_fields), h, ret);
}

int store_etcd_job_encode(const StoreJob *j, char **ret) {
        return record_encode(job_fields, ELEMENTSOF(job_fields), j, ret);
}

int store_etcd_sub_encode(const StoreSubtask *t, char **ret) {
        return record_encode(sub_fields, ELEMENTSOF(sub_fields), t, ret);
}

int store_etcd_event_encode(const StoreEvent *e, char **ret) {
        return record_encode(event_fields, ELEMENTSOF(event_fields), e, ret);
}
