"""Grade Python tasks without Docker: fresh clone at `base_commit`, model patch, test patch, the task's environment,
the task's tests, swebench's verdict.

For machines without Docker (and for the bundled toy tasks). The steps mirror the harness: the model patch is tried
with the harness's own list of `git apply`/`patch` commands, the files the test patch touches are reset to
`base_commit` and the test patch is applied, the checkout is installed into the task's environment
(`swehero.agent.taskenv`: a cached venv per repository and version, with a layer per checkout), and the tests run
between the harness's start/end markers with the exit code recorded: `pytest -rA` on the test files the test patch
touches (swebench's `NON_TEST_EXTS` left out), or, for a repository whose tests SWE-bench runs with its own runner
(django's `tests/runtests.py`, sympy's `bin/test`), the test command of the task's `eval_script` (swebench 5's
harness column, with swebench's test directives). The verdict comes from
`swebench.harness.grading.get_eval_report` with swebench's log parser for the task (its `log_parser` column, else
the one swebench maps its repository to, else pytest's), so "resolved" means exactly what it means in swebench
(every FAIL_TO_PASS test passes and every PASS_TO_PASS test still passes). The outputs are the harness's too:
`test_output.txt` and `report.json` per instance. Tasks in other languages (SWE-bench Multilingual) are refused.

What swebench's report cannot tell is said in the entry: `patch_successfully_applied` is whether the model patch
applied (swebench sets it only when the test log parsed), and `infra_failure` / `infra_failure_reason` mark outcomes
the environment decided, not the patch: an environment that could not be built, a checkout that did not install,
tests that could not start, a test module importing a package that neither the environment nor the checkout has, a
repository with its own test runner and a task that does not say its command.

The tests run the model's code unsandboxed: use it for tasks you trust to be harmless.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from swehero.agent.local import check_repository
from swehero.agent.taskenv import EnvError, EnvSettings, activated, ensure_env, make_layer
from swehero.errors import InputError
from swehero.process import run_captured
from swehero.rollout.tasks import TESTS, language_of
from swehero.gitdiff import diff_files, patch_files

PYTEST_OPTIONS = ("-rA", "-p", "no:cacheprovider", "--color=no")
"""After the project's own `addopts` (pytest puts those first), so these win: a `-rN` or `--color=yes` in the
project's configuration cannot change the `PASSED ...` result lines swebench's parser reads (`-q` and `-qq` leave
them as they are), while its other options (plugins, import mode) still apply."""
OWN_RUNNER_PARSERS = ("parse_log_django", "parse_log_sympy")
"""swebench's Python log parsers that read another runner's output than pytest's (django's `tests/runtests.py`,
sympy's `bin/test`): the tests of their repositories run with the harness's own command, from the task's
`eval_script`."""


@dataclass
class LocalGraderConfig:
    python: str = ""
    """An interpreter to run the tests with as it is (it needs pytest and the project installed), instead of the
    task's environment; empty: build or reuse the task's environment (`env`) and install the checkout into it."""
    test_timeout_s: float = 600.0
    """Seconds the tests of one instance may run."""
    env: EnvSettings = field(default_factory=EnvSettings)
    """How task environments are made: install command, test dependencies, Python version, cache."""


@dataclass
class GradingRun:
    """What grading one checkout produced."""

    log: str
    """`test_output.txt`, with the harness's markers."""
    patch_applied: bool
    infra_failure: str = ""
    """Why the environment, not the patch, decided the outcome; empty when it did not."""


def failure_text(error: Exception) -> str:
    """What a failed local grading says: the exception, with the tail of a failed command's stderr (`git clone`'s
    "No space left on device"), which its message leaves out."""
    text = f"{type(error).__name__}: {error}"
    stderr = error.stderr if isinstance(error, subprocess.CalledProcessError) else None
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return f"{text}: {stderr.strip()[-1000:]}" if stderr and stderr.strip() else text


def _run(cmd: list[str] | str, cwd: Path, timeout: float | None = None, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    """`cmd` with its output; at the timeout it is stopped with every process it started (`run_captured`)."""
    return run_captured(cmd, timeout, cwd=cwd, shell=isinstance(cmd, str), env=env)


def test_files(test_patch: str) -> list[str]:
    """Files the test patch creates or changes (the harness runs exactly these), deleted ones excluded."""
    return [new for _, new in diff_files(test_patch) if new is not None]


def test_directives(test_patch: str) -> list[str]:
    """The test files pytest is given: `test_files` less the data files the test patch carries (.json, .txt, ...:
    swebench's `NON_TEST_EXTS`), which pytest would report as not found (exit code 4)."""
    from swebench.harness.constants import NON_TEST_EXTS

    return [f for f in test_files(test_patch) if not f.endswith(tuple(NON_TEST_EXTS))]


def log_parser(task: dict) -> str:
    """The name, in swebench's `PARSER_REGISTRY`, of the parser that reads the task's test output: the task's own
    `log_parser` (swebench 5's harness datasets), else the one swebench maps its repository to, else pytest's. A
    `log_parser` swebench lacks is an InputError: swebench looks it up only after the tests ran."""
    from swebench.harness.log_parsers import PARSER_REGISTRY
    from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY

    if task.get("log_parser"):
        if task["log_parser"] not in PARSER_REGISTRY:
            raise InputError(f"task {task['instance_id']!r}: log_parser {task['log_parser']!r} is not one of "
                             "swebench 5.0.2's parsers (swebench.harness.log_parsers.PARSER_REGISTRY)")
        return task["log_parser"]
    parser = MAP_REPO_TO_PARSER_PY.get(task["repo"])
    return next((name for name, function in PARSER_REGISTRY.items() if function is parser), "parse_log_pytest")


def harness_test_command(task: dict) -> str:
    """The test command of the task's `eval_script` (swebench 5's harness column): the lines between the harness's
    start and end markers, the repository's runner with swebench's test directives; '' when there is none."""
    from swebench.harness.constants import END_TEST_OUTPUT, START_TEST_OUTPUT

    lines = (task.get("eval_script") or "").splitlines()
    starts = [i for i, line in enumerate(lines) if START_TEST_OUTPUT in line]
    ends = [i for i, line in enumerate(lines) if END_TEST_OUTPUT in line]
    if not starts or not ends:
        return ""
    return "\n".join(lines[starts[0] + 1:ends[-1]]).strip()


def _no_test_command(task: dict) -> str:
    return (f"{task['repo']} runs its tests with its own runner in SWE-bench (swebench reads them with "
            f"{log_parser(task)}, not with a pytest parser), and the task has no `eval_script` with the harness's "
            "test command: grade it from swebench's harness dataset (whose rows carry it) or with `--grader swebench`")


def check_task(task: dict) -> None:
    """Raise `InputError` for a task the local grader cannot grade, before its tests run: one in another language
    than Python (SWE-bench Multilingual: its tests need the toolchain of the harness's image, and pytest cannot run
    them), one without its test lists, or one whose `log_parser` swebench does not have."""
    language = task.get("language") or language_of(task)
    if language and language.lower() != "python":
        raise InputError(f"task {task['instance_id']!r} ({task['repo']}) is a {language} task: the local grader "
                         "runs Python tests only; grade it with `--grader swebench`")
    missing = [name for name in TESTS if name not in task]
    if missing:
        raise InputError(f"task {task['instance_id']!r} has no {' or '.join(missing)} test list, which grading needs")
    log_parser(task)


def check_local(tasks: list[dict]) -> None:
    """`check_task` for every task, before any is attempted or graded."""
    for task in tasks:
        check_task(task)


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
    # The chain can leave the patch applied while every command failed (`patch --forward` skips, and exits 1 on, a
    # file the checkout already has): the harness then tests it if it reverses cleanly.
    return _run(f"git apply --check --reverse {patch_file}", checkout).returncode == 0, output


def _reset_test_files(checkout: Path, base_commit: str, test_patch: str) -> None:
    """Put the files the test patch touches back as they are at `base_commit`, as the harness does before applying
    it (`git checkout <base> -- <files>`): a model patch that also edited a test file (agents add tests of their own)
    must not keep the test patch from applying. A file the test patch creates is not at `base_commit` (naming it
    would fail the checkout): a copy the model patch created is removed, so the test patch's version is the one run."""
    touched = set(patch_files(test_patch))
    if not touched:
        return
    listed = _run(["git", "ls-tree", "-r", "-z", "--name-only", base_commit, "--", *sorted(touched)], checkout)
    at_base = set(filter(None, listed.stdout.split("\0")))
    if at_base:
        _run(["git", "checkout", base_commit, "--", *sorted(at_base)], checkout)
    for created in touched - at_base:
        (checkout / created).unlink(missing_ok=True)


def _test_command(task: dict, python: str, with_pytest: bool) -> tuple[list[str], str]:
    """(the command that runs the task's tests, as the log shows it): pytest on the test files, or the harness's own
    test command, run by bash as the rest of its eval script is."""
    if with_pytest:
        command = [python, "-m", "pytest", *PYTEST_OPTIONS, *test_directives(task.get("test_patch") or "")]
        return command, " ".join(command)
    return ["bash", "-c", harness_test_command(task)], harness_test_command(task)


def run_tests(checkout: Path, task: dict, model_patch: str, config: LocalGraderConfig, source_repo: Path) -> GradingRun:
    """Apply the patches, install the checkout, run the tests; the log is what the harness would write."""
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
        return GradingRun(f"{APPLY_PATCH_FAIL}:\n{output}", patch_applied=False)
    log = f"{APPLY_PATCH_PASS}:\n{output}\n"
    test_patch = checkout.parent / "test.patch"
    test_patch.write_text(task.get("test_patch") or "")
    if task.get("test_patch"):
        _reset_test_files(checkout, task["base_commit"], task["test_patch"])
        done = _run(["git", "apply", "-v", str(test_patch)], checkout)
        if done.returncode != 0:
            return GradingRun(log + f"{APPLY_PATCH_FAIL} (test patch):\n{done.stdout}{done.stderr}", True,
                           infra_failure=f"the task's test patch does not apply: {done.stderr.strip()[-500:]}")
    with_pytest = log_parser(task) not in OWN_RUNNER_PARSERS
    if not with_pytest and not harness_test_command(task):
        return GradingRun(log, True, infra_failure=_no_test_command(task))
    base_env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "HOME": str(checkout), "NO_COLOR": "1",
                "LANG": "C.UTF-8"}
    if config.python:
        # its folder first on PATH: the `python` of a runner's shebang (`#!/usr/bin/env python`) is this one
        python, test_env = config.python, {**base_env, "PATH": f"{Path(config.python).parent}:{base_env['PATH']}"}
    else:
        try:
            layer, install_log = _install(checkout, task, config.env, source_repo)
        except EnvError as e:
            return GradingRun(log + f"{e}\n", True, infra_failure=str(e))
        log += install_log
        python, test_env = f"{layer}/bin/python", activated(str(layer), base_env)
    command, shown = _test_command(task, python, with_pytest)
    try:
        done = _run(command, checkout, timeout=config.test_timeout_s, env=test_env)
    except subprocess.TimeoutExpired as stopped:  # what the tests wrote before stopping shows where they hung
        return GradingRun(log + f"+ {shown}\n{START_TEST_OUTPUT}\n{stopped.stdout}{stopped.stderr}\n"
                                f"{TESTS_TIMEOUT}\n{END_TEST_OUTPUT}\n", True)
    out = done.stdout + done.stderr
    log += (f"+ {shown}\n{START_TEST_OUTPUT}\n{out}\n{END_TEST_OUTPUT}\n"
            f"{TEST_EXIT_CODE}: {done.returncode}\n")
    return GradingRun(log, True, infra_failure=environment_failure(out, done.returncode, checkout, model_patch,
                                                                   with_pytest))


def _install(checkout: Path, task: dict, settings: EnvSettings, source_repo: Path) -> tuple[Path, str]:
    """The task's environment with `checkout` installed into a fresh layer beside it: (layer, log lines)."""
    env = ensure_env(task, settings, source_repo)
    layer = checkout.parent / "venv"
    make_layer(env, layer)
    install = env.install_command(checkout)
    if not install:
        return layer, f"+ environment {env.path} (nothing to install)\n"
    try:
        done = _run(["bash", "-c", install], checkout, timeout=env.install_timeout_s, env=activated(str(layer)))
    except subprocess.TimeoutExpired:
        raise EnvError(f"installing the checkout (`{install}`) took more than {env.install_timeout_s:g}s") from None
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise EnvError(f"installing the checkout (`{install}`) failed with exit code {done.returncode}:\n"
                       f"{output[-3000:]}")
    return layer, f"+ environment {env.path}\n+ {install}\n{output[-3000:]}\n"


_MISSING_MODULE = re.compile(r"^E?\s*ModuleNotFoundError: No module named '([^']+)'", re.MULTILINE)


def environment_failure(output: str, exit_code: int, checkout: Path, model_patch: str, pytest: bool = True) -> str:
    """Why the environment, not the code under test, decided this test run ('' when it did not): the tests could
    not start (pytest's exit code 3: internal error, 4: usage error, e.g. an `addopts` option of a plugin that is
    not installed; a shell's 126/127 for a runner that is not executable or not found, e.g. a `python` the
    runner's shebang asks for), or the tests import a package that the environment lacks (`missing_package`)."""
    if pytest and exit_code in (3, 4):
        return f"pytest could not run the tests (exit code {exit_code}): {output.strip()[-1000:]}"
    if not pytest and exit_code in (126, 127):
        return f"the test command could not start (exit code {exit_code}): {output.strip()[-1000:]}"
    missing = missing_package(output, checkout, model_patch)
    if missing:
        return (f"ModuleNotFoundError: No module named '{missing}': the task's environment lacks a package the "
                "tests import (give it in the install recipe's pip_packages)")
    return ""


def missing_package(output: str, checkout: Path, model_patch: str) -> str:
    """The first module a `ModuleNotFoundError` in `output` names that the environment should have had ('' when
    none): neither part of the checkout (a module of the checkout that is missing is the code's doing) nor one the
    model patch's own lines import (the patch's doing: swebench calls that unresolved, not an infrastructure
    failure)."""
    tracked, imported = None, patch_imports(model_patch)
    for name in dict.fromkeys(_MISSING_MODULE.findall(output)):
        top = name.split(".")[0]
        if top in imported:
            continue
        if tracked is None:
            tracked = _run(["git", "ls-files"], checkout).stdout.split("\n")
        if not any(part in (top, f"{top}.py") for path in tracked for part in path.split("/")):
            return name
    return ""


def patch_imports(patch: str) -> set[str]:
    """Top-level names of the modules the lines a patch adds import (`import a.b, c as d`, `from a import b`;
    relative imports are the checkout's own)."""
    names = set()
    for line in patch.splitlines():
        if not line.startswith("+") or line.startswith("+++ "):
            continue
        words = line[1:].split(None, 1)
        if len(words) == 2 and words[0] == "from":
            names.add(words[1].split()[0].split(".")[0])
        elif len(words) == 2 and words[0] == "import":
            names.update(module.split()[0].split(".")[0] for module in words[1].split(",") if module.strip())
    return names - {""}


def grade_instance(task: dict, prediction: dict, source_repo: Path, log_dir: Path,
                   config: LocalGraderConfig | None = None) -> dict:
    """Grade one prediction; writes `log_dir/test_output.txt` and `log_dir/report.json` (swebench's format, with
    `patch_successfully_applied` and `infra_failure` as said above) and returns the report's entry for this
    instance. Raises `InputError` for a task it cannot grade (`check_task`) and `MissingRepository` when
    `source_repo` is not a git repository."""
    from swebench.harness.grading import get_eval_report
    from swebench.types import TestSpec

    check_task(task)
    check_repository(source_repo, task["repo"])
    iid = task["instance_id"]
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"grade-{iid}-") as tmp:
        checkout = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(source_repo), str(checkout)], check=True,
                       capture_output=True)
        subprocess.run(["git", "checkout", "-q", "--detach", task["base_commit"]], cwd=checkout, check=True,
                       capture_output=True)
        run = run_tests(checkout, task, prediction["model_patch"] or "", config or LocalGraderConfig(), source_repo)
    (log_dir / "test_output.txt").write_text(run.log)
    spec = TestSpec(instance_id=iid, image="", eval_script_list=[], repo=task["repo"],
                    version=str(task.get("version", "")), FAIL_TO_PASS=task["FAIL_TO_PASS"],
                    PASS_TO_PASS=task["PASS_TO_PASS"], log_parser=log_parser(task),
                    eval_type=task.get("eval_type") or "pass_and_fail")
    report = get_eval_report(spec, prediction, str(log_dir / "test_output.txt"), include_tests_status=True)
    entry = report[iid]
    entry["patch_successfully_applied"] = run.patch_applied
    if run.infra_failure and not entry["resolved"]:
        entry["infra_failure"], entry["infra_failure_reason"] = True, run.infra_failure
    (log_dir / "report.json").write_text(json.dumps(report, indent=4))
    return entry
