"""Time and peak memory of LM head + cross-entropy, forward and backward: unfused PyTorch, the chunked reference, and
the Triton kernel (GPU only), with ratios against unfused.

Each measurement runs in a fresh process so that peaks do not leak between them. Peak memory is what the step
allocates above its inputs: on GPU from the CUDA allocator, on CPU as the process's peak RSS above its RSS before
the first step.

    PYTHONPATH=$PWD python benchmarks/fused_ce.py                       # default shapes for the device
    PYTHONPATH=$PWD python benchmarks/fused_ce.py --shapes 4096x896x151936 --repeats 3 --trained 0.4

`swehero_kernels` is whichever copy is installed under that name (PYTHONPATH=$PWD does not provide it): the header
names it; `benchmarks/gpu_check.sh` runs this checkout's.

By default every token is trained, which compares the kernels alone; with `--trained` below 1 the fused versions
also skip the untrained tokens, as they do in SFT on agent trajectories.

Exits 1 when a fused version (the chunked reference or the Triton kernel: ours) runs out of memory; unfused running
out of memory at a large shape is what the fused versions exist to avoid, so it is reported, not failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import multiprocessing
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

import swehero_kernels
from swehero_kernels import fused_linear_cross_entropy, unfused_linear_cross_entropy

GPU_SHAPES = ["32768x5120x152064", "16384x5120x152064", "8192x3584x152064", "4096x896x151936"]
CPU_SHAPES = ["1024x512x8192", "4096x256x32768", "2048x896x151936"]
IMPLEMENTATIONS = ["unfused", "reference", "triton"]
BASELINE = "unfused"


def _step(impl: str, hidden, weight, targets, loss_mask, normalizer, device: str) -> None:
    hidden.grad = weight.grad = None
    if impl == "unfused":
        loss = unfused_linear_cross_entropy(hidden, weight, targets, loss_mask, normalizer)
    else:
        backend = "torch" if impl == "reference" else "triton"
        loss = fused_linear_cross_entropy(hidden, weight, targets, loss_mask, normalizer, backend=backend)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()


def measure(
    impl: str, shape: tuple[int, int, int], dtype: str, device: str, repeats: int, trained: float
) -> tuple[float, float]:
    """Median seconds of one forward + backward, and peak bytes allocated above the inputs (run in a child)."""
    tokens, hidden_size, vocab = shape
    gen = torch.Generator(device=device).manual_seed(0)
    kind = getattr(torch, dtype)
    hidden = torch.randn(tokens, hidden_size, device=device, dtype=kind, generator=gen).requires_grad_()
    # In place: a temporary as large as the weight would raise the CPU's peak RSS before the baseline is taken.
    weight = torch.randn(vocab, hidden_size, device=device, dtype=kind, generator=gen).mul_(hidden_size**-0.5)
    weight.requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device=device, generator=gen)
    loss_mask = (torch.rand(tokens, device=device, generator=gen) < trained).float()
    normalizer = loss_mask.sum()
    args = (impl, hidden, weight, targets, loss_mask, normalizer, device)

    if device == "cuda":
        _step(*args)  # warm-up: compiles and autotunes the Triton kernels
        hidden.grad = weight.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _resident_bytes()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _step(*args)
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return statistics.median(times), peak - base


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _in_child(*args) -> tuple[float, float] | str:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(measure, *args).result()
        except RuntimeError as error:  # torch.OutOfMemoryError is one
            if _out_of_memory(error):
                return "out of memory"
            raise


def _out_of_memory(error: RuntimeError) -> bool:
    # The CUDA allocator raises OutOfMemoryError; the CPU allocator a plain RuntimeError that says so.
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def _machine(device: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    return f"{name}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", help="TOKENSxHIDDENxVOCAB (default: a set for the device)")
    parser.add_argument("--dtype", help="bfloat16 on GPU by default, float32 on CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (the median is reported)")
    parser.add_argument("--trained", type=float, default=1.0, help="fraction of tokens with loss mask 1")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    names = args.shapes or (GPU_SHAPES if device == "cuda" else CPU_SHAPES)
    shapes = [tuple(int(x) for x in name.split("x")) for name in names]
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {_machine(device)}, {dtype}, "
          f"median of {args.repeats}, {args.trained:.0%} of tokens trained")
    print(f"# kernels: {Path(swehero_kernels.__file__).resolve().parent}")
    if device != "cuda":
        print("# triton: skipped, the Triton kernel needs a GPU (tests run it in the interpreter)")
    print(f"{'tokens x hidden x vocab':>26} {'impl':>10} {'ms':>10} {'peak MiB':>10} {'speed vs unfused':>17} "
          f"{'unfused / peak':>18}")
    fused_failures = []
    for shape in shapes:
        unfused = None
        for impl in IMPLEMENTATIONS:
            if impl == "triton" and device != "cuda":
                continue
            result = _in_child(impl, shape, dtype, device, args.repeats, args.trained)
            label = "x".join(map(str, shape))
            if isinstance(result, str):
                print(f"{label:>26} {impl:>10} {result:>10}")
                if impl != BASELINE:
                    fused_failures.append(f"{impl} at {label}: {result}")
                continue
            seconds, peak = result
            unfused = unfused or (result if impl == BASELINE else None)
            speed = f"{unfused[0] / seconds:.2f}x" if unfused else "-"
            memory = f"{unfused[1] / max(peak, 1):.2f}x" if unfused else "-"
            print(f"{label:>26} {impl:>10} {seconds * 1e3:>10.1f} {peak / 2**20:>10.0f} {speed:>17} {memory:>18}",
                  flush=True)
    if fused_failures:
        sys.exit(f"FAIL: the fused linear + cross-entropy did not run: {'; '.join(fused_failures)}")


if __name__ == "__main__":
    main()
