/* drover-agent: the daemon that owns one host's QEMU processes.
 *
 * An Agent holds the configuration, the VM registry (core/registry.h) and
 * the event bus.  Each registered Vm carries an AgentVm (its parsed
 * definition) as VmOps.opaque.  The lifecycle operations below follow the
 * patterns of docs/threading.md: queries copy snapshots, state changes take
 * jobs, slow preparation (host checks, taps, exec, waiting for the monitor)
 * runs inside the START async job with no lock held.
 *
 * Guests outlive the agent: QEMU is started in its own session (double
 * fork) and is never killed when the agent stops.  agent_reconnect_all()
 * finds them again from the status files at start.
 *
 * Every function returns 0 or -errno with an err_set() detail, which the RPC
 * layer maps to a gRPC status once (agent-rpc.c).
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent-config.h"
#include "agent-def.h"
#include "agent-events.h"
#include "registry.h"
#include "vm.h"

typedef struct MigrationTable MigrationTable;
typedef struct AgentOps AgentOps;
typedef struct AgentPeerCache AgentPeerCache;

/* A QEMU of this host that belongs to a guest name (its pidfile and the
 * monitor socket on its command line are in our run folder) but that no
 * readable status record accounts for: its status file was quarantined, or
 * its record names another pid.  Found at start (agent_reconnect_all), never
 * touched: listed, counted, and its name refused until it is gone
 * (docs/agent.md, "Unmanaged guests"). */
typedef struct AgentUnmanaged {
        char name[VM_NAME_MAX];
        char uuid[VM_UUID_LEN];       /* from its command line (-uuid), "" if absent */
        pid_t pid;
        uint64_t pid_start_time;      /* to tell it from a reused pid */
        uint64_t memory_mib;          /* its -m, 0 if unreadable */
        uint32_t vcpus;               /* its -smp, 0 if unreadable */
        char cpu_model[64];           /* its -cpu */
        char qmp_path[sizeof(((GuestPaths *) 0)->qmp)]; /* its monitor socket */
        char file[VM_PATH_MAX + 96];  /* the quarantined status file, "" if none */
        char why[1024];               /* "status file quarantined: <reason>; QEMU pid N still runs",
                                       * or "status file unreadable, not moved: <error> (<reason>); ..." */
} AgentUnmanaged;

typedef struct Agent {
        AgentConfig cfg;              /* immutable after agent_new */
        MigrationTable *migrations;   /* immutable pointer; the table locks itself */
        AgentOps *ops;                /* immutable pointer; the operation table locks itself (agent-ops.h) */
        VmRegistry *vms;              /* immutable pointer; the registry locks itself */
        EventBus *events;             /* immutable pointer; the bus locks itself */
        AgentPeerCache *peers;        /* immutable pointer; the cache locks itself (agent-peer.h) */
        uint64_t started_ns;          /* immutable */
        atomic_uint rpcs_in_flight;   /* atomic */
        atomic_ullong op_counter;     /* atomic */
        atomic_bool stopping;         /* atomic: background threads end */
        atomic_int background;        /* atomic: migration and operation threads, watchdogs alive */
        pthread_t recover_thread;     /* main thread only */
        bool recover_started;         /* main thread only */
        AgentUnmanaged *unmanaged;    /* immutable after agent_reconnect_all (before any RPC) */
        size_t n_unmanaged;           /* likewise */
} Agent;

/* A source's post-copy recovery of one guest (agent-migrate-postcopy.c):
 * the retry policy's inputs for the current pause.  In memory only: an
 * agent restarted during a pause starts a fresh budget. */
typedef struct AgentPostcopy {
        uint64_t paused_ns;   /* when this pause was first seen (0: not paused) */
        uint64_t next_ns;     /* no attempt before this */
        unsigned attempts;    /* attempts during this pause */
        bool busy;            /* a thread is making an attempt */
} AgentPostcopy;

/* Per-VM agent data, VmOps.opaque of every agent VM. */
typedef struct AgentVm {
        Agent *agent;                 /* immutable */
        GuestDef def;                 /* immutable while the VM is registered */
        GuestPaths paths;             /* immutable */
        bool def_skip_time_sync;      /* lock: vm->lock; set by an incoming migration's parameters */
        uint32_t def_completion_s_per_gib; /* lock: vm->lock; likewise (0 after a restart: the default) */
        AgentPostcopy pc;             /* lock: vm->lock */
} AgentVm;

/* Create the agent: folders (0700), registry, event bus.  No guests yet. */
int agent_new(const AgentConfig *cfg, Agent **ret);
/* Whether QEMU here can get the userfaultfd post-copy needs on the
 * destination (vm.unprivileged_userfaultfd is not 0: QEMU runs without
 * capabilities).  Read from the kernel on every call. */
bool agent_postcopy_available(void);
/* Drop every VM (monitors closed; QEMU processes keep running). */
void agent_free(Agent *a);

/* At start: load every status file, reconnect to live QEMUs, kill guests
 * that were half-started, mark vanished ones shut off.  Bad status files are
 * quarantined; a QEMU that still runs for one becomes an unmanaged guest.
 * Call it once, before the RPC server starts.  Returns the number of guests
 * loaded. */
int agent_reconnect_all(Agent *a);

/* The unmanaged guests whose QEMU still runs, copied into a malloc'ed
 * array (free() it; NULL when there are none).  Returns their number. */
int agent_unmanaged_list(Agent *a, AgentUnmanaged **ret);

/* The operation id of a request into @ret: a new one when @given is NULL
 * or empty, else @given when it passes op_id_check() (vmtypes.h).  0, or
 * -EINVAL with the rule it breaks: an id is never cut or replaced, since
 * it is stored and compared whole (INVALID_ARGUMENT at the RPC boundary). */
int agent_op_id(Agent *a, const char *given, char ret[OP_ID_MAX]);

/* Start QEMU for an incoming migration of @vm ("-S -incoming defer"): the
 * host checks of Start (files inside the image roots, opened by the agent
 * and inherited by QEMU), -runas qemu_user, exec in its own session, record
 * its pid, wait for its monitor (start_timeout_ms) and attach it, all with
 * no lock held until the attach.  The caller holds @vm's MIGRATION_IN job.
 * On failure QEMU is killed.  -ECANCELED if a destroy came meanwhile;
 * -EBUSY, starting nothing, when a running unmanaged QEMU owns the guest's
 * name (AgentUnmanaged). */
int agent_vm_launch_incoming(Agent *a, Vm *vm, pid_t *ret_pid);

/* TEST-ONLY: sleep when DROVER_TEST_HOLD names @phase (and, when it names a
 * guest, @guest) (docs/agent.md). */
void agent_test_hold(JobPhase phase, const char *guest);
/* The same at a named point that is not a phase ("drop-decided": recovery
 * decided to drop an incoming copy and marked it, before acting). */
void agent_test_hold_at(const char *point, const char *guest);

int agent_vm_define(Agent *a, const char *json, size_t len, const char *op, Vm **ret_vm);
int agent_vm_undefine(Agent *a, Vm *vm, const char *op);
int agent_vm_start(Agent *a, Vm *vm, const char *op, bool paused, int64_t timeout_ms);
int agent_vm_shutdown(Agent *a, Vm *vm, const char *op, int64_t timeout_ms, bool force);
int agent_vm_destroy(Agent *a, Vm *vm, const char *op);
int agent_vm_suspend(Agent *a, Vm *vm, const char *op);
int agent_vm_resume(Agent *a, Vm *vm, const char *op);

int agent_vm_guest_ping(Agent *a, Vm *vm, const char *op, uint64_t *ret_us);
/* Copies the enabled/disabled command names into caller arrays. */
typedef struct GaGuestInfo {
        char version[64];
        size_t n_enabled, n_disabled;
        char (*enabled)[64];  /* malloc'ed */
        char (*disabled)[64]; /* malloc'ed */
} GaGuestInfo;
int agent_vm_guest_info(Agent *a, Vm *vm, const char *op, GaGuestInfo *ret);
void ga_guest_info_clear(GaGuestInfo *info);
/* Set the guest clock (@ns since the epoch, 0 = now, @from_rtc: from the
 * guest's RTC), then rtc-reset-reinjection on the monitor (best effort).
 * Reports the guest clock before and after (0 when get-time is missing). */
int agent_vm_guest_set_time(Agent *a, Vm *vm, const char *op, int64_t ns, bool from_rtc,
                            int64_t *ret_before, int64_t *ret_after);
/* Read the guest clock (guest-get-time, ns since the epoch); changes nothing. */
int agent_vm_guest_get_time(Agent *a, Vm *vm, const char *op, int64_t *ret_ns);

/* Publish an event about @vm (state and reason from its snapshot). */
void agent_emit(Agent *a, Vm *vm, const char *kind, const char *fmt, ...) _printf_(4, 5);
