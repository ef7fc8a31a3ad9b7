"""This project's beam search against CTranslate2 running the same weights, side by side.

    python benchmarks/engines.py RUN_DIR [--split test_2016_flickr] [--beam 4] [--rounds 5]

Exports the run (its averaged checkpoint when there is one, else the catalogue's pick) in
float32 and int8, then translates the same Multi30k sentences with the three, one after
the other in each round (the order alternating), on the same cores: sentences per
second (median of the rounds, the model already loaded), sacreBLEU, and how many outputs
equal this project's. The engine ranks its beam by log P / |Y|^alpha where this project
uses GNMT's penalty, so at beam > 1 some outputs differ for that reason alone.
Nothing else should run beside it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ctranslate2
import torch

from transformer.checkpoint.catalogue import all_checkpoints
from transformer.data.parallel import MULTI30K_TEST, load_multi30k
from transformer.data.sources import encode_sources
from transformer.decoding.bleu import corpus_bleu
from transformer.decoding.translate import BATCH_SENTENCES, best_texts, translate
from transformer.run.rundir import load_run
from transformer.serving.export import export_ctranslate2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--split", default=MULTI30K_TEST)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = all_checkpoints(args.run_dir).get("averaged")
    run = load_run(args.run_dir, checkpoint)
    train = run.settings.train
    pairs = load_multi30k(args.split, train.src_lang, train.tgt_lang, train.data_dir or None)
    references = [t for _, t in pairs]
    ids = encode_sources(run.source, [s for s, _ in pairs], run.model.cfg.max_len).ids
    folder = Path(tempfile.mkdtemp(prefix="engines-"))
    engines = {"this project": None}
    for quantization in ("float32", "int8"):
        out = export_ctranslate2(args.run_dir, folder / quantization, quantization,
                                 checkpoint, overwrite=True)
        engines[f"CTranslate2 {quantization}"] = ctranslate2.Translator(
            str(out), device="cpu", inter_threads=1, intra_threads=args.threads)
    tokens = [[run.source.token(i) for i in row] for row in ids]

    def decode(name: str) -> list[str]:
        if engines[name] is None:
            return best_texts(run.target, translate(run.model, run.source, ids, train.decoding,
                                                    beam_size=args.beam))
        found = engines[name].translate_batch(tokens, beam_size=args.beam,
                                              max_batch_size=BATCH_SENTENCES,  # as ours
                                              length_penalty=train.length_penalty,
                                              suppress_sequences=[["<pad>"], ["<bos>"]])
        return [run.target.decode([run.target.inner.token_to_id(t) for t in r.hypotheses[0]])
                for r in found]

    rates = {name: [] for name in engines}
    outputs = {}
    for round_number in range(args.rounds):
        order = list(engines) if round_number % 2 == 0 else list(reversed(engines))
        for name in order:
            started = time.perf_counter()
            outputs[name] = decode(name)
            rates[name].append(len(ids) / (time.perf_counter() - started))
    ours = outputs["this project"]
    base = statistics.median(rates["this project"])
    print(f"{args.run_dir} ({run.checkpoint.name}), {args.split}, {len(ids)} sentences, beam "
          f"{args.beam}, {args.threads} threads, median of {args.rounds} rounds")
    print(f"{'engine':<22} {'sentences/s':>12} {'vs ours':>8} {'BLEU':>7} {'same as ours':>13}")
    for name in engines:
        rate = statistics.median(rates[name])
        bleu, _ = corpus_bleu(outputs[name], references)
        same = sum(a == b for a, b in zip(outputs[name], ours))
        print(f"{name:<22} {rate:>12.1f} {rate / base:>8.2f} {bleu:>7.2f} {same:>8}/{len(ours)}")


if __name__ == "__main__":
    main()
