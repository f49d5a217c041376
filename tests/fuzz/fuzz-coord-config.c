/* libFuzzer harness: the coordinator's configuration
 * (coordinator/coord-config.c), its seed inventory, anti-affinity groups
 * and migration defaults included.  coord_config_load() takes a path, so
 * the input is handed over as a memfd; a configuration that loads is
 * validated.  The CoordConfig is large (half a megabyte: the seed
 * inventory), so one static copy serves every run (a fresh one costs
 * thousands of page faults per run); coord_config_load() starts it over
 * from the defaults, so nothing is kept between runs.
 */
#include <stdint.h>
#include <unistd.h>

#include "coord.h"
#include "err.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                init = true;
        }
        static CoordConfig config;
        CoordConfig *c = &config;
        char path[64];
        int fd = fuzz_memfd_path(data, size, path);
        if (coord_config_load(path, c) == 0)
                (void) coord_config_validate(c);
        close(fd);
        err_clear();
        return 0;
}
