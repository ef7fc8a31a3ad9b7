"""Crash-safe folders: write, replace and delete a folder so that a kill at any moment
leaves the old folder or the new one under its name, never half of one.

The trick is that renaming a folder within one filesystem is atomic: a reader sees the name
point at the old content or at the new, nothing in between. So the new content is written
under a hidden name, flushed to disk (fsync: otherwise a power cut after the rename could
leave the name pointing at files the disk never received), and only then renamed into
place. All work happens under hidden names in the same parent folder, each ending in the
pid of the process that made it:

    .tmp-NAME-PID   a write in progress; filled, fsynced, then renamed to NAME
    .old-NAME-PID   the previous NAME, moved aside for the instant between the two renames
                    (rename cannot replace a non-empty folder); deleted once the new NAME
                    is in place, moved back by `tidy` if the writer died in between
    .del-NAME-PID   a folder being deleted; renamed first, so that a kill half-way through
                    the deletion never leaves a half folder under a real name

Names starting with "." are therefore reserved. `tidy` repairs after a kill, leaving alone
the work folders of processes still alive (another writer, mid-write). This module knows
nothing of what the folders hold: the caller passes a function that writes the files.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Callable

# A work folder's name: its kind, the NAME it works on, the pid of the process that made it.
WORK_PATTERN = re.compile(r"\.(tmp|old|del)-(.+)-(\d+)")


def write_folder(parent: str | os.PathLike, name: str, fill: Callable[[Path], None]) -> Path:
    """Create or replace `parent/name` atomically; return its path.

    `fill(tmp)` writes the files into the empty hidden folder `tmp`; this function then
    fsyncs them and renames the folder into place. If anything fails, the old `name` (if
    any) is left as it was and no work folder remains.
    """
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a plain folder name")
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tidy(parent, delete=True)
    pid = os.getpid()
    tmp, final, old = parent / f".tmp-{name}-{pid}", parent / name, parent / f".old-{name}-{pid}"
    try:
        tmp.mkdir()
        fill(tmp)
        for path in sorted(tmp.rglob("*")):
            _fsync_path(path)
        _fsync_path(tmp)
        if final.exists():
            # Moved aside, not deleted, until the new one is in place: `tidy` moves it back
            # if we die between the two renames.
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_path(parent)  # makes the renames themselves durable
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk, so that a rename after it is durable."""
    if os.name != "posix" and path.is_dir():
        return  # folders cannot be opened for fsync outside POSIX
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_folder(path: str | os.PathLike) -> None:
    """Delete a folder, renamed to `.del-NAME-PID` first so that a kill half-way through
    the deletion never leaves a half folder under a real name."""
    path = Path(path)
    trash = path.with_name(f".del-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash)


def tidy(parent: str | os.PathLike, delete: bool) -> None:
    """Repair after a killed write: a folder moved aside (`.old-`) whose replacement never
    arrived is moved back. With `delete`, the other leftovers are removed. Work folders of
    a process that is still alive (another writer) are left alone."""
    parent = Path(parent)
    for entry in sorted(parent.iterdir()) if parent.is_dir() else []:
        match = WORK_PATTERN.fullmatch(entry.name)
        if match is None:
            continue
        kind, name, pid = match.group(1), match.group(2), int(match.group(3))
        if pid != os.getpid() and _alive(pid):
            continue
        try:
            if kind == "old" and not (parent / name).exists():
                os.replace(entry, parent / name)
            elif delete:
                shutil.rmtree(entry)
        except OSError:
            pass  # a read-only parent: list_folders still sees the `.old-` one


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def list_folders(parent: str | os.PathLike) -> dict[str, Path]:
    """The complete folders of `parent`, by name. It only reads: repairing is the writer's
    (`write_folder` tidies first), and a reader (a server, a translate) renames nothing.

    Work folders are left out, except a `.old-NAME-PID` whose NAME is missing (a write
    killed between its two renames, or one still in flight): it is the complete old NAME,
    and is listed as NAME.
    """
    parent = Path(parent)
    found: dict[str, Path] = {}
    for entry in sorted(parent.iterdir()) if parent.is_dir() else []:
        work = WORK_PATTERN.fullmatch(entry.name)
        if work is not None:
            if work.group(1) == "old" and not (parent / work.group(2)).exists():
                found[work.group(2)] = entry
        elif not entry.name.startswith(".") and entry.is_dir():
            found[entry.name] = entry
    return found
