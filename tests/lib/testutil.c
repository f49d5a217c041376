/* Test helpers (see testutil.h). */
#define _GNU_SOURCE
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 256
#define MAX_TMPDIRS 16

static pid_t children[MAX_CHILDREN];
static char *tmpdirs[MAX_TMPDIRS];
static int n_tmpdirs;
static bool atexit_done;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st; (void) flag; (void) ftw;
        remove(path);
        return 0;
}

static void cleanup_all(void) {
        for (int i = 0; i < MAX_CHILDREN; i++)
                if (children[i] > 0) {
                        kill(children[i], SIGKILL);
                        waitpid(children[i], NULL, 0);
                        children[i] = 0;
                }
        if (getenv("DROVER_KEEP_TMP"))
                return;
        for (int i = 0; i < n_tmpdirs; i++) {
                nftw(tmpdirs[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
                free(tmpdirs[i]);
        }
        n_tmpdirs = 0;
}

static void fatal_signal(int sig) {
        cleanup_all();
        signal(sig, SIG_DFL);
        raise(sig);
}

static void ensure_atexit(void) {
        if (atexit_done)
                return;
        atexit_done = true;
        atexit(cleanup_all);
        signal(SIGTERM, fatal_signal);
        signal(SIGINT, fatal_signal);
        signal(SIGPIPE, SIG_IGN);
}

void tu_skip(const char *fmt, ...) {
        va_list ap;
        printf("SKIP: ");
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        fflush(stdout);
        exit(TU_EXIT_SKIP);
}

char *tu_asprintf(const char *fmt, ...) {
        char *s;
        va_list ap;
        va_start(ap, fmt);
        int n = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (n < 0) {
                perror("vasprintf");
                abort();
        }
        return s;
}

const char *tu_tmpdir(const char *tag) {
        char tmpl[512];
        const char *base = getenv("TMPDIR");
        ensure_atexit();
        snprintf(tmpl, sizeof(tmpl), "%s/drover-%s-XXXXXX", base && *base ? base : "/tmp", tag);
        char *d = mkdtemp(tmpl);
        if (!d) {
                perror("mkdtemp");
                abort();
        }
        /* searchable, not listable: an agent's QEMU runs as qemu_user and
         * reads its migration TLS credentials below run_dir */
        if (chmod(d, 0711) < 0) {
                perror("chmod");
                abort();
        }
        if (n_tmpdirs == MAX_TMPDIRS)
                abort();
        tmpdirs[n_tmpdirs] = strdup(d);
        return tmpdirs[n_tmpdirs++];
}

static const char *rotate(const char *a, const char *b) {
        static _Thread_local char bufs[8][1024];
        static _Thread_local int next;
        char *buf = bufs[next++ % 8];
        snprintf(buf, sizeof(bufs[0]), "%s/%s", a, b);
        return buf;
}

const char *tu_path(const char *dir, const char *name) {
        return rotate(dir, name);
}

const char *tu_source_path(const char *rel) {
        const char *root = getenv("DROVER_SOURCE_ROOT");
        return rotate(root ? root : ".", rel);
}

const char *tu_build_path(const char *rel) {
        const char *root = getenv("DROVER_BUILD_ROOT");
        return rotate(root ? root : ".", rel);
}

pid_t tu_spawn(char *const argv[], const char *log_path) {
        ensure_atexit();
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        dup2(fd, STDOUT_FILENO);
                        dup2(fd, STDERR_FILENO);
                }
                int nul = open("/dev/null", O_RDONLY);
                if (nul >= 0)
                        dup2(nul, STDIN_FILENO);
                signal(SIGPIPE, SIG_DFL);
                execvp(argv[0], argv);
                fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        for (int i = 0; i < MAX_CHILDREN; i++)
                if (children[i] == 0) {
                        children[i] = pid;
                        break;
                }
        return pid;
}

static void forget(pid_t pid) {
        for (int i = 0; i < MAX_CHILDREN; i++)
                if (children[i] == pid)
                        children[i] = 0;
}

void tu_kill(pid_t pid) {
        if (pid <= 0)
                return;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        forget(pid);
}

void tu_signal(pid_t pid, int sig) {
        if (pid > 0)
                kill(pid, sig);
}

bool tu_reap(pid_t pid, int *ret_status) {
        int st;
        if (pid <= 0 || waitpid(pid, &st, WNOHANG) != pid)
                return false;
        forget(pid);
        if (ret_status)
                *ret_status = st;
        return true;
}

bool tu_pid_alive(pid_t pid) {
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        /* the state letter follows the command name, which may hold ')' */
        const char *rp = strrchr(buf, ')');
        return rp && rp[1] == ' ' && rp[2] != 'Z' && rp[2] != 'X';
}

static bool try_connect(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool ok;
        if (fd < 0)
                return false;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        ok = connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
        close(fd);
        return ok;
}

int tu_wait_path(const char *path, int timeout_ms, bool connect_check) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                if (access(path, F_OK) == 0 && (!connect_check || try_connect(path)))
                        return 0;
                clock_gettime(CLOCK_MONOTONIC, &t);
                long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
                if (el >= timeout_ms)
                        return -ETIMEDOUT;
                struct timespec ts = { 0, 5 * 1000000L };
                nanosleep(&ts, NULL);
        }
}

const char *tu_which(const char *prog) {
        static _Thread_local char buf[1024];
        const char *path = getenv("PATH");
        if (!path)
                path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
        char *copy = strdup(path), *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                snprintf(buf, sizeof(buf), "%s/%s", dir, prog);
                if (access(buf, X_OK) == 0) {
                        free(copy);
                        return buf;
                }
        }
        free(copy);
        /* sbin is often missing from a test's PATH */
        const char *extra[] = { "/usr/sbin", "/sbin" };
        for (size_t i = 0; i < 2; i++) {
                snprintf(buf, sizeof(buf), "%s/%s", extra[i], prog);
                if (access(buf, X_OK) == 0)
                        return buf;
        }
        return NULL;
}

char *tu_read_file(const char *path, size_t *ret_len) {
        FILE *f = fopen(path, "rb");
        if (!f)
                return NULL;
        size_t cap = 4096, len = 0;
        char *buf = malloc(cap + 1);
        size_t n;
        while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
                len += n;
                if (len == cap) {
                        cap *= 2;
                        buf = realloc(buf, cap + 1);
                }
        }
        fclose(f);
        if (!buf)
                return NULL;
        buf[len] = '\0';
        if (ret_len)
                *ret_len = len;
        return buf;
}

int tu_count_lines(const char *path, const char *prefix) {
        char *s = tu_read_file(path, NULL);
        int n = 0;
        size_t pl = strlen(prefix);
        if (!s)
                return 0;
        for (char *line = s; line && *line;) {
                if (strncmp(line, prefix, pl) == 0)
                        n++;
                line = strchr(line, '\n');
                if (line)
                        line++;
        }
        free(s);
        return n;
}

uint64_t tu_rng_next(TuRng *r) {
        r->s ^= r->s << 13;
        r->s ^= r->s >> 7;
        r->s ^= r->s << 17;
        return r->s;
}

uint32_t tu_rng_below(TuRng *r, uint32_t n) {
        return (uint32_t) (tu_rng_next(r) % n);
}

double tu_rng_unit(TuRng *r) {
        return (double) (tu_rng_next(r) >> 11) / 9007199254740992.0;
}
