"""`swehero distill` (run, merge, decontaminate) and `swehero filter`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from swehero.distill.filter_io import filter_file
from swehero.distill.filter_stage import Settings as FilterSettings
from swehero.distill.run import Settings, distill as run_distill
from swehero.distill.shards import merge as merge_shards, slurm_job
from swehero.errors import few
from swehero.recipe.options import Command, DefaultCommandGroup, launcher_options, settings_options, submit_if_asked
from swehero.rollout.decontam import DecontamConfig, decontaminate_file

_OUT_DIR = click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Folder to write into (see above); a rerun into it goes on where it stopped.")


@click.group(cls=DefaultCommandGroup, default="run")
def distill() -> None:
    """Teacher rollouts on training tasks (SWE-Zero / SWE-Hero data); `distill ...` is `distill run ...`."""


@distill.command(examples=[
    "swehero distill run --tasks toy/tasks.jsonl --mode exec --policy oracle --rollouts 2 --workers 4 --out d"])
@settings_options(Settings)
@_OUT_DIR
@launcher_options("local", "an array job (one shard per array task)")
@click.option("--shards", default=1, show_default=True, help="Array tasks (with --launcher slurm).")
def run(settings: Settings, out: Path, launcher: str, sbatch_options: tuple[str, ...], submit: bool,
        shards: int) -> None:
    """Run every (task, rollout) not yet in OUT/trajectories.jsonl, then write OUT/summary.json."""
    if launcher == "slurm":
        submit_if_asked(slurm_job(settings, shards, out, list(sbatch_options)), submit)
        return click.echo(f"when every array task has ended: swehero distill merge {out}/shard-* --out {out}")
    summary = run_distill(settings, out)
    click.echo(json.dumps({k: summary[k] for k in ("episodes", "finish_reasons", "failed_this_run",
                                                   "outstanding_failures", "wall_s")}))


@distill.command(examples=["swehero distill merge runs/zero/shard-* --out runs/zero"])
@click.argument("shard_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@_OUT_DIR
def merge(shard_dirs: tuple[Path, ...], out: Path) -> None:
    """Merge shard outputs (e.g. of a Slurm array job) into OUT/trajectories.jsonl and OUT/summary.json."""
    summary = merge_shards(list(shard_dirs), out)
    click.echo(f"{summary['episodes']} episodes from {len(shard_dirs)} shard(s) "
               f"({summary['duplicates_skipped']} duplicate(s) skipped) -> {out}")
    if summary["unfinished"]:
        click.echo("unfinished (no summary.json, or not started: run it, a rerun resumes, then merge again): "
                   + " ".join(summary["unfinished"]), err=True)
    if summary["failed"]:
        click.echo("failed episodes outstanding (rerun the shard, it retries them, then merge again): "
                   + " ".join(f"{shard} ({n})" for shard, n in summary["failed"].items()), err=True)
    if summary["not_attempted"]:
        click.echo("episodes not attempted, their repositories missing (put them in place, rerun the shard, then "
                   "merge again): " + " ".join(f"{shard} ({n})" for shard, n in summary["not_attempted"].items())
                   + "; " + few(summary["missing_repositories"], 5, "; "), err=True)


@distill.command(examples=[
    "swehero distill decontaminate swe-gym.jsonl --against verified --against multilingual --out clean.jsonl"])
@click.argument("tasks", type=click.Path(exists=True, dir_okay=False))
@click.option("--against", multiple=True, required=True, help="Evaluation set: task file, verified or multilingual.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Kept tasks (.jsonl).")
@settings_options(DecontamConfig)
def decontaminate(tasks: str, against: tuple[str, ...], out: Path, settings: DecontamConfig) -> None:
    """Drop training tasks overlapping evaluation sets; writes OUT and its report (OUT stem.decontamination.json)."""
    report = decontaminate_file(tasks, list(against), out, settings)
    click.echo(f"kept {report['kept']} of {report['train_tasks']} tasks; dropped {report['by_reason']}")


@click.command("filter", cls=Command,
               examples=["swehero filter --stage zero runs/zero/trajectories.jsonl --out runs/zero-filtered"])
@settings_options(FilterSettings, positional=("trajectories",), required=("rules.stage",))
@_OUT_DIR
def filter_(settings: FilterSettings, out: Path) -> None:
    """Apply the paper's trajectory filters; writes OUT/trajectories.jsonl, dropped.jsonl, filter_report.json."""
    report = json.loads(Path(filter_file(settings.trajectories, settings.rules, out)["report"]).read_text())
    selected = f"; selected {report['selected']['trajectories']} of them" if "selected" in report else ""
    click.echo(f"kept {report['kept']} of {report['input']}: "
               + ", ".join(f"{r['name']} -{r['dropped']}" for r in report["rules"]) + selected)
