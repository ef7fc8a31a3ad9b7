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

import dataclasses
import secrets
import sys
from pathlib import Path

import torch

from ..checkpoint.catalogue import describe_checkpoint
from ..data.parallel import MULTI30K_TEST, load_multi30k, read_lines, read_parallel
from ..data.sources import Where, encode_sources
from ..data.synthetic import TASKS as SYNTHETIC_TASKS
from ..data.translation import wmt14_dir
from ..decoding.beam import gnmt_length_penalty
from ..decoding.bleu import all_scores
from ..decoding.sampling import row_generators, sample_decode
from ..decoding.scoring import score_pairs
from ..decoding.translate import DEFAULT_BEAM, best_texts, length_batches
from ..decoding.translate import translate as beam_translate
from ..errors import UserError
from ..run.rundir import LoadedRun, load_run

# Per source sentence: its hypotheses, each (tokens, the beam's score, or None for a sample).
Found = list[list[tuple[list[int], float | None]]]


# --- translate ------------------------------------------------------------------------------

def translate(args) -> int:
    """Arguments and --input FILE in batches; stdin line by line, each answer flushed."""
    beam = check_translate_flags(args)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    notes = [f"using checkpoint {describe_checkpoint(run.checkpoint)}"]
    seed = args.seed
    if args.sample and seed is None:
        seed = secrets.randbits(32)
        notes.append(f"note: sampled with seed {seed} (--seed {seed} draws the same samples again)")
    translator = Translator(run, args, beam, seed)
    lines = given_lines(args)
    if lines is not None:  # batched; every line is checked before anything is printed
        for line in translator.blocks(lines, first_line=1):
            print(line)
    else:
        for number, line in stdin_lines():  # one at a time, each answer out before the next read
            print("\n".join(translator.blocks([line], first_line=number)), flush=True)
    say(notes)
    return 0


def say(notes: list[str]) -> None:
    """What a command used, on stderr, once it has succeeded: a failing command prints one
    line, its error, and no more."""
    for note in notes:
        print(note, file=sys.stderr)


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

    def __init__(self, run: LoadedRun, args, beam: int, seed: int | None) -> None:
        self.model, self.args = run.model, args
        self.source, self.target = run.source, run.target  # one object for a joint vocabulary
        self.options = run.settings.train.decoding
        self.beam, self.seed = beam, seed
        self.device = next(run.model.parameters()).device

    def blocks(self, texts: list[str], first_line: int) -> list[str]:
        """The output lines of `texts`, the first of them input line `first_line`."""
        args = self.args
        ids = self.sources(texts, first_line)
        found = self.decode(ids, first_line)
        needed = args.scores or (args.sample and args.n_best is not None)
        flat = [(ids[i], tokens) for i, hyps in enumerate(found) for tokens, _ in hyps]
        log_probs = iter(score_pairs(self.model, flat, self.target.bos_id,
                                     self.target.eos_id) if needed else [])
        out = []
        for hyps in found:
            rows = []
            for tokens, beam_score in hyps:
                text = self.target.decode(tokens)
                extra, normalised = "", None
                if needed:
                    log_prob = sum(next(log_probs))
                    normalised = log_prob / gnmt_length_penalty(len(tokens) + 1,
                                                                self.options.length_penalty)
                    extra = f"\t{log_prob:.4f}\t{normalised:.4f}" if args.scores else ""
                score = beam_score if beam_score is not None else normalised
                rows.append(f"{score:.4f}\t{text}{extra}" if args.n_best else text + extra)
            # An n-best block ends with an empty line; a plain empty source is one.
            out += (rows + [""]) if args.n_best else (rows or [""])
        return out

    def sources(self, texts: list[str], first_line: int) -> list[list[int]]:
        """Source ids as every command reads them (data/sources.py), lines numbered from
        `first_line`: unknown symbols left out (a note), past the limit refused or cut."""
        sources = encode_sources(self.source, texts, self.model.cfg.max_len)
        where = Where(first_line=first_line)
        if self.args.long == "error":  # before any decoding: nothing is printed
            sources.refuse_long(where, hint="use --long truncate to cut them")
        say(sources.notes(where))
        return sources.ids

    def decode(self, ids: list[list[int]], first_line: int) -> Found:
        """Per source, its hypotheses, decoded in length-sorted batches; an empty source
        gets none."""
        if not self.args.sample:
            return beam_translate(self.model, self.source, ids, self.options,
                                  n_best=self.args.n_best or 1, beam_size=self.beam)
        found: Found = [[] for _ in ids]
        for chunk, src in length_batches(ids, self.source, self.device):
            for i, hyps in zip(chunk, self.sample(src, [first_line + i for i in chunk])):
                found[i] = [(tokens, None) for tokens in hyps]
        return found

    def sample(self, src: torch.Tensor, lines: list[int]) -> list[list[list[int]]]:
        """K samples (--n-best K, else 1) of each row of src (b, S), line `lines[j]`: row
        b*K + k samples line b's k-th, with a generator seeded from (seed, line, k)."""
        args, K = self.args, self.args.n_best or 1
        generators = row_generators(self.seed, [(line, k) for line in lines for k in range(K)],
                                    self.device)
        samples = sample_decode(self.model, src.repeat_interleave(K, dim=0), self.target.bos_id,
                                self.target.eos_id, temperature=args.temperature or 1.0,
                                top_k=args.top_k or 0, max_len_a=self.options.max_len_a,
                                max_len_b=self.options.max_len_b, generators=generators)
        return [samples[b * K:(b + 1) * K] for b in range(len(lines))]


# --- score ----------------------------------------------------------------------------------

def score(args) -> int:
    """Forced decoding of --tgt given --src, one line per pair (see `score --help`)."""
    run = load_run(args.run_dir, args.checkpoint, args.device)
    model, source, target = run.model, run.source, run.target
    pairs = read_parallel(args.src, args.tgt)  # files, UTF-8 and line counts checked
    max_len = model.cfg.max_len
    sources = encode_sources(source, [s for s, _ in pairs], max_len)
    tgt_ids = target.encode_batch([t for _, t in pairs])
    sources.refuse_long(Where(args.src))
    _refuse_long(args.tgt, [i for i, row in enumerate(tgt_ids) if len(row) >= max_len], max_len)
    notes = sources.notes(Where(args.src))
    notes += [f"note: {args.tgt}:{i + 1}: symbols the vocabulary lacks, scored as <unk>"
              for i, row in enumerate(tgt_ids) if target.unk_id in row]
    say(notes)
    results = score_pairs(model, list(zip(sources.ids, tgt_ids)), target.bos_id, target.eos_id)
    for ids, log_probs in zip(tgt_ids, results):
        line = f"{sum(log_probs):.4f}"
        if args.tokens:
            pieces = [_piece(target.token(i)) for i in ids] + ["<eos>"]
            line += f"\t{' '.join(f'{p:.4f}' for p in log_probs)}\t{' '.join(pieces)}"
        print(line)
    say([f"using checkpoint {describe_checkpoint(run.checkpoint)}"])
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
    run = load_run(args.run_dir, args.checkpoint, args.device)
    train = run.settings.train
    if args.src or args.ref:
        if not (args.src and args.ref):
            raise UserError("evaluate: give both --src and --ref, or neither")
        pairs, name = read_parallel(args.src, args.ref), args.src
    elif train.task == "parallel" and not (args.split or args.data_dir):
        pairs, name = validation_pairs(args.run_dir, train)
    elif train.task == "wmt14":
        split = {None: "test", "test": "test", "newstest2014": "test", "valid": "valid",
                 "newstest2013": "valid"}.get(args.split)
        if split is None:
            raise UserError(f"--split {args.split}: a wmt14 run has test (newstest2014) and "
                            "valid (newstest2013)")
        folder = Path(args.data_dir) if args.data_dir else wmt14_dir(train)
        pairs = read_parallel(folder / f"{split}.en", folder / f"{split}.de")
        name = "newstest2014" if split == "test" else "newstest2013"
    elif train.task in SYNTHETIC_TASKS:
        raise UserError(f"{args.run_dir}: a {train.task} run has no Multi30k split to score; "
                        "give --src FILE --ref FILE of its symbols")
    else:
        split = args.split or MULTI30K_TEST
        pairs, name = load_multi30k(split, train.src_lang, train.tgt_lang,
                                    args.data_dir or train.data_dir or None), split
    sources = encode_sources(run.source, [s for s, _ in pairs], run.model.cfg.max_len)
    sources.refuse_long(Where(args.src) if args.src else Where())
    options = train.decoding if args.length_penalty is None else \
        dataclasses.replace(train.decoding, length_penalty=args.length_penalty)
    found = beam_translate(run.model, run.source, sources.ids, options, beam_size=args.beam)
    hypotheses = best_texts(run.target, found)
    scores = all_scores(hypotheses, [t for _, t in pairs], train.tgt_lang)
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    (_, bleu, signature), *others = scores
    print(f"BLEU = {bleu:.2f}  ({name}, {train.src_lang}->{train.tgt_lang}, "
          f"beam {args.beam}, length penalty {options.length_penalty:g}, {len(pairs)} sentences)")
    print(signature)
    for label, score, how in others:
        print(f"{label} = {score:.2f}  ({how})")
    say(sources.notes(Where(args.src) if args.src else Where())
        + [f"using checkpoint {describe_checkpoint(run.checkpoint)}"])
    return 0


def validation_pairs(run_dir: str, train) -> tuple[list[tuple[str, str]], str]:
    """A run trained on its own files (task parallel) is scored on its own validation files."""
    src, tgt = train.valid_src, train.valid_tgt
    if not (src and tgt):
        raise UserError(f"{run_dir}: trained on --src/--tgt with part of that data held out for "
                        "validation, so it has no validation files to score; give --src FILE "
                        "--ref FILE")
    return read_parallel(src, tgt), f"the run's validation files {src} and {tgt}"
