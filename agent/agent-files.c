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
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

/* The qcow2 header (QEMU's docs/interop/qcow2.txt): magic, version (4),
 * backing_file_offset (8, big-endian), backing_file_size (4) ... 72 bytes
 * in version 2; version 3 adds incompatible_features (8) at 72, whose bit 2
 * says an external data file holds the guest's data. */
#define QCOW2_MAGIC "QFI\xfb"
#define QCOW2_HEADER_V2 72
#define QCOW2_HEADER_V3_MIN 80
#define QCOW2_INCOMPAT_DATA_FILE (UINT64_C(1) << 2)
#define QCOW2_BACKING_SHOWN 256

static uint32_t be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p) {
        return (uint64_t) be32(p) << 32 | be32(p + 4);
}

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

/* The qcow2 header of @fd (disk @member at @path): an image whose header
 * names a backing file or an external data file is refused, since QEMU
 * would open that file by the path the header holds, as root, wherever it
 * is.  @need_magic: a file without the qcow2 magic is refused too (Start);
 * otherwise it is not judged here (Define: the image may be written later,
 * Start checks again). */
static int check_qcow2(int fd, const char *member, const char *path, bool need_magic) {
        uint8_t h[QCOW2_HEADER_V3_MIN];
        ssize_t n = pread(fd, h, sizeof(h), 0);

        if (n < 4 || memcmp(h, QCOW2_MAGIC, 4) != 0)
                return need_magic ? err_set(-EINVAL, "definition: '%s' '%s' is not a qcow2 image (no qcow2 magic)",
                                            member, path) : 0;
        if (n < QCOW2_HEADER_V2)
                return need_magic ? err_set(-EINVAL, "definition: '%s' '%s' has a truncated qcow2 header (%zd bytes)",
                                            member, path, n) : 0;
        uint64_t backing_off = be64(h + 8);
        uint32_t backing_len = be32(h + 16), version = be32(h + 4);
        if (backing_off != 0) {
                char name[QCOW2_BACKING_SHOWN + 1] = "";
                size_t len = backing_len < QCOW2_BACKING_SHOWN ? backing_len : QCOW2_BACKING_SHOWN;
                ssize_t got = backing_off < INT64_MAX ? pread(fd, name, len, (off_t) backing_off) : -1;
                for (ssize_t k = 0; k < got; k++)
                        name[k] = name[k] >= 0x20 && name[k] < 0x7f ? name[k] : '?';
                name[got > 0 ? got : 0] = '\0';
                return err_set(-EINVAL, "definition: '%s' '%s' is a qcow2 image with the backing file '%s'%s; "
                               "backing files are not supported (QEMU would open them outside the image roots): "
                               "convert it to a standalone image (qemu-img convert -O qcow2)", member, path, name,
                               backing_len > len ? "..." : "");
        }
        if (version >= 3 && n >= QCOW2_HEADER_V3_MIN && (be64(h + 72) & QCOW2_INCOMPAT_DATA_FILE))
                return err_set(-EINVAL, "definition: '%s' '%s' is a qcow2 image with an external data file; "
                               "data files are not supported (QEMU would open them outside the image roots)",
                               member, path);
        return 0;
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
        if (streq(disk->format, "qcow2") && (r = check_qcow2(f->disk_ro[i], member, disk->path, true)) < 0)
                return r;
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

/* Define's look at a qcow2 disk's header, when the image exists already
 * (a missing one is fine at Define; Start checks it again). */
static int check_qcow2_at(const AgentConfig *cfg, const char *member, const GuestDisk *disk) {
        struct stat st;
        _cleanup_close_ int fd = -1;
        int r = walk(cfg, member, disk->path, cfg->allow_block_devices, O_RDONLY, &fd, &st);
        if (r == -ENOENT) {
                err_clear();
                return 0;
        }
        return r < 0 ? r : check_qcow2(fd, member, disk->path, false);
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
                if (streq(def->disks[i].format, "qcow2") && (r = check_qcow2_at(cfg, member, &def->disks[i])) < 0)
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
