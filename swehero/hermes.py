"""JSON-aware parsing of Qwen2.5's hermes-style tool calls: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.

vLLM's hermes parser finds calls with the regex `<tool_call>(.*?)</tool_call>`, so a call whose arguments contain
the text `</tool_call>` (an agent editing this very parser, a test fixture, a prompt) is cut short, fails to
decode and is dropped. Here the JSON body is decoded first (`json.JSONDecoder.raw_decode`) and the closing tag is
expected only after it, so every call the chat template can render comes back intact.

Standard library only: the vLLM plugin (`swehero/serve/vllm_plugin.py`, also loaded in vLLM's own environment)
and the agent (tool calls a server returned as text) both use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

START = "<tool_call>"
END = "</tool_call>"
_DECODER = json.JSONDecoder()


@dataclass
class Region:
    """One `<tool_call>` block of a model's output."""

    start: int
    """Offset of `<tool_call>`."""
    body: str
    """The JSON text (complete or, while streaming, partial)."""
    call: dict | None
    """`{"name": str, "arguments": dict}` once the body is a complete, well-formed call; else None."""
    closed: bool
    """Whether `</tool_call>` followed the body."""


class MalformedToolCall(ValueError):
    pass


def regions(text: str) -> list[Region]:
    """Every `<tool_call>` block of `text`, in order. The last one may be unfinished (streaming)."""
    found: list[Region] = []
    pos = 0
    while (start := text.find(START, pos)) != -1:
        body_start = _skip_space(text, start + len(START))
        try:
            value, body_end = _DECODER.raw_decode(text, body_start)
        except json.JSONDecodeError:
            # Unfinished JSON (still streaming) or not JSON at all: the rest of the text is this block's body.
            found.append(Region(start, _without_partial_end(text[body_start:]).strip(), None, False))
            break
        after = _skip_space(text, body_end)
        closed = text.startswith(END, after)
        found.append(Region(start, text[body_start:body_end], _as_call(value), closed))
        if not closed:
            if after < len(text) and not END.startswith(text[after:]):
                raise MalformedToolCall(f"text after a tool call's JSON where {END} belongs: {text[after:after + 40]!r}")
            break
        pos = after + len(END)
    return found


def parse(text: str) -> tuple[str, list[dict]]:
    """Split a finished model output into its leading content and its tool calls.

    Raises MalformedToolCall when a `<tool_call>` block is not a well-formed call, so callers can report it.
    A final block without `</tool_call>` is accepted (generation may stop on the end-of-turn token first).
    """
    blocks = regions(text)
    if not blocks:
        return text, []
    calls = []
    for block in blocks:
        if block.call is None:
            raise MalformedToolCall(f"tool call is not valid JSON: {block.body[:80]!r}")
        calls.append(block.call)
    return text[: blocks[0].start], calls


def _as_call(value: object) -> dict | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models double-encode; accept a JSON string holding an object
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    return {"name": value["name"], "arguments": arguments} if isinstance(arguments, dict) else None


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _without_partial_end(text: str) -> str:
    """Drop a trailing prefix of `</tool_call>` (the tag may be arriving token by token)."""
    for n in range(min(len(END) - 1, len(text)), 0, -1):
        if text.endswith(END[:n]):
            return text[:-n]
    return text
