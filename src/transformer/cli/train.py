"""The commands that make and manage runs: train, average, data. cli/main.py parses the
arguments and calls one; each takes the parsed arguments and returns the exit code, a
mistake of the user's being a UserError, which main prints on one line.

    train       a recipe (+ --set, + flags) -> a run directory, trained (or --resume one)
    average     the mean of the last N checkpoints
    data        download a corpus, or prepare one (tokenized once, memory-mapped)
"""

from __future__ import annotations

import time
from pathlib import Path

from ..checkpoint.averaging import save_average
from ..checkpoint.catalogue import step_checkpoints
from ..data.parallel import download_multi30k
from ..data.prepared import prepare_corpus
from ..data.wmt14 import download_wmt14
from ..errors import UserError
from ..run.rundir import make_run_dir, read_settings, write_settings
from ..run.settings import asked_values, new_settings, parse_sets, resumed_settings
from ..training import distributed
from ..training import loop as training
from ..training.config import TASK_CHOICES
from ..training.tasks import make_task, prepare_task

# --- train ----------------------------------------------------------------------------------

def train(args) -> int:
    flags = {"steps": args.steps, "seed": args.seed, "device": args.device,
             "data_dir": args.data_dir, "data": args.data, "src": args.src, "tgt": args.tgt,
             "valid_src": args.valid_src, "valid_tgt": args.valid_tgt}
    asked = asked_values(args.config, args.sets, args.task, flags)
    if args.resume:
        settings = resumed_settings(read_settings(args.resume), asked)
    elif not args.task and not args.config:
        raise UserError(f"train: give a TASK ({', '.join(TASK_CHOICES)}) or --resume RUN_DIR")
    else:
        settings = new_settings(args.task, args.config, asked)

    with distributed.process_group(distributed.resolve_device(settings.train.device)) as ctx:
        def prepare() -> tuple[str, int, int]:
            # Under torchrun, rank 0 alone creates the run directory, prepares the corpus
            # (or finds it prepared) and writes config.json; then every rank builds its task.
            run_dir = Path(args.resume) if args.resume else \
                make_run_dir(args.out, settings.train.task, args.overwrite)
            src_size, tgt_size, pad_id = prepare_task(settings.train, run_dir, quiet=args.quiet)
            write_settings(run_dir, settings.with_vocabulary(src_size, pad_id, tgt_size))
            return str(run_dir), src_size, tgt_size, pad_id

        run_dir, src_size, tgt_size, pad_id = distributed.main_first(ctx, prepare)
        run_dir, ready = Path(run_dir), settings.with_vocabulary(src_size, pad_id, tgt_size)
        task = make_task(ready.train, run_dir, ready.model.max_len, quiet=not ctx.is_main)
        started = time.time()
        summary = training.train(run_dir, ready.model, ready.train, task, ctx=ctx,
                                 resume=bool(args.resume), quiet=args.quiet)
        if ctx.is_main:
            print_summary(summary, task, time.time() - started, run_dir)
    return 0


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


# --- the run's checkpoints, the data --------------------------------------------------------

def average(args) -> int:
    run_dir = Path(args.run_dir)
    if args.last < 1:
        raise UserError(f"--last {args.last}: must be at least 1")
    paths = step_checkpoints(run_dir)
    if not paths:
        raise UserError(f"{run_dir}: no checkpoints to average")
    chosen = paths[-args.last:]
    out = save_average(run_dir, chosen)
    print(f"averaged {len(chosen)} checkpoints ({', '.join(p.name for p in chosen)}) into {out}")
    return 0


def data(args) -> int:
    if args.corpus == "prepare":
        return prepare(args)
    if args.corpus == "wmt14":
        download_wmt14(args.out, args.mirror, **prepare_settings(args))
        return 0
    for path in download_multi30k(args.out):
        print(path)
    return 0


PREPARE_KEYS = ("vocab_size", "tokenizer_sample", "tokenizer", "vocab")


def prepare(args) -> int:
    if not (args.src and args.tgt):
        raise UserError("data prepare: give the training files with --src FILE --tgt FILE")
    prepare_corpus(args.src, args.tgt, args.out, args.valid_src, args.valid_tgt,
                   **prepare_settings(args))
    return 0


def prepare_settings(args) -> dict:
    """The --set keys of `data prepare` and `data wmt14`, checked as every key is."""
    values = parse_sets(args.sets)
    unknown = sorted(set(values) - set(PREPARE_KEYS))
    if unknown:
        raise UserError(f"data {args.corpus}: --set {unknown[0]} does not shape a prepared "
                        f"corpus; the keys that do: {', '.join(PREPARE_KEYS)}")
    train = new_settings("parallel", None, {"task": "parallel", **values}).train
    return {key: getattr(train, key) for key in PREPARE_KEYS}
