#!/usr/bin/env bash
# Time-to-quality on Multi30k English->German: train the multi30k recipe from scratch
# for a fixed wall-clock budget on this machine, average the last checkpoints (as the
# paper does), and report sacreBLEU (detokenized, cased, beam 4) on val and
# test_2016_flickr, with the signature. Run from the repository root after `make test`
# (or any `make` target) has set up .venv:
#
#     bash benchmarks/multi30k.sh                 # 60-minute budget
#     MINUTES=10 bash benchmarks/multi30k.sh      # a shorter try
#     PROCS=1 bash benchmarks/multi30k.sh         # one process with every core's threads
#
# PROCS=2 (the default) trains as two torchrun processes of one thread each, each taking
# half of the recipe's tokens per update: on two cores a model this small keeps two
# single-threaded processes busier than one process with two threads (BENCHMARKS.md).
#
# Everything it prints goes to RUN.log as well.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-60}
RUN=${RUN:-runs/multi30k-benchmark}
LAST=${LAST:-5}
PROCS=${PROCS:-2}
BIN=.venv/bin
if [ "$PROCS" -gt 1 ]; then
  TRAIN=("$BIN/torchrun" --nproc-per-node "$PROCS" -m transformer train)
  TOKENS=$($BIN/python -c 'from transformer.run.settings import find_recipe, read_recipe
print(read_recipe(find_recipe("multi30k"))["batch_tokens"])')
  PER_PROCESS=(threads=1 batch_tokens=$(( TOKENS / PROCS )))
else
  TRAIN=("$BIN/transformer" train)
  PER_PROCESS=()
fi
mkdir -p "$RUN"
LOG="$RUN.log"
{
  echo "== multi30k benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, torch $($BIN/python -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())')"
  echo "== train for at most $MINUTES minutes: the multi30k recipe, $PROCS process(es)"
  start=$(date +%s)
  "${TRAIN[@]}" multi30k --config multi30k --set max_minutes="$MINUTES" "${PER_PROCESS[@]}" \
      --out "$RUN" --overwrite --quiet
  echo "== training took $(( $(date +%s) - start )) s of wall time"
  $BIN/transformer average "$RUN" --last "$LAST"
  for checkpoint in averaged best; do
    for split in val test_2016_flickr; do
      echo "== $checkpoint checkpoint, $split"
      $BIN/transformer evaluate "$RUN" --checkpoint "$RUN/checkpoints/$checkpoint" \
          --split "$split" --beam 4 --output "$RUN/$checkpoint.$split.de"
    done
  done
  echo "== total wall time $(( $(date +%s) - start )) s"
} 2>&1 | tee "$LOG"
