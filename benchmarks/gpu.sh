#!/usr/bin/env bash
# The GPU benchmark, written before a GPU is lent: on one CUDA device, in under 8 minutes,
#   1. speed: benchmarks/speed.py at the base size (6+6 layers, d_model 512), in float32
#      (TF32 matmuls), under bf16 autocast, and in bf16 with both models torch.compile'd:
#      training tokens/s against nn.Transformer and the model FLOP utilisation (MFU);
#   2. quality: Multi30k en->de with the training budget of Wu et al. (2021), ~8,000
#      updates of ~8k tokens, in bf16 (BLEU during training only at the end, to keep it
#      cheap); the average of the last 5 checkpoints, scored with sacreBLEU (beam 4) on
#      val and test_2016_flickr;
#   3. the paper's setting, when a prepared WMT14 corpus is given (WMT14_DATA=DIR/prepared,
#      from `transformer data wmt14`): the wmt14 recipe (base model, bf16) trained for
#      WMT14_MINUTES (3) minutes, its training tokens/s and MFU; skipped, with the reason,
#      without one;
#   4. one JSON summary: speed rows and MFU, updates, wall time per phase, val/test BLEU,
#      the WMT14 throughput. Its path is the last line printed.
#
#     bash benchmarks/gpu.sh                    # into runs/gpu-benchmark
#     DRY_RUN=1 bash benchmarks/gpu.sh          # every step on the CPU at a tiny size (~1-2 min)
#     OUT=DIR SET="dropout=0.3" bash benchmarks/gpu.sh    # elsewhere; more recipe keys
#     PYTHON=python3 bash benchmarks/gpu.sh     # any Python with torch and the dependencies
#
# BUDGET_MINUTES (8) bounds the whole script: training gets what the speed phase left
# (less the time the evaluations need) as its `max_minutes`, and the summary says whether
# it stopped there before 8,000 updates. The data is found as `transformer train` finds
# it: TRANSFORMER_DATA, or ../shared/data/multi30k. The dry run compiles with the
# aot_eager backend (graph capture without code generation: inductor's C++ compile on a
# 2-core CPU takes minutes); COMPILE_BACKEND=inductor DRY_RUN=1 compiles for real.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, installed or not
OUT=${OUT:-runs/gpu-benchmark}
BUDGET_MINUTES=${BUDGET_MINUTES:-8}
DRY_RUN=${DRY_RUN:-0}
read -r -a EXTRA <<< "${SET:-}"  # more KEY=VALUE for the training recipe

fail() { echo "gpu.sh: $*" >&2; exit 2; }
[[ $DRY_RUN == 0 || $DRY_RUN == 1 ]] || fail "DRY_RUN=$DRY_RUN: must be 0 or 1"
[[ $BUDGET_MINUTES =~ ^[0-9]+([.][0-9]+)?$ ]] ||
  fail "BUDGET_MINUTES=$BUDGET_MINUTES: must be a number of minutes"
command -v "$PYTHON" > /dev/null || fail "$PYTHON not found: set up .venv first (make), or set PYTHON"

if [[ $DRY_RUN == 1 ]]; then
  DEVICE=cpu STEPS=20 BATCH_TOKENS=512 SAVE_EVERY=4 EVAL_EVERY=10
  # Nominal peaks (1 TFLOP/s), so that the MFU fields exist; on the CPU they mean nothing.
  export PEAK_TFLOPS=${PEAK_TFLOPS:-1} PEAK_TFLOPS_FP32=${PEAK_TFLOPS_FP32:-1}
  export OMP_NUM_THREADS=1  # tiny models: a second thread only waits (10x slower on a busy CPU)
  SPEED=(--configs tiny --batch-tokens 128 --max-len 12 --rounds 2 --steps 1 --warmup 1
         --threads 1 --compile-backend "${COMPILE_BACKEND:-aot_eager}")
  MODEL=(d_model=32 n_heads=2 n_encoder_layers=1 n_decoder_layers=1 d_ff=64 vocab_size=1000
         threads=1 max_len_a=0 max_len_b=4)
else
  DEVICE=cuda STEPS=8000 BATCH_TOKENS=8192 SAVE_EVERY=500 EVAL_EVERY=500
  SPEED=(--configs base --tf32 --compile-backend "${COMPILE_BACKEND:-inductor}")
  MODEL=()
fi
RUN=$OUT/multi30k
mkdir -p "$OUT"
now() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

{
  START=$(now)
  echo "== gpu.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE, dry run $DRY_RUN, into $OUT"
  # Fail in seconds, not after the speed phase: no CUDA, or no data.
  "$PYTHON" - "$DEVICE" <<'EOF'
import sys
import torch
from transformer.data.parallel import find_multi30k_dir
from transformer.errors import UserError

problem = None
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    problem = "no CUDA device (torch.cuda.is_available() is False); DRY_RUN=1 runs it on the CPU"
try:
    print(f"   Multi30k from {find_multi30k_dir()}")
except UserError as error:
    problem = problem or str(error)
if problem:
    print(f"gpu.sh: {problem}", file=sys.stderr)
    sys.exit(2)
EOF

  echo "== 1. speed: fp32, bf16, bf16+compile"
  T=$(now)
  "$PYTHON" benchmarks/speed.py --device "$DEVICE" --modes fp32,bf16,bf16+compile --no-decode \
      "${SPEED[@]}" --json "$OUT/speed.json" | grep -v '^RESULT '
  SPEED_S=$(seconds_since "$T")

  # Training gets the budget left, less ~2.5 minutes for data, averaging and evaluation;
  # the dry run none (0): its few steps always finish.
  MINUTES=0
  if [[ $DRY_RUN == 0 ]]; then
    MINUTES=$(awk -v b="$BUDGET_MINUTES" -v s="$(seconds_since "$START")" \
        'BEGIN { m = b - s / 60 - 2.5; printf "%.2f", (m < 1 ? 1 : m) }')
  fi
  LIMIT="at most $MINUTES minutes"
  [[ $MINUTES == 0 ]] && LIMIT="no time limit"
  echo "== 2. train multi30k: $STEPS updates of $BATCH_TOKENS tokens, bf16, $LIMIT"
  T=$(now)
  "$PYTHON" -m transformer train multi30k --config multi30k --out "$RUN" --overwrite --quiet \
      --set precision=bf16 steps="$STEPS" batch_tokens="$BATCH_TOKENS" device="$DEVICE" \
            max_minutes="$MINUTES" eval_every="$EVAL_EVERY" bleu_every="$STEPS" \
            save_every="$SAVE_EVERY" keep_last=5 "${MODEL[@]}" "${EXTRA[@]}"
  TRAIN_S=$(seconds_since "$T")

  echo "== 3. average the last 5 checkpoints"
  T=$(now)
  "$PYTHON" -m transformer average "$RUN" --last 5 | tee "$OUT/average.txt"
  AVERAGE_S=$(seconds_since "$T")

  echo "== 4. evaluate the average, beam 4"
  T=$(now)
  for split in val test_2016_flickr; do
    "$PYTHON" -m transformer evaluate "$RUN" --checkpoint "$RUN/checkpoints/averaged" --split "$split" \
        --beam 4 --device "$DEVICE" --output "$OUT/averaged.$split.de" > "$OUT/averaged.$split.txt"
    cat "$OUT/averaged.$split.txt"
  done
  EVALUATE_S=$(seconds_since "$T")

  WMT14_RUN=""
  if [[ -n ${WMT14_DATA:-} && -f ${WMT14_DATA:-}/manifest.json ]]; then
    # The dry run: a few updates of a tiny model; the real one: the recipe for a few minutes.
    WMT14_SET=(max_minutes="${WMT14_MINUTES:-3}" steps=100000)
    [[ $DRY_RUN == 1 ]] && WMT14_SET=(steps=3 "${MODEL[@]}" batch_tokens=256 max_len=64)
    echo "== 5. wmt14: the base recipe on $WMT14_DATA (${WMT14_SET[*]})"
    WMT14_RUN=$OUT/wmt14
    "$PYTHON" -m transformer train parallel --config wmt14 --data "$WMT14_DATA" --out "$WMT14_RUN" \
        --overwrite --quiet --set device="$DEVICE" eval_every=100000 save_every=100000 \
        log_every=10 "${WMT14_SET[@]}"
  else
    echo "== 5. wmt14: skipped: no prepared corpus (WMT14_DATA=DIR/prepared, made by" \
         "\`transformer data wmt14 --out DIR\`)"
  fi

  echo "== 6. summary"
  "$PYTHON" - "$OUT" "$RUN" "$DRY_RUN" "$STEPS" "$BATCH_TOKENS" "$MINUTES" \
      "$SPEED_S" "$TRAIN_S" "$AVERAGE_S" "$EVALUATE_S" "$(seconds_since "$START")" \
      "$WMT14_RUN" <<'EOF'
import json, re, statistics, sys
from pathlib import Path
from transformer import Transformer
from transformer.run.rundir import read_settings
from transformer.training.metrics import read_metrics

out, run, dry, steps, batch_tokens, minutes = sys.argv[1:7]
wall = dict(zip(("speed", "train", "average", "evaluate", "total"), map(float, sys.argv[7:12])))
wmt14_run = sys.argv[12]
speed = json.loads(Path(out, "speed.json").read_text())
keys = ("config", "mode", "tokens_per_s_ours", "tokens_per_s_nn_transformer", "ratio", "mfu_ours",
        "mfu_nn_transformer", "mfu_6nt_ours", "first_step_s_ours", "first_step_s_nn_transformer")
records = read_metrics(Path(run, "metrics.jsonl"))
trained = [r for r in records if r["kind"] == "train"]
scored = [r for r in records if r["kind"] == "eval" and "bleu" in r]
updates = max(r["step"] for r in trained)


def bleu(split):
    text = Path(out, f"averaged.{split}.txt").read_text()
    return float(re.search(r"BLEU = ([0-9.]+)", text).group(1))


averaged = re.search(r"averaged \d+ checkpoints \((.*?)\)", Path(out, "average.txt").read_text())


summary = {
    "dry_run": dry == "1",
    "device": speed["meta"]["device_name"], "torch": speed["meta"]["torch"],
    "speed": {"peak_flops": speed["meta"]["peak_flops"], "tf32": speed["meta"]["tf32"],
              "compile_backend": speed["meta"]["compile_backend"],
              "rows": [{k: r.get(k) for k in keys} for r in speed["train"]]},
    "train": {"run_dir": run, "updates": updates, "planned_updates": int(steps),
              "batch_tokens": int(batch_tokens), "max_minutes": float(minutes),
              "stopped_by_time_budget": updates < int(steps),
              "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in trained),
              "val_loss_last": scored[-1]["loss"], "val_bleu_last": scored[-1]["bleu"]},
    "averaged": {"checkpoints": averaged.group(1).split(", "), "val_bleu": bleu("val"),
                 "test_2016_flickr_bleu": bleu("test_2016_flickr"),
                 "bleu_signature": scored[-1]["bleu_signature"]},
    "wall_s": wall,
    "wmt14": None,
}
if wmt14_run:  # tokens/s of the base recipe, and the MFU of 6 x parameters x tokens/s
    logged = [r for r in read_metrics(Path(wmt14_run, "metrics.jsonl")) if r["kind"] == "train"]
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in logged)
    parameters = Transformer(read_settings(wmt14_run).model).num_parameters()
    summary["wmt14"] = {"run_dir": wmt14_run, "updates": max(r["step"] for r in logged),
                        "median_tokens_per_s": tokens_per_s, "parameters": parameters,
                        "mfu_6nt": 6 * parameters * tokens_per_s / speed["meta"]["peak_flops"]["bf16"]}
path = Path(out, "summary.json")
path.write_text(json.dumps(summary, indent=1) + "\n")
t, a = summary["train"], summary["averaged"]
print(f"   {t['updates']} updates in {wall['train']:.0f} s; BLEU val (last) {t['val_bleu_last']:.2f}, "
      f"averaged: val {a['val_bleu']:.2f}, test_2016_flickr {a['test_2016_flickr_bleu']:.2f}; "
      f"total {wall['total']:.0f} s")
print(path)
EOF
} 2>&1 | tee "$OUT/gpu.log"
