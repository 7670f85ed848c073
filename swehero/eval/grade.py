"""Grade the committed predictions into `grades.jsonl` (append-only, resumable), with the local grader or swebench.

Empty patches are not graded (the harness skips them too); they are their own outcome class in the report. A
grading error that says nothing about the patch (the harness's, or a local clone that failed) is logged with `retry`
and graded again by the next grading, whose line supersedes it: an instance's grade is its latest line.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from swehero.agent.local import MissingRepository
from swehero.errors import InputError
from swehero.eval.harness import (
    HarnessConfig,
    check_harness_dataset,
    grade_record,
    retry_record,
    run_harness,
)
from swehero.eval.images import image_name
from swehero.eval.inference import PREDICTIONS, finished
from swehero.recipe.stage import Range
from swehero.rollout.local_grader import LocalGraderConfig, check_local, failure_text, grade_instance
from swehero.jsonio import JsonlLog, JsonlLogReader
from swehero.process import Ended, end_captured
from swehero.rollout.tasks import load_tasks, repo_dir, task_digest

GRADED_COLUMNS = ("repo", "base_commit", "version", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS", "eval_script",
                  "log_parser", "eval_type", "language", "install_config", "image", "environment_setup_commit")
"""The columns of a task row a grade depends on (the local grader's and the harness's): an edit of another (a
hint, an annotation, a new column) keeps the grade."""

GRADES = "grades.jsonl"


@dataclass
class GradingSettings:
    grader: Literal["local", "swebench", "none"] = "swebench"
    """swebench: the official harness in Docker; local: clone + pytest on this machine (Python tasks without
    Docker, e.g. the toy tasks); none: inference only."""
    workers: Annotated[int, Range(min=1)] = 1
    """Instances the local grader grades in parallel."""
    local: LocalGraderConfig = field(default_factory=LocalGraderConfig)
    harness: HarnessConfig = field(default_factory=HarnessConfig)


def grades(out_dir: Path) -> dict[str, dict]:
    """Each graded instance's grade: its latest line, which supersedes a harness error graded again. A line that is
    no grade (edited by hand) is an `InputError` naming its file:line and field: `"resolved": "no"` read as true."""
    path = Path(out_dir) / GRADES
    found = {}
    for number, record in JsonlLogReader(path).numbered():
        if not isinstance(record, dict) or not isinstance(record.get("instance_id"), str):
            raise InputError(f"{path}:{number}: a grade is a JSON object with an instance_id string, got "
                             f"{record!r:.80}")
        if not isinstance(record.get("resolved"), bool):
            raise InputError(f"{path}:{number}: resolved must be true or false, got {record.get('resolved')!r:.80}")
        found[record["instance_id"]] = record
    return found


def graded_task_digest(task: dict) -> str:
    """A digest of what a grade is made from of a task row (`GRADED_COLUMNS`)."""
    return task_digest({column: task.get(column) for column in GRADED_COLUMNS})


def current_grades(out_dir: Path, tasks: list[dict]) -> dict[str, dict]:
    """`grades`, less those made against another version of the task row `tasks` holds."""
    return _made_on(tasks, grades(out_dir))


def _made_on(tasks: list[dict], recorded: dict[str, dict]) -> dict[str, dict]:
    """The grades of `recorded` made on the task rows `tasks` holds (its test lists, test patch, ...:
    `graded_task_digest` is the same); a grade that recorded none was made before digests were, and counts. Those of
    tasks `tasks` does not hold (left in the folder by a wider selection) are no grade of these."""
    digests = {t["instance_id"]: graded_task_digest(t) for t in tasks}
    return {iid: grade for iid, grade in recorded.items()
            if iid in digests and grade.get("task_digest", digests[iid]) == digests[iid]}


def check_one_grader(tasks: list[dict], out_dir: Path, grader: str) -> None:
    """Refuse to grade `tasks` in `out_dir` with `grader` where another grader gave their verdicts: one rate would
    count two graders' verdicts (the local grader and the harness differ on some patches). Grades that name no
    grader were made before grades did, and are not checked."""
    if grader == "none":
        return
    others = sorted({g.get("grader") for g in current_grades(out_dir, tasks).values() if is_final(g)} - {grader, None})
    if others:
        raise InputError(f"{out_dir} holds grades by the {', '.join(others)} grader, so grading it with {grader} "
                         f"would mix graders in one rate: grade with --grader {others[0]}, or remove "
                         f"{Path(out_dir) / GRADES} to grade every prediction again with {grader}")


def grading_record(settings: GradingSettings, harness_dataset: str) -> dict:
    """What decides a folder's grades, saved in its `eval.json` so that `eval grade` grades the rest alike: the
    grader, and for the harness the dataset whose rows it grades against."""
    harness = {"harness_dataset": harness_dataset} if settings.grader == "swebench" else {}
    return {"grader": settings.grader, **harness}


def is_final(grade: dict) -> bool:
    """Whether a grade is a verdict on the patch, rather than a harness error to grade again."""
    return not grade.get("retry")


def verdict(record: dict) -> str:
    if not is_final(record):
        return f"grader error, graded again by the next grading ({record['error']})"
    return "resolved" if record["resolved"] else "not resolved"


def harness_rows(tasks: list[dict], harness_dataset: str) -> list[dict]:
    """The rows the harness grades `tasks` with: those of the harness dataset where it is a file (it may be another
    file than the tasks, such as one `eval images build` wrote), else the tasks' own (a hub dataset is checked by
    the harness itself)."""
    if not Path(harness_dataset).is_file():
        return tasks
    ids = {t["instance_id"] for t in tasks}
    return [row for row in load_tasks(harness_dataset) if row["instance_id"] in ids]


def grade(tasks: list[dict], out_dir: Path, settings: GradingSettings, repos: Path | None, harness_dataset: str,
          progress=print) -> dict[str, int]:
    """Grade every committed, non-empty, ungraded prediction of `tasks`; returns counts and the repositories
    that were missing (their instances are left ungraded)."""
    out_dir = Path(out_dir)
    check_one_grader(tasks, out_dir, settings.grader)
    log = JsonlLog(out_dir / GRADES)
    selected = {t["instance_id"] for t in tasks}
    latest = grades(out_dir)
    final = {iid: record for iid, record in latest.items() if iid in selected and is_final(record)}
    done = _made_on(tasks, final)
    edited = final.keys() - done.keys()
    predictions = finished(out_dir)
    todo = [t for t in tasks if t["instance_id"] in predictions and t["instance_id"] not in done
            and (predictions[t["instance_id"]]["model_patch"] or "").strip()]
    again = f" ({len(edited)} graded again: their task row changed)" if edited else ""
    progress(f"grading ({settings.grader}): {len(todo)} prediction(s) to grade{again}, {len(done)} graded before")
    if not todo or settings.grader == "none":
        return {"graded": 0, "before": len(done), "missing_repositories": []}
    missing: set[str] = set()
    if settings.grader == "local":
        if repos is None:
            raise InputError("the local grader needs the folder of the task repositories (repos)")
        check_local(todo)

        def one(task: dict) -> None:
            iid = task["instance_id"]
            logs = f"grading/{iid}"
            try:
                entry = grade_instance(task, predictions[iid], repo_dir(repos, task["repo"]), out_dir / logs,
                                       settings.local)
                record = grade_record(iid, entry, "local", logs)
            except MissingRepository as e:  # not a verdict: left ungraded, named when the others are done
                missing.add(str(e))
                return
            except Ended:  # its tests were killed by a stop (below): no verdict; the next run grades it
                return
            except Exception as e:  # a broken clone (a full disk) is the infrastructure's failure, not the model's
                record = retry_record(iid, "local", logs, failure_text(e))
            log.append({**record, "task_digest": graded_task_digest(task)})
            progress(f"  {iid}: {verdict(record)}")

        with ThreadPoolExecutor(max_workers=max(settings.workers, 1)) as pool:
            futures = [pool.submit(one, task) for task in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                # Ctrl-C, SIGTERM: leaving the block would start every grading still queued, and wait for the
                # running ones' tests (up to their timeout each); a second Ctrl-C then left them running, orphans
                pool.shutdown(cancel_futures=True, wait=False)
                if running := end_captured():
                    progress(f"stopping: {running} running command(s) of the gradings were stopped; the next run "
                             "grades their instances")
                raise
    else:
        rows, ids = harness_rows(todo, harness_dataset), [t["instance_id"] for t in todo]
        if Path(harness_dataset).is_file():
            check_harness_dataset(rows, harness_dataset, ids)
        digests = {t["instance_id"]: graded_task_digest(t) for t in todo}

        def record_grades(graded: dict[str, dict]) -> None:
            for iid, record in graded.items():
                log.append({**record, "task_digest": digests[iid]})

        # a grader error's logs go too: on Modal, the harness skips an instance whose log folder exists
        errors = {iid for iid, record in latest.items() if not is_final(record)}
        run_harness(settings.harness, out_dir, harness_dataset, out_dir / PREDICTIONS, ids,
                    {row["instance_id"]: image_name(row) for row in rows}, record_grades, again=edited | errors)
    return {"graded": len(todo) - len(missing), "before": len(done), "missing_repositories": sorted(missing)}
