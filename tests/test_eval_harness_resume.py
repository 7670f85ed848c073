"""Grading with the harness across reruns: which harness errors are graded again, how they are labelled, which
dataset and images a grading uses, and the run ids that keep gradings of two folders apart.

swebench's `run_evaluation.main` is replaced by a scripted one that writes, per instance, the files the real one
writes for that outcome (in its layout, relative to the working directory) and the run summary with swebench's own
`make_run_report`; everything of ours between `grade` and those files runs as it does with Docker.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest

from swehero.agent.container import swebench_image
from swehero.errors import InputError
from swehero.eval import harness
from swehero.eval.grade import GRADES, GradingSettings, grade, grades
from swehero.eval.harness import HarnessConfig, parse_harness, run_id_for
from swehero.eval.inference import PREDICTIONS, trajectory_path
from swehero.eval.report import build_report
from swehero.jsonio import JsonlLog, write_json_atomic
from swehero.rollout.tasks import load_tasks

MODEL = "org/m"
VERIFIED = "SWE-bench/SWE-bench_Verified"


def _task(iid: str) -> dict:
    """A row as `--tasks verified` loads it: princeton-nlp's columns, no `image`."""
    return {"instance_id": iid, "repo": "o/r", "base_commit": "abc", "problem_statement": "p",
            "FAIL_TO_PASS": ["t::a"], "PASS_TO_PASS": [], "version": "1.0"}


def _instance_report(iid: str) -> dict:
    passed = {"success": ["t::a"], "failure": []}
    none = {"success": [], "failure": []}
    return {iid: {"patch_is_None": False, "patch_exists": True, "patch_successfully_applied": True,
                  "resolved": True, "infra_failure": False,
                  "tests_status": {"FAIL_TO_PASS": passed, "PASS_TO_PASS": none, "FAIL_TO_FAIL": none,
                                   "PASS_TO_FAIL": none}}}


def _write_outcome(log_dir: Path, iid: str, outcome: str) -> None:
    """The files `run_instance` leaves for one outcome."""
    from swebench.harness.constants import APPLY_PATCH_FAIL, APPLY_PATCH_PASS

    log_dir.mkdir(parents=True, exist_ok=True)
    applied = f"{APPLY_PATCH_PASS}:\nChecking patch a.py...\n"
    if outcome == "no_space":  # the container could not be created: Docker's error, logged, no report
        (log_dir / "run_instance.log").write_text(f"Error in evaluating model for {iid}: 500 Server Error: "
                                                  "Error response from daemon: no space left on device\n")
    elif outcome == "bad_patch":
        (log_dir / "run_instance.log").write_text(f"{APPLY_PATCH_FAIL}:\nerror: corrupt patch at line 3\n")
    elif outcome == "timeout":  # the tests ran past `timeout`: their output ends with the harness's line, no report
        (log_dir / "run_instance.log").write_text(applied + "Test runtime: 1_800.00 seconds\n")
        (log_dir / "test_output.txt").write_text("collected 1 item\n\n\nTimeout error: 1800 seconds exceeded.")
    elif outcome == "resolved":
        (log_dir / "run_instance.log").write_text(applied)
        (log_dir / "test_output.txt").write_text("PASSED t::a\n")
        (log_dir / "report.json").write_text(json.dumps(_instance_report(iid), indent=4))


class ScriptedHarness:
    """Stands in for `run_evaluation.main`: each instance it runs takes the next of its scripted outcomes. Like the
    real one it skips instances that have a report.json and writes the summary of the instances it was given."""

    def __init__(self, outcomes: dict[str, list[str]]) -> None:
        self.outcomes = {iid: list(script) for iid, script in outcomes.items()}
        self.calls: list[dict] = []

    def __call__(self, **kwargs) -> None:
        from swebench.harness.constants import RUN_EVALUATION_LOG_DIR
        from swebench.harness.reporting import make_run_report

        self.calls.append(kwargs)
        predictions = {p["instance_id"]: p for p in JsonlLog(Path(kwargs["predictions_path"]))}
        for iid in kwargs["instance_ids"]:
            log_dir = RUN_EVALUATION_LOG_DIR / kwargs["run_id"] / MODEL.replace("/", "__") / iid
            if not (log_dir / "report.json").exists():
                _write_outcome(log_dir, iid, self.outcomes[iid].pop(0))
        make_run_report(predictions, [{"instance_id": i} for i in kwargs["instance_ids"]], kwargs["run_id"], None,
                        kwargs["report_dir"])

    def graded(self) -> list[list[str]]:
        return [call["instance_ids"] for call in self.calls]


@pytest.fixture
def scripted(monkeypatch):
    def install(outcomes: dict[str, list[str]]) -> ScriptedHarness:
        fake = ScriptedHarness(outcomes)

        def run_in(kwargs: dict, where: Path) -> None:  # as the child process runs it: in `where`
            with contextlib.chdir(where):
                fake(**kwargs)

        monkeypatch.setattr(harness, "run_evaluation", run_in)
        return fake

    return install


def _predict(out: Path, ids: list[str]) -> None:
    log = JsonlLog(out / PREDICTIONS)
    for iid in ids:
        log.append({"instance_id": iid, "model_name_or_path": MODEL, "model_patch": "diff --git a/a.py b/a.py\n"})
        write_json_atomic(trajectory_path(out, iid), {"instance_id": iid, "metadata": {"finish_reason": "submitted"}})


def _settings(**harness_options) -> GradingSettings:
    return GradingSettings(grader="swebench", harness=HarnessConfig(**{"min_free_gb": 0, **harness_options}))


def _grade(tasks: list[dict], out: Path, dataset: str = VERIFIED, settings: GradingSettings | None = None) -> dict:
    return grade(tasks, out, settings or _settings(), None, dataset, progress=lambda _: None)


def test_rerun_grades_again_what_a_harness_error_left_ungraded(tmp_path, scripted):
    """Docker out of space leaves no report: the rerun grades that instance again (as swebench's resume would) and
    its verdict supersedes the error, which stays in grades.jsonl; verdicts, a patch that did not apply included,
    are not graded twice."""
    ids = ["o__r-1", "o__r-2", "o__r-3"]
    tasks, out = [_task(i) for i in ids], tmp_path / "verified"
    _predict(out, ids)
    harness_run = scripted({"o__r-1": ["no_space", "resolved"], "o__r-2": ["bad_patch"], "o__r-3": ["resolved"]})
    assert _grade(tasks, out)["graded"] == 3
    assert grades(out)["o__r-1"]["infra_failure"]

    assert _grade(tasks, out) == {"graded": 1, "before": 2, "missing_repositories": []}
    assert _grade(tasks, out) == {"graded": 0, "before": 3, "missing_repositories": []}
    assert harness_run.graded() == [ids, ["o__r-1"]]
    lines = [json.loads(line) for line in (out / GRADES).read_text().splitlines()]
    assert [(g["instance_id"], g["error"]) for g in lines if g["instance_id"] == "o__r-1"] == [
        ("o__r-1", "container_unavailable"), ("o__r-1", "")]
    assert grades(out)["o__r-1"]["resolved"] and "retry" not in grades(out)["o__r-1"]
    report = build_report(tasks, out, MODEL, "verified")
    assert (report["resolved"], report["outcomes"]["unresolved"], report["outcomes"]["infra_error"]) == (2, 1, 0)


def test_harness_errors_are_labelled_by_swebench_classification(tmp_path, scripted):
    """A timeout is a verdict on the patch (its tests ran, and did not finish), which swebench's infra_failure
    module calls ambiguous, not the environment's: unresolved, not an infra failure, not graded again."""
    ids = ["o__r-1", "o__r-2", "o__r-3"]
    tasks, out = [_task(i) for i in ids], tmp_path / "verified"
    _predict(out, ids)
    harness_run = scripted({"o__r-1": ["timeout"], "o__r-2": ["no_space", "no_space"], "o__r-3": ["bad_patch"]})
    _grade(tasks, out)
    summary = json.loads((out / "harness" / f"org__m.{run_id_for(HarnessConfig(), out)}.json").read_text())
    assert summary["ambiguous_failure_ids"] == ["o__r-1"] and summary["infra_failure_ids"] == ["o__r-2"]

    graded = parse_harness(out / "harness", run_id_for(HarnessConfig(), out), MODEL, ids)
    timeout, no_space, bad_patch = (graded[i] for i in ids)
    assert (timeout["infra_failure"], timeout["error"], timeout.get("retry")) == (False, "tests_timed_out", None)
    assert timeout["patch_applied"] and not timeout["resolved"]
    assert (no_space["infra_failure"], no_space["error"], no_space["retry"]) == (True, "container_unavailable", True)
    assert (bad_patch["infra_failure"], bad_patch["error"], bad_patch.get("retry")) == (False, "patch did not apply",
                                                                                      None)
    _grade(tasks, out)
    assert harness_run.graded() == [ids, ["o__r-2"]]
    outcomes = build_report(tasks, out, MODEL, "verified")["outcomes"]
    assert (outcomes["unresolved"], outcomes["infra_error"]) == (2, 1)


def test_grading_checks_the_harness_dataset_it_reads(tmp_path, scripted):
    """An offline harness dataset in its own file (what `eval images build --out` writes) has the harness's columns
    that the task rows lack: grading checks its rows, and the harness reads it."""
    iid = "o__r-1"
    out = tmp_path / "eval"
    _predict(out, [iid])
    harness_file = tmp_path / "tasks.harness.jsonl"
    harness_file.write_text(json.dumps({**_task(iid), "image": swebench_image(iid), "eval_script": "#!/bin/bash\n",
                                        "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail"}) + "\n")
    harness_run = scripted({iid: ["resolved"]})
    assert _grade([_task(iid)], out, str(harness_file))["graded"] == 1
    assert harness_run.calls[0]["dataset_name"] == str((out / "harness" / "tasks.jsonl").resolve())
    assert grades(out)[iid]["resolved"]

    bare = tmp_path / "tasks.jsonl"  # the task file itself: the check still stops it, naming the columns
    bare.write_text(json.dumps(_task(iid)) + "\n")
    _predict(tmp_path / "again", [iid])
    with pytest.raises(InputError, match="lacks eval_script, eval_type, image, log_parser"):
        _grade([{**_task(iid), "image": "x", "eval_script": "y", "log_parser": "z", "eval_type": "w"}],
               tmp_path / "again", str(bare))


def test_the_harness_reads_every_task_file_swehero_reads(tmp_path, scripted):
    """swebench's loader reads a .jsonl with `splitlines` and `json.loads` a line: a byte-order mark, a blank line
    or a raw U+2028 in a string stops it. The harness gets swehero's copy of the tasks, which its own loader reads
    as swehero read the file."""
    from swebench.harness.utils import load_swebench_dataset

    ids = ["o__r-1", "o__r-2"]
    out = tmp_path / "eval"
    _predict(out, ids)
    rows = [{**_task(iid), "problem_statement": "one\u2028two", "image": swebench_image(iid),
             "eval_script": "#!/bin/bash\n", "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail"}
            for iid in ids]
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"\xef\xbb\xbf" + "\n\n".join(json.dumps(row, ensure_ascii=False) for row in rows).encode()
                      + b"\n\n")
    harness_run = scripted({iid: ["resolved"] for iid in ids})
    _grade([_task(iid) for iid in ids], out, str(tasks))
    read = load_swebench_dataset(harness_run.calls[0]["dataset_name"], "test")
    assert read == load_tasks(str(tasks)) and [row["problem_statement"] for row in read] == ["one\u2028two"] * 2


def test_a_log_parser_swebench_lacks_stops_grading_before_the_harness_runs(tmp_path, scripted):
    iid = "o__r-1"
    out = tmp_path / "eval"
    _predict(out, [iid])
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({**_task(iid), "image": "img", "eval_script": "#!/bin/bash\n",
                                 "log_parser": "parse_log_pytest_v3", "eval_type": "pass_and_fail"}) + "\n")
    harness_run = scripted({iid: ["resolved"]})
    with pytest.raises(InputError, match="task 'o__r-1': log_parser 'parse_log_pytest_v3' is not one of swebench"):
        _grade([_task(iid)], out, str(tasks))
    assert not harness_run.calls


def test_prune_images_removes_the_images_the_harness_used(tmp_path, scripted, monkeypatch):
    """SWE-bench Verified rows have no `image` column: pruning removes the instance images by the harness's name."""
    ids = ["django__django-11099", "astropy__astropy-12907"]
    out = tmp_path / "verified"
    _predict(out, ids)
    removed: list[list[str]] = []
    monkeypatch.setattr(harness, "remove_image", removed.append)  # the engine call itself needs Docker
    harness_run = scripted({iid: ["resolved"] for iid in ids})
    _grade([_task(i) for i in ids], out, settings=_settings(prune_images=True))
    assert removed == ["swebench/sweb.eval.x86_64.django_1776_django-11099:latest",
                       "swebench/sweb.eval.x86_64.astropy_1776_astropy-12907:latest"]
    assert harness_run.graded() == [[ids[0]], [ids[1]]]


def test_pruned_gradings_run_each_instance_once_and_keep_its_verdict(tmp_path, scripted, monkeypatch):
    """Graded one at a time to prune each image after it, the instances were then all run again for the run's
    summary: those without a report (a patch that did not apply, tests past the timeout) ran a second time, on an
    image pulled again and never pruned, and the rerun's log could turn a verdict into a `retry`."""
    ids = ["o__r-1", "o__r-2", "o__r-3"]
    out = tmp_path / "verified"
    _predict(out, ids)
    monkeypatch.setattr(harness, "remove_image", lambda name: None)
    harness_run = scripted({"o__r-1": ["bad_patch"], "o__r-2": ["resolved"], "o__r-3": ["timeout"]})
    _grade([_task(i) for i in ids], out, settings=_settings(prune_images=True))
    assert harness_run.graded() == [[i] for i in ids]
    graded = grades(out)
    assert [(graded[i]["resolved"], graded[i]["error"], "retry" in graded[i]) for i in ids] == [
        (False, "patch did not apply", False), (True, "", False), (False, "tests_timed_out", False)]


def test_an_instance_graded_again_for_its_edited_task_row_is_run_again(tmp_path, scripted):
    """The harness skips an instance that has a report.json: regraded after its test lists changed, it handed back
    the old report, which was then recorded as graded on the new row."""
    iid, out = "o__r-1", tmp_path / "verified"
    _predict(out, [iid])
    harness_run = scripted({iid: ["resolved", "bad_patch"]})
    _grade([_task(iid)], out)
    assert grades(out)[iid]["resolved"]
    _grade([{**_task(iid), "FAIL_TO_PASS": ["t::other"]}], out)
    assert harness_run.graded() == [[iid], [iid]] and not harness_run.outcomes[iid]
    assert (grades(out)[iid]["resolved"], grades(out)[iid]["error"]) == (False, "patch did not apply")


def test_a_report_torn_by_a_kill_is_graded_again(tmp_path, scripted):
    """The harness hands back any report.json it finds: one a kill left empty or half-written was a `retry` line
    forever (never run again), or a JSONDecodeError."""
    ids = ["o__r-1", "o__r-2"]
    out = tmp_path / "verified"
    _predict(out, ids)
    for iid, torn in zip(ids, ["", '{"o__r-2": {"patch_is_None": fal']):
        log_dir = out / "harness" / "logs" / "run_evaluation" / run_id_for(HarnessConfig(), out) / "org__m" / iid
        log_dir.mkdir(parents=True)
        (log_dir / "report.json").write_text(torn)
    harness_run = scripted({iid: ["resolved"] for iid in ids})
    _grade([_task(i) for i in ids], out)
    assert all(grades(out)[iid].get("retry") for iid in ids) and not any(harness_run.outcomes[i] == [] for i in ids)
    _grade([_task(i) for i in ids], out)
    assert all(grades(out)[iid]["resolved"] for iid in ids) and harness_run.graded() == [ids, ids]


def test_a_harness_dataset_without_a_row_of_an_instance_to_grade_is_named(tmp_path, scripted):
    """swebench refuses predictions of instances its dataset lacks with a bare ValueError."""
    ids = ["o__r-1", "o__r-2"]
    out = tmp_path / "eval"
    _predict(out, ids)
    harness_file = tmp_path / "tasks.harness.jsonl"
    harness_file.write_text(json.dumps({**_task(ids[0]), "image": swebench_image(ids[0]), "eval_script": "#!/bin/bash",
                                        "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail"}) + "\n")
    harness_run = scripted({iid: ["resolved"] for iid in ids})
    with pytest.raises(InputError, match=rf"^{harness_file} has no row of 1 instance\(s\) to grade \(o__r-2\)"):
        _grade([_task(i) for i in ids], out, str(harness_file))
    assert not harness_run.calls


def test_run_ids_differ_between_folders_of_one_name_and_stay_for_one_folder(tmp_path, monkeypatch):
    """swebench force-removes a container named as the one it starts (`sweb.eval.<instance>.<run id>`): two folders
    called `verified` graded at once must not share a run id, and a rerun of one folder must find its own logs."""
    config = HarnessConfig()
    a, b = tmp_path / "a" / "verified", tmp_path / "b" / "verified"
    assert run_id_for(config, a) != run_id_for(config, b)
    a.parent.mkdir(parents=True)
    monkeypatch.chdir(a.parent)
    assert run_id_for(config, Path("verified")) == run_id_for(config, a)
    assert run_id_for(config, a / "run-1").startswith("swehero.verified.run-1.")
    docker_name = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")  # the engine's rule for container names
    assert all(docker_name.fullmatch(f"sweb.eval.o__r-1.{run_id_for(config, folder)}")
               for folder in (a, b, tmp_path / "my eval (2)", a / "run-0"))
    assert run_id_for(HarnessConfig(run_id="mine"), a) == "mine"


def test_pruned_gradings_keep_the_verdicts_of_batches_before_a_failure(tmp_path, scripted, monkeypatch):
    """Graded a batch at a time, the grades were written once every batch had run: a later batch's failure (the
    disk check before a pull) lost the earlier verdicts, and the rerun graded them again (a timeout: its full
    time again)."""
    ids = ["o__r-1", "o__r-2", "o__r-3"]
    out = tmp_path / "verified"
    _predict(out, ids)
    monkeypatch.setattr(harness, "remove_image", lambda name: None)
    monkeypatch.setattr(harness, "_missing_images", lambda names: True)
    checks = []

    def disk_check(min_free_gb, what):
        checks.append(what)
        if len(checks) == 3:
            raise harness.Unavailable("Docker's disk has 2 GiB free")

    monkeypatch.setattr(harness, "check_engine_disk", disk_check)
    harness_run = scripted({"o__r-1": ["timeout"], "o__r-2": ["resolved"], "o__r-3": ["resolved"]})
    with pytest.raises(harness.Unavailable):
        _grade([_task(i) for i in ids], out, settings=_settings(prune_images=True, min_free_gb=1))
    assert sorted(grades(out)) == ["o__r-1", "o__r-2"]
    monkeypatch.setattr(harness, "check_engine_disk", lambda min_free_gb, what: None)
    _grade([_task(i) for i in ids], out, settings=_settings(prune_images=True, min_free_gb=1))
    assert harness_run.graded() == [["o__r-1"], ["o__r-2"], ["o__r-3"]]


def test_a_patch_that_did_not_apply_on_modal_is_a_verdict_and_its_errors_are_run_again(tmp_path):
    """swebench's Modal runner leaves an empty report.json for every instance it errored on (a patch that did not
    apply too), and skips an instance whose log folder exists."""
    from swebench.harness.constants import APPLY_PATCH_FAIL

    run_id, where = "r", tmp_path / "harness"
    bad, broken = (harness.instance_logs(where, run_id, MODEL, iid) for iid in ("o__r-1", "o__r-2"))
    for folder, log in ((bad, f"{APPLY_PATCH_FAIL}:\nerror: corrupt patch\n"), (broken, "Error: sandbox died\n")):
        folder.mkdir(parents=True)
        (folder / "report.json").write_text("")
        (folder / "run_instance.log").write_text(log)
    graded = parse_harness(where, run_id, MODEL, ["o__r-1", "o__r-2"])
    assert (graded["o__r-1"]["error"], "retry" in graded["o__r-1"]) == ("patch did not apply", False)
    assert graded["o__r-2"]["retry"]


def test_a_grader_errors_logs_go_before_it_is_graded_again(tmp_path, scripted):
    iid, out = "o__r-1", tmp_path / "verified"
    _predict(out, [iid])
    harness_run = scripted({iid: ["no_space", "resolved"]})
    _grade([_task(iid)], out)
    stale = harness.instance_logs(out / harness.HARNESS_DIR, run_id_for(HarnessConfig(), out), MODEL, iid)
    (stale / "left-by-modal.txt").write_text("x")
    _grade([_task(iid)], out)
    assert grades(out)[iid]["resolved"] and not (stale / "left-by-modal.txt").exists()
    assert harness_run.graded() == [[iid], [iid]]


@pytest.mark.docker
@pytest.mark.timeout(120)
def test_a_stopped_grading_stops_the_harness_at_once_and_removes_its_containers(tmp_path, docker_base_image):
    """In this process, the harness's thread pool ran every queued instance before Ctrl-C got through, and a kill
    left its containers running. Its child process stands in here for a harness busy grading: it has started a
    container, named as the harness names them, and waits."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import docker

    run_id, iid = f"stop.{os.getpid()}", "o__r-1"
    name = f"sweb.eval.{iid}.{run_id}"
    busy = (f"import docker, time\ndocker.from_env().containers.run({docker_base_image!r}, 'sleep 300', "
            f"name={name!r}, detach=True)\nprint('started', flush=True)\ntime.sleep(300)")
    grading = subprocess.Popen([sys.executable, "-c", f"""
import sys
from pathlib import Path
from swehero.eval import harness
harness.HARNESS_MAIN = {busy!r}
harness.run_evaluation({{"run_id": {run_id!r}, "instance_ids": [{iid!r}]}}, Path({str(tmp_path)!r}))
"""], stdout=subprocess.PIPE, text=True,
        # Ctrl-C as a terminal delivers it, also when the tests run as a background job (SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    engine = docker.from_env()
    try:
        assert grading.stdout.readline() == "started\n"
        stopped = time.monotonic()
        grading.send_signal(signal.SIGINT)
        assert grading.wait(timeout=60) != 0 and time.monotonic() - stopped < 30
        assert not engine.containers.list(all=True, filters={"name": name})
    finally:
        grading.kill()
        for container in engine.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)


def test_grading_with_the_harness_needs_the_docker_command(tmp_path, monkeypatch):
    """swebench stops and removes each container it grades in with `docker stop` / `docker rm`: without the command
    (an image with the SDK alone) every container was left running, a FileNotFoundError traceback each."""
    from swehero.errors import Unavailable

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Unavailable, match="the `docker` command, which is not on PATH"):
        harness.check_docker_command(HarnessConfig())
    harness.check_docker_command(HarnessConfig(modal=True))  # Modal's sandboxes, not this engine
    out = tmp_path / "verified"
    _predict(out, ["o__r-1"])
    with pytest.raises(Unavailable, match="not on PATH"):
        _grade([_task("o__r-1")], out)


def test_the_harness_child_takes_the_arguments_of_thousands_of_instances(tmp_path, monkeypatch):
    """Given as one command-line argument, the ids of ~4,000 instances passed the kernel's 128 KiB limit for one
    (E2BIG): the grading could not start."""
    ids = [f"scikit-learn__scikit-learn-{n}" for n in range(10000, 15000)]
    monkeypatch.setattr(harness, "HARNESS_MAIN", "import json, sys\nkwargs = json.load(sys.stdin)\n"
                                                 "open('got.txt', 'w').write(str(len(kwargs['instance_ids'])))")
    harness.run_evaluation({"run_id": "r", "instance_ids": ids, "modal": False}, tmp_path)
    assert (tmp_path / "got.txt").read_text() == "5000"
