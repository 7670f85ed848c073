"""Per-chunk operations of the fused linear + cross-entropy in plain PyTorch: the reference, and the CPU path.

Same contract as `triton_ops`; `linear_ce` runs the chunk loop over either.
"""

from __future__ import annotations

import torch


def logits_and_stats(
    hidden: torch.Tensor, weight: torch.Tensor, local_targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits [C, V] in the input dtype, and per row (fp32): max, sum of exp(logit - max), logit of the target
    (0 where the target is on another vocabulary shard, marked by local_targets == -1)."""
    logits = hidden @ weight.T
    logits32 = logits.float()
    row_max = logits32.amax(dim=1)
    sum_exp = torch.exp(logits32 - row_max[:, None]).sum(dim=1)
    on_shard = local_targets >= 0
    target_logit = logits32.gather(1, local_targets.clamp(min=0)[:, None]).squeeze(1)
    return logits, row_max, sum_exp, torch.where(on_shard, target_logit, 0.0)


def logits_to_grad_(
    logits: torch.Tensor, lse: torch.Tensor, local_targets: torch.Tensor, row_scale: torch.Tensor
) -> torch.Tensor:
    """Overwrite the logits with d loss / d logits = (softmax - onehot(target)) * row_scale, and return them."""
    grad = torch.exp(logits.float() - lse[:, None])
    rows = torch.nonzero(local_targets >= 0).squeeze(1)
    grad[rows, local_targets[rows]] -= 1.0
    grad *= row_scale[:, None]
    return logits.copy_(grad)


def grad_hidden(grad_logits: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> None:
    """out [C, H] = grad_logits [C, V] @ weight [V, H]."""
    torch.mm(grad_logits, weight, out=out)


def accumulate_grad_weight_(grad_weight: torch.Tensor, grad_logits: torch.Tensor, hidden: torch.Tensor) -> None:
    """grad_weight [V, H] (fp32) += grad_logits.T [V, C] @ hidden [C, H]."""
    if grad_logits.dtype == grad_weight.dtype:
        grad_weight.addmm_(grad_logits.T, hidden)
    else:  # a [V, H] temporary in the input dtype: the Triton kernel accumulates in fp32 without it
        grad_weight += grad_logits.T @ hidden
