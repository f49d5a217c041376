/* droverctl's inventory commands (see droverctl-host.h): `host add`,
 * `host remove`, `host set` and `host show`, the command-line face of the
 * coordinator's AddHost, RemoveHost and UpdateHost.
 *
 * A change is given as FIELD=VALUE words, FIELD an API field name of the
 * host record; `set` sends exactly the fields given (UpdateHost's
 * `fields`), so the rest of the record stays.  Every command prints the
 * host's whole record afterwards (show: now), in JSON with --json: the
 * Ansible module drover_host compares and diffs on it. */
#include "droverctl-host.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coord-enums.h"
#include "coordinator.pb-c.h"
#include "err.h"
#include "droverctl.h"
#include "json.h"

enum { HOST_EXIT_OK = DCTL_EXIT_OK, HOST_EXIT_USAGE = DCTL_EXIT_USAGE };

typedef struct HostCtx {
        bool json;
} HostCtx;

bool droverctl_host_handles(const char *verb) {
        return strcmp(verb, "add") == 0 || strcmp(verb, "remove") == 0 || strcmp(verb, "set") == 0 ||
               strcmp(verb, "show") == 0;
}

static void put_json(JsonValue *x) {
        char *text = NULL;
        if (x && json_to_string(x, false, &text) >= 0)
                printf("%s\n", text);
        free(text);
        json_unref(x);
}

static int host_fail(const HostCtx *x, const char *what, int r) {
        char msg[ERR_MSG_MAX + 128];
        snprintf(msg, sizeof(msg), "host %s: %s", what, err_str(r));
        if (x->json) {
                JsonValue *j = json_new_object();
                json_add_string(j, "error", msg);
                put_json(j);
        } else
                fprintf(stderr, "droverctl: %s\n", msg);
        return r == -ENOENT ? DCTL_EXIT_NOT_FOUND : DCTL_EXIT_ERROR;
}

static int host_usage(const char *why) {
        fprintf(stderr, "droverctl: %s\nusage: droverctl host add NAME ADDRESS [FIELD=VALUE...] | remove NAME | "
                        "set NAME FIELD=VALUE... | show NAME\nfields: address migration_address memory_mib vcpus "
                        "cpu_model link_bytes_per_s max_outgoing max_incoming\n", why);
        return HOST_EXIT_USAGE;
}

/* 0, or droverctl's exit code with the failure printed (dctl_call). */
static int host_call(const HostCtx *x, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp) {
        (void) x;
        return dctl_call("host", method, req, resp);
}

/* The whole record, as JSON or as one "member: value" line each. */
static void print_host(const HostCtx *x, const Drover__V1__Host *h) {
        struct { const char *k; const char *s; uint64_t n; } m[] = {
                { "name", h->name, 0 },
                { "address", h->address, 0 },
                { "migration_address", h->migration_address, 0 },
                { "state", coord_host_state_to_string(h->state), 0 },
                { "health", coord_host_health_to_string(h->health), 0 },
                { "memory_mib", NULL, h->memory_mib },
                { "memory_used_mib", NULL, h->memory_used_mib },
                { "vcpus", NULL, h->vcpus },
                { "vcpus_used", NULL, h->vcpus_used },
                { "guests", NULL, h->guests },
                { "cpu_model", h->cpu_model, 0 },
                { "link_bytes_per_s", NULL, h->link_bytes_per_s },
                { "max_outgoing", NULL, h->max_outgoing },
                { "max_incoming", NULL, h->max_incoming },
        };
        JsonValue *j = x->json ? json_new_object() : NULL;
        for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
                if (j && m[i].s)
                        json_add_string(j, m[i].k, m[i].s);
                else if (j)
                        json_add_i64(j, m[i].k, (int64_t) m[i].n);
                else if (m[i].s)
                        printf("%-18s %s\n", m[i].k, m[i].s);
                else
                        printf("%-18s %llu\n", m[i].k, (unsigned long long) m[i].n);
        }
        if (j)
                put_json(j);
}

/* FIELD=VALUE into @h, its bit into @fields (the UpdateHost name in
 * @names); false with the reason on stderr. */
static bool parse_field(const char *word, Drover__V1__Host *h, char **names, size_t *n_names) {
        const char *eq = strchr(word, '=');
        char field[32];
        if (!eq || (size_t) (eq - word) >= sizeof(field)) {
                fprintf(stderr, "droverctl: '%s' is not FIELD=VALUE\n", word);
                return false;
        }
        snprintf(field, sizeof(field), "%.*s", (int) (eq - word), word);
        const char *v = eq + 1;
        char **text = strcmp(field, "address") == 0             ? &h->address
                      : strcmp(field, "migration_address") == 0 ? &h->migration_address
                      : strcmp(field, "cpu_model") == 0         ? &h->cpu_model
                                                                : NULL;
        if (!text) {
                uint64_t *u64 = strcmp(field, "memory_mib") == 0         ? &h->memory_mib
                                : strcmp(field, "link_bytes_per_s") == 0 ? &h->link_bytes_per_s
                                                                         : NULL;
                uint32_t *u32 = strcmp(field, "vcpus") == 0          ? &h->vcpus
                                : strcmp(field, "max_outgoing") == 0 ? &h->max_outgoing
                                : strcmp(field, "max_incoming") == 0 ? &h->max_incoming
                                                                     : NULL;
                char *end = NULL;
                errno = 0;
                unsigned long long n = *v >= '0' && *v <= '9' ? strtoull(v, &end, 10) : 0;
                if (!u64 && !u32) {
                        fprintf(stderr, "droverctl: '%s' is not a host field\n", field);
                        return false;
                }
                if (!end || *end || errno || (u32 && n > UINT32_MAX)) {
                        fprintf(stderr, "droverctl: %s: '%s' is not a whole number in range\n", field, v);
                        return false;
                }
                if (u64)
                        *u64 = n;
                else
                        *u32 = (uint32_t) n;
        } else
                *text = (char *) v;
        names[(*n_names)++] = (char *) word; /* cut at '=' by the caller */
        return true;
}

static int host_show(const HostCtx *x, const char *name) {
        Drover__V1__ListHostsRequest req = DROVER__V1__LIST_HOSTS_REQUEST__INIT;
        Drover__V1__ListHostsResponse *r;
        int rc = host_call(x, "ListHosts", &req.base, (ProtobufCMessage **) &r);
        if (rc)
                return rc;
        rc = err_set(-ENOENT, "no host '%s'", name);
        for (size_t i = 0; i < r->n_hosts; i++)
                if (strcmp(r->hosts[i]->name, name) == 0) {
                        print_host(x, r->hosts[i]);
                        rc = 0;
                }
        drover__v1__list_hosts_response__free_unpacked(r, NULL);
        return rc < 0 ? host_fail(x, name, rc) : HOST_EXIT_OK;
}

static int host_remove(const HostCtx *x, const char *name) {
        Drover__V1__HostRef req = DROVER__V1__HOST_REF__INIT;
        Drover__V1__Empty *e;
        req.host = (char *) name;
        int rc = host_call(x, "RemoveHost", &req.base, (ProtobufCMessage **) &e);
        if (rc)
                return rc;
        drover__v1__empty__free_unpacked(e, NULL);
        if (x->json) {
                JsonValue *j = json_new_object();
                json_add_string(j, "name", name);
                json_add_bool(j, "removed", true);
                put_json(j);
        } else
                printf("host %s removed\n", name);
        return HOST_EXIT_OK;
}

/* add NAME ADDRESS FIELD=VALUE... or set NAME FIELD=VALUE... */
static int host_change(const HostCtx *x, bool add, int argc, char **argv) {
        Drover__V1__Host h = DROVER__V1__HOST__INIT;
        char *names[16], *copies[16];
        size_t n = 0;
        int first = add ? 3 : 2;
        if (argc - first > 16)
                return host_usage("too many fields");
        h.name = argv[1];
        if (add)
                h.address = argv[2];
        for (int i = first; i < argc; i++) {
                if (!(copies[i - first] = strdup(argv[i])))
                        return host_fail(x, argv[1], -ENOMEM);
                if (!parse_field(argv[i], &h, names, &n)) {
                        for (int k = first; k <= i; k++)
                                free(copies[k - first]);
                        return HOST_EXIT_USAGE;
                }
                *strchr(copies[i - first], '=') = '\0';
                names[n - 1] = copies[i - first];
        }
        Drover__V1__Host *r = NULL;
        int rc;
        if (add) {
                Drover__V1__AddHostRequest req = DROVER__V1__ADD_HOST_REQUEST__INIT;
                req.host = &h;
                rc = host_call(x, "AddHost", &req.base, (ProtobufCMessage **) &r);
        } else {
                Drover__V1__UpdateHostRequest req = DROVER__V1__UPDATE_HOST_REQUEST__INIT;
                req.host = &h;
                req.fields = names;
                req.n_fields = n;
                rc = host_call(x, "UpdateHost", &req.base, (ProtobufCMessage **) &r);
        }
        for (size_t i = 0; i < n; i++)
                free(copies[i]);
        if (rc)
                return rc;
        print_host(x, r);
        drover__v1__host__free_unpacked(r, NULL);
        return HOST_EXIT_OK;
}

int droverctl_host(int argc, char **argv) {
        HostCtx x = { .json = dctl_opt.json };
        const char *verb = argv[0];
        if (strcmp(verb, "add") == 0 && argc >= 3)
                return host_change(&x, true, argc, argv);
        if (strcmp(verb, "set") == 0 && argc >= 3)
                return host_change(&x, false, argc, argv);
        if (strcmp(verb, "remove") == 0 && argc == 2)
                return host_remove(&x, argv[1]);
        if (strcmp(verb, "show") == 0 && argc == 2)
                return host_show(&x, argv[1]);
        return host_usage("wrong number of arguments");
}
