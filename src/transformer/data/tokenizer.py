"""One joint byte-pair-encoding vocabulary for source and target (Section 5.1).

"Sentences were encoded using byte-pair encoding, which has a shared source-target
vocabulary of about 37000 tokens." One vocabulary for both languages is what lets the
model tie its embeddings (Section 3.4). The BPE itself comes from the `tokenizers`
library; this file fixes the choices that matter for a translation model:

    special tokens     <pad>=0  <bos>=1  <eos>=2  <unk>=3   (the same in every run)
    normalisation      NFC only: no lowercasing, no accent stripping
    pre-tokenisation   Metaspace: each space becomes "▁" glued to the next word, so that
                       decoding restores the spaces exactly (no detokeniser needed)
    unknown characters a character never seen in training becomes <unk>; `encode_known`
                       leaves it out instead (for a model's input: it never saw <unk>)

    encode("A dog runs.")  -> list[int]   no <bos>/<eos>; batching adds them
    encode_known(texts)    -> (ids per text, unknown symbols left out per text)
    decode(ids)            -> str         skips the special tokens
    token(id)              -> str         one id's subword, e.g. "▁dog"
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from ..errors import UserError, one_line

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # their position in this tuple is their id
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
ZWJ = "\u200d"  # the zero-width joiner of emoji sequences such as 👨‍👩‍👧


MODELS = ("bpe", "unigram")  # the `tokenizer` key


def _empty(model: str) -> tokenizers.Tokenizer:
    """An untrained tokenizer with this project's normaliser, pre-tokeniser and decoder."""
    inner = tokenizers.Tokenizer(models.BPE(unk_token=UNK) if model == "bpe" else models.Unigram())
    inner.normalizer = normalizers.NFC()
    inner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    inner.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return inner


class Tokenizer:
    """Text <-> token ids with one BPE vocabulary; wraps a `tokenizers.Tokenizer`."""

    def __init__(self, inner: tokenizers.Tokenizer) -> None:
        self.inner = inner

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2,
              model: str = "bpe") -> Tokenizer:
        """Learn a vocabulary from `texts` (give both languages for a joint one).

        model "bpe": merges of frequent pairs (Sennrich et al., 2016), as the paper; the
        vocabulary may end up smaller than `vocab_size` when the text runs out of pairs
        that occur at least `min_frequency` times. "unigram": the pieces of a unigram
        language model (Kudo, 2018), pruned down to `vocab_size`.
        """
        if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS):
            raise UserError(f"vocab_size: must be an integer above {len(SPECIAL_TOKENS)}, "
                            f"got {vocab_size!r}")
        if model not in MODELS:
            raise ValueError(f"model={model!r}: expected one of {MODELS}")
        inner = _empty(model)
        if model == "bpe":
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                          special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        else:
            trainer = trainers.UnigramTrainer(vocab_size=vocab_size, unk_token=UNK,
                                              special_tokens=list(SPECIAL_TOKENS),
                                              show_progress=False)
        inner.train_from_iterator(texts, trainer=trainer)
        if inner.get_vocab_size() == len(SPECIAL_TOKENS):
            raise UserError("tokenizer: no text to train on (every training sentence is empty)")
        return cls(inner)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a tokenizer saved by `save` (one JSON file)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        try:
            inner = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception for any bad JSON
            raise UserError(f"{path}: not a valid tokenizer file ({one_line(e)})") from None
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            if inner.token_to_id(token) != expected_id:
                raise UserError(f"{path}: special token {token} must have id {expected_id}, "
                                f"found {inner.token_to_id(token)}")
        return cls(inner)

    def save(self, path: str | os.PathLike) -> None:
        """Write the whole tokenizer (vocabulary, merges, settings) as one JSON file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.inner.save(str(path))

    def encode(self, text: str) -> list[int]:
        """One sentence -> ids, without <bos>/<eos>."""
        return self.inner.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Many sentences at once (the library spreads them over threads)."""
        return [enc.ids for enc in self.inner.encode_batch(list(texts), add_special_tokens=False)]

    def encode_known(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[str]]]:
        """Like `encode_batch`, but characters the vocabulary lacks are left out, not <unk>.

        A model never sees <unk> in training (its vocabulary holds every training
        character), so an <unk> in its input can derail the whole sentence. Returns the
        ids and, per text, the symbols left out, e.g. ["🧒", "🧒", "⚽"].
        """
        ids = self.encode_batch(texts)
        dropped: list[list[str]] = [[] for _ in ids]
        for i, row in enumerate(ids):
            if UNK_ID in row:  # rare: only these texts are looked at character by character
                text, dropped[i] = self._without_unknown(texts[i])
                # A literal "<unk>" typed in the text is an added token, not a character.
                ids[i] = [t for t in self.encode(text) if t != UNK_ID]
        return ids, dropped

    def _without_unknown(self, text: str) -> tuple[str, list[str]]:
        """(text less its unknown characters, those grouped into symbols).

        A symbol goes with the spaces before it, so that the words around it read as
        before: "a ball ⚽ on" -> "a ball on", "the beach 🏖️." -> "the beach.". A mark,
        variation selector or joined emoji stays with its symbol: "🏖️" (two code points)
        is one symbol.
        """
        if self.inner.normalizer is not None:  # the characters BPE sees (NFC composes some)
            text = self.inner.normalizer.normalize_str(text)
        kept: list[str] = []
        symbols: list[str] = []
        previous = ""  # the last character, if it was unknown
        for char in text:
            unknown = char != " " and self.inner.token_to_id(char) is None
            if unknown and char.isspace():  # a tab, say: a space, not a symbol
                char, unknown = " ", False
            if unknown:
                while kept and kept[-1] == " ":
                    kept.pop()
                if previous and (unicodedata.category(char)[0] == "M" or ZWJ in (char, previous)):
                    symbols[-1] += char
                else:
                    symbols.append(char)
            elif char != " " or kept or not symbols:  # "🧒 plays" -> "plays"
                kept.append(char)
            previous = char if unknown else ""
        return "".join(kept), symbols

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> text; special tokens (<pad>, <bos>, <eos>, <unk>) are left out, not stopped at."""
        return self.inner.decode(list(ids), skip_special_tokens=True)

    def token(self, id: int) -> str:
        """The display string of one id, e.g. "▁dog" or "<eos>" (for plots and the explorer)."""
        return self.inner.id_to_token(id)

    @property
    def vocab_size(self) -> int:
        return self.inner.get_vocab_size()

    # The special ids are the same in every tokenizer of this project (see SPECIAL_TOKENS).
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
