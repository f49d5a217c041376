/* Strict-JSON helpers (see agent-json.h). */
#include "agent-json.h"

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
