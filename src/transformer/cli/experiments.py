"""The commands that look at runs: plot (learning curves, attention maps) and ablate (the
classic mistakes trained next to the baseline). They need matplotlib, which the other
commands never load.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..checkpoint.catalogue import describe_checkpoint
from ..decoding.analyze import analyze
from ..decoding.translate import DEFAULT_BEAM
from ..errors import UserError
from ..experiments.ablate import ablate as run_ablation
from ..experiments.ablate_report import format_table
from ..experiments.plots import plot_attention, plot_curves
from ..run.rundir import load_run
from ..run.settings import parse_sets
from .translate import say


def plot(args) -> int:
    run_dir = Path(args.run_dir)
    written = plot_curves(run_dir)
    notes = []
    if args.attention is not None:
        written += plot_attention_for(run_dir, args.attention, args.checkpoint, notes)
    for path in written:
        print(path)
    say(notes)
    return 0


def plot_attention_for(run_dir: Path, sentence: str, checkpoint: str | None,
                       notes: list[str]) -> list[Path]:
    """Every attention map of `sentence` translated as the explorer and the server translate
    it (beam search, the run's length penalty and limit): one PNG per kind and layer."""
    run = load_run(run_dir, checkpoint)
    notes.append(f"using checkpoint {describe_checkpoint(run.checkpoint)}")
    try:  # a synthetic run reads its symbols, e.g. "3 1 4 1 5", and refuses anything else
        answer = analyze(run.model, run.source, sentence, run.settings.train.decoding,
                         beam=DEFAULT_BEAM, attention=True, target=run.target)
    except UserError as error:
        raise UserError(f"--attention {sentence!r}: {error}") from None
    attention = answer["attention"]
    maps = {"encoder": attention["encoder"], "decoder_self": attention["decoder"],
            "cross": attention["cross"]}
    tensors = {kind: [torch.tensor(layer, dtype=torch.float64) for layer in layers]
               for kind, layers in maps.items()}
    return plot_attention(tensors, answer["source_tokens"], answer["decoder_input_tokens"],
                          run_dir / "plots")


def ablate(args) -> int:
    """Run the variants, print the table, say where the files are."""
    sets = parse_sets(args.sets)
    out = Path(args.out or f"runs/ablate-{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    results = run_ablation(args.task, sets, args.steps, out, overwrite=args.overwrite)
    print()
    print(format_table(results, "bleu" if args.task == "multi30k" else "exact_match"), end="")
    for r in results:
        if r["failure"]:
            print(f"{r['variant']}: {r['failure']}")
    print(f"\nwritten: {out / 'ablation.md'}, {out / 'ablation.png'}, and a run directory per variant")
    return 0
