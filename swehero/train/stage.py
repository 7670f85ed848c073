"""Stage kind `train`: write the job file, launch the worker processes with torchrun, report the outputs.

A rerun of an interrupted stage resumes from its last complete checkpoint (the loop finds it)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from swehero.errors import InputError, MissingInput, ProcessFailed, Unavailable
from swehero.recipe.stage import HUB_ID, RunsElsewhere, StageContext
from swehero.train.config import Settings

if TYPE_CHECKING:
    from swehero.recipe.config import Recipe
    from swehero.recipe.engine import Step

USES_MODEL = True
RESUMABLE = True
# The data-parallel size (nodes, GPUs per node) and the checkpoint cadence change how a run goes, not the model it
# makes: a stage resumes across them (a node lost, fewer GPUs). Tensor, pipeline and context sizes do not resume:
# Megatron cannot reshard the optimizer state.
NOT_IN_RESULT = ("log_every", "eval_every", "tensorboard", "wandb_project", "nodes", "gpus_per_node", "checkpoint",
                 "recompute")
# The Hugging Face export is made from the last checkpoint: turned on for a trained stage, the stage resumes at its
# last step and exports (it emptied the folder and trained again from scratch).
RESUMES_ACROSS = ("export_hf",)


def job_file(settings: Settings, ctx: StageContext) -> Path:
    from swehero.train.worker import JOB_FILE

    init = settings.init or (ctx.model.base if ctx.model else None)
    if init is None:
        raise InputError(f"stage {ctx.name}: set `init`, or the recipe's model.base")
    if not Path(init).exists() and HUB_ID.match(init):  # fetch it once here, not in every training process
        from huggingface_hub import snapshot_download

        try:
            init = snapshot_download(init, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"])
        except OSError as e:  # offline, unknown repository, no access: the hub's own words say which
            raise Unavailable(f"stage {ctx.name}: cannot fetch {init} from the Hugging Face hub: {e}") from None
    check_inputs(settings, init, ctx.name)
    # Absolute paths: the workers may start in another folder (a container, another node).
    fields = {**dataclasses.asdict(settings), "data": os.path.abspath(settings.data)}
    path = ctx.dir / JOB_FILE
    path.write_text(json.dumps({"settings": fields, "dir": str(ctx.dir), "init": os.path.abspath(init),
                                "seed": ctx.seed, "name": ctx.name}, indent=2))
    return path


def check_inputs(settings: Settings, init: str, name: str) -> None:
    """What every worker would otherwise fail on, each after importing Megatron (or a Slurm job after its wait in
    the queue), checked once before any starts: the data and the initial weights exist, the data was packed at
    the stage's seq_length and has training rows, a Hugging Face folder holds a Qwen2 model whose every tensor its
    weight files list, the parallel layout fits that model on the stage's processes, and wandb is there if asked for
    (rank 0 would import it only once the model is loaded)."""
    from swehero.data.prepare import read_stats, tokenizer_digests
    from swehero.model.folder import (TOKENIZER_FILES, check_hf_weights, has_tokenizer, is_hf_folder, read_config,
                                      side_files_from)
    from swehero.model.qwen2 import check_supported
    from swehero.train.data import empty_training_split, seq_length_mismatch
    from swehero.train.folders import model_config

    if settings.wandb_project and importlib.util.find_spec("wandb") is None:
        raise Unavailable(f"stage {name}: wandb_project is set, but wandb is not installed here: pip install wandb, "
                          "or leave wandb_project empty")
    for path in (settings.data, init):
        if not Path(path).exists():  # an earlier stage's output, not made yet
            raise not_made_yet(name, f"{os.path.abspath(path)} does not exist")
    stats = read_stats(settings.data)
    if problem := seq_length_mismatch(settings.seq_length, settings.data, stats) or \
            empty_training_split(settings.data, stats):
        raise InputError(f"stage {name}: {problem}")
    if is_hf_folder(init):
        try:
            config = read_config(init)
            check_supported(config)
        except InputError as e:
            raise InputError(f"stage {name}: init {init}: {e}") from None
        check_hf_weights(init, config)  # names the file; else every rank fails loading it
    elif not (Path(init) / "checkpoints").is_dir():
        raise MissingInput(f"stage {name}: init {init} is neither a Hugging Face folder (config.json) nor a train "
                           "stage's folder (checkpoints/)")
    if settings.export_hf and not has_tokenizer(side_files_from(init)):
        # Else the export, hours later, would have weights but no tokenizer or chat template to serve with.
        raise InputError(f"stage {name}: {side_files_from(init)} has no tokenizer ({', '.join(TOKENIZER_FILES)}) "
                         "for the export to take; start from a folder with one, or export the earlier stage "
                         "(export_hf: true)")
    rendered_with = stats.get("made_from", {})
    if settings.export_hf and "tokenizer_files" in rendered_with:  # recorded for a local tokenizer folder
        # the data was rendered with `model.tokenizer`, the export serves with init's: they must be the same files
        served = tokenizer_digests(side_files_from(init))
        differ = sorted(n for n in served.keys() | rendered_with["tokenizer_files"].keys()
                        if served.get(n) != rendered_with["tokenizer_files"].get(n))
        if differ:
            raise InputError(f"stage {name}: {settings.data} was rendered with the tokenizer of "
                             f"{rendered_with['tokenizer']}, but the export takes {side_files_from(init)}'s, and "
                             f"{', '.join(differ)} differ: the model would be served with another chat template than "
                             "it was trained with. Prepare the data with the tokenizer of the folder training starts "
                             "from, or put the data's tokenizer files into that folder.")
    try:
        config = model_config(settings, init)
    except MissingInput as e:  # an earlier stage's folder, before its first checkpoint
        raise not_made_yet(name, str(e)) from None
    check_layout_of(settings, config, name)


def check(settings: Settings, name: str, recipe: Recipe, step: Step) -> None:
    """What `recipe run` can tell of the stage before its first stage: a parallel layout Megatron would not run,
    against the model where the recipe says which before any stage runs (as `recipe plan` reads it; not a model
    another kind of stage makes), and a stage of several nodes, which only a Slurm job trains (`RunsElsewhere`: the
    run stops there). Nothing where the stage's Slurm job finished training: the run completes the stage from its
    work, launching nothing."""
    from swehero.recipe.engine import stage_dir
    from swehero.recipe.plan import trained_config

    if workers_finished(stage_dir(recipe, step.stage), step.resume, settings.export_hf):
        return
    check_layout_of(settings, trained_config(recipe, step.stage), name)
    if settings.nodes > 1:
        raise RunsElsewhere(f"spans {settings.nodes} nodes (only a Slurm job trains it): launch it with "
                            f"`swehero train RECIPE --stage {name} --launcher slurm`")


def check_this_node(settings: Settings, name: str) -> None:
    """What every worker on this node would fail on after importing Megatron, or train otherwise than meant, that
    only this node can tell (a Slurm job's nodes are other machines, its image maybe another environment): GPUs
    where the stage trains on them (a container started without them, a driver mismatch: `auto` trains on the
    CPU then, which a stage that needs Transformer Engine cannot, and the rest is said on stderr), as many as it
    starts, and Transformer Engine where its layout needs it."""
    import sys

    import torch

    from swehero.train.model_setup import has_transformer_engine, layer_spec

    cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not cuda:
        raise Unavailable(f"stage {name}: device is cuda, but no CUDA GPU is visible on this node (no GPU, a "
                          "container started without them, a driver mismatch)")
    if cuda and settings.device != "cpu" and (shown := torch.cuda.device_count()) < settings.gpus_per_node:
        raise Unavailable(f"stage {name}: gpus_per_node is {settings.gpus_per_node}, but this node shows {shown} "
                          "GPU(s) (CUDA_VISIBLE_DEVICES?)")
    try:
        layer_spec(settings, settings.device != "cpu" and cuda and has_transformer_engine())
    except InputError as e:
        where = "" if cuda or settings.device == "cpu" else (
            ", which the CPU cannot run: no CUDA GPU is visible on this node (device auto trains on the CPU then)")
        raise InputError(f"stage {name}: {e}{where}") from None
    if settings.device == "auto" and not cuda:
        print(f"warning: stage {name}: no CUDA GPU is visible on this node: device auto trains on the CPU, "
              f"{settings.gpus_per_node} gloo process(es)", file=sys.stderr)


def check_layout_of(settings: Settings, config: dict | None, name: str) -> None:
    """The stage's parallel layout against the model config it trains (None: not known yet), on all its
    processes."""
    from swehero.train.config import LayoutError, check_layout

    try:
        check_layout(settings, config, settings.nodes * settings.gpus_per_node)
    except LayoutError as e:
        raise InputError(f"stage {name}: {e}") from None


def workers_finished(folder: Path, resume: bool, export_hf: bool) -> bool:
    """Whether the attempt a stage resumes trained to the end (a Slurm job, or a run stopped just after its
    workers finished) and exported what `export_hf` asks: nothing is left to launch."""
    from swehero.train.worker import FINISHED

    return resume and (folder / FINISHED).exists() and (json.loads((folder / FINISHED).read_text())["hf"]
                                                        or not export_hf)


def spans_nodes(name: str, nodes: int) -> InputError:
    """Why the stage cannot train here: only a Slurm job starts one torchrun per node."""
    return InputError(f"stage {name} spans {nodes} nodes: launch it with "
                      f"`swehero train RECIPE --stage {name} --launcher slurm`")


def not_made_yet(stage: str, missing: str) -> MissingInput:
    return MissingInput(f"stage {stage} cannot start: {missing}; run the stages that make it first "
                        "(swehero recipe run)")


def paths_read(job_path: Path) -> list[Path]:
    """What the workers of a job file read: this stage's folder, the packed data and the initial weights (an earlier
    stage's folder, or a Hugging Face one). Not the whole run folder: the links in other stages' folders (a
    download's into a hub cache since cleaned, a venv's into /usr) are nothing the workers read."""
    job = json.loads(Path(job_path).read_text())
    return [Path(job["dir"]), Path(job["settings"]["data"]), Path(job["init"])]


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    if not workers_finished(ctx.dir, ctx.resume, settings.export_hf):
        train_here(settings, ctx)
    outputs = {"checkpoints": str(ctx.dir / "checkpoints"), "metrics": str(ctx.dir / "metrics.jsonl"),
               "plot": str(ctx.dir / "loss.png")}
    if settings.export_hf:
        outputs["hf"] = str(ctx.dir / "hf")
    return outputs


def slurm_job(recipe, stage, sbatch_options: list[str], container_image: str | None) -> Path:
    """Write the stage's job file and an sbatch script for it (one torchrun per node) into the stage folder;
    returns the script. What the workers read must exist (or the error names it) before the job waits in a queue;
    in a container, every folder they read is mounted."""
    from swehero.recipe.engine import stage_dir
    from swehero.train.launch import container_mounts, slurm_script

    folder = stage_dir(recipe, stage)  # made by the hand-off (recipe.engine.hand_off)
    job = job_file(stage.settings, StageContext(stage.name, folder.resolve(), recipe.seed, recipe.model, {},
                                                resume=True))
    try:
        mounts = container_mounts(paths_read(job))  # also checks every path and symlink target exists
    except FileNotFoundError as e:
        raise not_made_yet(stage.name, str(e)) from None
    if container_image and Path(container_image).is_file():
        # pyxis takes a squashfs file only by a path starting with `.` or `/`; `swehero.sqsh` would be pulled from
        # Docker Hub as an image of that name, on every node, after the wait in the queue
        container_image = os.path.abspath(container_image)
    try:
        text = slurm_script(folder, stage.settings.nodes, stage.settings.gpus_per_node, f"{recipe.name}-{stage.name}",
                            sbatch_options, container_image, mounts if container_image else [])
    except ValueError as e:  # a folder pyxis cannot mount
        raise InputError(f"stage {stage.name}: {e}") from None
    script = folder / "train.sbatch"
    script.write_text(text)
    return script


def train_here(settings: Settings, ctx: StageContext) -> None:
    """The workers on this node, under torchrun. Stopped meanwhile (Ctrl-C, or SIGTERM: see swehero.cli), this asks
    them to save at their next step boundary and waits for them before it goes on stopping; stopped again, it ends
    them at once."""
    from swehero.process import die_with_parent, start_group
    from swehero.train.launch import torchrun_command
    from swehero.train.worker import FINISHED

    if settings.nodes > 1:
        raise spans_nodes(ctx.name, settings.nodes)
    job_file(settings, ctx)
    check_this_node(settings, ctx.name)
    # In its own session, so that Ctrl-C reaches this process alone, which then stops torchrun as SIGTERM would;
    # guarded, so that nothing of it (workers, their checkpoint writers) outlives this process killed outright.
    torchrun = start_group(torchrun_command(ctx.dir, settings.nodes * settings.gpus_per_node),
                           preexec_fn=die_with_parent)
    try:
        status = torchrun.wait()
    except BaseException:
        stop_at_step_boundary(torchrun)
        raise
    if status != 0:
        raise ProcessFailed(f"training exited with status {status}; see the output above")
    if not (ctx.dir / FINISHED).exists():  # a stop signal sent to torchrun or its workers directly
        raise ProcessFailed("training stopped before its last step; see the output above")


def stop_at_step_boundary(torchrun: subprocess.Popen) -> None:
    from swehero.train.launch import STOP_SIGNAL

    torchrun.send_signal(STOP_SIGNAL)  # handed on to the workers (swehero.train.launch)
    try:
        torchrun.wait()
    except BaseException:  # stopped again: now
        torchrun.kill()  # its workers die with it
        raise
