"""Fused LM head + cross-entropy: the loss of `hidden @ weight.T` without materialising the [T, V] logits.

Only tokens with a nonzero loss mask are computed, in chunks. For each chunk the backend computes the chunk's
logits and per-row statistics (max, sum of exponentials relative to that max, logit of the target); under tensor
parallelism these are combined across the vocabulary shards; then the chunk's logits are turned in place into their
gradient and multiplied into the gradients of `hidden` and `weight`. So at most one chunk of logits exists at a time.

The gradients are computed in the forward pass, not recomputed in the backward: the loss is a scalar, so its
gradient is the forward-time gradient times `grad_output`, and this saves the extra logits matmul a recomputing
backward would need (3 matmuls in all, as in the unfused version). The backward only rescales. In Megatron the
LM head's backward runs right after the loss, so holding the gradients for that moment costs nothing extra.

Two backends share this loop: `torch_ops` (plain PyTorch, the reference, used on CPU) and `triton_ops` (Triton
kernels, used on GPU).
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.distributed as dist
import torch.nn.functional as F

from . import torch_ops


def default_chunk_size(num_tokens: int, hidden_size: int, vocab_size: int) -> int:
    """Tokens per chunk such that a chunk's logits take about twice the memory of the hidden states.

    A power of two between 256 and 8192: large enough for efficient matmuls, and each chunk adds one read and write
    of the fp32 weight gradient, so fewer chunks are faster.
    """
    target = max(1, 2 * num_tokens * hidden_size // max(vocab_size, 1))
    return min(max(256, 1 << (target - 1).bit_length()), 8192)


def _agreed_chunk_size(hidden: torch.Tensor, weight: torch.Tensor, tp_group: dist.ProcessGroup | None) -> int:
    """`default_chunk_size` for the largest vocabulary shard of the TP group.

    Each chunk all-reduces its statistics, so every rank must run the same chunks; shards may be uneven, and sized
    from its own shard each rank could pick another chunk size. The largest shard's chunk logits take the most memory.
    """
    vocab_size = weight.shape[0]
    if tp_group is not None and dist.get_world_size(tp_group) > 1:
        largest = torch.tensor(vocab_size, device=weight.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX, group=tp_group)
        vocab_size = int(largest)
    return default_chunk_size(hidden.shape[0], hidden.shape[1], vocab_size)


def _clamped_normalizer(normalizer: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(normalizer, dtype=torch.float32, device=device).clamp(min=1)


def _backend(name: str, device: torch.device) -> ModuleType:
    if name == "auto":
        name = "triton" if device.type == "cuda" else "torch"
    if name == "torch":
        return torch_ops
    if name == "triton":
        from . import triton_ops  # imported lazily: the reference must work where triton is absent

        return triton_ops
    raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {name!r}")


def _combine_vocab_shards(
    row_max: torch.Tensor, sum_exp: torch.Tensor, target_logit: torch.Tensor, tp_group: dist.ProcessGroup | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-sum-exp over the whole vocabulary and the target logit, from this shard's statistics."""
    if tp_group is not None and dist.get_world_size(tp_group) > 1:
        global_max = row_max.clone()
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX, group=tp_group)
        # Only the shard holding a row's target has a nonzero target logit, so summing gathers it.
        sums = torch.stack([sum_exp * torch.exp(row_max - global_max), target_logit])
        dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=tp_group)
        row_max, (sum_exp, target_logit) = global_max, sums
    return row_max + torch.log(sum_exp), target_logit


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden, weight, targets, loss_mask, normalizer, vocab_start, tp_group, chunk_size, ops, needs_grad
    ):
        # Untrained tokens (prompts, tool output: most of an agent trajectory) add nothing to the loss or the
        # gradients, so only trained rows are computed. Counting them syncs with the device once per call.
        trained = torch.nonzero(loss_mask).squeeze(1)
        hidden_trained = hidden.index_select(0, trained)
        row_scale = loss_mask.index_select(0, trained).float() / _clamped_normalizer(normalizer, hidden.device)
        local_targets = targets.index_select(0, trained).long() - vocab_start
        local_targets = torch.where((local_targets >= 0) & (local_targets < weight.shape[0]), local_targets, -1)
        hidden_wants, weight_wants = needs_grad
        grad_trained = torch.empty_like(hidden_trained) if hidden_wants else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if weight_wants else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, trained.numel(), chunk_size):
            rows = slice(start, start + chunk_size)
            chunk = hidden_trained[rows]
            logits, row_max, sum_exp, target_logit = ops.logits_and_stats(chunk, weight, local_targets[rows])
            lse, target_logit = _combine_vocab_shards(row_max, sum_exp, target_logit, tp_group)
            loss += ((lse - target_logit) * row_scale[rows]).sum()
            if hidden_wants or weight_wants:
                grad_logits = ops.logits_to_grad_(logits, lse, local_targets[rows], row_scale[rows])
                if hidden_wants:
                    ops.grad_hidden(grad_logits, weight, out=grad_trained[rows])
                if weight_wants:
                    ops.accumulate_grad_weight_(grad_weight, grad_logits, chunk)
        grad_hidden = None
        if hidden_wants:
            if tp_group is not None:
                # `hidden` is replicated over the TP group and each shard saw only its part of the vocabulary.
                dist.all_reduce(grad_trained, group=tp_group)
            grad_hidden = torch.zeros_like(hidden).index_copy_(0, trained, grad_trained)
        ctx.grads = (grad_hidden, grad_weight, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, weight_dtype = ctx.grads
        ctx.grads = None  # the fp32 weight gradient is large: drop it as soon as it is used
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.mul_(grad_loss).to(weight_dtype)
        return grad_hidden, grad_weight, *([None] * 8)


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    loss_mask: torch.Tensor,
    normalizer: float | torch.Tensor,
    vocab_start: int = 0,
    tp_group: dist.ProcessGroup | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Sum over tokens of `loss_mask * cross_entropy(hidden @ weight.T, targets)`, divided by `normalizer`.

    hidden: [T, H] final hidden states (flatten [S, B, H] first); under TP, replicated over `tp_group`.
    weight: [V_local, H] this rank's shard of the LM head, rows `vocab_start .. vocab_start + V_local`.
    targets: [T] global vocabulary ids; any value where `loss_mask` is 0 (e.g. -100).
    loss_mask: [T] 1 for trained tokens, 0 otherwise (float weights are honoured too).
    normalizer: trained tokens in the global batch (all micro-batches and data-parallel ranks), so that summing the
        returned losses over them gives the global mean; clamped to at least 1, so a batch without trained tokens
        gives loss 0 and zero gradients instead of NaN.
    tp_group: the tensor-parallel group over which the vocabulary is split; None when unsplit. `hidden`, `targets`
        and `loss_mask` must be the same on all its ranks (as Megatron's TP ranks see the same batch). The gradient
        of `hidden` is all-reduced over it, so it is the full gradient on every rank.
    chunk_size: tokens per chunk (default: `default_chunk_size` for the largest vocabulary shard of `tp_group`).
    backend: "triton", "torch" (the reference) or "auto" (Triton on CUDA tensors, the reference otherwise).

    Returns the fp32 scalar loss. Gradients flow to `hidden` and `weight` (the latter accumulated in fp32).
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden [T, H] and weight [V, H], got {list(hidden.shape)} and {list(weight.shape)}")
    if targets.shape != hidden.shape[:1] or loss_mask.shape != hidden.shape[:1]:
        raise ValueError(
            f"targets {list(targets.shape)} and loss_mask {list(loss_mask.shape)} must be [T={hidden.shape[0]}]"
        )
    ops = _backend(backend, hidden.device)
    chunk = chunk_size or _agreed_chunk_size(hidden, weight, tp_group)
    grad_on = torch.is_grad_enabled()
    needs_grad = (grad_on and hidden.requires_grad, grad_on and weight.requires_grad)
    return _LinearCrossEntropy.apply(
        hidden, weight, targets, loss_mask, normalizer, vocab_start, tp_group, chunk, ops, needs_grad
    )


def unfused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    loss_mask: torch.Tensor,
    normalizer: float | torch.Tensor,
) -> torch.Tensor:
    """The same loss the plain way (full logits, upcast to fp32 as Hugging Face and Megatron do): the baseline the
    fused versions are tested and benchmarked against. Unsharded weight only."""
    logits = (hidden @ weight.T).float()
    per_token = F.cross_entropy(logits, torch.where(loss_mask.bool(), targets.long(), -100), reduction="none")
    return (per_token * loss_mask.float()).sum() / _clamped_normalizer(normalizer, hidden.device)
