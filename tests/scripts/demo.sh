#!/usr/bin/env bash
# The main job: set up and build, then run the demo.
#
# Until the agent and coordinator exist (issues 3-5) the demo is the core
# demo: two tiny real guests on this machine, one live migration through the
# job core, with phases, live statistics, downtime and lock hold maxima.
#
# Usage: tests/scripts/demo.sh [MEM_MIB [DIRTY_MIB_PER_S]]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bash "$here/tests/scripts/setup.sh" "$here/build"
export DROVER_GUEST_ELF="$here/build/tests/guest/dirtyguest.elf"
exec "$here/build/tests/integration/drover-core-demo" "$@"
