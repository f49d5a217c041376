/* libFuzzer harness: the status-file readers of core/status.c, the record
 * restart recovery trusts.
 *
 * The input is read as a status file twice: from memory
 * (status_record_from_json) and as a file (status_read on a memfd, which
 * adds the size cap and the file reading).  A record that reads must also
 * survive the round trip restart recovery relies on: written back
 * (status_record_to_json) it reads again, and writing that gives the same
 * text; a failure aborts, as a finding.  Nothing is kept between runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "fuzz-util.h"
#include "status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const VmStatusRecord *rec) {
        char *a = NULL, *b = NULL;
        VmStatusRecord again = { 0 };
        if (status_record_to_json(rec, &a) < 0)
                return; /* e.g. out of memory; not a reader's finding */
        if (status_record_from_json(a, strlen(a), &again) < 0) {
                fprintf(stderr, "status round trip: the written record does not read: %s\n%s\n", err_msg(), a);
                abort();
        }
        if (status_record_to_json(&again, &b) == 0 && strcmp(a, b) != 0) {
                fprintf(stderr, "status round trip: the text changed:\n%s\n%s\n", a, b);
                abort();
        }
        free(a);
        free(b);
        status_record_clear(&again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                init = true;
        }
        VmStatusRecord rec = { 0 };
        if (status_record_from_json((const char *) data, size, &rec) == 0) {
                round_trip(&rec);
                status_record_clear(&rec);
        }
        err_clear();

        char path[64];
        int fd = fuzz_memfd_path(data, size, path);
        if (status_read(path, &rec) == 0)
                status_record_clear(&rec);
        close(fd);
        err_clear();
        return 0;
}
