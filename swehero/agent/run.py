"""One task, start to end: build the runtime and policy the settings name, run the loop, always clean up."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from swehero.agent.loop import STAGE, run_episode
from swehero.agent.prompts import Opening, opening_messages, read_template
from swehero.agent.settings import AgentSettings
from swehero.agent.task import OPENHANDS_ROOT, Task, agent_root
from swehero.agent.tools import Tools
from swehero.errors import InputError
from swehero.jsonio import write_json_atomic


SUBMITTING = ("gold", "empty")
"""Policies that submit a patch with no episode: they need neither a runtime nor prompts."""


def check_ready(settings: AgentSettings) -> None:
    """What every attempt of a run will need from this machine and from the prompts file, checked once before the
    first: a problem here would otherwise end each attempt alike, each committed as an agent_error."""
    if settings.policy in SUBMITTING:
        return
    if settings.prompts:
        read_template(settings.prompts, settings.mode)
    if settings.runtime == "docker":
        from swehero.agent.docker_host import client

        client()
    else:
        from swehero.agent.local import usable_bwrap

        usable_bwrap()  # bubblewrap there, and allowed to make its namespaces


class Progress:
    """Where `run_task` is, told to a caller that keeps a clock on it (the rollout's attempt, see
    `swehero.rollout.attempt`); this one does nothing. Setup (the policy, the runtime) comes first, then the episode,
    then its patch, then the runtime is closed."""

    def setting_up(self, doing: str) -> None:
        """Setup is now `doing` this (what a time limit reached now would interrupt)."""

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Around the wait for, and the build of, the task environment that every attempt of the repository shares
        (`taskenv.ensure_env`)."""
        yield

    def episode(self) -> None:
        """The episode starts."""

    def ending(self) -> None:
        """The episode has ended (however it ended); its patch is taken next."""

    def ended(self, record: dict) -> None:
        """The episode's record is whole, its patch in it, and saved; the runtime is closed next."""


def run_task(task: Task, settings: AgentSettings, out: Path | None = None, source_repo: Path | None = None,
             workdir: Path = Path("/tmp/swehero-agent"), history_cache: Path | None = None,
             progress: Progress | None = None) -> dict:
    """Run one episode of `task` and return its trajectory record (written to `out` after every step).
    `history_cache`: where the local runtime keeps the task's git history for other attempts of the same task
    (default: the runtime's own, removed with it). `progress` is told where the task is."""
    if settings.policy in SUBMITTING:
        return _submission(task, settings, out)
    progress = progress or Progress()
    progress.setting_up("reading the prompts")
    root = agent_root(settings.root or OPENHANDS_ROOT, task)
    opening, prompts = opening_messages(settings.prompts, settings.mode, Opening(
        workspace=root, repo=task.repo, instance_id=task.instance_id, base_commit=task.base_commit,
        problem_statement=task.problem_statement, language=task.language or "Python"))
    asks = f": asking {settings.openai.base_url} for its model" if settings.policy == "openai" and \
        not settings.openai.model else ""
    progress.setting_up(f"starting the {settings.policy} policy{asks}")
    policy = _policy(task, settings, root)
    runtime = _runtime(task, settings, root, source_repo, workdir, history_cache, progress)
    try:
        meta = {"policy": settings.policy, "runtime": settings.runtime, "prompts": prompts,
                "model": getattr(policy, "model", settings.policy)}
        progress.episode()
        record = run_episode(task, policy, Tools(runtime, settings.mode), opening, settings.loop, out, meta,
                             on_end=progress.ending)
        progress.ended(record)
        return record
    finally:
        runtime.close()


def bare_record(task: Task, settings: AgentSettings, finish_reason: str, patch: str = "", error: str = "") -> dict:
    """A record with no conversation: a submission made without an agent, or an attempt that failed before its
    episode began. Same fields as an episode's, so every attempt is read the same way."""
    return {"id": f"{task.instance_id}.{settings.policy}.{uuid.uuid4().hex[:8]}", "instance_id": task.instance_id,
            "repo": task.repo, "source": "swehero-agent", "stage": STAGE[settings.mode], "messages": [], "tools": [],
            "patch": patch, "resolved": None,
            "metadata": {"policy": settings.policy, "mode": settings.mode, "finish_reason": finish_reason,
                         "error": error, "steps": 0, "format_errors": 0, "prompt_tokens": None,
                         "completion_tokens": None}}


def _submission(task: Task, settings: AgentSettings, out: Path | None) -> dict:
    """No agent: the gold patch or nothing, recorded like an episode that submitted at once."""
    record = bare_record(task, settings, "submitted", task.patch if settings.policy == "gold" else "")
    if out is not None:
        write_json_atomic(out, record)
    return record


def _policy(task: Task, settings: AgentSettings, root: str):
    if settings.policy == "oracle":
        from swehero.agent.oracle import OraclePolicy

        return OraclePolicy(task.patch, root)
    from swehero.agent.openai_policy import OpenAIPolicy

    return OpenAIPolicy(settings.openai)


def task_image(task: Task, settings: AgentSettings) -> str:
    """The Docker image the task's attempts run in: the settings' one, else the task's, else SWE-bench's name."""
    from swehero.agent.container import swebench_image

    return settings.image or task.image or swebench_image(task.instance_id)


def _runtime(task: Task, settings: AgentSettings, root: str, source_repo: Path | None, workdir: Path,
             history_cache: Path | None, progress: Progress):
    if settings.runtime == "docker":
        from swehero.agent.container import DockerRuntime

        # the container need not outlive the attempt: bounding its lifetime by the attempt's own limits clears the
        # containers of killed attempts within minutes, not hours
        attempt_s = int(settings.time_limit_s + settings.kill_grace_s) + 60
        limits = replace(settings.docker, lifetime=min(settings.docker.lifetime, attempt_s))
        image = task_image(task, settings)
        progress.setting_up(f"starting a container of {image}, pulled first if missing")
        return DockerRuntime(image, root, config=settings.sandbox, limits=limits, base_commit=task.base_commit)
    from swehero.agent.local import LocalRuntime, check_repository

    if source_repo is None:
        raise InputError(f"{task.instance_id}: the local runtime needs the task's git repository (repos folder)")
    env = None
    if settings.mode == "exec":  # the agent runs the project: its python and pytest are the task's
        from swehero.agent.taskenv import ensure_env

        check_repository(source_repo, task.repo)
        progress.setting_up(f"waiting for, or building, the task environment of {task.repo} {task.version}".strip())
        with progress.shared():
            env = ensure_env({"repo": task.repo, "version": task.version, "base_commit": task.base_commit,
                              "install_config": task.install_config or None}, settings.env, source_repo)
    progress.setting_up(f"checking out {task.repo} at {task.base_commit[:12]}"
                        + (" and installing it into its environment" if env is not None else ""))
    return LocalRuntime.for_task(source_repo, task.base_commit, root, workdir, settings.sandbox, env=env,
                                 history_cache=history_cache)
