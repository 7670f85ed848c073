"""The two conversions behind `swehero convert`, as per-rank jobs (see `launch.run_ranks`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from swehero.model.checkpoint import checkpoint_hf_config, load_checkpoint, save_checkpoint
from swehero.model.convert import checkpoint_dtype, load_hf_weights, save_hf_weights
from swehero.model.provider import Parallel, build_model, init_parallel, load_hf_config


def hf_to_mcore(rank: int, hf_dir: Path, out: Path, parallel: Parallel, spec: str) -> None:
    """Build this rank's part of the model, fill it from `hf_dir`, write a dist checkpoint to `out`."""
    init_parallel(parallel)
    hf = load_hf_config(hf_dir)
    model = build_model(hf, parallel, spec, dtype=checkpoint_dtype(hf), perform_initialization=False)
    load_hf_weights(model, hf_dir, hf)
    save_checkpoint(model, hf, out)


def mcore_to_hf(rank: int, ckpt: Path, out: Path, like: Path, parallel: Parallel, spec: str) -> None:
    """Load a dist checkpoint at `parallel`, write safetensors shards to `out`, plus `like`'s config and tokenizer."""
    init_parallel(parallel)
    hf = checkpoint_hf_config(ckpt)
    model = build_model(hf, parallel, spec, dtype=checkpoint_dtype(hf), perform_initialization=False)
    load_checkpoint(model, ckpt)
    out.mkdir(parents=True, exist_ok=True)
    save_hf_weights(model, hf, out)
    if rank == 0:
        for path in Path(like).iterdir():
            weights = path.suffix in (".safetensors", ".bin") or path.name.endswith(".index.json")
            if path.is_file() and not weights:
                shutil.copy2(path, out / path.name)
