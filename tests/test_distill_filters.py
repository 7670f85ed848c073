"""The paper's trajectory filters (each rule drops exactly the trajectories built to violate it and keeps the rest),
and decontamination (exact and paraphrased duplicates, same instance, same upstream PR)."""

import copy
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swehero.data.trajectory import make_tool_call, validate
from swehero.rollout.decontam import decontaminate, decontaminate_against, upstream_pr
from swehero.distill.filter_io import filter_file
from swehero.distill.filters import (
    FilterConfig,
    editor_errors,
    filter_trajectories,
    ran_banned_command,
)
from swehero.errors import InputError
from swehero.gitdiff import diff_files, patch_files
from swehero.jsonio import read_jsonl
from swehero.rollout import local_grader
from swehero.rollout.local_grader import LocalGraderConfig
from swehero.rollout.toy import build_toy_tasks
from swehero.toolspec import openhands_tools

FIX = ("diff --git a/calc/ops.py b/calc/ops.py\n--- a/calc/ops.py\n+++ b/calc/ops.py\n@@ -1,2 +1,2 @@\n"
       " def add(a, b):\n-    return a - b\n+    return a + b\n")
TEST_EDIT = ("diff --git a/tests/test_ops.py b/tests/test_ops.py\n--- a/tests/test_ops.py\n+++ b/tests/test_ops.py\n"
             "@@ -1 +1 @@\n-x\n+y\n")
QUOTED_TEST_EDIT = ('diff --git "a/tests/test_\\303\\274n.py" "b/tests/test_\\303\\274n.py"\n'
                    '--- "a/tests/test_\\303\\274n.py"\n+++ "b/tests/test_\\303\\274n.py"\n@@ -1 +1 @@\n-x\n+y\n')
"""An edit of `tests/test_ün.py` as git writes it (core.quotePath)."""


def call_turn(n: int, name: str, args: dict, result: str) -> list[dict]:
    call = make_tool_call(f"call_{n}", name, args)
    return [{"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "name": name, "content": result}]


def good(i: int = 0) -> dict:
    """A clean execution-free trajectory: explore, edit, finish."""
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": f"fix add ({i})"},
                *call_turn(1, "execute_bash", {"command": "grep -rn 'def add' . | head"}, "calc/ops.py:1"),
                *call_turn(2, "str_replace_editor", {"command": "str_replace", "path": "/w/calc/ops.py",
                                                     "old_str": "a - b", "new_str": "a + b"}, "edited"),
                {"role": "assistant", "content": "", "tool_calls": [make_tool_call("call_3", "finish",
                                                                                   {"message": "done"})]}]
    return {"id": f"t{i}", "instance_id": "swehero-toy__calc-1", "repo": "swehero-toy/calc", "stage": "zero",
            "messages": messages, "tools": openhands_tools(), "patch": FIX, "resolved": None,
            "metadata": {"test_files": ["tests/test_ops.py"], "finish_reason": "submitted", "rollout": i}}


def with_bash(command: str) -> dict:
    r = good()
    r["messages"][2:4] = call_turn(1, "execute_bash", {"command": command}, "refused")
    return r


def violators() -> dict[str, list[dict]]:
    """Trajectories built to violate exactly one rule each, by rule name."""
    long = good()
    long["messages"][4:4] = [m for n in range(100) for m in call_turn(10 + n, "think", {"thought": "hm"}, "ok")]
    stopped = good()
    stopped["metadata"]["finish_reason"] = "step_limit"
    no_call, two_calls = good(), good()
    no_call["messages"][2:4] = [{"role": "assistant", "content": "let me think"}, {"role": "user", "content": "call"}]
    two_calls["messages"][2]["tool_calls"].append(make_tool_call("call_9", "think", {"thought": "x"}))
    two_calls["messages"].insert(4, {"role": "tool", "tool_call_id": "call_9", "name": "think", "content": "ok"})
    errors = good()
    errors["messages"][4:4] = [m for n in range(3) for m in call_turn(
        20 + n, "str_replace_editor", {"command": "str_replace", "path": "/w/x", "old_str": "q", "new_str": "r"},
        "ERROR:\nNo replacement was performed, old_str `q` did not appear verbatim in /w/x.")]
    null_patch, blank_patch, test_patch, quoted_test_patch = good(), good(), good(), good()
    null_patch["patch"], blank_patch["patch"], test_patch["patch"] = None, "  \n", FIX + TEST_EDIT
    quoted_test_patch["patch"] = FIX + QUOTED_TEST_EDIT
    quoted_test_patch["metadata"]["test_files"] = ["tests/test_ün.py"]
    # the runtime refused what `!!:1` expanded to (`pytest`, from the `: pytest` before): only the metadata says so
    expanded = with_bash("!!:1")
    expanded["metadata"].update(banned=True, banned_commands=["pytest"])
    return {
        "banned_command": [with_bash("cd /w && python -m pytest tests"), with_bash("grep x . && pip install y"),
                           with_bash("echo $(python3 -c 'print(1)')"), with_bash("$RUNNER -q tests"), expanded],
        "step_limit": [long, stopped],
        "empty_patch": [null_patch, blank_patch],
        "touches_test_files": [test_patch, quoted_test_patch],
        "not_one_tool_call": [no_call, two_calls],
        "editor_errors": [errors],
    }


def kept_ids(kept):
    return sorted(r["id"] for r in kept)


def run_filters(records: list[dict], cfg: FilterConfig) -> tuple[list[dict], list[dict], dict]:
    kept, dropped = [], []
    report = filter_trajectories(records, cfg, kept.append, dropped.append)
    return kept, dropped, report


@pytest.mark.parametrize("stage", ["zero", "hero"])
def test_each_rule_drops_exactly_its_violators(stage):
    bad = violators()
    records, expected_rule = [], {}
    for rule, items in bad.items():
        for n, r in enumerate(items):
            r["id"] = f"{rule}-{n}"
            records.append(validate(r))
            expected_rule[r["id"]] = rule
    clean = [good(i) for i in range(3)]
    # allowed in both stages: shell navigation, a python file only viewed, 2 editor errors
    clean[1] = with_bash("find . -name '*.py' | xargs grep -n add; cat setup.py")
    clean[1]["id"] = "clean-nav"
    clean[2]["messages"][4:4] = [m for n in range(2) for m in call_turn(
        30 + n, "str_replace_editor", {"command": "view", "path": "/w/nope"}, "ERROR:\nThe path /w/nope does not exist.")]
    duplicate = copy.deepcopy(clean[0])
    duplicate["id"] = "dup"
    kept, dropped, report = run_filters(records + clean + [duplicate], FilterConfig(stage=stage))
    assert kept_ids(kept) == kept_ids(clean + (bad["banned_command"] if stage == "hero" else []))
    by_id = {d["id"]: d["rule"] for d in dropped}
    for rid, rule in expected_rule.items():
        if rule == "banned_command" and stage == "hero":
            assert rid not in by_id  # execution is allowed when SWE-Hero data is made
        else:
            assert by_id[rid] == rule
    assert by_id["dup"] == "duplicate"
    counts = {r["name"]: r["dropped"] for r in report["rules"]}
    assert counts == {**{rule: len(items) for rule, items in bad.items() if stage == "zero" or rule != "banned_command"},
                      "duplicate": 1, "no_assistant_turn": 0}
    assert report["input"] == len(records) + 4 and report["kept"] == len(kept)
    assert all(r["doc"] for r in report["rules"])


def test_rule_helpers():
    assert patch_files(FIX + TEST_EDIT) == ["calc/ops.py", "tests/test_ops.py"]
    assert patch_files("diff --git a/old.py b/new.py\nsimilarity index 90%\n") == ["new.py", "old.py"]
    r = good()
    assert editor_errors(r) == 0
    # results without tool_call_id / name (the NVIDIA releases) are matched to calls by order
    for m in r["messages"]:
        m.pop("tool_call_id", None), m.pop("name", None)
        if m["role"] == "tool" and m["content"] == "edited":
            m["content"] = "ERROR: bad"
    assert editor_errors(r) == 1


def test_patch_paths_are_read_as_git_writes_them(tmp_path):
    """One parser of diff headers for the filters and the grader: paths with a space, a non-ASCII letter or a quote
    (git C-quotes the last two), a rename, a deletion, a created empty file and a binary one are read as git's own
    name list has them, and hunk lines that look like headers (a removed `-- a/x`) are not headers."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "core.quotePath=true", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=repo, check=True, capture_output=True, text=True).stdout

    def write(files: dict[str, str | bytes]) -> None:
        for name, text in files.items():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            getattr(repo / name, "write_bytes" if isinstance(text, bytes) else "write_text")(text)

    git("init", "-q")
    write({"tests/test my.py": "a\n", "tests/test_ün.py": "a\n", 'tests/q"uote.py': "a\n", "old name.py": "x\n" * 20,
           "gone.py": "g\n", "src/mod.py": "-- a/fake.py\nkeep\n"})
    git("add", "-A")
    git("commit", "-qm", "base")
    git("mv", "old name.py", "new name.py")
    (repo / "gone.py").unlink()
    write({"tests/test my.py": "b\n", "tests/test_ün.py": "b\n", 'tests/q"uote.py': "b\n", "new name.py": "x\n" * 19,
           "src/mod.py": "keep\n++ b/fake2.py\n", "tests/empty.py": "", "tests/data.bin": bytes(range(256))})
    git("add", "-A")
    patch = git("diff", "--cached", "-M", "--binary", "HEAD")
    assert '"a/tests/test_\\303\\274n.py"' in patch and "\n--- a/fake.py\n" in patch and "\n+++ b/fake2.py\n" in patch
    listed = git("diff", "--cached", "-M", "--name-status", "-z", "HEAD").split("\0")[:-1]
    expected, i = set(), 0
    while i < len(listed):
        status, names = listed[i][0], listed[i + 1:i + (3 if listed[i][0] in "RC" else 2)]
        expected.add({"A": (None, names[0]), "D": (names[0], None)}.get(status, (names[0], names[-1])))
        i += 1 + len(names)
    assert len(expected) == 8
    assert patch_files(patch) == sorted({path for pair in expected for path in pair if path})
    assert sorted(local_grader.test_files(patch)) == sorted(new for _, new in expected if new)
    assert set(diff_files(patch)) == expected


@pytest.mark.bwrap
def test_a_command_bash_expands_into_a_banned_one_drops_the_trajectory(tmp_path):
    """The runtime refuses what bash's history expansion makes of `!!:1` and `^echo^pytest` (`pytest`); the text the
    agent typed names no banned program, so the rule reads the refusal the episode's metadata records."""
    from agent_repos import CALC, CALC_FIX, Scripted, make_task

    from swehero.agent.local import LocalRuntime
    from swehero.agent.loop import run_episode
    from swehero.agent.tools import Tools

    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    runtime = LocalRuntime.for_task(tmp_path / "src", task.base_commit, "/testbed", tmp_path / "work")
    opening = [{"role": "system", "content": "Fix it."}, {"role": "user", "content": task.problem_statement}]
    try:
        record = run_episode(task, Scripted([": pytest", "!!:1", "echo foo", "^echo^pytest"]), Tools(runtime, "zero"),
                             opening)
    finally:
        runtime.close()
    assert record["metadata"]["banned_commands"] == ["pytest", "pytest"]
    assert ran_banned_command(record, FilterConfig())
    record["metadata"]["test_files"] = []  # as `swehero distill` adds
    kept, dropped, _ = run_filters([validate(record)], FilterConfig(stage="zero"))
    assert not kept and dropped[0]["rule"] == "banned_command"


def test_a_null_content_is_read_as_validation_makes_it(tmp_path):
    """A message whose content is null is a canonical trajectory (`validate` makes it ""): the filters read the
    validated record, and write it."""
    record = good(0)
    record["messages"].insert(4, {"role": "user", "content": None})
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(record) + "\n")
    filter_file(str(src), FilterConfig(stage="zero"), tmp_path / "out")
    assert read_jsonl(tmp_path / "out" / "trajectories.jsonl") == [validate(record)]


def toy_records(toy: Path, count: int) -> tuple[list[dict], list[dict]]:
    """The first `count` toy tasks, and a hero trajectory for each that ends with its gold patch."""
    tasks = [json.loads(line) for line in toy.read_text().splitlines()][:count]
    records = [good(i) for i in range(count)]
    for record, task in zip(records, tasks):
        record.update(instance_id=task["instance_id"], repo=task["repo"], stage="hero", patch=task["patch"])
    return tasks, records


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def noting_python(tmp_path: Path, hold_run: int = 0) -> tuple[Path, Path]:
    """An interpreter that notes each test run in a file (returned second); its run number `hold_run` never ends,
    so that a test can stop grading in the middle."""
    ran, python = tmp_path / "tests_ran", tmp_path / "bin" / "python"
    python.parent.mkdir()
    hold = f'[ "$(wc -l < "{ran}")" -eq {hold_run} ] && while :; do sleep 0.1; done\n' if hold_run else ""
    python.write_text(f'#!/bin/sh\necho "$*" >> "{ran}"\n{hold}exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    return python, ran


@dataclasses.dataclass
class Grading:
    """The toy tasks, the first `count` of them with a gold-patch record each (written to `src`), and the hero filter
    that grades them into `out` with the local grader; `python` notes every test run in `ran` (see `noting_python`)
    unless the test brought its own."""

    toy: Path
    tasks: list[dict]
    records: list[dict]
    src: Path
    out: Path
    python: Path
    ran: Path | None
    cfg: FilterConfig


def hero_grading(tmp_path: Path, count: int, python: Path | None = None, hold_run: int = 0) -> Grading:
    toy = build_toy_tasks(tmp_path / "toy")
    tasks, records = toy_records(toy, count)
    ran = None
    if python is None:
        python, ran = noting_python(tmp_path, hold_run)
    cfg = FilterConfig(stage="hero", resolved_only=True, tasks=str(toy), grading=LocalGraderConfig(python=str(python)))
    return Grading(toy, tasks, records, write_jsonl(tmp_path / "in.jsonl", records), tmp_path / "out", python, ran,
                   cfg)


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_resolved_only_checks_every_repository_first_and_grades_only_what_the_other_rules_keep(tmp_path):
    """Grading runs tests (hours of them on real data): a task whose repository is missing stops `filter` before
    anything is graded, with every such task named; a record another rule drops is not graded, so its repository
    is not needed."""
    from swehero.agent.local import MissingRepository

    g = hero_grading(tmp_path, 3)
    g.records[2]["messages"][2]["tool_calls"].append(make_tool_call("call_9", "think", {"thought": "x"}))
    write_jsonl(g.src, g.records)
    hidden = {task["repo"]: tmp_path / "hidden" / task["repo"].replace("/", "__") for task in g.tasks[1:]}
    for repo, where in hidden.items():
        shutil.move(g.toy.parent / "repos" / where.name, where)

    with pytest.raises(MissingRepository) as missing:
        filter_file(str(g.src), g.cfg, g.out)
    assert g.tasks[1]["repo"] in str(missing.value) and g.tasks[2]["repo"] not in str(missing.value)
    assert not g.ran.exists() and not g.out.exists()

    shutil.move(hidden[g.tasks[1]["repo"]], g.toy.parent / "repos" / hidden[g.tasks[1]["repo"]].name)
    filter_file(str(g.src), g.cfg, g.out)
    kept = read_jsonl(g.out / "trajectories.jsonl")
    assert [(r["id"], r["resolved"]) for r in kept] == [("t0", True), ("t1", True)]
    assert [d["rule"] for d in read_jsonl(g.out / "dropped.jsonl")] == ["not_one_tool_call"]
    assert len(g.ran.read_text().splitlines()) == 2


@pytest.mark.slow  # two filter runs grading a real test suite
def test_a_grading_the_environment_decided_is_dropped_as_ungraded_and_graded_again_once_mended(tmp_path):
    """pytest unable to run (exit 4: an option of a plugin not installed) says nothing of the patch: it was kept in
    grades.jsonl as `resolved: false` and reused by every later run, the trajectory dropped as unresolved for good."""
    broken, python = tmp_path / "broken", tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text(f'#!/bin/sh\ncase "$*" in *"-m pytest"*) [ -e "{broken}" ] && '
                      '{ echo "pytest: error: unrecognized arguments: --reuse-db" >&2; exit 4; };; esac\n'
                      f'exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    broken.touch()
    g = hero_grading(tmp_path, 1, python)
    filter_file(str(g.src), g.cfg, g.out)
    assert grading_report(g.out) == {"graded": 0, "reused": 0, "failed": 1}
    assert [d["rule"] for d in read_jsonl(g.out / "dropped.jsonl")] == ["ungraded"]
    assert not (g.out / "grades.jsonl").exists() or not read_jsonl(g.out / "grades.jsonl")
    broken.unlink()  # the environment mended
    filter_file(str(g.src), g.cfg, g.out)
    assert grading_report(g.out) == {"graded": 1, "reused": 0, "failed": 0}
    assert [(r["id"], r["resolved"]) for r in read_jsonl(g.out / "trajectories.jsonl")] == [("t0", True)]


@pytest.mark.slow  # two filter runs, the first grading real test suites
def test_a_rerun_whose_grades_are_all_logged_needs_no_repository(tmp_path):
    """Whether a task can be graded was checked for every trajectory not graded in its file, before the log of
    grades was read: a rerun after the repositories moved was refused, though it grades nothing."""
    g = hero_grading(tmp_path, 2)
    filter_file(str(g.src), g.cfg, g.out)
    shutil.move(g.toy.parent / "repos", tmp_path / "elsewhere")
    filter_file(str(g.src), g.cfg, g.out)
    assert grading_report(g.out) == {"graded": 0, "reused": 2, "failed": 0}
    assert len(g.ran.read_text().splitlines()) == 2


FILTER_RECIPE = """\
name: grading
run_dir: {run}
stages:
  - name: hero
    kind: filter
    trajectories: {src}
    rules: {{stage: hero, resolved_only: true, tasks: {tasks}, grading: {{python: {python}}}}}
"""
NEW_FILE = "diff --git a/NOTES b/NOTES\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES\n@@ -0,0 +1 @@\n+note\n"
"""A patch that applies to any task and resolves none."""


def wait_for(done, process: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    """Poll `done` while `process` runs; fail, with its output, if it ends first or takes too long."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"gave up waiting (exit {process.returncode}):\n{log.read_text()}")
        time.sleep(0.05)


def grading_report(out: Path) -> dict:
    return json.loads((out / "filter_report.json").read_text())["grading"]


@pytest.mark.slow  # a filter run and a recipe run, each interrupted and run again, in subprocesses
@pytest.mark.parametrize("via", ["filter", "recipe"])
def test_an_interrupted_grading_goes_on_from_its_grade_log(tmp_path, via):
    """`swehero filter --resolved-only`, or a `filter` stage, stopped by Ctrl-C in the middle of grading keeps every
    grade made (`grades.jsonl`), and the next run grades only the rest: a release's grading takes hours. A recipe
    resumes the stage with its log, unless its settings changed."""
    g = hero_grading(tmp_path, 3, hold_run=2)
    ran = g.ran
    if via == "filter":
        out = g.out
        command = [sys.executable, "-c", "from swehero.distill.cli import filter_; filter_()", str(g.src), "--stage",
                   "hero", "--resolved-only", "--tasks", str(g.toy), "--grading-python", str(g.python), "--out",
                   str(out)]
    else:
        out, recipe = tmp_path / "run" / "hero", tmp_path / "r.yaml"
        recipe.write_text(FILTER_RECIPE.format(run=tmp_path / "run", src=g.src, tasks=g.toy, python=g.python))
        command = [sys.executable, "-c", "from swehero.cli import main; main()", "recipe", "run", str(recipe)]
    log = tmp_path / "first.log"
    with open(log, "w") as output:
        # Ctrl-C as a terminal sends it, also when the tests run in the background (whose children ignore SIGINT)
        first = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: ran.exists() and len(ran.read_text().splitlines()) == 2, first, log)  # grading the second
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=60) != 0
    assert [(line["id"], line["resolved"]) for line in read_jsonl(out / "grades.jsonl")] == [("t0", True)]
    left = sorted(p.name for p in out.iterdir())
    assert left == ["grades.jsonl"] + (["manifest.json"] if via == "recipe" else [])  # no partial output
    if via == "recipe":
        plan = subprocess.run(command + ["--dry-run"], capture_output=True, text=True, check=True).stdout
        assert "(resuming)" in plan, plan
        changed = subprocess.run(command + ["--dry-run", "--set", "stages.hero.rules.grading.test_timeout_s=60"],
                                 capture_output=True, text=True, check=True).stdout
        assert "settings changed" in changed and "resuming" not in changed, changed

    subprocess.run(command, capture_output=True, check=True)
    assert grading_report(out) == {"graded": 2, "reused": 1, "failed": 0}
    assert len(ran.read_text().splitlines()) == 4  # the interrupted grading and the third; the first not again
    assert [line["id"] for line in read_jsonl(out / "grades.jsonl")] == ["t0", "t1", "t2"]
    assert [r["resolved"] for r in read_jsonl(out / "trajectories.jsonl")] == [True, True, True]


@pytest.mark.slow  # three filter runs grading real test suites
def test_a_changed_patch_task_or_grading_setting_is_graded_again(tmp_path):
    """A grade is reused only for the same task entry, patch and grading settings: anything else that decides it
    changed is graded again, never given the stale grade."""
    g = hero_grading(tmp_path, 3)
    records = g.records

    def grading(rows: list[dict], cfg: FilterConfig = g.cfg) -> dict:
        filter_file(str(write_jsonl(g.src, rows)), cfg, g.out)
        return grading_report(g.out)

    assert grading(records) == {"graded": 3, "reused": 0, "failed": 0}
    records[0]["patch"] = NEW_FILE
    edited = [json.loads(line) for line in g.toy.read_text().splitlines()]
    edited[1]["PASS_TO_PASS"] = "[]"
    write_jsonl(g.toy, edited)
    assert grading(records) == {"graded": 2, "reused": 1, "failed": 0}
    assert [(d["id"], d["rule"]) for d in read_jsonl(g.out / "dropped.jsonl")] == [("t0", "unresolved")]
    longer = dataclasses.replace(g.cfg, grading=LocalGraderConfig(python=str(g.python), test_timeout_s=60))
    assert grading(records[2:], longer) == {"graded": 1, "reused": 0, "failed": 0}
    assert len(g.ran.read_text().splitlines()) == 6


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_a_grade_line_torn_by_a_kill_is_ignored(tmp_path):
    """`kill -9` in the middle of appending a grade leaves a torn last line: the rerun cuts it off and goes on."""
    g = hero_grading(tmp_path, 1)
    filter_file(str(g.src), g.cfg, g.out)
    grades = g.out / "grades.jsonl"
    whole = grades.read_text()
    with open(grades, "a") as log:
        log.write('{"key": "0123')
    filter_file(str(g.src), g.cfg, g.out)
    assert grading_report(g.out) == {"graded": 0, "reused": 1, "failed": 0}
    assert grades.read_text() == whole and len(g.ran.read_text().splitlines()) == 1


@pytest.mark.slow
def test_test_files_come_from_the_task_file_and_resolved_only_grades(tmp_path):
    toy = build_toy_tasks(tmp_path / "toy")
    task = json.loads(toy.read_text().splitlines()[0])
    right, wrong, touches = good(0), good(1), good(2)
    for r in (right, wrong, touches):
        r["metadata"].pop("test_files")
        r["stage"] = "hero"
    right["patch"] = task["patch"]
    wrong["patch"] = FIX.replace("a + b", "b + a + 1")
    touches["patch"] = task["patch"] + task["test_patch"]
    with pytest.raises(ValueError, match="--tasks"):
        run_filters([touches], FilterConfig(stage="hero"))
    kept, dropped, _ = run_filters([right, wrong, touches], FilterConfig(stage="hero", tasks=str(toy)))
    assert kept_ids(kept) == ["t0", "t1"] and [d["rule"] for d in dropped] == ["touches_test_files"]
    kept, dropped, _ = run_filters([right, wrong], FilterConfig(stage="hero", tasks=str(toy), resolved_only=True))
    assert kept_ids(kept) == ["t0"] and dropped[0]["rule"] == "unresolved"
    assert right["resolved"] is True and wrong["resolved"] is False
    with pytest.raises(ValueError, match="hero"):
        run_filters([right], FilterConfig(stage="zero", resolved_only=True))


def test_filter_cli_writes_the_report(tmp_path):
    src = tmp_path / "in.jsonl"
    junk = good(0)
    junk["messages"][1]["content"] += " model junk: \u2028 \x85 \x1c \u2029 end"  # raw in the JSONL lines
    records = [junk, with_bash("pytest -x"), copy.deepcopy(junk)]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    cli = [sys.executable, "-c", "from swehero.distill.cli import filter_; filter_()"]
    done = subprocess.run(cli + [str(src), "--stage", "zero", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.startswith("kept 1 of 3")
    report = json.loads((tmp_path / "out" / "filter_report.json").read_text())
    assert {r["name"]: r["dropped"] for r in report["rules"]}["banned_command"] == 1
    assert read_jsonl(tmp_path / "out" / "trajectories.jsonl") == [validate(junk)]
    assert len(read_jsonl(tmp_path / "out" / "dropped.jsonl")) == 2


def turnless(i: int, finish_reason: str, messages: int) -> dict:
    """A distill run's record of an episode that ended before the teacher's first reply, with the first `messages`
    messages of `good`'s opening (system prompt, task)."""
    r = good(i)
    r.update(id=f"turnless-{i}", patch="", messages=r["messages"][:messages])
    r["metadata"]["finish_reason"] = finish_reason
    return r


def test_records_without_an_assistant_turn_are_dropped_by_their_own_rule(tmp_path):
    """A distill run commits them (a problem statement past the context, a time limit); the filter refused the
    whole file at the first, and wrote nothing."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [turnless(0, "context_limit", 2), good(1),
                                                          turnless(2, "time_limit", 0)]))
    out = filter_file(str(src), FilterConfig(stage="zero"), tmp_path / "f")
    assert kept_ids(read_jsonl(Path(out["trajectories"]))) == ["t1"]
    assert read_jsonl(Path(out["dropped"])) == [
        {"id": f"turnless-{i}", "instance_id": "swehero-toy__calc-1", "rule": "no_assistant_turn",
         "violates": ["no_assistant_turn"]} for i in (0, 2)]
    report = json.loads(Path(out["report"]).read_text())
    assert report["rules"][0] == {"name": "no_assistant_turn", "doc": report["rules"][0]["doc"], "dropped": 2,
                                  "violations": 2}
    assert (report["input"], report["kept"], report["dropped"]) == (3, 1, 2)
    # by that rule alone: a label the record carries is not judged either
    labelled = [{**turnless(0, "context_limit", 2), "resolved": False}]
    report = filter_trajectories(labelled, FilterConfig(stage="hero", resolved_only=True), lambda r: None,
                                 lambda d: None)
    assert [(r["name"], r["violations"]) for r in report["rules"] if r["violations"]] == [("no_assistant_turn", 1)]


def test_a_record_without_an_assistant_turn_is_otherwise_checked_as_any(tmp_path):
    """Only the missing turn is let pass: a fault `validate` finds after the turns (text UTF-8 cannot encode) still
    stops the filter, as in any other record."""
    src = tmp_path / "in.jsonl"
    bad = turnless(0, "context_limit", 2)
    bad["messages"][1]["content"] += "\udc80"
    src.write_text(json.dumps(good(1)) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=rf"^{src}:2: not a canonical trajectory: not_utf8: message 1 holds a lone "
                                         "surrogate U\\+DC80, which UTF-8 cannot encode$"):
        filter_file(str(src), FilterConfig(stage="zero"), tmp_path / "f")
    assert not (tmp_path / "f").exists()


def test_filter_and_prompts_name_a_row_that_is_no_trajectory(tmp_path):
    from click.testing import CliRunner

    from swehero.cli import main

    src, bad = tmp_path / "in.jsonl", good(1)
    del bad["tools"]
    src.write_text(json.dumps(good(0)) + "\n\n" + json.dumps(bad) + "\n")
    for args in (["filter", str(src), "--stage", "zero", "--out", str(tmp_path / "f")],
                 ["agent", "prompts", "extract", str(src), "--out", str(tmp_path / "p.json")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, result.output
        assert f"Error: {src}:3: not a canonical trajectory: missing_field: tools" in result.output, args
    for args in (["filter", str(tmp_path), "--stage", "zero", "--out", str(tmp_path / "f")],
                 ["agent", "prompts", "extract", str(tmp_path), "--out", str(tmp_path / "p.json")]):
        result = CliRunner().invoke(main, args)  # a folder where the file goes
        assert result.exit_code == 1 and f"Error: {tmp_path}: a folder, where a file is read" in result.output, args
    assert not (tmp_path / "f").exists() and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("field, value, problem", [
    ("metadata", "oops", "metadata must be an object or null"),
    ("patch", 5, "patch must be a string or null"),
    ("metadata", {"test_files": "pkg/tests/test_mod.py"}, "metadata.test_files must be a list of file paths")])
def test_a_field_of_the_wrong_type_is_named_not_a_traceback(tmp_path, field, value, problem):
    """A string metadata or a number patch was an AttributeError traceback; test files given as one string were
    compared with the patch's files character by character, so `touches_test_files` never fired."""
    from click.testing import CliRunner

    from swehero.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(good(0)) + "\n" + json.dumps({**good(1), field: value}) + "\n")
    result = CliRunner().invoke(main, ["filter", str(src), "--stage", "zero", "--out", str(tmp_path / "f")])
    assert result.exit_code == 1 and f"Error: {src}:2: not a canonical trajectory: bad_field: {problem}" \
        in result.output, result.output


def release_turn(n: int, name: str, args: dict, result: str) -> list[dict]:
    """One assistant call and its result, as the NVIDIA release writes them (OpenHands messages)."""
    call = {"id": f"c{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    return [{"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "tool", "content": result}]


def release_row(task: int, rollout: int, editor_errors: int, patch: str) -> dict:
    """A row shaped like the SWE-Zero/SWE-Hero releases' (no test patch): `editor_errors` failed edits, then a
    finish; `patch` is the final patch."""
    failed = "ERROR:\nNo replacement was performed, old_str `q` did not appear verbatim in /workspace/r/a.py."
    messages = [{"role": "system", "content": "You are OpenHands agent."},
                {"role": "user", "content": f"Fix the bug in /workspace/r/a.py (task {task})"},
                *release_turn(0, "str_replace_editor", {"command": "view", "path": "/workspace/r/a.py"},
                              f"rollout {rollout}: a.py"),
                *[m for n in range(editor_errors) for m in release_turn(
                    1 + n, "str_replace_editor",
                    {"command": "str_replace", "path": "/workspace/r/a.py", "old_str": "q", "new_str": "r"}, failed)],
                *release_turn(99, "finish", {"message": "done"}, "done")]
    return {"instance_id": f"o__r-{task}", "repo": "o/r", "license": "MIT", "trajectory_id": f"o__r-{task}_{rollout}",
            "trajectory": json.dumps(messages), "model_patch": patch, "dataset": "SWE-rebench"}


def release_with_bad_rollouts(path: Path, tasks: int) -> Path:
    """A release-shaped Parquet file where each task has two clean rollouts, one ending with an empty patch and
    one with 4 `str_replace_editor` errors: the probe's case, where the import's seeded pick took bad ones."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [row for t in range(tasks) for row in (release_row(t, 0, 0, FIX), release_row(t, 1, 0, ""),
                                                  release_row(t, 2, 4, FIX), release_row(t, 3, 0, FIX))]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("recipe_name, import_stage, filter_stage, prepare_stage, per_task", [
    ("zero-7b", "import_zero", "filter_zero", "prepare_zero", 2),
    ("hero-7b", "import_hero", "filter_hero", "prepare_hero", 1),
])
def test_the_paper_recipes_filter_the_release_then_select_among_the_clean_rollouts(
        tmp_path, recipe_name, import_stage, filter_stage, prepare_stage, per_task):
    """The paper filters first, then keeps ~2 (SWE-Zero) or 1 (SWE-Hero) trajectories per task: the recipes
    selected at import, so `per_instance: 1` kept a rollout with an empty patch or 4 editor errors although a
    clean one existed (11 of 20 in a probe). The release carries no test patch: the test-file rule is skipped,
    and the report says so."""
    from swehero.data.import_stage import import_to
    from swehero.distill import filter_stage as stage_kind
    from swehero.recipe.config import load_recipe
    from swehero.recipe.stage import StageContext

    run_dir = tmp_path / "run"
    recipe = load_recipe(recipe_name, (f"run_dir={run_dir}",))
    filtering = recipe.stage(filter_stage).settings
    assert filtering.trajectories == f"{run_dir}/{import_stage}/trajectories.jsonl"
    assert recipe.stage(prepare_stage).settings.inputs == [f"{run_dir}/{filter_stage}/trajectories.jsonl"]
    assert not filtering.rules.resolved_only  # the paper does not filter SWE-Hero on resolution

    release = release_with_bad_rollouts(tmp_path / "release" / "data" / "train.parquet", tasks=12)
    imported = tmp_path / "imported.jsonl"
    import_to(dataclasses.replace(recipe.stage(import_stage).settings, inputs=[str(release.parent)]), imported,
              recipe.seed)
    assert len(read_jsonl(imported)) == 48  # every released rollout: the selection is the filter's
    ctx = StageContext(filter_stage, tmp_path / filter_stage, recipe.seed, None, {}, False)
    ctx.dir.mkdir()
    outputs = stage_kind.run(dataclasses.replace(filtering, trajectories=str(imported)), ctx)

    kept = read_jsonl(outputs["trajectories"])
    assert all(r["patch"] == FIX and editor_errors(r) == 0 for r in kept), [r["id"] for r in kept]
    assert sorted(r["instance_id"] for r in kept) == sorted(f"o__r-{t}" for t in range(12) for _ in range(per_task))
    report = json.loads(Path(outputs["report"]).read_text())
    assert report["skipped"] == ["touches_test_files"]
    assert "touches_test_files" not in [r["name"] for r in report["rules"]]
    assert (report["input"], report["kept"]) == (48, 24)
    assert report["selected"] == {"trajectories": 12 * per_task, "instances": 12, "per_instance": per_task,
                                  "seed": recipe.seed, **({"limit": 300000} if per_task == 2 else {})}


def test_filter_cli_selects_among_what_the_rules_keep_seeded(tmp_path):
    """`swehero filter --per-instance/--limit/--seed`: the selection runs on the survivors of the rules, the same
    for the same seed whatever the input order."""
    from click.testing import CliRunner

    from swehero.cli import main

    records = [good(i) for i in range(8)]
    for i, r in enumerate(records):
        r["instance_id"] = f"task-{i % 4}"
        r["patch"] = "" if i < 2 else FIX  # task-0 and task-1 each lose a rollout to empty_patch
    src, shuffled = tmp_path / "in.jsonl", tmp_path / "shuffled.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    shuffled.write_text("".join(json.dumps(r) + "\n" for r in reversed(records)))

    def run(path: Path, out: str, *options: str) -> list[dict]:
        result = CliRunner().invoke(main, ["filter", str(path), "--stage", "zero", "--out", str(tmp_path / out),
                                           *options])
        assert result.exit_code == 0, result.output
        kept = read_jsonl(tmp_path / out / "trajectories.jsonl")
        assert result.output.rstrip().endswith(f"; selected {len(kept)} of them")  # the summary says what is left
        return kept

    one_each = run(src, "a", "--per-instance", "1")
    assert sorted(r["instance_id"] for r in one_each) == ["task-0", "task-1", "task-2", "task-3"]
    assert {r["id"] for r in one_each} >= {"t4", "t5"}  # the only survivors of task-0 and task-1
    assert kept_ids(run(shuffled, "b", "--per-instance", "1")) == kept_ids(one_each)
    assert len(run(src, "c", "--per-instance", "1", "--limit", "3", "--seed", "7")) == 3
    report = json.loads((tmp_path / "c" / "filter_report.json").read_text())
    assert report["kept"] == 6 and report["selected"] == {"trajectories": 3, "instances": 3, "per_instance": 1,
                                                           "limit": 3, "seed": 7}
    assert report["skipped"] == []


def test_skipped_rules_do_not_run_and_unknown_ones_are_errors(tmp_path):
    """Without a test patch the test-file rule stops the filter unless the settings skip it by name; a name that is
    no rule of the stage is an error, not a silent no-op."""
    from click.testing import CliRunner

    from swehero.cli import main

    touches = good(0)
    touches["metadata"].pop("test_files")
    touches["patch"] = FIX + TEST_EDIT
    with pytest.raises(InputError, match="no test patch known"):
        run_filters([validate(touches)], FilterConfig(stage="hero"))
    kept, _, report = run_filters([validate(touches)], FilterConfig(stage="hero", skip=["touches_test_files"]))
    assert kept_ids(kept) == ["t0"] and report["skipped"] == ["touches_test_files"]
    with pytest.raises(InputError, match=r"skip: 'banned_command' is no rule of the hero stage"):
        run_filters([], FilterConfig(stage="hero", skip=["banned_command"]))

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(good(0)) + "\n")
    result = CliRunner().invoke(main, ["filter", str(src), "--stage", "zero", "--skip", "touches_test_file",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "touches_test_file" in result.output and "--skip" in result.output


ISSUE = ("QuerySet.bulk_update() crashes when the batch contains a model whose primary key was never saved. "
         "Calling bulk_update with a list that mixes saved instances and a freshly constructed instance raises "
         "an unhelpful AttributeError deep inside the SQL compiler instead of a clear ValueError that explains "
         "that every object passed to bulk_update must already have a primary key set in the database.")
PARAPHRASE = ("QuerySet.bulk_update() crashes if the batch includes a model whose primary key was never saved. "
              "Calling bulk_update with a list that mixes saved objects and a newly constructed instance raises "
              "a confusing AttributeError deep inside the SQL compiler rather than a clear ValueError explaining "
              "that every object passed to bulk_update must already have a primary key set in the database.")


def row(iid, statement, repo="django/django", **extra):
    return {"instance_id": iid, "repo": repo, "problem_statement": statement, **extra}


def test_decontamination_catches_each_kind_of_overlap():
    evals = [row("django__django-15368", ISSUE),
             row("astropy__astropy-12907", "Modeling separability matrix wrong for nested CompoundModels.",
                 repo="astropy/astropy")]
    train = [
        row("django__django-15368", "some other text"),  # the evaluation task itself
        row("django__django-15368-v2", "rewritten", pull_number=15368),  # same upstream PR, other id
        row("gym__exact-1", ISSUE, repo="someone/fork"),  # exact copy of the statement
        row("gym__paraphrase-2", PARAPHRASE, repo="someone/fork"),  # reworded copy
        row("django__django-99999", "Admin changelist shows wrong totals when filtering by a related date field."),
        row("pallets__flask-5000", "Blueprint url_prefix is ignored when registering nested blueprints twice.",
            pr_url="https://github.com/pallets/flask/pull/5000"),
    ]
    kept, dropped = decontaminate(train, evals)
    reasons = {d["instance_id"]: d["reason"] for d in dropped}
    assert reasons == {"django__django-15368": "instance_id", "django__django-15368-v2": "upstream_pr",
                       "gym__exact-1": "near_duplicate_statement", "gym__paraphrase-2": "near_duplicate_statement"}
    assert [t["instance_id"] for t in kept] == ["django__django-99999", "pallets__flask-5000"]
    sims = {d["instance_id"]: d.get("similarity") for d in dropped}
    assert sims["gym__exact-1"] == 1.0 and 0.5 <= sims["gym__paraphrase-2"] < 1.0
    assert upstream_pr(train[5]) == ("pallets/flask", 5000)
    assert upstream_pr(row("x", "y", repo="a/b")) is None
    with pytest.raises(InputError, match=r"task 'x': pull_number '12a' is not a PR number"):
        upstream_pr(row("x", "y", repo="a/b", pull_number="12a"))
    # the repository however a row spells it, and a number as pandas writes a column with gaps: one PR
    for repo in ("Django/django.git", "https://github.com/django/django", "git@github.com:django/django.git"):
        assert upstream_pr(row("x", "y", repo=repo, pull_number=15368.0)) == ("django/django", 15368), repo


def test_an_evaluation_issue_copied_into_a_longer_statement_is_dropped_and_a_shared_phrase_is_not():
    """Jaccard sees the copy diluted by the text around it (about 0.3 here); the share of the evaluation issue's
    word 13-grams found in the training statement sees it whole."""
    other = " ".join(f"Step {i}: the migration framework rebuilds table number {i} from its model state." for i in
                     range(40))
    evals = [row("django__django-15368", ISSUE)]
    train = [row("gym__copied-1", f"Reported downstream as well. {other} Upstream report: {ISSUE} Thanks."),
             row("gym__quotes-2", f"{other} As the docs say, every object passed to bulk_update must already have "
                                  "a primary key set in the database; this is about something else."),
             row("gym__short-3", "QuerySet.bulk_update() crashes")]
    kept, dropped = decontaminate(train, evals)
    assert [(d["instance_id"], d["reason"], d["matches"], d["contained"]) for d in dropped] == [
        ("gym__copied-1", "contained_statement", "django__django-15368", 1.0)]
    assert [t["instance_id"] for t in kept] == ["gym__quotes-2", "gym__short-3"]
    from swehero.rollout.decontam import _minhash, DecontamConfig
    assert _minhash(train[0]["problem_statement"], DecontamConfig()).jaccard(_minhash(ISSUE, DecontamConfig())) < 0.5


TEMPLATE = ("<!-- This comment is hidden when you submit the issue, so you do not need to remove it. Please be sure "
            "to check out our contributing guidelines and our code of conduct before you open a new issue here, and "
            "search the tracker to see whether a similar issue has already been posted by someone else. -->\n"
            "### Description\n")
VERSIONS = ("### Versions\nimport platform; print(platform.platform()); import sys; print('Python', sys.version); "
            "import numpy; print('Numpy', numpy.__version__); import astropy; print('astropy', astropy.__version__)")


def test_an_issue_template_two_statements_share_is_no_containment():
    """An unrelated issue written in the same issue form was dropped: the form's hidden instructions (HTML comments)
    and the snippet every report pastes made up most of a short evaluation statement's 13-grams."""
    evals = [row(f"astropy__astropy-{i}", f"{TEMPLATE}{body}\n{VERSIONS}", repo="astropy/astropy") for i, body in
             enumerate(["Incorrect ignored usage in ModelBoundingBox.", "Table.read fails on a masked column.",
                        "WCS.all_pix2world raises for a 1-d header."])]
    other = ("Quantity.to_value fails for dimensionless angles: the conversion factor of the unit is applied twice, "
             "once when the composite unit is simplified and again when the value is extracted.")
    train = [row("gym__astropy-1", f"{TEMPLATE}{other}\n{VERSIONS}", repo="astropy/astropy"),
             row("gym__astropy-2", f"Seen again downstream: {evals[0]['problem_statement']} {other}")]
    kept, dropped = decontaminate(train, evals)
    assert [t["instance_id"] for t in kept] == ["gym__astropy-1"]
    assert [(d["instance_id"], d["matches"]) for d in dropped] == [("gym__astropy-2", "astropy__astropy-0")]


def test_a_task_in_several_evaluation_sets_counts_once(tmp_path):
    """SWE-bench Verified is a subset of SWE-bench (and an evaluation set may be named twice): a task they share is
    one evaluation task."""
    fields = {"base_commit": "0" * 40, "FAIL_TO_PASS": "[]", "PASS_TO_PASS": "[]"}
    verified, full = tmp_path / "verified.jsonl", tmp_path / "full.jsonl"
    verified.write_text(json.dumps(row("django__django-15368", ISSUE, **fields)) + "\n")
    full.write_text(verified.read_text() + json.dumps(row("astropy__astropy-12907", "Separability matrix is wrong.",
                                                          repo="astropy/astropy", **fields)) + "\n")
    train = [row("gym__exact-1", ISSUE, repo="someone/fork"), row("django__django-99999", "Admin totals are wrong.")]
    kept, report = decontaminate_against(train, [str(verified), str(full), str(verified)])
    assert [t["instance_id"] for t in kept] == ["django__django-99999"]
    assert report["eval_tasks"] == 2 and report["dropped_tasks"][0]["matches"] == "django__django-15368"


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_decontaminate_cli(tmp_path):
    fields = {"base_commit": "0" * 40, "FAIL_TO_PASS": "[]", "PASS_TO_PASS": "[]"}
    evals, train = tmp_path / "verified.jsonl", tmp_path / "train.jsonl"
    evals.write_text(json.dumps(row("django__django-15368", ISSUE, **fields)) + "\n")
    train.write_text("".join(json.dumps(r) + "\n" for r in [
        row("gym__paraphrase-2", PARAPHRASE, repo="someone/fork", **fields),
        row("django__django-99999", "Admin changelist totals are wrong.", **fields)]))
    cli = [sys.executable, "-c", "from swehero.distill.cli import distill; distill()"]
    done = subprocess.run(cli + ["decontaminate", str(train), "--against", str(evals), "--out",
                                 str(tmp_path / "clean" / "train.jsonl")], capture_output=True, text=True, check=True)
    assert "kept 1 of 2" in done.stdout
    # A second run into the same folder against another set: each output keeps its own report.
    subprocess.run(cli + ["decontaminate", str(train), "--against", str(train), "--out",
                          str(tmp_path / "clean" / "none.jsonl")], capture_output=True, text=True, check=True)
    report = json.loads((tmp_path / "clean" / "train.decontamination.json").read_text())
    assert report["dropped_tasks"][0]["instance_id"] == "gym__paraphrase-2"
    assert json.loads((tmp_path / "clean" / "none.decontamination.json").read_text())["kept"] == 0
    assert Path(tmp_path / "clean" / "train.jsonl").read_text().count("\n") == 1
