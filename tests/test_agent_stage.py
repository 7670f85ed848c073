"""Stage kind `rollout` through the recipe engine: oracle episodes over toy tasks, resumable, with predictions."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest
from agent_repos import CALC, CALC_FIX, LAYOUT, LAYOUT_FIX, make_task

from swehero.data.trajectory import validate
from swehero.recipe import kinds
from swehero.recipe.config import load_recipe
from swehero.recipe.engine import plan, run_recipe
from swehero.recipe.loader import RecipeError

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

RECIPE = """\
name: rollouts
run_dir: {run}
stages:
  - name: zero
    kind: rollout
    tasks: {tasks}
    repos: {repos}
    rollouts: 2
    agent:
      mode: zero
      policy: oracle
      loop:
        max_steps: 30
"""


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "rollout", "swehero.rollout.stage")  # the line the lead adds to KINDS


def test_rollout_stage_writes_trajectories_and_predictions(tmp_path, registered):
    repos = tmp_path / "repos"
    tasks = [make_task(repos / "toy__calc", "calc", CALC, CALC_FIX),
             make_task(repos / "toy__layout", "layout", LAYOUT, LAYOUT_FIX)]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(asdict(t)) + "\n" for t in tasks))
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(RECIPE.format(run=tmp_path / "run", tasks=tmp_path / "tasks.jsonl", repos=repos))
    recipe = load_recipe(recipe_file)
    run_recipe(recipe, plan(recipe), echo=lambda *a: None)
    stage = tmp_path / "run" / "zero"
    records = [validate(json.loads(line)) for line in (stage / "trajectories.jsonl").read_text().splitlines()]
    assert [r["instance_id"] for r in records] == ["toy__calc-1"] * 2 + ["toy__layout-1"] * 2
    assert all(r["metadata"]["exit_reason"] == "finished" and r["stage"] == "zero" for r in records)
    assert len({r["id"] for r in records}) == 4
    predictions = [json.loads(line) for line in (stage / "predictions.jsonl").read_text().splitlines()]
    assert [(p["instance_id"], p["model_name_or_path"]) for p in predictions] == [
        ("toy__calc-1", "oracle"), ("toy__layout-1", "oracle")]
    assert predictions[0]["model_patch"] == records[0]["patch"] and "+    return a + b" in records[0]["patch"]

    # a killed run resumes: finished episodes are kept, the unfinished one is redone
    episode = stage / "episodes" / "toy__layout-1.1.json"
    unfinished = json.loads(episode.read_text())
    unfinished["metadata"]["exit_reason"] = None
    episode.write_text(json.dumps(unfinished))
    kept = (stage / "episodes" / "toy__calc-1.0.json").stat().st_mtime_ns
    from swehero.rollout.stage import Settings, run
    from swehero.recipe.stage import StageContext

    ctx = StageContext(name="zero", dir=stage, seed=0, model=None, upstream={}, resume=True)
    run(recipe.stage("zero").settings, ctx)
    assert (stage / "episodes" / "toy__calc-1.0.json").stat().st_mtime_ns == kept
    assert json.loads(episode.read_text())["metadata"]["exit_reason"] == "finished"
    assert isinstance(recipe.stage("zero").settings, Settings)


def test_bad_agent_settings_are_recipe_errors(tmp_path, registered):
    (tmp_path / "tasks.jsonl").write_text("")
    recipe_file = tmp_path / "r.yaml"
    text = RECIPE.format(run=tmp_path / "run", tasks=tmp_path / "tasks.jsonl", repos=tmp_path)
    recipe_file.write_text(text.replace("mode: zero", "mode: hero").replace("max_steps: 30", "max_step: 30"))
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe_file)
    text = "\n".join(info.value.problems)
    assert "stages[0].agent.mode: must be one of ['zero', 'exec'], got 'hero'" in text
    assert "stages[0].agent.loop.max_step: unknown field; did you mean 'max_steps'?" in text
