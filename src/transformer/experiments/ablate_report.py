"""The report of an ablation (ablate.py): one row per variant, as an aligned text table
for the terminal and as OUT/ablation.md.

A row: final training and validation loss, the score (exact match or BLEU), parameters,
when the score was reached, seconds. `results` are the dicts of `ablate.summarize`.
"""

from __future__ import annotations

import platform
import time

import torch


def table_rows(results: list[dict], score: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) as strings; `score` is "exact_match" or "bleu"."""
    if score == "bleu":
        header = ["variant", "train loss", "valid loss", "BLEU", "parameters", "best BLEU at step", "seconds"]
    else:
        header = ["variant", "train loss", "valid loss", "exact match", "parameters",
                  "steps to 99%", "seconds"]
    rows = []
    for r in results:
        if r[score] is None:
            shown = "diverged" if r["failure"] else "-"
        else:
            shown = f"{r['bleu']:.2f}" if score == "bleu" else f"{r['exact_match']:.1%}"
        when = r["best_bleu_step"] if score == "bleu" else r["steps_to_99"]
        rows.append([r["variant"], f"{r['train_loss']:.3f}", f"{r['valid_loss']:.3f}", shown,
                     f"{r['parameters']:,}", "never" if when is None else str(when),
                     f"{r['wall_s']:.0f}"])
    return header, rows


def format_table(results: list[dict], score: str, markdown: bool = False) -> str:
    """The results as an aligned text table, or as a Markdown table."""
    header, rows = table_rows(results, score)
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:  # the variant left-aligned, the numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)]) + "\n"


def markdown_report(command: str, task: str, values: dict, table: str,
                    variants: tuple) -> str:
    device = values.get("device", "cpu")
    machine = torch.cuda.get_device_name(device) if device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()} CPU (torch threads: {torch.get_num_threads()})"
    lines = [f"# Ablation: {task}, {values['steps']} steps", "",
             f"`{command}`: every variant from seed {values.get('seed', 0)}, "
             f"on the same batches, for the same number of updates. Measured "
             f"{time.strftime('%Y-%m-%d')} on {machine}, torch {torch.__version__}.", "",
             table,
             "Training loss: label-smoothed, averaged over the last `log_every` updates. "
             "Validation loss and the score: the final evaluation. Variants that replace the "
             "attention function run the readable (manual) attention path, slower than the "
             "fused one whatever the mistake; compare their seconds with that in mind.", ""]
    lines += [f"- **{v.name}**: {v.change}" for v in variants]
    return "\n".join(lines) + "\n"
