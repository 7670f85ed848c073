"""Per-chunk operations of the fused linear + cross-entropy as Triton kernels (same contract as `torch_ops`).

- `_logits_stats_kernel`: a tiled matmul (tl.dot, fp32 accumulation) whose epilogue writes the logits tile and that
  tile's row max, sum of exponentials and target logit, so the softmax statistics cost no extra pass over logits.
- `_logits_to_grad_kernel`: turns the chunk's logits in place into their gradient once the log-sum-exp over the
  whole vocabulary (all shards) is known.
- `_matmul_kernel`: tiled matmul with fp32 accumulation, optionally adding into its fp32 output; gives the hidden
  gradient and accumulates the weight gradient in fp32 across chunks.

Runs on CPU tensors under TRITON_INTERPRET=1 (the tests), with one small tile configuration.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
# The interpreter (triton 3.9) computes tl.dot on bfloat16 tiles wrongly (it multiplies their raw uint16 storage), so
# there the tiles are upcast first; bf16 products are exact in fp32, so the dot gives what the GPU's dot gives. (Its
# fp32 -> bf16 conversions truncate where the GPU rounds to nearest, though: its bf16 logits can differ by one step.)
_DOT_IN_FP32 = tl.constexpr(_INTERPRETING)


def _matmul_configs() -> list[triton.Config]:
    if _INTERPRETING:  # autotuning in the interpreter would only multiply the (slow) runs
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2})]
    # (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages): the usual bf16 tiles for Hopper and Ampere.
    tiles = [
        (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 4, 4), (128, 128, 32, 4, 4), (64, 128, 64, 4, 4),
    ]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_warps=warps, num_stages=stages)
        for m, n, k, warps, stages in tiles
    ]


_CONFIGS = _matmul_configs()
_ELEMENTWISE_BLOCK = 1024


@triton.jit
def _tile_ids(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Program id -> (row tile, column tile), grouping GROUP_M row tiles so that column tiles are reused from L2."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    group_size = GROUP_M * num_n
    first_m = (pid // group_size) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group_size) % size_m
    pid_n = (pid % group_size) // size_m
    return pid_m, pid_n


@triton.jit
def _dot_tile(a_ptr, b_ptr, rm, rn, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, acc, BLOCK_K: tl.constexpr):
    """acc + A[rm, :] @ B[:, rn] in fp32.

    Out-of-range rows and columns are wrapped onto valid ones instead of masked (fewer registers); callers discard
    them. Pointers advance by one step per iteration rather than being recomputed, for the same reason.
    """
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (rm % M).to(tl.int64)[:, None] * stride_am + rk[None, :] * stride_ak
    b_ptrs = b_ptr + rk[:, None] * stride_bk + (rn % N).to(tl.int64)[None, :] * stride_bn
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs, mask=rk[None, :] < K - k0, other=0.0)
        b = tl.load(b_ptrs, mask=rk[:, None] < K - k0, other=0.0)
        if _DOT_IN_FP32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc


# The autotuners are keyed on the LM head's dimensions only, never on the token count: that changes with every batch
# (only trained tokens are computed) and retuning costs seconds each time.
# Tuning runs every config on the caller's buffers, and a wide tile fills fewer partial rows than a narrow one: the rows
# it leaves must add nothing, so their sums are zeroed (their maxima, logits of the same rows, are harmless).
@triton.autotune(configs=_CONFIGS, key=["N", "K"], reset_to_zero=["part_sum_ptr"])
@triton.jit
def _logits_stats_kernel(h_ptr, w_ptr, logits_ptr, targets_ptr, part_max_ptr, part_sum_ptr, target_logit_ptr,
                         M, N, K, stride_hm, stride_hk, stride_wn, stride_wk, stride_lm,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = _dot_tile(h_ptr, w_ptr, rm, rn, M, N, K, stride_hm, stride_hk, stride_wk, stride_wn, acc, BLOCK_K)
    row_ok = rm < M
    col_ok = rn < N
    out = logits_ptr + rm.to(tl.int64)[:, None] * stride_lm + rn[None, :]
    stored = acc.to(logits_ptr.dtype.element_ty)
    tl.store(out, stored, mask=row_ok[:, None] & col_ok[None, :])
    # The statistics are those of the logits as stored (in bf16: rounded): the gradient kernel reads these back, and
    # exp(logit - lse) sums to 1 only when both come from the same values. From the fp32 accumulator, the rounding
    # (up to 1/16 at logits of 16-32) outweighs 1 - p of confident tokens and flips their gradient's sign.
    acc = stored.to(tl.float32)

    logits = tl.where(col_ok[None, :], acc, float("-inf"))
    tile_max = tl.max(logits, axis=1)
    tile_sum = tl.sum(tl.exp(logits - tile_max[:, None]), axis=1)
    tl.store(part_max_ptr + pid_n * M + rm, tile_max, mask=row_ok)
    tl.store(part_sum_ptr + pid_n * M + rm, tile_sum, mask=row_ok)
    target = tl.load(targets_ptr + rm, mask=row_ok, other=-1)
    target_logit = tl.sum(tl.where(rn[None, :] == target[:, None], acc, 0.0), axis=1)
    in_tile = row_ok & (target >= pid_n * BLOCK_N) & (target < pid_n * BLOCK_N + BLOCK_N)
    tl.store(target_logit_ptr + rm, target_logit, mask=in_tile)


@triton.jit
def _logits_to_grad_kernel(logits_ptr, lse_ptr, targets_ptr, scale_ptr, N, stride_lm, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < N
    ptrs = logits_ptr + row.to(tl.int64) * stride_lm + cols
    logits = tl.load(ptrs, mask=ok, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + row)
    scale = tl.load(scale_ptr + row)
    target = tl.load(targets_ptr + row)
    grad = (tl.exp(logits - lse) - tl.where(cols == target, 1.0, 0.0)) * scale
    tl.store(ptrs, grad.to(logits_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _matmul_kernel(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                   ACCUMULATE: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    pid_m, pid_n = _tile_ids(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = _dot_tile(a_ptr, b_ptr, rm, rn, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, acc, BLOCK_K)
    ptrs = c_ptr + rm.to(tl.int64)[:, None] * stride_cm + rn.to(tl.int64)[None, :] * stride_cn
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if ACCUMULATE:
        acc += tl.load(ptrs, mask=mask, other=0.0)
    tl.store(ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


# grad_hidden [tokens, H] = grad_logits @ weight: tokens are M.
_grad_hidden_matmul = triton.autotune(configs=_CONFIGS, key=["N", "K"])(_matmul_kernel)
# grad_weight [V, H] += grad_logits.T @ hidden: tokens are K; tuning runs must not add into the gradient.
_grad_weight_matmul = triton.autotune(configs=_CONFIGS, key=["M", "N"], restore_value=["c_ptr"])(_matmul_kernel)


def _tiles(meta: dict, M: int, N: int) -> tuple[int]:
    return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)


def _matmul(kernel, a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, accumulate: bool) -> None:
    """out (+)= a @ b for strided 2-D views, accumulating in fp32."""
    (M, K), N = a.shape, b.shape[1]
    kernel[lambda meta: _tiles(meta, M, N)](
        a, b, out, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), out.stride(0), out.stride(1),
        ACCUMULATE=accumulate,
    )


def logits_and_stats(
    hidden: torch.Tensor, weight: torch.Tensor, local_targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """See torch_ops.logits_and_stats."""
    (M, K), N = hidden.shape, weight.shape[0]
    logits = torch.empty((M, N), dtype=hidden.dtype, device=hidden.device)
    # One partial per (column tile, row); sized for the narrowest configured tile, unused tiles stay neutral.
    num_parts = triton.cdiv(N, min(config.kwargs["BLOCK_N"] for config in _logits_stats_kernel.configs))
    part_max = torch.full((num_parts, M), float("-inf"), dtype=torch.float32, device=hidden.device)
    part_sum = torch.zeros((num_parts, M), dtype=torch.float32, device=hidden.device)
    target_logit = torch.zeros(M, dtype=torch.float32, device=hidden.device)
    _logits_stats_kernel[lambda meta: _tiles(meta, M, N)](
        hidden, weight, logits, local_targets, part_max, part_sum, target_logit,
        M, N, K, hidden.stride(0), hidden.stride(1), weight.stride(0), weight.stride(1), logits.stride(0),
    )
    row_max = part_max.amax(dim=0)
    sum_exp = (part_sum * torch.exp(part_max - row_max)).sum(dim=0)
    return logits, row_max, sum_exp, target_logit


def logits_to_grad_(
    logits: torch.Tensor, lse: torch.Tensor, local_targets: torch.Tensor, row_scale: torch.Tensor
) -> torch.Tensor:
    """See torch_ops.logits_to_grad_."""
    M, N = logits.shape
    grid = (M, triton.cdiv(N, _ELEMENTWISE_BLOCK))
    _logits_to_grad_kernel[grid](logits, lse, local_targets, row_scale, N, logits.stride(0), BLOCK=_ELEMENTWISE_BLOCK)
    return logits


def grad_hidden(grad_logits: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> None:
    """See torch_ops.grad_hidden."""
    _matmul(_grad_hidden_matmul, grad_logits, weight, out, accumulate=False)


def accumulate_grad_weight_(grad_weight: torch.Tensor, grad_logits: torch.Tensor, hidden: torch.Tensor) -> None:
    """See torch_ops.accumulate_grad_weight_."""
    _matmul(_grad_weight_matmul, grad_logits.T, hidden, grad_weight, accumulate=True)
