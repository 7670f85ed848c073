"""Stage kind `import`: trajectories in a published format -> canonical JSONL (`<stage>/trajectories.jsonl`), with
an optional seeded selection (at most N per task, at most M in all) where a release holds more than a paper
trained on, and `counts.json` (rows read, written, rejected by reason, tasks, sources, what the selection kept).
`swehero data import` takes the same settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from swehero.data.importers import Format
from swehero.data.sources import MAX_REJECT_FRACTION
from swehero.recipe.stage import InputPath, Range, StageContext

TRAJECTORIES = "trajectories.jsonl"


@dataclass
class Settings:
    inputs: list[InputPath]
    """Files (JSONL, JSON, Parquet, SWE-agent .traj) or folders of them."""
    format: Format
    """Their format (see docs/data.md)."""
    stage: Literal["zero", "hero"] | None = None
    """The stage label every record gets (SWE-Zero or SWE-Hero data)."""
    max_reject_fraction: Annotated[float, Range(min=0, max=1)] = MAX_REJECT_FRACTION
    """Fail when more than this share of the rows cannot be used (each reject is logged with its file:line)."""
    per_instance: Annotated[int, Range(min=1)] | None = None
    """Keep at most this many trajectories per task (a seeded choice; empty: all)."""
    limit: Annotated[int, Range(min=1)] | None = None
    """Keep at most this many trajectories in all, after `per_instance` (a seeded choice; empty: all)."""
    seed: int | None = None
    """Seeds the selection; empty: the recipe's seed (1234 from the command line)."""


def import_to(settings: Settings, out: Path, seed: int) -> dict:
    """Import into `out`; returns the counts. `seed`: the selection's, when the settings name none."""
    from swehero.data.importers import import_files
    from swehero.data.select import Selection

    selection = Selection(settings.per_instance, settings.limit, seed if settings.seed is None else settings.seed)
    return import_files(list(settings.inputs), settings.format, out, stage=settings.stage,
                        max_reject_fraction=settings.max_reject_fraction, selection=selection)


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.jsonio import write_json_atomic

    out, counts = ctx.dir / TRAJECTORIES, ctx.dir / "counts.json"
    write_json_atomic(counts, import_to(settings, out, ctx.seed), indent=1)
    return {"trajectories": str(out), "counts": str(counts)}
