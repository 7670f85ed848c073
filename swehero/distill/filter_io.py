"""Filtering a trajectory file into a folder: kept trajectories, the dropped ones with their rule, the report, and
with `resolved_only` the log of grades (`grades.jsonl`) that a rerun into the same folder goes on from."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from swehero.data.select import Selection, select_lines
from swehero.data.sources import expand, iter_trajectories
from swehero.data.trajectory import Reject, validate
from swehero.distill.filters import GRADES, FilterConfig, Grades, check_gradable, filter_trajectories, logged_grades
from swehero.errors import InputError

REPORT = "filter_report.json"


def filter_file(path: str, cfg: FilterConfig, out_dir: Path, seed: int = Selection.seed) -> dict[str, str]:
    """Stream `path` through the filters into `out_dir`, then make `cfg`'s selection among what they kept (seeded
    by `seed` where `cfg` names none), rewriting the kept file line by line. The files appear whole or not at all:
    each is written under a temporary name and renamed at the end; input it cannot read leaves no output (nor a
    folder it made). With `resolved_only`, `path` is read once more first, so that a task grading would lack stops
    the run before hours of grading, not after; each grade is logged in `out_dir/grades.jsonl` as it is made, kept
    whatever stops the run, and reused by the next run into `out_dir`."""
    out_dir = Path(out_dir)
    _refuse_replacing_input(path, out_dir)
    check_gradable(trajectories(path), cfg, logged_grades(out_dir / GRADES) if cfg.resolved_only else {})
    selection = cfg.selection(seed)
    made = not out_dir.exists()
    outputs = {"trajectories": out_dir / "trajectories.jsonl", "dropped": out_dir / "dropped.jsonl",
               "report": out_dir / REPORT}
    partial = {name: p.with_name(f".{p.name}.partial") for name, p in outputs.items()}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        grades = Grades(out_dir / GRADES) if cfg.resolved_only else None
        kept_ids: list[tuple[str, str]] = []  # (instance_id, id) of each line kept, all the selection needs
        with open(partial["trajectories"], "w") as kept, open(partial["dropped"], "w") as dropped:

            def keep(record: dict) -> None:
                kept.write(json.dumps(record, ensure_ascii=False) + "\n")
                if selection.active:
                    kept_ids.append((record["instance_id"], record["id"]))

            report = filter_trajectories(trajectories(path), cfg, keep,
                                         lambda d: dropped.write(json.dumps(d) + "\n"), grades)
        if not report["input"]:  # as import and prepare: an emptied file (a failed export) is no clean result
            raise InputError(f"{path}: no trajectories to read (an empty file?)")
        if selection.active:
            report["selected"] = select_lines(partial["trajectories"], kept_ids, selection)
        report["source"] = str(path)
        partial["report"].write_text(json.dumps(report, indent=1) + "\n")
    except BaseException:
        for p in partial.values():
            p.unlink(missing_ok=True)
        if made and not _holds_grades(out_dir):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    for name, p in outputs.items():
        partial[name].replace(p)
    return {name: str(p) for name, p in outputs.items()}


def _holds_grades(out_dir: Path) -> bool:
    """Whether `out_dir` holds grades, hours of tests that a rerun reuses."""
    log = out_dir / GRADES
    return log.is_file() and log.stat().st_size > 0


def _refuse_replacing_input(path: str, out_dir: Path) -> None:
    """The outputs replace files of `out_dir`: never one being read, nor a distill run's log (filtered into its own
    folder, a run's append-only `trajectories.jsonl` was replaced by what the filters kept: the teacher's other
    episodes lost, and a rerun of the run made them again and appended them to the filtered file)."""
    from swehero.distill.run import ATTEMPTS

    if (out_dir / ATTEMPTS).is_file():
        raise InputError(f"{out_dir} is a distill run's folder: filtering into it would replace the run's "
                         "trajectories.jsonl; write the filtered trajectories to another folder (--out)")
    read = {p.resolve() for p in expand([str(path)])}
    for name in ("trajectories.jsonl", "dropped.jsonl"):
        if (out_dir / name).resolve() in read:
            raise InputError(f"{out_dir / name} is read as input and would be replaced by the output: write the "
                             "filtered trajectories to another folder (--out)")


def trajectories(path: str) -> Iterator[dict]:
    """The canonical trajectories of a file, one at a time (`swehero.data.sources.iter_trajectories`), and the records
    of episodes without an assistant turn (a distill run commits one for an episode that ended before the teacher's
    first reply), otherwise valid: the filter drops these by its own rule (`filters.NO_ASSISTANT_TURN`). Any other
    row that is not a trajectory stops the read with `InputError` naming its file:line and the field."""
    return iter_trajectories(Path(path), _checked)


def _checked(row: dict) -> dict:
    record = validate(row, turnless=True)
    files = (record["metadata"] or {}).get("test_files")
    if files is not None and not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        # a string would be compared with the patch's files character by character: the rule would never fire
        raise Reject("bad_field", "metadata.test_files must be a list of file paths")
    return record
