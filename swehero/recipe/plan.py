"""`swehero recipe plan`: what a recipe's stages will cost before anything runs: each training stage's memory per
GPU, tokens and GPU-hours, and each evaluation's serving memory. Warns where a layout will not fit an 80 GB H100."""

from __future__ import annotations

from swehero.model.folder import is_hf_folder, known_config
from swehero.recipe.config import Recipe


def plan_recipe(recipe: Recipe, mfu: float) -> list[str]:
    """One block of text per training or serving stage, in the recipe's order."""
    from swehero.train.plan import format_plan, plan_stage

    blocks = []
    base = recipe.model.base if recipe.model else None
    for stage in recipe.stages:
        if stage.kind == "train":
            init = stage.settings.init
            # A checkpoint of an earlier stage has the base model's architecture.
            model_ref = init if (init and is_hf_folder(init)) or base is None else base
            blocks.append(format_plan(plan_stage(stage.name, stage.settings, model_ref, mfu), mfu))
        elif stage.kind == "eval":
            # the policy's server, then the verifier's (which scores the attempts once the policy's has stopped)
            servers = [(stage.name, stage.settings.serve, stage.settings.workers),
                       (f"{stage.name} (verifier)", stage.settings.verifier.serve, stage.settings.verifier.workers)]
            for name, serve, workers in servers:
                if serve.model:
                    blocks.append(_serving(name, serve, workers, base))
    return blocks or [f"{recipe.file}: no training or serving stages"]


def _serving(name: str, serve, workers: int, base: str | None) -> str:
    from swehero.train.plan import format_serving

    # A checkpoint of an earlier stage has the base model's architecture.
    config = known_config(serve.model) or (known_config(base) if base else None)
    if config is None:
        return f"stage {name}: no config.json for {serve.model} yet (made by an earlier stage)"
    return format_serving(name, config, serve.tensor_parallel_size, serve.data_parallel_size, serve.max_model_len,
                          workers, serve.gpu_memory_utilization)
