"""`swehero eval images build`: SWE-bench-shaped instance images built here, from a base image and a task file.

An image is laid out as SWE-bench's Python instance images are: the repository at /testbed at `base_commit`, with
only that commit and its ancestors (what swebench 5's `git_clone_timesafe` leaves), the task's dependencies in an
environment named `testbed` that `/root/.bashrc` activates (SWE-bench: `conda activate testbed`; here a venv at
/opt/venvs/testbed, since conda cannot be had offline), WORKDIR /testbed, and the name the harness and the agent
look the instance up by (`swehero.agent.container.swebench_image`, or the row's own `image`).

Nothing is downloaded inside a build (it runs with `--network none`): the dependencies are fetched on this machine
with its own pip configuration into the build context and installed with `--no-index`. The environment layer comes
before the repository, so Docker's layer cache shares it among tasks with the same dependencies (SWE-bench's
environment image tier). Optional task columns, named after SWE-bench's install specs:

- `pip_packages`: requirement strings (a list, or one string split at spaces); default `pytest`.
- `install`: a shell command run in /testbed with the environment active (e.g. `pip install -e .`); pip then finds
  only the fetched wheels (`pip_packages`, plus setuptools and wheel for builds).
- `test_cmd`: the test command of the eval script, followed by the test files (not the data files); default `python -m pytest -rA`
  (as the local grader, so both graders run the same tests).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from swehero.agent.container import swebench_image
from swehero.agent.docker_host import remove_container
from swehero.agent.runtime import prepare_checkout
from swehero.errors import InputError, MissingInput, ProcessFailed
from swehero.gitdiff import diff_files
from swehero.rollout.local_grader import PYTEST_OPTIONS, test_directives  # what both graders run

ENV_DIR = "/opt/venvs/testbed"
ACTIVATE = f"source {ENV_DIR}/bin/activate"
"""How the images activate their environment: in `/root/.bashrc` and at the top of the eval script (SWE-bench's:
`source /opt/miniconda3/bin/activate && conda activate testbed`)."""
DEFAULT_PACKAGES = ("pytest",)
DEFAULT_TEST_CMD = " ".join(("python -m pytest", *PYTEST_OPTIONS))
"""The local grader's pytest options: a project's `--color=yes` would hide the `PASSED` lines from swebench's
parser."""
BUILD_PACKAGES = ("setuptools", "wheel")
"""Fetched too when a task has an `install` command: pip's isolated builds need them."""
RECIPE_LABEL = "swehero.recipe"


def image_name(task: dict) -> str:
    """The image a task runs in: its own `image` column, else SWE-bench's name for its instance."""
    return task.get("image") or swebench_image(task["instance_id"])


def pip_packages(task: dict) -> list[str]:
    packages = task.get("pip_packages")
    if packages is None:
        return list(DEFAULT_PACKAGES)
    return packages.split() if isinstance(packages, str) else [str(p) for p in packages]


def eval_script(task: dict) -> str:
    """The harness's `eval_script` column for a task of these images, shaped as swebench's Python eval scripts:
    activate, show the tree, reset and apply the test patch, run the test files between the harness's markers,
    reset the test files."""
    from swebench.harness.constants import END_TEST_OUTPUT, START_TEST_OUTPUT
    from swebench.utils import generate_heredoc_delimiter, get_modified_files

    base, test_patch = task["base_commit"], task.get("test_patch") or ""
    # reset: the test files that exist at base_commit, as swebench's scripts reset them; naming one the test patch
    # creates failed the whole checkout, and the test patch then did not apply over a test the model had edited
    files = " ".join(shlex.quote(f) for f in get_modified_files(test_patch))
    # a copy of a file the test patch creates (a test the model wrote under that name) would stop it from applying:
    # removed, as the local grader removes it (swebench's own scripts leave it)
    created = " ".join(shlex.quote(new) for old, new in diff_files(test_patch) if old is None and new is not None)
    tests = " ".join(shlex.quote(f) for f in test_directives(test_patch))
    delimiter = generate_heredoc_delimiter(test_patch)
    lines = ["#!/bin/bash", "set -uxo pipefail", ACTIVATE, "cd /testbed",
             "git config --global --add safe.directory /testbed", "git status", "git show",
             f"git -c core.fileMode=false diff {base}"]
    if task.get("install"):
        lines.append(task["install"])
    lines += [f"git checkout {base} {files}", *([f"rm -f -- {created}"] if created else []),
              f"git apply -v - <<'{delimiter}'", test_patch.rstrip("\n"), delimiter,
              f": '{START_TEST_OUTPUT}'", f"{task.get('test_cmd') or DEFAULT_TEST_CMD} {tests}",
              f": '{END_TEST_OUTPUT}'", f"git checkout {base} {files}"]
    return "\n".join(lines) + "\n"


def harness_columns(task: dict) -> dict:
    """The columns swebench 5's `make_test_spec` needs for a task of these images: `version` too, which rows of
    other sources (SWE-smith's) lack and nothing here needs (the harness reads it; any value names these images)."""
    return {"image": image_name(task), "eval_script": eval_script(task), "log_parser": "parse_log_pytest",
            "eval_type": "pass_and_fail", "version": task.get("version") or "0"}


def dockerfile(base: str, packages: list[str], install: str) -> str:
    steps = [f"FROM {base}", "COPY wheels /tmp/wheels",
             f"RUN python3 -m venv {ENV_DIR} && {ENV_DIR}/bin/pip install -q --no-index --find-links /tmp/wheels "
             + " ".join(shlex.quote(p) for p in packages),
             f"RUN echo {shlex.quote(ACTIVATE)} > /root/.bashrc",
             "COPY testbed /testbed", "WORKDIR /testbed"]
    if install:
        script = f"{ACTIVATE} && PIP_NO_INDEX=1 PIP_FIND_LINKS=/tmp/wheels {install}"
        steps.append(f"RUN bash -c {shlex.quote(script)}")
    steps.append("RUN rm -rf /tmp/wheels")
    return "\n".join(steps) + "\n"


MARKER_ENVIRONMENT = """\
import json, os, platform, sys
v = sys.implementation.version
release = "" if v.releaselevel == "final" else v.releaselevel[0] + str(v.serial)
print(json.dumps({"implementation_name": sys.implementation.name,
                  "implementation_version": "%d.%d.%d%s" % (v.major, v.minor, v.micro, release),
                  "os_name": os.name, "platform_machine": platform.machine(), "platform_release": platform.release(),
                  "platform_system": platform.system(), "platform_version": platform.version(),
                  "python_full_version": platform.python_version(),
                  "platform_python_implementation": platform.python_implementation(),
                  "python_version": "%d.%d" % sys.version_info[:2], "sys_platform": sys.platform}))
"""
"""Prints the PEP 508 marker environment of the python3 that runs it (as `packaging.markers.default_environment`)."""
PIP_FOR_TARGET = """\
import json, runpy, sys
from pip._vendor.packaging import markers
target = json.loads(sys.argv.pop(1))
markers.default_environment = lambda: dict(target)
sys.argv[0] = "pip"
runpy.run_module("pip", run_name="__main__", alter_sys=True)
"""
"""pip, with requirement markers evaluated in the environment given as its first argument. `--python-version`
alone picks wheels and checks Requires-Python for the target, but evaluates markers for the Python running pip
(pypa/pip#11010): pytest for a 3.9 image would come without `exceptiongroup` and `tomli`, and the offline install
in the image fail. pip has no option for it; packaging's `default_environment` is what its marker evaluation reads."""


class WheelCache:
    """Wheels fetched with this machine's pip for the images' Python (`environment`: its marker environment, as
    `MARKER_ENVIRONMENT` prints it), once per distinct package list."""

    def __init__(self, folder: Path, environment: dict[str, str]) -> None:
        self.folder, self.environment = folder, environment

    def get(self, packages: list[str]) -> Path:
        key = hashlib.sha256(json.dumps([self.environment, sorted(packages)]).encode()).hexdigest()[:16]
        dest = self.folder / key
        if not dest.exists():
            tmp = self.folder / f"{key}.partial"
            python = self.environment["python_version"]
            done = subprocess.run([sys.executable, "-c", PIP_FOR_TARGET, json.dumps(self.environment), "download",
                                   "-q", "-d", str(tmp), "--only-binary=:all:", "--python-version", python, *packages],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise ProcessFailed(f"fetching {' '.join(packages)} for Python {python} failed: "
                                   f"{done.stderr.strip()[-2000:]}")
            tmp.rename(dest)
        return dest


def build_image(engine, task: dict, source_repo: Path, base: str, wheels: WheelCache, work: Path) -> str:
    """Build one task's image (skipped when an image of the same recipe exists); returns its name."""
    import docker

    name = image_name(task)
    packages = pip_packages(task) + (list(BUILD_PACKAGES) if task.get("install") else [])
    recipe = dockerfile(base, packages, task.get("install") or "")
    base_id = engine.images.get(base).id
    digest = hashlib.sha256(json.dumps([recipe, base_id, task["base_commit"]]).encode()).hexdigest()[:16]
    try:
        earlier = engine.images.get(name)
    except docker.errors.ImageNotFound:
        earlier = None
    if earlier is not None and earlier.labels.get(RECIPE_LABEL) == digest:
        return name
    context = Path(tempfile.mkdtemp(prefix="image-", dir=work))
    # hard links keep the wheels' bytes and times identical from task to task, so the environment layer is cached
    subprocess.run(["cp", "-al", str(wheels.get(packages)), str(context / "wheels")], check=True)
    prepare_checkout(source_repo, task["base_commit"], context / "testbed", work / "git-cache")
    (context / "Dockerfile").write_text(recipe + f"LABEL {RECIPE_LABEL}={digest}\n")
    try:
        engine.images.build(path=str(context), tag=name, rm=True, forcerm=True, network_mode="none")
    except docker.errors.BuildError as e:
        log = "".join(line.get("stream", "") or line.get("error", "") for line in e.build_log)
        raise ProcessFailed(f"building {name} for {task['instance_id']} failed: {e.msg}\n{log[-3000:]}") from None
    finally:
        subprocess.run(["rm", "-rf", str(context)], check=False)
    if earlier is not None:  # the tag moved to the new image: the old one would stay on disk, untagged, for good
        try:
            engine.images.remove(earlier.id)
        except docker.errors.APIError:  # a container still uses it (a rollout running in it)
            pass
    return name


def image_environment(engine, base: str) -> dict[str, str]:
    """The marker environment of the base image's python3 (the wheels are fetched for it); an InputError naming
    the image when it is not on the engine or has no python3 that runs. The container goes in any case (`remove=True`
    left one whose start failed, in Created state)."""
    import docker

    try:
        engine.images.get(base)  # else `containers.run` tries to pull it, and fails offline after a wait
    except docker.errors.ImageNotFound:
        raise InputError(f"base image {base}: not on this Docker engine (build or load it first; empty: swehero's "
                         "own)") from None
    name = f"swehero-env-{uuid.uuid4().hex[:12]}"
    try:
        out = engine.containers.run(base, ["python3", "-c", MARKER_ENVIRONMENT], name=name, network_mode="none")
        return json.loads(out)
    except (docker.errors.APIError, docker.errors.ContainerError, ValueError) as e:
        raise InputError(f"base image {base}: its python3 did not run ({str(e).strip()[-500:]}); a base needs bash, "
                         "git, kill and python3 with venv") from None
    finally:
        remove_container(engine, name)


def build_images(tasks: list[dict], repos: Path, base: str = "", progress=print) -> list[str]:
    """Build the image of every task (its repository from `repos/<owner>__<name>`); returns their names in task
    order. `base`: an image with bash, git, kill (swebench stops a hung test with it) and python3 with venv; empty:
    swehero's own (built once if missing)."""
    from swehero.eval.engine import ensure_base_image, ensure_engine
    from swehero.rollout.tasks import repo_dir

    engine = ensure_engine()
    base = base or ensure_base_image(engine, progress)
    missing = sorted({t["repo"] for t in tasks if not repo_dir(repos, t["repo"]).is_dir()})
    if missing:
        raise MissingInput(f"no repository folder for {', '.join(missing)} under {repos} (expected "
                           f"{repo_dir(repos, missing[0])}); pass --repos")
    names = []
    with tempfile.TemporaryDirectory(prefix="swehero-images-") as tmp:
        wheels = WheelCache(Path(tmp) / "wheels", image_environment(engine, base))
        wheels.folder.mkdir()
        for i, task in enumerate(tasks, 1):
            name = build_image(engine, task, repo_dir(repos, task["repo"]), base, wheels, Path(tmp))
            progress(f"[{i}/{len(tasks)}] {task['instance_id']}: {name}")
            names.append(name)
    return names


def write_harness_tasks(tasks: list[dict], out: Path) -> Path:
    """`tasks` with the harness's columns added, as a task file `--grader swebench` can grade."""
    Path(out).write_text("".join(json.dumps({**task, **harness_columns(task)}) + "\n" for task in tasks))
    return Path(out)


def build_command(tasks_file: Path, repos: Path | None, base: str, out: Path | None, say) -> list[str]:
    """`swehero eval images build`: one image per task of `tasks_file`, their names returned; with `out`, the
    tasks with the harness's columns written there. Progress goes to `say`."""
    from swehero.rollout.tasks import load_tasks

    tasks = load_tasks(str(tasks_file))
    names = build_images(tasks, repos or Path(tasks_file).parent / "repos", base, progress=say)
    if out:
        say(f"wrote {write_harness_tasks(tasks, out)}")
    return names
