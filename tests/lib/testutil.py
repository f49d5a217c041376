"""Helpers shared by the Python test programs (tests/agentd/test_agent_python.py,
tests/ansible/test_ansible.py, tests/rpc/interop.py), the counterpart of
testutil.c: TAP checks with a running count, a daemon run as a child with its
log, clean-up of the QEMU processes an agent leaves behind, and gRPC stubs
generated from a .proto at test time.

The scripts run under /usr/bin/python3 (only it sees Debian's grpcio) and
import this file by path:

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
    import testutil as tu

The counts live in this module: read them as tu.checks and tu.failures (not
through `from testutil import failures`, which copies the number once), and
end with `return tu.finish()`.
"""
import os
import signal
import socket
import subprocess
import sys
import time

checks = 0
failures = 0


def check(name, cond, detail=""):
    """One TAP line, "ok N - name" or "not ok N - name detail"; returns cond."""
    global checks, failures
    checks += 1
    if cond:
        print(f"ok {checks} - {name}", flush=True)
    else:
        failures += 1
        print(f"not ok {checks} - {name} {detail}", flush=True)
    return cond


class Abort(Exception):
    """A check failed that later checks depend on."""


def require(name, cond, detail=""):
    """check(), and raise Abort when it failed."""
    if not check(name, cond, detail):
        raise Abort(name)


def finish():
    """Print the TAP plan and the tally; the exit code (1 when a check failed)."""
    print(f"1..{checks}")
    print(f"# {checks - failures} of {checks} checks passed")
    return 1 if failures else 0


def free_port():
    """A free TCP port on 127.0.0.1 (bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid):
    """True for a live process; zombies count as dead."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def kill_guests(run_dir):
    """SIGKILL every QEMU whose pidfile is in run_dir (guests outlive their
    agent on purpose); returns how many were killed."""
    killed = 0
    try:
        names = os.listdir(run_dir)
    except OSError:
        return 0
    for n in names:
        if not n.endswith(".pid"):
            continue
        try:
            with open(os.path.join(run_dir, n)) as f:
                pid = int(f.read().strip() or 0)
            exe = os.readlink(f"/proc/{pid}/exe") if pid > 0 else ""
        except (OSError, ValueError):
            continue
        if "qemu" in exe:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


class Daemon:
    """A drover daemon as a child: stdout+stderr to log_path, started() once
    its ready line is in the log.  stop() may be called more than once."""

    def __init__(self, name, argv, log_path, ready, preexec_fn=None):
        self.name, self.argv, self.log_path, self.ready = name, argv, log_path, ready
        self.preexec_fn = preexec_fn
        self.proc = None
        self.log = None
        self.rc = None

    def start(self, timeout=20):
        """Start it and wait up to timeout s for the ready line; True when it came."""
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready in self.log_text():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def log_text(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, timeout=10):
        """SIGTERM and wait; returns the exit code (None if it had to be
        killed or never ran); a second call returns the first one's."""
        if self.proc is None:
            return self.rc
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = None
        self.log.close()
        self.proc = None
        self.rc = rc
        return rc


def grpc_stubs(proto_dir, proto, out_dir):
    """Generate <proto>_pb2 and <proto>_pb2_grpc from proto_dir/<proto>.proto
    with grpc_tools.protoc into out_dir (created if needed) and import them;
    returns (pb2, pb2_grpc).  Raises CalledProcessError when protoc fails."""
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
                    f"--grpc_python_out={out_dir}", f"{proto}.proto"], check=True)
    sys.path.insert(0, out_dir)
    return __import__(f"{proto}_pb2"), __import__(f"{proto}_pb2_grpc")
