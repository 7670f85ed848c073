"""`summary.json` of a distillation run (episodes, finish reasons, steps and tokens percentiles, wall time) and its
figure `summary.png`."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import numpy as np

PAPER_STEPS = {"SWE-Zero": (10, 30), "SWE-Hero": (20, 60)}
"""Assistant turns of most of the paper's trajectories of each stage (execution-free ones are shorter), to hold a
teacher's episodes against."""


def tokens_of(record: dict) -> int:
    """Tokens an episode used: the server-reported prompt + completion tokens when the agent recorded them, else
    the final conversation's characters / 4 (the agent's own estimate)."""
    meta = record.get("metadata") or {}
    if meta.get("prompt_tokens") is not None:
        return int(meta["prompt_tokens"]) + int(meta.get("completion_tokens") or 0)
    return len(json.dumps(record["messages"], ensure_ascii=False)) // 4


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(max(values)),
            "mean": round(float(np.mean(values)), 2), "total": float(sum(values))}


class Figures:
    """The summary's figures over trajectories, gathered one record at a time (from any thread), so that a run reads
    its log once and adds what it commits, and a merge what it appends; a few numbers of each are kept, not the
    record: a run's trajectories can be far larger than memory."""

    def __init__(self) -> None:
        self.tasks, self.reasons, self.with_patch = set(), Counter(), 0
        self.steps, self.tokens, self.seconds = [], [], []
        self._adding = threading.Lock()

    def add(self, record: dict) -> None:
        meta, tokens = record.get("metadata") or {}, tokens_of(record)
        with self._adding:
            self.tasks.add(record["instance_id"])
            self.reasons[meta.get("finish_reason", "unknown")] += 1
            self.with_patch += bool((record.get("patch") or "").strip())
            self.steps.append(meta.get("steps", 0))
            self.tokens.append(tokens)
            self.seconds.append(meta.get("seconds", 0.0))

    def summary(self, wall_s: float) -> dict:
        return {
            "episodes": len(self.steps),
            "tasks": len(self.tasks),
            "finish_reasons": dict(self.reasons.most_common()),
            "with_patch": self.with_patch,
            "steps": percentiles(self.steps),
            "tokens": percentiles(self.tokens),
            "episode_seconds": percentiles(self.seconds),
            "wall_s": round(wall_s, 2),
        }

    def write(self, summary: dict, path: Path) -> None:
        """`summary` as JSON at `path`, and beside it (`.png`) steps per episode against the paper's ranges, tokens
        per episode, and how episodes finished."""
        from swehero.jsonio import write_json_atomic
        from swehero.plots import figure

        write_json_atomic(path, summary)
        with figure(Path(path).with_suffix(".png"), 1, 3, figsize=(15, 4)) as (steps, tokens, reasons):
            for (stage, (low, high)), color in zip(PAPER_STEPS.items(), ("#e9c46a", "#8ecae6")):
                steps.axvspan(low, high, color=color, alpha=0.3, label=f"paper, {stage}: mostly {low}-{high}")
            steps.hist(self.steps, bins=np.arange(max(self.steps, default=0) + 2) - 0.5, color="#2a9d8f")
            steps.set(xlabel="steps (assistant turns) per episode", ylabel="episodes",
                      title=f"{summary['episodes']} episodes of {summary['tasks']} tasks")
            steps.legend(loc="upper right", fontsize="small")
            tokens.hist(self.tokens, bins=50, color="#2a9d8f")
            tokens.set(xlabel="tokens per episode (billed over its requests, else characters / 4)", ylabel="episodes",
                       title="tokens")
            names = [name for name, _ in self.reasons.most_common()][::-1]  # the most common on top
            reasons.barh(names, [self.reasons[n] for n in names], color="#8d99ae")
            reasons.set(xlabel="episodes", title="finish reasons")
