"""The Qwen2 / Qwen2.5(-Coder) family: Hugging Face config -> Megatron-Core settings, and the weight name table.

Sizes always come from the checkpoint's `config.json`; this file only states what the family is
(RMSNorm, SwiGLU, grouped-query attention with bias on q/k/v only, RoPE or YaRN) and how its weights are named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from swehero.errors import InputError

# Megatron name -> Hugging Face name; `*` is the layer index. Megatron names are the Transformer Engine
# spec's; `LOCAL_SPEC_NAMES` gives the local spec's names for the two norms TE fuses into the next linear.
NAME_MAP: dict[str, str] = {
    "embedding.word_embeddings.weight": "model.embed_tokens.weight",
    "decoder.layers.*.self_attention.linear_qkv.layer_norm_weight": "model.layers.*.input_layernorm.weight",
    "decoder.layers.*.self_attention.linear_proj.weight": "model.layers.*.self_attn.o_proj.weight",
    "decoder.layers.*.mlp.linear_fc1.layer_norm_weight": "model.layers.*.post_attention_layernorm.weight",
    "decoder.layers.*.mlp.linear_fc2.weight": "model.layers.*.mlp.down_proj.weight",
    "decoder.final_layernorm.weight": "model.norm.weight",
    "output_layer.weight": "lm_head.weight",
}

# Fused Megatron tensors -> the Hugging Face tensors they are made of, in order.
QKV_MAP: dict[str, tuple[str, str, str]] = {
    f"decoder.layers.*.self_attention.linear_qkv.{kind}": tuple(
        f"model.layers.*.self_attn.{p}_proj.{kind}" for p in "qkv"
    )
    for kind in ("weight", "bias")
}
GATE_UP_MAP: dict[str, tuple[str, str]] = {
    "decoder.layers.*.mlp.linear_fc1.weight": (
        "model.layers.*.mlp.gate_proj.weight",
        "model.layers.*.mlp.up_proj.weight",
    ),
}

LOCAL_SPEC_NAMES: dict[str, str] = {
    "self_attention.linear_qkv.layer_norm_weight": "input_layernorm.weight",
    "mlp.linear_fc1.layer_norm_weight": "pre_mlp_layernorm.weight",
}

HARMLESS_UNUSED = ("rotary_emb.inv_freq",)
"""Endings of tensors some Hugging Face checkpoints carry that no model needs (RoPE's frequencies are computed)."""

VOCAB_MULTIPLE = 128
"""The vocabulary is padded to a multiple of this (and of TP): TP-independent for TP up to 128, so a checkpoint
reshards freely. Every Qwen2.5 vocabulary (151936, 152064) is already a multiple, so they are not padded."""


def padded_vocab_size(vocab_size: int, tp: int) -> int:
    multiple = math.lcm(VOCAB_MULTIPLE, tp)
    return -(-vocab_size // multiple) * multiple


@dataclass(frozen=True)
class Yarn:
    """YaRN rope scaling, read from `rope_scaling` the way Hugging Face and vLLM apply it."""

    factor: float
    original_max_position_embeddings: int
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    truncate: bool = True


def rope_theta(hf: dict[str, Any]) -> float:
    # transformers 5 writes `rope_parameters` (with the theta inside); published Qwen2.5 configs use `rope_theta`.
    params = hf.get("rope_parameters") or {}
    return float(hf.get("rope_theta", params.get("rope_theta", 10000.0)))


def yarn(hf: dict[str, Any]) -> Yarn | None:
    key = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    scaling = hf.get(key) or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return None
    if kind != "yarn":
        raise InputError(f"{key}: rope scaling {kind!r} is not supported for Qwen2; use yarn or none")
    if problems := yarn_problems(scaling):
        raise InputError("; ".join(f"{key}.{name}: {problem}" for name, problem in problems))
    return Yarn(
        factor=float(scaling["factor"]),
        original_max_position_embeddings=int(
            scaling.get("original_max_position_embeddings") or hf["max_position_embeddings"]
        ),
        beta_fast=float(scaling.get("beta_fast") or 32.0),
        beta_slow=float(scaling.get("beta_slow") or 1.0),
        truncate=bool(scaling.get("truncate", True)),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _got(value: Any) -> str:
    return "nothing" if value is None else repr(value)


def yarn_problems(scaling: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, problem) for the values of a YaRN `rope_scaling` that no model can be built with."""
    problems = []
    factor = scaling.get("factor")
    if not _is_number(factor) or factor <= 1:
        # YaRN multiplies the context by factor: 1 extends nothing, less shrinks it, 0 or less leaves no positions
        problems.append(("factor", f"must be a number > 1, got {_got(factor)}"))
    original = scaling.get("original_max_position_embeddings")
    if original is not None and not _is_count(original):
        problems.append(("original_max_position_embeddings", f"must be a whole number > 0, got {original!r}"))
    if scaling.get("attention_factor") is not None or scaling.get("mscale") or scaling.get("mscale_all_dim"):
        problems.append(("attention_factor", "an explicit YaRN attention_factor/mscale is not supported: Qwen2.5 "
                                             "derives it from factor"))
    return problems


def rope_override_problems(scaling: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, problem) for a train stage's `rope_scaling` override: YaRN (`type` or `rope_type`), with values
    `yarn_problems` accepts. Without a type it would be written into the config and read as no scaling."""
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "yarn":
        return [("type", f"must be yarn (the rope scaling Qwen2.5 extends its context with), got {_got(kind)}")]
    return yarn_problems(scaling)


def with_rope_scaling(hf: dict[str, Any], scaling: dict[str, Any]) -> dict[str, Any]:
    """`hf` with a YaRN rope-scaling override (`rope_override_problems` says what one needs), written so that
    transformers 5 and vLLM 0.32 read what Megatron trains:

    - `original_max_position_embeddings` explicit (else the checkpoint's earlier YaRN value, else its
      `max_position_embeddings`), so applying the override again (stage 2) changes nothing;
    - `max_position_embeddings` = original x factor, the context the scaling reaches: vLLM no longer
      multiplies it by `factor` for YaRN (as transformers never did) and refuses a longer `--max-model-len`;
    - inside `rope_parameters` when the config keeps its theta there (transformers 5's layout), since a
      `rope_scaling` beside it is read with the default theta (10000 instead of Qwen2.5's 1e6)."""
    if problems := rope_override_problems(scaling):
        raise InputError("; ".join(f"rope_scaling.{name}: {problem}" for name, problem in problems))
    scaling = dict(scaling)
    earlier = yarn(hf)
    original = scaling.get("original_max_position_embeddings") or (
        earlier.original_max_position_embeddings if earlier else hf["max_position_embeddings"])
    scaling["original_max_position_embeddings"] = original
    out = {**hf, "max_position_embeddings": int(original * scaling["factor"])}
    if hf.get("rope_parameters") and not hf.get("rope_scaling"):
        scaling.pop("type", None)
        out["rope_parameters"] = {**hf["rope_parameters"], **scaling, "rope_type": "yarn"}
    else:
        out["rope_scaling"] = scaling
    return out


SIZES = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
         "max_position_embeddings")
"""The fields of a Qwen2 config the model is built from that have no default: whole numbers > 0."""
DTYPES = ("float32", "bfloat16", "float16")
"""The dtypes weights are stored and converted in."""


def dtype_name(hf: dict[str, Any]) -> str:
    """The dtype the weights are stored in: `torch_dtype` (`dtype` in transformers 5's configs), float32 if unset."""
    return hf.get("torch_dtype") or hf.get("dtype") or "float32"


def check_supported(hf: dict[str, Any]) -> None:
    """Raise `InputError` unless `hf` is a Qwen2 config this module converts, naming the field that is not."""
    if hf.get("model_type") not in (None, "qwen2"):
        raise InputError(f"expected a qwen2 config, got model_type={hf.get('model_type')!r}")
    if hf.get("use_sliding_window"):
        raise InputError("sliding-window attention is not supported (Qwen2.5 checkpoints ship with it off)")
    for name in SIZES:
        value = hf.get(name)
        if not _is_count(value):
            raise InputError(f"{name}: must be a whole number > 0, got {_got(value)}")
    if hf.get("hidden_act", "silu") != "silu":  # Megatron's provider builds SwiGLU, as every Qwen2.5 has
        raise InputError(f"hidden_act: must be silu (Qwen2's SwiGLU), got {hf['hidden_act']!r}")
    if not (_is_number(hf.get("rms_norm_eps")) and hf["rms_norm_eps"] > 0):
        raise InputError(f"rms_norm_eps: must be a number > 0, got {_got(hf.get('rms_norm_eps'))}")
    if dtype_name(hf) not in DTYPES:
        # "auto" is from_pretrained's argument for "the dtype the config states", not a dtype: transformers cannot
        # read a config.json stating it either (5.19: AttributeError), and guessing bf16 would round fp32 weights.
        field = "torch_dtype" if hf.get("torch_dtype") else "dtype"
        raise InputError(f"{field}: must be one of {', '.join(DTYPES)} (the dtype the weights are stored in), got "
                         f"{dtype_name(hf)!r}")
    yarn(hf)


def transformer_config_kwargs(hf: dict[str, Any]) -> dict[str, Any]:
    """Megatron `TransformerConfig` fields for a Qwen2 `config.json` (parallel and dtype settings excluded)."""
    check_supported(hf)
    heads = hf["num_attention_heads"]
    kwargs: dict[str, Any] = dict(
        num_layers=hf["num_hidden_layers"],
        hidden_size=hf["hidden_size"],
        ffn_hidden_size=hf["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=hf.get("num_key_value_heads", heads),
        kv_channels=hf.get("head_dim") or hf["hidden_size"] // heads,
        layernorm_epsilon=hf["rms_norm_eps"],
        normalization="RMSNorm",
        gated_linear_unit=True,
        add_bias_linear=False,
        add_qkv_bias=True,
        hidden_dropout=0.0,
        attention_dropout=hf.get("attention_dropout", 0.0),
        # TE's fused RoPE cannot apply YaRN's cos/sin scale, and the unfused path is exact everywhere.
        apply_rope_fusion=False,
        # Fused kernels that exist only on CUDA (or gain nothing without linear biases); a GPU training run may
        # turn them back on through `build_model(..., **overrides)`.
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
    )
    scaling = yarn(hf)
    if scaling is not None:
        kwargs.update(
            yarn_rotary_scaling_factor=scaling.factor,
            yarn_original_max_position_embeddings=scaling.original_max_position_embeddings,
            yarn_beta_fast=scaling.beta_fast,
            yarn_beta_slow=scaling.beta_slow,
            yarn_correction_range_round_to_int=scaling.truncate,
        )
    return kwargs


def tied_embeddings(hf: dict[str, Any]) -> bool:
    return bool(hf.get("tie_word_embeddings", False))


def hf_weight_names(hf: dict[str, Any]) -> set[str]:
    """The Hugging Face tensors a model of config `hf` is built from: the table's names for each of its
    `num_hidden_layers` layers, and `lm_head.weight` unless the embeddings are tied."""
    names = [*NAME_MAP.values(), *(n for fused in (*QKV_MAP.values(), *GATE_UP_MAP.values()) for n in fused)]
    if tied_embeddings(hf):
        names.remove(NAME_MAP["output_layer.weight"])
    layers = [str(i) for i in range(hf["num_hidden_layers"])]
    return {n.replace("*", layer) for n in names for layer in (layers if "*" in n else ["*"])}


def hf_weight_shapes(hf: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shape of each Hugging Face tensor of `hf_weight_names`, as config `hf` sizes it (the embeddings by its
    `vocab_size`)."""
    hidden, heads, kv = hf["hidden_size"], hf["num_attention_heads"], hf.get("num_key_value_heads", hf["num_attention_heads"])
    head_dim, ffn, vocab = hf.get("head_dim") or hidden // heads, hf["intermediate_size"], hf["vocab_size"]
    by_ending = {"embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden), "norm.weight": (hidden,),
                 "layernorm.weight": (hidden,), "q_proj.weight": (heads * head_dim, hidden),
                 "q_proj.bias": (heads * head_dim,), "o_proj.weight": (hidden, heads * head_dim),
                 "gate_proj.weight": (ffn, hidden), "up_proj.weight": (ffn, hidden), "down_proj.weight": (hidden, ffn),
                 **{f"{p}_proj.{kind}": (kv * head_dim, hidden)[: 2 if kind == "weight" else 1]
                    for p in "kv" for kind in ("weight", "bias")}}
    return {name: next(shape for ending, shape in by_ending.items() if name.endswith(ending))
            for name in hf_weight_names(hf)}


def is_harmless_unused(name: str, hf: dict[str, Any]) -> bool:
    """Whether leaving out Hugging Face tensor `name` loses nothing: computed buffers, and a tied model's copy of
    the embeddings as LM head."""
    return name.endswith(HARMLESS_UNUSED) or (tied_embeddings(hf) and name == NAME_MAP["output_layer.weight"])
