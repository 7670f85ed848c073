"""Megatron-Core set-up for training, behind named helpers: process groups, the model chunks wrapped in
Megatron's DDP, the distributed AdamW optimizer and LR schedule, initial weights, export."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from swehero.errors import InputError
from swehero.model.folder import is_hf_folder, side_files_from, write_folder_files
from swehero.train.config import Settings, check_layout
from swehero.train.folders import init_weights, model_config
from swehero.train.memory import FULL_RECOMPUTE_LAYERS


@dataclass(frozen=True)
class Env:
    device: torch.device
    cuda: bool
    world_size: int
    dp_rank: int
    dp_size: int


def initialize(s: Settings, seed: int) -> Env:
    """Process groups for the recipe's layout (NCCL on GPUs; gloo plus the CPU backend on CPU), over the default
    group a launcher already made if there is one (`cpu_backend.launch`, as the gradient tests run)."""
    from megatron.core import parallel_state

    from swehero.model.provider import init_parallel

    cuda = s.device == "cuda" or (s.device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        from swehero.model import cpu_backend

        cpu_backend.enable()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    init_parallel(s.parallel, seed)
    return Env(
        device=torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu"),
        cuda=cuda,
        world_size=torch.distributed.get_world_size(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        dp_size=parallel_state.get_data_parallel_world_size(),
    )


def model_overrides(s: Settings, cuda: bool) -> dict:
    """TransformerConfig fields the training settings decide."""
    overrides = {"calculate_per_token_loss": True}
    if s.recompute == "full":
        overrides.update(recompute_granularity="full", recompute_method="uniform",
                         recompute_num_layers=FULL_RECOMPUTE_LAYERS)
    elif s.recompute == "selective" and cuda:
        overrides.update(recompute_granularity="selective")
    if s.parallel.context > 1 and s.parallel.pipeline > 1:
        # Context parallelism pads each document (`context.py`), so rows differ in length: pipeline transfers
        # send their shape first. megatron-core 0.19 refuses variable lengths beside its default MoE token
        # dispatcher (allgather) even in a model without experts, where the dispatcher is never built.
        overrides.update(variable_seq_lengths=True, moe_token_dispatcher_type="alltoall")
    if s.parallel.virtual_pipeline > 1:
        # Megatron-LM's defaults for the interleaved schedule: each transfer posted on its own, overlapped with
        # compute. Batched, a rank's sends to the same peer in both directions (pipeline 2: next = previous) can
        # be matched with the wrong receives (gloo does), swapping activations and gradients.
        overrides.update(overlap_p2p_comm=True, batch_p2p_comm=False)
    if s.precision == "fp8":
        overrides.update(fp8="hybrid", fp8_recipe="tensorwise")
    return overrides


def build(s: Settings, init: str, env: Env) -> tuple[list, dict]:
    """This rank's model chunks (its pipeline stage, or its virtual pipeline stages, and tensor shard), each in
    Megatron's DDP."""
    from swehero.model.provider import build_model_chunks
    from swehero.train import fused_loss

    hf_config = model_config(s, init)
    check_layout(s, hf_config, env.world_size)
    dtype = torch.float32 if s.precision == "fp32" else torch.bfloat16
    spec = layer_spec(s, env.cuda and has_transformer_engine())
    chunks = build_model_chunks(hf_config, s.parallel, spec, dtype, **model_overrides(s, env.cuda))
    for chunk in chunks:
        if s.fused_ce:
            fused_loss.install(chunk)
        if env.cuda:
            chunk.cuda()
    return wrap(chunks, s, env.cuda), hf_config


def wrap(chunks: list, s: Settings, cuda: bool) -> list:
    """Each model chunk in Megatron's DDP (in bf16 or fp16 training, around Megatron's `Float16Module`), and the
    gradient finalisation (reduction over data- and context-parallel ranks, division by the global batch's trained
    tokens) the schedules call after backward. `model_chunks` reaches the chunks inside."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads

    chunks = [_in_training_precision(chunk) for chunk in chunks]
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        use_distributed_optimizer=s.distributed_optimizer,
        overlap_grad_reduce=cuda,
        average_in_collective=False,  # per-token loss: gradients are divided by the global token count instead
        check_for_nan_in_grad=True,  # as Megatron-LM: a NaN or infinite local gradient stops the step, unreduced
    )
    # As Megatron-LM: later chunks finish their backward before the first, so each is reduced in one piece
    # while the earlier ones still compute; only the first chunk's, which ends the step, needs buckets.
    model = [DistributedDataParallel(config=chunk.config, ddp_config=ddp_config, module=chunk, disable_bucketing=i > 0)
             for i, chunk in enumerate(chunks)]
    config = chunks[0].config  # shared by the chunks
    config.finalize_model_grads_func = finalize_model_grads
    if cuda:
        no_sync = [chunk.no_sync for chunk in model]
        config.no_sync_func = no_sync if len(no_sync) > 1 else no_sync[0]
    return model


def _in_training_precision(chunk: torch.nn.Module) -> torch.nn.Module:
    """As Megatron-LM's `get_model`: in bf16 or fp16 training (fp8 included) every parameter in that dtype, and
    the last stage's output back in fp32. Megatron's local layers create their norm weights in fp32 whatever
    `params_dtype` says; a model half bf16, half fp32 ties the distributed optimizer's state to the wrong
    parameters, and its checkpoint save fails."""
    from megatron.core.transformer.module import Float16Module

    config = chunk.config
    return Float16Module(config, chunk) if config.bf16 or config.fp16 else chunk


def model_chunks(model: list) -> list[torch.nn.Module]:
    """The GPTModels inside `wrap`'s chunks: what holds the weights under their checkpoint and export names."""
    from megatron.core.distributed import DistributedDataParallel
    from megatron.core.transformer.module import Float16Module
    from megatron.core.utils import unwrap_model

    return unwrap_model(model, (DistributedDataParallel, Float16Module))


def layer_spec(s: Settings, has_te: bool) -> str:
    """`te` where Transformer Engine is installed (the GPU image), else Megatron's `local` layers, which cannot
    run some of the parallel layouts."""
    if has_te:
        return "te"
    if s.precision == "fp8":
        raise InputError("precision fp8 needs Transformer Engine's layers (the GPU image): Megatron's local layers "
                         "would silently train in bf16")
    if s.parallel.sequence_parallel:
        raise InputError("sequence_parallel needs Transformer Engine's layers (Megatron's local norms refuse it)")
    if s.parallel.context > 1:
        raise InputError(f"context {s.parallel.context} needs Transformer Engine's attention (GPU image): it "
                         "exchanges keys and values between the context-parallel ranks; Megatron's local "
                         "attention only runs with context 1")
    return "local"


def has_transformer_engine() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformer_engine") is not None


def optimizer_and_schedule(s: Settings, model: list, total_steps: int):
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    o = s.optimizer
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam", lr=o.lr, min_lr=o.min_lr, weight_decay=o.weight_decay, adam_beta1=o.adam_beta1,
            adam_beta2=o.adam_beta2, adam_eps=o.adam_eps, clip_grad=o.clip_grad,
            bf16=s.precision in ("bf16", "fp8"), params_dtype=torch.bfloat16 if s.precision != "fp32" else torch.float32,
            use_distributed_optimizer=s.distributed_optimizer,
        ),
        model,
    )
    warmup = int(o.warmup_fraction * total_steps)
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=o.lr, min_lr=o.min_lr if o.decay != "constant" else o.lr,
        lr_warmup_steps=warmup, lr_decay_steps=max(total_steps, warmup + 1),
        lr_decay_style=o.decay if o.decay != "constant" else "constant",
        start_wd=o.weight_decay, end_wd=o.weight_decay, wd_incr_steps=total_steps, wd_incr_style="constant",
        # As Megatron-LM: a resumed run keeps the schedule it was saved with, and a setting that changes it is an
        # error (`check_schedule`) rather than silently overridden by the checkpoint's.
        use_checkpoint_opt_param_scheduler=False, override_opt_param_scheduler=False,
    )
    return optimizer, scheduler


_STEPS = "the run's steps (steps, or epochs of the data at global_batch_size)"
SCHEDULE_SETTINGS = {
    "max_lr": "optimizer.lr",
    "min_lr": "optimizer.min_lr (optimizer.lr with decay constant)",
    "lr_warmup_steps": f"optimizer.warmup_fraction of {_STEPS}",
    "lr_decay_steps": _STEPS,
    "lr_decay_style": "optimizer.decay",
    "start_wd": "optimizer.weight_decay",
    "wd_incr_steps": _STEPS,
}
"""The settings each value of the LR schedule's checkpointed state comes from (`optimizer_and_schedule`)."""


def check_schedule(scheduler, saved: dict, source: Path) -> None:
    """A one-line error naming the setting where this run's schedule differs from the one checkpoint `source` saved
    (Megatron's own check is a bare assert in its terms)."""
    for field, setting in SCHEDULE_SETTINGS.items():
        now = getattr(scheduler, field)
        if field in saved and saved[field] != now:
            raise InputError(f"{source}: its LR schedule has {field} {saved[field]}, this run's is {now} (from "
                             f"{setting}): a run resumes only with the schedule it was saved with; set it back, or "
                             f"start a new stage from this one (init: {source.parent.parent})")


def load_initial_weights(model: list, init: str, hf_config: dict) -> None:
    """Stage 1 starts from a Hugging Face checkpoint; stage 2 from the final checkpoint of stage 1 (weights only:
    fresh optimizer and schedule). Called before the optimizer is built, so its fp32 copies start from these."""
    from swehero.model.checkpoint import load_checkpoint
    from swehero.model.hf_weights import load_hf_weights

    chunks = model_chunks(model)
    with torch.no_grad():
        if is_hf_folder(init):
            load_hf_weights(chunks, init, hf_config)
        else:
            load_checkpoint(chunks, init_weights(init))


def export_hf(model: list, hf_config: dict, init: str, out: Path) -> None:
    """Safetensors shards + index, with the config (incl. any rope_scaling override) and the tokenizer files of
    the Hugging Face folder the run started from, so `out` serves as is."""
    from swehero.model.hf_weights import save_hf_weights

    like = side_files_from(init)
    out.mkdir(parents=True, exist_ok=True)
    save_hf_weights(model_chunks(model), hf_config, out)
    if torch.distributed.get_rank() == 0:
        write_folder_files(out, hf_config, like)
    torch.distributed.barrier()


def shutdown() -> None:
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    torch.distributed.destroy_process_group()
