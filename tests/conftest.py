"""Shared fixtures: the reference Qwen2.5 tokenizer and a tiny model kit built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests_paths import QWEN as QWEN_TOKENIZER

# Tests run many small torch programs side by side on a 2-core machine: one thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Without a GPU the Triton kernels are tested in Triton's interpreter. Triton decides at import time (its own
# library functions are decorated then), and vLLM imports it early, so the switch is set before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    if not (QWEN_TOKENIZER / "vocab.json").exists():
        pytest.skip(f"reference Qwen2.5 tokenizer not found at {QWEN_TOKENIZER} (CI provides ../shared)")
    return QWEN_TOKENIZER


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from swehero.tiny.kit import TinyModelConfig, make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", TinyModelConfig(), seed=0)


@pytest.fixture(scope="session")
def docker_base_image() -> str:
    """The Docker engine made ready as `make test` does (installed and started as root when missing) and the base
    image of locally built instance images; skips with the one-line reason when that cannot be had here."""
    from swehero.eval.engine import DockerUnavailable, ensure_base_image

    try:
        return ensure_base_image(progress=lambda line: print(line, flush=True))
    except DockerUnavailable as e:
        pytest.skip(f"Docker unavailable: {e}")


@pytest.fixture(autouse=True)
def _docker_engine_for_marked_tests(request) -> None:
    """Tests marked `docker` get the engine (or are skipped with the reason) without asking for it."""
    if request.node.get_closest_marker("docker"):
        request.getfixturevalue("docker_base_image")


@pytest.fixture(scope="session")
def toy_images(docker_base_image, tmp_path_factory) -> Path:
    """The toy tasks and their instance images, built once per session; returns a task file of them with the
    harness's columns (`swehero eval images build --out`), the repositories in `repos/` beside it."""
    from swehero.eval.images import build_images, write_harness_tasks
    from swehero.rollout.tasks import load_tasks
    from swehero.rollout.toy import build_toy_tasks

    tasks_file = build_toy_tasks(tmp_path_factory.mktemp("toy-images"))
    tasks = load_tasks(str(tasks_file))
    build_images(tasks, tasks_file.parent / "repos", docker_base_image, progress=lambda line: None)
    return write_harness_tasks(tasks, tasks_file.parent / "harness.jsonl")


@pytest.fixture(scope="session")
def four_layer_model_dir(tmp_path_factory) -> Path:
    """The tiny model with 4 layers (same tokenizer): 2 pipeline stages x 2 virtual stages of one layer each."""
    from swehero.tiny.kit import TinyModelConfig, make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny4") / "model", TinyModelConfig(num_layers=4), seed=0)
