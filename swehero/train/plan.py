"""What a training stage will cost before it runs: parameters, memory per GPU by term, tokens, GPU-hours."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from swehero.model.folder import known_config
from swehero.train.config import LayoutError, Settings, check_layout
from swehero.train.data import steps_for
from swehero.train.memory import GPU_MEMORY_GIB, MemoryEstimate, estimate
from swehero.train.metrics import H100_BF16_PEAK_FLOPS, training_flops_per_token

@dataclass
class StagePlan:
    name: str
    layout: str
    memory: MemoryEstimate | None
    steps: int | None
    tokens: int | None
    gpu_hours: float | None
    warnings: list[str]


def plan_stage(name: str, settings: Settings, model_ref: str, mfu: float) -> StagePlan:
    warnings: list[str] = []
    p = settings.parallel
    world = settings.nodes * settings.gpus_per_node
    layout = f"{settings.nodes}x{settings.gpus_per_node} GPUs: TP {p.tensor}, PP {p.pipeline}" + \
        (f" (virtual {p.virtual_pipeline})" if p.virtual_pipeline > 1 else "") + f", CP {p.context}"
    config = known_config(model_ref)
    if config is None:
        return StagePlan(name, layout, None, None, None, None, [f"no config.json for {model_ref} (not local, not bundled)"])
    if settings.rope_scaling:
        config = {**config, "rope_scaling": settings.rope_scaling}
    try:
        dp = check_layout(settings, config, world)
    except LayoutError as e:
        return StagePlan(name, layout, None, None, None, None, [str(e)])
    layout += f", DP {dp}, {settings.precision}, recompute {settings.recompute}"
    memory = estimate(settings, config, dp)
    if memory.total_gib > GPU_MEMORY_GIB:
        warnings.append(f"needs ~{memory.total_gib:.0f} GiB per GPU, more than {GPU_MEMORY_GIB:.0f} GiB: add tensor/"
                        "pipeline/context parallelism or full recompute")
    stats_file = Path(settings.data) / "stats.json"
    samples, mean_doc = None, settings.seq_length / 4
    if stats_file.exists():
        stats = json.loads(stats_file.read_text())
        samples = stats["samples"].get("train")
        if stats["trajectories"]["kept"]:
            mean_doc = stats["tokens"] / stats["trajectories"]["kept"]
    steps = settings.steps if settings.steps is not None else (
        steps_for(samples, settings.global_batch_size, settings.epochs, None) if samples else None)
    if steps is None:
        warnings.append("steps unknown until the data stage has run (or set `steps`)")
        return StagePlan(name, layout, memory, None, None, None, warnings)
    tokens = steps * settings.global_batch_size * settings.seq_length
    docs = [int(mean_doc)] * max(1, math.ceil(settings.seq_length / mean_doc))
    flops = tokens * training_flops_per_token(config, docs)
    peak = H100_BF16_PEAK_FLOPS * (2 if settings.precision == "fp8" else 1)
    return StagePlan(name, layout, memory, steps, tokens, flops / (mfu * peak) / 3600, warnings)


def format_plan(plan: StagePlan, mfu: float) -> str:
    lines = [f"stage {plan.name}: {plan.layout}"]
    m = plan.memory
    if m is not None:
        lines.append(f"  parameters     {m.parameters / 1e9:.2f} B" if m.parameters >= 1e8 else
                     f"  parameters     {m.parameters / 1e6:.2f} M")
        lines.append(f"  memory / GPU   {_gib(m.total_gib)} GiB = weights {_gib(m.weights_gib)} + gradients "
                     f"{_gib(m.gradients_gib)} + optimizer {_gib(m.optimizer_gib)} + activations "
                     f"{_gib(m.activations_gib)} + logits {_gib(m.logits_gib)} + runtime {_gib(m.overhead_gib)}")
    if plan.tokens is not None:
        lines.append(f"  steps          {plan.steps}  ({plan.tokens / 1e9:.2f} B tokens)" if plan.tokens >= 1e8 else
                     f"  steps          {plan.steps}  ({plan.tokens / 1e6:.2f} M tokens)")
        lines.append(f"  GPU-hours      {plan.gpu_hours:,.0f} at {mfu:.0%} MFU (H100 peak)")
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _gib(x: float) -> str:
    """One decimal at GPU scale, three for the tiny model's megabytes."""
    return f"{x:.1f}" if x >= 1 else f"{x:.3f}"
