/* Network namespaces as hosts (see netns.h).
 *
 * Every change is a run of ip(8) or tc(8) through fork+exec (no shell), so
 * the same code runs from a signal handler during cleanup.  Processes inside
 * a namespace are found by comparing /proc/PID/ns/net with the namespace's
 * bind mount in /run/netns (same device and inode = same namespace).
 */
#define _GNU_SOURCE
#include "netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

#define NETNS_DIR "/run/netns"

static NetnsCluster *active;      /* the cluster to tear down at exit or on a signal */
static char own_prefix[24];       /* "drv<pid>-" of this process */
static int subnet_fd = -1;        /* holds the claim on our subnet byte */
static int claimed_subnet;

static const int fatal_signals[] = { SIGTERM, SIGINT, SIGHUP, SIGABRT, SIGSEGV, SIGBUS };
static struct sigaction old_actions[sizeof(fatal_signals) / sizeof(fatal_signals[0])];

static void pause_ms(long ms) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        nanosleep(&ts, NULL);
}

/* Run argv[0] (an absolute path) and wait; returns its exit code, or -1.
 * stdout goes to /dev/null; stderr stays unless @quiet. */
static int run_argv(char *const argv[], bool quiet) {
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                int nul = open("/dev/null", O_RDWR);
                if (nul >= 0) {
                        dup2(nul, STDIN_FILENO);
                        dup2(nul, STDOUT_FILENO);
                        if (quiet)
                                dup2(nul, STDERR_FILENO);
                }
                execv(argv[0], argv);
                _exit(127);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *ip_path(void) {
        static char path[256];
        if (!path[0]) {
                const char *p = tu_which("ip");
                snprintf(path, sizeof(path), "%s", p ? p : "/usr/sbin/ip");
        }
        return path;
}

static const char *tc_path(void) {
        static char path[256];
        if (!path[0]) {
                const char *p = tu_which("tc");
                snprintf(path, sizeof(path), "%s", p ? p : "/usr/sbin/tc");
        }
        return path;
}

/* Run "@prog word word ..." (@fmt formatted, split on spaces); prints the
 * command when it fails.  Returns 0 or -EIO. */
static int cmd(const char *prog, bool quiet, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int cmd(const char *prog, bool quiet, const char *fmt, ...) {
        char line[512], copy[512];
        char *argv[48];
        size_t n = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        snprintf(copy, sizeof(copy), "%s", line);
        argv[n++] = (char *) prog;
        for (char *save = NULL, *w = strtok_r(copy, " ", &save); w && n < 47; w = strtok_r(NULL, " ", &save))
                argv[n++] = w;
        argv[n] = NULL;
        int rc = run_argv(argv, quiet);
        if (rc != 0 && !quiet)
                fprintf(stderr, "netns: '%s %s' failed (exit %d)\n", prog, line, rc);
        return rc == 0 ? 0 : -EIO;
}

/* ---- processes inside a namespace ---------------------------------------------- */

/* Live processes whose network namespace is the one mounted at /run/netns/@name. */
static int pids_in(const char *name, int *pids, int max) {
        char path[300];
        struct stat ns;
        snprintf(path, sizeof(path), NETNS_DIR "/%s", name);
        if (stat(path, &ns) < 0)
                return 0;
        DIR *d = opendir("/proc");
        struct dirent *de;
        int n = 0;
        if (!d)
                return 0;
        while ((de = readdir(d)) && n < max) {
                char *end;
                long pid = strtol(de->d_name, &end, 10);
                if (*end || pid <= 0 || pid == getpid())
                        continue;
                struct stat st;
                snprintf(path, sizeof(path), "/proc/%ld/ns/net", pid);
                if (stat(path, &st) < 0 || st.st_dev != ns.st_dev || st.st_ino != ns.st_ino)
                        continue;
                if (tu_pid_alive((pid_t) pid))
                        pids[n++] = (int) pid;
        }
        closedir(d);
        return n;
}

static void kill_in(const char *name) {
        int pids[512];
        for (int round = 0; round < 40; round++) {
                int n = pids_in(name, pids, 512);
                if (!n)
                        return;
                for (int i = 0; i < n; i++)
                        kill(pids[i], SIGKILL);
                pause_ms(50);
        }
        fprintf(stderr, "netns: processes in %s did not die\n", name);
}

static void delete_ns(const char *name) {
        char path[300];
        snprintf(path, sizeof(path), NETNS_DIR "/%s", name);
        if (access(path, F_OK) < 0)
                return;
        kill_in(name);
        if (cmd(ip_path(), true, "netns del %s", name) < 0) {
                /* what `ip netns del` does, in case ip itself is the problem */
                (void) umount2(path, MNT_DETACH);
                (void) unlink(path);
        }
}

/* Delete every namespace named <prefix>* (own_prefix: ours; or any drv<pid>-
 * whose process is gone when @stale). */
static void sweep(bool stale) {
        DIR *d = opendir(NETNS_DIR);
        struct dirent *de;
        char names[64][64];
        int n = 0;
        if (!d)
                return;
        while ((de = readdir(d)) && n < 64) {
                if (stale) {
                        int pid = 0, len = 0;
                        if (sscanf(de->d_name, "drv%d-%n", &pid, &len) != 1 || len == 0 || pid <= 0 ||
                            pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
                                continue;
                } else if (!own_prefix[0] || strncmp(de->d_name, own_prefix, strlen(own_prefix)) != 0)
                        continue;
                snprintf(names[n++], sizeof(names[0]), "%.63s", de->d_name);
        }
        closedir(d);
        for (int i = 0; i < n; i++) {
                if (stale)
                        fprintf(stderr, "netns: removing %s left by a test that no longer runs\n", names[i]);
                delete_ns(names[i]);
        }
}

/* ---- cleanup on exit and on fatal signals ----------------------------------------- */

static void cleanup_everything(void) {
        if (active)
                netns_down(active);
        sweep(false);
}

static void on_fatal(int sig) {
        size_t i;
        for (i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++)
                if (fatal_signals[i] == sig)
                        break;
        cleanup_everything();
        if (i < sizeof(fatal_signals) / sizeof(fatal_signals[0])) {
                sigaction(sig, &old_actions[i], NULL);
                if (!(old_actions[i].sa_flags & SA_SIGINFO) && old_actions[i].sa_handler != SIG_DFL &&
                    old_actions[i].sa_handler != SIG_IGN) {
                        old_actions[i].sa_handler(sig); /* testutil's: kills children, re-raises */
                        return;
                }
        }
        signal(sig, SIG_DFL);
        raise(sig);
}

/* Install our handlers on top of whatever is there (testutil installs its
 * own at first use, so this is re-checked at every netns_up). */
static void install_handlers(void) {
        static bool atexit_done;
        if (!atexit_done) {
                atexit(cleanup_everything);
                atexit_done = true;
        }
        for (size_t i = 0; i < sizeof(fatal_signals) / sizeof(fatal_signals[0]); i++) {
                struct sigaction cur, sa = { 0 };
                sigaction(fatal_signals[i], NULL, &cur);
                if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == on_fatal)
                        continue;
                sa.sa_handler = on_fatal;
                sigemptyset(&sa.sa_mask);
                sa.sa_flags = SA_RESETHAND;
                sigaction(fatal_signals[i], &sa, &old_actions[i]);
        }
}

/* ---- public --------------------------------------------------------------------------- */

void netns_require(void) {
        char name[40];
        if (geteuid() != 0)
                tu_skip("the cluster suite needs root (network namespaces, veth, bridge, tc)");
        if (!tu_which("ip") || !tu_which("tc"))
                tu_skip("ip(8) or tc(8) (iproute2) is not installed");
        snprintf(name, sizeof(name), "drv%d-probe", (int) getpid());
        if (cmd(ip_path(), true, "netns add %s", name) < 0)
                tu_skip("'ip netns add' fails here (no namespace support or no permission)");
        delete_ns(name);
}

/* Claim a subnet byte no other live test process holds: bind an abstract
 * unix socket named after it (released by the kernel when we exit). */
static int claim_subnet(void) {
        if (subnet_fd >= 0)
                return claimed_subnet;
        for (int k = 0; k < 200; k++) {
                int x = 20 + (int) ((getpid() + k) % 200);
                struct sockaddr_un sa = { .sun_family = AF_UNIX };
                int len = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "drover-cluster-10.77.%d", x);
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return -errno;
                if (bind(fd, (struct sockaddr *) &sa, (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + len)) == 0) {
                        subnet_fd = fd;
                        claimed_subnet = x;
                        return x;
                }
                close(fd);
        }
        return -EADDRINUSE;
}

int netns_up(NetnsCluster *c, int n_hosts) {
        const char *ip = ip_path();
        int x;

        if (n_hosts < 1 || n_hosts > NETNS_MAX_HOSTS)
                return -EINVAL;
        if ((x = claim_subnet()) < 0)
                return x;
        memset(c, 0, sizeof(*c));
        snprintf(own_prefix, sizeof(own_prefix), "drv%d-", (int) getpid());
        install_handlers();
        sweep(true);
        sweep(false);

        c->n_hosts = n_hosts;
        c->subnet = x;
        snprintf(c->prefix, sizeof(c->prefix), "drv%d", (int) getpid());
        snprintf(c->sw, sizeof(c->sw), "%s-sw", c->prefix);
        active = c;
        c->up = true;
        if (cmd(ip, false, "netns add %s", c->sw) < 0 ||
            cmd(ip, false, "-n %s link set lo up", c->sw) < 0 ||
            cmd(ip, false, "-n %s link add br0 type bridge stp_state 0 forward_delay 0", c->sw) < 0 ||
            cmd(ip, false, "-n %s link set br0 up", c->sw) < 0)
                goto fail;
        for (int i = 0; i < n_hosts; i++) {
                char h = (char) ('a' + i);
                snprintf(c->ns[i], sizeof(c->ns[i]), "%s-%c", c->prefix, h);
                snprintf(c->addr[i], sizeof(c->addr[i]), "10.77.%d.%d", x, i + 1);
                if (cmd(ip, false, "netns add %s", c->ns[i]) < 0 ||
                    cmd(ip, false, "-n %s link set lo up", c->ns[i]) < 0 ||
                    cmd(ip, false, "-n %s link add hp%c type veth peer name eth0 netns %s", c->sw, h, c->ns[i]) < 0 ||
                    cmd(ip, false, "-n %s link set hp%c master br0", c->sw, h) < 0 ||
                    cmd(ip, false, "-n %s link set hp%c up", c->sw, h) < 0 ||
                    cmd(ip, false, "-n %s addr add %s/24 dev eth0", c->ns[i], c->addr[i]) < 0 ||
                    cmd(ip, false, "-n %s link set eth0 up", c->ns[i]) < 0)
                        goto fail;
        }
        return 0;
fail:
        netns_down(c);
        return -EIO;
}

int netns_shape(const NetnsCluster *c, int i, const char *rate) {
        if (i < 0 || i >= c->n_hosts)
                return -EINVAL;
        if (!rate || strcmp(rate, "off") == 0) {
                (void) cmd(tc_path(), true, "-n %s qdisc del dev eth0 root", c->ns[i]);
                return 0;
        }
        return cmd(tc_path(), false, "-n %s qdisc replace dev eth0 root tbf rate %s burst 128kb latency 100ms",
                   c->ns[i], rate);
}

int netns_cut(const NetnsCluster *c, int i) {
        if (i < 0 || i >= c->n_hosts)
                return -EINVAL;
        return cmd(ip_path(), false, "-n %s link set eth0 down", c->ns[i]);
}

int netns_heal(const NetnsCluster *c, int i) {
        if (i < 0 || i >= c->n_hosts)
                return -EINVAL;
        return cmd(ip_path(), false, "-n %s link set eth0 up", c->ns[i]);
}

int netns_pids(const NetnsCluster *c, int i, int *pids, int max) {
        if (i < 0 || i >= c->n_hosts)
                return 0;
        return pids_in(c->ns[i], pids, max);
}

void netns_down(NetnsCluster *c) {
        if (!c || !c->up)
                return;
        c->up = false;
        for (int i = 0; i < c->n_hosts; i++)
                if (c->ns[i][0])
                        kill_in(c->ns[i]);
        for (int i = 0; i < c->n_hosts; i++)
                if (c->ns[i][0])
                        delete_ns(c->ns[i]);
        delete_ns(c->sw);
        if (active == c)
                active = NULL;
}
