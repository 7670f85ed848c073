"""Inference of an eval: every instance attempted once per run through the rollout runner, into each run folder's
`predictions.jsonl` (the official SWE-bench format) and `trajectories/<id>.json`, resumably.

The prediction line is the commit point: its trajectory file is written first, and a restart attempts only the
(instance, run) pairs without a line (`swehero.jsonio.JsonlLog`), whatever was left half-done. Each attempt has its
own sampling seed when the eval has one, fixed by it, the instance and the run, so runs differ from each other and
a rerun of the same eval samples the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from swehero.agent.settings import AgentSettings
from swehero.errors import InputError
from swehero.jsonio import JsonlLog, JsonlLogReader, write_json_atomic
from swehero.rollout.endpoints import Endpoint
from swehero.rollout.runner import Job, run_attempts, sampling_seed

PREDICTIONS = "predictions.jsonl"
PREDICTION_FIELDS = ("instance_id", "model_name_or_path", "model_patch")
"""The fields of a line of SWE-bench's predictions format, all of which swehero reads."""
TRAJECTORIES = "trajectories"


def trajectory_path(out_dir: Path, instance_id: str) -> Path:
    return Path(out_dir) / TRAJECTORIES / f"{instance_id}.json"


def finished(out_dir: Path) -> dict[str, dict]:
    """Predictions committed so far, by instance id (an id's first line wins); a line that is no prediction (one
    edited by hand) is an `InputError` naming its file:line and field."""
    path = Path(out_dir) / PREDICTIONS
    out: dict[str, dict] = {}
    for number, record in JsonlLogReader(path).numbered():
        out.setdefault(checked_prediction(record, f"{path}:{number}")["instance_id"], record)
    return out


def checked_prediction(record, where: str) -> dict:
    """`record`, refused unless it is a SWE-bench prediction: instance_id and model_name_or_path strings, and
    model_patch a string or null (no patch)."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: a prediction is a JSON object with {', '.join(PREDICTION_FIELDS)}, "
                         f"got {record!r:.80}")
    missing = [name for name in PREDICTION_FIELDS if name not in record]
    if missing:
        raise InputError(f"{where}: prediction lacks field(s) {', '.join(missing)} (SWE-bench predictions: "
                         f"{', '.join(PREDICTION_FIELDS)})")
    for name in PREDICTION_FIELDS:
        if not (isinstance(record[name], str) or name == "model_patch" and record[name] is None):
            raise InputError(f"{where}: {name} must be a string{' or null' if name == 'model_patch' else ''}, "
                             f"got {record[name]!r:.80}")
    if not record["instance_id"]:
        raise InputError(f"{where}: instance_id is empty")
    return record


def run_inference(tasks: list[dict], settings: AgentSettings, runs: list[Path], model_name: str, repos: Path | None,
                  endpoints: list[str | Endpoint], workers: int = 1, max_attempts: int = 1, seed: int | None = None,
                  progress=print) -> dict[str, int]:
    """Attempt every (task, run) without a committed prediction in that run's folder; returns
    {'done': previously finished, 'ran': now, 'missing_repositories': [...]}."""
    logs = [JsonlLog(Path(run) / PREDICTIONS) for run in runs]  # opened first: a torn last line is cut
    done = [finished(run) for run in runs]
    todo = [Job(t, k, None if seed is None else sampling_seed(seed, t["instance_id"], k))
            for t in tasks for k in range(len(runs)) if t["instance_id"] not in done[k]]
    planned = len(tasks) * len(runs)
    progress(f"inference: {planned - len(todo)} of {planned} attempts already finished, {len(todo)} to run with "
             f"{workers} worker(s)")

    def commit(job: Job, record: dict) -> None:
        iid = job.task["instance_id"]
        write_json_atomic(trajectory_path(runs[job.index], iid), record)
        logs[job.index].append({"instance_id": iid, "model_name_or_path": model_name, "model_patch": record["patch"]})

    work = Path(os.path.commonpath([str(run) for run in runs])) / "work"
    ran = run_attempts(todo, settings, commit, work, repos, endpoints, workers, progress=progress,
                       max_attempts=max_attempts)
    return {"done": planned - len(todo), "ran": len(todo),
            "missing_repositories": [reason for reasons in ran["missing_repositories"].values() for reason in reasons]}
