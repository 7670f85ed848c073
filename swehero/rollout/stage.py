"""Stage kind `rollout`: run the agent over a task file; write trajectories and SWE-bench predictions.

One JSON file per episode under `episodes/` (rewritten after every step, so a killed stage resumes by skipping
the episodes that ended), then `trajectories.jsonl` (the canonical records, for the data plane) and
`predictions.jsonl` (the first rollout's patch per task, for SWE-bench evaluation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from swehero.agent.run import AgentConfig
from swehero.recipe.stage import InputPath, StageContext

RESUMABLE = True


@dataclass
class Settings:
    tasks: InputPath
    """SWE-bench-shaped task rows (`.jsonl`, or `.json` holding a list)."""
    repos: InputPath | None = None
    """Folder of git repositories named `<owner>__<name>`, one per task repo (the local runtime needs it)."""
    rollouts: int = 1
    """Episodes per task (the paper: 3-5 for SWE-Zero data, 1 for SWE-Hero data and for evaluation)."""
    limit: int = 0
    """Run only the first `limit` tasks (0: all of them)."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """Mode, policy, runtime, limits and sampling settings of every episode."""


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.agent.run import run_task
    from swehero.agent.task import load_tasks

    tasks = load_tasks(Path(settings.tasks))[: settings.limit or None]
    episodes = ctx.dir / "episodes"
    records = []
    for task in tasks:
        repo = Path(settings.repos) / task.repo.replace("/", "__") if settings.repos else None
        for k in range(settings.rollouts):
            out = episodes / f"{task.instance_id}.{k}.json"
            record = json.loads(out.read_text()) if out.exists() else None
            if record is None or record["metadata"]["exit_reason"] in (None, "interrupted"):
                record = run_task(task, settings.agent, out, repo, ctx.dir / "work")
            records.append(record)
    trajectories, predictions = ctx.dir / "trajectories.jsonl", ctx.dir / "predictions.jsonl"
    trajectories.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    model = settings.agent.openai.model or settings.agent.policy
    firsts = {r["instance_id"]: r for r in reversed(records)}
    predictions.write_text("".join(
        json.dumps({"instance_id": i, "model_name_or_path": model, "model_patch": r["patch"]}) + "\n"
        for i, r in sorted(firsts.items())))
    return {"trajectories": str(trajectories), "predictions": str(predictions), "episodes": str(episodes)}
