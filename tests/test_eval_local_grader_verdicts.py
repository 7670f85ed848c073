"""What the local grader makes of tests that fail for reasons other than the code's answers: a package that is
missing, and tests that never finish. The tests run with this interpreter (`LocalGraderConfig.python`)."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from test_eval_local_grader_harness import CODE, CONFIG, FIX, PYTEST_F2P, PYTEST_TESTS, base_repo, diff, grade, \
    task_of

from swehero.rollout.local_grader import grade_instance

TEST_FILE = "pkg/tests/test_mod.py"


def _task(repo: Path, base: str, tests: str) -> dict:
    return task_of("o/r", base, diff(repo, {TEST_FILE: tests}), [f"{TEST_FILE}::test_f"], [f"{TEST_FILE}::test_exists"])


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_a_missing_package_is_the_environments_failure_unless_the_patch_imports_it(tmp_path):
    """As swebench's harness does, a patch whose own code imports a module that is not there is unresolved; a test
    module importing a package that is not installed says the environment lacks it."""
    repo, base = base_repo(tmp_path / "repo", CODE)
    task = _task(repo, base, PYTEST_TESTS + PYTEST_F2P)
    entry = grade(repo, task, diff(repo, {"pkg/mod.py": "import numpy_not_here\n" + FIX["pkg/mod.py"]}),
                  tmp_path / "patch")
    assert entry["patch_successfully_applied"] and not entry["resolved"] and not entry["infra_failure"], entry
    needs = _task(repo, base, "import numpy_not_here\n" + PYTEST_TESTS + PYTEST_F2P)
    entry = grade(repo, needs, diff(repo, FIX), tmp_path / "tests")
    assert entry["infra_failure"] and "No module named 'numpy_not_here'" in entry["infra_failure_reason"], entry


def _processes_with(marker: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # it ended meanwhile
            continue
    return found


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_tests_that_hang_are_stopped_with_their_children_and_their_output_is_kept(tmp_path):
    """At the timeout the tests stop with every process they started, and the log keeps what pytest wrote until
    then (which test hung) before the harness's timeout line."""
    marker, started = f"4321.{os.getpid()}", tmp_path / "child-started"
    repo, base = base_repo(tmp_path / "repo", CODE)
    task = _task(repo, base, PYTEST_TESTS + PYTEST_F2P)
    hangs = diff(repo, {"pkg/mod.py": f"import subprocess\nimport time\n\n\ndef f():\n"
                                      f"    subprocess.Popen(['sleep', '{marker}'])\n"
                                      f"    open({str(started)!r}, 'w').close()\n    time.sleep(600)\n"})
    prediction = {"instance_id": task["instance_id"], "model_name_or_path": "test", "model_patch": hangs}
    entry = grade_instance(task, prediction, repo, tmp_path / "out", replace(CONFIG, test_timeout_s=15))
    left = _processes_with(marker)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert started.exists() and not left
    log = (tmp_path / "out" / "test_output.txt").read_text()
    assert not entry["resolved"] and "collected 2 items" in log and ">>>>> Tests Timed Out" in log, log
