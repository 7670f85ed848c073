"""Inference of an eval folder: one attempt per instance through the rollout runner, into `predictions.jsonl` (the
official SWE-bench format) and `trajectories/<id>.json`, resumably.

The prediction line is the commit point: its trajectory file is written first, and a restart attempts only the
instances without a line (`swehero.jsonio.JsonlLog`), whatever was left half-done.
"""

from __future__ import annotations

from pathlib import Path

from swehero.agent.settings import AgentSettings
from swehero.jsonio import JsonlLog, write_json_atomic
from swehero.rollout.runner import Job, run_attempts

PREDICTIONS = "predictions.jsonl"
TRAJECTORIES = "trajectories"


def trajectory_path(out_dir: Path, instance_id: str) -> Path:
    return Path(out_dir) / TRAJECTORIES / f"{instance_id}.json"


def finished(out_dir: Path) -> dict[str, dict]:
    """Predictions committed so far, by instance id."""
    return JsonlLog(Path(out_dir) / PREDICTIONS).records()


def run_inference(tasks: list[dict], settings: AgentSettings, out_dir: Path, model_name: str, repos: Path | None,
                  endpoints: list[str], workers: int = 1, progress=print) -> dict[str, int]:
    """Attempt every task without a committed prediction; returns {'done': previously finished, 'ran': now}."""
    out_dir = Path(out_dir)
    predictions = JsonlLog(out_dir / PREDICTIONS)
    done = predictions.records()
    todo = [Job(t) for t in tasks if t["instance_id"] not in done]
    progress(f"inference: {len(tasks) - len(todo)} of {len(tasks)} instances already finished, {len(todo)} to run "
             f"with {workers} worker(s)")

    def commit(job: Job, record: dict) -> None:
        iid = job.task["instance_id"]
        write_json_atomic(trajectory_path(out_dir, iid), record)
        predictions.append({"instance_id": iid, "model_name_or_path": model_name, "model_patch": record["patch"]})

    run_attempts(todo, settings, commit, out_dir / "work", repos, endpoints, workers, progress=progress)
    return {"done": len(tasks) - len(todo), "ran": len(todo)}
