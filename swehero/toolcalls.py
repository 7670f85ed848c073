"""Tool calls written as text, read the same way everywhere: by the data importers (training data), the agent (a
server that returned its calls as text) and the vLLM plugin (what a served model wrote). Two formats exist:

- hermes (Qwen2.5's chat template): `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`;
- function markup (OpenHands' CodeAct text format, SWE-Gym's trajectories, Qwen3-Coder):
  `<function=NAME>\\n<parameter=KEY>\\nVALUE\\n</parameter>\\n</function>`, inside a `<tool_call>` block or, for
  the importers of text-format trajectories, bare. It is a call only when closed by `</function>`: a text that
  merely names `<function=NAME>` is prose. Values are text, converted to the type the tool's schema declares
  (`swehero.toolspec`); one newline on each side of a value belongs to the markup, as in vLLM's qwen3_coder parser.

vLLM's hermes parser finds calls with the regex `<tool_call>(.*?)</tool_call>`, so a call whose arguments contain
the text `</tool_call>` (an agent editing this very parser, a test fixture, a prompt) is cut short, fails to
decode and is dropped. Here the JSON body is decoded first (`json.JSONDecoder.raw_decode`) and the closing tag is
expected only after it, so every call the chat template can render comes back intact. The text before the first
call may name the tag too (`the parser splits <tool_call> blocks`): a `<tool_call>` that does not open a call is
prose when another `<tool_call>` follows; only the last one failing makes the reply malformed. A whole call the
next call's `<tool_call>` follows without `</tool_call>` between them is a call.

Standard library only: the vLLM plugin is also loaded in vLLM's own environment.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from swehero.toolspec import TOOL_NAMES, tool_schema

START = "<tool_call>"
END = "</tool_call>"
FUNCTION = "<function="
FUNCTION_END = "</function>"
_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)</function>", re.S)
_PARAMETER = re.compile(r"<parameter=([^>\s]+)>(.*?)</parameter>", re.S)


class MalformedToolCall(ValueError):
    pass


def _not_json(constant: str):
    raise json.JSONDecodeError(f"{constant} is not JSON", constant, 0)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # `1e400`: Python reads inf, and would write it back as Infinity
        raise json.JSONDecodeError(f"{text[:20]}... is beyond a float's range", text, 0)
    return value


# Python's decoder also reads NaN and Infinity (and numbers beyond a float's range as inf), which a client's JSON
# decoder refuses in a call's arguments.
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)

MAX_NESTING = 100
"""Arguments nested deeper are no call: how deep Python's decoder can go depends on its version (3.11 and 3.12 stop
near 1,000, 3.13 near 20,000), and the importers, the agent and a vLLM plugin may run on different ones."""


def _nested_too_deeply(value: object) -> bool:
    todo = [(value, 0)]
    while todo:  # not recursive: such a value is what exhausts Python's stack
        item, depth = todo.pop()
        if depth > MAX_NESTING:
            return True
        if isinstance(item, (dict, list)):
            todo += [(inner, depth + 1) for inner in (item.values() if isinstance(item, dict) else item)]
    return False


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


def blocks(text: str, bare_markup: bool = False) -> list[Block]:
    """Every `<tool_call>` block of a finished model output, in order, each parsed or with the reason it could not
    be; with `bare_markup`, a text without `<tool_call>` is read as function markup outside blocks."""
    if bare_markup and START not in text:
        return markup_blocks(text)
    return _tool_call_blocks(text, streaming=False)[0]


def markup_blocks(text: str) -> list[Block]:
    """The calls of a text written as function markup without `<tool_call>` blocks (OpenHands' text format)."""
    return [_function_block(text, m.start(), m.end(), m) for m in _FUNCTION.finditer(text)]


def parse(text: str, markup_only: bool = False, bare_markup: bool = False) -> tuple[str, list[dict]]:
    """Split a finished model output into its content (`content_before`) and its calls: `<tool_call>` blocks (as
    Qwen2.5's template writes them); with `bare_markup`, function markup outside blocks in a text without any;
    with `markup_only`, only function markup outside blocks (a source known to write OpenHands' text format).

    Raises MalformedToolCall when a call does not parse, so callers can report it. A final `<tool_call>` block
    without `</tool_call>` is accepted (generation may stop on the end-of-turn token first).
    """
    found = markup_blocks(text) if markup_only else blocks(text, bare_markup)
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


def arguments_json(arguments: dict) -> str:
    """A call's arguments as JSON text, non-ASCII written as is, as the chat template writes them."""
    return json.dumps(arguments, ensure_ascii=False)


def _tool_call_blocks(text: str, streaming: bool) -> tuple[list[Block], int | None]:
    """The `<tool_call>` blocks of `text` and, while it streams, the offset of a block that cannot be told yet
    (None when there is none). Before the first call, a `<tool_call>` that does not open one is prose when
    another follows (streaming: always, since it is content either way). So is a failed block when another
    follows: a reply's prose cannot hold a call."""
    found: list[Block] = []
    pos = 0
    while (start := text.find(START, pos)) != -1:
        block = _block(text, start, streaming)
        if block is None:
            return found, start
        if block.call is None and not found and (streaming or text.find(START, start + len(START)) != -1):
            pos = start + len(START)
            continue
        found.append(block)
        pos = block.end
    return found, None


def _block(text: str, start: int, streaming: bool) -> Block | None:
    """The block that opens at `start`; None while streaming when the text so far cannot tell what it is."""
    body = _skip_space(text, start + len(START))
    if text.startswith(FUNCTION, body):
        return _function_in_block(text, start, body, streaming)
    if streaming and FUNCTION.startswith(text[body:]):  # nothing yet, or the start of `<function=`
        return None
    return _json_block(text, start, body, streaming)


def _json_block(text: str, start: int, body: int, streaming: bool) -> Block | None:
    try:
        value, body_end = _DECODER.raw_decode(text, body)
    except (ValueError, RecursionError) as e:  # besides bad JSON: 4,300+ digits in a number, or nesting 1,000 deep
        if streaming and isinstance(e, json.JSONDecodeError) and _json_prefix(text[body:], e):
            return None
        return _failed(text, start, body, f"tool call is not valid JSON: {text[body:body + 80]!r}")
    call = _as_call(value)
    if call is None:
        return _failed(text, start, body, f"tool call is not valid JSON: {text[body:body + 80]!r}")
    return _closed(text, start, body, body_end, call, streaming)


def _function_in_block(text: str, start: int, body: int, streaming: bool) -> Block | None:
    """Function markup inside `<tool_call>`: the block ends after `</function>` and `</tool_call>` (so a value
    may hold a literal `</tool_call>`). Values cannot hold `</parameter>` or `</function>`: the markup has no
    escaping (hermes JSON can carry anything)."""
    match = _FUNCTION.match(text, body)
    if match is None:
        if streaming:
            return None
        return _failed(text, start, body, f"tool call is neither JSON nor closed function markup: "
                                          f"{text[start:start + 80]!r}")
    block = _function_block(text, start, match.end(), match)
    if block.call is None:
        return block
    return _closed(text, start, body, match.end(), block.call, streaming)


def _closed(text: str, start: int, body: int, body_end: int, call: dict, streaming: bool) -> Block:
    """A block whose call ends at `body_end`: `</tool_call>` must follow, or nothing (generation stopped before
    it), or the next call's `<tool_call>` (the model left out the closing tag: its call is whole, and taking it
    for prose would run only the next one, where streaming had already sent it), or, while streaming, the first
    characters of either tag."""
    after = _skip_space(text, body_end)
    if text.startswith(END, after):
        return Block(start, after + len(END), call)
    if text.startswith(START, after):
        return Block(start, after, call)
    if after == len(text) or (streaming and (END.startswith(text[after:]) or START.startswith(text[after:]))):
        return Block(start, len(text), call)
    return _failed(text, start, body, f"text after a tool call where {END} belongs: {text[after:after + 40]!r}")


def _failed(text: str, start: int, body: int, error: str) -> Block:
    close = text.find(END, body)
    return Block(start, len(text) if close == -1 else close + len(END), None, error)


def _function_block(text: str, start: int, end: int, match: re.Match) -> Block:
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
    malformed = MalformedToolCall(f"parameter {key} of {tool} is not a valid {kind}: {value[:80]!r}")
    try:
        typed = _DECODER.decode(value)
    except (ValueError, RecursionError):  # see `_json_block`
        raise malformed from None
    if _nested_too_deeply(typed):
        raise malformed
    return typed


def _as_call(value: object) -> dict | None:
    # No `arguments` (`parameters` instead, or none at all): no call, as vLLM's hermes parser reads it; the chat
    # template writes the key for every call, so training never shows a call without it.
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not _is_utf8(value["name"]) \
            or "arguments" not in value:
        return None
    arguments = value["arguments"]
    if isinstance(arguments, str):  # some models double-encode; accept a JSON string holding an object
        try:
            arguments = _DECODER.decode(arguments)
        except (ValueError, RecursionError):  # see `_json_block`
            return None
    # Nor arguments holding a lone surrogate (an escape such as `\ud83d` without its pair): the chat template would
    # write the character itself, which UTF-8 cannot encode, so every later prompt of the episode would fail to
    # tokenize (HTTP 400), and no trajectory holding one can be trained on.
    if not isinstance(arguments, dict) or _nested_too_deeply(arguments) or not _is_utf8(arguments_json(arguments)):
        return None
    return {"name": value["name"], "arguments": arguments}


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


# ------------------------------------------------------------------------------------ streaming (the vLLM plugin)


@dataclass
class Streamed:
    """What a model's output, still streaming, holds so far."""

    content_end: int
    """`text[:content_end]` is content whatever follows (a `<tool_call>` that opens no call included)."""
    calls: list[dict]
    """The calls complete so far, as `parse` will read them."""


def streamed(text: str) -> Streamed:
    """Read a model's output while it streams, as `parse` will read it when finished: a call counts once its body
    is complete, so nothing of a body that cannot become a call is sent; a call after a malformed one neither."""
    found, undecided = _tool_call_blocks(text, streaming=True)
    calls = []
    for block in found:
        if block.call is None:
            break
        calls.append(block.call)
    if found:
        content_end = found[0].start
    elif undecided is not None:
        content_end = undecided
    else:
        content_end = len(text) - _partial_tag(text, START)
    return Streamed(content_end, calls)


def _partial_tag(text: str, tag: str) -> int:
    """Length of the start of `tag` that ends `text` (the tag may be arriving token by token)."""
    return next((n for n in range(min(len(tag) - 1, len(text)), 0, -1) if text.endswith(tag[:n])), 0)


_JSON_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*("|\\?\Z)|[{}\[\]]', re.S)
"""A JSON string (group 1: `"` when closed, else it runs to the end of the text) or a bracket."""
_UNFINISHED_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{0,3})\Z")
_TOKEN_ENDINGS = ("", "0", ":0", '"":0', "rue", "ue", "e", "alse", "lse", "se", "ull", "ll", "l")
"""What completes a JSON text cut between or inside tokens: a value or a number's digits after `:`, `[`, `,`,
`-`, `1.` or `1e`; a member after `{`'s `,`; a key's value; the rest of a literal."""


def _json_prefix(text: str, error: json.JSONDecodeError) -> bool:
    """Whether `text`, which the decoder found cut short or wrong (`error`), is the beginning of a JSON object,
    i.e. some text completes it."""
    if not text.startswith("{"):
        return False
    if error.msg.startswith("Unterminated string"):  # the common case, a long value arriving: all before it read
        return True
    closers = []
    string_end = '"'  # how the last string ends: `"`; a backslash or nothing when it runs to the end of the text
    for m in _JSON_NESTING.finditer(text):
        token = m.group()
        if token in ("{", "["):
            closers.append("}" if token == "{" else "]")
        elif token in ("}", "]"):
            if not closers or closers.pop() != token:
                return False
        else:
            string_end = m.group(1)
    if string_end == '"':
        endings = _TOKEN_ENDINGS
    else:  # the string is open: finish its escape, close it, and give it a value in case it is a key
        escape = _UNFINISHED_ESCAPE.search(text[-6:])
        fill = "n" if string_end == "\\" else "0" * (4 - len(escape.group(1))) if escape else ""
        endings = (fill + '"', fill + '":0')
    rest = "".join(reversed(closers))
    return any(_decodes(text + ending + rest) for ending in endings)


def _decodes(text: str) -> bool:
    try:
        _DECODER.decode(text)
    except (ValueError, RecursionError):  # see `_json_block`
        return False
    return True
