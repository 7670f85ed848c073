"""Serving trained checkpoints with vLLM's OpenAI-compatible server."""
