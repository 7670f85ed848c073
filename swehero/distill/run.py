"""Distillation: run the teacher agent K times on every task, W episodes at a time, into `trajectories.jsonl`.

Concurrency: W threads, each running one episode at a time in a child process (`swehero.eval.inference.
attempt_in_child`, the same path eval takes). The work itself happens in other processes (the teacher server, the
sandbox), so threads only wait; the child process gives every episode a hard time limit and confines a crash of
the runtime or the policy to that episode.

Output and resume: one canonical trajectory per line, appended, flushed and fsynced when its episode ends
(`swehero.jsonio.JsonlLog`, keyed by `(instance_id, rollout)`). A rerun after any interruption, `kill -9`
included, skips the committed pairs and redoes the rest: nothing twice, nothing lost. Episodes that failed for
infrastructure reasons (crash, every teacher down) are logged to `failures.jsonl` and retried by the next run.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from swehero.eval.episode import AgentSettings, Episode
from swehero.recipe.stage import InputPath
from swehero.serve.server import ServeConfig

TRAJECTORIES = "trajectories.jsonl"
FAILURES = "failures.jsonl"
SUMMARY = "summary.json"
DECONTAMINATION = "decontamination.json"


@dataclass
class Settings:
    """One distillation run (the `distill` stage's settings; `swehero distill` fills the same fields)."""

    tasks: InputPath
    """SWE-bench-shaped tasks (.jsonl/.json/.parquet; SWE-Gym, SWE-rebench, R2E-Gym rows map onto it)."""
    rollouts: int = 1
    """Episodes per task (the paper: 3-5 for SWE-Zero, 1 for SWE-Hero)."""
    workers: int = 4
    """Episodes running at once."""
    teachers: list[str] = field(default_factory=list)
    """Teacher endpoints (`http://host:port/v1`), least-loaded first, failing over when one dies; empty: the
    agent's `base_url`, or a server started here for `serve.model`."""
    serve: ServeConfig = field(default_factory=lambda: ServeConfig(model=""))
    """A checkpoint folder to serve with vLLM for the run when no endpoint is given (stopped at the end)."""
    shard: str = ""
    """`i/n`: only every n-th task from the i-th (all rollouts of a task stay in one shard)."""
    limit: int = 0
    """Only the first `limit` tasks of the shard (0: all)."""
    exclude: list[str] = field(default_factory=list)
    """Evaluation sets (task files, or `verified`/`multilingual`) whose tasks are removed first (decontamination)."""
    agent: AgentSettings = field(default_factory=lambda: AgentSettings(mode="zero", time_limit_s=1800.0))
    """Mode (zero: SWE-Zero, exec: SWE-Hero), policy, runtime, per-episode limits and sampling."""
    progress: bool = True
    """Show a progress bar (rate, ETA, kept/failed, tokens) on stderr."""
    repo_url: str = ""
    """Where each task repository comes from, e.g. `https://github.com/{repo}.git` or `/data/repos/{repo_dir}`
    ({repo} = owner/name, {repo_dir} = owner__name). When set, a bare mirror of each repository is cloned once
    into `agent.repos` (default: `<out>/mirrors`) and every rollout checks out from it."""


def key(record: dict) -> tuple[str, int]:
    """What makes an episode unique in a run: its task and rollout number."""
    return record["instance_id"], record["metadata"]["rollout"]


def distill(settings: Settings, out_dir: Path) -> dict:
    """Run every (task, rollout) not yet in `out_dir/trajectories.jsonl`; write `summary.json`; return it."""
    from swehero.distill.decontam import decontaminate_against
    from swehero.jsonio import JsonlLog
    from swehero.rollout.tasks import load_tasks, select
    from swehero.jsonio import write_json_atomic

    start = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = select(load_tasks(settings.tasks), shard=settings.shard, limit=settings.limit)
    if settings.exclude:
        tasks, report = decontaminate_against(tasks, settings.exclude)
        write_json_atomic(out_dir / DECONTAMINATION, report)
    log = JsonlLog(out_dir / TRAJECTORIES, key=key)
    done = log.records()
    todo = [(t, k) for t in tasks for k in range(settings.rollouts) if (t["instance_id"], k) not in done]
    agent = settings.agent
    if settings.repo_url:
        from swehero.distill.mirrors import ensure_mirrors

        agent = replace(agent, repos=agent.repos or str(out_dir / "mirrors"))
        ensure_mirrors({t["repo"] for t, _ in todo}, settings.repo_url, Path(agent.repos))
    elif not agent.repos and Path(settings.tasks).is_file():
        agent = replace(agent, repos=str(Path(settings.tasks).parent / "repos"))
    with teacher_urls(settings, out_dir) if todo else contextlib.nullcontext([]) as urls:
        runner = _Runner(agent, urls, log, JsonlLog(out_dir / FAILURES, key=key), out_dir / "work")
        with _progress(len(todo), settings.progress) as bar:
            runner.bar = bar
            with ThreadPoolExecutor(max_workers=max(settings.workers, 1)) as pool:
                futures = [pool.submit(runner.run, task, k) for task, k in todo]
                try:
                    for future in futures:
                        future.result()
                except BaseException:  # Ctrl-C: start nothing new; running episodes finish and are committed
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    shutil.rmtree(out_dir / "work", ignore_errors=True)
    from swehero.distill.summary import summarize

    summary = summarize(list(log.records().values()), wall_s=time.monotonic() - start)
    summary.update(planned=len(tasks) * settings.rollouts, skipped_as_done=len(done), failed_this_run=runner.failed,
                   endpoints=runner.pool.report() if runner.pool else [])
    write_json_atomic(out_dir / SUMMARY, summary)
    return summary


@contextlib.contextmanager
def teacher_urls(settings: Settings, out_dir: Path):
    """The endpoints to use: the listed ones, the agent's `base_url`, or a vLLM server started for `serve.model`."""
    if settings.agent.policy != "openai":
        yield []
    elif settings.teachers or settings.agent.base_url:
        yield list(settings.teachers) or [settings.agent.base_url]
    elif not settings.serve.model:
        raise ValueError("the openai policy needs teacher endpoints (teachers / --teacher) or a checkpoint to "
                         "serve (serve.model / --serve-model)")
    else:
        from swehero.serve.server import VLLMServer

        with VLLMServer(settings.serve, out_dir / "vllm.log") as server:
            yield [server.url]


class _Runner:
    """Runs one (task, rollout) and commits it; shared by the worker threads."""

    def __init__(self, agent: AgentSettings, urls: list[str], log, failures, work: Path) -> None:
        from swehero.rollout.endpoints import EndpointPool

        self.agent, self.log, self.failures, self.work = agent, log, failures, work
        self.pool = EndpointPool(urls) if urls else None
        self.kept = self.failed = self.tokens = 0
        self.bar = None

    def run(self, task: dict, k: int) -> None:
        from swehero.distill.filters import patch_files
        from swehero.distill.summary import tokens_of

        episode = self._attempt(task, k)
        if episode.finish_reason == "agent_error":
            self.failures.append({"instance_id": task["instance_id"], "metadata": {"rollout": k},
                                  "error": episode.error[-2000:]})
            self.failed += 1
        else:
            record = episode.trajectory
            record["metadata"].update(rollout=k, finish_reason=episode.finish_reason, seconds=episode.seconds,
                                      test_files=patch_files(task.get("test_patch") or ""))
            self.log.append(record)
            self.kept += 1
            self.tokens += tokens_of(record)
        if self.bar is not None:
            self.bar.set_postfix(kept=self.kept, failed=self.failed, tokens=f"{self.tokens:,}", refresh=False)
            self.bar.update(1)

    def _attempt(self, task: dict, k: int) -> Episode:
        from swehero.rollout.endpoints import NoLiveEndpoint
        from swehero.eval.inference import attempt_in_child
        from swehero.rollout.toy import repo_dir

        source = repo_dir(Path(self.agent.repos), task["repo"]) if self.agent.runtime == "local" else None
        workdir = self.work / f"{task['instance_id']}.{k}"
        if self.pool is None:
            return attempt_in_child(task, self.agent, source, workdir)
        episode = Episode(task["instance_id"], error="no teacher endpoint tried")
        for _ in self.pool.endpoints:  # each failover moves to another endpoint, so this many tries suffice
            try:
                with self.pool.borrow() as endpoint:
                    episode = attempt_in_child(task, replace(self.agent, base_url=endpoint.url), source, workdir)
            except NoLiveEndpoint as e:
                return Episode(task["instance_id"], error=str(e))
            if episode.finish_reason != "agent_error" or self.pool.check(endpoint):
                break
        return episode


@contextlib.contextmanager
def _progress(total: int, enabled: bool):
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc="distill", unit="ep", dynamic_ncols=True, smoothing=0.1) as bar:
        yield bar
