/* Guest definitions: the JSON document of the Define RPC, validated into a
 * GuestDef, serialised back, and turned into a QEMU command line.
 *
 * The JSON members (docs/agent.md is the reference):
 *   name (string, required; vm_name_is_valid)
 *   uuid (string; generated when absent)
 *   memory_mib (integer 16..1048576, required)
 *   vcpus (integer 1..256, default 1)
 *   machine (string, default "pc"; one of pc, q35, microvm or pc-i440fx-N.N or pc-q35-N.N)
 *   cpu_model (string, default "qemu64"; a model name only: [A-Za-z0-9_.-],
 *          so no ",prop=value" can reach -cpu)
 *   kernel, initrd (normalised absolute paths, "" = none; kernel required unless
 *          there is a disk: without a kernel, disks[0] is the boot disk),
 *   append (string, ≤ 4096 bytes)
 *   disks (array ≤ 16 of { path (normalised absolute, required), format ("raw"|"qcow2", default raw),
 *          cache ("none"|"writeback"|"writethrough"|"directsync"|"unsafe", default "none"),
 *          shared (bool, default false), readonly (bool),
 *          storage ("shared"|"local", default "shared": a local disk is copied
 *          to the destination on live migration, docs/migration.md "Local disks";
 *          "storage": "local" with "shared": true is refused) })
 *   nics (array ≤ 8 of { bridge (string, required, ≤ 15 chars, netdev name rules),
 *          mac (string "52:54:00:xx:xx:xx" form, generated when absent; unicast),
 *          model ("virtio-net-pci"|"e1000", default virtio-net-pci) })
 *   guest_agent (bool, default false): add the virtio-serial QGA channel
 *   serial_log (bool, default true): COM1 to <run>/<name>.serial
 * A normalised path has no "." or ".." component, no "//" and no trailing
 * "/"; where it may point (image roots, no symbolic links, file types) is
 * agent-files.h's rule, checked against the host's configuration.
 * Unknown and repeated members are rejected.  Every error is -EINVAL with a
 * detail naming the member, e.g.
 * "definition: 'disks[1].format' must be raw or qcow2, not 'vmdk'".
 *
 * Only agent-def.c includes json-c (a wire module).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GUEST_MAX_DISKS 16
#define GUEST_MAX_NICS 8
#define GUEST_DEF_MAX_BYTES (64u * 1024)

typedef struct GuestDisk {
        char path[256];
        char format[8];   /* raw | qcow2 */
        char cache[16];
        bool shared;
        bool readonly;
        bool local;       /* "storage": "local": copied over NBD on migration */
} GuestDisk;

typedef struct GuestNic {
        char bridge[16];
        char mac[18];     /* aa:bb:cc:dd:ee:ff */
        char model[32];
} GuestNic;

typedef struct GuestDef {
        char name[64];
        char uuid[37];
        uint64_t memory_mib;
        unsigned vcpus;
        char machine[32];
        char cpu_model[64];
        char kernel[256];
        char initrd[256];
        char append[4097];
        size_t n_disks;
        GuestDisk disks[GUEST_MAX_DISKS];
        size_t n_nics;
        GuestNic nics[GUEST_MAX_NICS];
        bool guest_agent;
        bool serial_log;
} GuestDef;

/* Parse and validate @json (at most GUEST_DEF_MAX_BYTES).  Fills defaults,
 * generates a UUID and NIC MACs when absent.  -EINVAL/-E2BIG with a detail. */
int guest_def_parse(const char *json, size_t len, GuestDef *ret);
/* Canonical JSON text of @def (all members, defaults filled); malloc'ed.
 * guest_def_parse(guest_def_to_json(d)) == d. */
int guest_def_to_json(const GuestDef *def, char **ret_json);

/* @p is absolute and normalised: no empty, "." or ".." component, no
 * trailing "/", no control characters ("/" itself is not). */
bool guest_path_is_normal(const char *p);

/* The files QEMU gets for a guest, opened by the agent (agent-files.h,
 * guest_def_check_host) and passed down as inherited descriptors, so QEMU
 * never resolves a path of the definition itself.  -1 = none. */
typedef struct GuestFiles {
        int kernel;                     /* O_RDONLY */
        int initrd;                     /* O_RDONLY */
        int disk_ro[GUEST_MAX_DISKS];   /* O_RDONLY, every disk */
        int disk_rw[GUEST_MAX_DISKS];   /* O_RDWR, disks not marked readonly */
        bool disk_blk[GUEST_MAX_DISKS]; /* a block device: QEMU's host_device driver */
} GuestFiles;

/* How QEMU is run, beyond the definition. */
typedef struct GuestLaunch {
        const char *qemu_binary;
        const char *accel;   /* "tcg" or "kvm" */
        bool incoming;       /* "-S -incoming defer" */
        const char *user;    /* -runas USER once started; NULL or "" = stay (tests only) */
        const char *chroot;  /* -chroot DIR once started; NULL or "" = none */
} GuestLaunch;

/* Paths of one guest's runtime files under @run_dir. */
typedef struct GuestPaths {
        char qmp[300];     /* <run>/<name>.qmp */
        char qga[300];     /* <run>/<name>.qga */
        char serial[300];  /* <run>/<name>.serial */
        char log[300];     /* <run>/<name>.log  (QEMU's stderr) */
        char pidfile[300]; /* <run>/<name>.pid */
} GuestPaths;

/* -ENAMETOOLONG when a path does not fit its field or a socket path does not
 * fit a unix socket address (107 bytes); @ret is written only on success. */
int guest_paths(const char *run_dir, const char *name, GuestPaths *ret);

/* The QEMU command line for @def: a NULL-terminated argv (malloc'ed array of
 * malloc'ed strings; free with guest_argv_free).  Always: -accel from
 * @l->accel ("tcg" or "kvm"), -name guest=NAME, -uuid, -machine, -cpu, -m,
 * -smp, -nodefaults -no-user-config -display none, -sandbox on (spawn and
 * resourcecontrol denied, obsolete allowed; elevateprivileges denied
 * unless -runas needs its setuid), -runas/-chroot from @l,
 * -qmp unix:<qmp>,server=on,wait=off, -pidfile, -daemonize is NOT used,
 * -serial file:<serial> (or none), -kernel/-initrd /proc/self/fd/N of
 * @files and -append when set, per disk -add-fd (its descriptors in fd set
 * N = index) and a -blockdev (JSON) on /dev/fdset/N + -device pair (cache
 * mode mapped to cache.direct / cache.no-flush; a qcow2 node with "backing":
 * null, so no backing file is ever opened), one -netdev
 * tap,ifname=<tap>,script=no,downscript=no +-device per NIC with its MAC
 * (tap names from guest_tap_name), the QGA virtio-serial chardev socket when
 * guest_agent, and "-S -incoming defer" when @l->incoming.  The descriptors
 * of @files must reach QEMU open at the same numbers.  -EINVAL for an
 * unknown accel or a file of @def without a descriptor, -ENOMEM. */
int guest_build_argv(const GuestDef *def, const GuestPaths *paths, const GuestFiles *files,
                     const GuestLaunch *l, char ***ret_argv);
void guest_argv_free(char **argv);
/* A tap device name for NIC @index of the guest with @uuid: "dv" + 8 hex
 * digits of a hash (FNV-1a) of the lower-case UUID + "n" + index (≤ 15
 * chars, stable across restarts; UUIDs sharing a prefix, such as v7 ones,
 * still differ).  32 bits can collide: tap creation must fail, not share. */
void guest_tap_name(const char *uuid, size_t index, char ret[16]);
