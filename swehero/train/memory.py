"""Memory per GPU of a training layout, term by term, so a plan can say what fits before GPUs are booked.

Model: Megatron-Core with bf16 weights, fp32 gradient buffers, AdamW with fp32 master weights and moments
(sharded by the distributed optimizer over the data- and context-parallel ranks together, as megatron-core shards it
over its `intra_dp_cp` group: context ranks hold the same weights; an fp32 run has no master copy), flash attention
(no s^2 score matrix), and activations counted tensor by tensor for a Qwen2 layer (GQA attention + SwiGLU MLP),
following Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"). The first
pipeline stage holds the most activations: with 1F1B, `pipeline` micro-batches are in flight there. Full recompute
keeps each layer's input, plus, in the backward pass, all activations of the layer being re-run.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass

from swehero_kernels.linear_ce import default_chunk_size

from swehero.train.config import Settings

GiB = 1024**3
GPU_MEMORY_GIB = 80.0
"""H100 SXM; a plan warns above this."""
RUNTIME_OVERHEAD_GIB = 3.0
"""CUDA context, NCCL buffers, allocator fragmentation: what a measured run holds beyond the terms below."""
FULL_RECOMPUTE_LAYERS = 1
"""Layers per checkpointed chunk under `recompute: full` (Megatron's `recompute_num_layers` with the uniform
method, as `model_setup.model_overrides` passes it): the backward pass re-runs one chunk at a time."""


@dataclass
class MemoryEstimate:
    parameters: int
    """Parameters of the whole model."""
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    loss_gib: float
    """The last stage's cross-entropy (`loss_bytes`)."""
    overhead_gib: float

    @property
    def total_gib(self) -> float:
        return (self.weights_gib + self.gradients_gib + self.optimizer_gib + self.activations_gib + self.loss_gib
                + self.overhead_gib)


def dims(hf_config: dict) -> tuple[int, int, int, int, int]:
    """(hidden, query heads, key/value heads, head dim, MLP width) of a Qwen2 config."""
    h, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
    kv = hf_config.get("num_key_value_heads", heads)
    return h, heads, kv, hf_config.get("head_dim") or h // heads, hf_config["intermediate_size"]


def layer_matmul_weights(hf_config: dict) -> int:
    """Weights of one layer's matrix multiplies: q, k, v, output projection, and SwiGLU's gate, up and down."""
    h, heads, kv, head_dim, ffn = dims(hf_config)
    return h * heads * head_dim + 2 * h * kv * head_dim + heads * head_dim * h + 3 * h * ffn


def parameter_count(hf_config: dict) -> int:
    h, heads, kv, head_dim, _ = dims(hf_config)
    per_layer = layer_matmul_weights(hf_config) + (heads + 2 * kv) * head_dim + 2 * h  # + q/k/v biases, 2 RMSNorms
    embeddings = hf_config["vocab_size"] * h * (1 if hf_config.get("tie_word_embeddings") else 2)
    return hf_config["num_hidden_layers"] * per_layer + embeddings + h


def activation_bytes_per_token_per_layer(hf_config: dict, tensor: int, sequence_parallel: bool, recompute: str,
                                         dtype_bytes: int = 2) -> float:
    """Bytes a layer keeps per token for its backward pass."""
    h, heads, kv, head_dim, ffn = dims(hf_config)
    # Replicated across tensor ranks unless sequence-parallel: the norms' and projections' inputs (h each).
    layer_inputs = 4 * h  # input norm, qkv input, post-attention norm, fc1 input
    if recompute == "full":
        return dtype_bytes * h / (tensor if sequence_parallel else 1)
    # Split across tensor ranks: q, k, v, the attention output (+ fp32 log-sum-exp, negligible), the
    # output projection's input, the gate and up projections, and the SwiGLU product (fc2's input).
    split = (heads + 2 * kv) * head_dim + 2 * heads * head_dim + 3 * ffn
    replicated = layer_inputs / (tensor if sequence_parallel else 1)
    return dtype_bytes * (replicated + split / tensor)


def recomputed_chunk_bytes(hf_config: dict, settings: Settings, tokens_per_microbatch: float,
                           layers_per_stage: float, dtype_bytes: int) -> float:
    """What full recompute holds on top of the checkpoints: in the backward pass Megatron re-runs the forward of
    one chunk of layers for one micro-batch, and keeps all of that chunk's activations until its backward ends."""
    p = settings.parallel
    per_token = activation_bytes_per_token_per_layer(hf_config, p.tensor, p.sequence_parallel, "none", dtype_bytes)
    return per_token * tokens_per_microbatch * min(FULL_RECOMPUTE_LAYERS, layers_per_stage)


def loss_bytes(hf_config: dict, settings: Settings, tokens_per_microbatch: float, dtype_bytes: int) -> float:
    """What the last stage's cross-entropy holds at its peak, over one micro-batch. Unfused: the fp32 logits and
    their softmax copy. Fused (`swehero_kernels.linear_ce`), the larger of its forward and its backward: the fp32
    LM-head gradient, computed in the forward pass and held until the backward, which adds its copy in the
    weights' dtype; in the forward, the trained tokens' hidden states and their gradient, the gradient of all hidden
    states (every token counted as trained) and one chunk of logits; in the backward, the hidden states' gradient
    and its scaled copy."""
    vocab_shard = hf_config["vocab_size"] / settings.parallel.tensor
    if not settings.fused_ce:
        return 2 * 4 * tokens_per_microbatch * vocab_shard
    h, tokens = hf_config["hidden_size"], tokens_per_microbatch
    chunk = default_chunk_size(int(tokens), h, math.ceil(vocab_shard))
    weight_grad = 4 * vocab_shard * h
    forward = weight_grad + 3 * dtype_bytes * tokens * h + dtype_bytes * chunk * vocab_shard
    backward = weight_grad + (dtype_bytes * vocab_shard * h if dtype_bytes != 4 else 0) + 2 * dtype_bytes * tokens * h
    return max(forward, backward)


def peak_bytes(cuda: bool) -> int:
    """High-water mark of this process: allocated GPU memory, or the resident set size on CPU."""
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def estimate(settings: Settings, hf_config: dict, data_parallel: int) -> MemoryEstimate:
    p = settings.parallel
    fp32 = settings.precision == "fp32"
    weight_bytes, optimizer_bytes = (4, 8) if fp32 else (2, 12)  # fp32: the weights are the optimizer's own
    total = parameter_count(hf_config)
    local = total / (p.tensor * p.pipeline)  # embedding and LM head are split over tensor ranks too
    layers_per_stage = hf_config["num_hidden_layers"] / p.pipeline
    tokens_per_microbatch = settings.seq_length / p.context
    in_flight = p.pipeline  # 1F1B: the first stage keeps `pipeline` micro-batches of activations
    if p.virtual_pipeline > 1:
        in_flight = p.pipeline * (1 + (p.pipeline - 1) / (p.pipeline * p.virtual_pipeline))
    per_token = activation_bytes_per_token_per_layer(hf_config, p.tensor, p.sequence_parallel, settings.recompute,
                                                     4 if fp32 else 2)
    activations = per_token * tokens_per_microbatch * layers_per_stage * in_flight
    if settings.recompute == "full":
        activations += recomputed_chunk_bytes(hf_config, settings, tokens_per_microbatch, layers_per_stage,
                                              4 if fp32 else 2)
    loss = loss_bytes(hf_config, settings, tokens_per_microbatch, 4 if fp32 else 2)
    optimizer_shards = data_parallel * p.context if settings.distributed_optimizer else 1
    return MemoryEstimate(
        parameters=total,
        weights_gib=weight_bytes * local / GiB,
        gradients_gib=4 * local / GiB,
        optimizer_gib=optimizer_bytes * local / optimizer_shards / GiB,
        activations_gib=activations / GiB,
        loss_gib=loss / GiB,
        overhead_gib=RUNTIME_OVERHEAD_GIB,
    )
