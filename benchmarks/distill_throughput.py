"""Episodes per minute of `swehero distill` against a vLLM server at 1, 2, 4 and 8 workers (a benchmark, not a test).

Serves the tiny random model (`swehero.tiny.kit.make_tiny`) with the real vLLM CPU build through `VLLMServer`,
builds the toy tasks, and runs the same batch of short episodes (exec mode, local sandbox, `--max-steps` turns)
once per worker count into a fresh output folder. Each episode is a child process, a sandboxed checkout and
`max_steps` chat completions with the ~5k-token OpenHands prompt, so the figures show how far concurrency hides
the per-episode latency on the machine at hand (on a 2-core machine the server and the sandboxes share them).

    python benchmarks/distill_throughput.py --episodes 16 --max-steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8", help="Worker counts to measure.")
    parser.add_argument("--episodes", type=int, default=16, help="Episodes per measurement (tasks x rollouts).")
    parser.add_argument("--max-steps", type=int, default=3, help="Assistant turns per episode.")
    parser.add_argument("--reply-tokens", type=int, default=32, help="Tokens per model reply.")
    args = parser.parse_args()

    from swehero.distill.run import Settings, distill
    from swehero.agent.loop import LoopConfig
    from swehero.agent.openai_policy import OpenAIConfig
    from swehero.agent.settings import AgentSettings
    from swehero.rollout.toy import REPOS, build_toy_tasks
    from swehero.serve.server import ServeConfig, VLLMServer
    from swehero.tiny.kit import TinyModelConfig, make_tiny

    with tempfile.TemporaryDirectory(prefix="swehero-distill-bench-") as tmp:
        tmp = Path(tmp)
        model = make_tiny(tmp / "model", TinyModelConfig(), seed=0)
        tasks = build_toy_tasks(tmp / "toy")
        config = ServeConfig(model=str(model), served_name="tiny", dtype="float32", max_model_len=16384,
                             gpu_memory_utilization=0.2)
        start = time.monotonic()
        with VLLMServer(config, tmp / "vllm.log") as server:
            print(f"vLLM CPU server up in {time.monotonic() - start:.0f}s at {server.url}; {os.cpu_count()} CPU(s)")
            rollouts = -(-args.episodes // len(REPOS))
            agent = AgentSettings(policy="openai", mode="exec", time_limit_s=600,
                                  loop=LoopConfig(max_steps=args.max_steps),
                                  openai=OpenAIConfig(max_reply_tokens=args.reply_tokens))
            rows = []
            for workers in (int(w) for w in args.workers.split(",")):
                settings = Settings(tasks=str(tasks), rollouts=rollouts, workers=workers, endpoints=[server.url],
                                    progress=False, agent=agent)
                began = time.monotonic()
                summary = distill(settings, tmp / f"out-{workers}")
                minutes = (time.monotonic() - began) / 60
                rows.append({"workers": workers, "episodes": summary["episodes"],
                             "failed": summary["failed_this_run"],
                             "episodes_per_min": round(summary["episodes"] / minutes, 2),
                             "episode_s_p50": summary["episode_seconds"]["p50"],
                             "steps_p50": summary["steps"]["p50"]})
                print(json.dumps(rows[-1]), flush=True)
    print("\nworkers  episodes/min  speed-up  episode p50 (s)")
    for row in rows:
        print(f"{row['workers']:>7}  {row['episodes_per_min']:>12}  {row['episodes_per_min'] / rows[0]['episodes_per_min']:>8.2f}"
              f"  {row['episode_s_p50']:>15.1f}")


if __name__ == "__main__":
    main()
