"""Serving the tiny model in tests: its settings, and the checks that a stopped server left nothing running."""

import socket
from pathlib import Path

from swehero.serve.server import ServeConfig


def tiny_serve_config(model_dir, port: int = 0) -> ServeConfig:
    # 16k context: the OpenHands tool schemas alone are ~4.3k tokens with the tiny 2k-word vocabulary
    return ServeConfig(model=str(model_dir), served_name="tiny", dtype="float32", max_model_len=16384,
                       gpu_memory_utilization=0.2, port=port, compile=False)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def servers_on(port: int) -> list[int]:
    """PIDs of processes started with `--port PORT` (the vLLM server and its workers)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"--port\0{port}\0".encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids
