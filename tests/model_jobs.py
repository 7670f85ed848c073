"""Tiny random Qwen2 checkpoints and the multi-process jobs the model tests run (one module so spawn can import it)."""

from __future__ import annotations

from pathlib import Path

import torch

TINY = dict(
    vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
    num_key_value_heads=2, head_dim=64, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}


def make_hf(out: Path, seed: int = 0, **overrides) -> Path:
    """A random Qwen2ForCausalLM saved as safetensors, with non-zero q/k/v biases so bias mistakes show."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(**{**TINY, **overrides})
    model = Qwen2ForCausalLM(config).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    model.save_pretrained(out, safe_serialization=True)
    return out


def hf_logits(hf_dir: Path, tokens: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(tokens, position_ids=position_ids).logits
