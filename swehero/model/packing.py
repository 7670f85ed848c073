"""Packed sequences: several documents in one row, each attending only to itself, positions restarting per document.

On GPU, Transformer Engine's THD attention reads the document boundaries from `PackedSeqParams`. Megatron's local
(non-TE) attention refuses packed input, so `PackedDotProductAttention` gives it the same semantics with per-document
causal attention; RoPE positions restart per document in both paths because Megatron applies RoPE per
`cu_seqlens` segment.

Every pipeline stage must be given the same `PackedSeqParams`: a middle stage that gets none silently lets
documents attend to each other.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.dot_product_attention import DotProductAttention


def packed_seq_params(doc_lengths: Sequence[int], device: torch.device | str | None = None,
                      padded_lengths: Sequence[int] | None = None) -> PackedSeqParams:
    """Boundaries of documents of `doc_lengths` tokens packed back to back into one row. With `padded_lengths`
    each document is followed by padding up to that length (context parallelism's layout): the real boundaries
    say what attends to what, the padded ones where each document starts in the row."""
    cu_seqlens = _cumulative(doc_lengths, device)
    padded = _cumulative(padded_lengths, device) if padded_lengths is not None else None
    longest = int(max(padded_lengths if padded_lengths is not None else doc_lengths))
    return PackedSeqParams(
        qkv_format="thd",
        cu_seqlens_q=cu_seqlens,
        cu_seqlens_kv=cu_seqlens,
        cu_seqlens_q_padded=padded,
        cu_seqlens_kv_padded=padded,
        max_seqlen_q=longest,
        max_seqlen_kv=longest,
    )


def _cumulative(lengths: Sequence[int], device: torch.device | str | None) -> torch.Tensor:
    return torch.cumsum(torch.tensor([0, *lengths], dtype=torch.int32, device=device), 0, dtype=torch.int32)


def position_ids(doc_lengths: Sequence[int]) -> torch.Tensor:
    """Positions restarting at 0 in every document, shape [1, sum(doc_lengths)]."""
    return torch.cat([torch.arange(n) for n in doc_lengths]).unsqueeze(0)


class PackedDotProductAttention(DotProductAttention):
    """Megatron's local attention, plus THD packed input: causal attention within each document only."""

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params: PackedSeqParams | None = None):
        if packed_seq_params is None:
            return super().forward(query, key, value, attention_mask, attn_mask_type=attn_mask_type,
                                   attention_bias=attention_bias)
        # THD: query [t, heads, head_dim], key/value [t, groups, head_dim] for this TP rank.
        repeat = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(repeat, dim=1)
        value = value.repeat_interleave(repeat, dim=1)
        scale = self.config.softmax_scale or 1.0 / math.sqrt(query.shape[-1])
        dropout = self.config.attention_dropout if self.training else 0.0
        bounds = packed_seq_params.cu_seqlens_q.tolist()
        outputs = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            # [1, heads, t, head_dim]: with a batch dimension PyTorch's CPU flash kernel applies; without one it
            # falls back to the math path, which keeps every document's t x t attention probabilities.
            q, k, v = (x[start:end].transpose(0, 1)[None] for x in (query, key, value))
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scale)
            outputs.append(out[0].transpose(0, 1))
        return torch.cat(outputs).reshape(query.shape[0], -1)
