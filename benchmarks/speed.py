"""Speed benchmark: this project's Transformer against torch.nn.Transformer at the same size.

What is measured, all in one process:

1. Training throughput, per config (tiny, multi30k, base). Two models of identical size
   are built: `transformer.Transformer(cfg)` and `Reference`, a model around
   `torch.nn.Transformer` with the same embeddings (one table, x sqrt(d_model)),
   sinusoidal positions, dropout, post-LN or pre-LN layers, and an output Linear tied to
   the embedding; both parameter counts are printed and must be equal. Both get the same
   batch of token ids, right-padded to the longest sentence (lengths drawn uniformly
   from [0.7 L, L], as a length-bucketed batcher gives: about 15% padding), in train
   mode with the config's dropout, the loss `transformer.loss.label_smoothed_loss`
   (epsilon 0.1) and Adam. One training step = forward, backward, Adam step. After a few
   warm-up steps, timed rounds (each several steps) alternate between the two models and
   the median over rounds of the target tokens per second (non-pad target tokens) is
   reported for each, with the ratio ours / nn.Transformer (> 1: ours is faster).

   The reference gets its best legal settings: batch_first=True, boolean masks with
   nn.Transformer's polarity (True = ignore): src_key_padding_mask,
   tgt_key_padding_mask, memory_key_padding_mask and a causal tgt_mask with
   tgt_is_causal=True (the mask semantics of our model, which masks pad keys and future
   positions). Its attention dropout and feed-forward dropout are set to the config's
   `attention_dropout` and `activation_dropout` (0 by default) rather than left at
   nn.Transformer's `dropout`: otherwise it would do more work than ours (and lose the
   fused attention kernels). Its redundant final LayerNorms are left out in post-LN mode,
   as in our model, so that the parameter counts agree. `--ref-causal-only` drops the
   target padding mask for the reference (equivalent for right-padded targets, and it
   lets SDPA take its is_causal path); ours always masks target padding.

2. Decoding speed on the multi30k-sized model (eval mode, no_grad), a batch of 32
   source sentences of 8..24 tokens: `transformer.decoding.greedy_decode` with the KV
   cache (use_cache=True), the same without it (use_cache=False: the whole prefix is
   recomputed every step), and the greedy loop written the usual way over
   nn.Transformer (as in PyTorch's translation tutorial: encode once, run the decoder on
   the whole prefix at every step). EOS is made impossible (eos_id=-1) so that exactly N
   tokens are generated, for N = 64 and 128; the script checks the output lengths.
   Reported in sentences per second, median of alternated rounds, with the ratios
   cache / recompute and cache / nn.Transformer loop. If `transformer.decoding.beam_search`
   exists, beam 4 (length penalty 0.6) is timed too, generating up to source length + 5
   tokens (EOS is a real id here, but an untrained model almost never picks it).

3. Peak memory. On CUDA, torch.cuda.max_memory_allocated during one training step of
   each model, and how much of it is above what was resident before the step. On the
   CPU only the process's peak resident set size (getrusage ru_maxrss) is available: it
   is printed after each config and is the peak of the whole process so far, both
   models included.

4. On CUDA (--device cuda) everything runs twice, in float32 and under bfloat16
   autocast, and the training table adds the model FLOP utilisation (MFU) in bf16:
   FLOPs per step / step time / peak bf16 FLOPS of the device (H100 and H200: 989e12
   dense; A100: 312e12; override with --peak-flops). FLOPs per step are
   "6 x non-embedding parameters x tokens + attention": every weight matrix costs
   2 FLOPs per multiply-add for each position it is applied to in the forward pass and
   twice that in the backward pass (hence 6 = 2 + 4); encoder matrices are applied to
   the B x S source positions, decoder matrices to the B x T target positions except the
   cross-attention key/value projections (source positions); the output projection
   (tied to the embedding, but a real matmul) to the target positions. Attention adds
   QK^T and AV: 2 x 2 x B x T_q x T_k x d_model per layer forward, x 3 for training,
   counted in full (also for the causal self-attention). Positions are the padded ones,
   the work actually done; LayerNorm, softmax, biases and embeddings are not counted.

Why alternated rounds and medians: the machine is shared and its speed drifts (other
processes, CPU frequency, caches). Running A A A A then B B B B would charge the drift
to one side; A B A B ... with the order rotated every round exposes both to the same
conditions, and the median of the rounds ignores the odd slow round. Measure on a quiet
machine for numbers to publish.

Output: a table per section, then one line `RESULT {...}` with every figure as JSON.

    .venv/bin/python benchmarks/speed.py                       # tiny, multi30k, base on the CPU
    .venv/bin/python benchmarks/speed.py --configs multi30k --rounds 7
    .venv/bin/python benchmarks/speed.py --device cuda         # float32 and bf16, with MFU
    .venv/bin/python benchmarks/speed.py --quick               # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # benchmark this checkout, installed or not

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import transformer  # noqa: E402
from transformer import TransformerConfig  # noqa: E402
from transformer import decoding as decoding_module  # noqa: E402
from transformer.loss import label_smoothed_loss  # noqa: E402

# nn.TransformerEncoder's eval fast path converts to nested tensors and warns about it, once
warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")

PAD, BOS, EOS, FIRST_WORD = 0, 1, 2, 4  # ids 0..3 are <pad> <bos> <eos> <unk>
LABEL_SMOOTHING = 0.1
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, no sparsity


# ---------------------------------------------------------------------------------------
# The reference: a model of the same size around torch.nn.Transformer
# ---------------------------------------------------------------------------------------
def sinusoids(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, d_model): sin on even columns, cos on odd ones (Section 3.5)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : d_model // 2]
    return table


class Reference(nn.Module):
    """nn.Transformer with the embeddings, positions and tied output layer of our model."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        src_table = nn.Embedding(cfg.src_vocab_size, D, padding_idx=cfg.pad_id)
        tgt_table = src_table if cfg.tie_embeddings == "all" else nn.Embedding(
            cfg.tgt_vocab_size, D, padding_idx=cfg.pad_id)
        self.src_table, self.tgt_table = src_table, tgt_table
        if cfg.positional == "sinusoidal":
            self.register_buffer("pe", sinusoids(cfg.max_len, D), persistent=False)
            self.src_pos = self.tgt_pos = None
        else:  # our model keeps one learned table per side
            self.pe = None
            self.src_pos = nn.Embedding(cfg.max_len, D)
            self.tgt_pos = nn.Embedding(cfg.max_len, D)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        layer_args = dict(d_model=D, nhead=cfg.n_heads, dim_feedforward=cfg.d_ff,
                          dropout=cfg.dropout, activation="relu", layer_norm_eps=cfg.layer_norm_eps,
                          batch_first=True, norm_first=cfg.norm_first)
        enc_layer = nn.TransformerEncoderLayer(**layer_args)
        dec_layer = nn.TransformerDecoderLayer(**layer_args)
        # Same dropout placement as ours: residual dropout = cfg.dropout (dropout1/2/3 keep
        # it); attention weights and the FFN's hidden layer get their own rates.
        enc_layer.self_attn.dropout = cfg.attention_dropout
        dec_layer.self_attn.dropout = cfg.attention_dropout
        dec_layer.multihead_attn.dropout = cfg.attention_dropout
        enc_layer.dropout.p = cfg.activation_dropout
        dec_layer.dropout.p = cfg.activation_dropout

        def final_norm():  # pre-LN needs one after the stack; post-LN already ends on one
            return nn.LayerNorm(D, eps=cfg.layer_norm_eps) if cfg.norm_first else None

        with warnings.catch_warnings():  # "enable_nested_tensor is True, but ..." (pre-LN)
            warnings.simplefilter("ignore")
            encoder = nn.TransformerEncoder(enc_layer, cfg.n_encoder_layers, norm=final_norm())
        decoder = nn.TransformerDecoder(dec_layer, cfg.n_decoder_layers, norm=final_norm())
        self.transformer = nn.Transformer(
            d_model=D, nhead=cfg.n_heads, dim_feedforward=cfg.d_ff, dropout=cfg.dropout,
            custom_encoder=encoder, custom_decoder=decoder, batch_first=True,
            norm_first=cfg.norm_first, layer_norm_eps=cfg.layer_norm_eps)
        self.generator = nn.Linear(D, cfg.tgt_vocab_size, bias=False)
        if cfg.tie_embeddings != "none":
            self.generator.weight = tgt_table.weight
        self.scale = math.sqrt(D)

    def embed(self, tokens: torch.Tensor, table: nn.Embedding, pos_table, start: int = 0):
        end = start + tokens.size(1)
        pos = self.pe[start:end] if pos_table is None else pos_table.weight[start:end]
        return self.embed_dropout(table(tokens) * self.scale + pos)

    @staticmethod
    def causal(size: int, device) -> torch.Tensor:
        """(size, size) bool, True above the diagonal = may NOT attend (nn.Transformer's polarity)."""
        return torch.ones(size, size, dtype=torch.bool, device=device).triu(1)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, tgt_padding: bool = True):
        pad = self.cfg.pad_id
        src_pad = src == pad  # (B, S) True = ignore
        tgt_pad = (tgt_in == pad) if tgt_padding else None
        h = self.transformer(
            self.embed(src, self.src_table, self.src_pos),
            self.embed(tgt_in, self.tgt_table, self.tgt_pos),
            tgt_mask=self.causal(tgt_in.size(1), tgt_in.device),
            src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
            memory_key_padding_mask=src_pad, tgt_is_causal=True)
        return self.generator(h)


@torch.no_grad()
def reference_greedy(model: Reference, src: torch.Tensor, max_len: int, bos_id: int,
                     eos_id: int) -> list[list[int]]:
    """The usual greedy loop over nn.Transformer: encode once, decode the whole prefix each step."""
    model.eval()
    pad = model.cfg.pad_id
    src_pad = src == pad
    memory = model.transformer.encoder(model.embed(src, model.src_table, model.src_pos),
                                       src_key_padding_mask=src_pad)
    ys = torch.full((src.size(0), 1), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        T = ys.size(1)
        h = model.transformer.decoder(model.embed(ys, model.tgt_table, model.tgt_pos), memory,
                                      tgt_mask=model.causal(T, ys.device), tgt_is_causal=True,
                                      memory_key_padding_mask=src_pad)
        logits = model.generator(h[:, -1])  # (B, V)
        logits[:, [pad, bos_id]] = float("-inf")
        next_token = logits.argmax(-1).masked_fill(finished, pad)
        ys = torch.cat([ys, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if bool(finished.all()):
            break
    return ys[:, 1:].tolist()


def copy_weights(ours: nn.Module, ref: Reference) -> None:
    """Load our model's weights into the reference (same layout, nn.Transformer's names)."""
    cfg = ref.cfg
    pairs = [(ref.src_table, ours.src_embed.token_embedding), (ref.tgt_table, ours.tgt_embed.token_embedding),
             (ref.generator, ours.generator)]
    if cfg.positional == "learned":
        pairs += [(ref.src_pos, ours.src_embed.learned_positions), (ref.tgt_pos, ours.tgt_embed.learned_positions)]

    def attention(theirs: nn.MultiheadAttention, mine) -> None:
        pairs.extend([((theirs, "in_proj_weight"), mine.w_qkv.weight), ((theirs, "in_proj_bias"), mine.w_qkv.bias),
                      (theirs.out_proj, mine.w_o)])

    for theirs, mine in zip(ref.transformer.encoder.layers, ours.encoder.layers):
        attention(theirs.self_attn, mine.self_attn)
        pairs += [(theirs.linear1, mine.feed_forward.w_1), (theirs.linear2, mine.feed_forward.w_2),
                  (theirs.norm1, mine.norm1), (theirs.norm2, mine.norm2)]
    for theirs, mine in zip(ref.transformer.decoder.layers, ours.decoder.layers):
        attention(theirs.self_attn, mine.self_attn)
        attention(theirs.multihead_attn, mine.cross_attn)
        pairs += [(theirs.linear1, mine.feed_forward.w_1), (theirs.linear2, mine.feed_forward.w_2),
                  (theirs.norm1, mine.norm1), (theirs.norm2, mine.norm2), (theirs.norm3, mine.norm3)]
    if cfg.norm_first:
        pairs += [(ref.transformer.encoder.norm, ours.encoder.final_norm),
                  (ref.transformer.decoder.norm, ours.decoder.final_norm)]
    with torch.no_grad():
        for dst, src in pairs:
            if isinstance(dst, tuple):  # (module, parameter name) against a parameter
                getattr(dst[0], dst[1]).copy_(src)
            else:  # module against module: every parameter of the same name
                for pname, param in dst.named_parameters(recurse=False):
                    param.copy_(getattr(src, pname))


def check_same_function(cfg: TransformerConfig, src, tgt_in) -> float:
    """Max |logits difference| between ours and the reference with our weights.

    Train mode with every dropout at 0 (nn.Transformer's eval fast path changes outputs,
    PITFALLS.md item 11). Float32 on the CPU: about 1e-5 means the same function.
    """
    cfg0 = cfg.replace(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    ours, ref = transformer.Transformer(cfg0).train(), Reference(cfg0).train()
    copy_weights(ours, ref)
    with torch.no_grad():
        return float((ours(src, tgt_in) - ref(src, tgt_in)).abs().max())


# ---------------------------------------------------------------------------------------
# Configs and batches
# ---------------------------------------------------------------------------------------
def describe(cfg: TransformerConfig) -> str:
    return (f"vocab {cfg.tgt_vocab_size}, d_model {cfg.d_model}, {cfg.n_heads} heads, "
            f"{cfg.n_encoder_layers}+{cfg.n_decoder_layers} layers, d_ff {cfg.d_ff}, dropout {cfg.dropout} "
            f"(attention {cfg.attention_dropout}, activation {cfg.activation_dropout}), "
            f"{'pre' if cfg.norm_first else 'post'}-LN, tie {cfg.tie_embeddings}, {cfg.positional} positions, "
            f"{cfg.attention} attention")


def multi30k_config() -> tuple[TransformerConfig, str]:
    path = REPO / "configs" / "multi30k.toml"
    if not path.exists():
        cfg = TransformerConfig(src_vocab_size=8000, tgt_vocab_size=8000, d_model=256, n_heads=4,
                                n_encoder_layers=3, n_decoder_layers=3, d_ff=1024, dropout=0.1)
        return cfg, f"built-in, configs/multi30k.toml not found: {describe(cfg)}"
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        data = tomllib.load(f)
    flat = {}
    for key, value in data.items():  # flat keys, tolerate one level of [tables]
        flat.update(value if isinstance(value, dict) else {key: value})
    names = {f.name for f in dataclasses.fields(TransformerConfig)}
    fields = {k: v for k, v in flat.items() if k in names}
    vocab = flat.get("vocab_size", 8000)
    fields.setdefault("src_vocab_size", vocab)
    fields.setdefault("tgt_vocab_size", vocab)
    cfg = TransformerConfig(**fields)
    return cfg, f"configs/multi30k.toml: {describe(cfg)}"


def make_configs(names: list[str]) -> dict[str, tuple[TransformerConfig, str]]:
    out = {}
    for name in names:
        if name == "tiny":
            cfg = TransformerConfig.tiny(vocab_size=8000)
            out[name] = (cfg, f"TransformerConfig.tiny(vocab_size=8000): {describe(cfg)}")
        elif name == "multi30k":
            out[name] = multi30k_config()
        elif name == "base":
            cfg = TransformerConfig.base(vocab_size=8000)
            out[name] = (cfg, f"TransformerConfig.base(vocab_size=8000): {describe(cfg)}")
        elif name == "big":
            cfg = TransformerConfig.big(vocab_size=8000)
            out[name] = (cfg, f"TransformerConfig.big(vocab_size=8000): {describe(cfg)}")
        else:
            raise SystemExit(f"speed.py: unknown config {name!r} (tiny, multi30k, base, big)")
    return out


def make_batch(batch_tokens: int, max_len: int, vocab: int, gen: torch.Generator):
    """Right-padded (src, tgt_in, tgt_out) with sentence lengths uniform in [0.7 L, L].

    A length-bucketed batcher gives about this: ~15% padding. Target sentences (with the
    <eos> that ends them) hold about `batch_tokens` non-pad tokens in all.
    """
    lo = max(2, round(0.7 * max_len))
    B = max(1, round(batch_tokens / ((lo + max_len) / 2)))
    src_len = torch.randint(lo, max_len + 1, (B,), generator=gen)
    tgt_len = torch.randint(lo, max_len + 1, (B,), generator=gen)  # counts the final <eos>
    S, T = int(src_len.max()), int(tgt_len.max())
    src = torch.randint(FIRST_WORD, vocab, (B, S), generator=gen)
    src[torch.arange(S)[None, :] >= src_len[:, None]] = PAD
    words = torch.randint(FIRST_WORD, vocab, (B, T), generator=gen)
    tgt_out = words.clone()
    tgt_out[torch.arange(T)[None, :] == (tgt_len[:, None] - 1)] = EOS
    tgt_out[torch.arange(T)[None, :] >= tgt_len[:, None]] = PAD
    tgt_in = torch.cat([torch.full((B, 1), BOS), tgt_out[:, :-1]], dim=1)
    tgt_in[tgt_in == EOS] = PAD  # <eos> is never an input
    return src, tgt_in, tgt_out


def decode_sources(n: int, lo: int, hi: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    lengths = torch.randint(lo, hi + 1, (n,), generator=gen)
    src = torch.randint(FIRST_WORD, vocab, (n, int(lengths.max())), generator=gen)
    src[torch.arange(src.size(1))[None, :] >= lengths[:, None]] = PAD
    return src


# ---------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: dict, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Run each fn once per round, order rotated every round; fn() returns work units done.

    Returns units per second for each round, per name.
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


def autocast_ctx(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def peak_rss_mib() -> float:
    """The process's peak resident set size so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def train_flops(cfg: TransformerConfig, B: int, S: int, T: int) -> float:
    """Training FLOPs of one step on a (B, S) source and (B, T) target batch (see the docstring)."""
    D, Fd, V = cfg.d_model, cfg.d_ff, cfg.tgt_vocab_size
    enc = cfg.n_encoder_layers * (6 * (4 * D * D + 2 * D * Fd) * B * S + 12 * B * S * S * D)
    dec = cfg.n_decoder_layers * (
        6 * (4 * D * D + 2 * D * D + 2 * D * Fd) * B * T  # self-attn, cross q/o, FFN
        + 6 * (2 * D * D) * B * S  # cross-attention keys and values of the memory
        + 12 * B * T * T * D + 12 * B * T * S * D)  # self- and cross-attention scores
    out = 6 * D * V * B * T
    return float(enc + dec + out)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------
# 1. Training
# ---------------------------------------------------------------------------------------
def bench_training(name: str, cfg: TransformerConfig, source: str, args, device, precision,
                   peak_flops):
    batch_tokens = args.batch_tokens.get(name) or default_batch_tokens(name, device, args.quick)
    max_len = args.max_len.get(name) or (64 if name in ("base", "big") else 32)
    if args.quick:
        max_len = min(max_len, 16)
    steps = args.steps or (1 if args.quick else {"tiny": 5, "multi30k": 3}.get(name, 2))
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)

    gen = torch.Generator().manual_seed(args.seed)
    src, tgt_in, tgt_out = (t.to(device) for t in make_batch(batch_tokens, max_len, cfg.tgt_vocab_size, gen))
    B, S, T = src.size(0), src.size(1), tgt_in.size(1)
    n_tgt = int((tgt_out != PAD).sum())
    pad_frac = 1.0 - n_tgt / (B * T)

    same = check_same_function(cfg, src[:4].cpu(), tgt_in[:4].cpu()) if precision == "fp32" else None
    torch.manual_seed(args.seed)
    ours = transformer.Transformer(cfg).to(device).train()
    torch.manual_seed(args.seed)
    ref = Reference(cfg).to(device).train()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for p in ref.parameters())

    def make_step(model, forward):
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast_ctx(device, precision):
                logits = forward()
            out = label_smoothed_loss(logits, tgt_out, LABEL_SMOOTHING, cfg.pad_id)
            out.loss.backward()
            opt.step()
        return step

    step_ours = make_step(ours, lambda: ours(src, tgt_in))
    step_ref = make_step(ref, lambda: ref(src, tgt_in, tgt_padding=not args.ref_causal_only))

    for _ in range(warmup):
        step_ours()
        step_ref()

    memory = {}
    if device.type == "cuda":
        for label, step in (("ours", step_ours), ("nn.Transformer", step_ref)):
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device)
            step()
            sync(device)
            peak = torch.cuda.max_memory_allocated(device)
            memory[label] = {"max_memory_allocated_mib": peak / 2**20,
                             "step_peak_above_resident_mib": (peak - resident) / 2**20}

    def run(step):
        def fn():
            for _ in range(steps):
                step()
            return steps * n_tgt
        return fn

    rates = alternate({"ours": run(step_ours), "nn.Transformer": run(step_ref)}, args.rounds, device)
    result = {
        "config": name, "config_source": source, "precision": precision,
        "params_ours": n_ours, "params_nn_transformer": n_ref,
        "batch_sentences": B, "src_len": S, "tgt_len": T, "target_tokens": n_tgt,
        "padding_fraction": round(pad_frac, 4), "steps_per_round": steps, "rounds": args.rounds,
        "warmup_steps": warmup,
        "tokens_per_s_ours": med(rates["ours"]), "tokens_per_s_nn_transformer": med(rates["nn.Transformer"]),
        "rounds_ours": [round(r, 1) for r in rates["ours"]],
        "rounds_nn_transformer": [round(r, 1) for r in rates["nn.Transformer"]],
        "ref_tgt_padding_mask": not args.ref_causal_only,
        "max_abs_logit_diff_with_copied_weights": same,
    }
    result["ratio"] = result["tokens_per_s_ours"] / result["tokens_per_s_nn_transformer"]
    if memory:
        result["cuda_memory"] = memory
    if device.type == "cuda" and precision == "bf16" and peak_flops:
        flops = train_flops(cfg, B, S, T)
        result["flops_per_step"] = flops
        result["peak_flops"] = peak_flops
        for key, label in (("ours", "ours"), ("nn_transformer", "nn.Transformer")):
            steps_per_s = result[f"tokens_per_s_{key}"] / n_tgt
            result[f"mfu_{key}"] = flops * steps_per_s / peak_flops
    if device.type == "cpu":
        result["peak_rss_mib_process_so_far"] = peak_rss_mib()

    del ours, ref, step_ours, step_ref
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def default_batch_tokens(name: str, device: torch.device, quick: bool) -> int:
    if quick:
        return 100 if name in ("base", "big") else 200
    if device.type == "cuda":
        return {"tiny": 8000, "multi30k": 8000}.get(name, 16000)
    return {"tiny": 4000, "multi30k": 4000}.get(name, 2000)


# ---------------------------------------------------------------------------------------
# 2. Decoding
# ---------------------------------------------------------------------------------------
def bench_decoding(cfg: TransformerConfig, args, device, precision):
    gen = torch.Generator().manual_seed(args.seed + 1)
    n_sent = args.decode_batch or (4 if args.quick else 32)
    src = (decode_sources(n_sent, 4, 12, cfg.src_vocab_size, gen) if args.quick
           else decode_sources(n_sent, 8, 24, cfg.src_vocab_size, gen)).to(device)
    lengths = [4, 8] if args.quick else args.decode_lengths

    torch.manual_seed(args.seed)
    ours = transformer.Transformer(cfg).to(device).eval()
    torch.manual_seed(args.seed)
    ref = Reference(cfg).to(device).eval()
    greedy = decoding_module.greedy_decode
    ctx = lambda: autocast_ctx(device, precision)  # noqa: E731

    def ours_fn(n, use_cache):
        def fn():
            with ctx():
                out = greedy(ours, src, max_len=n, bos_id=BOS, eos_id=-1, use_cache=use_cache)
            assert all(len(row) == n for row in out), "greedy_decode stopped early"
            return n_sent
        return fn

    def ref_fn(n):
        def fn():
            with ctx():
                out = reference_greedy(ref, src, max_len=n, bos_id=BOS, eos_id=-1)
            assert all(len(row) == n for row in out)
            return n_sent
        return fn

    # warm-up, and a check that the cache changes nothing
    with ctx():
        a = greedy(ours, src, max_len=8, bos_id=BOS, eos_id=-1, use_cache=True)
        b = greedy(ours, src, max_len=8, bos_id=BOS, eos_id=-1, use_cache=False)
        reference_greedy(ref, src, max_len=8, bos_id=BOS, eos_id=-1)
    cache_matches = a == b

    results = []
    for n in lengths:
        rates = alternate({"cache": ours_fn(n, True), "recompute": ours_fn(n, False),
                           "nn.Transformer loop": ref_fn(n)}, args.decode_rounds, device)
        r = {"precision": precision, "generated_tokens": n, "sentences": n_sent,
             "src_len": src.size(1), "rounds": args.decode_rounds,
             "sent_per_s_cache": med(rates["cache"]), "sent_per_s_recompute": med(rates["recompute"]),
             "sent_per_s_nn_transformer_loop": med(rates["nn.Transformer loop"])}
        r["ratio_cache_over_recompute"] = r["sent_per_s_cache"] / r["sent_per_s_recompute"]
        r["ratio_cache_over_nn_transformer_loop"] = r["sent_per_s_cache"] / r["sent_per_s_nn_transformer_loop"]
        results.append(r)

    beam = {"precision": precision, "available": hasattr(decoding_module, "beam_search")}
    if beam["available"]:
        try:
            def beam_fn():
                with ctx():
                    out = decoding_module.beam_search(ours, src, beam_size=4, length_penalty=0.6,
                                                      max_len_a=1.0, max_len_b=5, bos_id=BOS, eos_id=EOS)
                beam["mean_output_len"] = sum(map(len, out)) / len(out)
                return n_sent
            beam_fn()  # warm-up
            rates = alternate({"beam": beam_fn}, args.decode_rounds, device)
            beam.update(beam_size=4, length_penalty=0.6, max_len_a=1.0, max_len_b=5,
                        sentences=n_sent, sent_per_s=med(rates["beam"]))
        except Exception as exc:  # being written elsewhere: report, do not crash the run
            beam["error"] = f"{type(exc).__name__}: {exc}"
    del ours, ref
    gc.collect()
    return results, beam, cache_matches


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
def parse_per_config(text: str | None) -> dict[str, int]:
    """'4000' (every config) or 'tiny=4000,base=2000'."""
    if not text:
        return {}
    if "=" not in text:
        return {name: int(text) for name in ("tiny", "multi30k", "base", "big")}
    return {k.strip(): int(v) for k, v in (item.split("=") for item in text.split(","))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=None, help="comma-separated: tiny,multi30k,base (default: all three; "
                   "tiny,multi30k with --quick)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per model (default 5; 2 with --quick)")
    p.add_argument("--steps", type=int, default=None, help="training steps per round (default by config)")
    p.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps per model")
    p.add_argument("--batch-tokens", default=None,
                   help="target tokens per batch: N or tiny=N,base=M (default: CPU 4000/4000/2000, "
                        "CUDA 8000/8000/16000)")
    p.add_argument("--max-len", default=None, help="longest sentence in the batch: N or name=N (default 32; 64 for base)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's choice; 1 with --quick)")
    p.add_argument("--peak-flops", type=float, default=None, help="the device's peak bf16 FLOPS, for the MFU")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls in the float32 runs on CUDA")
    p.add_argument("--ref-causal-only", action="store_true",
                   help="no tgt_key_padding_mask for nn.Transformer (is_causal path)")
    p.add_argument("--no-decode", action="store_true", help="skip the decoding section")
    p.add_argument("--no-train", action="store_true", help="skip the training section")
    p.add_argument("--decode-batch", type=int, default=None, help="sentences per decoding batch (default 32)")
    p.add_argument("--decode-lengths", default="64,128", help="generated tokens, comma-separated")
    p.add_argument("--decode-rounds", type=int, default=None, help="rounds per decoder (default: --rounds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes and 2 rounds: a smoke run")
    args = p.parse_args(argv)

    args.rounds = args.rounds or (2 if args.quick else 5)
    args.decode_rounds = args.decode_rounds or args.rounds
    args.decode_lengths = [int(x) for x in args.decode_lengths.split(",")]
    args.batch_tokens = parse_per_config(args.batch_tokens)
    args.max_len = parse_per_config(args.max_len)
    names = (args.configs or ("tiny,multi30k" if args.quick else "tiny,multi30k,base")).split(",")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("speed.py: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.threads is None and args.quick:
        args.threads = 1  # a smoke run must not crawl on OpenMP contention on a busy machine
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    configs = make_configs([n.strip() for n in names if n.strip()])

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    peak_flops = args.peak_flops
    if device.type == "cuda" and peak_flops is None:
        peak_flops = next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    meta = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "python": platform.python_version(),
        "device": args.device, "device_name": device_name,
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "quick": args.quick, "rounds": args.rounds, "seed": args.seed,
        "tf32": args.tf32, "peak_flops": peak_flops, "label_smoothing": LABEL_SMOOTHING,
    }
    print("== speed.py: ours (transformer.Transformer) vs torch.nn.Transformer ==")
    for k, v in meta.items():
        print(f"  {k}: {v}")
    for name, (cfg, source) in configs.items():
        print(f"  config {name}: {source}")
    load = meta["load_average"]
    if load and load[0] > meta["cpu_count"] * 0.5 and device.type == "cpu":
        print(f"  WARNING: load average {load[0]:.1f} on {meta['cpu_count']} CPUs: the machine is busy, "
              "timings are noisy (with several threads per process, OpenMP contention can slow "
              "everything several-fold; --threads 1 is steadier)")

    t_start = time.perf_counter()
    train_results = []
    if not args.no_train:
        print("\n== Training: forward + backward + Adam, train mode, medians of alternated rounds ==")
    for precision in precisions:
        for name, (cfg, source) in ({} if args.no_train else configs).items():
            r = bench_training(name, cfg, source, args, device, precision, peak_flops)
            train_results.append(r)
            line = (f"  [{name} {precision}] params ours {r['params_ours']:,} / nn.Transformer "
                    f"{r['params_nn_transformer']:,}; batch {r['batch_sentences']} x src {r['src_len']} / "
                    f"tgt {r['tgt_len']}, {r['target_tokens']} target tokens, "
                    f"{100 * r['padding_fraction']:.0f}% padding; {r['rounds']} rounds x "
                    f"{r['steps_per_round']} steps")
            print(line)
            if r["params_ours"] != r["params_nn_transformer"]:
                print("  WARNING: parameter counts differ")
            if r["max_abs_logit_diff_with_copied_weights"] is not None:
                print(f"  [{name}] same function: with our weights copied in, nn.Transformer's logits differ "
                      f"by at most {r['max_abs_logit_diff_with_copied_weights']:.1e} (train mode, dropout 0)")
            if "peak_rss_mib_process_so_far" in r:
                print(f"  [{name}] peak RSS of the process so far (ru_maxrss, both models, all configs "
                      f"until now): {r['peak_rss_mib_process_so_far']:.0f} MiB")
            for label, mem in r.get("cuda_memory", {}).items():
                print(f"  [{name} {precision}] {label}: max_memory_allocated {mem['max_memory_allocated_mib']:.0f} MiB, "
                      f"of which {mem['step_peak_above_resident_mib']:.0f} MiB above the resident state")
            sys.stdout.flush()
    headers = ["config", "precision", "ours tok/s", "nn.Transformer tok/s", "ours / nn"]
    if any("mfu_ours" in r for r in train_results):
        headers += ["MFU ours", "MFU nn"]
    rows = []
    for r in train_results:
        row = [r["config"], r["precision"], f"{r['tokens_per_s_ours']:,.0f}",
               f"{r['tokens_per_s_nn_transformer']:,.0f}", f"{r['ratio']:.3f}"]
        if len(headers) > 5:
            row += [f"{100 * r['mfu_ours']:.1f}%", f"{100 * r['mfu_nn_transformer']:.1f}%"] \
                if "mfu_ours" in r else ["", ""]
        rows.append(row)
    if rows:
        print()
        print(table(headers, rows))
    meta["seconds_training"] = round(time.perf_counter() - t_start, 1)

    decode_results, beam_results, cache_checks = [], [], []
    if not args.no_decode:
        cfg, source = configs["multi30k"] if "multi30k" in configs else multi30k_config()
        print("\n== Greedy decoding, multi30k-sized model, eval mode, no_grad, EOS impossible ==")
        print(f"  model: {source}")
        for precision in precisions:
            res, beam, matches = bench_decoding(cfg, args, device, precision)
            decode_results += res
            beam_results.append(beam)
            cache_checks.append(matches)
            print(f"  [{precision}] cached and recomputed greedy give the same tokens: {matches}")
        rows = [[r["precision"], r["generated_tokens"], r["sentences"], f"{r['sent_per_s_cache']:.1f}",
                 f"{r['sent_per_s_recompute']:.1f}", f"{r['sent_per_s_nn_transformer_loop']:.1f}",
                 f"{r['ratio_cache_over_recompute']:.2f}", f"{r['ratio_cache_over_nn_transformer_loop']:.2f}"]
                for r in decode_results]
        print(table(["precision", "tokens", "sentences", "cache sent/s", "recompute sent/s",
                     "nn loop sent/s", "cache/recompute", "cache/nn loop"], rows))
        print("\n== Beam search (beam 4, length penalty 0.6, up to source length + 5 tokens) ==")
        for beam in beam_results:
            if not beam["available"]:
                print(f"  [{beam['precision']}] transformer.decoding.beam_search is not available")
            elif "error" in beam:
                print(f"  [{beam['precision']}] beam_search failed: {beam['error']}")
            else:
                print(f"  [{beam['precision']}] {beam['sent_per_s']:.1f} sentences/s "
                      f"({beam['sentences']} sentences, mean output length {beam['mean_output_len']:.1f})")
        if device.type == "cpu":
            print(f"\n  peak RSS of the process at the end (ru_maxrss): {peak_rss_mib():.0f} MiB")

    meta["seconds_total"] = round(time.perf_counter() - t_start, 1)
    print(f"\n  wall time: {meta['seconds_total']:.0f} s")
    result = {"meta": meta, "train": train_results, "decode": decode_results, "beam": beam_results,
              "greedy_cache_matches_recompute": cache_checks}
    if device.type == "cpu":
        result["peak_rss_mib_end"] = peak_rss_mib()
    print("\nRESULT " + json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
