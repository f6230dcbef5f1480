"""hpcml.paths: atomic, durable writes."""

from __future__ import annotations

import os
import stat

import pytest

from hpcml import paths

pytestmark = pytest.mark.unit


def _record(monkeypatch):
    """Record the order of replace / fsync(file) / fsync(directory) calls."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"))
        return real_fsync(fd)

    def replace(src, dst):
        calls.append("replace")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.parametrize("write,data", [
    (paths.atomic_write_bytes, b"\x00bytes"),
    (paths.atomic_write_text, "text ✓"),
], ids=["bytes", "text"])
def test_atomic_write_syncs_the_file_then_renames_then_syncs_the_directory(tmp_path, monkeypatch, write, data):
    target = tmp_path / "sub" / "out.bin"
    calls = _record(monkeypatch)
    assert write(target, data) == target
    assert calls == ["fsync-file", "replace", "fsync-dir"]
    assert target.read_bytes() == (data if isinstance(data, bytes) else data.encode())
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]  # no temp file left


def test_fsync_dir_syncs_the_directory_it_is_given(tmp_path, monkeypatch):
    seen = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(os.fstat(fd).st_ino), real(fd)))
    paths.fsync_dir(tmp_path)
    assert seen == [os.stat(tmp_path).st_ino]


def test_failed_rename_leaves_the_old_file_and_syncs_nothing_more(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    paths.atomic_write_text(target, "old")
    calls = _record(monkeypatch)

    def boom(src, dst):
        calls.append("replace")
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        paths.atomic_write_text(target, "new")
    assert target.read_text() == "old" and calls == ["fsync-file", "replace"]
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
