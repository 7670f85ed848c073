"""Hand-written canonical trajectories covering the shapes the mask must get right."""

import copy

from swehero.data.trajectory import make_tool_call
from swehero.toolspec import openhands_tools


def _traj(tid: str, messages: list[dict], instance_id: str | None = None) -> dict:
    return {
        "id": tid,
        "instance_id": instance_id or f"org__repo-{tid}",
        "repo": "org/repo",
        "source": "test",
        "stage": "zero",
        "messages": copy.deepcopy(messages),  # samples share message dicts; callers may mutate theirs
        "tools": openhands_tools(),
        "patch": "diff --git a/x.py b/x.py\n",
        "resolved": None,
        "metadata": {},
    }


SYSTEM = {"role": "system", "content": "You are OpenHands agent, a helpful AI assistant."}
USER = {"role": "user", "content": "<uploaded_files>\n/workspace/repo\n</uploaded_files>\nFix the bug in parse()."}


def samples() -> list[dict]:
    bash = make_tool_call("c1", "execute_bash", {"command": "grep -rn 'def parse' /workspace/repo"})
    view = make_tool_call(
        "c2", "str_replace_editor", {"command": "view", "path": "/workspace/repo/x.py", "view_range": [1, -1]}
    )
    edit = make_tool_call(
        "c3",
        "str_replace_editor",
        {"command": "str_replace", "path": "/workspace/repo/x.py", "old_str": "a", "new_str": "b"},
    )
    think = make_tool_call("c4", "think", {"thought": "Le bogue est dans parse() — 修复 ✓"})
    finish = make_tool_call("c5", "finish", {"message": "Done."})
    return [
        # several tool calls in one turn, empty content
        _traj(
            "multi",
            [
                SYSTEM,
                USER,
                {"role": "assistant", "content": "", "tool_calls": [bash, view]},
                {"role": "tool", "tool_call_id": "c1", "name": "execute_bash", "content": "x.py:3:def parse(s):"},
                {
                    "role": "tool",
                    "tool_call_id": "c2",
                    "name": "str_replace_editor",
                    "content": "     1\tdef parse(s):\n     2\t    return a",
                },
                {"role": "assistant", "content": "Replace it.", "tool_calls": [edit]},
                {"role": "tool", "tool_call_id": "c3", "content": "The file has been edited."},
                {"role": "assistant", "content": "", "tool_calls": [finish]},
            ],
        ),
        # non-ASCII everywhere, final assistant turn without tool calls, content starting with newlines
        _traj(
            "unicode",
            [
                SYSTEM,
                {"role": "user", "content": "Corrige le bogue: «parse» échoue sur 'ü' 🙂"},
                {"role": "assistant", "content": "Je regarde d'abord.", "tool_calls": [think]},
                {"role": "tool", "tool_call_id": "c4", "content": "Your thought has been logged."},
                {"role": "assistant", "content": "\n\nC'est corrigé: 完成 ✓\n"},
            ],
        ),
        # no system message, plain-text assistant turns between users
        _traj(
            "plain",
            [
                USER,
                {"role": "assistant", "content": "Which file?"},
                {"role": "user", "content": "It is in module x.py, please look."},
                {"role": "assistant", "content": "  Looking at x.py  ", "tool_calls": [view]},
                {"role": "tool", "tool_call_id": "c2", "content": '<html>&lt; {"json": true}</html>'},
                {"role": "assistant", "content": "Fixed."},
            ],
        ),
    ]
