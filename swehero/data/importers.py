"""Converters from the trajectory formats people have to the canonical record (see `trajectory.py`).

Each importer maps one source row to one canonical record or raises `Reject`; `validate` runs afterwards.
Sources without a `tools` column get the OpenHands 0.54 tools their teacher saw (`swehero.toolspec`). Tool calls
written as text (`<tool_call>{json}</tool_call>` or OpenHands' `<function=name><parameter=k>v</parameter>`
markup) are parsed into structured `tool_calls` by `swehero.toolcalls`, the reader the agent and the vLLM plugin
use too.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from swehero import toolcalls
from swehero.data.select import Selection
from swehero.data.sources import MAX_REJECT_FRACTION
from swehero.data.trajectory import Reject, make_tool_call, validate, without_nulls
from swehero.errors import InputError
from swehero.toolspec import TOOL_NAMES, openhands_tools

def text_of(content: Any, i: int) -> str:
    """Message `i`'s content as one string; None is empty. OpenAI content-part lists are joined with newlines, as
    vLLM's chat_utils joins text parts for a template that takes string content (and OpenHands serialises them),
    so the model trains on the text it reads at inference; like vLLM, it skips a part whose text is empty."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(text for j, part in enumerate(content) if (text := _part_text(part, i, j)))
    raise Reject("bad_message", f"message {i} content of type {type(content).__name__}")


def _part_text(part: Any, i: int, j: int) -> str | None:
    """The text of content part `j` of message `i`; None for a text part without text, which vLLM skips. A part
    is told by its `type`, not by a `text` key: read from Parquet, every part has every part's fields (one Arrow
    schema), so an image part comes with `text: null`. A part of another type (an image, audio) holds nothing a
    text model can be trained on."""
    if isinstance(part, str):
        return part
    kind, text = (part.get("type"), part.get("text")) if isinstance(part, dict) else (type(part).__name__, None)
    if kind in (None, "text") and isinstance(text, str):
        return text
    if kind == "text" and text is None:
        return None
    raise Reject("bad_message", f"message {i} content part {j} is {kind or 'untyped'!r}, not text")


def parse_text_tool_calls(text: str, prefix: str, markup_only: bool = False) -> tuple[str, list[dict]]:
    """Split assistant text into (content before the first call, structured tool calls), with the reader the agent
    and the vLLM plugin use (`swehero.toolcalls`), so training data and live rollouts read the same text alike.
    With `markup_only`, only OpenHands' `<function=...>` markup is a call: a source known to write its calls that
    way (SWE-Gym) may mention `<tool_call>` in its text, which the shared reader would take for a hermes call.
    The content's trailing whitespace is the source format's spacing before its call (OpenHands' text format
    leaves a blank line), not the model's words: our template writes its own."""
    try:
        content, calls = toolcalls.parse(text, markup_only, bare_markup=True)
    except toolcalls.MalformedToolCall as e:
        raise Reject("invalid_tool_arguments", str(e)) from None
    if not calls:
        return text, []
    return content.rstrip(), [make_tool_call(f"{prefix}_{i}", c["name"], c["arguments"]) for i, c in enumerate(calls)]


# OpenHands' text format for models without native function calling (its `fn_call_converter`): the tool
# descriptions appended to the system message, in later versions an example conversation wrapped around the first
# user message, and tool results sent back as user messages that start `EXECUTION RESULT of [name]:`. Left in
# training data, they would teach a second tool-call format and a system prompt our agent never shows.
_DESCRIBED = "\nYou have access to the following functions:\n\n---- BEGIN FUNCTION #1: "
_DESCRIBED_FUNCTION = re.compile(
    r"---- BEGIN FUNCTION #(\d+): (\S+) ----\nDescription: (.*?)\n"
    r"(?:Parameters: (\{.*?\})\n|Parameters:\n(.*?)|No parameters are required for this function\.\n)"
    r"---- END FUNCTION #\1 ----", re.S)
_PROSE_PARAMETER = re.compile(r"^  \((\d+)\) (\S+) \(([^,()]+), (required|optional)\): ", re.M)
"""A parameter as later versions describe it: `  (1) command (string, required): ...`, then its description,
which may run over several lines and end with `Allowed values: [`a`, `b`]`."""
_EXAMPLE_START = "Here's a running example of how to perform a task with the provided tools."
_EXAMPLE_END = "--------------------- NEW TASK DESCRIPTION ---------------------\n"
_TASK_END = "--------------------- END OF NEW TASK DESCRIPTION ---------------------\n\nPLEASE follow the format"
"""Written after the task with a newline before it; before OpenHands 0.18 without one (the suffix was lstripped)."""
_RESULT = re.compile(r"EXECUTION RESULT of \[(.*?)\]:\n")


def from_openhands_text_format(messages: list[dict]) -> tuple[list[dict], list[dict] | None]:
    """Undo OpenHands' text format, as its own `convert_non_fncall_messages_to_fncall_messages` does: the system
    message loses the tool descriptions, the first user message the example, and a result becomes a `tool` message
    holding what the tool printed. Returns the messages and the tools the system message described: as written when
    every description gives its parameters as JSON (SWE-Gym's version), the OpenHands 0.54 set when they are prose
    (other versions), None when the system message describes none."""
    out, tools, first_user = [], None, True
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            out.append(m)
            continue
        role, content = m.get("role"), text_of(m.get("content"), i)
        if role == "system" and (cut := content.find(_DESCRIBED)) != -1:
            tools = _described_tools(content[cut:])
            m = {**m, "content": content[:cut]}
        elif role == "user" and first_user:
            first_user = False
            if content.lstrip().startswith(_EXAMPLE_START) and _EXAMPLE_END in content:
                content = content[content.index(_EXAMPLE_END) + len(_EXAMPLE_END):]
            if (cut := content.rfind(_TASK_END)) != -1:
                content = content[:cut].removesuffix("\n")
            m = {**m, "content": content}
        elif role in ("user", "tool") and (result := _RESULT.match(content)):
            m = {**m, "role": "tool", "name": result.group(1), "content": content[result.end():]}
        out.append(m)
    return out, tools


def _described_tools(text: str) -> list[dict]:
    """The tools a system message describes. As written where it gives their parameters as JSON; where it gives
    them in prose, the OpenHands 0.54 set when it names only OpenHands tools (the schema our agent offers them
    with; prose loses some of it), else the tools the prose describes (SWE-agent's `bash`, `submit`, ...: calls to
    them must find them in the record)."""
    found = list(_DESCRIBED_FUNCTION.finditer(text))
    if not found or len(found) != text.count("---- BEGIN FUNCTION #"):
        return openhands_tools()
    tools, prose = [], False
    for match in found:
        function = {"name": match.group(2), "description": match.group(3)}
        if match.group(4):
            try:
                function["parameters"] = json.loads(match.group(4))
            except json.JSONDecodeError:
                return openhands_tools()
        elif match.group(5) is not None:
            prose = True
            function["parameters"] = _prose_parameters(match.group(5))
            if function["parameters"] is None:
                return openhands_tools()
        tools.append({"type": "function", "function": function})
    if prose and {t["function"]["name"] for t in tools} <= set(TOOL_NAMES):
        return openhands_tools()
    return tools


def _prose_parameters(text: str) -> dict | None:
    """A JSON schema from a prose parameter list (OpenHands' `convert_tools_to_description`); None if it is not
    one. What prose does not say (array item types, defaults) is not there."""
    parts = _PROSE_PARAMETER.split(text)
    if parts[0]:  # text before the first parameter line
        return None
    properties, required = {}, []
    for i in range(1, len(parts), 5):
        number, name, kind, status, description = parts[i:i + 5]
        if int(number) != len(properties) + 1:
            return None
        prop = {"type": kind, "description": description.removesuffix("\n")}
        if allowed := re.search(r"\nAllowed values: \[((?:`[^`]*`(?:, )?)*)\]$", prop["description"]):
            prop["description"] = prop["description"][:allowed.start()]
            prop["enum"] = re.findall(r"`([^`]*)`", allowed.group(1))
        properties[name] = prop
        if status == "required":
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def openai_tools(tools: Any) -> list:
    """A `tools` column as OpenAI tools: bare function definitions (`{name, description, parameters}`, as
    LLaMA-Factory's ShareGPT format stores them) are wrapped in `{type: function, function: ...}`, the form vLLM
    renders at inference, so training renders the same system prompt."""
    tools = without_nulls(_json_field(tools) or [])
    if not isinstance(tools, list):
        raise Reject("bad_field", "tools must be a list")
    return [{"type": "function", "function": t} if isinstance(t, dict) and "function" not in t and "name" in t
            else t for t in tools]


def openai_messages(messages: list[dict], parse_text_calls: bool = False, markup_only: bool = False) -> list[dict]:
    """Normalise OpenAI-style messages: string content, `tool_calls` with JSON-string arguments, and tool results
    linked to their calls by order where `tool_call_id` is missing. With `parse_text_calls`, calls written in an
    assistant message's text become `tool_calls` (only `<function=...>` markup with `markup_only`), and a user
    message right after such a turn is its result: a scaffold without function calling (OpenHands' text format,
    SWE-agent's) answers a call that way. OpenAI's legacy `function_call` (one call without an id, answered by a
    `function` message) is the same call as a one-element `tool_calls`, and becomes one: vLLM would drop the
    field, and the turn would train as if the model had stopped without calling."""
    out: list[dict] = []
    pending: list[str] = []  # ids of the last assistant turn's calls not yet answered
    from_text = False  # those calls were written as text
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise Reject("bad_message", f"message {i} is not an object")
        role, content = m.get("role"), text_of(m.get("content"), i)
        if role == "user" and from_text and pending and out[-1]["role"] == "assistant":
            role = "tool"
        if role == "assistant":
            raw_calls = m.get("tool_calls") or []
            if m.get("function_call"):
                if raw_calls:
                    raise Reject("bad_message", f"message {i} has both tool_calls and a legacy function_call")
                raw_calls = [{"function": m["function_call"]}]
            try:  # a call's reject names its message, as every other detail does
                calls = [_openai_call(c, f"call_{i}_{j}") for j, c in enumerate(raw_calls)]
                from_text = parse_text_calls and not calls
                if from_text:
                    content, calls = parse_text_tool_calls(content, f"call_{i}", markup_only)
            except Reject as e:
                raise Reject(e.reason, f"message {i}: {e.detail}") from None
            pending = [c["id"] for c in calls]
            msg = {"role": "assistant", "content": content}
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        elif role in ("tool", "function"):
            call_id = m.get("tool_call_id") or (pending[0] if pending else f"call_{i}")
            pending = [p for p in pending if p != call_id]
            msg = {"role": "tool", "tool_call_id": call_id, "content": content}
            if m.get("name"):
                msg["name"] = m["name"]
            out.append(msg)
        else:
            out.append({"role": role, "content": content})
    return out


def _openai_call(call: Any, default_id: str) -> dict:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict):
        raise Reject("bad_tool_call", "tool call without function")
    # no default: an empty or missing `arguments` is no JSON object, and vLLM could not render it either
    arguments = fn.get("arguments")
    if isinstance(arguments, dict):
        # An object cannot say whether a null is the model's or Arrow's filling (Parquet, or JSONL exported from
        # a `datasets` table); a JSON string is what the model wrote, nulls included, and is kept as is.
        arguments = without_nulls(arguments)
    return make_tool_call(call.get("id") or default_id, fn.get("name") or "", arguments)


def _json_field(value: Any) -> Any:
    """Columns some releases store as JSON strings (`messages`, `tools`)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise Reject("malformed_json", f"embedded JSON: {e}") from None
    return value


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _require(row: dict, *fields: str) -> None:
    for f in fields:
        if row.get(f) is None:
            raise Reject("missing_field", f)


def _resolved(value: Any) -> bool | None:
    return None if value is None else bool(value)


def nvidia(row: dict, where: str, stage: str | None) -> dict:
    """nvidia/SWE-{Zero,Hero}-openhands-trajectories: OpenAI messages, no tools column, no resolved label."""
    _require(row, "instance_id", "trajectory")
    return {
        "id": row.get("trajectory_id") or f"{row['instance_id']}@{where}",
        "instance_id": row["instance_id"],
        "repo": row.get("repo") or "",
        "source": f"nvidia/{row.get('dataset') or 'openhands'}",
        "stage": stage,
        "messages": openai_messages(_json_field(row["trajectory"])),
        "tools": openhands_tools(),
        "patch": row.get("model_patch") or "",
        "resolved": None,
        "metadata": {"license": row.get("license")},
    }


def nebius(row: dict, where: str, stage: str | None) -> dict:
    """nebius/SWE-rebench-openhands-trajectories: OpenAI messages with their own `tools` and a 0/1 `resolved`."""
    _require(row, "instance_id", "trajectory", "tools")
    return {
        "id": row.get("trajectory_id") or f"{row['instance_id']}@{where}",
        "instance_id": row["instance_id"],
        "repo": row.get("repo") or "",
        "source": "nebius/swe-rebench-openhands",
        "stage": stage,
        "messages": openai_messages(_json_field(row["trajectory"])),
        "tools": openai_tools(row["tools"]),
        "patch": row.get("model_patch") or "",
        "resolved": _resolved(row.get("resolved")),
        "metadata": {"exit_status": row.get("exit_status")},
    }


def swe_gym(row: dict, where: str, stage: str | None) -> dict:
    """SWE-Gym/OpenHands-SFT-Trajectories: OpenHands' text format (`<function=...>` calls inside assistant text,
    the environment's answer as the next user message), undone; releases with function calling and a `tools`
    column keep their tools."""
    _require(row, "messages")
    raw, described = from_openhands_text_format(_json_field(row["messages"]))
    messages = openai_messages(raw, parse_text_calls=True, markup_only=True)
    instance_id = row.get("instance_id") or where
    return {
        "id": row.get("id") or f"swe-gym@{where}",
        "instance_id": instance_id,
        "repo": row.get("repo") or "",
        "source": "swe-gym/openhands-sft",
        "stage": stage,
        "messages": messages,
        "tools": openai_tools(row.get("tools")) or described or openhands_tools(),
        "patch": row.get("patch") or "",
        "resolved": _resolved(row.get("resolved")),
        "metadata": {},
    }


def swe_smith(row: dict, where: str, stage: str | None) -> dict:
    """SWE-smith trajectories: `messages` as a JSON string, `traj_id`, `patch`, `resolved`, `model`."""
    _require(row, "instance_id", "messages")
    raw, described = from_openhands_text_format(_json_field(row["messages"]))  # the text split describes its tools
    return {
        "id": row.get("traj_id") or f"{row['instance_id']}@{where}",
        "instance_id": row["instance_id"],
        "repo": row.get("repo") or "",
        "source": "swe-smith",
        "stage": stage,
        "messages": openai_messages(raw, parse_text_calls=True),
        "tools": openai_tools(row.get("tools")) or described or [],
        "patch": row.get("patch") or "",
        "resolved": _resolved(row.get("resolved")),
        "metadata": {"model": row.get("model")},
    }


_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function_call": "assistant",
}


def sharegpt(row: dict, where: str, stage: str | None) -> dict:
    """ShareGPT-style `conversations: [{from, value}]` with an optional `system` column; `function_call` turns carry
    `{"name", "arguments"}` JSON or a list of such calls made at once (LLaMA-Factory), or a call written as text, as
    `gpt` turns may (`<tool_call>` JSON, OpenHands' `<function=...>` markup, whose text format is undone as for
    SWE-Gym). The record is validated here, so that a reject names a message as the row numbers it (`turn 1` is
    `conversations[1]`), where the record's messages count a `system` column first."""
    try:
        return validate(_sharegpt(row, where, stage))
    except Reject as e:
        raise Reject(e.reason, _turn_named(e.detail, bool(row.get("system")))) from None


def _turn_named(detail: str, system_column: bool) -> str:
    """A reject's detail with the record's `message i` named as in the ShareGPT row: `turn j` for
    `conversations[j]`, or its `system` column."""
    found = re.match(r"message (\d+)", detail)
    if found is None:
        return detail
    turn = int(found.group(1)) - system_column
    return ("the `system` column" if turn < 0 else f"turn {turn}") + detail[found.end():]


def _sharegpt(row: dict, where: str, stage: str | None) -> dict:
    _require(row, "conversations")
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for i, turn in enumerate(_json_field(row["conversations"])):
        role = _SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise Reject("unknown_role", f"turn {i} from {turn.get('from')!r}")
        if role == "system" and messages:
            raise Reject("bad_message", f"turn {i} is a system turn and the row has a `system` column or turn")
        value = turn.get("value") or ""
        calls = _json_or_none(value) if turn["from"] == "function_call" else None
        if isinstance(calls, dict):  # one call, or a list of calls made at once: LLaMA-Factory reads both
            calls = [calls]
        if isinstance(calls, list) and all(isinstance(call, dict) for call in calls):
            value = "\n".join(f"<tool_call>{json.dumps(call)}</tool_call>" for call in calls)
        messages.append({"role": role, "content": value})
    messages, described = from_openhands_text_format(messages)
    instance_id = row.get("instance_id") or row.get("id") or where
    return {
        "id": row.get("id") or f"sharegpt@{where}",
        "instance_id": instance_id,
        "repo": row.get("repo") or "",
        "source": "sharegpt",
        "stage": stage,
        "messages": openai_messages(messages, parse_text_calls=True),
        "tools": openai_tools(row.get("tools")) or described or [],
        "patch": row.get("patch") or "",
        "resolved": _resolved(row.get("resolved")),
        "metadata": {},
    }


def swe_agent(row: dict, where: str, stage: str | None) -> dict:
    """A SWE-agent `.traj` file: the model's view of the run is `history` (OpenAI-like messages with extra keys);
    the instance id is the file name's stem, the patch `info.submission`."""
    _require(row, "history")
    info = row.get("info") or {}
    # `where` is the file, with `:LINE` or `#ROW` after it for files of many rows: only that suffix goes (a run
    # folder may be named with a time, `run_2024-05-01T12:00:00`)
    instance_id = row.get("instance_id") or Path(re.sub(r"[:#]\d+$", "", where)).stem
    messages = openai_messages(row["history"], parse_text_calls=True)
    return {
        "id": f"swe-agent@{where}",
        "instance_id": instance_id,
        "repo": "",
        "source": "swe-agent",
        "stage": stage,
        "messages": messages,
        "tools": openai_tools(row.get("tools")),
        "patch": info.get("submission") or "",
        "resolved": None,
        "metadata": {"exit_status": info.get("exit_status")},
    }


IMPORTERS: dict[str, Callable[[dict, str, str | None], dict]] = {
    "nvidia": nvidia,
    "nebius": nebius,
    "swe-gym": swe_gym,
    "swe-smith": swe_smith,
    "sharegpt": sharegpt,
    "swe-agent": swe_agent,
    "canonical": lambda row, where, stage: row,
}
"""Format name (the `--format` of `swehero data import`) -> converter."""
Format = Literal[tuple(IMPORTERS)]

FOLDER_SUFFIXES = {"swe-agent": (".traj",)}
"""The files read in a folder of the format, where not every data file: a SWE-agent run folder holds `preds.json`
(and config files) beside its trajectories."""
ID_COLUMNS = {"nvidia": "trajectory_id", "nebius": "trajectory_id", "swe-smith": "traj_id", "swe-agent": None}
"""Format -> the column holding a row's own id (`id` where not listed), which the rejects file names."""


def import_files(
    paths: list[str], fmt: str, out: Path, stage: str | None = None, max_reject_fraction: float = MAX_REJECT_FRACTION,
    selection: Selection = Selection(),
) -> dict:
    """Convert every row of `paths` from format `fmt` into canonical JSONL at `out` (written to a temporary file
    and renamed, so `out` is never half-written); rejects go to `<out>.rejects.jsonl`. With an active
    `selection`, only the trajectories it picks are kept (see `swehero.data.select`). Returns counts: rows read,
    written, rejected by reason, distinct tasks, records per source; with a selection, also what it kept."""
    from swehero.data.select import select_lines
    from swehero.data.sources import SUFFIXES, checked_output, expand, read_rows
    from swehero.progress import progress

    convert, id_column = IMPORTERS[fmt], ID_COLUMNS.get(fmt, "id")
    written: list[tuple[str, str]] = []  # (instance_id, id) of each line written
    sources: Counter[str] = Counter()
    with checked_output(out, max_reject_fraction, paths) as (tmp, rejects, n):
        with open(tmp, "w", encoding="utf-8") as f, progress("import", " rows") as bar:
            for path in expand(paths, FOLDER_SUFFIXES.get(fmt, SUFFIXES)):
                for where, row in read_rows(path):
                    n["read"] += 1
                    bar.update()
                    try:
                        if isinstance(row, Reject):
                            raise row
                        if not isinstance(row, dict):
                            raise Reject("not_an_object", type(row).__name__)
                        record = validate(convert(row, where, stage))
                    except Reject as r:
                        rejects.add(where, r, row.get(id_column) if id_column and isinstance(row, dict) else None)
                        continue
                    except Exception as e:  # a row shaped as no importer check foresaw: say which, not a traceback
                        raise InputError(f"{where}: cannot import this row as {fmt}: {type(e).__name__}: {e}") from e
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                    written.append((record["instance_id"], record["id"]))
                    sources[record["source"]] += 1
        counts = {"read": n["read"], "written": len(written), "rejected": dict(rejects.counts),
                  "instances": len({instance for instance, _ in written}), "sources": dict(sources)}
        if selection.active:
            counts["selected"] = select_lines(tmp, written, selection)
    return counts

