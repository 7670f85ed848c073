"""An eval from task selection to report: inference, then grading, then report. Each step resumes its own files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from swehero.eval.episode import AgentSettings
from swehero.eval.grade import GradingSettings
from swehero.recipe.stage import InputPath

TOY = "toy"


@dataclass
class Settings:
    """Stage kind `eval` (and `swehero eval run`)."""

    tasks: str = TOY
    """Task file (.jsonl/.json/.parquet, SWE-bench schema), a benchmark (`verified`, `multilingual` or their hub
    ids), or `toy` for the bundled toy tasks (built into the eval folder)."""
    split: str = ""
    """Dataset split for benchmarks; empty: the benchmark's (test)."""
    instances: list[str] = field(default_factory=list)
    """Only these instance ids."""
    limit: int = 0
    """At most this many instances (0: all)."""
    shard: str = ""
    """`i/n`: every n-th instance starting at the i-th (0-based), to split a benchmark over machines."""
    serve: str = ""
    """Checkpoint (Hugging Face folder) to serve with vLLM for the run when `agent.base_url` is empty."""
    max_model_len: int = 32768
    """Context length of the served checkpoint."""
    model_name: str = ""
    """`model_name_or_path` written to the predictions; empty: the served checkpoint's path, the endpoint's model,
    or the policy name. Also how the paper's figure is found (e.g. `swe-hero-32b`)."""
    workers: int = 1
    """Instances attempted concurrently."""
    price_prompt_per_mtok: float = 0.0
    price_completion_per_mtok: float = 0.0
    """$ per million prompt / completion tokens, for the report's cost column (0: no cost)."""
    agent: AgentSettings = field(default_factory=AgentSettings)
    grading: GradingSettings = field(default_factory=GradingSettings)
    heldout_trajectories: list[InputPath] = field(default_factory=list)
    """Canonical trajectories (.jsonl) of tasks the checkpoint was not trained on: the report adds the served
    checkpoint's teacher-forced accuracy on their assistant tokens (needs `serve`)."""


def resolve_tasks(settings: Settings, out_dir: Path) -> tuple[list[dict], str, str]:
    """(selected tasks, task file or benchmark name, benchmark key or 'custom')."""
    from swehero.rollout.tasks import benchmark_of, load_tasks, select
    from swehero.rollout.toy import build_toy_tasks

    source = str(build_toy_tasks(Path(out_dir) / "toy-tasks")) if settings.tasks == TOY else settings.tasks
    bench = benchmark_of(source)
    tasks = select(load_tasks(source, settings.split), settings.instances, settings.limit, settings.shard)
    return tasks, source, bench.key if bench else ("toy" if settings.tasks == TOY else "custom")


def model_label(settings: Settings) -> str:
    return settings.model_name or settings.serve or settings.agent.model or settings.agent.policy


def repos_folder(settings: Settings, source: str) -> Path | None:
    if settings.agent.repos:
        return Path(settings.agent.repos)
    return Path(source).parent / "repos" if Path(source).is_file() else None


def evaluate(settings: Settings, out_dir: Path, progress=print) -> dict[str, str]:
    """Run inference, grading and the report into `out_dir`; returns the output paths."""
    from swehero.eval.grade import grade
    from swehero.eval.inference import PREDICTIONS, endpoint, run_inference
    from swehero.eval.report import build_report, write_report

    if settings.heldout_trajectories and not settings.serve:
        raise ValueError("heldout_trajectories needs `serve`: the checkpoint whose accuracy is measured")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks, source, benchmark = resolve_tasks(settings, out_dir)
    repos = repos_folder(settings, source)
    (out_dir / "eval.json").write_text(json.dumps({"tasks": source, "benchmark": benchmark,
                                                   "model": model_label(settings),
                                                   "instance_ids": [t["instance_id"] for t in tasks]}, indent=1))
    if settings.agent.runtime == "docker":
        from swehero.agent.docker_host import check_architecture

        check_architecture()
    agent = replace(settings.agent, repos=str(repos)) if repos else settings.agent
    with endpoint(agent, settings.serve, out_dir, settings.max_model_len) as agent:
        run_inference(tasks, agent, out_dir, model_label(settings), settings.workers, progress=progress)
    grade(tasks, out_dir, settings.grading, repos, settings.grading.harness.dataset or harness_dataset(source),
          progress=progress)
    if settings.heldout_trajectories:
        score_heldout(settings, out_dir, progress)
    report = build_report(tasks, out_dir, model_label(settings), benchmark, settings.price_prompt_per_mtok,
                          settings.price_completion_per_mtok)
    outputs = write_report(report, out_dir)
    progress(f"resolved {report['resolved']}/{report['total']}; report: {outputs['report_md']}")
    return {"predictions": str(out_dir / PREDICTIONS), **outputs}


def score_heldout(settings: Settings, out_dir: Path, progress=print) -> None:
    """Teacher-forced accuracy of the served checkpoint on the held-out trajectories, once (`teacher_forced.json`)."""
    from swehero.eval.report import TEACHER_FORCED
    from swehero.eval.teacher_forced import teacher_forced_accuracy
    from swehero.jsonio import write_json_atomic

    if not (out_dir / TEACHER_FORCED).exists():
        progress(f"teacher-forced accuracy of {settings.serve} on {', '.join(settings.heldout_trajectories)}")
        scored = teacher_forced_accuracy(settings.serve, settings.heldout_trajectories, settings.max_model_len)
        write_json_atomic(out_dir / TEACHER_FORCED, {**scored, "files": settings.heldout_trajectories})


def harness_dataset(source: str) -> str:
    """What swebench grades against by default: its own copy of a named benchmark, else the task file."""
    from swehero.rollout.tasks import benchmark_of

    bench = benchmark_of(source)
    return bench.harness_dataset if bench else source
