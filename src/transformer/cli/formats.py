"""What `translate` and `score` print, line by line: their --help epilogs."""

TRANSLATE_FORMATS = """\
output, one block per input line, in input order:
  TEXT                                     the best translation
  TEXT<TAB>LOGPROB<TAB>NORMALISED          with --scores
  with --n-best K: K lines SCORE<TAB>TEXT, best first (with --sample: K samples, in the
  order drawn), then an empty line; --scores appends <TAB>LOGPROB<TAB>NORMALISED to each
LOGPROB: log P(TEXT's tokens, then <eos> | source) under the model (the sum of their
log-probabilities; whatever decoded TEXT, with temperature 1 and the whole vocabulary).
NORMALISED: LOGPROB / ((5 + n + 1) / 6) ** length_penalty, n = TEXT's tokens: GNMT's
length penalty, the run's length_penalty, as beam search ranks finished hypotheses.
SCORE: the beam's ranking score (NORMALISED, except for an output cut at the length limit,
which the beam scores without <eos>); of a sample: NORMALISED. Numbers have 4 decimals.
An empty input line gives an empty line (an empty block with --n-best): nothing is decoded.
Without sentences or --input, stdin is read line by line, each answer printed at once."""

SCORE_FORMATS = """\
output, one line per line pair, in file order:
  LOGPROB                                  log P(target tokens, then <eos> | source)
  LOGPROB<TAB>TOKEN_LOGPROBS<TAB>TOKENS    with --tokens: the n + 1 log-probabilities of
                                           the target's tokens and <eos>, space-separated,
                                           and those tokens (BPE pieces, then <eos>)
Forced decoding under the model in eval mode: no dropout, no label smoothing; LOGPROB is
the sum of TOKEN_LOGPROBS (before rounding to 4 decimals). Source symbols the vocabulary
lacks are left out (as translate does), target ones are scored as <unk>."""
