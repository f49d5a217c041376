#!/usr/bin/env python3
"""integration-units: the systemd units as `meson install` puts them.

Installs the build into a scratch tree (meson install --destdir), then for
each unit (drover-agent.service, drover-coordinator.service):

- ExecStart runs the installed binary of the configured bindir with
  --config in the unit's ConfigurationDirectory, and ExecStartPre runs the
  same binary with --check-config on that same file first (a bad
  configuration fails the start, the reason in the journal: the installed
  binary run so refuses a file with an unknown member, naming it on
  stderr);
- `systemd-analyze verify` finds nothing (on a copy whose ExecStart and
  ExecStartPre point
  into the scratch tree, since verify checks the binary is executable; man
  pages are checked here instead: every Documentation=man: page is
  installed);
- `systemd-analyze security --offline=true` prints the exposure score, which
  must not exceed the unit's threshold (THRESHOLDS, docs/operations.md
  "Install");
- the installed example configuration keeps every path the daemon writes
  inside what the unit makes writable (StateDirectory, RuntimeDirectory,
  ReadWritePaths under ProtectSystem=strict), and the unit is Type=notify
  with a watchdog; the agent's keeps KillMode=process (guests outlive it);
- the daemon works under the unit's SystemCallFilter (loaded with
  libseccomp, errno EPERM as SystemCallErrorNumber, no_new_privs as
  NoNewPrivileges): the coordinator serves droverctl (hosts, jobs, a dry
  run, a host state change) and stops at SIGTERM; the agent, with its QEMU
  under the same filter as in the unit, starts a guest, lists it running,
  destroys it (needs QEMU and DROVER_GUEST_ELF, else that part is skipped).

Skipped (exit 77) only when systemd-analyze is absent.
"""
import ctypes
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# The highest exposure score (0 safe .. 10 exposed) each unit may have.  The
# coordinator is a network daemon with no capability, no device and the
# ordinary service system calls (1.5 when written); the agent must keep what
# QEMU needs (set*id, chroot, taps, /dev/kvm; 3.3 when written).  Headroom
# of half a point for a justified change; more needs a reason here.
THRESHOLDS = {"drover-coordinator.service": 2.0, "drover-agent.service": 4.0}

failures = []


def check(what, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + what + (f"\n     {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(what)


def parse_unit(path):
    """{key: [values]} of the unit's [Service] and [Unit] sections."""
    keys = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        k, _, v = line.partition("=")
        keys.setdefault(k.strip(), []).append(v.strip())
    return keys


def words(keys, k):
    return [w for v in keys.get(k, []) for w in v.split()]


def under(path, dirs):
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def syscall_groups(sa):
    """{"@group": [members, "@nested", ...]} from systemd-analyze syscall-filter."""
    groups, cur = {}, None
    for line in subprocess.run([sa, "syscall-filter"], capture_output=True, text=True).stdout.splitlines():
        w = line.strip()
        if line.startswith("@"):
            cur = groups.setdefault(w, [])
        elif cur is not None and w and not w.startswith("#"):
            cur.append(w)
    return groups


def expand(groups, names):
    out = set()
    for n in names:
        out |= expand(groups, groups.get(n, [])) if n.startswith("@") else {n}
    return out


def unit_filter(sa, keys):
    """The unit's SystemCallFilter as systemd reads it: (allow_list, names).
    The first line decides: an allow list, or a deny list with "~"."""
    groups, lines = syscall_groups(sa), keys.get("SystemCallFilter", [])
    allow_list = bool(lines) and not lines[0].startswith("~")
    names = set()
    for line in lines:
        deny = line.startswith("~")
        got = expand(groups, line.lstrip("~").split())
        names = (names - got if deny else names | got) if allow_list else (names | got if deny else names - got)
    return allow_list, names


def seccomp_preexec(allow_list, names):
    """A preexec_fn loading the filter in the child (libseccomp sets
    no_new_privs, as NoNewPrivileges=yes does)."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    allow, eperm = 0x7fff0000, 0x00050000 | 1  # SCMP_ACT_ALLOW, SCMP_ACT_ERRNO(EPERM)
    ctx = lib.seccomp_init(eperm if allow_list else allow)
    nrs = [n for n in (lib.seccomp_syscall_resolve_name(x.encode()) for x in sorted(names)) if n >= 0]

    def load():
        for nr in nrs:
            lib.seccomp_rule_add(ctx, allow if allow_list else eperm, nr, 0)
        if lib.seccomp_load(ctx) != 0:
            os._exit(126)
    return load


def wait_socket(path, proc, seconds=30):
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None and not os.path.exists(path):
        time.sleep(0.1)
    return os.path.exists(path)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def run_filtered(sa, keys, name, tmp):
    """Run the daemon of the build under the unit's system-call filter."""
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        print(f"     {name}: no libseccomp: the daemon is not run under its filter")
        return
    build = os.environ["DROVER_BUILD_ROOT"]
    allow_list, names = unit_filter(sa, keys)
    check(f"{name}: SystemCallFilter read ({'allow' if allow_list else 'deny'} list of {len(names)})", names)
    pre = seccomp_preexec(allow_list, names)
    d = tempfile.mkdtemp(prefix="f", dir=tmp)
    log = open(os.path.join(d, "daemon.log"), "w")
    if name == "drover-coordinator.service":
        ctl = [os.path.join(build, "coordinator", "droverctl"), "-c", f"unix:{d}/c.sock"]
        with open(f"{d}/c.json", "w") as f:
            json.dump({"listen": [f"unix:{d}/c.sock"], "dev_mode": True, "db": f"{d}/c.db",
                       "hosts": [{"name": "h1", "address": "127.0.0.1:1"}]}, f)
        proc = subprocess.Popen([os.path.join(build, "coordinator", "drover-coordinator"), "--config",
                                 f"{d}/c.json"], stdout=log, stderr=subprocess.STDOUT, preexec_fn=pre)
        ok = wait_socket(f"{d}/c.sock", proc)
        outs = [subprocess.run(ctl + c, capture_output=True, text=True, timeout=60)
                for c in (["hosts"], ["jobs"], ["evacuate", "h1", "--dry-run"], ["host", "drain", "h1"])]
        check(f"{name}: under its filter the coordinator serves droverctl",
              ok and all(o.returncode == 0 for o in outs) and "h1" in outs[0].stdout,
              "; ".join(o.stdout + o.stderr for o in outs) + open(log.name).read()[-2000:])
        rc = stop(proc)
        check(f"{name}: under its filter it stops cleanly at SIGTERM", rc == 0, f"exit {rc}")
        return
    elf, qemu = os.environ.get("DROVER_GUEST_ELF", ""), shutil.which("qemu-system-x86_64")
    if not (elf and os.path.exists(elf) and qemu):
        print(f"     {name}: no QEMU or DROVER_GUEST_ELF: the agent is not run under its filter")
        return
    # run_dir must be short (the guests' socket paths): a folder of its own in /tmp
    d = tempfile.mkdtemp(prefix="dvf", dir="/tmp")
    log = open(os.path.join(d, "daemon.log"), "w")
    ctl = [os.path.join(build, "agent", "drover-agentctl"), "-a", f"unix:{d}/a.sock"]
    proc = subprocess.Popen([os.path.join(build, "agent", "drover-agent"), "--dev", "--listen", f"unix:{d}/a.sock",
                             "--state-dir", f"{d}/state", "--run-dir", f"{d}/run", "--accel", "tcg",
                             "--qemu", qemu, "--set", f"image_roots={os.path.dirname(elf)}"],
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=pre)
    try:
        ok = wait_socket(f"{d}/a.sock", proc)
        guest = json.dumps({"name": "f1", "memory_mib": 64, "vcpus": 1, "machine": "pc", "kernel": elf,
                            "append": "mib=8 rate=1"})
        outs = [subprocess.run(ctl + ["define", "-"], input=guest, capture_output=True, text=True, timeout=60),
                subprocess.run(ctl + ["start", "f1"], capture_output=True, text=True, timeout=120),
                subprocess.run(ctl + ["list"], capture_output=True, text=True, timeout=60),
                subprocess.run(ctl + ["destroy", "f1"], capture_output=True, text=True, timeout=60)]
        check(f"{name}: under its filter the agent starts a guest (QEMU filtered too), lists it running, "
              "destroys it", ok and all(o.returncode == 0 for o in outs) and "running" in outs[2].stdout,
              "; ".join(o.stdout + o.stderr for o in outs) + open(log.name).read()[-2000:])
    finally:
        rc = stop(proc)
        sys.path.insert(0, os.path.join(os.environ["DROVER_SOURCE_ROOT"], "tests", "lib"))
        import testutil
        testutil.kill_guests(f"{d}/run")  # a guest a failed check left (guests outlive the agent)
        if not os.environ.get("DROVER_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)
    check(f"{name}: under its filter it stops cleanly at SIGTERM", rc == 0, f"exit {rc}")


def main():
    sa = shutil.which("systemd-analyze")
    if not sa:
        print("SKIP: systemd-analyze is not installed (package systemd)")
        return 77
    build = os.environ["DROVER_BUILD_ROOT"]
    tmp = tempfile.mkdtemp(prefix="drover-units-")
    try:
        p = subprocess.run(["meson", "install", "-C", build, "--destdir", tmp, "--no-rebuild", "--quiet"],
                           capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stdout + p.stderr)
            check("meson install --destdir", False)
            return 1
        units = {os.path.basename(u): u for u in glob.glob(f"{tmp}/**/systemd/system/drover-*.service",
                                                             recursive=True)}
        check("both units installed", sorted(units) == sorted(THRESHOLDS), str(sorted(units)))
        verify_dir = os.path.join(tmp, "verify")
        os.mkdir(verify_dir)
        for name in sorted(units):
            check_unit(sa, tmp, verify_dir, name, units[name])
    finally:
        if not os.environ.get("DROVER_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


def check_unit(sa, tmp, verify_dir, name, path):
    keys = parse_unit(path)
    daemon = name[:-len(".service")]
    exec_start = keys.get("ExecStart", [""])[0].split()
    binary = exec_start[0] if exec_start else ""
    check(f"{name}: ExecStart runs the installed {daemon}",
          os.path.basename(binary) == daemon and os.access(tmp + binary, os.X_OK), " ".join(exec_start))
    config = exec_start[exec_start.index("--config") + 1] if "--config" in exec_start else ""
    conf_dirs = ["/etc/" + d for d in words(keys, "ConfigurationDirectory")]
    check(f"{name}: --config {config} lies in ConfigurationDirectory", os.path.dirname(config) in conf_dirs,
          str(conf_dirs))
    pre = keys.get("ExecStartPre", [])
    check(f"{name}: ExecStartPre checks that configuration first (--check-config {config})",
          [p.split() for p in pre] == [[binary, "--check-config", config]], str(pre))
    bad = os.path.join(verify_dir, f"bad-{daemon}.json")
    with open(bad, "w") as f:
        f.write('{"no_such_member": 1}\n')
    p = subprocess.run([tmp + binary, "--check-config", bad], capture_output=True, text=True, timeout=60)
    check(f"{name}: that ExecStartPre refuses a bad file, naming the member on stderr (the journal)",
          p.returncode != 0 and "no_such_member" in p.stderr, f"exit {p.returncode}: {p.stdout}{p.stderr}")
    check(f"{name}: Type=notify with WatchdogSec",
          keys.get("Type") == ["notify"] and bool(keys.get("WatchdogSec")), str(keys.get("Type")))
    check(f"{name}: ProtectSystem=strict", keys.get("ProtectSystem") == ["strict"])

    # verify, on a copy that runs the scratch tree's binary
    text = open(path).read()
    for k in ("ExecStart", "ExecStartPre"):
        text = text.replace(f"{k}={binary} ", f"{k}={tmp}{binary} ")
    copy = os.path.join(verify_dir, name)
    with open(copy, "w") as f:
        f.write(text)
    p = subprocess.run([sa, "verify", "--man=no", copy], capture_output=True, text=True)
    out = (p.stdout + p.stderr).strip()
    check(f"{name}: systemd-analyze verify finds nothing", p.returncode == 0 and not out, out)

    for doc in words(keys, "Documentation"):
        m = re.fullmatch(r"man:([^()]+)\((\d)\)", doc)
        if m:
            page = glob.glob(f"{tmp}/**/man/man{m.group(2)}/{m.group(1)}.{m.group(2)}*", recursive=True)
            check(f"{name}: Documentation {doc} is installed", bool(page))

    p = subprocess.run([sa, "security", "--offline=true", "--no-pager", copy], capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", p.stdout)
    score = float(m.group(1)) if m else 99.0
    print(f"     {name}: exposure {score} (threshold {THRESHOLDS.get(name)})")
    check(f"{name}: exposure {score} <= {THRESHOLDS.get(name)}", m is not None and score <= THRESHOLDS.get(name, 0),
          p.stdout[-3000:] + p.stderr)

    run_filtered(sa, keys, name, tmp)

    # the example configuration against what the unit makes writable
    example = glob.glob(f"{tmp}/**/drover/{os.path.basename(config)}.example", recursive=True)
    check(f"{name}: {os.path.basename(config)}.example is installed", len(example) == 1)
    if len(example) != 1:
        return
    cfg = json.load(open(example[0]))
    state = ["/var/lib/" + d for d in words(keys, "StateDirectory")]
    runtime = ["/run/" + d for d in words(keys, "RuntimeDirectory")]
    writable = state + runtime + [d.lstrip("-") for d in words(keys, "ReadWritePaths")]
    sockets = [a[len("unix:"):] for a in cfg.get("listen", []) if a.startswith("unix:")]
    check(f"{name}: the example's unix sockets are writable", bool(sockets) and all(
        under(os.path.dirname(s), writable) for s in sockets), f"{sockets} vs {writable}")
    if daemon == "drover-agent":
        check(f"{name}: state_dir is the StateDirectory", cfg.get("state_dir") in state, f"{state}")
        check(f"{name}: run_dir is the RuntimeDirectory", cfg.get("run_dir") in runtime, f"{runtime}")
        check(f"{name}: every image root is writable (QEMU writes the disks)",
              all(under(r, writable) for r in cfg.get("image_roots", [])), f"{writable}")
        check(f"{name}: KillMode=process (a stop never kills the guests)", keys.get("KillMode") == ["process"])
    else:
        store = cfg.get("store", "sqlite:" + cfg.get("db", ""))
        db = store[len("sqlite:"):] if store.startswith("sqlite:") else ""
        check(f"{name}: the SQLite store's folder is the StateDirectory", os.path.dirname(db) in state,
              f"{state}")


if __name__ == "__main__":
    sys.exit(main())
