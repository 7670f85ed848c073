"""Run a function on every rank: under `torchrun` on GPUs, or as spawned gloo processes on a CPU machine."""

from __future__ import annotations

import os
import tempfile
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
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    with tempfile.TemporaryDirectory(prefix="swehero-nccl-") as folder:
        # torchrun's rendezvous for several ranks; one rank (`swehero convert`, a recipe's stage) meets no other:
        # through a file, not a port another job on the node may hold (or a MASTER_ADDR exported without its port)
        init = "env://" if world_size > 1 else f"file://{folder}/rendezvous"
        torch.distributed.init_process_group("nccl", init_method=init, rank=int(os.environ.get("RANK", "0")),
                                             world_size=world_size)
        try:
            fn(torch.distributed.get_rank(), *args)
        finally:
            from megatron.core import parallel_state

            # the next stage of a recipe run in this process initializes its own (Megatron asserts none is left)
            parallel_state.destroy_model_parallel()
            torch.distributed.destroy_process_group()
