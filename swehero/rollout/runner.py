"""Many attempts, W at a time, each committed the moment it ends: the one runner of evaluation and distillation.

Concurrency: W threads, each running one attempt at a time in a child process (attempt.py). The work itself
happens in other processes (the model server, the sandbox or container), so threads only wait; the child process
gives every attempt a hard time limit and confines a crash to that attempt.

Endpoints: with several model servers, each attempt borrows the live one with the fewest attempts in flight; an
attempt that ends in an `agent_error` makes the pool probe its server, and one that does not answer is dropped and
the attempt retried on another (endpoints.py). An attempt that failed for its server (`_failed_for`) is counted
against it (the pool benches one that keeps failing) and made once more on another live one before it is recorded.
An openai attempt whose time limit came before the model's first reply is such a failure too (`_unanswered`): no
outcome of the model's, so it is recorded as an `agent_error` (a failure distillation retries, an evaluation's
`infra_error`), not as the model's `time_limit`, kept for good.

Resume: what is committed is the caller's business (`commit` appends to an append-only log, see
`swehero.jsonio.JsonlLog`); the caller passes only the jobs its log does not hold yet, so a rerun after any
interruption, `kill -9` included, redoes exactly the missing attempts.

Stopping: a first Ctrl-C starts no new attempt and lets the running ones finish and commit; a second Ctrl-C, or
SIGTERM (which the command line turns into an exception, see `swehero.cli`), ends them within seconds and commits
none of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from swehero.agent.local import MissingRepository, check_repository
from swehero.agent.prompts import digest
from swehero.agent.run import task_image
from swehero.agent.settings import AgentSettings
from swehero.agent.task import Task
from swehero.errors import InputError
from swehero.jsonio import differences
from swehero.model.folder import folder_fingerprint, is_hf_folder, side_files_fingerprint
from swehero.rollout.attempt import attempt_in_child
from swehero.rollout.endpoints import Endpoint, EndpointPool, EndpointRefusesRequests
from swehero.rollout.tasks import repo_dir, task_digest
from swehero.serve.server import ServeConfig


@dataclass(frozen=True)
class Job:
    """One attempt to make: a task, and which of its attempts this is (rollout or run number)."""

    task: dict
    index: int = 0
    seed: int | None = None
    """Sampling seed (a retry derives its own from it); None: the server's choice."""

    @property
    def name(self) -> str:
        return f"{self.task['instance_id']}.{self.index}"


LOCK = ".lock"
"""Held by the run writing into a folder (`jsonio.exclusive`): its logs are appended to by one run at a time."""
BUSY = ("another run is writing into this folder (a Slurm requeue while the first still runs?): wait for it to end, "
        "or write elsewhere")


WEIGHTS = "serve_weights_sampled"
"""The identity's key for the served folder's `folder_fingerprint`: its path alone does not tell a model retrained
or exported again into it. (Records of older versions hold `serve_weights`, a fingerprint of the files' times, which
a copy of the same model did not keep: not compared.)"""


TOKENIZER = "serve_tokenizer_and_template"
"""The identity's key for the served folder's `side_files_fingerprint`: the tokenizer and chat template vLLM
renders prompts with (records of older versions lack it: not compared)."""


NOT_DECISIVE = ("openai.base_url", "openai.api_key_env", "openai.replica", "openai.request_timeout",
                "openai.request_retries", "openai.backoff", "docker.min_free_gb", "docker.prune_image", "env.cache",
                "env.retry_failed")
"""Agent settings that say where an attempt's server, environments and images are, and how hard a request is tried,
not how the attempt goes: neither recorded nor compared (older records hold them), so a run resumes with them
changed (images pruned once the disk filled, environments on a bigger disk, more retries) and shards made on
nodes with other caches merge."""


HOW_ATTEMPTS_RUN = ("workers", "endpoints", "serve.tensor_parallel_size", "serve.data_parallel_size",
                    "serve.gpu_memory_utilization", "serve.host", "serve.port", "serve.compile",
                    "serve.startup_timeout_s", *(f"agent.{setting}" for setting in NOT_DECISIVE))
"""Settings of a rollout stage (eval, distill) that say how its attempts are run, not what they are: the stage
kinds' `NOT_IN_RESULT`, so that changed alone, a complete stage stays complete and an interrupted one resumes. Fewer
workers, or a lower gpu_memory_utilization after running out of memory, emptied the stage's folder: thousands of
finished attempts. Other endpoints resume as `eval run` and `distill run` resume with them."""


def _decisive(agent: dict) -> dict:
    """The agent settings of an identity without `NOT_DECISIVE`."""
    kept = {section: dict(value) if isinstance(value, dict) else value for section, value in agent.items()}
    for setting in NOT_DECISIVE:
        section, name = setting.split(".")
        kept.get(section, {}).pop(name, None)
    return kept


def attempt_identity(agent: AgentSettings, serve: ServeConfig, **more) -> dict:
    """What decides how an attempt goes, recorded beside a run's attempts: the agent's settings (less
    `NOT_DECISIVE`), the served checkpoint (a local folder also by its weights) and its context length, and `more`
    (seeds, retries, ...)."""
    settings = _decisive(asdict(agent))
    if agent.prompts:  # what the model reads, not where the file lies
        settings["prompts"] = digest(agent.prompts)
    weights = {WEIGHTS: folder_fingerprint(serve.model), TOKENIZER: side_files_fingerprint(serve.model)} \
        if serve.model and is_hf_folder(serve.model) else {}
    return {"agent": settings, "serve_model": serve.model, **weights, "max_model_len": serve.max_model_len, **more}


def recorded_differences(before: dict, now: dict) -> list[str]:
    """`differences` of the keys both records hold: a key added since an older run wrote one was not recorded
    there, and a key one cannot take now (the weights of a model that is no local folder here) is not known: neither
    is a difference."""
    shared = before.keys() & now.keys()
    before, now = ({key: _decisive(r[key]) if key == "agent" else r[key] for key in shared} for r in (before, now))
    return differences(before, now)


def check_resumable(out_dir: Path, before: dict | None, now: dict) -> None:
    """`out_dir` holds attempts made as `before` says (None: none, or not recorded): resuming it as `now` says
    would mix two ways of attempting in one result, so any difference is an InputError naming each."""
    if before is None:
        return
    if before.get("serve_model") != now.get("serve_model"):  # another checkpoint: its path says so, not its files
        before = {key: value for key, value in before.items() if key not in (WEIGHTS, TOKENIZER)}
    said = {WEIGHTS: "the weights", TOKENIZER: "the tokenizer or chat template"}
    changed = [next((f"{what} in {now['serve_model']} changed since these attempts were made"
                     for key, what in said.items() if d.startswith(f"{key}:")), d)
               for d in recorded_differences(before, now)]
    if changed:
        raise InputError(f"{out_dir} holds attempts made with other settings ({'; '.join(changed)}): write into "
                         "another folder, or rerun with the same settings to resume")


def attempted_task_digest(task: dict) -> str:
    """A digest of what an attempt is made from of a task row: the agent's view of it (`Task`), less the test patch,
    which only grading reads. An edit of anything else (problem statement, base commit, gold patch) changes what
    the agent saw, so attempts made before it are of another task."""
    seen = asdict(Task.from_row(task))
    del seen["test_patch"]
    return task_digest(seen)


def sampling_seed(*parts) -> int:
    """A seed fixed by `parts` (e.g. the recipe's seed, the instance, the run), the same on every machine."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def run_attempts(jobs: list[Job], settings: AgentSettings, commit: Callable[[Job, dict], None], work_dir: Path,
                 repos: Path | None = None, endpoints: list[str | Endpoint] = (), workers: int = 1,
                 progress: Callable[[str], None] | None = None, bar: bool = False, max_attempts: int = 1,
                 first_endpoint: int = 0) -> dict:
    """Attempt every job, `workers` at a time, calling `commit(job, record)` as each ends; returns
    {"attempts", "agent_errors", "endpoints", "not_attempted", "missing_repositories"}. `repos` holds the task
    repositories (local runtime); a job whose repository is missing, or lacks its base commit, is not attempted
    (counted), and why is in "missing_repositories" ({repo: [reasons]}). An attempt
    that ends without a patch is made again, up to `max_attempts` times (OpenHands' benchmark protocol); the last
    one is committed, with `metadata.attempts` saying how many were made. `first_endpoint`: where this process's
    ties start in `endpoints` (`EndpointPool`)."""
    pool = EndpointPool(list(endpoints), first_endpoint) if endpoints else None
    counts, lock, missing = {"attempts": 0, "agent_errors": 0, "not_attempted": 0}, threading.Lock(), {}
    stop = threading.Event()
    # The local runtime copies a task's git history before its first attempt; the task's other attempts (3-5
    # rollouts, runs) clone that copy, and it goes when the last of them has ended. Callers list a task's jobs
    # together, so about `workers` copies exist at a time.
    histories = Path(work_dir) / "history"
    history_users = _Users(job.task["instance_id"] for job in jobs)
    # Likewise an image docker.prune_image removes: after an attempt it would be gone for the task's other attempts
    # (the running ones fail, the later ones cannot start), so it goes after the last attempt that runs in it.
    prune = settings.runtime == "docker" and settings.docker.prune_image
    if prune:
        settings = replace(settings, docker=replace(settings.docker, prune_image=False))
    image_users = _Users(_image(job, settings) for job in jobs) if prune else None
    with _bar(len(jobs), bar) as tqdm_bar:
        say = tqdm_bar.write if tqdm_bar is not None and progress is not None else progress

        def one(job: Job) -> None:
            try:
                attempt_job(job)
            finally:
                if history_users.done(job.task["instance_id"]):
                    shutil.rmtree(histories / job.task["instance_id"], ignore_errors=True)
                if image_users is not None and image_users.done(image := _image(job, settings)):
                    _remove_image(image)

        def attempt_job(job: Job) -> None:
            source = repo_dir(repos, job.task["repo"]) if repos and settings.runtime == "local" else None
            if source is not None:
                try:
                    check_repository(source, job.task["repo"], job.task.get("base_commit", ""))
                except MissingRepository as e:  # not the attempt's fault: nothing committed, the caller says so
                    with lock:
                        missing.setdefault(job.task["repo"], set()).add(str(e))
                        counts["not_attempted"] += 1
                    return
            for attempt in range(1, max_attempts + 1):
                seed = job.seed if attempt == 1 or job.seed is None else sampling_seed(job.seed, attempt)
                with_seed = settings if seed is None else replace(settings, openai=replace(settings.openai, seed=seed))
                record = _attempt(job, with_seed, source, Path(work_dir) / job.name, pool, stop,
                                  histories / job.task["instance_id"])
                if record is None:  # interrupted: nothing is committed, and a rerun makes the attempt again
                    return
                if record["patch"].strip():
                    break
            record["metadata"].update(attempts=attempt, seed=seed)
            commit(job, record)
            shutil.rmtree(Path(work_dir) / job.name, ignore_errors=True)
            meta = record["metadata"]
            with lock:
                counts["attempts"] += 1
                counts["agent_errors"] += meta["finish_reason"] == "agent_error"
                if say is not None:
                    error = f" — {meta['error'][:200]}" if meta.get("error") else ""
                    say(f"  {job.name}: {meta['finish_reason']}, {meta['steps']} steps, {len(record['patch'])} "
                        f"patch chars, {meta['seconds']:.1f}s{error}")
                if tqdm_bar is not None:
                    tqdm_bar.set_postfix(agent_errors=counts["agent_errors"], refresh=False)
                    tqdm_bar.update(1)

        width, running = max(workers, 1), set()

        def settle(at_most: int) -> None:
            """Wait until at most `at_most` attempts run, raising what one that ended raised."""
            nonlocal running
            while len(running) > at_most:
                ended, running = wait(running, return_when=FIRST_COMPLETED)
                for future in ended:
                    future.result()

        with ThreadPoolExecutor(max_workers=width) as executor:
            try:  # submitted as attempts end: 750k submitted at once (150k tasks x 5) held 1.1 GB of futures
                for job in jobs:
                    settle(width - 1)
                    running.add(executor.submit(one, job))
                settle(0)
            except KeyboardInterrupt:
                executor.shutdown(wait=False, cancel_futures=True)
                _drain(running, stop, say or _to_stderr)
                raise
            except BaseException:  # SIGTERM (see swehero.cli) or an error: the running attempts end now, uncommitted
                stop.set()
                executor.shutdown(wait=False, cancel_futures=True)
                raise
    shutil.rmtree(work_dir, ignore_errors=True)
    return {**counts, "endpoints": pool.report() if pool else [],
            "missing_repositories": {repo: sorted(reasons) for repo, reasons in sorted(missing.items())}}


class _Users:
    """How many jobs still use each thing (a task's copy of its history, an image): the last to end removes it."""

    def __init__(self, keys) -> None:
        self.left, self.lock = Counter(keys), threading.Lock()

    def done(self, key: str) -> bool:
        """One job using `key` has ended; True when it was the last."""
        with self.lock:
            self.left[key] -= 1
            return not self.left[key]


def _image(job: Job, settings: AgentSettings) -> str:
    return task_image(Task.from_row(job.task), settings)


def _remove_image(image: str) -> None:
    from swehero.agent.container import remove_image

    remove_image(image)


def _drain(futures: set[Future], stop: threading.Event, say: Callable[[str], None]) -> None:
    """After a first Ctrl-C no attempt starts, and the running ones finish and commit; a second Ctrl-C ends them."""
    running = [f for f in futures if not f.cancelled()]  # a cancelled future never counts as done for `wait`
    say(f"stopping: no new attempts; the {sum(f.running() for f in running)} running will finish and commit "
        "(Ctrl-C again ends them now)")
    try:
        wait(running)
    except BaseException:
        stop.set()
        raise


def _to_stderr(message: str) -> None:
    """Said even without progress output: a run that does not end at Ctrl-C must say why."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)  # above the progress bar, if there is one


def _attempt(job: Job, settings: AgentSettings, source: Path | None, workdir: Path, pool: EndpointPool | None,
             stop: threading.Event, history: Path) -> dict | None:
    def attempt(settings: AgentSettings) -> dict | None:
        record = attempt_in_child(job.task, settings, source, workdir, stop, history)
        return _accepted(_unanswered(record, settings))

    if pool is None:
        return attempt(settings)
    failed_on = None  # the endpoint the attempt failed for, once: its retry goes to another
    while True:  # each pass but that retry marks an endpoint dead: once all are, `borrow` raises NoLiveEndpoint
        with pool.borrow(instead_of=failed_on) as endpoint:
            to = replace(settings.openai, base_url=endpoint.url, replica=endpoint.replica)
            record = attempt(replace(settings, openai=to))
        if record is None:
            return None
        failed = _failed_for(record)
        pool.ended(endpoint, failed)
        if record["metadata"]["finish_reason"] == "agent_error" and not pool.check(endpoint):
            continue  # dead: another takes the attempt
        if not failed or failed_on is not None or not pool.others_live(endpoint):
            return record
        failed_on = endpoint


def _unanswered(record: dict | None, settings: AgentSettings) -> dict | None:
    """`record`, or, when the openai policy's time limit came before the model's first reply (a server that takes
    requests and never answers), an `agent_error` naming the server: the infrastructure's failure, not the model's
    outcome."""
    if record is None or settings.policy != "openai":
        return record
    meta = record["metadata"]
    # an episode's record (its opening messages, no step); not the record without messages of an attempt killed
    # after its grace period, which says nothing of the server
    if meta["finish_reason"] == "time_limit" and not meta["steps"] and record["messages"]:
        meta.update(finish_reason="agent_error", error_in="policy",
                    error=f"{settings.openai.base_url}: no reply before the time limit of {settings.time_limit_s:g}s")
    return record


def _failed_for(record: dict) -> bool:
    """Whether the attempt failed for its endpoint: an `agent_error` of the policy, which talks to it
    (`metadata.error_in`, set by the agent's loop, and by `_unanswered` for a server that did not reply), not of
    the runtime."""
    meta = record["metadata"]
    return meta["finish_reason"] == "agent_error" and meta.get("error_in") == "policy"


def _accepted(record: dict | None) -> dict | None:
    """`record`, unless its endpoint refused its requests themselves: then the run stops, committing nothing."""
    if record is not None and record["metadata"].get("endpoint_refused"):
        raise EndpointRefusesRequests(f"{record['metadata']['error']}: every attempt's requests would be refused "
                                      "alike; the attempts committed are kept, and the same command, its settings "
                                      "mended, resumes with the rest")
    return record


@contextlib.contextmanager
def _bar(total: int, enabled: bool):
    if not enabled:
        yield None
        return
    from swehero.progress import progress

    with progress("attempts", "attempt", total, smoothing=0.1) as bar:
        yield bar
