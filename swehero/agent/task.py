"""A task (one SWE-bench-shaped row), where its repository appears to the agent, and the prompts it gets."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from string import Template

from swehero.jsonio import read_jsonl

OPENHANDS_ROOT = "/workspace/{repo}__{version}"
"""OpenHands' SWE-bench layout (`/workspace/<owner>__<name>__<version>`), the one the released trajectories show."""
SWEBENCH_ROOT = "/testbed"
"""Where SWE-bench instance images keep the repository."""


@dataclass(frozen=True)
class Task:
    """The fields of a SWE-bench row the agent uses (SWE-bench Verified, Multilingual and SWE-Gym rows all fit)."""

    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    version: str = ""
    patch: str = ""
    """The gold patch (used by the oracle policy only)."""
    test_patch: str = ""
    image: str = ""
    """Docker image of the task's environment, when the dataset names one (Multilingual does)."""

    @classmethod
    def from_row(cls, row: dict) -> Task:
        missing = [f for f in ("instance_id", "repo", "base_commit", "problem_statement") if not row.get(f)]
        if missing:
            raise ValueError(f"task row {row.get('instance_id', '?')} lacks {', '.join(missing)}")
        return cls(**{f.name: str(row[f.name]) for f in fields(cls) if row.get(f.name) is not None})


def load_tasks(path: Path) -> list[Task]:
    """Tasks from a `.jsonl` file or a `.json` file (one row or a list of rows)."""
    rows = read_jsonl(path) if str(path).endswith(".jsonl") else json.loads(Path(path).read_text())
    return [Task.from_row(row) for row in (rows if isinstance(rows, list) else [rows])]


def load_task(path: Path, instance_id: str | None = None) -> Task:
    """The one task of `path`, or the one with `instance_id`."""
    tasks = [t for t in load_tasks(path) if instance_id is None or t.instance_id == instance_id]
    if len(tasks) != 1:
        raise ValueError(f"{path}: expected exactly one task{f' with id {instance_id}' if instance_id else ''}, "
                         f"found {len(tasks)} (pass --instance-id)")
    return tasks[0]


def agent_root(template: str, task: Task) -> str:
    """The agent-visible repository path: `template` with `{repo}` (`/` spelt `__`) and `{version}` filled in."""
    return template.format(repo=task.repo.replace("/", "__"), version=task.version or "0.0")


def prompt(kind: str, mode: str, version: str, **values: str) -> str:
    """Render `prompts/<kind>_<mode>.<version>.txt` (kind: system or task) with `$name` placeholders."""
    name = f"{kind}_{mode}.{version}.txt"
    try:
        text = resources.files("swehero.agent").joinpath("prompts", name).read_text()
    except FileNotFoundError:
        raise ValueError(f"no prompt template {name} (prompt_version {version!r})") from None
    return Template(text).substitute(values).strip() + "\n"
