"""`swehero eval run|grade|report|select|compare|toy`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from swehero.agent.settings import AgentSettings
from swehero.eval.pipeline import Settings
from swehero.serve.server import ServeConfig

_AGENT = AgentSettings()
_OUT = click.argument("out", type=click.Path(file_okay=False, path_type=Path))
_GRADER = click.option("--grader", type=click.Choice(["swebench", "local", "none"]), default="swebench",
                       show_default=True, help="Official harness (Docker), local pytest grader, or no grading.")


@click.group("eval")
def eval_group() -> None:
    """Evaluate a checkpoint on SWE-bench Verified / Multilingual (or any SWE-bench-shaped task file).

    \b
    Example:
      swehero eval run runs/eval-32b --tasks verified --serve /ckpt/swe-hero-32b --workers 16
    """


@eval_group.command()
@_OUT
@click.option("--tasks", default="toy", show_default=True, help="Task file, `verified`, `multilingual` or `toy`.")
@click.option("--instances", default="", help="Comma-separated instance ids.")
@click.option("--limit", default=0, help="At most N instances.")
@click.option("--shard", default="", help="i/n: this machine's share.")
@click.option("--policy", type=click.Choice(["openai", "oracle", "gold", "empty"]), default=_AGENT.policy,
              show_default=True)
@click.option("--mode", type=click.Choice(["exec", "zero"]), default=_AGENT.mode, show_default=True)
@click.option("--runtime", type=click.Choice(["local", "docker"]), default=_AGENT.runtime, show_default=True)
@click.option("--serve", default="", help="Checkpoint to serve with vLLM for this run.")
@click.option("--base-url", default="", help="An already running OpenAI-compatible endpoint.")
@click.option("--model-name", default="", help="model_name_or_path in the predictions (and paper lookup).")
@click.option("--max-model-len", default=32768, show_default=True)
@click.option("--workers", default=1, show_default=True, help="Instances attempted concurrently.")
@click.option("--max-steps", default=_AGENT.loop.max_steps, show_default=True)
@click.option("--time-limit", default=_AGENT.time_limit_s, show_default=True, help="Seconds per instance.")
@click.option("--repos", default="", help="Folder of local clones (owner__name) for local runtime/grader.")
@click.option("--runs", default=1, show_default=True, help="Independent attempts per instance (pass@k, spread).")
@click.option("--max-attempts", default=1, show_default=True, help="Attempts when one ends without a patch.")
@click.option("--seed", default=0, show_default=True, help="Sampling seed the attempts' seeds derive from.")
@click.option("--prompts", "prompts_file", default="", help="Prompts file from `swehero agent prompts extract`.")
@_GRADER
def run(out: Path, instances: str, policy, mode, runtime, base_url, max_steps, time_limit, repos, grader, serve,
        max_model_len, prompts_file, **options) -> None:
    """Attempt, grade and report; rerunning the same command resumes where it stopped.

    \b
    Examples:
      swehero eval run runs/toy-gold --tasks toy --policy gold --grader local
      swehero eval run runs/v-32b --tasks verified --serve /ckpt/swe-hero-32b --max-model-len 131072 --workers 16
    """
    from dataclasses import replace

    from swehero.eval.pipeline import evaluate

    agent = replace(_AGENT, policy=policy, mode=mode, runtime=runtime, time_limit_s=time_limit, prompts=prompts_file,
                    loop=replace(_AGENT.loop, max_steps=max_steps), openai=replace(_AGENT.openai, base_url=base_url))
    settings = Settings(instances=[i for i in instances.split(",") if i], agent=agent, repos=repos,
                        serve=ServeConfig(model=serve, max_model_len=max_model_len), **options)
    settings.grading.grader = grader
    evaluate(settings, out, progress=click.echo)


def _saved_tasks(out: Path) -> tuple[list[dict], dict]:
    from swehero.rollout.tasks import load_tasks, select

    saved = json.loads((out / "eval.json").read_text())
    return select(load_tasks(saved["tasks"]), saved["instance_ids"]), saved


@eval_group.command()
@_OUT
@_GRADER
@click.option("--repos", default="", help="Folder of local clones (local grader); default: beside the task file.")
@click.option("--dataset", default="", help="Dataset the harness grades against (default: the benchmark's).")
@click.option("--workers", default=4, show_default=True)
@click.option("--run-id", default="", help="Harness run id (default: swehero.<folder name>).")
@click.option("--prune-images", is_flag=True, help="Remove each instance's image after grading it.")
def grade(out: Path, grader, repos, dataset, workers, run_id, prune_images) -> None:
    """Grade an eval folder's predictions (only those not graded yet), then rewrite its report.

    \b
    Example:
      swehero eval grade runs/v-32b --workers 8 --prune-images
    """
    from swehero.eval.grade import GradingSettings
    from swehero.eval.grade import grade as grade_predictions
    from swehero.eval.harness import HarnessConfig
    from swehero.eval.pipeline import harness_dataset

    from swehero.eval.pipeline import report_eval
    from swehero.eval.runs import run_dirs

    tasks, saved = _saved_tasks(out)
    settings = GradingSettings(grader=grader, workers=workers, harness=HarnessConfig(
        dataset=dataset, run_id=run_id, max_workers=workers, prune_images=prune_images))
    repo_root = Path(repos or saved.get("repos") or Path(saved["tasks"]).parent / "repos")
    for run in run_dirs(out, saved.get("runs", 1)):
        grade_predictions(tasks, run, settings, repo_root, dataset or harness_dataset(saved["tasks"]), click.echo)
    report_eval(out, tasks, saved, progress=click.echo)


@eval_group.command()
@_OUT
def report(out: Path) -> None:
    """Rewrite report.json / report.md / report.png of an eval folder from its files.

    \b
    Example:
      swehero eval report runs/v-32b
    """
    from swehero.eval.pipeline import report_eval

    tasks, saved = _saved_tasks(out)
    report_eval(out, tasks, saved, progress=click.echo)


@eval_group.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--verifier", required=True, help="Verifier checkpoint (Hugging Face folder) to score attempts with.")
@click.option("--base-url", default="", help="An already running server of that checkpoint.")
@click.option("--seq-length", default=32768, show_default=True, help="The verifier's training sequence length.")
@click.option("--max-model-len", default=0, help="The server's context (default: the sequence length).")
@click.option("--tp", "tensor_parallel_size", default=1, show_default=True, help="GPUs for the server.")
@click.option("--dtype", default="auto", show_default=True, help="Weights dtype for vLLM (CPU: float32/bfloat16).")
@click.option("--workers", default=8, show_default=True, help="Attempts scored concurrently.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the scores and report go (default: the eval folder, when there is one).")
def select(folders: tuple[Path, ...], verifier, base_url, seq_length, max_model_len, tensor_parallel_size, dtype,
           workers, out) -> None:
    """Score every attempt of the runs of FOLDERS (eval folders of the same tasks, runs in the order given) with a
    trained verifier, select one per instance, and report best@k beside pass@k and the majority patch.

    \b
    Example:
      swehero eval select runs/v-32b-8runs --verifier runs/hero-32b-verifier/sft_verifier/hf --seq-length 131072 --tp 8
    """
    from swehero.eval.select import VerifierSettings, select_best

    if out is None and len(folders) > 1:
        raise click.UsageError("several eval folders: say where the selection goes (--out)")
    serve = ServeConfig(model=verifier, max_model_len=max_model_len or seq_length,
                        tensor_parallel_size=tensor_parallel_size, dtype=dtype)
    settings = VerifierSettings(serve=serve, endpoint=base_url, seq_length=seq_length, workers=workers)
    select_best(list(folders), settings, out or folders[0], progress=click.echo)


@eval_group.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True, path_type=Path))
def compare(runs: tuple[Path, ...]) -> None:
    """Put the reports of several eval folders side by side (markdown).

    \b
    Example:
      swehero eval compare runs/v-7b runs/v-14b runs/v-32b
    """
    from swehero.eval.compare import compare as compare_reports

    click.echo(compare_reports(list(runs)), nl=False)


@eval_group.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def toy(dest: Path) -> None:
    """Build the bundled toy tasks (git repositories + tasks.jsonl) into DEST.

    \b
    Example:
      swehero eval toy /tmp/toy && swehero eval run /tmp/e --tasks /tmp/toy/tasks.jsonl --policy gold --grader local
    """
    from swehero.rollout.toy import build_toy_tasks

    click.echo(f"wrote {build_toy_tasks(dest)}")
