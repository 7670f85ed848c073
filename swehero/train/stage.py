"""Stage kind `train`: write the job file, launch the worker processes with torchrun, report the outputs.

A rerun of an interrupted stage resumes from its last complete checkpoint (the loop finds it)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

from swehero.errors import InputError
from swehero.recipe.stage import StageContext
from swehero.train.config import Settings

USES_MODEL = True
RESUMABLE = True


def job_file(settings: Settings, ctx: StageContext) -> Path:
    from swehero.train.worker import JOB_FILE

    init = settings.init or (ctx.model.base if ctx.model else None)
    if init is None:
        raise InputError(f"stage {ctx.name}: set `init`, or the recipe's model.base")
    if not Path(init).exists():  # a hub id: fetch it once here, not in every training process
        from huggingface_hub import snapshot_download

        init = snapshot_download(init, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"])
    # Absolute paths: the workers may start in another folder (a container, another node).
    fields = {**dataclasses.asdict(settings), "data": os.path.abspath(settings.data)}
    path = ctx.dir / JOB_FILE
    path.write_text(json.dumps({"settings": fields, "dir": str(ctx.dir), "init": os.path.abspath(init),
                                "seed": ctx.seed, "name": ctx.name}, indent=2))
    return path


def paths_read(job_path: Path) -> list[Path]:
    """What the workers of a job file read: the run folder (this stage's folder, and earlier stages' when `init`
    is one), the packed data and the initial weights."""
    job = json.loads(Path(job_path).read_text())
    return [Path(job["dir"]).parent, Path(job["settings"]["data"]), Path(job["init"])]


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.process import die_with_parent
    from swehero.train.launch import torchrun_command

    if settings.nodes > 1:
        raise InputError(f"stage {ctx.name} spans {settings.nodes} nodes: launch it with "
                         f"`swehero train RECIPE --stage {ctx.name} --launcher slurm`")
    job_file(settings, ctx)
    done = subprocess.run(torchrun_command(ctx.dir, settings.nodes * settings.gpus_per_node),
                          preexec_fn=die_with_parent)
    if done.returncode != 0:
        raise RuntimeError(f"training exited with status {done.returncode}; see the output above")
    outputs = {"checkpoints": str(ctx.dir / "checkpoints"), "metrics": str(ctx.dir / "metrics.jsonl"),
               "plot": str(ctx.dir / "loss.png")}
    if settings.export_hf:
        outputs["hf"] = str(ctx.dir / "hf")
    return outputs


def slurm_job(recipe, stage, sbatch_options: list[str], container_image: str | None) -> Path:
    """Write the stage's job file and an sbatch script for it (one torchrun per node) into the stage folder;
    returns the script. In a container, every folder the workers read is mounted, or the error names the one
    that does not exist yet."""
    from swehero.recipe.engine import stage_dir
    from swehero.train.launch import container_mounts, slurm_script

    folder = stage_dir(recipe, stage)
    folder.mkdir(parents=True, exist_ok=True)
    job = job_file(stage.settings, StageContext(stage.name, folder.resolve(), recipe.seed, recipe.model, {},
                                                resume=True))
    try:
        mounts = container_mounts(paths_read(job)) if container_image else []
    except FileNotFoundError as e:
        raise FileNotFoundError(f"stage {stage.name} cannot run in a container: it reads {e}; run the stages that "
                                "make it first (swehero recipe run)") from None
    script = folder / "train.sbatch"
    script.write_text(slurm_script(folder, stage.settings.nodes, stage.settings.gpus_per_node,
                                   f"{recipe.name}-{stage.name}", sbatch_options, container_image, mounts))
    return script
