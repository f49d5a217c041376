/* libFuzzer harness: the agent's configuration (agent/agent-config.c).
 *
 * The input is a configuration file: parsed from memory
 * (agent_config_parse) and from a file (agent_config_load on a memfd); a
 * configuration that parses is validated (absolute paths, listen
 * addresses, dev_mode on loopback only; the file checks only stat).  The
 * command-line overrides are fuzzed too: every "name=value" line of the
 * input is applied with agent_config_set() before validation.  Nothing is
 * kept between runs.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent-config.h"
#include "err.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Apply each "name=value" line of @data to @c. */
static void overrides(AgentConfig *c, const uint8_t *data, size_t size) {
        char *text = malloc(size + 1), *save = NULL;
        if (!text)
                return;
        memcpy(text, data, size);
        text[size] = '\0';
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *eq = strchr(line, '=');
                if (!eq)
                        continue;
                *eq = '\0';
                (void) agent_config_set(c, line, eq + 1);
        }
        free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                init = true;
        }
        AgentConfig *c = calloc(1, sizeof(*c));
        if (!c)
                return 0;
        if (agent_config_parse((const char *) data, size, c) == 0)
                (void) agent_config_validate(c);
        err_clear();

        char path[64];
        int fd = fuzz_memfd_path(data, size, path);
        if (agent_config_load(path, c) == 0)
                (void) agent_config_validate(c);
        close(fd);
        err_clear();

        agent_config_defaults(c);
        overrides(c, data, size);
        (void) agent_config_validate(c);
        err_clear();
        free(c);
        return 0;
}
