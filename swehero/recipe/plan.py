"""`swehero recipe plan`: what a recipe's stages will cost before anything runs: each training stage's memory per
GPU, tokens and GPU-hours, and each evaluation's serving memory. Warns where a layout will not fit an 80 GB H100,
and where vLLM would not start an evaluation's server (see `swehero.train.plan.serving_problems`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from swehero.model import qwen2
from swehero.model.folder import is_hf_folder, known_config
from swehero.recipe.config import Recipe, Stage


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
            config = trained_config(recipe, stage)
            blocks.append(format_plan(plan_stage(stage.name, stage.settings, model_ref, mfu, config), mfu))
        elif stage.kind == "eval":
            blocks += [_serving(recipe, name, serve, workers) for name, serve, workers in _servers(stage)]
    return blocks or [f"{recipe.file}: no training or serving stages"]


def unservable(recipe: Recipe, stages: list[Stage]) -> list[str]:
    """Why vLLM would not start the servers `stages` start (`swehero.train.plan.serving_problems`), for the models
    whose config is known: `recipe run` stops on these before its first stage, not after days of training."""
    from swehero.train.plan import serving_problems

    problems = []
    for stage in stages:
        for name, serve, _ in _servers(stage) if stage.kind == "eval" else []:
            config, max_positions, guessed = _served_config(recipe, serve)
            if config is not None and not guessed:
                problems += [f"stage {name}: {problem}" for problem in serving_problems(
                    config, serve.tensor_parallel_size, serve.max_model_len, max_positions)]
    return problems


def _servers(stage: Stage) -> list[tuple]:
    """(name, serve settings, workers) of the servers an eval stage starts: the policy's, unless endpoints serve
    it, then the verifier's, unless its endpoint does (it scores the attempts once the policy's has stopped)."""
    from swehero.rollout.endpoints import serves_here

    s = stage.settings
    servers = [(stage.name, s.serve, s.workers)] if serves_here(s.agent, s.endpoints, s.serve) else []
    if s.verifier.serve.model and not s.verifier.endpoint:
        servers.append((f"{stage.name} (verifier)", s.verifier.serve, s.verifier.workers))
    return servers


def _serving(recipe: Recipe, name: str, serve, workers: int) -> str:
    from swehero.train.plan import format_serving

    config, max_positions, _ = _served_config(recipe, serve)
    if config is None:
        return f"stage {name}: no config.json for {serve.model} yet (made by an earlier stage)"
    return format_serving(name, config, serve.tensor_parallel_size, serve.data_parallel_size, serve.max_model_len,
                          workers, serve.gpu_memory_utilization, gpus_per_node=_gpus_per_node(recipe),
                          max_positions=max_positions)


def _served_config(recipe: Recipe, serve) -> tuple[dict | None, int | None, bool]:
    """The config of the model `serve` serves, the positions vLLM lets it reach (None: not known), and whether the
    config is a guess (the base model's architecture, for a model another kind of stage makes)."""
    maker = _train_stage_making(recipe, serve.model)
    # a train stage's export as the recipe makes it now, not one an earlier run left on disk
    config = (trained_config(recipe, maker) if maker else None) or known_config(serve.model)
    # vLLM's limit for Qwen2 (YaRN or none): max_position_embeddings, which a YaRN export sets to original x factor;
    # unknown where `--hf-overrides` changes the config vLLM reads.
    overridden = any(arg.startswith("--hf-overrides") for arg in serve.extra_args)
    max_positions = config.get("max_position_embeddings") if config and not overridden else None
    if config is None and recipe.model:
        return known_config(recipe.model.base), None, True
    return config, max_positions, False


def _train_stage_making(recipe: Recipe, model: str) -> Stage | None:
    """The train stage whose folder, or its Hugging Face export (`hf`), `model` names."""
    for stage in recipe.stages:
        folder = os.path.abspath(Path(recipe.run_dir) / stage.name)
        if stage.kind == "train" and os.path.abspath(model) in (folder, os.path.join(folder, "hf")):
            return stage
    return None


def trained_config(recipe: Recipe, stage: Stage) -> dict | None:
    """The config a train stage exports: its initial model's (an earlier train stage's export, else the `init`
    or base model's), with the stage's rope_scaling."""
    init = stage.settings.init
    earlier = _train_stage_making(recipe, init) if init else None
    if earlier:
        config = trained_config(recipe, earlier)
    else:
        ref = init or (recipe.model.base if recipe.model else None)
        config = known_config(ref) if ref else None
    if config is not None and stage.settings.rope_scaling is not None:
        config = qwen2.with_rope_scaling(config, stage.settings.rope_scaling)
    return config


def _gpus_per_node(recipe: Recipe) -> int:
    """GPUs of one of the recipe's nodes: as its train stages say, else the train stage's default."""
    from swehero.train.config import Settings

    default = next(f.default for f in dataclasses.fields(Settings) if f.name == "gpus_per_node")
    return max((s.settings.gpus_per_node for s in recipe.stages if s.kind == "train"), default=default)
