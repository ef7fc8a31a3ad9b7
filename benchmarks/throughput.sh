#!/usr/bin/env bash
# Training throughput of the multi30k recipe on this machine, one setting at a time: each
# trains for BUDGET_S seconds (default 100, then SIGTERM) with KEY=VALUE overrides and
# prints the median target tokens/s and the updates/s of its training records after the
# first 20 updates (start-up and warm-up of the allocator left out). PROCS=2 runs it as two
# torchrun processes (gloo); give them threads=1. Nothing else should run meanwhile.
#
#     bash benchmarks/throughput.sh NAME [KEY=VALUE ...]
#     PROCS=2 bash benchmarks/throughput.sh ddp2x1 threads=1 batch_tokens=2048
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1; shift
RUN=runs/throughput/$NAME
BUDGET_S=${BUDGET_S:-100}
PROCS=${PROCS:-1}
mkdir -p runs/throughput
if [ "$PROCS" -gt 1 ]; then
  LAUNCH=(.venv/bin/torchrun --nproc-per-node "$PROCS" -m transformer)
else
  LAUNCH=(.venv/bin/transformer)
fi
# Stopped by SIGTERM after the budget (a checkpoint, exit 130): no final evaluation to wait for.
timeout -s TERM "$BUDGET_S" "${LAUNCH[@]}" train multi30k --config multi30k --out "$RUN" \
    --overwrite --quiet --set eval_every=100000 save_every=100000 log_every=5 "$@" \
    > "$RUN.log" 2>&1 || true
.venv/bin/python - "$RUN" "$NAME" "$PROCS" "$*" <<'PY'
import statistics, sys
from pathlib import Path
from transformer.training.metrics import read_metrics
run, name, procs, sets = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
train = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "train" and r["step"] > 20]
speed = statistics.median(r["tokens_per_s"] for r in train)
steps = (train[-1]["step"] - train[0]["step"]) / (train[-1]["elapsed_s"] - train[0]["elapsed_s"])
print(f"{name} | {procs} process(es) | {sets or '(recipe)'} | {speed:,.0f} target tokens/s | "
      f"{steps:.2f} updates/s | updates measured {train[0]['step']}-{train[-1]['step']}")
PY
