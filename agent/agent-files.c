/* A guest's files on the host (see agent-files.h): the confined walk below
 * an image root, the file checks of Define and Start, and the descriptors
 * handed to QEMU.
 *
 * The walk opens the root (following whatever links the operator put in
 * the root's own path, which is configuration, not input), then each
 * component of the rest with openat(O_NOFOLLOW) from its parent's
 * descriptor.  An fstatat(AT_SYMLINK_NOFOLLOW) before each step only serves
 * the error message; the O_NOFOLLOW opens and the fstat of the final
 * descriptor are what decide, so a path changed between the two cannot get
 * through.  The final open uses O_NONBLOCK, so a FIFO swapped in at the last
 * moment is refused instead of blocking the agent.  openat2(RESOLVE_BENEATH)
 * would do the same in one call, but the walk gives each refusal its reason.
 *
 * What the walk cannot see: a hard link or a bind mount placed inside a
 * root by someone who can write there.  The roots' contents are trusted,
 * which is why only the operator (root) should be able to write to them.
 */
#define _GNU_SOURCE
#include "agent-files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

#define QCOW2_MAGIC "QFI\xfb"

static bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

void guest_files_init(GuestFiles *f) {
        f->kernel = f->initrd = -1;
        for (size_t i = 0; i < GUEST_MAX_DISKS; i++) {
                f->disk_ro[i] = f->disk_rw[i] = -1;
                f->disk_blk[i] = false;
        }
}

static void close_fd(int *fd) {
        if (*fd >= 0)
                close(*fd);
        *fd = -1;
}

void guest_files_close(GuestFiles *f) {
        close_fd(&f->kernel);
        close_fd(&f->initrd);
        for (size_t i = 0; i < GUEST_MAX_DISKS; i++) {
                close_fd(&f->disk_ro[i]);
                close_fd(&f->disk_rw[i]);
        }
        guest_files_init(f);
}

/* "(image roots: /a, /b)" */
static const char *roots_text(const AgentConfig *cfg, char *buf, size_t size) {
        size_t n = (size_t) snprintf(buf, size, "(image roots: ");
        for (size_t i = 0; i < cfg->n_image_roots && n < size; i++)
                n += (size_t) snprintf(buf + n, size - n, "%s%s", i ? ", " : "", cfg->image_roots[i]);
        if (n < size)
                snprintf(buf + n, size - n, ")");
        return buf;
}

/* The root @path lies below, or NULL; *ret_rel is the rest after "<root>/". */
static const char *find_root(const AgentConfig *cfg, const char *path, const char **ret_rel) {
        for (size_t i = 0; i < cfg->n_image_roots; i++) {
                const char *root = cfg->image_roots[i];
                size_t n = strlen(root);
                if (n > 1 && strncmp(path, root, n) == 0 && path[n] == '/' && path[n + 1]) {
                        *ret_rel = path + n + 1;
                        return root;
                }
        }
        return NULL;
}

static const char *type_name(mode_t m) {
        if (S_ISDIR(m))
                return "a directory";
        if (S_ISFIFO(m))
                return "a FIFO";
        if (S_ISSOCK(m))
                return "a socket";
        if (S_ISCHR(m))
                return "a character device";
        if (S_ISBLK(m))
                return "a block device";
        if (S_ISLNK(m))
                return "a symbolic link";
        return "not a regular file";
}

/* Whether a file of mode @m may be @member: regular files always, block
 * devices for disks when the configuration allows them. */
static int check_type(const char *member, const char *path, mode_t m, bool blk_ok) {
        if (S_ISREG(m) || (S_ISBLK(m) && blk_ok))
                return 0;
        if (S_ISBLK(m) && !strncmp(member, "disks[", 6))
                return err_set(-EINVAL, "definition: '%s' '%s' is a block device, and allow_block_devices is off",
                               member, path);
        return err_set(-EINVAL, "definition: '%s' '%s' is %s, not a regular file", member, path, type_name(m));
}

static int open_error(const char *member, const char *path, int e, int flags) {
        if (e == ENOENT || e == ENOTDIR)
                return err_set(-ENOENT, "definition: '%s' file '%s' does not exist", member, path);
        if (e == ELOOP)
                return err_set(-EINVAL, "definition: '%s' '%s' is a symbolic link; links are not followed below "
                               "an image root", member, path);
        if (e == EACCES || e == EPERM || e == EROFS)
                return err_set(-EACCES, "definition: '%s' file '%s' is not %s: %s", member, path,
                               (flags & O_ACCMODE) == O_RDWR ? "readable and writable" : "readable", strerror(e));
        return err_set(-e, "definition: '%s' file '%s' cannot be opened: %s", member, path, strerror(e));
}

/* Walk @path (member @member) below its image root.  @flags < 0: check only
 * (a missing file is fine); otherwise open the file with @flags and return
 * it in *ret_fd with its type in *ret_st. */
static int walk(const AgentConfig *cfg, const char *member, const char *path, bool blk_ok, int flags,
                int *ret_fd, struct stat *ret_st) {
        char rel[sizeof(((GuestDef *) 0)->kernel)], rt[1200];
        const char *rest = NULL, *root = find_root(cfg, path, &rest);
        struct stat st;

        if (!root || !guest_path_is_normal(path))
                return err_set(-EINVAL, "definition: '%s' '%s' is outside the image roots %s", member, path,
                               roots_text(cfg, rt, sizeof(rt)));
        _cleanup_close_ int dir = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0) {
                int e = errno;
                return err_set(-e, "definition: '%s' '%s': its image root '%s' cannot be opened: %s", member, path,
                               root, strerror(e));
        }
        snprintf(rel, sizeof(rel), "%s", rest);
        char *comp = rel;
        for (;;) {
                char *slash = strchr(comp, '/');
                if (slash)
                        *slash = '\0';
                if (fstatat(dir, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if ((errno == ENOENT || errno == ENOTDIR) && flags < 0)
                                return 0;
                        return open_error(member, path, errno, flags);
                }
                if (S_ISLNK(st.st_mode))
                        return err_set(-EINVAL, "definition: '%s' '%s' goes through the symbolic link '%s/%.*s'; "
                                       "links are not followed below an image root %s", member, path, root,
                                       (int) (comp - rel + strlen(comp)), rest, roots_text(cfg, rt, sizeof(rt)));
                if (!slash)
                        break;
                int next = openat(dir, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0)
                        return open_error(member, path, errno == ENOTDIR && S_ISDIR(st.st_mode) ? ELOOP : errno,
                                          flags);
                close(dir);
                dir = next;
                comp = slash + 1;
        }
        if (flags < 0)
                return check_type(member, path, st.st_mode, blk_ok);
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) /* never open a FIFO or a device node */
                return check_type(member, path, st.st_mode, blk_ok);
        _cleanup_close_ int fd = openat(dir, comp, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
                return open_error(member, path, errno, flags);
        int r;
        if (fstat(fd, &st) < 0)
                return err_set(-errno, "definition: '%s' '%s': fstat: %m", member, path);
        if ((r = check_type(member, path, st.st_mode, blk_ok)) < 0)
                return r;
        (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        *ret_fd = TAKE_FD(fd);
        *ret_st = st;
        return 0;
}

/* A second descriptor on the same open file's inode with @flags (a reopen
 * through /proc/self/fd: no path lookup, so the same file for sure). */
static int reopen(int fd, int flags) {
        char p[64];
        snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
        return open(p, flags | O_NOCTTY | O_CLOEXEC);
}

static int check_disk(const AgentConfig *cfg, const GuestDisk *disk, size_t i, GuestFiles *f) {
        char member[48];
        struct stat st;
        int r;

        snprintf(member, sizeof(member), "disks[%zu].path", i);
        int *main_fd = disk->readonly ? &f->disk_ro[i] : &f->disk_rw[i];
        if ((r = walk(cfg, member, disk->path, cfg->allow_block_devices, disk->readonly ? O_RDONLY : O_RDWR,
                      main_fd, &st)) < 0)
                return r;
        f->disk_blk[i] = S_ISBLK(st.st_mode);
        if (!disk->readonly && (f->disk_ro[i] = reopen(f->disk_rw[i], O_RDONLY)) < 0)
                return open_error(member, disk->path, errno, O_RDONLY);
        if (streq(disk->format, "qcow2")) {
                char magic[4];
                if (pread(f->disk_ro[i], magic, sizeof(magic), 0) != (ssize_t) sizeof(magic) ||
                    memcmp(magic, QCOW2_MAGIC, sizeof(magic)) != 0)
                        return err_set(-EINVAL, "definition: '%s' '%s' is not a qcow2 image (no qcow2 magic)",
                                       member, disk->path);
        }
        if (streq(disk->cache, "none") || streq(disk->cache, "directsync")) {
                _cleanup_close_ int dfd = reopen(f->disk_ro[i], O_RDONLY | O_DIRECT);
                if (dfd < 0 && errno == EINVAL)
                        return err_set(-EINVAL, "definition: 'disks[%zu].cache' is %s, but the file system of '%s' "
                                       "does not support O_DIRECT (use writeback or writethrough)",
                                       i, disk->cache, disk->path);
        }
        return 0;
}

static int check_bridge(const GuestNic *nic, size_t i) {
        char p[128];
        struct stat st;

        snprintf(p, sizeof(p), "/sys/class/net/%s", nic->bridge);
        if (stat(p, &st) < 0)
                return err_set(-ENOENT, "definition: 'nics[%zu].bridge' '%s' does not exist on this host", i,
                               nic->bridge);
        snprintf(p, sizeof(p), "/sys/class/net/%s/bridge", nic->bridge);
        if (stat(p, &st) < 0 || !S_ISDIR(st.st_mode))
                return err_set(-EINVAL, "definition: 'nics[%zu].bridge' '%s' is not a bridge", i, nic->bridge);
        return 0;
}

int guest_def_check_files(const GuestDef *def, const AgentConfig *cfg) {
        char member[48];
        int r;

        if (def->kernel[0] && (r = walk(cfg, "kernel", def->kernel, false, -1, NULL, NULL)) < 0)
                return r;
        if (def->initrd[0] && (r = walk(cfg, "initrd", def->initrd, false, -1, NULL, NULL)) < 0)
                return r;
        for (size_t i = 0; i < def->n_disks; i++) {
                snprintf(member, sizeof(member), "disks[%zu].path", i);
                if ((r = walk(cfg, member, def->disks[i].path, cfg->allow_block_devices, -1, NULL, NULL)) < 0)
                        return r;
        }
        return 0;
}

static int check_host(const GuestDef *def, const AgentConfig *cfg, GuestFiles *f) {
        struct stat st;
        int r;

        if (def->kernel[0] && (r = walk(cfg, "kernel", def->kernel, false, O_RDONLY, &f->kernel, &st)) < 0)
                return r;
        if (def->initrd[0] && (r = walk(cfg, "initrd", def->initrd, false, O_RDONLY, &f->initrd, &st)) < 0)
                return r;
        for (size_t i = 0; i < def->n_disks; i++)
                if ((r = check_disk(cfg, &def->disks[i], i, f)) < 0)
                        return r;
        for (size_t i = 0; i < def->n_nics; i++)
                if ((r = check_bridge(&def->nics[i], i)) < 0)
                        return r;
        return 0;
}

int guest_def_check_host(const GuestDef *def, const AgentConfig *cfg, GuestFiles *ret) {
        GuestFiles f;
        guest_files_init(&f);
        int r = check_host(def, cfg, &f);
        if (r < 0) {
                guest_files_close(&f);
                return r;
        }
        *ret = f;
        return 0;
}
