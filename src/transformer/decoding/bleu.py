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
"""

from __future__ import annotations

from sacrebleu.metrics import BLEU

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
