"""What a run directory is: made by `train`, read by every other command.

    RUN_DIR/config.json         {"model": TransformerConfig fields, "train": TrainConfig fields}
    RUN_DIR/tokenizer.json      the joint BPE (translation runs only; a synthetic run's
                                vocabulary is its numbered symbols, data/symbols.py)
    RUN_DIR/metrics.jsonl       the training log (metrics.py)
    RUN_DIR/checkpoints/        step-NNNNNN/, best/, averaged/ (checkpoint.py)
    RUN_DIR/plots/              PNGs written by `transformer plot`

`--overwrite` replaces only a run directory (this project's config.json beside
metrics.jsonl or checkpoints/), never another folder. `train --resume` may change only
RESUMABLE_KEYS: how long and how the run goes on, not what it is.

Which weights a command uses: `--checkpoint DIR` if given, else the newest of `averaged`
(written by `average`), `best` (highest validation BLEU or exact match) and the latest
step, by the last training step their weights cover; at equal steps, in that order.
The choice is said on stderr: "using checkpoint RUN/checkpoints/averaged (steps 600-1000)".
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from . import checkpoint as ckpt
from .config import TransformerConfig
from .data.symbols import SymbolVocabulary
from .data.synthetic import FIRST_SYMBOL
from .data.synthetic import TASKS as SYNTHETIC_TASKS
from .data.tokenizer import Tokenizer
from .distributed import resolve_device
from .errors import UserError
from .metrics import METRICS_FILE
from .model import Transformer
from .recipe import TrainConfig, split_keys

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
# What `train --resume` may change: how long the run goes on, how often it reports and
# saves, where it runs. Everything else (model shape, vocabulary, data, seed, ...) is what
# the run is: its checkpoints and its tokenizer only fit the values it has.
RESUMABLE_KEYS = ("steps", "max_minutes", "eval_every", "save_every", "bleu_every",
                  "log_every", "keep_last", "threads", "device")
# Lines for stderr saying what a command used (its checkpoints). cli.main clears them,
# runs the command, and prints them once it has succeeded: a failing command prints one
# line, its error, and no more.
NOTES: list[str] = []


def make_run_dir(out: str | None, task: str, overwrite: bool) -> Path:
    """The directory of a new run: `out`, or runs/TASK-TIME; made empty and ready."""
    run_dir = Path(out or f"runs/{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{run_dir}: already holds a run; use --resume {run_dir} or --overwrite")
        if not is_run_dir(run_dir):  # `--out . --overwrite` must not empty a repository
            raise UserError(f"{run_dir}: --overwrite replaces only a run directory (config.json "
                            f"with {METRICS_FILE} or checkpoints/), and this folder is not one; "
                            "nothing was deleted")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def is_run_dir(folder: Path) -> bool:
    """Whether `folder` holds a run of this project: its config.json, and a log or checkpoints."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return False
    return (isinstance(config, dict) and {"model", "train"} <= config.keys()
            and ((folder / METRICS_FILE).is_file() or (folder / "checkpoints").is_dir()))


def write_config(run_dir: Path, model_cfg: TransformerConfig, train_cfg: TrainConfig,
                 **extra) -> None:
    """config.json: the resolved model and training settings (and any `extra` sections)."""
    config = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg), **extra}
    _write_config(run_dir, config)


def update_train_config(run_dir: Path, train_cfg: TrainConfig) -> None:
    """Replace the training settings in config.json (after a resume changed some), the rest kept."""
    config = read_config(run_dir)
    config["train"] = dataclasses.asdict(train_cfg)
    _write_config(run_dir, config)


def _write_config(run_dir: Path, config: dict) -> None:
    text = json.dumps(config, indent=2) + "\n"
    (Path(run_dir) / CONFIG_FILE).write_text(text, encoding="utf-8")


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
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        # edited by hand, or written by another version
        detail = f"no key {error}" if isinstance(error, KeyError) else error
        raise UserError(f"{Path(run_dir) / CONFIG_FILE}: not a run config ({detail})") from None


def resume_settings(run_dir: Path, asked: dict) -> tuple[dict, TrainConfig]:
    """(model keys, TrainConfig) to resume a run with, the keys `asked` on the command line
    applied; UserError on the first one that would change what the run is."""
    model_keys, train_cfg = read_settings(run_dir)
    saved = {**model_keys, **dataclasses.asdict(train_cfg)}
    for key, value in asked.items():
        if key not in RESUMABLE_KEYS and saved.get(key) != value:
            raise UserError(f"--resume: {key!r} cannot change on resume (the run has "
                            f"{saved.get(key)!r}, asked {value!r}); what can: "
                            f"{', '.join(RESUMABLE_KEYS)}")
    return split_keys({**saved, **asked})


def pick_checkpoint(run_dir: Path, explicit: str | None = None) -> Path:
    """The checkpoint folder a command uses (see the module docstring for the order)."""
    if explicit:
        return Path(explicit)
    candidates = [run_dir / "checkpoints" / name for name in ("averaged", "best")
                  if (run_dir / "checkpoints" / name).is_dir()]
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is not None:
        candidates.append(latest)
    if not candidates:
        raise UserError(f"{run_dir}: no checkpoint found in {run_dir / 'checkpoints'}")
    # max() keeps the first of equals: the order of `candidates` is the preference.
    return max(candidates, key=lambda path: (checkpoint_steps(path) or (-1, -1))[1])


def checkpoint_steps(path: Path) -> tuple[int, int] | None:
    """(first, last) training step that a checkpoint's weights come from: one step for a
    step or best checkpoint, the span of its sources for an averaged one; None if unknown."""
    metadata = ckpt.read_metadata(path)
    try:
        if "averaged_from" in metadata:
            steps = [int(ckpt.STEP_PATTERN.fullmatch(name).group(1))
                     for name in json.loads(metadata["averaged_from"])]
            return min(steps), max(steps)
        return int(metadata["step"]), int(metadata["step"])
    except (KeyError, ValueError, TypeError, AttributeError):  # hand-made or foreign metadata
        return None


def describe_checkpoint(path: Path) -> str:
    """"PATH (steps 600-1000)", "PATH (step 1000)" or just "PATH"."""
    steps = checkpoint_steps(path)
    if steps is None:
        return str(path)
    first, last = steps
    return f"{path} (step {last})" if first == last else f"{path} (steps {first}-{last})"


def load_run(run_dir: str | Path, checkpoint: str | None = None, device: str = "cpu"
             ) -> tuple[Transformer, Tokenizer | SymbolVocabulary, dict]:
    """(model in eval mode, its vocabulary, saved config dict) from a run directory.

    The vocabulary is the run's BPE `Tokenizer` (tokenizer.json), or for a synthetic task
    its `SymbolVocabulary`; both encode and decode text alike (see `load_vocabulary`).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    saved = read_config(run_dir)
    try:
        cfg = TransformerConfig(**saved["model"])
    except (TypeError, ValueError, KeyError) as error:
        raise UserError(f"{run_dir / CONFIG_FILE}: invalid model config ({error})") from None
    model = Transformer(cfg)
    path = pick_checkpoint(run_dir, checkpoint)
    ckpt.load_weights(path, model)
    note = f"using checkpoint {describe_checkpoint(path)}"
    if note not in NOTES:  # a long-lived caller (a server) loads often: each one said once
        NOTES.append(note)
    model.to(resolve_device(device)).eval()
    return model, load_vocabulary(run_dir, saved), saved


def load_vocabulary(run_dir: Path, saved: dict) -> Tokenizer | SymbolVocabulary:
    """The run's tokenizer.json, or the symbols of a synthetic task (`num_symbols` of its
    config); UserError for a translation run without its tokenizer.json."""
    tokenizer_path = run_dir / TOKENIZER_FILE
    if tokenizer_path.exists():
        return Tokenizer.load(tokenizer_path)
    train = saved.get("train") if isinstance(saved.get("train"), dict) else {}
    task = train.get("task")
    if task not in SYNTHETIC_TASKS:
        raise UserError(f"{tokenizer_path}: no such file (a translation run needs the "
                        "tokenizer it was trained with)")
    num_symbols = train.get("num_symbols")
    sizes = {saved["model"]["src_vocab_size"], saved["model"]["tgt_vocab_size"]}
    # The model's ids must be exactly the symbols' (and the special ones): any other id
    # could be neither typed nor shown.
    if isinstance(num_symbols, bool) or not isinstance(num_symbols, int) or \
            num_symbols < 1 or sizes != {FIRST_SYMBOL + num_symbols}:
        raise UserError(f"{run_dir / CONFIG_FILE}: num_symbols={num_symbols!r} does not fit the "
                        f"model's vocabulary of {' and '.join(map(str, sorted(sizes)))} ids "
                        f"({FIRST_SYMBOL} special ids + the symbols)")
    return SymbolVocabulary(num_symbols)


def decoding_settings(saved: dict) -> dict:
    """The run's length penalty and output length limit, for translate_texts."""
    train = saved["train"]
    return {"length_penalty": train.get("length_penalty", 0.6),
            "max_len_a": train.get("max_len_a", 1.0), "max_len_b": train.get("max_len_b", 50)}
