"""Fused linear + cross-entropy: Triton kernel and PyTorch reference against the unfused loss (linear + cross_entropy).

Without a GPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1, set before triton is imported), so the
shapes stay small; they are chosen to be no multiple of the 16-wide interpreter tiles nor of the chunk size.
"""

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
# On a GPU, fp32 tl.dot would use TF32 (as training never does: it runs in bf16); compare fp32 exactly.
os.environ.setdefault("TRITON_F32_DEFAULT", "ieee")

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

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


def _tensor_parallel_worker(rank, world_size, init_file, backend, vocab):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        hidden, weight, targets, loss_mask = make_batch(29, 24, vocab, seed=3)
        normalizer = loss_mask.sum()
        expected = loss_and_grads(unfused_linear_cross_entropy, hidden, weight, targets, loss_mask, normalizer)
        # Uneven shards (vocab is odd), as a padded vocabulary would not be.
        bounds = [0, vocab // 2 + 1, vocab]
        start, end = bounds[rank], bounds[rank + 1]
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
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_vocab_parallel_matches_unsharded(backend, tmp_path):
    mp.spawn(_tensor_parallel_worker, args=(2, tmp_path / "rendezvous", backend, 41), nprocs=2)


def test_rejects_mismatched_shapes_and_unknown_backend():
    hidden, weight, targets, loss_mask = make_batch(9, 8, 11)
    with pytest.raises(ValueError, match="weight"):
        fused_linear_cross_entropy(hidden, weight[:, :4], targets, loss_mask, 9)
    with pytest.raises(ValueError, match="loss_mask"):
        fused_linear_cross_entropy(hidden, weight, targets, loss_mask[:5], 9)
    with pytest.raises(ValueError, match="backend"):
        fused_linear_cross_entropy(hidden, weight, targets, loss_mask, 9, backend="cuda")
