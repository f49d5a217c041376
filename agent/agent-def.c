/* Guest definitions (see agent-def.h): JSON in, a validated GuestDef, JSON
 * out, runtime paths and the QEMU command line (the host checks and the
 * image roots are agent-files.c's).
 *
 * Parsing is strict on purpose, because a definition comes from the network
 * and a typo must never silently change a guest: json-c in strict mode with
 * UTF-8 validation, no trailing data, no unknown or repeated members, no NUL
 * or control characters in strings, integers only where integers are meant.
 * Every error is -EINVAL (-E2BIG for an oversized document) and its detail
 * names the member path ("definition: 'disks[1].format' ...").  Values shown
 * in details are cut and reduced to printable ASCII, since a detail ends up
 * in a gRPC status and in logs.  An empty string means "not set" for kernel,
 * initrd and append (the canonical JSON writes them as ""), and "generate"
 * for uuid and a NIC's mac.  UUIDs and MACs are stored in lower case.
 * guest_def_to_json() writes every member in a fixed order, so
 * parse(to_json(d)) gives d back byte for byte.
 *
 * The command line is built from the GuestDef and the descriptors the agent
 * opened for its files (GuestFiles): no path of the definition reaches
 * QEMU, so QEMU never resolves one itself.  The source and destination of
 * a migration build the same devices in the same order.  Decisions:
 *  - Image locking stays on (QEMU's default).  It does not get in the way of
 *    migration on shared storage: an -incoming QEMU opens its images
 *    inactive and takes no write lock until it activates them at
 *    switchover, after the source has inactivated (unlocked) its own.  What
 *    locking does buy us is that a second QEMU started by mistake on the
 *    same image fails instead of corrupting it.  The integration test
 *    checks both.
 *  - Cache modes map as QEMU's own -drive cache= shorthand does:
 *      none         cache.direct=on,  cache.no-flush=off, write-cache=on
 *      writeback    cache.direct=off, cache.no-flush=off, write-cache=on
 *      writethrough cache.direct=off, cache.no-flush=off, write-cache=off
 *      directsync   cache.direct=on,  cache.no-flush=off, write-cache=off
 *      unsafe       cache.direct=off, cache.no-flush=on,  write-cache=on
 *    cache.* and read-only are set on the format node; the protocol node
 *    (file.*) inherits them.  -blockdev is given as JSON, so a qcow2 node
 *    can carry "backing": null: QEMU then never opens the backing file an
 *    image's header names (by path, as root, outside the image roots).
 *  - Values that QEMU splits on commas (-qmp, -chardev) get their commas
 *    doubled; -serial file:, -append and -pidfile take their value verbatim.
 *  - Disks come from fd sets (-add-fd, /dev/fdset/N): QEMU dups them, so
 *    a reopen still works after -runas/-chroot.  -kernel and -initrd are
 *    read by loaders that open a name, so they get /proc/self/fd/N: still
 *    the checked file, read before QEMU drops its privileges.
 *  - microvm gets pcie=on, so the same PCI devices work on every machine.
 *  - Without a kernel, disks[0] is the boot disk (bootindex=1).
 */
#define _GNU_SOURCE
#include "agent-def.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "json.h"
#include "vm.h"

#define PC_MAX_VCPUS 255
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *) 0)->sun_path) - 1)

static const char *const disk_formats[] = { "raw", "qcow2" };
static const char *const disk_storages[] = { "shared", "local" };
static const char *const cache_modes[] = { "none", "writeback", "writethrough", "directsync", "unsafe" };
static const char *const nic_models[] = { "virtio-net-pci", "e1000" };

static bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static bool in_list(const char *s, const char *const *list, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (streq(s, list[i]))
                        return true;
        return false;
}

/* "'<path>' <detail>", -EINVAL; guest_def_parse() adds "definition: ". */
static int bad(const char *path, const char *fmt, ...) _printf_(2, 3);
static int bad(const char *path, const char *fmt, ...) {
        char detail[ERR_MSG_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
        return err_set(-EINVAL, "'%s' %s", path, detail);
}

static bool has_control(const char *s) {
        for (; *s; s++)
                if ((unsigned char) *s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

/* An absolute path; "" is accepted (= not set) when @optional. */
static int get_path(const JsonNode *v, char *buf, size_t size, bool optional) {
        char sh[SHOWN_MAX + 4];
        int r = json_read_string(v, buf, size);
        if (r < 0)
                return r;
        if (!buf[0] && optional)
                return 0;
        if (buf[0] != '/')
                return bad(v->path, "must be an absolute path, not '%s'", text_shown(buf, sh));
        if (has_control(buf))
                return bad(v->path, "must not contain control characters");
        if (!guest_path_is_normal(buf))
                return bad(v->path, "must be a normalised path (no '.' or '..' component, no '//', no trailing "
                           "'/'), not '%s'", text_shown(buf, sh));
        return 0;
}

bool guest_path_is_normal(const char *p) {
        if (p[0] != '/' || !p[1] || has_control(p))
                return false;
        for (const char *c = p; *c; ) {
                const char *next = strchr(c + 1, '/');
                size_t n = next ? (size_t) (next - c - 1) : strlen(c + 1);
                /* c points at a '/', the component is c[1..n] */
                if (n == 0 || (n == 1 && c[1] == '.') || (n == 2 && c[1] == '.' && c[2] == '.'))
                        return false;
                if (!next)
                        break;
                c = next;
        }
        return true;
}

/* A string member that must satisfy @valid, described by @what for the
 * detail ("must be <what>, not '<value>'"); too long counts as invalid. */
static int get_str_as(const JsonNode *v, bool (*valid)(const char *), const char *what, char *buf, size_t size) {
        char sh[SHOWN_MAX + 4];
        const char *s;
        size_t n;
        int r = json_read_string_ref(v, &s, &n);
        if (r < 0)
                return r;
        if (n >= size || !valid(s))
                return bad(v->path, "must be %s, not '%s'", what, text_shown(s, sh));
        memcpy(buf, s, n + 1);
        return 0;
}

static int unknown_member(const JsonNode *v) {
        return bad(v->path, "is not a known member");
}

/* ---- member syntax ---- */

static bool machine_is_valid(const char *m) {
        const char *v = NULL;
        if (streq(m, "pc") || streq(m, "q35") || streq(m, "microvm"))
                return true;
        if (!strncmp(m, "pc-i440fx-", 10))
                v = m + 10;
        else if (!strncmp(m, "pc-q35-", 7))
                v = m + 7;
        if (!v || !*v)
                return false;
        for (; *v; v++)
                if (!((*v >= 'a' && *v <= 'z') || (*v >= 'A' && *v <= 'Z') || (*v >= '0' && *v <= '9') ||
                      *v == '.' || *v == '_'))
                        return false;
        return true;
}

static bool is_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* A model name, never a property list: QEMU's -cpu splits "model,prop=val",
 * so a ',' or '=' would let a definition set CPU properties. */
static bool cpu_model_is_valid(const char *s) {
        if (!is_alnum(s[0]))
                return false;
        for (; *s; s++)
                if (!is_alnum(*s) && !strchr("_.-", *s))
                        return false;
        return true;
}

/* Linux interface name rules, restricted to a portable character set. */
static bool bridge_is_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 15 || streq(s, ".") || streq(s, ".."))
                return false;
        for (; *s; s++)
                if (!is_alnum(*s) && !strchr("_.-", *s))
                        return false;
        return true;
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static bool mac_parse(const char *s, uint8_t b[6]) {
        if (strlen(s) != 17)
                return false;
        for (int i = 0; i < 6; i++) {
                int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);
                if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
                        return false;
                b[i] = (uint8_t) (hi << 4 | lo);
        }
        return true;
}

static void mac_format(const uint8_t b[6], char ret[18]) {
        snprintf(ret, 18, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
}

static void random_bytes(void *buf, size_t n) {
        uint8_t *p = buf;
        size_t done = 0;
        while (done < n) {
                ssize_t k = getrandom(p + done, n - done, 0);
                if (k > 0) {
                        done += (size_t) k;
                        continue;
                }
                if (k < 0 && errno == EINTR)
                        continue;
                /* no getrandom (old kernel, seccomp): weak but unique enough */
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                uint64_t t = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 30) ^ (uint64_t) (uintptr_t) buf;
                for (; done < n; done++, t = t * 6364136223846793005ULL + 1442695040888963407ULL)
                        p[done] = (uint8_t) (t >> 56);
        }
}

static bool format_is_valid(const char *s) {
        return in_list(s, disk_formats, ELEMENTSOF(disk_formats));
}

static bool storage_is_valid(const char *s) {
        return in_list(s, disk_storages, ELEMENTSOF(disk_storages));
}

static bool cache_is_valid(const char *s) {
        return in_list(s, cache_modes, ELEMENTSOF(cache_modes));
}

static bool model_is_valid(const char *s) {
        return in_list(s, nic_models, ELEMENTSOF(nic_models));
}

static bool uuid_or_empty(const char *s) {
        return !*s || vm_uuid_is_valid(s);
}

static bool mac_or_empty(const char *s) {
        uint8_t b[6];
        return !*s || mac_parse(s, b);
}

/* ---- parsing ---- */

static int parse_disk(const JsonNode *o, GuestDisk *d) {
        JsonIter it;
        const char *key;
        JsonNode v;
        int r = 0;

        if ((r = json_want_object(o)) < 0)
                return r;
        snprintf(d->format, sizeof(d->format), "raw");
        snprintf(d->cache, sizeof(d->cache), "none");

        for (json_iter_init(&it, o); json_iter_next(&it, &key, &v);) {
                if (streq(key, "path"))
                        r = get_path(&v, d->path, sizeof(d->path), false);
                else if (streq(key, "format"))
                        r = get_str_as(&v, format_is_valid, "raw or qcow2", d->format, sizeof(d->format));
                else if (streq(key, "cache"))
                        r = get_str_as(&v, cache_is_valid, "none, writeback, writethrough, directsync or unsafe",
                                       d->cache, sizeof(d->cache));
                else if (streq(key, "shared"))
                        r = json_read_bool(&v, &d->shared);
                else if (streq(key, "readonly"))
                        r = json_read_bool(&v, &d->readonly);
                else if (streq(key, "storage")) {
                        char storage[8];
                        r = get_str_as(&v, storage_is_valid, "shared or local", storage, sizeof(storage));
                        d->local = r >= 0 && streq(storage, "local");
                } else
                        r = unknown_member(&v);
                if (r < 0)
                        return r;
        }
        if (d->local && d->shared && json_member(o, "shared", false, &v) >= 0)
                return bad(v.path, "is true, and 'storage' says the disk is local");
        return json_member(o, "path", true, &v);
}

static int parse_mac(const JsonNode *v, char ret[18]) {
        char mac[18];
        uint8_t b[6];
        int r = get_str_as(v, mac_or_empty, "a MAC address like 52:54:00:12:34:56", mac, sizeof(mac));
        if (r < 0 || !mac[0])
                return r; /* "" is generated later */
        mac_parse(mac, b);
        if (b[0] & 1)
                return bad(v->path, "%s is a multicast address; use a unicast one (even first byte), "
                           "e.g. 52:54:00:xx:xx:xx", mac);
        if (!(b[0] | b[1] | b[2] | b[3] | b[4] | b[5]))
                return bad(v->path, "must not be 00:00:00:00:00:00");
        mac_format(b, ret);
        return 0;
}

static int parse_nic(const JsonNode *o, GuestNic *n) {
        JsonIter it;
        const char *key;
        JsonNode v;
        int r = 0;

        if ((r = json_want_object(o)) < 0)
                return r;
        snprintf(n->model, sizeof(n->model), "virtio-net-pci");

        for (json_iter_init(&it, o); json_iter_next(&it, &key, &v);) {
                if (streq(key, "bridge"))
                        r = get_str_as(&v, bridge_is_valid, "an interface name (1-15 of A-Z a-z 0-9 _ . -)",
                                       n->bridge, sizeof(n->bridge));
                else if (streq(key, "mac"))
                        r = parse_mac(&v, n->mac);
                else if (streq(key, "model"))
                        r = get_str_as(&v, model_is_valid, "virtio-net-pci or e1000", n->model, sizeof(n->model));
                else
                        r = unknown_member(&v);
                if (r < 0)
                        return r;
        }
        return json_member(o, "bridge", true, &v);
}

static int parse_member(const char *key, const JsonNode *v, GuestDef *d, bool *has_memory) {
        JsonNode e;
        int64_t x;
        int r;

        if (streq(key, "name"))
                return get_str_as(v, vm_name_is_valid, "1-63 of A-Z a-z 0-9 . _ - (not starting with . or -)",
                                  d->name, sizeof(d->name));
        if (streq(key, "uuid")) {
                if ((r = get_str_as(v, uuid_or_empty, "a UUID like 0b5d2c1e-8f3a-4c3e-9d7a-2f1e0c9b8a7d",
                                    d->uuid, sizeof(d->uuid))) < 0)
                        return r;
                for (char *c = d->uuid; *c; c++) /* "" is generated later */
                        if (*c >= 'A' && *c <= 'F')
                                *c = (char) (*c - 'A' + 'a');
                return 0;
        }
        if (streq(key, "memory_mib")) {
                if ((r = json_read_i64(v, 16, 1048576, &x)) < 0)
                        return r;
                d->memory_mib = (uint64_t) x;
                *has_memory = true;
                return 0;
        }
        if (streq(key, "vcpus")) {
                if ((r = json_read_i64(v, 1, 256, &x)) < 0)
                        return r;
                d->vcpus = (unsigned) x;
                return 0;
        }
        if (streq(key, "machine"))
                return get_str_as(v, machine_is_valid, "pc, q35, microvm, pc-i440fx-VERSION or pc-q35-VERSION",
                                  d->machine, sizeof(d->machine));
        if (streq(key, "cpu_model"))
                return get_str_as(v, cpu_model_is_valid,
                                  "a CPU model name (A-Z a-z 0-9 _ . -, starting with a letter or digit; "
                                  "no ',' or '=': properties cannot be set)",
                                  d->cpu_model, sizeof(d->cpu_model));
        if (streq(key, "kernel"))
                return get_path(v, d->kernel, sizeof(d->kernel), true);
        if (streq(key, "initrd"))
                return get_path(v, d->initrd, sizeof(d->initrd), true);
        if (streq(key, "append")) {
                if ((r = json_read_string(v, d->append, sizeof(d->append))) < 0)
                        return r;
                if (has_control(d->append))
                        return bad(key, "must not contain control characters");
                return 0;
        }
        if (streq(key, "disks")) {
                if ((r = json_want_array(v, GUEST_MAX_DISKS, &d->n_disks)) < 0)
                        return r;
                for (size_t i = 0; i < d->n_disks; i++) {
                        json_array_at(v, i, &e);
                        if ((r = parse_disk(&e, &d->disks[i])) < 0)
                                return r;
                }
                return 0;
        }
        if (streq(key, "nics")) {
                if ((r = json_want_array(v, GUEST_MAX_NICS, &d->n_nics)) < 0)
                        return r;
                for (size_t i = 0; i < d->n_nics; i++) {
                        json_array_at(v, i, &e);
                        if ((r = parse_nic(&e, &d->nics[i])) < 0)
                                return r;
                }
                return 0;
        }
        if (streq(key, "guest_agent"))
                return json_read_bool(v, &d->guest_agent);
        if (streq(key, "serial_log"))
                return json_read_bool(v, &d->serial_log);
        return unknown_member(v);
}

static bool machine_is_i440fx(const char *m) {
        return streq(m, "pc") || !strncmp(m, "pc-i440fx-", 10);
}

/* Rules across members, then the generated values. */
static int finish_def(GuestDef *d, bool has_memory) {
        char path[48];

        if (!d->name[0])
                return bad("name", "is required");
        if (!has_memory)
                return bad("memory_mib", "is required");
        if (!d->kernel[0] && d->n_disks == 0)
                return bad("kernel", "is required when there are no disks");
        if (!d->kernel[0] && d->initrd[0])
                return bad("initrd", "needs 'kernel'");
        if (!d->kernel[0] && d->append[0])
                return bad("append", "needs 'kernel'");
        if (machine_is_i440fx(d->machine) && d->vcpus > PC_MAX_VCPUS)
                return bad("vcpus", "is %u, more than machine %s supports (%d)", d->vcpus, d->machine,
                           PC_MAX_VCPUS);
        for (size_t i = 0; i < d->n_disks; i++)
                for (size_t j = 0; j < i; j++)
                        if (streq(d->disks[i].path, d->disks[j].path)) {
                                snprintf(path, sizeof(path), "disks[%zu].path", i);
                                return bad(path, "repeats disks[%zu].path", j);
                        }
        for (size_t i = 0; i < d->n_nics; i++)
                for (size_t j = 0; j < i; j++)
                        if (d->nics[i].mac[0] && streq(d->nics[i].mac, d->nics[j].mac)) {
                                snprintf(path, sizeof(path), "nics[%zu].mac", i);
                                return bad(path, "repeats nics[%zu].mac", j);
                        }

        if (!d->uuid[0])
                vm_uuid_generate(d->uuid);
        for (size_t i = 0; i < d->n_nics; i++) {
                bool dup = true;
                if (d->nics[i].mac[0])
                        continue;
                while (dup) {
                        uint8_t b[6] = { 0x52, 0x54, 0x00 };
                        random_bytes(b + 3, 3);
                        mac_format(b, d->nics[i].mac);
                        dup = false;
                        for (size_t j = 0; j < d->n_nics; j++)
                                if (j != i && streq(d->nics[i].mac, d->nics[j].mac))
                                        dup = true;
                }
        }
        return 0;
}


static int parse(const char *json, size_t len, GuestDef *ret) {
        _cleanup_(json_unrefp) JsonValue *root = NULL;
        _cleanup_free_ GuestDef *d = NULL;
        bool has_memory = false;
        JsonIter it;
        const char *key;
        JsonNode n, v;
        int r;

        if ((r = json_parse_object(json, len, GUEST_DEF_MAX_BYTES, &root)) < 0)
                return r;
        json_node_root(root, &n);

        /* calloc, so padding and unused bytes are zero and parse results compare with memcmp */
        d = calloc(1, sizeof(*d));
        if (!d)
                return err_set(-ENOMEM, "out of memory");
        d->vcpus = 1;
        snprintf(d->machine, sizeof(d->machine), "pc");
        snprintf(d->cpu_model, sizeof(d->cpu_model), "qemu64");
        d->serial_log = true;

        for (json_iter_init(&it, &n); json_iter_next(&it, &key, &v);)
                if ((r = parse_member(key, &v, d, &has_memory)) < 0)
                        return r;
        if ((r = finish_def(d, has_memory)) < 0)
                return r;
        memcpy(ret, d, sizeof(*d));
        return 0;
}

int guest_def_parse(const char *json, size_t len, GuestDef *ret) {
        int r = parse(json, len, ret);
        return r < 0 ? err_prefix(r, "definition") : 0;
}

/* ---- canonical JSON ---- */

static int disk_to_json(const GuestDisk *disk, JsonValue *disks) {
        JsonValue *o = json_new_object();
        if (json_add_string(o, "path", disk->path) < 0 || json_add_string(o, "format", disk->format) < 0 ||
            json_add_string(o, "cache", disk->cache) < 0 || json_add_bool(o, "shared", disk->shared) < 0 ||
            json_add_bool(o, "readonly", disk->readonly) < 0 ||
            json_add_string(o, "storage", disk->local ? "local" : "shared") < 0) {
                json_unref(o);
                return -ENOMEM;
        }
        return json_append(disks, o);
}

static int nic_to_json(const GuestNic *nic, JsonValue *nics) {
        JsonValue *o = json_new_object();
        if (json_add_string(o, "bridge", nic->bridge) < 0 || json_add_string(o, "mac", nic->mac) < 0 ||
            json_add_string(o, "model", nic->model) < 0) {
                json_unref(o);
                return -ENOMEM;
        }
        return json_append(nics, o);
}

int guest_def_to_json(const GuestDef *def, char **ret_json) {
        _cleanup_(json_unrefp) JsonValue *o = json_new_object();
        _cleanup_(json_unrefp) JsonValue *disks = json_new_array();
        _cleanup_(json_unrefp) JsonValue *nics = json_new_array();

        for (size_t i = 0; i < def->n_disks; i++)
                if (disk_to_json(&def->disks[i], disks) < 0)
                        return err_set(-ENOMEM, "out of memory");
        for (size_t i = 0; i < def->n_nics; i++)
                if (nic_to_json(&def->nics[i], nics) < 0)
                        return err_set(-ENOMEM, "out of memory");
        if (json_add_string(o, "name", def->name) < 0 || json_add_string(o, "uuid", def->uuid) < 0 ||
            json_add_u64(o, "memory_mib", def->memory_mib) < 0 || json_add_i64(o, "vcpus", def->vcpus) < 0 ||
            json_add_string(o, "machine", def->machine) < 0 || json_add_string(o, "cpu_model", def->cpu_model) < 0 ||
            json_add_string(o, "kernel", def->kernel) < 0 || json_add_string(o, "initrd", def->initrd) < 0 ||
            json_add_string(o, "append", def->append) < 0 || json_add(o, "disks", TAKE_PTR(disks)) < 0 ||
            json_add(o, "nics", TAKE_PTR(nics)) < 0 || json_add_bool(o, "guest_agent", def->guest_agent) < 0 ||
            json_add_bool(o, "serial_log", def->serial_log) < 0 || json_to_string(o, false, ret_json) < 0)
                return err_set(-ENOMEM, "out of memory");
        return 0;
}

/* ---- runtime paths ---- */

int guest_paths(const char *run_dir, const char *name, GuestPaths *ret) {
        GuestPaths p;
        int n[5];

        memset(&p, 0, sizeof(p));
        n[0] = snprintf(p.qmp, sizeof(p.qmp), "%s/%s.qmp", run_dir, name);
        n[1] = snprintf(p.qga, sizeof(p.qga), "%s/%s.qga", run_dir, name);
        n[2] = snprintf(p.serial, sizeof(p.serial), "%s/%s.serial", run_dir, name);
        n[3] = snprintf(p.log, sizeof(p.log), "%s/%s.log", run_dir, name);
        n[4] = snprintf(p.pidfile, sizeof(p.pidfile), "%s/%s.pid", run_dir, name);
        for (size_t i = 0; i < ELEMENTSOF(n); i++)
                if (n[i] < 0 || (size_t) n[i] >= sizeof(p.qmp))
                        return err_set(-ENAMETOOLONG, "runtime paths of guest '%s' under '%s' are longer than %zu bytes",
                                       name, run_dir, sizeof(p.qmp) - 1);
        if (strlen(p.qga) > SUN_PATH_MAX) /* .qga is as long as .qmp */
                return err_set(-ENAMETOOLONG, "socket path '%s' is longer than a unix socket allows (%zu bytes)",
                               p.qga, SUN_PATH_MAX);
        memcpy(ret, &p, sizeof(p));
        return 0;
}

void guest_tap_name(const char *uuid, size_t index, char ret[16]) {
        /* FNV-1a over the lower-case UUID: UUIDs that share a prefix (v7,
         * hand-numbered ones) still get different taps. */
        uint32_t h = 2166136261u;
        for (const char *c = uuid; *c; c++) {
                char l = (*c >= 'A' && *c <= 'Z') ? (char) (*c - 'A' + 'a') : *c;
                h = (h ^ (uint8_t) l) * 16777619u;
        }
        snprintf(ret, 16, "dv%08xn%zu", h, index % 10000);
}

/* ---- command line ---- */

typedef struct ArgvBuf {
        char **v;
        size_t n, cap;
        bool oom;
} ArgvBuf;

static void av_push(ArgvBuf *a, char *s) {
        if (!s)
                a->oom = true;
        if (a->oom) {
                free(s);
                return;
        }
        if (a->n + 2 > a->cap) {
                size_t cap = a->cap ? 2 * a->cap : 64;
                char **v = realloc(a->v, cap * sizeof(*v));
                if (!v) {
                        free(s);
                        a->oom = true;
                        return;
                }
                a->v = v;
                a->cap = cap;
        }
        a->v[a->n++] = s;
        a->v[a->n] = NULL;
}

static void av_add(ArgvBuf *a, const char *s) {
        av_push(a, strdup(s));
}

static void av_addf(ArgvBuf *a, const char *fmt, ...) _printf_(2, 3);
static void av_addf(ArgvBuf *a, const char *fmt, ...) {
        char *s = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0)
                s = NULL;
        va_end(ap);
        av_push(a, s);
}

/* @s with every ',' doubled, for values inside QEMU's comma-separated
 * option strings.  @buf holds 2 * strlen(s) + 1. */
static const char *opt_escape(const char *s, char *buf, size_t size) {
        size_t j = 0;
        for (; *s; s++) {
                assert(j + 3 <= size);
                buf[j++] = *s;
                if (*s == ',')
                        buf[j++] = ',';
        }
        buf[j] = '\0';
        return buf;
}

static void cache_flags(const char *cache, bool *direct, bool *no_flush, bool *write_cache) {
        *direct = streq(cache, "none") || streq(cache, "directsync");
        *no_flush = streq(cache, "unsafe");
        *write_cache = !streq(cache, "writethrough") && !streq(cache, "directsync");
}

static const char *truefalse(bool b) {
        return b ? "true" : "false";
}

static const char *onoff(bool b) {
        return b ? "on" : "off";
}

/* Disk @i from fd set @i: QEMU picks the descriptor whose access mode it
 * needs (read-only or read-write) and dups it, also for a later reopen. */
static void add_disk(ArgvBuf *a, const GuestDef *def, const GuestFiles *files, size_t i) {
        const GuestDisk *disk = &def->disks[i];
        bool direct, no_flush, write_cache;
        /* QEMU's file driver refuses block devices; host_device is their driver. */
        bool blk = files->disk_blk[i];

        cache_flags(disk->cache, &direct, &no_flush, &write_cache);
        av_add(a, "-add-fd");
        av_addf(a, "fd=%d,set=%zu,opaque=disk%zu-ro", files->disk_ro[i], i, i);
        if (!disk->readonly) {
                av_add(a, "-add-fd");
                av_addf(a, "fd=%d,set=%zu,opaque=disk%zu-rw", files->disk_rw[i], i, i);
        }
        /* JSON, for the null: QEMU's dotted syntax has no spelling of it.  A
         * qcow2 node never opens the backing file its header names (a path,
         * opened by QEMU as root: check_disk() refuses such images, this is
         * the second line). */
        av_add(a, "-blockdev");
        av_addf(a, "{\"driver\":\"%s\",\"node-name\":\"disk%zu\",\"read-only\":%s,"
                "\"cache\":{\"direct\":%s,\"no-flush\":%s},"
                "\"file\":{\"driver\":\"%s\",\"node-name\":\"disk%zu-file\",\"filename\":\"/dev/fdset/%zu\"}%s}",
                disk->format, i, truefalse(disk->readonly), truefalse(direct), truefalse(no_flush),
                blk ? "host_device" : "file", i, i, streq(disk->format, "qcow2") ? ",\"backing\":null" : "");
        av_add(a, "-device");
        av_addf(a, "virtio-blk-pci,id=virtio-disk%zu,drive=disk%zu,write-cache=%s%s", i, i,
                onoff(write_cache), (i == 0 && !def->kernel[0]) ? ",bootindex=1" : "");
}

static void add_nic(ArgvBuf *a, const GuestDef *def, size_t i) {
        char tap[16];
        guest_tap_name(def->uuid, i, tap);
        av_add(a, "-netdev");
        av_addf(a, "tap,id=net%zu,ifname=%s,script=no,downscript=no", i, tap);
        av_add(a, "-device");
        av_addf(a, "%s,id=nic%zu,netdev=net%zu,mac=%s", def->nics[i].model, i, i, def->nics[i].mac);
}

/* Every file of @def has its descriptor in @f (a descriptor below 3 would
 * be one of QEMU's standard streams). */
static int files_complete(const GuestDef *def, const GuestFiles *f) {
        bool ok = (!def->kernel[0] || f->kernel > 2) && (!def->initrd[0] || f->initrd > 2);
        for (size_t i = 0; i < def->n_disks; i++)
                ok = ok && f->disk_ro[i] > 2 && (def->disks[i].readonly || f->disk_rw[i] > 2);
        return ok ? 0 : err_set(-EINVAL, "guest %s: a file of the definition was not opened", def->name);
}

int guest_build_argv(const GuestDef *def, const GuestPaths *paths, const GuestFiles *files,
                     const GuestLaunch *l, char ***ret_argv) {
        char esc[2 * sizeof(paths->qmp)];
        const char *accel = l->accel;
        bool runas = l->user && l->user[0];
        ArgvBuf a = { 0 };
        int r;

        if (!accel || (!streq(accel, "tcg") && !streq(accel, "kvm")))
                return err_set(-EINVAL, "accelerator must be kvm or tcg, not '%s'", accel ? accel : "");
        if (!l->qemu_binary || !l->qemu_binary[0])
                return err_set(-EINVAL, "no QEMU binary given");
        if ((r = files_complete(def, files)) < 0)
                return r;

        av_add(&a, l->qemu_binary);
        av_add(&a, "-name");
        av_addf(&a, "guest=%s", def->name);
        av_add(&a, "-uuid");
        av_add(&a, def->uuid);
        av_add(&a, "-accel");
        av_add(&a, accel);
        av_add(&a, "-machine");
        av_addf(&a, "%s%s", def->machine, streq(def->machine, "microvm") ? ",pcie=on" : "");
        av_add(&a, "-cpu");
        av_add(&a, def->cpu_model);
        av_add(&a, "-m");
        av_addf(&a, "%" PRIu64, def->memory_mib);
        av_add(&a, "-smp");
        av_addf(&a, "%u", def->vcpus);
        av_add(&a, "-nodefaults");
        av_add(&a, "-no-user-config");
        av_add(&a, "-display");
        av_add(&a, "none");
        av_add(&a, "-sandbox");
        /* -runas calls setgid/setuid after the filter is in place; once it has
         * dropped to the user, set*id can no longer gain anything */
        av_addf(&a, "on,obsolete=allow,elevateprivileges=%s,spawn=deny,resourcecontrol=deny",
                runas ? "allow" : "deny");
        if (runas) {
                av_add(&a, "-runas");
                av_add(&a, l->user);
        }
        if (l->chroot && l->chroot[0]) {
                av_add(&a, "-chroot");
                av_add(&a, l->chroot);
        }
        av_add(&a, "-qmp");
        av_addf(&a, "unix:%s,server=on,wait=off", opt_escape(paths->qmp, esc, sizeof(esc)));
        av_add(&a, "-pidfile");
        av_add(&a, paths->pidfile);
        av_add(&a, "-serial");
        if (def->serial_log)
                av_addf(&a, "file:%s", paths->serial);
        else
                av_add(&a, "none");
        /* the loaders open these by name (no fd sets): the agent's descriptor
         * through /proc, read while QEMU is still unconfined */
        if (def->kernel[0]) {
                av_add(&a, "-kernel");
                av_addf(&a, "/proc/self/fd/%d", files->kernel);
        }
        if (def->initrd[0]) {
                av_add(&a, "-initrd");
                av_addf(&a, "/proc/self/fd/%d", files->initrd);
        }
        if (def->append[0]) {
                av_add(&a, "-append");
                av_add(&a, def->append);
        }
        for (size_t i = 0; i < def->n_disks; i++)
                add_disk(&a, def, files, i);
        for (size_t i = 0; i < def->n_nics; i++)
                add_nic(&a, def, i);
        if (def->guest_agent) {
                av_add(&a, "-chardev");
                av_addf(&a, "socket,id=qga0,path=%s,server=on,wait=off",
                        opt_escape(paths->qga, esc, sizeof(esc)));
                av_add(&a, "-device");
                av_add(&a, "virtio-serial-pci,id=qga-serial");
                av_add(&a, "-device");
                av_add(&a, "virtserialport,bus=qga-serial.0,chardev=qga0,name=org.qemu.guest_agent.0");
        }
        if (l->incoming) {
                av_add(&a, "-S");
                av_add(&a, "-incoming");
                av_add(&a, "defer");
        }
        if (a.oom) {
                guest_argv_free(a.v);
                return err_set(-ENOMEM, "out of memory");
        }
        *ret_argv = a.v;
        return 0;
}

void guest_argv_free(char **argv) {
        if (!argv)
                return;
        for (char **p = argv; *p; p++)
                free(*p);
        free(argv);
}
