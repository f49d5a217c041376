#!/usr/bin/python3
"""`drover-agent --check-config FILE` and `drover-coordinator --check-config
FILE` parse and validate FILE as a start would, print "config OK" (exit 0)
or the error (exit 1; a syntax error names its line and column), and start
nothing: no state or run folder, no database, no socket.

Environment: DROVER_BUILD_ROOT (set by meson)."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import testutil as tu  # noqa: E402

BUILD = os.environ.get("DROVER_BUILD_ROOT", "build")
AGENT = os.path.join(BUILD, "agent", "drover-agent")
COORD = os.path.join(BUILD, "coordinator", "drover-coordinator")


def check_config(binary, path):
    p = subprocess.run([binary, "--check-config", path], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout, p.stderr


def write(d, name, text):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def expect_ok(what, binary, path, d):
    rc, out, err = check_config(binary, path)
    tu.check(f"{what}: a good file says config OK and exits 0", rc == 0 and out == "config OK\n", f"rc={rc} {out!r} {err!r}")
    tu.check(f"{what}: nothing was started or created", sorted(os.listdir(d)) == sorted(FILES[d]),
             f"{sorted(os.listdir(d))}")


def expect_error(what, binary, path, words):
    rc, out, err = check_config(binary, path)
    tu.check(f"{what}: exits 1 with the error and without config OK",
             rc == 1 and "config OK" not in out and all(w in err for w in words), f"rc={rc} {out!r} {err!r}")


FILES = {}


def main():
    for b in (AGENT, COORD):
        tu.require(f"{os.path.basename(b)} is built", os.access(b, os.X_OK), b)
    d = tempfile.mkdtemp(prefix="drover-check-config-")
    try:
        agent_good = write(d, "agent.json", (
            '{\n  "state_dir": "%s/state",\n  "run_dir": "%s/run",\n'
            '  "listen": ["unix:%s/agent.sock"],\n  "dev_mode": true,\n  "accel": "tcg"\n}\n') % (d, d, d))
        agent_syntax = write(d, "agent-syntax.json", '{\n  "state_dir": "/tmp/x",\n  "dev_mode": tru\n}\n')
        agent_member = write(d, "agent-member.json", '{\n  "state_dir": "/tmp/x",\n  "no_such_member": 1\n}\n')
        agent_value = write(d, "agent-value.json", '{ "state_dir": "relative/path", "dev_mode": true }\n')
        coord_good = write(d, "coordinator.json", (
            '{\n  "listen": ["unix:%s/coord.sock"],\n  "db": "%s/coord.db",\n  "dev_mode": true,\n'
            '  "hosts": []\n}\n') % (d, d))
        coord_syntax = write(d, "coordinator-syntax.json", '{\n  "db": "/tmp/x.db",\n  "hosts": [ 1 2 ]\n}\n')
        coord_member = write(d, "coordinator-member.json", '{ "db": "/tmp/x.db", "no_such_member": 1 }\n')
        FILES[d] = os.listdir(d)

        expect_ok("agent", AGENT, agent_good, d)
        expect_error("agent, syntax error", AGENT, agent_syntax, ["line 3, column", "agent-syntax.json"])
        expect_error("agent, unknown member", AGENT, agent_member, ["no_such_member"])
        expect_error("agent, invalid value", AGENT, agent_value, ["state_dir"])
        expect_error("agent, missing file", AGENT, os.path.join(d, "absent.json"), ["absent.json"])

        expect_ok("coordinator", COORD, coord_good, d)
        expect_error("coordinator, syntax error", COORD, coord_syntax, ["line 3, column", "coordinator-syntax.json"])
        expect_error("coordinator, unknown member", COORD, coord_member, ["no_such_member"])
        expect_error("coordinator, missing file", COORD, os.path.join(d, "absent.json"), ["absent.json"])
    except tu.Abort:
        pass
    finally:
        subprocess.run(["rm", "-rf", d])
    return tu.finish()


if __name__ == "__main__":
    sys.exit(main())
