"""Ablations: the classic mistakes of a Transformer implementation, run as experiments.

    transformer ablate [--task copy|multi30k] [--steps N] [--out DIR] [--set KEY=VALUE ...]

trains one recipe as it is (the baseline) and once with each mistake below: in one
process, from the same seed, on the same batches, for the same number of updates
(`target_exact_match` is switched off so that no variant stops early). Then it prints a
table (final training and validation loss, exact match or BLEU, parameters, when the
score was reached, seconds) and writes it to OUT/ablation.md, with the training-loss
curves of all variants in OUT/ablation.png. Each variant is an ordinary run directory,
OUT/<variant>/ (config.json, metrics.jsonl, checkpoints, train.log).

The mistakes, what each one is, and why it hurts:

mask-after-softmax (Section 3.2.3: "masking out (setting to -inf) all values in the
    input of the softmax"). Softmax over every key, masked or not, then zero the masked
    weights. The rows no longer sum to 1: padding keys and future keys take their share
    of the probability, which is then thrown away, so how large an output is depends on
    how much padding its sentence has. And the zeroing removes the future *values* but
    not the future *scores*: the normaliser sum_j exp(q_t . k_j) still runs over keys
    after t, so in training each decoder position learns a little about the tokens that
    follow it, through the total its row keeps. Incremental decoding, where those keys
    do not exist yet, cannot give it that. (tests/test_ablate.py shows both.)
no-warmup (Section 5.3). A constant learning rate equal to the Noam peak from the
    first update (training key `schedule = "constant"`). Adam's second-moment estimates
    are poor in the first updates and a post-LN Transformer's gradients are largest at
    initialisation, so full-size steps at the start can knock training off course or
    make it diverge; and without the decay the rate never anneals at the end.
no-scaling (Section 3.2.1: "we scale the dot products by 1/sqrt(d_k)"). The dot product
    of two vectors with unit-variance components has variance d_k: unscaled scores push
    the softmax towards one-hot, where its gradients vanish. Mild at d_k = 16 (the copy
    recipe), worse at the paper's d_k = 64.
untied (Section 3.4: "we share the same weight matrix between the two embedding layers
    and the pre-softmax linear transformation"). Three vocabulary-sized matrices instead
    of one (`tie_embeddings = "none"`): more parameters, each learning from a third of
    the signal; it matters most with large vocabularies and little data.
pre-LN (Section 3.1 is post-LN: LayerNorm(x + Sublayer(x))). Not a mistake but the usual
    alternative (`norm_first = true`): x + Sublayer(LayerNorm(x)), as in GPT-2; it trains
    without warm-up more easily, and post-LN often ends slightly better when it trains.

The two attention mistakes (run/ablated_attention.py) are made on the variant's own
model: `with_attention` sets the wrong function as the `attention_fn` of each of its
MultiHeadAttention modules and puts them on the readable path (the fused kernel never
calls it); no other model, and nothing at module level, changes. No recipe key can say
"this function", so the variant's config.json names it under "ablation", and loading
the run (run/rundir.py `load_run`) sets it again: translate, serve, explore and plot
show the variant as it was trained. Every other variant is plain recipe keys.

`--task multi30k` trains on a slice of Multi30k (the first MULTI30K_TRAIN_PAIRS training
pairs, MULTI30K_VALID_PAIRS validation pairs, written to OUT/data/, prepared once and read
as task "parallel"), with a small model and BLEU from greedy decoding; every variant
trains from the one prepared folder, with its one tokenizer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.parallel import load_multi30k
from ..data.prepared import prepare_corpus
from ..errors import UserError
from ..model.transformer import Transformer
from ..run.ablated_attention import WRONG_ATTENTIONS, restore_attention
from ..run.rundir import replace_run_dir, write_settings
from ..run.settings import read_recipe, settings_from_values
from ..training import loop as training
from ..training.metrics import metric_series, read_metrics
from ..training.tasks import make_task, prepare_task
from .ablate_report import format_table, markdown_report
from .plots import plot_losses

TASKS = ("copy", "multi30k")
MULTI30K_TRAIN_PAIRS = 3000
MULTI30K_VALID_PAIRS = 200
# Over the multi30k recipe: a model and a budget for a few minutes of CPU per variant.
MULTI30K_SLICE = {
    "vocab_size": 2000, "d_model": 64, "n_heads": 4, "n_encoder_layers": 2,
    "n_decoder_layers": 2, "d_ff": 256, "dropout": 0.1, "attention_dropout": 0.0,
    "activation_dropout": 0.0, "max_len": 128, "batch_tokens": 2048, "lr_factor": 1.0,
    "warmup": 200, "steps": 400, "max_minutes": 0.0, "eval_every": 100, "bleu_every": 0,
    "beam_size": 1, "save_every": 400, "keep_last": 1,
}
FORCED = {"target_exact_match": 0.0}  # every variant gets the whole budget


# --- the variants ----------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    name: str
    change: str  # what differs from the baseline, in a few words
    keys: dict = field(default_factory=dict)  # recipe keys applied over the baseline's
    attention: Callable | None = None  # a wrong attention function, set by `with_attention`


VARIANTS = (
    Variant("baseline", "the recipe as it is"),
    Variant("mask-after-softmax", "softmax over all keys, then masked weights zeroed",
            {"attention": "manual"}, WRONG_ATTENTIONS["mask-after-softmax"]),
    Variant("no-warmup", "constant learning rate at the Noam peak", {"schedule": "constant"}),
    Variant("no-scaling", "scores not divided by sqrt(d_k)", {"attention": "manual"},
            WRONG_ATTENTIONS["no-scaling"]),
    Variant("untied", "separate source, target and output matrices", {"tie_embeddings": "none"}),
    Variant("pre-LN", "LayerNorm before each sub-layer, not after", {"norm_first": True}),
)


# --- running them ----------------------------------------------------------------------

def ablate(task: str = "copy", sets: dict | None = None, steps: int | None = None,
           out: str | Path = "runs/ablate", overwrite: bool = False,
           variants: tuple[Variant, ...] = VARIANTS, echo: Callable = print) -> list[dict]:
    """Train every variant into OUT/<variant>/; write OUT/ablation.md and OUT/ablation.png.

    Returns one result dict per variant (see `summarize`). `sets` are recipe keys over
    the task's recipe, `steps` overrides them all.
    """
    if task not in TASKS:
        raise UserError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    out = Path(out)
    for variant in variants:
        run_dir = out / variant.name
        if run_dir.exists() and any(run_dir.iterdir()):
            if not overwrite:
                raise UserError(f"{run_dir}: already holds a run; use another --out or --overwrite")
            replace_run_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    values = read_recipe(task)  # the shipped recipe of that name
    if task == "multi30k":
        values.update(MULTI30K_SLICE)
    values.update(sets or {})
    if steps is not None:
        values["steps"] = steps
    if not isinstance(values.get("steps"), int) or values["steps"] < 1:
        raise UserError(f"steps={values.get('steps')!r}: must be at least 1")
    if task == "multi30k":
        values.update(write_multi30k_slice(values, out / "data"))

    results = []
    for number, variant in enumerate(variants, start=1):
        echo(f"[{number}/{len(variants)}] {variant.name}: {variant.change} ...", end=" ", flush=True)
        run_dir = out / variant.name
        run_dir.mkdir(parents=True, exist_ok=True)
        result = run_variant(variant, values, run_dir)
        echo(f"{result['wall_s']:.0f} s" + (f" ({result['failure']})" if result["failure"] else ""))
        results.append(result)
    score = "bleu" if task == "multi30k" else "exact_match"
    table = format_table(results, score, markdown=True)
    command = " ".join(["transformer ablate --task", task, "--steps", str(values["steps"])]
                       + (["--set", *(f"{k}={v}" for k, v in sets.items())] if sets else []))
    (out / "ablation.md").write_text(markdown_report(command, task, values, table, variants),
                                     encoding="utf-8")
    plot_losses({r["variant"]: r["curve"] for r in results}, out / "ablation.png")
    return results


def run_variant(variant: Variant, values: dict, run_dir: Path) -> dict:
    """Train one variant quietly into `run_dir` (its output goes to run_dir/train.log)."""
    settings = settings_from_values({**values, **variant.keys, **FORCED})
    failure = None
    with open(run_dir / "train.log", "w", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log):
        src_size, tgt_size, pad_id = prepare_task(settings.train, run_dir)
        task = make_task(settings.train, run_dir, settings.model.max_len)
        ablation = {"variant": variant.name, "change": variant.change}
        if variant.attention is not None:  # loading the run restores it (run/ablated_attention.py)
            ablation["attention_fn"] = f"{variant.attention.__module__}.{variant.attention.__name__}"
        settings = dataclasses.replace(settings.with_vocabulary(src_size, pad_id, tgt_size),
                                       ablation=ablation)
        write_settings(run_dir, settings)
        # Every variant's model is built here, from the same seed as train() uses, so all
        # start from the same weights and the RNG is in the same state when training begins.
        torch.manual_seed(settings.train.seed)
        random.seed(settings.train.seed)
        model = restore_attention(Transformer(settings.model), ablation)
        started = time.perf_counter()
        try:
            training.train(run_dir, settings.model, settings.train, task, quiet=True, model=model)
        except UserError as error:  # a diverged variant is a result, not the end of the ablation
            failure = str(error)
            print(failure)
        wall_s = time.perf_counter() - started
    return summarize(variant.name, read_metrics(run_dir / "metrics.jsonl"),
                     model.num_parameters(), wall_s, failure)


def summarize(name: str, records: list[dict], parameters: int, wall_s: float,
              failure: str | None = None) -> dict:
    """The table row of one variant, from its metrics.jsonl records."""
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    last_eval = evals[-1] if evals else {}
    bleu = [(r["bleu"], r["step"]) for r in evals if "bleu" in r]
    return {
        "variant": name,
        "train_loss": train[-1]["loss"] if train else math.nan,
        "valid_loss": last_eval.get("loss", math.nan),
        "exact_match": last_eval.get("exact_match"),
        "bleu": last_eval.get("bleu"),
        "parameters": parameters,
        # evaluations come every `eval_every` steps: the first one at or above 99%
        "steps_to_99": next((r["step"] for r in evals if r.get("exact_match", 0.0) >= 0.99), None),
        "best_bleu_step": max(bleu)[1] if bleu else None,  # ties: the later step
        "wall_s": wall_s,
        "failure": failure,
        "curve": metric_series(records, "train", "loss"),
    }


def write_multi30k_slice(values: dict, folder: Path) -> dict:
    """The first pairs of Multi30k train and val as files, prepared once; the keys that
    read them."""
    src_lang, tgt_lang = values.get("src_lang", "en"), values.get("tgt_lang", "de")
    data_dir = values.get("data_dir") or None
    splits = {"train": load_multi30k("train", src_lang, tgt_lang, data_dir)[:MULTI30K_TRAIN_PAIRS],
              "valid": load_multi30k("val", src_lang, tgt_lang, data_dir)[:MULTI30K_VALID_PAIRS]}
    folder.mkdir(parents=True, exist_ok=True)
    keys = {"task": "parallel"}
    for split, pairs in splits.items():
        for side, lang in ((0, src_lang), (1, tgt_lang)):
            path = folder / f"{split}.{lang}"
            path.write_text("".join(pair[side] + "\n" for pair in pairs), encoding="utf-8")
            key = ("src" if side == 0 else "tgt") if split == "train" else \
                ("valid_src" if side == 0 else "valid_tgt")
            keys[key] = str(path)
    # Prepared once, into OUT/data/prepared: every variant trains from that one folder.
    train = settings_from_values(values).train
    prepared = prepare_corpus(keys["src"], keys["tgt"], folder / "prepared", keys["valid_src"],
                              keys["valid_tgt"], vocab_size=train.vocab_size,
                              tokenizer_sample=train.tokenizer_sample, tokenizer=train.tokenizer,
                              vocab=train.vocab, say=lambda text: None)
    return {**keys, "data": str(prepared)}
