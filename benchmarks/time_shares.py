"""Where a run's wall time went: updates, and the pauses between them for evaluation and
checkpoints, read from its metrics.jsonl (training records every `log_every` updates).

A gap between two training records that holds an evaluation (loss, or loss and BLEU) or
a checkpoint is longer than a gap of updates alone; the excess over the run's median gap
is charged to what happened in it. Start-up (data, BPE, model) is what passes before the
first record's updates, estimated at the median pace.

    python benchmarks/time_shares.py RUN_DIR
"""

import json
import statistics
import sys
from pathlib import Path

from transformer.training.metrics import read_metrics


def shares(run_dir: Path) -> dict:
    records = read_metrics(run_dir / "metrics.jsonl")
    config = json.loads((run_dir / "config.json").read_text())["train"]
    train = [r for r in records if r.get("kind") == "train"]
    bleu_steps = {r["step"] for r in records if r.get("kind") == "eval" and "bleu" in r}
    loss_steps = {r["step"] for r in records if r.get("kind") == "eval"} - bleu_steps
    save_steps = {r["step"] for r in train if r["step"] % config["save_every"] == 0}
    pace = statistics.median((b["elapsed_s"] - a["elapsed_s"]) / (b["step"] - a["step"])
                             for a, b in zip(train, train[1:]))
    charged = {"BLEU evaluations (with loss and checkpoint)": 0.0,
               "loss evaluations and checkpoints": 0.0}
    for a, b in zip(train, train[1:]):
        inside = set(range(a["step"], b["step"]))  # an evaluation at step s precedes s + 1
        excess = max(0.0, b["elapsed_s"] - a["elapsed_s"] - pace * (b["step"] - a["step"]))
        if inside & bleu_steps:
            charged["BLEU evaluations (with loss and checkpoint)"] += excess
        elif inside & (loss_steps | save_steps):
            charged["loss evaluations and checkpoints"] += excess
    total = train[-1]["elapsed_s"]
    start = max(0.0, train[0]["elapsed_s"] - pace * train[0]["step"])
    updates = total - start - sum(charged.values())
    return {"total_s": total, "updates": train[-1]["step"], "s_per_update": pace,
            "start-up": start, "updates_s": updates, **charged}


if __name__ == "__main__":
    result = shares(Path(sys.argv[1]))
    total = result["total_s"]
    print(f"{result['updates']:,} updates in {total:,.0f} s ({result['s_per_update']:.3f} s per "
          "update at the median pace)")
    for key in ("updates_s", "start-up", "BLEU evaluations (with loss and checkpoint)",
                "loss evaluations and checkpoints"):
        name = "updates" if key == "updates_s" else key
        print(f"  {name:45s} {result[key]:8,.0f} s  {result[key] / total:6.1%}")
