"""The agent loop: query the policy, run its one tool call, repeat; record what the model saw as a trajectory.

The record is the data plane's canonical trajectory (`swehero.data.trajectory.validate` accepts it), saved after
every step, so a killed episode still leaves a readable file. The patch is the checkout's final `git diff`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from swehero.agent.policy import ContextLimit, EndpointRefused, Policy, PolicyError, Reply
from swehero.agent.stuck import is_stuck
from swehero.agent.task import Task
from swehero.agent.tools import ERROR_TRAILER, InvalidCall, Outcome, Tools, parse_call
from swehero.jsonio import write_json_atomic
from swehero.recipe.stage import Range
from swehero.toolspec import openhands_tools

STAGE = {"zero": "zero", "exec": "hero"}
FINISH_REASONS = ("submitted", "stuck", "step_limit", "context_limit", "time_limit", "tool_parse_failures",
                  "agent_error", "interrupted")
"""How an episode ends (`metadata.finish_reason`): the agent called `finish`; it repeated itself as OpenHands'
stuck detector sees it (`stuck.is_stuck`); a limit was reached; the model kept sending malformed tool calls; the
model could not be queried or the runtime failed, taking the final patch included (agent_error: infrastructure, not
the model); or the process was stopped."""
KEEP_GOING = ("Please continue working on the task on whatever approach you think is suitable.\n"
              "When you think you have solved the question, please use the finish tool and include your final answer "
              "in the message parameter of the finish tool.\n"
              "IMPORTANT: YOU SHOULD NEVER ASK FOR HUMAN HELP.\n")
"""The user message that answers a reply without a tool call: OpenHands' SWE-bench evaluation (`codeact_user_response`
of its `evaluation/utils/shared.py`), which adds `GIVE_UP` once the conversation holds two user messages."""
GIVE_UP = 'If you want to give up, use the "finish" tool to finish the interaction.\n'


class RuntimeFailed(Exception):
    """A tool call the runtime failed to run (its container gone, its sandbox broken): the episode ends as
    `agent_error`, keeping its conversation, as a policy's failure does."""


class TimeLimit(BaseException):
    """Raised (by a SIGALRM handler the caller installs) when the attempt's wall-clock limit is reached; a
    BaseException so that no `except Exception` on the way swallows it. The loop ends as `time_limit`."""


@dataclass(frozen=True)
class LoopConfig:
    """Limits of one episode."""

    max_steps: Annotated[int, Range(min=1)] = 100
    """Assistant turns before the episode ends (the paper's 100)."""
    max_context_tokens: Annotated[int, Range(min=1)] = 131072
    """Conversation size (server-reported prompt tokens, or characters / 4) at which the episode ends (128k)."""
    max_consecutive_errors: Annotated[int | None, Range(min=1)] = None
    """Malformed replies in a row (no tool call, unknown tool, bad arguments) that end the episode (a reply with
    several calls runs them, as OpenHands does, so it ends no row: it counts as a format error only);
    None: no such limit, as in OpenHands, whose controller answers each and goes on (its stuck detector still ends
    the same reply without a call three times, and `max_steps` bounds the rest)."""


def run_episode(task: Task, policy: Policy, tools: Tools, opening: list[dict], config: LoopConfig = LoopConfig(),
                out: Path | None = None, metadata: dict | None = None,
                on_end: Callable[[], None] = lambda: None) -> dict:
    """Run one episode from its `opening` messages (system prompt and task message) and return its trajectory
    record (also written to `out` after every step). `on_end` is called once the episode has ended, however it
    ended, before its patch is taken."""
    mode, root = tools.mode, tools.runtime.root
    messages = list(opening)
    meta = {**(metadata or {}), "mode": mode, "agent_root": root, "base_commit": task.base_commit,
            "finish_reason": None, "steps": 0, "banned": False,
            "banned_commands": [], "editor_errors": 0, "format_errors": 0, "prompt_tokens": None,
            "completion_tokens": None}
    record = {"id": f"{task.instance_id}.{mode}.{uuid.uuid4().hex[:8]}", "instance_id": task.instance_id,
              "repo": task.repo, "source": "swehero-agent", "stage": STAGE[mode], "messages": messages,
              "tools": openhands_tools(), "patch": "", "resolved": None, "metadata": meta}
    errors_in_row, tokens = 0, _Tokens(len(json.dumps(record["tools"])) // 4)
    try:
        while meta["finish_reason"] is None:
            if is_stuck(messages):  # OpenHands checks before every step, before its limits
                meta["finish_reason"] = "stuck"
            elif meta["steps"] >= config.max_steps:
                meta["finish_reason"] = "step_limit"
            elif tokens.estimate(messages) > config.max_context_tokens:
                meta["finish_reason"] = "context_limit"
            else:
                reply = _act(policy, messages, record["tools"])
                meta["steps"] += 1
                tokens.update(reply, messages)
                _count_tokens(meta, reply)
                errors_in_row = errors_in_row + 1 if _step(reply.message, tools, messages, meta) else 0
                if config.max_consecutive_errors is not None and errors_in_row >= config.max_consecutive_errors:
                    meta["finish_reason"] = "tool_parse_failures"
            _save(record, out)
    except ContextLimit:
        meta["finish_reason"] = "context_limit"
    except TimeLimit:
        meta["finish_reason"] = "time_limit"
    except (PolicyError, RuntimeFailed) as e:
        meta["finish_reason"], meta["error"] = "agent_error", str(e)
        meta["error_in"] = "policy" if isinstance(e, PolicyError) else "runtime"  # the model's server, or the sandbox
        if isinstance(e, EndpointRefused):  # for the runner: not the attempt's outcome, and every attempt's alike
            meta["endpoint_refused"] = True
    except (KeyboardInterrupt, SystemExit):
        meta["finish_reason"] = "interrupted"
        raise
    finally:
        on_end()
        try:
            record["patch"] = tools.runtime.patch(task.base_commit)
        except Exception as e:  # the trajectory is still worth keeping without its patch
            patch_failed(meta, str(e))
        _save(record, out)
    return record


def _act(policy: Policy, messages: list[dict], tools: list[dict]) -> Reply:
    """The policy's reply; any exception from it other than a `PolicyError` (a server reply it could not read, a bug)
    becomes one, so that the episode ends as `agent_error` with its conversation and patch, not lost with the
    exception. BaseExceptions (`TimeLimit`, KeyboardInterrupt, SystemExit) pass as they are."""
    try:
        return policy.act(messages, tools)
    except PolicyError:
        raise
    except Exception as e:
        raise PolicyError(f"{type(e).__name__}: {e}") from e


def patch_failed(meta: dict, error: str) -> None:
    """An episode whose patch could not be taken (its sandbox broken, its repository unreadable) has no outcome to
    grade or train on, however it ended: the runtime's failure, so an `agent_error`, which runs count and retry."""
    meta["patch_error"] = error
    if meta["finish_reason"] != "interrupted":
        meta["finish_reason"] = "agent_error"
        meta["error"] = meta.get("error") or f"taking the patch failed: {error}"
        meta.setdefault("error_in", "runtime")


def _step(message: dict, tools: Tools, messages: list[dict], meta: dict) -> bool:
    """Act on one assistant message, appending it and the observations; True if the reply was malformed. A reply
    without exactly one tool call counts as a format error (the paper's filter drops such turns from training), but
    several calls run in turn, as OpenHands runs them."""
    calls = message.get("tool_calls") or []
    if not calls:
        if (message.get("content") or "").strip():  # an empty reply is left out: the model never sees it again
            messages.append(message)
        # OpenHands counts the user's messages (the task, its own answers like this one), not errors shown as such
        asked = sum(m["role"] == "user" and not m["content"].endswith(ERROR_TRAILER) for m in messages)
        messages.append({"role": "user", "content": KEEP_GOING + (GIVE_UP if asked >= 2 else "")})
        meta["format_errors"] += 1
        return True
    try:
        parsed = [parse_call(call["function"]["name"], call["function"]["arguments"]) for call in calls]
    except InvalidCall as e:
        # OpenHands' controller: no call of the reply runs, the reply leaves the conversation, and the error comes
        # as a user message, two newlines first when it follows another user message
        separator = "\n\n" if messages[-1]["role"] == "user" else ""
        messages.append({"role": "user", "content": separator + e.observation})
        meta["format_errors"] += 1
        return True
    if not (message.get("content") or "").strip():  # OpenHands' memory sends whitespace beside calls as no content
        message = {**message, "content": ""}
    messages.append(message)
    meta["format_errors"] += len(calls) > 1
    for n, (call, arguments) in enumerate(zip(calls, parsed)):
        if n and is_stuck(messages):  # each call of a reply is a step of OpenHands' controller
            meta["finish_reason"] = "stuck"
            break
        name = call["function"]["name"]
        outcome = _run(tools, name, arguments)
        if outcome.finished:  # the calls after it are not run
            meta["finish_reason"], meta["finish_message"] = "submitted", outcome.observation
            break
        messages.append(_tool_message(call, outcome.observation))
        if outcome.banned:
            meta["banned"] = True
            meta["banned_commands"].extend(outcome.banned)
        if outcome.error and name == "str_replace_editor":
            meta["editor_errors"] += 1
    return False


def _run(tools: Tools, name: str, arguments: dict) -> Outcome:
    """The call's outcome; an exception from the runtime under it becomes `RuntimeFailed`, as `_act` does for the
    policy (the tools themselves answer what the model got wrong)."""
    try:
        return tools.run(name, arguments)
    except Exception as e:
        raise RuntimeFailed(f"{name} failed in the runtime: {type(e).__name__}: {e}") from e


def _count_tokens(meta: dict, reply: Reply) -> None:
    """Totals the server billed (eval's cost column, distill's summary); None while no server reported any."""
    for key in ("prompt_tokens", "completion_tokens"):
        if getattr(reply, key) is not None:
            meta[key] = (meta[key] or 0) + getattr(reply, key)


def _tool_message(call: dict, content: str) -> dict:
    return {"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"], "content": content}


class _Tokens:
    """Conversation size: the server's last prompt-token count plus characters / 4 for what came after it
    (before the first count, the tool definitions are estimated too)."""

    def __init__(self, tools_estimate: int) -> None:
        self.known, self.known_upto = tools_estimate, 0

    def estimate(self, messages: list[dict]) -> int:
        return self.known + sum(len(json.dumps(m)) for m in messages[self.known_upto:]) // 4

    def update(self, reply: Reply, messages: list[dict]) -> None:
        if reply.prompt_tokens is not None:
            self.known = reply.prompt_tokens
            self.known_upto = len(messages)


def _save(record: dict, out: Path | None) -> None:
    if out is not None:
        write_json_atomic(out, record)
