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
