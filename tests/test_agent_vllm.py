"""End to end: the tiny random model served by the real vLLM CPU server drives episodes to the step limit.

A random model writes junk: no tool calls, empty replies, stray `<tool_call>` text. The point is that the loop
turns all of it into observations and the server accepts every conversation the loop builds, for both modes.
Starting vLLM takes ~40 s of CPU; the server (started as `swehero serve` starts it) is always stopped at the end.
"""

from __future__ import annotations


import pytest
from agent_repos import CALC, CALC_FIX, make_task
from tiny_server import tiny_serve_config

from swehero.agent.loop import LoopConfig
from swehero.agent.openai_policy import OpenAIConfig
from swehero.agent.run import run_task
from swehero.agent.settings import AgentSettings
from swehero.serve.server import VLLMServer

pytestmark = [pytest.mark.slow,  # a real vLLM server
              pytest.mark.bwrap]


@pytest.fixture(scope="module")
def vllm_url(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    with VLLMServer(tiny_serve_config(tiny_model_dir), tmp_path_factory.mktemp("vllm") / "server.log") as server:
        yield server.url


@pytest.mark.parametrize("mode", ["zero", "exec"])
def test_tiny_model_episode_runs_to_the_step_limit(vllm_url, tmp_path, mode):
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    config = AgentSettings(mode=mode, policy="openai",
                         loop=LoopConfig(max_steps=4, max_consecutive_errors=1000),
                         openai=OpenAIConfig(base_url=vllm_url, model="", max_reply_tokens=48, request_retries=1))
    record = run_task(task, config, tmp_path / "traj.json", tmp_path / "src", tmp_path / "work")
    meta = record["metadata"]
    assert meta["finish_reason"] == "step_limit", meta
    assert meta["steps"] == 4 and meta["model"] == "tiny"
    assert record["messages"][:2][0]["role"] == "system" and len(record["messages"]) >= 2 + 4
    for m in record["messages"][2:]:
        assert m["role"] in ("assistant", "tool", "user")
        if m["role"] == "assistant":
            assert m["content"] or m.get("tool_calls")


def test_server_accepts_a_conversation_with_tool_calls(vllm_url, tmp_path):
    """An oracle trajectory (tool calls, tool results with ids and names) is a conversation vLLM renders as is."""
    from swehero.agent.openai_policy import OpenAIPolicy

    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    record = run_task(task, AgentSettings(mode="exec", policy="oracle"), None, tmp_path / "src", tmp_path / "work")
    assert record["metadata"]["finish_reason"] == "submitted"
    policy = OpenAIPolicy(OpenAIConfig(base_url=vllm_url, max_reply_tokens=8, request_retries=0))
    reply = policy.act(record["messages"][:-1], record["tools"])
    assert reply.message["role"] == "assistant" and reply.prompt_tokens > 4000
