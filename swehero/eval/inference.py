"""Run every selected instance once, N at a time, into `predictions.jsonl` + `trajectories/`, resumably.

Per instance: a child process attempts it (see episode.py), its Episode goes to `trajectories/<id>.json`, then the
prediction line is appended. The prediction line is the commit point (store.py): a restart skips the instances that
have one and redoes the rest, whatever was left half-done.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import swehero
from swehero.eval.episode import AgentSettings, Episode
from swehero.jsonio import JsonlLog
from swehero.jsonio import write_json_atomic
from swehero.rollout.toy import repo_dir

PREDICTIONS = "predictions.jsonl"
TRAJECTORIES = "trajectories"


def trajectory_path(out_dir: Path, instance_id: str) -> Path:
    return Path(out_dir) / TRAJECTORIES / f"{instance_id}.json"


def finished(out_dir: Path) -> dict[str, dict]:
    """Predictions committed so far, by instance id."""
    return JsonlLog(Path(out_dir) / PREDICTIONS).records()


def attempt_in_child(task: dict, settings: AgentSettings, source_repo: Path | None, workdir: Path) -> Episode:
    """One instance in a child process (episode.py) under the time limit, in `workdir` (emptied first)."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    spec, result = workdir / "spec.json", workdir / "episode.json"
    spec.write_text(json.dumps({"task": task, "settings": asdict(settings), "workdir": str(workdir / "agent"),
                                "source_repo": str(source_repo) if source_repo else ""}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(swehero.__file__).parents[1]),
                                                                       os.environ.get("PYTHONPATH")]))}
    with open(workdir / "stderr.txt", "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "swehero.eval.episode", str(spec), str(result)], env=env,
                                 stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        child.wait(timeout=settings.time_limit_s + settings.kill_grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        return Episode(task["instance_id"], finish_reason="time_limit",
                       error=f"killed {settings.kill_grace_s:g}s after the {settings.time_limit_s:g}s time limit")
    if result.exists():
        return Episode(**json.loads(result.read_text()))
    tail = (workdir / "stderr.txt").read_text(errors="replace")[-2000:]
    return Episode(task["instance_id"], finish_reason="agent_error",
                   error=f"episode process exited with status {child.returncode}: {tail}")


def run_inference(tasks: list[dict], settings: AgentSettings, out_dir: Path, model_name: str, workers: int = 1,
                  progress=print) -> dict[str, int]:
    """Attempt every task without a committed prediction; returns {'done': previously finished, 'ran': now}."""
    out_dir = Path(out_dir)
    predictions = JsonlLog(out_dir / PREDICTIONS)
    done = predictions.records()
    todo = [t for t in tasks if t["instance_id"] not in done]
    repos = Path(settings.repos) if settings.repos else None
    progress(f"inference: {len(tasks) - len(todo)} of {len(tasks)} instances already finished, {len(todo)} to run "
             f"with {workers} worker(s)")

    def one(task: dict) -> None:
        iid = task["instance_id"]
        source = repo_dir(repos, task["repo"]) if repos and settings.runtime == "local" else None
        episode = attempt_in_child(task, settings, source, out_dir / "work" / iid)
        write_json_atomic(trajectory_path(out_dir, iid), asdict(episode))
        predictions.append({"instance_id": iid, "model_name_or_path": model_name, "model_patch": episode.patch})
        shutil.rmtree(out_dir / "work" / iid, ignore_errors=True)
        progress(f"  {iid}: {episode.finish_reason}, {episode.steps} steps, {len(episode.patch)} patch chars, "
                 f"{episode.seconds:.1f}s{' — ' + episode.error[:200] if episode.error else ''}")

    with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
        for future in [pool.submit(one, task) for task in todo]:
            future.result()
    shutil.rmtree(out_dir / "work", ignore_errors=True)
    return {"done": len(tasks) - len(todo), "ran": len(todo)}


@contextlib.contextmanager
def endpoint(settings: AgentSettings, serve_model: str, out_dir: Path, max_model_len: int):
    """Settings pointing at a model server: the given `base_url`, or a vLLM server started here for `serve_model`
    (stopped on exit) when the policy queries a model and no endpoint was given."""
    if settings.policy != "openai" or settings.base_url:
        yield settings
        return
    if not serve_model:
        raise ValueError("the openai policy needs an endpoint (base_url) or a checkpoint to serve (serve)")
    from swehero.serve.server import ServeConfig, VLLMServer

    config = ServeConfig(model=serve_model, max_model_len=max_model_len)
    with VLLMServer(config, Path(out_dir) / "vllm.log") as server:
        yield replace(settings, base_url=server.url, model=settings.model or config.served_name
                      or Path(serve_model).name)
