"""Megatron distributed checkpoints (`dist_checkpointing`): saved at one TP/PP layout, loadable at any other.

The Hugging Face `config.json` the model was built from is stored beside the weights, so a checkpoint alone says
what model it holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from megatron.core import dist_checkpointing
from megatron.core.models.gpt import GPTModel

HF_CONFIG = "hf_config.json"


def save_checkpoint(model: GPTModel, hf: dict[str, Any], ckpt_dir: str | Path) -> None:
    """Collective: every rank writes its shards of `model` into `ckpt_dir`."""
    ckpt_dir = Path(ckpt_dir)
    if torch.distributed.get_rank() == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    dist_checkpointing.save(model.sharded_state_dict(), str(ckpt_dir))
    if torch.distributed.get_rank() == 0:
        (ckpt_dir / HF_CONFIG).write_text(json.dumps(hf, indent=2))


def load_checkpoint(model: GPTModel, ckpt_dir: str | Path) -> None:
    """Collective: fill this rank's part of `model` from a checkpoint saved at any layout."""
    template = model.sharded_state_dict()
    state = dist_checkpointing.load(template, str(ckpt_dir))
    # Training checkpoints also hold optimizer and schedule state beside the weights: take the weights.
    model.load_state_dict({key: state[key] for key in template})


def checkpoint_hf_config(ckpt_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(ckpt_dir) / HF_CONFIG).read_text())
