"""Serving the tiny model in tests: its settings, and the checks that a stopped server left nothing running."""

import shutil
import socket
from pathlib import Path

from swehero.serve.server import ServeConfig
from swehero.tiny.kit import TinyModelConfig, write_random_model


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


def qwen_vocab_model(out: Path, tokenizer_dir: Path) -> Path:
    """A random one-layer Qwen2 model with a real tokenizer (Qwen2.5's): what vLLM feeds it is what it would feed
    Qwen2.5-Coder. 20M parameters, nearly all of them the embeddings."""
    from transformers import AutoTokenizer

    shutil.copytree(tokenizer_dir, out)
    shape = TinyModelConfig(hidden_size=64, num_kv_heads=1, intermediate_size=128, num_layers=1)
    return write_random_model(out, shape, AutoTokenizer.from_pretrained(out), seed=0)
