"""`swehero agent tool` and `swehero agent run` (the click group, as the root CLI will mount it)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from agent_repos import CALC, CALC_FIX, TWINS, TWINS_FIX, make_task
from click.testing import CliRunner
from json_server import JsonServer

from swehero.agent.cli import agent
from swehero.cli import main
from swehero.data.trajectory import validate

pytestmark = pytest.mark.bwrap


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_tool_runs_one_call_and_prints_the_observation(tmp_path):
    make_task(tmp_path / "repo", "calc", CALC, CALC_FIX)
    runner = CliRunner()
    result = runner.invoke(agent, ["tool", "--repo", str(tmp_path / "repo"), "--mode", "zero", "str_replace_editor",
                                   json.dumps({"command": "view", "path": "/testbed/pkg/calc.py"})])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Here's the result of running `cat -n` on /testbed/pkg/calc.py:\n")
    result = runner.invoke(agent, ["tool", "--repo", str(tmp_path / "repo"), "--mode", "zero", "execute_bash",
                                   json.dumps({"command": "python3 -m pytest"})])
    assert result.exit_code == 1 and "Command refused" in result.output
    result = runner.invoke(agent, ["tool", "--repo", str(tmp_path / "repo"), "execute_bash",
                                   json.dumps({"command": "git log --oneline | wc -l"})])
    assert result.output.startswith("2\n[The command completed with exit code 0.]")
    # a root that is no absolute path ran the call with no working folder; one that leads into the sandbox's own
    # folders is refused as `/tmp` itself is
    for root, message in (("", "the agent root must be an absolute path, got ''"),
                          ("ws", "the agent root must be an absolute path, got 'ws'"),
                          ("/ws/../tmp", "the repository cannot appear at /tmp inside the sandbox"),
                          ("//tmp", "the repository cannot appear at /tmp inside the sandbox")):
        result = runner.invoke(main, ["agent", "tool", "--repo", str(tmp_path / "repo"), "--root", root,
                                      "execute_bash", json.dumps({"command": "pwd"})])
        assert result.exit_code == 1 and result.output.startswith(f"Error: {message}"), (root, result.output)


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_run_with_the_oracle_writes_a_valid_trajectory(tmp_path):
    task = make_task(tmp_path / "repo", "calc", CALC, CALC_FIX)
    (tmp_path / "task.json").write_text(json.dumps([asdict(task), {**asdict(task), "instance_id": "other"}]))
    out = tmp_path / "traj.json"
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["agent", "run", "--task", str(tmp_path / "task.json"), "--instance-id",
                                       task.instance_id, "--repo-dir", str(tmp_path / "repo"), "--policy", "oracle",
                                       "--mode", "exec", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # the SIGTERM handler was the command line's own (swehero.cli): a process forked later by the caller must not
    # inherit it
    assert signal.getsignal(signal.SIGTERM) is before
    assert result.output.startswith(f"{task.instance_id}: submitted after ")
    record = validate(json.loads(out.read_text()))
    assert record["stage"] == "hero" and "+    return a + b" in record["patch"]
    (tmp_path / "not-a-clone").mkdir()  # a wrong --repo-dir is one line, not a traceback
    result = CliRunner().invoke(main, ["agent", "run", "--task", str(tmp_path / "task.json"), "--instance-id",
                                       task.instance_id, "--repo-dir", str(tmp_path / "not-a-clone"), "--policy",
                                       "oracle", "--out", str(tmp_path / "none.json")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: no git repository for toy/calc at {tmp_path / 'not-a-clone'}: clone")
    assert not (tmp_path / "none.json").exists()
    other = make_task(tmp_path / "other-repo", "twins", TWINS, TWINS_FIX)  # another repository
    result = CliRunner().invoke(main, ["agent", "run", "--task", str(tmp_path / "task.json"), "--instance-id",
                                       task.instance_id, "--repo-dir", str(tmp_path / "other-repo"), "--policy",
                                       "oracle", "--out", str(tmp_path / "none.json")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output  # was git's CalledProcessError
    assert result.output.startswith(f"Error: {tmp_path / 'other-repo'}: no commit {task.base_commit} (the task's "
                                    "base_commit) in this repository"), (result.output, other.base_commit)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_run_keeps_the_time_limit_as_an_attempt_does(tmp_path):
    """`--time-limit-s` was taken and not kept by `agent run` (while its container's lifetime was cut to it). A
    model that thinks a second a turn is stopped at the limit, the episode a `time_limit` with its patch so far;
    a server that does not say its model within the limit is the command's error, naming what setup was doing. The
    caller's SIGALRM handler is its own again after."""
    task = make_task(tmp_path / "repo", "calc", CALC, CALC_FIX)
    (tmp_path / "task.json").write_text(json.dumps(asdict(task)))
    edit = {"command": "str_replace", "path": f"/workspace/toy__calc__{task.version}/pkg/calc.py",
            "old_str": '"""Add."""\n    return a - b', "new_str": '"""Add."""\n    return a + b'}

    def answer(method, path, body):
        if method == "GET":  # the model's name, asked for when none is given
            time.sleep(16)
            return 200, {"data": [{"id": "m"}]}
        time.sleep(1)
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        name, arguments = ("str_replace_editor", edit) if turn == 0 else ("think", {"thought": f"hm {turn}"})
        return 200, {"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{turn}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]}}]}

    server = JsonServer(answer)
    before = signal.getsignal(signal.SIGALRM)
    args = ["agent", "run", "--task", str(tmp_path / "task.json"), "--repo-dir", str(tmp_path / "repo"), "--mode",
            "zero", "--time-limit-s", "8", "--base-url", server.url, "--out", str(tmp_path / "traj.json")]
    try:
        start = time.monotonic()
        result = CliRunner().invoke(main, [*args, "--model", "m"])
        took = time.monotonic() - start
        slow = CliRunner().invoke(main, args)
    finally:
        server.close()
    assert result.exit_code == 0, result.output
    # Ended near the limit: the margin is for a loaded machine (a CI run took 14.6 s at a limit of 4 s, another spent
    # more than 4 s checking out the toy repository)
    assert result.output.startswith(f"{task.instance_id}: time_limit after ") and 8 <= took < 40, (result.output, took)
    record = validate(json.loads((tmp_path / "traj.json").read_text()))
    assert record["metadata"]["finish_reason"] == "time_limit" and "+    return a + b" in record["patch"]
    assert slow.exit_code == 1, slow.output
    # (the server's threads may have said that the client went away)
    assert (f"Error: time limit 8s reached while starting the openai policy: asking {server.url} for its model"
            in slow.output.splitlines()), slow.output
    assert signal.getsignal(signal.SIGALRM) is before


def test_agent_imports_stay_light():
    """The agent never pulls in torch, Megatron, vLLM, transformers or the Docker SDK just by being imported."""
    code = ("import sys, swehero.agent.cli, swehero.agent.run, swehero.rollout.runner, swehero.agent.container; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'megatron', 'vllm', 'transformers', 'docker', 'datasets'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
