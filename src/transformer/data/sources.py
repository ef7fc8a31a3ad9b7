"""Source sentences as a model reads them: the one place where text becomes source ids.

A model of `max_len` positions reads at most max_len - 1 source tokens (collate adds
<eos>). Two things can stand between a sentence and that:

    unknown symbols   characters the vocabulary never saw (an emoji, a CJK character).
                      They are left out, not fed as <unk>: a model never saw <unk> in
                      training, and one in its input can derail the whole sentence. A
                      synthetic run refuses a word that is not one of its symbols instead
                      (data/symbols.py), since dropping it would change the sequence.
    long sentences    cut at the limit; the caller decides whether a cut is an error
                      (`refuse_long`) or a warning (`notes`).

    encode_sources(vocab, texts, max_len) -> Sources(ids, cut, dropped)
    sources.notes(Where())     -> ["note: input line 1: 2 unknown symbols dropped (⚽, 🏖️)",
                                   "warning: input line 3: 40 tokens, cut to 31"]
    sources.refuse_long(Where()) -> UserError naming every line that was cut

`Where` names the sentences for the user: "input line 3", "data.en:3".
Translate, score, evaluate, validation BLEU, the explorer, the server and plots all read
their sources through here, so one sentence gets the same ids everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class Where:
    """How sentence i (0-based) is named for the user: "input line 3" (lines counted from
    `first_line`), or "data.en:3" for a file."""
    path: str | None = None
    first_line: int = 1

    def one(self, i: int) -> str:
        return f"{self.path}:{i + 1}" if self.path else f"input line {self.first_line + i}"

    def many(self, indices: Sequence[int]) -> str:
        """"input lines 2, 4, 5" (every one named), "data.en lines 2, 4"; one: as `one`."""
        if len(indices) == 1:
            return self.one(indices[0])
        first = 1 if self.path else self.first_line
        return f"{self.path or 'input'} lines {', '.join(str(first + i) for i in indices)}"


@dataclass
class Sources:
    ids: list[list[int]]  # per sentence, at most `limit` tokens, unknown symbols left out
    cut: dict[int, int]  # sentence index -> its tokens before the cut
    dropped: list[list[str]]  # per sentence, the unknown symbols left out, in order
    max_len: int  # the model's positions

    @property
    def limit(self) -> int:
        return self.max_len - 1

    def notes(self, where: Where) -> list[str]:
        """A note per sentence that lost unknown symbols, a warning per sentence cut; in
        sentence order."""
        lines = []
        for i in sorted(set(self.cut) | {i for i, symbols in enumerate(self.dropped) if symbols}):
            if self.dropped[i]:
                n = len(self.dropped[i])
                shown = ", ".join(dict.fromkeys(self.dropped[i]))  # each symbol once, in order
                lines.append(f"note: {where.one(i)}: {n} unknown symbol{'s' if n > 1 else ''} "
                             f"dropped ({shown})")
            if i in self.cut:
                lines.append(f"warning: {where.one(i)}: {self.cut[i]} tokens, cut to {self.limit}")
        return lines

    def refuse_long(self, where: Where, hint: str = "") -> None:
        """UserError naming every sentence past the limit, `hint` after it; nothing when
        none is."""
        if not self.cut:
            return
        raise UserError(f"{where.many(sorted(self.cut))}: longer than the model's limit of "
                        f"{self.limit} tokens (max_len={self.max_len})" + (f"; {hint}" if hint else ""))


def encode_sources(vocab, texts: Sequence[str], max_len: int) -> Sources:
    """Source ids of `texts` for a model of `max_len` positions; `vocab` is the run's
    Tokenizer or SymbolVocabulary (both have `encode_known`)."""
    ids, dropped = vocab.encode_known(texts)
    limit = max_len - 1
    cut = {i: len(row) for i, row in enumerate(ids) if len(row) > limit}
    return Sources([row[:limit] for row in ids], cut, dropped, max_len)
