/* Real QEMU for tests (see qemuproc.h). */
#define _GNU_SOURCE
#include "qemuproc.h"

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

const char *tu_qemu_binary(void) {
        return tu_which("qemu-system-x86_64");
}

const char *tu_guest_elf(void) {
        const char *p = getenv("DROVER_GUEST_ELF");
        return p && access(p, R_OK) == 0 ? p : NULL;
}

void tu_require_qemu(void) {
        if (!tu_qemu_binary())
                tu_skip("qemu-system-x86_64 is not installed (tests/scripts/setup.sh installs it)");
        if (!tu_guest_elf())
                tu_skip("the test guest is not built (DROVER_GUEST_ELF unset or missing)");
}

int tu_qemu_start(const TuQemuOpts *o, TuQemu *ret) {
        char mem[16], serial[300], qmp[300], chardev[300];
        const char *argv[48];
        int n = 0;

        memset(ret, 0, sizeof(*ret));
        snprintf(ret->qmp_path, sizeof(ret->qmp_path), "%s/%s.qmp", o->dir, o->name);
        snprintf(ret->qga_path, sizeof(ret->qga_path), "%s/%s.qga", o->dir, o->name);
        snprintf(ret->serial_path, sizeof(ret->serial_path), "%s/%s.serial", o->dir, o->name);
        snprintf(ret->log_path, sizeof(ret->log_path), "%s/%s.log", o->dir, o->name);
        snprintf(mem, sizeof(mem), "%d", o->mem_mib > 0 ? o->mem_mib : 64);
        snprintf(serial, sizeof(serial), "file:%s", ret->serial_path);
        snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", ret->qmp_path);
        snprintf(chardev, sizeof(chardev), "socket,id=qga0,path=%s,server=on,wait=off", ret->qga_path);

        if (o->netns) {
                argv[n++] = "ip";
                argv[n++] = "netns";
                argv[n++] = "exec";
                argv[n++] = o->netns;
        }
        argv[n++] = tu_qemu_binary();
        argv[n++] = "-accel";
        argv[n++] = "tcg";
        argv[n++] = "-machine";
        argv[n++] = "pc";
        argv[n++] = "-m";
        argv[n++] = mem;
        argv[n++] = "-nodefaults";
        argv[n++] = "-no-user-config";
        argv[n++] = "-display";
        argv[n++] = "none";
        argv[n++] = "-kernel";
        argv[n++] = o->guest_elf ? o->guest_elf : tu_guest_elf();
        argv[n++] = "-append";
        argv[n++] = o->append ? o->append : "mib=32 rate=10";
        argv[n++] = "-serial";
        argv[n++] = serial;
        argv[n++] = "-qmp";
        argv[n++] = qmp;
        if (o->qga) {
                argv[n++] = "-chardev";
                argv[n++] = chardev;
                argv[n++] = "-device";
                argv[n++] = "virtio-serial-pci,id=vs0";
                argv[n++] = "-device";
                argv[n++] = "virtserialport,bus=vs0.0,chardev=qga0,name=org.qemu.guest_agent.0";
        }
        if (o->incoming) {
                /* -S: the destination stays paused after the stream ends, so
                 * the finish step decides when it runs (like libvirt). */
                argv[n++] = "-S";
                argv[n++] = "-incoming";
                argv[n++] = "defer";
        }
        argv[n] = NULL;

        pid_t pid = tu_spawn((char *const *) argv, ret->log_path);
        if (pid < 0)
                return (int) pid;
        ret->pid = pid;
        if (tu_wait_path(ret->qmp_path, 10000, true) < 0) {
                char *log = tu_read_file(ret->log_path, NULL);
                fprintf(stderr, "QEMU %s did not open its QMP socket: %s\n", o->name, log ? log : "");
                free(log);
                tu_kill(pid);
                ret->pid = 0;
                return -ETIMEDOUT;
        }
        return 0;
}

bool tu_serial_wait(const TuQemu *q, const char *needle, int timeout_ms) {
        struct timespec ts = { 0, 10 * 1000000L };
        for (int waited = 0; waited <= timeout_ms; waited += 10) {
                char *s = tu_read_file(q->serial_path, NULL);
                bool found = s && strstr(s, needle);
                free(s);
                if (found)
                        return true;
                nanosleep(&ts, NULL);
        }
        return false;
}

int tu_serial_seconds(const TuQemu *q) {
        return tu_count_lines(q->serial_path, "S ");
}

int tu_qemus_under(const char *needle) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        int n = 0;
        if (!d)
                return 0;
        while ((de = readdir(d))) {
                int pid = atoi(de->d_name);
                char path[64], exe[256] = "";
                if (pid <= 0)
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/exe", pid);
                ssize_t k = readlink(path, exe, sizeof(exe) - 1);
                if (k <= 0 || !strstr(exe, "qemu-system") || !tu_pid_alive(pid))
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
                size_t len = 0;
                char *cmd = tu_read_file(path, &len);
                for (size_t i = 0; cmd && i + 1 < len; i++)
                        if (cmd[i] == '\0')
                                cmd[i] = ' ';
                if (cmd && strstr(cmd, needle))
                        n++;
                free(cmd);
        }
        closedir(d);
        return n;
}

int tu_free_port(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 ||
            getsockname(fd, (struct sockaddr *) &sa, &len) < 0) {
                if (fd >= 0)
                        close(fd);
                return -errno;
        }
        int port = ntohs(sa.sin_port);
        close(fd);
        return port;
}
