#!/usr/bin/python
# -*- coding: utf-8 -*-
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drover_host
short_description: Set the state of a Drover host (enabled, draining, maintenance)
description:
  - Sets the scheduling state of a host of a Drover cluster (C(droverctl host enable|drain|maintenance)).
  - C(enabled) hosts receive guests; C(draining) and C(maintenance) hosts receive none.
  - This moves no guest. To empty a host use M(drover.cluster.drover_evacuate), which also sets
    C(draining) while it runs and C(maintenance) at the end when asked.
  - Idempotent. It reads C(droverctl hosts --json) first and changes the state only when it differs.
version_added: "0.1.0"
author: Drover developers
options:
  name:
    description: The host's name as the coordinator knows it.
    type: str
    required: true
    aliases: [host]
  state:
    description: The wanted state.
    type: str
    required: true
    choices: [enabled, draining, maintenance]
  require_healthy:
    description: Fail when the host is not C(healthy) (its agent answers the coordinator's heartbeats).
      Useful before enabling a host after maintenance.
    type: bool
    default: false
extends_documentation_fragment:
  - drover.cluster.connection
notes:
  - Supports check mode.
seealso:
  - module: drover.cluster.drover_evacuate
"""

EXAMPLES = r"""
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
"""

RETURN = r"""
changed:
  description: Whether the state changed (in check mode, whether it would).
  returned: always
  type: bool
host:
  description: The host after the change, as C(droverctl hosts --json) shows it (name, address, state, health,
    memory_mib, memory_used_mib, vcpus, vcpus_used, guests, cpu_model).
  returned: always
  type: dict
state_before:
  description: The state before.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.drover.cluster.plugins.module_utils.droverctl import (
    Droverctl, HOST_STATES, connection_argument_spec)


def main():
    spec = connection_argument_spec()
    spec.update(name=dict(type="str", required=True, aliases=["host"]),
                state=dict(type="str", required=True, choices=list(HOST_STATES)),
                require_healthy=dict(type="bool", default=False))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    name, want = module.params["name"], module.params["state"]
    ctl = Droverctl(module)
    host = ctl.host(name)
    before = host.get("state")
    if module.params["require_healthy"] and host.get("health") != "healthy":
        module.fail_json(msg="host %s is %s, not healthy (its agent does not answer the coordinator)" % (
            name, host.get("health")), host=host, state_before=before, droverctl_commands=ctl.commands)
    if before == want:
        module.exit_json(changed=False, host=host, state_before=before, droverctl_commands=ctl.commands,
                         msg="host %s is %s already" % (name, want))
    if not module.check_mode:
        ctl.set_host_state(name, want)
        host = ctl.host(name)
        if host.get("state") != want:
            module.fail_json(msg="host %s is %s after setting it %s" % (name, host.get("state"), want), host=host,
                             state_before=before, droverctl_commands=ctl.commands)
    else:
        host = dict(host, state=want)
    module.exit_json(changed=True, host=host, state_before=before, droverctl_commands=ctl.commands,
                     msg="host %s: %s -> %s" % (name, before, want))


if __name__ == "__main__":
    main()
