#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Drover developers
# GNU Lesser General Public License v2.1+ (see https://www.gnu.org/licenses/lgpl-2.1.txt)
# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drover_facts
short_description: Hosts, guests and jobs of a Drover cluster as facts
description:
  - Reads the coordinator's view of the cluster (C(droverctl hosts), C(vms), C(jobs) with C(--json)) and returns
    it as facts.
  - The coordinator refreshes its inventory from every agent before it answers, so the facts are current.
version_added: "0.1.0"
author: Drover developers (@drover)
options:
  gather:
    description: What to read.
    type: list
    elements: str
    choices: [hosts, guests, jobs]
    default: [hosts, guests, jobs]
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
notes:
  - The facts belong to the host the task runs for; with C(delegate_to) add C(delegate_facts) to keep them on
    the delegate, or C(register) the result and use C(ansible_facts) from it.
"""

EXAMPLES = r"""
- name: Read the cluster
  drover.cluster.drover_facts:
  delegate_to: localhost
  run_once: true

- name: Every guest runs on hv2 now
  ansible.builtin.assert:
    that: drover_guests | map(attribute='host') | unique == ['hv2']

- name: Guests of hv1
  ansible.builtin.debug:
    msg: "{{ drover_guests | selectattr('host', 'equalto', 'hv1') | map(attribute='name') }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts.
  returned: always
  type: complex
  contains:
    drover_hosts:
      description: Hosts (name, address, state, health, memory_mib, memory_used_mib, vcpus, vcpus_used, guests,
        cpu_model).
      type: list
      elements: dict
      returned: when hosts are gathered
    drover_hosts_by_name:
      description: The same, by host name.
      type: dict
      returned: when hosts are gathered
    drover_guests:
      description: Guests (name, uuid, host, state, memory_mib, vcpus).
      type: list
      elements: dict
      returned: when guests are gathered
    drover_guest_hosts:
      description: Guest name to the host it runs on.
      type: dict
      returned: when guests are gathered
    drover_jobs:
      description: Recent jobs (at most 50; id, kind, phase, host, succeeded, failed, cancelled, subtasks).
      type: list
      elements: dict
      returned: when jobs are gathered
    drover_jobs_active:
      description: The jobs that have not ended (planning, running, verifying).
      type: list
      elements: dict
      returned: when jobs are gathered
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drover.cluster.plugins.module_utils.droverctl import (
    ACTIVE_PHASES, Droverctl, connection_argument_spec)


def main():
    spec = connection_argument_spec()
    spec.update(gather=dict(type="list", elements="str", choices=["hosts", "guests", "jobs"],
                            default=["hosts", "guests", "jobs"]))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    ctl = Droverctl(module)
    facts = {}
    gather = module.params["gather"]
    if "hosts" in gather:
        hosts = ctl.hosts()
        facts["drover_hosts"] = hosts
        facts["drover_hosts_by_name"] = dict((h.get("name"), h) for h in hosts)
    if "guests" in gather:
        guests = ctl.guests()
        facts["drover_guests"] = guests
        facts["drover_guest_hosts"] = dict((g.get("name"), g.get("host")) for g in guests)
    if "jobs" in gather:
        jobs = ctl.jobs()
        facts["drover_jobs"] = jobs
        facts["drover_jobs_active"] = [j for j in jobs if j.get("phase") in ACTIVE_PHASES]
    module.exit_json(changed=False, ansible_facts=facts, droverctl_commands=ctl.commands)


if __name__ == "__main__":
    main()
