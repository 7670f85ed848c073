"""Filtering a trajectory file into a folder: kept trajectories, the dropped ones with their rule, the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from swehero.data.select import Selection, select_lines
from swehero.data.sources import iter_trajectories
from swehero.distill.filters import FilterConfig, check_gradable, filter_trajectories

REPORT = "filter_report.json"


def filter_file(path: str, cfg: FilterConfig, out_dir: Path, seed: int = Selection.seed) -> dict[str, str]:
    """Stream `path` through the filters into `out_dir`, then make `cfg`'s selection among what they kept (seeded
    by `seed` where `cfg` names none), rewriting the kept file line by line. The files appear whole or not at all:
    each is written under a temporary name and renamed at the end; input it cannot read leaves no output (nor a
    folder it made). With `resolved_only`, `path` is read once more first, so that a task grading would lack stops
    the run before hours of grading, not after."""
    check_gradable(iter_trajectories(path), cfg)
    selection = cfg.selection(seed)
    out_dir = Path(out_dir)
    made = not out_dir.exists()
    outputs = {"trajectories": out_dir / "trajectories.jsonl", "dropped": out_dir / "dropped.jsonl",
               "report": out_dir / REPORT}
    partial = {name: p.with_name(f".{p.name}.partial") for name, p in outputs.items()}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        kept_ids: list[tuple[str, str]] = []  # (instance_id, id) of each line kept, all the selection needs
        with open(partial["trajectories"], "w") as kept, open(partial["dropped"], "w") as dropped:

            def keep(record: dict) -> None:
                kept.write(json.dumps(record, ensure_ascii=False) + "\n")
                if selection.active:
                    kept_ids.append((record["instance_id"], record["id"]))

            report = filter_trajectories(iter_trajectories(path), cfg, keep,
                                         lambda d: dropped.write(json.dumps(d) + "\n"))
        if selection.active:
            report["selected"] = select_lines(partial["trajectories"], kept_ids, selection)
        report["source"] = str(path)
        partial["report"].write_text(json.dumps(report, indent=1) + "\n")
    except BaseException:
        if made:
            shutil.rmtree(out_dir, ignore_errors=True)
        for p in partial.values():
            p.unlink(missing_ok=True)
        raise
    for name, p in outputs.items():
        partial[name].replace(p)
    return {name: str(p) for name, p in outputs.items()}
