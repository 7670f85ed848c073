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
def four_layer_model_dir(tmp_path_factory) -> Path:
    """The tiny model with 4 layers (same tokenizer): 2 pipeline stages x 2 virtual stages of one layer each."""
    from swehero.tiny.kit import TinyModelConfig, make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny4") / "model", TinyModelConfig(num_layers=4), seed=0)
