/* Strict-JSON helpers (see agent-json.h). */
#include "agent-json.h"

#include <string.h>

size_t json_text_member_count(const char *s, size_t len) {
        size_t n = 0;
        bool in_str = false;
        for (size_t i = 0; i < len; i++) {
                if (in_str) {
                        if (s[i] == '\\')
                                i++;
                        else if (s[i] == '"')
                                in_str = false;
                } else if (s[i] == '"')
                        in_str = true;
                else if (s[i] == ':')
                        n++;
        }
        return n;
}

size_t json_tree_member_count(json_object *v) {
        size_t n = 0;
        if (json_object_is_type(v, json_type_object)) {
                json_object_object_foreach(v, key, child) {
                        (void) key;
                        n += 1 + json_tree_member_count(child);
                }
        } else if (json_object_is_type(v, json_type_array)) {
                for (size_t i = 0; i < json_object_array_length(v); i++)
                        n += json_tree_member_count(json_object_array_get_idx(v, i));
        }
        return n;
}

const char *json_shown(const char *s, char buf[SHOWN_MAX + 4]) {
        size_t i = 0;
        for (; s[i] && i < SHOWN_MAX; i++)
                buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        if (s[i]) {
                memcpy(buf + i, "...", 3);
                i += 3;
        }
        buf[i] = '\0';
        return buf;
}
