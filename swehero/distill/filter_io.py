"""Filtering a trajectory file into a folder: kept trajectories, the dropped ones with their rule, the report."""

from __future__ import annotations

import json
from pathlib import Path

from swehero.data.sources import read_trajectories
from swehero.distill.filters import FilterConfig, filter_trajectories

REPORT = "filter_report.json"


def filter_file(path: str, cfg: FilterConfig, out_dir: Path) -> dict[str, str]:
    records = read_trajectories(path)  # first: input it cannot read leaves no output folder
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept, dropped, report = filter_trajectories(records, cfg)
    report["source"] = str(path)
    outputs = {"trajectories": out_dir / "trajectories.jsonl", "dropped": out_dir / "dropped.jsonl",
               "report": out_dir / REPORT}
    outputs["trajectories"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    outputs["dropped"].write_text("".join(json.dumps(d) + "\n" for d in dropped))
    outputs["report"].write_text(json.dumps(report, indent=1) + "\n")
    return {name: str(p) for name, p in outputs.items()}
