"""A task (one SWE-bench-shaped row) and where its repository appears to the agent."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

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
    language: str = ""
    """The repository's language (`Python`, `Java`, ...), as `swehero.rollout.tasks` derives it."""
    install_config: str = ""
    """How to install the repository (SWE-rebench's column, as JSON): the local runtime's task environment."""

    @classmethod
    def from_row(cls, row: dict) -> Task:
        """The agent's view of a task row loaded by `swehero.rollout.tasks` (which checks the required columns)."""
        return cls(**{f.name: row[f.name] if isinstance(row[f.name], str) else json.dumps(row[f.name])
                      for f in fields(cls) if row.get(f.name) is not None})


def agent_root(template: str, task: Task) -> str:
    """The agent-visible repository path: `template` with `{repo}` (`/` spelt `__`) and `{version}` filled in."""
    return template.format(repo=task.repo.replace("/", "__"), version=task.version or "0.0")
