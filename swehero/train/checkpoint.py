"""Training checkpoints: Megatron distributed checkpoints (loadable at any TP/PP layout) under
`checkpoints/step-N`, written to a hidden `.step-N.partial` folder and renamed once every rank has finished,
so a folder named `step-N` is always complete. The last `keep_last` are kept.

A checkpoint holds the model (at the top level, with `hf_config.json` beside it: the same layout as
`swehero convert hf-to-mcore` writes, so `swehero convert mcore-to-hf` exports any of them), the modules' extra
state (Transformer Engine's FP8 scaling state), the distributed optimizer's state, the LR scheduler, the step, the
RNG state of every model-parallel position and the layout (`layout.json`): a resumed run continues exactly where the
interrupted one stopped.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import torch
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

from swehero.model.checkpoint import load_weights, model_sharded_state_dict
from swehero.model.folder import CHECKPOINT_CONFIG
from swehero.train.config import LayoutError
from swehero.train.folders import checkpoints
from swehero.train.model_setup import check_schedule, model_chunks

# Each rank saves and loads its own optimizer shard, with no gathering; the optimizer state then resumes at the
# same layout (data-parallel size may change), while the weights load at any layout.
OPTIMIZER_SHARDING = {"distrib_optim_sharding_type": "dp_reshardable"}

# A background save writes with Megatron's own writer, whose requests the AsyncCallsQueue below runs: megatron-core
# 0.19's default (the image's) is nvidia-resiliency-ext's, which the image does not install (the first checkpoint
# of every GPU run failed on the import); 0.16 has only its own and no such argument.
_OWN_WRITER = {"async_strategy": "mcore"} if "async_strategy" in inspect.signature(dist_checkpointing.save).parameters \
    else {}


def _model_state(model: list) -> dict:
    """The weights under the same keys `swehero convert` uses (any layer spec and chunking reads them back), and
    every module's `_extra_state`: Transformer Engine keeps its FP8 scaling state (scales, amax history) there,
    outside the parameters, so without it a resumed FP8 run would restart its scaling. Megatron stores each as a
    ShardedObject replicated over tensor- and data-parallel ranks (its convention, as in Megatron-LM)."""
    return model_sharded_state_dict(model_chunks(model), extra_state=True)


LAYOUT = "layout.json"
MODEL_PARALLEL = ("tensor", "pipeline", "context")
"""What the optimizer state cannot be resharded over (the data-parallel size can change)."""


def _layout() -> dict:
    return {"tensor": parallel_state.get_tensor_model_parallel_world_size(),
            "pipeline": parallel_state.get_pipeline_model_parallel_world_size(),
            "context": parallel_state.get_context_parallel_world_size(),
            "data": parallel_state.get_data_parallel_world_size()}


def _check_layout(path: Path) -> None:
    """A one-line error where Megatron's load would fail on a key of the optimizer state (checkpoints written before
    the layout was recorded are not checked)."""
    if not (path / LAYOUT).exists():
        return
    saved, now = (_model_parallel(layout) for layout in (json.loads((path / LAYOUT).read_text()), _layout()))
    if saved != now:
        raise LayoutError(f"{path} was saved at {saved}, this run is {now}: the optimizer state resumes only at the "
                          "layout it was saved at (the data-parallel size may change); to change it, start a new "
                          f"stage from this one (init: {path.parent.parent})")


def _model_parallel(layout: dict) -> str:
    """'tensor 2, pipeline 1, context 1'."""
    return ", ".join(f"{k} {layout[k]}" for k in MODEL_PARALLEL)


def _rng_file(path: Path) -> Path:
    """The RNG state of this rank's model-parallel position. Its data- and context-parallel ranks seed alike and
    draw alike (Megatron seeds by tensor rank only), so they hold the same state and one file serves them at any
    data-parallel size, as Megatron-LM stores it; dropout then resumes as the uninterrupted run would have."""
    return path / (f"rng-tp{parallel_state.get_tensor_model_parallel_rank()}-"
                   f"pp{parallel_state.get_pipeline_model_parallel_rank()}.pt")


def _saved_rng_file(path: Path) -> Path:
    """This rank's RNG file in a checkpoint: by model-parallel position, or by rank in those written before."""
    by_position = _rng_file(path)
    return by_position if by_position.exists() else path / f"rng-rank{torch.distributed.get_rank()}.pt"


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


class Checkpointer:
    def __init__(self, folder: Path, hf_config: dict, keep_last: int, async_save: bool) -> None:
        self.folder = Path(folder)
        self.hf_config = hf_config
        self.keep_last = keep_last
        self.queue = AsyncCallsQueue() if async_save else None

    def save(self, step: int, model: list, optimizer, scheduler, background: bool = True) -> None:
        """Save `step`: in the background with `async_save` unless not `background` (the process ends next)."""
        background = background and self.queue is not None
        partial = self.folder / f".step-{step}.partial"
        if torch.distributed.get_rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        torch.distributed.barrier()
        rng = _rng_state()  # now: an async save finishes steps later
        state = _model_state(model)
        state["optimizer"] = optimizer.sharded_state_dict(state, metadata=OPTIMIZER_SHARDING)
        state["scheduler"] = scheduler.state_dict()
        state["step"] = step
        # Into the empty folder: Megatron takes any file already there for the leftovers of a crashed save and
        # says so ("Overwriting old incomplete / corrupted checkpoint"). Our own files go in when it is done.
        request = dist_checkpointing.save(state, str(partial), async_sharded_save=background,
                                          **(_OWN_WRITER if background else {}))
        if not background:
            self._publish(partial, step, rng)
        else:
            request.add_finalize_fn(lambda: self._publish(partial, step, rng))
            self.queue.schedule_async_request(request)

    def _publish(self, partial: Path, step: int, rng: dict) -> None:
        if parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0:
            torch.save(rng, _rng_file(partial))
        if torch.distributed.get_rank() == 0:
            (partial / CHECKPOINT_CONFIG).write_text(json.dumps(self.hf_config, indent=2))
            (partial / LAYOUT).write_text(json.dumps(_layout()))
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

    def has_checkpoint(self) -> bool:
        return self.newest() is not None

    def newest(self) -> Path | None:
        found = checkpoints(self.folder)
        return found[-1][1] if found else None

    @torch.no_grad()
    def load_latest(self, model: list, optimizer, scheduler) -> int:
        """Restore the newest complete checkpoint; returns its step (0 when there is none)."""
        found = checkpoints(self.folder)
        if not found:
            return 0
        step, path = found[-1]
        _check_layout(path)
        _materialise_optimizer_state(optimizer)
        template = _model_state(model)
        weights = dict(template)
        template["optimizer"] = optimizer.sharded_state_dict(template, is_loading=True, metadata=OPTIMIZER_SHARDING)
        loaded = dist_checkpointing.load(template, str(path))
        check_schedule(scheduler, loaded["scheduler"], path)
        load_weights(model_chunks(model), loaded, weights, path)
        optimizer.load_state_dict(loaded["optimizer"])
        _restore_adam_steps(optimizer)
        scheduler.load_state_dict(loaded["scheduler"])
        rng = torch.load(_saved_rng_file(path), weights_only=False)
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        assert loaded["step"] == step
        return step


def inner_optimizers(optimizer) -> list:
    """The Megatron optimizers inside `optimizer` (a ChainedOptimizer holds several, e.g. one per dtype)."""
    return getattr(optimizer, "chained_optimizers", [optimizer])


def _materialise_optimizer_state(optimizer) -> None:
    """torch's Adam creates its state at the first step; a checkpoint can only be loaded into existing state.
    Megatron's distributed optimizer fills it with placeholders (one zero-gradient step) that the load then
    overwrites, parameters included; its other optimizers do so themselves when asked for a loading template."""
    for inner in inner_optimizers(optimizer):
        if not inner.optimizer.state and hasattr(inner, "_init_optimizer_states_with_dummy_values"):
            inner._init_optimizer_states_with_dummy_values()


def _restore_adam_steps(optimizer) -> None:
    """With torch's AdamW (no TE or Apex: the CPU runs), megatron-core 0.16's load leaves every parameter's
    `step` at the placeholder's 1, in one tensor shared by all parameters that AdamW then advances once per
    parameter per step: the bias correction of a resumed run would be wrong from its first update. The
    checkpoint's count is in the loaded param groups. TE's FusedAdam keeps no per-parameter step (a no-op)."""
    for inner in inner_optimizers(optimizer):
        for group in inner.optimizer.param_groups:
            for param in group["params"]:
                state = inner.optimizer.state.get(param)
                if state and "step" in state and "step" in group:
                    state["step"] = torch.tensor(float(group["step"]))


def is_reporting_rank() -> bool:
    """The rank that logs: first tensor/data/context rank of the last pipeline stage (it has the loss)."""
    return (parallel_state.is_pipeline_last_stage(ignore_virtual=True)
            and parallel_state.get_tensor_model_parallel_rank() == 0
            and parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0)
