"""How an attempt is made: the one agent settings type. `agent run`, the `rollout`, `distill` and `eval` stages all
take it (as their `agent:` section), so every knob has one name and one default, and each default lives here or in
the sub-section owned by the module that uses it (the loop's limits, the endpoint and sampling, the sandbox, the
container)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from swehero.agent.container import DockerConfig
from swehero.agent.local import root_problem
from swehero.agent.loop import LoopConfig
from swehero.agent.openai_policy import OpenAIConfig
from swehero.agent.runtime import RuntimeConfig
from swehero.agent.taskenv import EnvSettings
from swehero.recipe.stage import InputPath

@dataclass(frozen=True)
class AgentSettings:
    """Everything that shapes one attempt at a task."""

    mode: Literal["zero", "exec"] = "exec"
    """`exec` (SWE-Hero: the agent may run code and tests; the paper's evaluation) or `zero` (SWE-Zero:
    execution-free, banned commands are refused)."""
    policy: Literal["openai", "oracle", "gold", "empty"] = "openai"
    """openai: the agent queries an OpenAI-compatible server; oracle: the agent replays the gold patch through real
    tool calls; gold / empty: no agent, submit the gold patch / nothing (harness sanity checks)."""
    runtime: Literal["local", "docker"] = "local"
    """Where the agent's commands run: local (bubblewrap over a fresh checkout of the task's repository) or docker
    (the task's SWE-bench instance image)."""
    root: str = ""
    """Agent-visible repository path, with `{repo}` (`/` spelt `__`) and `{version}` placeholders; empty: OpenHands'
    `/workspace/{repo}__{version}`, where the training trajectories have it, in both runtimes (docker moves the
    image's /testbed there)."""
    image: str = ""
    """Docker image; empty: the task's `image` column, else SWE-bench's instance image name."""
    prompts: InputPath = ""
    """Opening messages taken from the training data (`swehero agent prompts extract`), so the model reads what it
    was trained on; empty: the built-in prompts (`swehero/agent/prompts/*.v3.txt`)."""
    time_limit_s: float = 3600.0
    """Wall-clock seconds per attempt, setup included (not the wait for, and build of, the task environment that
    every attempt of a repository shares); the patch so far is kept. Reached during setup, it is an `agent_error`."""
    kill_grace_s: float = 60.0
    """Seconds after the time limit before an attempt that did not stop is killed (and loses its patch, unless its
    episode had ended and saved it)."""
    loop: LoopConfig = field(default_factory=LoopConfig)
    """Limits of the episode: steps, context, malformed replies in a row."""
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    """The model endpoint and sampling (policy openai)."""
    sandbox: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Command timeouts, output caps and PATH inside the runtime."""
    env: EnvSettings = field(default_factory=EnvSettings)
    """The task's environment on the local runtime in exec mode (and for the local grader's `env`): install
    command, test dependencies, Python version, cache; the agent's `python` and `pytest` are the task's."""
    docker: DockerConfig = field(default_factory=DockerConfig)
    """Container resources and image housekeeping (runtime docker)."""

    def cross_field_problems(self) -> list[tuple[str, str]]:
        """A `root` no attempt can use, refused with the other settings (each attempt of a run failed on it)."""
        if not self.root:
            return []
        try:  # as `agent_root` fills it, for a task of any repository
            shown = self.root.format(repo="owner__name", version="0.0")
        except (KeyError, IndexError, ValueError) as e:
            return [("root", f"takes the placeholders {{repo}} and {{version}} only, not {e} in {self.root!r}")]
        if not shown.startswith("/"):
            return [("root", f"must be an absolute path, got {self.root!r}")]
        if self.runtime == "local" and (problem := root_problem(shown)):
            return [("root", problem)]
        return []
