#!/usr/bin/env bash
# The data path at WMT14's size, on this machine: Multi30k's training set repeated to
# PAIRS sentence pairs (a load test of the data path, not of quality), then
#   1. `transformer data prepare`: wall time and peak resident memory;
#   2. `transformer train parallel --data DIR`, a tiny model, 2 torchrun processes: the time
#      from the start to the first update, fresh and on --resume, and each rank's peak
#      resident memory;
#   3. the loader alone: batches per second at the base recipe's 25,000 tokens per batch.
# Usage: bash benchmarks/data_scale.sh [WORK_DIR]   (PAIRS=4500000 by default; WORK_DIR needs
# ~2 GB; KEEP_PREPARED=1 keeps a prepared folder of an earlier run). Nothing else should
# run beside it: the times are wall-clock.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/data-scale}
PAIRS=${PAIRS:-4500000}
BIN=.venv/bin
mkdir -p "$WORK"
echo "== data_scale.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), $PAIRS pairs, into $WORK"

"$BIN/python" - "$WORK" "$PAIRS" <<'PY'
import sys
from pathlib import Path
from transformer.data.parallel import load_multi30k
work, n = Path(sys.argv[1]), int(sys.argv[2])
pairs = load_multi30k("train", "en", "de")
if not (work / "train.en").is_file() or sum(1 for _ in open(work / "train.en")) != n:
    with open(work / "train.en", "w") as en, open(work / "train.de", "w") as de:
        for i in range(n):
            s, t = pairs[i % len(pairs)]
            en.write(s + "\n")
            de.write(t + "\n")
print(f"corpus: {n:,} pairs, {(work / 'train.en').stat().st_size / 2**20:.0f} + "
      f"{(work / 'train.de').stat().st_size / 2**20:.0f} MiB")
PY

echo "== 1. prepare"
if [ "${KEEP_PREPARED:-0}" = 1 ] && [ -f "$WORK/prepared/manifest.json" ]; then
  echo "(KEEP_PREPARED=1: the folder of an earlier run kept, not timed again)"
else
  rm -rf "$WORK/prepared"
  /usr/bin/time -f "prepare: %e s wall, peak resident %M KiB" \
    "$BIN/transformer" data prepare --src "$WORK/train.en" --tgt "$WORK/train.de" \
    --out "$WORK/prepared" --set vocab_size=8000
fi
/usr/bin/time -f "prepare again: %e s wall, peak resident %M KiB" \
  "$BIN/transformer" data prepare --src "$WORK/train.en" --tgt "$WORK/train.de" \
  --out "$WORK/prepared" --set vocab_size=8000

echo "== 2. train from it: 2 torchrun processes, start to the first update"
TINY=(d_model=32 n_heads=2 d_ff=64 n_encoder_layers=1 n_decoder_layers=1 max_len=64
      batch_tokens=2048 eval_every=100000 save_every=2 log_every=1 threads=1)
for mode in fresh resume; do
  if [ "$mode" = fresh ]; then
    rm -rf "$WORK/run"
    ARGS=(train parallel --data "$WORK/prepared" --out "$WORK/run" --steps 2 --quiet --set "${TINY[@]}")
  else
    ARGS=(train --resume "$WORK/run" --steps 3 --quiet)
  fi
  START=$(date +%s.%N)
  "$BIN/torchrun" --nproc-per-node 2 -m transformer.cli "${ARGS[@]}" > "$WORK/$mode.log" 2>&1 &
  PID=$!
  PEAK=()
  # the first update has happened when metrics.jsonl holds a training record
  until grep -q '"kind": "train"' "$WORK/run/metrics.jsonl" 2>/dev/null \
        && [ "$(grep -c '"kind": "train"' "$WORK/run/metrics.jsonl")" -ge "$([ $mode = fresh ] && echo 1 || echo 3)" ]; do
    for p in $(pgrep -f "transformer.cli ${ARGS[0]}" || true); do
      rss=$(awk '/VmHWM/ {print $2}' /proc/$p/status 2>/dev/null || echo 0)
      PEAK+=("$p:$rss")
    done
    sleep 0.2
    kill -0 $PID 2>/dev/null || break
  done
  END=$(date +%s.%N)
  wait $PID || { cat "$WORK/$mode.log"; exit 1; }
  echo "$mode: first update after $(echo "$END - $START" | bc) s"
  printf '%s\n' "${PEAK[@]}" | sort -t: -k1,1 -k2,2n | awk -F: '{m[$1]=$2} END {for (p in m) printf "  process %s: peak resident %.0f MiB\n", p, m[p]/1024}'
done

echo "== 3. the loader alone, 25,000 tokens per batch"
"$BIN/python" - "$WORK" <<'PY'
import sys, time
from pathlib import Path
from transformer.run.settings import settings_from_values
from transformer.training.tasks import make_task
work = Path(sys.argv[1])
settings = settings_from_values({"task": "parallel", "data": str(work / "prepared"),
                                 "batch_tokens": 25000, "max_len": 256})
(work / "loader-run").mkdir(exist_ok=True)
started = time.perf_counter()
task = make_task(settings.train, work / "loader-run", settings.model.max_len, quiet=True)
print(f"loader set-up: {time.perf_counter() - started:.1f} s, {task.batches_per_epoch:,} batches per epoch")
stream = task.train_stream(None)
next(stream)
started, n, tokens = time.perf_counter(), 0, 0
while time.perf_counter() - started < 20:
    (src, tgt_in, tgt_out), _ = next(stream)
    n += 1
    tokens += int((tgt_out != 0).sum())
took = time.perf_counter() - started
print(f"loader: {n / took:.1f} batches/s, {tokens / took:,.0f} target tokens/s (one process)")
PY
