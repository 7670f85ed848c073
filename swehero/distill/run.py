"""Distillation: the teacher agent K times on every task, W episodes at a time, into `trajectories.jsonl`.

The episodes run through the rollout runner (`swehero.rollout.runner`, the same path evaluation takes): one child
process per episode with a hard time limit, teacher endpoints with least-loaded dispatch and failover.

Output and resume: one canonical trajectory per line, appended, flushed and fsynced when its episode ends
(`swehero.jsonio.JsonlLog`, keyed by `(instance_id, rollout)`). A rerun after any interruption, `kill -9` included,
skips the committed pairs and redoes the rest: nothing twice, nothing lost. Episodes that failed for infrastructure
reasons (a crash) are logged to `failures.jsonl` and retried by the next run; the summary counts those not
committed since as `outstanding_failures`, and the run still succeeds, as an eval with infrastructure errors does.
When every teacher is down the run stops instead (`swehero.rollout.endpoints`).
"""

from __future__ import annotations

import contextlib
import string
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from swehero.agent.settings import AgentSettings
from swehero.recipe.stage import Range
from swehero.rollout.endpoints import rollout_server
from swehero.rollout.tasks import TaskSelection, TaskSource
from swehero.serve.server import ServeConfig

if TYPE_CHECKING:
    from swehero.distill.summary import Figures

TRAJECTORIES = "trajectories.jsonl"
FAILURES = "failures.jsonl"
SUMMARY = "summary.json"
ATTEMPTS = "attempts.json"
"""What decides how the run's episodes go (`rollout.runner.attempt_identity`): a resume must match it."""
DECONTAMINATION = "decontamination.json"


@dataclass(kw_only=True)
class Settings(TaskSelection):
    """One distillation run (the `distill` stage's settings; `swehero distill` fills the same fields): the training
    tasks (see `TaskSelection`), how many episodes of each, and how each is attempted."""

    rollouts: Annotated[int, Range(min=1)] = 1
    """Episodes per task (the paper: 3-5 for SWE-Zero, 1 for SWE-Hero)."""
    workers: int = 4
    """Episodes running at once."""
    endpoints: list[str] = field(default_factory=list)
    """Teacher endpoints (`http://host:port/v1`), least-loaded first, failing over when one dies; empty: the
    agent's `openai.base_url`, or a server started here for `serve.model`."""
    serve: ServeConfig = field(default_factory=rollout_server)
    """A checkpoint folder to serve with vLLM for the run when no endpoint is given (stopped at the end), by default
    with the agent's whole context."""
    exclude: list[TaskSource] = field(default_factory=list)
    """Evaluation sets (task files, or `verified`/`multilingual`) whose tasks are removed first (decontamination)."""
    agent: AgentSettings = field(default_factory=lambda: AgentSettings(mode="zero", time_limit_s=1800.0))
    """Mode (zero: SWE-Zero, exec: SWE-Hero), policy, runtime, per-episode limits and sampling."""
    progress: bool = True
    """Show a progress bar (rate, ETA, agent errors) on stderr."""
    seed: int | None = None
    """Sampling seed every episode's own seed is derived from (with the task and the rollout number); empty: no
    seed is sent (see the eval stage's `seed` for vLLM's CPU backend)."""
    repo_url: str = ""
    """Where each task repository comes from, e.g. `https://github.com/{repo}.git` or `/data/repos/{repo_dir}`
    ({repo} = owner/name, {repo_dir} = owner__name). When set, a bare mirror of each repository is cloned once
    into `repos` (default: `<out>/mirrors`) and every rollout checks out from it."""

    def cross_field_problems(self) -> list[tuple[str, str]]:
        """`TaskSelection`'s, and a `repo_url` that names no repository (one mirror cloned under every name) or
        holds another placeholder (a traceback once the run had started)."""
        problems = super().cross_field_problems()
        if self.repo_url:
            try:
                names = {name for _, name, _, _ in string.Formatter().parse(self.repo_url) if name is not None}
            except ValueError as e:  # a lone brace
                names = {f"({e})"}
            if not names or names - {"repo", "repo_dir"}:
                problems.append(("repo_url", f"needs {{repo}} (owner/name) or {{repo_dir}} (owner__name) and no "
                                             f"other placeholder, got {self.repo_url!r}"))
        return problems


def key(record: dict) -> tuple[str, int]:
    """What makes an episode unique in a run: its task and rollout number."""
    return record["instance_id"], record["metadata"]["rollout"]


def outstanding_failures(out_dir: Path, committed: set, planned: set | None = None) -> set[tuple[str, int]]:
    """The episodes in `failures.jsonl` not in `committed` (a later run did not make them since) and, where the
    run's plan is known, still `planned` (not excluded, deselected or beyond the rollouts since): what the output
    still lacks, and the next run retries."""
    from swehero.jsonio import JsonlLogReader

    failed = JsonlLogReader(Path(out_dir) / FAILURES, key=key).keys() - committed
    return failed if planned is None else failed & planned


def check_none_committed(dropped: list[dict], done: set, out_dir: Path) -> None:
    """Refuse a resume that excludes tasks an earlier run committed: their trajectories would stay in the training
    data while the decontamination report says they were dropped."""
    from swehero.errors import InputError, few

    leaked = sorted({task for task, _ in done} & {d["instance_id"] for d in dropped})
    if leaked:
        raise InputError(f"{out_dir / TRAJECTORIES}: {len(leaked)} task(s) with committed trajectories are now "
                         f"excluded ({few(leaked)}): distill into a fresh --out, or delete their lines from it first")


@dataclass
class Committed:
    """What a run's log holds, read once (`read_committed`): a resume at the paper's scale reads tens of GB."""

    done: set
    """The (task, rollout) pairs committed: what the run skips."""
    figures: Figures
    """The summary's figures over them, to which the run adds what it commits."""
    unplanned: set
    """Tasks with committed episodes this run does not plan (another task file, a narrower selection, fewer
    rollouts)."""
    changed: set
    """Tasks with committed episodes made from another row of the task file than today's, in what the agent saw."""


def read_committed(log: Iterable[dict], digests: dict[str, str], rollouts: int) -> Committed:
    """The committed episodes of a run that plans `rollouts` of each task in `digests` (their
    `attempted_task_digest`s, as each episode records it in `metadata`). An episode without a recorded digest (made
    before they were recorded) is taken as made from today's row."""
    from swehero.distill.summary import Figures

    committed = Committed(set(), Figures(), set(), set())
    for record in log:
        task, rollout = key(record)
        committed.done.add((task, rollout))
        committed.figures.add(record)
        made_from = record["metadata"].get("task_digest")
        if task not in digests or rollout >= rollouts:
            committed.unplanned.add(task)
        elif made_from is not None and made_from != digests[task]:
            committed.changed.add(task)
    return committed


def check_made_as_planned(committed: Committed, source: str, out_dir: Path) -> None:
    """Refuse a resume into a folder holding committed episodes this run would not make: of tasks it does not plan,
    or of tasks whose row in the task file changed since in what the agent saw (an edited test list is the filter's
    to regrade). Their trajectories would stay in the training data, counted in this run's summary."""
    from swehero.errors import InputError, few

    where = out_dir / TRAJECTORIES
    if committed.unplanned:
        raise InputError(f"{where}: committed episodes of {len(committed.unplanned)} task(s) are not in this run's "
                         f"plan ({few(sorted(committed.unplanned))}; its tasks come from {source}): rerun with the "
                         "task file, selection and --rollouts they were made with, or distill into another --out")
    if committed.changed:
        raise InputError(f"{where}: {len(committed.changed)} task(s) with committed trajectories have another row in "
                         f"{source} than they were made from ({few(sorted(committed.changed))}): rerun with the task "
                         "file they were made from, or distill into another --out")


def distill(settings: Settings, out_dir: Path) -> dict:
    """Run every (task, rollout) not yet in `out_dir/trajectories.jsonl`; write `summary.json`; return it."""
    from swehero.distill.shards import episodes
    from swehero.rollout.decontam import decontaminate_against
    from swehero.gitdiff import patch_files
    from swehero.jsonio import JsonlLog, exclusive, read_json, write_json_atomic
    from swehero.rollout.endpoints import serving
    from swehero.rollout.runner import (BUSY, LOCK, Job, attempt_identity, attempted_task_digest, check_resumable,
                                        run_attempts, sampling_seed)
    from swehero.rollout.tasks import load_selection, parse_shard

    start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir / LOCK, busy=f"{out_dir}: {BUSY}"):
        selected = load_selection(settings, out_dir)
        tasks, repos = selected.tasks, selected.repos
        log, failures = JsonlLog(out_dir / TRAJECTORIES, key=key), JsonlLog(out_dir / FAILURES, key=key)
        report = None
        if settings.exclude:
            tasks, report = decontaminate_against(tasks, settings.exclude)
        digests = {task["instance_id"]: attempted_task_digest(task) for task in tasks}
        # checked as a merge checks them: a folder another command wrote (an import's) is named, not a KeyError
        committed = read_committed((record for *_, record in episodes(log.path)), digests, settings.rollouts)
        done = committed.done
        if report is not None:
            check_none_committed(report["dropped_tasks"], done, out_dir)
        check_made_as_planned(committed, selected.source, out_dir)
        if report is not None:
            write_json_atomic(out_dir / DECONTAMINATION, report)
        else:  # an earlier run's report no longer holds: the tasks it dropped are run now
            (out_dir / DECONTAMINATION).unlink(missing_ok=True)
        attempts, recorded = attempt_identity(settings.agent, settings.serve, seed=settings.seed), out_dir / ATTEMPTS
        check_resumable(out_dir, read_json(recorded, "the attempts record of a distill run")
                        if done and recorded.is_file() else None, attempts)
        write_json_atomic(recorded, attempts, indent=1)
        planned = {(t["instance_id"], k) for t in tasks for k in range(settings.rollouts)}
        todo = [Job(t, k, None if settings.seed is None else sampling_seed(settings.seed, t["instance_id"], k))
                for t in tasks for k in range(settings.rollouts) if (t["instance_id"], k) not in done]
        unmirrored: dict[str, str] = {}  # why a repository has no mirror: the reason its tasks are not attempted
        if settings.repo_url:
            from swehero.distill.mirrors import MIRRORED, base_commits, ensure_mirrors

            repos = Path(settings.repos) if settings.repos else out_dir / "mirrors"
            outcomes = ensure_mirrors(base_commits(job.task for job in todo), settings.repo_url, repos)
            unmirrored = {repo: outcome for repo, outcome in outcomes.items() if outcome not in MIRRORED}

        def commit(job: Job, record: dict) -> None:
            meta = record["metadata"]
            if meta["finish_reason"] == "agent_error":  # the infrastructure's failure: retried by the next run
                failures.append({"instance_id": job.task["instance_id"], "metadata": {"rollout": job.index},
                                 "error": meta.get("error", "")[-2000:]})
                return
            meta.update(rollout=job.index, test_files=patch_files(job.task.get("test_patch") or ""),
                        task_digest=digests[job.task["instance_id"]])
            log.append(record)
            done.add(key(record))  # the summary's outstanding failures, without reading the log again
            committed.figures.add(record)

        if todo:  # until the new summary, a run under way: a merge meanwhile lists the folder as unfinished
            (out_dir / SUMMARY).unlink(missing_ok=True)
        # no server is started for a run with nothing left to do
        endpoints = serving(settings.agent, settings.endpoints, settings.serve, out_dir) if todo else \
            contextlib.nullcontext((settings.agent, []))
        with endpoints as (agent, urls):
            # shard i's workers take up where shard i-1's left off in the endpoint list
            first = parse_shard(settings.shard)[0] * max(settings.workers, 1) if settings.shard else 0
            ran = run_attempts(todo, agent, commit, out_dir / "work", repos, urls, settings.workers,
                               bar=settings.progress, first_endpoint=first)
        # why: a repository's own failure to mirror, else what the runner found (no repository, no base commit)
        missing = [reason for repo, reasons in ran["missing_repositories"].items()
                   for reason in ([unmirrored[repo]] if repo in unmirrored else reasons)]
        summary = committed.figures.summary(wall_s=time.monotonic() - start)
        summary.update(planned=len(tasks) * settings.rollouts,
                       skipped_as_done=len(tasks) * settings.rollouts - len(todo),
                       failed_this_run=ran["agent_errors"],
                       outstanding_failures=len(outstanding_failures(out_dir, done, planned)),
                       # no repository: in neither file, so a merge would not know them outstanding but for this
                       not_attempted=ran["not_attempted"],
                       missing_repositories=missing,
                       endpoints=ran["endpoints"])
        committed.figures.write(summary, out_dir / SUMMARY)
        if missing:  # the others are done and committed; a rerun with them in place does these
            from swehero.agent.local import MissingRepository

            raise MissingRepository.of(missing)
        return summary
