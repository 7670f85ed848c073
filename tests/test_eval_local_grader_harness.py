"""The local grader does what swebench's harness does, on small real git repositories and real test runs: the test
files are reset before the test patch, data files are not handed to pytest, repositories with their own test runner
(django, sympy) run the harness's test command and are read with swebench's parser, other languages are refused.

The tests run with this interpreter (`LocalGraderConfig.python`): no environment is built.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from agent_repos import git, write

from swehero.errors import InputError
from swehero.rollout.local_grader import LocalGraderConfig, grade_instance
from swehero.rollout.tasks import normalize

CONFIG = LocalGraderConfig(python=sys.executable, test_timeout_s=120)
CODE = {"pkg/__init__.py": "", "pkg/mod.py": "def f():\n    return 1\n"}
FIX = {"pkg/mod.py": "def f():\n    return 2\n"}
PYTEST_TESTS = "from pkg.mod import f\n\n\ndef test_exists():\n    assert f is not None\n"
PYTEST_F2P = "\n\ndef test_f():\n    assert f() == 2\n"

RUNTESTS = '''#!/usr/bin/env python
"""Stands in for Django's tests/runtests.py: runs the test modules it is named (labels relative to tests/) and
prints each result as Django's runner does: `test_name (module.Class) ... ok`."""
import argparse
import os
import sys
import unittest

options = argparse.ArgumentParser()
options.add_argument("labels", nargs="*")
options.add_argument("--verbosity")
options.add_argument("--settings")
options.add_argument("--parallel")
labels = options.parse_args().labels
sys.path.insert(1, os.getcwd())  # the checkout's package, as Django's own is installed


def cases(suite):
    for item in suite:
        yield from cases(item) if isinstance(item, unittest.TestSuite) else [item]


failed = False
for case in cases(unittest.defaultTestLoader.loadTestsFromNames(labels)):
    result = unittest.TestResult()
    case.run(result)
    status = "ok" if result.wasSuccessful() else "FAIL" if result.failures else "ERROR"
    failed |= status != "ok"
    print(f"{case._testMethodName} ({type(case).__module__}.{type(case).__qualname__}) ... {status}")
sys.exit(int(failed))
'''
DJANGO_TESTS = ("import unittest\n\nfrom pkg.mod import f\n\n\nclass FooTests(unittest.TestCase):\n"
                "    def test_exists(self):\n        self.assertIsNotNone(f)\n")
DJANGO_F2P = "\n    def test_bar(self):\n        self.assertEqual(f(), 2)\n"
DJANGO_FILES = {**CODE, "tests/__init__.py": "", "tests/runtests.py": RUNTESTS, "tests/foo/__init__.py": "",
                "tests/foo/tests.py": DJANGO_TESTS}


def base_repo(path: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A git repository at `path` with `files` committed (a `tests/runtests.py` executable, as Django's is)."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    write(path, files)
    for runner in path.glob("tests/runtests.py"):
        runner.chmod(0o755)
    git(path, "add", "-A")
    git(path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    return path, git(path, "rev-parse", "HEAD").strip()


def diff(repo: Path, changes: dict[str, str]) -> str:
    """The patch that makes `changes` to the base commit (the repository is left as it was)."""
    write(repo, changes)
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached")
    git(repo, "reset", "-q", "--hard")
    git(repo, "clean", "-fdq")
    return patch


def grade(repo: Path, task: dict, patch: str, out: Path) -> dict:
    prediction = {"instance_id": task["instance_id"], "model_name_or_path": "test", "model_patch": patch}
    return grade_instance(task, prediction, repo, out, CONFIG)


def task_of(repo_name: str, base: str, test_patch: str, f2p: list[str], p2p: list[str], **row) -> dict:
    return {"instance_id": f"{repo_name.replace('/', '__')}-1", "repo": repo_name, "base_commit": base,
            "version": "1.0", "test_patch": test_patch, "FAIL_TO_PASS": f2p, "PASS_TO_PASS": p2p, **row}


def test_test_files_the_model_patch_edited_are_reset_before_the_test_patch(tmp_path):
    """The model fixes the code and, as agents do, adds tests of its own to the test file the test patch changes
    and to the one it creates: the test patch still applies, and its tests are the ones run."""
    repo, base = base_repo(tmp_path / "repo", {**CODE, "pkg/tests/test_mod.py": PYTEST_TESTS})
    test_patch = diff(repo, {"pkg/tests/test_mod.py": PYTEST_TESTS + PYTEST_F2P,
                             "pkg/tests/test_new.py": "from pkg.mod import f\n\n\ndef test_new():\n"
                                                      "    assert f() > 1\n"})
    model = diff(repo, {**FIX, "pkg/tests/test_mod.py": PYTEST_TESTS + "\n\ndef test_mine():\n    assert True\n",
                        "pkg/tests/test_new.py": "def test_model_version():\n    assert False\n"})
    task = task_of("o/r", base, test_patch, ["pkg/tests/test_mod.py::test_f", "pkg/tests/test_new.py::test_new"],
                   ["pkg/tests/test_mod.py::test_exists"])
    entry = grade(repo, task, model, tmp_path / "out")
    log = (tmp_path / "out" / "test_output.txt").read_text()
    assert entry["resolved"] and not entry["infra_failure"], log
    assert "test_mine" not in log and "test_model_version" not in log


def test_a_patch_whose_part_is_already_there_applies_as_in_the_harness(tmp_path):
    """Every command of the harness's chain fails on a patch one file of which the checkout already has (`patch
    --forward` skips it and exits 1 with the rest applied); the harness then finds the patch reverses cleanly and
    tests it: so does the local grader. One that neither applies nor reverses is still no patch."""
    repo, base = base_repo(tmp_path / "repo", {**CODE, "pkg/extra.py": "a = 1\n",
                                               "pkg/tests/test_mod.py": PYTEST_TESTS})
    test_patch = diff(repo, {"pkg/tests/test_mod.py": PYTEST_TESTS + PYTEST_F2P})
    task = task_of("o/r", base, test_patch, ["pkg/tests/test_mod.py::test_f"], ["pkg/tests/test_mod.py::test_exists"])
    there = diff(repo, FIX) + "diff --git a/pkg/extra.py b/pkg/extra.py\n--- a/pkg/extra.py\n+++ b/pkg/extra.py\n"
    entry = grade(repo, task, there + "@@ -1 +1 @@\n-a = 0\n+a = 1\n", tmp_path / "out")
    assert entry["resolved"] and entry["patch_successfully_applied"], (tmp_path / "out" / "test_output.txt").read_text()
    entry = grade(repo, task, there + "@@ -1 +1 @@\n-a = 0\n+a = 2\n", tmp_path / "out2")
    assert not entry["resolved"] and not entry["patch_successfully_applied"]


def test_data_files_of_the_test_patch_are_not_run(tmp_path):
    """swebench leaves `NON_TEST_EXTS` out of its test directives; given to pytest, they are not found (exit 4).
    astropy's tests are read with swebench's parser for astropy (`parse_log_pytest_v2`)."""
    repo, base = base_repo(tmp_path / "repo", CODE)
    test_patch = diff(repo, {"pkg/tests/test_mod.py": PYTEST_TESTS + PYTEST_F2P,
                             "pkg/tests/data/expected.json": "{}\n", "pkg/tests/data/notes.txt": "notes\n"})
    task = task_of("astropy/astropy", base, test_patch, ["pkg/tests/test_mod.py::test_f"], [])
    entry = grade(repo, task, diff(repo, FIX), tmp_path / "out")
    log = (tmp_path / "out" / "test_output.txt").read_text()
    assert entry["resolved"] and not entry["infra_failure"], log
    command = next(line for line in log.splitlines() if " -m pytest " in line)
    assert command.endswith(" pkg/tests/test_mod.py") and "--color=no" in command


def django_task(tmp_path: Path, **row) -> tuple[Path, dict]:
    repo, base = base_repo(tmp_path / "django", DJANGO_FILES)
    test_patch = diff(repo, {"tests/foo/tests.py": DJANGO_TESTS + DJANGO_F2P})
    return repo, task_of("django/django", base, test_patch, ["test_bar (foo.tests.FooTests)"],
                         ["test_exists (foo.tests.FooTests)"], **row)


def harness_eval_script(base: str, test_patch: str, command: str) -> str:
    """An `eval_script` as swebench 5's harness datasets carry it for django (the test patch in a here-document)."""
    return (f"#!/bin/bash\nset -uxo pipefail\nsource /opt/miniconda3/bin/activate\nconda activate testbed\n"
            f"cd /testbed\ngit checkout {base} tests/foo/tests.py\ngit apply -v - <<'EOF_114329324912'\n"
            f"{test_patch}\nEOF_114329324912\n: '>>>>> Start Test Output'\n{command}\n"
            f": '>>>>> End Test Output'\ngit checkout {base} tests/foo/tests.py\n")


def test_django_runs_the_harness_test_command_and_is_read_with_its_parser(tmp_path):
    repo, task = django_task(tmp_path)
    command = "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 foo.tests"
    task |= {"eval_script": harness_eval_script(task["base_commit"], task["test_patch"], command),
             "log_parser": "parse_log_django", "eval_type": "pass_and_fail"}
    gold = grade(repo, task, diff(repo, FIX), tmp_path / "gold")
    log = (tmp_path / "gold" / "test_output.txt").read_text()
    assert gold["resolved"] and not gold["infra_failure"], log
    assert f"+ {command}\n" in log and "test_bar (foo.tests.FooTests) ... ok" in log
    noop = grade(repo, task, diff(repo, {"README.md": "more\n"}), tmp_path / "noop")
    assert not noop["resolved"] and not noop["infra_failure"] and noop["patch_successfully_applied"]
    assert noop["tests_status"]["FAIL_TO_PASS"]["failure"] == task["FAIL_TO_PASS"]
    assert noop["tests_status"]["PASS_TO_PASS"]["success"] == task["PASS_TO_PASS"]


@pytest.mark.parametrize("repo_name, parser", [("django/django", "parse_log_django"),
                                               ("sympy/sympy", "parse_log_sympy")])
def test_own_runner_without_the_harness_command_is_an_infrastructure_failure(tmp_path, repo_name, parser):
    """A SWE-bench Verified row without swebench 5's `eval_script`: pytest cannot produce what the repository's
    parser (swebench's, by repository) reads, so the entry says why instead of a silent 'unresolved'."""
    repo, task = django_task(tmp_path)
    task["repo"] = repo_name
    entry = grade(repo, task, diff(repo, FIX), tmp_path / "out")
    assert not entry["resolved"] and entry["infra_failure"] and entry["patch_successfully_applied"]
    assert parser in entry["infra_failure_reason"] and "--grader swebench" in entry["infra_failure_reason"]


def test_a_test_command_that_cannot_start_is_an_infrastructure_failure(tmp_path):
    repo, task = django_task(tmp_path)
    task["eval_script"] = harness_eval_script(task["base_commit"], task["test_patch"], "./tests/no_runner.py foo")
    entry = grade(repo, task, diff(repo, FIX), tmp_path / "out")
    assert entry["infra_failure"] and "could not start (exit code 127)" in entry["infra_failure_reason"]


@pytest.mark.parametrize("loaded", [True, False])
def test_tasks_in_other_languages_are_refused(tmp_path, loaded):
    """A SWE-bench Multilingual row, as the task loader gives it (with its `language`) or as it is (the language
    from its log parser), stops grading with an input error instead of an infrastructure failure."""
    repo, base = base_repo(tmp_path / "repo", {"go.mod": "module x\n", "x.go": "package x\n"})
    test_patch = diff(repo, {"x_test.go": 'package x\nimport "testing"\nfunc TestF(t *testing.T) {}\n'})
    task = {**task_of("gohugoio/hugo", base, test_patch, ["TestF"], []), "log_parser": "parse_log_gotest"}
    if loaded:
        task = normalize({**task, "problem_statement": "p"})
    with pytest.raises(InputError, match=r"'gohugoio__hugo-1' \(gohugoio/hugo\) is a Go task.*--grader swebench"):
        grade(repo, task, "", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_eval_of_tasks_in_other_languages_with_the_local_grader_stops_before_inference(tmp_path):
    from swehero.agent.settings import AgentSettings
    from swehero.eval.pipeline import Settings, evaluate

    row = {**task_of("gohugoio/hugo", "abc", "", ["TestF"], []), "problem_statement": "p",
           "log_parser": "parse_log_gotest", "patch": ""}
    (tmp_path / "tasks.jsonl").write_text(json.dumps(row) + "\n")
    settings = Settings(tasks=str(tmp_path / "tasks.jsonl"), agent=AgentSettings(policy="gold"))
    settings.grading.grader = "local"
    with pytest.raises(InputError, match="is a Go task"):
        evaluate(settings, tmp_path / "run", progress=lambda _: None)
    assert not (tmp_path / "run" / "predictions.jsonl").exists()  # nothing was attempted


def test_a_log_parser_swebench_lacks_is_refused_before_the_tests_run(tmp_path):
    repo, base = base_repo(tmp_path / "repo", {**CODE, "tests/test_mod.py": PYTEST_TESTS})
    test_patch = diff(repo, {"tests/test_mod.py": PYTEST_TESTS + PYTEST_F2P})
    task = task_of("o/r", base, test_patch, ["tests/test_mod.py::test_f"], [], log_parser="parse_log_pytest_v3")
    with pytest.raises(InputError, match="task 'o__r-1': log_parser 'parse_log_pytest_v3' is not one of swebench"):
        grade(repo, task, diff(repo, FIX), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_task_without_its_test_lists_is_refused_before_the_tests_run(tmp_path):
    """A test list stored as an empty string (a task set without tests, for distillation) loads without the column,
    and grading it, as the `resolved_only` filter would, stops instead of resolving any patch against no tests."""
    repo, base = base_repo(tmp_path / "repo", {**CODE, "tests/test_mod.py": PYTEST_TESTS})
    test_patch = diff(repo, {"tests/test_mod.py": PYTEST_TESTS + PYTEST_F2P})
    task = normalize({**task_of("o/r", base, test_patch, [], []), "FAIL_TO_PASS": "", "problem_statement": "p"})
    with pytest.raises(InputError, match="task 'o__r-1' has no FAIL_TO_PASS test list, which grading needs"):
        grade(repo, task, diff(repo, FIX), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _touching(*paths: str) -> str:
    return "".join(f"diff --git a/{p} b/{p}\n--- a/{p}\n+++ b/{p}\n@@ -1 +1 @@\n-a\n+b\n" for p in paths)


@pytest.mark.parametrize("repo_name, patch, test_patch, log_parser, language", [
    # repositories swebench does not know: the test patch's files decide, then the patch's
    ("bokeh/bokeh", _touching("bokehjs/src/lib/plot.ts", "bokehjs/src/lib/glyph.ts", "src/bokeh/plots.py"),
     _touching("tests/unit/bokeh/models/test_plots.py"), "", "Python"),
    ("pandas-dev/pandas", _touching("pandas/_libs/src/tokenizer.c", "pandas/_libs/include/tokenizer.h", "doc/v2.rst"),
     _touching("pandas/tests/io/parser/test_c_parser_only.py"), "", "Python"),
    ("o/r", _touching("src/a.ts", "src/b.py"), "", "", "TypeScript"),
    # a test file's name git quotes (non-ASCII, or a space): read as the file it is
    ("o/r", _touching("src/a.ts"), _touching('"tests/t\\303\\274 x.py"').replace('a/"', '"a/').replace('b/"', '"b/'),
     "", "Python"),
    # SWE-bench Multilingual rows: their log parser's family, C++ and TypeScript told by the files
    ("gohugoio/hugo", _touching("hugolib/site.go"), _touching("hugolib/site_test.go", "testdata/x.py"),
     "parse_log_gotest", "Go"),
    ("fmtlib/fmt", _touching("include/fmt/format.h"), _touching("test/format-test.cc"), "parse_log_ctest", "C++"),
    ("vuejs/core", _touching("packages/a.ts"), _touching("packages/a.spec.ts"), "parse_log_vitest", "TypeScript"),
])
def test_the_language_is_the_one_the_graded_tests_are_in(repo_name, patch, test_patch, log_parser, language):
    """A Python library whose fix touches its C extension or TypeScript client is a Python task: the local grader
    takes it, and the agent is told Python."""
    from swehero.rollout.local_grader import check_local

    task = normalize({**task_of(repo_name, "abc", test_patch, ["t"], [], patch=patch, problem_statement="p"),
                      **({"log_parser": log_parser} if log_parser else {})})
    assert task["language"] == language
    if language == "Python":
        check_local([task])
    else:
        with pytest.raises(InputError, match=re.escape(f"is a {language} task")):
            check_local([task])
