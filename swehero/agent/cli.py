"""`swehero agent run` (one episode), `agent tool` (one tool call) and `agent prompts extract`."""

from __future__ import annotations

import tempfile
from contextlib import closing
from pathlib import Path

import click

from swehero.agent.local import LocalRuntime
from swehero.agent.loop import TimeLimit
from swehero.agent.prompts import extract_files, summary
from swehero.agent.prompts_stage import Settings as PromptsSettings
from swehero.agent.run import run_task
from swehero.agent.settings import AgentSettings
from swehero.agent.task import SWEBENCH_ROOT, Task
from swehero.agent.tools import Tools
from swehero.recipe.options import Group, settings_options
from swehero.rollout.attempt import time_limit
from swehero.rollout.tasks import load_tasks, select


@click.group(cls=Group)
def agent() -> None:
    """The OpenHands-compatible agent: one episode, one tool call, its prompts."""


@agent.command(examples=[
    "swehero agent run --task task.json --repo-dir ./repo --policy oracle --mode zero",
    "swehero agent run --task verified.jsonl --instance-id django__django-11099 --runtime docker"])
@click.option("--task", "task_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SWE-bench-shaped task row(s): .json (object or list), .jsonl or .parquet.")
@click.option("--instance-id", default=None, help="Which task, if the file holds several.")
@click.option("--repo-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Git repository of the task (local runtime).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Trajectory JSON, rewritten after every step. Default: <instance_id>.<mode>.json.")
# By hand the agent talks to `swehero serve`'s default address; in a stage the stage names the endpoint.
@settings_options(AgentSettings, defaults={"openai.base_url": "http://127.0.0.1:8000/v1"})
def run(task_path: Path, instance_id: str | None, repo_dir: Path | None, out: Path | None,
        settings: AgentSettings) -> None:
    """Run one episode on one task and write its trajectory; prints how it ended and the patch size."""
    tasks = select(load_tasks(str(task_path)), [instance_id] if instance_id else [])
    if len(tasks) != 1:
        raise click.BadParameter(f"{task_path} holds {len(tasks)} tasks: choose one with --instance-id",
                                 param_hint="--task")
    task = Task.from_row(tasks[0])
    out = out or Path(f"{task.instance_id}.{settings.mode}.json")
    with time_limit(settings) as clock:  # as a rollout's attempt has it, less the kill after the grace period
        try:
            record = run_task(task, settings, out, repo_dir, progress=clock)  # SIGTERM (swehero.cli): trajectory kept
        except TimeLimit:  # the episode's loop ends at the limit itself, keeping its patch: this was setup
            raise click.ClickException(f"time limit {settings.time_limit_s:g}s reached while {clock.doing}") from None
    meta = record["metadata"]
    click.echo(f"{task.instance_id}: {meta['finish_reason']} after {meta['steps']} steps, patch "
               f"{len(record['patch'].splitlines())} lines, banned={meta.get('banned', False)} -> {out}")


@agent.command(examples=[
    "swehero agent tool --repo . --mode zero execute_bash '{\"command\": \"git log --oneline -3\"}'"])
@click.option("--repo", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder the sandbox shows at --root (edited in place).")
@click.option("--mode", type=click.Choice(["zero", "exec"]), default="zero", show_default=True,
              help="zero (SWE-Zero: execution-free, banned commands are refused) or exec (SWE-Hero: code and "
                   "tests may run).")
@click.option("--root", default=SWEBENCH_ROOT, show_default=True, help="Where the agent sees the repository.")
@click.argument("name")
@click.argument("args_json")
def tool(repo, mode, root, name, args_json) -> None:
    """Run one tool call NAME with ARGS_JSON in the local sandbox and print the observation."""
    with tempfile.TemporaryDirectory(prefix="swehero-tool-") as tmp, closing(LocalRuntime(repo, root, Path(tmp))) as rt:
        outcome = Tools(rt, mode).call(name, args_json)
    click.echo(outcome.observation)
    if outcome.banned:
        click.echo(f"[banned: {', '.join(outcome.banned)}]", err=True)
    raise SystemExit(1 if outcome.error else 0)


@agent.group()
def prompts() -> None:
    """The agent's opening messages, taken from training data."""


@prompts.command(examples=[
    "swehero agent prompts extract runs/hero-7b/import_hero/trajectories.jsonl --out prompts.json"])
@settings_options(PromptsSettings, positional=("trajectories",))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Prompts file to write.")
def extract(settings: PromptsSettings, out: Path) -> None:
    """Derive the system prompt and task-message template of each stage (zero / hero) from canonical TRAJECTORIES;
    fails, naming two disagreeing trajectories, unless a template covers 95% of its stage."""
    found = extract_files(list(settings.trajectories), out, settings.tasks, progress=click.echo)
    click.echo("\n".join(summary(found) + [f"wrote {out}"]))
