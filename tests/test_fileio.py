"""nodegraph.fileio.atomic_write: files get the mode a plain open() would give them, and a failed write
leaves the old file and no temporary file behind."""

import os
import stat

import pytest

import nodegraph.fileio as fileio
from nodegraph.fileio import atomic_write, current_umask

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes and umask are POSIX")


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027])
def test_new_file_gets_0666_less_the_umask(tmp_path, umask, mask):
    umask(mask)
    target = atomic_write(tmp_path / "out.json", "{}")
    assert mode(target) == 0o666 & ~mask
    assert target.read_text() == "{}"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_umask_is_read_without_proc_too(tmp_path, umask, monkeypatch, mask):
    umask(mask)
    monkeypatch.setattr(fileio, "_PROC_STATUS", str(tmp_path / "no-such-status"))
    assert current_umask() == mask
    assert mode(atomic_write(tmp_path / "out.bin", b"x")) == 0o666 & ~mask
    assert current_umask() == mask  # reading it put it back


@pytest.mark.parametrize("existing", [0o640, 0o600, 0o664, 0o444])
def test_overwritten_file_keeps_its_mode(tmp_path, umask, existing):
    umask(0o022)
    target = tmp_path / "workflow.json"
    target.write_text("old")
    os.chmod(target, existing)
    atomic_write(target, "new")
    assert target.read_text() == "new"
    assert mode(target) == existing


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch, fail_in):
    target = tmp_path / "image.png"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, fail_in, broken)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, b"new" * 1000)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.png"]
    assert target.read_bytes() == b"old"
    assert mode(target) == 0o640


def test_failed_first_write_creates_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio.os, "replace", broken)
    with pytest.raises(OSError):
        atomic_write(tmp_path / "sub" / "new.json", "{}")
    monkeypatch.undo()
    assert list((tmp_path / "sub").iterdir()) == []
