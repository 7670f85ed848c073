"""Context parallelism for packed rows: each of the `cp` ranks of a context-parallel group trains on 1/cp of
every packed row, and attention (Transformer Engine's, the `te` spec) exchanges keys and values between them.

TE's THD attention with context parallelism needs every document to be a multiple of 2 x cp tokens long, and
splits each document into 2 x cp equal chunks of which rank r holds chunks r and 2 x cp - 1 - r: under a causal
mask an early chunk is cheap and a late one dear, so pairing them balances the ranks' work. That is the order of
TE's `thd_get_partitioned_indices`; it is computed here in PyTorch, so the batch path needs no TE and is tested
on CPU. The per-document padding is made here, in the training batch path, not by `data prepare`: the stored
packs do not depend on the parallel layout. Padding tokens have loss mask 0 and TE skips them (it is told the
padded boundaries in `cu_seqlens_q_padded`, the real ones in `cu_seqlens_q`).

The loss needs nothing else: each rank returns its (loss sum, trained tokens), and Megatron's
`finalize_model_grads` divides the gradients by the token count all-reduced over the data- and context-parallel
ranks together, which is the count of the whole global batch.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from swehero.model.packing import position_ids
from swehero.train.data import PackedBatch


def pad_documents(batch: PackedBatch, multiple: int, row_multiple: int | None = None) -> PackedBatch:
    """`batch` with every document padded at its end to a multiple of `multiple` tokens (token 0, loss mask 0,
    positions counting on), the last one further, to make the row a multiple of `row_multiple` (itself a multiple
    of `multiple`); `padded_lengths` records the padded document lengths."""
    row_multiple = row_multiple or multiple
    assert row_multiple % multiple == 0, (row_multiple, multiple)
    padded = [-(-n // multiple) * multiple for n in batch.doc_lengths]
    padded[-1] += -sum(padded) % row_multiple
    pieces: dict[str, list[torch.Tensor]] = {"tokens": [], "labels": [], "loss_mask": []}
    start = 0
    for length, target in zip(batch.doc_lengths, padded):
        for name, pad in (("tokens", 0), ("labels", 0), ("loss_mask", 0.0)):
            doc = getattr(batch, name)[:, start:start + length]
            pieces[name].append(torch.cat([doc, doc.new_full((1, target - length), pad)], dim=1))
        start += length
    return replace(batch, **{name: torch.cat(parts, dim=1) for name, parts in pieces.items()},
                   position_ids=position_ids(padded), padded_lengths=padded)


def partition_indices(padded_lengths: list[int], cp: int, rank: int) -> torch.Tensor:
    """Positions of the padded row that context-parallel `rank` holds: in each document, chunks `rank` and
    `2 * cp - 1 - rank` of its 2 * cp equal chunks (TE's `thd_get_partitioned_indices` order)."""
    indices, start = [], 0
    for length in padded_lengths:
        chunk = length // (2 * cp)
        for part in (rank, 2 * cp - 1 - rank):
            indices.append(torch.arange(start + part * chunk, start + (part + 1) * chunk))
        start += length
    return torch.cat(indices)


def shard(batch: PackedBatch, cp: int, rank: int, tp: int = 1) -> PackedBatch:
    """This context-parallel rank's share of a packed row: every document padded to a multiple of 2 x cp and
    split in TE's load-balanced order. The document lengths stay those of the whole row: attention needs them.

    The share is a multiple of 16 x tp tokens: sequence parallelism splits it again over the `tp` tensor-parallel
    ranks (Megatron asserts they divide it), and FP8 matrix products want token counts in multiples of 16
    (Megatron's `get_fp8_align_size`), which a row of documents padded only to 2 x cp would not give."""
    padded = pad_documents(batch, 2 * cp, row_multiple=16 * cp * tp)
    mine = partition_indices(padded.padded_lengths, cp, rank)
    return replace(padded, **{name: getattr(padded, name)[:, mine]
                              for name in ("tokens", "labels", "loss_mask", "position_ids")})
