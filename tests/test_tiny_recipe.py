"""The bundled tiny-cpu recipe end to end, shortened: every stage for real (oracle distillation, filters, prepare,
Megatron training on 2 gloo processes, export, vLLM serving, agent episodes, local grading, the comparison), with
fewer training steps and agent turns than `make demo` so that CI can afford it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SHORTEN = [
    "stages.sft_zero.steps=12", "stages.sft_hero.steps=4",
    "stages.eval_untrained.agent.loop.max_steps=2", "stages.eval_untrained.agent.openai.max_reply_tokens=64",
]


def recipe(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    sets = [arg for item in SHORTEN for arg in ("--set", item)]
    return subprocess.run([sys.executable, "-m", "swehero", "recipe", "run", "tiny-cpu", "--set",
                           f"run_dir={run_dir}", *sets, *args], capture_output=True, text=True, timeout=1500)


@pytest.mark.timeout(1800)
def test_shortened_tiny_recipe_runs_end_to_end_and_reruns_nothing(tmp_path):
    run_dir = tmp_path / "run"
    done = recipe(run_dir)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"report comparison: {run_dir / 'report' / 'comparison.md'}" in done.stdout

    untrained, trained = (json.loads((run_dir / name / "report.json").read_text())
                          for name in ("eval_untrained", "eval_trained"))
    for report in (untrained, trained):  # every held-out task attempted and graded; all three measures present
        assert report["total"] == 3 and report["finished"] == 3 and report["ungraded"] == 0
        assert report["tool_calls"]["turns"] > 0
        assert report["teacher_forced"]["trajectories"] == 3 and report["teacher_forced"]["tokens"] > 0
    # Even 16 steps of SFT move the model towards the teacher on tasks it never saw; a random model is at chance.
    assert trained["teacher_forced"]["accuracy"] > untrained["teacher_forced"]["accuracy"] + 0.05
    comparison = (run_dir / "report" / "comparison.md").read_text()
    assert "**eval_trained** vs eval_untrained: teacher-forced accuracy" in comparison

    heldout = {json.loads(line)["instance_id"] for line in (run_dir / "toy_tasks" / "heldout.jsonl").open()}
    for stage in ("filter_zero", "filter_hero"):  # no trajectory of a held-out task reaches training
        trained_on = {json.loads(line)["instance_id"] for line in (run_dir / stage / "trajectories.jsonl").open()}
        assert trained_on and not trained_on & heldout

    again = recipe(run_dir, "--dry-run")
    assert again.returncode == 0 and again.stdout.count("skip") == 14, again.stdout
