from pathlib import Path

import pytest

QWEN = Path(__file__).parents[1] / "../shared/fixtures/qwen2.5-tokenizer"


def qwen() -> Path:
    """The reference Qwen2.5 tokenizer's folder; the calling test is skipped when it is not there (CI provides
    ../shared beside the checkout)."""
    if not (QWEN / "vocab.json").exists():
        pytest.skip(f"reference Qwen2.5 tokenizer not found at {QWEN} (CI provides ../shared)")
    return QWEN
