#!/usr/bin/python3
"""`ansible-test sanity` on the drover.cluster collection (ansible/), on a
copy laid out as ansible-test wants it (ansible_collections/drover/cluster
in a scratch folder).  Any finding fails the test.

ansible-test installs the pinned requirements of some sanity tests (pylint,
pep8, validate-modules, yamllint, ansible-doc, import, runtime-metadata,
changelog) into virtual environments from the Python package index.
First the collection's own unit tests (tests/unit, unittest style) run
with this Python; a failure fails the test.  On a
machine that cannot reach it those tests cannot run: the test then runs
every other sanity test and, in place of the ansible-doc test, parses every
module's documentation with ansible-doc itself; findings there still fail,
and the test ends skipped (77) naming the tests that could not run.  Exit 77
too without ansible-test.

Usage: sanity.py  (meson sets DROVER_SOURCE_ROOT; DROVER_KEEP_TMP keeps the copy)
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_ROOT = os.environ.get("DROVER_SOURCE_ROOT", os.path.join(HERE, "..", ".."))
COLLECTION = os.path.join(SOURCE_ROOT, "ansible")
TIMEOUT_S = 600
# what ansible-test prints when it cannot get pip or a requirement
NO_INDEX = re.compile(r"does not have pip available|Download failed|Could not find a version that satisfies|"
                      r"No matching distribution found|Failed to establish a new connection")


def ansible_test_python():
    """X.Y of the Python ansible-test runs with (its own interpreter)."""
    return "%d.%d" % sys.version_info[:2]


def needs_index(at, col):
    """The sanity tests of this ansible-test that have pinned requirements
    (its _data/requirements/sanity.NAME.txt)."""
    import ansible_test
    d = os.path.join(os.path.dirname(ansible_test.__file__), "_data", "requirements")
    pinned = set(m.group(1) for m in (re.match(r"sanity\.(.+)\.txt$", n) for n in os.listdir(d)) if m)
    rc, out, _ = run([at, "sanity", "--list-tests"], col)
    return sorted(t for t in out.split() if t in pinned)


def run(argv, cwd, env=None):
    t0 = time.monotonic()
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def main():
    at = shutil.which("ansible-test")
    if not at:
        print("SKIP: ansible-test is missing (Debian package ansible-core)")
        return 77
    tmp = tempfile.mkdtemp(prefix="drover-sanity-")
    try:
        top = os.path.join(tmp, "ansible_collections")
        col = os.path.join(top, "drover", "cluster")
        shutil.copytree(COLLECTION, col, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests/output"))
        units = sorted(os.path.relpath(os.path.join(d, n), col)
                       for d, _, ns in os.walk(os.path.join(col, "tests", "unit"))
                       for n in ns if n.startswith("test_") and n.endswith(".py"))
        if units:
            # the collection's unit tests (unittest style; `ansible-test units` needs pytest from the index)
            urc, uout, uel = run([sys.executable, "-m", "unittest"] + units, col, dict(os.environ, PYTHONPATH=tmp))
            print(f"# the collection's unit tests ({len(units)} files): rc={urc} in {uel:.1f} s")
            if urc != 0:
                print(uout)
                print("FAIL: the collection's unit tests fail (above)")
                return 1
        base = [at, "sanity", "--color", "no", "--python", ansible_test_python()]
        rc, out, el = run(base, col)
        print(f"# ansible-test sanity: rc={rc} in {el:.1f} s")
        if rc == 0:
            print("1 passed, 0 failed")
            return 0
        if not NO_INDEX.search(out):
            print(out)
            print("FAIL: ansible-test sanity reports findings (above)")
            return 1
        # no package index: every test that needs none, and the documentation by ansible-doc
        skipped = needs_index(at, col)
        argv = base + [a for t in skipped for a in ("--skip-test", t)]
        rc, out, el = run(argv, col)
        print(f"# ansible-test sanity without {', '.join(skipped)}: rc={rc} in {el:.1f} s")
        bad = rc != 0
        if bad:
            print(out)
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=tmp, ANSIBLE_NOCOLOR="1")
        modules = sorted(n[:-3] for n in os.listdir(os.path.join(col, "plugins", "modules")) if n.endswith(".py"))
        for m in modules:
            drc, dout, _ = run(["ansible-doc", "-t", "module", f"drover.cluster.{m}"], tmp, env)
            if drc != 0 or "WARNING" in dout or "ERROR" in dout:
                print(f"ansible-doc drover.cluster.{m}: rc={drc}\n{dout}")
                bad = True
        if bad:
            print("FAIL: findings (above)")
            return 1
        print(f"# ansible-doc parsed the documentation of {', '.join(modules)}")
        print(f"SKIP: ansible-test could not install the requirements of the sanity tests {', '.join(skipped)} "
              "(they come from the Python package index, which this machine cannot reach); the other sanity "
              "tests and ansible-doc found nothing")
        return 77
    finally:
        if os.environ.get("DROVER_KEEP_TMP"):
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
