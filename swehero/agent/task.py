"""A task (one SWE-bench-shaped row), where its repository appears to the agent, and the prompts it gets."""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib import resources
from string import Template

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
        """The agent's view of a task row loaded by `swehero.rollout.tasks` (which checks the required columns)."""
        return cls(**{f.name: str(row[f.name]) for f in fields(cls) if row.get(f.name) is not None})


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
