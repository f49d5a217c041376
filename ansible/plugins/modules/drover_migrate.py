#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Drover developers
# GNU Lesser General Public License v2.1+ (see https://www.gnu.org/licenses/lgpl-2.1.txt)
# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drover_migrate
short_description: Live-migrate named guests of a Drover cluster
description:
  - Asks the coordinator for a migration job of the named guests (C(droverctl migrate)), optionally all to
    one destination host, and follows it until it ends.
  - The coordinator plans first. When any guest cannot be placed (the destination is not enabled or lacks
    memory, vCPUs, the CPU model, or breaks an anti-affinity group), nothing is changed and the module fails
    with every blocked guest and its reason.
  - With I(to), idempotent. Guests already running on I(to) are left alone, and when all of them are the
    module reports C(ok) (unchanged). Without I(to) every named guest moves wherever placement puts it, on
    every run.
  - A migration job of these guests that is still running (for example after an earlier run hit its
    I(timeout)) is adopted and followed, not started twice.
  - In check mode, or with I(dry_run=true), it returns the plan and changes nothing.
version_added: "0.1.0"
author: Drover developers (@drover)
options:
  guests:
    description: Guest names (or UUIDs) as C(droverctl vms) lists them.
    type: list
    elements: str
    required: true
    aliases: [guest, name]
  to:
    description: Destination host of every guest. Without it placement chooses one per guest.
    type: str
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff
      mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
extends_documentation_fragment:
  - drover.cluster.connection
  - drover.cluster.connection.job
seealso:
  - module: drover.cluster.drover_evacuate
  - module: drover.cluster.drover_facts
"""

EXAMPLES = r"""
- name: Put the database guests on hv2
  drover.cluster.drover_migrate:
    guests: [db1, db2]
    to: hv2
    downtime_ms: 200
  delegate_to: localhost
  register: mig

- name: Let placement spread two guests, do not wait
  drover.cluster.drover_migrate:
    guests: [web1, web2]
    wait: false
  delegate_to: localhost
"""

RETURN = r"""
changed:
  description: Whether guests moved (in check mode, whether they would).
  returned: always
  type: bool
plan:
  description: The coordinator's plan (C(moves), C(blocked), C(estimated_makespan_s)).
  returned: always
  type: dict
blocked:
  description: Guests that cannot be placed, with the reason (the module fails when there are any).
  returned: always
  type: list
  elements: dict
skipped:
  description: Guests left alone because they already run on I(to).
  returned: always
  type: list
  elements: str
job:
  description: The job as C(droverctl job --json) shows it.
  returned: when a job was started or adopted
  type: dict
moved:
  description: Guests that moved, with C(guest), C(source), C(destination), C(downtime_ms),
    C(measured_downtime_ms), C(transferred_bytes) and C(duration_s).
  returned: when a job ran
  type: list
  elements: dict
failed_guests:
  description: Guests that did not move, with C(phase) and C(error). They run on their source.
  returned: when a job ran
  type: list
  elements: dict
adopted:
  description: True when a migration of these guests was already running and the module followed it.
  returned: always
  type: bool
droverctl_commands:
  description: The droverctl command lines that ran.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drover.cluster.plugins.module_utils.droverctl import (
    Droverctl, blocked_text, job_argument_spec, moves_text, run_job)


def main():
    spec = job_argument_spec()
    spec.update(guests=dict(type="list", elements="str", required=True, aliases=["guest", "name"]),
                to=dict(type="str"))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    names = [g for g in p["guests"] if g]
    if not names:
        module.fail_json(msg="guests must name at least one guest")
    to = p["to"]
    ctl = Droverctl(module)
    previewing = module.check_mode or p["dry_run"]

    where = {}
    for g in ctl.guests():
        where[g.get("name")] = g.get("host")
        where[g.get("uuid")] = g.get("host")
    unknown = [g for g in names if g not in where]
    if unknown:
        module.fail_json(msg="unknown guests: %s" % ", ".join(unknown), droverctl_commands=ctl.commands)
    if to:
        ctl.host(to)  # fails with the known hosts when it is not one
    skipped = [g for g in names if to and where[g] == to]
    todo = [g for g in names if g not in skipped]
    what = "migrate %s%s" % (" ".join(todo or names), " to %s" % to if to else "")
    base = dict(skipped=skipped, adopted=False, blocked=[], droverctl_commands=ctl.commands)

    if not todo:
        module.exit_json(changed=False, plan=dict(moves=[], blocked=[], estimated_makespan_s=0.0),
                         msg="%s: every guest runs on %s already" % (what, to), **base)

    active = ctl.active_jobs("migrate", guests=todo)
    if active:
        job = active[0]
        if previewing:
            module.exit_json(changed=not p["dry_run"], job=job, plan=dict(moves=[], blocked=[]),
                             msg="%s: job %s is running already; it would be followed" % (what, job["id"]),
                             **dict(base, adopted=True))
        result = run_job(module, ctl, None, job, what, adopted=True)
        result.update(skipped=skipped, blocked=[])
        module.exit_json(**result)

    target = (["--to", to] if to else [])
    plan = ctl.plan(target + ["migrate"] + todo, what)
    base["blocked"] = plan["blocked"]
    if plan["blocked"]:
        module.fail_json(msg="cannot %s: %d of %d guests cannot be placed, nothing was changed: %s" % (
            what, len(plan["blocked"]), len(todo), blocked_text(plan)), plan=plan, **base)
    if previewing:
        module.exit_json(changed=not p["dry_run"] and bool(plan["moves"]), plan=plan,
                         msg="%s: would move %d guests (estimated makespan %.1f s): %s" % (
                             what, len(plan["moves"]), plan["estimated_makespan_s"], moves_text(plan)), **base)
    submitted_plan, job = ctl.submit(target + ["migrate"] + todo, what)
    result = run_job(module, ctl, submitted_plan if submitted_plan["moves"] else plan, job, what)
    result.update(skipped=skipped, blocked=[])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
