"""An eval folder's predictions file as a person may leave it (edited by hand): a line that is no SWE-bench
prediction is one line naming file:line and field, not a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from swehero.agent.settings import AgentSettings
from swehero.cli import main
from swehero.eval.inference import PREDICTIONS
from swehero.eval.pipeline import Settings, evaluate
from swehero.rollout.toy import build_toy_tasks

CALC = "swehero-toy__calc-1"


@pytest.fixture(scope="module")
def inferred(tmp_path_factory) -> Path:
    """An eval folder of the toy tasks with the gold prediction of one of them, not graded."""
    toy = build_toy_tasks(tmp_path_factory.mktemp("toy"))
    out = tmp_path_factory.mktemp("eval") / "run"
    settings = Settings(tasks=str(toy), instances=[CALC], agent=AgentSettings(policy="gold"))
    settings.grading.grader = "none"
    evaluate(settings, out, progress=lambda _: None)
    return out


def _edited(inferred: Path, tmp_path: Path, edit) -> Path:
    """A copy of the eval folder whose one prediction `edit` changed (it returns the new record)."""
    out = tmp_path / "run"
    shutil.copytree(inferred, out)
    [record] = [json.loads(line) for line in (out / PREDICTIONS).read_text().splitlines()]
    (out / PREDICTIONS).write_text(json.dumps(edit(record)) + "\n")
    return out


def _without(name: str):
    return lambda record: {key: value for key, value in record.items() if key != name}


@pytest.mark.parametrize("edit, message", [
    (_without("instance_id"), "prediction lacks field(s) instance_id (SWE-bench predictions: instance_id, "
                              "model_name_or_path, model_patch)"),
    (_without("model_patch"), "prediction lacks field(s) model_patch"),
    (_without("model_name_or_path"), "prediction lacks field(s) model_name_or_path"),
    (lambda record: {**record, "model_patch": 3}, "model_patch must be a string or null, got 3"),
    (lambda record: {**record, "instance_id": ""}, "instance_id is empty"),
    (lambda record: [record], "a prediction is a JSON object with instance_id, model_name_or_path, model_patch"),
], ids=["no-instance_id", "no-model_patch", "no-model_name_or_path", "patch-not-text", "empty-id", "not-an-object"])
def test_a_prediction_line_that_is_no_prediction_is_named_by_file_line_and_field(inferred, tmp_path, edit, message):
    out = _edited(inferred, tmp_path, edit)
    for command in (["grade", str(out), "--grader", "local"], ["report", str(out)]):
        result = CliRunner().invoke(main, ["eval", *command])
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {out / PREDICTIONS}:1: {message}"), result.output
        assert "Traceback" not in result.output and len(result.output.splitlines()) == 1


def test_a_null_patch_is_no_patch(inferred, tmp_path):
    """SWE-bench's harness takes a null model_patch as an empty one: so does swehero."""
    out = _edited(inferred, tmp_path, lambda record: {**record, "model_patch": None})
    result = CliRunner().invoke(main, ["eval", "grade", str(out), "--grader", "local"])
    assert result.exit_code == 0 and "0 prediction(s) to grade" in result.output, result.output


def _with_predictions(inferred: Path, tmp_path: Path, ids: list[str]) -> Path:
    """A copy of the eval folder with predictions of `ids` added after its own (a patch each, to be graded)."""
    out = _edited(inferred, tmp_path, lambda record: record)
    patch = json.loads((out / PREDICTIONS).read_text())["model_patch"]
    with open(out / PREDICTIONS, "a") as f:
        f.writelines(json.dumps({"instance_id": iid, "model_name_or_path": "gold", "model_patch": patch}) + "\n"
                     for iid in ids)
    return out


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_predictions_of_instances_the_task_file_lacks_are_named_and_the_others_graded(inferred, tmp_path):
    """SWE-bench's harness refuses a predictions file with an instance its dataset lacks; `eval grade` says how many
    and which, and grades the rest: a later `eval run` with another task file leaves its attempts in the folder. A
    prediction of a task of the file that the evaluation did not select (a narrower --limit) is left out silently,
    as the harness leaves out those not in --instance_ids."""
    foreign = ["django__django-1", "django__django-2", "django__django-3", "flask__flask-4"]
    out = _with_predictions(inferred, tmp_path, [*foreign, "swehero-toy__stack-1"])
    for command in (["grade", str(out), "--grader", "local"], ["report", str(out)]):
        result = CliRunner().invoke(main, ["eval", *command])
        assert result.exit_code == 0, result.output
        [warning] = [line for line in result.output.splitlines() if "not in the task file" in line]
        assert warning == (f"warning: {out / PREDICTIONS}: 4 prediction(s) of instances not in the task file "
                           f"{json.loads((out / 'eval.json').read_text())['tasks']}, left out of grading and reports: "
                           "django__django-1, django__django-2, django__django-3 and 1 more")
        assert "stack" not in result.output
    assert [json.loads(line)["instance_id"] for line in (out / "grades.jsonl").read_text().splitlines()] == [CALC]
    assert [i["instance_id"] for i in json.loads((out / "report.json").read_text())["instances"]] == [CALC]


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_the_harness_is_handed_only_the_predictions_it_grades(inferred, tmp_path, monkeypatch):
    """A prediction of an instance its dataset lacks made swebench refuse the whole file (`ValueError: Some
    prediction IDs not found in dataset!`) before it graded any: with an engine that cannot be reached, it now
    gets as far as Docker."""
    from swehero.eval.harness import HarnessConfig, run_harness

    out = _with_predictions(inferred, tmp_path, ["django__django-1"])
    tasks = json.loads((out / "eval.json").read_text())["tasks"]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(RuntimeError, match="swebench's harness exited with status 1"):  # DockerException there
        run_harness(HarnessConfig(min_free_gb=0), out, tasks, out / PREDICTIONS, [CALC], {}, lambda grades: None)
    handed = [json.loads(line) for line in (out / "harness" / PREDICTIONS).read_text().splitlines()]
    assert [p["instance_id"] for p in handed] == [CALC]
