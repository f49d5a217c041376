#!/usr/bin/env bash
# Install every Debian package Drover needs and configure + build it.
# Idempotent: safe to run again; only missing packages are installed.
#
# Usage: tests/scripts/setup.sh [BUILD_DIR] [extra meson options...]
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$here/build}
shift || true

packages=(
  # build
  meson ninja-build pkg-config gcc binutils
  libjson-c-dev libprotobuf-c-dev protobuf-c-compiler libgrpc-dev
  libssh-dev libsqlite3-dev libcmocka-dev
  # the daemons' /metrics endpoint (core/metrics.c); a real Prometheus scrapes it in a cluster test
  libmicrohttpd-dev prometheus
  # journal fields and sd_notify (core/log.c, core/notify.c)
  libsystemd-dev
  # `protoc -I proto` checks the .proto imports (tests/daemon)
  protobuf-compiler
  # run and test: real QEMU, real qemu-ga, hosts as network namespaces
  qemu-system-x86 qemu-guest-agent qemu-utils iproute2 procps
  openssh-server openssh-client openssl
  # independent gRPC client for interop tests
  python3 python3-grpcio python3-grpc-tools python3-protobuf
  # the Ansible collection (ansible/) is tested with the real ansible-playbook
  ansible
  # terminal checks
  tmux
  # the libFuzzer harnesses (tests/fuzz, docs/fuzzing.md): clang and its fuzzer runtime
  clang libclang-rt-14-dev
  # plots of the benchmarks (docs/performance.md, docs/perf/*.png)
  gnuplot-nox
  # the coordinator's replicated store (store: etcd:..., docs/ha.md): real etcd members in the ha suite
  etcd-server etcd-client
  # man pages (docs/man) and the Debian packages (debian/, tests/install)
  scdoc debhelper dpkg-dev fakeroot
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
      echo "setup: need root to install: ${missing[*]}" >&2; exit 1; fi
  else SUDO=; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Post-copy: QEMU runs as qemu_user (-runas drops every capability), and
# QEMU 7.2 gets the userfaultfd post-copy needs only when unprivileged users
# may create them (docs/agent.md, "Guest files and the QEMU user").  Set for
# this boot only; hosts that allow post-copy set it in /etc/sysctl.d.
if [ "$(id -u)" -eq 0 ] && [ -w /proc/sys/vm/unprivileged_userfaultfd ]; then
  sysctl -q -w vm.unprivileged_userfaultfd=1 || echo "setup: cannot enable unprivileged userfaultfd: post-copy tests will fail" >&2
fi

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$here" "$@"
elif (($#)); then
  meson configure "$build" "$@"
fi
ninja -C "$build"
