"""BLEU, the paper's quality measure (Section 6.1), computed the comparable way: sacreBLEU;
and the scores reported beside it.

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

`all_scores` is what `transformer evaluate` prints: cased BLEU (the headline), lowercased
BLEU, chrF and chrF++ (character n-gram F-scores, which credit a half-right German
compound) and TER (edits per reference word, lower is better), all from sacreBLEU with
their signatures; then the tokenized figures other papers report: the paper's way, and
the way many Multi30k papers (fairseq's scorer) compute it, lowercased Moses tokens.
"""

from __future__ import annotations

import re

from sacrebleu.metrics import BLEU, CHRF, TER
from sacremoses import MosesTokenizer

from ..errors import UserError


def check_pairs(hypotheses: list[str], references: list[str]) -> None:
    """UserError unless there is one reference per hypothesis, and at least one of each."""
    if len(hypotheses) != len(references):
        raise UserError(f"BLEU needs one reference per hypothesis, but got "
                        f"{len(hypotheses)} hypotheses and {len(references)} references")
    if not hypotheses:
        raise UserError("BLEU needs at least one sentence, but got none")


def corpus_bleu(hypotheses: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus-level BLEU of `hypotheses` against one reference each, and its signature."""
    check_pairs(hypotheses, references)
    bleu = BLEU()
    result = bleu.corpus_score(hypotheses, [references])  # one reference stream
    return result.score, str(bleu.get_signature())


COMPOUND = re.compile(r"(\S)-(\S)")


def tokenized_bleu(hypotheses: list[str], references: list[str], lang: str,
                   split_compounds: bool = True, lowercase: bool = False) -> float:
    """BLEU on Moses-tokenized (`lang`) text, no further tokenization. The defaults are the
    paper's way (see above); `split_compounds=False, lowercase=True` is the Multi30k
    papers' (lowercased Moses tokens, as fairseq's scorer reads them)."""
    tokenizer = MosesTokenizer(lang=lang)

    def paper_tokens(text: str) -> str:
        tokens = tokenizer.tokenize(text, escape=False, return_str=True)
        tokens = tokens.lower() if lowercase else tokens
        # One pass, as the original script's: in "a-b-c" (one-letter parts) it splits the
        # first hyphen only (its match ate the "b"), a quirk its numbers carry.
        return COMPOUND.sub(r"\1 ##AT##-##AT## \2", tokens) if split_compounds else tokens

    check_pairs(hypotheses, references)
    hyps = [paper_tokens(h) for h in hypotheses]
    refs = [paper_tokens(r) for r in references]
    # force: sacreBLEU warns of tokenized input, which here is the point
    return BLEU(tokenize="none", force=True).corpus_score(hyps, [refs]).score


def chrf(hypotheses: list[str], references: list[str], word_order: int = 0) -> tuple[float, str]:
    """chrF (word_order=0) or chrF++ (word_order=2) from sacreBLEU, and its signature."""
    check_pairs(hypotheses, references)
    metric = CHRF(word_order=word_order)
    return metric.corpus_score(hypotheses, [references]).score, str(metric.get_signature())


def all_scores(hypotheses: list[str], references: list[str], lang: str
               ) -> list[tuple[str, float, str]]:
    """(name, score, how it was computed) for every score `evaluate` reports; cased BLEU first."""
    bleu, signature = corpus_bleu(hypotheses, references)
    lowercased = BLEU(lowercase=True)
    lower = lowercased.corpus_score(hypotheses, [references]).score
    ter = TER()
    return [
        ("BLEU", bleu, f"signature: {signature}"),
        ("lowercased BLEU", lower, f"signature: {lowercased.get_signature()}"),
        ("chrF", *chrf(hypotheses, references)),
        ("chrF++", *chrf(hypotheses, references, word_order=2)),
        ("TER", ter.corpus_score(hypotheses, [references]).score,
         f"lower is better; signature: {ter.get_signature()}"),
        ("tokenized BLEU", tokenized_bleu(hypotheses, references, lang),
         "the paper's way: Moses-tokenized, compounds split; not comparable with sacreBLEU"),
        ("lowercased tokenized BLEU",
         tokenized_bleu(hypotheses, references, lang, split_compounds=False, lowercase=True),
         "the Multi30k papers' way (Wu et al., 2021): lowercased Moses tokens; "
         "not comparable with sacreBLEU"),
    ]
