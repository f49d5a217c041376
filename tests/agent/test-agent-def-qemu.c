/* Integration test: real QEMU accepts guest_build_argv()'s command line.
 *
 * A guest with the test kernel (tests/guest/dirtyguest.elf), raw disks in
 * several cache modes (and a qcow2 one when qemu-img is installed), the QGA
 * channel and a serial log is built with agent-def.h and started with TCG.
 * Beyond "QEMU starts and opens its monitor", the test asks QEMU itself
 * whether it got what the argv meant: the guest boots (READY on the serial
 * log, so -kernel/-append/-serial work), the process runs under seccomp,
 * the pidfile names it, and query-block / query-named-block-nodes show the
 * read-only flags and cache modes on both the format and the protocol node.
 * The run folder has a comma in its name, so the ",," escaping of -qmp
 * and -chardev values is exercised too.  The files come as the agent
 * passes them (agent-files.h: opened inside an image root, inherited as
 * descriptors: fd sets for the disks, /proc/self/fd for the kernel), and,
 * run as root, QEMU drops to nobody (-runas) after opening them.
 *
 * It also backs the image-locking decision in agent-def.c: a second QEMU
 * started with -incoming on the same disks comes up (inactive images hold
 * no write lock) and waits in "inmigrate", while a third, normal one is
 * refused by the image lock.
 *
 * NICs are left out: a tap needs a bridge and CAP_NET_ADMIN, which the
 * agent's own tests (tests/agentd) handle.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent-config.h"
#include "agent-def.h"
#include "agent-files.h"
#include "err.h"
#include "testutil.h"

typedef struct DiskSpec {
        const char *file, *format, *cache;
        bool readonly;
} DiskSpec;

static const char *qemu, *elf, *tmp;
static DiskSpec disks[4];
static size_t n_disks;
static GuestDef def;
static AgentConfig cfg; /* image roots: tmp and the test guest's folder */

static void make_disks(void) {
        int fd = open(tu_path(tmp, "probe"), O_CREAT | O_RDWR | O_DIRECT | O_CLOEXEC, 0600);
        bool odirect = fd >= 0; /* cache=none needs O_DIRECT, which some tmpfs lack */
        if (fd >= 0)
                close(fd);

        disks[n_disks++] = (DiskSpec){ "d0,comma.raw", "raw", "writeback", false };
        disks[n_disks++] = (DiskSpec){ "d1.raw", "raw", odirect ? "none" : "writethrough", false };
        disks[n_disks++] = (DiskSpec){ "d2.raw", "raw", odirect ? "directsync" : "writethrough", true };
        for (size_t i = 0; i < n_disks; i++) {
                fd = open(tu_path(tmp, disks[i].file), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
                assert_true(fd >= 0);
                assert_int_equal(ftruncate(fd, 1 << 20), 0);
                close(fd);
        }
        const char *img = tu_which("qemu-img");
        if (img) {
                char *argv[] = { (char *) img, "create", "-q", "-f", "qcow2",
                                 (char *) tu_path(tmp, "d3.qcow2"), "1M", NULL };
                pid_t pid = tu_spawn(argv, NULL);
                int st = -1;
                for (int i = 0; i < 1000 && !tu_reap(pid, &st); i++)
                        usleep(10000);
                if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                        disks[n_disks++] = (DiskSpec){ "d3.qcow2", "qcow2", "unsafe", false };
                else
                        print_message("qemu-img failed; no qcow2 disk in this run\n");
        } else
                print_message("qemu-img not installed; no qcow2 disk in this run\n");
}

static int setup(void **state) {
        char json[4096];
        int n;

        qemu = tu_which("qemu-system-x86_64");
        if (!qemu)
                tu_skip("qemu-system-x86_64 is not installed (tests/scripts/setup.sh installs it)");
        qemu = strdup(qemu);
        elf = getenv("DROVER_GUEST_ELF");
        if (!elf || access(elf, R_OK) < 0)
                tu_skip("the test guest is not built (DROVER_GUEST_ELF unset or missing)");
        tmp = tu_tmpdir("agentdef-qemu");
        make_disks();

        n = snprintf(json, sizeof(json),
                     "{\"name\":\"itest\",\"memory_mib\":64,\"kernel\":\"%s\",\"append\":\"mib=8 rate=1\","
                     "\"guest_agent\":true,\"serial_log\":true,\"disks\":[", elf);
        for (size_t i = 0; i < n_disks; i++)
                n += snprintf(json + n, sizeof(json) - (size_t) n,
                              "%s{\"path\":\"%s\",\"format\":\"%s\",\"cache\":\"%s\",\"readonly\":%s,\"shared\":true}",
                              i ? "," : "", tu_path(tmp, disks[i].file), disks[i].format, disks[i].cache,
                              disks[i].readonly ? "true" : "false");
        snprintf(json + n, sizeof(json) - (size_t) n, "]}");
        if (guest_def_parse(json, strlen(json), &def) < 0)
                fail_msg("%s", err_msg());
        agent_config_defaults(&cfg);
        cfg.n_image_roots = 2;
        snprintf(cfg.image_roots[0], sizeof(cfg.image_roots[0]), "%s", tmp);
        snprintf(cfg.image_roots[1], sizeof(cfg.image_roots[1]), "%s", elf);
        *strrchr(cfg.image_roots[1], '/') = '\0';
        if (guest_def_check_files(&def, &cfg) < 0)
                fail_msg("%s", err_msg());
        return 0;
}

/* ---- a minimal QMP client: one JSON object per line ---- */

typedef struct Qmp {
        FILE *in, *out;
} Qmp;

static void qmp_open(Qmp *q, const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = 10 };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        assert_int_equal(connect(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        q->in = fdopen(fd, "r");
        q->out = fdopen(dup(fd), "w");
        assert_non_null(q->in);
        assert_non_null(q->out);
}

static void qmp_close(Qmp *q) {
        fclose(q->in);
        fclose(q->out);
}

/* The next non-event message. */
static json_object *qmp_read(Qmp *q) {
        char *line = NULL;
        size_t cap = 0;
        for (;;) {
                if (getline(&line, &cap, q->in) < 0)
                        fail_msg("QMP connection closed or timed out");
                json_object *o = json_tokener_parse(line);
                if (o && !json_object_object_get_ex(o, "event", NULL)) {
                        free(line);
                        return o;
                }
                json_object_put(o);
        }
}

/* "return" of @cmd (the caller puts the returned reference). */
static json_object *qmp_cmd(Qmp *q, const char *cmd) {
        json_object *ret;
        fprintf(q->out, "{\"execute\":\"%s\"}\n", cmd);
        fflush(q->out);
        json_object *reply = qmp_read(q);
        if (!json_object_object_get_ex(reply, "return", &ret))
                fail_msg("%s failed: %s", cmd, json_object_to_json_string(reply));
        json_object_get(ret);
        json_object_put(reply);
        return ret;
}

static void qmp_start(Qmp *q, const char *path) {
        qmp_open(q, path);
        json_object_put(qmp_read(q)); /* greeting */
        json_object_put(qmp_cmd(q, "qmp_capabilities"));
}

static json_object *get(json_object *o, const char *key) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v))
                fail_msg("no '%s' in %s", key, json_object_to_json_string(o));
        return v;
}

static bool get_bool(json_object *o, const char *key) {
        return json_object_get_boolean(get(o, key));
}

static const char *get_str(json_object *o, const char *key) {
        return json_object_get_string(get(o, key));
}

/* ---- QEMU processes ---- */

/* As the agent starts QEMU: files opened and checked, their descriptors
 * inherited (this test is single-threaded, so clearing FD_CLOEXEC around
 * the spawn is safe), -runas nobody when run as root. */
static pid_t start(const GuestPaths *p, bool incoming) {
        char **argv = NULL;
        GuestFiles f;
        GuestLaunch l = { .qemu_binary = qemu, .accel = "tcg", .incoming = incoming,
                          .user = geteuid() == 0 ? "nobody" : NULL };
        if (guest_def_check_host(&def, &cfg, &f) < 0)
                fail_msg("%s", err_msg());
        assert_int_equal(guest_build_argv(&def, p, &f, &l, &argv), 0);
        int fds[] = { f.kernel, f.initrd, f.disk_ro[0], f.disk_rw[0], f.disk_ro[1], f.disk_rw[1],
                      f.disk_ro[2], f.disk_rw[2], f.disk_ro[3], f.disk_rw[3] };
        for (size_t i = 0; i < ELEMENTSOF(fds); i++)
                if (fds[i] >= 0)
                        assert_int_equal(fcntl(fds[i], F_SETFD, 0), 0);
        pid_t pid = tu_spawn(argv, p->log);
        guest_argv_free(argv);
        guest_files_close(&f);
        assert_true(pid > 0);
        return pid;
}

static void wait_monitor(pid_t pid, const GuestPaths *p) {
        if (tu_wait_path(p->qmp, 15000, true) < 0) {
                char *log = tu_read_file(p->log, NULL);
                fail_msg("QEMU (pid %d) did not open %s:\n%s", (int) pid, p->qmp, log ? log : "(no log)");
        }
}

static void paths_in(const char *sub, GuestPaths *p) {
        const char *dir = tu_path(tmp, sub);
        assert_int_equal(mkdir(dir, 0700), 0);
        if (guest_paths(dir, def.name, p) < 0)
                fail_msg("%s", err_msg());
}

static bool file_contains(const char *path, const char *needle, int timeout_ms) {
        for (int waited = 0; waited <= timeout_ms; waited += 20) {
                char *s = tu_read_file(path, NULL);
                bool found = s && strstr(s, needle);
                free(s);
                if (found)
                        return true;
                usleep(20000);
        }
        return false;
}

/* Each disk's flags as QEMU sees them.  The device's write cache is only
 * checked with @check_wce, on a QEMU whose vCPUs never ran: SeaBIOS drives
 * virtio-blk without flush support, and QEMU then falls back to
 * writethrough until the next device reset (a real guest OS resets). */
static void check_block(Qmp *q, bool check_wce) {
        json_object *blocks = qmp_cmd(q, "query-block");
        json_object *nodes = qmp_cmd(q, "query-named-block-nodes");
        size_t seen = 0;

        for (size_t i = 0; i < def.n_disks; i++) {
                const GuestDisk *d = &def.disks[i];
                bool direct = !strcmp(d->cache, "none") || !strcmp(d->cache, "directsync");
                bool no_flush = !strcmp(d->cache, "unsafe");
                bool wce = strcmp(d->cache, "writethrough") != 0 && strcmp(d->cache, "directsync") != 0;
                char node[32], file_node[32], qdev[96];
                snprintf(node, sizeof(node), "disk%zu", i);
                snprintf(file_node, sizeof(file_node), "disk%zu-file", i);
                snprintf(qdev, sizeof(qdev), "/machine/peripheral/virtio-disk%zu/virtio-backend", i);

                /* the device's view: write cache (write-cache=), read-only, cache flags */
                for (size_t k = 0; k < json_object_array_length(blocks); k++) {
                        json_object *b = json_object_array_get_idx(blocks, k), *ins;
                        if (strcmp(get_str(b, "qdev"), qdev) != 0)
                                continue;
                        ins = get(b, "inserted");
                        assert_string_equal(get_str(ins, "node-name"), node);
                        assert_int_equal(get_bool(ins, "ro"), d->readonly);
                        json_object *cache = get(ins, "cache");
                        if ((check_wce && get_bool(cache, "writeback") != wce) || get_bool(cache, "direct") != direct ||
                            get_bool(cache, "no-flush") != no_flush)
                                fail_msg("disk%zu (%s): device cache %s", i, d->cache, json_object_to_json_string(cache));
                        seen++;
                }
                /* each node's own flags: the protocol node must have inherited them */
                for (size_t k = 0; k < json_object_array_length(nodes); k++) {
                        json_object *n = json_object_array_get_idx(nodes, k);
                        const char *name = get_str(n, "node-name");
                        if (strcmp(name, node) != 0 && strcmp(name, file_node) != 0)
                                continue;
                        const char *drv = get_str(n, "drv");
                        assert_string_equal(drv, strcmp(name, node) == 0 ? d->format : "file");
                        assert_int_equal(get_bool(n, "ro"), d->readonly);
                        json_object *cache = get(n, "cache");
                        if (get_bool(cache, "direct") != direct || get_bool(cache, "no-flush") != no_flush)
                                fail_msg("%s (%s): node cache %s", name, d->cache, json_object_to_json_string(cache));
                        seen++;
                }
        }
        assert_int_equal(seen, 3 * def.n_disks);
        json_object_put(blocks);
        json_object_put(nodes);
}

static void check_seccomp(pid_t pid) {
        char path[64], *status;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        status = tu_read_file(path, NULL);
        assert_non_null(status);
        if (!strstr(status, "\nSeccomp:\t2\n"))
                fail_msg("QEMU runs without a seccomp filter: -sandbox did not apply");
        free(status);
}

static void test_qemu_accepts_argv(void **state) {
        GuestPaths p1, p2, p3;
        Qmp q;

        paths_in("run,1", &p1);
        pid_t pid = start(&p1, false);
        wait_monitor(pid, &p1);
        assert_int_equal(tu_wait_path(p1.qga, 5000, false), 0);

        /* the guest runs the kernel with our -append and writes to -serial */
        if (!file_contains(p1.serial, "READY", 15000))
                fail_msg("no READY on %s", p1.serial);
        char *pidtext = tu_read_file(p1.pidfile, NULL);
        assert_non_null(pidtext);
        assert_int_equal(atoi(pidtext), pid);
        free(pidtext);
        check_seccomp(pid);
        if (geteuid() == 0) { /* -runas took effect, after QEMU opened what it needed */
                char path[64];
                snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
                char *status = tu_read_file(path, NULL);
                assert_non_null(status);
                assert_non_null(strstr(status, "\nUid:\t65534\t65534\t65534\t65534\n"));
                free(status);
        }

        qmp_start(&q, p1.qmp);
        json_object *st = qmp_cmd(&q, "query-status");
        assert_string_equal(get_str(st, "status"), "running");
        json_object_put(st);
        check_block(&q, false);
        json_object *chardevs = qmp_cmd(&q, "query-chardev");
        bool qga = false;
        for (size_t k = 0; k < json_object_array_length(chardevs); k++) {
                json_object *c = json_object_array_get_idx(chardevs, k);
                if (!strcmp(get_str(c, "label"), "qga0"))
                        qga = strstr(get_str(c, "filename"), p1.qga) != NULL;
        }
        assert_true(qga);
        json_object_put(chardevs);
        qmp_close(&q);

        /* the incoming side of a migration opens the same disks: no lock conflict */
        paths_in("run2", &p2);
        pid_t pid2 = start(&p2, true);
        wait_monitor(pid2, &p2);
        qmp_start(&q, p2.qmp);
        st = qmp_cmd(&q, "query-status");
        assert_string_equal(get_str(st, "status"), "inmigrate");
        assert_false(get_bool(st, "running"));
        json_object_put(st);
        check_block(&q, true);
        qmp_close(&q);

        /* a second normal start on the same disks is refused by the image lock */
        paths_in("run3", &p3);
        pid_t pid3 = start(&p3, false);
        int status = 0;
        bool exited = false;
        for (int i = 0; i < 1500 && !(exited = tu_reap(pid3, &status)); i++)
                usleep(10000);
        if (!exited) {
                tu_kill(pid3);
                fail_msg("a second QEMU on the same writable disks was not stopped by the image lock");
        }
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0);
        assert_true(file_contains(p3.log, "lock", 0));

        tu_kill(pid2);
        tu_kill(pid);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_qemu_accepts_argv),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
