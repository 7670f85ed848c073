"""One instance's inference, run in a child process (`python -m swehero.eval.episode SPEC OUT`).

A process per instance gives the per-instance time limit teeth: the limit starts before the checkout or container is
set up, a SIGALRM at the limit ends the agent the way a step limit does (its `finally` still extracts the patch), and
a child that does not stop within the grace period is killed by the parent, its process group with it. A crash in the
runtime or the policy ends only this instance, as an infrastructure error.

`run_agent` is the only function in swehero.eval that knows the agent's API.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from swehero.agent.docker_host import check_free_disk, docker_root
from swehero.jsonio import write_json_atomic

FINISH_REASONS = ("submitted", "step_limit", "context_limit", "time_limit", "tool_parse_failures", "agent_error")


@dataclass
class AgentSettings:
    """How each instance is attempted."""

    policy: Literal["openai", "oracle", "gold", "empty"] = "openai"
    """openai: the agent queries a served model; oracle: the agent replays the gold patch through real tool calls;
    gold / empty: no agent, submit the gold patch / nothing (harness sanity checks, like `swebench eval --gold`)."""
    mode: Literal["exec", "zero"] = "exec"
    """Agent mode: exec (SWE-Hero, the paper's evaluation) or zero (execution-free scaffold)."""
    runtime: Literal["local", "docker"] = "local"
    """Where the agent's commands run: local (bubblewrap over a clone from `repos`) or docker (the task's image)."""
    max_steps: int = 100
    """Assistant turns per instance (the paper: 100); the patch is still extracted when the limit is hit."""
    max_context_tokens: int = 131072
    """Conversation size at which an instance ends (the paper: 128k)."""
    time_limit_s: float = 3600.0
    """Wall-clock seconds per instance, setup included; the patch so far is kept."""
    kill_grace_s: float = 60.0
    """Seconds after the time limit before an instance that did not stop is killed (and loses its patch)."""
    base_url: str = ""
    """OpenAI-compatible endpoint (`http://host:port/v1`); empty: the server the eval starts for `model`."""
    model: str = ""
    """Model name the endpoint serves; empty: its first model."""
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    """Sampling (the paper's evaluation: 0.7 / 0.8 / 20)."""
    max_reply_tokens: int = 4096
    """Tokens per model reply."""
    request_retries: int = 5
    """Attempts after a failed request to the endpoint (with exponential backoff from 1 s); lower it when other
    endpoints can take over (distillation fails over to them)."""
    min_free_gb: float = 50.0
    """Free GiB required on Docker's disk before an instance's image is pulled (docker runtime)."""
    prune_image: bool = False
    """Remove an instance's image after its attempt (docker runtime; the harness pulls it again to grade)."""
    repos: str = ""
    """Folder of local clones named `owner__name` (local runtime, local grader); empty: `repos/` beside the task
    file."""


@dataclass
class Episode:
    """What inference keeps of one instance."""

    instance_id: str
    patch: str = ""
    finish_reason: str = "agent_error"
    """One of FINISH_REASONS."""
    steps: int = 0
    prompt_tokens: int | None = None
    """Prompt tokens summed over the model's replies, when the agent records them."""
    completion_tokens: int | None = None
    seconds: float = 0.0
    error: str = ""
    trajectory: dict = field(default_factory=dict)


class TimeLimit(BaseException):
    """Raised by SIGALRM; a BaseException so that no `except Exception` in the agent swallows it."""


# The agent's `metadata.exit_reason` -> our finish reason.
_EXIT_REASONS = {"finished": "submitted", "step_limit": "step_limit", "context_limit": "context_limit",
                 "time_limit": "time_limit", "repeated_format_errors": "tool_parse_failures",
                 "policy_error": "agent_error"}


def run_agent(task: dict, settings: AgentSettings, source_repo: Path | None, workdir: Path, out: Path) -> Episode:
    """Adapter to `swehero.agent`: run one episode and translate its trajectory record into an Episode."""
    from swehero.agent.loop import LoopConfig
    from swehero.agent.openai_policy import OpenAIConfig
    from swehero.agent.run import AgentConfig, run_task
    from swehero.agent.task import Task

    config = AgentConfig(
        mode=settings.mode, policy=settings.policy, runtime=settings.runtime,
        loop=LoopConfig(max_steps=settings.max_steps, max_context_tokens=settings.max_context_tokens),
        openai=OpenAIConfig(base_url=settings.base_url, model=settings.model, temperature=settings.temperature,
                            top_p=settings.top_p, top_k=settings.top_k, max_tokens=settings.max_reply_tokens,
                            retries=settings.request_retries),
    )
    image = ""
    if settings.runtime == "docker":
        from swehero.agent.container import swebench_image

        image = task.get("image") or swebench_image(task["instance_id"])
        check_free_disk(docker_root(), settings.min_free_gb, f"pulling {image}")
    try:
        record = run_task(Task.from_row(task), config, out=out, source_repo=source_repo, workdir=workdir)
    except TimeLimit:  # the loop saved the record, patch included, in its `finally`
        record = json.loads(out.read_text()) if out.exists() else {"metadata": {}}
        record["metadata"]["exit_reason"] = "time_limit"
    finally:
        if image and settings.prune_image:
            import docker

            docker.from_env().images.remove(image, force=True)
    meta = record["metadata"]
    reason = meta.get("exit_reason")
    error = meta.get("error") or meta.get("patch_error", "")
    if reason not in _EXIT_REASONS:  # an ending we do not know is not silently counted as the model's
        error = f"the agent ended with exit_reason={reason!r}. {error}"
    return Episode(
        instance_id=task["instance_id"], patch=record.get("patch") or "",
        finish_reason=_EXIT_REASONS.get(reason, "agent_error"), steps=meta.get("steps", 0),
        prompt_tokens=meta.get("prompt_tokens"), completion_tokens=meta.get("completion_tokens"), error=error,
        trajectory=record,
    )


def attempt(task: dict, settings: AgentSettings, source_repo: Path | None, workdir: Path) -> Episode:
    """Run one instance under the time limit; always returns an Episode."""
    start = time.monotonic()
    signal.signal(signal.SIGALRM, _raise_time_limit)
    signal.setitimer(signal.ITIMER_REAL, settings.time_limit_s)
    try:
        if settings.policy == "gold":
            episode = Episode(task["instance_id"], patch=task.get("patch") or "", finish_reason="submitted")
        elif settings.policy == "empty":
            episode = Episode(task["instance_id"], finish_reason="submitted")
        else:
            episode = run_agent(task, settings, source_repo, workdir, workdir / "trajectory.json")
    except TimeLimit:
        episode = Episode(task["instance_id"], finish_reason="time_limit",
                          error=f"time limit of {settings.time_limit_s:g}s reached")
    except Exception as e:  # anything else is the infrastructure's fault, and ends only this instance
        episode = Episode(task["instance_id"], finish_reason="agent_error", error=f"{type(e).__name__}: {e}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    episode.seconds = round(time.monotonic() - start, 3)
    return episode


def _raise_time_limit(signum, frame) -> None:
    raise TimeLimit()


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the eval that started it dies (a `kill -9` leaves no orphans)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's own timeout still bounds the child
        pass


def main(spec_file: str, out_file: str) -> None:
    _die_with_parent()
    spec = json.loads(Path(spec_file).read_text())
    settings = AgentSettings(**spec["settings"])
    source = Path(spec["source_repo"]) if spec["source_repo"] else None
    episode = attempt(spec["task"], settings, source, Path(spec["workdir"]))
    write_json_atomic(Path(out_file), asdict(episode))


if __name__ == "__main__":
    main(*sys.argv[1:3])
