"""`swehero recipe plan`: what a recipe's stages will cost before anything runs: each training stage's memory per
GPU, tokens and GPU-hours, and each evaluation's serving memory. Warns where a layout will not fit an 80 GB H100."""

from __future__ import annotations

from swehero.model.folder import is_hf_folder, known_config
from swehero.recipe.config import Recipe


def plan_recipe(recipe: Recipe, mfu: float) -> list[str]:
    """One block of text per training or serving stage, in the recipe's order."""
    from swehero.train.plan import format_plan, format_serving, plan_stage

    blocks = []
    base = recipe.model.base if recipe.model else None
    for stage in recipe.stages:
        if stage.kind == "train":
            init = stage.settings.init
            # A checkpoint of an earlier stage has the base model's architecture.
            model_ref = init if (init and is_hf_folder(init)) or base is None else base
            blocks.append(format_plan(plan_stage(stage.name, stage.settings, model_ref, mfu), mfu))
        elif stage.kind == "eval" and stage.settings.serve.model:
            serve = stage.settings.serve
            config = known_config(serve.model) or (known_config(base) if base else None)
            if config is None:
                blocks.append(f"stage {stage.name}: no config.json for {serve.model} yet (made by an earlier stage)")
                continue
            blocks.append(format_serving(stage.name, config, serve.tensor_parallel_size, serve.data_parallel_size,
                                         serve.max_model_len, stage.settings.workers, serve.gpu_memory_utilization))
    return blocks or [f"{recipe.file}: no training or serving stages"]
