"""BLEU, the paper's quality measure (Section 6.1), computed the comparable way: sacreBLEU.

    hypotheses: list[str]  one detokenized output sentence per source sentence
    references: list[str]  one detokenized reference per source sentence
        -> (score in [0, 100], signature)

sacreBLEU's defaults are the community standard: its own 13a tokenization of
detokenized text, case-sensitive, exponential smoothing. The signature
("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:...") records exactly that, and
belongs next to every reported score: tokenized, lowercased or compound-split BLEU
differ by a point or more and are not comparable. Decoding happens elsewhere; score
real decoder output, never teacher-forced argmax.

`tokenized_bleu` is the other number, labelled as such: BLEU the way the paper (and the
tensor2tensor scripts it came with) computed it, on Moses-tokenized text with hyphenated
compounds split ("Rhein-Main" -> "Rhein ##AT##-##AT## Main"), no further tokenization.
It is what to put beside the paper's 27.3, never beside a sacreBLEU score.
"""

from __future__ import annotations

import re

from sacrebleu.metrics import BLEU
from sacremoses import MosesTokenizer

from ..errors import UserError


def corpus_bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus-level BLEU of `hypotheses` against one reference each, and its signature."""
    if len(hypotheses) != len(references):
        raise UserError(f"BLEU needs one reference per hypothesis, but got "
                        f"{len(hypotheses)} hypotheses and {len(references)} references")
    if not hypotheses:
        raise UserError("BLEU needs at least one sentence, but got none")
    bleu = BLEU()
    result = bleu.corpus_score(hypotheses, [references])  # one reference stream
    return result.score, str(bleu.get_signature())


COMPOUND = re.compile(r"(\S)-(\S)")


def tokenized_bleu(hypotheses: list[str], references: list[str], lang: str) -> float:
    """BLEU on Moses-tokenized (`lang`), compound-split text: the paper's way (see above)."""
    tokenizer = MosesTokenizer(lang=lang)

    def paper_tokens(text: str) -> str:
        tokens = tokenizer.tokenize(text, escape=False, return_str=True)
        # One pass, as the original script's: in "a-b-c" (one-letter parts) it splits the
        # first hyphen only (its match ate the "b"), a quirk its numbers carry.
        return COMPOUND.sub(r"\1 ##AT##-##AT## \2", tokens)

    hyps = [paper_tokens(h) for h in hypotheses]
    refs = [paper_tokens(r) for r in references]
    corpus_bleu(hyps, refs)  # the same checks: one reference each, at least one sentence
    return BLEU(tokenize="none", force=True).corpus_score(hyps, [refs]).score
