/* A guest's files on the host: the image roots that confine a definition's
 * kernel, initrd and disks, and the checks that run before QEMU starts.
 *
 * Rules (docs/agent.md, "Guest files and the QEMU user"):
 *  - the path must lie below one of the configured image_roots, written as
 *    the root is configured ("<root>/<relative path>");
 *  - below the root every component is opened with O_NOFOLLOW from its
 *    parent's descriptor: no symbolic link is followed (not even one that
 *    stays inside the root), so neither links nor /proc magic links nor ".."
 *    (refused by the definition's syntax already) can leave the root;
 *  - the file is a regular file, or a block device when the configuration
 *    allows block devices (disks only); FIFOs, sockets, character devices
 *    and directories are refused.
 * Define runs the walk with a missing file accepted (an image may be copied
 * in later); Start and an incoming migration run it again, open every file
 * and hand the descriptors to QEMU (GuestFiles), so what QEMU reads is what
 * was checked, whatever happens to the path afterwards.
 */
#pragma once

#include <stdbool.h>

#include "agent-config.h"
#include "agent-def.h"

/* Every descriptor -1. */
void guest_files_init(GuestFiles *f);
/* Close every descriptor that is open; @f is left initialised. */
void guest_files_close(GuestFiles *f);

/* The Define-time check: kernel, initrd and every disk lie inside one of
 * @cfg's image roots, reached without a symbolic link, and, where they
 * exist, are of an allowed type; an existing qcow2 disk whose header names
 * a backing file or an external data file is refused (QEMU would open it
 * by that path, as root).  A file that does not exist yet is
 * accepted.  -EINVAL for a path outside the roots, through a link or of a
 * wrong type, with a detail naming the member (and the root list).  No lock
 * needed. */
int guest_def_check_files(const GuestDef *def, const AgentConfig *cfg);

/* Host-side checks before start, run with no lock held: kernel/initrd and
 * every disk pass guest_def_check_files() and exist, are opened (disks not
 * marked readonly also for writing), a qcow2 disk starts with the qcow2
 * magic and names no backing or data file, a disk with cache none/directsync is on a file system that
 * supports O_DIRECT, each bridge exists (/sys/class/net/BR/bridge).
 * Returns 0 with the open descriptors (O_CLOEXEC) in @ret, which the caller
 * closes with guest_files_close(); -ENOENT/-EACCES/-EINVAL with a detail
 * and nothing left open otherwise. */
int guest_def_check_host(const GuestDef *def, const AgentConfig *cfg, GuestFiles *ret);
