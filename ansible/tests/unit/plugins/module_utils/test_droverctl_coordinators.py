# -*- coding: utf-8 -*-
# Copyright: Drover developers
# GNU Lesser General Public License v2.1+ (see https://www.gnu.org/licenses/lgpl-2.1.txt)
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The coordinator option of every module: one address, several as a list,
or a comma-separated string (as $DROVER_COORDINATOR holds them), all become
the one --coordinator A,B,C droverctl tries in order (following a standby to
the leader).  unittest style, as test_drover_host.py."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import unittest

from ansible_collections.drover.cluster.plugins.module_utils.droverctl import coordinator_list


class TestCoordinatorList(unittest.TestCase):
    def test_none_is_droverctls_default(self):
        self.assertEqual(coordinator_list(None), [])
        self.assertEqual(coordinator_list([]), [])

    def test_one_address(self):
        self.assertEqual(coordinator_list(["unix:/run/drover/coordinator.sock"]),
                         ["unix:/run/drover/coordinator.sock"])

    def test_list_and_comma_string_agree(self):
        want = ["10.0.0.10:7500", "10.0.0.11:7500"]
        self.assertEqual(coordinator_list(want), want)
        self.assertEqual(coordinator_list("10.0.0.10:7500, 10.0.0.11:7500"), want)
        self.assertEqual(coordinator_list(["10.0.0.10:7500,10.0.0.11:7500"]), want)

    def test_empty_items_dropped(self):
        self.assertEqual(coordinator_list(["a:1", "", " ", "b:2,"]), ["a:1", "b:2"])


if __name__ == "__main__":
    unittest.main()
