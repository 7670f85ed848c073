"""Tiny Qwen2-shaped model and tokenizer for tests, the tiny recipe and benchmarks."""
