"""What a run directory is: made by `train`, read by every other command.

    RUN_DIR/config.json         {"model": TransformerConfig fields, "train": TrainConfig fields}
    RUN_DIR/tokenizer.json      the joint BPE (translation runs only)
    RUN_DIR/metrics.jsonl       the training log (metrics.py)
    RUN_DIR/checkpoints/        step-NNNNNN/, best/, averaged/ (checkpoint.py)
    RUN_DIR/plots/              PNGs written by `transformer plot`

Which weights a command uses: `--checkpoint DIR` if given, else `averaged` (written by
`average`), else `best` (highest validation BLEU or exact match), else the latest step.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from . import checkpoint as ckpt
from .config import TransformerConfig
from .data.tokenizer import Tokenizer
from .distributed import resolve_device
from .errors import UserError
from .model import Transformer
from .recipe import TrainConfig

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"


def make_run_dir(out: str | None, task: str, overwrite: bool) -> Path:
    """The directory of a new run: `out`, or runs/TASK-TIME; made empty and ready."""
    run_dir = Path(out or f"runs/{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{run_dir}: already holds a run; use --resume {run_dir} or --overwrite")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def write_config(run_dir: Path, model_cfg: TransformerConfig, train_cfg: TrainConfig,
                 **extra) -> None:
    """config.json: the resolved model and training settings (and any `extra` sections)."""
    config = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg), **extra}
    (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def read_config(run_dir: Path) -> dict:
    """config.json as a dict; UserError when it is missing or not JSON."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (is {run_dir} a run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON: {error}") from None


def read_settings(run_dir: Path) -> tuple[dict, TrainConfig]:
    """(model keys, TrainConfig) of a run, as `train --resume` needs them.

    The model keys leave out what the task decides (the vocabulary sizes and pad_id).
    """
    saved = read_config(run_dir)
    try:
        model_keys = {k: v for k, v in saved["model"].items()
                      if k not in ("src_vocab_size", "tgt_vocab_size", "pad_id")}
        return model_keys, TrainConfig(**saved["train"])
    except (KeyError, TypeError, AttributeError) as error:  # edited by hand, or another version
        detail = f"no key {error}" if isinstance(error, KeyError) else error
        raise UserError(f"{Path(run_dir) / CONFIG_FILE}: not a run config ({detail})") from None


def pick_checkpoint(run_dir: Path, explicit: str | None = None) -> Path:
    """The checkpoint folder a command uses (see the module docstring for the order)."""
    if explicit:
        return Path(explicit)
    for name in ("averaged", "best"):
        if (run_dir / "checkpoints" / name).is_dir():
            return run_dir / "checkpoints" / name
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        raise UserError(f"{run_dir}: no checkpoint found in {run_dir / 'checkpoints'}")
    return latest


def load_run(run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu"
             ) -> tuple[Transformer, Tokenizer | None, dict]:
    """(model in eval mode, tokenizer or None, saved config dict) from a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    saved = read_config(run_dir)
    try:
        cfg = TransformerConfig(**saved["model"])
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(f"{run_dir / CONFIG_FILE}: invalid model config ({error})") from None
    model = Transformer(cfg)
    ckpt.load_weights(pick_checkpoint(run_dir, checkpoint), model)
    model.to(resolve_device(device)).eval()
    tokenizer_path = run_dir / TOKENIZER_FILE
    tokenizer = Tokenizer.load(tokenizer_path) if tokenizer_path.exists() else None
    return model, tokenizer, saved
