"""Packed training sequences from a `prepare` stage, in a deterministic, resumable order.

Each IndexedDataset document is one packed sample of exactly `seq_length` tokens whose sequences are the
trajectories in it (plus a padding tail); see `swehero.data.prepare` for the layout. Positions and attention
boundaries come from `swehero.model.packing`, the same helpers the model's packed-sequence tests use. The order of samples is
a fixed function of (seed, step), so a resumed run reads exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from swehero.data.prepare import STATS, read_stats


@dataclass
class PackedBatch:
    """One packed sequence, ready for the model (batch dimension 1)."""

    tokens: torch.Tensor
    """[1, S] input ids."""
    labels: torch.Tensor
    """[1, S] the next token at every position."""
    loss_mask: torch.Tensor
    """[1, S] float, 1 where the label is an assistant token (a training target)."""
    position_ids: torch.Tensor
    """[1, S] positions restarting at 0 at every trajectory."""
    doc_lengths: list[int]
    """Lengths of the trajectories packed in it (and of the padding tail), in order."""
    padded_lengths: list[int] | None = None
    """The same documents' lengths after the per-document padding context parallelism adds (`train/context.py`);
    None when the row is not padded."""


class PackedSequences:
    """The packed samples of one split (`train` or `valid`) of a prepared dataset."""

    def __init__(self, folder: str | Path, split: str) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        folder = Path(folder)
        stats = read_stats(folder)
        self.seq_length = int(stats["seq_length"])
        self.documents = [0]
        if not stats["samples"][split]:  # an empty split (no instance drawn for it): Megatron cannot map its file
            return
        self.tokens = IndexedDataset(str(folder / f"{split}_tokens"))
        self.loss_mask = IndexedDataset(str(folder / f"{split}_loss_mask"))
        self.documents = self.tokens.document_indices

    def __len__(self) -> int:
        return len(self.documents) - 1

    def __getitem__(self, index: int) -> PackedBatch:
        first, last = self.documents[index], self.documents[index + 1]
        tokens = np.concatenate([self.tokens[j] for j in range(first, last)]).astype(np.int64)
        mask = np.concatenate([self.loss_mask[j] for j in range(first, last)]).astype(np.float32)
        lengths = [int(n) for n in self.tokens.sequence_lengths[first:last]]
        assert len(tokens) == self.seq_length, f"sample {index} has {len(tokens)} tokens, expected {self.seq_length}"
        # The model predicts token t+1 at position t; prepare's mask marks targets, so it shifts with the labels.
        from swehero.model.packing import position_ids  # imports Megatron; `recipe plan` only needs steps_for

        labels = np.append(tokens[1:], tokens[-1])
        target_mask = np.append(mask[1:], 0.0)
        return PackedBatch(
            tokens=torch.from_numpy(tokens)[None],
            labels=torch.from_numpy(labels)[None],
            loss_mask=torch.from_numpy(target_mask)[None],
            position_ids=position_ids(lengths),
            doc_lengths=lengths,
        )


def seq_length_mismatch(seq_length: int, dataset: str | Path, stats: dict) -> str | None:
    """Why a stage of `seq_length` cannot train on a dataset with these stats, if it cannot: the model, the memory
    plan and the context-parallel split are built for `seq_length`, every sample has the dataset's length."""
    if stats["seq_length"] != seq_length:
        return (f"seq_length is {seq_length}, but {dataset} was packed at {stats['seq_length']} tokens per sample: "
                "set them equal")
    return None


def empty_training_split(dataset: str | Path, stats: dict) -> str | None:
    """Why a dataset with these stats has nothing to train on, if it has not: every instance was drawn for the
    validation split (few trajectories, a large valid_fraction), and a step needs at least one training row."""
    if stats["samples"]["train"]:
        return None
    return (f"{Path(dataset) / STATS}: the training split is empty (0 packed samples, {stats['samples']['valid']} in "
            "validation): prepare more trajectories or a smaller valid_fraction")


def steps_for(num_samples: int, global_batch_size: int, epochs: float, steps: int | None) -> int:
    """Optimizer steps of a run: `steps`, or as many full global batches as `epochs` passes hold."""
    if steps is not None:
        return steps
    return max(int(epochs * num_samples) // global_batch_size, 1)


def sample_indices(num_samples: int, seed: int, step: int, global_batch_size: int, dp_rank: int, dp_size: int) -> list[int]:
    """The samples this data-parallel rank trains on at `step`: the step's slice of a stream of epochs, each
    a fresh permutation of the dataset seeded by (seed, epoch)."""
    per_rank = global_batch_size // dp_size
    start = step * global_batch_size + dp_rank * per_rank
    out = []
    for position in range(start, start + per_rank):
        epoch, offset = divmod(position, num_samples)
        out.append(int(_permutation(num_samples, seed, epoch)[offset]))
    return out


@functools.lru_cache(maxsize=2)  # the current epoch and, at a boundary, the next
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)
