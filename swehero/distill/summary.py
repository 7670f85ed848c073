"""`summary.json` of a distillation run: episodes, finish reasons, steps and tokens percentiles, wall time."""

from __future__ import annotations

import json
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


def summarize(records: list[dict], wall_s: float) -> dict:
    """Figures over the committed trajectories (all of them, including those of earlier, resumed runs)."""
    meta = [r.get("metadata") or {} for r in records]
    return {
        "episodes": len(records),
        "tasks": len({r["instance_id"] for r in records}),
        "finish_reasons": dict(Counter(m.get("finish_reason", "unknown") for m in meta).most_common()),
        "with_patch": sum(bool((r.get("patch") or "").strip()) for r in records),
        "steps": percentiles([m.get("steps", 0) for m in meta]),
        "tokens": percentiles([tokens_of(r) for r in records]),
        "episode_seconds": percentiles([m.get("seconds", 0.0) for m in meta]),
        "wall_s": round(wall_s, 2),
    }
