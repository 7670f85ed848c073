"""The graded attempts of eval folders: for every instance, its attempt in each run, with the trajectory, the
committed patch and the grade. What selection among attempts and verifier training read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from swehero.eval.grade import current_grades, is_final
from swehero.eval.inference import finished, trajectory_path
from swehero.eval.runs import EvalFolderError
from swehero.jsonio import read_json


@dataclass
class Attempt:
    run: int
    """Index of the run among all the runs read (folders in the order given, each folder's runs in order)."""
    instance_id: str
    trajectory: Path
    """The trajectory record's file."""
    patch: str
    """The committed prediction's patch (empty: the attempt left none)."""
    resolved: bool | None
    """The grade; False for an empty patch (never graded) or an infrastructure failure of the grader that its
    line makes final (counted unresolved, as the runs' reports count it); None for a patch not graded yet,
    including one whose grading errored and is to be graded again (a `retry` line is no verdict)."""
    infra_failure: bool = False
    """The grader failed (the verdict says nothing about the patch)."""

    def record(self) -> dict:
        return read_json(self.trajectory, "a trajectory")

    def fingerprint(self) -> str:
        """sha256 of what a verifier judges of the attempt, its trajectory file and its patch: equal only for the
        same attempt, wherever its folder is and in whatever order the runs are read."""
        digest = hashlib.sha256(self.trajectory.read_bytes())
        digest.update(b"\0" + self.patch.encode())
        return digest.hexdigest()


def read_attempts(folders: list[Path]) -> tuple[list[str], dict[str, list[Attempt]]]:
    """(instance ids, their attempts in run order) over every run of `folders`, which must be evaluations of the
    same instances, each run read once, graded on the task rows their task files hold now. EvalFolderError naming
    what is missing when an attempt has no committed prediction."""
    from swehero.eval.pipeline import open_eval

    instance_ids, runs, seeds = None, [], {}
    for folder in folders:
        tasks, saved, dirs = open_eval(folder)  # refused, as `eval grade` refuses it, after its tasks were edited
        if instance_ids is None:
            instance_ids = saved["instance_ids"]
        elif sorted(saved["instance_ids"]) != sorted(instance_ids):
            raise EvalFolderError(f"{folder} evaluates other instances than {folders[0]}: selection needs every run "
                                  "to attempt the same instances")
        # A run's seeds follow from the eval's seed, the instance and the run's index in its folder: a second folder
        # made as the first was (model, weights, agent settings), with the same seed, repeats its samples
        made = {key: value for key, value in (saved.get("attempts") or {}).items() if key != "runs"}
        if made.get("seed") is not None:
            first = seeds.setdefault(json.dumps(made, sort_keys=True), folder)
            if first != folder:
                raise EvalFolderError(f"{folder} was made as {first} was, with the same seed ({made['seed']}): its "
                                      "runs repeat that folder's samples run for run, and would count as independent "
                                      "runs; evaluate more runs with another --seed")
        runs += [(run, tasks) for run in dirs]
    _check_read_once([run for run, _ in runs])
    attempts: dict[str, list[Attempt]] = {iid: [] for iid in instance_ids}
    for k, (run, tasks) in enumerate(runs):
        # a grade made against another version of its task (its test lists) is no grade, as in the runs' reports
        predictions, graded = finished(run), current_grades(run, tasks)
        missing = [iid for iid in instance_ids if iid not in predictions]
        if missing:
            raise EvalFolderError(f"{run}: {len(missing)} instance(s) have no prediction yet (e.g. {missing[0]}); "
                                  "finish the eval first (rerun `swehero eval run`)")
        for iid in instance_ids:
            patch = predictions[iid]["model_patch"] or ""
            grade = graded.get(iid)
            if grade is not None and not is_final(grade):  # a harness error to grade again: no verdict yet
                grade = None
            resolved = bool(grade["resolved"]) if grade else (False if not patch.strip() else None)
            attempts[iid].append(Attempt(k, iid, trajectory_path(run, iid), patch, resolved,
                                         bool(grade and grade.get("infra_failure"))))
    return list(instance_ids), attempts


def _check_read_once(runs: list[Path]) -> None:
    """Refuse a run folder given twice (the same folder, or one through a link): its attempts would count as
    independent runs twice, overstating pass@k and best@k."""
    seen: dict[Path, Path] = {}
    for run in runs:
        if run.resolve() in seen:
            raise EvalFolderError(f"{run}: the run folder {run.resolve()} is given twice (also as "
                                  f"{seen[run.resolve()]}); give each run once")
        seen[run.resolve()] = run


def check_distinct_runs(attempts: dict[str, list[Attempt]], fingerprints: dict[tuple[int, str], str]) -> None:
    """Refuse a run whose every attempt is an attempt of another run (by `fingerprints`, per run and instance): a
    copy of that run, which would count as an independent run and overstate pass@k and best@k. Independent runs
    never share a whole run: each attempt's trajectory has an id of its own."""
    seen: dict[tuple[str, ...], Path] = {}
    for attempt in next(iter(attempts.values()), []):  # an instance's attempt in each run: the run's index and folder
        run = attempt.trajectory.parents[1]
        original = seen.setdefault(tuple(fingerprints[attempt.run, iid] for iid in attempts), run)
        if original != run:
            raise EvalFolderError(f"{run}: every attempt is one of {original} (the same trajectories and patches): "
                                  "a copy of that run would count as an independent run and overstate pass@k and "
                                  "best@k; give it once")
