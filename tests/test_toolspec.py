import json
from pathlib import Path

import pytest

from swehero.toolspec import TOOL_NAMES, openhands_tools, tool_schema


def test_openhands_054_tool_set():
    tools = openhands_tools()
    assert TOOL_NAMES == ("execute_bash", "think", "finish", "str_replace_editor")
    assert "security_risk" not in json.dumps(tools)  # added after 0.54; the released trajectories predate it
    editor = tool_schema("str_replace_editor")
    assert editor["required"] == ["command", "path"]
    assert editor["properties"]["command"]["enum"] == ["view", "create", "str_replace", "insert", "undo_edit"]
    assert editor["properties"]["view_range"] == {
        **editor["properties"]["view_range"],
        "type": "array",
        "items": {"type": "integer"},
    }
    bash = tool_schema("execute_bash")
    assert bash["required"] == ["command"] and bash["properties"]["is_input"]["enum"] == ["true", "false"]
    assert bash["properties"]["timeout"]["type"] == "number"
    assert tool_schema("think")["required"] == ["thought"] and tool_schema("finish")["required"] == ["message"]
    assert all(t["type"] == "function" and t["function"]["description"] for t in tools)


def test_tools_are_openhands_054_own_word_for_word():
    """The definitions CodeActAgent of OpenHands 0.54.0 sends a model that gets the detailed descriptions (every model
    but OpenAI's), as its `codeact_agent/tools/*.py` build them: descriptions, parameters, order. The fixture was
    written by running those files of the 0.54.0 tag."""
    fixture = Path(__file__).parent / "data_fixtures" / "openhands-0.54.0-tools.json"
    # as text: the chat template writes the tools in their key order (`==` on dicts would not see it)
    assert json.dumps(openhands_tools()) == json.dumps(json.loads(fixture.read_text()))


def test_copies_are_independent_and_unknown_names_fail():
    tools = openhands_tools()
    tools[0]["function"]["name"] = "changed"
    assert openhands_tools()[0]["function"]["name"] == "execute_bash"
    with pytest.raises(KeyError, match="known: execute_bash"):
        tool_schema("bash")
