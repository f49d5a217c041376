/* The guest agent's wire: classify reply lines, frame requests, read
 * guest-info (qga-wire.h).
 *
 * The channel (qga.c) hands each reply line over as bytes;
 * qga_wire_parse_reply() parses it with core/json (exactly one object,
 * bounded depth, nothing after it) and turns it into plain C: the "return"
 * member as text, or the error's class and description, read leniently
 * since they only feed a detail.  The tree is dropped before returning, so
 * none leaves the calling thread.  A request is framed around its
 * arguments' text; the command name is quoted by core/json's writer.
 * guest-info lives here because the channel probes it itself; its strings
 * are untrusted: the version is cut at a UTF-8 boundary and a command name
 * too long for any command of ours is skipped.
 */
#define _GNU_SOURCE
#include "qga-wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "log.h"

const JsonParseOptions qga_wire_json = {
        .max_bytes = QGA_MESSAGE_MAX,
        .max_depth = 64,
        .any_value = true,
        .skip_repeat_check = true,
};

/* Parse @len bytes as exactly one JSON object: -EPROTO with core/json's
 * detail when it is not one. */
static int parse_object(const char *s, size_t len, JsonValue **ret_tree, JsonNode *ret_root) {
        JsonParseOptions opt = qga_wire_json;
        JsonValue *tree = NULL;
        int r;

        opt.any_value = false;
        r = json_parse(s, len, &opt, &tree);
        if (r < 0)
                return r == -ENOMEM ? r : err_prefix(-EPROTO, "not one JSON object");
        *ret_tree = tree;
        json_node_root(tree, ret_root);
        return 0;
}

/* ---- what the channel needs ----------------------------------------------- */

void qga_wire_reply_clear(QgaWireReply *r) {
        free(r->return_json);
        free(r->error_class);
        free(r->error_desc);
        memset(r, 0, sizeof(*r));
}

int qga_wire_parse_reply(const char *s, size_t len, QgaWireReply *ret) {
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        JsonNode root, v;
        int r;

        memset(ret, 0, sizeof(*ret));
        r = parse_object(s, len, &tree, &root);
        if (r < 0)
                return r;
        if (json_member(&root, "error", false, &v) > 0) {
                const char *cls = NULL, *desc = NULL;
                ret->kind = QGA_WIRE_ERROR;
                (void) json_get_string_lenient(&v, "class", &cls);
                (void) json_get_string_lenient(&v, "desc", &desc);
                /* A bare string: not QMP, but seen in libvirt's test corpus. */
                if (json_is_string(&v) && json_read_string_ref(&v, &desc, NULL) < 0)
                        desc = NULL; /* a NUL character in it */
                if ((cls && !(ret->error_class = strdup(cls))) ||
                    (desc && !(ret->error_desc = strdup(desc)))) {
                        qga_wire_reply_clear(ret);
                        return -ENOMEM;
                }
        } else if (json_member(&root, "return", false, &v) > 0) {
                ret->kind = QGA_WIRE_RETURN;
                if (json_node_to_string(&v, &ret->return_json) < 0)
                        return -ENOMEM;
        } else
                ret->kind = QGA_WIRE_OTHER;
        return 0;
}

bool qga_wire_is_sync_reply(const char *s, size_t len, uint64_t id) {
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        JsonNode root;
        uint64_t got;

        if (parse_object(s, len, &tree, &root) < 0)
                return false;
        return json_get_u64_lenient(&root, "return", 0, UINT64_MAX, &got) && got == id;
}

int qga_wire_request(const char *command, const char *args_json, char **ret) {
        _cleanup_free_ char *name = NULL;
        char *line;

        if (!command || !*command)
                return err_set(-EINVAL, "QGA: empty command name");
        if (json_quote(command, &name) < 0)
                return -ENOMEM;
        /* A raw 0xFF (invalid UTF-8) would make the agent drop the request. */
        if (strchr(name, '\xff') || (args_json && strchr(args_json, '\xff')))
                return err_set(-EINVAL, "QGA command '%s': arguments contain a 0xFF byte", command);
        /* The compact form of {"execute", "arguments"}, as core/json writes it. */
        if (asprintf(&line, "{\"execute\":%s%s%s}\n", name, args_json ? ",\"arguments\":" : "",
                     args_json ? args_json : "") < 0)
                return -ENOMEM;
        *ret = line;
        return 0;
}

int qga_wire_parse_return(const char *return_json, JsonValue **ret_tree, JsonNode *ret_root) {
        JsonValue *tree = NULL;
        int r;

        /* No text is what JSON null reads as. */
        if (return_json && (r = json_parse(return_json, strlen(return_json), &qga_wire_json, &tree)) < 0)
                return r == -ENOMEM ? r : err_prefix(-EPROTO, "reply is not valid JSON");
        *ret_tree = tree;
        json_node_root(tree, ret_root);
        snprintf(ret_root->path, sizeof(ret_root->path), "return");
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
        _cleanup_(json_unrefp) JsonValue *tree = NULL;
        _cleanup_(qga_wire_info_freep) QgaInfo *info = calloc(1, sizeof(*info));
        const char *version;
        JsonNode ret, cmds;
        size_t n;
        int r;

        if (!info)
                return -ENOMEM;
        if ((r = qga_wire_parse_return(return_json, &tree, &ret)) < 0)
                return r;
        if (!json_is_object(&ret))
                return err_set(-EPROTO, "guest-info returned no object");
        if (!json_get_string_lenient(&ret, "version", &version))
                return err_set(-EPROTO, "guest-info has no \"version\"");
        text_copy_utf8(info->version, sizeof(info->version), version);
        if (!json_get_array_lenient(&ret, "supported_commands", &cmds, &n))
                return err_set(-EPROTO, "guest-info has no \"supported_commands\" list");
        info->commands = calloc(n ? n : 1, sizeof(*info->commands));
        if (!info->commands)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *name;
                bool enabled;
                JsonNode e;

                json_array_at(&cmds, i, &e);
                if (!json_get_string_lenient(&e, "name", &name) || !json_get_bool_lenient(&e, "enabled", &enabled))
                        return err_set(-EPROTO, "guest-info command %zu has no name or no enabled flag", i);
                if (strlen(name) >= sizeof(info->commands[0].name)) {
                        /* No command of ours has such a name; keep the rest usable. */
                        log_debug("guest-info: ignoring command with a %zu-byte name", strlen(name));
                        continue;
                }
                strcpy(info->commands[info->n_commands].name, name);
                info->commands[info->n_commands].enabled = enabled;
                info->n_commands++;
        }
        *out = TAKE_PTR(info);
        return 0;
}
