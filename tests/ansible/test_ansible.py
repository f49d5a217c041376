#!/usr/bin/python3
"""The drover.cluster Ansible collection (ansible/) driven by the real
ansible-playbook against a real cluster on loopback.

Usage: test_ansible.py            (meson sets the environment)

Environment: DROVER_SOURCE_ROOT (the collection is ansible/ under it, the
playbooks tests/ansible/*.yml), DROVER_BUILD_ROOT (agent/drover-agent,
coordinator/drover-coordinator, coordinator/droverctl), DROVER_GUEST_ELF
(the tiny dirtying guest), DROVER_KEEP_TMP (keep the scratch folder).

What it does, in a scratch folder:
  1. lays the collection out for ANSIBLE_COLLECTIONS_PATH (a symlink
     ansible_collections/drover/cluster -> ansible/);
  2. checks each module's argument spec against its documentation;
  3. deploys with the playbook drover.cluster.deploy (roles agent and
     coordinator, drover_install_method=tree from a `meson install
     --destdir` of the build, service management off, every path in the
     scratch folder): two agents a, b and a coordinator; checks the files,
     that the units are the repository's (KillMode=process), and that a
     second run changes nothing;
  4. starts the agents and the coordinator FROM the installed binaries and
     the rendered configurations (dev mode; agent a 320 MiB, b 500 MiB);
  5. defines and starts guests with Debian's grpcio: g1, g2, g3 (64 MiB)
     on a, big (300 MiB) on b;
  6. check.yml with --check: the evacuation of a is planned (3 moves to b),
     nothing moves, no job is made;
  7. main.yml: facts, evacuate a into maintenance, assert every guest is on
     b, evacuate again (unchanged), enable a (changed, then unchanged),
     evacuate the empty a (unchanged), migrate g1 to a (changed, then
     unchanged);
  8. timeout.yml: an evacuation of a started without waiting (bandwidth
     limited), adopted by a second run that times out after 2 s and
     cancels it: g1 resumes on a; a is enabled again;
  9. infeasible.yml: an unknown host, an unknown guest, big to a (no room)
     fail with the reason (ignored, asserted); then evacuate b must fail
     the play (b's guests do not fit on a) with every blocked guest and its
     reason in the message; nothing changes;
  10. drover.cluster.rolling_maintenance over a, b (serial 1): a is
     evacuated, patched and enabled again; b cannot be evacuated, so the
     run stops there and b is not patched;
  11. host.yml: drover_host adds a host c, again (unchanged), changes its
     memory in check mode (nothing changes) and with diff (before/after),
     removes it, again (unchanged); droverctl no longer lists c.
After each playbook the cluster is read back with droverctl --json.
Whatever happens, the coordinator and the agents are stopped, the QEMU
processes whose pidfiles are in the agents' run folders are killed, and the
scratch folder is removed.  Exit 77 (skipped) without ansible-playbook,
QEMU, the guest, or python3-grpcio.
"""
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
import testutil as tu  # noqa: E402
from testutil import Abort, check, kill_guests, require  # noqa: E402

SOURCE_ROOT = os.environ.get("DROVER_SOURCE_ROOT", os.path.join(HERE, "..", ".."))
BUILD_ROOT = os.environ.get("DROVER_BUILD_ROOT", os.path.join(SOURCE_ROOT, "build"))
# built programs (must exist); the roles install them from a meson install tree
AGENT = os.path.join(BUILD_ROOT, "agent", "drover-agent")
COORD = os.path.join(BUILD_ROOT, "coordinator", "drover-coordinator")
CTL = os.path.join(BUILD_ROOT, "coordinator", "droverctl")
COLLECTION = os.path.join(SOURCE_ROOT, "ansible")
PROTO_DIR = os.path.join(SOURCE_ROOT, "proto", "drover", "v1")
QEMU = "/usr/bin/qemu-system-x86_64"
GUEST_DIR = os.path.dirname(os.environ.get("DROVER_GUEST_ELF", "/nonexistent/guest.elf"))  # an image root
MODULES = ("drover_evacuate", "drover_migrate", "drover_host", "drover_facts")
GUESTS_A = ("g1", "g2", "g3")
PLAYBOOK_TIMEOUT = 600

timings = []

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: a child never outlives this test, even killed
    _libc.prctl(1, signal.SIGKILL, 0, 0, 0)


def qemu_procs_under(path):
    """Live (not zombie) QEMU processes whose command line names @path:
    {pid: its -name}."""
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().decode("utf-8", "replace").split("\0")
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2] in "ZX":
            continue
        if any("qemu-system" in a for a in argv[:1]) and any(path in a for a in argv):
            name = argv[argv.index("-name") + 1] if "-name" in argv[:-1] else "?"
            procs[int(d)] = name
    return procs


def wait_qemu_gone(path, timeout):
    """Wait for the QEMU processes under @path to exit; returns those left."""
    deadline = time.monotonic() + timeout
    left = qemu_procs_under(path)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = qemu_procs_under(path)
    return left


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.dirs = {h: os.path.join(tmp, h) for h in ("a", "b", "ctl")}
        self.ports = {"a": tu.free_port(), "b": tu.free_port()}
        self.coord_sock = os.path.join(self.dirs["ctl"], "coord.sock")
        self.coordinator = f"unix:{self.coord_sock}"
        self.prefix = build_prefix()
        self.droverctl = os.path.join(self.bin_dir("ctl"), "droverctl")  # installed by the role
        self.daemons = []
        self.marks = os.path.join(tmp, "marks")

    def bin_dir(self, h):
        """Where the role put the programs of host @h (its install root + the build's prefix)."""
        return self.dirs[h] + self.prefix + "/bin"

    def run_dir(self, h):
        return os.path.join(self.dirs[h], "run")

    def ctl(self, *args, timeout=60):
        """droverctl --json ARGS: (exit code, last JSON document or None)."""
        p = subprocess.run([self.droverctl, "--json", "-c", self.coordinator] + list(args), capture_output=True,
                           text=True, timeout=timeout)
        doc = None
        for line in p.stdout.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                pass
        return p.returncode, doc

    def where(self):
        rc, doc = self.ctl("vms")
        return {g["name"]: (g["host"], g["state"]) for g in doc or []} if rc == 0 else None

    def host_states(self):
        rc, doc = self.ctl("hosts")
        return {h["name"]: (h["state"], h["health"]) for h in doc or []} if rc == 0 else None

    def jobs(self):
        rc, doc = self.ctl("jobs")
        return doc if rc == 0 else None

    def stop(self):
        stopped = []
        for d in reversed(self.daemons):
            stopped.append(f"{d.name}={d.stop()}")
        killed = sum(kill_guests(self.run_dir(h)) for h in ("a", "b"))
        return stopped, killed


def build_prefix():
    """The build's meson prefix (/usr/local unless configured)."""
    p = subprocess.run(["meson", "introspect", BUILD_ROOT, "--buildoptions"], capture_output=True, text=True)
    try:
        return next(o["value"] for o in json.loads(p.stdout) if o["name"] == "prefix")
    except (ValueError, StopIteration):
        return "/usr/local"


def install_tree(tmp):
    """`meson install --destdir` of the build into a scratch folder: the
    tree the roles install with drover_install_method=tree.  Only the
    programs (install tag runtime): the roles write their own units, and the
    docs and man pages would only make every deploy copy twenty more files
    per host (the package test checks those)."""
    tree = os.path.join(tmp, "tree")
    p = subprocess.run(["meson", "install", "-C", BUILD_ROOT, "--destdir", tree, "--no-rebuild", "--quiet",
                        "--tags", "runtime"],
                       capture_output=True, text=True)
    require("meson install --destdir of the build", p.returncode == 0, p.stdout + p.stderr)
    return tree


def unit_bin_dir(source):
    """The folder of ExecStart's program in the repository's unit."""
    with open(source) as f:
        m = re.search(r"^ExecStart=(\S+)/[^/\s]+ ", f.read(), re.M)
    return m.group(1) + "/" if m else "/usr/bin/"


# ---- ansible ---------------------------------------------------------------

def ansible_env(tmp):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("ANSIBLE_"):
            del env[k]
    adir = os.path.join(tmp, "ansible")
    env.update(
        ANSIBLE_COLLECTIONS_PATH=os.path.join(tmp, "collections"),
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_HOME=os.path.join(adir, "home"),
        ANSIBLE_LOCAL_TEMP=os.path.join(adir, "local"),
        ANSIBLE_REMOTE_TEMP=os.path.join(adir, "remote"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_COLLECTIONS_ON_ANSIBLE_VERSION_MISMATCH="ignore",
        PYTHONDONTWRITEBYTECODE="1",  # no __pycache__ in the source tree's collection
    )
    env.pop("DROVER_COORDINATOR", None)
    return env


class Play:
    """One ansible-playbook run with the json callback."""

    def __init__(self, label, rc, out, err, elapsed):
        self.label, self.rc, self.out, self.err, self.elapsed = label, rc, out, err, elapsed
        try:
            self.doc = json.loads(out[out.index("{"):]) if "{" in out else None
        except ValueError:
            self.doc = None

    def results(self, task_name, host="localhost"):
        """Results of every task called @task_name for @host, in order."""
        found = []
        for play in (self.doc or {}).get("plays", []):
            for t in play.get("tasks", []):
                name = t.get("task", {}).get("name", "")
                if (name == task_name or name.endswith(" : " + task_name)) and host in t.get("hosts", {}):
                    found.append(t["hosts"][host])
        return found

    def result(self, task_name, host="localhost"):
        r = self.results(task_name, host)
        return r[-1] if r else {}

    def stats(self):
        return (self.doc or {}).get("stats", {})

    def failed_tasks(self):
        out = []
        for play in (self.doc or {}).get("plays", []):
            for t in play.get("tasks", []):
                for h, r in t.get("hosts", {}).items():
                    if r.get("failed") and not r.get("ignore_errors"):
                        out.append((t["task"]["name"], h, r.get("msg") or r.get("assertion")))
        return out

    def dump(self):
        """For a failed check: the failed tasks, ansible's stderr."""
        lines = [f"# {self.label}: rc={self.rc} in {self.elapsed:.1f} s"]
        for name, h, msg in self.failed_tasks():
            lines.append(f"#   FAILED {name} [{h}]: {msg}")
        if self.doc is None:
            lines += ["#   stdout: " + ln for ln in self.out.splitlines()[-40:]]
        lines += ["#   stderr: " + ln for ln in self.err.splitlines()[-20:]]
        return "\n".join(lines)


def ansible_playbook(tmp, label, playbook, inventory=None, extra=(), check_mode=False):
    argv = ["ansible-playbook", playbook]
    if inventory:
        argv += ["-i", inventory]
    else:
        argv += ["-i", "localhost,", "-c", "local"]
    for e in extra:
        argv += ["-e", e]
    if check_mode:
        argv.append("--check")
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=ansible_env(tmp), cwd=tmp,
                           timeout=PLAYBOOK_TIMEOUT, preexec_fn=_die_with_parent)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = None, e.stdout or "", (e.stderr or "") + f"\n(timed out after {PLAYBOOK_TIMEOUT} s)"
        out = out.decode() if isinstance(out, bytes) else out
        err = err.decode() if isinstance(err, bytes) else err
    el = time.monotonic() - t0
    timings.append((label, el))
    play = Play(label, rc, out, err, el)
    print(f"# ansible-playbook {label}: rc={rc} in {el:.1f} s", flush=True)
    return play


def check_play(play, name, cond, detail=""):
    if not check(name, cond, detail):
        print(play.dump(), flush=True)
    return cond


# ---- guests over gRPC --------------------------------------------------------

def start_guest(pb2, stub, name, memory_mib):
    d = {"name": name, "memory_mib": memory_mib, "vcpus": 1, "machine": "pc",
         "kernel": os.environ["DROVER_GUEST_ELF"], "append": "mib=32 rate=5", "serial_log": True}
    stub.Define(pb2.DefineRequest(definition_json=json.dumps(d), op_id=f"define-{name}"), timeout=30)
    stub.Start(pb2.StartRequest(guest=name, op_id=f"start-{name}"), timeout=60)
    # Start answers at once with its operation (agent.proto): follow it
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        op = stub.GetOperation(pb2.OperationRef(op_id=f"start-{name}"), timeout=30)
        if op.done:
            return op.guest_status.pid if op.state == pb2.OperationState.Value("OPERATION_STATE_SUCCEEDED") else -1
        time.sleep(0.1)
    return -1


# ---- the test ------------------------------------------------------------------

def inventory(c, tree):
    """The inventory: agents a and b, coordinator ctl, all local; every path
    in the scratch folder (the install tree goes into each host's folder);
    services not managed."""
    def agent(h, memory_mib):
        d = c.dirs[h]
        addr = f"127.0.0.1:{c.ports[h]}"
        return {
            "drover_install_root": d, "drover_config_dir": f"{d}/etc", "drover_systemd_dir": f"{d}/systemd",
            "drover_agent_address": addr,
            "drover_agent_listen": [f"unix:{d}/agent.sock", addr],
            "drover_agent_dev_mode": True,
            "drover_agent_settings": {"state_dir": f"{d}/state", "run_dir": f"{d}/run", "accel": "tcg",
                                      "log_level": "info", "image_roots": [GUEST_DIR]},
            "drover_host_settings": {"memory_mib": memory_mib},
        }
    d = c.dirs["ctl"]
    return {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                 "drover_manage_service": False, "drover_install_method": "tree", "drover_install_tree": tree,
                 "drover_install_prefix": c.prefix},
        "children": {
            "drover_agents": {"hosts": {"a": agent("a", 320), "b": agent("b", 500)}},
            "drover_coordinators": {"hosts": {"ctl": {
                "drover_install_root": d, "drover_config_dir": f"{d}/etc", "drover_systemd_dir": f"{d}/systemd",
                "drover_coordinator_listen": [c.coordinator],
                "drover_coordinator_db": f"{d}/coordinator.db",
                "drover_coordinator_dev_mode": True,
                "drover_coordinator_settings": {"heartbeat_ms": 500, "log_level": "info"},
            }}},
        }}}


def unit_matches(installed, source, substitutions):
    """The installed unit is the repository's, but for the paths the role
    was told (and the ansible_managed line)."""
    try:
        with open(installed) as f:
            text = f.read()
        with open(source) as f:
            want = f.read()
    except OSError as e:
        return False, str(e)
    lines = text.splitlines(True)
    if lines and lines[0].startswith("# Ansible managed"):
        lines = lines[1:]
    text = "".join(lines)
    for a, b in substitutions:
        text = text.replace(a, b)
    return text == want, f"\n--- installed (paths mapped back)\n{text}--- {source}\n{want}"


def test_spec(tmp):
    """Every module's argument spec (from its own error for an unknown
    option) equals its documented options."""
    play = ansible_playbook(tmp, "spec.yml", os.path.join(HERE, "spec.yml"))
    check_play(play, "spec.yml ran", play.rc == 0 and play.doc is not None)
    env = ansible_env(tmp)
    for m in MODULES:
        msg = play.result(m).get("msg", "")
        got = re.search(r"Supported parameters include: (.*)\.?$", msg)
        spec = set()
        if got:
            for item in re.sub(r"\s*\([^)]*\)", "", got.group(1)).rstrip(".").split(", "):
                spec.add(item.strip())
        p = subprocess.run(["ansible-doc", "-j", f"drover.cluster.{m}"], capture_output=True, text=True, env=env)
        try:
            doc = json.loads(p.stdout)[f"drover.cluster.{m}"]["doc"]
            documented = set(doc["options"])
        except (ValueError, KeyError) as e:
            documented = {f"<ansible-doc failed: {e} {p.stderr.strip()}>"}
        check(f"{m}: documented options == argument spec", spec == documented and spec,
              f"spec-only {sorted(spec - documented)} doc-only {sorted(documented - spec)} ({msg!r})")


def test_deploy(c, inv_path):
    play = ansible_playbook(c.tmp, "deploy (roles agent, coordinator)", "drover.cluster.deploy", inv_path)
    require("deploy: ansible-playbook exits 0", play.rc == 0 and play.doc is not None, play.dump())
    st = play.stats()
    check("deploy: a, b and ctl changed something, nothing failed",
          all(st.get(h, {}).get("changed", 0) > 0 and st.get(h, {}).get("failures", 1) == 0 for h in ("a", "b", "ctl")),
          json.dumps(st))
    for h in ("a", "b"):
        d = c.dirs[h]
        b = c.bin_dir(h)
        check(f"deploy: {h}: drover-agent installed from the tree, executable",
              os.access(f"{b}/drover-agent", os.X_OK) and
              os.path.getsize(f"{b}/drover-agent") == os.path.getsize(f"{c.tree}{c.prefix}/bin/drover-agent"))
        check(f"deploy: {h}: no single binary copied to the old place", not os.path.exists(f"{d}/bin/drover-agent"))
        try:
            with open(f"{d}/etc/agent.json") as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            cfg = {"error": str(e)}
        want = {"host": h, "listen": [f"unix:{d}/agent.sock", f"127.0.0.1:{c.ports[h]}"], "dev_mode": True,
                "state_dir": f"{d}/state", "run_dir": f"{d}/run", "accel": "tcg", "log_level": "info",
                "image_roots": [GUEST_DIR]}
        check(f"deploy: {h}: agent.json from the variables", cfg == want, f"{cfg} != {want}")
        src = os.path.join(SOURCE_ROOT, "agent", "systemd", "drover-agent.service.in")
        ok, diff = unit_matches(f"{d}/systemd/drover-agent.service", src,
                                [(f"{b}/", unit_bin_dir(src)), (f"{d}/etc/", "/etc/drover/"),
                                ("/usr/share/doc/drover", "@docdir@")])
        check(f"deploy: {h}: the unit is agent/systemd/drover-agent.service.in (KillMode=process)",
              ok and "\nKillMode=process\n" in open(f"{d}/systemd/drover-agent.service").read(), diff)
    d = c.dirs["ctl"]
    for b in ("drover-coordinator", "droverctl"):
        check(f"deploy: ctl: {b} installed", os.access(f"{c.bin_dir('ctl')}/{b}", os.X_OK))
    try:
        with open(f"{d}/etc/coordinator.json") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        cfg = {"error": str(e)}
    want_hosts = [{"name": "a", "address": f"127.0.0.1:{c.ports['a']}", "memory_mib": 320},
                  {"name": "b", "address": f"127.0.0.1:{c.ports['b']}", "memory_mib": 500}]
    check("deploy: coordinator.json: hosts from the inventory group, settings merged",
          cfg.get("hosts") == want_hosts and cfg.get("listen") == [c.coordinator] and cfg.get("dev_mode") is True
          and cfg.get("store") == f"sqlite:{d}/coordinator.db" and cfg.get("heartbeat_ms") == 500, json.dumps(cfg))
    src = os.path.join(SOURCE_ROOT, "coordinator", "systemd", "drover-coordinator.service.in")
    ok, diff = unit_matches(f"{d}/systemd/drover-coordinator.service", src,
                            [(f"{c.bin_dir('ctl')}/", unit_bin_dir(src)), (f"{d}/etc/", "/etc/drover/"),
                                ("/usr/share/doc/drover", "@docdir@")])
    check("deploy: ctl: the unit is coordinator/systemd/drover-coordinator.service.in", ok, diff)
    sa = shutil.which("systemd-analyze")
    if sa:
        units = [f"{c.dirs[h]}/systemd/drover-agent.service" for h in ("a", "b")] + \
                [f"{d}/systemd/drover-coordinator.service"]
        # --man=no: the role installs no man pages (packages do: tests/install)
        p = subprocess.run([sa, "verify", "--man=no"] + units, capture_output=True, text=True)
        complaints = [ln for ln in (p.stdout + p.stderr).splitlines() if "drover-" in ln]
        check("deploy: systemd-analyze verify finds nothing in the units", not complaints, "\n".join(complaints))

    again = ansible_playbook(c.tmp, "deploy again", "drover.cluster.deploy", inv_path)
    st = again.stats()
    check("deploy again: exit 0, nothing changed (roles idempotent)",
          again.rc == 0 and st and all(v.get("changed", 1) == 0 and v.get("failures", 1) == 0 for v in st.values()),
          json.dumps(st) + "\n" + again.dump())


def start_cluster(c):
    for h in ("a", "b"):
        d = c.dirs[h]
        ag = tu.Daemon(f"agent-{h}", [f"{c.bin_dir(h)}/drover-agent", "--config", f"{d}/etc/agent.json"],
                       f"{d}/agent.log", "drover-agent: ready", preexec_fn=_die_with_parent)
        c.daemons.append(ag)
        require(f"agent {h} starts from the role's binary and agent.json", ag.start(), ag.log_text())
    d = c.dirs["ctl"]
    co = tu.Daemon("coordinator", [f"{c.bin_dir('ctl')}/drover-coordinator", "--config", f"{d}/etc/coordinator.json"],
                   f"{d}/coordinator.log", "drover-coordinator: ready", preexec_fn=_die_with_parent)
    c.daemons.append(co)
    require("coordinator starts from the role's binary and coordinator.json", co.start(), co.log_text())


def start_guests(c, tmp):
    import grpc
    pb2, pb2_grpc = tu.grpc_stubs(PROTO_DIR, "agent", os.path.join(tmp, "stubs"))
    for h, guests in (("a", [(g, 64) for g in GUESTS_A]), ("b", [("big", 300)])):
        ch = grpc.insecure_channel(f"unix:{c.dirs[h]}/agent.sock")
        stub = pb2_grpc.AgentStub(ch)
        for name, mem in guests:
            try:
                pid = start_guest(pb2, stub, name, mem)
            except grpc.RpcError as e:
                require(f"guest {name} starts on {h}", False, f"{e.code()} {e.details()}")
            require(f"guest {name} ({mem} MiB) runs on {h}", pid > 0)
        ch.close()
    deadline = time.monotonic() + 20
    want = {g: ("a", "running") for g in GUESTS_A}
    want["big"] = ("b", "running")
    while time.monotonic() < deadline and c.where() != want:
        time.sleep(0.2)
    require("the coordinator sees g1-g3 on a and big on b", c.where() == want, str(c.where()))
    hs = c.host_states()
    require("both hosts enabled and healthy", hs == {"a": ("enabled", "healthy"), "b": ("enabled", "healthy")},
            str(hs))


def test_check_mode(c, extra):
    before_jobs = c.jobs()
    play = ansible_playbook(c.tmp, "check.yml --check", os.path.join(HERE, "check.yml"), extra=extra,
                            check_mode=True)
    check_play(play, "check mode: ansible-playbook exits 0", play.rc == 0 and play.doc is not None)
    r = play.result("preview evacuate a")
    moves = r.get("plan", {}).get("moves", [])
    check_play(play, "check mode: reports the plan: g1-g3 to b, changed (would change)",
               r.get("changed") is True and sorted(m["guest"] for m in moves) == list(GUESTS_A)
               and all(m["destination"] == "b" and m.get("estimated_s", 0) > 0 for m in moves), json.dumps(r)[:2000])
    print(f"# check mode: {r.get('msg')}")
    check("check mode: no guest moved", c.where() == {**{g: ("a", "running") for g in GUESTS_A},
                                                       "big": ("b", "running")}, str(c.where()))
    check("check mode: a still enabled", (c.host_states() or {}).get("a", ("?",))[0] == "enabled",
          str(c.host_states()))
    check("check mode: no job was made", c.jobs() == before_jobs, str(c.jobs()))


def test_main(c, extra):
    play = ansible_playbook(c.tmp, "main.yml", os.path.join(HERE, "main.yml"), extra=extra)
    check_play(play, "main: ansible-playbook exits 0, every assert holds", play.rc == 0 and play.doc is not None
               and not play.failed_tasks())
    st = play.stats().get("localhost", {})
    check("main: recap: no failures", st.get("failures", 1) == 0 and st.get("unreachable", 1) == 0, str(st))
    ev = play.result("evacuate a into maintenance")
    moved = ev.get("moved", [])
    check_play(play, "main: evacuate a: changed, g1-g3 moved to b, host in maintenance",
               ev.get("changed") is True and sorted(m["guest"] for m in moved) == list(GUESTS_A)
               and all(m["destination"] == "b" for m in moved) and ev.get("host_state") == "maintenance"
               and (ev.get("job") or {}).get("phase") == "succeeded", json.dumps(ev)[:2000])
    for m in moved:
        print(f"#   {m['guest']}: {m['source']} -> {m['destination']}  downtime {m['downtime_ms']} ms "
              f"({m['measured_downtime_ms']} ms measured)  {m['transferred_bytes']} bytes in {m['duration_s']} s")
    check("main: evacuate: the job JSON has per-guest downtimes and bytes",
          moved and all(isinstance(m.get("measured_downtime_ms"), int) and m.get("transferred_bytes", 0) > 0
                        for m in moved), json.dumps(moved))
    check("main: assert 'every guest of a runs on b' passed",
          play.result("every guest of a runs on b, a is in maintenance").get("msg") == "All assertions passed",
          json.dumps(play.result("every guest of a runs on b, a is in maintenance")))
    expect = [("evacuate a into maintenance again (empty, in maintenance)", False), ("enable a", True),
              ("enable a again", False), ("evacuate a (empty, enabled)", False), ("migrate g1 to a", True),
              ("migrate g1 to a again", False)]
    for task, changed in expect:
        r = play.result(task)
        check(f"main: '{task}': {'changed' if changed else 'ok (unchanged)'}",
              r.get("changed") is changed and not r.get("failed"), json.dumps(r)[:1500])
    w = c.where()
    check("main: droverctl: g1 on a, g2, g3, big on b, all running",
          w == {"g1": ("a", "running"), "g2": ("b", "running"), "g3": ("b", "running"), "big": ("b", "running")},
          str(w))
    check("main: droverctl: a and b enabled",
          c.host_states() == {"a": ("enabled", "healthy"), "b": ("enabled", "healthy")}, str(c.host_states()))
    jobs = c.jobs() or []
    check("main: droverctl: two jobs (the evacuation, the migration), both succeeded",
          sorted((j["kind"], j["phase"]) for j in jobs) == [("evacuate", "succeeded"), ("migrate", "succeeded")],
          str([(j["id"], j["kind"], j["phase"]) for j in jobs]))


def test_timeout(c, extra):
    jobs_before = {j["id"] for j in c.jobs() or []}
    play = ansible_playbook(c.tmp, "timeout.yml", os.path.join(HERE, "timeout.yml"), extra=extra)
    st = play.stats().get("localhost", {})
    check_play(play, "timeout: ansible-playbook exits 0, every assert holds (the timed-out task ignored)",
               play.rc == 0 and play.doc is not None and st.get("failures", 1) == 0 and st.get("ignored") == 1)
    started = play.result("start evacuating a slowly, do not wait")
    adopted = play.result("evacuate a again, 2 s at most, cancel on timeout")
    print(f"# timeout: {adopted.get('msg')}")
    check("timeout: wait=false returned at once with the running job",
          started.get("changed") is True and (started.get("job") or {}).get("phase") == "running",
          json.dumps(started)[:1000])
    check("timeout: the second run adopted the job, timed out, cancelled it",
          adopted.get("failed") is True and adopted.get("adopted") is True and adopted.get("timed_out") is True
          and (adopted.get("job") or {}).get("id") == (started.get("job") or {}).get("id"), json.dumps(adopted)[:1500])
    new = [j for j in c.jobs() or [] if j["id"] not in jobs_before]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (new and new[0]["phase"] in ("cancelled", "failed", "succeeded")):
        time.sleep(0.2)
        new = [j for j in c.jobs() or [] if j["id"] not in jobs_before]
    # docs/coordinator.md: an aborted migration's sub-task is "cancelled";
    # the coordinator records it FAILED ("migration aborted on request"),
    # which makes the job "failed" (reported; either is accepted here)
    subs = new[0].get("subtasks", []) if new else []
    check("timeout: droverctl: one new job, ended by the cancel (g1's migration aborted)",
          len(new) == 1 and new[0]["kind"] == "evacuate" and new[0]["phase"] in ("cancelled", "failed")
          and [x["guest"] for x in subs] == ["g1"]
          and (subs[0]["phase"] == "cancelled" or "abort" in subs[0].get("error", "")), str(new)[:1500])
    if new and new[0]["phase"] == "failed":
        print(f"# note: the cancelled job ended '{new[0]['phase']}', g1's sub-task {subs[0]['phase']}: "
              f"{subs[0].get('error')!r} (docs/coordinator.md says 'cancelled')")
    w = c.where()
    check("timeout: droverctl: g1 still runs on a (its source resumed)", (w or {}).get("g1") == ("a", "running"),
          str(w))
    check("timeout: droverctl: a enabled again", (c.host_states() or {}).get("a") == ("enabled", "healthy"),
          str(c.host_states()))


def test_infeasible(c, extra):
    before = (c.where(), c.host_states(), len(c.jobs() or []))
    play = ansible_playbook(c.tmp, "infeasible.yml", os.path.join(HERE, "infeasible.yml"), extra=extra)
    check_play(play, "infeasible: ansible-playbook exits 2 (a task failed)", play.rc == 2 and play.doc is not None)
    r = play.result("evacuate b")
    msg = r.get("msg", "")
    blocked = r.get("blocked", [])
    print(f"# infeasible: {msg}")
    check("infeasible: the task failed, nothing changed", r.get("failed") is True and r.get("changed") is False,
          json.dumps(r)[:1500])
    check("infeasible: blocked guests listed with reasons",
          blocked and all(b.get("reason") for b in blocked) and {b["guest"] for b in blocked} <= {"g2", "g3", "big"},
          json.dumps(blocked))
    check("infeasible: the message names every blocked guest and its reason",
          blocked and "cannot be placed" in msg and all(b["guest"] in msg and b["reason"] in msg for b in blocked),
          msg)
    st = play.stats().get("localhost", {})
    check("infeasible: recap: 1 failure (b's evacuation), 3 ignored (unknown host, unknown guest, no room on a)",
          st.get("failures") == 1 and st.get("ignored") == 3, str(st))
    nr = play.result("big to a, which lacks the memory")
    print(f"# infeasible: {nr.get('msg')}")
    check("infeasible: the assert on the three refused requests passed",
          play.result("each failed with the reason, nothing changed").get("msg") == "All assertions passed",
          json.dumps(play.result("each failed with the reason, nothing changed"))[:1500])
    after = (c.where(), c.host_states(), len(c.jobs() or []))
    check("infeasible: droverctl: no guest moved, host states unchanged, no job made", after == before,
          f"{after} != {before}")


def test_rolling(c):
    os.makedirs(c.marks, exist_ok=True)
    extra = [json.dumps({"drover_ctl_coordinator": c.coordinator, "drover_ctl_path": c.droverctl,
                         "drover_rolling_patch_command": f"touch {c.marks}/patched-{{{{ inventory_hostname }}}}",
                         "drover_rolling_healthy_delay": 1, "drover_rolling_evacuate_timeout": 300})]
    inv = os.path.join(c.tmp, "inventory.json")
    play = ansible_playbook(c.tmp, "drover.cluster.rolling_maintenance (a, b)", "drover.cluster.rolling_maintenance",
                            inv, extra=extra)
    check_play(play, "rolling: exits 2: a done, b cannot be evacuated", play.rc == 2 and play.doc is not None)
    ev = play.result("Evacuate the host into maintenance", "a")
    check("rolling: a evacuated (g1 to b)", ev.get("changed") is True and
          [(m["guest"], m["destination"]) for m in ev.get("moved", [])] == [("g1", "b")], json.dumps(ev)[:1500])
    en = play.result("Enable the host again", "a")
    check("rolling: a enabled again", en.get("changed") is True, json.dumps(en)[:1000])
    evb = play.result("Evacuate the host into maintenance", "b")
    check("rolling: b's evacuation failed with the blocked guests",
          evb.get("failed") is True and "cannot be placed" in evb.get("msg", ""), json.dumps(evb)[:1500])
    check("rolling: a patched, b not (the run stopped at b)",
          os.path.exists(f"{c.marks}/patched-a") and not os.path.exists(f"{c.marks}/patched-b"),
          str(os.listdir(c.marks)))
    check("rolling: one host at a time (a's tasks all ran before b's first)",
          [p["play"]["name"] for p in play.doc.get("plays", [])].count("Drover rolling maintenance") == 2
          if play.doc else False)
    w = c.where()
    check("rolling: droverctl: every guest on b, running",
          w == {g: ("b", "running") for g in ("g1", "g2", "g3", "big")}, str(w))
    check("rolling: droverctl: a and b enabled",
          c.host_states() == {"a": ("enabled", "healthy"), "b": ("enabled", "healthy")}, str(c.host_states()))


def test_host(c, extra):
    """drover_host present/absent, idempotent, check mode, diff (host.yml
    asserts the module's results; here the coordinator is read back)."""
    addr = f"127.0.0.1:{tu.free_port()}"
    play = ansible_playbook(c.tmp, "host.yml", os.path.join(HERE, "host.yml"),
                            extra=extra + [json.dumps({"drover_test_c_address": addr})])
    check_play(play, "host.yml: add, check mode, diff, remove, each again: as asserted",
               play.rc == 0 and play.doc is not None and not play.failed_tasks())
    r = play.result("change c's memory with diff")
    print(f"# drover_host diff: {json.dumps(r.get('diff'))[:300]}")
    st = play.stats().get("localhost", {})
    check("host.yml: changed: add, the check-mode change (would), the change, remove (4); the runs again not",
          st.get("changed") == 4 and st.get("failures") == 0, json.dumps(st))
    rc, doc = c.ctl("hosts")
    check("host.yml: droverctl no longer lists c; a and b stay",
          rc == 0 and sorted(h["name"] for h in doc or []) == ["a", "b"], str(doc))


def run(tmp):
    col = os.path.join(tmp, "collections", "ansible_collections", "drover")
    os.makedirs(col)
    os.symlink(COLLECTION, os.path.join(col, "cluster"))
    c = Cluster(tmp)
    for d in c.dirs.values():
        os.makedirs(d)
    c.tree = install_tree(tmp)
    inv_path = os.path.join(tmp, "inventory.json")
    with open(inv_path, "w") as f:
        json.dump(inventory(c, c.tree), f, indent=1)
    extra = [json.dumps({"drover_test_coordinator": c.coordinator, "drover_test_droverctl": c.droverctl})]
    try:
        test_spec(tmp)
        test_deploy(c, inv_path)
        t0 = time.monotonic()
        start_cluster(c)
        start_guests(c, tmp)
        timings.append(("cluster + 4 guests up", time.monotonic() - t0))
        test_check_mode(c, extra)
        test_main(c, extra)
        test_timeout(c, extra)
        test_infeasible(c, extra)
        test_rolling(c)
        test_host(c, extra)
    finally:
        before = qemu_procs_under(tmp)
        pidfiles = {}
        for h in ("a", "b"):
            try:
                for n in os.listdir(c.run_dir(h)):
                    if n.endswith(".pid"):
                        with open(os.path.join(c.run_dir(h), n)) as f:
                            pidfiles[f"{h}/{n}"] = f.read().strip()
            except OSError:
                pass
        print(f"# before cleanup: QEMU {before}; pidfiles {pidfiles}")
        stopped, killed = c.stop()
        if tu.failures:
            for d in c.daemons:
                print(f"# {d.name} log (last 30 lines):")
                print("".join("#   " + ln for ln in d.log_text().splitlines(True)[-30:]))
        left = wait_qemu_gone(tmp, 5)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        check("cleanup: no QEMU left running", not left, f"{left} (pid: -name)")
        print(f"# cleanup: stopped {', '.join(stopped)}; {killed} QEMU process(es) killed")


def main():
    missing = []
    if not shutil.which("ansible-playbook"):
        missing.append("ansible-playbook (Debian package ansible; tests/scripts/setup.sh installs it)")
    if not os.access(QEMU, os.X_OK):
        missing.append(f"{QEMU} (tests/scripts/setup.sh installs it)")
    elf = os.environ.get("DROVER_GUEST_ELF")
    if not elf or not os.access(elf, os.R_OK):
        missing.append("the test guest (DROVER_GUEST_ELF unset or missing)")
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError as e:
        missing.append(f"python3-grpcio / python3-grpc-tools ({e})")
    if missing:
        print("SKIP: missing " + "; ".join(missing))
        return 77
    for b in (AGENT, COORD, CTL):
        if not os.access(b, os.X_OK):
            print(f"{b} is not built (set DROVER_BUILD_ROOT)")
            return 1

    # agent run_dir must stay within 39 bytes: a short scratch folder
    base = os.environ.get("TMPDIR", "/tmp")
    if len(base) > 16:
        base = "/tmp"
    tmp = tempfile.mkdtemp(prefix="dva-", dir=base)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # meson's timeout: run the cleanup
    t0 = time.monotonic()
    try:
        run(tmp)
    except Abort as e:
        print(f"# aborted after a failed check: {e}")
    except Exception:
        import traceback
        traceback.print_exc()
        check("no unexpected exception", False)
    finally:
        if os.environ.get("DROVER_KEEP_TMP"):
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("# timings: " + ", ".join(f"{label} {el:.1f} s" for label, el in timings) +
          f"; total {time.monotonic() - t0:.1f} s")
    return tu.finish()


if __name__ == "__main__":
    sys.exit(main())
