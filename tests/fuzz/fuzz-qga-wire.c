/* libFuzzer harness: the guest agent's reply lines as read by
 * core/qga-wire.c: classification (qga_wire_parse_reply), recognition of
 * our sync reply (qga_wire_is_sync_reply, against a fixed id and against
 * the number the input itself carries), the "return" reader and the
 * guest-info reader, which also sees the raw input.  Nothing is kept
 * between runs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "fuzz-util.h"
#include "qga-wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_return(const char *text) {
        JsonValue *tree = NULL;
        JsonNode root;
        QgaInfo *info = NULL;

        if (qga_wire_parse_return(text, &tree, &root) == 0)
                json_unref(tree);
        if (qga_wire_parse_info(text, &info) == 0)
                qga_wire_info_free(info);
        err_clear();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                init = true;
        }
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';

        QgaWireReply r = { 0 };
        if (qga_wire_parse_reply(text, size, &r) == 0) {
                if (r.return_json) {
                        read_return(r.return_json);
                        char *end;
                        unsigned long long id = strtoull(r.return_json, &end, 10);
                        (void) qga_wire_is_sync_reply(text, size, id);
                }
                qga_wire_reply_clear(&r);
        }
        (void) qga_wire_is_sync_reply(text, size, 1234567890123ULL);
        err_clear();
        read_return(text);
        free(text);
        return 0;
}
