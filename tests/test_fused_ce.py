"""Fused linear + cross-entropy: Triton kernel and PyTorch reference against the unfused loss (linear + cross_entropy).

Without a GPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1, set before triton is imported), so the
shapes stay small; they are chosen to be no multiple of the 16-wide interpreter tiles nor of the chunk size.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
# On a GPU, fp32 tl.dot would use TF32 (as training never does: it runs in bf16); compare fp32 exactly.
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from swehero_kernels import default_chunk_size, fused_linear_cross_entropy, unfused_linear_cross_entropy

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NO_TRITON = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
BACKENDS = ["torch", pytest.param("triton", marks=NO_TRITON)]
TOLERANCE = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def make_batch(tokens, hidden_size, vocab, dtype=torch.float32, seed=0, masked_rows=(1, 2)):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, hidden_size, generator=gen).to(DEVICE, dtype)
    weight = (torch.randn(vocab, hidden_size, generator=gen) / hidden_size**0.5).to(DEVICE, dtype)
    targets = torch.randint(0, vocab, (tokens,), generator=gen)
    loss_mask = (torch.rand(tokens, generator=gen) > 0.3).float()
    loss_mask[list(masked_rows)] = 0.0
    targets[loss_mask == 0] = -100  # what packing writes for untrained positions: must not be read
    return hidden, weight, targets.to(DEVICE), loss_mask.to(DEVICE)


def loss_and_grads(fn, hidden, weight, *args, grad_scale=2.5, **kwargs):
    """Loss and the gradients of `grad_scale * loss`: a scale checks that the backward multiplies by grad_output."""
    hidden = hidden.detach().requires_grad_()
    weight = weight.detach().requires_grad_()
    loss = fn(hidden, weight, *args, **kwargs)
    (loss * grad_scale).backward()
    return loss.detach().float(), hidden.grad.float(), weight.grad.float()


def assert_same(actual, expected, dtype=torch.float32):
    for name, a, e in zip(("loss", "grad_hidden", "grad_weight"), actual, expected, strict=True):
        torch.testing.assert_close(a, e, **TOLERANCE[dtype], msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "tokens,hidden_size,vocab,chunk_size",
    [(37, 24, 53, 16), (16, 16, 16, None), (50, 40, 130, 32), (5, 8, 7, 2)],
)
def test_matches_unfused(backend, tokens, hidden_size, vocab, chunk_size):
    hidden, weight, targets, loss_mask = make_batch(tokens, hidden_size, vocab)
    normalizer = loss_mask.sum() + 7  # the global count: other micro-batches and ranks trained tokens too
    expected = loss_and_grads(unfused_linear_cross_entropy, hidden, weight, targets, loss_mask, normalizer)
    actual = loss_and_grads(
        fused_linear_cross_entropy, hidden, weight, targets, loss_mask, normalizer,
        chunk_size=chunk_size, backend=backend,
    )
    assert_same(actual, expected)
    assert torch.all(actual[1][loss_mask == 0] == 0), "masked rows must get no hidden gradient"


@pytest.mark.slow
@NO_TRITON
def test_bf16_kernel_matches_reference_and_unfused():
    hidden, weight, targets, loss_mask = make_batch(45, 40, 70, dtype=torch.bfloat16, seed=1)
    args = (targets, loss_mask, 64.0)
    expected = loss_and_grads(unfused_linear_cross_entropy, hidden, weight, *args)
    for backend in ("torch", "triton"):
        actual = loss_and_grads(fused_linear_cross_entropy, hidden, weight, *args, chunk_size=16, backend=backend)
        assert_same(actual, expected, torch.bfloat16)


@NO_TRITON
def test_bf16_triton_gradient_is_the_softmax_of_the_stored_logits():
    """Confident tokens (target logits 18-30, p > 0.99): the gradient must be that of the logits as stored in bf16.
    Statistics from the unrounded fp32 logits made the softmax sum to anything but 1, and 1 - p is below the rounding
    of such logits, so target gradients came out with the wrong sign or several times too large."""
    from swehero_kernels import triton_ops

    rows, hidden, vocab = 16, 32, 40
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(vocab, hidden, generator=gen) / hidden**0.5
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    # each row along its target's weight row, so that the target logit is 18-30 and the others about +-2
    boost = torch.linspace(18, 30, rows) / weight[targets].pow(2).sum(1)
    hidden_states = torch.randn(rows, hidden, generator=gen) * 0.3 + boost[:, None] * weight[targets]
    hidden_states, weight = hidden_states.bfloat16().to(DEVICE), weight.bfloat16().to(DEVICE)
    targets = targets.to(DEVICE)
    logits, row_max, sum_exp, _ = triton_ops.logits_and_stats(hidden_states, weight, targets)
    expected = torch.softmax(logits.float(), dim=1) - F.one_hot(targets, vocab)  # from the same stored logits
    grad = triton_ops.logits_to_grad_(
        logits.clone(), row_max + torch.log(sum_exp), targets, torch.ones(rows, device=DEVICE)
    ).float()
    target_grad, expected_target_grad = grad.gather(1, targets[:, None]), expected.gather(1, targets[:, None])
    assert expected_target_grad.abs().max() < 0.01, "the rows must be confident for this test to mean anything"
    torch.testing.assert_close(grad.sum(1), torch.zeros(rows, device=DEVICE), atol=1e-3, rtol=0)
    torch.testing.assert_close(target_grad, expected_target_grad, atol=2e-4, rtol=0.02)


@NO_TRITON
def test_triton_first_call_of_a_shape_is_not_spoiled_by_autotuning(monkeypatch):
    """Tuning runs every config on the caller's partial-statistics buffers; when a wide tile wins, the rows only a
    narrow tile wrote must not reach the statistics of the call that tuned (the first one of each LM-head shape)."""
    import triton
    from swehero_kernels import triton_ops

    kernel = triton_ops._logits_stats_kernel
    narrow = min(kernel.configs, key=lambda config: config.kwargs["BLOCK_N"])
    wide = triton.Config({**narrow.kwargs, "BLOCK_N": 2 * narrow.kwargs["BLOCK_N"]}, num_warps=narrow.num_warps,
                         num_stages=narrow.num_stages)
    timings = iter([2.0, 1.0])  # the narrow tile is timed first, the wide one wins

    def wide_tile_wins(kernel_call, quantiles):
        kernel_call()
        return [next(timings)] * len(quantiles)

    monkeypatch.setattr(kernel, "configs", [narrow, wide])
    monkeypatch.setattr(kernel, "cache", {})
    monkeypatch.setattr(kernel, "_do_bench", wide_tile_wins)
    hidden, weight, targets, loss_mask = make_batch(20, 16, 4 * wide.kwargs["BLOCK_N"])
    args = (targets, loss_mask, 20.0)
    expected = loss_and_grads(unfused_linear_cross_entropy, hidden, weight, *args)
    first = loss_and_grads(fused_linear_cross_entropy, hidden, weight, *args, backend="triton")
    assert kernel.cache and all(config is wide for config in kernel.cache.values()), "the wide tile must have won"
    second = loss_and_grads(fused_linear_cross_entropy, hidden, weight, *args, backend="triton")
    assert_same(first, expected)
    assert_same(second, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fully_masked_batch_gives_zero_loss_and_gradients(backend):
    hidden, weight, targets, _ = make_batch(19, 16, 21)
    loss_mask = torch.zeros(19, device=DEVICE)
    targets = torch.full_like(targets, -100)
    for normalizer in (0, 128.0):  # a batch with no trained tokens at all, and a micro-batch without any
        loss, grad_hidden, grad_weight = loss_and_grads(
            fused_linear_cross_entropy, hidden, weight, targets, loss_mask, normalizer, chunk_size=8, backend=backend
        )
        assert loss.item() == 0.0
        assert torch.all(grad_hidden == 0) and torch.all(grad_weight == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_grad_and_with_frozen_weight(backend):
    hidden, weight, targets, loss_mask = make_batch(21, 16, 33)
    expected = loss_and_grads(unfused_linear_cross_entropy, hidden, weight, targets, loss_mask, 30)
    with torch.no_grad():  # a boolean mask and int32 targets are accepted as well
        loss = fused_linear_cross_entropy(
            hidden, weight, targets.int(), loss_mask.bool(), 30, chunk_size=8, backend=backend
        )
    torch.testing.assert_close(loss, expected[0])
    hidden = hidden.clone().requires_grad_()
    fused_linear_cross_entropy(hidden, weight, targets, loss_mask, 30, chunk_size=8, backend=backend).backward()
    torch.testing.assert_close(hidden.grad * 2.5, expected[1])
    assert weight.grad is None


def test_default_chunk_size_keeps_chunk_logits_near_hidden_size():
    assert default_chunk_size(32768, 5120, 152064) == 4096
    assert default_chunk_size(100, 64, 1000) == 256
    assert default_chunk_size(10**6, 8192, 32000) == 8192


def _tensor_parallel_worker(rank, world_size, init_file, check, *args):
    torch.set_num_threads(1)
    # a collective that one rank skips fails the test after the timeout instead of hanging it
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))
    try:
        check(rank, *args)
    finally:
        dist.destroy_process_group()


def _run_on_two_ranks(check, tmp_path, *args):
    mp.spawn(_tensor_parallel_worker, args=(2, tmp_path / "rendezvous", check, *args), nprocs=2)


def _uneven_shard(vocab, rank):
    """Rank's (start, end) of an odd vocabulary split in two, as a padded vocabulary would not be."""
    bounds = [0, vocab // 2 + 1, vocab]
    return bounds[rank], bounds[rank + 1]


def _sharded_matches_unsharded(rank, backend, vocab):
    hidden, weight, targets, loss_mask = make_batch(29, 24, vocab, seed=3)
    normalizer = loss_mask.sum()
    expected = loss_and_grads(unfused_linear_cross_entropy, hidden, weight, targets, loss_mask, normalizer)
    start, end = _uneven_shard(vocab, rank)
    loss, grad_hidden, grad_weight = loss_and_grads(
        fused_linear_cross_entropy, hidden, weight[start:end], targets, loss_mask, normalizer,
        vocab_start=start, tp_group=dist.group.WORLD, chunk_size=8, backend=backend,
    )
    assert_same((loss, grad_hidden, grad_weight), (expected[0], expected[1], expected[2][start:end]))
    nothing_trained = torch.zeros_like(loss_mask)
    loss, grad_hidden, grad_weight = loss_and_grads(
        fused_linear_cross_entropy, hidden, weight[start:end], targets, nothing_trained, 0,
        vocab_start=start, tp_group=dist.group.WORLD, chunk_size=8, backend=backend,
    )
    assert loss.item() == 0.0 and not grad_hidden.any() and not grad_weight.any()


def _default_chunks_agree_on_uneven_shards(rank):
    # 1024 tokens x 64: sized from its own shard, the 256-row shard would take chunks of 512, the 255-row one of 1024
    hidden, weight, targets, loss_mask = make_batch(1024, 64, 511, seed=5)
    normalizer = loss_mask.sum()
    expected = loss_and_grads(unfused_linear_cross_entropy, hidden, weight, targets, loss_mask, normalizer)
    start, end = _uneven_shard(511, rank)
    actual = loss_and_grads(
        fused_linear_cross_entropy, hidden, weight[start:end], targets, loss_mask, normalizer,
        vocab_start=start, tp_group=dist.group.WORLD, backend="torch",
    )
    assert_same(actual, (expected[0], expected[1], expected[2][start:end]))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_vocab_parallel_matches_unsharded(backend, tmp_path):
    _run_on_two_ranks(_sharded_matches_unsharded, tmp_path, backend, 41)


@pytest.mark.slow
def test_vocab_parallel_default_chunk_size_is_the_same_on_uneven_shards(tmp_path):
    assert default_chunk_size(1024, 64, 256) != default_chunk_size(1024, 64, 255)
    _run_on_two_ranks(_default_chunks_agree_on_uneven_shards, tmp_path)


def test_rejects_mismatched_shapes_and_unknown_backend():
    hidden, weight, targets, loss_mask = make_batch(9, 8, 11)
    with pytest.raises(ValueError, match="weight"):
        fused_linear_cross_entropy(hidden, weight[:, :4], targets, loss_mask, 9)
    with pytest.raises(ValueError, match="loss_mask"):
        fused_linear_cross_entropy(hidden, weight, targets, loss_mask[:5], 9)
    with pytest.raises(ValueError, match="backend"):
        fused_linear_cross_entropy(hidden, weight, targets, loss_mask, 9, backend="cuda")


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_run_stops_when_swehero_kernels_is_another_checkouts(tmp_path):
    """The package is `kernels/` installed under another name, so PYTHONPATH=$PWD cannot put this checkout's first:
    a run that would test another checkout's kernels must stop and say so."""
    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "kernels", tmp_path / "swehero_kernels")  # the other checkout's
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q", "tests/test_gpu_check.py"],
        cwd=repo, env={**os.environ, "PYTHONPATH": f"{tmp_path}:{repo}"}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    other, ours = (tmp_path / "swehero_kernels").resolve(), repo / "kernels"
    assert f"swehero_kernels is {other}, not this checkout's {ours}" in done.stderr
