"""The tiny recipe's Docker variant (recipes/tiny-docker.yaml) at reduced size: the toy tasks' instance images
built by a recipe stage, then SWE-Hero distillation in containers of them, then the paper's filters; and a run
stopped by SIGTERM while its attempts run in containers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swehero.agent.container import swebench_image
from swehero.agent.docker_host import client

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REDUCED = ["stages.toy_tasks.run=$SWEHERO_PYTHON -c \"from swehero.rollout.toy import build_toy_tasks; "
           "build_toy_tasks('.')\"",  # the 4 hand-written tasks, not the 16 templated ones
           "stages.distill_hero.limit=2"]


def recipe(run_dir: Path, stage: str) -> subprocess.CompletedProcess:
    sets = [arg for item in [f"run_dir={run_dir}", *REDUCED] for arg in ("--set", item)]
    return subprocess.run([sys.executable, "-m", "swehero", "recipe", "run", "tiny-docker", "--only", stage, *sets],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.timeout(1200)
def test_tiny_docker_recipe_distills_hero_in_containers(tmp_path):
    run_dir = tmp_path / "run"
    for stage in ("toy_tasks", "toy_images", "distill_hero", "filter_hero"):
        done = recipe(run_dir, stage)
        assert done.returncode == 0, f"{stage}: {done.stderr[-3000:]}"
    tasks = [json.loads(line) for line in (run_dir / "toy_tasks" / "tasks.jsonl").read_text().splitlines()]
    images = (run_dir / "toy_images" / "images.txt").read_text().split()
    assert images == [swebench_image(t["instance_id"]) for t in tasks]
    episodes = [json.loads(line) for line in (run_dir / "distill_hero" / "trajectories.jsonl").read_text().splitlines()]
    assert len(episodes) == 2
    for episode in episodes:
        meta = episode["metadata"]
        assert (meta["runtime"], meta["mode"], meta["finish_reason"]) == ("docker", "exec", "submitted")
        assert meta["agent_root"].startswith("/workspace/swehero-toy__") and episode["stage"] == "hero"
        assert episode["patch"].strip()
    kept = (run_dir / "filter_hero" / "trajectories.jsonl").read_text().splitlines()
    assert len(kept) == 2  # both patches made in containers resolve their tasks (filter: resolved_only)


@pytest.mark.timeout(300)
def test_sigterm_leaves_no_container_behind(toy_images, tmp_path, stalled_teacher):
    """SIGTERM while two attempts wait on their teacher inside their containers: each attempt process closes its
    runtime, so the run exits with its containers removed (left alone they would sleep out their lifetime)."""
    url, held = stalled_teacher
    engine = client()

    def rollout_containers() -> set[str]:
        return {c.id for c in engine.containers.list(all=True, filters={"label": "swehero=rollout"})}

    before = rollout_containers()
    argv = [str(Path(sys.executable).parent / "swehero"), "distill", "run", "--tasks", str(toy_images),
            "--mode", "exec", "--runtime", "docker", "--policy", "openai", "--workers", "2", "--no-progress",
            "--endpoints", url, "--out", str(tmp_path / "out"),
            "--set", "agent.openai.model=teacher"]  # named, so the first request is the first step's, in a container
    with open(tmp_path / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while len(held) < 2 or len(rollout_containers() - before) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert rollout_containers() - before == set()
        assert not (tmp_path / "out" / "trajectories.jsonl").exists()
    finally:
        proc.kill()
        for left in rollout_containers() - before:  # had the test failed
            engine.containers.get(left).remove(force=True)
