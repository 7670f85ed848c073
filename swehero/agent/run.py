"""One task, start to end: build the runtime and policy named in `AgentConfig`, run the loop, always clean up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from swehero.agent.container import DockerLimits
from swehero.agent.loop import LoopConfig, run_episode
from swehero.agent.openai_policy import OpenAIConfig
from swehero.agent.runtime import RuntimeConfig
from swehero.agent.task import OPENHANDS_ROOT, SWEBENCH_ROOT, Task, agent_root
from swehero.agent.tools import MODES, Tools

POLICIES = ("openai", "oracle")
RUNTIMES = ("local", "docker")


@dataclass(frozen=True)
class AgentConfig:
    """Everything that shapes an episode."""

    mode: Literal["zero", "exec"] = "zero"
    """`zero` (execution-free, SWE-Zero) or `exec` (SWE-Hero, evaluation)."""
    policy: Literal["openai", "oracle"] = "openai"
    """`openai` (a chat-completions server) or `oracle` (replays the task's gold patch)."""
    runtime: Literal["local", "docker"] = "local"
    """`local` (bubblewrap over a fresh checkout) or `docker` (the task's SWE-bench image)."""
    root: str = ""
    """Agent-visible repository path, with `{repo}`/`{version}` placeholders; empty: OpenHands'
    `/workspace/{repo}__{version}` for local, `/testbed` for docker."""
    image: str = ""
    """Docker image; empty: the task's `image`, else SWE-bench's instance image name."""
    loop: LoopConfig = field(default_factory=LoopConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    sandbox: RuntimeConfig = field(default_factory=RuntimeConfig)
    docker: DockerLimits = field(default_factory=DockerLimits)

    def __post_init__(self) -> None:
        for name, value, allowed in (("mode", self.mode, MODES), ("policy", self.policy, POLICIES),
                                     ("runtime", self.runtime, RUNTIMES)):
            if value not in allowed:
                raise ValueError(f"agent {name} must be one of {', '.join(allowed)}, got {value!r}")


def run_task(task: Task, config: AgentConfig, out: Path | None = None, source_repo: Path | None = None,
             workdir: Path = Path("/tmp/swehero-agent")) -> dict:
    """Run one episode of `task` and return its trajectory record (written to `out` after every step)."""
    root = agent_root(config.root or (OPENHANDS_ROOT if config.runtime == "local" else SWEBENCH_ROOT), task)
    policy = _policy(task, config, root)
    runtime = _runtime(task, config, root, source_repo, workdir)
    try:
        meta = {"policy": config.policy, "runtime": config.runtime,
                "model": getattr(policy, "model", config.policy)}
        return run_episode(task, policy, Tools(runtime, config.mode), config.loop, out, meta)
    finally:
        runtime.close()


def _policy(task: Task, config: AgentConfig, root: str):
    if config.policy == "oracle":
        from swehero.agent.oracle import OraclePolicy

        return OraclePolicy(task.patch, root)
    from swehero.agent.openai_policy import OpenAIPolicy

    return OpenAIPolicy(config.openai)


def _runtime(task: Task, config: AgentConfig, root: str, source_repo: Path | None, workdir: Path):
    if config.runtime == "docker":
        from swehero.agent.container import DockerRuntime, swebench_image

        return DockerRuntime(config.image or task.image or swebench_image(task.instance_id), root,
                             config=config.sandbox, limits=config.docker,
                             strip_history_to=task.base_commit if config.mode == "zero" else None)
    from swehero.agent.local import LocalRuntime

    if source_repo is None:
        raise ValueError("the local runtime needs the task's git repository (--repo-dir)")
    return LocalRuntime.for_task(source_repo, task.base_commit, root, workdir, config.sandbox)
