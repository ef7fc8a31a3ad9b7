"""Run settings: everything a run is, as one value, resolved one way.

A run is described by one flat set of keys, spelled the same in TOML recipes, after
`--set KEY=VALUE`, in config.json and in the docs. A key is a model key (a
`TransformerConfig` field, e.g. `d_model`) or a training key (a `TrainConfig` field,
e.g. `warmup`). The vocabulary sizes and `pad_id` are not keys: the task's tokenizer
(or its symbol set) decides them, once it exists (`with_vocabulary`).

    new run:   field defaults < recipe (--config, else the task's own) < --set < flags
    resume:    the run's config.json < what the command line asks, where it may change

    new_settings(task, asked) -> RunSettings        asked = asked_values(...)
    resumed_settings(saved, asked) -> RunSettings   UserError for a key that may not change
    settings_from_values(values) -> RunSettings     any flat {key: value}, checked

Every value is checked once, when the RunSettings is built: an unknown key, a value of
the wrong type or out of range is a UserError naming the key, before anything is made.
The shipped recipes (run/recipes/*.toml) are package data; `--config NAME` picks one
by name, `--config FILE` reads any file.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..model.config import TransformerConfig
from ..training.config import TrainConfig, _article

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# What the task decides, not the user: never a key.
VOCABULARY_FIELDS = ("src_vocab_size", "tgt_vocab_size", "pad_id")
MODEL_KEYS = {f.name: f for f in dataclasses.fields(TransformerConfig)
              if f.name not in VOCABULARY_FIELDS}
TRAIN_KEYS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# What `train --resume` may change: how long the run goes on, how often it reports and
# saves, where it runs. Everything else (model shape, vocabulary, data, seed, ...) is what
# the run is: its checkpoints and its tokenizer only fit the values it has.
RESUMABLE_KEYS = ("steps", "max_minutes", "eval_every", "save_every", "bleu_every",
                  "log_every", "keep_last", "threads", "device", "patience")
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
# The recipe a task trains with when no --config is given: small enough for a CPU. The
# synthetic tasks share the copy recipe (its task replaced); "parallel" keeps the defaults.
TASK_RECIPES = {"copy": "copy", "reverse": "copy", "sort": "copy", "multi30k": "multi30k",
                "wmt14": "wmt14"}


@dataclass(frozen=True)
class RunSettings:
    """The model's and the training's settings of one run, checked.

    Until `with_vocabulary`, the model's vocabulary fields hold their defaults: the
    vocabulary is the task's to decide. `ablation` is the section `transformer ablate`
    adds to a variant's config.json (which attention function it trained with).
    """
    model: TransformerConfig
    train: TrainConfig
    ablation: dict | None = None

    def with_vocabulary(self, vocab_size: int, pad_id: int,
                        tgt_vocab_size: int | None = None) -> RunSettings:
        """The settings with the task's vocabulary: one shared (`vocab_size`), or a source
        and a target one of their own sizes. Two vocabularies cannot share one embedding:
        `tie_embeddings = "all"` then ties the decoder's input and output only."""
        tgt_vocab_size = tgt_vocab_size or vocab_size
        tie = self.model.tie_embeddings
        if tgt_vocab_size != vocab_size and tie == "all":
            tie = "decoder"
        model = self.model.replace(src_vocab_size=vocab_size, tgt_vocab_size=tgt_vocab_size,
                                   pad_id=pad_id, tie_embeddings=tie)
        return dataclasses.replace(self, model=model)

    def values(self) -> dict:
        """The flat keys (model and training) with their values."""
        model = {k: v for k, v in dataclasses.asdict(self.model).items() if k in MODEL_KEYS}
        return {**model, **dataclasses.asdict(self.train)}

    def to_json(self) -> dict:
        """config.json's content: {"model": ..., "train": ..., ["ablation": ...]}."""
        data = {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}
        if self.ablation is not None:
            data["ablation"] = self.ablation
        return data

    @classmethod
    def from_json(cls, data, where: str) -> RunSettings:
        """The settings of a config.json's content; UserError naming `where` if it is not one."""
        try:
            model = TransformerConfig(**data["model"])
            train = TrainConfig(**data["train"])
            ablation = data.get("ablation")
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            # edited by hand, or written by another version
            detail = f"no key {error}" if isinstance(error, KeyError) else error
            raise UserError(f"{where}: not a run config ({detail})") from None
        return cls(model, train, ablation if isinstance(ablation, dict) else None)


# --- resolving ---------------------------------------------------------------------------

def asked_values(config: str | None, sets: list[str], task: str | None, flags: dict) -> dict:
    """The keys the command line sets: --config < --set < TASK and the flags not None."""
    values = read_recipe(config) if config else {}
    values.update(parse_sets(sets))
    if task:
        values["task"] = task
    values.update((key, value) for key, value in flags.items() if value is not None)
    return values


def new_settings(task: str | None, config: str | None, asked: dict) -> RunSettings:
    """A new run's settings: the task's own recipe (when no --config is given) < `asked`."""
    own = TASK_RECIPES.get(task) if not config else None
    values = read_recipe(own) if own else {}
    return settings_from_values({**values, **asked})


def resumed_settings(saved: RunSettings, asked: dict) -> RunSettings:
    """A stopped run's settings with `asked` applied; UserError on the first key asked that
    would change what the run is."""
    values = saved.values()
    for key, value in asked.items():
        if key not in RESUMABLE_KEYS and values.get(key) != value:
            raise UserError(f"--resume: {key!r} cannot change on resume (the run has "
                            f"{values.get(key)!r}, asked {value!r}); what can: "
                            f"{', '.join(RESUMABLE_KEYS)}")
    train = _train_config({**dataclasses.asdict(saved.train), **asked})
    return dataclasses.replace(saved, train=train)


def settings_from_values(values: dict) -> RunSettings:
    """Flat {key: value} -> RunSettings, every key known and every value checked."""
    for key, value in values.items():
        _typed(key, value, "settings")
    try:
        model = TransformerConfig(**{k: v for k, v in values.items() if k in MODEL_KEYS})
    except ValueError as error:
        raise UserError(f"invalid model setting: {error}") from None
    return RunSettings(model, _train_config(values))


def _train_config(values: dict) -> TrainConfig:
    try:
        return TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_KEYS})
    except ValueError as error:
        raise UserError(f"invalid training setting: {error}") from None


# --- recipes and --set -------------------------------------------------------------------

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
        values[key] = _typed(key, _parse_string(key, text.strip(), f"--set {key}"), f"--set {key}")
    return values


def _typed(key: str, value, where: str):
    """`value` checked against the key's declared type (an int is a fine float)."""
    field = MODEL_KEYS.get(key) or TRAIN_KEYS.get(key)
    if field is None:
        known = ", ".join(sorted([*MODEL_KEYS, *TRAIN_KEYS]))
        raise UserError(f"{where}: unknown key '{key}' (known keys: {known})")
    kind = _kind(key)
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not ok:
        raise UserError(f"{where}: key '{key}' expects {_article(kind)}, got {value!r}")
    return float(value) if kind == "float" else value


def _kind(key: str) -> str:
    field = MODEL_KEYS.get(key) or TRAIN_KEYS[key]
    return field.type if isinstance(field.type, str) else field.type.__name__


def _parse_string(key: str, text: str, where: str):
    """A --set value, given as text, converted to the key's type (unknown keys left as text)."""
    kind = _kind(key) if key in MODEL_KEYS or key in TRAIN_KEYS else "str"
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
