/* A QAPI schema checker for the fake QEMU (tests only).
 *
 * Loads a `query-qmp-schema` reply (QEMU's introspection of every command,
 * type and event) and checks a command the client sent the way QEMU's own
 * input visitor would: the command exists, every argument is a member of
 * its argument type with the right JSON type (int, str, bool, number, enum
 * value, array, object, alternate, flat union variant), no unknown member,
 * every required member present.  Only the top-level keys `execute`,
 * `arguments` and `id` are allowed (Drover never negotiates OOB).
 */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct QapiSchema QapiSchema;

/* Load a query-qmp-schema reply ({"return": [...]}) from @path.  NULL (with
 * a message on stderr) if the file is missing or not a schema. */
QapiSchema *qapi_schema_load(const char *path);
void qapi_schema_free(QapiSchema *s);
/* Number of entries (1051 for QEMU 7.2.22). */
size_t qapi_schema_size(const QapiSchema *s);

/* Check one client-to-QEMU command object.  Returns true when QEMU would
 * accept it; false with the reason in @why otherwise. */
bool qapi_schema_check_command(const QapiSchema *s, json_object *cmd, char *why, size_t why_size);
/* Same, from JSON text. */
bool qapi_schema_check_command_text(const QapiSchema *s, const char *text, char *why,
                                    size_t why_size);
