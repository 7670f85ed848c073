"""The tiny model kit: a Qwen2.5-shaped tokenizer and a randomly initialised Qwen2 model, small enough that
tests, the tiny recipe and benchmarks can train and serve them on a laptop CPU.

The tokenizer is a byte-level BPE trained on `corpus.txt`, the agent's tool descriptions and prompts with Qwen2's
pre-tokenizer regex, the 22 Qwen2.5 added tokens (same order and special flags, so `<tool_call>` stays a plain added
token) and the Qwen2.5 Instruct chat template with tool calling (`qwen2.5_chat_template.jinja`, Apache-2.0, from the
Qwen2.5 Instruct tokenizer_config.json). The model's config.json is written in the published Qwen2.5 format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from swehero.errors import InputError
from swehero.recipe.stage import Range

HERE = Path(__file__).parent

# Qwen2.5's added tokens, in id order, with their `special` flag (from the Qwen2.5 Instruct tokenizer_config).
QWEN25_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]

# Qwen2's pre-tokenizer split: contractions, letters, single digits, punctuation runs, newlines, spaces.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass
class TinyModelConfig:
    """Shape of the tiny model. head_dim is fixed at 64 so vLLM's CPU attention accepts it."""

    vocab_size: Annotated[int, Range(min=1)] = 2048
    """Most BPE tokens to learn from the corpus, before the 22 added tokens (fewer when it runs out of merges)."""
    hidden_size: Annotated[int, Range(min=64)] = 256
    """Model width; the number of attention heads is hidden_size / 64 (4: tensor parallel up to 2 with GQA)."""
    num_layers: Annotated[int, Range(min=1)] = 2
    """Transformer layers."""
    num_kv_heads: Annotated[int, Range(min=1)] = 2
    """Key/value heads (GQA); must divide the number of attention heads."""
    intermediate_size: Annotated[int, Range(min=1)] = 512
    """SwiGLU hidden size."""
    max_position_embeddings: Annotated[int, Range(min=1)] = 32768
    """Context length recorded in config.json."""
    rope_theta: Annotated[float, Range(gt=0)] = 1000000.0
    """RoPE base, as Qwen2.5."""
    tie_word_embeddings: bool = False
    """Share the input embedding with the LM head (Qwen2.5 0.5B-3B do; 7B+ do not)."""

    def cross_field_problems(self) -> list[tuple[str, str]]:
        """Shapes no Qwen2 model has: refused by the schema (and `make_tiny`) before anything is written."""
        if self.hidden_size % HEAD_DIM:
            return [("hidden_size", f"must be a multiple of head_dim {HEAD_DIM}, got {self.hidden_size}")]
        if (self.hidden_size // HEAD_DIM) % self.num_kv_heads:
            return [("num_kv_heads", f"must divide the {self.hidden_size // HEAD_DIM} attention heads, got "
                                     f"{self.num_kv_heads}")]
        return []


HEAD_DIM = 64


def build_tokenizer(vocab_size: int):
    """Train the byte-level BPE on the bundled corpus, the agent's tool descriptions and its built-in prompts;
    deterministic.

    Every trajectory's prompt carries the tool descriptions and a system prompt (~20k characters in execution
    mode); learning their words keeps that prefix short, as a real tokenizer's large vocabulary does, and attention
    on CPU costs the square of it."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    from swehero.agent.prompts import builtin_templates
    from swehero.toolspec import openhands_tools

    corpus = (HERE / "corpus.txt").read_text().splitlines(keepends=True) + [json.dumps(openhands_tools()) + "\n"]
    corpus += builtin_templates()
    bpe.train_from_iterator(corpus, trainer)
    for content, special in QWEN25_ADDED_TOKENS:
        bpe.add_tokens([AddedToken(content, special=special, normalized=False, single_word=False,
                                   lstrip=False, rstrip=False)])
    extra = [t for t, special in QWEN25_ADDED_TOKENS if special and t not in ("<|endoftext|>", "<|im_end|>")]
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=extra,
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        chat_template=(HERE / "qwen2.5_chat_template.jinja").read_text(),
    )


def hf_config(cfg: TinyModelConfig, vocab_size: int, bos_id: int, eos_id: int) -> dict:
    """A config.json in the published Qwen2.5 format (what our converters and vLLM read)."""
    _check_shape(cfg)
    heads = cfg.hidden_size // HEAD_DIM
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "max_window_layers": cfg.num_layers,
        "model_type": "qwen2",
        "num_attention_heads": heads,
        "num_hidden_layers": cfg.num_layers,
        "num_key_value_heads": cfg.num_kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": cfg.rope_theta,
        "sliding_window": None,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": "float32",
        # As published: transformers 5 warns of a Mistral tokenizer bug when a tokenizer's folder has a config.json
        # without it.
        "transformers_version": "4.43.1",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }


def make_tiny(out: Path, cfg: TinyModelConfig, seed: int) -> Path:
    """Write a Hugging Face folder (config, safetensors weights, tokenizer, generation config) to `out`."""
    _check_shape(cfg)  # before the tokenizer is written: no half-made kit
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(cfg.vocab_size)
    tokenizer.save_pretrained(out)
    _mark_as_qwen2_tokenizer(out / "tokenizer_config.json")
    return write_random_model(out, cfg, tokenizer, seed)


def _check_shape(cfg: TinyModelConfig) -> None:
    if problems := cfg.cross_field_problems():
        raise InputError("; ".join(f"{name} {message}" for name, message in problems))


def write_random_model(out: Path, cfg: TinyModelConfig, tokenizer, seed: int) -> Path:
    """Write a randomly initialised Qwen2 model of shape `cfg` for `tokenizer` (config, safetensors weights,
    generation config) into the folder `out`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # Pad the embedding to a multiple of 128 rows, as Qwen2.5 pads 151665 tokens to 152064: then Megatron needs
    # no padding of its own (padded rows would join the softmax with logit 0 and change the loss).
    vocab = -(-len(tokenizer) // 128) * 128
    bos, eos = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    config = hf_config(cfg, vocab, bos, eos)

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(Qwen2Config.from_dict(config))
    with torch.no_grad():
        # HF initialises biases to zero; random q/k/v biases make bias mistakes in conversions visible.
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.02)
    model.generation_config.eos_token_id = [eos, bos]
    model.generation_config.pad_token_id = bos
    model.save_pretrained(out, safe_serialization=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _mark_as_qwen2_tokenizer(path: Path) -> None:
    """Name the class the way Qwen2.5 checkpoints do, so loaders treat both alike."""
    data = json.loads(path.read_text())
    data["tokenizer_class"] = "Qwen2Tokenizer"
    data["add_bos_token"] = False
    data["errors"] = "replace"
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
