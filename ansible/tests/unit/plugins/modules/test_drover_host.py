# -*- coding: utf-8 -*-
# Copyright: Drover developers
# GNU Lesser General Public License v2.1+ (see https://www.gnu.org/licenses/lgpl-2.1.txt)
# SPDX-License-Identifier: LGPL-2.1-or-later
"""drover_host's comparison of a host record with the task's members: what
counts as a change (and so what UpdateHost is sent), and droverctl's
FIELD=VALUE words.  unittest style: `ansible-test units` runs it, and so does
`python3 -m unittest` with the ansible_collections folder on sys.path
(tests/ansible/sanity.py does)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import unittest

from ansible_collections.drover.cluster.plugins.modules.drover_host import differing, wanted_fields
from ansible_collections.drover.cluster.plugins.module_utils.droverctl import HOST_FIELDS, field_words

RECORD = dict(name="hv1", address="10.0.0.1:7400", migration_address="", state="enabled", health="healthy",
              memory_mib=16384, memory_used_mib=2048, vcpus=32, vcpus_used=2, guests=2, cpu_model="",
              link_bytes_per_s=0, max_outgoing=0, max_incoming=0)


class TestDiffering(unittest.TestCase):
    def test_equal_members_are_no_change(self):
        self.assertEqual(differing(RECORD, dict(address="10.0.0.1:7400", memory_mib=16384, max_outgoing=0)), {})

    def test_only_differing_members_are_sent(self):
        self.assertEqual(differing(RECORD, dict(address="10.0.0.1:7400", memory_mib=8192, cpu_model="EPYC")),
                         dict(memory_mib=8192, cpu_model="EPYC"))

    def test_missing_members_read_as_empty_or_zero(self):
        short = dict(name="hv1")
        self.assertEqual(differing(short, dict(migration_address="", max_incoming=0)), {})
        self.assertEqual(differing(short, dict(max_incoming=2)), dict(max_incoming=2))


class TestWanted(unittest.TestCase):
    def test_only_given_record_members(self):
        params = dict((k, None) for k in HOST_FIELDS)
        params.update(name="hv1", state="present", memory_mib=0, cpu_model="EPYC", require_healthy=False)
        self.assertEqual(wanted_fields(params), dict(memory_mib=0, cpu_model="EPYC"))

    def test_field_words_in_api_order(self):
        self.assertEqual(field_words(dict(vcpus=8, address="h:1", memory_mib=4)),
                         ["address=h:1", "memory_mib=4", "vcpus=8"])


if __name__ == "__main__":
    unittest.main()
