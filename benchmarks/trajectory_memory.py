"""Peak memory of the commands that read a whole trajectory file: `distill merge`, `filter` and `agent prompts
extract` (a benchmark, not a test). A distillation's trajectories run to tens of GB (~300k SWE-Zero episodes of
10-30 turns), so each command must stream them; peak RSS should stay flat as the input grows.

Writes synthetic shards of canonical trajectories (the oracle's toy trajectory with a padded tool output, ~58 KB
each), then, each in a fresh process, measures peak RSS of: `distill merge` of the shards, `filter --stage zero`
and `agent prompts extract` of the merged file, and the baseline a non-streaming reader pays, `json.loads` of every
line into a list. Repeated on inputs `--scale` times larger, to show which figures grow with the input.

    python benchmarks/trajectory_memory.py --episodes 6000 --scale 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

LOAD_ALL = "import json, sys; rows = [json.loads(line) for line in open(sys.argv[1], 'rb')]"


def peak_rss_mb(command: list[str]) -> float:
    """Run `command` to completion; its peak resident memory in MB (Linux reports ru_maxrss in KB)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return usage.ru_maxrss / 1024


def toy_trajectory(work: Path) -> dict:
    """One real canonical trajectory: the oracle agent on a toy task, written by `swehero distill run`."""
    subprocess.run([sys.executable, "-m", "swehero", "eval", "toy", str(work / "toy")], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "swehero", "distill", "run", "--tasks", str(work / "toy" / "tasks.jsonl"),
                    "--policy", "oracle", "--limit", "1", "--no-progress", "--out", str(work / "one")], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads((work / "one" / "trajectories.jsonl").read_text().splitlines()[0])


def write_shards(base: dict, folder: Path, shards: int, episodes: int) -> list[Path]:
    padding = "    value = compute(items[index])  # a line of a tool's output\n" * 700
    tool = next(i for i, m in enumerate(base["messages"]) if m["role"] == "tool")
    out = []
    for shard in range(shards):
        shard_dir = folder / f"shard-{shard}"
        shard_dir.mkdir(parents=True)
        with open(shard_dir / "trajectories.jsonl", "w") as f:
            for n in range(episodes):
                record = json.loads(json.dumps(base))
                record["instance_id"] = record["id"] = f"task-{shard}-{n}"
                record["messages"][tool]["content"] = f"{padding}{shard}-{n}\n"  # each unique: no duplicates
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        (shard_dir / "summary.json").write_text(json.dumps({"wall_s": 1.0}))
        out.append(shard_dir)
    return out


def measure(base: dict, work: Path, episodes: int) -> dict:
    shards = write_shards(base, work / "in", 2, episodes)
    merged = work / "merged"
    swehero = [sys.executable, "-m", "swehero"]
    figures = {"input_mb": sum((s / "trajectories.jsonl").stat().st_size for s in shards) / 2**20,
               "merge_mb": peak_rss_mb(swehero + ["distill", "merge", *map(str, shards), "--out", str(merged)]),
               "filter_mb": peak_rss_mb(swehero + ["filter", str(merged / "trajectories.jsonl"), "--stage", "zero",
                                                   "--out", str(work / "filtered")]),
               "prompts_mb": peak_rss_mb(swehero + ["agent", "prompts", "extract", str(merged / "trajectories.jsonl"),
                                                    "--out", str(work / "prompts.json")]),
               "load_all_mb": peak_rss_mb([sys.executable, "-c", LOAD_ALL, str(merged / "trajectories.jsonl")])}
    for folder in (work / "in", merged, work / "filtered"):
        shutil.rmtree(folder)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=6000, help="Episodes per shard (2 shards).")
    parser.add_argument("--scale", type=int, default=3, help="The second input is this many times larger.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swehero-bench-") as tmp:
        base = toy_trajectory(Path(tmp))
        print("| input MB | distill merge peak MB | filter peak MB | prompts extract peak MB | load-all peak MB |")
        print("|---|---|---|---|---|")
        for episodes in (args.episodes, args.episodes * args.scale):
            f = measure(base, Path(tmp), episodes)
            print(f"| {f['input_mb']:.0f} | {f['merge_mb']:.0f} | {f['filter_mb']:.0f} | {f['prompts_mb']:.0f} "
                  f"| {f['load_all_mb']:.0f} |")


if __name__ == "__main__":
    main()
