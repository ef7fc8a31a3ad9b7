#!/usr/bin/env bash
# Time-to-quality on Multi30k English->German: train the multi30k recipe from scratch
# for a fixed wall-clock budget on this machine, average the last checkpoints (as the
# paper does), and report sacreBLEU (detokenized, cased, beam 4) on val and
# test_2016_flickr, with the signature. Run from the repository root after `make test`
# (or any `make` target) has set up .venv:
#
#     bash benchmarks/multi30k.sh                 # 60-minute budget
#     MINUTES=10 bash benchmarks/multi30k.sh      # a shorter try
#
# Everything it prints goes to RUN/benchmark.log as well.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-60}
RUN=${RUN:-runs/multi30k-benchmark}
LAST=${LAST:-5}
BIN=.venv/bin
mkdir -p "$RUN"
LOG="$RUN.log"
{
  echo "== multi30k benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, torch $($BIN/python -c 'import torch; print(torch.__version__, "threads", torch.get_num_threads())')"
  echo "== train for at most $MINUTES minutes: the multi30k recipe"
  start=$(date +%s)
  $BIN/transformer train multi30k --config multi30k --set max_minutes="$MINUTES" \
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
