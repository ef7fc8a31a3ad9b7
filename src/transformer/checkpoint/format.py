"""The checkpoint format: one folder of a model's weights and the state a resume needs.

One checkpoint is one folder, `RUN_DIR/checkpoints/step-000123/` (or a named one such as
`best` or `averaged`), holding

    model.safetensors   the weights, each tied matrix stored once; the model config as
                        JSON in the metadata (key "config")
    state.pt            everything else a true resume needs: optimizer and scheduler
                        state_dicts and the caller's `train_state` (step, RNG states, data
                        position); read only with `torch.load(weights_only=True)`, so
                        nothing from a run directory is ever unpickled as code

The folder is written through atomic.py, so a kill at any moment leaves the old checkpoint
or the new one, never half of one. Which folders a run has, and which one a command
uses, is catalogue.py's; averaging is averaging.py's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import UserError, one_line
from .atomic import write_folder

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
STEP_PATTERN = re.compile(r"step-(\d+)")
# Fields that change how a model runs but not what it is: a checkpoint trained with
# dropout 0.1 loads fine into the same model built with dropout 0 for decoding.
RUNTIME_FIELDS = frozenset({"dropout", "attention_dropout", "activation_dropout", "attention"})


# --- saving -------------------------------------------------------------------------------
def save_checkpoint(run_dir: str | os.PathLike, step: int, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                    train_state: dict | None = None, config: dict | None = None,
                    name: str | None = None) -> Path:
    """Write `RUN_DIR/checkpoints/step-{step:06d}/` (or `name`) atomically; return its path.

    `config` defaults to the model's own `cfg`. Which folders to keep is the catalogue's
    to decide (catalogue.prune).
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step={step!r} must be an integer >= 0")
    model = unwrap(model)
    if config is None and dataclasses.is_dataclass(getattr(model, "cfg", None)):
        config = dataclasses.asdict(model.cfg)
    metadata = {"step": str(step)}
    if config is not None:
        metadata["config"] = json.dumps(config)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "train_state": _plain(train_state if train_state is not None else {}, "train_state"),
    }
    return _save(run_dir, name or f"step-{step:06d}", model.state_dict(), metadata, state)


def save_weights(run_dir: str | os.PathLike, name: str, state_dict: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write a weights-only checkpoint `RUN_DIR/checkpoints/NAME/` atomically; return its path.

    No state.pt: it loads into a model but cannot resume training. `metadata` (strings) is
    stored beside "tied"; with "config" (the model config as JSON) loads are checked.
    """
    return _save(run_dir, name, state_dict, dict(metadata or {}), state=None)


def _save(run_dir: str | os.PathLike, name: str, state_dict: dict[str, torch.Tensor],
          metadata: dict[str, str], state: dict | None) -> Path:
    """Write one checkpoint folder (state.pt only when `state` is given) through atomic.py."""
    tensors, tied = _deduplicate(state_dict)
    metadata = {**metadata, "tied": json.dumps(tied)}

    def fill(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata=metadata)
        if state is not None:
            with open(tmp / STATE_FILE, "wb") as f:
                torch.save(state, f)

    return write_folder(Path(run_dir) / "checkpoints", name, fill)


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
    if value is None or isinstance(value, torch.Tensor) or type(value) in (
            bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.Size):
        return value
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if type(value) in (list, tuple, set):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} is a {type(value).__name__}, which a checkpoint cannot hold safely; "
                    "store tensors, numbers, strings, lists, tuples or dicts")


# --- loading -----------------------------------------------------------------------------
def weights_file(path: str | os.PathLike) -> Path:
    """`path/model.safetensors` for a checkpoint folder; UserError when it is missing."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    file = path / WEIGHTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{file}: no such file (an incomplete checkpoint?)")
    return file


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors metadata of a checkpoint (reads only the header)."""
    file = weights_file(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{file}: not a readable safetensors file ({one_line(err)})") from err


def read_model_config(path: str | os.PathLike) -> dict:
    """The model config stored with a checkpoint, as a dict."""
    file = weights_file(path)
    text = read_metadata(file).get("config")
    if text is None:
        raise UserError(f"{file}: no model config in the metadata")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: the stored model config is not valid JSON ({err})") from err


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint as stored (tied ones once), on the CPU."""
    file = weights_file(path)
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{file}: truncated or corrupt ({one_line(err)})") from err


def load_weights(path: str | os.PathLike, model: nn.Module) -> None:
    """Copy a checkpoint's weights into `model` in place, so tied parameters stay tied.

    UserError naming the file when it is missing or corrupt, when its config differs from the
    model's in a field that matters, or when a tensor is missing, extra or of another shape.
    """
    model = unwrap(model)
    file = weights_file(path)
    metadata = read_metadata(file)
    if "config" in metadata and dataclasses.is_dataclass(getattr(model, "cfg", None)):
        check_config(read_model_config(file), dataclasses.asdict(model.cfg), file)
    stored = read_weights(file)
    model.load_state_dict(_expand(stored, model.state_dict(), file))


def check_config(stored: dict, current: dict, file: Path) -> None:
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
    file = weights_file(path).with_name(STATE_FILE)
    # Read state.pt before touching the model, so a damaged one changes nothing.
    state = _read_state(file) if file.is_file() else None
    load_weights(path, model)
    if state is None:
        if optimizer is not None or scheduler is not None:
            raise UserError(f"{file}: no such file; this checkpoint holds weights only "
                            "and cannot resume training")
        step = read_metadata(file.with_name(WEIGHTS_FILE)).get("step")
        return {"step": int(step) if step is not None and step.isdigit() else None}
    for part, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is None:
            continue
        if state.get(part) is None:
            raise UserError(f"{file}: saved without {part} state")
        try:
            obj.load_state_dict(state[part])
        except (ValueError, KeyError, RuntimeError) as err:
            raise UserError(f"{file}: the {part} state does not fit ({one_line(err)})") from err
    train_state = dict(state.get("train_state") or {})
    train_state.setdefault("step", state.get("step"))
    return train_state


def _read_state(file: Path) -> dict:
    """state.pt read with weights_only=True: tensors and plain containers, never code."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file; all mean the same
        raise UserError(f"{file}: truncated or corrupt ({one_line(err)})") from err
    if not isinstance(state, dict):
        raise UserError(f"{file}: not a checkpoint state (holds a {type(state).__name__})")
    return state
