"""What a training stage will cost before it runs: parameters, memory per GPU by term, tokens, GPU-hours."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from swehero.data.prepare import STATS, read_stats
from swehero.model import qwen2
from swehero.model.folder import known_config
from swehero.model.parallel import model_split_problems
from swehero.train.config import LayoutError, Settings, check_layout, rows_per_step
from swehero.train.data import empty_training_split, seq_length_mismatch, steps_for
from swehero.train.memory import GPU_MEMORY_GIB, RUNTIME_OVERHEAD_GIB, GiB, MemoryEstimate, dims, estimate, parameter_count
from swehero.train.metrics import training_flops_per_token

@dataclass
class StagePlan:
    name: str
    layout: str
    memory: MemoryEstimate | None
    steps: int | None
    tokens: int | None
    gpu_hours: float | None
    warnings: list[str]
    rows_per_step: int | None = None
    """Packed rows of seq_length tokens per optimizer step (the global batch)."""
    seq_length: int | None = None
    steps_per_epoch: int | None = None
    """Optimizer steps in one pass over the packed training rows (None until the data stage has run)."""


def plan_stage(name: str, settings: Settings, model_ref: str, mfu: float, config: dict | None = None) -> StagePlan:
    """What a train stage of `model_ref` costs; `config`, where known, is the config the stage trains (a recipe's
    stage 2 keeps stage 1's YaRN), else `model_ref`'s with the stage's rope_scaling."""
    warnings: list[str] = []
    p = settings.parallel
    world = settings.nodes * settings.gpus_per_node
    layout = f"{settings.nodes}x{settings.gpus_per_node} GPUs: TP {p.tensor}, PP {p.pipeline}" + \
        (f" (virtual {p.virtual_pipeline})" if p.virtual_pipeline > 1 else "") + f", CP {p.context}"
    rows = rows_per_step(settings)
    batch = {"rows_per_step": rows, "seq_length": settings.seq_length}
    if config is None:
        config = known_config(model_ref)
        if config is None:
            return StagePlan(name, layout, None, None, None, None,
                             [f"no config.json for {model_ref} (not local, not bundled)"], **batch)
        if settings.rope_scaling:
            config = qwen2.with_rope_scaling(config, settings.rope_scaling)
    if settings.seq_length > config.get("max_position_embeddings", math.inf):
        warnings.append(f"seq_length {settings.seq_length} is longer than the {config['max_position_embeddings']} "
                        "positions the model reaches" + (" with this rope_scaling" if settings.rope_scaling else "")
                        + ": the export says so, and vLLM refuses a longer max_model_len; extend it with YaRN "
                        "(rope_scaling: {type: yarn, factor: F, original_max_position_embeddings: N}, F x N >= "
                        "seq_length)")
    try:
        dp = check_layout(settings, config, world)
    except LayoutError as e:
        return StagePlan(name, layout, None, None, None, None, warnings + [str(e)], **batch)
    layout += f", DP {dp}, {settings.precision}, recompute {settings.recompute}"
    memory = estimate(settings, config, dp)
    if memory.total_gib > GPU_MEMORY_GIB:
        warnings.append(f"needs ~{memory.total_gib:.0f} GiB per GPU, more than {GPU_MEMORY_GIB:.0f} GiB: add tensor/"
                        "pipeline/context parallelism or full recompute")
    samples, mean_doc = None, settings.seq_length / 4
    if (Path(settings.data) / STATS).exists():
        stats = read_stats(settings.data)
        warnings += [problem for problem in (seq_length_mismatch(settings.seq_length, settings.data, stats),
                                             empty_training_split(settings.data, stats)) if problem]
        samples = stats["samples"].get("train")
        if stats["trajectories"]["kept"]:
            mean_doc = stats["tokens"] / stats["trajectories"]["kept"]
    per_epoch = steps_for(samples, rows, 1.0, None) if samples else None
    steps = settings.steps if settings.steps is not None else (
        steps_for(samples, rows, settings.epochs, None) if samples else None)
    if steps is None:
        if samples is None:  # else the empty split's warning says why
            warnings.append("steps unknown until the data stage has run (or set `steps`)")
        return StagePlan(name, layout, memory, None, None, None, warnings, **batch)
    tokens = steps * rows * settings.seq_length
    docs = [int(mean_doc)] * max(1, math.ceil(settings.seq_length / mean_doc))
    seconds_at_peak = tokens * training_flops_per_token(config, docs).seconds_at_peak(settings.precision)
    return StagePlan(name, layout, memory, steps, tokens, seconds_at_peak / mfu / 3600, warnings,
                     steps_per_epoch=per_epoch, **batch)


def format_plan(plan: StagePlan, mfu: float) -> str:
    lines = [f"stage {plan.name}: {plan.layout}"]
    m = plan.memory
    if m is not None:
        lines.append(f"  parameters     {m.parameters / 1e9:.2f} B" if m.parameters >= 1e8 else
                     f"  parameters     {m.parameters / 1e6:.2f} M")
        lines.append(f"  memory / GPU   {_gib(m.total_gib)} GiB = weights {_gib(m.weights_gib)} + gradients "
                     f"{_gib(m.gradients_gib)} + optimizer {_gib(m.optimizer_gib)} + activations "
                     f"{_gib(m.activations_gib)} + loss {_gib(m.loss_gib)} + runtime {_gib(m.overhead_gib)}")
    if plan.rows_per_step is not None:
        lines.append(f"  global batch   {plan.rows_per_step} rows x {plan.seq_length} tokens = "
                     f"{_count(plan.rows_per_step * plan.seq_length)} tokens per step")
    if plan.tokens is not None:
        per_epoch = f", {plan.steps_per_epoch} per epoch" if plan.steps_per_epoch is not None else ""
        lines.append(f"  steps          {plan.steps}{per_epoch}  ({_count(plan.tokens)} tokens)")
        lines.append(f"  GPU-hours      {plan.gpu_hours:,.0f} at {mfu:.0%} MFU (H100 peak)")
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _count(n: int) -> str:
    """4194304 -> '4.19 M'."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def _gib(x: float) -> str:
    """One decimal at GPU scale, three for the tiny model's megabytes."""
    return f"{x:.1f}" if x >= 1 else f"{x:.3f}"


@dataclass
class ServingMemory:
    """Memory per GPU of a vLLM server: the weights' tensor-parallel shard, the KV cache for the requested
    concurrent sequences at full length, and runtime overhead, against what vLLM may take."""

    weights_gib: float
    kv_cache_gib: float
    overhead_gib: float
    budget_gib: float
    """gpu_memory_utilization x the GPU's memory: all vLLM allocates (weights, activations, KV cache)."""

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.kv_cache_gib + self.overhead_gib

    @property
    def fits(self) -> bool:
        return self.total_gib <= self.budget_gib


def kv_cache_bytes_per_token(hf_config: dict, tensor_parallel: int, dtype_bytes: int = 2) -> int:
    """Keys and values one token keeps on one GPU: 2 x layers x local KV heads x head_dim x bytes. vLLM splits the
    KV heads over tensor ranks and replicates them when there are more ranks than heads (one head each)."""
    _, _, kv_heads, head_dim, _ = dims(hf_config)
    local_heads = max(kv_heads // tensor_parallel, 1)
    return 2 * hf_config["num_hidden_layers"] * local_heads * head_dim * dtype_bytes


def serving_memory(hf_config: dict, tensor_parallel: int, max_model_len: int, concurrent_sequences: int,
                   gpu_memory_utilization: float = 0.9, dtype_bytes: int = 2, kv_dtype_bytes: int | None = None,
                   gpu_memory_gib: float = GPU_MEMORY_GIB) -> ServingMemory:
    """Whether a checkpoint of `hf_config` serves on `tensor_parallel` GPUs with `concurrent_sequences` sequences
    of `max_model_len` tokens in flight (the worst case: vLLM's paged cache holds only the tokens in use).
    `dtype_bytes`: weights (2 for bf16); `kv_dtype_bytes`: the KV cache (default: as the weights; 1 for fp8)."""
    weights = parameter_count(hf_config) * dtype_bytes / tensor_parallel  # embedding and head are split too
    kv = kv_cache_bytes_per_token(hf_config, tensor_parallel, kv_dtype_bytes or dtype_bytes)
    return ServingMemory(
        weights_gib=weights / GiB,
        kv_cache_gib=kv * max_model_len * concurrent_sequences / GiB,
        overhead_gib=RUNTIME_OVERHEAD_GIB,
        budget_gib=gpu_memory_utilization * gpu_memory_gib,
    )


def serving_problems(hf_config: dict, tensor_parallel: int, max_model_len: int,
                     max_positions: int | None) -> list[str]:
    """Why vLLM would not start a server of `hf_config`: heads (or the MLP) that tensor_parallel_size does not
    split, or a `max_model_len` past the `max_positions` the model reaches (None: not known yet)."""
    problems = [f"serve.tensor_parallel_size: {p}: vLLM will not start"
                for p in model_split_problems(hf_config, tensor_parallel, 1)]
    if max_positions is not None and max_model_len > max_positions:
        problems.append(f"serve.max_model_len {max_model_len} is longer than the {max_positions} positions the "
                        "model reaches: vLLM will not start; lower it, or train with a rope_scaling that reaches it")
    return problems


def format_serving(name: str, hf_config: dict, tensor_parallel: int, data_parallel: int, max_model_len: int,
                   workers: int, gpu_memory_utilization: float = 0.9, *, gpus_per_node: int,
                   max_positions: int | None) -> str:
    """What serving a stage's checkpoint costs per GPU: it must hold the weights and one sequence of
    `max_model_len` (vLLM refuses to start otherwise); attempts beyond the full-length sequences that fit wait.
    Warns first where vLLM would not start the layout at all (`serving_problems`)."""
    one = serving_memory(hf_config, tensor_parallel, max_model_len, 1, gpu_memory_utilization)
    per_sequence = one.kv_cache_gib
    concurrent = max(1, math.ceil(workers / data_parallel))
    fit = int((one.budget_gib - one.weights_gib - one.overhead_gib) // per_sequence) if per_sequence else concurrent
    lines = [f"stage {name}: vLLM, {data_parallel} replica(s) x TP {tensor_parallel} = "
             f"{data_parallel * tensor_parallel} GPUs, {concurrent} attempt(s) per replica",
             f"  memory / GPU   weights {_gib(one.weights_gib)} + KV cache {_gib(per_sequence)} per "
             f"{max_model_len}-token sequence + runtime {_gib(one.overhead_gib)}; budget {_gib(one.budget_gib)} GiB "
             f"({gpu_memory_utilization:.0%} of {GPU_MEMORY_GIB:.0f})"]
    lines += [f"  warning: {problem}"
              for problem in serving_problems(hf_config, tensor_parallel, max_model_len, max_positions)]
    if (gpus := tensor_parallel * data_parallel) > gpus_per_node:
        lines.append(f"  warning: {data_parallel} replica(s) x TP {tensor_parallel} = {gpus} GPUs, more than the "
                     f"{gpus_per_node} of a node: one vLLM server runs on one node; lower serve.data_parallel_size "
                     "or serve.tensor_parallel_size")
    if not one.fits:
        lines.append(f"  warning: the weights and one {max_model_len}-token sequence need {_gib(one.total_gib)} GiB "
                     f"per GPU, more than {_gib(one.budget_gib)}: vLLM will not start; raise "
                     "serve.tensor_parallel_size or lower serve.max_model_len")
    elif fit < concurrent:
        lines.append(f"  note: {fit} full-length sequence(s) fit per replica at once, {concurrent} attempts share "
                     "it: longer conversations wait for memory (vLLM queues them)")
    return "\n".join(lines)
