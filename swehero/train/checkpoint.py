"""Training checkpoints: Megatron distributed checkpoints (loadable at any TP/PP layout) under
`checkpoints/step-N`, written to a hidden `.step-N.partial` folder and renamed once every rank has finished,
so a folder named `step-N` is always complete. The last `keep_last` are kept.

A checkpoint holds the model, the distributed optimizer's state, the LR scheduler, the step and every rank's
RNG state: a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

_STEP = re.compile(r"^step-(\d+)$")


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("step-*") if (m := _STEP.match(p.name))]
    return sorted(found)


def _unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    return getattr(chunk, "module", chunk)  # DistributedDataParallel -> the GPTModel it wraps


def _model_state(model: list) -> dict:
    return {f"model{i}": _unwrap(chunk).sharded_state_dict() for i, chunk in enumerate(model)}


def _rank_file(path: Path) -> Path:
    return path / f"rng-rank{torch.distributed.get_rank()}.pt"


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


class Checkpointer:
    def __init__(self, folder: Path, keep_last: int, async_save: bool) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last
        self.queue = AsyncCallsQueue() if async_save else None

    def save(self, step: int, model: list, optimizer, scheduler) -> None:
        partial = self.folder / f".step-{step}.partial"
        if torch.distributed.get_rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        torch.distributed.barrier()
        torch.save(_rng_state(), _rank_file(partial))
        state = _model_state(model)
        state["optimizer"] = optimizer.sharded_state_dict(state)
        state["scheduler"] = scheduler.state_dict()
        state["step"] = step
        request = dist_checkpointing.save(state, str(partial), async_sharded_save=self.queue is not None)
        if self.queue is None:
            self._publish(partial, step)
        else:
            request.add_finalize_fn(lambda: self._publish(partial, step))
            self.queue.schedule_async_request(request)

    def _publish(self, partial: Path, step: int) -> None:
        torch.distributed.barrier()
        if torch.distributed.get_rank() == 0:
            partial.rename(self.folder / f"step-{step}")
            for _, old in checkpoints(self.folder)[: -self.keep_last]:
                shutil.rmtree(old)
        torch.distributed.barrier()

    def poll(self, blocking: bool = False) -> None:
        """Finish background saves that are done (all of them when blocking)."""
        if self.queue is not None:
            self.queue.maybe_finalize_async_calls(blocking=blocking)

    def load_latest(self, model: list, optimizer, scheduler) -> int:
        """Restore the newest complete checkpoint; returns its step (0 when there is none)."""
        found = checkpoints(self.folder)
        if not found:
            return 0
        step, path = found[-1]
        template = _model_state(model)
        template["optimizer"] = optimizer.sharded_state_dict(template, is_loading=True)
        loaded = dist_checkpointing.load(template, str(path))
        for i, chunk in enumerate(model):
            _unwrap(chunk).load_state_dict(loaded[f"model{i}"])
        optimizer.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict(loaded["scheduler"])
        rng = torch.load(_rank_file(path), weights_only=False)
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        assert loaded["step"] == step
        return step


def load_weights(model: list, checkpoint: Path) -> None:
    """Only the model weights of a checkpoint (stage 2 starting from stage 1): fresh optimizer and schedule."""
    template = _model_state(model)
    loaded = dist_checkpointing.load(template, str(checkpoint))
    for i, chunk in enumerate(model):
        _unwrap(chunk).load_state_dict(loaded[f"model{i}"])


def is_reporting_rank() -> bool:
    """The rank that logs: first tensor/data/context rank of the last pipeline stage (it has the loss)."""
    return (parallel_state.is_pipeline_last_stage(ignore_virtual=True)
            and parallel_state.get_tensor_model_parallel_rank() == 0
            and parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0)
