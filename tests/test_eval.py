"""swehero eval: task loading, toy tasks, resumable inference, the local grader, harness plumbing, reports.

The harness is exercised here through its argument building (checked against the real
`run_evaluation.main` signature), its dataset/prediction loaders and its own report writer, not by grading in
containers.
"""

import inspect
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from swehero.agent.loop import LoopConfig
from swehero.agent.openai_policy import OpenAIConfig
from swehero.agent.settings import AgentSettings
from swehero.errors import InputError, Unavailable
from swehero.eval.grade import GRADES
from swehero.agent.docker_host import check_architecture, check_free_disk
from swehero.eval.harness import HarnessConfig, harness_kwargs, parse_harness, run_id_for
from swehero.eval.pipeline import Settings, evaluate
from swehero.eval.compare import compare
from swehero.eval.report import NOT_GRADED, OUTCOMES, build_report, outcome, wilson
from swehero.jsonio import JsonlLog
from swehero.rollout.tasks import benchmark_of, load_tasks, select
from swehero.rollout.toy import HELDOUT, build_toy_tasks
from swehero.serve.server import ServeConfig

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from swehero.eval.cli import eval_group; eval_group()"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_tasks(tmp_path_factory.mktemp("toy"))


def _settings(toy: Path, policy: str, **kw) -> Settings:
    settings = Settings(tasks=str(toy), agent=AgentSettings(policy=policy), **kw)
    settings.grading.grader = "local"
    return settings


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
@pytest.mark.timeout(120)
def test_a_model_server_that_never_replies_is_an_infra_error_not_the_models_time_limit(toy, tmp_path):
    """Its POST never returns: the attempt reached its time limit before the model's first reply, and the report
    counted a `time_limit` of the model's, where the model had not been asked."""
    from json_server import JsonServer

    released = threading.Event()
    hung = JsonServer(lambda method, path, body: (200, {"data": [{"id": "m"}]}) if method == "GET" else
                      (released.wait(60), (500, {}))[1])
    settings = Settings(tasks=str(toy), limit=1, endpoints=[hung.url], agent=AgentSettings(
        policy="openai", time_limit_s=2, openai=OpenAIConfig(model="m", request_retries=1, backoff=0.01)))
    settings.grading.grader = "local"
    try:
        out = evaluate(settings, tmp_path / "e", progress=lambda _: None)
    finally:
        released.set()
        hung.close()
    report = json.loads(Path(out["report"]).read_text())
    assert report["outcomes"]["infra_error"] == 1 and report["outcomes"]["time_limit"] == 0
    [prediction] = _lines(tmp_path / "e" / "predictions.jsonl")
    meta = json.loads(next((tmp_path / "e").rglob(f"{prediction['instance_id']}*.json")).read_text())["metadata"]
    assert meta["error"] == f"{hung.url}: no reply before the time limit of 2s" and meta["error_in"] == "policy"


def test_toy_tasks_are_deterministic_and_in_verified_shape(toy, tmp_path):
    again = build_toy_tasks(tmp_path / "again")
    assert again.read_text() == toy.read_text()
    assert (again.parent / HELDOUT).read_text() == (toy.parent / HELDOUT).read_text()
    rows, heldout = _lines(toy), _lines(toy.parent / HELDOUT)
    assert len(rows) == 4 and len({r["instance_id"] for r in rows}) == 4
    assert len(heldout) == 3 and not {r["repo"] for r in heldout} & {r["repo"] for r in rows}
    for row in rows + heldout:
        assert isinstance(row["FAIL_TO_PASS"], str) and json.loads(row["FAIL_TO_PASS"])
        assert row["environment_setup_commit"] == row["base_commit"]
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=toy.parent / "repos" / row["repo"].replace("/", "__"),
                              capture_output=True, text=True, check=True).stdout.strip()
        assert head != row["base_commit"]  # the upstream fix is in history, after the base


def test_loads_verified_and_multilingual_shapes(toy, tmp_path):
    import datasets

    verified = load_tasks(str(toy))
    rows = []
    for row in _lines(toy):  # Multilingual: lists, eval_script/log_parser/image, no environment_setup_commit
        row = {k: v for k, v in row.items() if k != "environment_setup_commit"}
        row.update(FAIL_TO_PASS=json.loads(row["FAIL_TO_PASS"]), PASS_TO_PASS=json.loads(row["PASS_TO_PASS"]),
                   eval_script="#!/bin/bash\npytest -rA", log_parser="parse_log_pytest", image="img:latest")
        rows.append(row)
    datasets.Dataset.from_list(rows).to_parquet(tmp_path / "ml.parquet")
    (tmp_path / "ml.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_json(tmp_path / "lines.json")  # JSON Lines, whatever the file is called
    for path in (tmp_path / "ml.parquet", tmp_path / "ml.json", tmp_path / "lines.json"):
        multilingual = load_tasks(str(path))
        assert [t["FAIL_TO_PASS"] for t in multilingual] == [t["FAIL_TO_PASS"] for t in verified]
        assert [t["PASS_TO_PASS"] for t in multilingual] == [t["PASS_TO_PASS"] for t in verified]
        assert multilingual[0]["log_parser"] == "parse_log_pytest" and "environment_setup_commit" not in multilingual[0]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"instance_id": "x", "repo": "a/b"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: task .x. lacks column\(s\) base_commit, problem_statement"):
        load_tasks(str(tmp_path / "bad.jsonl"))
    bad = {"instance_id": "x", "repo": "a/b", "base_commit": "c", "problem_statement": "p", "FAIL_TO_PASS": "[oops"}
    (tmp_path / "bad.jsonl").write_text("\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: task 'x': FAIL_TO_PASS: Expecting value"):
        load_tasks(str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n{torn\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON: Expecting property name"):
        load_tasks(str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.json").write_text("[\n" + json.dumps(rows[0]) + ",\n]\n")
    with pytest.raises(ValueError, match=r"bad.json:3: not JSON: Expecting value"):
        load_tasks(str(tmp_path / "bad.json"))
    for name, text in (("empty.json", "[]\n"), ("empty.jsonl", "\n\n")):  # e.g. all dropped by decontamination
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=rf"{name}: no tasks in it"):
            load_tasks(str(tmp_path / name))


def test_rows_that_are_no_tasks_are_named_by_file_line_and_field(toy, tmp_path):
    """Rows of the wrong shape are input errors naming where they are, not tracebacks from later steps."""
    row = _lines(toy)[0]
    cases = {"null.jsonl": json.dumps(row) + "\nnull\n", "list.jsonl": "[1, 2]\n", "objects.json": "[1]",
             "id.jsonl": json.dumps({**row, "instance_id": 12}) + "\n",
             "twice.jsonl": json.dumps(row) + "\n\n" + json.dumps(row) + "\n",
             "lines.json": json.dumps(row) + "\n" + json.dumps({**row, "instance_id": 12}) + "\n",
             "path.jsonl": json.dumps({**row, "instance_id": "../../victim"}) + "\n",
             "dots.jsonl": json.dumps({**row, "instance_id": ".."}) + "\n"}
    messages = {"null.jsonl": r"null.jsonl:2: a task is a JSON object with SWE-bench's columns, got None",
                "list.jsonl": r"list.jsonl:1: a task is a JSON object .*, got \[1, 2\]",
                "objects.json": r"objects.json#1: a task is a JSON object .*, got 1",
                "id.jsonl": r"id.jsonl:1: task 12: instance_id must be a string, got 12",
                "twice.jsonl": rf"twice.jsonl:3: instance {row['instance_id']} appears twice "
                               r"\(first at .*twice.jsonl:1\)",
                "lines.json": r"lines.json:2: task 12: instance_id must be a string, got 12",
                # a run empties the folders named by its ids: a path there would empty folders outside the run
                "path.jsonl": r"path.jsonl:1: task '../../victim': instance_id names files and folders: it cannot",
                "dots.jsonl": r"dots.jsonl:1: task '..': instance_id names files and folders"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(InputError, match=messages[name]):
            load_tasks(str(tmp_path / name))


def test_an_empty_test_list_is_refused_where_grading_needs_one(toy, tmp_path):
    """An empty string is no test list (swebench's `make_test_spec` cannot read it): a task set for distillation
    without tests loads without the column, and an eval that grades stops before inference, naming row and field.
    A genuine `[]` is graded, with a warning: any patch resolves it."""
    rows = _lines(toy)
    iid = rows[1]["instance_id"]
    rows[1]["FAIL_TO_PASS"] = " "
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert "FAIL_TO_PASS" not in load_tasks(str(tasks))[1]
    with pytest.raises(InputError, match=rf"tasks.jsonl:2: task '{iid}': FAIL_TO_PASS is empty; grading needs"):
        load_tasks(str(tasks), tests=True)
    for grader in ("local", "swebench"):
        settings = _settings(tasks, "gold")
        settings.grading.grader = grader
        with pytest.raises(InputError, match=rf"tasks.jsonl:2: task '{iid}': FAIL_TO_PASS is empty"):
            evaluate(settings, tmp_path / grader, progress=lambda _: None)
        assert not (tmp_path / grader / "run-0").exists() and not (tmp_path / grader / "predictions.jsonl").exists()

    rows[1]["FAIL_TO_PASS"] = "[]"
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows))
    said = []
    settings = _settings(tasks, "gold")
    settings.grading.grader = "swebench"  # stops before inference: the toy tasks have no images
    with pytest.raises(InputError, match="lacks eval_script"):
        evaluate(settings, tmp_path / "empty-list", progress=said.append)
    assert said == [f"warning: 1 task(s) have an empty FAIL_TO_PASS, so no test checks the fix: {iid}"]


def test_selection_instances_limit_and_shards(toy):
    tasks = load_tasks(str(toy))
    ids = [t["instance_id"] for t in tasks]
    assert [t["instance_id"] for t in select(tasks, [ids[2], ids[0]])] == [ids[2], ids[0]]
    assert len(select(tasks, limit=3)) == 3
    shards = [[t["instance_id"] for t in select(tasks, shard=f"{i}/3")] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(ids) and all(shards)
    with pytest.raises(ValueError, match="unknown instance"):
        select(tasks, ["nope"])
    with pytest.raises(ValueError, match="0 <= i < n"):
        select(tasks, shard="3/3")


@pytest.mark.slow
def test_benchmark_presets_resolve_and_fail_clearly_offline(tmp_path):
    assert benchmark_of("verified").hub_id == "princeton-nlp/SWE-bench_Verified"
    assert benchmark_of("SWE-bench/SWE-bench_Multilingual").key == "multilingual"
    assert benchmark_of("princeton-nlp/swe-bench_verified").harness_dataset == "SWE-bench/SWE-bench_Verified"
    # Nothing may be downloaded here: in offline mode, without a cache, the error must say what to do.
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "swehero", "eval", "run", str(tmp_path / "e"), "--tasks", "verified",
                           "--policy", "gold"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Error: could not load princeton-nlp/SWE-bench_Verified" in done.stderr
    assert "hf download --repo-type dataset" in done.stderr
    # a hub id loads that copy: the harness's has the `eval_script` the local grader needs (it loaded princeton-nlp's)
    load = "from swehero.rollout.tasks import load_tasks; load_tasks('swe-bench/swe-bench_verified')"
    done = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=120)
    assert "could not load SWE-bench/SWE-bench_Verified" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
def test_templated_tasks_are_distinct_and_resolve_with_gold_only(tmp_path):
    tasks = build_toy_tasks(tmp_path / "toy", templated=16)
    rows = _lines(tasks)
    assert len(rows) == 20 and len({r["instance_id"] for r in rows}) == 20
    assert len({r["patch"] for r in rows}) == 20 and len({r["problem_statement"] for r in rows}) == 20
    for policy, resolved in (("gold", 20), ("empty", 0)):
        out = evaluate(_settings(tasks, policy, workers=2), tmp_path / policy, progress=lambda _: None)
        assert json.loads(Path(out["report"]).read_text())["resolved"] == resolved


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_decoy_patches_apply_and_fail_the_tests(tmp_path):
    from swehero.rollout.toy import HELDOUT_DECOYS, build_decoy_tasks

    tasks = build_toy_tasks(tmp_path / "toy", templated=16)
    decoys = build_decoy_tasks(tmp_path / "toy", tmp_path / "decoys")
    for name, count in ((decoys.name, 20), (HELDOUT_DECOYS, 3)):
        rows = _lines(decoys.parent / name)
        gold = {r["instance_id"]: r["patch"] for r in _lines(tasks.parent / ("tasks.jsonl" if count == 20 else HELDOUT))}
        assert len(rows) == count and all(r["patch"] and r["patch"] != gold[r["instance_id"]] for r in rows)
        settings = _settings(decoys.parent / name, "gold", workers=2, repos=str(tmp_path / "toy" / "repos"))
        out = evaluate(settings, tmp_path / name, progress=lambda _: None)  # "gold" submits the task's patch
        assert json.loads(Path(out["report"]).read_text())["outcomes"]["unresolved"] == count
        assert all(g["patch_applied"] and not g["resolved"] for g in _lines(tmp_path / name / GRADES))


@pytest.mark.slow
def test_heldout_tasks_resolve_with_gold_only(toy, tmp_path):
    heldout = str(toy.parent / HELDOUT)
    for policy, resolved in (("gold", 3), ("empty", 0)):
        out = evaluate(_settings(Path(heldout), policy), tmp_path / policy, progress=lambda _: None)
        assert json.loads(Path(out["report"]).read_text())["resolved"] == resolved


@pytest.mark.slow
def test_gold_scores_100_and_empty_0_through_local_grader(toy, tmp_path):
    gold = evaluate(_settings(toy, "gold", workers=2), tmp_path / "gold", progress=lambda _: None)
    empty = evaluate(_settings(toy, "empty"), tmp_path / "empty", progress=lambda _: None)
    gold_report, empty_report = (json.loads(Path(o["report"]).read_text()) for o in (gold, empty))
    assert gold_report["resolved"] == 4 and gold_report["resolved_rate"] == 1.0
    assert gold_report["outcomes"]["resolved"] == 4
    assert empty_report["resolved"] == 0 and empty_report["outcomes"]["empty_patch"] == 4
    assert sum(empty_report["outcomes"].values()) == 4
    assert Path(gold["chart"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in _lines(tmp_path / "gold" / GRADES):  # the local grader writes swebench's own files
        report = json.loads((tmp_path / "gold" / "grading" / row["instance_id"] / "report.json").read_text())
        assert report[row["instance_id"]]["resolved"] is True
        assert report[row["instance_id"]]["tests_status"]["FAIL_TO_PASS"]["failure"] == []
    table = compare([tmp_path / "gold", tmp_path / "empty"])
    assert "| resolved | 4/4 = 100.0% | 0/4 = 0.0% |" in table and "| empty_patch (per run) | 0 | 4 |" in table


def test_wrong_patch_is_unresolved_and_breaking_p2p_counts(toy, tmp_path):
    """A patch that fixes the F2P test but breaks a P2P one is not resolved, exactly as in swebench."""
    from swehero.rollout.local_grader import grade_instance

    task = load_tasks(str(toy))[0]  # calc: add() subtracts; breaking sub() fails the P2P test
    bad = task["patch"] + ("diff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n"
                           "@@ -5,2 +5,2 @@ def add(a, b):\n def sub(a, b):\n-    return a - b\n+    return a * b\n")
    repo = toy.parent / "repos" / task["repo"].replace("/", "__")
    entry = grade_instance(task, {"instance_id": task["instance_id"], "model_name_or_path": "m", "model_patch": bad},
                           repo, tmp_path / "g")
    assert entry["patch_successfully_applied"] and not entry["resolved"]
    assert entry["tests_status"]["PASS_TO_PASS"]["failure"] == task["PASS_TO_PASS"]
    assert entry["tests_status"]["FAIL_TO_PASS"]["success"] == task["FAIL_TO_PASS"]


@pytest.mark.slow
def test_predictions_validate_with_swebench_loaders(toy, tmp_path, monkeypatch):
    from swebench.harness.run_evaluation import get_dataset_from_preds
    from swebench.harness.utils import get_predictions_from_file

    out = evaluate(_settings(toy, "gold"), tmp_path / "run", progress=lambda _: None)
    predictions = get_predictions_from_file(out["predictions"], str(toy), "test")
    assert len(predictions) == 4
    assert all(set(p) == {"instance_id", "model_name_or_path", "model_patch"} for p in predictions)
    monkeypatch.chdir(tmp_path)  # swebench looks for earlier reports relative to the working directory
    by_id = {p["instance_id"]: p for p in predictions}
    ready = get_dataset_from_preds(str(toy), "test", None, by_id, "check", rewrite_reports=False)
    assert sorted(t["instance_id"] for t in ready) == sorted(by_id)


def test_harness_kwargs_match_run_evaluation_signature(tmp_path):
    from swebench.harness.run_evaluation import main

    kwargs = harness_kwargs(HarnessConfig(max_workers=8, timeout_s=900, task_repo="/tasks"),
                            "SWE-bench/SWE-bench_Verified", tmp_path / "p.jsonl", "swehero.r1", ["a__b-1"])
    assert set(kwargs) == set(inspect.signature(main).parameters)
    assert kwargs["max_workers"] == 8 and kwargs["timeout"] == 900 and kwargs["run_id"] == "swehero.r1"
    assert kwargs["task_repo"] == "/tasks" and kwargs["predictions_path"] == str(tmp_path / "p.jsonl")


def _swebench_instance_report(iid: str, resolved: bool) -> dict:
    status = {"success": ["t::a"], "failure": []} if resolved else {"success": [], "failure": ["t::a"]}
    return {iid: {"patch_is_None": False, "patch_exists": True, "patch_successfully_applied": True,
                  "resolved": resolved, "infra_failure": False,
                  "tests_status": {"FAIL_TO_PASS": status, "PASS_TO_PASS": {"success": ["t::b"], "failure": []},
                                   "FAIL_TO_FAIL": {"success": [], "failure": []},
                                   "PASS_TO_FAIL": {"success": [], "failure": []}}}}


def test_harness_output_parses_into_outcomes(tmp_path, monkeypatch):
    """Harness files written in its exact layout: per-instance report.json by hand, the run summary by swebench's
    own `make_run_report`."""
    from swebench.harness.reporting import make_run_report

    from swehero.eval.inference import PREDICTIONS, trajectory_path
    from swehero.jsonio import write_json_atomic

    model, run_id = "org/swe-hero-32b", "swehero.r1"
    ids = ["o__r-1", "o__r-2", "o__r-3", "o__r-4", "o__r-5"]
    where = tmp_path / "harness"
    logs = where / "logs" / "run_evaluation" / run_id / "org__swe-hero-32b"
    for iid, resolved in (("o__r-1", True), ("o__r-2", False)):
        (logs / iid).mkdir(parents=True)
        (logs / iid / "report.json").write_text(json.dumps(_swebench_instance_report(iid, resolved), indent=4))
    # swebench leaves patch_successfully_applied false when it cannot parse the test output, although it applied
    report = json.loads((logs / "o__r-2" / "report.json").read_text())
    report["o__r-2"]["patch_successfully_applied"] = False
    (logs / "o__r-2" / "report.json").write_text(json.dumps(report))
    (logs / "o__r-2" / "run_instance.log").write_text(">>>>> Applied Patch:\nChecking patch a.py...\n")
    (logs / "o__r-3").mkdir(parents=True)  # the model's patch did not apply: the harness errors, no report
    (logs / "o__r-3" / "run_instance.log").write_text(">>>>> Patch Apply Failed:\nerror: corrupt patch\n")
    (logs / "o__r-4").mkdir(parents=True)  # the container never started
    (logs / "o__r-4" / "run_instance.log").write_text("Error response from daemon: no space left on device\n")
    patches = {"o__r-1": "diff", "o__r-2": "diff", "o__r-3": "junk", "o__r-4": "diff", "o__r-5": ""}
    predictions = {i: {"instance_id": i, "model_name_or_path": model, "model_patch": p} for i, p in patches.items()}
    monkeypatch.chdir(where)
    make_run_report(predictions, [{"instance_id": i} for i in ids], run_id, None, ".")
    summary = json.loads((where / f"org__swe-hero-32b.{run_id}.json").read_text())
    assert summary["resolved_ids"] == ["o__r-1"] and set(summary["error_ids"]) == {"o__r-3", "o__r-4"}

    grades = parse_harness(where, run_id, model, ids)
    assert grades["o__r-1"]["resolved"] and not grades["o__r-2"]["resolved"]
    assert grades["o__r-2"]["patch_applied"]
    assert grades["o__r-3"]["error"] == "patch did not apply" and not grades["o__r-3"]["infra_failure"]
    assert grades["o__r-4"]["infra_failure"] and "o__r-5" not in grades

    out = tmp_path / "eval"
    log = JsonlLog(out / PREDICTIONS)
    for iid in ids:
        write_json_atomic(trajectory_path(out, iid), {"instance_id": iid, "metadata": {
            "finish_reason": "submitted", "steps": 7, "prompt_tokens": 1000, "completion_tokens": 100}})
        log.append(predictions[iid])
    grade_log = JsonlLog(out / GRADES)
    for record in grades.values():
        grade_log.append(record)
    report = build_report([{"instance_id": i, "repo": "o/r"} for i in ids], out, model, "verified", 3.0, 15.0)
    assert report["outcomes"] == {"resolved": 1, "unresolved": 2, "empty_patch": 1, "stuck": 0, "step_limit": 0,
                                  "context_limit": 0, "time_limit": 0, "tool_parse_failure": 0, "infra_error": 1}
    assert report["paper"] == {"model": "SWE-Hero-32B", "benchmark": "verified", "scaffold": "execution-based",
                               "resolved_rate": 0.622}
    assert report["averages"]["cost_usd"] == pytest.approx((1000 * 3 + 100 * 15) / 1e6)
    assert report["per_repo"]["o/r"] == {"total": 5, "resolved": 1, "rate": 0.2}
    # a grade edited by hand is refused at its line, not read as a verdict ("no" counted as resolved)
    grade_log.append({**grades["o__r-2"], "resolved": "no"})
    with pytest.raises(InputError, match=rf"{re.escape(str(out / GRADES))}:5: resolved must be true or false"):
        build_report([{"instance_id": i, "repo": "o/r"} for i in ids], out, model, "verified")


@pytest.mark.parametrize("episode,grade,patch,expected", [
    ({"finish_reason": "step_limit"}, {"resolved": True}, "d", "resolved"),
    ({"finish_reason": "step_limit"}, {"resolved": False}, "d", "step_limit"),
    ({"finish_reason": "step_limit"}, None, "d", "infra_error"),  # not graded yet: it may resolve
    ({"finish_reason": "time_limit"}, None, "d", "infra_error"),
    ({"finish_reason": "step_limit"}, None, "", "step_limit"),
    ({"finish_reason": "context_limit"}, {"resolved": False}, "d", "context_limit"),
    ({"finish_reason": "time_limit"}, None, "", "time_limit"),
    ({"finish_reason": "tool_parse_failures"}, None, "", "tool_parse_failure"),
    ({"finish_reason": "agent_error", "error": "boom"}, None, "", "infra_error"),
    ({"finish_reason": "submitted"}, {"resolved": False, "infra_failure": True}, "d", "infra_error"),
    ({"finish_reason": "submitted"}, None, "  \n", "empty_patch"),
    ({"finish_reason": "submitted"}, None, "d", "infra_error"),
    ({"finish_reason": "submitted"}, {"resolved": False}, "d", "unresolved"),
])
def test_every_instance_gets_one_outcome(episode, grade, patch, expected):
    assert outcome(episode, grade, patch)[0] == expected and expected in OUTCOMES


def test_a_patch_at_a_limit_not_graded_yet_is_flagged_as_not_graded():
    """So the report's "Not graded" notice counts it: graded, it may well resolve. An agent_error's partial patch
    too: it is graded as well, and `eval select` refuses the folder while it is not."""
    assert outcome({"finish_reason": "context_limit", "error": "128k"}, None, "d") == ("infra_error", NOT_GRADED)
    assert outcome({"finish_reason": "agent_error", "error": "server gone"}, None, "d") == ("infra_error", NOT_GRADED)
    assert outcome({"finish_reason": "agent_error", "error": "server gone"}, {"resolved": False, "error": "disk",
                                                                            "retry": True}, "d")[1].startswith(
        NOT_GRADED)


def _priced_folder(out: Path, tokens: dict) -> None:
    from swehero.eval.inference import PREDICTIONS, trajectory_path
    from swehero.jsonio import write_json_atomic

    write_json_atomic(trajectory_path(out, "o__r-1"), {"instance_id": "o__r-1", "metadata": {
        "finish_reason": "submitted", "steps": 2, **tokens}})
    JsonlLog(out / PREDICTIONS).append({"instance_id": "o__r-1", "model_name_or_path": "m", "model_patch": "diff"})


@pytest.mark.parametrize("tokens, cost", [({"prompt_tokens": 10**6, "completion_tokens": 10**5}, 4.5),
                                          ({"prompt_tokens": 10**6, "completion_tokens": None}, None),
                                          ({"prompt_tokens": None, "completion_tokens": 10**5}, None)])
def test_a_missing_token_count_makes_the_cost_unknown_not_smaller(tmp_path, tokens, cost):
    _priced_folder(tmp_path, tokens)
    report = build_report([{"instance_id": "o__r-1", "repo": "o/r"}], tmp_path, "m", "verified", 3.0, 15.0)
    assert report["instances"][0]["cost_usd"] == cost and report["averages"]["cost_usd"] == cost
    # without a price for them, completion tokens are not needed for the cost
    if tokens["prompt_tokens"] is not None:
        assert build_report([{"instance_id": "o__r-1", "repo": "o/r"}], tmp_path, "m", "verified", 3.0)[
            "averages"]["cost_usd"] == 3.0


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_eval_report_and_grade_keep_the_runs_prices(toy, tmp_path):
    """The prices are saved with the folder, so the reports `eval report` and `eval grade` rewrite keep the cost."""
    from click.testing import CliRunner

    from swehero.eval.cli import eval_group

    out = tmp_path / "run"
    settings = _settings(toy, "empty", instances=["swehero-toy__calc-1"], price_prompt_per_mtok=3.0,
                         price_completion_per_mtok=15.0)
    settings.grading.grader = "none"
    evaluate(settings, out, progress=lambda _: None)
    path = out / "trajectories" / "swehero-toy__calc-1.json"
    record = json.loads(path.read_text())  # the empty policy asks no model: token counts as a model's would be
    record["metadata"].update(prompt_tokens=10**6, completion_tokens=10**5)
    path.write_text(json.dumps(record))
    for command in (["report", str(out)], ["grade", str(out), "--grader", "local"]):
        result = CliRunner().invoke(eval_group, command)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "report.json").read_text())["averages"]["cost_usd"] == 4.5, command


def test_wilson_interval():
    assert wilson(0, 4)[0] == 0.0 and wilson(4, 4)[1] == pytest.approx(1.0)
    assert wilson(4, 4)[0] == pytest.approx(0.5101, abs=1e-4)
    low, high = wilson(311, 500)  # 62.2% of Verified
    assert low == pytest.approx(0.5787, abs=1e-3) and high == pytest.approx(0.6635, abs=1e-3)


def test_paper_table():
    from swehero.eval.paper import markdown_table, paper_figure

    assert paper_figure("/ckpt/SWE-Hero-32B/hf", "multilingual", "exec") == ("SWE-Hero-32B", 44.1)
    assert paper_figure("swe_zero_7b", "verified", "exec") == ("SWE-Zero-7B", 46.8)
    assert paper_figure("swe-hero-14b", "verified", "exec") == ("SWE-Hero-14B", 60.8)
    assert paper_figure("swe-hero-7b", "multilingual", "exec") is None
    assert paper_figure("qwen", "verified", "exec") is None
    # the execution-free scaffold: the paper evaluates SWE-Hero-32B with it, and no other model
    assert paper_figure("swe-hero-32b", "verified", "zero") == ("SWE-Hero-32B", 57.7)
    assert paper_figure("swe-hero-32b", "multilingual", "zero") == ("SWE-Hero-32B", 42.2)
    assert paper_figure("swe-zero-32b", "verified", "zero") is None
    assert markdown_table() in (Path(__file__).parents[1] / "docs" / "evaluation.md").read_text()


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_the_report_takes_the_paper_figure_of_the_scaffold_the_folder_was_evaluated_with(tmp_path):
    """A zero-mode (execution-free) eval of SWE-Hero-32B is set against the paper's 57.7, not the 62.2 of the
    execution-based scaffold; a folder saved before the mode was recorded keeps the execution-based figure."""
    from swehero.eval.pipeline import report_eval

    _priced_folder(tmp_path, {"prompt_tokens": 1, "completion_tokens": 1})
    tasks = [{"instance_id": "o__r-1", "repo": "o/r"}]
    saved = {"tasks": "/data/verified.jsonl", "model": "swe-hero-32b", "benchmark": "verified"}
    for attempts, figure in (({"agent": {"mode": "zero"}}, 0.577), ({"agent": {"mode": "exec"}}, 0.622), ({}, 0.622)):
        report_eval(tmp_path, tasks, {**saved, "attempts": attempts}, progress=lambda _: None)
        assert json.loads((tmp_path / "report.json").read_text())["paper"]["resolved_rate"] == pytest.approx(figure)
    assert "Paper (SWE-Hero-32B, verified, execution-based scaffold, pass@1): 62.2%" in \
        (tmp_path / "report.md").read_text()


def test_guards():
    check_architecture("x86_64")
    with pytest.raises(Unavailable, match="x86_64 only"):
        check_architecture("aarch64")
    check_architecture("arm64", remote=True)
    assert check_free_disk("/", 0.0, "x") > 0
    with pytest.raises(Unavailable, match="GiB required before pulling"):
        check_free_disk("/", 1e9, "pulling images")


@pytest.mark.parametrize("torn", ['{"instance_id": "b", "x"', '{"instance_id": "b", "x": "' + "y" * 3_000_000])
def test_torn_last_line_is_dropped(tmp_path, torn):
    """Only the tail is read to find it, a block at a time: a torn line longer than a block still goes whole."""
    path = tmp_path / "p.jsonl"
    path.write_text('{"instance_id": "a", "x": 1}\n' + torn)  # a writer killed mid-line
    log = JsonlLog(path)
    assert list(log.records()) == ["a"] and log.keys() == {"a"}
    log.append({"instance_id": "b", "x": 2})
    assert log.records()["b"] == {"instance_id": "b", "x": 2}
    path.write_text(torn)  # the first line torn: nothing is left
    assert JsonlLog(path).keys() == set() and path.read_bytes() == b""


def _wait_for_lines(path: Path, proc: subprocess.Popen, n: int) -> None:
    deadline = time.monotonic() + 90
    while len(_lines(path)) < n:
        assert proc.poll() is None, "finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.slow
def test_kill_9_and_resume_loses_nothing_and_duplicates_nothing(toy, tmp_path):
    out = tmp_path / "run"
    cmd = [*CLI, "run", str(out), "--tasks", str(toy), "--policy", "gold", "--grader", "local"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # killed during inference, then during grading, then left to finish
    for watched in (out / "predictions.jsonl", out / GRADES):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_lines(watched, proc, len(_lines(watched)) + 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(_lines(watched)) < 4
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for name in ("predictions.jsonl", GRADES):
        ids = [r["instance_id"] for r in _lines(out / name)]
        assert sorted(ids) == sorted(set(ids)) and len(ids) == 4
    report = json.loads((out / "report.json").read_text())
    assert report["resolved"] == 4 and report["pending"] == 0


@pytest.mark.slow
def test_served_tiny_model_completes_an_eval_run(toy, tmp_path, tiny_model_dir):
    """A real tiny model served by vLLM (CPU) drives the agent: whatever it outputs, every instance ends in an
    outcome class and the report is written."""
    serve = ServeConfig(model=str(tiny_model_dir), max_model_len=16384, compile=False)
    settings = _settings(toy, "openai", limit=2, serve=serve)
    settings.agent = AgentSettings(policy="openai", time_limit_s=300, loop=LoopConfig(max_steps=3),
                                   openai=OpenAIConfig(max_reply_tokens=64))
    out = evaluate(settings, tmp_path / "served")
    report = json.loads(Path(out["report"]).read_text())
    assert report["finished"] == 2 and sum(report["outcomes"].values()) == 2
    assert report["outcomes"]["infra_error"] == 0, report["instances"]
    assert all(1 <= i["steps"] <= 3 for i in report["instances"])


EVAL_RECIPE = """\
name: eval
run_dir: {run}
stages:
  - name: eval
    kind: eval
    tasks: toy
    limit: 2
    agent: {{policy: {policy}, loop: {{max_steps: 10}}}}
    grading: {{grader: local}}
"""


@pytest.mark.slow
def test_eval_is_a_recipe_stage(tmp_path):
    from click.testing import CliRunner

    from swehero.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(EVAL_RECIPE.format(run=tmp_path / "bad", policy="gpt"))
    result = CliRunner().invoke(main, ["recipe", "validate", str(bad)])
    assert result.exit_code != 0 and "agent.policy" in result.output
    good = tmp_path / "good.yaml"
    good.write_text(EVAL_RECIPE.format(run=tmp_path / "run", policy="gold"))
    result = CliRunner().invoke(main, ["recipe", "run", str(good)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    assert report["total"] == 2 and report["resolved"] == 2


@pytest.mark.slow  # seconds of real processes: the fast tier stays under 2 minutes
@pytest.mark.parametrize("model", ["", "m"])
def test_time_limit_covers_setup_and_agent(toy, tmp_path, model):
    """A server that accepts connections and never answers: with no model name the agent blocks while setting up
    (asking the server for its models), with one it blocks in its first query. Either way the instance ends at its
    time limit and the eval goes on, as an `agent_error` (the infrastructure's: the model never answered), saying
    what the setup was doing, or that the server gave no reply."""
    import socket

    from swehero.eval.inference import run_inference, trajectory_path

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        agent = AgentSettings(policy="openai", openai=OpenAIConfig(base_url=url, model=model), time_limit_s=3,
                              kill_grace_s=30)
        start = time.monotonic()
        run_inference(select(load_tasks(str(toy)), limit=1), agent, [tmp_path], "m", toy.parent / "repos", [],
                      progress=lambda _: None)
    assert time.monotonic() - start < 30  # ended by the time limit, not by the grace-period kill
    meta = json.loads(trajectory_path(tmp_path, load_tasks(str(toy))[0]["instance_id"]).read_text())["metadata"]
    assert meta["finish_reason"] == "agent_error" and 3 <= meta["seconds"] < 10
    assert meta["error"] == (f"{url}: no reply before the time limit of 3s" if model else
                             f"time limit of 3s reached during setup (starting the openai policy: asking {url} for "
                             "its model)")


@pytest.mark.slow
def test_oracle_agent_scores_100_through_local_grader(toy, tmp_path):
    """The agent's oracle policy edits the checkout with real tool calls (local bubblewrap runtime); its patches
    must resolve every toy task."""
    out = evaluate(_settings(toy, "oracle", workers=2), tmp_path / "oracle", progress=lambda _: None)
    report = json.loads(Path(out["report"]).read_text())
    assert report["resolved"] == 4, report["instances"]
    assert all(i["finish_reason"] == "submitted" and i["steps"] > 1 for i in report["instances"])
    # Every oracle turn is one well-formed call to a real tool.
    assert report["tool_calls"]["valid"] == report["tool_calls"]["turns"] == sum(i["steps"] for i in report["instances"])
    assert report["tool_calls"]["valid_rate"] == 1.0 and report["teacher_forced"] is None


@pytest.mark.slow
def test_harness_runs_up_to_the_docker_engine(toy, tmp_path, monkeypatch):
    """With an engine that cannot be reached (DOCKER_HOST names a socket that does not exist, whether or not this
    machine runs Docker), the harness gets our arguments, loads our predictions and the task file, records the run,
    and only then fails to reach Docker. Our own disk guard says clearly what is missing."""
    import resource

    from swehero.eval.harness import run_harness

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    out = evaluate(_settings(toy, "gold", limit=2), tmp_path / "run", progress=lambda _: None)
    ids = [row["instance_id"] for row in _lines(Path(out["predictions"]))]
    with pytest.raises(Unavailable, match="no Docker engine is reachable"):
        run_harness(HarnessConfig(), tmp_path / "run", str(toy), Path(out["predictions"]), ids, {}, print)
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    graded = []
    with pytest.raises(RuntimeError, match="swebench's harness exited with status 1"):  # DockerException there
        run_harness(HarnessConfig(min_free_gb=0, open_file_limit=limits[0] // 2), tmp_path / "run", str(toy),
                    Path(out["predictions"]), ids, {}, graded.append)
    assert graded == [{}]  # what it came to, nothing: handed over even so
    # the limit the harness sets is its own process's (it lowered this one's, the hard limit too, for good)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == limits
    run_id = run_id_for(HarnessConfig(), tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "harness" / "logs" / "run_evaluation" / run_id / "run.json").read_text())
    assert recorded["dataset"] == str((tmp_path / "run" / "harness" / "tasks.jsonl").resolve())
    assert recorded["split"] == "test"


@pytest.mark.slow
def test_inference_only_then_grade_and_report_commands(toy, tmp_path):
    from click.testing import CliRunner

    from swehero.eval.cli import eval_group

    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(eval_group, ["run", str(out), "--tasks", str(toy), "--policy", "gold", "--grader", "none",
                                        "--instances", "swehero-toy__stack-1,swehero-toy__calc-1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["total"] == 2 and report["ungraded"] == 2 and report["outcomes"]["infra_error"] == 2
    assert "Not graded" in (out / "report.md").read_text()
    result = runner.invoke(eval_group, ["grade", str(out), "--grader", "local"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["resolved"] == 2 and report["ungraded"] == 0
    assert [i["instance_id"] for i in report["instances"]] == ["swehero-toy__stack-1", "swehero-toy__calc-1"]
    assert runner.invoke(eval_group, ["report", str(out)]).exit_code == 0
    result = runner.invoke(eval_group, ["compare", str(out), str(out)])
    assert result.exit_code == 0 and "| resolved | 2/2 = 100.0% | 2/2 = 100.0% |" in result.output
    result = runner.invoke(eval_group, ["compare", str(out), str(tmp_path / "missing")])  # as the `compare` kind
    assert result.exit_code == 2 and f"RUNS: runs[1]: input not found: {tmp_path / 'missing'}" in result.output


@pytest.mark.slow
def test_an_eval_folder_resumes_only_with_the_settings_its_attempts_were_made_with(toy, tmp_path):
    """Resuming with another policy (or model, agent limit, seed, ...) would report a mix of two ways of attempting
    as one number; more tasks, or more workers, resume."""
    from click.testing import CliRunner

    from swehero.cli import main

    out, runner = tmp_path / "run", CliRunner()
    args = ["eval", "run", str(out), "--tasks", str(toy), "--grader", "none"]
    assert runner.invoke(main, args + ["--policy", "gold", "--limit", "2"]).exit_code == 0
    made = (out / "predictions.jsonl").read_text()
    result = runner.invoke(main, args + ["--policy", "empty"])
    assert result.exit_code == 1 and result.output.startswith(
        f"Error: {out} holds attempts made with other settings (agent.policy: 'gold' -> 'empty'; model: 'gold' -> "
        "'empty'): write into another folder")
    assert (out / "predictions.jsonl").read_text() == made
    result = runner.invoke(main, args + ["--policy", "gold", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "predictions.jsonl").read_text().startswith(made)
    assert len((out / "predictions.jsonl").read_text().splitlines()) == len(toy.read_text().splitlines())


def test_a_folder_that_is_no_evaluation_is_named_without_a_traceback(tmp_path):
    from click.testing import CliRunner

    from swehero.cli import main

    folder = tmp_path / "not-an-eval"
    folder.mkdir()
    for args in (["report", str(folder)], ["grade", str(folder)], ["select", str(folder), "--verifier", "v"]):
        result = CliRunner().invoke(main, ["eval", *args])
        assert result.exit_code == 1 and f"Error: {folder} is not an eval folder (no eval.json)" in result.output, args
    result = CliRunner().invoke(main, ["eval", "compare", str(folder)])
    assert result.exit_code == 1 and f"Error: no report.json in {folder}: not eval folders" in result.output


def test_what_a_run_cannot_use_is_one_line_before_any_attempt(toy, tmp_path):
    """Settings, files and machines a run finds unusable only when it starts: `Error: ...`, exit 1, no attempt made
    (a bad prompts file, or no Docker engine for the docker runtime, used to fail every attempt, each committed as
    an agent_error)."""
    from click.testing import CliRunner

    from swehero.cli import main

    (tmp_path / "prompts.json").write_text(json.dumps({"zero": "not a prompts file"}))
    cases = [(["--policy", "gold"], f"{toy} lacks eval_script"),  # the swebench grader, on tasks without images
             (["--policy", "openai", "--grader", "local"], "the openai policy needs a model endpoint"),
             (["--policy", "oracle", "--grader", "local", "--prompts", str(tmp_path / "prompts.json")],
              f"{tmp_path / 'prompts.json'}: not a prompts file (format swehero-prompts/1"),
             (["--policy", "oracle", "--grader", "local", "--runtime", "docker"], "no Docker engine is reachable"),
             (["--policy", "oracle", "--grader", "local"], "bubblewrap (`bwrap`) is not installed")]
    machine = {3: {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}, 4: {"PATH": str(tmp_path / "bin")}}
    for i, (args, message) in enumerate(cases):
        out = tmp_path / f"run-{i}"
        result = CliRunner().invoke(main, ["eval", "run", str(out), "--tasks", str(toy), *args], env=machine.get(i))
        assert result.exit_code == 1 and f"Error: {message}" in result.output, result.output
        assert "Traceback" not in result.output and set(os.listdir(out)) <= {"eval.json", ".lock"}, args


@pytest.mark.slow  # seconds of real processes: the fast tier stays under 2 minutes
def test_a_missing_repository_fails_the_command_after_the_others(toy, tmp_path):
    import shutil

    repos = tmp_path / "repos"
    shutil.copytree(toy.parent / "repos", repos)
    shutil.rmtree(repos / "swehero-toy__stack")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "swehero", "eval", "run", str(out), "--tasks", str(toy), "--policy",
                           "gold", "--grader", "local", "--repos", str(repos)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and "Error: no git repository for swehero-toy/stack at" in done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads((out / "report.json").read_text())  # the others were attempted, graded and reported
    assert report["resolved"] == 3 and report["pending_ids"] == ["swehero-toy__stack-1"]


@pytest.mark.slow
def test_grading_an_eval_folder_without_a_repository_fails_the_command_after_the_others(toy, tmp_path):
    """`eval grade` dropped the missing repositories `grade` named and exited 0, its report saying to run it."""
    import shutil

    from click.testing import CliRunner

    from swehero.cli import main
    from swehero.eval.grade import grades

    out = tmp_path / "run"
    assert CliRunner().invoke(main, ["eval", "run", str(out), "--tasks", str(toy), "--policy", "gold",
                                     "--grader", "none"]).exit_code == 0
    repos = tmp_path / "repos"
    shutil.copytree(toy.parent / "repos", repos)
    shutil.rmtree(repos / "swehero-toy__stack")
    result = CliRunner().invoke(main, ["eval", "grade", str(out), "--grader", "local", "--repos", str(repos)])
    assert result.exit_code == 1 and "Error: no git repository for swehero-toy/stack at" in result.output
    assert sorted(iid for iid, grade in grades(out).items() if grade["resolved"]) == sorted(
        json.loads(line)["instance_id"] for line in toy.read_text().splitlines() if "stack" not in line)
