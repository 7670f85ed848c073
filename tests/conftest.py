from pathlib import Path

import pytest

from tests_paths import QWEN as QWEN_TOKENIZER


@pytest.fixture(scope="session")
def qwen_tokenizer():
    if not (QWEN_TOKENIZER / "tokenizer_config.json").exists():
        pytest.skip(f"Qwen2.5 tokenizer fixture not found at {QWEN_TOKENIZER}")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
