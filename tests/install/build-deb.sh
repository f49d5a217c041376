#!/usr/bin/env bash
# package-deb: the Debian packages of debian/ build and hold what they
# promise.  On a copy of the committed tree (git archive HEAD, so the
# worktree and its build/ are never touched) it runs
#   DEB_BUILD_OPTIONS="nocheck parallel=2 noddebs" dpkg-buildpackage -us -uc -b
# (through ccache when installed), unpacks every .deb into a scratch root
# with dpkg -x, runs the unpacked droverctl, and checks that each package
# carries its binaries, units, man pages and example configuration, and
# that dh_installsystemd wrote the daemons' maintainer scripts.  Prints the
# build time.  Skipped (77) without dpkg-buildpackage or a git checkout.
set -uo pipefail

src=${DROVER_SOURCE_ROOT:?}
command -v dpkg-buildpackage >/dev/null || { echo "SKIP: dpkg-buildpackage is not installed (dpkg-dev)"; exit 77; }
command -v dh >/dev/null || { echo "SKIP: debhelper is not installed"; exit 77; }
git -C "$src" rev-parse --verify -q HEAD >/dev/null || { echo "SKIP: $src is not a git checkout"; exit 77; }

# One fixed folder per checkout, not a random one: dpkg-buildflags puts the
# path into every compile command (-ffile-prefix-map), so ccache hits only
# when it is the same from run to run.
tmp=${TMPDIR:-/tmp}/drover-deb-$(printf %s "$src" | md5sum | cut -c1-8)
rm -rf "$tmp"
[ -n "${DROVER_KEEP_TMP:-}" ] || trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/root"
git -C "$src" archive HEAD | tar -x -C "$tmp/src" || { echo "FAIL: git archive"; exit 1; }

# noddebs: no -dbgsym packages (their compression is a good part of the time)
export DEB_BUILD_OPTIONS="nocheck parallel=2 noddebs"
# debhelper 13 gives the build a HOME of its own: name ccache's folder.
if command -v ccache >/dev/null; then
  export CC="ccache gcc" CCACHE_BASEDIR="$tmp" CCACHE_DIR="${CCACHE_DIR:-$(ccache -k cache_dir)}"
fi
start=$(date +%s)
if ! (cd "$tmp/src" && dpkg-buildpackage -us -uc -b) >"$tmp/build.log" 2>&1; then
  tail -60 "$tmp/build.log"
  echo "FAIL: dpkg-buildpackage (log above)"
  exit 1
fi
echo "dpkg-buildpackage -b: $(( $(date +%s) - start )) s"

fail=0
check() { # check WHAT COMMAND...
  local what=$1; shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}

# has PACKAGE PATH...: each path is in the package's file list
has() {
  local pkg=$1 deb list p; shift
  deb=$(ls "$tmp"/"${pkg}"_*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || { echo "     no ${pkg}_*.deb"; return 1; }
  list=$(dpkg-deb -c "$deb" | awk '{print $6}')
  for p in "$@"; do
    grep -qx "\./$p" <<<"$list" || { echo "     $pkg lacks /$p"; return 1; }
  done
}
# script PACKAGE SCRIPT TEXT: a maintainer script of the package contains TEXT
script() {
  local ctl="$tmp/ctl-$1"
  rm -rf "$ctl"; dpkg-deb -e "$tmp"/"$1"_*.deb "$ctl" && grep -q "$3" "$ctl/$2"
}

check "drover-agent: binaries, unit, man page, example" has drover-agent \
  usr/bin/drover-agent usr/bin/drover-agentctl lib/systemd/system/drover-agent.service \
  usr/share/man/man8/drover-agent.8.gz etc/drover/agent.json.example usr/share/doc/drover/agent.md
check "drover-coordinator: binary, unit, man page, example" has drover-coordinator \
  usr/bin/drover-coordinator lib/systemd/system/drover-coordinator.service \
  usr/share/man/man8/drover-coordinator.8.gz etc/drover/coordinator.json.example
check "droverctl: binary, man page, bash completion" has droverctl usr/bin/droverctl usr/share/man/man1/droverctl.1.gz \
  usr/share/bash-completion/completions/droverctl
check "drover-common: drover.conf(5), operations.md" has drover-common \
  usr/share/man/man5/drover.conf.5.gz usr/share/doc/drover/operations.md
for d in agent coordinator; do
  check "drover-$d: dh_installsystemd enables and restarts the unit (postinst)" \
    script "drover-$d" postinst "drover-$d.service"
done

for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/root" || fail=1; done
ctl="$tmp/root/usr/bin/droverctl"
if out=$("$ctl" --version 2>&1); then
  echo "     droverctl --version: $out"
  check "unpacked droverctl --version names itself" grep -q "droverctl" <<<"$out"
else
  # --version comes with another change; until then --help must work
  out=$("$ctl" --help 2>&1)
  check "unpacked droverctl --help prints its usage (no --version yet)" grep -q "usage: droverctl" <<<"$out"
fi
check "the unpacked unit runs the packaged binary" \
  grep -qx "ExecStart=/usr/bin/drover-agent --config /etc/drover/agent.json" \
  "$tmp/root/lib/systemd/system/drover-agent.service"

exit $fail
