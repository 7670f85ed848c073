from pathlib import Path

QWEN = Path(__file__).parents[1] / "../shared/fixtures/qwen2.5-tokenizer"
