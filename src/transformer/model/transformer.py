"""The Transformer: encoder, decoder, embeddings and output projection (Section 3, Figure 1).

    src (B, S) int64 --embed--> (B, S, D) --encoder--> memory (B, S, D)
    tgt_in (B, T) int64 --embed--> (B, T, D) --decoder(memory)--> (B, T, D)
        --linear--> logits (B, T, tgt_vocab_size)

`tgt_in` is the target shifted right: <bos> y_1 ... y_{T-1}; the logits at position t
predict y_t. Masks are built from `cfg.pad_id` when not given: padding masks for the
source (encoder self-attention, cross-attention) and causal-and-padding for the target.
Training, whose loss ignores <pad> targets, says so (`pad_outputs_unused=True`): on a
right-padded target the decoder's self-attention may then use the plain causal mask,
the fast kernels' favourite, and every position the loss reads is unchanged.

Weight tying (Section 3.4, "we share the same weight matrix between the two embedding
layers and the pre-softmax linear transformation"):
    "all"      source embedding = target embedding = output projection (one vocabulary)
    "decoder"  target embedding = output projection
    "none"     three separate matrices
"""

from __future__ import annotations

import torch
from torch import nn

from .config import TransformerConfig
from .decoder import Decoder, cache_length
from .embeddings import Embeddings
from .encoder import Encoder
from .masks import causal_mask, causal_suffices, decoder_self_mask, padding_mask


class Transformer(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        src_table = nn.Embedding(cfg.src_vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        if cfg.tie_embeddings == "all":
            tgt_table = src_table
        else:
            tgt_table = nn.Embedding(cfg.tgt_vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.src_embed = Embeddings(src_table, cfg.max_len, cfg.positional, cfg.dropout)
        self.tgt_embed = Embeddings(tgt_table, cfg.max_len, cfg.positional, cfg.dropout)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.generator = nn.Linear(cfg.d_model, cfg.tgt_vocab_size, bias=False)
        self._init_weights()
        if cfg.tie_embeddings != "none":
            self.generator.weight = tgt_table.weight

    def _init_weights(self) -> None:
        # Xavier for the projections (as the reference implementations do; the paper is
        # silent). Embeddings ~ N(0, d_model^-0.5): times sqrt(d_model) they have unit
        # variance at the input, and as a tied output projection they give logits of
        # unit scale.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=self.cfg.d_model ** -0.5)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src (B, S) -> memory (B, S, D)."""
        if src_mask is None:
            src_mask = padding_mask(src, self.cfg.pad_id)  # (B, 1, 1, S)
        return self.encoder(self.src_embed(src), src_mask)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, src: torch.Tensor | None = None,
               src_mask: torch.Tensor | None = None, cache: list[dict] | None = None,
               last_only: bool = False, pad_outputs_unused: bool = False) -> torch.Tensor:
        """tgt_in (B, T), memory (B, S, D) -> logits (B, T, V), or (B, 1, V) if last_only.

        The cross-attention mask comes from `src_mask`, or else from the padding of
        `src`. With a `cache` (from `self.decoder.new_cache()`), `tgt_in` holds only the
        new positions; the earlier ones are in the cache. Decoding needs the logits of
        the last position alone: `last_only` skips the output projection of the others.

        pad_outputs_unused: the caller ignores the logits where `tgt_in` is <pad> (the
        loss does: its target is <pad> there too). Where the causal mask then gives the
        same logits everywhere else (a right-padded target: masks.causal_suffices), the
        fused self-attention runs without a mask tensor; elsewhere nothing changes.
        """
        if src_mask is None and src is not None:
            src_mask = padding_mask(src, self.cfg.pad_id)
        start = cache_length(cache) if cache is not None else 0
        causal = False
        if cache is None:
            self_mask = decoder_self_mask(tgt_in, self.cfg.pad_id)  # (B, 1, T, T)
            causal = pad_outputs_unused and causal_suffices(self_mask, tgt_in != self.cfg.pad_id)
        elif tgt_in.size(1) == 1:
            self_mask = None  # one new position may see every cached one
        else:  # several new positions at once: causal over the whole prefix
            self_mask = causal_mask(start + tgt_in.size(1), tgt_in.device)[start:]
        x = self.tgt_embed(tgt_in, start=start)
        h = self.decoder(x, memory, self_mask, src_mask, cache, self_is_causal=causal)  # (B, T, D)
        return self.generator(h[:, -1:] if last_only else h)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor,
                pad_outputs_unused: bool = False) -> torch.Tensor:
        """src (B, S), tgt_in (B, T) -> logits (B, T, V); `pad_outputs_unused` as in decode."""
        src_mask = padding_mask(src, self.cfg.pad_id)
        memory = self.encode(src, src_mask)
        return self.decode(tgt_in, memory, src_mask=src_mask, pad_outputs_unused=pad_outputs_unused)

    def num_parameters(self) -> int:
        """Parameters counted once each (tied matrices count once)."""
        return sum(p.numel() for p in self.parameters())
