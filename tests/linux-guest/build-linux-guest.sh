#!/usr/bin/env bash
# build-linux-guest.sh OUTDIR: a small real Linux guest for the guest-agent
# tests (README.md in this folder).
#
# Produces OUTDIR/vmlinux (the uncompressed kernel ELF taken out of Debian's
# bzImage, which QEMU boots through its PVH note, skipping the slow XZ
# decompression under TCG) and OUTDIR/initrd.cpio.gz (busybox-static, the
# host's qemu-ga with the libraries ldd lists, the virtio modules of the same
# kernel, guest-init.sh as /init, and the disk log writer drover-disklog
# when ninja has built it into OUTDIR).
#
# The two Debian packages are fetched with `apt-get download` and unpacked
# (only the files needed) with dpkg-deb into a cache: nothing is installed on
# the host.  Downloads live in OUTDIR/cache, or in $DROVER_LINUX_GUEST_CACHE
# to share them between build folders.  As root, when there are no package
# lists or a download fails, `apt-get update` runs once before the retry.
# A cached .deb is used as it is, so a later kernel update does not change
# the guest; delete the cache to refresh.
# OUTDIR/stamp records the inputs; when they are unchanged the script only
# says so ("cached").  Runs are serialised by locks on OUTDIR/.lock and on
# the cache.
#
# Environment: DROVER_LINUX_GUEST_KERNEL_PKG names the kernel package
# (default: what linux-image-amd64 depends on); DROVER_QEMU_GA is the qemu-ga
# to copy (default /usr/sbin/qemu-ga); DROVER_LINUX_GUEST_DISKLOG the disk
# log writer (default OUTDIR/drover-disklog, where meson builds it; without
# it the guest is built without the `drover.disklog=1` mode, and says so).
#
# Exit status: 0 built or cached; 2 a prerequisite is missing (no apt, the
# download failed, no qemu-ga on the host), with "UNAVAILABLE: <reason>" as
# the last line, so tests skip with the reason; 1 anything else (a bug).
set -Eeuo pipefail
export LC_ALL=C

MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console virtio_blk"
# what is taken out of the kernel package (a change unpacks it again)
KERNEL_PARTS="./boot/vmlinuz-* ./boot/config-* ./lib/modules/*/kernel/drivers/virtio/*
./lib/modules/*/kernel/drivers/char/virtio_console.ko ./lib/modules/*/kernel/drivers/block/virtio_blk.ko"
AGENT_PORT=org.qemu.guest_agent.0

unavailable() {
        echo "UNAVAILABLE: $*"
        exit 2
}
die() {
        echo "build-linux-guest: error: $*" >&2
        exit 1
}
now_ms() { date +%s%3N; }
# a failing command is a bug (exit 1), never "unavailable" (exit 2)
trap 'die "line $LINENO: command failed with status $?"' ERR

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)
cache=${DROVER_LINUX_GUEST_CACHE:-$out/cache}
qga=${DROVER_QEMU_GA:-/usr/sbin/qemu-ga}
disklog=${DROVER_LINUX_GUEST_DISKLOG:-$out/drover-disklog}
disklog_note=
[ -f "$disklog" ] || disklog_note=" (no disk log writer: $disklog is not built, so drover.disklog=1 will not work)"
t0=$(now_ms)

for tool in dpkg-deb tar xz gzip ldd flock sha256sum; do
        command -v "$tool" >/dev/null || unavailable "'$tool' is not installed"
done
[ -x "$qga" ] || unavailable "$qga is not installed on the host (Debian package qemu-guest-agent)"

mkdir -p "$cache/debs"
exec 9>"$out/.lock"
flock -w 900 9 || die "another build of $out did not finish within 900 s"
exec 8>"$cache/.lock" # a shared cache ($DROVER_LINUX_GUEST_CACHE) too
flock -w 900 8 || die "another build using $cache did not finish within 900 s"

# ---- the two packages: cached, else downloaded ---------------------------------------------

apt_updated=0
# download PKG: into $cache/debs through a scratch folder, so an interrupted
# download is never mistaken for a cached one.
download() {
        local pkg=$1 tmp
        command -v apt-get >/dev/null || unavailable "apt-get is not available to download $pkg"
        tmp=$(mktemp -d "$cache/dl.XXXXXX")
        echo "build-linux-guest: downloading $pkg" >&2
        if ! (cd "$tmp" && apt-get download -q "$pkg" >"$tmp.log" 2>&1); then
                if [ $apt_updated -eq 0 ] && [ "$(id -u)" -eq 0 ]; then
                        echo "build-linux-guest: apt-get download failed, running apt-get update once" >&2
                        apt_updated=1
                        apt-get update -q >/dev/null 2>&1 || true
                fi
                if ! (cd "$tmp" && apt-get download -q "$pkg" >"$tmp.log" 2>&1); then
                        local why
                        why=$(grep -E '^(E|W):' "$tmp.log" | tail -n 1 || true)
                        rm -rf "$tmp" "$tmp.log"
                        unavailable "apt-get download $pkg failed: ${why:-no reason given}"
                fi
        fi
        mv "$tmp"/*.deb "$cache/debs/"
        rm -rf "$tmp" "$tmp.log"
}

# cached_deb GLOB: the newest cached .deb matching GLOB, or nothing.
cached_deb() {
        (cd "$cache/debs" && shopt -s nullglob && for f in $1; do echo "$f"; done | sort -V | tail -n 1)
}

kernel_pkg=${DROVER_LINUX_GUEST_KERNEL_PKG:-}
if [ -n "$kernel_pkg" ]; then
        kdeb=$(cached_deb "${kernel_pkg}_*.deb")
else
        kdeb=$(cached_deb 'linux-image-[0-9]*-amd64_*.deb')
fi
if [ -z "$kdeb" ]; then
        if [ -z "$kernel_pkg" ]; then
                command -v apt-cache >/dev/null || unavailable "apt-cache is not available"
                find_kernel() {
                        apt-cache depends linux-image-amd64 2>/dev/null |
                                sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1 || true
                }
                kernel_pkg=$(find_kernel)
                if [ -z "$kernel_pkg" ] && [ "$(id -u)" -eq 0 ]; then
                        echo "build-linux-guest: no package lists, running apt-get update once" >&2
                        apt_updated=1
                        apt-get update -q >/dev/null 2>&1 || true
                        kernel_pkg=$(find_kernel)
                fi
                [ -n "$kernel_pkg" ] || unavailable "apt-cache knows no linux-image-amd64 (run apt-get update)"
        fi
        download "$kernel_pkg"
        kdeb=$(cached_deb "${kernel_pkg}_*.deb")
        [ -n "$kdeb" ] || die "apt-get download $kernel_pkg left no ${kernel_pkg}_*.deb"
fi
bdeb=$(cached_deb 'busybox-static_*.deb')
if [ -z "$bdeb" ]; then
        download busybox-static
        bdeb=$(cached_deb 'busybox-static_*.deb')
        [ -n "$bdeb" ] || die "apt-get download busybox-static left no busybox-static_*.deb"
fi

# ---- up to date? -------------------------------------------------------------------------

# qemu-ga and its libraries come from the host: they are part of the key.
mapfile -t libs < <(ldd "$qga" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p')
[ ${#libs[@]} -gt 0 ] || die "ldd $qga listed no libraries"
# (contents only: the same script reached by another path is the same input)
key=$({
        echo "kernel=$kdeb busybox=$bdeb modules=$MODULES"
        for f in "$here/build-linux-guest.sh" "$here/guest-init.sh" "$qga" "${libs[@]}"; do
                sha256sum <"$f"
        done
        if [ -f "$disklog" ]; then sha256sum <"$disklog"; else echo "no disklog writer"; fi
} | sha256sum | cut -d' ' -f1)
if [ -f "$out/vmlinux" ] && [ -f "$out/initrd.cpio.gz" ] && [ "$(cat "$out/stamp" 2>/dev/null)" = "$key" ]; then
        echo "build-linux-guest: cached $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes)," \
             "$out/initrd.cpio.gz ($(stat -c %s "$out/initrd.cpio.gz") bytes) in $(($(now_ms) - t0)) ms$disklog_note"
        exit 0
fi
rm -f "$out/stamp"

# ---- unpack only what is needed ------------------------------------------------------------

kx="$cache/x-${kdeb%.deb}"
# .done names the parts taken out: an older unpacked copy lacking one is redone
if [ "$(cat "$kx/.done" 2>/dev/null)" != "$KERNEL_PARTS" ]; then
        rm -rf "$kx"
        mkdir -p "$kx"
        # (the patterns are globs for tar, not for the shell)
        set -f
        # shellcheck disable=SC2086
        dpkg-deb --fsys-tarfile "$cache/debs/$kdeb" | tar -x -C "$kx" --wildcards $KERNEL_PARTS
        set +f
        echo "$KERNEL_PARTS" >"$kx/.done"
fi
bx="$cache/x-${bdeb%.deb}"
if [ ! -f "$bx/.done" ]; then
        rm -rf "$bx"
        mkdir -p "$bx"
        dpkg-deb --fsys-tarfile "$cache/debs/$bdeb" | tar -x -C "$bx" ./bin/busybox
        touch "$bx/.done"
fi
vmlinuz=
for f in "$kx"/boot/vmlinuz-*; do
        if [ -f "$f" ]; then vmlinuz=$f; fi
done
[ -f "$vmlinuz" ] || die "$kdeb has no boot/vmlinuz-*"
kver=${vmlinuz##*/vmlinuz-}
busybox="$bx/bin/busybox"
[ -x "$busybox" ] || die "$bdeb has no bin/busybox"

# ---- vmlinux: the ELF inside the bzImage's XZ payload --------------------------------------

tmp_vmlinux="$out/vmlinux.tmp"
found=0
for off in $(grep -obUaP '\xFD7zXZ\x00' "$vmlinuz" | cut -d: -f1 | head -n 4 || true); do
        # xz stops at the end of the stream; tail then dies of SIGPIPE, which is fine
        if { tail -c +$((off + 1)) "$vmlinuz" || true; } | xz -dc --single-stream >"$tmp_vmlinux" 2>/dev/null &&
                [ "$(head -c 4 "$tmp_vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
                found=1
                break
        fi
done
[ $found -eq 1 ] || die "no XZ-compressed ELF found in $vmlinuz (is the kernel built with CONFIG_KERNEL_XZ?)"
if command -v readelf >/dev/null; then
        # XEN_ELFNOTE_PHYS32_ENTRY (type 0x12) is the PVH entry that QEMU's -kernel looks for
        readelf -n "$tmp_vmlinux" >"$out/notes.tmp"
        grep -Eq '^ *Xen .*(\(0x00000012\)|PHYS32)' "$out/notes.tmp" ||
                die "$vmlinuz has no PVH note (XEN_ELFNOTE_PHYS32_ENTRY): QEMU cannot boot the bare ELF"
        rm -f "$out/notes.tmp"
fi

# ---- initrd --------------------------------------------------------------------------------

stage="$out/initrd.d"
rm -rf "$stage"
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,lib/modules,etc}
mkdir -p "$stage/var"
ln -s ../run "$stage/var/run"
install -m 0755 "$busybox" "$stage/bin/busybox"
# one relative link per applet, where busybox would install it (sbin/hwclock
# matters: qemu-ga's guest-set-time runs /sbin/hwclock)
"$busybox" --list-full | while read -r applet; do
        [ -e "$stage/$applet" ] && continue
        case $applet in
        */*) up=$(dirname "$applet" | sed 's:[^/]*:..:g')/ ;;
        *) up= ;;
        esac
        ln -s "${up}bin/busybox" "$stage/$applet"
done
install -m 0755 "$qga" "$stage/usr/sbin/qemu-ga"
for l in "${libs[@]}"; do
        mkdir -p "$stage/$(dirname "$l")"
        cp -L "$l" "$stage/$l"
done
prev=""
for m in $MODULES; do
        ko=$(find "$kx/lib/modules" -name "$m.ko" | head -n 1 || true)
        [ -n "$ko" ] || die "$kdeb has no $m.ko (built in? then drop it from MODULES)"
        # insmod has no modules.dep to follow: each depends= must be loaded earlier
        deps=$(grep -ao 'depends=[a-z0-9_,-]*' "$ko" | head -n 1 | cut -d= -f2 | tr ',' ' ' || true)
        for d in $deps; do
                case " $prev " in
                *" $d "*) ;;
                *) die "module $m depends on $d, which MODULES does not load before it" ;;
                esac
        done
        prev="$prev $m"
        cp "$ko" "$stage/lib/modules/$m.ko"
done
if [ -f "$disklog" ]; then
        install -m 0755 "$disklog" "$stage/usr/bin/drover-disklog"
fi
install -m 0755 "$here/guest-init.sh" "$stage/init"
grep -q "$AGENT_PORT" "$stage/init" || die "guest-init.sh does not look for $AGENT_PORT"
echo "drover-linux-guest kernel=$kver" >"$stage/etc/drover-linux-guest"
# fixed times and a sorted order, so that only real changes show in a diff
# of two images (cpio still records inode numbers)
find "$stage" -exec touch -h -d @1 {} +
(cd "$stage" && find . -mindepth 1 | sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -9n >"$out/initrd.cpio.gz.tmp"
rm -rf "$stage"

mv "$tmp_vmlinux" "$out/vmlinux"
mv "$out/initrd.cpio.gz.tmp" "$out/initrd.cpio.gz"
echo "$key" >"$out/stamp"
echo "build-linux-guest: built $out/vmlinux ($(stat -c %s "$out/vmlinux") bytes, kernel $kver)," \
     "$out/initrd.cpio.gz ($(stat -c %s "$out/initrd.cpio.gz") bytes) in $(($(now_ms) - t0)) ms$disklog_note"
