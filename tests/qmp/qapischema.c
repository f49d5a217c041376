/* QAPI schema checker for the fake QEMU (see qapischema.h).
 *
 * The introspection names types by number ("143") except builtins ("int",
 * "str", ...) and arrays ("[142]").  Entries are indexed by name in a json-c
 * object; checking walks the value and the type together, recursively.
 */
#include "qapischema.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct QapiSchema {
        json_object *root;  /* the loaded reply */
        json_object *index; /* name -> entry (borrowed references) */
        size_t n;
};

static bool fail(char *why, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *why, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, size, fmt, ap);
        va_end(ap);
        return false;
}

QapiSchema *qapi_schema_load(const char *path) {
        json_object *root = json_object_from_file(path), *ret;
        QapiSchema *s;

        if (!root) {
                fprintf(stderr, "qapi schema: cannot load %s: %s\n", path, json_util_get_last_err());
                return NULL;
        }
        if (!json_object_object_get_ex(root, "return", &ret) ||
            !json_object_is_type(ret, json_type_array)) {
                fprintf(stderr, "qapi schema: %s is not a query-qmp-schema reply\n", path);
                json_object_put(root);
                return NULL;
        }
        s = calloc(1, sizeof(*s));
        s->root = root;
        s->index = json_object_new_object();
        for (size_t i = 0; i < json_object_array_length(ret); i++) {
                json_object *e = json_object_array_get_idx(ret, i), *name;
                if (json_object_object_get_ex(e, "name", &name))
                        json_object_object_add(s->index, json_object_get_string(name),
                                               json_object_get(e));
        }
        s->n = json_object_array_length(ret);
        return s;
}

void qapi_schema_free(QapiSchema *s) {
        if (!s)
                return;
        json_object_put(s->index);
        json_object_put(s->root);
        free(s);
}

size_t qapi_schema_size(const QapiSchema *s) {
        return s->n;
}

static json_object *lookup(const QapiSchema *s, const char *name) {
        json_object *e;
        return json_object_object_get_ex(s->index, name, &e) ? e : NULL;
}

static const char *str_member(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v)
                       : NULL;
}

static bool check_value(const QapiSchema *s, const char *type, json_object *v, const char *path,
                        char *why, size_t size);

static const char *json_type_word(json_object *v) {
        return json_type_to_name(json_object_get_type(v));
}

static bool check_builtin(json_object *entry, json_object *v, const char *path, char *why,
                          size_t size) {
        const char *jt = str_member(entry, "json-type");
        json_type t = json_object_get_type(v);

        if (!jt)
                return fail(why, size, "%s: builtin type without json-type", path);
        if (strcmp(jt, "value") == 0)
                return true;
        if (strcmp(jt, "string") == 0 && t == json_type_string)
                return true;
        if (strcmp(jt, "int") == 0 && t == json_type_int)
                return true;
        if (strcmp(jt, "number") == 0 && (t == json_type_int || t == json_type_double))
                return true;
        if (strcmp(jt, "boolean") == 0 && t == json_type_boolean)
                return true;
        if (strcmp(jt, "null") == 0 && t == json_type_null)
                return true;
        return fail(why, size, "%s: expected %s, got %s", path, jt, json_type_word(v));
}

static bool check_enum(json_object *entry, json_object *v, const char *path, char *why, size_t size) {
        json_object *values;
        const char *s;

        if (!json_object_is_type(v, json_type_string))
                return fail(why, size, "%s: expected an enum string, got %s", path, json_type_word(v));
        s = json_object_get_string(v);
        if (json_object_object_get_ex(entry, "values", &values))
                for (size_t i = 0; i < json_object_array_length(values); i++)
                        if (strcmp(json_object_get_string(json_object_array_get_idx(values, i)), s) == 0)
                                return true;
        if (json_object_object_get_ex(entry, "members", &values))
                for (size_t i = 0; i < json_object_array_length(values); i++) {
                        const char *n = str_member(json_object_array_get_idx(values, i), "name");
                        if (n && strcmp(n, s) == 0)
                                return true;
                }
        return fail(why, size, "%s: '%s' is not a value of the enum", path, s);
}

/* Members of @entry plus, for a flat union, those of the variant selected by
 * the tag member's value in @v. */
static bool collect_members(const QapiSchema *s, json_object *entry, json_object *v,
                            json_object **ret_members, json_object **ret_variant_members,
                            const char *path, char *why, size_t size) {
        json_object *variants, *tagv;
        const char *tag;

        *ret_variant_members = NULL;
        if (!json_object_object_get_ex(entry, "members", ret_members))
                *ret_members = NULL;
        tag = str_member(entry, "tag");
        if (!tag || !json_object_object_get_ex(entry, "variants", &variants))
                return true;
        if (!json_object_object_get_ex(v, tag, &tagv))
                return fail(why, size, "%s: discriminator '%s' missing", path, tag);
        if (!json_object_is_type(tagv, json_type_string))
                return fail(why, size, "%s.%s: discriminator is not a string", path, tag);
        for (size_t i = 0; i < json_object_array_length(variants); i++) {
                json_object *var = json_object_array_get_idx(variants, i), *ventry;
                const char *c = str_member(var, "case"), *t = str_member(var, "type");
                if (!c || !t || strcmp(c, json_object_get_string(tagv)) != 0)
                        continue;
                ventry = lookup(s, t);
                if (ventry && !json_object_object_get_ex(ventry, "members", ret_variant_members))
                        *ret_variant_members = NULL;
                return true;
        }
        /* A tag value with no variant is fine when it is a valid enum value
         * (the branch has no extra members); check_value on the tag member
         * decides that. */
        return true;
}

static json_object *find_member(json_object *members, const char *name) {
        for (size_t i = 0; members && i < json_object_array_length(members); i++) {
                json_object *m = json_object_array_get_idx(members, i);
                const char *n = str_member(m, "name");
                if (n && strcmp(n, name) == 0)
                        return m;
        }
        return NULL;
}

static bool check_object(const QapiSchema *s, json_object *entry, json_object *v, const char *path,
                         char *why, size_t size) {
        json_object *members, *vmembers;
        char sub[512];

        if (!json_object_is_type(v, json_type_object))
                return fail(why, size, "%s: expected an object, got %s", path, json_type_word(v));
        if (!collect_members(s, entry, v, &members, &vmembers, path, why, size))
                return false;
        json_object_object_foreach(v, key, val) {
                json_object *m = find_member(members, key);
                if (!m)
                        m = find_member(vmembers, key);
                if (!m)
                        return fail(why, size, "%s: member '%s' is unexpected", path, key);
                snprintf(sub, sizeof(sub), "%s.%s", path, key);
                if (!check_value(s, str_member(m, "type"), val, sub, why, size))
                        return false;
        }
        for (int pass = 0; pass < 2; pass++) {
                json_object *list = pass == 0 ? members : vmembers;
                for (size_t i = 0; list && i < json_object_array_length(list); i++) {
                        json_object *m = json_object_array_get_idx(list, i);
                        const char *n = str_member(m, "name");
                        if (n && !json_object_object_get_ex(m, "default", NULL) &&
                            !json_object_object_get_ex(v, n, NULL))
                                return fail(why, size, "%s: required member '%s' missing", path, n);
                }
        }
        return true;
}

static bool check_value(const QapiSchema *s, const char *type, json_object *v, const char *path,
                        char *why, size_t size) {
        json_object *entry;
        const char *meta;

        if (!type)
                return fail(why, size, "%s: schema member without type", path);
        entry = lookup(s, type);
        if (!entry)
                return fail(why, size, "%s: type '%s' not in the schema", path, type);
        meta = str_member(entry, "meta-type");
        if (!meta)
                return fail(why, size, "%s: type '%s' has no meta-type", path, type);
        if (strcmp(meta, "builtin") == 0)
                return check_builtin(entry, v, path, why, size);
        if (strcmp(meta, "enum") == 0)
                return check_enum(entry, v, path, why, size);
        if (strcmp(meta, "object") == 0)
                return check_object(s, entry, v, path, why, size);
        if (strcmp(meta, "array") == 0) {
                const char *et = str_member(entry, "element-type");
                char sub[512];
                if (!json_object_is_type(v, json_type_array))
                        return fail(why, size, "%s: expected an array, got %s", path, json_type_word(v));
                for (size_t i = 0; i < json_object_array_length(v); i++) {
                        snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
                        if (!check_value(s, et, json_object_array_get_idx(v, i), sub, why, size))
                                return false;
                }
                return true;
        }
        if (strcmp(meta, "alternate") == 0) {
                json_object *members;
                char last[512] = "";
                if (json_object_object_get_ex(entry, "members", &members))
                        for (size_t i = 0; i < json_object_array_length(members); i++) {
                                const char *t = str_member(json_object_array_get_idx(members, i), "type");
                                if (check_value(s, t, v, path, last, sizeof(last)))
                                        return true;
                        }
                return fail(why, size, "%s: %s matches no branch of the alternate", path,
                            json_type_word(v));
        }
        return fail(why, size, "%s: cannot check meta-type %s", path, meta);
}

bool qapi_schema_check_command(const QapiSchema *s, json_object *cmd, char *why, size_t why_size) {
        json_object *entry, *args, *empty = NULL, *argtype;
        const char *exec;
        bool ok;

        if (!json_object_is_type(cmd, json_type_object))
                return fail(why, why_size, "QMP input must be a JSON object");
        json_object_object_foreach(cmd, key, val) {
                (void) val;
                if (strcmp(key, "execute") != 0 && strcmp(key, "arguments") != 0 &&
                    strcmp(key, "id") != 0)
                        return fail(why, why_size, "QMP input member '%s' is unexpected", key);
        }
        exec = str_member(cmd, "execute");
        if (!exec)
                return fail(why, why_size, "QMP input lacks member 'execute'");
        entry = lookup(s, exec);
        if (!entry || !str_member(entry, "meta-type") ||
            strcmp(str_member(entry, "meta-type"), "command") != 0)
                return fail(why, why_size, "The command %s has not been found", exec);
        if (!json_object_object_get_ex(cmd, "arguments", &args))
                args = empty = json_object_new_object();
        if (!json_object_is_type(args, json_type_object)) {
                json_object_put(empty);
                return fail(why, why_size, "QMP input member 'arguments' must be an object");
        }
        argtype = lookup(s, str_member(entry, "arg-type") ? str_member(entry, "arg-type") : "");
        if (!argtype) {
                json_object_put(empty);
                return fail(why, why_size, "%s: arg-type missing from the schema", exec);
        }
        ok = check_object(s, argtype, args, exec, why, why_size);
        json_object_put(empty);
        return ok;
}

bool qapi_schema_check_command_text(const QapiSchema *s, const char *text, char *why,
                                    size_t why_size) {
        json_object *o = json_tokener_parse(text);
        bool ok;

        if (!o)
                return fail(why, why_size, "not JSON: %s", text);
        ok = qapi_schema_check_command(s, o, why, why_size);
        json_object_put(o);
        return ok;
}
