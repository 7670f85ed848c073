"""The canonical trajectory record: one JSON object per line, OpenAI chat messages plus task metadata.

Every importer produces it and everything downstream (render, prepare) consumes it, so `validate` is the one
gate: a record either comes out normalised or raises `Reject` with a short machine-readable reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

STAGES = ("zero", "hero")
ROLES = ("system", "user", "assistant", "tool")

REQUIRED = ("id", "instance_id", "messages", "tools")
DEFAULTS: dict[str, Any] = {"repo": "", "source": "", "stage": None, "patch": "", "resolved": None, "metadata": {}}
"""Optional fields and the value a record gets when it lacks them."""


class Reject(ValueError):
    """A record that cannot be used; `reason` is a short slug counted in stats (`detail` says where exactly)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def validate(record: Any, turnless: bool = False) -> dict:
    """Check one canonical record and return it with defaults filled in; raise `Reject` if unusable. One nested too
    deeply for the checks to walk (RecursionError) is rejected too (`nested_too_deeply`), not the end of the run.
    `turnless`: messages without an assistant turn, or none, pass (a distill run's record of an episode that ended
    before the teacher's first reply: the filter drops it by its own rule, where it would refuse the whole file)."""
    try:
        return _validated(record, turnless)
    except RecursionError:
        raise Reject("nested_too_deeply", "a value nested too deeply to check") from None


def _validated(record: Any, turnless: bool) -> dict:
    if not isinstance(record, dict):
        raise Reject("not_an_object", type(record).__name__)
    for field in REQUIRED:
        if field not in record or record[field] is None:
            raise Reject("missing_field", field)
    out = {**DEFAULTS, **record}
    if not isinstance(out["id"], str) or not out["id"] or not isinstance(out["instance_id"], str):
        raise Reject("bad_field", "id and instance_id must be non-empty strings")
    if out["stage"] is not None and out["stage"] not in STAGES:
        raise Reject("bad_field", f"stage {out['stage']!r} not in {STAGES}")
    if out["resolved"] is not None and not isinstance(out["resolved"], bool):
        raise Reject("bad_field", "resolved must be true, false or null")
    if not isinstance(out["tools"], list) or not all(isinstance(t, dict) for t in out["tools"]):
        raise Reject("bad_field", "tools must be a list of objects")
    if out["patch"] is not None and not isinstance(out["patch"], str):
        raise Reject("bad_field", "patch must be a string or null")
    if out["metadata"] is not None and not isinstance(out["metadata"], dict):
        raise Reject("bad_field", "metadata must be an object or null")
    if isinstance(out["messages"], list):
        out["messages"] = [_normalised(m) if isinstance(m, dict) else m for m in out["messages"]]
    _check_messages(out["messages"], turnless)
    _check_utf8(out)
    return out


def _normalised(message: dict) -> dict:
    """A message with `content: null` (OpenAI gives it next to tool calls) made "", and tool-call arguments stored
    as an object less their null-valued keys (`without_nulls`)."""
    message = {**message, "content": message.get("content") or ""}
    if isinstance(message.get("tool_calls"), list):
        message["tool_calls"] = [_without_argument_nulls(call) for call in message["tool_calls"]]
    return message


def _without_argument_nulls(call: Any) -> Any:
    fn = call.get("function") if isinstance(call, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("arguments"), dict):
        return {**call, "function": {**fn, "arguments": without_nulls(fn["arguments"])}}
    return call


def without_nulls(value: Any) -> Any:
    """A JSON-like value (tool definitions, tool-call arguments stored as objects, messages read from Parquet) less
    its null-valued keys, at every depth. A Parquet (Arrow) column of structs has one schema for all its rows, so
    every tool read back carries every other tool's parameters as nulls (`think` gets `"command": null`, ...), and
    every call's arguments the other calls' keys (`execute_bash` gets `"path": null`); rendered, they would give a
    system prompt the model never sees at inference and calls it never made. Nothing in a function schema needs a
    null value."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
"""A UTF-16 surrogate on its own: valid in JSON as an escape (`json.dumps` writes one for each undecodable byte a
`surrogateescape` reader kept), but no UTF-8 text holds it, so neither the tokenizer nor a UTF-8 file takes it."""


def _check_utf8(record: dict) -> None:
    """Reject a record with a string that is not text: rendering or writing it would fail the whole run."""
    for field, value in record.items():
        if field == "messages":
            for i, message in enumerate(value):
                if (found := _surrogate_in(message)) is not None:
                    raise Reject("not_utf8", f"message {i} holds {found}, which UTF-8 cannot encode")
        elif (found := _surrogate_in(value)) is not None:
            raise Reject("not_utf8", f"{field} holds {found}, which UTF-8 cannot encode")


def _surrogate_in(value: Any) -> str | None:
    """The first lone surrogate in a JSON-like value's strings, keys included, named (`a lone surrogate
    U+DC80`); None if there is none."""
    if isinstance(value, str):
        match = _SURROGATE.search(value)
        return None if match is None else f"a lone surrogate U+{ord(match.group()):04X}"
    if isinstance(value, dict):
        value = [part for item in value.items() for part in item]
    if isinstance(value, list):
        return next((found for item in value if (found := _surrogate_in(item)) is not None), None)
    return None


def _check_messages(messages: Any, turnless: bool) -> None:
    if not isinstance(messages, list) or not (messages or turnless):
        raise Reject("no_messages")
    n_assistant = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise Reject("bad_message", f"message {i} is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise Reject("unknown_role", f"message {i} has role {role!r}")
        if not isinstance(m["content"], str):
            raise Reject("bad_message", f"message {i} content is not a string")
        if role == "system" and i != 0:
            raise Reject("bad_message", f"system message at position {i}")
        if role == "assistant":
            n_assistant += 1
            calls = m.get("tool_calls") or []
            if not (m.get("content") or "").strip() and not calls:
                raise Reject("empty_assistant_turn", f"message {i}")
            for call in calls:
                _check_tool_call(call, i)
        elif m.get("tool_calls"):  # only the model calls tools; rendering would read these as calls
            raise Reject("bad_message", f"message {i} ({role}) has tool_calls")
    if n_assistant == 0 and not turnless:
        raise Reject("no_assistant_turn")


def _check_tool_call(call: Any, i: int) -> None:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise Reject("bad_tool_call", f"message {i}: tool call without function name")
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            raise Reject("invalid_tool_arguments", f"message {i} {fn['name']}: {e}") from None
    if not isinstance(args, dict):
        raise Reject("invalid_tool_arguments", f"message {i} {fn['name']}: arguments are not a JSON object")
    if (found := _surrogate_in(args)) is not None:  # an escape inside the JSON string: rendering decodes it
        raise Reject("not_utf8", f"message {i} {fn['name']}: arguments hold {found}, which UTF-8 cannot encode")


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as a chat template must see them: tool-call `arguments` decoded from JSON strings to objects.

    OpenAI messages carry `arguments` as a JSON string, but templates such as Qwen2.5's write `arguments | tojson`;
    vLLM decodes them before applying the template at inference, so training renders them the same way.
    """
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c["function"]
                args = json.loads(fn["arguments"]) if isinstance(fn["arguments"], str) else fn["arguments"]
                calls.append({**c, "function": {**fn, "arguments": args}})
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


def trained_digest(record: dict) -> str:
    """A hash of what training sees of a trajectory (its messages and tools), equal for two copies of it."""
    body = json.dumps([record["messages"], record["tools"]], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def make_tool_call(call_id: str, name: str, arguments: dict | str) -> dict:
    """An OpenAI-format tool call (arguments stored as a JSON string, as the OpenAI API returns them)."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
