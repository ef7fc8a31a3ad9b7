"""A translation task: a parallel corpus, its joint BPE, token-count batches, BLEU.

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
and symbols the vocabulary lacks are left out of the sources (`Tokenizer.encode_known`).

    translate_texts(model, tokenizer, sentences, ...) -> list[str]   (beam or greedy, batched)
    encode_sources(tokenizer, sentences, max_len, long) -> (ids, cut, dropped)   what a model reads
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..decoding import beam_search
from ..errors import UserError
from ..evaluate import corpus_bleu
from .batching import collate, example_lengths, padding_fraction, token_batches
from .parallel import load_multi30k, read_parallel
from .tokenizer import Tokenizer

LONG_POLICIES = ("error", "truncate")  # what to do with a sentence past the model's limit


class TranslationTask:
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
        valid_src, cut, unknown = encode_sources(tok, [s for s, _ in self.valid_pairs], max_len,
                                                 long="truncate")
        valid_tgt = tok.encode_batch([t for _, t in self.valid_pairs])
        self.valid_ids = [(s, t[:max_len - 1]) for s, t in zip(valid_src, valid_tgt)]
        n_cut = len(cut) + sum(len(t) >= max_len for t in valid_tgt)
        batches = token_batches(self.lengths, train_cfg.batch_tokens, seed=train_cfg.seed)
        self.batches_per_epoch = len(batches)
        if not quiet:
            print(f"data: {len(self.train_ids):,} training pairs ({self.dropped} dropped: empty or "
                  f"longer than {limit} tokens), {len(self.valid_pairs):,} validation pairs "
                  f"(sentences cut to {max_len - 1} tokens: {n_cut}, "
                  f"unknown symbols left out: {sum(map(len, unknown))}); "
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

    def decode_metrics(self, model, train_cfg, device, step: int, final: bool = False) -> dict:
        """BLEU on the validation split, every `bleu_every` steps (0: at every evaluation)."""
        if not final and train_cfg.bleu_every and step % train_cfg.bleu_every:
            return {}
        sources = [s for s, _ in self.valid_pairs]
        references = [t for _, t in self.valid_pairs]
        hypotheses = translate_texts(model, self.tokenizer, sources, train_cfg.beam_size,
                                     train_cfg.length_penalty, train_cfg.max_len_a,
                                     train_cfg.max_len_b, device, long="truncate")
        score, signature = corpus_bleu(hypotheses, references)
        self.examples = list(zip(sources[:3], references[:3], hypotheses[:3]))
        return {"bleu": score, "bleu_signature": signature}


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


class TooLong(UserError):
    """Sentences longer than the model's limit, refused (long="error")."""


def encode_sources(tokenizer: Tokenizer, sentences: Sequence[str], max_len: int,
                   long: str = "error") -> tuple[list[list[int]], dict[int, int], list[list[str]]]:
    """Source ids as a model of `max_len` positions reads them: at most max_len - 1 tokens
    (collate adds <eos>), without the symbols its vocabulary lacks.

    A longer sentence is cut at the limit (long="truncate") or, before anything else is
    done, refused with one TooLong naming every such line (long="error"). Returns the
    ids, {index: tokens before the cut} of the cut sentences, and per sentence the
    unknown symbols left out.
    """
    if long not in LONG_POLICIES:
        raise ValueError(f"long={long!r}: expected one of {LONG_POLICIES}")
    limit = max_len - 1
    ids, dropped = tokenizer.encode_known(sentences)
    cut = {i: len(row) for i, row in enumerate(ids) if len(row) > limit}
    if cut and long == "error":
        raise TooLong(f"{_input_lines(cut)}: longer than the model's limit of {limit} tokens "
                      f"(max_len={max_len})")
    return [row[:limit] for row in ids], cut, dropped


def _input_lines(indices) -> str:
    """0-based indices -> "input line 3" or "input lines 3, 7" (1-based, every one named)."""
    listed = ", ".join(str(i + 1) for i in sorted(indices))
    return f"input line{'s' if len(indices) > 1 else ''} {listed}"


def _report_changes(report, cut: dict[int, int], dropped: list[list[str]], limit: int) -> None:
    """Tell `report(kind, message)` of each sentence changed before decoding, in line order."""
    for i in sorted(set(cut) | {i for i, symbols in enumerate(dropped) if symbols}):
        if dropped[i]:
            shown = ", ".join(dict.fromkeys(dropped[i]))  # each symbol once, in order
            report("note", f"input line {i + 1}: {len(dropped[i])} unknown "
                           f"symbol{'s' if len(dropped[i]) > 1 else ''} dropped ({shown})")
        if i in cut:
            report("warning", f"input line {i + 1}: {cut[i]} tokens, cut to {limit}")


@torch.no_grad()
def translate_texts(model, tokenizer: Tokenizer, sentences: list[str], beam_size: int = 4,
                    length_penalty: float = 0.6, max_len_a: float = 1.0, max_len_b: int = 50,
                    device: torch.device | str = "cpu", batch_sentences: int = 64,
                    long: str = "error", report=None, n_best: int = 1,
                    return_scores: bool = False) -> list:
    """Translate sentences in length-sorted batches; returns translations in input order.

    The sources are read as `encode_sources` makes them: unknown symbols left out, a
    sentence past the model's limit refused (long="error", a UserError naming every such
    line, 1-based) or cut (long="truncate"). `report(kind, message)`, if given, is told of
    each: ("warning", "input line 3: 40 tokens, cut to 31"),
    ("note", "input line 1: 2 unknown symbols dropped (⚽, 🏖️)").

    An empty sentence gets an empty translation. With `return_scores`, each sentence
    gets its `n_best` best (text, score) pairs instead, best first (see beam_search for
    the score); an empty sentence gets none.
    """
    ids, cut, dropped = encode_sources(tokenizer, sentences, model.cfg.max_len, long)
    if report is not None:
        _report_changes(report, cut, dropped, model.cfg.max_len - 1)
    outputs: list[list[tuple[str, float]]] = [[] for _ in sentences]
    todo = sorted((i for i, row in enumerate(ids) if row), key=lambda i: len(ids[i]))
    for start in range(0, len(todo), batch_sentences):
        chunk = todo[start: start + batch_sentences]
        src = collate([(ids[i], []) for i in chunk], tokenizer.pad_id, tokenizer.bos_id,
                      tokenizer.eos_id)[0].to(device)
        # beam size 1 is exactly greedy decoding (tests/test_decoding.py)
        hyps = beam_search(model, src, beam_size=beam_size, length_penalty=length_penalty,
                           max_len_a=max_len_a, max_len_b=max_len_b, bos_id=tokenizer.bos_id,
                           eos_id=tokenizer.eos_id, n_best=n_best, return_scores=True)
        for i, best in zip(chunk, hyps):
            outputs[i] = [(tokenizer.decode(tokens), score) for tokens, score in best]
    if return_scores:
        return outputs
    return [best[0][0] if best else "" for best in outputs]
