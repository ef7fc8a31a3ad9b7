"""What a run directory is: made by `train`, read by every other command.

    RUN_DIR/config.json         the run's settings: {"model": TransformerConfig fields,
                                "train": TrainConfig fields} (settings.py), plus
                                "ablation" for a variant of `transformer ablate`
    RUN_DIR/tokenizer.json      the joint vocabulary (translation runs only; a synthetic
                                run's is its numbered symbols, data/symbols.py), or
                                tokenizer.src.json and tokenizer.tgt.json (vocab = "separate")
    RUN_DIR/metrics.jsonl       the training log (training/metrics.py)
    RUN_DIR/checkpoints/        step-NNNNNN/, best/, averaged/ (checkpoint/catalogue.py)
    RUN_DIR/plots/              PNGs written by `transformer plot`

config.json has one writer, `write_settings` (atomically: a kill leaves the old file or
the new one), and one reader, `read_settings`. `--overwrite` replaces only a run
directory (this project's config.json beside metrics.jsonl or checkpoints/), never
another folder.

    load_run(run_dir, checkpoint, device) -> LoadedRun(model, vocab, settings, checkpoint)

is how translate, score, evaluate, plot, serve and explore get a trained model: in eval
mode, with the weights of the checkpoint the catalogue picks, and for an ablation
variant its wrong attention restored, so every command sees the model that was trained.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint.catalogue import pick_checkpoint
from ..checkpoint.format import load_weights
from ..data.prepared import tokenizer_files
from ..data.symbols import SymbolVocabulary
from ..data.synthetic import FIRST_SYMBOL
from ..data.synthetic import TASKS as SYNTHETIC_TASKS
from ..data.tokenizer import Tokenizer
from ..errors import UserError
from ..model.transformer import Transformer
from ..training.distributed import resolve_device
from ..training.metrics import METRICS_FILE, metric_series, read_metrics
from .ablated_attention import restore_attention
from .settings import RunSettings

CONFIG_FILE = "config.json"


def make_run_dir(out: str | None, task: str, overwrite: bool) -> Path:
    """The directory of a new run: `out`, or runs/TASK-TIME; made empty and ready."""
    run_dir = Path(out or f"runs/{task}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UserError(f"{run_dir}: already holds a run; use --resume {run_dir} or --overwrite")
        replace_run_dir(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def replace_run_dir(run_dir: Path) -> None:
    """Delete `run_dir` for --overwrite, only if it is a run (`--out . --overwrite` must not
    empty a repository); UserError, nothing deleted, otherwise."""
    if not is_run_dir(run_dir):
        raise UserError(f"{run_dir}: --overwrite replaces only a run directory (config.json "
                        f"with {METRICS_FILE} or checkpoints/), and this folder is not one; "
                        "nothing was deleted")
    shutil.rmtree(run_dir)


def is_run_dir(folder: Path) -> bool:
    """Whether `folder` holds a run of this project: its config.json, and a log or checkpoints."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, unreadable, not UTF-8, not JSON
        return False
    return (isinstance(config, dict) and {"model", "train"} <= config.keys()
            and ((folder / METRICS_FILE).is_file() or (folder / "checkpoints").is_dir()))


def write_settings(run_dir: str | os.PathLike, settings: RunSettings) -> None:
    """config.json, written to a temporary file and renamed into place."""
    path = Path(run_dir) / CONFIG_FILE
    tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(settings.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_settings(run_dir: str | os.PathLike) -> RunSettings:
    """The run's settings from its config.json; UserError when it is missing or not one."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (is {run_dir} a run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON: {error}") from None
    return RunSettings.from_json(data, str(path))


Vocabulary = Tokenizer | SymbolVocabulary  # both encode and decode text alike


@dataclass
class LoadedRun:
    model: Transformer  # in eval mode, on the device asked for
    source: Vocabulary  # reads the source text
    target: Vocabulary  # writes the translations; the same object as `source` when joint
    settings: RunSettings
    checkpoint: Path  # the folder its weights came from


def load_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
             device: str = "cpu") -> LoadedRun:
    """A trained run, ready to decode; `checkpoint` a folder, else the catalogue's pick."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    settings = read_settings(run_dir)
    source, target = load_vocabularies(run_dir, settings)
    path = pick_checkpoint(run_dir, checkpoint)
    model = Transformer(settings.model)
    load_weights(path, model)
    restore_attention(model, settings.ablation)
    model.to(resolve_device(device)).eval()
    return LoadedRun(model, source, target, settings, path)


def load_vocabularies(run_dir: Path, settings: RunSettings) -> tuple[Vocabulary, Vocabulary]:
    """(source, target) vocabularies of a run: its tokenizer.json for both sides, or its
    tokenizer.src.json and tokenizer.tgt.json (`vocab = "separate"`), or the symbols of a
    synthetic task (`num_symbols` of its config); UserError for a translation run
    without its tokenizers."""
    files = tokenizer_files(settings.train.vocab)
    if all((run_dir / name).exists() for name in files.values()):
        loaded = {name: Tokenizer.load(run_dir / name) for name in set(files.values())}
        return loaded[files["src"]], loaded[files["tgt"]]
    tokenizer_path = run_dir / files["src"]
    train, model = settings.train, settings.model
    if train.task not in SYNTHETIC_TASKS:
        raise UserError(f"{tokenizer_path}: no such file (a translation run needs the "
                        "tokenizer it was trained with)")
    sizes = {model.src_vocab_size, model.tgt_vocab_size}
    # The model's ids must be exactly the symbols' (and the special ones): any other id
    # could be neither typed nor shown.
    if sizes != {FIRST_SYMBOL + train.num_symbols}:
        raise UserError(f"{run_dir / CONFIG_FILE}: num_symbols={train.num_symbols!r} does not fit "
                        f"the model's vocabulary of {' and '.join(map(str, sorted(sizes)))} ids "
                        f"({FIRST_SYMBOL} special ids + the symbols)")
    symbols = SymbolVocabulary(train.num_symbols)
    return symbols, symbols


def bleu_history(run_dir: str | os.PathLike) -> tuple[list[int], list[float]]:
    """(steps, validation BLEU) from the run's metrics.jsonl; empty lists without one."""
    try:
        records = read_metrics(Path(run_dir) / METRICS_FILE)
    except UserError:
        return [], []
    return metric_series(records, "eval", "bleu")
