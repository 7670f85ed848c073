"""Replay of execute_bash calls recorded from OpenHands 0.54.0's own bash session (a tmux pane), for the runtimes'
tests: data_fixtures/openhands-0.54.0-bash-session.json, written by data_fixtures/record_openhands_bash_session.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from swehero.agent.bash_session import truncate
from swehero.agent.tools import Tools

RECORDED = json.loads((Path(__file__).parent / "data_fixtures" / "openhands-0.54.0-bash-session.json").read_text())


def replay(runtime, root: str) -> None:
    """Make the recorded calls in `runtime` (a folder `pkg` in its checkout) and compare each observation with
    OpenHands'. Our sandboxes have their own PATH, so the interpreter line OpenHands showed (that of the machine
    it was recorded on) gives way to theirs, where they show one. OpenHands' agent cuts a long observation to its limit
    when it puts it in the conversation; the recorder took it before that."""
    runtime.config = dataclasses.replace(runtime.config, no_output_timeout=RECORDED["no_change_timeout"])
    tools = Tools(runtime, "exec")
    for call in RECORDED["calls"]:
        arguments = {"command": call["command"], "is_input": "true" if call["is_input"] else "false",
                     **({"timeout": call["timeout"]} if call["timeout"] is not None else {})}
        seen = tools.call("execute_bash", arguments).observation
        expected = "\n".join(line for line in call["observation"].replace("{root}", root).split("\n")
                             if not line.startswith("[Python interpreter: "))
        python = [line for line in seen.split("\n") if line.startswith("[Python interpreter: ")]
        if python:
            finished = expected.rindex("\n[Command finished with exit code ")
            expected = f"{expected[:finished]}\n{python[-1]}{expected[finished:]}"
        expected = truncate(expected)
        at = next((i for i, (a, b) in enumerate(zip(seen, expected)) if a != b), min(len(seen), len(expected)))
        assert seen == expected, (f"{call['command']!r}: differs at character {at} ({len(seen)} here, {len(expected)} "
                                  f"in OpenHands): {seen[max(at - 60, 0):at + 60]!r} != "
                                  f"{expected[max(at - 60, 0):at + 60]!r}")
