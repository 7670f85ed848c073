"""How long a vLLM server takes to be ready (its model listed at /v1/models), with and without compilation
(`serve.compile`).

Starts the tiny model's server (`swehero tiny make`) several times each way, alternating, and prints the median
seconds from launch to a healthy server. The first compiled start also fills vLLM's compile cache, which later
compiled starts read; the median is over the warm ones too, as a test session or a recipe would see them.

    python benchmarks/serve_startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from swehero.serve.server import ServeConfig, VLLMServer
from swehero.tiny.kit import TinyModelConfig, make_tiny


def seconds_to_healthy(model: Path, compile_model: bool, log: Path) -> float:
    cfg = ServeConfig(model=str(model), dtype="float32", max_model_len=8192, compile=compile_model)
    start = time.perf_counter()
    with VLLMServer(cfg, log):
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny(Path(tmp) / "tiny", TinyModelConfig(), seed=0)
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(args.repeats):
            for compile_model in (True, False):
                took = seconds_to_healthy(model, compile_model, Path(tmp) / f"vllm-{compile_model}-{i}.log")
                times[compile_model].append(took)
                print(f"start {i + 1}: compile={compile_model}: {took:.1f} s", flush=True)
    compiled, eager = statistics.median(times[True]), statistics.median(times[False])
    print(f"median to healthy: compiled {compiled:.1f} s, not compiled {eager:.1f} s "
          f"(ratio {compiled / eager:.2f}, over {args.repeats} starts each)")


if __name__ == "__main__":
    main()
