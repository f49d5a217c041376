# -*- coding: utf-8 -*-
# Copyright: Drover developers
# GNU Lesser General Public License v2.1+ (see https://www.gnu.org/licenses/lgpl-2.1.txt)
# SPDX-License-Identifier: LGPL-2.1-or-later
# Shared code of the drover.cluster modules: run `droverctl --json` (the
# stable, documented interface of the coordinator, docs/droverctl.md) and turn
# its documents and exit codes into module results.
#
# droverctl exit codes:
#   0  success (the job succeeded, or the command did what it says)
#   1  the job failed: no guest moved
#   2  usage error
#   3  partial failure: some guests failed or were cancelled, or (dry run) blocked
#   4  the coordinator could not be reached or refused the request
#
# With --json every command prints one JSON document; `watch` prints one job
# per line until the job ends; errors are {"error": "..."}.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import time

from ansible.module_utils.basic import env_fallback

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_ERROR = 4
EXIT_NOT_FOUND = 5
EXIT_UNREACHABLE = 6
EXIT_INTERRUPTED = 130

EXIT_MEANING = {
    EXIT_OK: "success",
    EXIT_FAILED: "the job failed: no guest moved",
    EXIT_USAGE: "droverctl usage error",
    EXIT_PARTIAL: "partial failure: some guests failed, were cancelled or are blocked",
    EXIT_ERROR: "the coordinator refused the request",
    EXIT_NOT_FOUND: "no such host, guest or job",
    EXIT_UNREACHABLE: "the coordinator could not be reached or did not answer in time",
    EXIT_INTERRUPTED: "droverctl was interrupted",
}

FINAL_PHASES = ("succeeded", "failed", "cancelled")
ACTIVE_PHASES = ("planning", "running", "verifying")
HOST_STATES = ("enabled", "draining", "maintenance")
HOST_VERBS = {"enabled": "enable", "draining": "drain", "maintenance": "maintenance"}

# How long a query (hosts, vms, jobs, a plan, a submit) may take.  droverctl
# itself gives each call 30 s; a refresh of the inventory calls every agent.
QUERY_TIMEOUT_S = 120


def connection_argument_spec():
    """Options every module takes: where the coordinator is and how to reach it."""
    return dict(
        coordinator=dict(type="list", elements="str", fallback=(env_fallback, ["DROVER_COORDINATOR"])),
        tls_cert=dict(type="path", fallback=(env_fallback, ["DROVER_TLS_CERT"])),
        tls_key=dict(type="path", no_log=False, fallback=(env_fallback, ["DROVER_TLS_KEY"])),
        tls_ca=dict(type="path", fallback=(env_fallback, ["DROVER_TLS_CA"])),
        droverctl_path=dict(type="str", default="droverctl"),
    )


def job_argument_spec():
    """Options of the modules that run jobs (evacuate, migrate)."""
    spec = connection_argument_spec()
    spec.update(
        wait=dict(type="bool", default=True),
        timeout=dict(type="int", default=3600),
        cancel_on_timeout=dict(type="bool", default=False),
        dry_run=dict(type="bool", default=False),
        failure_policy=dict(type="str", default="continue", choices=["continue", "stop"]),
        allow_partial=dict(type="bool", default=False),
        bandwidth_mib=dict(type="int"),
        downtime_ms=dict(type="int"),
        postcopy=dict(type="str", choices=["never", "allowed", "after"]),
        auto_converge=dict(type="bool", default=False),
    )
    return spec


class Result(object):
    """One droverctl run: exit code, parsed JSON documents, raw output."""

    def __init__(self, argv, rc, stdout, stderr, timed_out=False):
        self.argv = argv
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        self.docs = []
        self.unparsed = []
        for line in stdout.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                self.docs.append(json.loads(line))
            except ValueError:
                self.unparsed.append(line)

    @property
    def doc(self):
        """The last JSON document (a watch prints one per change)."""
        return self.docs[-1] if self.docs else None

    def error(self):
        """The error droverctl reported, as text."""
        for d in reversed(self.docs):
            if isinstance(d, dict) and d.get("error"):
                return d["error"]
        # droverctl prints {"error": "..."} without escaping the detail: a
        # detail with a quote in it is not valid JSON, so look at the raw line
        for line in self.unparsed:
            if line.startswith('{"error": "'):
                return line[len('{"error": "'):].rstrip('}').rstrip('"')
        text = (self.stderr or "").strip() or "\n".join(self.unparsed).strip()
        return text or EXIT_MEANING.get(self.rc, "exit code %s" % self.rc)


def coordinator_list(value):
    """The coordinator option as a list of addresses: a list, a comma-separated string (the environment
    variable, or a list of one such string), or None."""
    if not value:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        out += [a.strip() for a in str(item).split(",") if a.strip()]
    return out


class Droverctl(object):
    """droverctl for one module run."""

    def __init__(self, module):
        self.module = module
        p = module.params
        path = p["droverctl_path"]
        if "/" in path:
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                module.fail_json(msg="droverctl_path %s is not an executable file" % path)
            self.path = path
        else:
            self.path = module.get_bin_path(path, required=True)
        self.base = [self.path, "--json"]
        coordinators = coordinator_list(p.get("coordinator"))
        if coordinators:
            # several: droverctl tries them in order and follows a standby to the leader
            self.base += ["--coordinator", ",".join(coordinators)]
        for opt in ("tls_cert", "tls_key", "tls_ca"):
            if p.get(opt):
                self.base += ["--" + opt.replace("_", "-"), p[opt]]
        if bool(p.get("tls_cert")) != bool(p.get("tls_ca")):
            module.fail_json(msg="tls_cert and tls_ca go together (and tls_key with tls_cert)")
        self.commands = []  # every droverctl command line this run, for the result

    # ---- running it -------------------------------------------------------

    def run(self, args, timeout=QUERY_TIMEOUT_S):
        argv = self.base + list(args)
        self.commands.append(" ".join(argv))
        env = dict(os.environ)
        env.pop("DROVER_LOG", None)
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    stdin=subprocess.DEVNULL)
        except OSError as e:
            self.module.fail_json(msg="cannot run %s: %s" % (self.path, e), cmd=argv)
        timed_out = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            out, err = proc.communicate()
        return Result(argv, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                      timed_out)

    def fail(self, res, what, **extra):
        """Fail the module for a droverctl command that did not work."""
        if res.timed_out:
            msg = "droverctl %s: no answer in time" % what
        else:
            msg = "droverctl %s: %s (exit %d: %s)" % (what, res.error(), res.rc, EXIT_MEANING.get(res.rc, "?"))
        self.module.fail_json(msg=msg, rc=res.rc, cmd=res.argv, stdout=res.stdout, stderr=res.stderr,
                              droverctl_commands=self.commands, **extra)

    def query(self, args, what):
        """A read-only command: its document, or the module fails."""
        res = self.run(args)
        if res.rc != EXIT_OK or res.timed_out or res.doc is None:
            self.fail(res, what)
        return res.doc

    # ---- reads -------------------------------------------------------------

    def hosts(self):
        return self.query(["hosts"], "hosts")

    def host(self, name):
        for h in self.hosts():
            if h.get("name") == name:
                return h
        self.module.fail_json(msg="the coordinator knows no host '%s'" % name,
                              hosts=[h.get("name") for h in self.hosts()])

    def guests(self, host=None):
        return self.query(["vms"] + ([host] if host else []), "vms")

    def jobs(self):
        return self.query(["jobs"], "jobs")

    def job(self, job_id):
        res = self.run(["job", job_id])
        if res.timed_out or not isinstance(res.doc, dict) or "id" not in res.doc:
            self.fail(res, "job %s" % job_id)
        return res.doc

    def set_host_state(self, name, state):
        return self.query(["host", HOST_VERBS[state], name], "host %s %s" % (HOST_VERBS[state], name))

    # ---- the inventory (AddHost, RemoveHost, UpdateHost) ----------------------

    def host_record(self, name):
        """Host @name's whole record (`droverctl host show`), or None when the
        coordinator does not know it."""
        res = self.run(["host", "show", name])
        if res.rc == EXIT_OK and isinstance(res.doc, dict) and res.doc.get("name") == name:
            return res.doc
        if res.rc == EXIT_NOT_FOUND:
            return None
        self.fail(res, "host show %s" % name)
        return None

    def add_host(self, name, address, fields):
        """AddHost with @fields ({api field name: value}); the new record."""
        return self.query(["host", "add", name, address] + field_words(fields), "host add %s" % name)

    def update_host(self, name, fields):
        """UpdateHost of exactly @fields; the record after the change."""
        return self.query(["host", "set", name] + field_words(fields), "host set %s" % name)

    def remove_host(self, name):
        return self.query(["host", "remove", name], "host remove %s" % name)

    # ---- jobs ----------------------------------------------------------------

    def job_options(self):
        """droverctl options from the module's job parameters."""
        p = self.module.params
        opts = []
        if p.get("failure_policy") == "stop":
            opts.append("--stop-on-failure")
        if p.get("bandwidth_mib"):
            opts += ["--bandwidth", str(p["bandwidth_mib"])]
        if p.get("downtime_ms"):
            opts += ["--downtime", str(p["downtime_ms"])]
        if p.get("postcopy") in ("allowed", "after"):
            opts += ["--postcopy", p["postcopy"]]
        if p.get("auto_converge"):
            opts.append("--auto-converge")
        return opts

    def plan(self, command_args, what):
        """A dry run: {moves, blocked, estimated_makespan_s}; blocked guests
        are exit code 3 with the plan, not an error."""
        res = self.run(self.job_options() + ["--dry-run"] + command_args)
        if res.timed_out or res.rc not in (EXIT_OK, EXIT_PARTIAL) or not isinstance(res.doc, dict) \
                or "error" in res.doc:
            self.fail(res, "plan %s" % what)
        return normalize_plan(res.doc)

    def submit(self, command_args, what):
        """Start a job: returns (plan, job)."""
        res = self.run(self.job_options() + command_args)
        if res.timed_out or res.rc != EXIT_OK or not isinstance(res.doc, dict) or "job" not in res.doc:
            self.fail(res, what)
        return normalize_plan(res.doc), res.doc["job"]

    def watch(self, job_id, timeout):
        """Follow a job until it ends or @timeout seconds pass.
        Returns (exit code, last job seen, timed out)."""
        res = self.run(["watch", job_id], timeout=max(1, timeout))
        jobs = [d for d in res.docs if isinstance(d, dict) and "id" in d]
        if res.timed_out:
            return None, (jobs[-1] if jobs else None), True
        if not jobs:
            self.fail(res, "watch %s" % job_id)
        return res.rc, jobs[-1], False

    def cancel(self, job_id):
        return self.run(["cancel", job_id])

    def active_jobs(self, kind, host=None, guests=None):
        """Unfinished jobs of @kind for @host (evacuate) or touching @guests."""
        found = []
        for j in self.jobs():
            if j.get("kind") != kind or j.get("phase") not in ACTIVE_PHASES:
                continue
            if host is not None and j.get("host") != host:
                continue
            if guests is not None:
                names = set(s.get("guest") for s in j.get("subtasks", []))
                if not names & set(guests):
                    continue
            found.append(j)
        return found


# The members of a host record UpdateHost changes (its API field names).
HOST_FIELDS = ("address", "migration_address", "memory_mib", "vcpus", "cpu_model", "link_bytes_per_s",
               "max_outgoing", "max_incoming")


def field_words(fields):
    """droverctl's FIELD=VALUE words for @fields, in a stable order."""
    return ["%s=%s" % (k, fields[k]) for k in HOST_FIELDS if k in fields]


def normalize_plan(doc):
    """The plan part of a droverctl document (absent when nothing moves)."""
    return dict(moves=list(doc.get("moves", [])), blocked=list(doc.get("blocked", [])),
                estimated_makespan_s=doc.get("estimated_makespan_s", 0.0))


def blocked_text(plan):
    return "; ".join("%s on %s: %s" % (b.get("guest"), b.get("source") or "?", b.get("reason") or "no reason given")
                     for b in plan["blocked"])


def moves_text(plan):
    return ", ".join("%s %s -> %s (~%.1f s)" % (m.get("guest"), m.get("source"), m.get("destination"),
                                                m.get("estimated_s", 0.0)) for m in plan["moves"])


def job_summary(job):
    """Per-guest results of a job: moved guests with their downtimes, and
    the guests that did not move with the reason."""
    moved, failed = [], []
    for s in (job or {}).get("subtasks", []):
        if s.get("phase") == "done":
            start, end = s.get("started_unix_ms") or 0, s.get("finished_unix_ms") or 0
            moved.append(dict(guest=s.get("guest"), source=s.get("source"), destination=s.get("destination"),
                              downtime_ms=s.get("downtime_ms"), measured_downtime_ms=s.get("measured_downtime_ms"),
                              transferred_bytes=s.get("transferred_bytes"),
                              duration_s=round((end - start) / 1000.0, 3) if start and end >= start else None))
        elif s.get("phase") in ("FAILED", "cancelled", "BLOCKED"):
            failed.append(dict(guest=s.get("guest"), source=s.get("source"), destination=s.get("destination"),
                               phase=s.get("phase").lower(), error=s.get("error")))
    return moved, failed


def run_job(module, ctl, plan, job, what, adopted=False):
    """Follow a submitted (or adopted) job as the module's options say and
    exit the module with its result.  Exit codes of `droverctl watch`: 0
    succeeded, 1 failed with no guest moved, 3 partial (some failed or
    cancelled)."""
    p = module.params
    base = dict(plan=plan, adopted=adopted, droverctl_commands=ctl.commands)
    if not p["wait"]:
        moved, failed = job_summary(job)
        return dict(base, changed=not adopted, job=job, moved=moved, failed_guests=failed,
                    msg="%s: job %s %s (%d guests)" % (what, job["id"], "is running" if adopted else "started",
                                                      len(job.get("subtasks", []))))
    started = time.time()
    rc, last, timed_out = ctl.watch(job["id"], p["timeout"])
    if timed_out:
        last = last or job
        cancelled = ""
        if p["cancel_on_timeout"]:
            cres = ctl.cancel(job["id"])
            cancelled = " and was cancelled (queued guests dropped, running migrations aborted; sources resume)" \
                if cres.rc in (EXIT_OK, EXIT_PARTIAL, EXIT_FAILED) else \
                " and could not be cancelled: %s" % cres.error()
        else:
            cancelled = "; it goes on in the coordinator (drover_evacuate/drover_migrate adopt it when run again, " \
                        "`droverctl cancel %s` stops it)" % job["id"]
        moved, failed = job_summary(last)
        module.fail_json(msg="%s: job %s did not end within %d s (phase %s, %d of %d guests moved)%s" % (
            what, job["id"], p["timeout"], last.get("phase"), len(moved), len(last.get("subtasks", [])), cancelled),
            changed=True, job=last, moved=moved, failed_guests=failed, timed_out=True, **base)
    moved, failed = job_summary(last)
    elapsed = round(time.time() - started, 3)
    result = dict(base, job=last, moved=moved, failed_guests=failed, elapsed_s=elapsed, droverctl_rc=rc)
    if rc == EXIT_OK and last.get("phase") == "succeeded":
        result.update(changed=bool(moved) or not adopted,
                      msg="%s: job %s succeeded: %d guests moved" % (what, last["id"], len(moved)))
        return result
    detail = "; ".join("%s (%s -> %s): %s %s" % (f["guest"], f["source"], f["destination"] or "?", f["phase"],
                                                 f["error"] or "") for f in failed)
    msg = "%s: job %s %s (%s): %d moved, %d did not: %s" % (
        what, last["id"], last.get("phase"), EXIT_MEANING.get(rc, "exit %s" % rc), len(moved), len(failed),
        detail or last.get("error") or "no detail")
    if rc == EXIT_PARTIAL and p["allow_partial"]:
        result.update(changed=True, msg=msg)
        return result
    module.fail_json(changed=bool(moved), msg=msg, **result)
