"""Recipes: the one flat set of keys shared by TOML files, `--set KEY=VALUE` and run dirs.

A key is either a model key (a `TransformerConfig` field such as `d_model`, `n_heads`,
`warmup` is not one) or a training key (a `TrainConfig` field below). The same name is
used in the code, the TOML recipe, on the command line and in the docs. Resolution
order: dataclass defaults < recipe file < `--set` < explicit flags (`--steps`, ...).

The shipped recipes (recipes/*.toml: copy, multi30k, base, big) are package data, so a
pip-installed user has them too; `--config NAME` picks one by name, `--config FILE`
reads any file.

Unknown keys, ill-typed values and values out of range are the user's to fix: they raise
UserError naming the key (the CLI prints it and exits 2), before anything is made. Every
training key is checked in `TrainConfig.__post_init__` against TRAIN_CHECKS, as every
model key is in `TransformerConfig`. The vocabulary sizes and `pad_id` are not keys:
they come from the task (its tokenizer or its symbol set).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import TransformerConfig, _check_choice, _check_int
from .errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


TASK_CHOICES = ("copy", "reverse", "sort", "multi30k", "parallel")


@dataclass
class TrainConfig:
    task: str = "copy"  # copy | reverse | sort | multi30k | parallel
    steps: int = 1000  # optimizer updates
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast) | auto (bf16 where the hardware has it)
    compile: bool = False  # torch.compile the model for training
    threads: int = 0  # CPU threads for torch; 0 = PyTorch's default (one per core)
    # optimisation (Section 5.3, 5.4)
    lr_factor: float = 1.0
    warmup: int = 4000
    schedule: str = "noam"  # noam | constant (the Noam peak from step 1: an ablation)
    label_smoothing: float = 0.1
    clip_norm: float = 0.0  # 0 = no gradient clipping
    accum_steps: int = 1  # micro-batches per optimizer update
    # batches
    batch_size: int = 64  # sentences per batch (synthetic tasks)
    batch_tokens: int = 4096  # padded tokens per side per batch (translation)
    # synthetic tasks
    num_symbols: int = 16
    min_length: int = 3
    max_length: int = 12
    # translation data
    src_lang: str = "en"
    tgt_lang: str = "de"
    vocab_size: int = 8000  # joint BPE vocabulary
    data_dir: str = ""  # Multi30k folder; "" = TRANSFORMER_DATA or ../shared/data/multi30k
    src: str = ""  # parallel task: training files
    tgt: str = ""
    valid_src: str = ""
    valid_tgt: str = ""
    max_tokens_per_sentence: int = 0  # drop training pairs longer than this; 0 = model max_len
    # evaluation, decoding, checkpoints
    eval_every: int = 200  # steps between evaluations (loss, exact match)
    eval_examples: int = 200  # held-out examples (synthetic tasks)
    bleu_every: int = 0  # BLEU every N steps (at evaluations, and the last); 0 = at every evaluation
    beam_size: int = 4
    length_penalty: float = 0.6
    max_len_a: float = 1.0
    max_len_b: int = 50
    target_exact_match: float = 0.0  # stop once exact match reaches it (synthetic); 0 = never
    save_every: int = 1000
    keep_last: int = 5
    log_every: int = 10

    def __post_init__(self) -> None:
        for name, check in TRAIN_CHECKS.items():
            check(name, getattr(self, name))
        if self.min_length > self.max_length:
            raise ValueError(f"min_length={self.min_length} must not exceed "
                             f"max_length={self.max_length}")


def _at_least(minimum: int):
    return lambda name, value: _check_int(name, value, minimum)


def _number(test, words: str):
    """A check for a float key: `test(value)` must hold; `words` say the range."""
    def check(name: str, value) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not test(value):
            raise ValueError(f"{name}={value!r} must be a number {words}")
    return check


def _one_of(*choices: str):
    return lambda name, value: _check_choice(name, value, choices)


def _check_device(name: str, value) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise ValueError(f"{name}={value!r} must be cpu, cuda or cuda:N")


def _check_type(kind: type):
    def check(name: str, value) -> None:
        if not isinstance(value, kind):
            raise ValueError(f"{name}={value!r} must be {_article(kind.__name__)}")
    return check


_NON_NEGATIVE = _number(lambda x: x >= 0, ">= 0")
# The check of every training key; TrainConfig.__post_init__ runs them all.
TRAIN_CHECKS = {
    "task": _one_of(*TASK_CHOICES),
    "steps": _at_least(1), "max_minutes": _NON_NEGATIVE, "seed": _at_least(0),
    "device": _check_device, "precision": _one_of("fp32", "bf16", "auto"), "compile": _check_type(bool),
    "threads": _at_least(0),
    "lr_factor": _number(lambda x: x > 0, "> 0"), "warmup": _at_least(1),
    "schedule": _one_of("noam", "constant"),
    "label_smoothing": _number(lambda x: 0 <= x < 1, "in [0, 1)"),
    "clip_norm": _NON_NEGATIVE, "accum_steps": _at_least(1),
    "batch_size": _at_least(1), "batch_tokens": _at_least(1),
    "num_symbols": _at_least(1), "min_length": _at_least(1), "max_length": _at_least(1),
    "src_lang": _check_type(str), "tgt_lang": _check_type(str), "vocab_size": _at_least(1),
    "data_dir": _check_type(str), "src": _check_type(str), "tgt": _check_type(str),
    "valid_src": _check_type(str), "valid_tgt": _check_type(str),
    "max_tokens_per_sentence": _at_least(0),
    "eval_every": _at_least(1), "eval_examples": _at_least(1), "bleu_every": _at_least(0),
    "beam_size": _at_least(1), "length_penalty": _NON_NEGATIVE, "max_len_a": _NON_NEGATIVE,
    "max_len_b": _at_least(0),
    "target_exact_match": _number(lambda x: 0 <= x <= 1, "in [0, 1]"),
    "save_every": _at_least(1), "keep_last": _at_least(1), "log_every": _at_least(1),
}


MODEL_KEYS = {f.name: f for f in dataclasses.fields(TransformerConfig)
              if f.name not in ("src_vocab_size", "tgt_vocab_size", "pad_id")}
TRAIN_KEYS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _typed(key: str, value, where: str):
    """Check (and for strings from --set, convert) a value to the key's declared type."""
    field = MODEL_KEYS.get(key) or TRAIN_KEYS.get(key)
    if field is None:
        known = ", ".join(sorted([*MODEL_KEYS, *TRAIN_KEYS]))
        raise UserError(f"{where}: unknown key '{key}' (known keys: {known})")
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    if isinstance(value, str) and where.startswith("--set"):
        value = _parse_string(key, value, kind, where)
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise UserError(f"{where}: key '{key}' expects {_article(kind)}, got {value!r}")
    return float(value) if kind == "float" else value


def _parse_string(key: str, text: str, kind: str, where: str):
    try:
        if kind == "bool":
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise UserError(f"{where}: key '{key}' expects {_article(kind)}, got {text!r}") from None
    return text


def _article(kind: str) -> str:
    return {"bool": "true or false", "int": "an integer", "float": "a number",
            "str": "a string"}[kind]


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


# The recipe a task trains with when no --config is given: small enough for a CPU. The
# synthetic tasks share the copy recipe (its task replaced); "parallel" keeps the defaults.
TASK_RECIPES = {"copy": "copy", "reverse": "copy", "sort": "copy", "multi30k": "multi30k"}


def shipped_recipes() -> list[str]:
    """The names of the recipes that come with the package."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: `name_or_path` itself if it is a file, else the shipped recipe of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    raise UserError(f"{name_or_path}: no such recipe file, nor a shipped recipe "
                    f"({', '.join(shipped_recipes())})")


def read_recipe(name_or_path: str | Path) -> dict:
    """A flat TOML recipe (a file, or a shipped recipe's name) -> {key: value}, each key checked."""
    path = find_recipe(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    return {key: _typed(key, value, str(path)) for key, value in data.items()}


def parse_sets(items: list[str]) -> dict:
    """["d_model=128", "norm_first=true"] -> {"d_model": 128, "norm_first": True}."""
    values = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        values[key] = _typed(key, text.strip(), f"--set {key}")
    return values


def split_keys(values: dict) -> tuple[dict, TrainConfig]:
    """Separate model keys from training keys; build and check the TrainConfig."""
    model = {k: v for k, v in values.items() if k in MODEL_KEYS}
    try:
        train = TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_KEYS})
    except ValueError as error:
        raise UserError(f"invalid training setting: {error}") from None
    return model, train


def build_model_config(model_keys: dict, vocab_size: int, pad_id: int) -> TransformerConfig:
    """The TransformerConfig for a task's vocabulary; a bad value becomes a UserError."""
    try:
        return TransformerConfig(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size,
                                 pad_id=pad_id, **model_keys)
    except ValueError as error:
        raise UserError(f"invalid model setting: {error}") from None
