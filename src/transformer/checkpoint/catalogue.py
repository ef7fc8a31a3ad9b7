"""The catalogue of a run's checkpoints: which there are, which one a command uses, what
each one covers.

    RUN_DIR/checkpoints/step-000400/   written every `save_every` steps (the last
                                       `keep_last` kept)
    RUN_DIR/checkpoints/best/          the best validation score so far
    RUN_DIR/checkpoints/averaged/      written by `transformer average`

A folder counts once its weights file is there: an incomplete one is never listed.

    step_checkpoints(run_dir)        the step-* folders, oldest first
    all_checkpoints(run_dir)         every folder by name: step-* by step, then the named ones
    pick_checkpoint(run_dir, path)   the one a command uses (below)
    checkpoint_steps(path)           (first, last) training step its weights come from
    describe_checkpoint(path)        "PATH (steps 600-1000)", for the line a command prints
    prune(run_dir, keep_last)        delete the oldest step-* folders beyond `keep_last`

Which weights a command uses: the folder it is given, else the newest of `averaged`,
`best` and the latest step, by the last training step their weights cover; at equal
steps, in that order.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError
from .atomic import list_folders, remove_folder
from .format import STEP_PATTERN, WEIGHTS_FILE, read_metadata

PREFERRED = ("averaged", "best")  # before the latest step, at equal steps


def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def all_checkpoints(run_dir: str | os.PathLike) -> dict[str, Path]:
    """The complete checkpoint folders by name: step-* by step, then the named ones by name."""
    def order(item: tuple[str, Path]) -> tuple:
        match = STEP_PATTERN.fullmatch(item[0])
        return (0, int(match.group(1)), "") if match else (1, 0, item[0])

    folders = list_folders(checkpoints_dir(run_dir))
    complete = [(name, path) for name, path in folders.items() if (path / WEIGHTS_FILE).is_file()]
    return dict(sorted(complete, key=order))


def step_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete `step-*` checkpoint folders of a run, oldest step first."""
    return [path for name, path in all_checkpoints(run_dir).items() if STEP_PATTERN.fullmatch(name)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete `step-*` checkpoint, or None when the run has none."""
    steps = step_checkpoints(run_dir)
    return steps[-1] if steps else None


def pick_checkpoint(run_dir: str | os.PathLike, explicit: str | os.PathLike | None = None) -> Path:
    """The checkpoint folder a command uses (see the module docstring for the order)."""
    if explicit:
        return Path(explicit)
    found = all_checkpoints(run_dir)
    candidates = [found[name] for name in PREFERRED if name in found]
    latest = latest_checkpoint(run_dir)
    if latest is not None:
        candidates.append(latest)
    if not candidates:
        raise UserError(f"{run_dir}: no checkpoint found in {checkpoints_dir(run_dir)}")
    # max() keeps the first of equals: the order of `candidates` is the preference.
    return max(candidates, key=lambda path: (checkpoint_steps(path) or (-1, -1))[1])


def checkpoint_steps(path: str | os.PathLike) -> tuple[int, int] | None:
    """(first, last) training step that a checkpoint's weights come from: one step for a
    step or best checkpoint, the span of its sources for an averaged one; None if unknown."""
    metadata = read_metadata(path)
    try:
        if "averaged_from" in metadata:
            steps = [int(STEP_PATTERN.fullmatch(name).group(1))
                     for name in json.loads(metadata["averaged_from"])]
            return min(steps), max(steps)
        return int(metadata["step"]), int(metadata["step"])
    except (KeyError, ValueError, TypeError, AttributeError):  # hand-made or foreign metadata
        return None


def describe_checkpoint(path: str | os.PathLike) -> str:
    """"PATH (steps 600-1000)", "PATH (step 1000)" or just "PATH"."""
    steps = checkpoint_steps(path)
    if steps is None:
        return str(path)
    first, last = steps
    return f"{path} (step {last})" if first == last else f"{path} (steps {first}-{last})"


def prune(run_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete the oldest `step-*` folders beyond the newest `keep_last`; named folders
    ("best", "averaged") are never deleted."""
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ValueError(f"keep_last={keep_last!r} must be an integer >= 1")
    for old in step_checkpoints(run_dir)[:-keep_last]:
        remove_folder(old)
