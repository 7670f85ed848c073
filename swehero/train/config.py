"""Training settings (the `train` stage's section of a recipe) and the checks that reject a bad parallel
layout before anything is launched.

Defaults are the paper's SFT settings where it states them (global batch 32, cosine 1e-5 -> 1e-8, 10% warmup,
3 epochs, loss on assistant tokens only); where it does not (AdamW betas, weight decay, clipping), they are
Megatron-LM's usual SFT values, marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from swehero.model.parallel import ParallelConfig, model_split_problems
from swehero.model.qwen2 import rope_override_problems
from swehero.recipe.stage import InputPath, ModelRef, Range


@dataclass
class OptimizerConfig:
    """AdamW and the learning-rate schedule."""

    lr: Annotated[float, Range(gt=0)] = 1e-5
    """Peak learning rate (paper: 1e-5)."""
    min_lr: Annotated[float, Range(min=0)] = 1e-8
    """Final learning rate (paper: 1e-8); at most `lr`."""
    warmup_fraction: Annotated[float, Range(min=0, max=1)] = 0.1
    """Share of the steps spent warming up linearly from 0 (paper: 10%)."""
    decay: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup (paper: cosine)."""
    weight_decay: Annotated[float, Range(min=0)] = 0.01
    """Not stated in the paper; Megatron-LM's SFT default."""
    adam_beta1: Annotated[float, Range(min=0, lt=1)] = 0.9
    """Not stated in the paper."""
    adam_beta2: Annotated[float, Range(min=0, lt=1)] = 0.95
    """Not stated in the paper; 0.95 is Megatron-LM's usual value for long runs."""
    adam_eps: Annotated[float, Range(gt=0)] = 1e-8
    """AdamW epsilon."""
    clip_grad: Annotated[float, Range(min=0)] = 1.0
    """Global gradient-norm clipping; 0 disables it."""

    def cross_field_problems(self) -> list[tuple[str, str]]:
        # Megatron's scheduler asserts min_lr <= lr only once training starts, after the model is loaded
        if self.min_lr > self.lr:
            return [("min_lr", f"must be <= lr ({self.lr}), got {self.min_lr}")]
        return []


@dataclass
class CheckpointConfig:
    """Megatron distributed checkpoints under `<stage>/checkpoints/step-N`."""

    every: Annotated[int, Range(min=1)] = 500
    """Save every this many steps (and always at the end)."""
    keep_last: Annotated[int, Range(min=1)] = 2
    """Checkpoints kept; older ones are deleted once a newer one is complete."""
    async_save: bool = True
    """Write checkpoints in the background (GPU only; CPU runs save synchronously)."""


@dataclass
class Settings:
    """The `train` stage: supervised fine-tuning on packed trajectories with Megatron-Core."""

    data: InputPath
    """A `prepare` stage's output folder (packed `train_*` and `valid_*` IndexedDatasets and `stats.json`)."""
    init: ModelRef | None = None
    """Weights to start from: a Hugging Face folder or hub id (downloaded into the Hugging Face cache), or an
    earlier train stage's folder (its final checkpoint). Default: the recipe's `model.base`."""
    seq_length: Annotated[int, Range(min=1)] = 131072
    """Tokens per packed sequence; must equal the dataset's, checked at launch (paper: 128k with YaRN)."""
    rope_scaling: dict | None = None
    """Overrides the checkpoint's `rope_scaling` with YaRN: {type: yarn, factor: 4, original_max_position_embeddings:
    32768}; a `factor` > 1, `original_max_position_embeddings` (default: the checkpoint's) a whole number."""
    global_batch_size: Annotated[int, Range(min=1)] = 32
    """Packed rows of `seq_length` tokens per optimizer step over all data-parallel ranks: one step trains on
    global_batch_size x seq_length tokens (32 x 128k = 4.2M with the defaults). The paper's "global batch 32"
    is read as 32 such rows (see docs/training.md). Each micro-batch is one row, so a rank accumulates
    global_batch_size / data-parallel size micro-batches."""
    global_batch_tokens: Annotated[int | None, Range(min=1)] = None
    """Tokens per optimizer step instead of `global_batch_size`: it then trains on global_batch_tokens /
    seq_length rows per step, which must be a whole multiple of the data-parallel size (checked at plan and
    launch). E.g. 1048576 at seq_length 131072 is 8 rows per step."""
    epochs: Annotated[float, Range(gt=0)] = 3.0
    """Passes over the training set (paper: 3); ignored when `steps` is set."""
    steps: Annotated[int, Range(min=1)] | None = None
    """Optimizer steps, instead of epochs."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Parallel layout."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """AdamW and schedule."""
    precision: Literal["bf16", "fp8", "fp32"] = "bf16"
    """bf16 mixed precision; fp8 through Transformer Engine (GPU); fp32 for CPU tests."""
    recompute: Literal["none", "selective", "full"] = "selective"
    """Activation recomputation: selective (attention core) or full (whole layers)."""
    fused_ce: bool = True
    """Fused linear + cross-entropy kernel (never materialises the logits); the PyTorch reference on CPU."""
    distributed_optimizer: bool = True
    """Shard optimizer state over data-parallel ranks (ZeRO-1)."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing."""
    eval_every: Annotated[int, Range(min=0)] = 0
    """Validation loss every this many steps (0: only at the end)."""
    log_every: Annotated[int, Range(min=1)] = 1
    """Metrics every this many steps."""
    tensorboard: bool = True
    """Write TensorBoard event files under `<stage>/tensorboard`."""
    wandb_project: str = ""
    """Also log to this Weights & Biases project (needs `wandb` and a login, or WANDB_MODE=offline); a training
    resumed from a checkpoint goes on in the same wandb run."""
    nodes: Annotated[int, Range(min=1)] = 1
    """Nodes (Slurm launcher)."""
    gpus_per_node: Annotated[int, Range(min=1)] = 8
    """Processes per node; on CPU, the number of gloo processes."""
    device: Literal["auto", "cuda", "cpu"] = "auto"
    """cuda, or cpu (gloo, through the CPU backend; for tests and the tiny recipe). auto: cuda if available."""
    export_hf: bool = True
    """Export the final weights as a Hugging Face folder (`<stage>/hf`) for serving."""

    def cross_field_problems(self) -> list[tuple[tuple[str, str], str]]:
        # else `recipe plan` and `run` fail on it with a traceback, or train with the scaling left out
        if self.rope_scaling is None:
            return []
        # at the key's own line: a variant recipe's override merged into its base's mapping keeps the base's line
        spelt = {"type": "rope_type"} if "rope_type" in self.rope_scaling else {}
        return [(("rope_scaling", spelt.get(key, key)), problem)
                for key, problem in rope_override_problems(self.rope_scaling)]


def rows_per_step(settings: Settings) -> int:
    """Packed rows per optimizer step: `global_batch_tokens / seq_length` when a token budget is set, else
    `global_batch_size`."""
    if settings.global_batch_tokens is None:
        return settings.global_batch_size
    return max(settings.global_batch_tokens // settings.seq_length, 1)


class LayoutError(ValueError):
    pass


def check_layout(settings: Settings, hf_config: dict | None, world_size: int) -> int:
    """Reject layouts Megatron would fail on (or silently mis-run); returns the data-parallel size. Without the
    model's config (made by a stage that has not run), all but how the model splits over the ranks."""
    p = settings.parallel
    # a layout built outside the schema (Python callers) can still hold sizes the checks below would divide by
    sizes = {"world size": world_size, "tensor": p.tensor, "pipeline": p.pipeline,
             "virtual_pipeline": p.virtual_pipeline, "context": p.context}
    if too_small := [f"{name} {size}" for name, size in sizes.items() if size < 1]:
        raise LayoutError(f"bad parallel layout: {', '.join(too_small)}: sizes must be >= 1")
    problems = []
    model_parallel = p.tensor * p.pipeline * p.context
    if world_size % model_parallel:
        problems.append(f"world size {world_size} is not divisible by tensor {p.tensor} x pipeline {p.pipeline} "
                        f"x context {p.context} = {model_parallel}")
    if hf_config is not None:
        problems += model_split_problems(hf_config, p.tensor, p.pipeline, p.virtual_pipeline)
    if p.virtual_pipeline > 1 and p.pipeline == 1:
        problems.append("virtual_pipeline > 1 needs pipeline > 1")
    if p.sequence_parallel and p.tensor == 1:
        problems.append("sequence_parallel needs tensor > 1")
    elif p.sequence_parallel and p.context == 1 and settings.seq_length % p.tensor:
        # each row is seq_length tokens, split over the tensor ranks (with context parallelism, `context.py` pads)
        problems.append(f"seq_length {settings.seq_length} is not divisible by tensor {p.tensor} (sequence "
                        "parallelism splits each sequence over the tensor-parallel ranks)")
    if p.context > 1 and settings.seq_length % (2 * p.context):
        problems.append(f"seq_length {settings.seq_length} is not divisible by 2 x context {p.context} "
                        "(context parallelism splits each sequence into 2 x context chunks)")
    data_parallel = max(world_size // model_parallel, 1)
    rows = rows_per_step(settings)
    tokens = settings.global_batch_tokens
    if tokens is not None and (tokens % settings.seq_length or tokens < settings.seq_length):
        problems.append(f"global_batch_tokens {tokens} is not a whole number of seq_length {settings.seq_length} "
                        "rows (each micro-batch is one packed row)")
    elif rows % data_parallel:
        what = f"global_batch_size {rows}" if tokens is None else \
            f"global_batch_tokens {tokens} ({rows} rows of {settings.seq_length})"
        problems.append(f"{what} is not divisible by the data-parallel size {data_parallel} (world {world_size} / "
                        f"model-parallel {model_parallel})" + ("" if tokens is None else
                        f": use a multiple of seq_length x data-parallel = {settings.seq_length * data_parallel} tokens"))
    else:
        micro_batches = rows // data_parallel
        if p.virtual_pipeline > 1 and micro_batches % p.pipeline:
            problems.append(f"the interleaved schedule needs the {micro_batches} micro-batches per step to be a "
                            f"multiple of pipeline {p.pipeline}")
    if problems:
        raise LayoutError("bad parallel layout: " + "; ".join(problems))
    return data_parallel
