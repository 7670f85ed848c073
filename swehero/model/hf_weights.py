"""Hugging Face safetensors <-> Megatron-Core weights, tensor by tensor, driven by the table in `qwen2.py`.

Each rank touches only its pipeline stage and tensor-parallel shard: import reads one Hugging Face tensor at a time
(safetensors are memory-mapped) and copies its slice into the model; export gathers one tensor at a time over the
tensor-parallel group and writes safetensors shards of bounded size. So a conversion needs the rank's share of the
model plus one full tensor, never two copies of the checkpoint.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import torch
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from safetensors import safe_open
from safetensors.torch import save_file

from swehero.errors import MissingInput
from swehero.model import qwen2
from swehero.model.folder import INDEX, remove_weights, weight_files
from swehero.model.provider import Chunks, as_chunks

_LAYER = re.compile(r"\.layers\.(\d+)\.")


class HFReader:
    """Lazy access to the tensors of a Hugging Face safetensors folder (sharded or not)."""

    def __init__(self, hf_dir: str | Path) -> None:
        self.dir = Path(hf_dir)
        self.files = weight_files(hf_dir)

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> torch.Tensor:
        if name not in self.files:
            raise MissingInput(f"{self.dir}: no tensor {name} in its weights")
        with safe_open(self.dir / self.files[name], "pt") as f:
            return f.get_tensor(name)


def _table_key(name: str) -> str:
    """A model state-dict name -> its `qwen2` table key: layer index as `*`, local-spec norms under TE's names."""
    for te_suffix, local_suffix in qwen2.LOCAL_SPEC_NAMES.items():
        if name.endswith(f".{local_suffix}"):
            name = name[: -len(local_suffix)] + te_suffix
    return _LAYER.sub(".layers.*.", name, count=1)


def _hf_names(key: str, layer: str | None) -> tuple[str, ...]:
    names = qwen2.QKV_MAP.get(key) or qwen2.GATE_UP_MAP.get(key) or (qwen2.NAME_MAP[key],)
    return tuple(n.replace("*", layer) for n in names) if layer is not None else names


def _params(model: GPTModel) -> Iterator[tuple[str, str | None, torch.Tensor]]:
    """(table key, global layer index, local tensor) for every weight of this rank's model part."""
    # State-dict names count layers within this model chunk (pipeline stage); `layer_number` is global and 1-based.
    global_index = {str(i): str(layer.layer_number - 1) for i, layer in enumerate(model.decoder.layers)}
    for name, tensor in model.state_dict().items():
        if name.endswith("_extra_state"):
            continue
        match = _LAYER.search(name)
        yield _table_key(name), global_index[match.group(1)] if match else None, tensor


def _tp_split_dim(key: str) -> int | None:
    if key.endswith(("linear_proj.weight", "linear_fc2.weight")):
        return 1
    if key.endswith(("word_embeddings.weight", "output_layer.weight", "linear_qkv.weight", "linear_qkv.bias",
                     "linear_fc1.weight")):
        return 0
    return None


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    # Megatron's linear_qkv holds, per query group, that group's query heads then its key then its value; tensor
    # parallelism splits the whole of it in equal row blocks: a rank's groups when it has some, else its share of
    # one group (fewer key/value heads than ranks: attention gathers the whole and takes its group).
    grouped = [t.reshape(groups, -1, *t.shape[1:]) for t in (q, k, v)]
    return torch.cat(grouped, dim=1).reshape(-1, *q.shape[1:])


def _split_qkv(qkv: torch.Tensor, groups: int, heads: int, head_dim: int) -> tuple[torch.Tensor, ...]:
    grouped = qkv.reshape(groups, -1, *qkv.shape[1:])
    q_rows = heads // groups * head_dim
    q, k, v = grouped.split([q_rows, head_dim, head_dim], dim=1)
    return tuple(t.reshape(-1, *qkv.shape[1:]).contiguous() for t in (q, k, v))


def load_hf_weights(model: Chunks, hf_dir: str | Path, hf: dict) -> None:
    """Copy a Hugging Face checkpoint into this rank's part of `model` (all its chunks; vocabulary rows beyond
    HF's are zeroed)."""
    reader = HFReader(hf_dir)
    tp, rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
    chunks = as_chunks(model)
    groups = chunks[0].config.num_query_groups
    for key, layer, param in (item for chunk in chunks for item in _params(chunk)):
        names = _hf_names(key, layer)
        if key == "output_layer.weight" and qwen2.tied_embeddings(hf):  # the head is the embedding
            names = (qwen2.NAME_MAP["embedding.word_embeddings.weight"],)
        parts = [reader.get(n) for n in names]
        dim = _tp_split_dim(key)
        if key in qwen2.QKV_MAP:
            full = _fuse_qkv(*parts, groups).chunk(tp, dim=0)[rank]
        elif key in qwen2.GATE_UP_MAP:
            full = torch.cat([p.chunk(tp, dim=0)[rank] for p in parts])
        else:
            full = parts[0]
            if key in ("embedding.word_embeddings.weight", "output_layer.weight"):
                full = torch.cat([full, full.new_zeros(param.shape[0] * tp - full.shape[0], full.shape[1])])
            if dim is not None:
                full = full.chunk(tp, dim=dim)[rank]
        if full.shape != param.shape:
            raise ValueError(f"{names} -> {key}: shape {tuple(full.shape)} does not fit {tuple(param.shape)}")
        param.copy_(full)


def _gather(tensor: torch.Tensor, dim: int | None) -> list[torch.Tensor]:
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if dim is None or tp == 1:
        return [tensor]
    pieces = [torch.empty_like(tensor) for _ in range(tp)]
    torch.distributed.all_gather(pieces, tensor.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
    return pieces


def hf_tensors(model: GPTModel, hf: dict, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, full tensor in `dtype`) for this pipeline stage's weights; every TP rank must iterate (collective).

    Megatron's local spec keeps norm weights in fp32 whatever the model dtype; the cast back is lossless.
    """
    cfg = model.config
    tied = qwen2.tied_embeddings(hf)
    for key, layer, param in _params(model):
        if key == "output_layer.weight" and tied:
            continue
        names = _hf_names(key, layer)
        pieces = _gather(param.detach(), _tp_split_dim(key))
        if key in qwen2.QKV_MAP:
            tensors = _split_qkv(torch.cat(pieces), cfg.num_query_groups, cfg.num_attention_heads, cfg.kv_channels)
        elif key in qwen2.GATE_UP_MAP:
            halves = [p.chunk(2) for p in pieces]
            tensors = [torch.cat([h[i] for h in halves]) for i in range(2)]
        else:
            tensors = [torch.cat(pieces, dim=_tp_split_dim(key) or 0)]
            if key in ("embedding.word_embeddings.weight", "output_layer.weight"):
                tensors = [tensors[0][: hf["vocab_size"]]]
        yield from zip(names, (t.to(dtype).contiguous() for t in tensors))


def checkpoint_dtype(hf: dict) -> torch.dtype:
    """The dtype the Hugging Face weights are stored in: conversion keeps it, so round trips are bit-exact."""
    return getattr(torch, qwen2.dtype_name(hf))


def save_hf_weights(model: Chunks, hf: dict, out_dir: str | Path, max_shard_bytes: int = 4 << 30) -> None:
    """Write this model's weights (all of a rank's chunks), in `hf`'s dtype, as safetensors shards plus
    `model.safetensors.index.json`, replacing any weights `out_dir` held (as `save_pretrained` does). The index
    is written last: an interrupted export leaves no loadable weights.

    Collective over all ranks; TP rank 0 of each pipeline stage in the first data-parallel replica writes that
    stage's shards (the other replicas hold the same weights: writing them too would race on the same files).
    """
    out_dir = Path(out_dir)
    if torch.distributed.get_rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_weights(out_dir)
    torch.distributed.barrier()
    writer = (parallel_state.get_tensor_model_parallel_rank() == 0
              and parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0)
    stage = parallel_state.get_pipeline_model_parallel_rank()
    weight_map: dict[str, str] = {}
    written = 0
    shard: dict[str, torch.Tensor] = {}

    def flush() -> None:
        nonlocal written
        if shard and writer:
            name = f"model-stage{stage:03d}-{len(set(weight_map.values())):05d}.safetensors"
            save_file(shard, out_dir / name, metadata={"format": "pt"})
            weight_map.update({n: name for n in shard})
            written += sum(t.numel() * t.element_size() for t in shard.values())
        shard.clear()

    tensors = (item for chunk in as_chunks(model) for item in hf_tensors(chunk, hf, checkpoint_dtype(hf)))
    for name, tensor in tensors:
        shard[name] = tensor
        if sum(t.numel() * t.element_size() for t in shard.values()) >= max_shard_bytes:
            flush()
    flush()
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, (weight_map, written))
    if torch.distributed.get_rank() == 0:
        merged = {k: v for names, _ in gathered for k, v in names.items()}
        index = {"metadata": {"total_size": sum(n for _, n in gathered)}, "weight_map": dict(sorted(merged.items()))}
        (out_dir / INDEX).write_text(json.dumps(index, indent=2))
