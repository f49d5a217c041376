/* libFuzzer harness: what QEMU's monitor sends, as read by core/qmp-wire.c
 * and the typed reply readers of core/qmp-commands.c.
 *
 * The first byte says whether the greeting was seen; the rest is one
 * message (no line end), classified by qmp_wire_parse().  A reply's
 * "return" text and an event's "data" text then go through every typed
 * reader (query-status, query-migrate, query-migrate-parameters,
 * query-migrate-capabilities, query-version), and so does the whole
 * message, so the readers also see input the classifier would refuse.
 * Nothing is kept between runs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fuzz-util.h"
#include "qmp-priv.h"
#include "qmp-wire.h"
#include "qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_return(const char *text) {
        QmpStatus st;
        MigrationStats stats;
        MigrationParams params;
        MigrationCaps caps;
        QmpVersion v;
        JsonValue *tree = NULL;
        JsonNode root;

        (void) qmp_parse_status(text, &st);
        (void) qmp_parse_migrate_stats(text, &stats);
        (void) qmp_parse_migrate_params(text, &params);
        (void) qmp_parse_migrate_caps(text, &caps);
        (void) qmp_parse_version(text, &v);
        if (qmp_wire_parse_return(text, "fuzz", &tree, &root) == 0 && tree) {
                (void) qmp_wire_read_version(&root, "fuzz", &v);
                json_unref(tree);
        }
        err_clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                init = true;
        }
        if (size < 1)
                return 0;
        bool greeted = data[0] & 1;
        char *text = malloc(size);
        if (!text)
                return 0;
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';

        QmpWireMessage msg = { 0 };
        if (qmp_wire_parse(text, size - 1, greeted, &msg) == 0) {
                if (msg.return_json)
                        read_return(msg.return_json);
                if (msg.data_json)
                        read_return(msg.data_json);
                qmp_wire_message_clear(&msg);
        }
        err_clear();
        /* the readers take NUL-terminated text: embedded NULs cut it short */
        read_return(text);
        free(text);
        return 0;
}
