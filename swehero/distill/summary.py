"""`summary.json` of a distillation run: episodes, finish reasons, steps and tokens percentiles, wall time."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

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


def summarize(records: Iterable[dict], wall_s: float) -> dict:
    """Figures over the committed trajectories (all of them, including those of earlier, resumed runs), read once
    and not kept: a run's trajectories can be far larger than memory."""
    tasks, reasons, with_patch, steps, tokens, seconds = set(), Counter(), 0, [], [], []
    for record in records:
        meta = record.get("metadata") or {}
        tasks.add(record["instance_id"])
        reasons[meta.get("finish_reason", "unknown")] += 1
        with_patch += bool((record.get("patch") or "").strip())
        steps.append(meta.get("steps", 0))
        tokens.append(tokens_of(record))
        seconds.append(meta.get("seconds", 0.0))
    return {
        "episodes": len(steps),
        "tasks": len(tasks),
        "finish_reasons": dict(reasons.most_common()),
        "with_patch": with_patch,
        "steps": percentiles(steps),
        "tokens": percentiles(tokens),
        "episode_seconds": percentiles(seconds),
        "wall_s": round(wall_s, 2),
    }
