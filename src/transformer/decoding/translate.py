"""The one way to translate many sentences: source ids in, hypotheses out, in batches.

    DecodingOptions                               how a run decodes (its settings)
    length_batches(ids, vocab, device)            (indices, src (b, S)) of similar lengths
    translate(model, vocab, ids, options, n_best) per source its n_best (tokens, score)
    translate_texts(model, vocab, texts, options) per text its best translation, as text

Sources are sorted by length and decoded `batch_sentences` at a time, so that a batch
holds little padding; results come back in input order, and do not depend on the
batching (beam search searches every sentence on its own rows). An empty source gets
no hypothesis. How text becomes source ids (unknown symbols, long lines) is
data/sources.py's; `translate`, `evaluate`, validation BLEU and the server all come here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..data.batching import collate
from ..data.sources import encode_sources
from .beam import beam_search

BATCH_SENTENCES = 128  # 1.17x the sentences/s of 64 at beam 4 on the Multi30k model, 2 cores
# The beam of the paper (Section 6.1): what translate, evaluate, serve, explore and plot
# search with unless told otherwise. (Validation BLEU uses the run's `beam_size`.)
DEFAULT_BEAM = 4
# Per source sentence: its hypotheses, best first, each (tokens, the beam's score).
Found = list[list[tuple[list[int], float]]]


@dataclass(frozen=True)
class DecodingOptions:
    """A run's decoding settings (its `beam_size`, `length_penalty`, `max_len_a`,
    `max_len_b` keys): see beam_search for what each does."""
    beam_size: int
    length_penalty: float
    max_len_a: float
    max_len_b: int

    def search_kwargs(self) -> dict:
        """The keyword arguments of beam_search (and sample_decode's length limit)."""
        return {"length_penalty": self.length_penalty, "max_len_a": self.max_len_a,
                "max_len_b": self.max_len_b}


Batch = tuple[list[int], torch.Tensor]  # (indices of the sources, src (b, S))


def length_batches(ids: Sequence[Sequence[int]], vocab, device: torch.device | str,
                   batch_sentences: int = BATCH_SENTENCES) -> Iterator[Batch]:
    """The non-empty sources, shortest first, `batch_sentences` at a time: each batch as
    (their indices in `ids`, src (b, S) on `device`, with <eos> and padding)."""
    todo = sorted((i for i, row in enumerate(ids) if row), key=lambda i: len(ids[i]))
    for start in range(0, len(todo), batch_sentences):
        chunk = todo[start: start + batch_sentences]
        src = collate([(ids[i], []) for i in chunk], vocab.pad_id, vocab.bos_id, vocab.eos_id)[0]
        yield chunk, src.to(device)


@torch.no_grad()
def translate(model, vocab, ids: Sequence[Sequence[int]], options: DecodingOptions,
              n_best: int = 1, beam_size: int | None = None) -> Found:
    """Beam search over every source (beam 1 is exactly greedy decoding): per source its
    `n_best` best (tokens, score), best first; none for an empty source. `beam_size`
    overrides the options' (a command's --beam)."""
    found: Found = [[] for _ in ids]
    device = next(model.parameters()).device
    for chunk, src in length_batches(ids, vocab, device):
        best = beam_search(model, src, beam_size=beam_size or options.beam_size, n_best=n_best,
                           bos_id=vocab.bos_id, eos_id=vocab.eos_id, return_scores=True,
                           **options.search_kwargs())
        for i, hypotheses in zip(chunk, best):
            found[i] = hypotheses
    return found


def best_texts(vocab, found: Found) -> list[str]:
    """The best hypothesis of each source as text; "" for a source without one."""
    return [vocab.decode(hypotheses[0][0]) if hypotheses else "" for hypotheses in found]


def translate_texts(model, vocab, texts: Sequence[str], options: DecodingOptions,
                    beam_size: int | None = None, target=None) -> list[str]:
    """Each text's best translation, in input order. Sources are read as data/sources.py
    reads them, a sentence past the model's limit cut there (a caller that must refuse
    such sentences, or tell of them, encodes first and calls `translate`). `vocab` reads
    the sources, `target` (a run with separate vocabularies) writes the translations."""
    sources = encode_sources(vocab, texts, model.cfg.max_len)
    found = translate(model, vocab, sources.ids, options, beam_size=beam_size)
    return best_texts(target or vocab, found)
