# -*- coding: utf-8 -*-
# Copyright: Drover developers
# GNU Lesser General Public License v2.1+ (see https://www.gnu.org/licenses/lgpl-2.1.txt)
# SPDX-License-Identifier: LGPL-2.1-or-later
# Options of every drover.cluster module: how droverctl reaches the coordinator.
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  coordinator:
    description:
      - The coordinator's address, C(unix:/path) or C(HOST:PORT) (droverctl C(--coordinator)).
      - Several coordinators (on etcd, one leads and the others stand by) as a list or a comma-separated
        string; droverctl tries them in order, moves to the next when one cannot be reached, and sends a
        change refused by a standby to the leader it names.
      - Default C($DROVER_COORDINATOR) (comma-separated for several), else droverctl's default
        C(unix:/run/drover/coordinator.sock).
    type: list
    elements: str
  tls_cert:
    description: Client certificate (droverctl C(--tls-cert); default C($DROVER_TLS_CERT)). Needs I(tls_ca).
    type: path
  tls_key:
    description: Its private key (droverctl C(--tls-key); default C($DROVER_TLS_KEY)).
    type: path
  tls_ca:
    description: CA of the coordinator's certificate (droverctl C(--tls-ca); default C($DROVER_TLS_CA)).
    type: path
  droverctl_path:
    description: The droverctl program, a path or a name searched in C(PATH).
    type: str
    default: droverctl
notes:
  - The module runs C(droverctl --json) as a subprocess, so it runs where droverctl is installed and can reach the
    coordinator (usually C(delegate_to) the controller or the coordinator host).
  - Set the connection options once for all drover modules with C(module_defaults) and the action group
    C(group/drover.cluster.drover).
"""

    JOB = r"""
options:
  wait:
    description: Follow the job until it ends. Without it the module returns the started job at once.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the job to end (with I(wait=true)).
      - When they pass the module fails; the job goes on in the coordinator (and is adopted by the next run)
        unless I(cancel_on_timeout=true).
    type: int
    default: 3600
  cancel_on_timeout:
    description: Cancel the job when I(timeout) passes (queued guests are dropped, running migrations aborted,
      their sources resume).
    type: bool
    default: false
  dry_run:
    description: Return the plan and change nothing (as check mode does), reporting C(changed=false).
    type: bool
    default: false
  failure_policy:
    description:
      - C(continue) migrates the other guests when one fails; C(stop) drops the queued ones at the first
        failure (running migrations finish).
    type: str
    choices: [continue, stop]
    default: continue
  allow_partial:
    description: Do not fail when some guests moved and others failed or were cancelled (droverctl exit code 3).
    type: bool
    default: false
  bandwidth_mib:
    description: Bandwidth limit of each migration in MiB/s (default, the coordinator's fair share of the links).
    type: int
  downtime_ms:
    description: Downtime limit of each migration in milliseconds.
    type: int
  postcopy:
    description: Post-copy use. C(never) is the coordinator's default.
    type: str
    choices: [never, allowed, after]
  auto_converge:
    description: Allow CPU throttling of guests that do not converge.
    type: bool
    default: false
notes:
  - "droverctl exit codes: 0 success; 1 (the job failed, no guest moved) and 3 (partial failure: some guests
    failed or were cancelled) fail the task, 3 not with I(allow_partial=true); 2 (usage) and 4 (coordinator
    unreachable or refusing the request) fail it with droverctl's error."
  - A guest that did not move runs on its source; the coordinator never stops a guest.
"""
