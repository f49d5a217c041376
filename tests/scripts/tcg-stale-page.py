#!/usr/bin/env python3
"""tcg-stale-page.py: migrate the dirtyguest back and forth between two plain
QEMU processes on loopback, without Drover, and count the migrations after
which the destination finds a page that is not what the guest wrote.

What it is for: docs/migration.md, "A stale page after a TCG migration".
The test guest (tests/guest, `verify=1`) checks, before rewriting each page
of its working set, that the page still holds what its previous sweep wrote;
a page (or the guest's own counters page) that arrived stale on the
destination shows up as `BAD page=...` on the serial line, or as a guest
that hangs or faults.  This script takes Drover out of the picture: it
starts QEMU itself, with the argv the agent builds (agent/agent-def.c,
guest_build_argv(): -accel tcg -machine pc -cpu qemu64 -m ... -smp ...
-nodefaults -no-user-config -display none, the guest's -kernel/-append,
a destination with -S -incoming defer) and drives both over QMP
sockets: capabilities, parameters, migrate-incoming, migrate, migrate-continue
at pre-switchover, migrate-start-postcopy, then `cont` on the destination
once the stream is done and `quit` on the source.  Each round the
destination becomes the next source.

How it works, per round: start a destination (-S -incoming defer), set the
capabilities on both sides, migrate-incoming on a free loopback port,
migrate on the source, poll query-migrate on the source (answering
pre-switchover with migrate-continue; downtime-limit 1 ms until
--min-syncs pre-copy passes, then --downtime, doubled every second; with
--postcopy, migrate-start-postcopy after --postcopy-syncs passes), wait
for the destination to leave "inmigrate", `cont`,
quit the source, then read the destination's serial log for up to --settle
seconds: OK when S lines advance with bad=0; STALE on a BAD line, FAULT on
EXC, HANG when no S line advances.  A failed round restarts the guest from
scratch on a fresh QEMU so the next round starts clean.

Variants (see --help): --accel-thread single|multi, --smp, --multifd N,
--pause-before-switchover, --postcopy, --drover-caps (the capabilities the
agent sets with its default parameters: events, and multifd unless post-copy
may run, see agent/agent-migrate-settings.c mig_source_caps()),
--auto-converge, --stop-first (not live: the source is stopped before
migrate), --mem (QEMU's -m, e.g. 65544k: the workaround the docs
describe), and --extra-accel for
-accel options to try as workarounds (e.g. tb-size=...).

Not part of any suite.  Bounded by --rounds and --max-seconds; each QEMU
is killed on exit.  It needs qemu-system-x86_64 and a built dirtyguest.elf:

  ninja -C build tests/guest/dirtyguest.elf
  tests/scripts/tcg-stale-page.py --elf build/tests/guest/dirtyguest.elf \\
      --rounds 20 --stop-after 5    # QEMU 7.2: most rounds fail
  tests/scripts/tcg-stale-page.py --elf ... --rounds 20 --postcopy
  tests/scripts/tcg-stale-page.py --elf ... --rounds 40 --mem 65544k   # the workaround

A round takes 2 to 5 s (64 MiB).  Post-copy with multifd makes QEMU 7.2's
destination abort (yank_unregister_instance assertion), so the script does
not combine them unless asked to.

It prints one line per round and a summary: rounds, OK, STALE, HANG, FAULT,
migration failures.  Exit status 0 when every round was OK, 1 when a round
found a stale page, hang or fault, 2 on a usage or setup error.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


class QmpError(Exception):
    pass


class Qmp:
    """A QMP client over a unix socket: one command at a time."""

    def __init__(self, path, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise QmpError("no QMP socket at %s" % path)
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b""
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise QmpError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                continue  # events are not needed: query-migrate is polled
            if "error" in r:
                raise QmpError("%s: %s" % (name, r["error"].get("desc")))
            return r.get("return")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Guest:
    """One QEMU process: its argv, serial log and QMP socket."""

    seq = 0

    def __init__(self, opts, workdir, incoming):
        Guest.seq += 1
        self.name = "q%d" % Guest.seq
        self.qmp_path = os.path.join(workdir, self.name + ".qmp")
        self.serial = os.path.join(workdir, self.name + ".serial")
        accel = "tcg,thread=%s" % opts.accel_thread
        if opts.extra_accel:
            accel += "," + opts.extra_accel
        argv = [opts.qemu, "-name", "guest=stale", "-accel", accel,
                "-machine", opts.machine, "-cpu", opts.cpu,
                "-m", opts.mem, "-smp", str(opts.smp),
                "-nodefaults", "-no-user-config", "-display", "none",
                "-qmp", "unix:%s,server=on,wait=off" % self.qmp_path,
                "-serial", "file:%s" % self.serial,
                "-kernel", opts.elf, "-append", opts.append]
        if opts.sandbox:
            argv += ["-sandbox", "on,obsolete=allow,elevateprivileges=deny,"
                     "spawn=deny,resourcecontrol=deny"]
        if incoming:
            argv += ["-S", "-incoming", "defer"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(workdir, self.name + ".err"), "w"))
        self.qmp = Qmp(self.qmp_path)

    def serial_text(self):
        try:
            with open(self.serial, "r", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def kill(self):
        if self.proc.poll() is None:
            try:
                self.qmp.cmd("quit")
            except (QmpError, OSError):
                pass
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.qmp.close()


S_RE = re.compile(r"^S (\d+) pages=(\d+) mibps=(\d+) late=(\d+) pass=(\d+)(?: bad=(\d+))?$", re.M)


def judge(text):
    """OK / STALE / FAULT / HANG (or None: not enough yet) for a serial log
    that should show a running guest."""
    if "BAD page=" in text or any(m.group(6) not in (None, "0") for m in S_RE.finditer(text)):
        return "STALE"
    if "EXC vector=" in text or "FAIL " in text:
        return "FAULT"
    lines = [m for m in S_RE.finditer(text)]
    # two S lines whose page counts are non-zero: the guest runs and dirties
    if len(lines) >= 2 and int(lines[-1].group(2)) > 0 and int(lines[-2].group(2)) > 0:
        return "OK"
    return None


def caps_for(opts, side):
    caps = {}
    if opts.drover_caps:
        # agent/agent-migrate-settings.c mig_source_caps() with the default
        # parameters (core/migparams.c): events, and multifd with two
        # channels here (2 CPUs) unless post-copy may run
        caps["events"] = True
    if opts.auto_converge and side == "src":
        caps["auto-converge"] = True
    if opts.postcopy:
        caps["postcopy-ram"] = True
    if opts.multifd > 1:
        caps["multifd"] = True
    if opts.pause_before_switchover and side == "src":
        caps["pause-before-switchover"] = True
    if opts.return_path:
        caps["return-path"] = True
    return [{"capability": k, "state": v} for k, v in caps.items()]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def migrate(opts, src, dst):
    """One migration src -> dst.  Returns None when the stream completed
    and the destination was continued (migrate.last then describes it),
    else a failure string."""
    for g, side in ((src, "src"), (dst, "dst")):
        caps = caps_for(opts, side)
        if caps:
            g.qmp.cmd("migrate-set-capabilities", capabilities=caps)
        if opts.multifd > 1:
            g.qmp.cmd("migrate-set-parameters", **{"multifd-channels": opts.multifd})
    # 1 ms until --min-syncs passes (post-copy: until the switch), so that
    # pre-copy makes several passes even on a quiet machine
    downtime = 1 if opts.postcopy or opts.min_syncs > 1 else opts.downtime
    src.qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 8 << 30,
                                             "downtime-limit": downtime})
    port = free_port()
    uri = "tcp:127.0.0.1:%d" % port
    dst.qmp.cmd("migrate-incoming", uri=uri)
    if opts.stop_first:
        src.qmp.cmd("stop")
    src.qmp.cmd("migrate", uri=uri)
    t0 = time.monotonic()
    continued = False
    postcopy_started = False
    last_raise = t0
    while True:
        st = src.qmp.cmd("query-migrate")
        status = st.get("status")
        syncs = st.get("ram", {}).get("dirty-sync-count", 0)
        now = time.monotonic()
        if status == "completed":
            break
        if status in ("failed", "cancelled"):
            return "migration %s: %s" % (status, st.get("error-desc", ""))
        if status == "pre-switchover":
            if not continued:
                src.qmp.cmd("migrate-continue", state="pre-switchover")
                continued = True
        else:
            continued = False
        if status == "postcopy-active":
            break
        if status == "active" and opts.postcopy and not postcopy_started and \
                syncs >= opts.postcopy_syncs:
            src.qmp.cmd("migrate-start-postcopy")
            postcopy_started = True
        if status == "active" and not opts.postcopy and downtime == 1 and syncs >= opts.min_syncs:
            downtime = opts.downtime
            src.qmp.cmd("migrate-set-parameters", **{"downtime-limit": downtime})
            last_raise = now
        elif status == "active" and not opts.postcopy and downtime > 1 and now - last_raise > 1.0:
            downtime = min(downtime * 2, 20000)
            src.qmp.cmd("migrate-set-parameters", **{"downtime-limit": downtime})
            last_raise = now
        if now - t0 > opts.migrate_timeout:
            src.qmp.cmd("migrate_cancel")
            return "migration did not finish in %ds (status %s)" % (opts.migrate_timeout, status)
        time.sleep(0.02)
    # The destination leaves inmigrate once it has the device state
    # (pre-copy: the whole stream; post-copy: the switch-over).
    deadline = time.monotonic() + opts.migrate_timeout
    while True:
        s = dst.qmp.cmd("query-status")["status"]
        if s not in ("inmigrate",):
            break
        if time.monotonic() > deadline:
            return "destination stayed in %s" % s
        time.sleep(0.02)
    dst.qmp.cmd("cont")
    if status == "postcopy-active":
        deadline = time.monotonic() + opts.migrate_timeout
        while src.qmp.cmd("query-migrate").get("status") != "completed":
            if time.monotonic() > deadline:
                return "post-copy did not complete"
            time.sleep(0.05)
    migrate.last = "%s%s in %.2fs, downtime %s ms, %s syncs" % (
        status, " (post-copy started)" if postcopy_started else "", time.monotonic() - t0,
        st.get("downtime", "?"), st.get("ram", {}).get("dirty-sync-count", "?"))
    return None


migrate.last = ""


def wait_ready(g, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = judge(g.serial_text())
        if v is not None:
            return v
        if g.proc.poll() is not None:
            return "EXIT"
        time.sleep(0.1)
    return "HANG"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--elf", required=True, help="dirtyguest.elf")
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("--append", default="mib=48 rate=200 verify=1",
                    help="guest command line (verify=1 is what finds stale pages)")
    ap.add_argument("--mem", default="64",
                    help="QEMU's -m, MiB or with a suffix: 65544k (64 MiB + 8 KiB) is the "
                         "workaround docs/migration.md describes")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--machine", default="pc")
    ap.add_argument("--cpu", default="qemu64")
    ap.add_argument("--accel-thread", choices=("single", "multi"), default="multi")
    ap.add_argument("--extra-accel", default="", help="more -accel tcg options")
    ap.add_argument("--multifd", type=int, default=0, help="channels; < 2 = off")
    ap.add_argument("--postcopy", action="store_true")
    ap.add_argument("--postcopy-syncs", type=int, default=3,
                    help="pre-copy dirty-bitmap syncs before migrate-start-postcopy "
                         "(downtime-limit stays 1 ms, so pre-copy seldom completes first)")
    ap.add_argument("--pause-before-switchover", action="store_true")
    ap.add_argument("--return-path", action="store_true")
    ap.add_argument("--drover-caps", action="store_true",
                    help="the agent's defaults: events, and multifd (2 channels) unless --postcopy "
                         "(QEMU 7.2 fails a post-copy with multifd)")
    ap.add_argument("--auto-converge", action="store_true")
    ap.add_argument("--stop-first", action="store_true",
                    help="stop the source's vCPUs before migrate (not live)")
    ap.add_argument("--sandbox", action="store_true", help="the agent's -sandbox option")
    ap.add_argument("--downtime", type=int, default=300,
                    help="downtime-limit (ms) once --min-syncs passes are done; "
                         "doubled every second")
    ap.add_argument("--min-syncs", type=int, default=5,
                    help="pre-copy dirty-bitmap syncs before the downtime-limit lets pre-copy "
                         "complete (1: at once); the stale page needs several passes")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--stop-after", type=int, default=0,
                    help="stop after this many failed rounds (0: run all rounds)")
    ap.add_argument("--max-seconds", type=int, default=600, help="stop after this long")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds the destination has to show advancing S lines")
    ap.add_argument("--run-before", type=float, default=0.5,
                    help="seconds the guest runs between migrations")
    ap.add_argument("--migrate-timeout", type=int, default=30)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    opts = ap.parse_args()
    if opts.drover_caps and not opts.postcopy and opts.multifd < 2:
        opts.multifd = 2  # see caps_for()
    if not os.path.exists(opts.elf) or not shutil.which(opts.qemu):
        print("need --elf and %s" % opts.qemu, file=sys.stderr)
        return 2

    workdir = tempfile.mkdtemp(prefix="tcg-stale-")
    t_start = time.monotonic()

    def log(msg):
        print("[%6.1f] %s" % (time.monotonic() - t_start, msg), flush=True)

    counts = {"OK": 0, "STALE": 0, "HANG": 0, "FAULT": 0, "EXIT": 0, "MIGFAIL": 0}
    guests = []
    src = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))
    try:
        log("variant: accel=tcg,thread=%s%s smp=%d multifd=%d postcopy=%s pbs=%s "
            "drover-caps=%s append=%r mem=%s stop-first=%s" % (
                opts.accel_thread, "," + opts.extra_accel if opts.extra_accel else "",
                opts.smp, opts.multifd, opts.postcopy, opts.pause_before_switchover,
                opts.drover_caps, opts.append, opts.mem, opts.stop_first))
        rnd = 0
        while rnd < opts.rounds and time.monotonic() - t_start < opts.max_seconds:
            failed = counts["STALE"] + counts["HANG"] + counts["FAULT"] + counts["EXIT"]
            if opts.stop_after and failed >= opts.stop_after:
                break
            if src is None:
                src = Guest(opts, workdir, incoming=False)
                guests.append(src)
                v = wait_ready(src, 15)
                if v != "OK":
                    log("fresh guest did not come up: %s" % v)
                    return 2
            time.sleep(opts.run_before)
            rnd += 1
            dst = Guest(opts, workdir, incoming=True)
            guests.append(dst)
            try:
                fail = migrate(opts, src, dst)
            except (QmpError, OSError) as e:
                fail = "QMP: %s" % e
            if fail:
                counts["MIGFAIL"] += 1
                log("round %d: migration failed: %s (logs in %s)" % (rnd, fail, workdir))
                for g in (src, dst):
                    g.kill()
                    guests.remove(g)
                src = None  # a fresh guest for the next round
                continue
            src.kill()
            guests.remove(src)
            v = wait_ready(dst, opts.settle)
            counts[v] += 1
            text = dst.serial_text()
            detail = ""
            if v != "OK":
                bad = [l for l in text.splitlines() if l.startswith(("BAD", "EXC", "FAIL"))]
                last = [l for l in text.splitlines() if l.startswith("S ")][-1:]
                detail = " %s %s (serial %s)" % (bad[:2], last, dst.serial)
            log("round %d: %s (%s)%s" % (rnd, v, migrate.last, detail))
            if v == "OK":
                src = dst
            else:
                dst.kill()
                guests.remove(dst)
                src = None
    finally:
        for g in guests:
            g.kill()
        n = sum(counts.values())
        log("summary: rounds=%d %s" % (n, " ".join("%s=%d" % kv for kv in counts.items())))
        if not opts.keep and sum(counts.values()) == counts["OK"]:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log("logs in %s" % workdir)
    return 0 if counts["STALE"] + counts["HANG"] + counts["FAULT"] + counts["EXIT"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
