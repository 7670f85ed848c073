"""Task sets in the SWE-bench schema, the one task loader of swehero: local JSONL/JSON/Parquet files or the named
benchmarks (through `datasets`), selected by id, shard and limit.

Two shapes exist and both are accepted. SWE-bench Verified stores `FAIL_TO_PASS`/`PASS_TO_PASS` as JSON strings and
has `environment_setup_commit`; SWE-bench Multilingual stores them as lists and adds `eval_script`, `log_parser` and
`image`. Tasks are plain dicts with the test lists decoded to lists; every other column passes through. Running the
agent needs only the columns in `REQUIRED`; grading needs the test lists too (`load_tasks(..., tests=True)`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated

from swehero.errors import InputError, MissingInput
from swehero.gitdiff import diff_files
from swehero.jsonio import iter_jsonl
from swehero.recipe.stage import Range, input_or_names

REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement")
"""What the agent needs of a task."""
TESTS = ("FAIL_TO_PASS", "PASS_TO_PASS")
"""What grading needs besides."""
TOY = "toy"
"""`tasks: toy`: the bundled toy tasks, built into the run's folder (see toy.py)."""


@dataclass(frozen=True)
class Benchmark:
    hub_id: str
    """Dataset id on the Hugging Face hub (what `datasets.load_dataset` is given)."""
    split: str
    harness_dataset: str
    """The name swebench's harness loads the same tasks by (its 5.x datasets carry images and eval scripts)."""
    key: str
    """Our short name; the paper's results table is keyed by it."""


BENCHMARKS = {
    "verified": Benchmark("princeton-nlp/SWE-bench_Verified", "test", "SWE-bench/SWE-bench_Verified", "verified"),
    "multilingual": Benchmark("SWE-bench/SWE-bench_Multilingual", "test", "SWE-bench/SWE-bench_Multilingual",
                              "multilingual"),
}
_ALIASES = {b.hub_id.lower(): b for b in BENCHMARKS.values()} | {
    b.harness_dataset.lower(): b for b in BENCHMARKS.values()} | BENCHMARKS


def benchmark_of(source: str) -> Benchmark | None:
    """The named benchmark `source` refers to (`verified`, `multilingual`, or a hub id of either), if any."""
    return _ALIASES.get(source.strip().lower())


TaskSource = input_or_names(TOY, *(name for b in BENCHMARKS.values() for name in (b.key, b.hub_id, b.harness_dataset)))
"""A task file, a benchmark name, or `toy`: the engine checks that a path exists (and reruns the stage when it
changes)."""


@dataclass(kw_only=True)
class TaskSelection:
    """Which tasks a stage runs on, and where their repositories are (the fields every rollout stage shares)."""

    tasks: TaskSource = TOY
    """Task file (.jsonl/.json/.parquet, SWE-bench schema), a benchmark (`verified`, `multilingual` or their hub
    ids), or `toy` for the bundled toy tasks (built into the stage folder)."""
    split: str = ""
    """Dataset split for benchmarks; empty: the benchmark's (test)."""
    instances: list[str] = field(default_factory=list)
    """Only these instance ids, in this order."""
    shard: str = ""
    """`i/n`: every n-th task starting at the i-th (0-based), to split a task set over machines."""
    limit: Annotated[int, Range(min=0)] = 0
    """At most this many tasks (after sharding; 0: all)."""
    repos: str = ""
    """Folder of the task repositories, one git repository (or bare mirror) per task repository named
    `owner__name` (local runtime, local grader); empty: `repos/` beside the task file."""

    def cross_field_problems(self) -> list[tuple[str, str]]:
        """A shard that is no `i/n`, refused with the other settings before any task is loaded."""
        try:
            if self.shard:
                parse_shard(self.shard)
        except InputError as e:
            return [("shard", str(e).removeprefix("shard "))]
        return []


@dataclass(frozen=True)
class TaskSet:
    """A selection, loaded."""

    tasks: list[dict]
    source: str
    """The task file (toy tasks: the file built) or the benchmark name."""
    repos: Path | None
    """Where the repositories are, if anywhere."""
    benchmark: str
    """`verified`, `multilingual`, `toy` or `custom`."""


def load_selection(selection: TaskSelection, out_dir: Path, tests: bool = False) -> TaskSet:
    """Load and select the tasks of `selection` (building the toy tasks under `out_dir` when asked for); `tests`:
    every task must have its test lists (see `load_tasks`)."""
    from swehero.rollout.toy import build_toy_tasks

    source = str(build_toy_tasks(Path(out_dir) / "toy-tasks")) if selection.tasks == TOY else selection.tasks
    bench = benchmark_of(source)
    tasks = select(load_tasks(source, selection.split, tests), selection.instances, selection.limit, selection.shard)
    repos = Path(selection.repos) if selection.repos else Path(source).parent / "repos" if Path(source).is_file() \
        else None
    kind = bench.key if bench else (TOY if selection.tasks == TOY else "custom")
    return TaskSet(tasks, source, repos, kind)


def decode_tests(value) -> list[str]:
    """A test list as stored by either shape: a JSON string (Verified) or a list (Multilingual)."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"expected a list of test ids (or its JSON string), got {value!r:.80}")
    return list(value)


def normalize(row: dict, where: str = "", tests: bool = False) -> dict:
    """A task row with its test lists decoded; raises naming the row when it is no JSON object or a required column
    is missing or no string. A test list stored as an empty string (the empty columns added to task sets without
    tests, e.g. R2E-Gym's, for distillation) is left out: not `[]`, under which any patch would grade resolved.
    `tests`: the row must have both test lists (grading)."""
    where = where or "task"
    if not isinstance(row, dict):
        raise InputError(f"{where}: a task is a JSON object with SWE-bench's columns, got {row!r:.80}")
    missing = [name for name in REQUIRED if not row.get(name)]
    if missing:
        raise InputError(f"{where}: task {row.get('instance_id', '?')!r} lacks column(s) "
                         f"{', '.join(missing)} (SWE-bench schema: {', '.join(REQUIRED + TESTS)})")
    # ids name folders and files, and the harness matches them to predictions: all of these are strings there
    for name in REQUIRED:
        if not isinstance(row[name], str):
            raise InputError(f"{where}: task {row['instance_id']!r}: {name} must be a string, got {row[name]!r:.80}")
    # an instance id names the folders and files of its attempts, logs and histories, which a run empties
    if row["instance_id"] in (".", "..") or any(c in row["instance_id"] for c in "/\0"):
        raise InputError(f"{where}: task {row['instance_id']!r}: instance_id names files and folders: it cannot "
                         "hold '/' or be '.' or '..'")
    # `datasets` infers timestamps (`created_at`); tasks travel as JSON, so keep them as ISO strings
    task = {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in row.items()}
    for name in TESTS:
        blank = isinstance(row.get(name), str) and not row[name].strip()
        if tests and (blank or name not in row):
            raise InputError(f"{where}: task {row['instance_id']!r}: {name} is {'empty' if blank else 'missing'}; "
                             "grading needs its list of test ids (a JSON list, or its JSON string: `[]` for none)")
        if blank:
            del task[name]
        elif name in row:
            try:
                task[name] = decode_tests(row[name])
            except ValueError as e:
                raise InputError(f"{where}: task {row['instance_id']!r}: {name}: {e}") from None
    task.setdefault("language", language_of(task))
    return task


_FAMILIES = {"python": ("Python", "PY"), "javascript": ("JavaScript", "JS"), "java": ("Java", "JAVA"),
             "go": ("Go", "GO"), "rust": ("Rust", "RUST"), "c": ("C", "C"), "php": ("PHP", "PHP"),
             "ruby": ("Ruby", "RUBY")}
"""swebench's log-parser families (its `harness.log_parsers` modules) -> (language, suffix of the module's
`MAP_REPO_TO_PARSER_*` table)."""
_EXTENSIONS = {".py": "Python", ".java": "Java", ".go": "Go", ".rs": "Rust", ".c": "C", ".h": "C", ".cc": "C++",
               ".cpp": "C++", ".cxx": "C++", ".hpp": "C++", ".hh": "C++", ".php": "PHP", ".rb": "Ruby",
               ".js": "JavaScript", ".jsx": "JavaScript", ".mjs": "JavaScript", ".ts": "TypeScript",
               ".tsx": "TypeScript"}


def language_of(task: dict) -> str:
    """The language of a task's repository, as swebench's specs say: the family of the task's log parser (its
    `log_parser` column, SWE-bench Multilingual) or of its repository's parser; the files its patches touch tell C++
    from C and TypeScript from JavaScript. Where swebench knows neither, the most of the test patch's files decide
    (the tests graded are in the language the grader must run), else the most of the patch's: a Python library
    whose fix touches its C extension or its TypeScript client (pandas, bokeh) tests in Python. Empty if nothing
    does."""
    tests, fix = (_languages(task.get(column) or "") for column in ("test_patch", "patch"))
    family = _swebench_family(task)
    if family == "c" and (tests + fix)["C++"]:
        return "C++"
    if family == "javascript" and (tests + fix)["TypeScript"]:
        return "TypeScript"
    if family:
        return _FAMILIES[family][0]
    return (tests or fix).most_common(1)[0][0] if tests or fix else ""


def _languages(patch: str) -> Counter:
    """How many of the files a patch touches are in each language (files of no known language not counted)."""
    files = Counter(_EXTENSIONS.get(PurePosixPath(new).suffix) for _, new in diff_files(patch) if new is not None)
    files.pop(None, None)
    return files


def _swebench_family(task: dict) -> str:
    try:
        from swebench.harness import log_parsers
    except ImportError:  # the `eval` extra is not installed: the patch's files decide
        return ""
    parser = log_parsers.PARSER_REGISTRY.get(task.get("log_parser") or "")
    if parser is not None:
        return parser.__module__.rsplit(".", 1)[1]
    for family, (_, table) in _FAMILIES.items():
        module = importlib.import_module(f"swebench.harness.log_parsers.{family}")
        if task.get("repo") in getattr(module, f"MAP_REPO_TO_PARSER_{table}", {}):
            return family
    return ""


def _load_rows(source: str, split: str) -> list[tuple[str, dict]]:
    """(where, row) of every row: local JSON files with the standard library (exact values, `file:line` in errors;
    a .json file may hold JSON Lines, as `datasets.Dataset.to_json` writes them), Parquet files with pyarrow,
    benchmarks with `datasets`."""
    path = Path(source)
    if path.is_file():
        # the data plane's readers: one rule for what a .json file holds and for a damaged Parquet file
        from swehero.data.sources import JSON_LINES, json_document, parquet_rows

        if path.suffix == ".parquet":
            return list(parquet_rows(path))
        if path.suffix not in (".jsonl", ".json"):
            raise InputError(f"{source}: task files must be .jsonl, .json or .parquet")
        document = JSON_LINES if path.suffix == ".jsonl" else json_document(path)
        if document is JSON_LINES:
            return [(f"{source}:{i}", row) for i, row in iter_jsonl(path)]
        rows = document if isinstance(document, list) else [document]
        return [(f"{source}#{i}", row) for i, row in enumerate(rows, 1)]
    import datasets

    bench = benchmark_of(source)
    if bench is None:
        raise InputError(f"{source!r} is neither a task file nor a known benchmark "
                         f"({', '.join(f'{k} = {b.hub_id}' for k, b in BENCHMARKS.items())})")
    # the copy named: swebench's harness dataset has columns (`eval_script`) the original lacks; a short name, the
    # benchmark's original
    hub_id = next((i for i in (bench.hub_id, bench.harness_dataset) if i.lower() == source.strip().lower()),
                  bench.hub_id)
    try:
        rows = datasets.load_dataset(hub_id, split=split or bench.split)
    except Exception as e:  # offline without a cache, gated, renamed: all end the same way for the user
        raise MissingInput(
            f"could not load {hub_id} through `datasets` ({type(e).__name__}: {e}). It must be in the "
            f"Hugging Face cache or downloadable: run `hf download --repo-type dataset {hub_id}` on a machine "
            "with network access (or a recipe's `download` stage), or pass a local .jsonl/.parquet file of the tasks."
        ) from e
    return [(f"{hub_id}:{i}", row) for i, row in enumerate(rows, 1)]


def load_tasks(source: str, split: str = "", tests: bool = False) -> list[dict]:
    """All tasks of a file or named benchmark, in their stored order; no task or a duplicate instance id is an error.
    `tests`: every task must have its test lists, as grading needs (see `normalize`)."""
    tasks, seen = [], {}
    for where, row in _load_rows(source, split):
        task = normalize(row, where, tests)
        if task["instance_id"] in seen:
            raise InputError(f"{where}: instance {task['instance_id']} appears twice (first at "
                             f"{seen[task['instance_id']]})")
        seen[task["instance_id"]] = where
        tasks.append(task)
    if not tasks:  # an emptied file (a decontamination that dropped all, a failed export) would otherwise run nothing
        raise InputError(f"{source}: no tasks in it")
    return tasks


def task_digest(task: dict) -> str:
    """`sha256:` of a task row as loaded, every column of it: a result kept under it is never taken for an edited
    row."""
    return "sha256:" + canonical_digest(task)


def canonical_digest(value) -> str:
    """sha256 of a JSON-like value written with its keys sorted: the same for equal values, whatever their order."""
    body = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def parse_shard(shard: str) -> tuple[int, int]:
    """'i/n' (0-based i) -> (i, n)."""
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise InputError(f"shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not 0 <= index < count:
        raise InputError(f"shard {shard!r}: need 0 <= i < n")
    return index, count


def select(tasks: list[dict], instances: list[str] = (), limit: int = 0, shard: str = "") -> list[dict]:
    """Named instances (in the given order; unknown ids are an error), else all; then every n-th from the i-th
    (shards partition the set whatever the limit), then the first `limit`."""
    if instances:
        by_id = {t["instance_id"]: t for t in tasks}
        unknown = [i for i in instances if i not in by_id]
        if unknown:
            raise InputError(f"unknown instance id(s): {', '.join(unknown)}")
        tasks = [by_id[i] for i in dict.fromkeys(instances)]
    if shard:
        index, count = parse_shard(shard)
        tasks = tasks[index::count]
    return tasks[:limit] if limit > 0 else tasks


def repo_dir(repos: Path, repo: str) -> Path:
    """Where a local clone of `owner/name` lives under a repos folder (SWE-bench's `owner__name` spelling)."""
    return Path(repos) / repo.replace("/", "__")
