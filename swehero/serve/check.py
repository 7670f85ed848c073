"""`swehero serve check`: do vLLM's tool-call parsers read back exactly the calls we train on?

Each assistant turn is rendered by the data plane's renderer (`swehero.data.render.ChatRenderer`, the text training
sees), cut at the turn's stop token as a server's output would be, and handed to vLLM's own parser classes: the
plugin `swehero serve` uses (`swehero_hermes`) and vLLM's stock `hermes`. A turn matches when the parser returns the
turn's content and the same tool calls (names and decoded arguments, in order), or no call for a turn without one:
then the agent stores the turn as it was trained on, and the model reads it so in later steps.
"""

from __future__ import annotations

import json
from pathlib import Path

PARSERS = {"hermes": ("swehero_hermes", "hermes")}
"""--parser family -> the parsers compared (the one `swehero serve` uses first)."""


def _parser_classes(family: str) -> dict:
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    from swehero.serve.vllm_plugin import JsonAwareHermesToolParser

    classes = {"swehero_hermes": JsonAwareHermesToolParser, "hermes": Hermes2ProToolParser}
    return {name: classes[name] for name in PARSERS[family]}


def _expected(message: dict) -> dict:
    calls = []
    for call in message.get("tool_calls") or []:
        args = call["function"]["arguments"]
        calls.append((call["function"]["name"], json.loads(args) if isinstance(args, str) else args))
    return {"content": message.get("content") or "", "calls": calls}


def _parsed(parser, text: str) -> dict:
    result = parser.extract_tool_calls(text, None)
    if not result.tools_called:
        return {"content": text, "calls": []}
    return {"content": result.content or "",
            "calls": [(c.function.name, json.loads(c.function.arguments)) for c in result.tool_calls]}


def check_trajectories(records: list[dict], tokenizer, family: str = "hermes", examples: int = 3) -> dict:
    """Per parser: turns whose content and calls came back exactly, and the first few that did not."""
    from swehero.data.render import ChatRenderer

    renderer = ChatRenderer(tokenizer)
    parsers = {name: cls(tokenizer) for name, cls in _parser_classes(family).items()}
    report = {"turns": 0, "turns_with_calls": 0,
              "parsers": {name: {"exact": 0, "mismatched": 0, "examples": []} for name in parsers}}
    for record in records:
        text, spans = renderer.spans(record["messages"], record["tools"])
        turns = [m for m in record["messages"] if m["role"] == "assistant"]
        for message, (start, end) in zip(turns, spans):
            output = text[start:end].removesuffix(renderer.turn_end)
            expected = _expected(message)
            report["turns"] += 1
            report["turns_with_calls"] += bool(expected["calls"])
            for name, parser in parsers.items():
                try:
                    got = _parsed(parser, output)
                except Exception as e:  # noqa: BLE001 — a parser crash is a mismatch to report, not the end of the check
                    got = f"{type(e).__name__}: {e}"
                entry = report["parsers"][name]
                if got == expected:
                    entry["exact"] += 1
                    continue
                entry["mismatched"] += 1
                if len(entry["examples"]) < examples:
                    entry["examples"].append({"trajectory": record.get("id"), "expected": expected,
                                              "parsed": got, "text": output[-500:]})
    return report


def read_trajectories(path: Path) -> list[dict]:
    """The canonical trajectories of `path` (JSONL, JSON, Parquet), read and checked as the data commands read them,
    normalised as training renders them; a row that is not one, or a file without any, is an InputError naming it:
    a check of anything else would report on turns training never sees."""
    from swehero.data.sources import iter_trajectories
    from swehero.errors import InputError

    records = list(iter_trajectories(path))
    if not records:
        raise InputError(f"{path}: no trajectories to check")
    return records


def check_file(trajectories: Path, tokenizer_dir: str, family: str, report_file: Path | None) -> tuple[list[str], bool]:
    """`swehero serve check`: one line per parser, and whether the served parser read every turn back exactly;
    the full report (with mismatching examples) goes to `report_file` when given."""
    from swehero.data.render import load_tokenizer
    from swehero.jsonio import write_json_atomic

    tokenizer = load_tokenizer(tokenizer_dir)  # first: a bad --tokenizer is the error, whatever the file holds
    report = check_trajectories(read_trajectories(trajectories), tokenizer, family)
    if report_file:
        write_json_atomic(report_file, report, indent=1)
    lines = [f"{name}: {entry['exact']}/{report['turns']} assistant turns parsed back exactly "
             f"({report['turns_with_calls']} with tool calls)" for name, entry in report["parsers"].items()]
    return lines, not report["parsers"][PARSERS[family][0]]["mismatched"]
