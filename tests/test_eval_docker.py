"""Instance images built here and the official harness grading in them, offline, against a real Docker engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swehero.agent.container import DockerRuntime, swebench_image
from swehero.agent.settings import AgentSettings
from swehero.eval.grade import GRADES, GradingSettings, grade
from swehero.eval.images import ACTIVATE, ENV_DIR, build_images
from swehero.eval.pipeline import Settings, evaluate
from swehero.rollout.tasks import load_tasks

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def in_image(image: str, script: str) -> str:
    import docker

    return docker.from_env().containers.run(image, ["bash", "-c", script], network_mode="none",
                                            remove=True).decode()


@pytest.mark.timeout(300)
def test_images_build_command_prints_the_names_the_harness_uses(toy_images, tmp_path):
    """The CLI on the toy task file: one name per task, by the harness's rule, and nothing rebuilt (the session
    built them); each image is laid out as SWE-bench's."""
    import docker

    engine = docker.from_env()
    tasks = load_tasks(str(toy_images.parent / "tasks.jsonl"))
    names = [swebench_image(t["instance_id"]) for t in tasks]
    before = [engine.images.get(name).id for name in names]
    done = subprocess.run([sys.executable, "-m", "swehero", "eval", "images", "build", "--tasks",
                           str(toy_images.parent / "tasks.jsonl"), "--out", str(tmp_path / "h.jsonl")],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == names
    assert [engine.images.get(name).id for name in names] == before
    rows = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == names and all(r["eval_script"] for r in rows)
    task = tasks[0]
    facts = in_image(names[0], "pwd; git rev-parse HEAD; git log --all --format=%H | wc -l; git status --porcelain;"
                               " cat /root/.bashrc; command -v python || echo no-python; bash -ic 'command -v python'"
                               " 2>/dev/null").splitlines()
    assert facts == ["/testbed", task["base_commit"], "2", ACTIVATE, "no-python", f"{ENV_DIR}/bin/python"]


@pytest.mark.timeout(300)
def test_a_base_image_that_cannot_be_used_is_one_line_and_leaves_no_container(toy_images, docker_base_image, tmp_path):
    """A base without python3 was a traceback, and left its container behind in Created state; a base the engine
    does not have was pulled, offline, and failed after the wait."""
    import docker

    engine = docker.from_env()
    (tmp_path / "Dockerfile").write_text(f"FROM {docker_base_image}\nRUN rm -f /usr/bin/python3*\n")
    no_python, _ = engine.images.build(path=str(tmp_path), tag="swehero-test/no-python3:1", network_mode="none",
                                       rm=True, forcerm=True)
    before = {c.id for c in engine.containers.list(all=True)}
    try:
        for base, said in [("swehero-test/no-python3:1", "its python3 did not run"),
                           ("swehero-test/not-here:1", "not on this Docker engine")]:
            done = subprocess.run([sys.executable, "-m", "swehero", "eval", "images", "build", "--tasks",
                                   str(toy_images.parent / "tasks.jsonl"), "--base", base],
                                  capture_output=True, text=True, timeout=240)
            assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
            assert done.stderr.startswith(f"Error: base image {base}: {said}"), done.stderr
        assert {c.id for c in engine.containers.list(all=True)} == before
    finally:
        engine.images.remove(no_python.id, force=True)


SRC_LAYOUT = {
    "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
                      '[project]\nname = "srcpkg"\nversion = "0.1"\n\n'
                      '[tool.setuptools.packages.find]\nwhere = ["src"]\n',
    "src/srcpkg/__init__.py": "VALUE = 1\n",
}


def srcpkg_task(repos: Path, instance_id: str) -> dict:
    """The task of a src-layout project in `repos/toy__srcpkg`, installed in editable mode (`install` column), which
    leaves `src/srcpkg.egg-info/` untracked."""
    from agent_repos import git, write

    repo = repos / "toy__srcpkg"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    write(repo, SRC_LAYOUT)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "base")
    return {"instance_id": instance_id, "repo": "toy/srcpkg", "version": "0.1", "problem_statement": "-",
            "base_commit": git(repo, "rev-parse", "HEAD").strip(), "install": "pip install -e ."}


@pytest.mark.timeout(300)
def test_an_installed_package_imports_the_agents_code_from_the_workspace(docker_base_image, tmp_path):
    """A src-layout project installed in editable mode (`install` column) imports from anywhere in the image; in a
    rollout the repository moves to the workspace, and the install follows it through the /testbed link."""
    task = srcpkg_task(tmp_path / "repos", "toy__srcpkg-1")
    [name] = build_images([task], tmp_path / "repos", docker_base_image, progress=lambda _: None)
    assert in_image(name, "cd / && bash -ic 'python -c \"import srcpkg; print(srcpkg.VALUE)\"' 2>/dev/null") == "1\n"
    rt = DockerRuntime(name, "/workspace/toy__srcpkg__0.1", base_commit=task["base_commit"])
    try:
        rt.files.write_bytes(f"{rt.root}/src/srcpkg/__init__.py", b"VALUE = 2\n")
        seen = rt.execute("cd / && python -c 'import srcpkg; print(srcpkg.VALUE, srcpkg.__file__)'", 30)
        assert seen.output.split()[0] == "2"
    finally:
        rt.close()
    # Rebuilt for a changed recipe, the tag moves to the new image: the old one went untagged and stayed on disk.
    import docker

    old = docker.from_env().images.get(name).id
    build_images([{**task, "install": task["install"] + " && true"}], tmp_path / "repos", docker_base_image,
                 progress=lambda _: None)
    assert docker.from_env().images.get(name).id != old
    with pytest.raises(docker.errors.ImageNotFound):
        docker.from_env().images.get(old)


NEW_TEST = ("diff --git a/tests/test_new.py b/tests/test_new.py\nnew file mode 100644\n--- /dev/null\n"
            "+++ b/tests/test_new.py\n@@ -0,0 +1,2 @@\n+def test_new():\n+    assert True\n")


@pytest.mark.timeout(300)
def test_a_test_patch_adding_a_file_applies_over_a_test_the_model_edited_and_colours_stay_off(toy_images):
    """The eval script reset every file of the test patch, also the one it creates: the checkout failed as a whole,
    left the model's edit of tests/test_ops.py, and the test patch did not apply (no test ran: unresolved where
    the local grader resolved); a test file of the model's under a name the test patch creates stopped it too. A
    project's `--color=yes` hid the PASSED lines from swebench's parser."""
    import docker
    from swebench.harness.constants import END_TEST_OUTPUT, START_TEST_OUTPUT

    from swehero.eval.images import eval_script

    task = load_tasks(str(toy_images))[0]
    model = ("cat >> tests/test_ops.py <<'EOF'\n\n\ndef test_mine():\n    assert True\nEOF\n"
             "printf '[pytest]\\naddopts = --color=yes\\n' > pytest.ini\n"
             "printf 'def test_models_own():\\n    assert True\\n' > tests/test_new.py\n")  # the test patch's name
    script = eval_script({**task, "test_patch": task["test_patch"] + NEW_TEST})
    out = docker.from_env().containers.run(task["image"], ["bash", "-c", f"cd /testbed\n{model}{script}"],
                                           network_mode="none", stderr=True, remove=True).decode()  # set -x: stderr
    tests = out[out.index(START_TEST_OUTPUT):out.index(END_TEST_OUTPUT)]
    assert "PASSED tests/test_new.py::test_new" in tests and "PASSED tests/test_ops.py::test_sub" in tests, out
    assert "test_models_own" not in tests, out


def _run(harness_file: Path, out: Path, policy: str, runtime: str = "local") -> dict:
    settings = Settings(tasks=str(harness_file), repos=str(harness_file.parent / "repos"),
                        agent=AgentSettings(policy=policy, runtime=runtime))
    settings.grading.grader = "swebench"
    lines: list[str] = []
    evaluate(settings, out, progress=lines.append)
    return {"report": json.loads((out / "report.json").read_text()), "lines": lines}


@pytest.mark.timeout(900)
def test_harness_grades_oracle_gold_empty_and_noop_patches_offline(toy_images, tmp_path):
    """`eval run --runtime docker --grader swebench` on the toy tasks: the agent (oracle policy) in containers of
    the locally built images, then swebench's harness in fresh containers of the same images, nothing pulled."""
    oracle = _run(toy_images, tmp_path / "oracle", "oracle", runtime="docker")["report"]
    assert oracle["resolved"] == oracle["total"] == 4, oracle["instances"]
    assert all(i["finish_reason"] == "submitted" for i in oracle["instances"])
    for inst in oracle["instances"]:  # the harness's files are where the report points
        logs = tmp_path / "oracle" / inst["logs"]
        assert {"report.json", "test_output.txt", "run_instance.log", "eval.sh"} <= {p.name for p in logs.iterdir()}
        assert json.loads((logs / "report.json").read_text())[inst["instance_id"]]["resolved"]
        assert "Image not found locally" not in (logs / "run_instance.log").read_text()  # no pull attempted
    gold = _run(toy_images, tmp_path / "gold", "gold")
    assert gold["report"]["resolved"] == 4
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "gold" / "harness").rglob("report.json")}
    again = _run(toy_images, tmp_path / "gold", "gold")
    assert "grading (swebench): 0 prediction(s) to grade, 4 graded before" in again["lines"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "gold" / "harness").rglob("report.json")} == first
    assert len((tmp_path / "gold" / GRADES).read_text().splitlines()) == 4
    empty = _run(toy_images, tmp_path / "empty", "empty")["report"]
    assert empty["resolved"] == 0 and empty["outcomes"]["empty_patch"] == 4
    # A patch that applies but fixes nothing: graded by the harness, and not resolved.
    out, tasks = tmp_path / "noop", load_tasks(str(toy_images))
    out.mkdir()
    (out / "predictions.jsonl").write_text("".join(json.dumps(
        {"instance_id": t["instance_id"], "model_name_or_path": "noop",
         "model_patch": "diff --git a/NOTES b/NOTES\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES\n@@ -0,0 +1 @@\n"
                        "+nothing fixed\n"}) + "\n" for t in tasks))
    grade(tasks, out, GradingSettings(grader="swebench"), None, str(toy_images), progress=lambda _: None)
    graded = [json.loads(line) for line in (out / GRADES).read_text().splitlines()]
    assert len(graded) == 4 and not any(g["resolved"] for g in graded)
    assert all(g["patch_applied"] and not g["infra_failure"] for g in graded)
    assert all(g["tests_status"]["FAIL_TO_PASS"]["failure"] for g in graded)


HANGS = ("diff --git a/conftest.py b/conftest.py\nnew file mode 100644\n--- /dev/null\n+++ b/conftest.py\n"
         "@@ -0,0 +1,2 @@\n+import time\n+time.sleep(3600)\n")


@pytest.mark.timeout(600)
def test_tests_that_hang_are_stopped_at_the_harness_timeout_and_graded(toy_images, tmp_path):
    """A patch whose tests never finish: the harness stops them at its timeout with `kill` in the container (the
    base image has it) and the grade is a verdict, unresolved, not a harness error that every grading retries."""
    from swehero.eval.harness import HarnessConfig

    task = load_tasks(str(toy_images))[0]
    (tmp_path / "predictions.jsonl").write_text(json.dumps(
        {"instance_id": task["instance_id"], "model_name_or_path": "hang", "model_patch": HANGS}) + "\n")
    settings = GradingSettings(grader="swebench", harness=HarnessConfig(timeout_s=10))
    grade([task], tmp_path, settings, None, str(toy_images), progress=lambda _: None)
    [graded] = [json.loads(line) for line in (tmp_path / GRADES).read_text().splitlines()]
    assert graded["error"] == "tests_timed_out" and "retry" not in graded, graded
    assert graded["patch_applied"] and not graded["resolved"] and not graded["infra_failure"]
