/* Shared set-up of the core migration test and demo: two QEMU processes
 * with the dirtying guest, a Vm for each with its monitor attached. */
#pragma once

#include "qemuproc.h"
#include "vm.h"

typedef struct MigSide {
        TuQemu q;
        Vm *vm;
        char state_dir[300];
} MigSide;

/* Start QEMU (@incoming: -S -incoming defer), create the Vm (status files in
 * dir/state-NAME), connect and attach the monitor, read the run state. */
int migside_start(MigSide *s, const char *dir, const char *name, const char *append, int mem_mib,
                  bool incoming);
/* Destroy the VM if it still runs, drop it, kill QEMU. */
void migside_stop(MigSide *s);
