"""Speed benchmark: this project's Transformer against torch.nn.Transformer at the same size.

Measured in one process, per config (tiny, multi30k, short256, base; big on request):
1. training throughput in target tokens per second (forward, backward, Adam step), ours
   against nn.Transformer carrying our embeddings, output projection and initial weights;
2. greedy decoding on the multi30k-sized model in sentences per second: ours with the KV
   cache, ours recomputing the prefix, the usual greedy loop over nn.Transformer; and
   beam search (beam 4, length penalty 0.6);
3. peak memory: per training step on CUDA, the process's peak resident set on the CPU;
4. per mode: float32, bfloat16 autocast, either one with both models torch.compile'd
   (on CUDA float32 and bf16 by default), with the model FLOP utilisation (MFU) wherever
   the device's peak is known (a table of GPUs below; PEAK_TFLOPS, PEAK_TFLOPS_FP32).

Both models are first checked to compute the same function (max abs logit difference
with the same weights). Why and how it measures this way (alternated rounds, medians,
equal work, the FLOP count): BENCHMARKS.md, "How speed.py measures". Output: a table per
section, then one line `RESULT {...}` with every figure as JSON.

    .venv/bin/python benchmarks/speed.py                       # tiny, multi30k, short256, base on the CPU
    .venv/bin/python benchmarks/speed.py --configs multi30k --rounds 7
    .venv/bin/python benchmarks/speed.py --device cuda         # float32 and bf16, with MFU
    .venv/bin/python benchmarks/speed.py --device cuda --configs base --modes fp32,bf16,bf16+compile
    .venv/bin/python benchmarks/speed.py --quick               # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # benchmark this checkout, installed or not
sys.path.insert(0, str(REPO / "tests"))  # references.py: our weights in nn.Transformer

import torch  # noqa: E402
from torch import nn  # noqa: E402

from transformer import Transformer, TransformerConfig, causal_mask  # noqa: E402
from transformer.decoding.beam import beam_search
from transformer.decoding.greedy import greedy_decode
from transformer.errors import UserError
from transformer.run.settings import read_recipe, settings_from_values
from transformer.training.loss import label_smoothed_loss

from references import reference_transformer  # noqa: E402

PAD, BOS, EOS, FIRST_WORD = 0, 1, 2, 4  # ids 0..3 are <pad> <bos> <eos> <unk>
LABEL_SMOOTHING = 0.1
# Peak dense FLOP/s (no sparsity) from the vendors' data sheets: (bfloat16, TF32, float32
# without tensor cores), by the first of these names that torch.cuda.get_device_name()
# contains (H100 alone is the SXM part). PEAK_TFLOPS (bf16) and PEAK_TFLOPS_FP32 override.
PEAK_FLOPS = [("H100 PCIe", (756e12, 378e12, 51e12)), ("H100 NVL", (835e12, 418e12, 60e12)),
              ("H100", (989e12, 495e12, 67e12)), ("H200", (989e12, 495e12, 67e12)),
              ("A100", (312e12, 156e12, 19.5e12))]
MODES = ("fp32", "bf16", "fp32+compile", "bf16+compile")
BEAM = dict(beam_size=4, length_penalty=0.6, max_len_a=1.0, max_len_b=5)


# --- the reference: nn.Transformer between our embeddings and output projection ----------
class NNTransformerModel(nn.Module):
    """`model`'s embeddings and output projection around nn.Transformer, all weights copied.

    It also answers `encode` and `decode` as our model does, so that `greedy_decode` runs
    the same loop over it (without a cache: nn.Transformer has none).
    """

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.cfg = model.cfg
        # One deepcopy of the three keeps their weight tying: it copies a shared tensor once.
        parts = copy.deepcopy(nn.ModuleList([model.src_embed, model.tgt_embed, model.generator]))
        self.src_embed, self.tgt_embed, self.generator = parts
        self.transformer = reference_transformer(model)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_padding: bool = True):
        """src (B, S), tgt_in (B, T) -> logits (B, T, V), with nn's masks (True = ignore)."""
        src_pad = src == self.cfg.pad_id
        h = self.transformer(
            self.src_embed(src), self.tgt_embed(tgt_in),
            tgt_mask=~causal_mask(tgt_in.size(1), tgt_in.device), tgt_is_causal=True,
            src_key_padding_mask=src_pad, memory_key_padding_mask=src_pad,
            tgt_key_padding_mask=(tgt_in == self.cfg.pad_id) if tgt_padding else None)
        return self.generator(h)

    def encode(self, src: torch.Tensor, src_mask=None) -> torch.Tensor:
        src_pad = src == self.cfg.pad_id  # nn's polarity: True = ignore
        return self.transformer.encoder(self.src_embed(src), src_key_padding_mask=src_pad)

    def decode(self, tgt_in, memory, src_mask, cache=None, last_only=False) -> torch.Tensor:
        """The whole prefix tgt_in (B, T) -> logits; src_mask is ours: (B, 1, 1, S), True = attend."""
        assert cache is None, "nn.Transformer has no KV cache"
        h = self.transformer.decoder(
            self.tgt_embed(tgt_in), memory, tgt_is_causal=True,
            tgt_mask=~causal_mask(tgt_in.size(1), tgt_in.device),
            memory_key_padding_mask=~src_mask.flatten(1))  # (B, S), True = ignore
        return self.generator(h[:, -1:] if last_only else h)


def check_same_function(cfg: TransformerConfig, src, tgt_in) -> float:
    """Max |logit difference| of ours and the reference with the same weights (train, dropout 0)."""
    cfg0 = cfg.replace(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    ours = Transformer(cfg0).train()
    ref = NNTransformerModel(ours).train()
    with torch.no_grad():
        return float((ours(src, tgt_in) - ref(src, tgt_in)).abs().max())


# --- configs and batches --------------------------------------------------------------------
def describe(cfg: TransformerConfig) -> str:
    return (f"vocab {cfg.tgt_vocab_size}, d_model {cfg.d_model}, {cfg.n_heads} heads, "
            f"{cfg.n_encoder_layers}+{cfg.n_decoder_layers} layers, d_ff {cfg.d_ff}, dropout {cfg.dropout} "
            f"(attention {cfg.attention_dropout}, activation {cfg.activation_dropout}), "
            f"{'pre' if cfg.norm_first else 'post'}-LN, tie {cfg.tie_embeddings}, {cfg.positional} positions, "
            f"{cfg.attention} attention")


def multi30k_config() -> tuple[TransformerConfig, str]:
    """The model of the shipped Multi30k recipe, read as `transformer train` reads it."""
    try:
        settings = settings_from_values(read_recipe("multi30k"))
        cfg = settings.with_vocabulary(settings.train.vocab_size, PAD).model
    except UserError as error:
        raise SystemExit(f"speed.py: the multi30k config comes from its recipe: {error}") from None
    return cfg, f"recipe multi30k: {describe(cfg)}"


def short256_config() -> tuple[TransformerConfig, str]:
    """The shape of an outside check that found a ratio of 1.53-1.58 (BENCHMARKS.md): a
    mid-sized model, no dropout, batches of 64 short sentences."""
    cfg = TransformerConfig(src_vocab_size=8000, tgt_vocab_size=8000, d_model=256, n_heads=8,
                            n_encoder_layers=3, n_decoder_layers=3, d_ff=1024, dropout=0.0)
    return cfg, f"short sentences, d_model 256: {describe(cfg)}"


CONFIG_NAMES = ("tiny", "multi30k", "short256", "base", "big")


def make_configs(names: list[str]) -> dict[str, tuple[TransformerConfig, str]]:
    presets = {"tiny": TransformerConfig.tiny, "base": TransformerConfig.base,
               "big": TransformerConfig.big}
    out = {}
    for name in names:
        if name == "multi30k":
            out[name] = multi30k_config()
        elif name == "short256":
            out[name] = short256_config()
        elif name in presets:
            cfg = presets[name](vocab_size=8000)
            out[name] = (cfg, f"TransformerConfig.{name}(vocab_size=8000): {describe(cfg)}")
        else:
            raise UserError(f"--configs: unknown config {name!r} (one of {', '.join(CONFIG_NAMES)})")
    return out


def padded_ids(lengths: torch.Tensor, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """(n, longest) random word ids, row i right-padded after lengths[i] tokens."""
    ids = torch.randint(FIRST_WORD, vocab, (len(lengths), int(lengths.max())), generator=gen)
    ids[torch.arange(ids.size(1))[None, :] >= lengths[:, None]] = PAD
    return ids


def make_batch(batch_tokens: int, max_len: int, vocab: int, gen: torch.Generator):
    """Right-padded (src, tgt_in, tgt_out), sentence lengths uniform in [0.7 L, L] (~15% padding).

    Target sentences (with the <eos> that ends them) hold about `batch_tokens` tokens in all.
    """
    lo = max(2, round(0.7 * max_len))
    B = max(1, round(batch_tokens / ((lo + max_len) / 2)))
    src_len = torch.randint(lo, max_len + 1, (B,), generator=gen)
    tgt_len = torch.randint(lo, max_len + 1, (B,), generator=gen)  # counts the final <eos>
    src, tgt_out = padded_ids(src_len, vocab, gen), padded_ids(tgt_len, vocab, gen)
    tgt_out[torch.arange(B), tgt_len - 1] = EOS
    tgt_in = torch.cat([torch.full((B, 1), BOS), tgt_out[:, :-1]], dim=1)
    tgt_in[tgt_in == EOS] = PAD  # <eos> is never an input
    return src, tgt_in, tgt_out


# --- timing helpers -------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Each fn once per round, the order rotated every round; fn() returns the work units it did.

    Returns, per name, the units per second of every round.
    """
    names = list(fns)
    rates = {name: [] for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            sync(device)
            t0 = time.perf_counter()
            units = fns[name]()
            sync(device)
            rates[name].append(units / (time.perf_counter() - t0))
    return rates


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def train_flops(cfg: TransformerConfig, B: int, S: int, T: int) -> float:
    """FLOPs of one training step on a (B, S) source and (B, T) target batch (BENCHMARKS.md)."""
    D, Fd, V = cfg.d_model, cfg.d_ff, cfg.tgt_vocab_size
    enc = cfg.n_encoder_layers * (6 * (4 * D * D + 2 * D * Fd) * B * S + 12 * B * S * S * D)
    dec = cfg.n_decoder_layers * (
        6 * (4 * D * D + 2 * D * D + 2 * D * Fd) * B * T  # self-attn, cross q/o, FFN
        + 6 * (2 * D * D) * B * S  # cross-attention keys and values of the memory
        + 12 * B * T * T * D + 12 * B * T * S * D)  # self- and cross-attention scores
    out = 6 * D * V * B * T
    return float(enc + dec + out)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- 1. training ----------------------------------------------------------------------------
def training_sizes(name: str, args, device: torch.device) -> tuple[int, int, int, int]:
    """(target tokens per batch, longest sentence, steps per round, warm-up steps).

    short256 keeps its shape everywhere: 64 sentences of 14..20 tokens (1,088 tokens).
    """
    if args.quick:
        default_tokens = 100 if name in ("base", "big") else 200
    elif name == "short256":
        default_tokens = 1088
    elif device.type == "cuda":
        default_tokens = {"tiny": 8000, "multi30k": 8000}.get(name, 16000)
    else:
        default_tokens = {"tiny": 4000, "multi30k": 4000}.get(name, 2000)
    default_len = {"base": 64, "big": 64, "short256": 20}.get(name, 32)
    max_len = args.max_len.get(name) or default_len
    if args.quick:
        max_len = min(max_len, 16)
    steps = args.steps or (1 if args.quick else {"tiny": 5, "multi30k": 3}.get(name, 2))
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    return args.batch_tokens.get(name) or default_tokens, max_len, steps, warmup


def trainer(model: nn.Module, forward, tgt_out, device, precision):
    """train(steps) runs that many training steps of `model` (forward, label-smoothed loss,
    backward, Adam) and returns the target tokens it trained on."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    n_tokens = int((tgt_out != PAD).sum())

    def train(steps: int = 1) -> int:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            with autocast(device, precision):
                logits = forward()
            label_smoothed_loss(logits, tgt_out, LABEL_SMOOTHING, model.cfg.pad_id).loss.backward()
            opt.step()
        return steps * n_tokens
    return train


def step_memory(steps: dict, device: torch.device) -> dict:
    """CUDA memory of one step per model: its peak, and how far above the resident state."""
    memory = {}
    for label, step in steps.items():
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        resident = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        memory[label] = {"max_memory_allocated_mib": peak / 2**20,
                         "step_peak_above_resident_mib": (peak - resident) / 2**20}
    return memory


def bench_training(name, cfg, source, args, device, mode, peak_flops) -> dict:
    """Training throughput of ours and nn.Transformer on one config in one mode ("fp32",
    "bf16+compile", ...): a dict of figures. `peak_flops`: the device's, for the MFU, or None."""
    precision, compiled = mode.split("+")[0], mode.endswith("+compile")
    batch_tokens, max_len, steps, warmup = training_sizes(name, args, device)
    if compiled:
        warmup = max(warmup, 1)  # the first step compiles
    gen = torch.Generator().manual_seed(args.seed)
    batch = make_batch(batch_tokens, max_len, cfg.tgt_vocab_size, gen)
    src, tgt_in, tgt_out = (t.to(device) for t in batch)
    B, S, T = src.size(0), src.size(1), tgt_in.size(1)
    n_tgt = int((tgt_out != PAD).sum())

    same = None
    if mode == "fp32":
        same = check_same_function(cfg, src[:4].cpu(), tgt_in[:4].cpu())
    torch.manual_seed(args.seed)
    ours = Transformer(cfg)
    ref = NNTransformerModel(ours).to(device).train()  # starts from our initial weights
    ours = ours.to(device).train()
    # Compiled, each model's forward becomes one graph (the loss, backward and Adam stay eager).
    run_ours, run_ref = ((torch.compile(m, backend=args.compile_backend) for m in (ours, ref))
                         if compiled else (ours, ref))
    # Ours is called as train.py calls it: the loss ignores <pad> targets, so a right-padded
    # target may take the causal kernel (model.py, `pad_outputs_unused`).
    train = {"ours": trainer(ours, lambda: run_ours(src, tgt_in, pad_outputs_unused=True), tgt_out,
                             device, precision),
             "nn.Transformer": trainer(ref, lambda: run_ref(src, tgt_in, not args.ref_causal_only),
                                       tgt_out, device, precision)}
    first_step_s = {}  # compiling, when compiled
    for i in range(warmup):
        for label, step in train.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            if i == 0:
                first_step_s[label] = time.perf_counter() - t0
    memory = step_memory(train, device) if device.type == "cuda" else {}
    rates = alternate({k: lambda f=f: f(steps) for k, f in train.items()}, args.rounds, device)
    r = {"config": name, "config_source": source, "mode": mode, "precision": precision,
         "compiled": compiled, "params_ours": sum(p.numel() for p in ours.parameters()),
         "params_nn_transformer": sum(p.numel() for p in ref.parameters()),
         "batch_sentences": B, "src_len": S, "tgt_len": T, "target_tokens": n_tgt,
         "padding_fraction": round(1.0 - n_tgt / (B * T), 4), "steps_per_round": steps,
         "rounds": args.rounds, "warmup_steps": warmup,
         "tokens_per_s_ours": statistics.median(rates["ours"]),
         "tokens_per_s_nn_transformer": statistics.median(rates["nn.Transformer"]),
         "rounds_ours": [round(x, 1) for x in rates["ours"]],
         "rounds_nn_transformer": [round(x, 1) for x in rates["nn.Transformer"]],
         "first_step_s_ours": first_step_s.get("ours"),
         "first_step_s_nn_transformer": first_step_s.get("nn.Transformer"),
         "ref_tgt_padding_mask": not args.ref_causal_only,
         "max_abs_logit_diff_with_copied_weights": same}
    r["ratio"] = r["tokens_per_s_ours"] / r["tokens_per_s_nn_transformer"]
    if memory:
        r["cuda_memory"] = memory
    if peak_flops:
        # The FLOP count of BENCHMARKS.md (padded positions, attention included), and the
        # simpler 6 x parameters x target tokens.
        r.update(flops_per_step=train_flops(cfg, B, S, T), peak_flops=peak_flops)
        for key in ("ours", "nn_transformer"):
            tokens_per_s = r[f"tokens_per_s_{key}"]
            r[f"mfu_{key}"] = r["flops_per_step"] * tokens_per_s / n_tgt / peak_flops
            r[f"mfu_6nt_{key}"] = 6 * r["params_ours"] * tokens_per_s / peak_flops
    if device.type == "cpu":
        r["peak_rss_mib_process_so_far"] = peak_rss_mib()
    del ours, ref, train
    release(device)
    return r


# --- 2. decoding ----------------------------------------------------------------------------
def bench_decoding(cfg, args, device, precision) -> tuple[list[dict], dict, bool]:
    """Greedy decoding (cache, recompute, nn.Transformer loop) and beam search, in sentences/s."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    n_sent = args.decode_batch or (4 if args.quick else 32)
    lo, hi = (4, 12) if args.quick else (8, 24)
    src = padded_ids(torch.randint(lo, hi + 1, (n_sent,), generator=gen), cfg.src_vocab_size, gen)
    src = src.to(device)
    torch.manual_seed(args.seed)
    ours = Transformer(cfg).eval()
    ref = NNTransformerModel(ours).to(device).eval()
    ours = ours.to(device)
    outputs = {}  # the tokens of each decoder's last run, for the cache check

    def greedy(model, n, use_cache):
        def fn():  # EOS impossible (-1): exactly n tokens per sentence
            with autocast(device, precision):
                out = greedy_decode(model, src, n, BOS, -1, use_cache=use_cache)
            assert all(len(row) == n for row in out), "greedy_decode stopped early"
            outputs[model, use_cache] = out
            return n_sent
        return fn

    for model, use_cache in ((ours, True), (ours, False), (ref, False)):
        greedy(model, 8, use_cache)()  # warm-up, and a check that the cache changes nothing
    cache_matches = outputs[ours, True] == outputs[ours, False]
    results = []
    for n in ([4, 8] if args.quick else args.decode_lengths):
        fns = {"cache": greedy(ours, n, True), "recompute": greedy(ours, n, False),
               "nn.Transformer loop": greedy(ref, n, False)}
        rates = alternate(fns, args.decode_rounds, device)
        r = {"precision": precision, "generated_tokens": n, "sentences": n_sent,
             "src_len": src.size(1), "rounds": args.decode_rounds,
             "sent_per_s_cache": statistics.median(rates["cache"]),
             "sent_per_s_recompute": statistics.median(rates["recompute"]),
             "sent_per_s_nn_transformer_loop": statistics.median(rates["nn.Transformer loop"])}
        r["ratio_cache_over_recompute"] = r["sent_per_s_cache"] / r["sent_per_s_recompute"]
        r["ratio_cache_over_nn_transformer_loop"] = (r["sent_per_s_cache"]
                                                     / r["sent_per_s_nn_transformer_loop"])
        results.append(r)
    beam = bench_beam(ours, src, args, device, precision)
    del ours, ref
    release(device)
    return results, beam, cache_matches


def bench_beam(model: Transformer, src, args, device, precision) -> dict:
    """Beam search over the same sentences; EOS is a real id (rarely picked untrained)."""
    lengths = []

    def fn():
        with autocast(device, precision):
            out = beam_search(model, src, bos_id=BOS, eos_id=EOS, **BEAM)
        lengths.append(sum(map(len, out)) / len(out))
        return len(out)

    fn()  # warm-up
    rates = alternate({"beam": fn}, args.decode_rounds, device)
    return {"precision": precision, **BEAM, "sentences": src.size(0),
            "sent_per_s": statistics.median(rates["beam"]), "mean_output_len": lengths[-1]}


# --- printing -------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_header(meta: dict, configs: dict) -> None:
    print("== speed.py: ours (transformer.Transformer) vs torch.nn.Transformer ==")
    for k, v in meta.items():
        print(f"  {k}: {v}")
    for name, (_, source) in configs.items():
        print(f"  config {name}: {source}")
    load = meta["load_average"]
    if load and load[0] > meta["cpu_count"] * 0.5 and meta["device"] == "cpu":
        print(f"  WARNING: load average {load[0]:.1f} on {meta['cpu_count']} CPUs: the machine is busy, "
              "timings are noisy (with several threads per process, OpenMP contention can slow "
              "everything several-fold; --threads 1 is steadier)")


def print_training_run(r: dict) -> None:
    name, precision = r["config"], r["mode"]
    print(f"  [{name} {precision}] params ours {r['params_ours']:,} / nn.Transformer "
          f"{r['params_nn_transformer']:,}; batch {r['batch_sentences']} x src {r['src_len']} / "
          f"tgt {r['tgt_len']}, {r['target_tokens']} target tokens, "
          f"{100 * r['padding_fraction']:.0f}% padding; {r['rounds']} rounds x "
          f"{r['steps_per_round']} steps")
    if r["params_ours"] != r["params_nn_transformer"]:
        print("  WARNING: parameter counts differ")
    if r["max_abs_logit_diff_with_copied_weights"] is not None:
        print(f"  [{name}] same function: with our weights copied in, nn.Transformer's logits differ "
              f"by at most {r['max_abs_logit_diff_with_copied_weights']:.1e} (train mode, dropout 0)")
    if "peak_rss_mib_process_so_far" in r:
        print(f"  [{name}] peak RSS of the process so far (ru_maxrss, both models, all configs "
              f"until now): {r['peak_rss_mib_process_so_far']:.0f} MiB")
    if r["compiled"]:
        print(f"  [{name} {precision}] first step (compiling): ours {r['first_step_s_ours']:.1f} s, "
              f"nn.Transformer {r['first_step_s_nn_transformer']:.1f} s")
    for label, mem in r.get("cuda_memory", {}).items():
        print(f"  [{name} {precision}] {label}: max_memory_allocated {mem['max_memory_allocated_mib']:.0f} MiB, "
              f"of which {mem['step_peak_above_resident_mib']:.0f} MiB above the resident state")
    sys.stdout.flush()


def training_table(results: list[dict]) -> str:
    headers = ["config", "mode", "ours tok/s", "nn.Transformer tok/s", "ours / nn"]
    mfu = any("mfu_ours" in r for r in results)
    rows = []
    for r in results:
        row = [r["config"], r["mode"], f"{r['tokens_per_s_ours']:,.0f}",
               f"{r['tokens_per_s_nn_transformer']:,.0f}", f"{r['ratio']:.3f}"]
        if mfu:
            row += ([f"{100 * r['mfu_ours']:.1f}%", f"{100 * r['mfu_nn_transformer']:.1f}%"]
                    if "mfu_ours" in r else ["", ""])
        rows.append(row)
    return table(headers + (["MFU ours", "MFU nn"] if mfu else []), rows)


def print_decoding(results: list[dict], beams: list[dict]) -> None:
    rows = [[r["precision"], r["generated_tokens"], r["sentences"], f"{r['sent_per_s_cache']:.1f}",
             f"{r['sent_per_s_recompute']:.1f}", f"{r['sent_per_s_nn_transformer_loop']:.1f}",
             f"{r['ratio_cache_over_recompute']:.2f}", f"{r['ratio_cache_over_nn_transformer_loop']:.2f}"]
            for r in results]
    print(table(["precision", "tokens", "sentences", "cache sent/s", "recompute sent/s",
                 "nn loop sent/s", "cache/recompute", "cache/nn loop"], rows))
    print("\n== Beam search (beam 4, length penalty 0.6, up to source length + 5 tokens) ==")
    for beam in beams:
        print(f"  [{beam['precision']}] {beam['sent_per_s']:.1f} sentences/s "
              f"({beam['sentences']} sentences, mean output length {beam['mean_output_len']:.1f})")


# --- command line ---------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=None, help="comma-separated, of tiny,multi30k,short256,base,big "
                   "(default: tiny,multi30k,short256,base; tiny,multi30k with --quick)")
    p.add_argument("--modes", default=None, help="comma-separated, of fp32,bf16,fp32+compile,bf16+compile "
                   "(default: fp32 on the CPU, fp32,bf16 on CUDA)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile's backend in the "
                   "+compile modes (default inductor)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per model (default 5; 2 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="training steps per round (default by config)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps per model")
    p.add_argument("--batch-tokens", default=None,
                   help="target tokens per batch: N or tiny=N,base=M (default: CPU 4000/4000/2000, "
                        "CUDA 8000/8000/16000)")
    p.add_argument("--max-len", default=None, help="longest sentence in the batch: N or name=N "
                   "(default 32; 64 for base and big, 20 for short256)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's choice; 1 with --quick)")
    p.add_argument("--peak-flops", type=float, default=None, help="the device's peak bf16 FLOP/s, for the "
                   "MFU (default: PEAK_TFLOPS x 1e12, else the table of GPUs; fp32: PEAK_TFLOPS_FP32)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the float32 runs on CUDA "
                   "(the fp32 MFU is then against the TF32 peak)")
    p.add_argument("--ref-causal-only", action="store_true",
                   help="no tgt_key_padding_mask for nn.Transformer (is_causal path)")
    p.add_argument("--no-decode", action="store_true", help="skip the decoding section")
    p.add_argument("--no-train", action="store_true", help="skip the training section")
    p.add_argument("--decode-batch", type=int, default=None, help="sentences per decoding batch (default 32)")
    p.add_argument("--decode-lengths", default="64,128", help="generated tokens, comma-separated")
    p.add_argument("--decode-rounds", type=int, default=None, help="rounds per decoder (default: --rounds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes and 2 rounds: a smoke run")
    p.add_argument("--json", default=None, help="also write the RESULT JSON to this file")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.decode_rounds = args.decode_rounds or args.rounds
    args.decode_lengths = [int(x) for x in args.decode_lengths.split(",")]
    args.batch_tokens, args.max_len = per_config(args.batch_tokens), per_config(args.max_len)
    names = args.configs or ("tiny,multi30k" if args.quick else "tiny,multi30k,short256,base")
    args.configs = [n.strip() for n in names.split(",") if n.strip()]
    modes = args.modes or ("fp32,bf16" if args.device == "cuda" else "fp32")
    args.modes = [m.strip() for m in modes.split(",") if m.strip()]
    for mode in args.modes:
        if mode not in MODES:
            raise UserError(f"--modes: unknown mode {mode!r} (one of {', '.join(MODES)})")
    if args.json and not Path(args.json).parent.is_dir():
        raise UserError(f"--json {args.json}: no such folder {Path(args.json).parent}")
    if args.threads is None and args.quick:
        args.threads = 1  # a smoke run must not crawl on OpenMP contention on a busy machine
    return args


def per_config(text: str | None) -> dict[str, int]:
    """'4000' (every config) or 'tiny=4000,base=2000'."""
    if not text:
        return {}
    try:
        if "=" not in text:
            return {name: int(text) for name in CONFIG_NAMES}
        return {k.strip(): int(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise UserError(f"{text!r}: expected N or name=N,name=N") from None


def env_flops(name: str) -> float | None:
    """The environment variable `name` in TFLOP/s, as FLOP/s; None when unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise UserError(f"{name}={text!r}: must be a positive number of TFLOP/s")
    return value * 1e12


def device_peaks(args, device_name: str) -> dict[str, float | None]:
    """The device's peak FLOP/s per precision, {"bf16": ..., "fp32": ...}; None if unknown.

    bf16: --peak-flops, else PEAK_TFLOPS, else the table; fp32: PEAK_TFLOPS_FP32, else the
    table's TF32 peak with --tf32 and its plain float32 peak without. The table is for
    CUDA devices; on the CPU only the overrides give a peak.
    """
    row = next((peaks for name, peaks in PEAK_FLOPS if name in device_name), None)
    bf16, tf32, fp32 = row if row and args.device == "cuda" else (None, None, None)
    return {"bf16": args.peak_flops or env_flops("PEAK_TFLOPS") or bf16,
            "fp32": env_flops("PEAK_TFLOPS_FP32") or (tf32 if args.tf32 else fp32)}


def run_meta(args, device: torch.device) -> dict:
    """The run's circumstances: versions, device, threads, load, settings."""
    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else (platform.processor() or platform.machine()))
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": args.device, "device_name": device_name,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "quick": args.quick, "rounds": args.rounds, "seed": args.seed,
            "modes": args.modes, "compile_backend": args.compile_backend, "tf32": args.tf32,
            "peak_flops": device_peaks(args, device_name), "label_smoothing": LABEL_SMOOTHING}


def main(argv=None) -> int:
    try:
        return run(parse_args(argv))
    except UserError as error:
        print(f"speed.py: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch.cuda.is_available() is False")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    configs = make_configs(args.configs)
    meta = run_meta(args, device)
    precisions = list(dict.fromkeys(mode.split("+")[0] for mode in args.modes))  # for decoding
    print_header(meta, configs)

    t_start = time.perf_counter()
    train = []
    if not args.no_train:
        print("\n== Training: forward + backward + Adam, train mode, medians of alternated rounds ==")
        for mode in args.modes:
            peak = meta["peak_flops"][mode.split("+")[0]]
            for name, (cfg, source) in configs.items():
                train.append(bench_training(name, cfg, source, args, device, mode, peak))
                print_training_run(train[-1])
        print("\n" + training_table(train))
    meta["seconds_training"] = round(time.perf_counter() - t_start, 1)

    decode, beams, cache_checks = [], [], []
    if not args.no_decode:
        cfg, source = configs["multi30k"] if "multi30k" in configs else multi30k_config()
        print("\n== Greedy decoding, multi30k-sized model, eval mode, no_grad, EOS impossible ==")
        print(f"  model: {source}")
        for precision in precisions:
            results, beam, matches = bench_decoding(cfg, args, device, precision)
            decode, beams, cache_checks = decode + results, beams + [beam], cache_checks + [matches]
            print(f"  [{precision}] cached and recomputed greedy give the same tokens: {matches}")
        print_decoding(decode, beams)
        if device.type == "cpu":
            print(f"\n  peak RSS of the process at the end (ru_maxrss): {peak_rss_mib():.0f} MiB")

    meta["seconds_total"] = round(time.perf_counter() - t_start, 1)
    print(f"\n  wall time: {meta['seconds_total']:.0f} s")
    result = {"meta": meta, "train": train, "decode": decode, "beam": beams,
              "greedy_cache_matches_recompute": cache_checks}
    if device.type == "cpu":
        result["peak_rss_mib_end"] = peak_rss_mib()
    print("\nRESULT " + json.dumps(result, default=float))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result, default=float, indent=1) + "\n")
        except OSError as error:
            raise UserError(f"--json {args.json}: cannot write ({error.strerror})") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
