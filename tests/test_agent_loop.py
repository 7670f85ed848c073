"""The agent loop with real tools and sandboxes: the oracle solves toy tasks, malformed replies never crash."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from agent_repos import (BIG, BIG_FIX, CALC, CALC_FIX, LAYOUT, LAYOUT_FIX, PAGES, PAGES_FIX, TWINS, TWINS_FIX, git,
                         make_task)

from swehero.agent.local import LocalRuntime
from swehero.agent.loop import GIVE_UP, KEEP_GOING, LoopConfig, TimeLimit, run_episode
from swehero.agent.oracle import parse_patch, unique_edit
from swehero.agent.policy import Reply
from swehero.agent.run import run_task
from swehero.agent.settings import AgentSettings
from swehero.agent.tools import Tools
from swehero.data.trajectory import Reject, validate
from swehero.distill.filters import FilterConfig, not_one_tool_call
from swehero.toolspec import openhands_tools

pytestmark = pytest.mark.bwrap

TASKS = {"calc": (CALC, CALC_FIX, 3), "twins": (TWINS, TWINS_FIX, 1), "layout": (LAYOUT, LAYOUT_FIX, 3),
         "big": (BIG, BIG_FIX, 0), "pages": (PAGES, PAGES_FIX, 1)}


def applies_like_gold(src, task, patch: str, tmp_path) -> None:
    """The agent's patch leaves the repository exactly as the gold patch does."""
    for name, p in (("gold", task.patch), ("agent", patch)):
        dest = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(src), str(dest)], check=True)
        git(dest, "checkout", "-q", task.base_commit)
        (tmp_path / f"{name}.patch").write_text(p)
        git(dest, "apply", "--unidiff-zero", str(tmp_path / f"{name}.patch"))  # the big task's gold has no context
    assert git(tmp_path / "gold", "status", "--porcelain") == git(tmp_path / "agent", "status", "--porcelain")
    diff = subprocess.run(["diff", "-r", "-x", ".git", str(tmp_path / "gold"), str(tmp_path / "agent")])
    assert diff.returncode == 0


@pytest.mark.parametrize("mode", ["zero", "exec"])
@pytest.mark.parametrize("name", sorted(TASKS))
def test_oracle_solves_toy_tasks(tmp_path, name, mode):
    before, after, context = TASKS[name]
    task = make_task(tmp_path / "src", name, before, after, context)
    out = tmp_path / "traj.json"
    record = run_task(task, AgentSettings(mode=mode, policy="oracle"), out, tmp_path / "src", tmp_path / "work")
    assert json.loads(out.read_text()) == record
    validate(record)
    meta = record["metadata"]
    assert meta["finish_reason"] == "submitted" and not meta["banned"] and meta["editor_errors"] == 0
    assert record["stage"] == {"zero": "zero", "exec": "hero"}[mode]
    assert record["tools"] == openhands_tools()
    assert "/workspace/toy__" in record["messages"][1]["content"]
    assert ("MUST NOT run code" in record["messages"][0]["content"]) == (mode == "zero")
    calls = [m["tool_calls"] for m in record["messages"] if m["role"] == "assistant"]
    assert all(len(c) == 1 for c in calls) and calls[-1][0]["function"]["name"] == "finish"
    tool_ids = [m["tool_call_id"] for m in record["messages"] if m["role"] == "tool"]
    assert tool_ids == [c[0]["id"] for c in calls[:-1]]
    applies_like_gold(tmp_path / "src", task, record["patch"], tmp_path)
    paged = ['"view_range"' in c[0]["function"]["arguments"] for c in calls]
    assert any(paged) == (name == "big")
    # the checkout, sandbox and this attempt's copy of the history go with the runtime (a run shares one per task)
    assert list((tmp_path / "work").iterdir()) == []


def test_oracle_widens_context_until_unique():
    text = TWINS["twins.py"]
    (fp,) = parse_patch("diff --git a/twins.py b/twins.py\n--- a/twins.py\n+++ b/twins.py\n"
                        "@@ -9,3 +9,3 @@ def g():\n     x = 1\n-    y = 2\n+    y = 20\n     z = 3\n")
    (start, old, new), = fp.hunks
    assert text.count("\n".join(old)) == 2
    old_str, new_str = unique_edit(text, start, old, new)
    assert old_str == "def g():\n    x = 1\n    y = 2\n    z = 3\n    return x + y + z" and text.count(old_str) == 1
    assert new_str == old_str.replace("y = 2", "y = 20")


def test_the_oracle_reads_a_dos_files_patch_as_the_editor_reads_the_file():
    """The editor shows and matches a file's \r\n as \n (OpenHands' text mode): so do the hunks."""
    (fp,) = parse_patch("diff --git a/dos.txt b/dos.txt\n--- a/dos.txt\n+++ b/dos.txt\n@@ -1,3 +1,3 @@\n"
                        " one\r\n-two\r\n+2\r\n three\r\n")
    assert fp.hunks == [(1, ["one", "two", "three"], ["one", "2", "three"])]


class Scripted:
    """A policy replaying fixed assistant messages (the conversation still runs through real tools)."""

    def __init__(self, replies: list[dict]) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    def act(self, messages, tools):
        self.seen.append([dict(m) for m in messages])
        return Reply(self.replies.pop(0) if self.replies else call("think", {"thought": f"step {len(self.seen)}"}))


def call(name, args, n=[0]) -> dict:
    n[0] += 1
    arguments = args if isinstance(args, str) else json.dumps(args)
    return {"role": "assistant", "content": "",
            "tool_calls": [{"id": f"c{n[0]}", "type": "function", "function": {"name": name, "arguments": arguments}}]}


@pytest.fixture
def toy(tmp_path):
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    rt = LocalRuntime.for_task(tmp_path / "src", task.base_commit, "/testbed", tmp_path / "work")
    yield task, rt
    rt.close()


def episode(toy, replies, mode="zero", **loop):
    task, rt = toy
    policy = Scripted(replies)
    opening = [{"role": "system", "content": "Fix it."}, {"role": "user", "content": task.problem_statement}]
    return run_episode(task, policy, Tools(rt, mode), opening, LoopConfig(**loop)), policy


def test_malformed_replies_are_answered_as_openhands_answers_them(toy):
    two = call("think", {"thought": "a"})
    two["tool_calls"] += call("think", {"thought": "b"})["tool_calls"]
    record, policy = episode(toy, [
        call("no_such_tool", {"x": 1}),
        call("str_replace_editor", {"path": "/testbed"}),
        {"role": "assistant", "content": "I think I am done."},
        {"role": "assistant", "content": ""},
        two,
        call("str_replace_editor", {"command": "view", "path": "/etc/passwd"}),
        call("finish", {"message": "done"}),
    ], max_consecutive_errors=10)
    validate(record)
    msgs = record["messages"]
    texts = [m["content"] for m in msgs if m["role"] in ("tool", "user")][1:]
    # a call OpenHands' `response_to_actions` refuses: the reply leaves the conversation, the error is a user message
    # (after another user message, two newlines first), and it is no message of the user's for `GIVE_UP`
    assert texts[0] == ("\n\nTool no_such_tool is not registered. (arguments: {'x': 1}). Please check the tool name "
                        "and retry with an existing tool.\n[Error occurred in processing last action]")
    assert texts[1] == ('\n\nMissing required argument "command" in tool call str_replace_editor\n'
                        "[Error occurred in processing last action]")
    assert [m["role"] for m in msgs[:5]] == ["system", "user", "user", "user", "assistant"]
    # OpenHands' answer to a reply without a tool call; from the second on, it offers to give up
    assert texts[2] == KEEP_GOING and texts[3] == KEEP_GOING + GIVE_UP
    assert texts[4] == texts[5] == "Your thought has been logged."  # two calls of one reply run in turn
    assert texts[6].startswith("ERROR:\nInvalid `path` parameter: /etc/passwd. Only files inside the repository")
    assert not any(m["role"] == "assistant" and not m.get("content") and not m.get("tool_calls") for m in msgs)
    meta = record["metadata"]
    assert meta["finish_reason"] == "submitted" and meta["format_errors"] == 5 and meta["editor_errors"] == 1
    assert policy.seen[-1] == msgs[:-1]  # the record is what the model saw, plus its final finish call


def test_an_empty_reply_is_left_out_but_the_quality_filter_still_drops_the_trajectory(toy):
    """The paper drops trajectories with an assistant turn without exactly one tool call: an empty one too, though
    the record leaves it out (its answer stays)."""
    record, _ = episode(toy, [call("execute_bash", {"command": "ls"}), {"role": "assistant", "content": ""},
                              call("finish", {"message": "done"})])
    assert [len(m["tool_calls"]) for m in record["messages"] if m["role"] == "assistant"] == [1, 1]
    assert not_one_tool_call(record, FilterConfig())


@pytest.mark.parametrize("name, arguments, error", [
    ("execute_bash", "{not json", "Failed to parse tool call arguments: {not json"),
    ("execute_bash", "", "Failed to parse tool call arguments: "),
    # JSON Python's decoder refuses all the same (ValueError): a number of 4,300+ digits
    ("execute_bash", '{"timeout": ' + "9" * 5000 + "}", 'Failed to parse tool call arguments: {"timeout": ' + "9" * 5000
     + "}"),
    ("execute_bash", {"command": "ls", "timeout": "soon"}, "Invalid float passed to 'timeout' argument: soon"),
    ("str_replace_editor", {"command": "create", "path": "/testbed/n.py", "file_text": "", "security_risk": "LOW"},
     "Unexpected argument security_risk in tool call str_replace_editor. Allowed arguments are: {'command', 'path', "
     "'file_text', 'old_str', 'new_str', 'insert_line', 'view_range'}"),
])
def test_a_call_openhands_cannot_read_runs_nothing_and_leaves_a_valid_record(toy, name, arguments, error):
    record, _ = episode(toy, [call("execute_bash", {"command": "ls"}), call(name, arguments),
                              call("finish", {"message": "x"})])
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool", "user", "assistant"]
    assert record["messages"][4]["content"] == error + "\n[Error occurred in processing last action]"
    assert record["metadata"]["format_errors"] == 1 and "n.py" not in record["patch"]
    validate(record)  # the broken reply is not in it


@pytest.mark.parametrize("name, arguments", [
    ("execute_bash", '{"command": "echo \\ud83d"}'),
    ("str_replace_editor", '{"command": "view", "path": "/testbed/\\ud83d.txt"}'),
])
def test_a_lone_surrogate_in_a_call_is_an_error_observation_not_the_end_of_the_episode(toy, name, arguments):
    """JSON's `"\\ud83d"` without its pair (half an emoji) is no text a command line or path can hold: the call
    is answered with an error, and the episode goes on to its finish."""
    record, _ = episode(toy, [call(name, arguments), call("execute_bash", {"command": "echo ok"}),
                              call("finish", {"message": "x"})])
    assert record["metadata"]["finish_reason"] == "submitted"
    assert record["messages"][3]["content"].startswith("ERROR: Ran into 'utf-8' codec can't encode character '\\ud83d'")
    assert record["messages"][5]["content"].startswith("ok\n[The command completed with exit code 0.]")


def test_finish_and_think_need_no_argument_in_openhands(toy):
    record, _ = episode(toy, [call("think", {}), call("finish", {})])
    assert record["messages"][-2]["content"] == "Your thought has been logged."
    meta = record["metadata"]
    assert (meta["finish_reason"], meta["finish_message"], meta["format_errors"]) == ("submitted", "", 0)


def test_repeated_failures_end_the_episode_only_with_a_limit_set(toy):
    record, _ = episode(toy, [call("nope", {})] * 5, max_consecutive_errors=3)
    assert record["metadata"]["finish_reason"] == "tool_parse_failures" and record["metadata"]["steps"] == 3
    # by default as in OpenHands, whose controller answers every malformed reply and goes on (different replies:
    # its stuck detector would stop three equal ones)
    record, _ = episode(toy, [call(f"nope{n}", {}) for n in range(6)] + [{"role": "assistant", "content": "hm"}],
                        max_steps=7)
    assert record["metadata"]["finish_reason"] == "step_limit" and record["metadata"]["format_errors"] == 7


def test_whitespace_beside_a_call_is_no_content_and_non_objects_lack_the_argument_as_in_openhands(toy):
    """OpenHands' conversation memory sends an assistant message whose content is only whitespace with its calls
    as one without content; its `"command" in arguments` test reads a string or list without the name as the
    argument missing."""
    spaced = {**call("think", {"thought": "a"}), "content": "  \n"}
    record, _ = episode(toy, [spaced, call("execute_bash", '"ls -la"'), call("str_replace_editor", '["view"]'),
                              call("execute_bash", '"command"'), call("finish", {})])
    assistant = [m for m in record["messages"] if m["role"] == "assistant"]
    assert assistant[0]["content"] == ""
    errors = [m["content"].split("\n[Error")[0] for m in record["messages"] if m["role"] == "user"][1:]
    assert errors == ['Missing required argument "command" in tool call execute_bash',
                      '\n\nMissing required argument "command" in tool call str_replace_editor',
                      '\n\nTool call arguments must be a JSON object, got: "command"']


def test_an_agent_repeating_itself_is_stopped_as_openhands_stops_it(toy):
    """OpenHands' stuck detector, before every step: the same command and result four times ends the episode, also
    between the calls of one reply; the patch is still taken."""
    edit = call("str_replace_editor", {"command": "str_replace", "path": "/testbed/pkg/calc.py",
                                       "old_str": '"""Add."""\n    return a - b', "new_str": '"""Add."""\n    return a + b'})
    record, policy = episode(toy, [edit] + [call("execute_bash", {"command": "ls"})] * 6, mode="exec")
    meta = record["metadata"]
    assert (meta["finish_reason"], meta["steps"]) == ("stuck", 5) and "+    return a + b" in record["patch"]
    four = call("execute_bash", {"command": "ls"})
    four["tool_calls"] *= 5
    record, _ = episode(toy, [four])
    assert record["metadata"]["finish_reason"] == "stuck"
    assert sum(m["role"] == "tool" for m in record["messages"]) == 4  # the fifth call did not run


def test_step_limit(toy):
    record, _ = episode(toy, [], max_steps=4)
    assert record["metadata"]["finish_reason"] == "step_limit" and record["metadata"]["steps"] == 4
    validate(record)


def test_context_budget(toy):
    record, _ = episode(toy, [], max_context_tokens=100)
    assert record["metadata"]["finish_reason"] == "context_limit" and record["metadata"]["steps"] == 0


class Failing(Scripted):
    """Replays its replies, then raises `error` from `act`."""

    def __init__(self, replies: list[dict], error: BaseException) -> None:
        super().__init__(replies)
        self.error = error

    def act(self, messages, tools):
        if not self.replies:
            raise self.error
        return super().act(messages, tools)


def test_a_policy_that_fails_unexpectedly_ends_the_episode_as_an_agent_error_keeping_the_conversation(toy):
    """Not only a `PolicyError`: any exception from the policy (a server's reply it could not read) ends the episode
    as `agent_error`, with its text, the conversation so far and the patch, as a `PolicyError` does; the time limit
    and a stop (BaseExceptions) are not taken for one."""
    task, rt = toy
    edit = call("str_replace_editor", {"command": "str_replace", "path": "/testbed/pkg/calc.py",
                                       "old_str": '"""Add."""\n    return a - b',
                                       "new_str": '"""Add."""\n    return a + b'})
    opening = [{"role": "system", "content": "Fix it."}, {"role": "user", "content": task.problem_statement}]

    def run(replies, error):
        return run_episode(task, Failing(replies, error), Tools(rt, "zero"), opening, LoopConfig())

    record = run([edit], AttributeError("'list' object has no attribute 'get'"))
    meta = record["metadata"]
    assert (meta["finish_reason"], meta["steps"]) == ("agent_error", 1)
    assert meta["error"] == "AttributeError: 'list' object has no attribute 'get'" and meta["error_in"] == "policy"
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool"]
    assert "+    return a + b" in record["patch"]
    validate(record)
    assert run([], TimeLimit())["metadata"]["finish_reason"] == "time_limit"
    with pytest.raises(KeyboardInterrupt):
        run([], KeyboardInterrupt())


def test_a_runtime_that_fails_under_a_call_ends_the_episode_as_an_agent_error_keeping_the_conversation(toy):
    """The sandbox's private folder goes while the model thinks (a /tmp cleaner): the next command cannot start, an
    OSError from the runtime, not the model's fault. The episode ends as `agent_error` naming the call and the
    error, with its conversation so far (the attempt used to keep none), and the patch that could not be taken is
    said so."""
    task, rt = toy
    policy = Scripted([call("str_replace_editor", {"command": "view", "path": "/testbed/pkg/calc.py"}),
                       call("execute_bash", {"command": "ls"})])
    act = policy.act

    def act_then_lose_the_sandbox(messages, tools):
        if len(policy.seen) == 1:
            shutil.rmtree(rt.workdir)
        return act(messages, tools)

    policy.act = act_then_lose_the_sandbox
    opening = [{"role": "system", "content": "Fix it."}, {"role": "user", "content": task.problem_statement}]
    record = run_episode(task, policy, Tools(rt, "zero"), opening, LoopConfig())
    meta = record["metadata"]
    assert (meta["finish_reason"], meta["steps"]) == ("agent_error", 2)
    assert meta["error"].startswith("execute_bash failed in the runtime: FileNotFoundError: "), meta["error"]
    assert meta["error_in"] == "runtime"
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert "No such file or directory" in meta["patch_error"] and record["patch"] == ""


def test_banned_attempts_are_flagged_and_not_run(toy):
    task, rt = toy
    record, _ = episode(toy, [call("execute_bash", {"command": "cd /testbed && pytest -q || touch ran"}),
                              call("execute_bash", {"command": "env PYTHONPATH=. /usr/bin/python3 -m pkg"}),
                              call("finish", {"message": "x"})])
    meta = record["metadata"]
    assert meta["banned"] and meta["banned_commands"] == ["pytest", "python3"]
    assert not (rt.checkout / "ran").exists() and record["patch"] == ""


def test_exec_mode_runs_what_zero_refuses(toy):
    if shutil.which("python3") is None:
        pytest.skip("no python3 on PATH to run")
    command = """bash -c "python3 -c 'open(\\"made_by_exec\\", \\"w\\").write(\\"ran\\")'" """
    replies = [call("execute_bash", {"command": command}), call("finish", {"message": "x"})]
    record, _ = episode(toy, replies, mode="exec")
    assert "+++ b/made_by_exec\n@@ -0,0 +1 @@\n+ran\n\\ No newline at end of file" in record["patch"]
    assert not record["metadata"]["banned"]
