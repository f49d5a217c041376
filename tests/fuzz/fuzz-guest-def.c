/* libFuzzer harness: guest definitions (agent/agent-def.c), the JSON a
 * Define request carries.
 *
 * The input is parsed by guest_def_parse(); a definition that parses is
 * turned into QEMU's command line (guest_paths, guest_build_argv, both
 * accelerators, incoming or not, tap names) and must survive the round
 * trip agent-def.h promises: its canonical text parses again into the same
 * canonical text.  A broken round trip aborts, as a finding.  Nothing is
 * kept between runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-def.h"
#include "err.h"
#include "fuzz-util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void round_trip(const GuestDef *def) {
        char *a = NULL, *b = NULL;
        GuestDef *again = calloc(1, sizeof(*again));
        if (!again || guest_def_to_json(def, &a) < 0) {
                free(again);
                return;
        }
        if (guest_def_parse(a, strlen(a), again) < 0) {
                fprintf(stderr, "guest definition round trip: the canonical text does not parse: %s\n%s\n",
                        err_msg(), a);
                abort();
        }
        if (guest_def_to_json(again, &b) == 0 && strcmp(a, b) != 0) {
                fprintf(stderr, "guest definition round trip: the text changed:\n%s\n%s\n", a, b);
                abort();
        }
        free(a);
        free(b);
        free(again);
}

static void command_line(const GuestDef *def) {
        GuestPaths paths;
        char **argv = NULL;
        char tap[16];
        if (guest_paths("/run/drover/agent", def->name, &paths) < 0)
                return;
        /* descriptor numbers only: the builder prints them, opens nothing */
        GuestFiles files = { .kernel = 10, .initrd = 11 };
        for (size_t i = 0; i < GUEST_MAX_DISKS; i++) {
                files.disk_ro[i] = 12 + 2 * (int) i;
                files.disk_rw[i] = def->disks[i].readonly ? -1 : 13 + 2 * (int) i;
        }
        for (int i = 0; i < 8; i++) {
                GuestLaunch l = { .qemu_binary = "/usr/bin/qemu-system-x86_64", .accel = i & 1 ? "kvm" : "tcg",
                                  .incoming = i & 2, .user = i & 4 ? "nobody" : NULL,
                                  .chroot = i & 4 ? "/var/empty" : NULL };
                if (guest_build_argv(def, &paths, &files, &l, &argv) == 0)
                        guest_argv_free(argv);
        }
        for (size_t i = 0; i < def->n_nics; i++)
                guest_tap_name(def->uuid, i, tap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                init = true;
        }
        GuestDef *def = calloc(1, sizeof(*def));
        if (!def)
                return 0;
        if (guest_def_parse((const char *) data, size, def) == 0) {
                command_line(def);
                round_trip(def);
        }
        err_clear();
        free(def);
        return 0;
}
