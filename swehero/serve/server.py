"""Start, health-check and stop a vLLM OpenAI-compatible server for a Hugging Face folder.

The server runs as its own process group (so stopping it stops its workers), logs to a file, and is started
with the tool-call parser and the chat template the model was trained with. It gets a temporary folder of its own
as TMPDIR, removed when it stops: vLLM's processes talk over ZMQ sockets made there (7 of them on the CPU build)
and leave them behind even after a clean shutdown, one set per server started. `SWEHERO_VLLM_PYTHON` chooses the
Python that has vLLM (the GPU image keeps vLLM in its own environment); by default it is this one.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import swehero
from swehero.errors import InputError, MissingInput, Unavailable
from swehero.model.folder import is_hf_folder
from swehero.process import end_group, start_group
from swehero.recipe.stage import ModelRef, Range, Verbatim

PLUGIN = Path(__file__).with_name("vllm_plugin.py")
# Our parser name for each model family; `hermes` is served by the JSON-aware plugin (see swehero/toolcalls.py).
PARSERS = {"hermes": "swehero_hermes", "qwen3_coder": "qwen3_coder"}
PORT_TAKEN = "Address already in use"  # what vLLM's log says when its port was bound first (EADDRINUSE)
PORT_TRIES = 3


@dataclass
class ServeConfig:
    """How to serve a checkpoint."""

    model: ModelRef = ""
    """Hugging Face folder (or hub id) to serve; empty: no server is started."""
    served_name: str = ""
    """Model name clients ask for; defaults to the folder's name."""
    parser: Literal["auto", "hermes", "qwen3_coder"] = "auto"
    """Tool-call parser: hermes (Qwen2.5), qwen3_coder (Qwen3-Coder teachers), or auto (from config.json)."""
    tensor_parallel_size: Annotated[int, Range(min=1)] = 1
    """GPUs per model replica: enough that the weights plus the KV cache fit (`swehero recipe plan` estimates it;
    a 32B model in bf16 with a 128k context needs 4 H100s)."""
    data_parallel_size: Annotated[int, Range(min=1)] = 1
    """Model replicas behind the one server, each on its own `tensor_parallel_size` GPUs (vLLM's data
    parallelism): an 8-GPU node serves a 32B model as 2 replicas of 4 for twice the throughput."""
    max_model_len: Annotated[int, Range(min=1)] = 32768
    """Context length the server accepts (prompt + completion)."""
    dtype: str = "auto"
    """Weights dtype (auto: from config.json; CPU needs float32 or bfloat16)."""
    gpu_memory_utilization: Annotated[float, Range(gt=0, max=1)] = 0.9
    """Fraction of GPU memory vLLM may take (on CPU builds, the fraction of the KV-cache space)."""
    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: Annotated[int, Range(min=0, max=65535)] = 0
    """Port; 0 picks a free one."""
    compile: bool = True
    """Let vLLM compile the model (torch.compile, and CUDA graphs on GPUs): faster decoding after a slower start.
    Off (`--optimization-level 0`) for short jobs on small models, where the start dominates: on 2 CPU cores a tiny
    model's server answered after 63 s instead of 84 s (medians, `benchmarks/serve_startup.py`)."""
    startup_timeout_s: Annotated[float, Range(gt=0)] = 900.0
    """How long to wait for the server to list the model at /v1/models."""
    extra_args: list[Verbatim] = field(default_factory=list)
    """More `vllm serve` arguments, passed through (one per repeat: `--extra-args=--hf-overrides={...}`)."""

    @property
    def name(self) -> str:
        """The model name clients ask for."""
        return self.served_name or Path(self.model).name


def tool_parser_for(model: str) -> str:
    """The parser of the calls a model writes, read off the chat template that renders them: Qwen3-Coder's writes
    XML-style `<function=NAME>` calls (qwen3_coder); Qwen2.5's and the other Qwen3 models' hermes JSON. The config
    cannot tell: Qwen3-Coder-480B and Qwen3-235B are both `qwen3_moe`, and qwen3_coder's parser drops JSON calls
    whole. A hub id (no local folder) goes by its name, which says Coder."""
    if is_hf_folder(model):
        return "qwen3_coder" if "<function=" in chat_template_text(model) else "hermes"
    return "qwen3_coder" if "qwen3-coder" in model.lower() else "hermes"


def chat_template_text(model_dir: str) -> str:
    """The chat template(s) of a folder: `chat_template.jinja`, else tokenizer_config.json's (a text, or a list of
    named templates); empty if it has none."""
    if chat_template_of(model_dir):
        return (Path(model_dir) / "chat_template.jinja").read_text()
    tokenizer_config = Path(model_dir) / "tokenizer_config.json"
    # `or`: transformers writes "chat_template": null for a tokenizer without one
    template = tokenizer_config.exists() and json.loads(tokenizer_config.read_text()).get("chat_template") or ""
    return template if isinstance(template, str) else "\n".join(t.get("template", "") for t in template)


def chat_template_of(model_dir: str) -> str | None:
    """The template file the checkpoint carries, if any (training rendered with it, so serving must too);
    otherwise vLLM takes the one in tokenizer_config.json."""
    template = Path(model_dir) / "chat_template.jinja"
    return str(template) if template.exists() else None


def host_port(host: str, port: int) -> str:
    """`host:port` as a URL writes it: an IPv6 address in brackets (`[::1]:8000`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host:port` as vLLM's server binds one: IPv6 for an IPv6 address (`::`, `::1`), else
    IPv4 (a host name too), with SO_REUSEADDR (a port in TIME_WAIT is free). A host that is no address or known name
    is an InputError; a port that is taken, the OSError."""
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
    except socket.gaierror as e:
        s.close()
        raise InputError(f"host {host}: not an address or known name to listen on ({e.strerror})") from None
    except OSError:
        s.close()
        raise
    return s


def free_port(host: str = "127.0.0.1") -> int:
    with bound_socket(host, 0) as s:
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Unavailable if another process listens on `port`: it would answer our health checks while vLLM loads, so
    a run would talk to whatever model that server holds."""
    try:
        bound_socket(host, port).close()
    except OSError as e:
        raise Unavailable(f"{host_port(host, port)} is taken ({e.strerror}), so another server would answer for "
                          "this one: stop it, or choose another port (0 picks a free one)") from None


def api_key(cfg: ServeConfig) -> str | None:
    """The key vLLM requires of /v1 requests: `--api-key` among the extra arguments (the last one given, as
    argparse reads it), else VLLM_API_KEY, else none."""
    key = os.environ.get("VLLM_API_KEY")
    args = cfg.extra_args
    for i, arg in enumerate(args):
        if arg == "--api-key" and i + 1 < len(args):
            key = args[i + 1]
        elif arg.startswith("--api-key="):
            key = arg.removeprefix("--api-key=")
    return key


def served_models(body: bytes) -> list[str]:
    """The model names in a /v1/models answer; none in anything else."""
    try:
        listing = json.loads(body)
    except ValueError:
        return []
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return []
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


def command(cfg: ServeConfig, port: int) -> list[str]:
    parser = tool_parser_for(cfg.model) if cfg.parser == "auto" else cfg.parser
    if parser not in PARSERS:
        raise InputError(f"unknown tool-call parser {parser!r}: choose from {', '.join(PARSERS)} or auto")
    python = os.environ.get("SWEHERO_VLLM_PYTHON", sys.executable)
    args = [
        python, "-m", "swehero.serve.vllm_main",  # `vllm serve` (see there)
        "--model", cfg.model,
        "--served-model-name", cfg.name,
        "--host", cfg.host, "--port", str(port),
        "--tensor-parallel-size", str(cfg.tensor_parallel_size),
        "--data-parallel-size", str(cfg.data_parallel_size),
        "--max-model-len", str(cfg.max_model_len),
        "--dtype", cfg.dtype,
        "--gpu-memory-utilization", str(cfg.gpu_memory_utilization),
        "--enable-auto-tool-choice",
        "--tool-call-parser", PARSERS[parser],
        "--generation-config", "vllm",  # sampling comes from each request, not the checkpoint's defaults
    ]
    if not cfg.compile:
        args += ["--optimization-level", "0"]
    if parser == "hermes":
        args += ["--tool-parser-plugin", str(PLUGIN)]
    template = chat_template_of(cfg.model)
    if template:
        args += ["--chat-template", template]
    return args + cfg.extra_args


def socket_dir() -> str:
    """A new temporary folder for a server's ZMQ sockets: vLLM names them `<TMPDIR>/<uuid4>`, and a socket's path
    must fit in 107 bytes, so a TMPDIR too long for that gives way to /tmp."""
    folder = tempfile.mkdtemp(prefix="vllm-")
    if len(folder) + len("/") + 36 <= 107:
        return folder
    os.rmdir(folder)
    return tempfile.mkdtemp(prefix="vllm-", dir="/tmp")


def package_path(folder: str) -> str:
    """A folder under `folder` that holds the swehero package alone, for vLLM's PYTHONPATH: vLLM's own environment
    runs `swehero.serve.vllm_main` and the plugin, which imports swehero.toolcalls (standard library only). Not the
    folder swehero is installed in: in the GPU image that is the base image's dist-packages, whose torch and
    transformers would shadow vLLM's."""
    path = Path(folder) / "python"
    path.mkdir()
    (path / "swehero").symlink_to(Path(swehero.__file__).parent, target_is_directory=True)
    return str(path)


class VLLMServer:
    """`with VLLMServer(cfg, log_file) as server: server.url` — started, healthy, and always stopped."""

    def __init__(self, cfg: ServeConfig, log_file: Path) -> None:
        self.cfg = cfg
        self.log_file = Path(log_file)
        self.port = cfg.port or free_port(cfg.host)
        self.url = f"http://{host_port(cfg.host, self.port)}/v1"
        self.process: subprocess.Popen | None = None
        self.tmp_dir: str | None = None
        self.key_env: str | None = None
        """Where the server requires a key (`api_key`): the environment variable holding it for its clients
        (`OpenAIConfig.api_key_env`), set in this process while the server runs, so that attempt processes inherit
        it and no recorded setting holds the key."""

    def start(self) -> "VLLMServer":
        if Path(self.cfg.model).exists() and not is_hf_folder(self.cfg.model):  # now, not after vLLM's start-up
            raise MissingInput(f"{self.cfg.model}: no config.json, so not a Hugging Face model folder vLLM can serve "
                               "(a Megatron checkpoint is exported with `swehero convert mcore-to-hf`)")
        if self.cfg.port:
            check_port_free(self.cfg.host, self.port)
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU builds; ignored on GPUs
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = env["TMPDIR"] = socket_dir()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_path(self.tmp_dir), env.get("PYTHONPATH")]))
        try:
            for tries in range(1, PORT_TRIES + 1):
                log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
                with open(self.log_file, "ab") as log:
                    # its whole process group (vLLM's engine and workers) goes with this process, even killed outright
                    self.process = start_group(command(self.cfg, self.port), stdout=log, stderr=subprocess.STDOUT,
                                               env=env)
                try:
                    self._wait_ready()
                    break
                except RuntimeError:
                    # the port chosen free was taken before vLLM bound it: another one, unless the user chose it
                    if self.cfg.port or tries == PORT_TRIES or PORT_TAKEN not in self._log_since(log_start):
                        raise
                    end_group(self.process, (signal.SIGTERM, 10.0))
                    self.port = free_port(self.cfg.host)
                    self.url = f"http://{host_port(self.cfg.host, self.port)}/v1"
        except BaseException:
            self.stop()
            raise
        if key := api_key(self.cfg):
            self.key_env = f"SWEHERO_VLLM_API_KEY_{self.port}"
            os.environ[self.key_env] = key
        return self

    def _wait_ready(self) -> None:
        """Until vLLM lists the model at /v1/models: /health alone is answered by any server on the port, and one
        started on it while vLLM loads (a port chosen free may be taken before vLLM binds it) would get the
        requests."""
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        key = api_key(self.cfg)
        models = urllib.request.Request(f"{self.url}/models", headers={"Authorization": f"Bearer {key}"} if key else {})
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with status {self.process.returncode} while starting; "
                                   f"last lines of {self.log_file}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(models, timeout=5) as response:
                    if self.cfg.name in served_models(response.read()):
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException):
                pass  # not up yet, or another server on the port (vLLM then exits: its port is taken)
            time.sleep(1.0)
        raise TimeoutError(f"vLLM did not list {self.cfg.name} at {self.url}/models in "
                           f"{self.cfg.startup_timeout_s:.0f}s; see {self.log_file}")

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGINT (vLLM shuts down cleanly), then SIGTERM, then SIGKILL, to the whole process group; then its
        temporary folder goes."""
        if self.process is not None:
            end_group(self.process, (signal.SIGINT, grace_s), (signal.SIGTERM, 10.0))
        if self.tmp_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None
        if self.key_env:
            os.environ.pop(self.key_env, None)
            self.key_env = None

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
