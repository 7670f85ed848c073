"""`swehero train`: run a recipe's training stage here under torchrun, or hand it to Slurm."""

from __future__ import annotations

import subprocess

import click

from swehero.recipe.cli import load_or_exit, set_option
from swehero.recipe.engine import plan, run_recipe
from swehero.recipe.options import Command
from swehero.train.stage import slurm_job


@click.command(cls=Command, examples=[
    "swehero train recipes/tiny-cpu.yaml --stage sft_zero",
    "swehero train recipes/hero-32b.yaml --stage sft_hero --launcher slurm --sbatch=--time=48:00:00 --submit"])
@click.argument("recipe_file", metavar="RECIPE")
@click.option("--stage", "stage_name", help="The train stage to run (default: the first one).")
@set_option
@click.option("--launcher", type=click.Choice(["torchrun", "slurm"]), default="torchrun", show_default=True,
              help="torchrun on this node, or write an sbatch script for a multi-node Slurm job.")
@click.option("--submit", is_flag=True, help="With --launcher slurm: submit the script with sbatch.")
@click.option("--sbatch", "sbatch_options", multiple=True, metavar="OPTION",
              help="Extra #SBATCH option, e.g. --sbatch=--partition=batch (repeatable).")
@click.option("--container-image", help="With --launcher slurm: run in this image through pyxis/enroot.")
def train(recipe_file: str, stage_name: str | None, overrides: tuple[str, ...], launcher: str, submit: bool,
          sbatch_options: tuple[str, ...], container_image: str | None) -> None:
    """A recipe's `train` stage: here (as `recipe run --only STAGE`), or as a Slurm job whose final checkpoint a
    later `recipe run` picks up."""
    loaded = load_or_exit(recipe_file, overrides)
    stage = next((s for s in loaded.stages if s.kind == "train" and stage_name in (None, s.name)), None)
    if stage is None:
        raise click.UsageError(f"{loaded.file}: no train stage" + (f" named {stage_name}" if stage_name else ""))
    if launcher == "torchrun":
        return run_recipe(loaded, plan(loaded, only=stage.name), echo=click.echo)
    script = slurm_job(loaded, stage, list(sbatch_options), container_image)
    click.echo(f"wrote {script}")
    if submit:
        subprocess.run(["sbatch", str(script)], check=True)
