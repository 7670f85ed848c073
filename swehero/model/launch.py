"""Run a function on every rank: under `torchrun` on GPUs, or as spawned gloo processes on a CPU machine."""

from __future__ import annotations

import os
from typing import Any, Callable

import torch


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Call `fn(rank, *args)` on `world_size` ranks.

    With CUDA, this process must be one of `world_size` started by `torchrun` (or the only one); without CUDA the
    ranks are spawned here and Megatron is redirected to the CPU (`cpu_backend`).
    """
    if not torch.cuda.is_available():
        from swehero.model import cpu_backend

        cpu_backend.launch(fn, world_size, *args)
        return
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world_size:
        raise SystemExit(f"this needs {world_size} GPU ranks: start it with torchrun --nproc-per-node {world_size}")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.setdefault("RANK", "0")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl", world_size=world_size)
    try:
        fn(torch.distributed.get_rank(), *args)
    finally:
        torch.distributed.destroy_process_group()
