"""The commands that put text through a trained run: translate, score, evaluate.

    translate   lines in, one block of output per line: the beam's best (or --n-best K),
                or random samples (--sample); --scores adds log-probabilities. Arguments
                and --input FILE are batched; stdin is read and answered line by line.
    score       forced decoding: the log-probability of given translations of given sources
    evaluate    sacreBLEU of a run on a Multi30k split, its own validation files, or any
                parallel files

Line by line, as each block goes out:
    plain             TEXT                              [--scores: TEXT<TAB>LOGPROB<TAB>NORMALISED]
    --n-best K        SCORE<TAB>TEXT, K lines, then ""  [--scores: ...<TAB>LOGPROB<TAB>NORMALISED]
LOGPROB = log P(output tokens, then <eos> | source), NORMALISED = LOGPROB / GNMT's length
penalty of (tokens + 1). `transformer translate --help` and `score --help` say it all.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import torch

from .data.batching import collate
from .data.parallel import load_multi30k, read_lines, read_parallel
from .data.synthetic import TASKS as SYNTHETIC_TASKS
from .data.translation import encode_sources, translate_texts
from .decoding import beam_search, gnmt_length_penalty
from .errors import UserError
from .evaluate import corpus_bleu
from .rundir import NOTES, decoding_settings, load_run
from .sampling import row_generators, sample_decode
from .scoring import score_pairs

MULTI30K_TEST = "test_2016_flickr"
DEFAULT_BEAM = 4  # the paper's (Section 6.1)
BATCH_SENTENCES = 64
# Per source sentence: its hypotheses, each (tokens, the beam's score, or None for a sample).
Found = list[list[tuple[list[int], float | None]]]


# --- translate ------------------------------------------------------------------------------

def translate(args) -> int:
    """Arguments and --input FILE in batches; stdin line by line, each answer flushed."""
    beam = check_translate_flags(args)
    model, tokenizer, saved = load_run(args.run_dir, args.checkpoint, args.device)
    seed = args.seed
    if args.sample and seed is None:
        seed = secrets.randbits(32)
        NOTES.append(f"note: sampled with seed {seed} (--seed {seed} draws the same samples again)")
    translator = Translator(model, tokenizer, saved, args, beam, seed)
    lines = given_lines(args)
    if lines is not None:  # batched; every line is checked before anything is printed
        for line in translator.blocks(lines, first_line=1):
            print(line)
        return 0
    for number, line in stdin_lines():  # one at a time, each answer out before the next read
        print("\n".join(translator.blocks([line], first_line=number)), flush=True)
    return 0


def check_translate_flags(args) -> int:
    """The beam size to use, once the flags are known to make sense together."""
    if args.sample:
        if args.beam is not None:
            raise UserError("translate: --sample draws each token at random and --beam searches "
                            "for the best: give one of them (--sample --n-best K draws K samples)")
        return 1
    for flag, value in (("--temperature", args.temperature), ("--top-k", args.top_k),
                        ("--seed", args.seed)):
        if value is not None:
            raise UserError(f"translate: {flag} applies to --sample only")
    beam = DEFAULT_BEAM if args.beam is None else args.beam
    if args.n_best is not None and args.n_best > beam:
        raise UserError(f"--n-best {args.n_best}: must not exceed --beam {beam} "
                        f"(the beam holds the candidates)")
    return beam


def given_lines(args) -> list[str] | None:
    """The sentences of the arguments or of --input FILE; None: read stdin line by line."""
    if args.sentences and args.input:
        raise UserError("translate: give sentences as arguments or --input FILE, not both")
    if args.sentences:
        return [s.strip() for s in args.sentences]
    if args.input and args.input != "-":
        try:
            return read_lines(args.input)
        except UserError as error:
            if "file is empty" in str(error):
                return []
            raise
    return None


def stdin_lines():
    """Yields (line number, stripped text) of stdin, each as soon as its line has arrived."""
    number = 0
    # readline, not iteration over the file: it hands over a line without waiting for more.
    for data in iter(sys.stdin.buffer.readline, b""):
        number += 1
        try:
            yield number, data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise UserError(f"<stdin>:{number}: not valid UTF-8") from None


class Translator:
    """A loaded run and the translate flags: input lines -> the lines to print."""

    def __init__(self, model, tokenizer, saved: dict, args, beam: int, seed: int | None) -> None:
        self.model, self.tokenizer, self.args = model, tokenizer, args
        self.settings = decoding_settings(saved)
        self.beam, self.seed = beam, seed
        self.device = next(model.parameters()).device

    def blocks(self, texts: list[str], first_line: int) -> list[str]:
        """The output lines of `texts`, the first of them input line `first_line`."""
        args = self.args
        ids = self.sources(texts, first_line)
        found = self.decode(ids, first_line)
        needed = args.scores or (args.sample and args.n_best is not None)
        flat = [(ids[i], tokens) for i, hyps in enumerate(found) for tokens, _ in hyps]
        log_probs = iter(score_pairs(self.model, flat, self.tokenizer.bos_id,
                                     self.tokenizer.eos_id) if needed else [])
        out = []
        for hyps in found:
            rows = []
            for tokens, beam_score in hyps:
                text = self.tokenizer.decode(tokens)
                extra, normalised = "", None
                if needed:
                    log_prob = sum(next(log_probs))
                    normalised = log_prob / gnmt_length_penalty(len(tokens) + 1,
                                                                self.settings["length_penalty"])
                    extra = f"\t{log_prob:.4f}\t{normalised:.4f}" if args.scores else ""
                score = beam_score if beam_score is not None else normalised
                rows.append(f"{score:.4f}\t{text}{extra}" if args.n_best else text + extra)
            # An n-best block ends with an empty line; a plain empty source is one.
            out += (rows + [""]) if args.n_best else (rows or [""])
        return out

    def sources(self, texts: list[str], first_line: int) -> list[list[int]]:
        """Source ids as translate_texts reads them (data/translation.py), lines numbered
        from `first_line`: unknown symbols left out (a note), past the limit refused or cut."""
        max_len = self.model.cfg.max_len
        ids, cut, dropped = encode_sources(self.tokenizer, texts, max_len, long="truncate")
        if cut and self.args.long == "error":  # before any decoding: nothing is printed
            named = ", ".join(str(first_line + i) for i in sorted(cut))
            raise UserError(f"input line{'s' if len(cut) > 1 else ''} {named}: longer than the "
                            f"model's limit of {max_len - 1} tokens (max_len={max_len}); "
                            "use --long truncate to cut them")
        for i in sorted(set(cut) | {i for i, symbols in enumerate(dropped) if symbols}):
            where = f"input line {first_line + i}"
            if dropped[i]:
                shown = ", ".join(dict.fromkeys(dropped[i]))  # each symbol once, in order
                print(f"note: {where}: {len(dropped[i])} unknown symbol"
                      f"{'s' if len(dropped[i]) > 1 else ''} dropped ({shown})", file=sys.stderr)
            if i in cut:
                print(f"warning: {where}: {cut[i]} tokens, cut to {max_len - 1}", file=sys.stderr)
        return ids

    def decode(self, ids: list[list[int]], first_line: int) -> Found:
        """Per source, its hypotheses, decoded in length-sorted batches; an empty source
        gets none."""
        found: Found = [[] for _ in ids]
        todo = sorted((i for i, row in enumerate(ids) if row), key=lambda i: len(ids[i]))
        tok = self.tokenizer
        for start in range(0, len(todo), BATCH_SENTENCES):
            chunk = todo[start: start + BATCH_SENTENCES]
            src = collate([(ids[i], []) for i in chunk], tok.pad_id, tok.bos_id,
                          tok.eos_id)[0].to(self.device)  # (b, S)
            if self.args.sample:
                for i, hyps in zip(chunk, self.sample(src, [first_line + i for i in chunk])):
                    found[i] = [(tokens, None) for tokens in hyps]
                continue
            # beam size 1 is exactly greedy decoding (tests/test_decoding.py)
            best = beam_search(self.model, src, beam_size=self.beam, n_best=self.args.n_best or 1,
                               bos_id=tok.bos_id, eos_id=tok.eos_id, return_scores=True,
                               **self.settings)
            for i, hyps in zip(chunk, best):
                found[i] = hyps
        return found

    def sample(self, src: torch.Tensor, lines: list[int]) -> list[list[list[int]]]:
        """K samples (--n-best K, else 1) of each row of src (b, S), line `lines[j]`: row
        b*K + k samples line b's k-th, with a generator seeded from (seed, line, k)."""
        args, K = self.args, self.args.n_best or 1
        generators = row_generators(self.seed, [(line, k) for line in lines for k in range(K)],
                                    self.device)
        samples = sample_decode(self.model, src.repeat_interleave(K, dim=0), self.tokenizer.bos_id,
                                self.tokenizer.eos_id, temperature=args.temperature or 1.0,
                                top_k=args.top_k or 0, max_len_a=self.settings["max_len_a"],
                                max_len_b=self.settings["max_len_b"], generators=generators)
        return [samples[b * K:(b + 1) * K] for b in range(len(lines))]


# --- score ----------------------------------------------------------------------------------

def score(args) -> int:
    """Forced decoding of --tgt given --src, one line per pair (see `score --help`)."""
    model, tokenizer, _ = load_run(args.run_dir, args.checkpoint, args.device)
    pairs = read_parallel(args.src, args.tgt)  # files, UTF-8 and line counts checked
    max_len = model.cfg.max_len
    src_ids, cut, dropped = encode_sources(tokenizer, [s for s, _ in pairs], max_len, long="truncate")
    tgt_ids = tokenizer.encode_batch([t for _, t in pairs])
    _refuse_long(args.src, sorted(cut), max_len)
    _refuse_long(args.tgt, [i for i, row in enumerate(tgt_ids) if len(row) >= max_len], max_len)
    for i, symbols in enumerate(dropped):
        if symbols:
            print(f"note: {args.src}:{i + 1}: {len(symbols)} unknown symbol"
                  f"{'s' if len(symbols) > 1 else ''} dropped ({', '.join(dict.fromkeys(symbols))})",
                  file=sys.stderr)
    for i, row in enumerate(tgt_ids):
        if tokenizer.unk_id in row:
            print(f"note: {args.tgt}:{i + 1}: symbols the vocabulary lacks, scored as <unk>",
                  file=sys.stderr)
    results = score_pairs(model, list(zip(src_ids, tgt_ids)), tokenizer.bos_id, tokenizer.eos_id)
    for target, log_probs in zip(tgt_ids, results):
        line = f"{sum(log_probs):.4f}"
        if args.tokens:
            pieces = [_piece(tokenizer.token(i)) for i in target] + ["<eos>"]
            line += f"\t{' '.join(f'{p:.4f}' for p in log_probs)}\t{' '.join(pieces)}"
        print(line)
    return 0


def _refuse_long(path: str, lines: list[int], max_len: int) -> None:
    """UserError naming `path`:line for the first of `lines` (0-based) too long to score."""
    if lines:
        more = f" (and {len(lines) - 1} more lines)" if len(lines) > 1 else ""
        raise UserError(f"{path}:{lines[0] + 1}: longer than the model's limit of {max_len - 1} "
                        f"tokens (max_len={max_len}){more}")


def _piece(token: str) -> str:
    """A BPE piece as one space-free field: whitespace inside it (a tab, a no-break space)
    written as \\uXXXX."""
    return "".join(f"\\u{ord(c):04x}" if c.isspace() else c for c in token)


# --- evaluate -------------------------------------------------------------------------------

def evaluate(args) -> int:
    model, tokenizer, saved = load_run(args.run_dir, args.checkpoint, args.device)
    train = saved["train"]
    if args.src or args.ref:
        if not (args.src and args.ref):
            raise UserError("evaluate: give both --src and --ref, or neither")
        pairs, name = read_parallel(args.src, args.ref), args.src
    elif train.get("task") == "parallel" and not (args.split or args.data_dir):
        pairs, name = validation_pairs(args.run_dir, train)
    elif train.get("task") in SYNTHETIC_TASKS:
        raise UserError(f"{args.run_dir}: a {train['task']} run has no Multi30k split to score; "
                        "give --src FILE --ref FILE of its symbols")
    else:
        split = args.split or MULTI30K_TEST
        pairs, name = load_multi30k(split, train["src_lang"], train["tgt_lang"],
                                    args.data_dir or train.get("data_dir") or None), split
    hypotheses = translate_texts(model, tokenizer, [s for s, _ in pairs], args.beam,
                                 **decoding_settings(saved), device=next(model.parameters()).device)
    bleu, signature = corpus_bleu(hypotheses, [t for _, t in pairs])
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    print(f"BLEU = {bleu:.2f}  ({name}, {train['src_lang']}->{train['tgt_lang']}, "
          f"beam {args.beam}, {len(pairs)} sentences)")
    print(f"signature: {signature}")
    return 0


def validation_pairs(run_dir: str, train: dict) -> tuple[list[tuple[str, str]], str]:
    """A run trained on its own files (task parallel) is scored on its own validation files."""
    src, tgt = train.get("valid_src"), train.get("valid_tgt")
    if not (src and tgt):
        raise UserError(f"{run_dir}: trained on --src/--tgt with part of that data held out for "
                        "validation, so it has no validation files to score; give --src FILE "
                        "--ref FILE")
    return read_parallel(src, tgt), f"the run's validation files {src} and {tgt}"
