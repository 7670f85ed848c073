"""Grade Python tasks without Docker: fresh clone at `base_commit`, model patch, test patch, pytest, swebench's verdict.

For machines without Docker (and for the bundled toy tasks). The steps mirror the harness: the model patch is tried
with the harness's own list of `git apply`/`patch` commands, the test patch is applied, the test files it touches run
under `pytest -rA` between the harness's start/end markers with the exit code recorded, and the verdict comes from
`swebench.harness.grading.get_eval_report` with the pytest log parser, so "resolved" means exactly what it means in
swebench (every FAIL_TO_PASS test passes and every PASS_TO_PASS test still passes). The outputs are the harness's
too: `test_output.txt` and `report.json` per instance.

The tests run the model's code unsandboxed, with this machine's Python: use it for tasks you trust to be harmless.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LocalGraderConfig:
    python: str = ""
    """Interpreter that runs the tests (it needs pytest and the project's dependencies); empty: this one."""
    test_timeout_s: float = 600.0
    """Seconds the tests of one instance may run."""


def _run(cmd: list[str] | str, cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, shell=isinstance(cmd, str))


def test_files(test_patch: str) -> list[str]:
    """Files the test patch creates or changes (the harness runs exactly these), deleted ones excluded."""
    return re.findall(r"^\+\+\+ b/(\S+)$", test_patch, flags=re.MULTILINE)


def _apply_model_patch(checkout: Path, patch_file: Path) -> tuple[bool, str]:
    from swebench.harness.run_evaluation import GIT_APPLY_CMDS

    output = ""
    for attempt, command in enumerate(GIT_APPLY_CMDS):
        if attempt:  # a failed attempt can leave partial state: restart from a clean tree, as the harness does
            _run("git checkout -- . ; git clean -fdq", checkout)
        done = _run(f"{command} {patch_file}", checkout)
        output = done.stdout + done.stderr
        if done.returncode == 0:
            return True, output
    return False, output


def test_log(checkout: Path, task: dict, model_patch: str, config: LocalGraderConfig) -> str:
    """The test output the harness would write to `test_output.txt`, with its markers."""
    from swebench.harness.constants import (
        APPLY_PATCH_FAIL,
        APPLY_PATCH_PASS,
        END_TEST_OUTPUT,
        START_TEST_OUTPUT,
        TEST_EXIT_CODE,
        TESTS_TIMEOUT,
    )

    patch_file = checkout.parent / "model.patch"
    patch_file.write_text(model_patch)
    applied, output = _apply_model_patch(checkout, patch_file)
    if not applied:
        return f"{APPLY_PATCH_FAIL}:\n{output}"
    log = f"{APPLY_PATCH_PASS}:\n{output}\n"
    test_patch = checkout.parent / "test.patch"
    test_patch.write_text(task.get("test_patch") or "")
    if task.get("test_patch"):
        done = _run(["git", "apply", "-v", str(test_patch)], checkout)
        if done.returncode != 0:
            return log + f"{APPLY_PATCH_FAIL} (test patch):\n{done.stdout}{done.stderr}"
    command = [config.python or sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider",
               *test_files(task.get("test_patch") or "")]
    try:
        done = subprocess.run(command, cwd=checkout, capture_output=True, text=True, timeout=config.test_timeout_s,
                              env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(checkout)})
    except subprocess.TimeoutExpired:
        return log + f"{START_TEST_OUTPUT}\n{TESTS_TIMEOUT}\n{END_TEST_OUTPUT}\n"
    return (log + f"+ {' '.join(command)}\n{START_TEST_OUTPUT}\n{done.stdout}{done.stderr}\n{END_TEST_OUTPUT}\n"
            f"{TEST_EXIT_CODE}: {done.returncode}\n")


def grade_instance(task: dict, prediction: dict, source_repo: Path, log_dir: Path,
                   config: LocalGraderConfig | None = None) -> dict:
    """Grade one prediction; writes `log_dir/test_output.txt` and `log_dir/report.json` (swebench's format) and
    returns the report's entry for this instance."""
    from swebench.harness.grading import get_eval_report
    from swebench.types import TestSpec

    iid = task["instance_id"]
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"grade-{iid}-") as tmp:
        checkout = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(source_repo), str(checkout)], check=True,
                       capture_output=True)
        subprocess.run(["git", "checkout", "-q", "--detach", task["base_commit"]], cwd=checkout, check=True,
                       capture_output=True)
        (log_dir / "test_output.txt").write_text(test_log(checkout, task, prediction["model_patch"] or "",
                                                          config or LocalGraderConfig()))
    spec = TestSpec(instance_id=iid, image="", eval_script_list=[], repo=task["repo"],
                    version=str(task.get("version", "")), FAIL_TO_PASS=task["FAIL_TO_PASS"],
                    PASS_TO_PASS=task["PASS_TO_PASS"], log_parser="parse_log_pytest", eval_type="pass_and_fail")
    report = get_eval_report(spec, prediction, str(log_dir / "test_output.txt"), include_tests_status=True)
    (log_dir / "report.json").write_text(json.dumps(report, indent=4))
    return report[iid]
