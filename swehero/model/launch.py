"""Run a function on every rank: the ranks `torchrun` started, else processes spawned here, one per GPU (NCCL) or,
without CUDA, on the CPU (gloo and `cpu_backend`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Callable, Iterator

import torch
import torch.multiprocessing as mp


def run_ranks(fn: Callable[..., Any], world_size: int, *args: Any) -> None:
    """Call `fn(rank, *args)` on `world_size` ranks; a failure on any rank raises here.

    Under `torchrun` this process is one of the ranks. Otherwise (`swehero convert` by hand, a recipe's `convert`
    stage) the ranks are spawned here, one per GPU of this node; one GPU rank runs in this process. `fn` must be
    importable (a module-level function).
    """
    cuda = torch.cuda.is_available()
    if cuda and "LOCAL_RANK" in os.environ:  # torchrun's
        launched = int(os.environ["WORLD_SIZE"])
        if launched != world_size:
            raise SystemExit(f"this needs {world_size} GPU ranks, torchrun started {launched}: "
                             f"start it with --nproc-per-node {world_size} (or without torchrun)")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        _in_group(fn, int(os.environ["RANK"]), world_size, "env://", "nccl", args)
        return
    if cuda and torch.cuda.device_count() < world_size:
        raise SystemExit(f"this needs {world_size} GPU ranks and this node has {torch.cuda.device_count()} GPUs")
    if cuda and world_size == 1:  # in this process: nothing to spawn
        torch.cuda.set_device(0)
        with _rendezvous() as init:
            _in_group(fn, 0, 1, init, "nccl", args)
        return
    spawn_ranks(fn, world_size, args, cuda)


def spawn_ranks(fn: Callable[..., Any], world_size: int, args: tuple, cuda: bool) -> None:
    """Run `fn(rank, *args)` in `world_size` processes spawned here: one per GPU (NCCL), or on the CPU (gloo, with
    `cpu_backend` enabled in each)."""
    with _rendezvous() as init:
        mp.start_processes(_spawned, args=(world_size, init, cuda, fn, args), nprocs=world_size, join=True,
                           start_method="spawn")


@contextlib.contextmanager
def _rendezvous() -> Iterator[str]:
    # The ranks meet through a file, not a TCP port: a port found free here could be taken by another process
    # (another job on the node) before rank 0 listens on it, and a MASTER_ADDR exported without its port (as
    # Slurm scripts do) is no rendezvous.
    with tempfile.TemporaryDirectory(prefix="swehero-ranks-") as folder:
        yield f"file://{folder}/rendezvous"


def _spawned(rank: int, world_size: int, rendezvous: str, cuda: bool, fn: Callable[..., Any], args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    if cuda:
        torch.cuda.set_device(rank)
    else:
        from swehero.model import cpu_backend

        torch.set_num_threads(1)
        cpu_backend.enable()
    _in_group(fn, rank, world_size, rendezvous, "nccl" if cuda else "gloo", args)


def _in_group(fn: Callable[..., Any], rank: int, world_size: int, init: str, backend: str, args: tuple) -> None:
    torch.distributed.init_process_group(backend, init_method=init, rank=rank, world_size=world_size)
    try:
        fn(rank, *args)
    finally:
        from megatron.core import parallel_state

        # the next stage of a recipe run in this process initializes its own (Megatron asserts none is left)
        parallel_state.destroy_model_parallel()
        torch.distributed.destroy_process_group()
