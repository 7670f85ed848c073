"""How the model and the data are split over ranks: the one parallel layout type, set in a recipe's `train`
stage (`parallel:`) and taken by the model provider. Plain data, no torch: recipe validation imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from swehero.recipe.stage import Range


@dataclass(frozen=True)
class ParallelConfig:
    """How the model and data are split over GPUs. Data parallelism takes what is left of the world size."""

    tensor: Annotated[int, Range(min=1)] = 1
    """Tensor-parallel size (splits every layer; keep within a node)."""
    pipeline: Annotated[int, Range(min=1)] = 1
    """Pipeline-parallel size (splits the layers into stages; must divide the number of layers)."""
    virtual_pipeline: Annotated[int, Range(min=1)] = 1
    """Model chunks per pipeline rank (interleaved schedule, smaller bubble); 1 = plain 1F1B. pipeline *
    virtual_pipeline must divide the number of layers; chunk i of rank r holds layer block i * pipeline + r."""
    context: Annotated[int, Range(min=1)] = 1
    """Context-parallel size (splits each sequence; for 64k-128k tokens)."""
    sequence_parallel: bool = False
    """Split layer-norm and dropout activations along the sequence over the tensor-parallel group (needs
    tensor > 1 and Transformer Engine's layers: Megatron's local norms refuse it)."""


def model_split_problems(hf_config: dict, tensor: int, pipeline: int, virtual_pipeline: int = 1) -> list[str]:
    """What of a Hugging Face config (field named) a tensor x pipeline split cannot divide, which Megatron would
    otherwise fail on inside every rank. Fewer key/value heads than tensor ranks is fine when they divide it:
    Megatron then gives each group of tensor / num_key_value_heads ranks one key/value head."""
    heads = hf_config["num_attention_heads"]
    kv_heads = hf_config.get("num_key_value_heads", heads)
    layers, ffn = hf_config["num_hidden_layers"], hf_config["intermediate_size"]
    problems = []
    if heads % tensor:
        problems.append(f"tensor {tensor} does not divide num_attention_heads {heads}")
    if kv_heads % tensor and tensor % kv_heads:
        problems.append(f"tensor {tensor} neither divides nor is a multiple of num_key_value_heads {kv_heads}")
    if ffn % tensor:
        problems.append(f"tensor {tensor} does not divide intermediate_size {ffn}")
    stages = pipeline * virtual_pipeline
    if layers % stages:
        what = f"pipeline {pipeline}" + (f" x virtual_pipeline {virtual_pipeline}" if virtual_pipeline > 1 else "")
        problems.append(f"{what} does not divide num_hidden_layers {layers}")
    return problems
