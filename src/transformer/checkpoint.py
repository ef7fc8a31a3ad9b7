"""Checkpoints: save, load, resume and average a model, safely.

One checkpoint is one folder, `RUN_DIR/checkpoints/step-000123/` (or a named one such as
`best` or `averaged`), holding

    model.safetensors   the weights, each tied matrix stored once; the model config as
                        JSON in the metadata (key "config")
    state.pt            everything else a true resume needs: optimizer and scheduler
                        state_dicts and the caller's `train_state` (step, RNG states, data
                        position); read only with `torch.load(weights_only=True)`, so
                        nothing from a run directory is ever unpickled as code

Saving is atomic: the files are written and fsynced into a hidden sibling folder
`.tmp-NAME-PID`, which is then renamed into place. A kill at any moment leaves the old
checkpoint or the new one, never half of one. Averaging lives in averaging.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import UserError

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
STEP_PATTERN = re.compile(r"step-(\d+)")
# Hidden work folders: `.tmp-` a save in progress, `.old-` a checkpoint being replaced,
# `.del-` one being deleted. Each ends in the pid of the process that made it.
WORK_PATTERN = re.compile(r"\.(tmp|old|del)-(.+)-(\d+)")
# Fields that change how a model runs but not what it is: a checkpoint trained with
# dropout 0.1 loads fine into the same model built with dropout 0 for decoding.
RUNTIME_FIELDS = frozenset({"dropout", "attention_dropout", "activation_dropout", "attention"})


# --- saving -------------------------------------------------------------------------------
def save_checkpoint(run_dir: str | os.PathLike, step: int, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    train_state: dict | None = None, config: dict | None = None,
                    keep_last: int | None = None, name: str | None = None) -> Path:
    """Write `RUN_DIR/checkpoints/step-{step:06d}/` (or `name`) atomically; return its path.

    `config` defaults to the model's own `cfg`. `keep_last=N` then deletes the oldest
    `step-*` folders beyond N; named folders ("best", "averaged") are never deleted.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step={step!r} must be an integer >= 0")
    if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"keep_last={keep_last!r} must be an integer >= 1")
    model = unwrap(model)
    if config is None and dataclasses.is_dataclass(getattr(model, "cfg", None)):
        config = dataclasses.asdict(model.cfg)
    tensors, tied = _deduplicate(model.state_dict())
    metadata = {"step": str(step), "tied": json.dumps(tied)}
    if config is not None:
        metadata["config"] = json.dumps(config)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "train_state": _plain(train_state if train_state is not None else {}, "train_state"),
    }
    path = _write_checkpoint(run_dir, name or _step_name(step), tensors, metadata, state)
    if keep_last is not None:
        for old in list_checkpoints(run_dir)[:-keep_last]:
            _remove_folder(old)
    return path


def _step_name(step: int) -> str:
    return f"step-{step:06d}"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / DataParallel / torch.compile."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def _deduplicate(state_dict: dict[str, torch.Tensor]
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep each shared tensor once (safetensors refuses aliases).

    Returns the tensors to store (on the CPU, contiguous) and `tied`, a map from every
    dropped name to the stored name it shares memory with.
    """
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    first_name: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
               tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if key in first_name and tensor.numel() > 0:
            tied[name] = first_name[key]
        else:
            first_name[key] = name
            tensors[name] = tensor.detach().cpu().contiguous()
    return tensors, tied


def _plain(value, where: str):
    """`value` made of types that `torch.load(weights_only=True)` reads back.

    Python's `random.getstate()` (tuples of ints) and `torch.get_rng_state()` (a tensor)
    already are; numpy arrays become tensors and numpy scalars Python numbers. Anything
    else is a bug in the caller: TypeError naming where it sits.
    """
    if type(value).__module__ == "numpy" and hasattr(value, "ndim"):  # np.float64 is a float too
        return torch.from_numpy(value.copy()) if value.ndim else value.item()
    if value is None or type(value) in (bool, int, float, complex, str, bytes, torch.dtype,
                                        torch.device, torch.Size):
        return value
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if type(value) in (list, tuple, set):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} is a {type(value).__name__}, which a checkpoint cannot hold safely; "
                    "store tensors, numbers, strings, lists, tuples or dicts")


def _write_checkpoint(run_dir: str | os.PathLike, name: str, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, str], state: dict | None) -> Path:
    """Write one checkpoint folder atomically: into `.tmp-NAME-PID`, fsync, rename into place."""
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"name={name!r} must be a plain folder name")
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    _tidy(folder, delete=True)
    pid = os.getpid()
    tmp, final, old = folder / f".tmp-{name}-{pid}", folder / name, folder / f".old-{name}-{pid}"
    try:
        tmp.mkdir()
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata=metadata)
        _fsync_path(tmp / WEIGHTS_FILE)
        if state is not None:
            with open(tmp / STATE_FILE, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
        _fsync_path(tmp)
        if final.exists():
            # Moved aside, not deleted, until the new one is in place; `tidy` moves it back
            # if we die between the two renames.
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_path(folder)
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


def _remove_folder(path: Path) -> None:
    """Delete a checkpoint folder; renamed to a hidden name first so that a kill
    half-way through the deletion never leaves a half checkpoint under a real name."""
    trash = path.with_name(f".del-{path.name}-{os.getpid()}")
    os.replace(path, trash)
    shutil.rmtree(trash)


def _tidy(folder: Path, delete: bool) -> None:
    """Repair after a killed save: a checkpoint moved aside (`.old-`) whose replacement
    never arrived is moved back. With `delete`, the other leftovers are removed. Work
    folders of a process that is still alive (another saver) are left alone."""
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = WORK_PATTERN.fullmatch(entry.name)
        if match is None:
            continue
        kind, name, pid = match.group(1), match.group(2), int(match.group(3))
        if pid != os.getpid() and _alive(pid):
            continue
        try:
            if kind == "old" and not (folder / name).exists():
                os.replace(entry, folder / name)
            elif delete:
                shutil.rmtree(entry)
        except OSError:
            pass  # a read-only run directory: list_checkpoints still sees the `.old-` one


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


# --- finding -----------------------------------------------------------------------------
def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The complete `step-*` checkpoint folders of a run, oldest step first."""
    folder = Path(run_dir) / "checkpoints"
    _tidy(folder, delete=False)
    found: dict[int, Path] = {}
    for entry in folder.iterdir() if folder.is_dir() else []:
        match = STEP_PATTERN.fullmatch(entry.name)
        work = WORK_PATTERN.fullmatch(entry.name)
        if work is not None and work.group(1) == "old" and not (folder / work.group(2)).exists():
            match = STEP_PATTERN.fullmatch(work.group(2))  # moved aside and not moved back
        if match is not None and (entry / WEIGHTS_FILE).is_file():
            found[int(match.group(1))] = entry
    return [found[step] for step in sorted(found)]


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete `step-*` checkpoint, or None when the run has none."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


# --- loading -----------------------------------------------------------------------------
def _weights_file(path: str | os.PathLike) -> Path:
    """`path/model.safetensors` for a checkpoint folder; UserError when it is missing."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file}: no such file (an incomplete checkpoint?)")
    return file


def _read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of a checkpoint (reads only the header)."""
    file = _weights_file(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{file}: not a readable safetensors file ({_first_line(err)})") from err


def read_config(path: str | os.PathLike) -> dict:
    """The model config stored with a checkpoint, as a dict."""
    file = _weights_file(path)
    text = _read_metadata(file).get("config")
    if text is None:
        raise UserError(f"{file}: no model config in the metadata")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: the stored model config is not valid JSON ({err})") from err


def _read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint as stored (tied ones once), on the CPU."""
    file = _weights_file(path)
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{file}: truncated or corrupt ({_first_line(err)})") from err


def load_weights(path: str | os.PathLike, model: nn.Module) -> None:
    """Copy a checkpoint's weights into `model` in place, so tied parameters stay tied.

    UserError naming the file when it is missing or corrupt, when its config differs from
    the model's in a field that matters, or when a tensor is missing, extra or of
    another shape.
    """
    model = unwrap(model)
    file = _weights_file(path)
    metadata = _read_metadata(file)
    if "config" in metadata and dataclasses.is_dataclass(getattr(model, "cfg", None)):
        _check_config(read_config(file), dataclasses.asdict(model.cfg), file)
    stored = _read_weights(file)
    model.load_state_dict(_expand(stored, model.state_dict(), file))


def _check_config(stored: dict, current: dict, file: Path) -> None:
    """UserError on the first architecture field that differs between the two configs."""
    for field, value in current.items():
        if field in RUNTIME_FIELDS or field not in stored or stored[field] == value:
            continue
        raise UserError(f"{file}: the checkpoint has {field}={stored[field]!r} "
                        f"but the model has {field}={value!r}")


def _expand(stored: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
           file: Path) -> dict[str, torch.Tensor]:
    """A full state_dict for the model from deduplicated `stored` tensors.

    Names that the *model* ties are filled from whichever of them the file holds.
    """
    _, tied = _deduplicate(target)
    groups: dict[str, list[str]] = {}
    for name in target:
        groups.setdefault(tied.get(name, name), []).append(name)
    full: dict[str, torch.Tensor] = {}
    for names in groups.values():
        present = [name for name in names if name in stored]
        if not present:
            raise UserError(f"{file}: tensor {names[0]!r} is missing")
        if len(present) > 1:
            raise UserError(f"{file}: stores {present[0]!r} and {present[1]!r} separately, "
                            "but the model ties them")
        tensor = stored[present[0]]
        if tensor.shape != target[names[0]].shape:
            raise UserError(f"{file}: tensor {present[0]!r} has shape {tuple(tensor.shape)} "
                            f"but the model expects {tuple(target[names[0]].shape)}")
        full.update((name, tensor) for name in names)
    extra = sorted(set(stored) - set(full))
    if extra:
        raise UserError(f"{file}: tensor {extra[0]!r} is not part of the model")
    return full


def load_checkpoint(path: str | os.PathLike, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> dict:
    """Restore weights, then optimizer and scheduler state; return the saved train_state.

    The returned dict always has "step" (None for an averaged checkpoint). A weights-only
    checkpoint returns just that and cannot restore an optimizer: UserError if one is given.
    """
    file = _weights_file(path).with_name(STATE_FILE)
    # Read state.pt before touching the model, so a damaged one changes nothing.
    state = _read_state(file) if file.is_file() else None
    load_weights(path, model)
    if state is None:
        if optimizer is not None or scheduler is not None:
            raise UserError(f"{file}: no such file; this checkpoint holds weights only "
                            "and cannot resume training")
        return {"step": _stored_step(file.with_name(WEIGHTS_FILE))}
    for part, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if state.get(part) is None:
            raise UserError(f"{file}: saved without {part} state")
        try:
            obj.load_state_dict(state[part])
        except (ValueError, KeyError, RuntimeError) as err:
            raise UserError(f"{file}: the {part} state does not fit ({_first_line(err)})") from err
    train_state = dict(state.get("train_state") or {})
    train_state.setdefault("step", state.get("step"))
    return train_state


def _stored_step(file: Path) -> int | None:
    step = _read_metadata(file).get("step")
    return int(step) if step is not None and step.isdigit() else None


def _read_state(file: Path) -> dict:
    """state.pt read with weights_only=True: tensors and plain containers, never code."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file; all mean the same
        raise UserError(f"{file}: truncated or corrupt ({_first_line(err)})") from err
    if not isinstance(state, dict):
        raise UserError(f"{file}: not a checkpoint state (holds a {type(state).__name__})")
    return state


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]
