"""Replays of tool calls recorded from OpenHands 0.54.0's own components, for the runtimes' tests: execute_bash calls
in its bash session (a tmux pane; data_fixtures/openhands-0.54.0-bash-session.json, written by
data_fixtures/record_openhands_bash_session.py) and str_replace_editor calls through its runtime and openhands-aci
0.3.1's editor (data_fixtures/openhands-aci-0.3.1-editor.json, written by data_fixtures/record_openhands_editor.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import shlex
from pathlib import Path, PurePosixPath

from swehero.agent.bash_session import truncate
from swehero.agent.tools import Tools

from data_fixtures.record_openhands_editor import DIRS, FILES, folder_name

EDITOR_RECORDED = json.loads((Path(__file__).parent / "data_fixtures" / "openhands-aci-0.3.1-editor.json").read_text())
RECORDED = json.loads((Path(__file__).parent / "data_fixtures" / "openhands-0.54.0-bash-session.json").read_text())


UNORDERED = {"grep -n x\\|y sub/m.py"}
"""Recorded calls whose output two processes write at once (`x\\` | `y ...`: grep's error and bash's, from either
side of the pipe): the order of their lines is the scheduler's, here as when OpenHands was recorded (a CI run under
load saw them the other way round), so their lines are compared in sorted order."""


def assert_same(call: str, seen: str, expected: str) -> None:
    """`seen` is OpenHands' observation of `call`; else say where they part."""
    at = next((i for i, (a, b) in enumerate(zip(seen, expected)) if a != b), min(len(seen), len(expected)))
    assert seen == expected, (f"{call}: differs at character {at} ({len(seen)} here, {len(expected)} in OpenHands): "
                              f"{seen[max(at - 60, 0):at + 60]!r} != {expected[max(at - 60, 0):at + 60]!r}")


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
        if call["command"] in UNORDERED:
            seen, expected = ("\n".join(sorted(text.split("\n"))) for text in (seen, expected))
        assert_same(repr(call["command"]), seen, expected)


def replay_editor(runtime, root: str) -> None:
    """Make the recorded str_replace_editor calls on the recorded files in `runtime` (whose repository is shown at
    `root`) and compare each observation, then the files they leave, with OpenHands'."""
    folder = f"{root}/{folder_name(root)}"
    parents = {str(PurePosixPath(folder, name).parent) for name in FILES} | {f"{folder}/{name}" for name in DIRS}
    runtime.execute("mkdir -p " + " ".join(shlex.quote(path) for path in sorted(parents)), 60)
    for name, data in FILES.items():
        runtime.files.write_bytes(f"{folder}/{name}", data)
    tools = Tools(runtime, "exec")
    for call in EDITOR_RECORDED["calls"]:
        arguments = json.loads(json.dumps(call["arguments"]).replace("{folder}", folder))
        seen = tools.call("str_replace_editor", arguments).observation.replace(folder, "{folder}")
        assert_same(str(call["arguments"]), seen, call["observation"])
    listed = runtime.execute(f"cd {shlex.quote(folder)} && find . -type f | cut -c3- | LC_ALL=C sort", 60).output
    left = {name: base64.b64encode(runtime.files.read_bytes(f"{folder}/{name}")).decode()
            for name in listed.split()}
    differ = sorted(set(left.items()) ^ set(EDITOR_RECORDED["files_after"].items()))
    assert not differ, [(path, base64.b64decode(data)[:200]) for path, data in differ]
