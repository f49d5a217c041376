/* Shared set-up of the core migration test and demo (see migtest-common.h). */
#define _GNU_SOURCE
#include "migtest-common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "qmp.h"
#include "testutil.h"

int migside_start(MigSide *s, const char *dir, const char *name, const char *append, int mem_mib,
                  bool incoming) {
        TuQemuOpts o = { .name = name, .dir = dir, .mem_mib = mem_mib, .append = append,
                         .incoming = incoming };
        char uuid[VM_UUID_LEN];
        QmpMonitor *mon;
        QmpStatus st;
        int r;

        memset(s, 0, sizeof(*s));
        if ((r = tu_qemu_start(&o, &s->q)) < 0)
                return err_set(r, "QEMU %s did not start", name);
        snprintf(s->state_dir, sizeof(s->state_dir), "%s/state-%s", dir, name);
        mkdir(s->state_dir, 0700);
        /* both sides carry the same guest identity, as two hosts would */
        snprintf(uuid, sizeof(uuid), "6d1d2a4e-0000-4000-8000-00000000c0de");
        if ((r = vm_new("guest", uuid, s->state_dir, NULL, &s->vm)) < 0)
                return r;
        QmpCallbacks cb = { .event = vm_handle_qmp_event, .eof = vm_handle_qmp_eof, .opaque = s->vm };
        if ((r = qmp_monitor_connect(s->q.qmp_path, &cb, deadline_in_ms(5000), &mon)) < 0)
                return r;
        if ((r = qmp_query_status(mon, -1, &st)) < 0) {
                qmp_monitor_close(mon);
                return r;
        }
        vm_lock(s->vm);
        snprintf(s->vm->qmp_path, sizeof(s->vm->qmp_path), "%s", s->q.qmp_path);
        vm_attach_monitor_locked(s->vm, mon, s->q.pid);
        if (st.running)
                vm_set_state_locked(s->vm, VM_STATE_RUNNING, VM_REASON_BOOTED);
        else
                vm_set_state_locked(s->vm, VM_STATE_PAUSED,
                                    incoming ? VM_REASON_MIGRATION : VM_REASON_STARTING_UP);
        vm_unlock(s->vm);
        return vm_save_status(s->vm);
}

void migside_stop(MigSide *s) {
        if (s->vm) {
                vm_lock(s->vm);
                bool active = vm_is_active_locked(s->vm);
                vm_unlock(s->vm);
                if (active)
                        (void) vm_destroy(s->vm, "cleanup", VM_REASON_DESTROYED, 5000);
                vm_unref(s->vm);
                s->vm = NULL;
        }
        tu_kill(s->q.pid);
        s->q.pid = 0;
}
