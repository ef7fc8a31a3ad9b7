"""One summary line of a lever run (benchmarks/lever.sh): read from its metrics.jsonl.

    python benchmarks/lever_summary.py RUN_DIR NAME "KEY=VALUE ..."
"""

import statistics
import sys
from pathlib import Path

from transformer.training.metrics import metric_series, read_metrics


def summary(run_dir: Path, name: str, overrides: str) -> str:
    records = read_metrics(run_dir / "metrics.jsonl")
    steps, speeds = metric_series(records, "train", "tokens_per_s")
    _, losses = metric_series(records, "eval", "loss")
    bleu_steps, bleus = metric_series(records, "eval", "bleu")
    elapsed = [r["elapsed_s"] for r in records if r.get("kind") == "train"]
    return (f"{name} | {overrides or '(recipe)'} | updates {steps[-1]:,} | "
            f"tokens/s {statistics.median(speeds):,.0f} | train {elapsed[-1] / 60:.1f} min | "
            f"valid loss {losses[-1]:.3f} | valid BLEU {bleus[-1]:.2f} (step {bleu_steps[-1]:,})")


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""))
