"""One optimizer step and one validation pass, through Megatron-Core's pipeline schedules.

The loss is the sum of masked token cross-entropy divided by the number of trained tokens in the whole global
batch (all micro-batches on all data-parallel ranks, and all context-parallel ranks, each of which holds a
share of every row: see `context.py`). Megatron-Core does exactly this with
`calculate_per_token_loss`: the loss function returns (sum, token count), the schedule leaves the sum
unscaled, and `finalize_model_grads` all-reduces the token count over data- and context-parallel ranks and divides the
gradients by it. So gradient accumulation and the data-parallel size do not change the result.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Iterator

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func

from swehero.model.packing import packed_seq_params
from swehero.train import context
from swehero.train.data import PackedBatch
from swehero.train.fused_loss import masked_labels


def _loss(loss_mask: torch.Tensor, output: torch.Tensor):
    """(sum of masked losses, trained tokens, report): the 3-tuple form that turns on per-token scaling.
    `output` is the per-token loss, or already the masked sum (the fused kernel's)."""
    mask = loss_mask.reshape(-1).float()
    total = output.float() if output.dim() == 0 else (output.reshape(-1).float() * mask).sum()
    tokens = mask.sum().to(torch.int)
    return total, tokens, {"loss": torch.stack([total.detach(), mask.sum().detach()])}


def forward_step(data_iterator: Iterator[PackedBatch], model: torch.nn.Module, device: torch.device,
                 fused_ce: bool):
    batch = next(data_iterator)
    cp = parallel_state.get_context_parallel_world_size()
    if cp > 1:
        batch = context.shard(batch, cp, parallel_state.get_context_parallel_rank(),
                              parallel_state.get_tensor_model_parallel_world_size())
    to = partial(torch.Tensor.to, device=device, non_blocking=True)
    labels = masked_labels(batch.labels, batch.loss_mask) if fused_ce else batch.labels
    output = model(
        to(batch.tokens), to(batch.position_ids), attention_mask=None, labels=to(labels),
        packed_seq_params=packed_seq_params(batch.doc_lengths, device, batch.padded_lengths),
    )
    return output, partial(_loss, to(batch.loss_mask))


def run_batches(model: list, batches: list[PackedBatch], seq_length: int, device: torch.device,
                forward_only: bool, fused_ce: bool) -> tuple[float, float]:
    """Forward (and backward) over the micro-batches of a step; returns this DP rank's (loss sum, tokens),
    known on the last pipeline stage (zeros elsewhere)."""
    # Each model chunk (virtual pipeline stage) reads the same micro-batches from its own iterator.
    iterators = [iter(batches) for _ in model]
    reports = get_forward_backward_func()(
        forward_step_func=partial(forward_step, device=device, fused_ce=fused_ce),
        data_iterator=iterators if len(model) > 1 else iterators[0],
        model=model if len(model) > 1 else model[0],
        num_microbatches=len(batches),
        seq_length=seq_length,
        micro_batch_size=1,
        forward_only=forward_only,
    )
    if not reports:
        return 0.0, 0.0
    summed = torch.stack([r["loss"] for r in reports]).sum(dim=0)
    return float(summed[0]), float(summed[1])


def global_mean_loss(loss_sum: float, tokens: float, device: torch.device) -> float:
    """Loss per trained token of the whole global batch, the same number on every rank."""
    totals = torch.tensor([loss_sum, tokens], dtype=torch.float64, device=device)
    if parallel_state.is_pipeline_last_stage(ignore_virtual=True):
        # Context-parallel ranks hold different tokens of the same rows: they count like data-parallel ones.
        group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        torch.distributed.all_reduce(totals, group=group)
    # Share the last stage's numbers with the other pipeline stages.
    last = parallel_state.get_pipeline_model_parallel_last_rank()
    torch.distributed.broadcast(totals, src=last, group=parallel_state.get_pipeline_model_parallel_group())
    return float(totals[0] / totals[1].clamp(min=1))


def train_step(model: list, optimizer, scheduler, batches: list[PackedBatch], seq_length: int,
               device: torch.device, fused_ce: bool) -> dict:
    for chunk in model:
        chunk.zero_grad_buffer()
    with warnings.catch_warnings():
        # megatron-core's distributed optimizer keeps fp32 parameters' shards as views of them (not leaves) and
        # zero_grad reads their `.grad`, which torch warns about once per process; they never get a gradient
        # (megatron's own comment on that line: "throws grad-access warning"). Only this exact warning, only here.
        warnings.filterwarnings("ignore", r"The \.grad attribute of a Tensor that is not a leaf Tensor", UserWarning)
        optimizer.zero_grad()
    loss_sum, tokens = run_batches(model, batches, seq_length, device, forward_only=False, fused_ce=fused_ce)
    lr = optimizer.param_groups[0]["lr"]  # this step's: the scheduler's step sets the next one's
    updated, grad_norm, _ = optimizer.step()
    if not updated:
        raise FloatingPointError("optimizer step skipped: non-finite gradients")
    scheduler.step(increment=1)
    metrics = {"loss": global_mean_loss(loss_sum, tokens, device), "grad_norm": float(grad_norm or 0.0), "lr": lr}
    check_finite(metrics)
    return metrics


def check_finite(metrics: dict) -> None:
    """Stop at a NaN or infinite loss or gradient norm: Megatron skips an update only with a loss scaler (fp16),
    so in bf16, fp8 and fp32 the weights would go on as NaN and later checkpoints would replace the good ones.
    Both numbers are reduced over all ranks (the gradient norm by the optimizer), so every rank stops at the same
    step and none is left waiting in a collective."""
    bad = {name: metrics[name] for name in ("loss", "grad_norm") if not math.isfinite(metrics[name])}
    if bad:
        raise FloatingPointError("non-finite " + ", ".join(f"{name} {value}" for name, value in bad.items()))


@torch.no_grad()
def evaluate(model: list, batch_groups: list[list[PackedBatch]], seq_length: int, device: torch.device,
             fused_ce: bool) -> float:
    for chunk in model:
        chunk.eval()
    loss_sum = tokens = 0.0
    for batches in batch_groups:
        s, t = run_batches(model, batches, seq_length, device, forward_only=True, fused_ce=fused_ce)
        loss_sum, tokens = loss_sum + s, tokens + t
    for chunk in model:
        chunk.train()
    return global_mean_loss(loss_sum, tokens, device)
