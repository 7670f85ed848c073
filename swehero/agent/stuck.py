"""OpenHands 0.54's StuckDetector (`openhands/controller/stuck.py`) over swehero's conversation.

OpenHands checks, before every step (each action, so also between the calls of one reply), whether the agent loops,
and ends the episode if it does; its SWE-bench evaluation runs headless, so the whole history counts. The detector
sees events, not messages: `_events` rebuilds them, each as a key of its class and the fields its equality compares
(dataclass equality; `CmdOutputObservation` only on `command` and exit code, the detector's `_eq_no_pid`).
Scenario 5 (ten condensations in a row) never applies: no condenser runs, so no AgentCondensationObservation comes;
nor does scenario 2's IPython syntax-error branch: there is no IPython tool.
"""

from __future__ import annotations

import json
import re
from itertools import takewhile

from swehero.agent.tools import ERROR_TRAILER, NO_INPUT, NO_LOGS

NOT_RUNNING = (NO_LOGS, NO_INPUT)
"""OpenHands' bash session answers these as a CmdOutputObservation of command '' (exit code -1), no error."""
EXIT_CODE = re.compile(r"\[Command finished with exit code (-?\d+)\]\Z")
"""The last line of a command that ended; without it (still running, not run, or refused in zero mode, which
OpenHands has not) the exit code is -1."""


def is_stuck(messages: list[dict]) -> bool:
    """Whether OpenHands' StuckDetector, checking before the next action, finds the agent looping in this
    conversation (as the loop keeps it; calls of the last reply without a result yet are still to come)."""
    history = list(_events(messages))
    if len(history) < 3:
        return False
    actions = [key for is_action, key in reversed(history) if is_action]  # the last first, as the detector looks
    observations = [key for is_action, key in reversed(history) if not is_action]
    a, o = actions[:4], observations[:4]
    if len(a) == 4 and len(o) == 4 and a.count(a[0]) == 4 and o.count(o[0]) == 4:
        return True  # scenario 1: the same action and observation four times
    if len(a) >= 3 and len(o) >= 3 and a[:3].count(a[0]) == 3 and all(k[0] == "ErrorObservation" for k in o[:3]):
        return True  # scenario 2: the same action three times, each answered by an error (not necessarily the same)
    said = [(i, key) for i, (_, key) in enumerate(history) if key[0] == "MessageAction"]
    if len(said) >= 3 and said[-3][1] == said[-2][1] == said[-1][1] and \
            all(is_action for is_action, _ in history[said[-3][0] + 1:said[-1][0]]):
        return True  # scenario 3: monologue, the same reply without a call three times, no observation between
    a, o = actions[:6], observations[:6]
    return len(a) == 6 and len(o) == 6 and a[0] == a[2] == a[4] and a[1] == a[3] == a[5] \
        and o[0] == o[2] == o[4] and o[1] == o[3] == o[5]  # scenario 4: (A, B) pairs three times over six steps


def _events(messages: list[dict]):
    """(is_action, key) for each event of OpenHands' history the detector keeps (user MessageActions and Null
    events are filtered out)."""
    yield True, ("SystemMessageAction",)  # added by the controller before the task
    task = True
    for i, m in enumerate(messages):
        content = m.get("content")
        if m["role"] == "user" and content.endswith(ERROR_TRAILER):  # a refused reply: the controller's error
            yield False, ("ErrorObservation", content.removeprefix("\n\n")[:-len(ERROR_TRAILER)])
        elif m["role"] == "user" and task:  # the task's recall of the workspace context, and its observation
            task = False
            yield True, ("RecallAction", "workspace_context", content)
            yield False, ("RecallObservation", "workspace_context")
        elif m["role"] == "user":  # KEEP_GOING: its MessageAction is filtered out, not the RecallAction it makes
            before = messages[i - 1]  # (no microagent triggers on it: its NullObservation is filtered out too)
            if before["role"] != "assistant" or before.get("tool_calls"):  # an empty reply, left out by the loop
                yield True, ("MessageAction", "")
            yield True, ("RecallAction", "knowledge", content)
        elif m["role"] == "assistant" and not m.get("tool_calls"):  # MessageAction(wait_for_response=True)
            yield True, ("MessageAction", content or "")
        elif m["role"] == "assistant":
            results = takewhile(lambda r: r["role"] == "tool", messages[i + 1:])
            for n, (call, result) in enumerate(zip(m["tool_calls"], results)):  # ends at `finish` or a pending call
                name, args = call["function"]["name"], call["function"]["arguments"]
                args = json.loads(args) if isinstance(args, str) else args
                yield True, _action(name, args, (content or "") if n == 0 else "")  # `thought`: the first only
                yield False, _observation(name, args, result["content"])


def _action(name: str, args: dict, thought: str) -> tuple:
    """The action `response_to_actions` makes of a call, with the fields that differ between calls."""
    if name == "execute_bash":  # a `timeout` sets `blocking`, not its value (a null one: none here, a crash there)
        return ("CmdRunAction", args["command"], args.get("is_input", "false") == "true", thought,
                args.get("timeout") is not None)
    if name == "str_replace_editor" and args["command"] == "view":
        return ("FileReadAction", args["path"], args.get("view_range"), thought)
    if name == "str_replace_editor":
        return ("FileEditAction", args["path"], args["command"],
                *(args.get(k) for k in ("file_text", "old_str", "new_str", "insert_line")), thought)
    if name == "think":  # `combine_thought`: the reply's text, then the call's own thought
        own = args.get("thought", "")
        return "AgentThinkAction", f"{thought}\n{own}" if thought and own else thought or own
    return "AgentFinishAction", args.get("message", ""), thought  # never seen: the episode ends with it


def _observation(name: str, args: dict, text: str) -> tuple:
    """The observation OpenHands' runtime returns, read back from the text the agent saw."""
    if text.endswith(ERROR_TRAILER):  # bash's multiple commands, viewing a binary file
        return "ErrorObservation", text[:-len(ERROR_TRAILER)]
    if name == "execute_bash":
        command = args["command"].strip() if isinstance(args["command"], str) else args["command"]
        code = EXIT_CODE.search(text)
        return "CmdOutputObservation", "" if text in NOT_RUNNING else command, int(code[1]) if code else -1
    if name == "str_replace_editor" and args["command"] == "view":  # editor errors too: `ERROR:\n...`, no error
        return "FileReadObservation", text, args["path"]
    if name == "str_replace_editor":  # `old_content`/`new_content` are the call's; the file's diff is not seen
        return "FileEditObservation", text, args["path"], args.get("old_str"), args.get("new_str")
    return "AgentThinkObservation", text
