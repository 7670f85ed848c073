"""Instance images without an engine: their names, the harness columns written for them, and the early refusal of a
task file the harness cannot grade."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swehero.agent.container import swebench_image
from swehero.agent.taskenv import EnvError, find_python
from swehero.eval.images import (ACTIVATE, MARKER_ENVIRONMENT, WheelCache, dockerfile, harness_columns,
                                 write_harness_tasks)
from swehero.rollout.tasks import load_tasks
from swehero.rollout.toy import build_toy_tasks


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_tasks(tmp_path_factory.mktemp("toy"))


def test_image_names_follow_the_harness(toy):
    from swebench.image_builder.image_spec import ImageSpec

    for task in load_tasks(str(toy)):
        name = harness_columns(task)["image"]
        assert name == swebench_image(task["instance_id"])
        assert name == ImageSpec(instance_id=task["instance_id"], dockerfile="-", namespace="swebench").name
    assert harness_columns({**task, "image": "my/own:1"})["image"] == "my/own:1"  # a row's own image wins


def test_harness_columns_make_a_test_spec_that_runs_the_test_patch(toy, tmp_path):
    from swebench.harness.constants import END_TEST_OUTPUT, START_TEST_OUTPUT, TEST_EXIT_CODE
    from swebench.harness.utils import load_swebench_dataset, make_test_spec

    out = write_harness_tasks(load_tasks(str(toy)), tmp_path / "harness.jsonl")
    task = load_swebench_dataset(str(out))[0]  # read back as the harness reads it
    spec = make_test_spec(task)
    script = spec.eval_script
    assert spec.image == swebench_image(task["instance_id"]) and spec.log_parser == "parse_log_pytest"
    assert script.index(ACTIVATE) < script.index(START_TEST_OUTPUT) < script.index(END_TEST_OUTPUT)
    assert "python -m pytest -rA -p no:cacheprovider --color=no tests/test_ops.py\n" in script
    assert TEST_EXIT_CODE in script
    assert task["test_patch"].rstrip("\n") in script
    custom = harness_columns({**task, "test_cmd": "pytest -rA -p no:cacheprovider", "install": "pip install -e ."})
    assert "pytest -rA -p no:cacheprovider tests/test_ops.py" in custom["eval_script"]
    assert "\npip install -e .\n" in custom["eval_script"]
    # a data file the test patch adds is not handed to pytest (swebench's NON_TEST_EXTS), nor reset: it is not at
    # base_commit, and naming it failed the whole checkout (swebench's scripts reset the files that are)
    data = ("diff --git a/tests/data.json b/tests/data.json\nnew file mode 100644\n--- /dev/null\n"
            "+++ b/tests/data.json\n@@ -0,0 +1 @@\n+{}\n")
    with_data = harness_columns({**task, "test_patch": task["test_patch"] + data})["eval_script"]
    assert "python -m pytest -rA -p no:cacheprovider --color=no tests/test_ops.py\n" in with_data
    assert f"git checkout {task['base_commit']} tests/test_ops.py\n" in with_data
    # a row without `version` (SWE-smith's), which the harness needs: the file written grades all the same (the
    # check before inference refused it, and told the user to write the same file again)
    from swehero.eval.harness import check_harness_dataset

    unversioned = [{k: v for k, v in t.items() if k != "version"} for t in load_tasks(str(toy))]
    out = write_harness_tasks(unversioned, tmp_path / "unversioned.jsonl")
    rows = load_swebench_dataset(str(out))
    check_harness_dataset(rows, str(out), [t["instance_id"] for t in rows])
    assert make_test_spec(rows[0]).image == swebench_image(rows[0]["instance_id"])


def test_dockerfile_puts_the_environment_before_the_repository():
    """The environment layer comes first, so tasks with the same dependencies share it (Docker's cache)."""
    text = dockerfile("swehero/base:x", ["pytest", "hypothesis==6.1"], "pip install -e .")
    lines = text.splitlines()
    assert lines[0] == "FROM swehero/base:x"
    env = next(i for i, line in enumerate(lines) if "python3 -m venv" in line)
    assert env < lines.index("COPY testbed /testbed") < next(i for i, line in enumerate(lines) if "-e ." in line)
    assert "--no-index" in lines[env] and "hypothesis==6.1" in lines[env]
    assert lines[lines.index("COPY testbed /testbed") - 1] == f"RUN echo '{ACTIVATE}' > /root/.bashrc"


def test_swebench_grader_on_a_file_without_the_harness_columns_fails_before_inference(toy, tmp_path):
    from swehero.agent.settings import AgentSettings
    from swehero.eval.pipeline import Settings, evaluate

    settings = Settings(tasks=str(toy), agent=AgentSettings(policy="gold"))
    settings.grading.grader = "swebench"
    with pytest.raises(ValueError, match=r"swehero eval images build --tasks \S+tasks.jsonl --out \S+harness.jsonl"):
        evaluate(settings, tmp_path / "run", progress=lambda _: None)
    assert not (tmp_path / "run" / "predictions.jsonl").exists()  # nothing was attempted
    fixed = write_harness_tasks(load_tasks(str(toy)), tmp_path / "harness.jsonl")
    assert all(json.loads(line)["eval_script"] for line in fixed.read_text().splitlines())
    # a harness dataset of some of the tasks: swebench would refuse the others' predictions after inference
    part = write_harness_tasks(load_tasks(str(toy))[1:], tmp_path / "part.harness.jsonl")
    settings.grading.harness.dataset = str(part)
    first = load_tasks(str(toy))[0]["instance_id"]
    with pytest.raises(ValueError, match=rf"^{part} has no row of 1 instance\(s\) to grade \({first}\)"):
        evaluate(settings, tmp_path / "run", progress=lambda _: None)
    assert not (tmp_path / "run" / "predictions.jsonl").exists()


def marker_environment(python: str) -> dict:
    return json.loads(subprocess.run([python, "-c", MARKER_ENVIRONMENT], capture_output=True, check=True).stdout)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheels_for_an_older_python_bring_what_its_markers_ask_for(tmp_path):
    """An image's Python older than the one building it: pytest there needs `exceptiongroup` and `tomli`
    (`python_version < "3.11"`), which pip's `--python-version` alone left out (it evaluates markers for the Python
    running pip), so the image's offline install failed. The wheels fetched for that Python's marker environment
    install offline into a venv of it, as the image's build installs them."""
    from packaging.markers import default_environment

    assert marker_environment(sys.executable) == default_environment()  # the script says what packaging says
    for minor in (8, 9, 10):
        try:
            older = find_python(f"3.{minor}")
            break
        except EnvError:
            continue
    else:
        pytest.skip("no Python 3.8-3.10 on PATH or installed by pyenv or uv")
    environment = marker_environment(older.executable)
    assert environment["python_version"] == older.version
    wheels = WheelCache(tmp_path / "wheels", environment).get(["pytest"])
    assert {"pytest", "exceptiongroup", "tomli"} <= {wheel.name.split("-")[0].lower() for wheel in wheels.iterdir()}
    subprocess.run([older.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    subprocess.run([str(tmp_path / "venv/bin/pip"), "install", "-q", "--no-index", "--find-links", str(wheels),
                    "pytest"], check=True)
    subprocess.run([str(tmp_path / "venv/bin/python"), "-m", "pytest", "--version"], check=True)
