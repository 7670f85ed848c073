"""`swehero eval run|grade|report|select|compare|toy|images build`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from swehero.eval.compare import compare as compare_reports
from swehero.eval.compare_stage import Settings as CompareSettings
from swehero.eval.grade import GradingSettings
from swehero.eval.images import build_command
from swehero.eval.pipeline import Settings, evaluate, open_eval, regrade, report_eval
from swehero.eval.select import VerifierSettings, select_best
from swehero.recipe.options import Group, given, settings_options
from swehero.rollout.toy import build_toy_tasks

_OUT = click.argument("out", type=click.Path(file_okay=False, path_type=Path))


@click.group("eval", cls=Group)
def eval_group() -> None:
    """Evaluate a checkpoint on SWE-bench Verified / Multilingual (or any SWE-bench-shaped task file)."""


@eval_group.command(examples=[
    "swehero eval run runs/toy-gold --tasks toy --policy gold --grader local",
    "swehero eval run runs/v-32b --tasks verified --serve-model /ckpt/swe-hero-32b --max-model-len 131072 "
    "--tensor-parallel-size 4 --workers 16 --runtime docker --prompts prompts.json --runs 3"])
@_OUT
@settings_options(Settings, exclude=("verifier",))  # the verifier: `eval select`, or --set verifier.KEY=...
def run(out: Path, settings: Settings) -> None:
    """Attempt, grade and report into OUT; rerunning the same command resumes where it stopped."""
    evaluate(settings, out, progress=click.echo)


@eval_group.command(examples=["swehero eval grade runs/v-32b --max-workers 8 --prune-images"])
@_OUT
@click.option("--repos", default="", help="Folder of the task repositories (local grader); default: the run's.")
@settings_options(GradingSettings)
def grade(out: Path, repos: str, settings: GradingSettings) -> None:
    """Grade an eval folder's predictions (only those not graded yet), then rewrite its report. Without --grader,
    with the grader the eval graded with (eval.json), else swebench."""
    regrade(out, settings, repos, progress=click.echo, grader_named=given("grader"))


@eval_group.command(examples=["swehero eval report runs/v-32b"])
@_OUT
def report(out: Path) -> None:
    """Rewrite the reports of an eval folder (report.json / .md / .png) from its files."""
    tasks, saved, _ = open_eval(out, progress=click.echo)
    report_eval(out, tasks, saved, progress=click.echo)


@eval_group.command(examples=[
    "swehero eval select runs/v-32b-8runs --verifier runs/hero-32b-verifier/sft_verifier/hf --seq-length 131072 "
    "--max-model-len 131072 --tensor-parallel-size 8"])
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--verifier", required=True, help="The verifier checkpoint (a Hugging Face folder) to serve.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the scores and report go (default: the eval folder, when there is one).")
@settings_options(VerifierSettings, exclude=("serve.model",))
def select(folders: tuple[Path, ...], verifier: str, out: Path | None, settings: VerifierSettings) -> None:
    """Score every attempt of the runs of FOLDERS (eval folders of the same tasks, runs in the order given) with a
    trained verifier, select one per instance, and report best@k beside pass@k and the majority patch."""
    if out is None and len(folders) > 1:
        raise click.UsageError("several eval folders: say where the selection goes (--out)")
    settings = replace(settings, serve=replace(settings.serve, model=verifier))
    select_best(list(folders), settings, out or folders[0], progress=click.echo)


@eval_group.command(examples=["swehero eval compare runs/v-7b runs/v-14b runs/v-32b"])
@settings_options(CompareSettings, positional=("runs",))
def compare(settings: CompareSettings) -> None:
    """Put eval folders side by side (markdown), each against the first, with paired bootstrap intervals."""
    click.echo(compare_reports(settings.runs), nl=False)


@eval_group.command(examples=[
    "swehero eval toy /tmp/toy && swehero eval run /tmp/e --tasks /tmp/toy/tasks.jsonl --policy gold --grader local"])
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def toy(dest: Path) -> None:
    """Build the bundled toy tasks (git repositories, tasks.jsonl, heldout.jsonl) into DEST."""
    click.echo(f"wrote {build_toy_tasks(dest)}")


@eval_group.group()
def images() -> None:
    """SWE-bench-shaped instance images for task files without published images (built here, offline)."""


@images.command("build",
                examples=["swehero eval images build --tasks /tmp/toy/tasks.jsonl --out /tmp/toy/harness.jsonl"])
@click.option("--tasks", "tasks_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Task file (.jsonl/.json/.parquet, SWE-bench schema).")
@click.option("--repos", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the tasks' git repositories (owner__name); default: repos/ beside the task file.")
@click.option("--base", default="", help="Base image (bash, git, kill, python3 with venv); default: swehero's own, "
                                         "built from Debian packages when missing.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the tasks with the harness's columns (image, eval_script, ...), for --grader swebench.")
def build_images_command(tasks_file: Path, repos: Path | None, base: str, out: Path | None) -> None:
    """Build one image per task (repository at /testbed at base_commit, dependencies in the `testbed` environment)
    and print their names: the docker runtime and the harness find them by these names."""
    click.echo("\n".join(build_command(tasks_file, repos, base, out, lambda line: click.echo(line, err=True))))
