"""`swehero agent run` (one episode) and `swehero agent tool` (one tool call)."""

from __future__ import annotations

import signal
import sys
import tempfile
from pathlib import Path

import click


@click.group()
def agent() -> None:
    """The OpenHands-compatible agent: tools, sandboxed runtimes, policies.

    \b
    Example:
      swehero agent run --task task.json --repo-dir ./repo --policy oracle --mode zero
    """


@agent.command()
@click.option("--task", "task_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="SWE-bench-shaped task row(s): .json (object or list) or .jsonl.")
@click.option("--instance-id", default=None, help="Which task, if the file holds several.")
@click.option("--policy", type=click.Choice(["openai", "oracle"]), default="openai", show_default=True)
@click.option("--mode", type=click.Choice(["zero", "exec"]), default="zero", show_default=True)
@click.option("--runtime", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--repo-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Git repository of the task (local runtime).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Trajectory JSON, rewritten after every step. Default: <instance_id>.<mode>.json.")
@click.option("--base-url", default="http://127.0.0.1:8000/v1", show_default=True, help="OpenAI-compatible API root.")
@click.option("--model", default="", help="Served model name (default: the server's first).")
@click.option("--temperature", default=0.7, show_default=True)
@click.option("--top-p", default=0.8, show_default=True)
@click.option("--top-k", default=20, show_default=True, help="-1 to leave it out of requests.")
@click.option("--max-steps", default=100, show_default=True)
@click.option("--root", default="", help="Agent-visible repo path, e.g. /testbed or /workspace/{repo}__{version}.")
@click.option("--image", default="", help="Docker image (default: SWE-bench's instance image).")
@click.option("--prompts", "prompts_file", default="", help="Prompts file from `swehero agent prompts extract`.")
def run(task_path, instance_id, policy, mode, runtime, repo_dir, out, base_url, model, temperature, top_p, top_k,
        max_steps, root, image, prompts_file) -> None:
    """Run one episode on one task and write its trajectory; prints the exit reason and the patch size.

    \b
    Example:
      swehero agent run --task task.json --repo-dir ./repo --policy openai --mode exec \\
          --base-url http://127.0.0.1:8000/v1 --out traj.json
    """
    from swehero.agent.loop import LoopConfig
    from swehero.agent.openai_policy import OpenAIConfig
    from swehero.agent.run import run_task
    from swehero.agent.settings import AgentSettings
    from swehero.agent.task import Task
    from swehero.rollout.tasks import load_tasks, select

    # SIGTERM unwinds like Ctrl-C, so the sandbox or container is cleaned up and the trajectory saved
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    tasks = select(load_tasks(str(task_path)), [instance_id] if instance_id else [])
    if len(tasks) != 1:
        raise click.BadParameter(f"{task_path} holds {len(tasks)} tasks: choose one with --instance-id",
                                 param_hint="--task")
    task = Task.from_row(tasks[0])
    settings = AgentSettings(mode=mode, policy=policy, runtime=runtime, root=root, image=image, prompts=prompts_file,
                             loop=LoopConfig(max_steps=max_steps),
                             openai=OpenAIConfig(base_url=base_url, model=model, temperature=temperature,
                                                 top_p=top_p, top_k=top_k))
    out = out or Path(f"{task.instance_id}.{mode}.json")
    record = run_task(task, settings, out, repo_dir)
    meta = record["metadata"]
    click.echo(f"{task.instance_id}: {meta['finish_reason']} after {meta['steps']} steps, patch "
               f"{len(record['patch'].splitlines())} lines, banned={meta.get('banned', False)} -> {out}")


@agent.group()
def prompts() -> None:
    """The agent's opening messages, taken from training data."""


@prompts.command()
@click.argument("trajectories", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Prompts file to write.")
@click.option("--tasks", "tasks_file", default="", help="Their task file: problem statements matched exactly.")
def extract(trajectories, out, tasks_file) -> None:
    """Derive the system prompt and task-message template of each stage (zero / hero) from canonical TRAJECTORIES;
    fails, naming two disagreeing trajectories, unless a template covers 95% of its stage.

    \b
    Example:
      swehero agent prompts extract runs/hero-7b/import_hero/hero.jsonl --out prompts.json
      swehero agent run --task task.json --repo-dir ./repo --prompts prompts.json --mode exec
    """
    from swehero.agent.prompts import PromptsError, extract_files, summary

    try:
        found = extract_files(list(trajectories), out, tasks_file)
    except PromptsError as e:
        raise click.ClickException(str(e)) from None
    for line in summary(found):
        click.echo(line)
    click.echo(f"wrote {out}")


@agent.command()
@click.option("--repo", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder the sandbox shows at --root (edited in place).")
@click.option("--mode", type=click.Choice(["zero", "exec"]), default="zero", show_default=True)
@click.option("--root", default="/testbed", show_default=True, help="Where the agent sees the repository.")
@click.argument("name")
@click.argument("args_json")
def tool(repo, mode, root, name, args_json) -> None:
    """Run one tool call NAME with ARGS_JSON in the local sandbox and print the observation.

    \b
    Example:
      swehero agent tool --repo . --mode zero execute_bash '{"command": "git log --oneline -3"}'
      swehero agent tool --repo . str_replace_editor '{"command": "view", "path": "/testbed"}'
    """
    from swehero.agent.local import LocalRuntime
    from swehero.agent.tools import Tools

    with tempfile.TemporaryDirectory(prefix="swehero-tool-") as tmp:
        runtime = LocalRuntime(repo, root, Path(tmp))
        try:
            outcome = Tools(runtime, mode).call(name, args_json)
        finally:
            runtime.close()
    click.echo(outcome.observation)
    if outcome.banned:
        click.echo(f"[banned: {', '.join(outcome.banned)}]", err=True)
    raise SystemExit(1 if outcome.error else 0)
