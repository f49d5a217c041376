#!/usr/bin/env bash
# The test command (README, CI): set up, build, and run every suite once
# plainly, then the unit and replay suites under ASan+UBSan, the job-core
# tests under TSan, a short run of every libFuzzer target (a clang build,
# docs/fuzzing.md), and the Debian packages built from the committed tree
# (suite package, tests/install/build-deb.sh).  Ends with one summary line
# "N passed, N failed, N skipped".
#
# Usage: tests/scripts/test.sh [--quick]   (--quick: plain run only)
#
# CI runs a bounded, seeded sample of the sweeps, fault matrices and HA
# rounds (about 17 minutes on 2 cores for the plain run).  The long run,
# DROVER_LONG=1 tests/scripts/test.sh, runs them whole (README "Tests": the
# fault matrices, the cluster and ha suites' repetitions and figures), with
# the plain run's timeouts multiplied by 4.
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
quick=0
[ "${1:-}" = "--quick" ] && quick=1

werror=-Dwerror=true
bash tests/scripts/setup.sh "$here/build" $werror || exit 1

total_pass=0 total_fail=0 total_skip=0
status=0

# run NAME BUILD_DIR [meson test args...]; $wrap prefixes the meson command.
wrap=()
run() {
  local name=$1 dir=$2; shift 2
  echo "=== $name ($(date -u +%T)) ==="
  "${wrap[@]}" meson test -C "$dir" --print-errorlogs --num-processes 2 "$@"
  local rc=$?
  local p f s
  read -r p f s < <(/usr/bin/python3 - "$dir/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(p, f, s)
PY
)
  echo "$name: $p passed, $f failed, $s skipped"
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); total_skip=$((total_skip + s))
  [ $rc -eq 0 ] || status=1
}

plain_args=()
if [ -n "${DROVER_LONG:-}" ] && [ "${DROVER_LONG}" != 0 ]; then
  export DROVER_LONG
  plain_args=(--timeout-multiplier 4)
fi
run "plain" build "${plain_args[@]}"

if [ $quick -eq 0 ]; then
  # The Debian packages: dpkg-buildpackage on a git archive of HEAD (1 min
  # with a warm ccache, 3 min cold, on two busy cores), then their contents.
  run "package" build --suite package
  # ASan+UBSan: unit and replay suites.
  if [ ! -f build-asan/build.ninja ]; then
    meson setup build-asan "$here" -Db_sanitize=address,undefined -Db_lundef=false $werror >/dev/null
  fi
  # only what those suites run (tests/scripts/suite-targets.py): the daemons'
  # other tests and the benchmarks would cost minutes for nothing here
  mapfile -t targets < <(/usr/bin/python3 tests/scripts/suite-targets.py build-asan unit replay)
  if ninja -C build-asan "${targets[@]}" >/dev/null; then
    run "asan+ubsan" build-asan --no-rebuild --suite unit --suite replay
  else
    ninja -C build-asan "${targets[@]}" | tail -30; status=1
  fi
  # TSan: the job-core tests (gRPC is not TSan-clean: grpc-c-core.md pitfall 13).
  # setarch -R: gcc 12's TSan cannot map its shadow under the newer kernels'
  # mmap randomisation.
  if [ ! -f build-tsan/build.ninja ]; then
    meson setup build-tsan "$here" -Db_sanitize=thread $werror >/dev/null
  fi
  mapfile -t targets < <(/usr/bin/python3 tests/scripts/suite-targets.py build-tsan jobcore)
  if ninja -C build-tsan "${targets[@]}" >/dev/null; then
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$here/tests/tsan.supp"
    wrap=(setarch "$(uname -m)" -R)
    run "tsan" build-tsan --no-rebuild --suite jobcore
    wrap=()
  else
    ninja -C build-tsan "${targets[@]}" | tail -30; status=1
  fi
  # libFuzzer: each target for DROVER_FUZZ_SECONDS (default 8 in CI) with a fixed
  # seed; a crash, leak or timeout fails it.  clang comes from setup.sh.
  if [ ! -f build-fuzz/build.ninja ]; then
    CC=clang meson setup build-fuzz "$here" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
      -Dfuzz_seconds="${DROVER_FUZZ_SECONDS:-8}" >/dev/null
  fi
  mapfile -t targets < <(/usr/bin/python3 tests/scripts/suite-targets.py build-fuzz fuzz)
  if ninja -C build-fuzz "${targets[@]}" >/dev/null; then
    run "fuzz" build-fuzz --no-rebuild --suite fuzz
  else
    ninja -C build-fuzz "${targets[@]}" | tail -30; status=1
  fi
fi

echo
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
exit $status
