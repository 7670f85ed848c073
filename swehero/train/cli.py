"""`swehero train`: run a recipe's training stage here under torchrun, or hand it to Slurm."""

from __future__ import annotations

import subprocess

import click

from swehero.recipe.cli import load_or_exit, set_option


@click.command()
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
    """Supervised fine-tuning with Megatron-Core, as a recipe's `train` stage says.

    With torchrun the stage runs like `swehero recipe run --only STAGE` (manifest, resume from the last
    checkpoint). With slurm the job file and an sbatch script are written to the stage folder; once the job has
    finished, `swehero recipe run` completes the stage from its final checkpoint.

    \b
    Examples:
      swehero train recipes/tiny-cpu.yaml --stage sft_zero
      swehero train recipes/hero-32b.yaml --stage sft_hero --launcher slurm --sbatch=--time=48:00:00 --submit
    """
    from swehero.recipe.engine import plan, run_recipe, stage_dir
    from swehero.recipe.stage import StageContext

    loaded = load_or_exit(recipe_file, overrides)
    stages = [s for s in loaded.stages if s.kind == "train" and (stage_name in (None, s.name))]
    if not stages:
        raise click.UsageError(f"{loaded.file}: no train stage" + (f" named {stage_name}" if stage_name else ""))
    stage = stages[0]
    if launcher == "torchrun":
        run_recipe(loaded, plan(loaded, only=stage.name), echo=click.echo)
        return
    from swehero.train.launch import container_mounts, slurm_script
    from swehero.train.stage import job_file, paths_read

    folder = stage_dir(loaded, stage)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = StageContext(stage.name, folder.resolve(), loaded.seed, loaded.model, {}, resume=True)
    job = job_file(stage.settings, ctx)
    mounts = []
    if container_image:
        try:
            mounts = container_mounts(paths_read(job))
        except FileNotFoundError as e:
            raise click.ClickException(f"stage {stage.name} cannot run in a container: it reads {e}; run the "
                                       "stages that make it first (swehero recipe run)") from None
    script = folder / "train.sbatch"
    script.write_text(slurm_script(folder, stage.settings.nodes, stage.settings.gpus_per_node,
                                   f"{loaded.name}-{stage.name}", list(sbatch_options), container_image, mounts))
    click.echo(f"wrote {script}")
    if submit:
        subprocess.run(["sbatch", str(script)], check=True)
