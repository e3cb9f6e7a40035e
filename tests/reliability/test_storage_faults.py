"""Disk full and read-only data dir: clear StorageError (507), nothing corrupted, recovery works."""

from __future__ import annotations

import pytest

from bench.reliability.report import assert_passed
from bench.reliability.storage_faults import storage_faults

pytestmark = pytest.mark.integration


def test_disk_full_and_read_only(lora_dir, tmp_path):
    out = storage_faults(lora_dir, tmp_path)
    assert_passed(out)
