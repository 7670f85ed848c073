"""What every stage kind sees and provides.

A stage kind is a module (registered in `swehero.recipe.kinds`) that defines:

- `Settings`: a dataclass of the stage's settings; each field has a docstring-style comment. Fields whose
  type is `InputPath` (or `list[InputPath]`) name files or folders the stage reads: the engine checks they
  exist before anything runs (unless an earlier stage of the recipe produces them) and fingerprints them so
  a changed input reruns the stage. Fields typed `Annotated[int, Range(min=1)]` (see `Range`) are bounded: the
  schema rejects a value out of range, in a recipe and on a command line alike. A settings dataclass (or a section of
  one) may define `cross_field_problems() -> list[(field, message)]` for values that do not go together (`min_lr`
  above `lr`); the schema reports each at that field's line.
- `run(settings, ctx) -> dict[str, str]`: does the work, writing only under `ctx.dir`, and returns its
  outputs by name (paths). Heavy imports (torch, megatron, vllm) go inside `run`, so that validating a
  recipe stays fast.
- optionally `RESUMABLE = True`: the stage picks up partial work left in `ctx.dir` by an attempt that was killed,
  stopped or failed with the same settings, seed, inputs and upstream. Otherwise the engine empties `ctx.dir`
  before a rerun.
- optionally `USES_MODEL = True`: the stage reads the recipe's `model` section (`ctx.model`, None otherwise);
  its paths then count as the stage's inputs (checked, fingerprinted, and a dependency on the stage making them).
- optionally `NOT_IN_RESULT = ("field", ...)`: settings that change how the stage runs or what it reports, not
  what it makes (a train stage's logging, GPU count, checkpoint cadence). Changed alone, they neither make a
  complete stage run again nor empty an interrupted one's folder (days of checkpoints): it resumes with them.
- optionally `RESUMES_ACROSS = ("field", ...)`: settings that change what the stage makes from its work, not the
  work (a train stage's `export_hf`). Changed alone, they make a complete or interrupted stage run again resuming
  (with `RESUMABLE`): its `run` finishes what the new value asks of the work already done.
- optionally `check(settings, name, recipe, step) -> None`: raises InputError for settings that would stop `run`
  and need no earlier stage's work to tell (an unpinned download, a train stage's layout against the model the
  recipe starts it from): a `SettingError` names the setting, an `ExceptionGroup` of them reports several at once.
  `recipe run` checks every stage it is about to run before it runs the first, so a run is not stopped by its last
  stage after days of the others. `RunsElsewhere` instead says that the stage cannot run in this process (a run
  goes up to it and stops there; `--dry-run` says so). `recipe` and `step` (the engine's plan for the stage: does
  it resume) are there for the checks that need more than the settings.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from swehero.errors import InputError


class _Input:
    """Marker for `Annotated[str, INPUT]` fields: a path the stage reads."""

    def __init__(self, hub_ok: bool, names: tuple[str, ...] = ()) -> None:
        self.hub_ok = hub_ok
        self.names = names
        """Words that are not paths but name something the stage knows (a benchmark), accepted as they are."""

    def __repr__(self) -> str:
        return f"Input(hub_ok={self.hub_ok}, names={self.names})"

    def needs_no_file(self, value: str) -> bool:
        """Whether a value with no such local path is still good: a hub id where one may stand, or a name."""
        return self.hub_ok and bool(HUB_ID.match(value)) or value in self.names


INPUT = _Input(hub_ok=False)
HUB_INPUT = _Input(hub_ok=True)

InputPath = Annotated[str, INPUT]
"""A local file or folder the stage reads."""

ModelRef = Annotated[str, HUB_INPUT]
"""A local Hugging Face folder, or a hub id (`org/name`) where no such local path exists."""

Verbatim = Annotated[str, "verbatim"]
"""A text taken as it is: in a list option, each repeat is one item, never split at commas (the text may hold
commas itself: a `vllm serve` argument's JSON, a pip requirement `pkg>=1,<2`)."""

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""What a hub id looks like."""


def input_or_names(*names: str):
    """The type of a field holding a path the stage reads, or one of `names` (e.g. a benchmark)."""
    return Annotated[str, _Input(hub_ok=False, names=names)]


@dataclass(frozen=True)
class Range:
    """Marker for `Annotated[int, Range(min=1)]` or `Annotated[float, Range(gt=0, lt=1)]`: the bounds the schema
    checks, so that a value no stage can use (`seq_length: -5`, `valid_fraction: 1`) fails validation instead of
    failing, or silently doing nothing, at run time. `min`/`max` are inclusive, `gt`/`lt` exclusive."""

    min: float | None = None
    max: float | None = None
    gt: float | None = None
    lt: float | None = None

    def problem(self, value: float | None) -> str | None:
        """`must be ...` when `value` is out of range, else None (also for a None its type allows: no bound)."""
        if value is None:
            return None
        bounds = [(sign, bound, test) for sign, bound, test in [
            (">=", self.min, operator.ge), (">", self.gt, operator.gt),
            ("<=", self.max, operator.le), ("<", self.lt, operator.lt)] if bound is not None]
        if all(test(value, bound) for _, bound, test in bounds):
            return None
        return "must be " + " and ".join(f"{sign} {bound}" for sign, bound, _ in bounds) + f", got {value!r}"


@dataclass(frozen=True)
class ModelConfig:
    """The recipe's `model` section."""

    base: ModelRef
    """Base checkpoint: a Hugging Face folder (or hub id) the first training stage starts from."""
    tokenizer: ModelRef | None = None
    """Tokenizer folder or hub id; defaults to `base`."""

    @property
    def tokenizer_path(self) -> str:
        return self.tokenizer or self.base


class RunsElsewhere(InputError):
    """Raised by a stage kind's `check`: the stage cannot run in this process (a train stage of several nodes, which
    only a Slurm job trains); the message says why and how to run it, after `stage NAME, which `."""


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs besides its own settings."""

    name: str
    """The stage's name in the recipe."""
    dir: Path
    """`run_dir/<name>`: created before `run`; the stage writes only here."""
    seed: int
    """The recipe's seed."""
    model: ModelConfig | None
    """The recipe's `model` section, if it has one."""
    upstream: dict[str, dict[str, str]]
    """Outputs of the stages in `needs`, by stage name (from their manifests)."""
    resume: bool
    """True when an interrupted attempt left partial work in `dir` (only for RESUMABLE kinds)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Facts the stage records in its manifest under `provenance`, e.g. the commit a download resolved to."""
    run_dir: Path | None = None
    """The recipe's `run_dir`, absolute; None: `dir`'s parent. Not resolved through links: `dir` is where a stage
    folder linked to another disk lies, whose parent is not the run's."""
