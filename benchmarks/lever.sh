#!/usr/bin/env bash
# One lever of the Multi30k study: train the multi30k recipe with KEY=VALUE overrides for
# a fixed number of updates, then print the run's summary line (updates, target tokens/s,
# validation loss and BLEU with beam 4 at the last step). Levers are compared at equal
# updates, so two may run side by side with one thread each; their tokens/s are then
# only comparable with each other, not with an idle run.
#
#     bash benchmarks/lever.sh NAME STEPS [KEY=VALUE ...]
#     bash benchmarks/lever.sh peak-lr 1500 lr_factor=1.26
#
# The run goes to runs/levers/NAME; its output to runs/levers/NAME.log.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=$1; STEPS=$2; shift 2
RUN=runs/levers/$NAME
mkdir -p runs/levers
.venv/bin/transformer train multi30k --config multi30k --out "$RUN" --overwrite --quiet \
    --set steps="$STEPS" max_minutes=0 threads="${THREADS:-1}" bleu_every=1000000 \
          eval_every=500 save_every=500 keep_last=4 "$@" > "$RUN.log" 2>&1
.venv/bin/python benchmarks/lever_summary.py "$RUN" "$NAME" "$*" | tee -a "$RUN.log"
