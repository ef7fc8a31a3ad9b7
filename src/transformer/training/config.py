"""The training settings: one dataclass, every key checked when it is built.

`TrainConfig` holds what the loop, the tasks and decoding during training read: how long
and how fast to train (Section 5.3, 5.4), the batches (Section 5.1), the data, and the
decoding used for validation BLEU (Section 6.1). Its fields are the training keys of a
recipe, spelled as in TOML files, `--set KEY=VALUE` and config.json (run/settings.py
resolves them). A bad value raises ValueError naming the key, before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..data.synthetic import TASKS as SYNTHETIC_TASKS
from ..decoding.translate import DecodingOptions
from ..model.config import _check_choice, _check_int

TASK_CHOICES = ("copy", "reverse", "sort", "multi30k", "wmt14", "parallel")


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
    cooldown: float = 0.0  # the rate falls linearly to 0 over this last share of the budget
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
    tokenizer_sample: int = 2_000_000  # training pairs the tokenizer learns from (evenly spread)
    tokenizer: str = "bpe"  # bpe | unigram
    vocab: str = "joint"  # joint (one vocabulary, all embeddings tied) | separate (one a side)
    data: str = ""  # a prepared corpus (`transformer data prepare`); "" = prepare the task's
    data_dir: str = ""  # Multi30k's folder ("": TRANSFORMER_DATA or ../shared/data/multi30k), or
    # the folder of `transformer data wmt14 --out DIR` ("": data/wmt14)
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
    patience: int = 0  # stop after this many evaluations without a better metric; 0 = never
    early_stop_metric: str = "bleu"  # bleu | chrf | loss; a synthetic task: exact_match | loss
    save_every: int = 1000
    keep_last: int = 5
    log_every: int = 10

    @property
    def decoding(self) -> DecodingOptions:
        """How the run decodes: validation BLEU, and translate, serve and explore after it."""
        return DecodingOptions(self.beam_size, self.length_penalty, self.max_len_a, self.max_len_b)

    def __post_init__(self) -> None:
        for name, check in TRAIN_CHECKS.items():
            check(name, getattr(self, name))
        if self.min_length > self.max_length:
            raise ValueError(f"min_length={self.min_length} must not exceed "
                             f"max_length={self.max_length}")
        # Early stopping on a score the task never measures would never stop.
        measured = ("exact_match", "loss") if self.task in SYNTHETIC_TASKS else \
            ("bleu", "chrf", "loss")
        if self.patience and self.early_stop_metric not in measured:
            raise ValueError(f"early_stop_metric={self.early_stop_metric!r}: a {self.task} run "
                             f"measures {', '.join(measured)}")


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
    "cooldown": _number(lambda x: 0 <= x <= 1, "in [0, 1]"),
    "label_smoothing": _number(lambda x: 0 <= x < 1, "in [0, 1)"),
    "clip_norm": _NON_NEGATIVE, "accum_steps": _at_least(1),
    "batch_size": _at_least(1), "batch_tokens": _at_least(1),
    "num_symbols": _at_least(1), "min_length": _at_least(1), "max_length": _at_least(1),
    "src_lang": _check_type(str), "tgt_lang": _check_type(str), "vocab_size": _at_least(1),
    "tokenizer_sample": _at_least(1), "data": _check_type(str),
    "tokenizer": _one_of("bpe", "unigram"), "vocab": _one_of("joint", "separate"),
    "data_dir": _check_type(str), "src": _check_type(str), "tgt": _check_type(str),
    "valid_src": _check_type(str), "valid_tgt": _check_type(str),
    "max_tokens_per_sentence": _at_least(0),
    "eval_every": _at_least(1), "eval_examples": _at_least(1), "bleu_every": _at_least(0),
    "beam_size": _at_least(1), "length_penalty": _NON_NEGATIVE, "max_len_a": _NON_NEGATIVE,
    "max_len_b": _at_least(0),
    "target_exact_match": _number(lambda x: 0 <= x <= 1, "in [0, 1]"),
    "patience": _at_least(0), "early_stop_metric": _one_of("bleu", "chrf", "loss", "exact_match"),
    "save_every": _at_least(1), "keep_last": _at_least(1), "log_every": _at_least(1),
}


def _article(kind: str) -> str:
    return {"bool": "true or false", "int": "an integer", "float": "a number",
            "str": "a string"}[kind]
