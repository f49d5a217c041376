/* Unit tests of guest definitions (agent/agent-def.h): the JSON round trip,
 * every member's bad values with the exact detail, defaults, generated
 * UUIDs and MACs, host checks against real files in a scratch folder,
 * runtime paths, tap names, and the QEMU command line argument by argument.
 * test-agent-def-qemu.c proves that QEMU itself accepts such a command line.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent-def.h"
#include "err.h"
#include "testutil.h"
#include "vm.h"

#define UUID "6d1d2a4e-0000-4000-8000-00000000c0de"
#define TAP0 "dv189f8b58n0" /* FNV-1a of UUID, computed outside this program */
#define TAP1 "dv189f8b58n1"

static int parse(const char *json, GuestDef *d) {
        return guest_def_parse(json, strlen(json), d);
}

/* ---- round trip ---- */

static const char full_in[] =
        "{ \"name\": \"web1\", \"uuid\": \"6D1D2A4E-0000-4000-8000-00000000C0DE\",\n"
        "  \"memory_mib\": 256, \"vcpus\": 2, \"machine\": \"pc-q35-7.2\", \"cpu_model\": \"Skylake-Server-v4\",\n"
        "  \"kernel\": \"/srv/images/vmlinuz\", \"initrd\": \"/srv/images/initrd.img\",\n"
        "  \"append\": \"console=ttyS0 root=/dev/vda\",\n"
        "  \"disks\": [ { \"path\": \"/shared/web1.qcow2\", \"format\": \"qcow2\", \"cache\": \"none\", \"shared\": true },\n"
        "             { \"readonly\": true, \"path\": \"/srv/data,1.img\", \"cache\": \"writethrough\", \"storage\": \"local\" } ],\n"
        "  \"nics\": [ { \"bridge\": \"br0\", \"mac\": \"52:54:00:AB:cd:01\" },\n"
        "            { \"bridge\": \"br-lan.10\", \"model\": \"e1000\", \"mac\": \"02:00:00:00:00:01\" } ],\n"
        "  \"guest_agent\": true, \"serial_log\": false }";

static const char full_canonical[] =
        "{\"name\":\"web1\",\"uuid\":\"6d1d2a4e-0000-4000-8000-00000000c0de\",\"memory_mib\":256,\"vcpus\":2,"
        "\"machine\":\"pc-q35-7.2\",\"cpu_model\":\"Skylake-Server-v4\",\"kernel\":\"/srv/images/vmlinuz\","
        "\"initrd\":\"/srv/images/initrd.img\",\"append\":\"console=ttyS0 root=/dev/vda\","
        "\"disks\":[{\"path\":\"/shared/web1.qcow2\",\"format\":\"qcow2\",\"cache\":\"none\",\"shared\":true,\"readonly\":false,\"storage\":\"shared\"},"
        "{\"path\":\"/srv/data,1.img\",\"format\":\"raw\",\"cache\":\"writethrough\",\"shared\":false,\"readonly\":true,\"storage\":\"local\"}],"
        "\"nics\":[{\"bridge\":\"br0\",\"mac\":\"52:54:00:ab:cd:01\",\"model\":\"virtio-net-pci\"},"
        "{\"bridge\":\"br-lan.10\",\"mac\":\"02:00:00:00:00:01\",\"model\":\"e1000\"}],"
        "\"guest_agent\":true,\"serial_log\":false}";

static void test_round_trip(void **state) {
        GuestDef a, b;
        char *json = NULL, *json2 = NULL;

        assert_int_equal(parse(full_in, &a), 0);
        assert_string_equal(a.name, "web1");
        assert_string_equal(a.uuid, UUID);
        assert_int_equal(a.memory_mib, 256);
        assert_int_equal(a.vcpus, 2);
        assert_string_equal(a.machine, "pc-q35-7.2");
        assert_string_equal(a.cpu_model, "Skylake-Server-v4");
        assert_string_equal(a.kernel, "/srv/images/vmlinuz");
        assert_string_equal(a.initrd, "/srv/images/initrd.img");
        assert_string_equal(a.append, "console=ttyS0 root=/dev/vda");
        assert_int_equal(a.n_disks, 2);
        assert_string_equal(a.disks[0].path, "/shared/web1.qcow2");
        assert_string_equal(a.disks[0].format, "qcow2");
        assert_string_equal(a.disks[0].cache, "none");
        assert_true(a.disks[0].shared);
        assert_false(a.disks[0].readonly);
        assert_string_equal(a.disks[1].path, "/srv/data,1.img");
        assert_string_equal(a.disks[1].format, "raw");
        assert_string_equal(a.disks[1].cache, "writethrough");
        assert_false(a.disks[1].shared);
        assert_true(a.disks[1].readonly);
        assert_false(a.disks[0].local);
        assert_true(a.disks[1].local);
        assert_int_equal(a.n_nics, 2);
        assert_string_equal(a.nics[0].bridge, "br0");
        assert_string_equal(a.nics[0].mac, "52:54:00:ab:cd:01");
        assert_string_equal(a.nics[0].model, "virtio-net-pci");
        assert_string_equal(a.nics[1].bridge, "br-lan.10");
        assert_string_equal(a.nics[1].mac, "02:00:00:00:00:01");
        assert_string_equal(a.nics[1].model, "e1000");
        assert_true(a.guest_agent);
        assert_false(a.serial_log);

        assert_int_equal(guest_def_to_json(&a, &json), 0);
        assert_string_equal(json, full_canonical);
        assert_int_equal(parse(json, &b), 0);
        assert_memory_equal(&a, &b, sizeof(a));
        assert_int_equal(guest_def_to_json(&b, &json2), 0);
        assert_string_equal(json, json2);
        free(json);
        free(json2);
}

/* Generated values survive the round trip too. */
static void test_round_trip_generated(void **state) {
        GuestDef a, b;
        char *json = NULL;
        assert_int_equal(parse("{\"name\":\"g\",\"memory_mib\":16,\"disks\":[{\"path\":\"/d\"}],"
                               "\"nics\":[{\"bridge\":\"br0\"}]}", &a), 0);
        assert_int_equal(guest_def_to_json(&a, &json), 0);
        assert_int_equal(parse(json, &b), 0);
        assert_memory_equal(&a, &b, sizeof(a));
        free(json);
}

/* ---- defaults and generated values ---- */

static void test_defaults(void **state) {
        GuestDef d;
        assert_int_equal(parse("{\"name\":\"min\",\"memory_mib\":64,\"disks\":[{\"path\":\"/img/min.raw\"}],"
                               "\"nics\":[{\"bridge\":\"br0\"}]}", &d), 0);
        assert_true(vm_uuid_is_valid(d.uuid));
        assert_int_equal(d.vcpus, 1);
        assert_string_equal(d.machine, "pc");
        assert_string_equal(d.cpu_model, "qemu64");
        assert_string_equal(d.kernel, "");
        assert_string_equal(d.initrd, "");
        assert_string_equal(d.append, "");
        assert_string_equal(d.disks[0].format, "raw");
        assert_string_equal(d.disks[0].cache, "none");
        assert_false(d.disks[0].shared);
        assert_false(d.disks[0].readonly);
        assert_false(d.disks[0].local); /* "storage": "shared" */
        assert_string_equal(d.nics[0].model, "virtio-net-pci");
        assert_false(d.guest_agent);
        assert_true(d.serial_log);

        /* "" means "not set" / "generate" */
        assert_int_equal(parse("{\"name\":\"e\",\"memory_mib\":64,\"uuid\":\"\",\"kernel\":\"/k\",\"initrd\":\"\","
                               "\"append\":\"\",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"\"}]}", &d), 0);
        assert_true(vm_uuid_is_valid(d.uuid));
        assert_int_equal(strlen(d.nics[0].mac), 17);
        assert_string_equal(d.initrd, "");
}

static void test_uuid_generated(void **state) {
        GuestDef a, b;
        const char *j = "{\"name\":\"u\",\"memory_mib\":64,\"kernel\":\"/k\"}";
        assert_int_equal(parse(j, &a), 0);
        assert_int_equal(parse(j, &b), 0);
        assert_true(vm_uuid_is_valid(a.uuid));
        assert_true(vm_uuid_is_valid(b.uuid));
        assert_string_not_equal(a.uuid, b.uuid);
        assert_int_equal(a.uuid[14], '4'); /* version 4 */
}

static bool hex2(const char *s) {
        return strchr("0123456789abcdef", s[0]) && strchr("0123456789abcdef", s[1]) && s[0] && s[1];
}

static void test_mac_generated(void **state) {
        char json[1024];
        GuestDef d;
        int n = snprintf(json, sizeof(json), "{\"name\":\"m\",\"memory_mib\":64,\"kernel\":\"/k\",\"nics\":[");
        for (int i = 0; i < GUEST_MAX_NICS; i++)
                n += snprintf(json + n, sizeof(json) - (size_t) n, "%s{\"bridge\":\"br%d\"}", i ? "," : "", i);
        snprintf(json + n, sizeof(json) - (size_t) n, "]}");
        assert_int_equal(parse(json, &d), 0);
        assert_int_equal(d.n_nics, GUEST_MAX_NICS);
        for (size_t i = 0; i < d.n_nics; i++) {
                const char *m = d.nics[i].mac;
                assert_int_equal(strlen(m), 17);
                assert_memory_equal(m, "52:54:00:", 9);
                assert_true(hex2(m + 9) && m[11] == ':' && hex2(m + 12) && m[14] == ':' && hex2(m + 15));
                for (size_t j = 0; j < i; j++)
                        assert_string_not_equal(m, d.nics[j].mac);
        }
        /* a given MAC is kept (lower-cased), the other one is generated */
        assert_int_equal(parse("{\"name\":\"m\",\"memory_mib\":64,\"kernel\":\"/k\",\"nics\":["
                               "{\"bridge\":\"br0\",\"mac\":\"52:54:00:AA:BB:CC\"},{\"bridge\":\"br0\"}]}", &d), 0);
        assert_string_equal(d.nics[0].mac, "52:54:00:aa:bb:cc");
        assert_memory_equal(d.nics[1].mac, "52:54:00:", 9);
        assert_string_not_equal(d.nics[1].mac, d.nics[0].mac);
}

static void test_accepted_values(void **state) {
        static const char *const ok[] = {
                "{\"name\":\"a\",\"memory_mib\":16,\"kernel\":\"/k\"}",
                "{\"name\":\"a\",\"memory_mib\":1048576,\"kernel\":\"/k\",\"vcpus\":256,\"machine\":\"q35\"}",
                "{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/k\",\"vcpus\":255}",
                "{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/k\",\"machine\":\"microvm\"}",
                "{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/k\",\"machine\":\"pc-i440fx-7.2\"}",
                "{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/k\",\"cpu_model\":\"Skylake-Server-v4\"}",
                "{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/k\",\"cpu_model\":\"qemu64-v1.2_x\"}",
                "{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/a/..b/.c/d..\"}",
                "{\"name\":\"a_b.c-1\",\"memory_mib\":64,\"disks\":[{\"path\":\"/d\",\"cache\":\"unsafe\"}]}",
                "{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/k\",\"nics\":[{\"bridge\":\"abcdefghijklmno\"}]}",
                "{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/k\",\"nics\":[{\"bridge\":\"b\",\"mac\":\"fe:ff:ff:ff:ff:ff\"}]}",
                " \n{\"name\":\"a\",\"memory_mib\":64,\"kernel\":\"/k\",\"append\":\"x=\\u00e9\"}\n ",
        };
        GuestDef d;
        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                int r = parse(ok[i], &d);
                if (r != 0)
                        fail_msg("case %zu: %s", i, err_msg());
        }
}

/* ---- bad values ---- */

#define N "\"name\":\"web1\""
#define M "\"memory_mib\":64"
#define K "\"kernel\":\"/k\""
#define BASE N "," M "," K
#define D0 "\"disks\":[{\"path\":\"/d0\"}"

typedef struct BadCase {
        const char *json;
        int err;
        const char *detail;
} BadCase;

#define CPU_MSG                                                                                       \
        "definition: 'cpu_model' must be a CPU model name (A-Z a-z 0-9 _ . -, starting with a letter or digit; " \
        "no ',' or '=': properties cannot be set), "
#define PATH_MSG(member, p)                                                                           \
        "definition: '" member "' must be a normalised path (no '.' or '..' component, no '//', no trailing " \
        "'/'), not '" p "'"

static const BadCase bad_cases[] = {
        /* name */
        { "{\"name\":5," M "," K "}", -EINVAL, "definition: 'name' must be a string, not an integer" },
        { "{\"name\":\".web\"," M "," K "}", -EINVAL,
          "definition: 'name' must be 1-63 of A-Z a-z 0-9 . _ - (not starting with . or -), not '.web'" },
        { "{\"name\":\"a b\"," M "," K "}", -EINVAL,
          "definition: 'name' must be 1-63 of A-Z a-z 0-9 . _ - (not starting with . or -), not 'a b'" },
        { "{\"name\":\"\"," M "," K "}", -EINVAL,
          "definition: 'name' must be 1-63 of A-Z a-z 0-9 . _ - (not starting with . or -), not ''" },
        { "{\"name\":\"a\\u0000b\"," M "," K "}", -EINVAL, "definition: 'name' must not contain NUL characters" },
        { "{" M "," K "}", -EINVAL, "definition: 'name' is required" },
        /* uuid */
        { "{" BASE ",\"uuid\":\"1234\"}", -EINVAL,
          "definition: 'uuid' must be a UUID like 0b5d2c1e-8f3a-4c3e-9d7a-2f1e0c9b8a7d, not '1234'" },
        { "{" BASE ",\"uuid\":\"6d1d2a4e-0000-4000-8000-00000000c0dx\"}", -EINVAL,
          "definition: 'uuid' must be a UUID like 0b5d2c1e-8f3a-4c3e-9d7a-2f1e0c9b8a7d, not "
          "'6d1d2a4e-0000-4000-8000-00000000c0dx'" },
        { "{" BASE ",\"uuid\":true}", -EINVAL, "definition: 'uuid' must be a string, not a boolean" },
        /* memory_mib */
        { "{" N ",\"memory_mib\":\"64\"," K "}", -EINVAL, "definition: 'memory_mib' must be an integer, not a string" },
        { "{" N ",\"memory_mib\":64.5," K "}", -EINVAL,
          "definition: 'memory_mib' must be an integer, not a fractional number" },
        { "{" N ",\"memory_mib\":15," K "}", -EINVAL, "definition: 'memory_mib' must be between 16 and 1048576, not 15" },
        { "{" N ",\"memory_mib\":1048577," K "}", -EINVAL,
          "definition: 'memory_mib' must be between 16 and 1048576, not 1048577" },
        { "{" N ",\"memory_mib\":-1," K "}", -EINVAL, "definition: 'memory_mib' must be between 16 and 1048576, not -1" },
        { "{" N ",\"memory_mib\":99999999999999999999," K "}", -EINVAL,
          "definition: 'memory_mib' must be between 16 and 1048576, not 18446744073709551615" },
        { "{" N ",\"memory_mib\":null," K "}", -EINVAL, "definition: 'memory_mib' must be an integer, not null" },
        { "{" N "," K "}", -EINVAL, "definition: 'memory_mib' is required" },
        /* vcpus */
        { "{" BASE ",\"vcpus\":0}", -EINVAL, "definition: 'vcpus' must be between 1 and 256, not 0" },
        { "{" BASE ",\"vcpus\":257,\"machine\":\"q35\"}", -EINVAL, "definition: 'vcpus' must be between 1 and 256, not 257" },
        { "{" BASE ",\"vcpus\":true}", -EINVAL, "definition: 'vcpus' must be an integer, not a boolean" },
        { "{" BASE ",\"vcpus\":256}", -EINVAL, "definition: 'vcpus' is 256, more than machine pc supports (255)" },
        { "{" BASE ",\"vcpus\":256,\"machine\":\"pc-i440fx-7.2\"}", -EINVAL,
          "definition: 'vcpus' is 256, more than machine pc-i440fx-7.2 supports (255)" },
        /* machine, cpu_model */
        { "{" BASE ",\"machine\":\"virt\"}", -EINVAL,
          "definition: 'machine' must be pc, q35, microvm, pc-i440fx-VERSION or pc-q35-VERSION, not 'virt'" },
        { "{" BASE ",\"machine\":\"pc-i440fx-\"}", -EINVAL,
          "definition: 'machine' must be pc, q35, microvm, pc-i440fx-VERSION or pc-q35-VERSION, not 'pc-i440fx-'" },
        { "{" BASE ",\"machine\":\"pc-q35-7.2,accel=kvm\"}", -EINVAL,
          "definition: 'machine' must be pc, q35, microvm, pc-i440fx-VERSION or pc-q35-VERSION, not 'pc-q35-7.2,accel=kvm'" },
        { "{" BASE ",\"machine\":[]}", -EINVAL, "definition: 'machine' must be a string, not an array" },
        { "{" BASE ",\"cpu_model\":\"host;reboot\"}", -EINVAL,
          CPU_MSG
          "not 'host;reboot'" },
        { "{" BASE ",\"cpu_model\":\"-help\"}", -EINVAL,
          CPU_MSG
          "not '-help'" },
        { "{" BASE ",\"cpu_model\":\"\"}", -EINVAL,
          CPU_MSG
          "not ''" },
        /* a model name, never properties: -cpu splits "model,prop=value" */
        { "{" BASE ",\"cpu_model\":\"qemu64,+ssse3\"}", -EINVAL, CPU_MSG "not 'qemu64,+ssse3'" },
        { "{" BASE ",\"cpu_model\":\"host,migratable=off\"}", -EINVAL, CPU_MSG "not 'host,migratable=off'" },
        { "{" BASE ",\"cpu_model\":\"max=1\"}", -EINVAL, CPU_MSG "not 'max=1'" },
        { "{" BASE ",\"cpu_model\":\"qemu64+x\"}", -EINVAL, CPU_MSG "not 'qemu64+x'" },
        /* kernel, initrd, append */
        { "{" N "," M ",\"kernel\":\"vmlinuz\"}", -EINVAL, "definition: 'kernel' must be an absolute path, not 'vmlinuz'" },
        { "{" N "," M ",\"kernel\":\"/boot/\\nvmlinuz\"}", -EINVAL,
          "definition: 'kernel' must not contain control characters" },
        { "{" N "," M ",\"kernel\":7}", -EINVAL, "definition: 'kernel' must be a string, not an integer" },
        /* normalised paths only: no way up and out of an image root */
        { "{" N "," M ",\"kernel\":\"/img/../etc/shadow\"}", -EINVAL, PATH_MSG("kernel", "/img/../etc/shadow") },
        { "{" N "," M ",\"initrd\":\"/img/./i\",\"kernel\":\"/k\"}", -EINVAL, PATH_MSG("initrd", "/img/./i") },
        { "{" N "," M ",\"kernel\":\"/img//k\"}", -EINVAL, PATH_MSG("kernel", "/img//k") },
        { "{" N "," M ",\"kernel\":\"/img/k/\"}", -EINVAL, PATH_MSG("kernel", "/img/k/") },
        { "{" N "," M ",\"kernel\":\"/img/..\"}", -EINVAL, PATH_MSG("kernel", "/img/..") },
        { "{" N "," M ",\"kernel\":\"/\"}", -EINVAL, PATH_MSG("kernel", "/") },
        { "{" N "," M ",\"disks\":[{\"path\":\"/img/../../etc/shadow\"}]}", -EINVAL,
          PATH_MSG("disks[0].path", "/img/../../etc/shadow") },
        { "{" N "," M "}", -EINVAL, "definition: 'kernel' is required when there are no disks" },
        { "{" N "," M ",\"kernel\":\"\"}", -EINVAL, "definition: 'kernel' is required when there are no disks" },
        { "{" BASE ",\"initrd\":\"initrd.img\"}", -EINVAL, "definition: 'initrd' must be an absolute path, not 'initrd.img'" },
        { "{" N "," M "," D0 "],\"initrd\":\"/i\"}", -EINVAL, "definition: 'initrd' needs 'kernel'" },
        { "{" N "," M "," D0 "],\"append\":\"quiet\"}", -EINVAL, "definition: 'append' needs 'kernel'" },
        { "{" BASE ",\"append\":\"a\\tb\"}", -EINVAL, "definition: 'append' must not contain control characters" },
        { "{" BASE ",\"append\":false}", -EINVAL, "definition: 'append' must be a string, not a boolean" },
        /* disks */
        { "{" BASE ",\"disks\":{}}", -EINVAL, "definition: 'disks' must be an array, not an object" },
        { "{" BASE ",\"disks\":[\"/d0\"]}", -EINVAL, "definition: 'disks[0]' must be an object, not a string" },
        { "{" BASE ",\"disks\":[{\"format\":\"raw\"}]}", -EINVAL, "definition: 'disks[0].path' is required" },
        { "{" BASE ",\"disks\":[{\"path\":\"d0.img\"}]}", -EINVAL,
          "definition: 'disks[0].path' must be an absolute path, not 'd0.img'" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\"},{\"path\":\"/d1\",\"format\":\"vmdk\"}]}", -EINVAL,
          "definition: 'disks[1].format' must be raw or qcow2, not 'vmdk'" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\",\"cache\":\"default\"}]}", -EINVAL,
          "definition: 'disks[0].cache' must be none, writeback, writethrough, directsync or unsafe, not 'default'" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\",\"shared\":\"yes\"}]}", -EINVAL,
          "definition: 'disks[0].shared' must be a boolean, not a string" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\",\"readonly\":1}]}", -EINVAL,
          "definition: 'disks[0].readonly' must be a boolean, not an integer" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\",\"storage\":\"nfs\"}]}", -EINVAL,
          "definition: 'disks[0].storage' must be shared or local, not 'nfs'" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\",\"storage\":true}]}", -EINVAL,
          "definition: 'disks[0].storage' must be a string, not a boolean" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\",\"shared\":true,\"storage\":\"local\"}]}", -EINVAL,
          "definition: 'disks[0].shared' is true, and 'storage' says the disk is local" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\",\"storage\":\"local\",\"shared\":true}]}", -EINVAL,
          "definition: 'disks[0].shared' is true, and 'storage' says the disk is local" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\",\"size\":1}]}", -EINVAL,
          "definition: 'disks[0].size' is not a known member" },
        { "{" BASE ",\"disks\":[{\"path\":\"/d0\"},{\"path\":\"/d0\",\"readonly\":true}]}", -EINVAL,
          "definition: 'disks[1].path' repeats disks[0].path" },
        /* nics */
        { "{" BASE ",\"nics\":\"br0\"}", -EINVAL, "definition: 'nics' must be an array, not a string" },
        { "{" BASE ",\"nics\":[[]]}", -EINVAL, "definition: 'nics[0]' must be an object, not an array" },
        { "{" BASE ",\"nics\":[{\"mac\":\"52:54:00:12:34:56\"}]}", -EINVAL, "definition: 'nics[0].bridge' is required" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"abcdefghijklmnop\"}]}", -EINVAL,
          "definition: 'nics[0].bridge' must be an interface name (1-15 of A-Z a-z 0-9 _ . -), not 'abcdefghijklmnop'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br 0\"}]}", -EINVAL,
          "definition: 'nics[0].bridge' must be an interface name (1-15 of A-Z a-z 0-9 _ . -), not 'br 0'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"..\"}]}", -EINVAL,
          "definition: 'nics[0].bridge' must be an interface name (1-15 of A-Z a-z 0-9 _ . -), not '..'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0,script=/x\"}]}", -EINVAL,
          "definition: 'nics[0].bridge' must be an interface name (1-15 of A-Z a-z 0-9 _ . -), not 'br0,script=/x'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"52:54:00:12:34\"}]}", -EINVAL,
          "definition: 'nics[0].mac' must be a MAC address like 52:54:00:12:34:56, not '52:54:00:12:34'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"52-54-00-12-34-56\"}]}", -EINVAL,
          "definition: 'nics[0].mac' must be a MAC address like 52:54:00:12:34:56, not '52-54-00-12-34-56'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"52:54:00:12:34:5g\"}]}", -EINVAL,
          "definition: 'nics[0].mac' must be a MAC address like 52:54:00:12:34:56, not '52:54:00:12:34:5g'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"52:54:00:12:34:56:78\"}]}", -EINVAL,
          "definition: 'nics[0].mac' must be a MAC address like 52:54:00:12:34:56, not '52:54:00:12:34:56:78'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"01:00:5e:00:00:01\"}]}", -EINVAL,
          "definition: 'nics[0].mac' 01:00:5e:00:00:01 is a multicast address; use a unicast one (even first byte), "
          "e.g. 52:54:00:xx:xx:xx" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"FF:FF:FF:FF:FF:FF\"}]}", -EINVAL,
          "definition: 'nics[0].mac' FF:FF:FF:FF:FF:FF is a multicast address; use a unicast one (even first byte), "
          "e.g. 52:54:00:xx:xx:xx" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"00:00:00:00:00:00\"}]}", -EINVAL,
          "definition: 'nics[0].mac' must not be 00:00:00:00:00:00" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":525400123456}]}", -EINVAL,
          "definition: 'nics[0].mac' must be a string, not an integer" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"model\":\"rtl8139\"}]}", -EINVAL,
          "definition: 'nics[0].model' must be virtio-net-pci or e1000, not 'rtl8139'" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"vlan\":5}]}", -EINVAL, "definition: 'nics[0].vlan' is not a known member" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\",\"mac\":\"52:54:00:00:00:01\"},"
          "{\"bridge\":\"br1\",\"mac\":\"52:54:00:00:00:01\"}]}", -EINVAL, "definition: 'nics[1].mac' repeats nics[0].mac" },
        /* booleans, unknown and repeated members */
        { "{" BASE ",\"guest_agent\":\"true\"}", -EINVAL, "definition: 'guest_agent' must be a boolean, not a string" },
        { "{" BASE ",\"serial_log\":null}", -EINVAL, "definition: 'serial_log' must be a boolean, not null" },
        { "{" BASE ",\"memory\":64}", -EINVAL, "definition: 'memory' is not a known member" },
        { "{" BASE ",\"Name\":\"x\"}", -EINVAL, "definition: 'Name' is not a known member" },
        { "{" BASE ",\"a\\u0001\":1}", -EINVAL, "definition: 'a?' is not a known member" },
        { "{" BASE ",\"name\":\"web2\"}", -EINVAL, "definition: 'name' appears more than once" },
        { "{" BASE ",\"disks\":[{\"path\":\"/a\",\"path\":\"/b\"}]}", -EINVAL,
          "definition: 'disks[0].path' appears more than once" },
        { "{" BASE ",\"nics\":[{\"bridge\":\"br0\"},{\"bridge\":\"br0\",\"model\":\"e1000\",\"model\":\"e1000\"}]}",
          -EINVAL, "definition: 'nics[1].model' appears more than once" },
        { "{" BASE ",\"na\\u006de\":\"web2\"}", -EINVAL, "definition: 'name' appears more than once" },
        /* not an object */
        { "[1,2]", -EINVAL, "definition: must be a JSON object, not an array" },
        { "\"web1\"", -EINVAL, "definition: must be a JSON object, not a string" },
        { "12", -EINVAL, "definition: must be a JSON object, not an integer" },
        { "null", -EINVAL, "definition: must be a JSON object, not null" },
        /* broken documents */
        { "{" N ",", -EINVAL, "definition: truncated JSON (the document ends inside a value)" },
        { "{\"name\":\"we", -EINVAL, "definition: truncated JSON (the document ends inside a value)" },
        { "", -EINVAL, "definition: empty document" },
};

static void test_bad_values(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(bad_cases); i++) {
                const BadCase *c = &bad_cases[i];
                GuestDef d;
                memset(&d, 0x5a, sizeof(d));
                err_clear();
                int r = parse(c->json, &d);
                if (r != c->err || strcmp(err_msg(), c->detail) != 0)
                        fail_msg("case %zu %s\n  got %d '%s'\n want %d '%s'", i, c->json, r, err_msg(), c->err,
                                 c->detail);
                /* nothing written on failure */
                for (size_t k = 0; k < sizeof(d); k++)
                        if (((unsigned char *) &d)[k] != 0x5a)
                                fail_msg("case %zu wrote the output", i);
        }
}

/* Syntax errors: the detail names the line and column where the parser
 * stopped ("{" BASE "}" is 45 bytes). */
static void test_invalid_json(void **state) {
        static const struct {
                const char *text, *detail;
        } cases[] = {
                { "{\"name\":web1}", "definition: invalid JSON at line 1, column 9: unexpected character" },
                { "{" BASE "} trailing", "definition: invalid JSON at line 1, column 47: trailing data after the JSON value" },
                { "{" BASE "}{}", "definition: invalid JSON at line 1, column 46: trailing data after the JSON value" },
                /* trailing comma (strict) */
                { "{" BASE ",}", "definition: invalid JSON at line 1, column 46: unexpected character" },
                /* single quotes (strict) */
                { "{'name':'web1'}", "definition: invalid JSON at line 1, column 9: unexpected character" },
                { "{'name':\"web1\"}", "definition: invalid JSON at line 1, column 2: member names must be in double quotes" },
                /* invalid UTF-8 */
                { "{" BASE ",\"append\":\"\xff\xfe\"}", "definition: invalid JSON at line 1, column 56: invalid UTF-8" },
                /* leading zero (strict) */
                { "{" BASE ",\"vcpus\":01}", "definition: invalid JSON at line 1, column 56: number expected" },
                { "{" N ",\n" M ",\n  \"vcpus\": -}", "definition: invalid JSON at line 3, column 13: number expected" },
        };
        GuestDef d;
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                err_clear();
                assert_int_equal(parse(cases[i].text, &d), -EINVAL);
                if (strcmp(err_msg(), cases[i].detail) != 0)
                        fail_msg("case %zu:\n  got '%s'\n want '%s'", i, err_msg(), cases[i].detail);
        }
}

static void test_size_limits(void **state) {
        GuestDef d;
        char *big = malloc(GUEST_DEF_MAX_BYTES + 2);
        assert_non_null(big);

        /* one byte over: E2BIG, before any parsing */
        memset(big, ' ', GUEST_DEF_MAX_BYTES + 1);
        memcpy(big, "{" BASE "}", strlen("{" BASE "}"));
        big[GUEST_DEF_MAX_BYTES + 1] = '\0';
        assert_int_equal(guest_def_parse(big, GUEST_DEF_MAX_BYTES + 1, &d), -E2BIG);
        assert_string_equal(err_msg(), "definition: 65537 bytes, more than the limit of 65536");
        /* exactly at the limit: fine */
        assert_int_equal(guest_def_parse(big, GUEST_DEF_MAX_BYTES, &d), 0);
        /* a NUL byte inside the given length */
        assert_int_equal(guest_def_parse("{" BASE "}\0{\"x\":1}", strlen("{" BASE "}") + 8, &d), -EINVAL);
        assert_string_equal(err_msg(), "definition: NUL byte at line 1, column 46");
        /* len is honoured: the text after it is not read */
        assert_int_equal(guest_def_parse("{" BASE "}garbage", strlen("{" BASE "}"), &d), 0);
        free(big);

        /* too long strings */
        char *j = tu_asprintf("{" N "," M ",\"kernel\":\"/%0300d\"}", 0);
        assert_int_equal(parse(j, &d), -EINVAL);
        assert_string_equal(err_msg(), "definition: 'kernel' is too long (301 bytes, at most 255)");
        free(j);
        j = tu_asprintf("{" BASE ",\"append\":\"%04097d\"}", 0);
        assert_int_equal(parse(j, &d), -EINVAL);
        assert_string_equal(err_msg(), "definition: 'append' is too long (4097 bytes, at most 4096)");
        free(j);
        j = tu_asprintf("{" BASE ",\"append\":\"%04096d\"}", 0);
        assert_int_equal(parse(j, &d), 0);
        assert_int_equal(strlen(d.append), 4096);
        free(j);
        j = tu_asprintf("{\"name\":\"%064d\"," M "," K "}", 0);
        assert_int_equal(parse(j, &d), -EINVAL);
        assert_string_equal(err_msg(), "definition: 'name' must be 1-63 of A-Z a-z 0-9 . _ - (not starting with . or -), "
                                       "not '0000000000000000000000000000000000000000000000000000000000000000'");
        free(j);
        j = tu_asprintf("{" BASE ",\"disks\":[{\"path\":\"/%0255d\"}]}", 0);
        assert_int_equal(parse(j, &d), -EINVAL);
        assert_string_equal(err_msg(), "definition: 'disks[0].path' is too long (256 bytes, at most 255)");
        free(j);
        /* a long bad value is cut in the detail */
        j = tu_asprintf("{" BASE ",\"machine\":\"%0100d\"}", 0);
        assert_int_equal(parse(j, &d), -EINVAL);
        assert_non_null(strstr(err_msg(), "not '0000000000000000000000000000000000000000000000000000000000000000...'"));
        free(j);
}

static void test_too_many(void **state) {
        char json[4096];
        GuestDef d;
        int n = snprintf(json, sizeof(json), "{" BASE ",\"disks\":[");
        for (int i = 0; i <= GUEST_MAX_DISKS; i++)
                n += snprintf(json + n, sizeof(json) - (size_t) n, "%s{\"path\":\"/d%d\"}", i ? "," : "", i);
        snprintf(json + n, sizeof(json) - (size_t) n, "]}");
        assert_int_equal(parse(json, &d), -EINVAL);
        assert_string_equal(err_msg(), "definition: 'disks' has 17 entries, at most 16 are allowed");

        n = snprintf(json, sizeof(json), "{" BASE ",\"nics\":[");
        for (int i = 0; i <= GUEST_MAX_NICS; i++)
                n += snprintf(json + n, sizeof(json) - (size_t) n, "%s{\"bridge\":\"br%d\"}", i ? "," : "", i);
        snprintf(json + n, sizeof(json) - (size_t) n, "]}");
        assert_int_equal(parse(json, &d), -EINVAL);
        assert_string_equal(err_msg(), "definition: 'nics' has 9 entries, at most 8 are allowed");
}

/* ---- paths and tap names ---- */

static void test_paths(void **state) {
        GuestPaths p;
        assert_int_equal(guest_paths("/run/drover/agent", "web1", &p), 0);
        assert_string_equal(p.qmp, "/run/drover/agent/web1.qmp");
        assert_string_equal(p.qga, "/run/drover/agent/web1.qga");
        assert_string_equal(p.serial, "/run/drover/agent/web1.serial");
        assert_string_equal(p.log, "/run/drover/agent/web1.log");
        assert_string_equal(p.pidfile, "/run/drover/agent/web1.pid");

        /* socket paths beyond sun_path, and paths beyond the fields */
        char dir[300], name[64];
        memset(name, 'n', 63);
        name[63] = '\0';
        snprintf(dir, sizeof(dir), "/%0*d", 39, 0); /* 40 + 1 + 63 + 4 = 108 */
        memset(&p, 0x5a, sizeof(p));
        assert_int_equal(guest_paths(dir, name, &p), -ENAMETOOLONG);
        assert_non_null(strstr(err_msg(), "longer than a unix socket allows (107 bytes)"));
        assert_int_equal((unsigned char) p.qmp[0], 0x5a);
        snprintf(dir, sizeof(dir), "/%0*d", 38, 0);
        assert_int_equal(guest_paths(dir, name, &p), 0);
        assert_int_equal(strlen(p.qmp), 107);
        snprintf(dir, sizeof(dir), "/%0*d", 250, 0);
        assert_int_equal(guest_paths(dir, name, &p), -ENAMETOOLONG);
}

static void test_tap_name(void **state) {
        char a[16], b[16], c[16];
        guest_tap_name(UUID, 0, a);
        assert_string_equal(a, TAP0);
        guest_tap_name(UUID, 1, a);
        assert_string_equal(a, TAP1);
        guest_tap_name("6D1D2A4E-0000-4000-8000-00000000C0DE", 1, b);
        assert_string_equal(a, b); /* case does not matter */
        /* UUIDs with the same first 8 digits still get different taps */
        guest_tap_name("6d1d2a4e-0000-4000-8000-00000000c0df", 1, c);
        assert_string_equal(c, "dv1b9f9011n1");
        guest_tap_name(UUID, 7, a);
        assert_true(strlen(a) <= 15);
        assert_memory_equal(a, "dv", 2);
}

/* ---- command line ---- */

static const char typical[] =
        "{\"name\":\"web1\",\"uuid\":\"" UUID "\",\"memory_mib\":256,\"vcpus\":2,"
        "\"kernel\":\"/srv/vmlinuz\",\"initrd\":\"/srv/initrd.img\",\"append\":\"console=ttyS0 root=/dev/vda\","
        "\"disks\":[{\"path\":\"/shared/web1.qcow2\",\"format\":\"qcow2\",\"shared\":true},"
        "{\"path\":\"/srv/data,1.img\",\"cache\":\"writethrough\",\"readonly\":true}],"
        "\"nics\":[{\"bridge\":\"br0\",\"mac\":\"52:54:00:12:34:56\"},"
        "{\"bridge\":\"br1\",\"mac\":\"52:54:00:12:34:57\",\"model\":\"e1000\"}],"
        "\"guest_agent\":true}";

/* Descriptor numbers as the agent would pass them: kernel 10, initrd 11,
 * disk i read-only 20 + 2i, read-write 21 + 2i.  The command line only
 * names them, so they need not be open here. */
static GuestFiles fake_files(const GuestDef *d, bool blk) {
        GuestFiles f;
        f.kernel = d->kernel[0] ? 10 : -1;
        f.initrd = d->initrd[0] ? 11 : -1;
        for (size_t i = 0; i < GUEST_MAX_DISKS; i++) {
                f.disk_ro[i] = i < d->n_disks ? 20 + 2 * (int) i : -1;
                f.disk_rw[i] = i < d->n_disks && !d->disks[i].readonly ? 21 + 2 * (int) i : -1;
                f.disk_blk[i] = blk;
        }
        return f;
}

static int build(const GuestDef *d, const GuestPaths *p, const char *qemu, const char *accel, bool incoming,
                 char ***ret) {
        GuestFiles f = fake_files(d, false);
        GuestLaunch l = { .qemu_binary = qemu, .accel = accel, .incoming = incoming };
        return guest_build_argv(d, p, &f, &l, ret);
}

static void assert_argv(char **argv, const char *const *want, size_t n) {
        size_t i = 0;
        for (; i < n && argv[i]; i++)
                if (strcmp(argv[i], want[i]) != 0)
                        fail_msg("argv[%zu]: got '%s', want '%s'", i, argv[i], want[i]);
        if (i < n)
                fail_msg("argv ends at %zu, want '%s'", i, want[i]);
        if (argv[i])
                fail_msg("argv[%zu]: unexpected '%s'", i, argv[i]);
}

static void test_argv_typical(void **state) {
        static const char *const want[] = {
                "/usr/bin/qemu-system-x86_64",
                "-name", "guest=web1",
                "-uuid", UUID,
                "-accel", "kvm",
                "-machine", "pc",
                "-cpu", "qemu64",
                "-m", "256",
                "-smp", "2",
                "-nodefaults",
                "-no-user-config",
                "-display", "none",
                /* -runas needs setgid/setuid after the filter is installed */
                "-sandbox", "on,obsolete=allow,elevateprivileges=allow,spawn=deny,resourcecontrol=deny",
                "-runas", "nobody",
                "-chroot", "/var/empty",
                "-qmp", "unix:/run/drover/agent/web1.qmp,server=on,wait=off",
                "-pidfile", "/run/drover/agent/web1.pid",
                "-serial", "file:/run/drover/agent/web1.serial",
                /* no path of the definition reaches QEMU: only the agent's descriptors */
                "-kernel", "/proc/self/fd/10",
                "-initrd", "/proc/self/fd/11",
                "-append", "console=ttyS0 root=/dev/vda",
                "-add-fd", "fd=20,set=0,opaque=disk0-ro",
                "-add-fd", "fd=21,set=0,opaque=disk0-rw",
                "-blockdev", "{\"driver\":\"qcow2\",\"node-name\":\"disk0\",\"read-only\":false,"
                             "\"cache\":{\"direct\":true,\"no-flush\":false},"
                             "\"file\":{\"driver\":\"file\",\"node-name\":\"disk0-file\",\"filename\":\"/dev/fdset/0\"},"
                             "\"backing\":null}",
                "-device", "virtio-blk-pci,id=virtio-disk0,drive=disk0,write-cache=on",
                "-add-fd", "fd=22,set=1,opaque=disk1-ro",
                "-blockdev", "{\"driver\":\"raw\",\"node-name\":\"disk1\",\"read-only\":true,"
                             "\"cache\":{\"direct\":false,\"no-flush\":false},"
                             "\"file\":{\"driver\":\"file\",\"node-name\":\"disk1-file\",\"filename\":\"/dev/fdset/1\"}}",
                "-device", "virtio-blk-pci,id=virtio-disk1,drive=disk1,write-cache=off",
                "-netdev", "tap,id=net0,ifname=" TAP0 ",script=no,downscript=no",
                "-device", "virtio-net-pci,id=nic0,netdev=net0,mac=52:54:00:12:34:56",
                "-netdev", "tap,id=net1,ifname=" TAP1 ",script=no,downscript=no",
                "-device", "e1000,id=nic1,netdev=net1,mac=52:54:00:12:34:57",
                "-chardev", "socket,id=qga0,path=/run/drover/agent/web1.qga,server=on,wait=off",
                "-device", "virtio-serial-pci,id=qga-serial",
                "-device", "virtserialport,bus=qga-serial.0,chardev=qga0,name=org.qemu.guest_agent.0",
                "-S", "-incoming", "defer",
        };
        GuestDef d;
        GuestPaths p;
        char **argv = NULL;

        assert_int_equal(parse(typical, &d), 0);
        assert_int_equal(guest_paths("/run/drover/agent", d.name, &p), 0);
        GuestFiles f = fake_files(&d, false);
        GuestLaunch l = { .qemu_binary = "/usr/bin/qemu-system-x86_64", .accel = "kvm", .incoming = true,
                          .user = "nobody", .chroot = "/var/empty" };
        assert_int_equal(guest_build_argv(&d, &p, &f, &l, &argv), 0);
        assert_argv(argv, want, ELEMENTSOF(want));
        guest_argv_free(argv);
}

static void test_argv_minimal(void **state) {
        static const char *const want[] = {
                "qemu-system-x86_64",
                "-name", "guest=min",
                "-uuid", UUID,
                "-accel", "tcg",
                "-machine", "microvm,pcie=on",
                "-cpu", "max",
                "-m", "16",
                "-smp", "1",
                "-nodefaults",
                "-no-user-config",
                "-display", "none",
                "-sandbox", "on,obsolete=allow,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
                /* commas in the run folder are doubled where QEMU splits options */
                "-qmp", "unix:/r,,un/min.qmp,,server=on,,wait=off/min.qmp,server=on,wait=off",
                "-pidfile", "/r,un/min.qmp,server=on,wait=off/min.pid",
                "-serial", "none",
                "-add-fd", "fd=20,set=0,opaque=disk0-ro",
                "-add-fd", "fd=21,set=0,opaque=disk0-rw",
                "-blockdev", "{\"driver\":\"raw\",\"node-name\":\"disk0\",\"read-only\":false,"
                             "\"cache\":{\"direct\":false,\"no-flush\":true},"
                             "\"file\":{\"driver\":\"file\",\"node-name\":\"disk0-file\",\"filename\":\"/dev/fdset/0\"}}",
                "-device", "virtio-blk-pci,id=virtio-disk0,drive=disk0,write-cache=on,bootindex=1",
                "-add-fd", "fd=22,set=1,opaque=disk1-ro",
                "-add-fd", "fd=23,set=1,opaque=disk1-rw",
                "-blockdev", "{\"driver\":\"raw\",\"node-name\":\"disk1\",\"read-only\":false,"
                             "\"cache\":{\"direct\":true,\"no-flush\":false},"
                             "\"file\":{\"driver\":\"file\",\"node-name\":\"disk1-file\",\"filename\":\"/dev/fdset/1\"}}",
                "-device", "virtio-blk-pci,id=virtio-disk1,drive=disk1,write-cache=off",
        };
        GuestDef d;
        GuestPaths p;
        char **argv = NULL;

        assert_int_equal(parse("{\"name\":\"min\",\"uuid\":\"" UUID "\",\"memory_mib\":16,\"machine\":\"microvm\","
                               "\"cpu_model\":\"max\",\"serial_log\":false,"
                               "\"disks\":[{\"path\":\"/img/min.raw\",\"cache\":\"unsafe\"},"
                               "{\"path\":\"/img/min2.raw\",\"cache\":\"directsync\"}]}", &d), 0);
        assert_int_equal(guest_paths("/r,un/min.qmp,server=on,wait=off", d.name, &p), 0);
        assert_int_equal(build(&d, &p, "qemu-system-x86_64", "tcg", false, &argv), 0);
        assert_argv(argv, want, ELEMENTSOF(want));
        guest_argv_free(argv);
}

static void test_argv_cache_modes(void **state) {
        static const struct {
                const char *cache, *blockdev_cache, *write_cache;
        } modes[] = {
                { "none", "\"cache\":{\"direct\":true,\"no-flush\":false}", "write-cache=on" },
                { "writeback", "\"cache\":{\"direct\":false,\"no-flush\":false}", "write-cache=on" },
                { "writethrough", "\"cache\":{\"direct\":false,\"no-flush\":false}", "write-cache=off" },
                { "directsync", "\"cache\":{\"direct\":true,\"no-flush\":false}", "write-cache=off" },
                { "unsafe", "\"cache\":{\"direct\":false,\"no-flush\":true}", "write-cache=on" },
        };
        for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
                GuestDef d;
                GuestPaths p;
                char **argv = NULL;
                char *j = tu_asprintf("{\"name\":\"c\",\"memory_mib\":64,\"kernel\":\"/k\","
                                    "\"disks\":[{\"path\":\"/d\",\"cache\":\"%s\"}]}", modes[i].cache);
                assert_int_equal(parse(j, &d), 0);
                assert_int_equal(guest_paths("/run", "c", &p), 0);
                assert_int_equal(build(&d, &p, "qemu", "tcg", false, &argv), 0);
                size_t k = 0;
                while (argv[k] && strcmp(argv[k], "-blockdev") != 0)
                        k++;
                assert_non_null(argv[k]);
                assert_non_null(strstr(argv[k + 1], modes[i].blockdev_cache));
                assert_string_equal(argv[k + 2], "-device");
                assert_non_null(strstr(argv[k + 3], modes[i].write_cache));
                assert_null(argv[k + 4]); /* no -S / -incoming without incoming */
                guest_argv_free(argv);
                free(j);
        }
}

/* A block device (as agent-files.c found it) gets QEMU's host_device
 * driver (file refuses it). */
static void test_argv_block_device(void **state) {
        GuestDef d;
        GuestPaths p;
        char **argv = NULL;
        assert_int_equal(parse("{\"name\":\"b\",\"memory_mib\":64,\"disks\":[{\"path\":\"/dev/vg/b\","
                               "\"readonly\":true}]}", &d), 0);
        assert_int_equal(guest_paths("/run", "b", &p), 0);
        GuestFiles f = fake_files(&d, true);
        GuestLaunch l = { .qemu_binary = "qemu", .accel = "tcg" };
        assert_int_equal(guest_build_argv(&d, &p, &f, &l, &argv), 0);
        bool found = false;
        for (size_t k = 0; argv[k]; k++)
                found |= strstr(argv[k], "\"file\":{\"driver\":\"host_device\",") != NULL;
        assert_true(found);
        guest_argv_free(argv);
}

/* Every file of the definition must come as a descriptor: a path never
 * reaches QEMU. */
static void test_argv_needs_descriptors(void **state) {
        GuestDef d;
        GuestPaths p;
        char **argv = (char **) 0x1;
        assert_int_equal(parse(typical, &d), 0);
        assert_int_equal(guest_paths("/run", d.name, &p), 0);
        GuestLaunch l = { .qemu_binary = "qemu", .accel = "tcg" };
        GuestFiles f = fake_files(&d, false);
        f.kernel = -1;
        assert_int_equal(guest_build_argv(&d, &p, &f, &l, &argv), -EINVAL);
        f = fake_files(&d, false);
        f.disk_rw[0] = -1; /* disk 0 is read-write */
        assert_int_equal(guest_build_argv(&d, &p, &f, &l, &argv), -EINVAL);
        f = fake_files(&d, false);
        f.disk_ro[1] = 2; /* stderr */
        assert_int_equal(guest_build_argv(&d, &p, &f, &l, &argv), -EINVAL);
        assert_ptr_equal(argv, (char **) 0x1);
}

static void test_argv_bad_accel(void **state) {
        GuestDef d;
        GuestPaths p;
        char **argv = (char **) 0x1;
        assert_int_equal(parse(typical, &d), 0);
        assert_int_equal(guest_paths("/run", d.name, &p), 0);
        assert_int_equal(build(&d, &p, "qemu", "hvf", false, &argv), -EINVAL);
        assert_string_equal(err_msg(), "accelerator must be kvm or tcg, not 'hvf'");
        assert_ptr_equal(argv, (char **) 0x1);
        guest_argv_free(NULL);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip),
                cmocka_unit_test(test_round_trip_generated),
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_uuid_generated),
                cmocka_unit_test(test_mac_generated),
                cmocka_unit_test(test_accepted_values),
                cmocka_unit_test(test_bad_values),
                cmocka_unit_test(test_invalid_json),
                cmocka_unit_test(test_size_limits),
                cmocka_unit_test(test_too_many),
                cmocka_unit_test(test_paths),
                cmocka_unit_test(test_tap_name),
                cmocka_unit_test(test_argv_typical),
                cmocka_unit_test(test_argv_minimal),
                cmocka_unit_test(test_argv_cache_modes),
                cmocka_unit_test(test_argv_block_device),
                cmocka_unit_test(test_argv_needs_descriptors),
                cmocka_unit_test(test_argv_bad_accel),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
