"""Replay of execute_bash calls recorded from OpenHands 0.54.0's own bash session (a tmux pane), for the runtimes'
tests: data_fixtures/openhands-0.54.0-bash-session.json, written by data_fixtures/record_openhands_bash_session.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from swehero.agent.tools import Tools

RECORDED = json.loads((Path(__file__).parent / "data_fixtures" / "openhands-0.54.0-bash-session.json").read_text())


def replay(runtime, root: str) -> None:
    """Make the recorded calls in `runtime` (a folder `pkg` in its checkout) and compare each observation with
    OpenHands', but for the interpreter line: our sandboxes have their own PATH."""
    runtime.config = dataclasses.replace(runtime.config, no_output_timeout=RECORDED["no_change_timeout"])
    tools = Tools(runtime, "exec")
    for call in RECORDED["calls"]:
        arguments = {"command": call["command"], "is_input": "true" if call["is_input"] else "false",
                     **({"timeout": call["timeout"]} if call["timeout"] is not None else {})}
        seen = tools.call("execute_bash", arguments).observation
        seen = "\n".join(line for line in seen.split("\n") if not line.startswith("[Python interpreter: "))
        assert seen == call["observation"].replace("{root}", root), (call, seen)
