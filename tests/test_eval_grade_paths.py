"""Grading an eval folder as the commands are used: OUT relative to the working directory, one grading at a time,
a grading the machine failed graded again, and predictions named after the model an endpoint serves."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
from json_server import JsonServer

from swehero.agent.openai_policy import OpenAIConfig
from swehero.agent.settings import AgentSettings
from swehero.eval.grade import GRADES, GradingSettings
from swehero.eval.harness import HarnessConfig, run_harness, run_id_for
from swehero.eval.inference import PREDICTIONS
from swehero.eval.pipeline import Settings, evaluate, regrade
from swehero.jsonio import exclusive
from swehero.rollout.runner import BUSY, LOCK
from swehero.rollout.tasks import load_tasks
from swehero.rollout.toy import build_toy_tasks

CALC = "swehero-toy__calc-1"


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_tasks(tmp_path_factory.mktemp("toy"))


def _inferred(tasks: Path, out: Path, policy: str = "gold", **agent) -> Path:
    """An eval folder of `tasks` with committed predictions of one task, not graded yet."""
    settings = Settings(tasks=str(tasks), instances=[CALC], agent=AgentSettings(policy=policy, **agent))
    settings.grading.grader = "none"
    evaluate(settings, out, progress=lambda _: None)
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_the_harness_finds_the_files_of_an_eval_folder_given_relative(toy, tmp_path, monkeypatch):
    """The harness runs in `<OUT>/harness`: paths relative to the caller's working directory are made absolute
    before it moves there. With an engine that cannot be reached, it gets as far as Docker: it has loaded the
    predictions and recorded the run."""
    _inferred(toy, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(RuntimeError, match="swebench's harness exited with status 1"):  # DockerException there
        run_harness(HarnessConfig(min_free_gb=0), Path("run"), str(toy), Path("run") / PREDICTIONS, [CALC], {},
                    lambda grades: None)
    run_id = run_id_for(HarnessConfig(), tmp_path / "run")
    recorded = json.loads((tmp_path / "run/harness/logs/run_evaluation" / run_id / "run.json").read_text())
    assert recorded["dataset"] == str(tmp_path.resolve() / "run" / "harness" / "tasks.jsonl")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eval_grade_with_the_harness_grades_a_relative_folder(toy_images, tmp_path, monkeypatch):
    """`swehero eval grade runs/x --grader swebench`, as docs/evaluation.md writes it: OUT relative."""
    _inferred(toy_images, tmp_path / "runs" / "gold")
    monkeypatch.chdir(tmp_path)
    regrade(Path("runs/gold"), GradingSettings(grader="swebench"), progress=lambda _: None)
    [graded] = _lines(tmp_path / "runs" / "gold" / GRADES)
    assert graded["instance_id"] == CALC and graded["resolved"] and graded["grader"] == "swebench"
    assert (tmp_path / "runs" / "gold" / graded["logs"] / "report.json").is_file()


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_a_folder_is_graded_by_one_command_at_a_time(toy, tmp_path):
    """`eval grade` while `eval run` (or another `eval grade`) writes into the folder is refused, in the words a
    second `eval run` gets: both would grade the same instances, and with the harness remove each other's
    containers."""
    from click.testing import CliRunner

    from swehero.cli import main

    out = _inferred(toy, tmp_path / "run")
    with exclusive(out / LOCK):  # what the running command holds
        result = CliRunner().invoke(main, ["eval", "grade", str(out), "--grader", "local"])
        assert result.exit_code == 1 and f"Error: {out}: {BUSY}" in result.output, result.output
        run = CliRunner().invoke(main, ["eval", "run", str(out), "--tasks", str(toy), "--instances", CALC,
                                        "--policy", "gold", "--grader", "local"])
        assert run.exit_code == 1 and f"Error: {out}: {BUSY}" in run.output, run.output
    assert not (out / GRADES).exists()
    regrade(out, GradingSettings(grader="local"), progress=lambda _: None)  # once it is free
    assert [g["resolved"] for g in _lines(out / GRADES)] == [True]


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_a_grading_the_machine_failed_is_graded_again(toy, tmp_path, monkeypatch):
    """`git clone` failing for want of disk space decides nothing about the patch: the line says `retry`, with what
    git said, and the next `eval grade` grades the instance."""
    out = _inferred(toy, tmp_path / "run")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/bash\nif [ \"$1\" = clone ]; then echo 'fatal: write error: No space left on "
                              f"device' >&2; exit 128; fi\nexec {shutil.which('git')} \"$@\"\n")
    (fake / "git").chmod(0o755)
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", f"{fake}:{path}")
    lines: list[str] = []
    regrade(out, GradingSettings(grader="local"), progress=lines.append)
    [failed] = _lines(out / GRADES)
    assert failed.get("retry") is True and failed["infra_failure"] and not failed["resolved"]
    assert "No space left on device" in failed["error"] and failed["logs"] == f"grading/{CALC}"
    assert any("graded again by the next grading" in line for line in lines)
    report = json.loads((out / "report.json").read_text())
    assert report["resolved"] == 0 and report["outcomes"]["infra_error"] == 1

    monkeypatch.setenv("PATH", path)
    regrade(out, GradingSettings(grader="local"), progress=lambda _: None)
    graded = _lines(out / GRADES)
    assert len(graded) == 2 and graded[-1]["resolved"] and "retry" not in graded[-1]
    assert json.loads((out / "report.json").read_text())["resolved"] == 1
    regrade(out, GradingSettings(grader="local"), progress=lambda _: None)  # a verdict now: nothing to grade
    assert len(_lines(out / GRADES)) == 2


class _Endpoint(JsonServer):
    """An OpenAI-compatible server: `/models` lists `served`; every chat reply finishes. `strict`: as vLLM, a
    request for another model is refused."""

    def __init__(self, served: str, strict: bool = False) -> None:
        self.served, self.strict = served, strict
        super().__init__(self._answer)

    def _answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        if method == "GET":
            return 200, {"object": "list", "data": [{"id": self.served, "object": "model"}]}
        if self.strict and body["model"] != self.served:
            return 404, {"error": {"message": f"The model `{body['model']}` does not exist.", "code": 404}}
        finish = {"name": "finish", "arguments": json.dumps({"message": "done"})}
        return 200, {"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function", "function": finish}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2}}


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_predictions_are_named_after_the_model_the_endpoint_serves(toy, tmp_path):
    """`eval run --base-url URL` with no model named: the predictions, `eval.json` and the report name the model
    the endpoint's `/models` lists, as the attempts query it, not the policy."""
    from click.testing import CliRunner

    from swehero.cli import main

    endpoint, out = _Endpoint("fake-coder"), tmp_path / "run"
    try:
        result = CliRunner().invoke(main, ["eval", "run", str(out), "--tasks", str(toy), "--instances", CALC,
                                           "--policy", "openai", "--base-url", endpoint.url, "--grader", "none"])
    finally:
        endpoint.close()
    assert result.exit_code == 0, result.output
    assert [p["model_name_or_path"] for p in _lines(out / PREDICTIONS)] == ["fake-coder"]
    assert json.loads((out / "eval.json").read_text())["model"] == "fake-coder"
    assert (out / "report.md").read_text().startswith("# Eval: fake-coder on ")


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_a_model_named_is_the_label_whatever_the_endpoint_serves(toy, tmp_path):
    endpoint = _Endpoint("fake-coder")
    try:
        out = _inferred(toy, tmp_path / "run", "openai", openai=OpenAIConfig(base_url=endpoint.url, model="mine"))
    finally:
        endpoint.close()
    assert [p["model_name_or_path"] for p in _lines(out / PREDICTIONS)] == ["mine"]


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_an_endpoint_that_refuses_the_requests_stops_the_run_before_any_attempt(toy, tmp_path):
    """A misspelt model name: every attempt ended as an agent error, committed, the run a finished report of 0%
    that a rerun with the right name refused to touch (other settings)."""
    from click.testing import CliRunner

    from swehero.cli import main

    endpoint, out = _Endpoint("qtiny", strict=True), tmp_path / "run"
    argv = ["eval", "run", str(out), "--tasks", str(toy), "--instances", CALC, "--policy", "openai", "--base-url",
            endpoint.url, "--grader", "none", "--openai-model"]
    try:
        refused = CliRunner().invoke(main, argv + ["qtiny-typo"])
        assert not (out / PREDICTIONS).exists() or not _lines(out / PREDICTIONS)
        mended = CliRunner().invoke(main, argv + ["qtiny"])
    finally:
        endpoint.close()
    assert refused.exit_code == 1, refused.output
    assert f"Error: {endpoint.url}/chat/completions: HTTP 404: " in refused.output
    assert "qtiny-typo` does not exist" in refused.output and "resumes with the rest" in refused.output
    assert mended.exit_code == 0, mended.output
    assert [p["model_name_or_path"] for p in _lines(out / PREDICTIONS)] == ["qtiny"]


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_an_endpoint_that_names_no_model_stops_the_run_before_any_attempt(toy, tmp_path):
    from click.testing import CliRunner

    from swehero.cli import main

    endpoint = _Endpoint("gone")
    endpoint.close()  # its port answers nothing now
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["eval", "run", str(out), "--tasks", str(toy), "--instances", CALC,
                                       "--policy", "openai", "--base-url", endpoint.url, "--grader", "none"])
    assert result.exit_code == 1, result.output
    assert f"Error: no model endpoint says which model it serves ({endpoint.url}/models: " in result.output
    assert "Traceback" not in result.output and not (out / PREDICTIONS).exists()


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_eval_grade_grades_with_the_grader_the_run_graded_with(toy, tmp_path):
    """eval.json saves the grader: `eval grade` without --grader grades as the run did (it tried swebench), and a
    grader that would mix two graders' verdicts in one rate is refused in one line. A folder saved before the grader
    was grades with the default, swebench."""
    from click.testing import CliRunner

    from swehero.cli import main
    from swehero.eval.pipeline import run_grading

    out = _inferred(toy, tmp_path / "run")
    assert "grading" not in json.loads((out / "eval.json").read_text())  # inference only: no grader yet
    runner = CliRunner()
    graded = runner.invoke(main, ["eval", "grade", str(out), "--grader", "local"])
    assert graded.exit_code == 0, graded.output
    assert json.loads((out / "eval.json").read_text())["grading"] == {"grader": "local"}
    again = runner.invoke(main, ["eval", "grade", str(out)])
    assert again.exit_code == 0 and "grading (local): 0 prediction(s) to grade, 1 graded before" in again.output
    (tmp_path / "grading.yaml").write_text("grader: swebench\n")
    for named in (["--grader", "swebench"], ["--set", "grader=swebench"], ["--config", str(tmp_path / "grading.yaml")]):
        mixed = runner.invoke(main, ["eval", "grade", str(out), *named])
        assert mixed.exit_code == 1 and mixed.output == (
            f"Error: {out} holds grades by the local grader, so grading it with swebench would mix graders in one "
            f"rate: grade with --grader local, or remove {out / GRADES} to grade every prediction again with "
            "swebench\n"), mixed.output
    assert run_grading(GradingSettings(), {}, grader_named=False).grader == "swebench"
    saved = {"grading": {"grader": "swebench", "harness_dataset": "/data/harness.jsonl"}}
    assert run_grading(GradingSettings(grader="local"), saved, grader_named=False).harness.dataset == \
        "/data/harness.jsonl"
