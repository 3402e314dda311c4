"""atomic_path: the target is replaced only by a finished write, and no temporary file is left behind."""

from __future__ import annotations

import os
import stat

import pytest

from impulses.atomic import atomic_path
from impulses.errors import ImpulsesError


def test_a_finished_write_replaces_the_file_and_leaves_nothing_else(tmp_path) -> None:
    target = tmp_path / "sub" / "out.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing visible before the write finishes
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_file_gets_the_mode_of_the_umask(tmp_path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == mode


def test_a_folder_as_target_is_a_one_line_error_naming_it(tmp_path) -> None:
    (tmp_path / "results").mkdir()
    with pytest.raises(ImpulsesError, match=r"results is a folder"), atomic_path(tmp_path / "results"):
        pytest.fail("the body must not run")
    assert [p.name for p in tmp_path.iterdir()] == ["results"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_a_one_line_error_naming_the_file(tmp_path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for target in (folder / "out.csv", folder / "sub" / "out.csv"):
            with pytest.raises(ImpulsesError, match=r"out\.csv: cannot write there"), atomic_path(target):
                pytest.fail("the body must not run")
    finally:
        folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_a_folder_that_cannot_be_made_is_a_one_line_error_naming_the_file(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    target = tmp_path / "notes.txt" / "out.csv"
    with pytest.raises(ImpulsesError, match=r"notes\.txt/out\.csv: cannot write there"), atomic_path(target):
        pytest.fail("the body must not run")
