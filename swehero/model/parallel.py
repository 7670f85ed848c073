"""How the model and the data are split over ranks: the one parallel layout type, set in a recipe's `train`
stage (`parallel:`) and taken by the model provider. Plain data, no torch: recipe validation imports it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelConfig:
    """How the model and data are split over GPUs. Data parallelism takes what is left of the world size."""

    tensor: int = 1
    """Tensor-parallel size (splits every layer; keep within a node)."""
    pipeline: int = 1
    """Pipeline-parallel size (splits the layers into stages; must divide the number of layers)."""
    virtual_pipeline: int = 1
    """Model chunks per pipeline rank (interleaved schedule, smaller bubble); 1 = plain 1F1B. pipeline *
    virtual_pipeline must divide the number of layers; chunk i of rank r holds layer block i * pipeline + r."""
    context: int = 1
    """Context-parallel size (splits each sequence; for 64k-128k tokens)."""
    sequence_parallel: bool = False
    """Split layer-norm and dropout activations along the sequence over the tensor-parallel group (needs
    tensor > 1 and Transformer Engine's layers: Megatron's local norms refuse it)."""

