"""The local grader and task environments on real-layout repositories (`layout_repos.py`), built offline.

Every environment here is built with pip's index switched off (`PIP_NO_INDEX`): the test runner comes from this
interpreter's own pytest, the test-only dependency is a wheel built by the test, the projects build with an in-tree
backend. One cache per session, so each environment is built once and reused, as across runs.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from layout_repos import COLOUR, GENERATED, LAYOUTS, NOOP_PATCH, SRC, TEST_DEP, TEST_DEPENDENCY, dependency_wheel, \
    make_layout_task

from swehero.agent.local import MissingRepository
from swehero.agent.taskenv import EnvError, EnvSettings, ensure_env, find_python, install_spec
from swehero.rollout import local_grader
from swehero.rollout.local_grader import LocalGraderConfig, grade_instance

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")


@pytest.fixture(scope="session")
def layouts(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """(root with `repos/`, the layout tasks by name), the test-only dependency given where the task needs it."""
    root = tmp_path_factory.mktemp("layouts")
    wheel = dependency_wheel(root / "wheels")
    tasks = {}
    for layout in LAYOUTS:
        extra = {"install_config": {"pip_packages": [str(wheel)]}} if layout is TEST_DEP else {}
        tasks[layout.name] = make_layout_task(root, layout, **extra)
    return root, tasks


@pytest.fixture(scope="session")
def config(tmp_path_factory) -> LocalGraderConfig:
    return LocalGraderConfig(test_timeout_s=120, env=EnvSettings(cache=str(tmp_path_factory.mktemp("envs"))))


def grade(root: Path, task: dict, patch: str, config: LocalGraderConfig, out: Path) -> dict:
    prediction = {"instance_id": task["instance_id"], "model_name_or_path": "test", "model_patch": patch}
    return grade_instance(task, prediction, root / "repos" / task["repo"].replace("/", "__"), out, config)


@pytest.mark.parametrize("name", [layout.name for layout in LAYOUTS])
def test_gold_resolves_and_a_noop_patch_does_not(layouts, config, tmp_path, name):
    root, tasks = layouts
    gold = grade(root, tasks[name], tasks[name]["patch"], config, tmp_path / "gold")
    log = (tmp_path / "gold" / "test_output.txt").read_text()
    assert gold["resolved"], log
    assert gold["patch_successfully_applied"] and not gold["infra_failure"]
    assert json.loads((tmp_path / "gold" / "report.json").read_text())[tasks[name]["instance_id"]] == gold
    noop = grade(root, tasks[name], NOOP_PATCH, config, tmp_path / "noop")
    assert not noop["resolved"] and noop["patch_successfully_applied"] and not noop["infra_failure"]
    assert noop["tests_status"]["FAIL_TO_PASS"]["failure"] == tasks[name]["FAIL_TO_PASS"]


def test_the_checkout_not_an_installed_copy_is_tested(layouts, config, tmp_path):
    """The src/ layout imports only once installed: each grading installs its own checkout, so gold and a no-op
    patch grade differently although they share one environment, and the environment holds no copy of it."""
    root, tasks = layouts
    task = tasks[SRC.name]
    assert grade(root, task, task["patch"], config, tmp_path / "a")["resolved"]
    env = ensure_env(task, config.env, root / "repos" / "layout__geom")
    assert env.install == "python -m pip install -e ." or env.install is None
    site = Path(env.site_packages)
    assert not list(site.glob("geom*")) and not list(site.glob("*geom*.pth"))  # uninstalled after the build
    assert not grade(root, task, NOOP_PATCH, config, tmp_path / "b")["resolved"]


def test_forced_colour_and_quiet_configuration_cannot_hide_results(layouts, config, tmp_path):
    root, tasks = layouts
    grade(root, tasks[COLOUR.name], tasks[COLOUR.name]["patch"], config, tmp_path)
    log = (tmp_path / "test_output.txt").read_text()
    assert "PASSED tests/test_shout.py::test_word" in log and "\x1b[" not in log
    assert "--color=no" in local_grader.PYTEST_OPTIONS


def test_missing_test_dependency_is_an_infrastructure_failure(layouts, config, tmp_path):
    root, tasks = layouts
    task = {**tasks[TEST_DEP.name], "install_config": {}}
    entry = grade(root, task, task["patch"], config, tmp_path)
    assert not entry["resolved"] and entry["infra_failure"] and entry["patch_successfully_applied"]
    assert f"No module named '{TEST_DEPENDENCY}'" in entry["infra_failure_reason"]
    # a module of the checkout that the patch removes is the patch's failure, not the environment's
    deletes = ("diff --git a/stats/mean.py b/stats/mean.py\ndeleted file mode 100644\n--- a/stats/mean.py\n"
               "+++ /dev/null\n@@ -1,2 +0,0 @@\n-def mean(xs):\n-    return sum(xs) / (len(xs) + 1)\n")
    entry = grade(root, tasks[TEST_DEP.name], deletes, config, tmp_path / "deleted")
    assert entry["patch_successfully_applied"] and not entry["resolved"] and not entry["infra_failure"], entry


def test_patch_applied_says_what_happened(layouts, config, tmp_path):
    root, tasks = layouts
    task = tasks[SRC.name]
    wrong = "diff --git a/nowhere.txt b/nowhere.txt\n--- a/nowhere.txt\n+++ b/nowhere.txt\n@@ -1 +1 @@\n-a\n+b\n"
    entry = grade(root, task, wrong, config, tmp_path)
    assert not entry["patch_successfully_applied"] and not entry["resolved"]


def test_failed_install_is_an_infrastructure_failure_and_is_remembered(layouts, config, tmp_path):
    root, tasks = layouts
    task = {**tasks[SRC.name], "install_config": {"install": "python -m pip install -e . && echo broken && exit 3"}}
    entry = grade(root, task, task["patch"], config, tmp_path / "a")
    reason = entry["infra_failure_reason"]
    assert entry["infra_failure"] and not entry["resolved"] and "building the environment" in reason
    assert entry["patch_successfully_applied"]  # swebench's report says false: no test output to parse
    log = Path(reason.rsplit("log: ", 1)[1])
    assert "broken" in log.read_text()
    again = grade(root, task, task["patch"], config, tmp_path / "b")  # not built again: the failure is remembered
    assert again["infra_failure"] and "an earlier build" in again["infra_failure_reason"]
    with pytest.raises(EnvError, match="exited with 3"):
        ensure_env(task, replace(config.env, retry_failed=True), root / "repos" / "layout__geom")


def test_a_checkout_that_fails_to_install_is_an_infrastructure_failure(layouts, config, tmp_path):
    """The environment builds (at the base commit), but the patched checkout does not install."""
    root, tasks = layouts
    task = tasks[GENERATED.name]
    breaks_build = task["patch"] + ("diff --git a/pyproject.toml b/pyproject.toml\n--- a/pyproject.toml\n"
                                    "+++ b/pyproject.toml\n@@ -1 +1 @@\n-[build-system]\n+[build-system\n")
    entry = grade(root, task, breaks_build, config, tmp_path)
    assert entry["infra_failure"] and "installing the checkout" in entry["infra_failure_reason"]


def test_concurrent_requests_build_one_environment(layouts, tmp_path):
    root, tasks = layouts
    settings = EnvSettings(cache=str(tmp_path / "envs"))
    task, repo = tasks[COLOUR.name], root / "repos" / "layout__shout"
    envs, errors = [], []

    def build() -> None:
        try:
            envs.append(ensure_env(task, settings, repo))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({e.path for e in envs}) == 1
    logs = list((tmp_path / "envs").glob("*.log"))
    assert len(logs) == 1 and logs[0].read_text().count(" -m venv ") == 1


def test_environments_are_shared_when_nothing_of_the_repository_goes_in(layouts, config):
    root, tasks = layouts
    flat = ensure_env(tasks[COLOUR.name], config.env, root / "repos" / "layout__shout")
    packaged = ensure_env(tasks[SRC.name], config.env, root / "repos" / "layout__geom")
    assert Path(flat.path).name.startswith("python3.") and Path(packaged.path).name.startswith("layout__geom__1.0-")


def test_missing_repository_is_raised(layouts, tmp_path):
    _, tasks = layouts
    with pytest.raises(MissingRepository, match="no git repository for layout/geom"):
        grade_instance(tasks[SRC.name], {"instance_id": "x", "model_name_or_path": "m", "model_patch": NOOP_PATCH},
                       tmp_path / "nowhere", tmp_path / "out")


def test_resolved_only_filter_grades_with_the_given_settings_and_names_missing_repositories(layouts, config,
                                                                                          tmp_path):
    """`filter --resolved-only` grades with the grader settings it is given (here the test-only dependency comes
    from them, not from the task file); a missing repository fails it before anything is graded."""
    from swehero.data.trajectory import make_tool_call
    from swehero.distill.filters import FilterConfig, check_gradable, filter_trajectories

    root, tasks = layouts
    chosen = [{k: v for k, v in tasks[TEST_DEP.name].items() if k != "install_config"}, tasks[COLOUR.name]]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in chosen))
    (tmp_path / "repos").mkdir()
    (tmp_path / "repos" / "layout__stats").symlink_to(root / "repos" / "layout__stats")
    # an episode that submits at once (one without an assistant turn is dropped before any grading)
    submits = [{"role": "user", "content": "Fix it."},
               {"role": "assistant", "content": "", "tool_calls": [make_tool_call("c1", "finish", {"message": "ok"})]}]
    records = [{"id": t["instance_id"], "instance_id": t["instance_id"], "messages": submits, "patch": t["patch"],
                "metadata": {"exit_reason": "finished"}} for t in chosen]
    grading = replace(config, env=replace(config.env, pip_packages=tasks[TEST_DEP.name]["install_config"]
                                          ["pip_packages"]))
    cfg = FilterConfig(stage="hero", resolved_only=True, tasks=str(tmp_path / "tasks.jsonl"), grading=grading)
    with pytest.raises(MissingRepository, match="layout/shout"):
        check_gradable(records, cfg)
    assert not any("resolved" in record for record in records)
    (tmp_path / "repos" / "layout__shout").symlink_to(root / "repos" / "layout__shout")
    kept = []
    report = filter_trajectories(records, cfg, kept.append, lambda drop: None)
    assert [r["instance_id"] for r in kept] == [t["instance_id"] for t in chosen] and report["kept"] == 2


def test_install_recipe_precedence_and_python_lookup():
    task = {"instance_id": "t", "install_config": json.dumps({"python": "3.11", "install": "make install",
                                                              "pip_packages": "six iniconfig"})}
    spec = install_spec(task, EnvSettings(pip_packages=["attrs"]))
    assert (spec.python, spec.install, spec.pip_packages) == ("3.11", "make install", ["six", "iniconfig", "attrs"])
    spec = install_spec(task, EnvSettings(python="3.12", install=""))
    assert (spec.python, spec.install) == ("3.12", "")
    assert install_spec({"instance_id": "t"}, EnvSettings()).install is None
    with pytest.raises(EnvError, match="no Python 9.9 on this machine"):
        find_python("9.9")
    with pytest.raises(EnvError, match="no usable Python /nonexistent/python"):
        find_python("/nonexistent/python")
    here = find_python("")
    assert find_python(here.executable).version == here.version


def test_another_python_version_is_found_where_installed():
    here = find_python("")
    for minor in range(8, 15):
        want = f"3.{minor}"
        if want == here.version:
            continue
        try:
            other = find_python(want)
        except EnvError:
            continue
        assert other.version == want and Path(other.executable).exists() and other.prefix != here.prefix
        return
    pytest.skip("no Python 3.8-3.14 other than this one on PATH or installed by pyenv or uv")
