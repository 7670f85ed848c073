"""The bundled tiny-cpu recipe end to end, shortened: every stage for real (oracle distillation, filters, prepare,
Megatron training on 2 gloo processes, export, vLLM serving, agent episodes, local grading, the comparison, the
verifier's data, training and selection), with fewer training steps, agent turns and decoy attempts than
`make demo` so that CI can afford it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the tiny recipe end to end

SHORTEN = [
    "stages.sft_zero.steps=12", "stages.sft_hero.steps=4",
    "stages.eval_untrained.agent.loop.max_steps=2", "stages.eval_untrained.agent.openai.max_reply_tokens=64",
    "stages.decoy_attempts.limit=6", "stages.sft_verifier.steps=2",
]


def recipe(run_dir: Path, *args: str, command: tuple[str, ...] = ("recipe", "run")) -> subprocess.CompletedProcess:
    sets = [arg for item in SHORTEN for arg in ("--set", item)]
    return subprocess.run([sys.executable, "-m", "swehero", *command, "tiny-cpu", "--set",
                           f"run_dir={run_dir}", *sets, *args], capture_output=True, text=True, timeout=1500)


@pytest.mark.timeout(1800)
def test_shortened_tiny_recipe_runs_end_to_end_and_reruns_nothing(tmp_path):
    run_dir = tmp_path / "run"
    done = recipe(run_dir)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"best_of select.md: {run_dir / 'best_of' / 'select.md'}" in done.stdout

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

    # the verifier: a resolved and an unresolved attempt of each of the 6 tasks with decoys, one trained token each
    data = json.loads((run_dir / "verifier_data" / "verifier_data.json").read_text())
    assert (data["examples"], data["resolved"], data["unresolved"], data["instances"]) == (12, 6, 6, 6)
    trained_on = {json.loads(line)["instance_id"] for line in (run_dir / "verifier_data" / "examples.jsonl").open()}
    assert not trained_on & heldout
    # it scored the 6 held-out attempts (3 decoys, then 3 gold fixes) and selected one per task
    select = json.loads((run_dir / "best_of" / "select.json").read_text())
    assert (select["runs"], select["instances"], select["verifier_quality"]["scored"]) == (2, 3, 6)
    assert select["mean"] == 0.5 and select["pass_at_k"]["2"] == 1.0 and select["majority_at_k"]["2"] == 0.5
    # best@2: the resolved of the attempt scored higher, or half of both where the two scores tie (a trained tiny
    # verifier may give both attempts the same score)
    chosen = [i["resolved"][i["selected_run"]] if i["scores"][0] != i["scores"][1] else sum(i["resolved"]) / 2
              for i in select["per_instance"]]
    assert select["best_at_k"]["2"] == pytest.approx(sum(chosen) / 3, abs=1e-4)
    assert select["best_at_k"]["2"] <= select["pass_at_k"]["2"]

    again = recipe(run_dir, "--dry-run")
    assert again.returncode == 0 and again.stdout.count("skip") == 21, again.stdout

    # Neither `--only` nor `swehero train` (which empties the folder to write a job) retrains a finished stage.
    folder = sorted(p.name for p in (run_dir / "sft_zero").iterdir())
    assert recipe(run_dir, "--only", "sft_zero").returncode == 0
    for stage in (["--stage", "sft_zero"], []):  # with no --stage: the first train stage, since all are done
        done = recipe(run_dir, *stage, "--launcher", "slurm", command=("train",))
        assert (done.returncode, done.stderr.split(" (completed")[0]) == (1, "Error: stage sft_zero: up to date"), \
            done.stderr
        assert done.stderr.endswith("; --force trains it again from scratch\n")
    assert sorted(p.name for p in (run_dir / "sft_zero").iterdir()) == folder
    assert recipe(run_dir, "--dry-run").stdout.count("skip") == 21
