"""swehero distill with the tiny random model served by the real vLLM CPU server (our tool-parser plugin): both modes,
failover from a dead endpoint, a server started from a `serve:` checkpoint folder (and stopped when the run is
SIGTERMed), and `swehero serve check`.

Starting vLLM takes ~40-80 s of CPU; each server is stopped at the end and its port checked free. The test that
needs no module server runs first, so two servers never share the CPU.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
from tiny_server import port_is_free, servers_on, tiny_serve_config

from swehero.distill.run import Settings, distill
from swehero.agent.loop import LoopConfig
from swehero.agent.openai_policy import OpenAIConfig
from swehero.agent.settings import AgentSettings
from swehero.jsonio import read_jsonl
from swehero.rollout.toy import build_toy_tasks
from swehero.serve.server import VLLMServer, free_port

pytest.importorskip("vllm")
pytestmark = [pytest.mark.slow,  # real vLLM servers
              pytest.mark.bwrap]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    server = VLLMServer(tiny_serve_config(tiny_model_dir), tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        yield server.start()
    finally:
        server.stop()
    assert server.process.poll() is not None and port_is_free(server.port)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return build_toy_tasks(tmp_path_factory.mktemp("toy"))


def agent(mode: str) -> AgentSettings:
    return AgentSettings(policy="openai", mode=mode, time_limit_s=300, loop=LoopConfig(max_steps=2),
                         openai=OpenAIConfig(max_reply_tokens=48))


def lines(path):
    return read_jsonl(path)


@pytest.mark.timeout(400)
def test_zero_mode_serves_a_checkpoint_folder_and_frees_its_port(tiny_model_dir, toy, tmp_path, monkeypatch):
    """Served with an API key, as vLLM is with `--api-key` (or VLLM_API_KEY): the readiness check sent it, the
    attempts did not (HTTP 401 on every request, the run stopped)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    port = free_port()
    serve = tiny_serve_config(tiny_model_dir, port)
    serve = replace(serve, extra_args=[*serve.extra_args, "--api-key", "s3cret"])
    settings = Settings(tasks=str(toy), limit=1, rollouts=2, workers=2, serve=serve, progress=False,
                        agent=agent("zero"))
    summary = distill(settings, tmp_path)
    assert summary["episodes"] == 2 and summary["failed_this_run"] == 0
    assert {r["stage"] for r in lines(tmp_path / "trajectories.jsonl")} == {"zero"}
    assert (tmp_path / "vllm.log").exists() and port_is_free(port)
    assert "s3cret" not in (tmp_path / "attempts.json").read_text() and "s3cret" not in os.environ.values()


def _attempts_of(pid: int) -> list[int]:
    """The attempt processes (`python -m swehero.rollout.attempt`) that process `pid` started."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (b"swehero.rollout.attempt" in (proc / "cmdline").read_bytes()
                    and f"PPid:\t{pid}\n" in (proc / "status").read_text()):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


@pytest.mark.timeout(400)
def test_sigterm_stops_the_server_the_run_started(tiny_model_dir, toy, tmp_path):
    """`kill`, `timeout` or a scheduler stopping a run stops the vLLM server it started (which runs in its own process
    group): nothing keeps the port, the GPUs on a GPU machine, or files in the temporary folder."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))  # short: the server's sockets go inside it
    argv = [str(Path(sys.executable).parent / "swehero"), "distill", "run", "--tasks", str(toy), "--limit", "1",
            "--mode", "zero", "--policy", "openai", "--serve-model", str(tiny_model_dir), "--served-name", "tiny",
            "--dtype", "float32", "--max-model-len", "16384", "--gpu-memory-utilization", "0.2", "--no-compile",
            "--port", str(port), "--max-steps", "100", "--max-reply-tokens", "48", "--max-consecutive-errors", "1000",
            "--no-progress", "--out", str(tmp_path / "out")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp)})
    try:
        deadline = time.monotonic() + 300
        while not _attempts_of(proc.pid):  # an attempt runs: the server is up
            assert proc.poll() is None and time.monotonic() < deadline, "distill ended or stalled before the signal"
            time.sleep(0.2)
        assert servers_on(port) and list(tmp.glob("vllm-*"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while servers_on(port):
            assert time.monotonic() < deadline, f"server processes still running after the run stopped: {servers_on(port)}"
            time.sleep(0.5)
        assert port_is_free(port) and not list(tmp.glob("vllm-*"))
    finally:
        proc.kill()
        for pid in servers_on(port):  # orphans, had the test failed
            os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


CASES = {
    "code": {"command": "create", "path": "/w/a.py", "file_text": "def f(x):\n    return {'a': [1, 2]}\n"},
    "quotes": {"command": "grep -rn \"say \\\"hi\\\"\" . | head -n 5"},
    "newlines": {"thought": "line one\nline two\r\n\ttabbed\n\n"},
    "non_ascii": {"message": "Größe ändern — 修复 ✓ 🙂"},
    "literal_end_tag": {"command": "str_replace", "path": "/w/p.py", "old_str": "END = '</tool_call>'",
                        "new_str": "END = \"</tool_call>\"\n"},
}


def test_serve_check_counts_exact_round_trips(tiny_model_dir, tmp_path):
    from swehero.data.trajectory import make_tool_call
    from swehero.toolspec import openhands_tools

    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}]
    for n, (case, args) in enumerate(CASES.items()):
        messages.append({"role": "assistant", "content": f"step {case}",
                         "tool_calls": [make_tool_call(f"c{n}", "str_replace_editor", args)]})
        messages.append({"role": "tool", "tool_call_id": f"c{n}", "name": "str_replace_editor", "content": "ok"})
    messages.append({"role": "assistant", "content": "no call in this turn"})
    record = {"id": "r", "instance_id": "i", "messages": messages, "tools": openhands_tools(), "patch": ""}
    src = tmp_path / "t.jsonl"
    src.write_text(json.dumps(record) + "\n")
    cli = [sys.executable, "-c", "from swehero.serve.cli import serve; serve()", "check", str(src), "--parser",
           "hermes", "--tokenizer", str(tiny_model_dir), "--report", str(tmp_path / "report.json")]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "swehero_hermes: 6/6 assistant turns parsed back exactly (5 with tool calls)" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    # vLLM 0.32's hermes keeps the newline before each call in the content (and drops the call with a literal
    # </tool_call>): only the turn without a call comes back as trained.
    stock = report["parsers"]["hermes"]
    assert stock["exact"] == 1 and stock["mismatched"] == 5
    assert stock["examples"][0]["parsed"]["content"] == "step code\n"


@pytest.mark.timeout(300)
def test_exec_mode_fails_over_from_a_dead_endpoint(server, toy, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = Settings(tasks=str(toy), limit=2, workers=2, endpoints=[dead, server.url], progress=False,
                        agent=replace(agent("exec"), openai=OpenAIConfig(max_reply_tokens=48, request_retries=1)))
    summary = distill(settings, tmp_path)
    records = lines(tmp_path / "trajectories.jsonl")
    assert sorted(r["instance_id"] for r in records) == ["swehero-toy__calc-1", "swehero-toy__textkit-1"]
    for record in records:
        assert record["stage"] == "hero" and record["metadata"]["model"] == "tiny"
        assert record["metadata"]["finish_reason"] in ("step_limit", "tool_parse_failures", "submitted")
        assert sum(m["role"] == "assistant" for m in record["messages"]) >= 1
    endpoints = {e["url"]: e for e in summary["endpoints"]}
    assert endpoints[dead]["dead"] and not endpoints[server.url]["dead"]
    assert endpoints[server.url]["episodes"] == 2 and summary["failed_this_run"] == 0
