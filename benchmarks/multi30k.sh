#!/usr/bin/env bash
# Time-to-quality on Multi30k English->German: train the multi30k recipe from scratch
# for a fixed wall-clock budget on this machine, average the last checkpoints (as the
# paper does), and report sacreBLEU (detokenized, cased; the recipe's beam and length
# penalty) on val and test_2016_flickr, with the signature, and beside it lowercased
# BLEU, chrF, chrF++, TER and the Multi30k papers' lowercased tokenized BLEU. The last
# line is the headline: the averaged checkpoint's cased sacreBLEU on test_2016_flickr.
# Run from the repository root after `make test` (or any `make` target) has set up .venv:
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
LAST=${LAST:-10}
PROCS=${PROCS:-2}
BIN=.venv/bin
recipe() {  # the multi30k recipe's value of training key $1 (the default if it sets none)
  $BIN/python -c "from transformer.run.settings import read_recipe, settings_from_values
print(settings_from_values(read_recipe('multi30k')).train.$1)"
}
BEAM=$(recipe beam_size)
ALPHA=$(recipe length_penalty)
if [ "$PROCS" -gt 1 ]; then
  TRAIN=("$BIN/torchrun" --nproc-per-node "$PROCS" -m transformer train)
  TOKENS=$(recipe batch_tokens)
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
          --split "$split" --beam "$BEAM" --length-penalty "$ALPHA" \
          --output "$RUN/$checkpoint.$split.de" | tee "$RUN/$checkpoint.$split.scores"
    done
  done
  echo "== total wall time $(( $(date +%s) - start )) s"
  BLEU=$(sed -n 's/^BLEU = \([0-9.]*\) .*/\1/p' "$RUN/averaged.test_2016_flickr.scores")
  echo "Multi30k en-de test_2016_flickr sacreBLEU: $BLEU ($MINUTES CPU-minutes, $(nproc) cores)"
} 2>&1 | tee "$LOG"
