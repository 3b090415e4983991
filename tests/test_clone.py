"""Restoring a store object into artifacts/: a copy-on-write clone where the file system makes one
(XFS with reflink, Btrfs), else a byte copy; either way a writable file whose edits never reach the
store's read-only object."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelmake.core.files import copy_writable


def _restore_and_edit(folder: Path) -> str:
    obj = folder / "object.bin"
    obj.write_bytes(os.urandom(1 << 20))
    os.chmod(obj, 0o444)
    before = obj.read_bytes()
    target = folder / "target.bin"
    how = copy_writable(obj, target)
    assert target.read_bytes() == before
    assert target.stat().st_mtime == obj.stat().st_mtime        # unchanged to the stat cache
    assert target.stat().st_mode & 0o777 == 0o644
    with open(target, "r+b") as f:                              # an edit in place, not a rename
        f.write(b"edited")
    assert obj.read_bytes() == before
    return how


def test_a_restored_file_is_writable_and_its_edits_stay_out_of_the_store(tmp_path):
    assert _restore_and_edit(tmp_path) in ("clone", "copy")


@pytest.mark.skipif(not os.environ.get("MODELMAKE_TEST_REFLINK_DIR"),
                    reason="set MODELMAKE_TEST_REFLINK_DIR to a folder on XFS (reflink=1) or Btrfs")
def test_a_file_system_with_reflink_gets_a_clone(tmp_path):
    folder = Path(os.environ["MODELMAKE_TEST_REFLINK_DIR"]) / tmp_path.name
    folder.mkdir(parents=True)
    assert _restore_and_edit(folder) == "clone"
