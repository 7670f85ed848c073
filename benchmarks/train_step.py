"""Training throughput and memory: tokens/s, MFU and peak memory of the real training loop for a model shape and
parallel layout, with the memory model's prediction (`recipe plan`'s) for the same run beside the measured peak.

It builds a randomly initialised model of the requested shape (the tiny kit, or a published Qwen2.5-Coder
config with fewer layers), a packed dataset of random tokens with realistic document lengths, runs
`swehero.train` under torchrun for a few steps and prints the median over the steps after warm-up. Memory is
rank 0's high-water mark above what it held before building the model (GPU: allocated bytes; CPU: resident set).

    python benchmarks/train_step.py                                  # tiny model on CPU (gloo)
    python benchmarks/train_step.py --like qwen2.5-coder-7b-instruct --layers 4 --seq 8192 --gpus 1 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from swehero.train.config import CheckpointConfig, ParallelConfig, Settings
from swehero.train.launch import torchrun_command
from swehero.train.memory import estimate
from swehero.train.metrics import read_metrics
from swehero.train.worker import JOB_FILE

WARMUP_STEPS = 2  # compile, allocate and warm caches: left out of the medians


def random_model(folder: Path, like: str | None, layers: int, hidden: int, ffn: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if like is None:
        from swehero.tiny.kit import TinyModelConfig, make_tiny

        make_tiny(folder, TinyModelConfig(num_layers=layers, hidden_size=hidden, intermediate_size=ffn), seed=0)
        return json.loads((folder / "config.json").read_text())
    from swehero.model.folder import known_config

    config = {**known_config(like), "num_hidden_layers": layers, "torch_dtype": "bfloat16"}
    with torch.device("cpu"):
        model = Qwen2ForCausalLM(Qwen2Config.from_dict(config)).to(torch.bfloat16)
    model.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps(config))
    return config


def random_dataset(folder: Path, vocab: int, seq: int, samples: int, mean_doc: int) -> None:
    """Packed samples of `seq` tokens made of documents ~ exponential(mean_doc) long, half of each trained."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, count in (("train", samples), ("valid", 1)):
        tokens = IndexedDatasetBuilder(str(folder / f"{split}_tokens.bin"), dtype=np.int32)
        mask = IndexedDatasetBuilder(str(folder / f"{split}_loss_mask.bin"), dtype=np.uint8)
        for _ in range(count):
            lengths, left = [], seq
            while left:
                lengths.append(min(left, max(16, int(rng.exponential(mean_doc)))))
                left -= lengths[-1]
            tokens.add_document(rng.integers(0, vocab, seq, dtype=np.int32), lengths)
            mask.add_document((rng.random(seq) < 0.5).astype(np.uint8), lengths)
        tokens.finalize(str(folder / f"{split}_tokens.idx"))
        mask.finalize(str(folder / f"{split}_loss_mask.idx"))
    (folder / "stats.json").write_text(json.dumps({"seq_length": seq, "samples": {"train": samples, "valid": 1}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--like", help="bundled config or local model folder to take the layer shapes from "
                                       "(default: the tiny kit)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--mean-doc", type=int, default=1024, help="mean trajectory length in a packed sample")
    parser.add_argument("--gpus", type=int, default=1, help="processes (GPUs, or CPU ranks)")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--pp", type=int, default=1)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8,
                        help=f"steps to run; the first {WARMUP_STEPS} are warm-up, the rest are measured")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp8"])
    parser.add_argument("--recompute", default="none", choices=["none", "selective", "full"])
    parser.add_argument("--hidden", type=int, default=256, help="tiny kit width (without --like)")
    parser.add_argument("--ffn", type=int, default=512, help="tiny kit MLP width (without --like)")
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps {args.steps}: at least {WARMUP_STEPS + 1}, as the first {WARMUP_STEPS} are warm-up "
                     "and not measured")
    if args.like:
        from swehero.model.folder import BUNDLED_CONFIGS, known_config

        if known_config(args.like) is None:
            parser.error(f"--like {args.like}: neither a local model folder nor a bundled config (bundled: "
                         f"{', '.join(sorted(p.stem for p in BUNDLED_CONFIGS.glob('*.json')))})")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = random_model(tmp / "model", args.like, args.layers, args.hidden, args.ffn)
        random_dataset(tmp / "data", config["vocab_size"], args.seq, args.global_batch * args.steps, args.mean_doc)
        settings = Settings(
            data=str(tmp / "data"), seq_length=args.seq, global_batch_size=args.global_batch, steps=args.steps,
            precision=args.precision or ("fp32" if args.device == "cpu" else "bf16"), recompute=args.recompute,
            device=args.device, gpus_per_node=args.gpus, tensorboard=False, export_hf=False, fused_ce=True,
            parallel=ParallelConfig(tensor=args.tp, pipeline=args.pp),
            checkpoint=CheckpointConfig(every=10**9, keep_last=1, async_save=False),
        )
        run = tmp / "run"
        run.mkdir()
        (run / JOB_FILE).write_text(json.dumps({"settings": dataclasses.asdict(settings), "dir": str(run),
                                                 "init": str(tmp / "model"), "seed": 0, "name": "bench"}))
        subprocess.run(torchrun_command(run, args.gpus), check=True, stdout=sys.stderr)
        steps = [r for r in read_metrics(run / "metrics.jsonl") if "tokens_per_s" in r][WARMUP_STEPS:]
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in steps)
    tflops = statistics.median(r["tflops_per_gpu"] for r in steps)
    mfu = statistics.median(r["mfu"] for r in steps) if "mfu" in steps[0] else None
    shape = f"{args.like or 'tiny'} x{args.layers} layers, seq {args.seq}, TP {args.tp} PP {args.pp}, {args.gpus} proc"
    print(f"{shape}: {tokens_per_s:,.0f} tokens/s, {tflops:.3f} TFLOP/s per device"
          + (f", MFU {mfu:.1%}" if mfu is not None else " (MFU is reported on GPUs only)")
          + f"  [median of {len(steps)} steps]")
    m = estimate(settings, config, args.gpus // (args.tp * args.pp))
    predicted = m.total_gib - m.overhead_gib  # the runtime term is what the measurement starts after
    measured = max(r["peak_memory_gib"] for r in steps)
    print(f"  peak memory rank 0: measured {measured:.3f} GiB, memory model {predicted:.3f} GiB "
          f"(ratio {measured / predicted:.2f}) = weights {m.weights_gib:.3f} + gradients {m.gradients_gib:.3f} + "
          f"optimizer {m.optimizer_gib:.3f} + activations {m.activations_gib:.3f} + loss {m.loss_gib:.3f}")


if __name__ == "__main__":
    main()
