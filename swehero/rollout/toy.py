"""Bundled toy tasks: small real git repositories with a bug, the upstream fix and its tests, in the SWE-bench schema.

Each repository has three commits: the project, a commit that introduced the bug (the task's `base_commit`), and
the upstream fix with its tests. As in SWE-bench, `patch` (gold) and `test_patch` are the fix commit's diff split
into non-test and test files, so they apply to the base commit by construction, and the fix commit stays in the
repository's history (an execution-free runtime must strip it). Commits use fixed identities and dates, so the
commit ids, and with them the task file, are identical on every machine.

`build_toy_tasks(dest)` writes `dest/repos/<owner>__<name>`, `dest/tasks.jsonl` (the tasks to train on) and
`dest/heldout.jsonl` (tasks no training data comes from, for measuring a trained model), both in Verified shape
(test lists as JSON strings, `environment_setup_commit`). Tests run with pytest from the repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from swehero.rollout.tasks import repo_dir

OWNER = "swehero-toy"
VERSION = "0.1"
HELDOUT = "heldout.jsonl"
_DATE = "2024-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class ToyRepo:
    name: str
    project: dict[str, str]
    """Files of the first commit (a working project with passing tests)."""
    bug: dict[str, str]
    """Files the bug-introducing commit rewrites: the task's base commit."""
    fix: dict[str, str]
    """Files the upstream fix rewrites (source and tests)."""
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    problem_statement: str
    decoy: dict[str, str] = field(default_factory=dict)
    """Source files of a wrong fix: a plausible edit of the same code that the task's tests reject (see
    `build_decoy_tasks`)."""
    heldout: bool = False
    """Listed in `heldout.jsonl` instead of `tasks.jsonl`."""


REPOS = [
    ToyRepo(
        name="calc",
        project={
            "calc/__init__.py": "",
            "calc/ops.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
            "tests/test_ops.py": "from calc.ops import add, sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n",
        },
        bug={"calc/ops.py": "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"},
        fix={
            "calc/ops.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
            "tests/test_ops.py": "from calc.ops import add, sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n\n\n"
                                 "def test_add():\n    assert add(2, 3) == 5\n    assert add(-1, 1) == 0\n",
        },
        fail_to_pass=["tests/test_ops.py::test_add"],
        pass_to_pass=["tests/test_ops.py::test_sub"],
        problem_statement="`calc.ops.add` returns the wrong result\n\n`add(2, 3)` returns `-1` instead of `5`: it "
                          "seems to subtract its arguments.\n",
        decoy={"calc/ops.py": "def add(a, b):\n    return abs(a - b)\n\n\ndef sub(a, b):\n    return a - b\n"},
    ),
    ToyRepo(
        name="textkit",
        project={
            "textkit/__init__.py": "",
            "textkit/slug.py": "import re\n\n\ndef slugify(text):\n    words = re.findall(r\"[A-Za-z0-9]+\", text)\n"
                               "    return \"-\".join(word.lower() for word in words)\n",
            "tests/test_slug.py": "from textkit.slug import slugify\n\n\ndef test_spaces():\n"
                                  "    assert slugify(\"hello world\") == \"hello-world\"\n",
        },
        bug={"textkit/slug.py": "import re\n\n\ndef slugify(text):\n    words = re.findall(r\"[A-Za-z0-9]+\", text)\n"
                                "    return \"-\".join(words)\n"},
        fix={
            "textkit/slug.py": "import re\n\n\ndef slugify(text):\n    words = re.findall(r\"[A-Za-z0-9]+\", text)\n"
                               "    return \"-\".join(word.lower() for word in words)\n",
            "tests/test_slug.py": "from textkit.slug import slugify\n\n\ndef test_spaces():\n"
                                  "    assert slugify(\"hello world\") == \"hello-world\"\n\n\n"
                                  "def test_lowercase():\n    assert slugify(\"Hello World\") == \"hello-world\"\n",
        },
        fail_to_pass=["tests/test_slug.py::test_lowercase"],
        pass_to_pass=["tests/test_slug.py::test_spaces"],
        problem_statement="slugify keeps upper-case letters\n\n`slugify(\"Hello World\")` gives `Hello-World`; slugs "
                          "should be lower-case (`hello-world`).\n",
        decoy={"textkit/slug.py": "import re\n\n\ndef slugify(text):\n    words = re.findall(r\"[A-Za-z0-9]+\", text)\n"
                                  "    return \"-\".join(words).strip(\"-\")\n"},
    ),
    ToyRepo(
        name="stack",
        project={
            "stack/__init__.py": "",
            "stack/core.py": "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
                             "    def push(self, item):\n        self.items.append(item)\n\n"
                             "    def peek(self):\n        return self.items[-1]\n\n"
                             "    def __len__(self):\n        return len(self.items)\n",
            "tests/test_core.py": "from stack.core import Stack\n\n\ndef test_len():\n    s = Stack()\n"
                                  "    s.push(1)\n    s.push(2)\n    assert len(s) == 2\n",
        },
        bug={"stack/core.py": "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
                              "    def push(self, item):\n        self.items.append(item)\n\n"
                              "    def peek(self):\n        return self.items[0]\n\n"
                              "    def __len__(self):\n        return len(self.items)\n"},
        fix={
            "stack/core.py": "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
                             "    def push(self, item):\n        self.items.append(item)\n\n"
                             "    def peek(self):\n        return self.items[-1]\n\n"
                             "    def __len__(self):\n        return len(self.items)\n",
            "tests/test_core.py": "from stack.core import Stack\n\n\ndef test_len():\n    s = Stack()\n"
                                  "    s.push(1)\n    s.push(2)\n    assert len(s) == 2\n\n\n"
                                  "def test_peek_returns_last_pushed():\n    s = Stack()\n    s.push(1)\n"
                                  "    s.push(2)\n    assert s.peek() == 2\n",
        },
        fail_to_pass=["tests/test_core.py::test_peek_returns_last_pushed"],
        pass_to_pass=["tests/test_core.py::test_len"],
        problem_statement="Stack.peek returns the bottom of the stack\n\nAfter `push(1); push(2)`, `peek()` returns "
                          "`1`. It should return the most recently pushed item, `2`.\n",
        decoy={"stack/core.py": "class Stack:\n    def __init__(self):\n        self.items = []\n\n"
                                "    def push(self, item):\n        self.items.append(item)\n\n"
                                "    def peek(self):\n        return min(self.items)\n\n"
                                "    def __len__(self):\n        return len(self.items)\n"},
    ),
    ToyRepo(
        name="calendar",
        project={
            "calendar_utils/__init__.py": "",
            "calendar_utils/leap.py": "def is_leap(year):\n"
                                      "    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)\n",
            "tests/test_leap.py": "from calendar_utils.leap import is_leap\n\n\ndef test_common_years():\n"
                                  "    assert is_leap(2024)\n    assert not is_leap(2023)\n",
        },
        bug={"calendar_utils/leap.py": "def is_leap(year):\n    return year % 4 == 0\n"},
        fix={
            "calendar_utils/leap.py": "def is_leap(year):\n"
                                      "    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)\n",
            "tests/test_leap.py": "from calendar_utils.leap import is_leap\n\n\ndef test_common_years():\n"
                                  "    assert is_leap(2024)\n    assert not is_leap(2023)\n\n\n"
                                  "def test_centuries():\n    assert not is_leap(1900)\n    assert is_leap(2000)\n",
        },
        fail_to_pass=["tests/test_leap.py::test_centuries"],
        pass_to_pass=["tests/test_leap.py::test_common_years"],
        problem_statement="is_leap(1900) is True\n\n`calendar_utils.leap.is_leap` says 1900 is a leap year. Century "
                          "years are leap years only when divisible by 400.\n",
        decoy={"calendar_utils/leap.py": "def is_leap(year):\n    return year % 4 == 0 and year % 100 != 0\n"},
    ),
    ToyRepo(
        name="units",
        project={
            "units/__init__.py": "",
            "units/temperature.py": "def to_fahrenheit(celsius):\n    return celsius * 9 / 5 + 32\n\n\n"
                                    "def to_celsius(fahrenheit):\n    return (fahrenheit - 32) * 5 / 9\n",
            "tests/test_temperature.py": "from units.temperature import to_celsius\n\n\ndef test_to_celsius():\n"
                                         "    assert to_celsius(212) == 100\n",
        },
        bug={"units/temperature.py": "def to_fahrenheit(celsius):\n    return celsius * 9 / 5 - 32\n\n\n"
                                     "def to_celsius(fahrenheit):\n    return (fahrenheit - 32) * 5 / 9\n"},
        fix={
            "units/temperature.py": "def to_fahrenheit(celsius):\n    return celsius * 9 / 5 + 32\n\n\n"
                                    "def to_celsius(fahrenheit):\n    return (fahrenheit - 32) * 5 / 9\n",
            "tests/test_temperature.py": "from units.temperature import to_celsius, to_fahrenheit\n\n\n"
                                         "def test_to_celsius():\n    assert to_celsius(212) == 100\n\n\n"
                                         "def test_to_fahrenheit():\n    assert to_fahrenheit(100) == 212\n"
                                         "    assert to_fahrenheit(0) == 32\n",
        },
        fail_to_pass=["tests/test_temperature.py::test_to_fahrenheit"],
        pass_to_pass=["tests/test_temperature.py::test_to_celsius"],
        problem_statement="to_fahrenheit(100) returns 148\n\n`units.temperature.to_fahrenheit(100)` should be `212`; "
                          "the offset of 32 seems to be subtracted instead of added.\n",
        decoy={"units/temperature.py": "def to_fahrenheit(celsius):\n    return celsius * 5 / 9 + 32\n\n\n"
                                       "def to_celsius(fahrenheit):\n    return (fahrenheit - 32) * 5 / 9\n"},
        heldout=True,
    ),
    ToyRepo(
        name="listutils",
        project={
            "listutils/__init__.py": "",
            "listutils/chunks.py": "def chunked(items, size):\n"
                                   "    return [items[i:i + size] for i in range(0, len(items), size)]\n",
            "tests/test_chunks.py": "from listutils.chunks import chunked\n\n\ndef test_empty():\n"
                                    "    assert chunked([], 3) == []\n",
        },
        bug={"listutils/chunks.py": "def chunked(items, size):\n"
                                    "    return [items[i:i + size - 1] for i in range(0, len(items), size)]\n"},
        fix={
            "listutils/chunks.py": "def chunked(items, size):\n"
                                   "    return [items[i:i + size] for i in range(0, len(items), size)]\n",
            "tests/test_chunks.py": "from listutils.chunks import chunked\n\n\ndef test_empty():\n"
                                    "    assert chunked([], 3) == []\n\n\ndef test_sizes():\n"
                                    "    assert chunked([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]\n",
        },
        fail_to_pass=["tests/test_chunks.py::test_sizes"],
        pass_to_pass=["tests/test_chunks.py::test_empty"],
        problem_statement="chunked drops items\n\n`chunked([1, 2, 3, 4, 5], 2)` returns `[[1], [3], [5]]` instead of "
                          "`[[1, 2], [3, 4], [5]]`: every chunk is one item short.\n",
        decoy={"listutils/chunks.py": "def chunked(items, size):\n"
                                      "    return [items[i:i + size + 1] for i in range(0, len(items), size)]\n"},
        heldout=True,
    ),
    ToyRepo(
        name="vowels",
        project={
            "vowels/__init__.py": "",
            "vowels/count.py": "def count_vowels(text):\n    return sum(ch in \"aeiou\" for ch in text.lower())\n",
            "tests/test_count.py": "from vowels.count import count_vowels\n\n\ndef test_lower():\n"
                                   "    assert count_vowels(\"banana\") == 3\n",
        },
        bug={"vowels/count.py": "def count_vowels(text):\n    return sum(ch in \"aeiou\" for ch in text)\n"},
        fix={
            "vowels/count.py": "def count_vowels(text):\n    return sum(ch in \"aeiou\" for ch in text.lower())\n",
            "tests/test_count.py": "from vowels.count import count_vowels\n\n\ndef test_lower():\n"
                                   "    assert count_vowels(\"banana\") == 3\n\n\ndef test_upper():\n"
                                   "    assert count_vowels(\"AEIOU\") == 5\n",
        },
        fail_to_pass=["tests/test_count.py::test_upper"],
        pass_to_pass=["tests/test_count.py::test_lower"],
        problem_statement="count_vowels ignores capital letters\n\n`count_vowels(\"AEIOU\")` returns `0`; it should "
                          "count upper-case vowels too and return `5`.\n",
        decoy={"vowels/count.py": "def count_vowels(text):\n    return sum(ch in \"aeiouAEI\" for ch in text)\n"},
        heldout=True,
    ),
]


# Templated one-line bugs, for training data with some variety: (arguments, correct body, buggy body, a call that
# shows the bug, its right result, the result with the bug, a wrong fix that the test rejects).
_TEMPLATES = [
    ("a, b", "a + b", "a - b", "{f}(2, 3)", "5", "-1", "b - a"),
    ("a, b", "a * b", "a + b", "{f}(3, 4)", "12", "7", "a ** b"),
    ("items", "items[-1]", "items[0]", "{f}([1, 2, 3])", "3", "1", "items[1]"),
    ("text", "text.upper()", "text.lower()", "{f}(\"ab\")", "\"AB\"", "\"ab\"", "text.title()"),
    ("a, b", "max(a, b)", "min(a, b)", "{f}(2, 7)", "7", "2", "abs(a - b)"),
    ("n", "list(range(1, n + 1))", "list(range(1, n))", "{f}(3)", "[1, 2, 3]", "[1, 2]", "list(range(n))"),
    ("n", "n % 2 == 0", "n % 2 == 1", "{f}(4)", "True", "False", "n % 3 == 0"),
    ("text", "text.strip()", "text.lstrip()", "{f}(\" a \")", "\"a\"", "\"a \"", "text.rstrip()"),
]
_PACKAGES = ["alpha", "bravo", "cobalt", "delta", "ember", "fable", "garnet", "harbor", "indigo", "juniper", "kepler",
             "lumen", "meadow", "nimbus", "orbit", "prism"]
_FUNCTIONS = [("combine", "plus"), ("product", "times"), ("last_item", "newest"), ("shout", "to_upper"),
              ("larger", "pick_max"), ("count_up", "first_n"), ("is_even", "even"), ("trim", "clean")]
_MODULES = ["core", "utils", "helpers", "ops"]


def templated_repo(i: int) -> ToyRepo:
    """The i-th templated task (0 <= i < 16): a package with one buggy function and one correct one."""
    args, good, bad, call, right, wrong, decoy = _TEMPLATES[i % len(_TEMPLATES)]
    pkg, mod, f = _PACKAGES[i], _MODULES[i % len(_MODULES)], _FUNCTIONS[i % len(_FUNCTIONS)][i // len(_TEMPLATES)]
    call = call.format(f=f)

    def source(body: str) -> str:
        return f"def describe():\n    return \"{pkg}\"\n\n\ndef {f}({args}):\n    return {body}\n"

    tests = f"from {pkg}.{mod} import describe, {f}\n\n\ndef test_describe():\n    assert describe() == \"{pkg}\"\n"
    return ToyRepo(
        name=pkg,
        project={f"{pkg}/__init__.py": "", f"{pkg}/{mod}.py": source(good), f"tests/test_{mod}.py": tests},
        bug={f"{pkg}/{mod}.py": source(bad)},
        fix={f"{pkg}/{mod}.py": source(good),
             f"tests/test_{mod}.py": tests + f"\n\ndef test_{f}():\n    assert {call} == {right}\n"},
        fail_to_pass=[f"tests/test_{mod}.py::test_{f}"],
        pass_to_pass=[f"tests/test_{mod}.py::test_describe"],
        problem_statement=f"`{pkg}.{mod}.{f}` gives a wrong result\n\n`{call}` returns `{wrong}`; it should return "
                          f"`{right}`.\n",
        decoy={f"{pkg}/{mod}.py": source(decoy)},
    )


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Toy Maintainer", "GIT_AUTHOR_EMAIL": "maintainer@swehero.invalid",
           "GIT_COMMITTER_NAME": "Toy Maintainer", "GIT_COMMITTER_EMAIL": "maintainer@swehero.invalid",
           "GIT_AUTHOR_DATE": _DATE, "GIT_COMMITTER_DATE": _DATE, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull}
    done = subprocess.run(["git", "-c", "commit.gpgsign=false", *args], cwd=repo, env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD").strip()


def build_repo(spec: ToyRepo, dest: Path) -> dict:
    """Create the repository at `dest` and return its task row."""
    dest.mkdir(parents=True)
    _git(dest, "init", "-q", "-b", "main")
    _commit(dest, spec.project, f"Add {spec.name}")
    base = _commit(dest, spec.bug, "Refactor")
    fix = _commit(dest, spec.fix, f"Fix: {spec.problem_statement.splitlines()[0]}")
    test_files = sorted(p for p in spec.fix if p.startswith("tests/"))
    source_files = sorted(p for p in spec.fix if not p.startswith("tests/"))
    return {
        "repo": f"{OWNER}/{spec.name}",
        "instance_id": f"{OWNER}__{spec.name}-1",
        "base_commit": base,
        "patch": _git(dest, "diff", base, fix, "--", *source_files),
        "test_patch": _git(dest, "diff", base, fix, "--", *test_files),
        "problem_statement": spec.problem_statement,
        "hints_text": "",
        "created_at": "2024-01-01T00:00:00Z",
        "version": VERSION,
        "FAIL_TO_PASS": json.dumps(spec.fail_to_pass),
        "PASS_TO_PASS": json.dumps(spec.pass_to_pass),
        "environment_setup_commit": base,
    }


def build_toy_tasks(dest: Path, templated: int = 0) -> Path:
    """Build every toy repository under `dest/repos`, write `dest/heldout.jsonl` and then `dest/tasks.jsonl`;
    returns the (training) task file. `templated` adds that many templated one-line bugs (up to 16) to the
    training tasks.

    Idempotent: an existing complete build is reused (commit ids are deterministic, so it is the same)."""
    dest = Path(dest)
    tasks_file, heldout_file = dest / "tasks.jsonl", dest / HELDOUT
    if tasks_file.exists():  # written last: its presence means the build completed
        return tasks_file
    rows: dict[bool, list[dict]] = {False: [], True: []}
    for spec in REPOS + [templated_repo(i) for i in range(templated)]:
        target = repo_dir(dest / "repos", f"{OWNER}/{spec.name}")
        if target.exists():  # left by an interrupted build
            subprocess.run(["rm", "-rf", str(target)], check=True)
        rows[spec.heldout].append(build_repo(spec, target))
    for path, selected in ((heldout_file, rows[True]), (tasks_file, rows[False])):
        partial = path.with_suffix(".partial")
        partial.write_text("".join(json.dumps(row) + "\n" for row in selected))
        partial.replace(path)
    return tasks_file


DECOYS, HELDOUT_DECOYS = "decoys.jsonl", "heldout_decoys.jsonl"


def build_decoy_tasks(toy_dir: Path, dest: Path) -> Path:
    """Write `dest/decoys.jsonl` and `dest/heldout_decoys.jsonl`: the tasks of `toy_dir` (made by
    `build_toy_tasks`; their repositories stay there), each with its `patch` replaced by its decoy, a wrong fix of
    the same code that the task's tests reject. The oracle policy replays a decoy as it replays a gold patch, which
    makes unresolved attempts that look like resolved ones: a verifier's negative examples, and wrong candidates to
    select among. Returns the training tasks' decoy file."""
    import tempfile

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    specs = {spec.name: spec for spec in REPOS + [templated_repo(i) for i in range(len(_PACKAGES))]}
    for source, target in ((Path(toy_dir) / "tasks.jsonl", dest / DECOYS),
                           (Path(toy_dir) / HELDOUT, dest / HELDOUT_DECOYS)):
        rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
        for row in rows:
            with tempfile.TemporaryDirectory(prefix="swehero-decoy-") as tmp:
                clone = Path(tmp) / "repo"
                source_repo = repo_dir(Path(toy_dir).resolve() / "repos", row["repo"])
                _git(Path(tmp), "clone", "-q", str(source_repo), str(clone))
                _git(clone, "checkout", "-q", row["base_commit"])
                for rel, text in specs[row["repo"].split("/", 1)[1]].decoy.items():
                    (clone / rel).write_text(text)
                row["patch"] = _git(clone, "diff")
        partial = target.with_suffix(".partial")
        partial.write_text("".join(json.dumps(row) + "\n" for row in rows))
        partial.replace(target)
    return dest / DECOYS
