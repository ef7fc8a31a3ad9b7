"""The body of every `transformer` command; cli.py parses the arguments and calls one.

    train       a recipe (+ --set, + flags) -> a run directory, trained (or --resume one)
    translate   sentences in, translations out
    evaluate    sacreBLEU of a run on a Multi30k split, its own validation files, or any
                parallel files
    average     the mean of the last N checkpoints
    plot        learning curves and attention maps as PNG
    data        download a corpus
    ablate      the classic mistakes trained next to the baseline

Each takes the parsed arguments and returns the exit code; a mistake of the user's is a
UserError, which cli.py prints on one line.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from . import checkpoint as ckpt
from . import distributed
from . import train as training
from .ablate import ablate as run_ablation
from .ablate_report import format_table
from .averaging import save_average
from .data.batching import collate
from .data.parallel import download_multi30k, load_multi30k, read_lines, read_parallel
from .data.synthetic import FIRST_SYMBOL
from .data.translation import TooLong, translate_texts
from .decoding import greedy_decode
from .errors import UserError
from .evaluate import corpus_bleu
from .explore import explore as write_explorer_page
from .plots import collect_attention, plot_attention, plot_curves, recording_attention
from .serve import serve as run_server
from .recipe import (TASK_CHOICES, TASK_RECIPES, TrainConfig, build_model_config, parse_sets,
                     read_recipe, split_keys)
from .rundir import decoding_settings, load_run, make_run_dir, resume_settings, update_train_config, write_config
from .tasks import make_task

MULTI30K_TEST = "test_2016_flickr"


# --- train ----------------------------------------------------------------------------------

def train(args) -> int:
    if args.resume:
        model_keys, train_cfg = resume_settings(Path(args.resume), asked_settings(args))
    else:
        if not args.task and not args.config:
            raise UserError(f"train: give a TASK ({', '.join(TASK_CHOICES)}) or --resume RUN_DIR")
        model_keys, train_cfg = resolve_settings(args)
        # Check the model keys now, before a run directory (or a tokenizer) is made for them;
        # the vocabulary is not known yet, any will do for this check.
        build_model_config(model_keys, vocab_size=8, pad_id=0)

    with distributed.process_group(distributed.resolve_device(train_cfg.device)) as ctx:
        made = {}

        def prepare() -> str:
            # Under torchrun, rank 0 alone creates the run directory, the task (a translation
            # task trains and saves its tokenizer) and config.json; then the others read them.
            run_dir = Path(args.resume) if args.resume else \
                make_run_dir(args.out, train_cfg.task, args.overwrite)
            made["task"] = make_task(train_cfg, run_dir, model_keys)
            if args.resume:  # keep what the resume changed (steps, ...) for the next one
                update_train_config(run_dir, train_cfg)
            else:
                write_config(run_dir, build_model_config(model_keys, made["task"].vocab_size,
                                                         made["task"].pad_id), train_cfg)
            return str(run_dir)

        run_dir = Path(distributed.main_first(ctx, prepare))
        task = made.get("task") or make_task(train_cfg, run_dir, model_keys, quiet=True)
        model_cfg = build_model_config(model_keys, task.vocab_size, task.pad_id)
        started = time.time()
        summary = training.train(run_dir, model_cfg, train_cfg, task, resume=bool(args.resume),
                                 quiet=args.quiet)
        if ctx.is_main:
            print_summary(summary, task, time.time() - started, run_dir)
    return 0


def resolve_settings(args) -> tuple[dict, TrainConfig]:
    """Dataclass defaults < recipe (--config, else the task's own) < --set < explicit flags."""
    own = TASK_RECIPES.get(args.task) if not args.config else None
    values = read_recipe(own) if own else {}
    values.update(asked_settings(args))
    return split_keys(values)


def asked_settings(args) -> dict:
    """The keys the command line sets: --config < --set < TASK and flags (--steps, ...)."""
    values = read_recipe(args.config) if args.config else {}
    values.update(parse_sets([item for group in args.sets for item in group]))
    if args.task:
        values["task"] = args.task
    for key, flag in (("steps", args.steps), ("seed", args.seed), ("device", args.device),
                      ("data_dir", args.data_dir), ("src", args.src), ("tgt", args.tgt),
                      ("valid_src", args.valid_src), ("valid_tgt", args.valid_tgt)):
        if flag is not None:
            values[key] = flag
    return values


def print_summary(summary: dict, task, wall_s: float, run_dir: Path) -> None:
    print(f"\ndone: {summary.get('steps')} steps in {wall_s:.1f} s; run saved in {run_dir}")
    if "exact_match" in summary:
        print(f"exact match on {len(task.eval_pairs)} held-out sequences: {summary['exact_match']:.1%}")
    if "bleu" in summary:
        print(f"validation BLEU: {summary['bleu']:.2f}")
    examples = getattr(task, "examples", [])
    if examples:
        print("examples (source => reference | model):")
        for src, ref, hyp in examples:
            mark = "ok " if ref == hyp else "   "
            print(f"  {mark}{src} => {ref} | {hyp}")


# --- using a trained run --------------------------------------------------------------------

def _needs_tokenizer(tokenizer, run_dir) -> None:
    if tokenizer is None:
        raise UserError(f"{run_dir}: has no tokenizer.json (a synthetic-task run cannot translate text)")


def read_input(args) -> list[str]:
    """The sentences to translate: the arguments, --input FILE, or stdin."""
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
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise UserError(f"<stdin>:{line}: not valid UTF-8") from None
    return [line.strip() for line in text.split("\n")[:-1 if text.endswith("\n") else None]]


def translate(args) -> int:
    """One line out per line in; with --n-best K, per sentence up to K lines
    "SCORE<TAB>TEXT", best first, then an empty line. Notes and warnings go to stderr."""
    if args.n_best is not None and args.n_best > args.beam:
        raise UserError(f"--n-best {args.n_best}: must not exceed --beam {args.beam} "
                        f"(the beam holds the candidates)")
    model, tokenizer, saved = load_run(args.run_dir, args.checkpoint, args.device)
    _needs_tokenizer(tokenizer, args.run_dir)

    def tell(kind: str, message: str) -> None:  # "note: ..." or "warning: ...", once per line
        print(f"{kind}: {message}", file=sys.stderr)

    try:
        results = translate_texts(model, tokenizer, read_input(args), args.beam,
                                  **decoding_settings(saved), long=args.long, report=tell,
                                  n_best=args.n_best or 1, return_scores=True,
                                  device=next(model.parameters()).device)
    except TooLong as error:  # all checked before any decoding: nothing was printed
        raise UserError(f"{error}; use --long truncate to cut them") from None
    for best in results:
        if args.n_best is None:
            print(best[0][0] if best else "")
            continue
        for text, score in best:
            print(f"{score:.4f}\t{text}")
        print()
    return 0



def evaluate(args) -> int:
    model, tokenizer, saved = load_run(args.run_dir, args.checkpoint, args.device)
    _needs_tokenizer(tokenizer, args.run_dir)
    train = saved["train"]
    if args.src or args.ref:
        if not (args.src and args.ref):
            raise UserError("evaluate: give both --src and --ref, or neither")
        pairs, name = read_parallel(args.src, args.ref), args.src
    elif train.get("task") == "parallel" and not (args.split or args.data_dir):
        pairs, name = validation_pairs(args.run_dir, train)
    else:
        split = args.split or MULTI30K_TEST
        pairs, name = load_multi30k(split, train["src_lang"], train["tgt_lang"],
                                    args.data_dir or train.get("data_dir") or None), split
    hypotheses = translate_texts(model, tokenizer, [s for s, _ in pairs], args.beam,
                                 **decoding_settings(saved), device=next(model.parameters()).device)
    score, signature = corpus_bleu(hypotheses, [t for _, t in pairs])
    if args.output:
        Path(args.output).write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    print(f"BLEU = {score:.2f}  ({name}, {train['src_lang']}->{train['tgt_lang']}, "
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


def average(args) -> int:
    run_dir = Path(args.run_dir)
    if args.last < 1:
        raise UserError(f"--last {args.last}: must be at least 1")
    paths = ckpt.list_checkpoints(run_dir)
    if not paths:
        raise UserError(f"{run_dir}: no checkpoints to average")
    chosen = paths[-args.last:]
    out = save_average(run_dir, chosen)
    print(f"averaged {len(chosen)} checkpoints ({', '.join(p.name for p in chosen)}) into {out}")
    return 0


def plot(args) -> int:
    run_dir = Path(args.run_dir)
    written = plot_curves(run_dir)
    if args.attention is not None:
        written += plot_attention_for(run_dir, args.attention, args.checkpoint)
    for path in written:
        print(path)
    return 0


def plot_attention_for(run_dir: Path, sentence: str, checkpoint: str | None) -> list[Path]:
    """Decode `sentence`, then draw every attention map of the forward pass that scores it."""
    model, tokenizer, _ = load_run(str(run_dir), checkpoint)
    cfg = model.cfg
    if tokenizer is not None:
        src_ids, bos, eos = tokenizer.encode(sentence), tokenizer.bos_id, tokenizer.eos_id
        show = lambda ids: [tokenizer.inner.id_to_token(i) for i in ids]  # noqa: E731
    else:  # synthetic task: the sentence is symbols, e.g. "3 1 4 1 5"
        try:
            src_ids = [int(t) + FIRST_SYMBOL for t in sentence.split()]
        except ValueError:
            raise UserError(f"--attention {sentence!r}: a synthetic-task run takes numbers, e.g. '3 1 4'") from None
        symbols = cfg.src_vocab_size - FIRST_SYMBOL
        for token in sentence.split():
            if not 0 <= int(token) < symbols:
                raise UserError(f"--attention {sentence!r}: symbol {token} is not one of this "
                                f"run's symbols, 0 to {symbols - 1}")
        bos, eos = 1, 2
        show = lambda ids: [str(i - FIRST_SYMBOL) if i >= FIRST_SYMBOL else ["<pad>", "<bos>", "<eos>", "<unk>"][i] for i in ids]  # noqa: E731
    if not src_ids or len(src_ids) >= cfg.max_len:
        raise UserError(f"--attention: the sentence must have 1 to {cfg.max_len - 1} tokens")
    src = collate([(src_ids, [])], cfg.pad_id, bos, eos)[0]
    hyp = greedy_decode(model, src, cfg.max_len - 2, bos, eos)[0]
    tgt_in = torch.tensor([[bos] + hyp])
    with recording_attention(model), torch.no_grad():
        model(src, tgt_in)
        maps = collect_attention(model)
    return plot_attention(maps, show(src[0].tolist()), show(tgt_in[0].tolist()), run_dir / "plots")


# --- the rest -------------------------------------------------------------------------------

def data(args) -> int:
    for path in download_multi30k(args.out):
        print(path)
    return 0


def ablate(args) -> int:
    """Run the variants, print the table, say where the files are."""
    sets = parse_sets([item for group in args.sets for item in group])
    out = Path(args.out or f"runs/ablate-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    results = run_ablation(args.task, sets, args.steps, out, overwrite=args.overwrite)
    print()
    print(format_table(results, "bleu" if args.task == "multi30k" else "exact_match"), end="")
    for r in results:
        if r["failure"]:
            print(f"{r['variant']}: {r['failure']}")
    print(f"\nwritten: {out / 'ablation.md'}, {out / 'ablation.png'}, and a run directory per variant")
    return 0


def serve(args) -> int:
    """The HTTP API and the attention explorer page, on the loopback by default."""
    return run_server(args.run_dir, args.checkpoint, args.host, args.port, args.device)


def explore(args) -> int:
    """The explorer page for one sentence, as a single self-contained HTML file."""
    out = write_explorer_page(args.run_dir, args.sentence, args.out, compare=args.compare,
                              beam=args.beam, device=args.device)
    print(out)
    return 0
