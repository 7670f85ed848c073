"""Task sets in the SWE-bench schema: local JSONL/JSON/Parquet files or the named benchmarks, loaded with `datasets`.

Two shapes exist and both are accepted. SWE-bench Verified stores `FAIL_TO_PASS`/`PASS_TO_PASS` as JSON strings and
has `environment_setup_commit`; SWE-bench Multilingual stores them as lists and adds `eval_script`, `log_parser` and
`image`. Tasks are returned as plain dicts with the test lists decoded to lists; every other column passes through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement", "FAIL_TO_PASS", "PASS_TO_PASS")


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


def decode_tests(value) -> list[str]:
    """A test list as stored by either shape: a JSON string (Verified) or a list (Multilingual)."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"expected a list of test ids (or its JSON string), got {value!r:.80}")
    return list(value)


def normalize(row: dict) -> dict:
    missing = [name for name in REQUIRED if name not in row]
    if missing:
        raise ValueError(f"task {row.get('instance_id', '?')!r} lacks SWE-bench column(s): {', '.join(missing)}")
    # `datasets` infers timestamps (`created_at`); tasks travel as JSON, so keep them as ISO strings
    task = {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in row.items()}
    task["FAIL_TO_PASS"] = decode_tests(row["FAIL_TO_PASS"])
    task["PASS_TO_PASS"] = decode_tests(row["PASS_TO_PASS"])
    return task


def _load_rows(source: str, split: str) -> list[dict]:
    import datasets

    path = Path(source)
    if path.is_file():
        builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(path.suffix)
        if builder is None:
            raise ValueError(f"{source}: task files must be .jsonl, .json or .parquet")
        return list(datasets.load_dataset(builder, data_files=str(path), split="train"))
    bench = benchmark_of(source)
    if bench is None:
        raise ValueError(f"{source!r} is neither a task file nor a known benchmark "
                         f"({', '.join(f'{k} = {b.hub_id}' for k, b in BENCHMARKS.items())})")
    try:
        return list(datasets.load_dataset(bench.hub_id, split=split or bench.split))
    except Exception as e:  # offline without a cache, gated, renamed: all end the same way for the user
        raise RuntimeError(
            f"could not load {bench.hub_id} through `datasets` ({type(e).__name__}: {e}). It must be in the "
            f"Hugging Face cache or downloadable: run `huggingface-cli download --repo-type dataset {bench.hub_id}` "
            "on a machine with network access, or pass a local .jsonl/.parquet file of the tasks instead."
        ) from e


def load_tasks(source: str, split: str = "") -> list[dict]:
    """All tasks of a file or named benchmark, in their stored order; duplicate instance ids are an error."""
    tasks = [normalize(row) for row in _load_rows(source, split)]
    seen: set[str] = set()
    for task in tasks:
        if task["instance_id"] in seen:
            raise ValueError(f"{source}: instance {task['instance_id']} appears twice")
        seen.add(task["instance_id"])
    return tasks


def parse_shard(shard: str) -> tuple[int, int]:
    """'i/n' (0-based i) -> (i, n)."""
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"shard {shard!r}: need 0 <= i < n")
    return index, count


def select(tasks: list[dict], instances: list[str] = (), limit: int = 0, shard: str = "") -> list[dict]:
    """Named instances (in the given order; unknown ids are an error), else all; then every n-th from the i-th
    (shards partition the set whatever the limit), then the first `limit`."""
    if instances:
        by_id = {t["instance_id"]: t for t in tasks}
        unknown = [i for i in instances if i not in by_id]
        if unknown:
            raise ValueError(f"unknown instance id(s): {', '.join(unknown)}")
        tasks = [by_id[i] for i in dict.fromkeys(instances)]
    if shard:
        index, count = parse_shard(shard)
        tasks = tasks[index::count]
    return tasks[:limit] if limit > 0 else tasks
