#!/usr/bin/python3
"""A second, independent client of drover-agent: Debian's grpcio (Python,
not our C client layer) against the real agent process, with a tiny real
guest under QEMU/TCG.

Usage: test_agent_python.py            (meson sets the environment)

Environment: DROVER_BUILD_ROOT (the agent is $DROVER_BUILD_ROOT/agent/
drover-agent), DROVER_SOURCE_ROOT (the .proto is proto/drover/v1/agent.proto
under it), DROVER_GUEST_ELF (the tiny dirtying guest).

The script starts the agent itself in development mode on a unix socket and
a loopback TCP port, generates stubs from agent.proto with grpc_tools.protoc
into a scratch folder, and checks the lifecycle (define, start, get, list,
suspend, resume, destroy, undefine), operations (Start and Shutdown answer
at once; WatchOperation and GetOperation follow them), the event stream, the
agent statistics,
the error codes a client sees, and that guests outlive the agent.  Whatever
happens, it stops the agent, kills the QEMU processes whose pidfiles are in
the run folder, and removes the scratch folder.

Only /usr/bin/python3 sees Debian's grpcio; without it, or without QEMU or
the guest, the test exits 77 (skipped) with the reason.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import testutil as tu  # noqa: E402
from testutil import Abort, check, kill_guests, pid_alive, require  # noqa: E402

try:
    import grpc
    import grpc_tools  # noqa: F401
except ImportError as e:
    print(f"SKIP: python3-grpcio / python3-grpc-tools not importable by {sys.executable}: {e}")
    sys.exit(77)

SOURCE_ROOT = os.environ.get("DROVER_SOURCE_ROOT", os.path.join(HERE, "..", ".."))
BUILD_ROOT = os.environ.get("DROVER_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
AGENT = os.path.join(BUILD_ROOT, "agent", "drover-agent")
PROTO_DIR = os.path.join(SOURCE_ROOT, "proto", "drover", "v1")
QEMU = "/usr/bin/qemu-system-x86_64"  # the agent's default qemu_binary
GUEST = "py1"
KEEP = "py-keep"  # left running when the agent stops


def rpc_error(fn):
    """Run fn; return the grpc.RpcError it raised, or None."""
    try:
        fn()
    except grpc.RpcError as e:
        return e
    return None


def expect_code(name, fn, code, needle=None):
    e = rpc_error(fn)
    if e is None:
        return check(name, False, "no error")
    ok = e.code() == code and (needle is None or needle in (e.details() or ""))
    return check(name, ok, f"got {e.code()} {e.details()!r}")


class Agent(tu.Daemon):
    """drover-agent as a child process in dev mode; its ready line is read
    from its stdout, the log has its stderr."""

    def __init__(self, tmp):
        self.dir = tmp
        self.sock = os.path.join(tmp, "agent.sock")
        self.state_dir = os.path.join(tmp, "state")
        self.run_dir = os.path.join(tmp, "run")
        super().__init__("agent", [], os.path.join(tmp, "agent.log"), "drover-agent: ready")
        self.port = tu.free_port()
        self.ready_line = None

    def start(self, timeout=15):
        argv = [AGENT, "--dev", "--host", "py-host",
                "--listen", f"unix:{self.sock}", "--listen", f"127.0.0.1:{self.port}",
                "--state-dir", self.state_dir, "--run-dir", self.run_dir, "--accel", "tcg",
                # guest files must lie in an image root: the test guest's folder
                "--set", "image_roots=" + os.path.dirname(os.environ["DROVER_GUEST_ELF"])]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        lines = []
        got = threading.Event()

        def read_stdout():
            for line in self.proc.stdout:  # drain until the agent exits
                lines.append(line)
                if line.startswith(self.ready):
                    self.ready_line = line.strip()
                    got.set()
            got.set()

        threading.Thread(target=read_stdout, daemon=True).start()
        got.wait(timeout)
        return self.ready_line


class EventWatcher(threading.Thread):
    """Reads a WatchEvents stream into a list until cancelled."""

    def __init__(self, stub, pb2, guest):
        super().__init__(daemon=True)
        self.call = stub.WatchEvents(pb2.WatchEventsRequest(guest=guest), timeout=300)
        self.events = []
        self.end = None
        self.cond = threading.Condition()

    def run(self):
        try:
            for ev in self.call:
                with self.cond:
                    self.events.append(ev)
                    self.cond.notify_all()
        except grpc.RpcError as e:
            self.end = e.code()
        with self.cond:
            self.cond.notify_all()

    def wait_for(self, kinds, timeout):
        """Wait until kinds appear in order (other events may interleave)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                it = iter(e.kind for e in self.events)
                if all(k in it for k in kinds):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.end is not None:
                    return False
                self.cond.wait(left)


def guest_json(name):
    import json
    return json.dumps({"name": name, "memory_mib": 48, "vcpus": 1, "machine": "pc",
                       "kernel": os.environ["DROVER_GUEST_ELF"], "append": "mib=16 rate=5",
                       "serial_log": True})


def wait_op(stub, pb2, op_id, timeout):
    """Follow operation op_id with WatchOperation until done; the last Operation."""
    last = None
    for op in stub.WatchOperation(pb2.OperationRef(op_id=op_id), timeout=timeout):
        last = op
        if op.done:
            break
    return last


def run(agent, pb2, pb2_grpc):
    T = 30  # default per-call deadline, seconds
    ready = agent.start()
    require("agent prints its ready line", ready is not None,
            f"exit={agent.proc.poll()} log:\n{agent.log_text()}")
    check("ready line names both listeners", f"unix:{agent.sock}" in ready and str(agent.port) in ready, ready)

    uch = grpc.insecure_channel(f"unix:{agent.sock}")
    tch = grpc.insecure_channel(f"127.0.0.1:{agent.port}")
    for label, ch in (("unix", uch), ("tcp", tch)):
        try:
            grpc.channel_ready_future(ch).result(timeout=10)
            require(f"channel ready over {label}", True)
        except grpc.FutureTimeoutError:
            require(f"channel ready over {label}", False, "not connected in 10 s")
    u = pb2_grpc.AgentStub(uch)
    t = pb2_grpc.AgentStub(tch)
    S = pb2.GuestState

    # the event stream (over TCP), filtered to our guest; subscribed once the
    # agent counts it in flight
    watcher = EventWatcher(t, pb2, GUEST)
    watcher.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and u.GetAgentStats(pb2.GetAgentStatsRequest(), timeout=T).rpcs_in_flight < 1:
        time.sleep(0.02)
    time.sleep(0.1)  # from counted in flight to subscribed: a few instructions
    check("WatchEvents stream is open", watcher.end is None, str(watcher.end))

    # define
    d = u.Define(pb2.DefineRequest(definition_json=guest_json(GUEST), op_id="py-define"), timeout=T)
    require("Define", d.status.name == GUEST and d.status.state == S.Value("GUEST_STATE_SHUTOFF")
            and os.environ["DROVER_GUEST_ELF"] in d.definition_json, str(d.status))

    # start (an operation: the call answers at once, the client follows it), get, list
    OS = pb2.OperationState
    r = u.Start(pb2.StartRequest(guest=GUEST, op_id="py-start"), timeout=T)
    check("Start answers with its operation", r.operation_id == "py-start"
          and r.operation_state in (OS.Value("OPERATION_STATE_RUNNING"), OS.Value("OPERATION_STATE_SUCCEEDED")), str(r))
    op = wait_op(t, pb2, "py-start", T)
    require("WatchOperation: the start succeeded", op is not None and op.done
            and op.state == OS.Value("OPERATION_STATE_SUCCEEDED") and op.kind == "start", str(op))
    st = op.guest_status
    require("Start: running, pid > 0", st.state == S.Value("GUEST_STATE_RUNNING") and st.pid > 0, str(st))
    pid = st.pid
    g = u.GetOperation(pb2.OperationRef(op_id="py-start"), timeout=T)
    check("GetOperation over the other channel: the same operation",
          g.state == op.state and g.guest_status.pid == pid and g.generation == op.generation, str(g))
    expect_code("GetOperation of an unknown id -> NOT_FOUND",
                lambda: u.GetOperation(pb2.OperationRef(op_id="py-nope"), timeout=T), grpc.StatusCode.NOT_FOUND)
    g = u.GetGuest(pb2.GuestRef(guest=GUEST), timeout=T)
    check("GetGuest: RUNNING, same pid, QEMU alive, no job",
          g.status.state == S.Value("GUEST_STATE_RUNNING") and g.status.pid == pid and pid_alive(pid)
          and g.status.job == "none" and g.status.async_job == "none", str(g.status))
    g2 = t.GetGuest(pb2.GuestRef(guest=g.status.uuid), timeout=T)
    check("GetGuest by UUID over TCP", g2.status.name == GUEST and g2.status.pid == pid, str(g2.status))
    lst = t.ListGuests(pb2.ListGuestsRequest(), timeout=T)
    check("ListGuests over TCP", [(x.name, x.pid) for x in lst.guests] == [(GUEST, pid)], str(lst))

    # suspend / resume
    st = u.Suspend(pb2.GuestRef(guest=GUEST), timeout=T)
    check("Suspend: PAUSED (user)", st.state == S.Value("GUEST_STATE_PAUSED") and st.reason == "user", str(st))
    st = u.Resume(pb2.GuestRef(guest=GUEST), timeout=T)
    check("Resume: RUNNING", st.state == S.Value("GUEST_STATE_RUNNING"), str(st))

    # graceful shutdown of the tiny guest, which has no ACPI so never powers
    # off: the call answers at once even with a 0.5 s deadline, and the
    # operation fails after its 3 s like the blocking call did
    t0 = time.monotonic()
    sh = u.Shutdown(pb2.ShutdownRequest(guest=GUEST, timeout_ms=3000, force=False, op_id="py-shutdown"),
                    timeout=0.5)
    el = time.monotonic() - t0
    print(f"# Shutdown(timeout_ms=3000) with a 0.5 s deadline: answered in {el:.3f} s, operation "
          f"{sh.operation_id} {OS.Name(sh.operation_state)}")
    check("Shutdown answers at once with a running operation",
          sh.operation_id == "py-shutdown" and sh.operation_state == OS.Value("OPERATION_STATE_RUNNING") and el < 0.5,
          f"{sh.operation_id} {sh.operation_state} after {el:.3f} s")
    op = wait_op(u, pb2, "py-shutdown", 15)
    print(f"# shutdown operation: {OS.Name(op.state)} code {op.error_code} "
          f"{op.error!r} after {(op.ended_unix_ms - op.created_unix_ms) / 1000:.1f} s")
    check("the shutdown operation fails with DEADLINE_EXCEEDED after its 3 s",
          op.state == OS.Value("OPERATION_STATE_FAILED") and op.error_code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
          and "did not power off within 3000 ms" in op.error and op.ended_unix_ms - op.created_unix_ms >= 3000, str(op))
    # its job ended and the guest runs on
    deadline = time.monotonic() + 5
    while True:
        g = u.GetGuest(pb2.GuestRef(guest=GUEST), timeout=T).status
        if g.job == "none" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    check("after the failed Shutdown: still RUNNING, job released",
          g.state == S.Value("GUEST_STATE_RUNNING") and g.job == "none" and g.pid == pid, str(g))

    # statistics (TCP)
    a = t.GetAgentStats(pb2.GetAgentStatsRequest(), timeout=T)
    locks = {lc.name: lc for lc in a.locks}
    for name in ("vm", "registry"):
        lc = locks.get(name)
        check(f"GetAgentStats: lock class '{name}' with holds",
              lc is not None and lc.count > 0 and lc.max_ns > 0 and len(lc.histogram) > 0, str(lc))
        if lc:
            print(f"# lock {name}: {lc.count} holds, max {lc.max_ns / 1e6:.3f} ms, "
                  f"longest wait {lc.wait_max_ns / 1e6:.3f} ms")
    check("GetAgentStats: host, one guest running",
          a.host == "py-host" and a.guests_total == 1 and dict(a.guests_by_state) == {"running": 1},
          f"{a.host} {a.guests_total} {dict(a.guests_by_state)}")

    # destroy, then operations that need a running guest
    st = u.Destroy(pb2.GuestRef(guest=GUEST, op_id="py-destroy"), timeout=T)
    check("Destroy: SHUTOFF", st.state == S.Value("GUEST_STATE_SHUTOFF") and st.pid == 0, str(st))
    deadline = time.monotonic() + 3
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    check("Destroy: QEMU is gone", not pid_alive(pid))
    expect_code("Suspend of a shut-off guest -> FAILED_PRECONDITION",
                lambda: u.Suspend(pb2.GuestRef(guest=GUEST), timeout=T), grpc.StatusCode.FAILED_PRECONDITION)

    # errors
    expect_code("GetGuest of an unknown guest -> NOT_FOUND (detail names it)",
                lambda: u.GetGuest(pb2.GuestRef(guest="nope"), timeout=T), grpc.StatusCode.NOT_FOUND, "nope")
    expect_code("Start of an unknown guest over TCP -> NOT_FOUND",
                lambda: t.Start(pb2.StartRequest(guest="nope"), timeout=T), grpc.StatusCode.NOT_FOUND)
    expect_code("Define of a duplicate name -> ALREADY_EXISTS",
                lambda: u.Define(pb2.DefineRequest(definition_json=guest_json(GUEST)), timeout=T),
                grpc.StatusCode.ALREADY_EXISTS, GUEST)
    bad = [
        ('{"name": "x"}', "memory_mib"),
        ('{"name": "x", "memory_mib": 64, "vcpus": "two"}', "vcpus"),
        ('{"name": "x", "memory_mib": 64, "colour": "blue"}', "colour"),
        ('{"name": "x", "memory_mib": 64, "disks": [{"path": "/a", "format": "vmdk"}]}', "disks[0].format"),
    ]
    for js, field in bad:
        expect_code(f"Define with a bad '{field}' -> INVALID_ARGUMENT naming it",
                    lambda: u.Define(pb2.DefineRequest(definition_json=js), timeout=T),
                    grpc.StatusCode.INVALID_ARGUMENT, field)
    for label, ch in (("unix", uch), ("tcp", tch)):
        nope = ch.unary_unary("/drover.v1.Agent/NoSuchMethod")
        expect_code(f"unknown method over {label} -> UNIMPLEMENTED", lambda: nope(b"", timeout=T),
                    grpc.StatusCode.UNIMPLEMENTED)

    # undefine
    check("Undefine", isinstance(u.Undefine(pb2.GuestRef(guest=GUEST), timeout=T), pb2.Empty))
    expect_code("GetGuest after Undefine -> NOT_FOUND",
                lambda: t.GetGuest(pb2.GuestRef(guest=GUEST), timeout=T), grpc.StatusCode.NOT_FOUND)
    check("status file removed", not os.path.exists(os.path.join(agent.state_dir, f"{GUEST}.json")))

    # the stream saw the story, for our guest only
    want = ["defined", "started", "paused", "resumed", "destroyed", "undefined"]
    seen = watcher.wait_for(want, 10)
    kinds = [ev.kind for ev in watcher.events]
    check("WatchEvents: " + ", ".join(want) + " in order", seen, str(kinds))
    check("WatchEvents: filtered to the guest, seq increasing",
          all(ev.guest == GUEST for ev in watcher.events)
          and all(x.seq < y.seq for x, y in zip(watcher.events, watcher.events[1:])), str(watcher.events))
    watcher.call.cancel()
    watcher.join(5)
    check("WatchEvents: cancel ends the stream (CANCELLED)", watcher.end == grpc.StatusCode.CANCELLED,
          str(watcher.end))

    # guests outlive the agent: SIGTERM with one running
    u.Define(pb2.DefineRequest(definition_json=guest_json(KEEP)), timeout=T)
    kop = wait_op(u, pb2, u.Start(pb2.StartRequest(guest=KEEP), timeout=T).operation_id, T)
    kpid = kop.guest_status.pid if kop and kop.guest_status else 0
    uch.close()
    tch.close()
    rc = agent.stop()
    check("SIGTERM: the agent exits 0", rc == 0, f"rc={rc}")
    check("a running guest outlives the agent", kpid > 0 and pid_alive(kpid), f"pid {kpid}")


def main():
    if not (os.access(QEMU, os.X_OK)):
        print(f"SKIP: {QEMU} is not installed (tests/scripts/setup.sh installs it)")
        return 77
    elf = os.environ.get("DROVER_GUEST_ELF")
    if not elf or not os.access(elf, os.R_OK):
        print("SKIP: the test guest is not built (DROVER_GUEST_ELF unset or missing)")
        return 77
    if not os.access(AGENT, os.X_OK):
        print(f"drover-agent not found at {AGENT} (set DROVER_BUILD_ROOT)")
        return 1

    tmp = tempfile.mkdtemp(prefix="drover-agentpy-")
    agent = Agent(tmp)
    try:
        pb2, pb2_grpc = tu.grpc_stubs(PROTO_DIR, "agent", os.path.join(tmp, "stubs"))
        run(agent, pb2, pb2_grpc)
    except Abort as e:
        print(f"# aborted after a failed check: {e}")
    except Exception:
        import traceback
        traceback.print_exc()
        check("no unexpected exception", False)
    finally:
        rc = agent.stop()
        killed = kill_guests(agent.run_dir)
        if tu.failures:
            print(f"# agent exit {rc}; log:\n" + "".join("#   " + ln for ln in agent.log_text().splitlines(True)))
        print(f"# cleanup: agent stopped, {killed} QEMU process(es) killed, {tmp} removed")
        shutil.rmtree(tmp, ignore_errors=True)
    return tu.finish()


if __name__ == "__main__":
    sys.exit(main())
