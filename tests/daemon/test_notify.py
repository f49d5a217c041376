#!/usr/bin/python3
"""systemd notifications and the log format of the real daemons.

drover-agent runs with NOTIFY_SOCKET at a unix datagram socket this test
owns and WATCHDOG_USEC=400000: READY=1 must come with a STATUS= line once
it listens ("0 guests, 0 migrations"), WATCHDOG=1 must come at least every
200 ms (half the interval), and SIGTERM must bring STOPPING=1 before the
process exits 0.  The coordinator the same (READY=1 with "N hosts (M up),
J jobs, K migrations", WATCHDOG=1, STOPPING=1).  Without WATCHDOG_USEC no WATCHDOG=1 is
sent.

Logs: with JOURNAL_STREAM naming the dev:ino of the daemon's stderr (what
systemd sets for StandardError=journal) lines begin with "<N>" (a syslog
priority) and carry no timestamp; with a JOURNAL_STREAM naming some other
file, lines begin with an ISO 8601 UTC timestamp with milliseconds.

Environment: DROVER_BUILD_ROOT (set by meson)."""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import testutil as tu  # noqa: E402

BUILD = os.environ.get("DROVER_BUILD_ROOT", "build")
AGENT = os.path.join(BUILD, "agent", "drover-agent")
COORD = os.path.join(BUILD, "coordinator", "drover-coordinator")


class NotifySocket:
    """A unix datagram socket standing in for systemd's notify socket; every
    datagram is kept with its arrival time."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.05)
        self.msgs = []  # (monotonic time, {KEY: value})

    def pump(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            kv = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.msgs.append((time.monotonic(), kv))

    def wait_for(self, key, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for _, kv in self.msgs:
                if key in kv:
                    return kv
            self.pump(0.1)
        return None

    def times(self, key):
        return [t for t, kv in self.msgs if key in kv]

    def close(self):
        self.sock.close()


def agent_argv(d):
    return [AGENT, "--dev", "--listen", f"unix:{d}/agent.sock", "--state-dir", f"{d}/state", "--run-dir",
            f"{d}/run", "--accel", "tcg", "--log-level", "info"]


def coord_argv(d):
    with open(f"{d}/coordinator.json", "w") as f:
        f.write('{ "listen": ["unix:%s/coord.sock"], "db": "%s/coord.db", "dev_mode": true, '
                '"log_level": "info", "hosts": [] }\n' % (d, d))
    return [COORD, "--config", f"{d}/coordinator.json"]


def run_notified(name, argv, d, ready_line, status_re, watchdog_usec):
    ns = NotifySocket(f"{d}/notify-{name}.sock")
    env = dict(os.environ, NOTIFY_SOCKET=ns.path)
    env.pop("WATCHDOG_PID", None)
    env.pop("WATCHDOG_USEC", None)
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    log = open(f"{d}/{name}.log", "w")
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        ready = ns.wait_for("READY", 30)
        tu.require(f"{name}: READY=1 arrives", ready is not None and ready.get("READY") == "1",
                   open(f"{d}/{name}.log").read()[-2000:])
        with open(f"{d}/{name}.log") as f:
            tu.check(f"{name}: READY=1 comes once it listens (ready line printed)", ready_line in f.read())
        tu.check(f"{name}: READY=1 carries STATUS= ({ready.get('STATUS')!r})",
                 re.fullmatch(status_re, ready.get("STATUS", "")) is not None)
        ns.pump(1.2)
        dogs = ns.times("WATCHDOG")
        if watchdog_usec:
            gaps = [b - a for a, b in zip(dogs, dogs[1:])]
            tu.check(f"{name}: WATCHDOG=1 at half the interval ({len(dogs)} in 1.2 s)",
                     len(dogs) >= 4 and max(gaps) < watchdog_usec / 1e6, f"gaps {gaps}")
        else:
            tu.check(f"{name}: no WATCHDOG=1 without WATCHDOG_USEC", not dogs, f"{len(dogs)} sent")
        p.terminate()
        rc = p.wait(30)
        ns.pump(0.2)
        stopping = [kv for _, kv in ns.msgs if "STOPPING" in kv]
        tu.check(f"{name}: STOPPING=1 at SIGTERM, then exit 0", stopping and stopping[0]["STOPPING"] == "1" and rc == 0,
                 f"rc={rc} {stopping}")
        order = [k for _, kv in ns.msgs for k in kv if k in ("READY", "STOPPING")]
        tu.check(f"{name}: READY before STOPPING", order[:1] == ["READY"] and order[-1:] == ["STOPPING"], f"{order}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
        ns.close()


def log_format(d):
    """The agent's stderr is a file; JOURNAL_STREAM names it or not."""
    path = f"{d}/journal-format.log"
    for journald in (True, False):
        with open(path, "w") as log:
            st = os.fstat(log.fileno()) if journald else os.stat("/dev/null")
            env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
            env.pop("NOTIFY_SOCKET", None)
            p = subprocess.Popen(agent_argv(d) + ["--log-level", "debug"], stdout=subprocess.DEVNULL, stderr=log,
                                 stdin=subprocess.DEVNULL, env=env)
            time.sleep(1.5)
            p.terminate()
            p.wait(30)
        with open(path) as f:
            lines = [line for line in f.read().splitlines() if line]
        if journald:
            ok = lines and all(re.match(r"<[3467]>\[[\w.-]+:\d+\] ", line) for line in lines)
            tu.check(f"log: under journald every line starts <N>[file:line], no timestamp ({len(lines)} lines)",
                     ok, f"{lines[:3]}")
            tu.check("log: under journald info is <6> and the stop line is there",
                     any(line.startswith("<6>") and "stopping" in line for line in lines), f"{lines[-3:]}")
        else:
            ts = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warning|error) +\[[\w.-]+:\d+\] "
            tu.check(f"log: elsewhere every line starts with an ISO 8601 UTC timestamp ({len(lines)} lines)",
                     lines and all(re.match(ts, line) for line in lines), f"{lines[:3]}")


def main():
    for b in (AGENT, COORD):
        tu.require(f"{os.path.basename(b)} is built", os.access(b, os.X_OK), b)
    d = tempfile.mkdtemp(prefix="drover-notify-", dir="/tmp")
    try:
        run_notified("agent", agent_argv(d), d, "drover-agent: ready", r"\d+ guests?, \d+ migrations?", 400000)
        run_notified("agent-nowatchdog", agent_argv(d), d, "drover-agent: ready", r"\d+ guests?, \d+ migrations?", 0)
        run_notified("coordinator", coord_argv(d), d, "drover-coordinator: ready",
                     r"\d+ hosts? \(\d+ up\), \d+ jobs?, \d+ migrations?", 400000)
        log_format(d)
    except tu.Abort:
        pass
    finally:
        subprocess.run(["rm", "-rf", d])
    return tu.finish()


if __name__ == "__main__":
    sys.exit(main())
