#!/bin/sh
# PID 1 of the Linux test guest (copied to /init by build-linux-guest.sh).
#
# Mounts devtmpfs, proc and sysfs, loads the virtio modules in dependency
# order, finds the virtio-serial port QEMU named org.qemu.guest_agent.0 (by
# its sysfs name: there is no udev to make /dev/virtio-ports/ links), prints
# one marker line on the serial console and runs qemu-ga on that port,
# restarting it should it exit.  Every guest-agent RPC is enabled: here they
# act on this throw-away guest, which is what the tests want.
#
# With `drover.disklog=1` on the kernel command line it first starts the
# disk log writer (drover-disklog, README.md) on the first virtio disk,
# /dev/vda, one record every `drover.disklog_ms=` ms (default 200), in the
# background: its ACK lines go to the console.  A writer that is missing,
# finds no disk or exits says so with a `DISKLOG ERROR` line.
/bin/busybox mount -t devtmpfs devtmpfs /dev
# the initramfs has no /dev/console node, so stdio is opened here
exec 0</dev/console 1>/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /run/qga /tmp

for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_console virtio_blk; do
        insmod "/lib/modules/$m.ko" || echo "drover-linux-guest: insmod $m failed"
done

disklog=
disklog_ms=200
read -r cmdline </proc/cmdline
for arg in $cmdline; do
        case $arg in
        drover.disklog=1) disklog=/dev/vda ;;
        drover.disklog_ms=*) disklog_ms=${arg#drover.disklog_ms=} ;;
        esac
done
if [ -n "$disklog" ]; then
        i=0
        while [ ! -b "$disklog" ] && [ $i -lt 200 ]; do
                i=$((i + 1))
                sleep 0.05
        done
        if [ ! -x /usr/bin/drover-disklog ]; then
                echo "DISKLOG ERROR this initrd has no /usr/bin/drover-disklog"
        elif [ ! -b "$disklog" ]; then
                echo "DISKLOG ERROR no disk $disklog after 10 s (is a virtio disk configured?)"
        else
                (
                        /usr/bin/drover-disklog "$disklog" "$disklog_ms"
                        echo "DISKLOG ERROR the writer exited with status $?"
                ) &
        fi
fi

port=
i=0
while [ $i -lt 200 ]; do
        for p in /sys/class/virtio-ports/*; do
                [ -r "$p/name" ] || continue
                if [ "$(cat "$p/name")" = org.qemu.guest_agent.0 ] && [ -c "/dev/${p##*/}" ]; then
                        port="/dev/${p##*/}"
                fi
        done
        [ -n "$port" ] && break
        i=$((i + 1))
        sleep 0.05
done

if [ -z "$port" ]; then
        echo "drover-linux-guest: no org.qemu.guest_agent.0 port (is the guest_agent channel configured?)"
        while :; do sleep 3600; done
fi

echo "drover-linux-guest: ready uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r) qga=$port"
while :; do
        /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run/qga
        echo "drover-linux-guest: qemu-ga exited with status $?, restarting"
        sleep 1
done
