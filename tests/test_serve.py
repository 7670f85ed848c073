"""`swehero serve` starts a real vLLM (CPU) server for the tiny model with our tool parser plugin, answers
chat completions, and on Ctrl-C stops, frees its port and leaves no file in the temporary folder."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from tiny_server import servers_on

from swehero.serve.server import (ServeConfig, VLLMServer, api_key, chat_template_text, check_port_free, command,
                                  free_port, package_path, served_models, socket_dir, tool_parser_for)

pytest.importorskip("vllm")


def test_command_line(tiny_model_dir, tmp_path):
    args = command(ServeConfig(model=str(tiny_model_dir), tensor_parallel_size=4, data_parallel_size=2), port=1234)
    assert args[args.index("--tensor-parallel-size") + 1] == "4" and args[args.index("--data-parallel-size") + 1] == "2"
    assert args[args.index("--tool-call-parser") + 1] == "swehero_hermes"
    assert args[args.index("--tool-parser-plugin") + 1].endswith("vllm_plugin.py")
    assert args[args.index("--chat-template") + 1] == str(tiny_model_dir / "chat_template.jinja")
    assert tool_parser_for(str(tiny_model_dir)) == "hermes"
    with pytest.raises(ValueError, match="unknown tool-call parser"):
        command(ServeConfig(model="m", parser="nope"), port=1)


def test_the_parser_follows_the_chat_template_not_the_config(tmp_path):
    """Qwen3-235B and Qwen3-Coder-480B are both `qwen3_moe`; the first writes hermes JSON calls, which vLLM's
    qwen3_coder parser (chosen for every qwen3_moe before) drops whole. Their templates tell them apart."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"]}))
    hermes = "{{- '<tool_call>\\n' }}{{- tool_call.arguments | tojson }}"
    coder = "{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": hermes}))
    assert tool_parser_for(str(tmp_path)) == "hermes"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [{"name": "default", "template": coder}]}))
    assert tool_parser_for(str(tmp_path)) == "qwen3_coder"
    (tmp_path / "chat_template.jinja").write_text(hermes)  # the file wins over tokenizer_config.json, as in vLLM
    assert tool_parser_for(str(tmp_path)) == "hermes"
    assert tool_parser_for("Qwen/Qwen3-Coder-480B-A35B-Instruct") == "qwen3_coder"
    assert tool_parser_for("Qwen/Qwen3-235B-A22B-Instruct-2507") == "hermes"


def post(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_serve_cli_runs_a_real_server_and_stops_on_ctrl_c(tiny_model_dir, tmp_path):
    port = free_port()
    swehero = Path(sys.executable).parent / "swehero"
    tmp = Path(tempfile.mkdtemp(prefix="t-", dir="/tmp"))  # short: the server's sockets go inside it
    proc = subprocess.Popen(
        [str(swehero), "serve", str(tiny_model_dir), "--port", str(port), "--max-model-len", "2048",
         "--dtype", "float32", "--gpu-memory-utilization", "0.2", "--no-compile", "--log", str(tmp_path / "vllm.log")],
        stdout=subprocess.PIPE, text=True, start_new_session=True, env={**os.environ, "TMPDIR": str(tmp)},
        # SIGINT as a terminal delivers it, even when the tests run as a background job (SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert f"at http://127.0.0.1:{port}/v1" in line, line + (tmp_path / "vllm.log").read_text()[-3000:]
        reply = post(f"http://127.0.0.1:{port}/v1/chat/completions", {
            "model": tiny_model_dir.name, "max_tokens": 8, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
            "messages": [{"role": "user", "content": "Fix the bug."}],
            "tools": [{"type": "function", "function": {"name": "finish", "description": "Finish.",
                                                        "parameters": {"type": "object", "properties": {}}}}]})
        assert reply["choices"][0]["finish_reason"] in ("length", "stop", "tool_calls")
        assert reply["usage"]["completion_tokens"] >= 1
        assert len(servers_on(port)) >= 2  # the CLI and the vLLM server it started
        assert [p for p in tmp.glob("vllm-*/*") if p.is_socket()]  # vLLM's ZMQ sockets, in the server's folder
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:  # a failed check: the CLI and the server it started (its own session) go too
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in servers_on(port):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
    # Nothing listens on the port any more (a TIME_WAIT left by the last connection is not a listener),
    # and no process of the server is left.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    deadline = time.monotonic() + 30
    while servers_on(port):
        assert time.monotonic() < deadline, f"server processes still running after stop: {servers_on(port)}"
        time.sleep(0.5)
    assert "swehero_hermes" in (tmp_path / "vllm.log").read_text()
    assert not list(tmp.iterdir())  # vLLM leaves its sockets behind; the server's folder goes with them
    tmp.rmdir()


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_a_server_that_fails_to_start_leaves_no_temporary_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("SWEHERO_VLLM_PYTHON", "false")  # exits at once, as a vLLM that cannot load the model does
    with pytest.raises(RuntimeError, match="vLLM exited with status 1 while starting"):
        VLLMServer(ServeConfig(model="m", parser="hermes"), tmp_path / "logs" / "vllm.log").start()
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]


def test_a_folder_that_is_no_model_is_named_before_vllm_starts(tmp_path):
    """Serving a Megatron checkpoint (or any folder without config.json) is one line, before vLLM is launched."""
    from click.testing import CliRunner

    from swehero.cli import main

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "hf_config.json").write_text("{}")
    result = CliRunner().invoke(main, ["serve", str(checkpoint), "--log", str(tmp_path / "vllm.log")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {checkpoint}: no config.json, so not a Hugging Face model folder")
    assert "swehero convert mcore-to-hf" in result.output and not (tmp_path / "vllm.log").exists()


def test_a_port_another_server_holds_is_refused_before_vllm_starts(tmp_path, tiny_model_dir):
    """Another server on the port would answer the health checks while vLLM loads: the run would use its model."""
    import socket

    from click.testing import CliRunner

    from swehero.cli import main

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = CliRunner().invoke(main, ["serve", str(tiny_model_dir), "--port", str(port),
                                           "--log", str(tmp_path / "vllm.log")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: 127.0.0.1:{port} is taken (Address already in use), so another server")
    assert not (tmp_path / "vllm.log").exists()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_host_is_checked_and_addressed_as_ipv6(tmp_path, tiny_model_dir):
    """`--host ::` (vLLM's dual-stack listen) was refused as taken (an IPv4 socket cannot bind `::`), or with
    `--port 0` a gaierror traceback; the URL was `http://:::PORT`."""
    from click.testing import CliRunner

    from swehero.cli import main

    for host in ("::", "::1"):
        port = free_port(host)
        check_port_free(host, port)
        assert VLLMServer(ServeConfig(model="m", host=host, port=port), tmp_path / "vllm.log").url == \
            f"http://[{host}]:{port}/v1"
        with socket.socket(socket.AF_INET6) as other:
            other.bind((host, port))
            other.listen()
            result = CliRunner().invoke(main, ["serve", str(tiny_model_dir), "--host", host, "--port", str(port),
                                               "--log", str(tmp_path / "vllm.log")])
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: [{host}]:{port} is taken (Address already in use), so another")
    assert VLLMServer(ServeConfig(model="m", port=8000), tmp_path / "vllm.log").url == "http://127.0.0.1:8000/v1"
    with pytest.raises(ValueError, match="^host ::zz: not an address or known name to listen on"):
        free_port("::zz")
    assert not (tmp_path / "vllm.log").exists()


def test_a_tokenizer_config_with_a_null_chat_template_has_none(tmp_path):
    """transformers writes `"chat_template": null` for a tokenizer without one: `serve` failed on it (TypeError)."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": None}))
    assert chat_template_text(str(tmp_path)) == ""
    assert tool_parser_for(str(tmp_path)) == "hermes"


def test_socket_folders_fit_a_socket_address(tmp_path, monkeypatch):
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # tmp_path itself may already be too long
        monkeypatch.setattr(tempfile, "tempdir", short)
        assert Path(socket_dir()).parent == Path(short)
    long = tmp_path / ("x" * 60)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    folder = Path(socket_dir())
    assert folder.parent == Path("/tmp") and len(f"{folder}/{uuid.uuid4()}") <= 107 and not list(long.iterdir())
    folder.rmdir()


def test_compile_off_asks_vllm_for_no_optimization():
    assert "--optimization-level" not in command(ServeConfig(model="m", parser="hermes"), port=1)
    args = command(ServeConfig(model="m", parser="hermes", compile=False), port=1)
    assert args[args.index("--optimization-level") + 1] == "0"


def test_vllm_finds_the_swehero_package_and_nothing_beside_it(tmp_path):
    """The launcher's and the plugin's import path: in the GPU image swehero is installed in the base image's dist-packages, and that
    folder on vLLM's PYTHONPATH put NGC's torch before the vLLM environment's own."""
    import subprocess
    import sys

    path = package_path(str(tmp_path))
    assert os.listdir(path) == ["swehero"]
    # no site-packages (-S): the package alone must import, and nothing else installed here may
    probe = "import swehero.toolcalls, swehero.serve.vllm_main, importlib.util as u; print(u.find_spec('click'))"
    done = subprocess.run([sys.executable, "-S", "-c", probe], env={"PYTHONPATH": path}, capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "None", done.stderr


def _group_titles(leader: int) -> list[str]:
    """The process titles (vLLM names its processes `VLLM::...`) of the process group `leader` leads."""
    titles = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) == leader:
                titles.append((proc / "cmdline").read_bytes().split(b"\0")[0].decode())
    return titles


def _requests_by_engine(metrics: str) -> dict[str, float]:
    """Finished requests per data-parallel engine, from vLLM's Prometheus counters."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("vllm:request_success_total{"):
            engine = line.split('engine="', 1)[1].split('"', 1)[0]
            counts[engine] = counts.get(engine, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_a_data_parallel_server_runs_an_api_process_per_replica_and_each_request_reaches_the_replica_it_names(
        tiny_model_dir, tmp_path):
    """Two replicas: two API processes (one would render and tokenize every replica's 128k-token prompts), and
    the agent's `replica` setting (`X-data-parallel-rank`) decides which engine answers, so an episode keeps its
    prefix cache."""
    from swehero.agent.openai_policy import OpenAIConfig, OpenAIPolicy

    tools = [{"type": "function", "function": {"name": "finish", "description": "Finish.",
                                               "parameters": {"type": "object", "properties": {}}}}]

    cfg = ServeConfig(model=str(tiny_model_dir), data_parallel_size=2, max_model_len=1024, dtype="float32",
                      gpu_memory_utilization=0.1, compile=False)
    with VLLMServer(cfg, tmp_path / "vllm.log") as server:
        assert sorted(t for t in _group_titles(server.process.pid) if t.startswith("VLLM::APIServer")) == [
            "VLLM::APIServer_0", "VLLM::APIServer_1"], server.log_tail()
        sent = {"0": 1, "1": 3}
        for replica, requests in sent.items():
            policy = OpenAIPolicy(OpenAIConfig(base_url=server.url, replica=int(replica), max_reply_tokens=2))
            for _ in range(requests):  # with tools: through our parser plugin, whichever API process answers
                policy.request("/chat/completions", policy.chat_request([{"role": "user", "content": "Fix it."}], tools))
        with urllib.request.urlopen(server.url.removesuffix("/v1") + "/metrics", timeout=30) as response:
            assert _requests_by_engine(response.read().decode()) == {k: float(v) for k, v in sent.items()}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_port_taken_between_its_choice_and_vllms_start_gives_way_to_another(tiny_model_dir, tmp_path, monkeypatch):
    """A port chosen free may be taken before vLLM binds it (a parallel test's server did so in CI): that server
    answered /health, and the chat requests went to it. Readiness is vLLM listing the model; vLLM failing to bind
    the port it was given starts it again on another one."""
    from json_server import JsonServer

    other = JsonServer(lambda method, path, body: (200, {"data": [{"id": "another-model"}]}))
    taken = int(other.url.removesuffix("/v1").rsplit(":", 1)[1])
    ports = iter([taken])
    monkeypatch.setattr("swehero.serve.server.free_port", lambda host="127.0.0.1": next(ports, 0) or free_port(host))
    cfg = ServeConfig(model=str(tiny_model_dir), max_model_len=2048, dtype="float32", gpu_memory_utilization=0.2,
                      compile=False)
    try:
        with VLLMServer(cfg, tmp_path / "vllm.log") as server:
            assert server.port != taken
            with urllib.request.urlopen(f"{server.url}/models", timeout=30) as response:
                assert [m["id"] for m in json.loads(response.read())["data"]] == [tiny_model_dir.name]
    finally:
        other.close()
    assert "Address already in use" in (tmp_path / "vllm.log").read_text()


def test_readiness_asks_with_the_servers_api_key_and_reads_only_a_model_list(monkeypatch):
    """vLLM started with `--api-key` (or VLLM_API_KEY) refuses /v1/models without it: the wait would never end."""
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    assert api_key(ServeConfig(model="m")) is None
    monkeypatch.setenv("VLLM_API_KEY", "from-env")
    assert api_key(ServeConfig(model="m")) == "from-env"
    assert api_key(ServeConfig(model="m", extra_args=["--api-key", "a", "--api-key=b"])) == "b"
    assert api_key(ServeConfig(model="m", extra_args=["--api-key=b", "--api-key", "a"])) == "a"
    assert served_models(b'{"object": "list", "data": [{"id": "m"}, {"id": "n"}]}') == ["m", "n"]
    for other in (b"", b"OK", b"[]", b'{"data": {"id": "m"}}', b'{"data": ["m"]}', b'{"data": [{"id": 1}]}'):
        assert served_models(other) == []
