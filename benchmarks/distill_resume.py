"""Seconds a distill run's large log costs when nothing is left to do: a resume (a Slurm requeue of a finished
shard) and `distill merge` of the shards, first and again (a benchmark, not a test). Both are bound by reading the
JSONL, so the baseline, measured in the same run, is one read of it: `json.loads` of every line.

Writes a task file of synthetic tasks and their committed episodes (the oracle's toy trajectory with a padded tool
output, ~58 KB each, recorded as made from its task's row), then, each in a fresh process: the baseline read, a
`swehero distill run` resumed with every episode committed, the same resume with the episodes emptied (what it costs
besides reading the log), and a merge of the log split into 4 shards, twice. Each figure is the median of
`--repeats` runs.

    python benchmarks/distill_resume.py --episodes 8000
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trajectory_memory import toy_trajectory

READ_ONCE = "import json, sys\nfor line in open(sys.argv[1], 'rb'):\n    json.loads(line)"
SHARDS = 4


def write_run(base: dict, task: dict, folder: Path, episodes: int) -> list[Path]:
    """A finished run's folder (its task file and log) and the same episodes in SHARDS shard folders."""
    from swehero.rollout.runner import attempted_task_digest
    from swehero.rollout.tasks import normalize

    padding = "    value = compute(items[index])  # a line of a tool's output\n" * 700
    tool = next(i for i, m in enumerate(base["messages"]) if m["role"] == "tool")
    shards = [folder / f"shard-{n}" for n in range(SHARDS)]
    for shard in shards:
        shard.mkdir(parents=True)
        (shard / "summary.json").write_text(json.dumps({"wall_s": 1.0}))
    for run in ("run", "run-tiny"):
        (folder / run).mkdir()
    logs = [open(shard / "trajectories.jsonl", "w") for shard in shards]
    with open(folder / "tasks.jsonl", "w") as tasks, open(folder / "run" / "trajectories.jsonl", "w") as log, \
            open(folder / "run-tiny" / "trajectories.jsonl", "w") as tiny:
        for n in range(episodes):
            row = {**task, "instance_id": f"task-{n}"}
            record = json.loads(json.dumps(base))
            record["instance_id"] = record["id"] = row["instance_id"]
            record["messages"][tool]["content"] = f"{padding}{n}\n"  # each unique: no duplicates
            # as a served teacher's episode records its usage
            record["metadata"].update(rollout=0, task_digest=attempted_task_digest(normalize(row)),
                                      prompt_tokens=120_000, completion_tokens=900)
            line = json.dumps(record, ensure_ascii=False) + "\n"
            tasks.write(json.dumps(row) + "\n")
            log.write(line)
            tiny.write(json.dumps({**record, "messages": [], "patch": ""}) + "\n")
            logs[n % SHARDS].write(line)
    for shard_log in logs:
        shard_log.close()
    return shards


def seconds(command: list[str]) -> float:
    start = time.monotonic()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=8000, help="Episodes in the log (one rollout per task).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each measurement (the median is shown).")
    args = parser.parse_args()
    swehero = [sys.executable, "-m", "swehero"]
    with tempfile.TemporaryDirectory(prefix="swehero-resume-bench-") as tmp:
        work = Path(tmp)
        base = toy_trajectory(work)
        task = json.loads((work / "toy" / "tasks.jsonl").read_text().splitlines()[0])
        shards = write_run(base, task, work, args.episodes)
        log = work / "run" / "trajectories.jsonl"
        resume = swehero + ["distill", "run", "--tasks", str(work / "tasks.jsonl"), "--policy", "oracle",
                            "--no-progress", "--out"]
        merge = swehero + ["distill", "merge", *map(str, shards), "--out"]
        runs: dict[str, list[float]] = {name: [] for name in ("read", "resume", "resume tiny", "merge", "again")}
        for repeat in range(args.repeats):
            runs["read"].append(seconds([sys.executable, "-c", READ_ONCE, str(log)]))
            runs["resume"].append(seconds(resume + [str(work / "run")]))
            runs["resume tiny"].append(seconds(resume + [str(work / "run-tiny")]))
            runs["merge"].append(seconds(merge + [str(work / f"merged-{repeat}")]))
            runs["again"].append(seconds(merge + [str(work / f"merged-{repeat}")]))
        median = {name: statistics.median(times) for name, times in runs.items()}
        rows = [("one read of the log (the baseline)", median["read"]),
                ("resume, nothing left", median["resume"]),
                ("the same resume with empty episodes (start-up, task file, plan)", median["resume tiny"]),
                ("the resume's reading of the log (the difference)", median["resume"] - median["resume tiny"]),
                ("merge of 4 shards", median["merge"]),
                ("merge again, nothing new", median["again"])]
        print(f"{args.episodes} episodes, {log.stat().st_size / 2**20:.0f} MB; medians of {args.repeats} runs\n")
        print("| | seconds | x one read |\n|---|---|---|")
        for name, value in rows:
            print(f"| {name} | {value:.1f} | {value / median['read']:.2f} |")


if __name__ == "__main__":
    main()
