"""`swehero distill` (run, merge, decontaminate) and `swehero filter`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from swehero.distill.filter_stage import Settings as FilterSettings
from swehero.recipe.options import settings_options

_LAUNCH_ONLY = ("launcher", "shards", "sbatch_args", "out", "shard", "progress")


class _DistillGroup(click.Group):
    """`swehero distill --tasks ...` means `swehero distill run --tasks ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DistillGroup)
def distill() -> None:
    """Teacher rollouts on training tasks (SWE-Zero / SWE-Hero data), resumable and parallel.

    \b
    Examples:
      swehero distill --tasks tasks.jsonl --mode zero --policy openai --teacher http://h1:8000/v1 \\
          --rollouts 3 --workers 32 --out runs/zero
      swehero distill merge runs/zero/shard-* --out runs/zero
    """


@distill.command()
@click.option("--tasks", required=True, type=click.Path(exists=True, dir_okay=False), help="Task file (SWE-bench schema).")
@click.option("--mode", type=click.Choice(["zero", "exec"]), default="zero", show_default=True)
@click.option("--policy", type=click.Choice(["openai", "oracle"]), default="openai", show_default=True)
@click.option("--rollouts", default=1, show_default=True, help="Episodes per task.")
@click.option("--workers", default=4, show_default=True, help="Episodes at once.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--teacher", "teachers", multiple=True, help="Teacher endpoint (repeat for several; least-loaded first).")
@click.option("--serve-model", default="", help="Checkpoint folder to serve with vLLM for the run (no --teacher).")
@click.option("--model", default="", help="Model name the endpoints serve (default: their first).")
@click.option("--runtime", type=click.Choice(["local", "docker"]), default="local", show_default=True)
@click.option("--repos", default="", help="Folder of task repositories (local runtime; default: repos/ by the tasks).")
@click.option("--repo-url", default="", help="Clone a bare mirror of each repository once from this URL/path "
              "template into --repos (default OUT/mirrors): {repo} = owner/name, {repo_dir} = owner__name.")
@click.option("--max-steps", default=100, show_default=True)
@click.option("--time-limit", default=1800.0, show_default=True, help="Seconds per episode.")
@click.option("--temperature", default=0.7, show_default=True)
@click.option("--max-reply-tokens", default=4096, show_default=True)
@click.option("--request-retries", default=5, show_default=True,
              help="Retries of a failed request before the episode fails over to another teacher.")
@click.option("--shard", default="", help="i/n: this shard of the tasks.")
@click.option("--limit", default=0, help="Only the first N tasks.")
@click.option("--exclude", multiple=True, help="Evaluation set to decontaminate against (file, verified, multilingual).")
@click.option("--progress", type=bool, default=True, show_default=True, help="Progress bar.")
@click.option("--launcher", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="slurm: write an array job (one shard per task) instead of running.")
@click.option("--shards", default=1, show_default=True, help="Array tasks (with --launcher slurm).")
@click.option("--sbatch-arg", "sbatch_args", multiple=True, help="Extra #SBATCH line, e.g. --gres=gpu:8.")
def run(**params) -> None:
    """Run every (task, rollout) not yet in OUT/trajectories.jsonl, then write OUT/summary.json.

    \b
    Example:
      swehero distill run --tasks toy/tasks.jsonl --mode exec --policy oracle --rollouts 2 --workers 4 --out d
    """
    from swehero.distill.run import Settings
    from swehero.distill.run import distill as run_distill
    from swehero.distill.shards import slurm_script
    from swehero.agent.loop import LoopConfig
    from swehero.agent.openai_policy import OpenAIConfig
    from swehero.agent.settings import AgentSettings
    from swehero.serve.server import ServeConfig

    if params["launcher"] == "slurm":
        out = params["out"]
        params["tasks"] = str(Path(params["tasks"]).resolve())  # array tasks may start elsewhere
        out.mkdir(parents=True, exist_ok=True)
        script = out / "distill.sbatch"
        script.write_text(slurm_script(_argv(params), params["shards"], out, params["sbatch_args"]))
        click.echo(f"wrote {script}; submit with: sbatch {script}")
        return
    settings = Settings(
        tasks=params["tasks"], rollouts=params["rollouts"], workers=params["workers"],
        endpoints=list(params["teachers"]), serve=ServeConfig(model=params["serve_model"]), shard=params["shard"],
        limit=params["limit"], exclude=list(params["exclude"]), progress=params["progress"],
        repo_url=params["repo_url"], repos=params["repos"],
        agent=AgentSettings(policy=params["policy"], mode=params["mode"], runtime=params["runtime"],
                            time_limit_s=params["time_limit"], loop=LoopConfig(max_steps=params["max_steps"]),
                            openai=OpenAIConfig(model=params["model"], temperature=params["temperature"],
                                                max_reply_tokens=params["max_reply_tokens"],
                                                request_retries=params["request_retries"])))
    summary = run_distill(settings, params["out"])
    click.echo(json.dumps({k: summary[k] for k in ("episodes", "finish_reasons", "failed_this_run", "wall_s")}))


def _argv(params: dict) -> list[str]:
    """The run's options as a command line, less those the launcher sets per array task."""
    args = []
    for option in click.get_current_context().command.params:
        value = params[option.name]
        for item in value if isinstance(value, tuple) else [value]:
            if option.name not in _LAUNCH_ONLY and item not in ("", None):
                args += [option.opts[0], str(item)]
    return args


@distill.command()
@click.argument("shard_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def merge(shard_dirs, out) -> None:
    """Merge shard outputs (e.g. of a Slurm array job) into OUT/trajectories.jsonl and OUT/summary.json.

    \b
    Example:
      swehero distill merge runs/zero/shard-* --out runs/zero
    """
    from swehero.distill.shards import merge as merge_shards

    summary = merge_shards(list(shard_dirs), out)
    click.echo(f"{summary['episodes']} episodes from {len(shard_dirs)} shard(s) "
               f"({summary['duplicates_skipped']} duplicate(s) skipped) -> {out}")


@distill.command()
@click.argument("tasks", type=click.Path(exists=True, dir_okay=False))
@click.option("--against", multiple=True, required=True, help="Evaluation set: task file, verified or multilingual.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Kept tasks (.jsonl).")
@click.option("--threshold", default=0.5, show_default=True, help="MinHash Jaccard for near-duplicate statements.")
def decontaminate(tasks, against, out, threshold) -> None:
    """Drop training tasks overlapping evaluation sets; writes OUT and OUT's decontamination.json report.

    \b
    Example:
      swehero distill decontaminate swe-gym.jsonl --against verified --against multilingual --out clean.jsonl
    """
    from swehero.distill.decontam import DecontamConfig, decontaminate_against
    from swehero.rollout.tasks import load_tasks

    kept, report = decontaminate_against(load_tasks(tasks), list(against), DecontamConfig(threshold=threshold))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in kept))
    (out.parent / "decontamination.json").write_text(json.dumps(report, indent=1) + "\n")
    click.echo(f"kept {report['kept']} of {report['train_tasks']} tasks; dropped {report['by_reason']}")


@click.command(name="filter")
@settings_options(FilterSettings, positional=("trajectories",), required=("rules.stage",))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
def filter_(settings: FilterSettings, out: Path) -> None:
    """Apply the paper's trajectory filters; writes OUT/trajectories.jsonl, dropped.jsonl, filter_report.json.

    \b
    Example:
      swehero filter --stage zero runs/zero/trajectories.jsonl --out runs/zero-filtered
    """
    from swehero.distill.filter_io import filter_file

    outputs = filter_file(settings.trajectories, settings.rules, out)
    report = json.loads(Path(outputs["report"]).read_text())
    click.echo(f"kept {report['kept']} of {report['input']}: "
               + ", ".join(f"{r['name']} -{r['dropped']}" for r in report["rules"]))
