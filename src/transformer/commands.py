"""The body of the `transformer` commands that make and manage runs; cli.py parses the
arguments and calls one. Those that put text through a run (translate, score, evaluate)
are in translate_commands.py.

    train       a recipe (+ --set, + flags) -> a run directory, trained (or --resume one)
    average     the mean of the last N checkpoints
    plot        learning curves and attention maps as PNG
    data        download a corpus
    ablate      the classic mistakes trained next to the baseline
    serve       the HTTP API and the attention explorer
    explore     the explorer page for one sentence, as one HTML file

Each takes the parsed arguments and returns the exit code; a mistake of the user's is a
UserError, which cli.py prints on one line.
"""

from __future__ import annotations

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
from .data.parallel import download_multi30k
from .decoding import greedy_decode
from .errors import UserError
from .explore import explore as write_explorer_page
from .plots import collect_attention, plot_attention, plot_curves, recording_attention
from .serve import serve as run_server
from .recipe import (TASK_CHOICES, TASK_RECIPES, TrainConfig, build_model_config, parse_sets,
                     read_recipe, split_keys)
from .rundir import load_run, make_run_dir, resume_settings, update_train_config, write_config
from .tasks import make_task


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


# --- the run's checkpoints and plots --------------------------------------------------------

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
    try:  # a synthetic run reads its symbols, e.g. "3 1 4 1 5", and refuses anything else
        src_ids = tokenizer.encode(sentence)
    except UserError as error:
        raise UserError(f"--attention {sentence!r}: {error}") from None
    bos, eos = tokenizer.bos_id, tokenizer.eos_id
    show = lambda ids: [tokenizer.token(i) for i in ids]  # noqa: E731
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
