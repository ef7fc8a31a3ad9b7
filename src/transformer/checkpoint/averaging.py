"""Checkpoint averaging (Section 6.1): "For the base models, we used a single model
obtained by averaging the last 5 checkpoints, which were written at 10-minute intervals."

`average_checkpoints(paths)` is the element-wise mean of the weights of several
checkpoints of one model (a state_dict, tying kept); `save_average(run_dir, paths)`
writes it as a weights-only checkpoint folder, `RUN_DIR/checkpoints/averaged/`, in the
layout of format.py, whose readers and `save_weights` it uses.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import UserError
from .format import (
    check_config,
    read_metadata,
    read_model_config,
    read_weights,
    save_weights,
    weights_file,
)


def average_checkpoints(paths: list[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the weights of several checkpoints of one model.

    The result is a full state_dict: tied names map to one tensor, so
    `model.load_state_dict(result)` works and keeps the tying. Sums are taken in float64,
    one checkpoint in memory at a time; integer tensors are taken from the first.
    """
    if not paths:
        raise UserError("no checkpoints to average")
    first = weights_file(paths[0])
    config, tied = _config_and_tied(first)
    weights = read_weights(first)
    dtypes = {name: t.dtype for name, t in weights.items()}
    total = {name: t.double() if t.is_floating_point() else t for name, t in weights.items()}
    for path in paths[1:]:
        file = weights_file(path)
        other_config = _config_and_tied(file)[0]
        if config is not None and other_config is not None:
            check_config(other_config, config, file)
        weights = read_weights(file)
        if set(weights) != set(total):
            odd = sorted(set(weights) ^ set(total))[0]
            raise UserError(f"{file}: tensor {odd!r} is in one checkpoint but not in {first}")
        for name, tensor in weights.items():
            if tensor.shape != total[name].shape:
                raise UserError(f"{file}: tensor {name!r} has shape {tuple(tensor.shape)} "
                                f"but {tuple(total[name].shape)} in {first}")
            if tensor.is_floating_point():
                total[name] += tensor.double()
    mean = {name: (t / len(paths)).to(dtypes[name]) if t.is_floating_point() else t
            for name, t in total.items()}
    mean.update((alias, mean[name]) for alias, name in tied.items())
    return mean


def _config_and_tied(file: Path) -> tuple[dict | None, dict[str, str]]:
    metadata = read_metadata(file)
    config = read_model_config(file) if "config" in metadata else None
    try:
        tied = json.loads(metadata.get("tied", "{}"))
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: the stored map of tied tensors is not JSON ({err})") from err
    return config, tied


def save_average(run_dir: str | os.PathLike, paths: list[str | os.PathLike],
                 name: str = "averaged") -> Path:
    """Average `paths` and write a weights-only checkpoint `RUN_DIR/checkpoints/NAME/`."""
    mean = average_checkpoints(paths)
    metadata = {"averaged_from": json.dumps([Path(p).name for p in paths])}
    config = read_metadata(paths[0]).get("config")
    if config is not None:
        metadata["config"] = config
    return save_weights(run_dir, name, mean, metadata)
