"""Stage kind `command`: a shell command as a recipe stage (fetching data, a custom conversion, a report).

It runs with `bash -c` in the stage folder, with SWEHERO_STAGE_DIR, SWEHERO_RUN_DIR, SWEHERO_SEED and
SWEHERO_PYTHON (the Python running swehero, whatever PATH says) set, gets
the same skip/rerun bookkeeping as any stage, and fails the recipe if it exits non-zero or a declared output is
missing. It runs in its own process group, so a recipe stopped by Ctrl-C or SIGTERM ends it with everything it
started (SIGTERM, then SIGKILL 10 s later), and a recipe killed outright takes the shell with it and, through the
group's guard (swehero.process.start_group), everything it started: nothing writes on into the folder a rerun
empties.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from swehero.errors import ProcessFailed
from swehero.process import die_with_parent, run_group
from swehero.recipe.stage import InputPath, StageContext


@dataclass
class Settings:
    run: str
    """The bash command line to run."""
    inputs: list[InputPath] = field(default_factory=list)
    """Files or folders the command reads: checked to exist, and a change reruns the stage."""
    outputs: list[str] = field(default_factory=list)
    """Paths, relative to the stage folder, the command must create."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables."""


def run(settings: Settings, ctx: StageContext) -> dict[str, str]:
    env = {**os.environ, **settings.env, "SWEHERO_STAGE_DIR": str(ctx.dir), "SWEHERO_RUN_DIR": str(ctx.run_dir or ctx.dir.parent),
           "SWEHERO_SEED": str(ctx.seed), "SWEHERO_PYTHON": sys.executable}
    status = run_group(["bash", "-c", settings.run], cwd=ctx.dir, env=env, preexec_fn=die_with_parent)
    if status != 0:
        raise ProcessFailed(f"command exited with status {status}: {settings.run}")
    outputs = {name: str(ctx.dir / name) for name in settings.outputs}
    missing = [name for name, path in outputs.items() if not os.path.exists(path)]
    if missing:
        raise ProcessFailed(f"command did not create its declared outputs: {', '.join(missing)}")
    return outputs
