"""Policies without a model: text tool-call parsing, the OpenAI client's retries against a real HTTP server,
and the Docker runtime's pure parts (no Docker engine on this machine)."""

from __future__ import annotations

import json
import subprocess

import pytest
from agent_repos import CALC, CALC_FIX, git, make_task
from json_server import JsonServer

from swehero.agent.container import (
    DockerConfig,
    DockerRuntime,
    container_kwargs,
    exec_argv,
    swebench_image,
    tar_one,
    untar_one,
)
from swehero.agent.local import LocalRuntime
from swehero.agent.loop import LoopConfig, run_episode
from swehero.agent.openai_policy import OpenAIConfig, OpenAIPolicy, assistant_message, parse_text_tool_calls
from swehero.agent.policy import ContextLimit, PolicyError
from swehero.agent.runtime import strip_history_script
from swehero.agent.task import Task
from swehero.agent.tools import Outcome
from swehero.errors import Unavailable


def test_hermes_text_tool_calls_are_parsed():
    content = ('Let me look.\n<tool_call>\n{"name": "str_replace_editor", "arguments": '
               '{"command": "view", "path": "/testbed"}}\n</tool_call>')
    msg = assistant_message(content, None)
    assert msg["content"] == "Let me look."
    (call,) = msg["tool_calls"]
    assert call["function"]["name"] == "str_replace_editor" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"command": "view", "path": "/testbed"}


def test_qwen3_coder_text_tool_calls_are_parsed_with_schema_types():
    content = ("<tool_call>\n<function=str_replace_editor>\n<parameter=command>\nview\n</parameter>\n"
               "<parameter=path>\n/testbed/a.py\n</parameter>\n<parameter=view_range>\n[1, 20]\n</parameter>\n"
               "</function>\n</tool_call>")
    text, (call,) = parse_text_tool_calls(content)
    assert text == ""
    assert json.loads(call["function"]["arguments"]) == {"command": "view", "path": "/testbed/a.py",
                                                         "view_range": [1, 20]}


def test_hermes_text_tool_call_keeps_a_literal_end_tag_in_its_arguments():
    args = {"command": "create", "path": "/testbed/p.py", "file_text": "END = '</tool_call>'\n"}
    content = "Writing it.\n<tool_call>\n" + json.dumps({"name": "str_replace_editor", "arguments": args}) + "\n</tool_call>"
    text, (call,) = parse_text_tool_calls(content)
    assert text == "Writing it." and json.loads(call["function"]["arguments"]) == args


def test_a_text_whose_call_does_not_parse_is_a_reply_without_calls():
    """As vLLM's hermes parser and our plugin return it (a reply cut by the token limit): OpenHands answers it as
    any reply without a call."""
    text = 'hm <tool_call>\n{"name": "think", "arguments": {"thought": "a"}}\n</tool_call><tool_call>{broken'
    assert parse_text_tool_calls(text) == (text, [])


def test_structured_tool_calls_pass_through():
    calls = [{"id": "x1", "type": "function", "function": {"name": "think", "arguments": '{"thought": "t"}'}}]
    assert assistant_message(None, calls) == {"role": "assistant", "content": "", "tool_calls": calls}
    assert assistant_message("no calls", []) == {"role": "assistant", "content": "no calls"}


class _Server(JsonServer):
    """Answers the requests (POSTs) it gets with a scripted list of (status, body), keeping them."""

    def __init__(self, answers):
        self.answers, self.requests = list(answers), []
        super().__init__(self._answer)

    def _answer(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        self.requests.append(body)
        return self.answers.pop(0)


def _completion(message):
    return {"choices": [{"message": message}], "usage": {"prompt_tokens": 11, "completion_tokens": 3}}


def test_openai_policy_retries_and_sends_sampling_settings():
    server = _Server([(503, {"error": "busy"}), (429, {"error": "slow down"}),
                      (200, _completion({"role": "assistant", "content": "ok", "tool_calls": None}))])
    try:
        policy = OpenAIPolicy(OpenAIConfig(base_url=server.url, model="m", backoff=0.01))
        reply = policy.act([{"role": "user", "content": "hi"}], [])
    finally:
        server.close()
    assert reply.message == {"role": "assistant", "content": "ok"} and reply.prompt_tokens == 11
    assert len(server.requests) == 3
    sent = server.requests[-1]
    assert (sent["temperature"], sent["top_p"], sent["top_k"], sent["model"]) == (0.7, 0.8, 20, "m")
    # no reply limit, as OpenHands sends none for a model LiteLLM does not know (it sent 4096, cutting long creates)
    assert "max_tokens" not in sent and "max_completion_tokens" not in sent
    assert OpenAIPolicy(OpenAIConfig(base_url=server.url, model="m", max_reply_tokens=64)).chat_request(
        [], [])["max_tokens"] == 64


def test_openai_policy_sends_every_request_to_its_replica():
    """vLLM's `X-data-parallel-rank` header: the turns of an episode go to the replica that holds their prefix."""
    answer = (200, _completion({"role": "assistant", "content": "ok", "tool_calls": None}))
    server = _Server([answer] * 3)
    try:
        pinned = OpenAIPolicy(OpenAIConfig(base_url=server.url, model="m", replica=1))
        pinned.act([{"role": "user", "content": "hi"}], [])
        pinned.act([{"role": "user", "content": "hi again"}], [])
        OpenAIPolicy(OpenAIConfig(base_url=server.url, model="m")).act([], [])
    finally:
        server.close()
    assert [headers.get("X-data-parallel-rank") for headers, _ in server.received] == ["1", "1", None]


def test_openai_policy_errors():
    # vLLM's answer to a prompt of exactly max_model_len tokens: no token left, the context limit all the same
    at_the_limit = {"error": {"message": "max_tokens must be at least 1, got 0. (parameter=max_tokens, value=0)"}}
    server = _Server([(400, {"error": "This model's maximum context length is 4096 tokens"}), (400, at_the_limit),
                      (400, {"error": "bad request"}), (500, {}), (500, {})])
    try:
        policy = OpenAIPolicy(OpenAIConfig(base_url=server.url, model="m", backoff=0.01, request_retries=1))
        for _ in range(2):
            with pytest.raises(ContextLimit):
                policy.act([], [])
        with pytest.raises(PolicyError, match="HTTP 400"):
            policy.act([], [])
        with pytest.raises(PolicyError, match="HTTP 500"):
            policy.act([], [])
    finally:
        server.close()
    unreachable = OpenAIPolicy(OpenAIConfig(base_url="http://127.0.0.1:9/v1", model="m", request_retries=0))
    with pytest.raises(PolicyError):
        unreachable.act([], [])


class _RawServer(_Server):
    """Answers each POST with the next of a scripted list of replies: (status, bytes) sent whole, or ("truncated",
    bytes), the body cut short (see `JsonServer`). The last answer repeats."""

    def _answer(self, method: str, path: str, body: dict | None) -> tuple[int | str, bytes]:
        self.requests.append(body)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _json(body) -> tuple[int, bytes]:
    return 200, json.dumps(body).encode()


def _tool_reply(name: str, arguments: dict) -> tuple[int, bytes]:
    return _json(_completion({"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]}))


THINK, FINISH = _tool_reply("think", {"thought": "t"}), _tool_reply("finish", {"message": "done"})


class _FakeTools:
    """Tools whose calls all succeed (`finish` ends the episode): what the loop does with the server's replies."""

    mode = "exec"

    class runtime:
        root = "/testbed"

        @staticmethod
        def patch(base_commit):
            return "diff --git a/x b/x\n"

    def run(self, name, arguments):
        return Outcome("ok", finished=name == "finish")


def _episode(server, **config):
    policy = OpenAIPolicy(OpenAIConfig(base_url=server.url, model="m", backoff=0.001, **config))
    task = Task("o__r-1", "o/r", "a" * 40, "Fix it.")
    opening = [{"role": "system", "content": "s"}, {"role": "user", "content": "Fix it."}]
    try:
        return run_episode(task, policy, _FakeTools(), opening, LoopConfig())
    finally:
        server.close()


@pytest.mark.parametrize("glitch", [("truncated", _json(_completion({"role": "assistant", "content": "hi"}))[1]),
                                    _json({"choices": []}),
                                    _json({"error": {"message": "upstream overloaded", "code": 503}}),
                                    _json(["not", "an", "object"]),
                                    (200, b'{"choices": [{"message": {"role": "assis'),
                                    (200, b"<html>bad gateway</html>")],
                         ids=["truncated-body", "no-choice", "error-body", "not-an-object", "cut-json", "not-json"])
def test_a_reply_the_server_failed_to_send_is_retried_and_the_episode_goes_on(glitch):
    """A body cut short (`IncompleteRead`), a 200 with no choice or with an error (what OpenHands' LLM wrapper
    retries as `LLMNoResponseError`), a body that is not a JSON object: retried like a 5xx, not an empty reply of
    the model's (a step, a format error, a "please continue" message) nor an exception that loses the episode."""
    server = _RawServer([THINK, glitch, FINISH])
    record = _episode(server)
    meta = record["metadata"]
    assert (meta["finish_reason"], meta["steps"], meta["format_errors"]) == ("submitted", 2, 0), meta
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert len(server.requests) == 3 and server.requests[1] == server.requests[2]


@pytest.mark.parametrize("answer, named", [
    (_json({"choices": []}), 'the reply has no message: {"choices": []}'),
    (_json({"error": {"message": "upstream overloaded"}}), 'the server sent an error: {"error": {"message": "upstream'),
    (_json([1, 2]), "the reply is not a JSON object: [1, 2]"),
    (("truncated", b'{"choices": []}'), "IncompleteRead(7 bytes read")],
                         ids=["no-choice", "error-body", "not-an-object", "truncated-body"])
def test_a_server_that_never_sends_a_reply_ends_the_episode_as_an_agent_error(answer, named):
    server = _RawServer([THINK, answer])
    record = _episode(server, request_retries=2)
    meta = record["metadata"]
    assert meta["finish_reason"] == "agent_error" and named in meta["error"], meta
    assert len(server.requests) == 1 + 3 and meta["steps"] == 1 and meta["format_errors"] == 0
    assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant", "tool"]
    assert record["patch"] == "diff --git a/x b/x\n"


def test_an_error_body_is_shortened_in_the_policy_error():
    server = _RawServer([_json({"error": {"message": "x" * 5000}})])
    try:
        with pytest.raises(PolicyError, match="upstream|xxx") as e:
            OpenAIPolicy(OpenAIConfig(base_url=server.url, model="m", backoff=0, request_retries=1)).act([], [])
    finally:
        server.close()
    assert len(str(e.value)) < 1000 and len(server.requests) == 2


def test_docker_container_settings():
    kw = container_kwargs("img:1", DockerConfig(cpus=1.5, memory="4g", pids=256))
    assert kw["network_mode"] == "none" and kw["nano_cpus"] == 1_500_000_000
    assert (kw["mem_limit"], kw["memswap_limit"], kw["pids_limit"]) == ("4g", "4g", 256)
    assert kw["command"] == ["sh", "-c", "while :; do sleep 21600 & wait $! && exit; done"]
    # PID 1 is the keep-alive itself, also under a daemon whose default is `"init": true` (left out, it was
    # docker-init there, and killing a command's processes, PID 1 spared, killed the keep-alive)
    assert kw["auto_remove"] and kw["detach"] and kw["init"] is False
    assert kw["name"].startswith("swehero-")
    assert swebench_image("django__django-11099") == "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"


def test_docker_archive_round_trip():
    blob = tar_one("a.py", "héllo\n".encode())
    assert untar_one([blob[:100], blob[100:]]) == "héllo\n".encode()


@pytest.mark.bwrap
def test_docker_exec_command_runs_and_reaps(tmp_path):
    """The exact argv `docker exec` would run, run here inside the local sandbox (same state folder layout)."""
    (tmp_path / "repo").mkdir()
    sandbox = LocalRuntime(tmp_path / "repo", "/testbed", tmp_path / "work")
    state = sandbox.workdir / "state"
    try:
        (state / "cmd").write_text("mkdir sub && cd sub; echo hi; exit 4")
        done = subprocess.run(sandbox.bwrap_argv("/testbed") + exec_argv("/testbed", "1"),
                              capture_output=True, text=True)
        assert (done.returncode, done.stdout) == (4, "hi\n")
        assert (state / "cwd").read_text().strip() == "/testbed/sub"
        (state / "cmd").write_text("sleep 300 & echo started")  # the background sleep would hold the output open
        reaped = subprocess.run(sandbox.bwrap_argv("/testbed") + exec_argv("/testbed", "1"),
                                capture_output=True, text=True, timeout=20)
        assert (reaped.returncode, reaped.stdout) == (0, "started\n")
    finally:
        sandbox.close()


def test_docker_runtime_without_engine_says_so(monkeypatch):
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(Unavailable, match="no Docker engine is reachable"):
        DockerRuntime("swebench/sweb.eval.x86_64.x:latest")


def test_pruning_an_image_with_no_engine_answering_warns_and_the_run_goes_on(monkeypatch, capsys):
    """The runner prunes a task's image after its last attempt: an engine that did not answer then raised out of the
    worker and stopped the run, ending the attempts running beside it uncommitted."""
    pytest.importorskip("docker")
    from swehero.rollout.runner import _remove_image

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    _remove_image("swebench/sweb.eval.x86_64.x:latest")
    assert capsys.readouterr().err.startswith("warning: could not remove the Docker image "
                                              "swebench/sweb.eval.x86_64.x:latest: no Docker engine is reachable")


def test_history_stripping_for_images_leaves_nothing_after_the_base(tmp_path):
    """The script the docker runtime runs in zero mode, run on a clone with later commits, tags, branches, stash."""
    task = make_task(tmp_path / "upstream", "calc", CALC, CALC_FIX)
    repo = tmp_path / "testbed"
    subprocess.run(["git", "clone", "-q", str(tmp_path / "upstream"), str(repo)], check=True)
    later = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "branch", "feature", later)
    (repo / "pkg" / "calc.py").write_text("stashed\n")
    git(repo, "stash", "-q")
    subprocess.run(["bash", "-c", strip_history_script(task.base_commit)], cwd=repo, check=True)
    assert git(repo, "log", "--all", "--format=%H").split() == [task.base_commit]
    assert git(repo, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]
    assert git(repo, "tag") == "" and git(repo, "remote") == ""
    assert subprocess.run(["git", "cat-file", "-e", later], cwd=repo).returncode != 0
    assert "return a - b" in (repo / "pkg" / "calc.py").read_text()
