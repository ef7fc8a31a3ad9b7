"""The data of a translation task: a parallel corpus, its joint BPE, token-count batches.

Builds what the training loop needs from Multi30k (`task = "multi30k"`, languages from
`src_lang`/`tgt_lang`) or from any line-aligned corpus a user brings (`task = "parallel"`
with `src`/`tgt` and optionally `valid_src`/`valid_tgt`; without them the last 1% of the
training pairs, at most 1,000, are held out). The tokenizer is trained on the training
split (both sides, one vocabulary) and saved as RUN_DIR/tokenizer.json; a resumed run
loads it back. Pairs with an empty side, or too long for the model's positions, are
dropped from training (and counted).

Batches hold about `batch_tokens` padded tokens per side (Section 5.1), bucketed by
length; every epoch reshuffles from `seed + epoch`, and each DDP rank takes every
world_size-th batch. The stream's state (epoch, index) goes into checkpoints.

The validation split is kept whole: a sentence longer than the model's positions is cut
at the limit, the same way for the loss and for BLEU (counted once, in the "data:" line),
and symbols the vocabulary lacks are left out of the sources (sources.py). What the
training loop scores on it, BLEU, is training/tasks.py's.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .batching import collate, example_lengths, padding_fraction, token_batches
from .parallel import load_multi30k, read_parallel
from .sources import encode_sources
from .tokenizer import Tokenizer


class TranslationData:
    def __init__(self, train_cfg, run_dir: Path, max_len: int, quiet: bool = False) -> None:
        self.cfg = train_cfg
        train_pairs, self.valid_pairs = load_pairs(train_cfg)
        tokenizer_path = Path(run_dir) / "tokenizer.json"
        if tokenizer_path.exists():
            self.tokenizer = Tokenizer.load(tokenizer_path)
        else:
            texts = [s for pair in train_pairs for s in pair]
            self.tokenizer = Tokenizer.train(texts, train_cfg.vocab_size)
            self.tokenizer.save(tokenizer_path)
        tok = self.tokenizer
        self.vocab_size, self.pad_id = tok.vocab_size, tok.pad_id
        self.bos_id, self.eos_id = tok.bos_id, tok.eos_id

        limit = min(max_len - 1, train_cfg.max_tokens_per_sentence or max_len - 1)
        ids = zip(tok.encode_batch([s for s, _ in train_pairs]),
                  tok.encode_batch([t for _, t in train_pairs]))
        self.train_ids = [(s, t) for s, t in ids if 0 < len(s) <= limit and 0 < len(t) <= limit]
        self.dropped = len(train_pairs) - len(self.train_ids)
        self.lengths = example_lengths(self.train_ids)
        # Validation keeps every pair, cut at the model's limit: the sources exactly as
        # decode_metrics will decode them, the targets for the loss (BLEU takes them whole).
        valid_src = encode_sources(tok, [s for s, _ in self.valid_pairs], max_len)
        valid_tgt = tok.encode_batch([t for _, t in self.valid_pairs])
        self.valid_ids = [(s, t[:max_len - 1]) for s, t in zip(valid_src.ids, valid_tgt)]
        n_cut = len(valid_src.cut) + sum(len(t) >= max_len for t in valid_tgt)
        batches = token_batches(self.lengths, train_cfg.batch_tokens, seed=train_cfg.seed)
        self.batches_per_epoch = len(batches)
        if not quiet:
            print(f"data: {len(self.train_ids):,} training pairs ({self.dropped} dropped: empty or "
                  f"longer than {limit} tokens), {len(self.valid_pairs):,} validation pairs "
                  f"(sentences cut to {max_len - 1} tokens: {n_cut}, "
                  f"unknown symbols left out: {sum(map(len, valid_src.dropped))}); "
                  f"vocabulary {tok.vocab_size:,}; {len(batches):,} batches per epoch, "
                  f"{padding_fraction(batches, self.lengths):.1%} padding", flush=True)
        self.examples: list[tuple[str, str, str]] = []

    def train_stream(self, state: dict | None, rank: int = 0, world_size: int = 1):
        """Yields (batch, data_state) forever, epoch after epoch, from `state` on."""
        epoch = state["epoch"] if state else 0
        index = state["index"] if state else 0
        while True:
            batches = token_batches(self.lengths, self.cfg.batch_tokens, seed=self.cfg.seed + epoch)
            usable = len(batches) // world_size * world_size  # every rank takes as many steps
            mine = batches[rank:usable:world_size]
            while index < len(mine):
                batch = collate([self.train_ids[i] for i in mine[index]],
                                self.pad_id, self.bos_id, self.eos_id)
                index += 1
                yield batch, {"epoch": epoch, "index": index}
            epoch, index = epoch + 1, 0

    def eval_batches(self):
        lengths = example_lengths(self.valid_ids)
        for batch in token_batches(lengths, self.cfg.batch_tokens, shuffle=False):
            yield collate([self.valid_ids[i] for i in batch], self.pad_id, self.bos_id, self.eos_id)


def load_pairs(cfg) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(training pairs, validation pairs) for the task named in the config."""
    if cfg.task == "multi30k":
        data_dir = cfg.data_dir or None
        return (load_multi30k("train", cfg.src_lang, cfg.tgt_lang, data_dir),
                load_multi30k("val", cfg.src_lang, cfg.tgt_lang, data_dir))
    if not cfg.src or not cfg.tgt:
        raise UserError("task parallel: give the training files with --src FILE --tgt FILE")
    pairs = read_parallel(cfg.src, cfg.tgt)
    if cfg.valid_src or cfg.valid_tgt:
        if not (cfg.valid_src and cfg.valid_tgt):
            raise UserError("task parallel: give both --valid-src and --valid-tgt, or neither")
        return pairs, read_parallel(cfg.valid_src, cfg.valid_tgt)
    held_out = min(1000, max(1, len(pairs) // 100))
    if len(pairs) < 2:
        raise UserError(f"{cfg.src}: need at least 2 sentence pairs to hold one out for validation")
    return pairs[:-held_out], pairs[-held_out:]
