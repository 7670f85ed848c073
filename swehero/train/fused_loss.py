"""The training loss through `swehero_kernels.fused_linear_cross_entropy` (`fused_ce: true`): the last pipeline
stage's GPTModel returns the masked cross-entropy sum computed from the final hidden states and the LM-head
weights chunk by chunk, so the [tokens, vocab] logits (10 GB per 32k-token sequence at Qwen2.5's 152k vocabulary)
are never materialised. Triton on GPUs, the PyTorch reference elsewhere; vocabulary-parallel over the TP group.

GPTModel has no hook for this, so two of its members are replaced on the instance: the output layer passes the
hidden states (and the weight to use, which is the shared embedding when tied) through, and the loss function
computes the fused loss from them. Parameters and checkpoints are untouched.
"""

from __future__ import annotations

from functools import partial

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel import gather_from_sequence_parallel_region

IGNORE = -100
"""Label of untrained tokens: the mask travels inside the labels GPTModel hands to its loss function."""


def install(chunk: torch.nn.Module) -> None:
    """Switch a last-stage GPTModel to the fused loss (a no-op on other stages)."""
    if not chunk.post_process:
        return
    head = chunk.output_layer

    def pass_hidden(hidden, weight=None, runtime_gather_output=None):
        return (hidden, head.weight if weight is None else weight), None

    head.forward = pass_hidden
    chunk.compute_language_model_loss = partial(_fused_loss, head.sequence_parallel)


def masked_labels(labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    return torch.where(loss_mask > 0, labels, torch.full_like(labels, IGNORE))


def _fused_loss(sequence_parallel: bool, labels: torch.Tensor, hidden_and_weight) -> torch.Tensor:
    from swehero_kernels import fused_linear_cross_entropy

    hidden, weight = hidden_and_weight
    if sequence_parallel:
        # The kernel all-reduces the hidden-state gradient itself: the gather's backward must only split it.
        hidden = gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=False)
    flat_hidden = hidden.transpose(0, 1).reshape(-1, hidden.shape[-1])  # [s, b, h] -> [b*s, h], like labels
    flat_labels = labels.reshape(-1)
    mask = (flat_labels != IGNORE).float()
    tp = parallel_state.get_tensor_model_parallel_world_size()
    return fused_linear_cross_entropy(
        flat_hidden, weight, flat_labels.clamp(min=0), mask, normalizer=1.0,
        vocab_start=parallel_state.get_tensor_model_parallel_rank() * weight.shape[0],
        tp_group=parallel_state.get_tensor_model_parallel_group() if tp > 1 else None,
    )
