"""The memory model (`recipe plan`, swehero/train/memory.py) against what a real training step holds, term by term.

Builds the model, DDP and distributed optimizer exactly as training does (a random tiny-kit model of the given
shape, random packed data), runs one training step, and counts bytes instead of reading an allocator: weights
(the parameters), gradients (the DDP gradient buffers), optimizer (every tensor in the optimizer state plus any
fp32 master copy) and activations (the peak, over the step, of the storages that tensors saved for the backward
pass hold, parameters excluded, each storage once, tracked with `torch.autograd.graph.saved_tensors_hooks`: with
full recompute that includes the layer re-run in the backward pass). Counting, unlike a CPU process's
resident set, is not blurred by the allocator, imported libraries or freed memory the OS has not taken back, so
the CPU run checks the model's terms; a GPU's allocator adds its fragmentation on top (the `runtime` term).

    python benchmarks/memory_model.py --gpus 2                       # DP 2, distributed optimizer (CPU, gloo)
    python benchmarks/memory_model.py --gpus 2 --tp 2 --hidden 512
    python benchmarks/memory_model.py --recompute full
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_step import random_dataset, random_model  # noqa: E402  (the benchmark next door builds the same inputs)

from swehero.train.config import CheckpointConfig, ParallelConfig, Settings  # noqa: E402
from swehero.train.memory import GiB, estimate  # noqa: E402
from swehero.train.worker import JOB_FILE, read_job  # noqa: E402


def measure(settings: Settings, init: str) -> dict:
    """Bytes per term on this rank after one training step."""
    import torch

    from swehero.train import model_setup
    from swehero.train.checkpoint import inner_optimizers
    from swehero.train.data import PackedSequences
    from swehero.train.step import train_step

    env = model_setup.initialize(settings, seed=0)
    model, _ = model_setup.build(settings, init, env)
    optimizer, scheduler = model_setup.optimizer_and_schedule(settings, model, 10)
    params = {p.untyped_storage().data_ptr() for chunk in model for p in chunk.parameters()}
    saved = SavedPeak(params)
    data = PackedSequences(settings.data, "train")
    batch = [data[env.dp_rank]]
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        train_step(model, optimizer, scheduler, batch, data.seq_length, env.device, settings.fused_ce)
    weights = sum(p.numel() * p.element_size() for chunk in model for p in chunk.parameters())
    gradients = sum(buf.grad_data.numel() * buf.grad_data.element_size()
                    for chunk in model for buf in chunk.buffers)
    optimizer_bytes = sum(t.numel() * t.element_size() for opt in inner_optimizers(optimizer)
                          for state in opt.optimizer.state.values() for t in state.values() if torch.is_tensor(t))
    optimizer_bytes += sum(p.numel() * p.element_size() for opt in inner_optimizers(optimizer)
                           for group in getattr(opt, "shard_fp32_from_float16_groups", []) for p in group)
    model_setup.shutdown()
    return {"weights": weights, "gradients": gradients, "optimizer": optimizer_bytes, "activations": saved.peak}


class SavedPeak:
    """The most bytes that tensors saved for backward hold at once. A storage counts from the first saved tensor
    on it until autograd lets go of the last one: the backward pass frees each node's saved tensors as it goes,
    and full recompute saves a layer's again when it re-runs it."""

    def __init__(self, excluded: set[int]):
        self.excluded = excluded
        self.holders: dict[int, int] = {}
        self.live = self.peak = 0

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() in self.excluded:
            return tensor
        return _Held(tensor, self)

    @staticmethod
    def unpack(packed):
        return packed.tensor if isinstance(packed, _Held) else packed

    def hold(self, pointer: int, nbytes: int) -> None:
        self.holders[pointer] = self.holders.get(pointer, 0) + 1
        if self.holders[pointer] == 1:
            self.live += nbytes
            self.peak = max(self.peak, self.live)

    def release(self, pointer: int, nbytes: int) -> None:
        self.holders[pointer] -= 1
        if not self.holders[pointer]:
            del self.holders[pointer]
            self.live -= nbytes


class _Held:
    """A saved tensor as autograd keeps it: released from the count when autograd drops it."""

    def __init__(self, tensor, tracker: SavedPeak):
        storage = tensor.untyped_storage()
        self.tensor, self.tracker = tensor, tracker
        self.key = (storage.data_ptr(), storage.nbytes())
        tracker.hold(*self.key)

    def __del__(self):
        self.tracker.release(*self.key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--ffn", type=int, default=512)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--mean-doc", type=int, default=1024)
    parser.add_argument("--gpus", type=int, default=1, help="processes (CPU ranks)")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--no-distributed-optimizer", action="store_true")
    parser.add_argument("--recompute", choices=["none", "selective", "full"], default="none")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one rank, started by torchrun below
        job = read_job(Path(args.worker))
        result = measure(job.settings, job.init)
        if int(os.environ.get("RANK", "0")) == 0:
            (Path(args.worker) / "measured.json").write_text(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = random_model(tmp / "model", None, args.layers, args.hidden, args.ffn)
        random_dataset(tmp / "data", config["vocab_size"], args.seq, args.gpus, args.mean_doc)
        settings = Settings(data=str(tmp / "data"), seq_length=args.seq, global_batch_size=args.gpus // args.tp,
                            steps=1, precision="fp32", recompute=args.recompute, device="cpu", gpus_per_node=args.gpus,
                            tensorboard=False, export_hf=False, fused_ce=True,
                            distributed_optimizer=not args.no_distributed_optimizer,
                            parallel=ParallelConfig(tensor=args.tp),
                            checkpoint=CheckpointConfig(async_save=False))
        (tmp / JOB_FILE).write_text(json.dumps({"settings": dataclasses.asdict(settings), "dir": str(tmp),
                                                 "init": str(tmp / "model"), "seed": 0, "name": "memory"}))
        subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.gpus}",
                        __file__, "--worker", str(tmp)], check=True, stdout=sys.stderr)
        measured = json.loads((tmp / "measured.json").read_text())
    predicted = dataclasses.asdict(estimate(settings, config, args.gpus // args.tp))
    print(f"tiny kit x{args.layers} layers, width {args.hidden}, seq {args.seq}, TP {args.tp}, {args.gpus} proc, "
          f"fp32, recompute {args.recompute}, distributed optimizer {settings.distributed_optimizer}  (MiB, rank 0)")
    print(f"{'term':<12} {'measured':>10} {'model':>10} {'ratio':>7}")
    for term, count in measured.items():
        model_mib = predicted[f"{term}_gib"] * GiB / 2**20
        print(f"{term:<12} {count / 2**20:>10.2f} {model_mib:>10.2f} {count / 2**20 / model_mib:>7.2f}")


if __name__ == "__main__":
    main()
