#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Drover developers
# GNU Lesser General Public License v2.1+ (see https://www.gnu.org/licenses/lgpl-2.1.txt)
# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drover_evacuate
short_description: Move every running guest off a Drover host (live migration)
description:
  - Ensures a host of a Drover cluster runs no guests, by asking the coordinator for an
    evacuation job (C(droverctl evacuate)) and following it until it ends.
  - The coordinator plans first. When any guest cannot be placed (no host with the memory, vCPUs,
    CPU model or anti-affinity it needs), nothing is changed and the module fails with every
    blocked guest and its reason.
  - Idempotent. A host that runs no guests reports C(ok) (unchanged); with I(maintenance=true) it is
    only put into maintenance when it is not already. An evacuation of the host that is still running
    (for example after an earlier run hit its I(timeout)) is adopted and followed, not started twice.
  - In check mode, or with I(dry_run=true), it returns the plan (destination and estimated duration of
    every guest, blocked guests with reasons) and changes nothing.
version_added: "0.1.0"
author: Drover developers (@drover)
options:
  host:
    description: Name of the host to empty, as the coordinator knows it (C(droverctl hosts)).
    type: str
    required: true
  maintenance:
    description:
      - Leave the host in C(maintenance) when the evacuation succeeds.
      - Without it the host stays C(draining) (it receives no guests) until M(drover.cluster.drover_host)
        enables it again.
    type: bool
    default: false
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
  - module: drover.cluster.drover_host
  - module: drover.cluster.drover_migrate
  - module: drover.cluster.drover_facts
"""

EXAMPLES = r"""
- name: Empty hv3 and leave it in maintenance
  drover.cluster.drover_evacuate:
    host: hv3
    maintenance: true
    timeout: 1800
    failure_policy: stop
  delegate_to: localhost
  register: evac

- name: Show per-guest destinations and downtimes
  ansible.builtin.debug:
    msg: "{{ item.guest }} -> {{ item.destination }}: {{ item.measured_downtime_ms }} ms"
  loop: "{{ evac.moved }}"

- name: Only show the plan
  drover.cluster.drover_evacuate:
    host: hv3
  check_mode: true
  register: plan
"""

RETURN = r"""
changed:
  description: Whether guests moved or the host's state changed (in check mode, whether they would).
  returned: always
  type: bool
plan:
  description: The coordinator's plan. C(moves) and C(blocked) list C(guest), C(source), C(destination),
    C(estimated_s) and C(reason).
  returned: always
  type: dict
  sample: {"moves": [{"guest": "web1", "source": "hv3", "destination": "hv1", "estimated_s": 2.5,
           "reason": "most free memory"}], "blocked": [], "estimated_makespan_s": 2.5}
blocked:
  description: Guests that cannot be placed, with the reason (the module fails when there are any).
  returned: always
  type: list
  elements: dict
job:
  description: The job as C(droverctl job --json) shows it (id, phase, subtasks with per-guest source,
    destination, phase, downtime_ms, measured_downtime_ms, transferred_bytes, error).
  returned: when a job was started or adopted
  type: dict
moved:
  description: Guests that moved, with C(guest), C(source), C(destination), C(downtime_ms) (QEMU's),
    C(measured_downtime_ms) (stop on the source to resume on the destination), C(transferred_bytes), C(duration_s).
  returned: when a job ran
  type: list
  elements: dict
failed_guests:
  description: Guests that did not move, with C(phase) (failed, cancelled) and C(error). They run on their source.
  returned: when a job ran
  type: list
  elements: dict
host_before:
  description: The host as C(droverctl hosts --json) showed it before (name, state, health, memory, guests).
  returned: always
  type: dict
host_state:
  description: The host's state at the end (C(enabled), C(draining), C(maintenance)).
  returned: always
  type: str
adopted:
  description: True when an evacuation of this host was already running and the module followed it.
  returned: always
  type: bool
timed_out:
  description: True when I(timeout) passed before the job ended.
  returned: on timeout
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
    spec.update(host=dict(type="str", required=True), maintenance=dict(type="bool", default=False))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    name = p["host"]
    ctl = Droverctl(module)
    what = "evacuate %s" % name
    previewing = module.check_mode or p["dry_run"]

    before = ctl.host(name)
    base = dict(host_before=before, adopted=False, blocked=[], droverctl_commands=ctl.commands)

    def finish_state(changed_by_job, job_result=None):
        """Set maintenance when asked and the job did not (an adopted job, an empty host)."""
        state = ctl.host(name).get("state") if not previewing else before.get("state")
        changed = changed_by_job
        if p["maintenance"] and state != "maintenance":
            if not previewing:
                state = ctl.set_host_state(name, "maintenance").get("state")
            else:
                state = "maintenance"
            changed = True
        return state, changed

    def settle(result):
        """The host's state after a job that ran.  The coordinator sets
        maintenance just after it publishes the job's end, so a succeeded
        job may still show the host draining for a moment: set it (the same
        state, so harmless) rather than report a state about to change."""
        if p["wait"] and (result.get("job") or {}).get("phase") == "succeeded":
            result["host_state"], result["changed"] = finish_state(result["changed"])
        else:
            result["host_state"] = ctl.host(name).get("state")
        return result

    # an evacuation of this host that is still running: follow it
    active = ctl.active_jobs("evacuate", host=name)
    if active:
        job = active[0]
        if previewing:
            module.exit_json(changed=not p["dry_run"], job=job, plan=dict(moves=[], blocked=[]),
                             host_state=before.get("state"),
                             msg="%s: job %s is running already; it would be followed" % (what, job["id"]),
                             **dict(base, adopted=True))
        result = run_job(module, ctl, None, job, what, adopted=True)
        result.update(host_before=before, blocked=[])
        module.exit_json(**settle(result))

    plan = ctl.plan(["evacuate", name], what)
    base["blocked"] = plan["blocked"]
    if plan["blocked"]:
        module.fail_json(
            msg="cannot evacuate %s: %d of %d guests cannot be placed, nothing was changed: %s" % (
                name, len(plan["blocked"]), len(plan["blocked"]) + len(plan["moves"]), blocked_text(plan)),
            plan=plan, host_state=before.get("state"), **base)

    if not plan["moves"]:
        # nothing runs there: evacuated already
        state, changed = finish_state(False)
        module.exit_json(changed=changed and not p["dry_run"], plan=plan, host_state=state,
                         msg="%s: no guests to move%s" % (
                             what, "; host %s maintenance" % ("would be set to" if previewing else "set to")
                             if changed else ""), **base)

    if previewing:
        module.exit_json(changed=not p["dry_run"], plan=plan, host_state=before.get("state"),
                         msg="%s: would move %d guests (estimated makespan %.1f s): %s" % (
                             what, len(plan["moves"]), plan["estimated_makespan_s"], moves_text(plan)), **base)

    args = (["--maintenance"] if p["maintenance"] else []) + ["evacuate", name]
    submitted_plan, job = ctl.submit(args, what)
    result = run_job(module, ctl, submitted_plan if submitted_plan["moves"] else plan, job, what)
    result.update(host_before=before, blocked=[])
    module.exit_json(**settle(result))


if __name__ == "__main__":
    main()
