"""From a trained model to output sentences (Section 6.1).

    eval_mode.py        the model without dropout for a block, its mode restored after
    greedy.py           the most likely token at every step, with the decoder's KV cache
    beam.py             beam search with GNMT's length penalty
    sampling.py         each token drawn at random (temperature, top-k)
    scoring.py          forced decoding: the log-probability of a given translation
    translate.py        THE way to translate many sentences: batched by length, in order
    bleu.py             sacreBLEU of translations against references
    attention_maps.py   the attention weights of one forward pass
    analyze.py          one sentence explained: hypotheses, probabilities, attention
"""
