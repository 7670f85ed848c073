"""Grade the committed predictions into `grades.jsonl` (append-only, resumable), with the local grader or swebench.

Empty patches are not graded (the harness skips them too); they are their own outcome class in the report.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from swehero.agent.local import MissingRepository
from swehero.errors import InputError
from swehero.eval.harness import (
    HarnessConfig,
    check_harness_dataset,
    grade_record,
    parse_harness,
    run_harness,
    run_id_for,
)
from swehero.eval.inference import PREDICTIONS, finished
from swehero.rollout.local_grader import LocalGraderConfig, grade_instance
from swehero.jsonio import JsonlLog
from swehero.rollout.tasks import repo_dir

GRADES = "grades.jsonl"


@dataclass
class GradingSettings:
    grader: Literal["local", "swebench", "none"] = "swebench"
    """swebench: the official harness in Docker; local: clone + pytest on this machine (Python tasks without
    Docker, e.g. the toy tasks); none: inference only."""
    workers: int = 1
    """Instances the local grader grades in parallel."""
    local: LocalGraderConfig = field(default_factory=LocalGraderConfig)
    harness: HarnessConfig = field(default_factory=HarnessConfig)


def grades(out_dir: Path) -> dict[str, dict]:
    return JsonlLog(Path(out_dir) / GRADES).records()


def grade(tasks: list[dict], out_dir: Path, settings: GradingSettings, repos: Path | None, harness_dataset: str,
          progress=print) -> dict[str, int]:
    """Grade every committed, non-empty, ungraded prediction of `tasks`; returns counts and the repositories
    that were missing (their instances are left ungraded)."""
    out_dir = Path(out_dir)
    log = JsonlLog(out_dir / GRADES)
    done, predictions = log.records(), finished(out_dir)
    todo = [t for t in tasks if t["instance_id"] in predictions and t["instance_id"] not in done
            and (predictions[t["instance_id"]]["model_patch"] or "").strip()]
    progress(f"grading ({settings.grader}): {len(todo)} prediction(s) to grade, {len(done)} graded before")
    if not todo or settings.grader == "none":
        return {"graded": 0, "before": len(done), "missing_repositories": []}
    missing: set[str] = set()
    if settings.grader == "local":
        if repos is None:
            raise InputError("the local grader needs the folder of the task repositories (repos)")

        def one(task: dict) -> None:
            iid = task["instance_id"]
            try:
                entry = grade_instance(task, predictions[iid], repo_dir(repos, task["repo"]),
                                       out_dir / "grading" / iid, settings.local)
                record = grade_record(iid, entry, "local", f"grading/{iid}")
            except MissingRepository as e:  # not a verdict: left ungraded, named when the others are done
                missing.add(str(e))
                return
            except Exception as e:  # a broken clone is the infrastructure's failure, not the model's
                record = {"instance_id": iid, "grader": "local", "resolved": False, "patch_applied": False,
                          "infra_failure": True, "error": f"{type(e).__name__}: {e}"}
            log.append(record)
            progress(f"  {iid}: {'resolved' if record['resolved'] else 'not resolved'}")

        with ThreadPoolExecutor(max_workers=max(settings.workers, 1)) as pool:
            for future in [pool.submit(one, task) for task in todo]:
                future.result()
    else:
        if Path(harness_dataset).is_file():  # a hub dataset is checked by the harness itself
            check_harness_dataset(todo, harness_dataset)
        ids = [t["instance_id"] for t in todo]
        model = predictions[ids[0]]["model_name_or_path"]
        where = run_harness(settings.harness, out_dir, harness_dataset, out_dir / PREDICTIONS, ids,
                            {t["instance_id"]: t.get("image", "") for t in todo})
        for record in parse_harness(where, run_id_for(settings.harness, out_dir), model, ids).values():
            log.append(record)
    return {"graded": len(todo) - len(missing), "before": len(done), "missing_repositories": sorted(missing)}
