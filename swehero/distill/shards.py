"""Scale-out: a Slurm array job with one shard per array task, and the merge of the shards' outputs."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from swehero.errors import InputError, MissingInput
from swehero.rollout.endpoints import serves_here
from swehero.slurm import directive_value


def slurm_job(settings, shards: int, out_dir: Path, sbatch_args: list[str] = ()) -> Path:
    """Write `out_dir/distill.sbatch`, an sbatch script whose array task i runs `swehero distill --shard i/N --out
    OUT/shard-i` with the run's settings, written beside it as `distill.yaml` (each task starts its own teacher
    server when they name a checkpoint, or shares the listed endpoints); returns the script. The tasks start in the
    folder this runs in, wherever the script is submitted from, so relative paths in the settings (tasks, prompts,
    excluded task files, a model) name what they name here. With `repo_url` and no `repos`, every task clones into
    one mirror cache, `out_dir/mirrors`.

    Every task asks for a CPU per episode and two more (by default Slurm would give it one CPU, on which its
    `workers` episodes would queue); one that serves its own teacher also asks for that server's GPUs and a CPU for
    each of its processes (else it would get no GPU, and Slurm could put two 8-GPU servers on one node);
    `sbatch_args` come after, and sbatch takes the last of an option given twice. It runs the Python that wrote it,
    not whichever `swehero` the node's PATH finds."""
    import dataclasses
    import sys

    import yaml

    if shards < 1:
        raise InputError("--shards must be at least 1")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if settings.repo_url and not settings.repos:  # one cache for every shard, so each history is fetched once
        settings = dataclasses.replace(settings, repos=str(out / "mirrors"))
    (out / "distill.yaml").write_text(yaml.safe_dump(dataclasses.asdict(settings), sort_keys=False))
    serves = serves_here(settings.agent, settings.endpoints, settings.serve)
    gpus = settings.serve.tensor_parallel_size * settings.serve.data_parallel_size if serves else 0
    cpus = gpus + 2 + settings.workers  # one per episode; two for the run (serving: its API server and engine); a
    # process per GPU
    lines = ["#!/bin/bash", "#SBATCH --job-name=swehero-distill", f"#SBATCH --array=0-{shards - 1}",
             f"#SBATCH --chdir={directive_value(str(Path.cwd()))}",
             f"#SBATCH --output={directive_value(f'{out}/slurm-%A_%a.log')}",
             # one node: the shard's server and its workers meet on localhost (a job's --gpus may span nodes)
             "#SBATCH --nodes=1",
             *([f"#SBATCH --gpus={gpus}"] if serves else []), f"#SBATCH --cpus-per-task={cpus}",
             *(f"#SBATCH {a}" for a in sbatch_args),
             "set -euo pipefail",
             f"# when every array task is done: swehero distill merge {shlex.quote(str(out))}/shard-* --out "
             f"{shlex.quote(str(out))}",
             f"{shlex.quote(sys.executable)} -m swehero distill --config {shlex.quote(str(out / 'distill.yaml'))} "
             f'--shard "$SLURM_ARRAY_TASK_ID/{shards}" --out "{out}/shard-$SLURM_ARRAY_TASK_ID"']
    (out / "distill.sbatch").write_text("\n".join(lines) + "\n")
    return out / "distill.sbatch"


def episodes(file: Path) -> Iterator[tuple[int, bytes, dict]]:
    """(line number, line, trajectory) of a distill run's `trajectories.jsonl`, read as `JsonlLogReader` reads it (to
    the last complete line: the one a running shard is appending is left for the next merge), each checked for what
    the merge reads of it (its task, rollout number and messages): a line without them is an `InputError` naming its
    file:line and the field, not a KeyError halfway through the merge."""
    from swehero.jsonio import JsonlLogReader, parsed

    for number, line, record in parsed(file, JsonlLogReader(file).lines()):
        if problem := _not_an_episode(record):
            raise InputError(f"{file}:{number}: not a distill run's trajectory: {problem}")
        yield number, line, record


def _not_an_episode(record) -> str | None:
    """What a record lacks of the fields the merge reads (`key`, `fingerprint`), or None."""
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not a JSON object"
    if not isinstance(record.get("instance_id"), str):
        return "instance_id is no string"
    if not isinstance(record.get("messages"), list):
        return f"messages is {'missing' if 'messages' not in record else 'no list'}"
    metadata = record.get("metadata")
    if not isinstance(metadata, dict) or not isinstance(metadata.get("rollout"), int):
        return "metadata.rollout is no rollout number"
    return None


def _first_of_its_key(seen: dict, record: dict, line: bytes, file: Path) -> bool:
    """Whether `record` (its `line` of `file`) is the first of its key in `seen` ({key: (digest of the line, file)}:
    the files together can be far larger than memory); a second one that is another record is an error."""
    from swehero.distill.run import key

    made, found = hashlib.sha256(line).digest(), seen.get(key(record))
    if found is None:
        seen[key(record)] = made, file
        return True
    if found[0] != made:
        raise InputError(f"{record['instance_id']} rollout {key(record)[1]}: {found[1]} and {file} hold different "
                         "episodes of it (every run numbers its rollouts from 0): merge the shards of one run, and "
                         "split work between runs by task (--shard i/n), not by rollout")
    return False


def merge(shard_dirs: list[Path], out_dir: Path) -> dict:
    """Concatenate the shards' trajectories into `out_dir` (a pair found twice is kept once) with one summary. A
    folder no run has written to is an error, and so is a pair two folders hold different episodes of (two runs of
    the same tasks); a shard without its summary has not finished (its array task was stopped, or still runs) and
    is merged as far as it got, and listed as `unfinished`; a shard whose failed episodes (`failures.jsonl`) are
    not in the merged trajectories is listed under `failed`, with how many, and one that did not attempt the tasks
    of missing repositories under `not_attempted`."""
    from swehero.distill.run import ATTEMPTS, SUMMARY, TRAJECTORIES
    from swehero.jsonio import exclusive
    from swehero.rollout.runner import BUSY, LOCK

    for shard in shard_dirs:  # its attempts record comes first: a shard started that has committed nothing yet
        if not any((Path(shard) / name).exists() for name in (SUMMARY, TRAJECTORIES, ATTEMPTS)):
            raise MissingInput(f"{shard}: not the output of a distill run (no {TRAJECTORIES}, {SUMMARY} or "
                               f"{ATTEMPTS})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the lock a distill run holds: two merges at once would each append the lines new to both, twice in all
    with exclusive(out_dir / LOCK, busy=f"{out_dir}: {BUSY}"):
        return _merge_locked(shard_dirs, out_dir)


def _merge_locked(shard_dirs: list[Path], out_dir: Path) -> dict:
    from swehero.distill.run import ATTEMPTS, SUMMARY, TRAJECTORIES, key, outstanding_failures
    from swehero.distill.summary import Figures
    from swehero.jsonio import JsonlLog, JsonlLogReader, read_json, write_json_atomic
    from swehero.rollout.runner import recorded_differences

    # read before anything is merged: a damaged one stops the merge with nothing appended
    summaries = {shard: _summary(Path(shard) / SUMMARY) for shard in shard_dirs if (Path(shard) / SUMMARY).exists()}
    unfinished = [str(shard) for shard in shard_dirs if shard not in summaries] + not_started(shard_dirs, out_dir)
    # one result holds attempts made one way: the shards' (and what `out_dir` already holds) must agree, and the
    # merged folder records it, so that a later run into it is checked against it too
    made = {str(d): read_json(Path(d) / ATTEMPTS, "the attempts record of a distill run")
            for d in [*shard_dirs, out_dir] if (Path(d) / ATTEMPTS).is_file()}
    if made:
        (first, identity), *others = made.items()
        for where, attempts in others:
            if changed := recorded_differences(identity, attempts):  # shards from before a key was recorded agree
                raise InputError(f"{where} holds attempts made otherwise than {first} ({'; '.join(changed)}): the "
                                 "shards of one result must share their settings")
        write_json_atomic(out_dir / ATTEMPTS, identity, indent=1)
    merged, figures, seen = JsonlLog(out_dir / TRAJECTORIES, key=key), Figures(), {}
    # Records stream through, as the shards together can be far larger than memory, each read once: what is merged
    # already (its keys, digests and figures), then the shards, which are checked before anything is appended, and
    # whose new lines are then copied as they were written.
    for _, line, record in episodes(merged.path):
        _first_of_its_key(seen, record, line, merged.path)
        figures.add(record)
    new, duplicates, merged_before = {}, 0, set(seen)
    for shard in shard_dirs:
        file = Path(shard) / TRAJECTORIES
        for number, line, record in episodes(file):
            if _first_of_its_key(seen, record, line, file):
                new.setdefault(file, set()).add(number)
                figures.add(record)
            elif key(record) not in merged_before:  # a merge again copies no line twice, and that is no duplicate
                duplicates += 1
    for file, numbers in new.items():  # a line committed by a running shard since is left for the next merge
        merged.append_lines(line for number, line in JsonlLogReader(file).lines() if number in numbers)
    # a shard's own count knows its plan (a failed task excluded since is not outstanding)
    failed = {str(shard): n for shard in shard_dirs if (n := summaries.get(shard, {}).get(
        "outstanding_failures", len(outstanding_failures(shard, seen.keys()))))}
    not_attempted = {str(shard): n for shard, s in summaries.items() if (n := s.get("not_attempted", 0))}
    missing = sorted({reason for s in summaries.values() for reason in s.get("missing_repositories", [])})
    summary = figures.summary(wall_s=max((s["wall_s"] for s in summaries.values()), default=0.0))
    summary.update(shards=[str(s) for s in shard_dirs], duplicates_skipped=duplicates, unfinished=unfinished,
                   outstanding_failures=sum(failed.values()), failed=failed, not_attempted=not_attempted,
                   missing_repositories=missing)
    figures.write(summary, out_dir / SUMMARY)
    return summary


def not_started(shard_dirs: list[Path], out_dir: Path) -> list[str]:
    """The shard folders of `out_dir`'s array job (`slurm_job`: `OUT/shard-i`, i < its shard count) that do not
    exist, when the shards merged are its: array tasks still pending, or that failed before they began."""
    import re

    script = out_dir / "distill.sbatch"
    ours = [Path(shard) for shard in shard_dirs if Path(shard).resolve().parent == out_dir.resolve()]
    found = re.search(r'--shard "\$SLURM_ARRAY_TASK_ID/(\d+)"', script.read_text()) if script.is_file() and ours \
        else None
    return [str(out_dir / f"shard-{i}") for i in range(int(found[1]) if found else 0)
            if not (out_dir / f"shard-{i}").exists()]


def _summary(file: Path) -> dict:
    """A shard's `summary.json`, with the figures the merge reads of it; one that is not is an `InputError` naming it."""
    from swehero.jsonio import read_json

    summary = read_json(file, "a distill run's summary")
    if not isinstance(summary.get("wall_s"), (int, float)) or \
            not isinstance(summary.get("outstanding_failures", 0), int) or \
            not isinstance(summary.get("not_attempted", 0), int) or \
            not isinstance(summary.get("missing_repositories", []), list):
        raise InputError(f"{file}: not a distill run's summary: it needs wall_s (seconds) and, if any, "
                         "outstanding_failures and not_attempted (counts) and missing_repositories (a list)")
    return summary
