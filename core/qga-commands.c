/* The guest agent's typed calls (contract in qga.h).
 *
 * A typed call builds its arguments with core/json's writer, sends them as
 * text through the channel (qga_agent_command(), qga-channel.h), and reads
 * the "return" text it gets back with core/json's getters
 * (qga_wire_parse_return()).  Calls run one way: this file -> qga.c
 * (channel) -> qga-wire.c -> json.c; nothing here sees json-c.  Guest
 * strings are untrusted: names are cut at a UTF-8 boundary, addresses and
 * prefixes are checked before use.
 */
#define _GNU_SOURCE
#include "qga.h"
#include "qga-channel.h"
#include "qga-wire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "json.h"

/* Send @command with @args (taken; NULL for none). */
static int call_args(QgaAgent *a, const char *command, JsonValue *args, int64_t timeout_ms,
                     char **ret_return_json) {
        _cleanup_(json_unrefp) JsonValue *o = args;
        _cleanup_free_ char *text = NULL;

        if (o && json_to_string(o, false, &text) < 0)
                return -ENOMEM;
        return qga_agent_command(a, command, text, timeout_ms, ret_return_json);
}

int qga_call(QgaAgent *a, const char *command, const char *args_json, int64_t timeout_ms, char **ret_json) {
        JsonParseOptions opt = qga_wire_json;
        JsonValue *args = NULL;
        int r;

        opt.any_value = false;
        if (args_json) {
                r = json_parse(args_json, strlen(args_json), &opt, &args);
                if (r < 0)
                        return err_prefix(r == -ENOMEM ? r : -EINVAL, "QGA command '%s': arguments",
                                          command ? command : "");
        }
        return call_args(a, command, args, timeout_ms, ret_json);
}

int qga_ping(QgaAgent *a, int64_t timeout_ms) {
        return qga_agent_command(a, "guest-ping", NULL, timeout_ms, NULL);
}

int qga_get_time(QgaAgent *a, int64_t timeout_ms, int64_t *ret_ns) {
        _cleanup_free_ char *text = NULL;
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        JsonNode v;
        int r = qga_agent_command(a, "guest-get-time", NULL, timeout_ms, &text);
        if (r < 0 || (r = qga_wire_parse_return(text, &tree, &v)) < 0)
                return r;
        if (json_read_i64(&v, INT64_MIN, INT64_MAX, ret_ns) < 0)
                return err_set(-EPROTO, "QGA %s: guest-get-time returned %s, not an integer", qga_path(a),
                               json_type_name(&v));
        return 0;
}

int qga_set_time(QgaAgent *a, int64_t timeout_ms, int64_t ns) {
        JsonValue *args = NULL;

        if (ns >= 0) {
                args = json_new_object();
                if (json_add_i64(args, "time", ns) < 0) {
                        json_unref(args);
                        return -ENOMEM;
                }
        }
        return call_args(a, "guest-set-time", args, timeout_ms, NULL);
}

void qga_interfaces_free(QgaInterface *ifs, size_t n) {
        for (size_t i = 0; ifs && i < n; i++)
                free(ifs[i].addrs);
        free(ifs);
}

/* Append the "ip-addresses" (array @list of @n entries) of one reply entry
 * to @ifc. */
static int interface_add_addrs(QgaInterface *ifc, const JsonNode *list, size_t n) {
        char(*addrs)[64];

        if (n == 0)
                return 0;
        addrs = realloc(ifc->addrs, (ifc->n_addrs + n) * sizeof(*addrs));
        if (!addrs)
                return -ENOMEM;
        ifc->addrs = addrs;
        for (size_t i = 0; i < n; i++) {
                const char *ip = NULL;
                int64_t prefix = -1;
                JsonNode e, p;

                json_array_at(list, i, &e);
                /* 45 = the longest textual IPv6 address. */
                if (!json_get_string_lenient(&e, "ip-address", &ip) || strlen(ip) > 45)
                        return err_set(-EPROTO, "interface %s: address %zu missing or malformed", ifc->name, i);
                if (json_member(&e, "prefix", false, &p) > 0 && json_read_i64(&p, 0, 128, &prefix) < 0)
                        return err_set(-EPROTO, "interface %s: address %s has a bad prefix", ifc->name, ip);
                if (prefix >= 0)
                        snprintf(addrs[ifc->n_addrs], sizeof(addrs[0]), "%s/%" PRId64, ip, prefix);
                else
                        snprintf(addrs[ifc->n_addrs], sizeof(addrs[0]), "%s", ip);
                ifc->n_addrs++;
        }
        return 0;
}

static int interfaces_parse(const JsonNode *ret, QgaInterface **out, size_t *out_n) {
        QgaInterface *ifs;
        size_t n_in, n = 0;
        int r = 0;

        if (!json_is_array(ret))
                return err_set(-EPROTO, "guest-network-get-interfaces returned no list");
        (void) json_want_array(ret, SIZE_MAX, &n_in);
        ifs = calloc(n_in ? n_in : 1, sizeof(*ifs));
        if (!ifs)
                return -ENOMEM;
        for (size_t i = 0; i < n_in && r == 0; i++) {
                const char *name = NULL, *hw = NULL;
                char base[sizeof(ifs[0].name)];
                JsonNode e, list;
                size_t j, n_addrs;

                json_array_at(ret, i, &e);
                if (!json_get_string_lenient(&e, "name", &name)) {
                        r = err_set(-EPROTO, "interface %zu has no name", i);
                        break;
                }
                /* Like libvirt, an alias "eth1:0" is reported as part of eth1. */
                text_copy_utf8(base, sizeof(base), name);
                base[strcspn(base, ":")] = '\0';
                for (j = 0; j < n && strcmp(ifs[j].name, base) != 0; j++)
                        ;
                if (j == n) {
                        memcpy(ifs[n].name, base, sizeof(base));
                        n++;
                }
                /* Hardware addresses that do not fit (InfiniBand: 59 chars)
                 * are left empty rather than cut. */
                if (json_get_string_lenient(&e, "hardware-address", &hw) && !ifs[j].hwaddr[0] &&
                    strlen(hw) < sizeof(ifs[j].hwaddr))
                        strcpy(ifs[j].hwaddr, hw);
                if (json_member(&e, "ip-addresses", false, &list) > 0) {
                        if (!json_is_array(&list))
                                r = err_set(-EPROTO, "interface %s: ip-addresses is not a list", ifs[j].name);
                        else {
                                (void) json_want_array(&list, SIZE_MAX, &n_addrs);
                                r = interface_add_addrs(&ifs[j], &list, n_addrs);
                        }
                }
        }
        if (r < 0) {
                qga_interfaces_free(ifs, n);
                return r;
        }
        *out = ifs;
        *out_n = n;
        return 0;
}

int qga_network_get_interfaces(QgaAgent *a, int64_t timeout_ms, QgaInterface **ret, size_t *ret_n) {
        _cleanup_free_ char *text = NULL;
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        JsonNode v;
        int r = qga_agent_command(a, "guest-network-get-interfaces", NULL, timeout_ms, &text);
        if (r < 0 || (r = qga_wire_parse_return(text, &tree, &v)) < 0)
                return r;
        r = interfaces_parse(&v, ret, ret_n);
        if (r == -EPROTO)
                return err_prefix(r, "QGA %s", qga_path(a));
        return r;
}
