"""Build a Megatron-Core `GPTModel` for a Qwen2.5(-Coder) Hugging Face `config.json`.

`init_parallel` sets up Megatron's process groups for a `ParallelConfig`; `build_model` builds this rank's part of
the model (its pipeline stage, its tensor-parallel shard), `build_model_chunks` its virtual pipeline stages. Layer
specs: `"te"` (Transformer Engine, the GPU image) or `"local"` (Megatron's own modules, plus packed-sequence support
from `packing.py`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from megatron.core import parallel_state, tensor_parallel
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import (
    get_gpt_layer_local_spec,
    get_gpt_layer_with_transformer_engine_spec,
)
from megatron.core.transformer import TransformerConfig

from swehero.model import qwen2
from swehero.model.packing import PackedDotProductAttention
from swehero.model.parallel import ParallelConfig


@dataclass
class QwenTransformerConfig(TransformerConfig):
    """`TransformerConfig` plus the RoPE fields `GPTModel` reads from its config when they exist there (newer
    megatron-core declares them on `TransformerConfig`, 0.16 only on MLA configs): declaring them here makes
    every version take them from the config."""

    position_embedding_type: str = "rope"
    """'rope', or 'yarn' when the checkpoint has YaRN `rope_scaling`."""
    rotary_base: float = 10000.0
    """RoPE theta."""

    yarn_rotary_scaling_factor: float = 1.0
    """YaRN `factor`."""
    yarn_original_max_position_embeddings: int = 4096
    """YaRN `original_max_position_embeddings`: the context length the model was pretrained with."""
    yarn_beta_fast: float = 32.0
    """YaRN `beta_fast`."""
    yarn_beta_slow: float = 1.0
    """YaRN `beta_slow`."""
    yarn_mscale: float = 1.0
    """With `yarn_mscale_all_dim=0` this gives HF's attention factor 0.1 * ln(factor) + 1."""
    yarn_mscale_all_dim: float = 0.0
    """See `yarn_mscale`."""
    yarn_correction_range_round_to_int: bool = True
    """HF's `truncate`: floor/ceil the correction range."""


def init_parallel(parallel: ParallelConfig, seed: int = 1234) -> None:
    """Create Megatron's TP/PP/CP/DP groups over the already initialised default process group, and seed RNGs."""
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor, pipeline_model_parallel_size=parallel.pipeline,
        virtual_pipeline_model_parallel_size=_virtual_size(parallel), context_parallel_size=parallel.context,
    )
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def transformer_layer_spec(spec: str):
    """The layer `ModuleSpec` `GPTModel` takes for a spec name: 'te' (Transformer Engine) or 'local'."""
    if spec == "te":
        return get_gpt_layer_with_transformer_engine_spec()
    if spec != "local":
        raise ValueError(f"unknown layer spec {spec!r}: use 'te' or 'local'")
    local = copy.deepcopy(get_gpt_layer_local_spec(normalization="RMSNorm"))
    local.submodules.self_attention.submodules.core_attention = PackedDotProductAttention
    return local


def transformer_config(hf: dict[str, Any], parallel: ParallelConfig, dtype: torch.dtype = torch.float32,
                       **overrides: Any) -> QwenTransformerConfig:
    """Megatron config for a Qwen2 HF config; `overrides` set any other `TransformerConfig` field."""
    kwargs = qwen2.transformer_config_kwargs(hf)
    kwargs.update(
        position_embedding_type="yarn" if qwen2.yarn(hf) else "rope",
        rotary_base=qwen2.rope_theta(hf),
        tensor_model_parallel_size=parallel.tensor,
        pipeline_model_parallel_size=parallel.pipeline,
        virtual_pipeline_model_parallel_size=_virtual_size(parallel),
        context_parallel_size=parallel.context,
        sequence_parallel=parallel.sequence_parallel,
        activation_func=F.silu,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        # Without CUDA (the CPU backend) parameters must be created on the CPU; with it, directly on the GPU.
        use_cpu_initialization=not torch.cuda.is_available(),
    )
    kwargs.update(overrides)
    return QwenTransformerConfig(**kwargs)


def _virtual_size(parallel: ParallelConfig) -> int | None:
    # Megatron means "no virtual stages" by None, not 1.
    return parallel.virtual_pipeline if parallel.virtual_pipeline > 1 else None


def build_model_chunks(hf: dict[str, Any], parallel: ParallelConfig, spec: str = "local",
                       dtype: torch.dtype = torch.float32, **overrides: Any) -> list[GPTModel]:
    """This rank's model chunks in schedule order, sharing one config (the schedules read the first chunk's).
    Only the first chunk of the first stage embeds and only the last chunk of the last stage has the LM head.
    Call `init_parallel` first (with the same `parallel`)."""
    config = transformer_config(hf, parallel, dtype, **overrides)
    stages = range(parallel.virtual_pipeline) if parallel.virtual_pipeline > 1 else [None]
    return [
        GPTModel(
            config=config,
            transformer_layer_spec=transformer_layer_spec(spec),
            vocab_size=qwen2.padded_vocab_size(hf["vocab_size"], parallel.tensor),
            max_sequence_length=hf["max_position_embeddings"],
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            share_embeddings_and_output_weights=qwen2.tied_embeddings(hf),
            position_embedding_type=config.position_embedding_type,
            rotary_base=config.rotary_base,
            vp_stage=stage,
        )
        for stage in stages
    ]


Chunks = GPTModel | Sequence[GPTModel]
"""A rank's model: one GPTModel, or its virtual pipeline stages in order."""


def as_chunks(model: Chunks) -> list[GPTModel]:
    return [model] if isinstance(model, GPTModel) else list(model)


def build_model(hf: dict[str, Any], parallel: ParallelConfig, spec: str = "local",
                dtype: torch.dtype = torch.float32, **overrides: Any) -> GPTModel:
    """This rank's stage and shard of the model, without virtual pipeline stages."""
    if parallel.virtual_pipeline > 1:
        raise ValueError(f"virtual_pipeline {parallel.virtual_pipeline} builds several chunks per rank: use "
                         "build_model_chunks")
    (model,) = build_model_chunks(hf, parallel, spec, dtype, **overrides)
    return model
