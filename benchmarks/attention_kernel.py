"""The CPU's attention kernel for bf16 training: the math kernel, which MultiHeadAttention
asks for there, against PyTorch's own choice (its flash kernel when attention dropout is off).

    python benchmarks/attention_kernel.py [--configs multi30k,base] [--rounds 5] [--threads 1]

First the kernels alone: scaled dot-product attention forward and backward under bf16
autocast, the flash kernel against the math kernel, at three shapes (batch, heads,
positions, d_k), causal and not; the median of 20 calls each. Then each config trains at its recipe's shape with attention dropout 0, under bf16 autocast,
on random batches of ~4,000 target tokens (26 a sentence, no padding). The two choices
alternate within one process, the order swapped every round; printed: the median target
tokens/s of each, and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from transformer import Transformer
from transformer.model import attention
from transformer.run.settings import read_recipe, settings_from_values
from transformer.training.schedule import adam

VOCAB, LENGTH, TOKENS = 8000, 26, 4000
OURS = attention.fused_kernel


def pytorchs_choice(q: torch.Tensor):
    return contextlib.nullcontext()


def make_model(recipe: str) -> Transformer:
    settings = settings_from_values({**read_recipe(recipe), "attention_dropout": 0.0})
    return Transformer(settings.with_vocabulary(VOCAB, 0).model).train()


def train_steps(model, optimizer, batch, steps: int) -> float:
    """Target tokens per second over `steps` updates."""
    src, tgt_in, tgt_out = batch
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(src, tgt_in)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tgt_out.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return steps * tgt_out.numel() / (time.perf_counter() - start)


def measure(recipe: str, rounds: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = make_model(recipe)
    optimizer = adam(model.parameters(), lr=1e-4)
    sentences = TOKENS // LENGTH
    src, tgt = (torch.randint(4, VOCAB, (sentences, LENGTH)) for _ in range(2))
    batch = (src, tgt[:, :-1], tgt[:, 1:])
    choices = {"math kernel (ours)": OURS, "PyTorch's choice": pytorchs_choice}
    rates = {name: [] for name in choices}
    for round_ in range(rounds + 1):  # round 0 warms up, untimed
        order = list(choices) if round_ % 2 else list(reversed(choices))
        for name in order:
            attention.fused_kernel = choices[name]
            rate = train_steps(model, optimizer, batch, steps)
            if round_:
                rates[name].append(rate)
    attention.fused_kernel = OURS
    return {name: statistics.median(values) for name, values in rates.items()}


KERNEL_SHAPES = [(80, 4, 26, 32), (40, 8, 30, 64), (16, 8, 120, 64)]


def kernel_ms(shape: tuple, backend: SDPBackend, causal: bool, calls: int = 20) -> float:
    """Median milliseconds of one attention call, forward and backward, with `backend` alone."""
    q, k, v = (torch.randn(*shape, requires_grad=True) for _ in range(3))
    times = []
    with sdpa_kernel(backend):
        for _ in range(calls):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            out.float().sum().backward()
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def compare_kernels() -> None:
    for shape in KERNEL_SHAPES:
        for causal in (True, False):
            flash = kernel_ms(shape, SDPBackend.FLASH_ATTENTION, causal)
            math = kernel_ms(shape, SDPBackend.MATH, causal)
            print(f"kernel {shape} {'causal' if causal else 'full'}: flash {flash:.2f} ms, "
                  f"math {math:.2f} ms; flash takes {flash / math:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="multi30k,base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    compare_kernels()
    for recipe in args.configs.split(","):
        steps = 6 if recipe == "multi30k" else 2
        medians = measure(recipe, args.rounds, steps)
        ours, theirs = medians.values()
        print(f"{recipe}: " + ", ".join(f"{n} {v:,.0f} target tokens/s" for n, v in medians.items())
              + f"; ratio {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
