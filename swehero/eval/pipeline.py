"""An eval from task selection to report: inference, then grading, then report. Each step resumes its own files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

from swehero.agent.settings import AgentSettings
from swehero.errors import InputError, MissingInput, Unavailable, few
from swehero.eval.grade import GradingSettings
from swehero.eval.select import VerifierSettings, check_verifier
from swehero.recipe.stage import InputPath, Range
from swehero.rollout.endpoints import rollout_server
from swehero.rollout.tasks import TaskSelection
from swehero.serve.server import ServeConfig


@dataclass(kw_only=True)
class Settings(TaskSelection):
    """Stage kind `eval` (and `swehero eval run`): the tasks (see `TaskSelection`), how they are attempted, graded
    and reported."""

    serve: ServeConfig = field(default_factory=rollout_server)
    """The checkpoint (Hugging Face folder) to serve with vLLM for the run, when no endpoint is given; by default
    with the agent's whole context (the paper's 128k: the checkpoint needs YaRN for it, as the recipes' exports
    have)."""
    endpoints: list[str] = field(default_factory=list)
    """Already running OpenAI-compatible endpoints (`http://host:port/v1`), least-loaded first with failover;
    empty: `agent.openai.base_url`, else the server started for `serve`."""
    model_name: str = ""
    """`model_name_or_path` written to the predictions; empty: the served checkpoint's path, the endpoint's model,
    or the policy name. Also how the paper's figure is found (e.g. `swe-hero-32b`)."""
    workers: Annotated[int, Range(min=1)] = 1
    """Instances attempted concurrently."""
    runs: Annotated[int, Range(min=1)] = 1
    """Independent attempts per instance, each run with its own sampling seeds and folder (`run-k`); the report
    adds mean, standard deviation and pass@k over the runs. The paper reports one run (pass@1)."""
    max_attempts: Annotated[int, Range(min=1)] = 1
    """Attempts per instance and run when an attempt ends without a patch (OpenHands' benchmark default retries);
    more than 1 raises pass@1 above the paper's one-attempt protocol, and the report says so."""
    seed: int | None = None
    """Sampling seed every attempt's own seed is derived from (with the instance and the run), so a rerun samples
    the same way; empty: no seed is sent and the server samples afresh (the paper's protocol). vLLM 0.32's CPU
    backend crashes on per-request seeds (`CPU Generator does not use offset`): leave it empty there."""
    price_prompt_per_mtok: Annotated[float, Range(min=0)] = 0.0
    """$ per million prompt tokens, for the report's cost column (0: no cost)."""
    price_completion_per_mtok: Annotated[float, Range(min=0)] = 0.0
    """$ per million completion tokens."""
    agent: AgentSettings = field(default_factory=AgentSettings)
    """How each instance is attempted (the paper's evaluation: exec mode, 100 turns, 128k, T 0.7 / 0.8 / 20)."""
    grading: GradingSettings = field(default_factory=GradingSettings)
    heldout_trajectories: list[InputPath] = field(default_factory=list)
    """Canonical trajectories (.jsonl) of tasks the checkpoint was not trained on: the report adds the served
    checkpoint's teacher-forced accuracy on their assistant tokens (needs `serve`)."""
    verifier: VerifierSettings = field(default_factory=VerifierSettings)
    """A trained verifier that selects one attempt per instance among the runs (`select.md`: best@k beside pass@k
    and the majority patch); empty `verifier.serve.model` and `verifier.endpoint`: no selection."""


def model_label(settings: Settings) -> str:
    """`model_name_or_path` of the predictions: the name given, the served checkpoint, the agent's model, else the
    model the endpoints serve (the first one answering lists it first in `/models`, as each attempt's policy finds
    it), else the policy."""
    named = settings.model_name or settings.serve.model or settings.agent.openai.model
    urls = [url for url in settings.endpoints or [settings.agent.openai.base_url] if url]
    if named or settings.agent.policy != "openai" or not urls:
        return named or settings.agent.policy
    from swehero.agent.openai_policy import OpenAIPolicy
    from swehero.agent.policy import PolicyError

    errors = []
    for url in urls:
        try:  # as briefly as `alive` probes an endpoint: a server that hangs should not hold the run for hours
            return OpenAIPolicy(replace(settings.agent.openai, base_url=url, request_timeout=10.0,
                                        request_retries=2)).model
        except PolicyError as e:
            errors.append(str(e))
    raise Unavailable(f"no model endpoint says which model it serves ({'; '.join(errors)}): start one, or name "
                      "the model (--model-name)")


def saved_settings(out_dir: Path) -> dict:
    """What an earlier run into `out_dir` saved (`eval.json`); {} for a new folder."""
    from swehero.eval.runs import EVAL_FILE
    from swehero.jsonio import read_json

    return read_json(out_dir / EVAL_FILE, "an eval folder's settings") if (out_dir / EVAL_FILE).is_file() else {}


def save_settings(out_dir: Path, saved: dict) -> None:
    """Write `eval.json` whole (`eval compare` may read it meanwhile)."""
    from swehero.eval.runs import EVAL_FILE
    from swehero.jsonio import write_json_atomic

    write_json_atomic(Path(out_dir) / EVAL_FILE, saved, indent=1)


def saved_grading(settings: GradingSettings, harness: str, before: dict) -> dict:
    """`eval.json`'s `grading`, how the folder's predictions are graded (`grading_record`; `harness`: the harness's
    dataset): this grading's, or where it grades nothing (`none`) the last one's, if any."""
    from swehero.eval.grade import grading_record

    if settings.grader == "none":
        return {"grading": before["grading"]} if "grading" in before else {}
    return {"grading": grading_record(settings, _absolute(harness))}


def run_grading(settings: GradingSettings, saved: dict, grader_named: bool) -> GradingSettings:
    """`settings` completed from the grading an eval folder saved (`saved_grading`), so that `eval grade` grades the
    rest as the run graded the first: its grader unless `grader_named`, its harness dataset unless one is given. A
    folder saved before its grading was: `settings` as they are."""
    recorded = saved.get("grading", {})
    grader = settings.grader if grader_named else recorded.get("grader", settings.grader)
    dataset = settings.harness.dataset or (recorded.get("harness_dataset", "") if grader == "swebench" else "")
    return replace(settings, grader=grader, harness=replace(settings.harness, dataset=dataset))


def check_same_attempts(out_dir: Path, before: dict, saved: dict) -> None:
    """Refuse to resume an eval folder whose committed attempts were made with other `attempts` settings, or on
    another version of their task (`task_digests`). Folders from before these were saved are not checked."""
    from swehero.eval.inference import finished
    from swehero.eval.runs import run_dirs
    from swehero.rollout.runner import check_resumable

    made = {iid for run in run_dirs(out_dir, before.get("runs", 1)) for iid in finished(run)}
    check_resumable(out_dir, before.get("attempts") if made else None, saved["attempts"])
    check_same_tasks(out_dir, made, before.get("task_digests", {}), saved["task_digests"], saved["tasks"])


def check_same_tasks(out_dir: Path, made: set[str], recorded: dict[str, str], now: dict[str, str],
                     tasks_file: str) -> None:
    """Refuse the attempts `made` whose task row, as the agent saw it, is not the one `recorded` (digests by instance
    id) when they were made; an attempt recorded without a digest is not checked."""
    edited = sorted(iid for iid in made if recorded.get(iid, now.get(iid)) != now.get(iid))
    if edited:  # what the agent saw changed: grading cannot mend an attempt made on another task
        raise InputError(f"{out_dir} holds attempts made on another version of {len(edited)} task(s) in "
                         f"{tasks_file} ({few(edited, 5)}): what the agent saw of them (problem statement, base "
                         "commit, ...) changed; write into another folder, or rerun with the task rows they were made on")


def _absolute(path: str | Path | None) -> str:
    """A path saved in `eval.json` as it is from here, so that `eval report` and `eval grade` find it from any
    directory; a benchmark name (also where a folder of that name lies here: `eval run verified --tasks verified`
    creates one), `toy`, or no path, as is."""
    from swehero.rollout.tasks import TOY, benchmark_of

    if not path or str(path) == TOY or benchmark_of(str(path)) or not Path(path).exists():
        return str(path or "")
    return str(Path(path).resolve())


def check_settings(settings: Settings) -> None:
    """InputError for settings that do not go together, which need no attempt to tell: checked before any work, so
    that a mistake does not surface after hours of runs."""
    if settings.heldout_trajectories and not settings.serve.model:
        raise InputError("heldout_trajectories needs `serve.model`: the checkpoint whose accuracy is measured")
    if settings.verifier.selects:
        if settings.grading.grader == "none":
            raise InputError("the verifier's selection reports best@k beside pass@k, which takes graded attempts: "
                             "choose a grader (grading.grader: local or swebench)")
        check_verifier(settings.verifier)


def evaluate(settings: Settings, out_dir: Path, progress=print) -> dict[str, str]:
    """Run inference, grading and the report into `out_dir`; returns the output paths."""
    from swehero.eval.grade import check_one_grader, grade
    from swehero.eval.inference import PREDICTIONS, run_inference
    from swehero.eval.runs import run_dirs
    from swehero.rollout.endpoints import serving
    from swehero.jsonio import exclusive
    from swehero.rollout.runner import BUSY, LOCK, attempt_identity, attempted_task_digest
    from swehero.rollout.local_grader import check_local
    from swehero.rollout.tasks import load_selection, load_tasks

    check_settings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir / LOCK, busy=f"{out_dir}: {BUSY}"):
        to_grade = settings.grading.grader != "none"
        selected = load_selection(settings, out_dir, tests=to_grade)
        untested = [t["instance_id"] for t in selected.tasks if not t.get("FAIL_TO_PASS")]
        if to_grade and untested:  # swebench grades them too, and resolves any patch that keeps PASS_TO_PASS passing
            progress(f"warning: {len(untested)} task(s) have an empty FAIL_TO_PASS, so no test checks the fix: "
                     f"{', '.join(untested[:5])}{' ...' if len(untested) > 5 else ''}")
        if settings.grading.grader == "local":  # fail before inference, not after
            check_local(selected.tasks)
        label = model_label(settings)
        before = saved_settings(out_dir)
        runs = run_dirs(out_dir, settings.runs)
        for run in runs:  # before inference, not after
            check_one_grader(selected.tasks, run, settings.grading.grader)
        harness = settings.grading.harness.dataset or harness_dataset(selected.source)
        saved = {"tasks": _absolute(selected.source), "benchmark": selected.benchmark, "model": label,
                 "repos": _absolute(selected.repos), "runs": settings.runs,
                 "instance_ids": [t["instance_id"] for t in selected.tasks],
                 # what each attempt was made from, kept for the tasks not selected now: their attempts stay
                 "task_digests": {**before.get("task_digests", {}),
                                  **{t["instance_id"]: attempted_task_digest(t) for t in selected.tasks}},
                 # with the folder, so `eval report` and `eval grade` rewrite the reports with the cost column
                 "price_prompt_per_mtok": settings.price_prompt_per_mtok,
                 "price_completion_per_mtok": settings.price_completion_per_mtok,
                 "attempts": attempt_identity(settings.agent, settings.serve, model=label, seed=settings.seed,
                                              max_attempts=settings.max_attempts, runs=settings.runs),
                 **saved_grading(settings.grading, harness, before)}
        check_same_attempts(out_dir, before, saved)
        save_settings(out_dir, saved)
        if settings.grading.grader == "swebench":  # fail before inference, not after
            from swehero.eval.harness import check_docker_command, check_harness_dataset

            if Path(harness).is_file():
                check_harness_dataset(selected.tasks if harness == selected.source else load_tasks(harness, tests=True),
                                      harness, [task["instance_id"] for task in selected.tasks])
            check_docker_command(settings.grading.harness)
        if settings.agent.runtime == "docker":
            from swehero.agent.docker_host import check_architecture

            check_architecture()
        with serving(settings.agent, settings.endpoints, settings.serve, out_dir) as (agent, urls):
            inferred = run_inference(selected.tasks, agent, runs, label, selected.repos, urls,
                                     settings.workers, settings.max_attempts, settings.seed, progress=progress)
        missing = set(inferred["missing_repositories"])
        for run in runs:
            graded = grade(selected.tasks, run, settings.grading, selected.repos, harness, progress=progress)
            missing |= set(graded["missing_repositories"])
        if settings.heldout_trajectories:
            score_heldout(settings, out_dir, progress)
        outputs = report_eval(out_dir, selected.tasks, saved, progress)
        if missing:  # everything else is done and reported; a rerun with the repositories in place finishes these
            from swehero.agent.local import MissingRepository

            raise MissingRepository.of(sorted(missing))
        if settings.verifier.selects:  # after the policy's server has stopped: the verifier gets the GPUs
            from swehero.eval.select import select_best

            outputs.update(select_best([out_dir], settings.verifier, out_dir, progress))
        return {"predictions": str(runs[0] / PREDICTIONS), **outputs}


def report_eval(out_dir: Path, tasks: list[dict], saved: dict, progress=print) -> dict[str, str]:
    """Write the report of each run and, for repeated runs, the report over all of them, priced as `saved` says
    (folders saved without prices: no cost column); returns its paths."""
    from swehero.eval.report import TEACHER_FORCED, build_report, write_report
    from swehero.eval.runs import aggregate, run_dirs, write_runs_report

    scored = out_dir / TEACHER_FORCED
    teacher_forced = json.loads(scored.read_text()) if scored.exists() else None
    runs = run_dirs(out_dir, saved.get("runs", 1))
    reports = [build_report(tasks, run, saved["model"], saved["benchmark"], saved.get("price_prompt_per_mtok", 0.0),
                            saved.get("price_completion_per_mtok", 0.0), teacher_forced, saved["tasks"],
                            attempted_mode(saved))
               for run in runs]
    outputs = [write_report(report, run) for report, run in zip(reports, runs)][0]
    if len(runs) > 1:
        agg = aggregate(reports)
        outputs = write_runs_report(agg, out_dir)
        progress(f"resolved {100 * agg['resolved_rate']:.1f}% on average over {len(runs)} runs (std "
                 f"{100 * agg['std_rate']:.1f} points), pass@{len(runs)} "
                 f"{100 * agg['pass_at_k'][str(len(runs))]:.1f}%; report: {outputs['report_md']}")
    else:
        progress(f"resolved {reports[0]['resolved']}/{reports[0]['total']}; report: {outputs['report_md']}")
    return outputs


def attempted_mode(saved: dict) -> str:
    """The agent's mode the attempts of an eval folder were made in, as its `eval.json` records it; for a folder saved
    before it was recorded, the agent's default (`exec`), as its reports assumed."""
    return saved.get("attempts", {}).get("agent", {}).get("mode", "exec")


def open_eval(out_dir: Path, tests: bool = False, progress=None) -> tuple[list[dict], dict, list[Path]]:
    """An eval folder's tasks (`tests`: each with its test lists, for grading), saved settings (`eval.json`) and
    run folders; refused, as `evaluate` refuses to resume it, when the task file now holds another version of a
    task attempted there. `progress`: told of the predictions of instances the task file does not have."""
    from swehero.eval.inference import PREDICTIONS, finished
    from swehero.eval.runs import EVAL_FILE, eval_runs
    from swehero.rollout.runner import attempted_task_digest
    from swehero.rollout.tasks import benchmark_of, load_tasks, select

    saved, runs = eval_runs(out_dir)
    if not Path(saved["tasks"]).exists() and not benchmark_of(saved["tasks"]):
        raise MissingInput(f"{Path(out_dir) / EVAL_FILE}: the eval's task file {saved['tasks']} is not there (moved, "
                           "or the eval folder copied from another machine): put it back at that path, or write the "
                           "path it has now into `tasks`")
    every = load_tasks(saved["tasks"], tests=tests)
    tasks = select(every, saved["instance_ids"])
    predicted = {run: finished(run) for run in runs}
    # the attempts of tasks the last `eval run` did not select (a narrower --limit, another task file) stay in the
    # folder, outside its reports: only the selected ones are checked. Those of tasks the file lacks are said (where
    # SWE-bench's harness refuses them), not refused: a later `eval run` with another task file leaves them there
    known = {task["instance_id"] for task in every}
    for run, predictions in predicted.items():
        if progress and (foreign := [iid for iid in predictions if iid not in known]):
            progress(f"warning: {run / PREDICTIONS}: {len(foreign)} prediction(s) of instances not in the task file "
                     f"{saved['tasks']}, left out of grading and reports: {few(foreign)}")
    made = {iid for predictions in predicted.values() for iid in predictions} & set(saved["instance_ids"])
    check_same_tasks(out_dir, made, saved.get("task_digests", {}),
                     {task["instance_id"]: attempted_task_digest(task) for task in tasks}, saved["tasks"])
    return tasks, saved, runs


def regrade(out_dir: Path, settings: GradingSettings, repos: str = "", progress=print,
            grader_named: bool = True) -> dict[str, str]:
    """Grade the predictions of an eval folder not graded yet (repositories: `repos`, else the run's), then
    rewrite its reports. Without `grader_named`, with the grader the run graded with (`run_grading`)."""
    from swehero.eval.grade import grade
    from swehero.eval.runs import eval_runs
    from swehero.jsonio import exclusive
    from swehero.rollout.runner import BUSY, LOCK

    settings = run_grading(settings, eval_runs(out_dir)[0], grader_named)
    tasks, saved, runs = open_eval(out_dir, tests=settings.grader != "none", progress=progress)
    repo_root = Path(repos or saved.get("repos") or Path(saved["tasks"]).parent / "repos")
    harness = settings.harness.dataset or harness_dataset(saved["tasks"])
    # as `evaluate`: two gradings at once would grade an instance twice, and in one harness run id
    with exclusive(Path(out_dir) / LOCK, busy=f"{out_dir}: {BUSY}"):
        missing = set()
        for run_dir in runs:
            missing |= set(grade(tasks, run_dir, settings, repo_root, harness, progress)["missing_repositories"])
        save_settings(out_dir, {**saved, **saved_grading(settings, harness, saved)})
        outputs = report_eval(out_dir, tasks, saved, progress=progress)
    if missing:  # as `evaluate`: the others are graded and reported; a rerun with them in place grades these
        from swehero.agent.local import MissingRepository

        raise MissingRepository.of(sorted(missing))
    return outputs


def score_heldout(settings: Settings, out_dir: Path, progress=print) -> None:
    """Teacher-forced accuracy of the served checkpoint on the held-out trajectories (`teacher_forced.json`),
    scored again only when the checkpoint (its path or weights), its context or the held-out files differ from
    those the score recorded; a score recorded without them is kept unless its list of files differs."""
    from swehero.eval.report import TEACHER_FORCED
    from swehero.eval.teacher_forced import teacher_forced_accuracy
    from swehero.jsonio import write_json_atomic
    from swehero.rollout.runner import recorded_differences

    scored, now, why = out_dir / TEACHER_FORCED, heldout_identity(settings), ""
    if scored.exists():
        recorded = json.loads(scored.read_text())  # the score, and what it was made from
        changed = recorded_differences(recorded, now)
        if not changed:
            return
        why = f" (scored again: {'; '.join(changed)})"
    progress(f"teacher-forced accuracy of {settings.serve.model} on {', '.join(settings.heldout_trajectories)}{why}")
    score = teacher_forced_accuracy(settings.serve.model, settings.heldout_trajectories, settings.serve.max_model_len)
    write_json_atomic(scored, {**score, **now})


def heldout_identity(settings: Settings) -> dict:
    """What decides the teacher-forced score: the checkpoint's path, `folder_fingerprint` and the tokenizer and chat
    template it renders with (`side_files_fingerprint`), the context it is cut to, and the held-out files, each by
    path and size and mtime (`fingerprint_path`)."""
    from swehero.model.folder import folder_fingerprint, side_files_fingerprint
    from swehero.fingerprint import fingerprint_path

    return {"files": list(settings.heldout_trajectories), "model": settings.serve.model,
            "weights_sampled": folder_fingerprint(settings.serve.model),
            "tokenizer_and_template": side_files_fingerprint(settings.serve.model),
            "max_model_len": settings.serve.max_model_len,
            "file_fingerprints": [fingerprint_path(path) for path in settings.heldout_trajectories]}


def harness_dataset(source: str) -> str:
    """What swebench grades against by default: its own copy of a named benchmark, else the task file."""
    from swehero.rollout.tasks import benchmark_of

    bench = benchmark_of(source)
    return bench.harness_dataset if bench else source
