#!/usr/bin/env python3
"""Print the ninja targets the tests of some suites need, one per line.

Usage: suite-targets.py BUILD_DIR SUITE...

A sanitizer build only runs a few suites (tests/scripts/test.sh), so
building all of it (the daemons, benchmarks, cluster tests) costs minutes
of CI for nothing: this lists each selected test's executable (when it is
built here) and the targets it declares as depends, as paths relative to
BUILD_DIR, from `meson introspect`.  A suite matches "drover:NAME" or NAME.
"""
import json
import os
import subprocess
import sys


def introspect(build, what):
    out = subprocess.run(["meson", "introspect", build, what], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    build = os.path.abspath(sys.argv[1])
    suites = set(sys.argv[2:])
    files = {}
    for t in introspect(build, "--targets"):
        files[t["id"]] = t["filename"]
    wanted = set()
    for test in introspect(build, "--tests"):
        names = {s.split(":", 1)[-1] for s in test["suite"]} | set(test["suite"])
        if not names & suites:
            continue
        exe = test["cmd"][0]
        if exe.startswith(build + os.sep):
            wanted.add(exe)
        for dep in test.get("depends", []):
            wanted.update(files.get(dep, []))
    for f in sorted(wanted):
        print(os.path.relpath(f, build))


if __name__ == "__main__":
    main()
