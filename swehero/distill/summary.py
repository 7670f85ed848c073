"""`summary.json` of a distillation run: episodes, finish reasons, steps and tokens percentiles, wall time."""

from __future__ import annotations

import json
import threading
from collections import Counter

import numpy as np


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
