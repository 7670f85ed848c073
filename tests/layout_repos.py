"""Small real-layout Python repositories as SWE-bench tasks, for task environments, the local grader and the sandbox.

Each is a git repository with a base commit holding a bug, and a fix commit split, as SWE-bench does, into the gold
`patch` (source files) and the `test_patch` (test files). The layouts are the ones that broke grading on real
projects: a `src/` package (importable only once installed), a test-only dependency (a wheel built here, given in
the task's `install_config`), a pytest configuration forcing `-q --color=yes`, and a version module generated at
install time. They build with `layout_backend.py` (in-tree), so nothing is downloaded.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import layout_backend
from agent_repos import git, write

NOOP_PATCH = "diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1,2 @@\n # demo\n+More.\n"
"""Applies to every layout repository and changes nothing the tests see."""
TEST_DEPENDENCY = "zeta_fixtures"


def _pyproject(name: str, extra: str = "") -> str:
    return (f'[build-system]\nrequires = []\nbuild-backend = "layout_backend"\nbackend-path = ["_build"]\n\n'
            f'[project]\nname = "{name}"\nversion = "1.0"\n{extra}')


@dataclass
class Layout:
    name: str
    base: dict[str, str]
    """Files of the base commit (the project with the bug)."""
    fix: dict[str, str]
    """Source files the fix rewrites: the gold patch."""
    tests: dict[str, str]
    """Test files the fix rewrites: the test patch."""
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    packaged: bool = True
    """Built by the in-tree backend (else a folder of modules, run from the repository root)."""


SRC = Layout(
    name="geom",
    base={"src/geom/__init__.py": "from .shapes import area\n",
          "src/geom/shapes.py": "def area(w, h):\n    return w + h\n",
          "tests/test_shapes.py": "from geom import area\n\n\ndef test_area_of_nothing():\n"
                                  "    assert area(0, 0) == 0\n"},
    fix={"src/geom/shapes.py": "def area(w, h):\n    return w * h\n"},
    tests={"tests/test_shapes.py": "from geom import area\n\n\ndef test_area_of_nothing():\n    assert area(0, 0) == 0"
                                   "\n\n\ndef test_area():\n    assert area(2, 3) == 6\n"},
    fail_to_pass=["tests/test_shapes.py::test_area"], pass_to_pass=["tests/test_shapes.py::test_area_of_nothing"],
)
TEST_DEP = Layout(
    name="stats",
    base={"stats/__init__.py": "", "stats/mean.py": "def mean(xs):\n    return sum(xs) / (len(xs) + 1)\n",
          "tests/test_mean.py": f"from {TEST_DEPENDENCY} import ONES\nfrom stats.mean import mean\n\n\n"
                                "def test_ones():\n    assert mean(ONES) == 1\n"},
    fix={"stats/mean.py": "def mean(xs):\n    return sum(xs) / len(xs)\n"},
    tests={"tests/test_mean.py": f"from {TEST_DEPENDENCY} import ONES, SAMPLE\nfrom stats.mean import mean\n\n\n"
                                 "def test_ones():\n    assert mean(ONES) == 1\n\n\n"
                                 "def test_sample():\n    assert mean(SAMPLE) == 2\n"},
    fail_to_pass=["tests/test_mean.py::test_sample", "tests/test_mean.py::test_ones"], pass_to_pass=[],
    packaged=False,
)
COLOUR = Layout(
    name="shout",
    base={"pytest.ini": "[pytest]\naddopts = -q --color=yes -rN\n",
          "shout.py": "def shout(text):\n    return text.lower() + '!'\n",
          "tests/test_shout.py": "from shout import shout\n\n\ndef test_empty():\n    assert shout('') == '!'\n"},
    fix={"shout.py": "def shout(text):\n    return text.upper() + '!'\n"},
    tests={"tests/test_shout.py": "from shout import shout\n\n\ndef test_empty():\n    assert shout('') == '!'\n\n\n"
                                  "def test_word():\n    assert shout('hi') == 'HI!'\n"},
    fail_to_pass=["tests/test_shout.py::test_word"], pass_to_pass=["tests/test_shout.py::test_empty"],
    packaged=False,
)
GENERATED = Layout(
    name="vers",
    base={"src/vers/__init__.py": "from ._version import version\n\n\ndef major(v):\n    return int(v.split('.')[1])\n",
          "tests/test_vers.py": "import vers\n\n\ndef test_version():\n    assert vers.version == '1.0'\n"},
    fix={"src/vers/__init__.py": "from ._version import version\n\n\ndef major(v):\n    return int(v.split('.')[0])\n"},
    tests={"tests/test_vers.py": "import vers\n\n\ndef test_version():\n    assert vers.version == '1.0'\n\n\n"
                                 "def test_major():\n    assert vers.major('2.5.1') == 2\n"},
    fail_to_pass=["tests/test_vers.py::test_major"], pass_to_pass=["tests/test_vers.py::test_version"],
)
LAYOUTS = [SRC, TEST_DEP, COLOUR, GENERATED]


def dependency_wheel(dest: Path) -> Path:
    """The test-only dependency of `TEST_DEP`, as a wheel file."""
    dest.mkdir(parents=True, exist_ok=True)
    module = "ONES = [1, 1, 1]\nSAMPLE = [1, 2, 3]\n"
    return dest / layout_backend.wheel(str(dest), TEST_DEPENDENCY.replace("_", "-"), "0.3",
                                       {f"{TEST_DEPENDENCY}.py": module.encode()})


def make_layout_task(root: Path, layout: Layout, **row) -> dict:
    """Build `layout`'s repository under `root/repos/layout__<name>`; its SWE-bench row (extra fields: `row`)."""
    repo = root / "repos" / f"layout__{layout.name}"
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@t")
    git(repo, "config", "user.name", "t")
    files = {"README.md": "# demo\n", ".gitignore": "__pycache__/\n", **layout.base}
    if layout.packaged:
        extra = ""
        if layout is GENERATED:
            extra = '\n[tool.layout-backend]\nversion-file = "src/vers/_version.py"\n'
        files |= {"pyproject.toml": _pyproject(layout.name, extra),
                  "_build/layout_backend.py": Path(layout_backend.__file__).read_text()}
    write(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    write(repo, {**layout.fix, **layout.tests})
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached", "--", *layout.fix)
    test_patch = git(repo, "diff", "--cached", "--", *layout.tests)
    git(repo, "commit", "-qm", "fix")
    return {"instance_id": f"layout__{layout.name}-1", "repo": f"layout/{layout.name}", "version": "1.0",
            "base_commit": base, "patch": patch, "test_patch": test_patch,
            "problem_statement": f"{layout.name} is wrong", "FAIL_TO_PASS": layout.fail_to_pass,
            "PASS_TO_PASS": layout.pass_to_pass, **row}
