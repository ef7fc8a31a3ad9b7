"""Spec for atomic.py: a folder is replaced whole or not at all, whatever kills the writer."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from transformer.checkpoint import atomic
from transformer.checkpoint.atomic import (
    list_folders,
    remove_folder,
    tidy,
    write_folder,
)

from kill_helpers import die_at

DEAD_PID = 999_999_999  # above any pid_max: never a live process


def writer(text):
    """A `fill` that writes two files, so a kill can fall between them."""
    def fill(tmp):
        (tmp / "a.txt").write_text(text)
        (tmp / "b.txt").write_text(text * 2)
    return fill


def content(folder):
    return (folder / "a.txt").read_text(), (folder / "b.txt").read_text()


def hidden(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_writes_and_replaces_a_folder(tmp_path):
    path = write_folder(tmp_path / "parent", "x", writer("old"))
    assert path == tmp_path / "parent" / "x" and content(path) == ("old", "oldold")
    (path / "stale.txt").write_text("from the old folder")
    assert write_folder(tmp_path / "parent", "x", writer("new")) == path
    assert content(path) == ("new", "newnew")
    assert not (path / "stale.txt").exists()  # replaced whole, not merged
    assert hidden(tmp_path / "parent") == []


@pytest.mark.parametrize("name", ["", ".x", "a/b"])
def test_names_must_be_plain(tmp_path, name):
    with pytest.raises(ValueError, match="plain folder name"):
        write_folder(tmp_path, name, writer("x"))


def test_a_failing_fill_keeps_the_old_folder(tmp_path):
    write_folder(tmp_path, "x", writer("old"))

    def broken(tmp):
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_folder(tmp_path, "x", broken)
    assert content(tmp_path / "x") == ("old", "oldold")
    assert hidden(tmp_path) == []


def test_a_failed_rename_moves_the_old_folder_back(tmp_path, monkeypatch):
    write_folder(tmp_path, "x", writer("old"))
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 2:  # the old one is aside, the new one about to go in
            raise OSError("disk gone")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_folder(tmp_path, "x", writer("new"))
    monkeypatch.undo()
    assert calls[-1] == "x"  # the third rename put the old one back
    assert content(tmp_path / "x") == ("old", "oldold")
    assert hidden(tmp_path) == []


# Where the writer dies: (os function, its n-th call, before or after it runs, whether the
# new folder is in place by then). fsync runs on a.txt, b.txt, the temp folder, the parent.
KILL_POINTS = [
    ("fsync", 1, "before", False),   # both files written, neither flushed
    ("fsync", 3, "after", False),    # everything flushed, nothing renamed
    ("replace", 1, "after", False),  # old folder moved aside, new one not in place
    ("replace", 2, "after", True),   # new one in place, old one not yet deleted
]


def write_and_die(point, parent, text):
    """Write in a forked child that SIGKILLs itself at `point`; wait for it to die."""
    die_at(point, lambda: write_folder(parent, "x", writer(text)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to kill a writer mid-way")
@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: f"{p[2]}-{p[0]}-{p[1]}")
def test_a_kill_leaves_the_old_folder_or_the_new(tmp_path, point):
    write_folder(tmp_path, "x", writer("old"))
    write_and_die(point, tmp_path, "new")
    assert hidden(tmp_path) != []  # the dead writer left work folders behind

    before = sorted(p.name for p in tmp_path.iterdir())
    folders = list_folders(tmp_path)  # ... which the listing reads past: it renames nothing
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert list(folders) == ["x"]  # the complete x, wherever it lies (the next writer repairs)
    assert content(folders["x"]) == (("new", "newnew") if point[3] else ("old", "oldold"))

    write_folder(tmp_path, "y", writer("next"))  # the next write clears the leftovers
    assert hidden(tmp_path) == []
    assert sorted(list_folders(tmp_path)) == ["x", "y"]


def test_tidy_spares_the_work_of_live_processes(tmp_path):
    live, dead = os.getppid(), DEAD_PID  # pytest's parent is alive while pytest runs
    for name in (f".tmp-x-{live}", f".old-y-{live}", f".tmp-x-{dead}", f".del-z-{dead}"):
        (tmp_path / name).mkdir()
    (tmp_path / f".old-x-{dead}").mkdir()  # moved aside by a writer that died: x comes back
    (tmp_path / f".old-x-{dead}" / "a.txt").write_text("old")
    tidy(tmp_path, delete=False)
    assert (tmp_path / "x" / "a.txt").read_text() == "old"
    assert hidden(tmp_path) == sorted([f".del-z-{dead}", f".old-y-{live}",
                                       f".tmp-x-{dead}", f".tmp-x-{live}"])
    tidy(tmp_path, delete=True)
    assert hidden(tmp_path) == sorted([f".old-y-{live}", f".tmp-x-{live}"])


def test_an_old_folder_that_cannot_move_back_is_still_listed(tmp_path, monkeypatch):
    (tmp_path / "y").mkdir()
    (tmp_path / f".old-x-{DEAD_PID}").mkdir()
    (tmp_path / f".tmp-z-{DEAD_PID}").mkdir()
    (tmp_path / "notes.txt").write_text("not a folder")
    (tmp_path / ".cache").mkdir()

    def read_only(src, dst):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(os, "replace", read_only)
    assert list_folders(tmp_path) == {"x": tmp_path / f".old-x-{DEAD_PID}", "y": tmp_path / "y"}
    assert list_folders(tmp_path / "nowhere") == {}


def test_remove_folder_leaves_nothing(tmp_path):
    path = write_folder(tmp_path, "x", writer("old"))
    remove_folder(path)
    assert list(tmp_path.iterdir()) == []


def test_loads_without_torch():
    """The mechanics stand alone: loaded from its file, the module pulls in no torch."""
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('atomic', {atomic.__file__!r})\n"
            "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(sorted({'torch', 'safetensors', 'transformer'} & set(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
