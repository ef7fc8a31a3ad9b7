"""Scaled dot-product attention and multi-head attention (Sections 3.2.1 and 3.2.2).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V

`scaled_dot_product_attention` is that formula as a pure function, written out so it can
be read; `MultiHeadAttention` projects d_model into h heads of d_k = d_model / h, runs
attention on every head at once and projects the concatenation back:

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

Shapes: x (B, T, D) and memory (B, S, D) -> (B, T, D); per head q (B, H, T, d_k),
k and v (B, H, S, d_k); scores and weights (B, H, T, S). Masks are bool, True = may
attend, broadcastable to (B, H, T, S) (see masks.py).

Two paths compute the same thing: "manual" calls the function below; "fused" calls
`torch.nn.functional.scaled_dot_product_attention`, which never materialises the
weights and is much faster. A query row whose keys are all masked gives zeros, never
NaN, on both paths (tests/test_attention.py checks that they agree). The manual path
calls the module's `attention_fn` attribute, not the function by name, so that an
experiment can swap it on one model and leave every other model alone (ablate.py).

On the CPU, PyTorch's fused function picks its flash kernel whenever attention dropout is
off, and that kernel trains slowly in bfloat16 on this project's sizes: forward and
backward took 1.1x-5.4x the time of its plain "math" kernel in every shape measured
(d_k 32 and 64, 26-120 positions), and a whole training step of the Multi30k model 1.44x
(BENCHMARKS.md). So CPU training in bfloat16 asks for the math kernel (`fused_kernel`);
inference, float32 and GPUs keep PyTorch's choice.

Decoder self-attention in training can pass `is_causal=True` with its mask: a promise
that the causal mask gives the same result wherever the output is used (see
masks.causal_suffices). The fused path then asks for causal attention with no mask
tensor, which lets PyTorch run its flash kernel; the manual path applies the mask as
always, so what a reader (or an ablation's `attention_fn`) sees does not change.

For incremental decoding the module takes a `cache` dict. In cross-attention it holds
the memory's keys and values, computed once. In self-attention it holds the keys and
values of the positions seen so far, "k" and "v" (B, H, S_so_far, d_k): views of
buffers with room for more positions, into which each step writes its own in place.
A full buffer is replaced by one twice as long, so a sequence of n steps copies O(n)
positions in all, where appending with torch.cat would copy O(n^2).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .masks import causal_mask

DEFAULT_CACHE_CAPACITY = 32  # positions a self-attention cache holds before it first grows


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
    mask: torch.Tensor | None = None, dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (..., T, d_k), k (..., S, d_k), v (..., S, d_v), mask bool broadcastable to (..., T, S).

    Returns (output (..., T, d_v), weights (..., T, S)).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T, S)
    if mask is not None:
        # The most negative finite number rather than -inf: a row with nothing to attend
        # to then stays finite (softmax of all -inf is NaN, and NaN spreads through the
        # backward pass to the whole batch). The row is zeroed just below.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        # Exact zeros for masked keys; a fully masked row becomes all zeros, not uniform.
        weights = weights.masked_fill(~mask, 0.0)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights


def fused_kernel(q: torch.Tensor) -> contextlib.AbstractContextManager:
    """The kernels the fused function may use for these queries: the math kernel alone when
    training in bfloat16 on the CPU (see the module docstring), else PyTorch's choice."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_grad_enabled():
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def append_to_cache(state: dict, k: torch.Tensor,
                    v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write this step's k, v (B, H, T_new, d_k) after the cached ones; returns all of them.

    `state` is one layer's self-attention cache: "k_buffer"/"v_buffer" (B, H, capacity,
    d_k) hold the positions, "k"/"v" are views of their filled part (what attention
    reads, and what `decoder.cache_length` and `decoder.reorder_cache` use), "capacity"
    the first buffers' length (from `Decoder.new_cache`).
    """
    n, new = (state["k"].size(2) if "k" in state else 0), k.size(2)
    if "k_buffer" not in state or n + new > state["k_buffer"].size(2):
        B, H, _, d_k = k.shape
        capacity = max(state.get("capacity", DEFAULT_CACHE_CAPACITY), n + new,
                       2 * state["k_buffer"].size(2) if "k_buffer" in state else 0)
        for name in ("k", "v"):
            buffer = k.new_empty(B, H, capacity, d_k)
            if n:
                buffer[:, :, :n] = state[name]
            state[name + "_buffer"] = buffer
    for name, x in (("k", k), ("v", v)):
        buffer = state[name + "_buffer"]
        buffer[:, :, n:n + new] = x  # in place: the earlier positions do not move
        state[name] = buffer[:, :, :n + new]
    return state["k"], state["v"]


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, attention_dropout: float = 0.0,
                 fused: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_model = d_model
        # W^Q, W^K, W^V of all heads stacked into one (3 D, D) matrix: self-attention gets
        # q, k and v from a single matmul. (The same layout as nn.MultiheadAttention.)
        self.w_qkv = nn.Linear(d_model, 3 * d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.attention_dropout = attention_dropout
        self.fused = fused
        self.attention_fn = scaled_dot_product_attention  # what the manual path calls
        self.record_weights = False  # set by plots: keep the last weights in self.weights
        self.weights: torch.Tensor | None = None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, H, S, d_k)."""
        B, S, _ = x.shape
        return x.view(B, S, self.n_heads, self.d_model // self.n_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, cache: dict | None = None,
                is_causal: bool = False) -> torch.Tensor:
        """x (B, T, D) queries; memory (B, S, D) for cross-attention, None for self-attention.

        is_causal: self-attention only, without a cache: the caller has checked that the
        causal mask gives what `mask` gives at every position whose output is used.
        cache: None in training. In incremental decoding a dict owned by the caller, which
        this call reads and fills (see the module docstring).
        """
        D = self.d_model
        if memory is None:  # self-attention: queries, keys and values all come from x
            q, k, v = (self.split_heads(t) for t in self.w_qkv(x).split(D, dim=-1))
            if cache is not None:  # this step's keys/values join the earlier ones
                k, v = append_to_cache(cache, k, v)
        else:  # cross-attention: queries from the decoder, keys/values from the encoder
            w, b = self.w_qkv.weight, self.w_qkv.bias
            q = self.split_heads(F.linear(x, w[:D], b[:D]))
            if cache is not None and "k" in cache:  # the memory does not change while decoding
                k, v = cache["k"], cache["v"]
            else:
                k, v = (self.split_heads(t) for t in F.linear(memory, w[D:], b[D:]).split(D, dim=-1))
                if cache is not None:
                    cache["k"], cache["v"] = k, v
        if is_causal and q.size(2) != k.size(2):
            # F.scaled_dot_product_attention aligns is_causal at the top left: with cached
            # keys before the queries it would hide keys the queries may see.
            raise ValueError(f"is_causal needs as many keys as queries: {k.size(2)} keys, "
                             f"{q.size(2)} queries")

        dropout_p = self.attention_dropout if self.training else 0.0
        if self.fused and not self.record_weights:
            with fused_kernel(q):
                if is_causal:  # no mask tensor: lets PyTorch choose a flash kernel where allowed
                    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p,
                                                         is_causal=True)
                else:
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                         dropout_p=dropout_p)
        else:
            if mask is None and is_causal:
                mask = causal_mask(q.size(2), q.device)
            out, weights = self.attention_fn(q, k, v, mask, dropout_p)
            if self.record_weights:
                self.weights = weights.detach()
        B, H, T, d_k = out.shape
        out = out.transpose(1, 2).reshape(B, T, H * d_k)  # concatenate the heads: (B, T, D)
        return self.w_o(out)
