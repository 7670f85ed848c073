"""Stage kind `compare`: eval folders side by side in `<stage>/comparison.md`, each against the first (e.g. a
trained checkpoint against its untrained base model)."""

from __future__ import annotations

from dataclasses import dataclass

from swehero.recipe.stage import InputPath, StageContext


@dataclass
class Settings:
    runs: list[InputPath]
    """Eval folders (each holding a report.json), the baseline first."""


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    from swehero.eval.compare import compare

    out = ctx.dir / "comparison.md"
    text = "# Comparison\n\n" + compare(settings.runs)
    out.write_text(text)
    print(text)
    return {"comparison": str(out)}
