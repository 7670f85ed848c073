"""The two conversions behind `swehero convert` (and the `convert` stage), as per-rank jobs (see
`launch.run_ranks`)."""

from __future__ import annotations

from pathlib import Path

from swehero.model.checkpoint import load_checkpoint, save_checkpoint
from swehero.model.folder import read_config, write_folder_files
from swehero.model.hf_weights import checkpoint_dtype, load_hf_weights, save_hf_weights
from swehero.model.parallel import ParallelConfig
from swehero.model.provider import build_model, init_parallel


def hf_to_mcore(rank: int, hf_dir: Path, out: Path, parallel: ParallelConfig, spec: str) -> None:
    """Build this rank's part of the model, fill it from `hf_dir`, write a dist checkpoint to `out`."""
    init_parallel(parallel)
    hf = read_config(hf_dir)
    model = build_model(hf, parallel, spec, dtype=checkpoint_dtype(hf), perform_initialization=False)
    load_hf_weights(model, hf_dir, hf)
    save_checkpoint(model, hf, out)


def mcore_to_hf(rank: int, ckpt: Path, out: Path, like: Path, parallel: ParallelConfig, spec: str) -> None:
    """Load a dist checkpoint at `parallel`, write safetensors shards to `out` with the checkpoint's config and
    `like`'s tokenizer and chat template."""
    init_parallel(parallel)
    hf = read_config(ckpt)
    model = build_model(hf, parallel, spec, dtype=checkpoint_dtype(hf), perform_initialization=False)
    load_checkpoint(model, ckpt)
    save_hf_weights(model, hf, out)
    if rank == 0:
        write_folder_files(out, hf, like)
