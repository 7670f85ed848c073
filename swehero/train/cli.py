"""`swehero train`: run a recipe's training stage here under torchrun, or hand it to Slurm."""

from __future__ import annotations

import click

from swehero.recipe.cli import load_or_exit, set_option, stage_options
from swehero.recipe.engine import StageFailed, hand_off, plan, run_lock, run_recipe, stage_to_run
from swehero.recipe.options import Command, launcher_options, submit_if_asked
from swehero.train.launch import layout_options
from swehero.train.stage import slurm_job


@click.command(cls=Command, examples=[
    "swehero train recipes/tiny-cpu.yaml --stage sft_zero",
    "swehero train recipes/hero-32b.yaml --stage sft_hero --launcher slurm --sbatch=--time=48:00:00 --submit"])
@click.argument("recipe_file", metavar="RECIPE")
@click.option("--stage", "stage_name", help="The train stage to run (default: the first one not up to date).")
@click.option("--force", is_flag=True, help="Train an up-to-date stage again, from scratch (its checkpoints go).")
@set_option
@launcher_options("torchrun", "an sbatch script for a multi-node job (one torchrun per node)")
@click.option("--container-image", help="With --launcher slurm: run in this image through pyxis/enroot.")
def train(recipe_file: str, stage_name: str | None, force: bool, overrides: tuple[str, ...], launcher: str,
          sbatch_options: tuple[str, ...], submit: bool, container_image: str | None) -> None:
    """A recipe's `train` stage: here (as `recipe run --only STAGE`), or as a Slurm job. A later `recipe run`
    waits while the job is queued or running, then completes the stage from its work (or goes on from its last
    checkpoint). An up-to-date stage is left alone unless --force: writing a job empties the stage's folder."""
    if launcher == "slurm" and (layout := layout_options(list(sbatch_options))):
        raise click.BadParameter(f"{', '.join(layout)}: the job's layout is the stage's `nodes` and `gpus_per_node` "
                                 "(--set stages.STAGE.nodes=N)", param_hint="'--sbatch'")
    loaded = load_or_exit(recipe_file, overrides)
    with stage_options():
        named = stage_to_run(loaded, "train", stage_name) if stage_name else None
    try:
        with run_lock(loaded):
            stage = named or stage_to_run(loaded, "train")
            steps = plan(loaded, only=stage.name, force=force)
            step = next(s for s in steps if s.stage is stage)
            if not step.run:
                raise StageFailed(f"stage {stage.name}: {step.reason}" + ("" if step.waits else
                                                                          "; --force trains it again from scratch"))
            if launcher == "torchrun":
                return run_recipe(loaded, steps, echo=click.echo)

            def launch() -> dict:
                script = slurm_job(loaded, stage, list(sbatch_options), container_image)
                return {"slurm_script": str(script.resolve()), "slurm_job": submit_if_asked(script, submit)}

            hand_off(loaded, step, launch)
    except StageFailed as e:
        raise click.ClickException(str(e)) from None
