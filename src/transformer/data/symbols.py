"""The vocabulary of a synthetic task (copy, reverse, sort): numbered symbols as text.

A synthetic run has no tokenizer.json: `num_symbols` in its config.json fixes its
vocabulary. Ids 0-3 are <pad>, <bos>, <eos>, <unk> as in every run; symbol k has id
FIRST_SYMBOL + k, and its text is the number k, the way training prints its examples:

    encode("3 7 1 12")   -> [7, 11, 5, 16]   whitespace-separated numbers 0 .. num_symbols - 1
    decode([7, 11, 5])   -> "3 7 1"          special tokens left out
    token(7) -> "3"      token(2) -> "<eos>"

It has the methods of the BPE `Tokenizer` that translating, serving and exploring use,
so a copy run goes through them exactly as a translation run does. One difference: a
word that is not one of the run's symbols ("x", "-1", "16" in a 16-symbol run) is
refused with a UserError naming it, not left out. Left out, it would silently change
the sequence to copy or sort, and the model would look wrong for the user's typo.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UserError
from .synthetic import FIRST_SYMBOL
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID


class SymbolVocabulary:
    """Text <-> ids for a synthetic task of `num_symbols` symbols."""

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __init__(self, num_symbols: int) -> None:
        if isinstance(num_symbols, bool) or not isinstance(num_symbols, int) or num_symbols < 1:
            raise ValueError(f"num_symbols={num_symbols!r} must be an integer >= 1")
        self.num_symbols = num_symbols

    @property
    def vocab_size(self) -> int:
        return FIRST_SYMBOL + self.num_symbols

    def encode(self, text: str) -> list[int]:
        """One sequence -> ids, without <bos>/<eos>; UserError for a word that is no symbol."""
        ids = []
        for word in text.split():
            # isdigit alone would let "٣" (an Arabic-Indic 3) through, and int() reads it.
            if not (word.isascii() and word.isdigit() and int(word) < self.num_symbols):
                raise UserError(f"{word!r} is not a symbol of this run; its symbols are "
                                f"the numbers 0 to {self.num_symbols - 1}")
            ids.append(FIRST_SYMBOL + int(word))
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Many sequences; with several, an error names its 1-based input line."""
        ids = []
        for i, text in enumerate(texts):
            try:
                ids.append(self.encode(text))
            except UserError as error:
                raise UserError(f"input line {i + 1}: {error}" if len(texts) > 1
                                else str(error)) from None
        return ids

    def encode_known(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[str]]]:
        """As `Tokenizer.encode_known`: (ids, symbols left out per text); nothing is ever
        left out here, since a word that is no symbol is refused (see the module docstring)."""
        return self.encode_batch(texts), [[] for _ in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """ids -> "3 7 1"; special tokens are left out, not stopped at (as `Tokenizer.decode`)."""
        return " ".join(str(i - FIRST_SYMBOL) for i in ids if FIRST_SYMBOL <= i < self.vocab_size)

    def token(self, id: int) -> str:
        """The display string of one id: "3" for a symbol, "<eos>" for a special token."""
        if not 0 <= id < self.vocab_size:
            raise ValueError(f"id {id} is outside this vocabulary of {self.vocab_size} ids")
        return SPECIAL_TOKENS[id] if id < FIRST_SYMBOL else str(id - FIRST_SYMBOL)
