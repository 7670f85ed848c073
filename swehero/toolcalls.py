"""Tool calls written as text, read the same way everywhere: by the data importers (training data), the agent (a
server that returned its calls as text) and the vLLM plugin (what a served model wrote). Two formats exist:

- hermes (Qwen2.5's chat template): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`;
- function markup (OpenHands' CodeAct text format, SWE-Gym's trajectories, Qwen3-Coder):
  `<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n</function>`, inside a `<tool_call>` block or not.
  Values are text, converted to the type the tool's schema declares (`swehero.toolspec`); one newline on each side
  of a value belongs to the markup, as in vLLM's qwen3_coder parser.

vLLM's hermes parser finds calls with the regex `<tool_call>(.*?)</tool_call>`, so a call whose arguments contain
the text `</tool_call>` (an agent editing this very parser, a test fixture, a prompt) is cut short, fails to
decode and is dropped. Here the JSON body is decoded first (`json.JSONDecoder.raw_decode`) and the closing tag is
expected only after it, so every call the chat template can render comes back intact.

Standard library only: the vLLM plugin is also loaded in vLLM's own environment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from swehero.toolspec import TOOL_NAMES, tool_schema

START = "<tool_call>"
END = "</tool_call>"
FUNCTION = "<function="
FUNCTION_END = "</function>"
_DECODER = json.JSONDecoder()
_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|\Z)", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)</parameter>", re.S)


class MalformedToolCall(ValueError):
    pass


@dataclass
class Block:
    """One tool call written in a model's text."""

    start: int
    """Offset where the call begins (`<tool_call>`, or `<function=` outside a block)."""
    end: int
    """Offset after it."""
    call: dict | None
    """`{"name": str, "arguments": dict}` when it parsed; else None."""
    error: str = ""
    """Why it did not parse."""


def blocks(text: str) -> list[Block]:
    """Every tool call of a finished model output, in order, each parsed or with the reason it could not be."""
    if START not in text:
        return markup_blocks(text)
    found: list[Block] = []
    pos = 0
    while (start := text.find(START, pos)) != -1:
        body = _skip_space(text, start + len(START))
        if text.startswith(FUNCTION, body):
            found.append(_function_in_block(text, start, body))
        else:
            found.append(_json_block(text, start, body))
        pos = found[-1].end
    return found


def markup_blocks(text: str) -> list[Block]:
    """The calls of a text written as function markup without `<tool_call>` blocks (OpenHands' text format)."""
    return [_function_block(text, m.start(), m.end(), m) for m in _FUNCTION.finditer(text)]


def parse(text: str, markup_only: bool = False) -> tuple[str, list[dict]]:
    """Split a finished model output into its content (`content_before`) and its calls; with `markup_only`, only
    function markup outside blocks is a call (a source known to write OpenHands' text format).

    Raises MalformedToolCall when a call does not parse, so callers can report it. A final `<tool_call>` block
    without `</tool_call>` is accepted (generation may stop on the end-of-turn token first).
    """
    found = markup_blocks(text) if markup_only else blocks(text)
    for block in found:
        if block.call is None:
            raise MalformedToolCall(block.error)
    return content_before(text, found), [block.call for block in found]


def content_before(text: str, found: list[Block]) -> str:
    """A reply's `content`: the text before its first call, less the one newline the chat template writes between
    content and call (Qwen2.5's `content + '\\n<tool_call>'`); all of the text when there is no call. So the
    message renders back to the very text the model wrote, and the model reads its own turns in later steps
    as it read them in training. vLLM's hermes parser keeps that newline: its message renders with two."""
    return text[: found[0].start].removesuffix("\n") if found else text


def _json_block(text: str, start: int, body: int) -> Block:
    close = text.find(END, body)
    try:
        value, body_end = _DECODER.raw_decode(text, body)
    except json.JSONDecodeError:
        end = len(text) if close == -1 else close + len(END)
        return Block(start, end, None, f"tool call is not valid JSON: {text[body:end][:80]!r}")
    after = _skip_space(text, body_end)
    if text.startswith(END, after):
        end = after + len(END)
    elif after < len(text):
        end = len(text) if close == -1 else close + len(END)
        return Block(start, end, None, f"text after a tool call's JSON where {END} belongs: "
                                       f"{text[after:after + 40]!r}")
    else:
        end = after
    call = _as_call(value)
    error = "" if call else f"tool call is not valid JSON: {text[body:body + 80]!r}"
    return Block(start, end, call, error)


def _function_in_block(text: str, start: int, body: int) -> Block:
    """Function markup inside `<tool_call>`: the block ends after `</function>` (so a value may hold a literal
    `</tool_call>`), or, unclosed, at the next `</tool_call>`. Values cannot hold `</parameter>` or `</function>`:
    the markup has no escaping (hermes JSON can carry anything)."""
    close = text.find(FUNCTION_END, body)
    if close != -1:
        function_end = close + len(FUNCTION_END)
        after = _skip_space(text, function_end)
        end = after + len(END) if text.startswith(END, after) else function_end
        return _function_block(text, start, end, _FUNCTION.match(text[:function_end], body))
    close = text.find(END, body)
    end = len(text) if close == -1 else close + len(END)
    return _function_block(text, start, end, _FUNCTION.match(text[: end - len(END) if close != -1 else end], body))


def _function_block(text: str, start: int, end: int, match: re.Match | None) -> Block:
    if match is None:
        return Block(start, end, None, f"tool call is neither JSON nor function markup: {text[start:start + 80]!r}")
    name = match.group(1)
    try:
        arguments = {key: _typed(name, key, value.removeprefix("\n").removesuffix("\n"))
                     for key, value in _PARAMETER.findall(match.group(2))}
    except MalformedToolCall as e:
        return Block(start, end, None, str(e))
    return Block(start, end, {"name": name, "arguments": arguments}, "")


def _typed(tool: str, key: str, value: str):
    """A text parameter converted to the type its tool's schema declares (strings stay as written)."""
    kind = tool_schema(tool)["properties"].get(key, {}).get("type") if tool in TOOL_NAMES else None
    if kind in (None, "string"):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise MalformedToolCall(f"parameter {key} of {tool} is not a valid {kind}: {value[:80]!r}") from None


# ------------------------------------------------------------------------------------ streaming (the vLLM plugin)


@dataclass
class Region:
    """One hermes `<tool_call>` block of a model's output while it streams."""

    start: int
    """Offset of `<tool_call>`."""
    body: str
    """The JSON text (complete or, while streaming, partial)."""
    call: dict | None
    """`{"name": str, "arguments": dict}` once the body is a complete, well-formed call; else None."""
    closed: bool
    """Whether `</tool_call>` followed the body."""


def regions(text: str) -> list[Region]:
    """Every hermes `<tool_call>` block of `text`, in order. The last one may be unfinished (streaming)."""
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
