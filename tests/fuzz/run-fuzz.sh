#!/usr/bin/env bash
# Run one libFuzzer target for a short, fixed time (the 'fuzz' suite,
# docs/fuzzing.md).  New inputs go to a scratch folder beside the binary,
# never into the seed corpus in the source tree.  Fails on any crash, leak
# or timeout (libFuzzer's own exit code), and when the seed corpus is
# missing (a target that fuzzes nothing cannot fail).  -error_exitcode=1:
# libFuzzer's default, 77, is what meson reads as a skipped test.
#
# Usage: run-fuzz.sh BINARY SEED_DIR SECONDS [extra libFuzzer flags...]
set -euo pipefail
bin=$1 seeds=$2 secs=$3
shift 3
[ -d "$seeds" ] && [ -n "$(ls -A "$seeds")" ] || { echo "run-fuzz: no seeds in $seeds" >&2; exit 1; }
work=$(dirname "$bin")/fuzz-work/$(basename "$bin")
rm -rf "$work"
mkdir -p "$work"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
exec "$bin" "$work" "$seeds" -max_total_time="$secs" -seed=1 -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 \
        -print_final_stats=1 "$@"
