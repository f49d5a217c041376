/* The guest agent's JSON side: the typed QGA calls, their parsers, and the
 * framing and classification the channel needs (contract in qga.h; the
 * seam with the channel in qga-wire.h).
 *
 * This is the only QGA code that includes json-c.  The channel (qga.c)
 * hands each reply line over as bytes; qga_wire_parse_reply() parses it
 * strictly (one object, bounded depth, nothing after it) and turns it into
 * plain C: the "return" member as text, or the error's class and
 * description.  A typed call builds its arguments as a json-c object, sends
 * them as text through qga_agent_command(), and parses the "return" text
 * it gets back.  Guest strings are untrusted: names are cut at a UTF-8
 * boundary, addresses and prefixes are checked before use.
 */
#define _GNU_SOURCE
#include "qga.h"
#include "qga-wire.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "log.h"

#define QGA_JSON_DEPTH 64
#define QGA_JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

DEFINE_POINTER_CLEANUP(json_object, json_object_put)
DEFINE_POINTER_CLEANUP(json_tokener, json_tokener_free)

/* Copy @src into @dst[@n], cutting at a UTF-8 character boundary. */
void qga_copy_utf8(char *dst, size_t n, const char *src) {
        size_t len = strlen(src);
        if (len >= n) {
                len = n - 1;
                while (len > 0 && ((unsigned char) src[len] & 0xC0) == 0x80)
                        len--;
        }
        memcpy(dst, src, len);
        dst[len] = '\0';
}


/* Parse @len bytes as exactly one JSON object. */
static int json_parse_object(const char *s, size_t len, json_object **ret) {
        _cleanup_(json_tokener_freep) json_tokener *tok = json_tokener_new_ex(QGA_JSON_DEPTH);
        json_object *o;
        enum json_tokener_error e;

        if (!tok)
                return -ENOMEM;
        if (len > INT_MAX)
                return err_set(-EPROTO, "message too long");
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
        o = json_tokener_parse_ex(tok, s, (int) len);
        e = json_tokener_get_error(tok);
        if (!o || e != json_tokener_success) {
                json_object_put(o);
                return err_set(-EPROTO, "not JSON (%s)",
                               e == json_tokener_continue ? "incomplete" : json_tokener_error_desc(e));
        }
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++)
                if (!isspace((unsigned char) s[i])) {
                        json_object_put(o);
                        return err_set(-EPROTO, "trailing data after the JSON value");
                }
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return err_set(-EPROTO, "a JSON %s, not an object",
                               json_type_to_name(json_object_get_type(o)));
        }
        *ret = o;
        return 0;
}

static const char *json_get_string(json_object *o, const char *key) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return NULL;
        return json_object_get_string(v);
}

static char *json_dup_text(json_object *o) {
        const char *s = json_object_to_json_string_ext(o, QGA_JSON_FLAGS);
        return s ? strdup(s) : NULL;
}

/* Parse JSON text this module wrote itself (a "return" member); NULL is
 * also what JSON null reads as. */
static json_object *json_from_return(const char *text) {
        return text ? json_tokener_parse(text) : NULL;
}

/* ---- what the channel needs ----------------------------------------------- */

void qga_wire_reply_clear(QgaWireReply *r) {
        free(r->return_json);
        free(r->error_class);
        free(r->error_desc);
        memset(r, 0, sizeof(*r));
}

int qga_wire_parse_reply(const char *s, size_t len, QgaWireReply *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *v;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = json_parse_object(s, len, &o);
        if (r < 0)
                return r;
        if (json_object_object_get_ex(o, "error", &v)) {
                const char *cls = NULL, *desc = NULL;
                ret->kind = QGA_WIRE_ERROR;
                if (json_object_is_type(v, json_type_object)) {
                        cls = json_get_string(v, "class");
                        desc = json_get_string(v, "desc");
                } else if (json_object_is_type(v, json_type_string)) {
                        /* A bare string: not QMP, but seen in libvirt's test corpus. */
                        desc = json_object_get_string(v);
                }
                if ((cls && !(ret->error_class = strdup(cls))) ||
                    (desc && !(ret->error_desc = strdup(desc)))) {
                        qga_wire_reply_clear(ret);
                        return -ENOMEM;
                }
        } else if (json_object_object_get_ex(o, "return", &v)) {
                ret->kind = QGA_WIRE_RETURN;
                ret->return_json = json_dup_text(v);
                if (!ret->return_json)
                        return -ENOMEM;
        } else
                ret->kind = QGA_WIRE_OTHER;
        return 0;
}

bool qga_wire_is_sync_reply(const char *s, size_t len, uint64_t id) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *v;

        if (json_parse_object(s, len, &o) < 0)
                return false;
        return json_object_object_get_ex(o, "return", &v) && json_object_is_type(v, json_type_int) &&
               json_object_get_int64(v) == (int64_t) id;
}

int qga_wire_request(const char *command, const char *args_json, char **ret) {
        _cleanup_(json_object_putp) json_object *name = NULL;
        const char *s;
        char *line;

        if (!command || !*command)
                return err_set(-EINVAL, "QGA: empty command name");
        name = json_object_new_string(command);
        s = name ? json_object_to_json_string_ext(name, QGA_JSON_FLAGS) : NULL;
        if (!s)
                return -ENOMEM;
        /* A raw 0xFF (invalid UTF-8) would make the agent drop the request. */
        if (strchr(s, '\xff') || (args_json && strchr(args_json, '\xff')))
                return err_set(-EINVAL, "QGA command '%s': arguments contain a 0xFF byte", command);
        /* json-c's plain form of {"execute", "arguments"}, byte for byte. */
        if (asprintf(&line, "{\"execute\":%s%s%s}\n", s, args_json ? ",\"arguments\":" : "",
                     args_json ? args_json : "") < 0)
                return -ENOMEM;
        *ret = line;
        return 0;
}

/* ---- guest-info --------------------------------------------------------- */

void qga_wire_info_free(QgaInfo *info) {
        if (!info)
                return;
        free(info->commands);
        free(info);
}
DEFINE_POINTER_CLEANUP(QgaInfo, qga_wire_info_free)

int qga_wire_parse_info(const char *return_json, QgaInfo **out) {
        _cleanup_(json_object_putp) json_object *ret = json_from_return(return_json);
        _cleanup_(qga_wire_info_freep) QgaInfo *info = calloc(1, sizeof(*info));
        json_object *cmds;
        const char *version;
        size_t n;

        if (!info)
                return -ENOMEM;
        if (!json_object_is_type(ret, json_type_object))
                return err_set(-EPROTO, "guest-info returned no object");
        version = json_get_string(ret, "version");
        if (!version)
                return err_set(-EPROTO, "guest-info has no \"version\"");
        qga_copy_utf8(info->version, sizeof(info->version), version);
        if (!json_object_object_get_ex(ret, "supported_commands", &cmds) ||
            !json_object_is_type(cmds, json_type_array))
                return err_set(-EPROTO, "guest-info has no \"supported_commands\" list");
        n = json_object_array_length(cmds);
        info->commands = calloc(n ? n : 1, sizeof(*info->commands));
        if (!info->commands)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(cmds, i), *en;
                const char *name = e ? json_get_string(e, "name") : NULL;

                if (!name || !json_object_object_get_ex(e, "enabled", &en) ||
                    !json_object_is_type(en, json_type_boolean))
                        return err_set(-EPROTO, "guest-info command %zu has no name or no enabled flag", i);
                if (strlen(name) >= sizeof(info->commands[0].name)) {
                        /* No command of ours has such a name; keep the rest usable. */
                        log_debug("guest-info: ignoring command with a %zu-byte name", strlen(name));
                        continue;
                }
                strcpy(info->commands[info->n_commands].name, name);
                info->commands[info->n_commands].enabled = json_object_get_boolean(en);
                info->n_commands++;
        }
        *out = TAKE_PTR(info);
        return 0;
}

/* ---- typed calls ---------------------------------------------------------- */

/* Send @command with @args (borrowed; NULL for none). */
static int call_args(QgaAgent *a, const char *command, json_object *args, int64_t timeout_ms,
                     char **ret_return_json) {
        _cleanup_free_ char *text = NULL;

        if (args && !(text = json_dup_text(args)))
                return -ENOMEM;
        return qga_agent_command(a, command, text, timeout_ms, ret_return_json);
}

int qga_call(QgaAgent *a, const char *command, const char *args_json, int64_t timeout_ms, char **ret_json) {
        _cleanup_(json_object_putp) json_object *args = NULL;
        int r;

        if (args_json) {
                r = json_parse_object(args_json, strlen(args_json), &args);
                if (r < 0)
                        return err_prefix(r == -EPROTO ? -EINVAL : r, "QGA command '%s': arguments",
                                          command ? command : "");
        }
        return call_args(a, command, args, timeout_ms, ret_json);
}

int qga_ping(QgaAgent *a, int64_t timeout_ms) {
        return qga_agent_command(a, "guest-ping", NULL, timeout_ms, NULL);
}

int qga_get_time(QgaAgent *a, int64_t timeout_ms, int64_t *ret_ns) {
        _cleanup_free_ char *text = NULL;
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r = qga_agent_command(a, "guest-get-time", NULL, timeout_ms, &text);
        if (r < 0)
                return r;
        v = json_from_return(text);
        if (!json_object_is_type(v, json_type_int))
                return err_set(-EPROTO, "QGA %s: guest-get-time returned a %s, not an integer", qga_path(a),
                               json_type_to_name(json_object_get_type(v)));
        *ret_ns = json_object_get_int64(v);
        return 0;
}

int qga_set_time(QgaAgent *a, int64_t timeout_ms, int64_t ns) {
        _cleanup_(json_object_putp) json_object *args = NULL;

        if (ns >= 0) {
                args = json_object_new_object();
                if (!args || json_object_object_add(args, "time", json_object_new_int64(ns)) < 0)
                        return -ENOMEM;
        }
        return call_args(a, "guest-set-time", args, timeout_ms, NULL);
}

void qga_interfaces_free(QgaInterface *ifs, size_t n) {
        for (size_t i = 0; ifs && i < n; i++)
                free(ifs[i].addrs);
        free(ifs);
}

/* Append the "ip-addresses" of one reply entry to @ifc. */
static int interface_add_addrs(QgaInterface *ifc, json_object *list) {
        size_t n = json_object_array_length(list);
        char(*addrs)[64];

        if (n == 0)
                return 0;
        addrs = realloc(ifc->addrs, (ifc->n_addrs + n) * sizeof(*addrs));
        if (!addrs)
                return -ENOMEM;
        ifc->addrs = addrs;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(list, i), *p;
                const char *ip = e ? json_get_string(e, "ip-address") : NULL;
                int64_t prefix = -1;

                /* 45 = the longest textual IPv6 address. */
                if (!ip || strlen(ip) > 45)
                        return err_set(-EPROTO, "interface %s: address %zu missing or malformed", ifc->name, i);
                if (json_object_object_get_ex(e, "prefix", &p)) {
                        if (!json_object_is_type(p, json_type_int) || json_object_get_int64(p) < 0 ||
                            json_object_get_int64(p) > 128)
                                return err_set(-EPROTO, "interface %s: address %s has a bad prefix",
                                               ifc->name, ip);
                        prefix = json_object_get_int64(p);
                }
                if (prefix >= 0)
                        snprintf(addrs[ifc->n_addrs], sizeof(addrs[0]), "%s/%" PRId64, ip, prefix);
                else
                        snprintf(addrs[ifc->n_addrs], sizeof(addrs[0]), "%s", ip);
                ifc->n_addrs++;
        }
        return 0;
}

static int interfaces_parse(json_object *ret, QgaInterface **out, size_t *out_n) {
        QgaInterface *ifs;
        size_t n_in, n = 0;
        int r = 0;

        if (!json_object_is_type(ret, json_type_array))
                return err_set(-EPROTO, "guest-network-get-interfaces returned no list");
        n_in = json_object_array_length(ret);
        ifs = calloc(n_in ? n_in : 1, sizeof(*ifs));
        if (!ifs)
                return -ENOMEM;
        for (size_t i = 0; i < n_in && r == 0; i++) {
                json_object *e = json_object_array_get_idx(ret, i), *list;
                const char *name = e ? json_get_string(e, "name") : NULL;
                const char *hw = e ? json_get_string(e, "hardware-address") : NULL;
                char base[sizeof(ifs[0].name)];
                size_t j;

                if (!name) {
                        r = err_set(-EPROTO, "interface %zu has no name", i);
                        break;
                }
                /* Like libvirt, an alias "eth1:0" is reported as part of eth1. */
                qga_copy_utf8(base, sizeof(base), name);
                base[strcspn(base, ":")] = '\0';
                for (j = 0; j < n && strcmp(ifs[j].name, base) != 0; j++)
                        ;
                if (j == n) {
                        memcpy(ifs[n].name, base, sizeof(base));
                        n++;
                }
                /* Hardware addresses that do not fit (InfiniBand: 59 chars)
                 * are left empty rather than cut. */
                if (hw && !ifs[j].hwaddr[0] && strlen(hw) < sizeof(ifs[j].hwaddr))
                        strcpy(ifs[j].hwaddr, hw);
                if (json_object_object_get_ex(e, "ip-addresses", &list)) {
                        if (!json_object_is_type(list, json_type_array))
                                r = err_set(-EPROTO, "interface %s: ip-addresses is not a list", ifs[j].name);
                        else
                                r = interface_add_addrs(&ifs[j], list);
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
        _cleanup_(json_object_putp) json_object *v = NULL;
        int r = qga_agent_command(a, "guest-network-get-interfaces", NULL, timeout_ms, &text);
        if (r < 0)
                return r;
        v = json_from_return(text);
        r = interfaces_parse(v, ret, ret_n);
        if (r == -EPROTO)
                return err_prefix(r, "QGA %s", qga_path(a));
        return r;
}

