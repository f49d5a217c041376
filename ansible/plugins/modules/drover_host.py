#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Drover developers
# GNU Lesser General Public License v2.1+ (see https://www.gnu.org/licenses/lgpl-2.1.txt)
# SPDX-License-Identifier: LGPL-2.1-or-later
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drover_host
short_description: Manage a host of a Drover cluster's inventory and its state
description:
  - Adds a host to the inventory of a Drover coordinator, changes its record (address, capacity, limits) or removes
    it (C(droverctl host add|set|remove), the coordinator's AddHost, UpdateHost and RemoveHost).
  - Sets its scheduling state (C(droverctl host enable|drain|maintenance)). C(enabled) hosts receive guests;
    C(draining) and C(maintenance) hosts receive none.
  - This moves no guest. To empty a host use M(drover.cluster.drover_evacuate), which also sets
    C(draining) while it runs and C(maintenance) at the end when asked.
  - Idempotent. It reads the host's record first and changes only the members that differ.
version_added: "0.1.0"
author: Drover developers (@drover)
options:
  name:
    description: The host's name as the coordinator knows it (a name never changes).
    type: str
    required: true
    aliases: [host]
  state:
    description:
      - C(present) makes sure the host is in the inventory with the record members given (it is added when
        missing, which needs I(address)); C(absent) removes it (refused while it runs guests or migrations,
        so evacuate it first).
      - C(enabled), C(draining) and C(maintenance) also set the scheduling state; with I(address) a missing
        host is added first, without it the host must exist.
    type: str
    default: present
    choices: [present, absent, enabled, draining, maintenance]
  address:
    description: The agent's gRPC address, C(HOST:PORT). The coordinator refuses a new address while migrations
      into or out of the host are in flight.
    type: str
    version_added: "0.2.0"
  migration_address:
    description: Where incoming migration streams go (default, the host part of I(address)).
    type: str
    version_added: "0.2.0"
  memory_mib:
    description: Memory for guests in MiB (0, the agent's figure). Not below what its guests use.
    type: int
    version_added: "0.2.0"
  vcpus:
    description: vCPUs for guests, overcommit included (0, four per host CPU). Not below what its guests use.
    type: int
    version_added: "0.2.0"
  cpu_model:
    description: The CPU model guests need on a destination. Not changed while the host runs guests.
    type: str
    version_added: "0.2.0"
  link_bytes_per_s:
    description: The host link's bandwidth budget for migrations in bytes per second (0, the coordinator's default).
    type: int
    version_added: "0.2.0"
  max_outgoing:
    description: Concurrent outgoing migrations (0, the coordinator's default).
    type: int
    version_added: "0.2.0"
  max_incoming:
    description: Concurrent incoming migrations (0, the coordinator's default).
    type: int
    version_added: "0.2.0"
  require_healthy:
    description: Fail when the host is not C(healthy) (its agent answers the coordinator's heartbeats).
      Useful before enabling a host after maintenance.
    type: bool
    default: false
extends_documentation_fragment:
  - drover.cluster.connection
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying the target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff
      mode.
    support: full
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
seealso:
  - module: drover.cluster.drover_evacuate
"""

EXAMPLES = r"""
- name: Add hv5 to the inventory
  drover.cluster.drover_host:
    name: hv5
    address: 10.0.0.5:7400
    memory_mib: 262144
  delegate_to: localhost

- name: Let hv3 take guests again
  drover.cluster.drover_host:
    name: hv3
    state: enabled
    require_healthy: true
  delegate_to: localhost

- name: Stop placing guests on hv4, keep the ones it runs
  drover.cluster.drover_host:
    name: hv4
    state: draining
  delegate_to: localhost

- name: Remove the empty hv6
  drover.cluster.drover_host:
    name: hv6
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
host:
  description: The host's record after the change (in check mode, as it would be), as C(droverctl host show --json)
    shows it (name, address, migration_address, state, health, memory_mib, memory_used_mib, vcpus, vcpus_used,
    guests, cpu_model, link_bytes_per_s, max_outgoing, max_incoming); empty when it is absent.
  returned: always
  type: dict
state_before:
  description: The scheduling state before, or C(absent) when the coordinator did not know the host.
  returned: always
  type: str
changed_fields:
  description: The record members that changed (or would).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drover.cluster.plugins.module_utils.droverctl import (
    Droverctl, HOST_FIELDS, HOST_STATES, connection_argument_spec)

INT_FIELDS = ("memory_mib", "vcpus", "link_bytes_per_s", "max_outgoing", "max_incoming")


def wanted_fields(params):
    """The record members the task gives."""
    return dict((k, params[k]) for k in HOST_FIELDS if params.get(k) is not None)


def differing(record, want):
    """The members of @want that @record has otherwise."""
    out = {}
    for k, v in want.items():
        have = record.get(k)
        if k in INT_FIELDS:
            have = int(have or 0)
        elif have is None:
            have = ""
        if have != v:
            out[k] = v
    return out


def finish(module, ctl, before, after, changed_fields, msg):
    result = dict(changed=bool(changed_fields), host=after or {}, changed_fields=sorted(changed_fields),
                  state_before=(before or {}).get("state", "absent"), droverctl_commands=ctl.commands, msg=msg)
    if module._diff:
        result["diff"] = dict(before=before or {}, after=after or {})
    module.exit_json(**result)


def main():
    spec = connection_argument_spec()
    spec.update(name=dict(type="str", required=True, aliases=["host"]),
                state=dict(type="str", default="present", choices=["present", "absent"] + list(HOST_STATES)),
                address=dict(type="str"),
                migration_address=dict(type="str"),
                memory_mib=dict(type="int"),
                vcpus=dict(type="int"),
                cpu_model=dict(type="str"),
                link_bytes_per_s=dict(type="int"),
                max_outgoing=dict(type="int"),
                max_incoming=dict(type="int"),
                require_healthy=dict(type="bool", default=False))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    name, state = p["name"], p["state"]
    for k in INT_FIELDS:
        if p.get(k) is not None and p[k] < 0:
            module.fail_json(msg="%s must be 0 or more" % k)
    ctl = Droverctl(module)
    before = ctl.host_record(name)

    if state == "absent":
        if before is None:
            finish(module, ctl, None, None, [], "host %s is absent already" % name)
        if not module.check_mode:
            ctl.remove_host(name)
        finish(module, ctl, before, None, ["name"], "host %s removed" % name)

    want = wanted_fields(p)
    after = before
    if before is None:
        if not p.get("address"):
            module.fail_json(msg="the coordinator knows no host '%s'; adding it needs address" % name,
                             state_before="absent", droverctl_commands=ctl.commands)
        if module.check_mode:
            after = dict(want, name=name, state="enabled")
        else:
            after = ctl.add_host(name, p["address"], dict((k, v) for k, v in want.items() if k != "address"))
        changes = sorted(want)
    else:
        changes = differing(before, want)
        if changes:
            after = dict(before, **changes) if module.check_mode else ctl.update_host(name, changes)
        changes = sorted(changes)

    if state in HOST_STATES and after.get("state") != state:
        if p["require_healthy"] and after.get("health") != "healthy":
            module.fail_json(msg="host %s is %s, not healthy (its agent does not answer the coordinator)" % (
                name, after.get("health")), host=after, state_before=(before or {}).get("state", "absent"),
                droverctl_commands=ctl.commands)
        if module.check_mode:
            after = dict(after, state=state)
        else:
            ctl.set_host_state(name, state)
            after = ctl.host_record(name) or {}
            if after.get("state") != state:
                module.fail_json(msg="host %s is %s after setting it %s" % (name, after.get("state"), state),
                                 host=after, droverctl_commands=ctl.commands)
        changes.append("state")
    elif state in HOST_STATES and p["require_healthy"] and after.get("health") != "healthy":
        module.fail_json(msg="host %s is %s, not healthy (its agent does not answer the coordinator)" % (
            name, after.get("health")), host=after, state_before=(before or {}).get("state", "absent"),
            droverctl_commands=ctl.commands)
    if not changes:
        finish(module, ctl, before, before, [], "host %s is as wanted already" % name)
    finish(module, ctl, before, after, changes,
           "host %s: %s" % (name, "added" if before is None else "changed " + ", ".join(changes)))


if __name__ == "__main__":
    main()
