"""The `transformer` command: the parser, and the one place that turns errors into exit codes.

    transformer train TASK [--config FILE] [--set KEY=VALUE ...] [--out RUN_DIR] [--steps N]
    transformer train --resume RUN_DIR
    transformer translate RUN_DIR [--beam 4 | --sample] [--n-best K] [--scores]
                          [SENTENCE ... | --input FILE | stdin, line by line]
    transformer score RUN_DIR --src FILE --tgt FILE [--tokens]
    transformer evaluate RUN_DIR [--split test_2016_flickr] [--beam 4] [--length-penalty A]
    transformer average RUN_DIR --last 5
    transformer plot RUN_DIR [--attention "a sentence"]
    transformer serve RUN_DIR [--port 8000]
    transformer explore RUN_DIR "a sentence" --out page.html [--compare OTHER_RUN_DIR]
    transformer data multi30k --out DIR
    transformer ablate [--task copy|multi30k] [--steps N] [--out DIR] [--set KEY=VALUE ...]

Each command's body lives in a module of this folder (train.py, translate.py,
experiments.py, serving.py), imported only when that command runs: `transformer --help`
and `translate` never load matplotlib or http.server.

Exit codes: 0 done; 2 bad usage or bad input (one line on stderr saying what and where);
130 interrupted, after saving a checkpoint; 141 the reader of the output went away.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys

from ..data.parallel import MULTI30K_TEST
from ..decoding.translate import DEFAULT_BEAM
from ..errors import UserError
from ..run.settings import RESUMABLE_KEYS
from ..serving.export import QUANTIZATIONS
from ..training.config import TASK_CHOICES
from ..training.loop import INTERRUPTED_EXIT_CODE, Interrupted
from .formats import SCORE_FORMATS, TRANSLATE_FORMATS

BROKEN_PIPE_EXIT_CODE = 141  # 128 + SIGPIPE, what a shell reports for a tool cut off this way


CHECKPOINT_HELP = "checkpoint folder (default: the newest of averaged, best and the latest step)"

class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage errors, as one line and exit 2
        raise UserError(f"{self.prog}: {message}")


def at_least(minimum: int):
    """An argparse type: an integer >= minimum, else a one-line usage error naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


def finite_number(minimum: float, inclusive: bool):
    """An argparse type: a finite number above `minimum` (or equal to it, `inclusive`),
    else a one-line usage error naming the value."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and (value >= minimum if inclusive else value > minimum)):
            raise argparse.ArgumentTypeError(f"must be a number {'at least' if inclusive else 'above'} "
                                             f"{minimum:g}, got {text}")
        return value
    parse.__name__ = f"number {'>=' if inclusive else '>'} {minimum:g}"
    return parse


positive_number = finite_number(0, inclusive=False)


def command(module: str, function: str):
    """The body of a command, `cli/MODULE.py`'s FUNCTION(args), imported when it runs."""
    def run(args) -> int:
        return getattr(importlib.import_module(f".{module}", __package__), function)(args)
    return run


def add_sets(parser: argparse.ArgumentParser, help: str) -> None:
    """--set KEY=VALUE ..., as often as wanted: one flat list of items in `args.sets`."""
    parser.add_argument("--set", dest="sets", action="extend", default=[], metavar="KEY=VALUE",
                        nargs="+", help=help)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="transformer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    add_train(sub)
    add_translate(sub)
    add_score_and_evaluate(sub)
    add_run_tools(sub)
    add_serving(sub)
    return parser


def add_train(sub) -> None:
    """Train: a new run from a recipe, or --resume one."""
    p = sub.add_parser("train", help="train a model (or --resume a stopped run)", epilog=(
        "Without --config, copy, reverse and sort train the copy recipe, multi30k the multi30k "
        "recipe, wmt14 the wmt14 recipe (on the folder of `transformer data wmt14`). On "
        "--resume, max_minutes counts from the resume, not from the run's start."))
    p.set_defaults(run=command("train", "train"))
    p.add_argument("task", nargs="?", choices=TASK_CHOICES)
    p.add_argument("--config", help="a TOML recipe file, or a shipped recipe by name "
                                    "(copy, multi30k, base, big, wmt14); default: the task's own")
    add_sets(p, "override recipe keys, e.g. --set d_model=128 warmup=400")
    p.add_argument("--out", help="run directory (default runs/TASK-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help=(
        "continue a stopped run exactly; only these keys may change (--set, --steps, --device): "
        + ", ".join(RESUMABLE_KEYS)))
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory (never a folder that is not a run)")
    p.add_argument("--steps", type=at_least(1))
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--data-dir", help="Multi30k folder (default: TRANSFORMER_DATA or ../shared/data/multi30k)")
    p.add_argument("--data", help="parallel task: a prepared corpus (transformer data prepare)")
    p.add_argument("--src", help="parallel task: source training file")
    p.add_argument("--tgt", help="parallel task: target training file")
    p.add_argument("--valid-src")
    p.add_argument("--valid-tgt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_translate(sub) -> None:
    """Translate: text through a run, batched or line by line."""
    p = sub.add_parser("translate", help="translate sentences with a trained run",
                       epilog=TRANSLATE_FORMATS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=command("translate", "translate"))
    p.add_argument("run_dir")
    p.add_argument("sentences", nargs="*")
    p.add_argument("--input", help="a file with one sentence per line, translated in batches "
                                   "('-' = stdin, read and answered line by line)")
    p.add_argument("--beam", type=at_least(1),
                   help=f"beam size; 1 = greedy (default {DEFAULT_BEAM})")
    p.add_argument("--n-best", type=at_least(1), metavar="K",
                   help="the K best translations of each sentence (K <= --beam), or with "
                        "--sample K samples; format below")
    p.add_argument("--scores", action="store_true",
                   help="add each output's log-probability and length-normalised score")
    p.add_argument("--sample", action="store_true",
                   help="draw each token at random from the model's distribution instead of "
                        "searching (ancestral sampling)")
    p.add_argument("--temperature", type=positive_number, metavar="T",
                   help="with --sample: divide the logits by T > 0; below 1 sharper, above 1 "
                        "flatter (default 1.0)")
    p.add_argument("--top-k", type=at_least(0), metavar="K",
                   help="with --sample: draw among the K most likely tokens only "
                        "(default 0: the whole vocabulary)")
    p.add_argument("--seed", type=int, help="with --sample: the same seed draws the same "
                                            "samples for the same line (default: a random one, "
                                            "said on stderr)")
    p.add_argument("--long", choices=("error", "truncate"), default="error",
                   help="a sentence longer than the model's limit: refuse the input, naming "
                        "every such line (default), or cut it at the limit with a warning")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--device", default="cpu")


def add_score_and_evaluate(sub) -> None:
    """Score (forced decoding) and evaluate (sacreBLEU)."""
    p = sub.add_parser("score", help="forced decoding: the log-probability of each translation "
                                     "in --tgt of its source in --src",
                       epilog=SCORE_FORMATS, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=command("translate", "score"))
    p.add_argument("run_dir")
    p.add_argument("--src", required=True, help="source sentences, one per line")
    p.add_argument("--tgt", required=True, help="their translations, line by line")
    p.add_argument("--tokens", action="store_true", help="also the log-probability of every token")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("evaluate", help="BLEU (sacreBLEU) of a run on a Multi30k split")
    p.set_defaults(run=command("translate", "evaluate"))
    p.add_argument("run_dir")
    p.add_argument("--split", help=f"Multi30k split (default {MULTI30K_TEST}; a run "
                                   "trained on its own files: its validation files)")
    p.add_argument("--beam", type=at_least(1), default=DEFAULT_BEAM)
    p.add_argument("--length-penalty", type=finite_number(0, inclusive=True),
                   help="GNMT's alpha (default: the run's length_penalty)")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cpu")
    p.add_argument("--src", help="score these source sentences instead of a Multi30k split")
    p.add_argument("--ref", help="... against these reference translations (with --src)")
    p.add_argument("--output", help="also write the translations to this file")


def add_serving(sub) -> None:
    """Serve (the HTTP API and explorer) and explore (one offline page)."""
    p = sub.add_parser("serve", help="HTTP API and the attention explorer page, on 127.0.0.1")
    p.set_defaults(run=command("serving", "serve"))
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the newest of averaged, best, latest)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=at_least(0), default=8000)
    p.add_argument("--device", default="cpu")

    p = sub.add_parser("export", help="the model for an inference engine (CTranslate2)")
    p.set_defaults(run=command("serving", "export"))
    p.add_argument("run_dir")
    p.add_argument("--to", choices=("ctranslate2",), default="ctranslate2")
    p.add_argument("--out", required=True, help="the folder of the exported model")
    p.add_argument("--quantization", choices=QUANTIZATIONS, default="float32")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")

    p = sub.add_parser("explore", help="the attention explorer for one sentence, as one offline HTML file")
    p.set_defaults(run=command("serving", "explore"))
    p.add_argument("run_dir")
    p.add_argument("sentence")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--compare", metavar="OTHER_RUN_DIR", help="the same sentence through a second run, side by side")
    p.add_argument("--beam", type=at_least(1), default=DEFAULT_BEAM)
    p.add_argument("--device", default="cpu")


def add_run_tools(sub) -> None:
    """Average, plot, data, ablate."""
    p = sub.add_parser("average", help="average the last N checkpoints (as the paper did)")
    p.set_defaults(run=command("train", "average"))
    p.add_argument("run_dir")
    p.add_argument("--last", type=int, default=5)

    p = sub.add_parser("plot", help="learning curves (and attention maps) as PNG")
    p.set_defaults(run=command("experiments", "plot"))
    p.add_argument("run_dir")
    p.add_argument("--attention", metavar="SENTENCE")
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP)

    p = sub.add_parser("data", help="download a corpus, or prepare one for training", epilog=(
        "prepare: tokenize line-aligned files once into DIR (memory-mapped token ids, the "
        "tokenizer, a manifest); `train parallel --data DIR` trains from it. Preparing the "
        "same inputs with the same settings again does nothing. wmt14: the paper's corpus, "
        "downloaded, checked, cleaned and prepared into DIR/prepared."))
    p.set_defaults(run=command("train", "data"))
    p.add_argument("corpus", choices=("multi30k", "wmt14", "prepare"))
    p.add_argument("--out", required=True)
    p.add_argument("--mirror", metavar="URL", help="wmt14: fetch the archives from URL/NAME "
                                                   "(a copy of them), checked alike")
    p.add_argument("--src", help="prepare: source training file")
    p.add_argument("--tgt", help="prepare: target training file")
    p.add_argument("--valid-src")
    p.add_argument("--valid-tgt")
    add_sets(p, "prepare, wmt14: vocab_size, tokenizer_sample, tokenizer, vocab")

    p = sub.add_parser("ablate", help="train the classic mistakes next to the baseline")
    p.set_defaults(run=command("experiments", "ablate"))
    p.add_argument("--task", choices=("copy", "multi30k"), default="copy")
    p.add_argument("--steps", type=int)
    p.add_argument("--out", help="folder for the table, the plot and a run per variant")
    add_sets(p, "recipe keys over the task's recipe")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing variant runs (never a folder that is not a run)")


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and args.command == "translate" and not any(a.startswith("-") for a in extra):
            args.sentences += extra  # sentences after an option: translate RUN --beam 2 "text"
        elif extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.run(args)
    except UserError as error:
        # One write for the line and its newline: under torchrun every rank writes to the
        # same stderr, and print's two writes would let another rank's line in between.
        sys.stderr.write(f"error: {error}\n")
        return 2
    except Interrupted as stop:
        sys.stderr.write(f"\n{stop}\n")
        return INTERRUPTED_EXIT_CODE
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return INTERRUPTED_EXIT_CODE
    except BrokenPipeError:
        # The reader went away (`translate ... | head -1`): stop quietly, as Unix tools do.
        # stdout is pointed at /dev/null so that Python's own flush at exit fails no more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE_EXIT_CODE
