"""Repeated runs and pass@k, retries, sampling seeds, the leak audit and comparisons that tell a real difference
from run-to-run spread."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from swehero.eval.compare import compare
from swehero.eval.grade import GRADES
from swehero.eval.inference import PREDICTIONS, trajectory_path
from swehero.eval.leaks import seeking_commands
from swehero.eval.report import build_report, write_report
from swehero.eval.report import markdown as report_markdown
from swehero.eval.runs import aggregate, markdown, pass_at_k, paired_difference, resolve_fractions, write_runs_report
from swehero.jsonio import JsonlLog, write_json_atomic
from swehero.rollout.toy import build_toy_tasks

CLI = [sys.executable, "-m", "swehero", "eval"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_tasks(tmp_path_factory.mktemp("toy"))


def _run(out: Path, toy: Path, *args: str) -> dict:
    done = subprocess.run([*CLI, "run", str(out), "--tasks", str(toy), "--grader", "local", *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.bwrap
def test_three_runs_oracle_resolves_everything_and_no_patch_nothing(toy, tmp_path):
    oracle = _run(tmp_path / "oracle", toy, "--policy", "oracle", "--runs", "3", "--workers", "2", "--seed", "1")
    assert oracle["runs"] == 3 and [r["rate"] for r in oracle["per_run"]] == [1.0, 1.0, 1.0]
    assert oracle["resolved_rate"] == 1.0 and oracle["std_rate"] == 0.0
    assert oracle["pass_at_k"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert set(oracle["per_instance"].values()) == {3} and len(oracle["per_instance"]) == 4
    for k in range(3):  # each run is a complete eval folder, graded and reported
        run = json.loads((tmp_path / "oracle" / f"run-{k}" / "report.json").read_text())
        assert run["resolved"] == 4 and run["attempts"] == {"max": 1, "retried": 0}
    seeds = {json.loads(p.read_text())["metadata"]["seed"]
             for p in (tmp_path / "oracle").glob("run-*/trajectories/*.json")}
    assert len(seeds) == 12  # every (instance, run) samples with its own seed
    assert "pass@k" in (tmp_path / "oracle" / "report.md").read_text()

    empty = _run(tmp_path / "empty", toy, "--policy", "empty", "--runs", "3")
    assert empty["resolved_rate"] == 0.0 and empty["pass_at_k"]["3"] == 0.0
    assert set(empty["per_instance"].values()) == {0}

    table = compare([tmp_path / "empty", tmp_path / "oracle"])
    assert "| runs | 3 | 3 |" in table
    # 4 instances: even all four resolved on one side alone is no evidence (an exact sign test gives p = 0.125)
    assert "resolved difference +100.0 points" in table and "too few shared instances to tell" in table


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rerun_samples_with_the_same_seeds_and_retries_are_marked(toy, tmp_path):
    first = _run(tmp_path / "a", toy, "--policy", "gold", "--instances", "swehero-toy__calc-1", "--seed", "7")
    again = _run(tmp_path / "b", toy, "--policy", "gold", "--instances", "swehero-toy__calc-1", "--seed", "7")
    seed = lambda out: json.loads((out / "trajectories" / "swehero-toy__calc-1.json").read_text())["metadata"]["seed"]  # noqa: E731
    assert seed(tmp_path / "a") == seed(tmp_path / "b") and first["resolved"] == again["resolved"] == 1

    retried = _run(tmp_path / "r", toy, "--policy", "empty", "--max-attempts", "3", "--limit", "2")
    assert retried["attempts"] == {"max": 3, "retried": 2}
    assert all(i["attempts"] == 3 for i in retried["instances"])
    assert "raises pass@1" in (tmp_path / "r" / "report.md").read_text()
    assert "retried attempts that ended without a patch" in compare([tmp_path / "a", tmp_path / "r"])


def test_pass_at_k_is_the_unbiased_estimator():
    for n, c, k in [(5, 2, 1), (5, 2, 3), (10, 3, 4), (4, 0, 2), (4, 4, 1)]:
        # 1 - P(all k drawn without replacement are wrong), computed by enumerating draws
        import itertools

        draws = list(itertools.combinations(range(n), k))
        hit = sum(any(i < c for i in draw) for draw in draws) / len(draws)
        assert pass_at_k(n, c, k) == pytest.approx(hit)
    assert pass_at_k(3, 1, 1) == pytest.approx(1 / 3) and math.isclose(pass_at_k(3, 1, 3), 1.0)


@pytest.mark.parametrize("c", [0, 1, 3])
def test_pass_at_k_refuses_more_draws_than_attempts(c):
    """k of n attempts cannot be drawn for k > n: no value is right there, and 1.0 claimed success at c = 0."""
    with pytest.raises(ValueError, match="pass@4 needs at least 4 attempts per instance, not 3"):
        pass_at_k(3, c, 4)


def _single(outcomes: dict[str, bool]) -> dict:
    return {"instances": [{"instance_id": i, "outcome": "resolved" if r else "unresolved"} for i, r in outcomes.items()],
            "pending_ids": []}


def test_paired_bootstrap_separates_a_real_difference_from_noise():
    ids = [f"i{n}" for n in range(200)]
    base = _single({i: n % 2 == 0 for n, i in enumerate(ids)})  # 50%
    better = _single({i: n % 2 == 0 or n % 5 == 1 for n, i in enumerate(ids)})  # +10 points, never worse
    shuffled = _single({i: n % 2 == 1 for n, i in enumerate(ids)})  # also 50%, different instances
    real = paired_difference(better, base)
    assert real["difference"] == pytest.approx(0.1) and real["significant"] and real["ci95"][0] > 0
    noise = paired_difference(shuffled, base)
    assert noise["difference"] == 0.0 and not noise["significant"] and noise["ci95"][0] < 0 < noise["ci95"][1]
    assert paired_difference(_single({"x": True}), base) is None  # nothing in common


def test_a_difference_on_few_shared_instances_is_called_too_few_to_tell():
    ids = [f"i{n}" for n in range(9)]
    few = paired_difference(_single({i: True for i in ids}), _single({i: False for i in ids}))
    assert few["difference"] == 1.0 and few["ci95"] == [1.0, 1.0] and few["significant"] is None
    ids.append("i9")  # ten: an exact sign test gives p = 0.002 for all ten on one side
    assert paired_difference(_single({i: True for i in ids}), _single({i: False for i in ids}))["significant"]


TASKS = [{"instance_id": f"t{n}", "repo": "o/r"} for n in range(4)]


def _run_folder(out: Path, results: dict[str, bool | None], tasks: list[dict] = TASKS) -> dict:
    """A run's folder as inference and grading leave it, and its report: per instance of `results` a patch graded
    resolved (True) or not (False), or not graded (None); the other `tasks` have no prediction yet."""
    predictions, grades = JsonlLog(out / PREDICTIONS), JsonlLog(out / GRADES)
    for iid, resolved in results.items():
        write_json_atomic(trajectory_path(out, iid), {"instance_id": iid, "metadata": {
            "finish_reason": "submitted", "steps": 3, "prompt_tokens": 10, "completion_tokens": 5}})
        predictions.append({"instance_id": iid, "model_name_or_path": "m", "model_patch": "diff"})
        if resolved is not None:
            grades.append({"instance_id": iid, "grader": "local", "resolved": resolved})
    return build_report(tasks, out, "m", "toy", task_file="/data/toy.jsonl")


def test_a_grading_error_to_retry_is_reported_as_not_graded(tmp_path):
    """Its line is no verdict (the next grading does it again): the report counts it not graded and says to grade,
    with the error, where it showed a final infra_error."""
    _run_folder(tmp_path, {"t0": True, "t1": False})
    JsonlLog(tmp_path / GRADES).append({"instance_id": "t1", "grader": "local", "resolved": False, "retry": True,
                                        "infra_failure": True, "error": "docker: no space"})
    report = build_report(TASKS, tmp_path, "m", "toy")
    assert report["ungraded"] == 1 and report["outcomes"]["infra_error"] == 1
    assert report["instances"][1]["detail"] == "not graded: docker: no space"
    assert "**Not graded:** 1 prediction(s)" in report_markdown(report)


def test_percentages_are_rounded_once_and_the_report_names_its_tasks_and_grader(tmp_path):
    """15 of 19 is 78.947%: 78.9%, not the 79.0% of a rate stored rounded to 0.7895 and rounded again."""
    tasks = [{"instance_id": f"t{n}", "repo": "o/r"} for n in range(19)]
    report = _run_folder(tmp_path, {t["instance_id"]: n < 15 for n, t in enumerate(tasks)}, tasks)
    text = report_markdown(report)
    assert "**Resolved: 15/19 = 78.9%**" in text and "| o/r | 15 | 19 | 78.9% |" in text
    assert "Tasks: /data/toy.jsonl (19); graded by: local" in text


def test_the_report_over_runs_flags_predictions_not_graded(tmp_path):
    """As the report of one run does: an ungraded prediction counts as infra_error, and the notice says to grade."""
    graded = _run_folder(tmp_path / "run-0", {t["instance_id"]: True for t in TASKS})
    ungraded = _run_folder(tmp_path / "run-1", {"t0": True, "t1": None, "t2": None, "t3": False})
    agg = aggregate([graded, ungraded])
    assert agg["ungraded"] == 2 and [r["ungraded"] for r in agg["per_run"]] == [0, 2]
    assert "**Not graded:** 2 prediction(s) (counted as infra_error); run `swehero eval grade`." in markdown(agg)


def test_attempts_not_made_yet_are_left_out_of_the_comparison(tmp_path):
    """An incomplete folder is compared over the attempts it made, and named with how many it has not made."""
    full = _run_folder(tmp_path / "full", {t["instance_id"]: True for t in TASKS})
    half = _run_folder(tmp_path / "half", {"t0": True, "t1": True})
    assert resolve_fractions(half) == {"t0": 1.0, "t1": 1.0}
    assert paired_difference(half, full)["difference"] == 0.0  # not -0.5: t2 and t3 are not failures
    runs = aggregate([full, _run_folder(tmp_path / "run-1", {"t0": False, "t1": True, "t2": True})])
    assert runs["missing_attempts"] == {"t3": 1}
    assert resolve_fractions(runs) == {"t0": 0.5, "t1": 1.0, "t2": 1.0, "t3": 1.0}  # t3: its one attempt made
    for name, report in (("full", full), ("half", half), ("runs", runs)):
        (tmp_path / "cmp" / name).mkdir(parents=True)
        (tmp_path / "cmp" / name / "report.json").write_text(json.dumps(report))
    table = compare([tmp_path / "cmp" / name for name in ("full", "half", "runs")])
    assert ("**warning:** half is incomplete: 2 attempt(s) not made yet; its rates count them as unresolved, the "
            "paired difference leaves them out") in table
    assert "**warning:** runs is incomplete: 1 attempt(s) not made yet" in table
    assert "evaluated" not in table  # the same instances were selected: no word about other tasks
    assert "(paired bootstrap over 2 instances)" in table


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_reports_are_replaced_whole_under_a_reader(tmp_path):
    """A reader (`eval compare`) that opened a report before a run rewrote it reads the old one whole, never the
    new one half written."""
    runs = [_run_folder(tmp_path / f"run-{k}", {"t0": True}) for k in range(2)]
    paths = {**write_report(runs[0], tmp_path / "run-0"), **{f"runs_{k}": v for k, v in
                                                             write_runs_report(aggregate(runs), tmp_path).items()}}
    readers = {name: open(path, "rb") for name, path in paths.items()}
    old = {name: Path(path).read_bytes() for name, path in paths.items()}
    runs = [_run_folder(tmp_path / "later" / f"run-{k}", {"t0": True, "t1": True}) for k in range(2)]
    write_report(runs[0], tmp_path / "run-0")
    write_runs_report(aggregate(runs), tmp_path)
    for name, reader in readers.items():
        with reader:
            assert reader.read() == old[name], name
        assert Path(paths[name]).read_bytes() != old[name], name
    assert not list(tmp_path.glob("**/.*.tmp*"))  # no temporary file left behind


def _bash(command: str) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "execute_bash", "arguments": json.dumps({"command": command})}}]}


@pytest.mark.parametrize("command, kind", [
    ("cd /workspace/r && git log --all --oneline | head", "history of other refs"),
    ("git -C /testbed log --oneline --branches", "history of other refs"),
    ("git reflog", "git reflog"),
    ("git show 3f2a9c1 -- src/a.py", "a commit by hash"),
    ("git fetch origin && git log origin/main", "git fetch, pull or clone"),
    ("git clone https://github.com/o/r /tmp/r", "git fetch, pull or clone"),
    ("curl -s https://github.com/o/r/pull/1.diff", "network download"),
    ("cd /tmp; wget https://example.org/x", "network download"),
    ("pip download requests==2.0", "pip download"),
    ("diff <(git show 3f2a9c1:a.py) a.py", "a commit by hash"),  # commands in substitutions run too
    ("echo $(git reflog | head -1)", "git reflog"),
    # git's own options before the subcommand (OpenHands' runtime aliases `git --no-pager`): they hid it
    ("git --no-pager log --all --oneline", "history of other refs"), ("git -P reflog", "git reflog"),
    ("git --git-dir .git --no-pager show 1a2b3c4d", "a commit by hash"),
    ("git --work-tree=. -c core.pager=cat log --branches", "history of other refs"),
])
def test_leak_audit_finds_history_and_network_seeking_commands(command, kind):
    assert seeking_commands({"messages": [_bash(command)]}) == [{"command": command, "kind": kind}]


@pytest.mark.parametrize("command", ["git log --oneline -5", "git diff HEAD", "git show HEAD:src/a.py",
                                     "grep -rn curl .", "echo 'git reflog'", "git status", "cat wget.txt",
                                     "git show abcdef1 -- a.py", "git --no-pager log -5", "git -P diff"])
def test_leak_audit_leaves_ordinary_commands_alone(command):
    assert seeking_commands({"messages": [_bash(command)]}, base_commit="abcdef1234" + "0" * 30) == []


def _report(outcomes: dict[str, bool], **fields) -> dict:
    """A single run's report.json with the fields `compare` reads."""
    resolved = sum(outcomes.values())
    return {"model": "m", "benchmark": "toy", "total": len(outcomes), "resolved": resolved, "pending": 0,
            "resolved_rate": resolved / len(outcomes), "ci95": [0.0, 1.0], "paper": None,
            "tool_calls": {"valid": 1, "turns": 1, "valid_rate": 1.0}, "teacher_forced": None, "outcomes": {},
            "averages": {}, "attempts": {"max": 1, "retried": 0}, **_single(outcomes), **fields}


def _write_reports(root: Path, reports: dict[str, dict]) -> list[Path]:
    """Each report in a folder of its name (a relative path) under `root`; the folders, in order."""
    for name, report in reports.items():
        (root / name).mkdir(parents=True)
        (root / name / "report.json").write_text(json.dumps(report))
    return [root / name for name in reports]


def test_damaged_eval_files_are_named_not_tracebacks(tmp_path):
    """eval.json and report.json are written whole by swehero; one edited by hand or damaged is named in one line
    (they ended in a JSONDecodeError or a KeyError)."""
    from click.testing import CliRunner

    from swehero.cli import main

    partial = {key: value for key, value in _report({"a": True}).items() if key not in ("benchmark", "instances")}
    partial["tool_calls"] = {"valid": 1}
    runs = {**_report({"a": True}), "per_run": [], "runs": 2}  # repeated runs' report without its per-instance counts
    good, odd, garbled, cut, cut_runs = _write_reports(tmp_path, {"good": _report({"a": True}), "odd": {},
                                                                  "garbled": {}, "cut": partial, "cut_runs": runs})
    (garbled / "report.json").write_text("{half")
    (garbled / "eval.json").write_text("[1]")
    cases = [(["eval", "compare", str(good), str(odd)], f"Error: {odd}: report.json is no eval report"),
             (["eval", "compare", str(good), str(cut)], f"Error: {cut}: report.json is no eval report (no benchmark, "
                                                        "instances, tool_calls.turns, tool_calls.valid_rate): `swehero "
                                                        "eval report FOLDER` writes it again"),
             (["eval", "compare", str(cut_runs), str(good)], f"Error: {cut_runs}: report.json is no eval report (no "
                                                             "std_rate, per_instance)"),
             (["eval", "compare", str(good), str(garbled)], f"Error: {garbled / 'report.json'}: not an eval report "
                                                             "(not JSON: Expecting property name"),
             (["eval", "report", str(garbled)], f"Error: {garbled / 'eval.json'}: not an eval folder's settings "
                                                "(a JSON object, got list)"),
             (["eval", "run", str(garbled), "--tasks", "toy", "--policy", "gold", "--grader", "none"],
              f"Error: {garbled / 'eval.json'}: not an eval folder's settings (a JSON object, got list)")]
    for args, message in cases:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and result.output.startswith(message), (args, result.output)


def test_a_damaged_trajectory_is_named_by_the_report(tmp_path):
    """A trajectory file cut short or edited by hand (its prediction committed) ended `eval report` in a
    JSONDecodeError or KeyError traceback."""
    from swehero.errors import InputError

    _run_folder(tmp_path, {"t0": True, "t1": False})
    cut = trajectory_path(tmp_path, "t1")
    for text, message in (('{"instance_id": "t1", "meta', "not a trajectory (not JSON: "),
                          ('{"instance_id": "t1"}', "not a trajectory (no metadata object)"),
                          ('{"metadata": []}', "not a trajectory (no metadata object)"),
                          ("", "not a trajectory (not JSON: ")):
        cut.write_text(text)
        with pytest.raises(InputError, match=re.escape(f"{cut}: {message}")):
            build_report(TASKS, tmp_path, "m", "toy")


def test_compare_warns_when_runs_used_different_prompts(tmp_path):
    table = compare(_write_reports(tmp_path, {name: _report({"a": True}, prompts=prompts)
                                              for name, prompts in (("one", ["builtin-v3"]), ("two", ["sha256:ab"]))}))
    assert "**warning:** the runs used different prompts (one: builtin-v3; two: sha256:ab)" in table
    assert "instances" not in table.split("**warning:**", 1)[1]  # same tasks: no word about them


def test_compare_warns_when_runs_are_over_other_tasks(tmp_path):
    """Another --limit, --shard or task file: the resolved rates side by side are then over different tasks."""
    ids = [f"t{n}" for n in range(6)]
    runs = {"all": _report({i: n < 3 for n, i in enumerate(ids)}),
            "first-half": _report({i: True for i in ids[:3]}),
            "others": _report({"u1": True, "u2": False})}
    table = compare(_write_reports(tmp_path, runs))
    assert ("**warning:** first-half evaluated 3 instances, 3 of all's 6: its rates are over other tasks; the paired "
            "difference uses the shared ones alone") in table
    assert "**warning:** others evaluated 2 instances, 0 of all's 6: no task in common, so the rates do not compare" \
        in table
    assert "(paired bootstrap over 3 instances)" in table


def test_compare_warns_when_teacher_forced_accuracy_is_over_other_heldout_trajectories(tmp_path):
    """The accuracy of one checkpoint on 3 held-out trajectories and on 1 of them differs by several points: side by
    side, that reads as a difference between checkpoints."""
    scored = lambda accuracy, files, tokens: _report({"a": True}, teacher_forced={  # noqa: E731
        "trajectories": len(files), "tokens": tokens, "correct": int(accuracy * tokens), "accuracy": accuracy,
        "files": files})
    base, trained, one, cut = _write_reports(tmp_path, {
        "base": scored(0.719, ["h.jsonl"], 1395), "trained": scored(0.8, ["h.jsonl"], 1395),
        "one": scored(0.653, ["one.jsonl"], 493), "cut": scored(0.7, ["h.jsonl"], 1200)})  # cut: a shorter context
    assert "held-out" not in compare([base, trained])
    assert ("**warning:** teacher-forced accuracy is measured on different held-out trajectories (base: 1 "
            "trajectories, 1395 tokens of h.jsonl; one: 1 trajectories, 493 tokens of one.jsonl): its difference is "
            "not the checkpoints' alone") in compare([base, one])
    assert "held-out trajectories (base: 1 trajectories, 1395 tokens of h.jsonl; cut: 1 trajectories, 1200 tokens " \
        "of h.jsonl)" in compare([base, cut])


def test_compare_names_each_folder_by_the_path_suffix_that_tells_them_apart(tmp_path):
    """The same stage of two recipe runs has one folder name: its columns need the runs' names too."""
    runs = _write_reports(tmp_path, {"runA/eval_verified": _report({"a": True}),
                                     "runB/eval_verified": _report({"a": False})})
    table = compare(runs)
    assert table.startswith("| metric | runA/eval_verified | runB/eval_verified |\n")
    assert "- **runB/eval_verified** vs runA/eval_verified: " in table
    assert f"Folders: runA/eval_verified is {runs[0]}; runB/eval_verified is {runs[1]}\n" in table
    assert compare([runs[0], tmp_path / "runA" / ".." / "runB" / "eval_verified"]) == table  # named as they are
    assert compare([runs[0], runs[0]]).startswith("| metric | eval_verified | eval_verified |\n")


def test_compare_warns_for_every_attempt_setting_that_differs(tmp_path):
    """eval.json records how the attempts were made: another mode, turn limit, sampling or context is named with both
    values; the checkpoint itself and the seeds are what a comparison compares, and no warning."""
    def attempts(model: str, seed: int, mode: str = "exec", max_steps: int = 100, temperature: float = 0.7,
                 context: int = 131072) -> dict:
        return {"agent": {"mode": mode, "policy": "openai", "prompts": "",
                          "loop": {"max_steps": max_steps, "max_context_tokens": context},
                          "openai": {"model": model, "temperature": temperature, "top_p": 0.8, "top_k": 20}},
                "serve_model": f"/ckpt/{model}", "max_model_len": context, "model": model, "seed": seed,
                "max_attempts": 1, "runs": 1}
    folders = {"base": attempts("a", 1), "other-model": attempts("b", 2),
               "zero": attempts("a", 1, mode="zero", max_steps=50, temperature=0.0, context=32768)}
    dirs = _write_reports(tmp_path, {name: _report({"a": True}) for name in folders})
    for folder, recorded in zip(dirs, folders.values()):
        (folder / "eval.json").write_text(json.dumps({"attempts": recorded}))
    assert "**warning:**" not in compare(dirs[:2])
    assert ("**warning:** zero made its attempts otherwise than base (from base to zero: "
            "agent.loop.max_context_tokens: 131072 -> 32768; agent.loop.max_steps: 100 -> 50; "
            "agent.mode: 'exec' -> 'zero'; "
            "agent.openai.temperature: 0.7 -> 0.0; max_model_len: 131072 -> 32768): the difference is not the "
            "checkpoints' alone") in compare([dirs[0], dirs[2]])
    (dirs[2] / "eval.json").unlink()  # a report without its folder's settings: nothing known to compare
    assert "**warning:**" not in compare([dirs[0], dirs[2]])


def test_compare_warns_when_runs_were_graded_by_different_graders(tmp_path):
    dirs = _write_reports(tmp_path, {"local": _report({"a": True}, graders=["local"]),
                                     "harness": _report({"a": True}, graders=["swebench"])})
    assert "**warning:** the runs were graded by different graders (local: local; harness: swebench)" in compare(dirs)


def test_compare_shows_outcomes_per_run_and_the_averages_of_repeated_runs(tmp_path):
    """A folder of two runs counts each outcome twice over the same four tasks: beside a single run it is shown per
    run, and its mean steps and tokens are over all its attempts."""
    results = {"t0": True, "t1": False, "t2": False, "t3": False}
    single = _run_folder(tmp_path / "one", results)
    runs = aggregate([_run_folder(tmp_path / "two" / f"run-{k}", results) for k in range(2)])
    assert runs["outcomes"]["unresolved"] == 6 and runs["averages"]["steps"] == 3.0
    assert "## Averages per attempt (all runs)" in markdown(runs)
    table = compare(_write_reports(tmp_path / "cmp", {"one": single, "two": runs}))
    assert "| unresolved (per run) | 3 | 3 |" in table and "| avg steps | 3.0 | 3.0 |" in table
    assert "| avg prompt_tokens | 10.0 | 10.0 |" in table


def test_grading_counts_the_grades_of_the_selected_tasks_alone(tmp_path):
    """A folder graded on four tasks, graded again on two of them (`eval run --limit 2`): two graded before, and
    its report names the graders of these two only."""
    from swehero.eval.grade import GradingSettings, grade

    _run_folder(tmp_path, {t["instance_id"]: True for t in TASKS})
    JsonlLog(tmp_path / GRADES).append({"instance_id": "t3", "grader": "swebench", "resolved": True})
    said = []
    counts = grade(TASKS[:2], tmp_path, GradingSettings(grader="local"), None, "", progress=said.append)
    assert said == ["grading (local): 0 prediction(s) to grade, 2 graded before"] and counts["before"] == 2
    assert build_report(TASKS[:2], tmp_path, "m", "toy")["graders"] == ["local"]


def test_ctrl_c_stops_a_local_grading_without_starting_the_queued_ones(tmp_path, monkeypatch):
    """Leaving the worker pool's block waited for every grading still queued: Ctrl-C got through once all were
    graded. The grading running finishes and is written; the queued ones are not started."""
    import os
    import signal
    import threading
    import time

    from swehero.eval import grade as grading

    tasks = [{**TASKS[0], "instance_id": f"t{i}"} for i in range(6)]
    predictions = JsonlLog(tmp_path / PREDICTIONS)
    for task in tasks:
        predictions.append({"instance_id": task["instance_id"], "model_name_or_path": "m", "model_patch": "diff"})

    def slow_grading(task, prediction, repo, logs, config):
        time.sleep(0.5)
        return {"resolved": True, "patch_successfully_applied": True}

    monkeypatch.setattr(grading, "check_local", lambda todo: None)
    monkeypatch.setattr(grading, "grade_instance", slow_grading)
    # Ctrl-C as a terminal delivers it, also when the tests run as a background job (SIGINT ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(0.15, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            grading.grade(tasks, tmp_path, grading.GradingSettings(grader="local"), tmp_path, "", progress=print)
    finally:
        signal.signal(signal.SIGINT, before)
    assert time.monotonic() - started < 2 and len(list(JsonlLog(tmp_path / GRADES))) == 1  # all six: 3 s


@pytest.mark.slow  # seconds: the fast tier stays under 2 minutes
@pytest.mark.timeout(180)
def test_ctrl_c_ends_the_tests_of_the_running_local_gradings(toy, tmp_path):
    """The running gradings' tests ran on after Ctrl-C (the stop reaches the main thread, not the pool's), the
    command waiting for them up to their timeout; a second Ctrl-C then exited and left them running, orphaned, with
    no timeout any more. They end at once now, and their instances, with no verdict, are graded by the next run."""
    import os
    import signal
    import time

    out = tmp_path / "e"
    done = subprocess.run([*CLI, "run", str(out), "--tasks", str(toy), "--policy", "gold", "--grader", "none"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    marker = f"slow-tests-{os.getpid()}"
    slow = tmp_path / marker
    slow.write_text(f"#!/bin/bash\nsleep 600\nexec {sys.executable} \"$@\"\n")
    slow.chmod(0o755)

    def tests_running() -> list[int]:
        found = []
        for entry in os.scandir("/proc"):
            try:
                if entry.name.isdigit() and marker.encode() in Path(entry.path, "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
        return found

    grading = subprocess.Popen([*CLI, "grade", str(out), "--grader", "local", "--workers", "2", "--local-python",
                                str(slow)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               # Ctrl-C as a terminal delivers it, also when the tests run as a background job
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while len(tests_running()) < 2:
        assert grading.poll() is None and time.monotonic() < deadline, grading.stdout.read()
        time.sleep(0.1)
    grading.send_signal(signal.SIGINT)
    said = grading.communicate(timeout=30)[0]
    assert grading.returncode != 0 and "stopping: 2 running command(s) of the gradings were stopped" in said, said
    assert tests_running() == []
    assert not (out / GRADES).exists() or list(JsonlLog(out / GRADES)) == []
