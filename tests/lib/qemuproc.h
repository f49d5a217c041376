/* Start real QEMU processes with the tiny dirtying guest for tests and the
 * core demo.  Children are started through tu_spawn (killed at exit, and
 * with the parent through PDEATHSIG).
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

typedef struct TuQemuOpts {
        const char *name;       /* used for file names in dir */
        const char *dir;        /* where sockets, serial log and stderr go */
        const char *guest_elf;  /* NULL: $DROVER_GUEST_ELF */
        int mem_mib;            /* default 64 */
        const char *append;     /* guest command line, e.g. "mib=32 rate=20" */
        bool incoming;          /* -S -incoming defer */
        bool qga;               /* add a virtio-serial guest-agent chardev socket */
        const char *netns;      /* run inside `ip netns exec NETNS` when set */
} TuQemuOpts;

typedef struct TuQemu {
        pid_t pid;
        char qmp_path[256];
        char qga_path[256];
        char serial_path[256];
        char log_path[256];
} TuQemu;

/* The QEMU binary, or NULL if not installed. */
const char *tu_qemu_binary(void);
/* The dirtying guest ELF ($DROVER_GUEST_ELF), or NULL. */
const char *tu_guest_elf(void);
/* Skip the test (exit 77 with a reason) unless QEMU and the guest exist. */
void tu_require_qemu(void);
/* Start QEMU and wait (up to 10 s) until its QMP socket accepts. */
int tu_qemu_start(const TuQemuOpts *o, TuQemu *ret);
/* Wait up to @timeout_ms for the serial log to contain @needle. */
bool tu_serial_wait(const TuQemu *q, const char *needle, int timeout_ms);
/* Number of "S " progress lines in the serial log. */
int tu_serial_seconds(const TuQemu *q);
/* Live QEMU (qemu-system-*) processes, ours or not, whose command line
 * contains @needle (e.g. a test's scratch folder); zombies do not count. */
int tu_qemus_under(const char *needle);
/* A free TCP port on 127.0.0.1 (bound and released). */
int tu_free_port(void);
