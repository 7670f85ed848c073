"""Run Megatron-Core on CPU with the gloo backend: test and CPU-demo infrastructure only.

Megatron-Core asks for CUDA in many places (`device=torch.cuda.current_device()`, `.cuda()`, CUDA RNG
trackers, `param.type() == 'torch.cuda.FloatTensor'` asserts). `enable()` redirects those to the CPU:

- a `TorchFunctionMode` that rewrites any `device='cuda'` (or a CUDA device index) argument to CPU, makes
  `Tensor.cuda()` a no-op and makes `Tensor.type()` report the CUDA type name Megatron asserts on;
- CPU stand-ins for the `torch.cuda` functions Megatron calls (current_device, synchronize, manual_seed,
  RNG state, streams, events, memory statistics) and for Megatron's own CUDA RNG state helpers.

`launch(fn, world_size, ...)` runs `fn(rank, ...)` in `world_size` spawned processes joined by gloo, with
the backend enabled in each: that is how tests run tensor and pipeline parallelism on a CPU machine.

Nothing in the GPU path imports this module.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

_CPU = torch.device("cpu")


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # Megatron passes `torch.cuda.current_device()` (an int) as the device.
    return isinstance(device, int) and not isinstance(device, bool)


class CudaToCpu(TorchFunctionMode):
    """Rewrites CUDA placements to the CPU for every torch function called while it is active."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            # Megatron's optimizers assert on 'torch.cuda.FloatTensor' and friends.
            return func(*args).replace("torch.", "torch.cuda.", 1)
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs["device"] = _CPU
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], _CPU, *args[2:])
        return func(*args, **kwargs)


class _NoStream:
    """Stands in for torch.cuda.Stream / Event: CPU work is already ordered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> "_NoStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *args, **kwargs: None


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: 0
    cuda.device_count = lambda: 1
    cuda.set_device = lambda device: None
    cuda.synchronize = lambda device=None: None
    cuda.empty_cache = lambda: None
    # torch.manual_seed already seeds the CPU generator (and calls manual_seed_all, which must not recurse).
    cuda.manual_seed = cuda.manual_seed_all = lambda seed: None
    cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    cuda.set_rng_state = lambda state, device="cuda": torch.set_rng_state(state)
    cuda.random.get_rng_state = cuda.get_rng_state
    cuda.random.set_rng_state = cuda.set_rng_state
    cuda.Stream = cuda.Event = _NoStream
    cuda.current_stream = cuda.default_stream = lambda device=None: _NoStream()
    cuda.stream = lambda stream=None: contextlib.nullcontext()
    cuda.memory_allocated = cuda.max_memory_allocated = cuda.memory_reserved = lambda device=None: 0
    cuda.memory_stats = lambda device=None: {}


def _patch_megatron() -> None:
    # Megatron's RNG tracker bypasses torch.cuda.{get,set}_rng_state; point its helpers at the CPU generator.
    from megatron.core.tensor_parallel import random as mcore_random

    mcore_random._get_cuda_rng_state = lambda *args, **kwargs: torch.get_rng_state()
    mcore_random._set_cuda_rng_state = lambda state, *args, **kwargs: torch.set_rng_state(state)


_mode: CudaToCpu | None = None


def enable() -> None:
    """Redirect CUDA to the CPU for the rest of this process (idempotent)."""
    global _mode
    if _mode is not None:
        return
    _patch_torch_cuda()
    _patch_megatron()
    _mode = CudaToCpu()
    _mode.__enter__()


def launch(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Run `fn(rank, *args)` on `world_size` CPU processes joined by a gloo process group, also where CUDA is
    (tests of the CPU backend on a GPU machine)."""
    from swehero.model.launch import spawn_ranks

    spawn_ranks(fn, world_size, args, cuda=False)
