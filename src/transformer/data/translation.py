"""The data of a translation task: a parallel corpus, its joint BPE, token-count batches.

Builds what the training loop needs from a prepared corpus (prepared.py): one made with
`transformer data prepare` (`data = DIR`), or the task's own corpus, prepared on first
use. Multi30k (`task = "multi30k"`, languages from `src_lang`/`tgt_lang`) is prepared
once into the cache ($TRANSFORMER_CACHE, else ~/.cache/transformer) and shared by every
run with the same languages and settings; a corpus a user brings (`task = "parallel"`
with `src`/`tgt` and optionally `valid_src`/`valid_tgt`; without them the last 1% of the
training pairs, at most 1,000, are held out) is prepared into RUN_DIR/data
(training/tasks.py `prepare_task` does it, and copies the tokenizer into the run as
RUN_DIR/tokenizer.json, before the processes build their tasks). Pairs with an empty
side, or too long for the model's positions, are dropped from training (and counted);
the ids stay on disk, the training side holds only the lengths array and the kept
pairs' positions.

Batches hold about `batch_tokens` padded tokens per side (Section 5.1), bucketed by
length; every epoch reshuffles from `seed + epoch`, and each DDP rank takes every
world_size-th batch. The stream's state (epoch, index) goes into checkpoints.

The validation split is kept whole: a sentence longer than the model's positions is cut
at the limit, the same way for the loss and for BLEU (counted once, in the "data:" line),
and symbols the vocabulary lacks are left out of the sources (sources.py). What the
training loop scores on it, BLEU, is training/tasks.py's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from .batching import collate, example_lengths, padding_fraction, token_batches
from .parallel import multi30k_files
from .prepared import MANIFEST, PreparedCorpus, prepare_corpus
from .sources import encode_sources
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

PREPARED = "data"  # RUN_DIR/data: where a run prepares its corpus when not given one


class TranslationData:
    def __init__(self, train_cfg, run_dir: Path, max_len: int, quiet: bool = False) -> None:
        self.cfg = train_cfg
        self.corpus = PreparedCorpus(prepared_folder(train_cfg, Path(run_dir), quiet))
        # The two sides' tokenizers: one object for a joint vocabulary.
        self.source, self.target = self.corpus.tokenizers["src"], self.corpus.tokenizers["tgt"]
        self.pad_id, self.bos_id, self.eos_id = PAD_ID, BOS_ID, EOS_ID

        # Training keeps the pairs with both sides non-empty and within the model's limit:
        # decided on the lengths array, the ids stay on disk.
        limit = min(max_len - 1, train_cfg.max_tokens_per_sentence or max_len - 1)
        lengths = self.corpus.lengths()  # (n, 2)
        keep = (lengths > 0).all(axis=1) & (lengths <= limit).all(axis=1)
        self.train_index = np.flatnonzero(keep)  # positions in the corpus of the kept pairs
        self.dropped = len(self.corpus) - len(self.train_index)
        self.lengths = lengths[keep] + 1  # as collate pads them: <eos>, and <bos> on the target
        # Validation keeps every pair, cut at the model's limit: the sources exactly as
        # decode_metrics will decode them, the targets for the loss (BLEU takes them whole).
        self.valid_pairs = self.corpus.valid_pairs()
        valid_src = encode_sources(self.source, [s for s, _ in self.valid_pairs], max_len)
        valid_tgt = self.target.encode_batch([t for _, t in self.valid_pairs])
        self.valid_ids = [(s, t[:max_len - 1]) for s, t in zip(valid_src.ids, valid_tgt)]
        n_cut = len(valid_src.cut) + sum(len(t) >= max_len for t in valid_tgt)
        batches = token_batches(self.lengths, train_cfg.batch_tokens, seed=train_cfg.seed)
        self.batches_per_epoch = len(batches)
        self.first_epoch = batches  # the stream's epoch 0, cut once
        if not quiet:
            print(f"data: {len(self.train_index):,} training pairs ({self.dropped} dropped: empty "
                  f"or longer than {limit} tokens), {len(self.valid_pairs):,} validation pairs "
                  f"(sentences cut to {max_len - 1} tokens: {n_cut}, "
                  f"unknown symbols left out: {sum(map(len, valid_src.dropped))}); "
                  f"{self.vocabularies()}; {len(batches):,} batches per epoch, "
                  f"{padding_fraction(batches, self.lengths):.1%} padding", flush=True)
        self.examples: list[tuple[str, str, str]] = []

    def vocabularies(self) -> str:
        """The data line's words on the vocabulary."""
        if self.source is self.target:
            return f"vocabulary {self.source.vocab_size:,}"
        return (f"separate vocabularies of {self.source.vocab_size:,} source and "
                f"{self.target.vocab_size:,} target ids (the source embedding is not tied "
                "to the target's)")

    def train_stream(self, state: dict | None, rank: int = 0, world_size: int = 1):
        """Yields (batch, data_state) forever, epoch after epoch, from `state` on."""
        epoch = state["epoch"] if state else 0
        index = state["index"] if state else 0
        while True:
            batches = self.first_epoch if epoch == 0 else \
                token_batches(self.lengths, self.cfg.batch_tokens, seed=self.cfg.seed + epoch)
            usable = len(batches) // world_size * world_size  # every rank takes as many steps
            mine = batches[rank:usable:world_size]
            while index < len(mine):
                pairs = [self.corpus.pair(i) for i in self.train_index[mine[index]]]
                batch = collate(pairs, self.pad_id, self.bos_id, self.eos_id)
                index += 1
                yield batch, {"epoch": epoch, "index": index}
            epoch, index = epoch + 1, 0

    def eval_batches(self):
        lengths = example_lengths(self.valid_ids)
        for batch in token_batches(lengths, self.cfg.batch_tokens, shuffle=False):
            yield collate([self.valid_ids[i] for i in batch], self.pad_id, self.bos_id, self.eos_id)


def prepared_folder(cfg, run_dir: Path, quiet: bool = False) -> Path:
    """The prepared corpus a run trains on: `data` (a folder of `transformer data prepare`)
    as it is; Multi30k prepared once into the cache and shared by every run that asks for
    the same languages and settings; a corpus of the run's own files prepared into
    RUN_DIR/data on first use (a resumed run, or another torchrun rank, finds it there)."""
    if cfg.data:
        return Path(cfg.data)
    say = (lambda text: None) if quiet else print
    if cfg.task == "wmt14":
        folder = wmt14_dir(cfg) / "prepared"
        if not (folder / MANIFEST).is_file():
            raise UserError(f"{folder}: no prepared WMT14 corpus; make it with `transformer data "
                            f"wmt14 --out {wmt14_dir(cfg)}` (or name its folder with --data-dir)")
        return folder
    if cfg.task == "multi30k":
        folder = cache_dir() / "prepared" / (
            f"multi30k-{cfg.src_lang}-{cfg.tgt_lang}-{cfg.tokenizer}-{cfg.vocab}-"
            f"{cfg.vocab_size}-{cfg.tokenizer_sample}")
    else:
        folder = run_dir / PREPARED
        if (folder / MANIFEST).is_file():
            return folder
    src, tgt, valid_src, valid_tgt = corpus_files(cfg)
    prepare_corpus(src, tgt, folder, valid_src, valid_tgt, vocab_size=cfg.vocab_size,
                   tokenizer_sample=cfg.tokenizer_sample, tokenizer=cfg.tokenizer,
                   vocab=cfg.vocab, say=say)
    return folder


def wmt14_dir(cfg) -> Path:
    """The folder `transformer data wmt14 --out DIR` made: `data_dir`, else data/wmt14."""
    return Path(cfg.data_dir or "data/wmt14")


def cache_dir() -> Path:
    """Where shared prepared corpora live: $TRANSFORMER_CACHE, else ~/.cache/transformer."""
    return Path(os.environ.get("TRANSFORMER_CACHE") or Path.home() / ".cache" / "transformer")


def corpus_files(cfg) -> tuple[Path, Path, Path | None, Path | None]:
    """(train source, train target, validation source, validation target) of the task."""
    if cfg.task == "multi30k":
        data_dir = cfg.data_dir or None
        return (*multi30k_files("train", cfg.src_lang, cfg.tgt_lang, data_dir),
                *multi30k_files("val", cfg.src_lang, cfg.tgt_lang, data_dir))
    if not cfg.src or not cfg.tgt:
        raise UserError("task parallel: give the training files with --src FILE --tgt FILE, "
                        "or a prepared corpus with --data DIR")
    if bool(cfg.valid_src) != bool(cfg.valid_tgt):
        raise UserError("task parallel: give both --valid-src and --valid-tgt, or neither")
    return (Path(cfg.src), Path(cfg.tgt), Path(cfg.valid_src) if cfg.valid_src else None,
            Path(cfg.valid_tgt) if cfg.valid_tgt else None)
