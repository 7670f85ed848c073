"""Megatron distributed checkpoints (`dist_checkpointing`) of model weights: saved at one TP/PP layout, loadable at
any other, and with either layer spec.

The local spec's two norm weights are stored under the names the Transformer Engine spec gives them (TE fuses them
into the next linear), so a checkpoint converted on a CPU machine with the local spec holds the same keys a TE
model asks for. TE's `_extra_state` (FP8 scaling state) is not model weights: conversion leaves it out; training
checkpoints (`swehero.train.checkpoint`) add it, so an FP8 run resumes with its scaling state.
The Hugging Face `config.json` the model was built from is stored beside the weights, so a checkpoint alone says
what model it holds.

A rank with several model chunks (virtual pipeline stages) nests each chunk's weights under `model0`, `model1`,
... as Megatron-LM does. Tensors are stored under their global names (layer numbers count over the whole model),
so the nesting never reaches the files: a checkpoint saved with any number of chunks loads with any other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing import ShardedTensor
from megatron.core.models.gpt import GPTModel

from swehero.model import qwen2
from swehero.model.folder import CHECKPOINT_CONFIG
from swehero.model.provider import Chunks, as_chunks


def weights_sharded_state_dict(model: GPTModel, extra_state: bool = False) -> dict[str, Any]:
    """The model's sharded state dict, with local-spec norm keys renamed to TE's; with `extra_state`, also the
    modules' `_extra_state` (Transformer Engine's FP8 scaling state), which only a resume at the same layout
    and layer spec can read back."""
    sharded = {k: v for k, v in model.sharded_state_dict().items() if extra_state or not k.endswith("_extra_state")}
    for value in sharded.values():
        if isinstance(value, ShardedTensor):
            for te_suffix, local_suffix in qwen2.LOCAL_SPEC_NAMES.items():
                if value.key.endswith(f".{local_suffix}"):
                    value.key = value.key[: -len(local_suffix)] + te_suffix
    return sharded


def model_sharded_state_dict(model: Chunks, extra_state: bool = False) -> dict[str, Any]:
    """The weights of a rank's model (and, with `extra_state`, the modules' extra state): flat for one chunk, one
    `model{i}` entry per chunk otherwise."""
    chunks = as_chunks(model)
    if len(chunks) == 1:
        return weights_sharded_state_dict(chunks[0], extra_state)
    return {f"model{i}": weights_sharded_state_dict(chunk, extra_state) for i, chunk in enumerate(chunks)}


def _per_chunk(tree: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The chunks' entries of a dict shaped like `model_sharded_state_dict`'s."""
    return [tree] if count == 1 else [tree[f"model{i}"] for i in range(count)]


def save_checkpoint(model: Chunks, hf: dict[str, Any], ckpt_dir: str | Path) -> None:
    """Collective: every rank writes its shards of `model` into `ckpt_dir`."""
    ckpt_dir = Path(ckpt_dir)
    if torch.distributed.get_rank() == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    dist_checkpointing.save(model_sharded_state_dict(model), str(ckpt_dir))
    if torch.distributed.get_rank() == 0:
        (ckpt_dir / CHECKPOINT_CONFIG).write_text(json.dumps(hf, indent=2))


def load_checkpoint(model: Chunks, ckpt_dir: str | Path) -> None:
    """Collective: fill this rank's part of `model` from a checkpoint saved at any layout."""
    template = model_sharded_state_dict(model)
    load_weights(model, dist_checkpointing.load(template, str(ckpt_dir)), template, ckpt_dir)


def load_weights(model: Chunks, state: dict[str, Any], template: dict[str, Any], source: str | Path) -> None:
    """Copy the weights named by `template` (a `model_sharded_state_dict`) from a loaded checkpoint `state` into
    `model`. Training checkpoints also hold optimizer and schedule state beside the weights; only the weights
    are taken."""
    chunks = as_chunks(model)
    for i, (chunk, names, weights) in enumerate(zip(chunks, _per_chunk(template, len(chunks)),
                                                    _per_chunk(state, len(chunks)))):
        missing, unexpected = chunk.load_state_dict({key: weights[key] for key in names}, strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        if missing or unexpected:
            raise ValueError(f"checkpoint {source} does not fit model chunk {i}: missing {missing}, "
                             f"unexpected {unexpected}")
