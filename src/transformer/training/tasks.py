"""What a run trains on: a synthetic task (copy, reverse, sort) or a translation corpus,
and how real decoding scores it during training.

The training loop knows a task only through the `Task` protocol below: exactly the
members it uses, written down once. The data come from data/ (synthetic.py,
translation.py); what this file adds is the score of real decoding on the held-out
part, never teacher-forced argmax: exact match of greedy decodes for a synthetic task,
sacreBLEU of beam search (the run's decoding settings) for a translation task.
`make_task` picks the class for a run's settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..data.prepared import PreparedCorpus
from ..data.synthetic import FIRST_SYMBOL, SyntheticSequences
from ..data.synthetic import TASKS as SYNTHETIC_TASKS
from ..data.tokenizer import PAD_ID, Tokenizer
from ..data.translation import TranslationData, prepared_folder
from ..decoding.bleu import chrf, corpus_bleu
from ..decoding.greedy import greedy_decode
from ..decoding.translate import translate_texts
from ..errors import UserError
from .config import TrainConfig

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # src (B, S), tgt_in (B, T), tgt_out (B, T)


class Task(Protocol):
    pad_id: int

    def train_stream(self, state: dict | None, rank: int, world_size: int
                     ) -> Iterator[tuple[Batch, dict]]:
        """Training batches forever, each with the stream's position after it (a small dict
        for the checkpoint); `state` is such a position to resume from, None to start.
        Rank `rank` of `world_size` gets its own share of the batches."""

    def eval_batches(self) -> Iterator[Batch]:
        """The held-out batches, the same at every call."""

    def decode_metrics(self, model: nn.Module, train_cfg: TrainConfig, device: torch.device,
                       step: int, final: bool) -> dict:
        """Scores of real decoding on the held-out data at `step`: {"exact_match": ...} or
        {"bleu": ..., "bleu_signature": ..., "chrf": ...}; may be {} at steps where it is not due."""


class SyntheticTask(SyntheticSequences):
    def decode_metrics(self, model, train_cfg, device, step: int, final: bool = False) -> dict:
        """Exact match of greedy decodes on the held-out examples; keeps a few as examples."""
        hypotheses = []
        for src, _, _ in self.eval_batches():
            hypotheses += greedy_decode(model, src.to(device), self.max_length + 2,
                                        self.bos_id, self.eos_id)
        targets = [tgt for _, tgt in self.eval_pairs]
        self.examples = [(self.to_text(src), self.to_text(tgt), self.to_text(hyp))
                         for (src, tgt), hyp in zip(self.eval_pairs[:5], hypotheses)]
        exact = sum(hyp == tgt for hyp, tgt in zip(hypotheses, targets))
        return {"exact_match": exact / max(len(targets), 1)}


class TranslationTask(TranslationData):
    def decode_metrics(self, model, train_cfg, device, step: int, final: bool = False) -> dict:
        """BLEU on the validation split, every `bleu_every` steps (0: at every evaluation)."""
        if not final and train_cfg.bleu_every and step % train_cfg.bleu_every:
            return {}
        sources = [s for s, _ in self.valid_pairs]
        references = [t for _, t in self.valid_pairs]
        hypotheses = translate_texts(model, self.source, sources, train_cfg.decoding,
                                     target=self.target)
        score, signature = corpus_bleu(hypotheses, references)
        self.examples = list(zip(sources[:3], references[:3], hypotheses[:3]))
        return {"bleu": score, "bleu_signature": signature, "chrf": chrf(hypotheses, references)[0]}


def prepare_task(train_cfg: TrainConfig, run_dir: Path, quiet: bool = False
                 ) -> tuple[int, int, int]:
    """What one process does before the others may build the task: a translation task's
    corpus prepared (if it is not yet) and its tokenizers copied into the run. Returns
    what the model's config needs: the source and target vocabulary sizes and the pad id."""
    if train_cfg.task in SYNTHETIC_TASKS:
        return FIRST_SYMBOL + train_cfg.num_symbols, FIRST_SYMBOL + train_cfg.num_symbols, PAD_ID
    corpus = PreparedCorpus(prepared_folder(train_cfg, run_dir, quiet))
    for side, name in corpus.tokenizer_files.items():
        if not (run_dir / name).exists():  # the run's own copies: translate reads them
            corpus.tokenizers[side].save(run_dir / name)
        elif Tokenizer.load(run_dir / name).inner.to_str() != corpus.tokenizers[side].inner.to_str():
            # A run's checkpoints fit the ids it began with: a corpus prepared again with
            # other settings since then would feed it other ids under the same numbers.
            raise UserError(f"{corpus.folder}: its tokenizer is not the one this run began with "
                            f"({run_dir / name}); it was prepared again with other settings or "
                            "inputs: train from the corpus the run began with, or start a new run")
    source, target = corpus.tokenizers["src"], corpus.tokenizers["tgt"]
    return source.vocab_size, target.vocab_size, source.pad_id


def make_task(train_cfg: TrainConfig, run_dir: Path, max_len: int, quiet: bool = False) -> Task:
    """The task of a run: `max_len` is the model's (a translation task cuts its
    validation sentences there and drops longer training pairs)."""
    if train_cfg.task in SYNTHETIC_TASKS:
        return SyntheticTask(train_cfg.task, train_cfg.num_symbols, train_cfg.min_length,
                             train_cfg.max_length, train_cfg.batch_size, train_cfg.seed,
                             train_cfg.eval_examples)
    return TranslationTask(train_cfg, run_dir, max_len=max_len, quiet=quiet)
