"""The `transformer` command: train, translate, evaluate, average, plot, data.

    transformer train TASK [--config FILE] [--set KEY=VALUE ...] [--out RUN_DIR] [--steps N]
    transformer train --resume RUN_DIR
    transformer translate RUN_DIR [--beam 4] [SENTENCE ... | --input FILE | stdin]
    transformer evaluate RUN_DIR [--split test_2016_flickr] [--beam 4]
    transformer average RUN_DIR --last 5
    transformer plot RUN_DIR [--attention "a sentence"]
    transformer data multi30k --out DIR
    transformer ablate [--task copy|multi30k] [--steps N] [--out DIR] [--set KEY=VALUE ...]

Exit codes: 0 done; 2 bad usage or bad input (one line on stderr saying what and where);
130 interrupted, after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from .errors import UserError
from .recipe import TrainConfig, build_model_config, parse_sets, read_recipe, split_keys

TASK_CHOICES = ("copy", "reverse", "sort", "multi30k", "parallel")


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage errors, as one line and exit 2
        raise UserError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="transformer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    p = sub.add_parser("train", help="train a model (or --resume a stopped run)")
    p.add_argument("task", nargs="?", choices=TASK_CHOICES)
    p.add_argument("--config", help="TOML recipe (flat keys, as --set)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   nargs="+", help="override recipe keys, e.g. --set d_model=128 warmup=400")
    p.add_argument("--out", help="run directory (default runs/TASK-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run exactly")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--data-dir", help="Multi30k folder (default: TRANSFORMER_DATA or ../shared/data/multi30k)")
    p.add_argument("--src", help="parallel task: source training file")
    p.add_argument("--tgt", help="parallel task: target training file")
    p.add_argument("--valid-src")
    p.add_argument("--valid-tgt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("translate", help="translate sentences with a trained run")
    p.add_argument("run_dir")
    p.add_argument("sentences", nargs="*")
    p.add_argument("--input", help="a file with one sentence per line ('-' = stdin)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--checkpoint", help="checkpoint folder (default: best, else latest)")
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("evaluate", help="BLEU (sacreBLEU) of a run on a Multi30k split")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test_2016_flickr")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--checkpoint")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--src", help="score these source sentences instead of a Multi30k split")
    p.add_argument("--ref", help="... against these reference translations (with --src)")
    p.add_argument("--output", help="also write the translations to this file")

    p = sub.add_parser("average", help="average the last N checkpoints (as the paper did)")
    p.add_argument("run_dir")
    p.add_argument("--last", type=int, default=5)

    p = sub.add_parser("plot", help="learning curves (and attention maps) as PNG")
    p.add_argument("run_dir")
    p.add_argument("--attention", metavar="SENTENCE")
    p.add_argument("--checkpoint")

    p = sub.add_parser("data", help="download a corpus from its upstream")
    p.add_argument("corpus", choices=("multi30k",))
    p.add_argument("--out", required=True)

    p = sub.add_parser("ablate", help="train the classic mistakes next to the baseline (ablate.py)")
    p.add_argument("--task", choices=("copy", "multi30k"), default="copy")
    p.add_argument("--steps", type=int)
    p.add_argument("--out", help="folder for the table, the plot and a run per variant")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", nargs="+")
    p.add_argument("--overwrite", action="store_true", help="replace existing variant runs")
    return parser


def resolve_train_config(args) -> tuple[dict, TrainConfig]:
    values = {}
    if args.config:
        values.update(read_recipe(args.config))
    values.update(parse_sets([item for group in args.sets for item in group]))
    if args.task:
        values["task"] = args.task
    for key, flag in (("steps", args.steps), ("seed", args.seed), ("device", args.device),
                      ("data_dir", args.data_dir), ("src", args.src), ("tgt", args.tgt),
                      ("valid_src", args.valid_src), ("valid_tgt", args.valid_tgt)):
        if flag is not None:
            values[key] = flag
    return split_keys(values)


def command_train(args) -> int:
    from . import train as training
    from .tasks import make_task

    if args.resume:
        run_dir = Path(args.resume)
        saved = read_run_config(run_dir)
        try:
            model_keys = {k: v for k, v in saved["model"].items()
                          if k not in ("src_vocab_size", "tgt_vocab_size", "pad_id")}
            train_cfg = TrainConfig(**saved["train"])
        except (KeyError, TypeError, AttributeError) as error:  # edited by hand, or another version
            detail = f"no key {error}" if isinstance(error, KeyError) else error
            raise UserError(f"{run_dir / 'config.json'}: not a run config ({detail})") from None
        if args.steps is not None:
            train_cfg = dataclasses.replace(train_cfg, steps=args.steps)
    else:
        if not args.task and not args.config:
            raise UserError("train: give a TASK (copy, reverse, sort, multi30k, parallel) or --resume RUN_DIR")
        model_keys, train_cfg = resolve_train_config(args)
        if train_cfg.task not in TASK_CHOICES:
            raise UserError(f"task {train_cfg.task!r}: expected one of {', '.join(TASK_CHOICES)}")
        # Check the model keys now, before a run directory (or a tokenizer) is made for them;
        # the vocabulary is not known yet, any will do for this check.
        build_model_config(model_keys, vocab_size=8, pad_id=0)

    with training.distributed(training.resolve_device(train_cfg.device)) as ddp:
        made = {}

        def prepare() -> str:
            # Under torchrun, rank 0 alone creates the run directory, the task (a translation
            # task trains and saves its tokenizer) and config.json; then the others read them.
            run_dir = Path(args.resume) if args.resume else new_run_dir(args, train_cfg)
            made["task"] = make_task(train_cfg, run_dir, model_keys)
            model_cfg = build_model_config(model_keys, made["task"].vocab_size, made["task"].pad_id)
            if not args.resume:
                (run_dir / "config.json").write_text(json.dumps(
                    {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg)},
                    indent=2) + "\n", encoding="utf-8")
            return str(run_dir)

        run_dir = Path(training.main_first(ddp, prepare))
        task = made["task"] if "task" in made else make_task(train_cfg, run_dir, model_keys, quiet=True)
        model_cfg = build_model_config(model_keys, task.vocab_size, task.pad_id)
        started = time.time()
        summary = training.train(run_dir, model_cfg, train_cfg, task, resume=bool(args.resume),
                                 quiet=args.quiet)
        print_summary(summary, task, time.time() - started, run_dir)
    return 0


def new_run_dir(args, train_cfg: TrainConfig) -> Path:
    """The directory of a new run: --out, or runs/TASK-TIME; made empty and ready."""
    run_dir = Path(args.out or f"runs/{train_cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and any(run_dir.iterdir()):
        if not args.overwrite:
            raise UserError(f"{run_dir}: already holds a run; use --resume {run_dir} or --overwrite")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def print_summary(summary: dict, task, wall_s: float, run_dir: Path) -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
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


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (is {run_dir} a run directory?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON: {error}") from None


def main(argv: list[str] | None = None) -> int:
    from .train import INTERRUPTED_EXIT_CODE, Interrupted

    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and args.command == "translate" and not any(a.startswith("-") for a in extra):
            args.sentences += extra  # sentences after an option: translate RUN --beam 2 "text"
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.command == "train":
            return command_train(args)
        from . import commands
        return getattr(commands, args.command)(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
