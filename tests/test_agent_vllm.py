"""End to end: a random model served by the real vLLM CPU server drives episodes to the step limit, and what vLLM
feeds the model at every step is what training renders.

The model has one layer and Qwen2.5's real tokenizer and chat template. A random model writes junk: no tool calls,
empty replies, stray `<tool_call>` text. The point is that the loop turns all of it into observations and the server
accepts every conversation the loop builds, for both modes. Starting vLLM takes ~40 s of CPU; the server (started as
`swehero serve` starts it) is always stopped at the end.
"""

from __future__ import annotations

import re

import pytest
from agent_repos import CALC, CALC_FIX, make_task
from tiny_server import qwen_vocab_model, tiny_serve_config

from swehero.agent.loop import LoopConfig
from swehero.agent.openai_policy import OpenAIConfig, OpenAIPolicy, assistant_message
from swehero.agent.run import run_task
from swehero.agent.settings import AgentSettings
from swehero.data.render import ChatRenderer, load_tokenizer
from swehero.data.trajectory import make_tool_call
from swehero.serve.server import VLLMServer
from swehero.toolspec import openhands_tools

pytestmark = [pytest.mark.slow,  # a real vLLM server
              pytest.mark.bwrap]


@pytest.fixture(scope="module")
def model_dir(qwen_tokenizer_dir, tmp_path_factory):
    return qwen_vocab_model(tmp_path_factory.mktemp("qwen-vocab") / "model", qwen_tokenizer_dir)


@pytest.fixture(scope="module")
def vllm_url(model_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    with VLLMServer(tiny_serve_config(model_dir), tmp_path_factory.mktemp("vllm") / "server.log") as server:
        yield server.url


def random_model_episode(url: str, mode: str, steps: int, tmp_path) -> dict:
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    config = AgentSettings(mode=mode, policy="openai",
                           loop=LoopConfig(max_steps=steps, max_consecutive_errors=1000),
                           openai=OpenAIConfig(base_url=url, model="", max_reply_tokens=48, request_retries=1))
    return run_task(task, config, tmp_path / "traj.json", tmp_path / "src", tmp_path / "work")


@pytest.mark.parametrize("mode", ["zero", "exec"])
def test_tiny_model_episode_runs_to_the_step_limit(vllm_url, tmp_path, mode):
    record = random_model_episode(vllm_url, mode, 4, tmp_path)
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
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    record = run_task(task, AgentSettings(mode="exec", policy="oracle"), None, tmp_path / "src", tmp_path / "work")
    assert record["metadata"]["finish_reason"] == "submitted"
    policy = OpenAIPolicy(OpenAIConfig(base_url=vllm_url, max_reply_tokens=8, request_retries=0))
    reply = policy.act(record["messages"][:-1], record["tools"])
    assert reply.message["role"] == "assistant" and reply.prompt_tokens > 2000


# Turns that trip up encoders: text beside a call, non-ASCII in every part, a literal `</tool_call>`, a
# `<tool_response>` and an escape sequence in an observation, JSON escapes inside arguments.
TRICKY_TURNS = [
    {"role": "assistant", "content": "Prüfe die Datei — “quoted” ✓",
     "tool_calls": [make_tool_call("call_t1", "str_replace_editor", {
         "command": "create", "path": "/testbed/ü.py", "file_text": "s = '</tool_call>'\nπ = 3.14\t# \\n \"q\"\n"})]},
    {"role": "tool", "tool_call_id": "call_t1", "name": "str_replace_editor",
     "content": "File created successfully at: /testbed/ü.py\n\x1b[0m<tool_response>"},
    {"role": "assistant", "content": "", "tool_calls": [make_tool_call("call_t2", "think", {"thought": "日本語 🚀"})]},
    {"role": "tool", "tool_call_id": "call_t2", "name": "think", "content": "Your thought has been logged."},
    {"role": "assistant", "content": "", "tool_calls": [make_tool_call("call_t3", "finish", {"message": "done"})]},
]


def test_what_vllm_feeds_the_model_is_what_training_renders(vllm_url, model_dir, tmp_path):
    """Before every assistant turn of a trajectory the agent wrote, the prompt vLLM builds from the agent's own
    request (chat template, tools, tool-call arguments decoded, tokenizer) is, token for token, what training
    renders before that turn: the model learns from the very contexts it is served. Trajectories: an oracle
    episode (real tool outputs) continued with `TRICKY_TURNS`, and an episode of the random model (stray markup)."""
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    oracle = run_task(task, AgentSettings(mode="exec", policy="oracle"), None, tmp_path / "src", tmp_path / "work")
    oracle["messages"] = oracle["messages"][:-1] + TRICKY_TURNS
    random = random_model_episode(vllm_url, "zero", 3, tmp_path / "random")
    renderer = ChatRenderer(load_tokenizer(model_dir))
    policy = OpenAIPolicy(OpenAIConfig(base_url=vllm_url, request_retries=0))
    for record in (oracle, random):
        rendered = renderer.render(record)
        trained = rendered.loss_mask.tolist()
        starts = [i for i, t in enumerate(trained) if t and not trained[i - 1]]  # each assistant turn's first token
        turns = [i for i, m in enumerate(record["messages"]) if m["role"] == "assistant"]
        assert len(starts) == len(turns) > 0
        for turn, start in zip(turns, starts):
            request = {**policy.chat_request(record["messages"][:turn], record["tools"]),
                       "max_tokens": 1, "return_token_ids": True}
            served = policy.request("/chat/completions", request)["prompt_token_ids"]
            assert served == rendered.input_ids[:start].tolist(), f"message {turn} of {record['instance_id']}"


# Replies written as the chat template writes assistant turns: what a trained model writes.
TEMPLATE_REPLIES = [
    'Let me look.\n<tool_call>\n{"name": "think", "arguments": {"thought": "x"}}\n</tool_call>',
    'Zwei Zeilen —\n\nnoch eine.\n<tool_call>\n{"name": "execute_bash", "arguments": {"command": "ls"}}\n</tool_call>',
    '<tool_call>\n{"name": "finish", "arguments": {"message": "done"}}\n</tool_call>',
    "No call this time.\n",
]


@pytest.mark.parametrize("reply", TEMPLATE_REPLIES)
def test_the_model_reads_its_own_reply_in_the_next_step(vllm_url, model_dir, reply):
    """The random model is made to write a reply as trained (vLLM's structured outputs, a regex); the agent stores
    what the server returns, and the next step's prompt holds that reply as the model wrote it."""
    policy = OpenAIPolicy(OpenAIConfig(base_url=vllm_url, request_retries=0))
    tools = openhands_tools()
    opening = [{"role": "system", "content": "You are a helpful agent."}, {"role": "user", "content": "Fix it."}]
    first = policy.request("/chat/completions", {**policy.chat_request(opening, tools), "max_tokens": 200,
                                                 "return_token_ids": True,
                                                 "structured_outputs": {"regex": re.escape(reply)}})
    served = first["choices"][0]["message"]
    message = assistant_message(served["content"], served.get("tool_calls"))
    after = ([{"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "ok"}]
             if message.get("tool_calls") else [{"role": "user", "content": "Go on."}])
    second = policy.request("/chat/completions", {**policy.chat_request(opening + [message] + after, tools),
                                                  "max_tokens": 1, "return_token_ids": True})
    tokenizer = load_tokenizer(model_dir)
    before, now = (tokenizer.decode(r["prompt_token_ids"]) for r in (first, second))
    assert now.startswith(before + reply + "<|im_end|>"), now[len(before):][:300]
