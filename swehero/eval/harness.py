"""Grading with the official harness, swebench 5.0.2, through its Python API (`run_evaluation.main`, in a child
process: see `run_evaluation`).

The harness writes `logs/run_evaluation/<run_id>/<model>/<instance>/report.json` relative to the working
directory and the run summary `<model>.<run_id>.json` to `report_dir`; both go under `<eval dir>/harness`. It
skips instances that already have a report, so grading resumes. A task file is handed to it as the copy swehero
writes of it, `<eval dir>/harness/tasks.jsonl` (see `harness_copy`). Its containers are named
`sweb.eval.<instance>.<run_id>`, and it force-removes a container of that name before starting its own: a
distinct run id per eval folder keeps gradings of two folders, at once or one after the other, from colliding.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path

from swehero.agent.container import remove_image
from swehero.agent.docker_host import check_architecture, check_engine_disk
from swehero.errors import InputError, Unavailable
from swehero.process import run_group

HARNESS_DIR = "harness"


@dataclass
class HarnessConfig:
    """Options passed through to swebench's `run_evaluation.main`, plus our guards."""

    dataset: str = ""
    """Dataset the harness grades against (hub id or local .json/.jsonl/.parquet with swebench 5 columns: `image`,
    `eval_script`, `log_parser`, `eval_type`); empty: the benchmark's harness dataset, or the task file."""
    split: str = "test"
    """Split of `dataset` to grade against (a hub dataset's; a local file has one)."""
    run_id: str = ""
    """Harness run id (in log paths and container names); empty: `swehero.<eval folder name>.<hash of its path>`."""
    max_workers: int = 4
    """Instances graded in parallel (swebench suggests at most 75% of CPU cores)."""
    timeout_s: int = 1800
    """Seconds the tests of one instance may run."""
    open_file_limit: int = 4096
    """The harness's limit on open files (`ulimit -n`) while it grades, as its `--open_file_limit`."""
    task_repo: str = ""
    """Build the instance images from this swebench task repo instead of pulling published ones."""
    modal: bool = False
    """Grade on Modal (remote x86_64 builds) instead of the local Docker engine."""
    min_free_gb: float = 100.0
    """Free GiB required on Docker's disk before images are pulled (checked before every batch that names an
    image the engine lacks; 0: no check)."""
    prune_images: bool = False
    """Grade one instance at a time and remove its image afterwards (for small disks)."""


def run_id_for(config: HarnessConfig, out_dir: Path) -> str:
    """The harness run id of an eval folder (or of one run of a repeated eval: `<eval folder>.run-k`), ending in a
    short hash of the folder's resolved path: `/runs/a/verified` and `/runs/b/verified` get different ones, and
    every grading of one folder the same one, so a rerun finds the harness's logs of the last."""
    if config.run_id:
        return config.run_id
    folder = Path(out_dir).resolve()
    name = f"{folder.parent.name}.{folder.name}" if re.fullmatch(r"run-\d+", folder.name) else folder.name
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return f"swehero.{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.{digest}"


def harness_kwargs(config: HarnessConfig, dataset: str, predictions: Path, run_id: str,
                   instance_ids: list[str]) -> dict:
    """Keyword arguments for `swebench.harness.run_evaluation.main` (all of its parameters, by name). `predictions`
    is absolute: the harness runs in another working directory (`run_harness`)."""
    return {
        "dataset_name": dataset, "split": config.split, "instance_ids": instance_ids,
        "predictions_path": str(predictions), "max_workers": config.max_workers,
        "open_file_limit": config.open_file_limit, "run_id": run_id, "timeout": config.timeout_s,
        "rewrite_reports": False, "modal": config.modal, "report_dir": ".", "task_repo": config.task_repo or None,
    }


def check_harness_dataset(tasks: list[dict], dataset: str, instance_ids: Collection[str]) -> None:
    """The rows `tasks` of the harness dataset `dataset` grade `instance_ids`: each needs a row (swebench refuses
    predictions of instances its dataset lacks, after hours of inference), swebench 5's `make_test_spec` needs
    these columns, and its grading a log parser it has; say so, with the fix, before any work starts."""
    from swehero.errors import few
    from swehero.rollout.local_grader import log_parser

    if absent := sorted(set(instance_ids) - {task["instance_id"] for task in tasks}):
        raise InputError(f"{dataset} has no row of {len(absent)} instance(s) to grade ({few(absent)}), and the harness "
                         "grades with its rows: give it one that has them (harness.dataset), such as the file "
                         "`swehero eval images build` writes for the whole task file")

    needed = ("image", "eval_script", "log_parser", "eval_type", "version")
    missing = sorted({name for task in tasks for name in needed if not task.get(name)})
    if missing:
        out = Path(dataset).with_suffix(".harness.jsonl")
        raise InputError(
            f"{dataset} lacks {', '.join(missing)}, which swebench 5.0.2's harness needs to grade (each task's test "
            "spec names its image and eval script). Fix: build the instance images and write those columns with "
            f"`swehero eval images build --tasks {dataset} --out {out}`, then evaluate {out}; or grade against "
            "swebench's own copy of the benchmark (harness.dataset), or with --grader local."
        )
    for task in tasks:
        try:
            log_parser(task)
        except InputError as e:
            raise InputError(f"{dataset}: {e}") from None


def harness_copy(dataset: str, where: Path) -> str:
    """What the harness is handed for `dataset`: a hub name as it is; for a task file, `where/tasks.jsonl`, its
    tasks as swehero loads them, one JSON object a line with non-ASCII escaped. swebench's loader splits a .jsonl at
    every `str.splitlines` break (a U+2028 inside a string, a blank line) and reads no byte-order mark, which
    swehero's loader takes, so every task file swehero runs is one the harness reads."""
    from swehero.rollout.tasks import load_tasks

    if not Path(dataset).is_file():
        return dataset
    copy = Path(where).resolve() / "tasks.jsonl"
    copy.write_text("".join(json.dumps(task) + "\n" for task in load_tasks(dataset, tests=True)))
    return str(copy)


def harness_predictions(predictions: Path, where: Path, instance_ids: list[str]) -> tuple[Path, str]:
    """`where/predictions.jsonl`: the predictions of `instance_ids` (an id's first line, as swehero reads them),
    and the model they name. swebench refuses a whole predictions file that holds one instance its dataset lacks,
    and a folder may hold predictions of tasks no longer in its task file (`open_eval` names them)."""
    from swehero.jsonio import JsonlLogReader

    wanted = set(instance_ids)
    records = [record for iid, record in JsonlLogReader(predictions).records().items() if iid in wanted]
    copy = Path(where).resolve() / "predictions.jsonl"
    copy.write_text("".join(json.dumps(record) + "\n" for record in records))
    return copy, records[0]["model_name_or_path"]


def _missing_images(names: list[str]) -> bool:
    """Whether the harness may pull: an image unnamed (hub datasets) or not on the engine."""
    import docker

    try:
        engine = docker.from_env()
        for name in names:
            if not name:
                return True
            engine.images.get(name)
    except docker.errors.DockerException:  # ImageNotFound, or no engine (the disk check then says so)
        return True
    return False


def check_docker_command(config: HarnessConfig) -> None:
    """Unavailable unless the `docker` command is on PATH for a grading on this engine: the harness stops and
    removes each container it grades in with it (without it, every one is left running)."""
    if not config.modal and shutil.which("docker") is None:
        raise Unavailable("swebench's harness stops and removes its containers with the `docker` command, which is "
                          "not on PATH (each graded container would be left running): install the Docker CLI "
                          "(Debian/Ubuntu: docker.io), or grade with --grader local")


def run_harness(config: HarnessConfig, out_dir: Path, dataset: str, predictions: Path, instance_ids: list[str],
                images: dict[str, str], on_grades: Callable[[dict[str, dict]], None],
                again: Collection[str] = ()) -> None:
    """Grade `instance_ids` (non-empty patches), handing `on_grades` the grades the harness came to
    (`parse_harness`) batch by batch, and also when stopped: what it graded is kept. `images` maps instance ids to
    image names: the disk guard runs only when one is missing (the harness would pull it), and pruning removes them.
    `again`: instances graded before on another task row, whose report the harness would hand back as it is (it
    skips an instance that has one). The harness is handed the predictions of `instance_ids` only
    (`harness_predictions`)."""
    check_docker_command(config)
    check_architecture(remote=config.modal)
    # resolved here, before the harness's working directory replaces the one relative paths are relative to
    out_dir, predictions = Path(out_dir).resolve(), Path(predictions).resolve()
    if config.task_repo and Path(config.task_repo).is_dir():  # else a GitHub reference (`owner/repo`), or none
        config = replace(config, task_repo=str(Path(config.task_repo).resolve()))
    where = out_dir / HARNESS_DIR
    where.mkdir(parents=True, exist_ok=True)
    run_id = run_id_for(config, out_dir)
    dataset = harness_copy(dataset, where)
    predictions, model = harness_predictions(predictions, where, instance_ids)
    for iid in set(again) & set(instance_ids):
        shutil.rmtree(instance_logs(where, run_id, model, iid), ignore_errors=True)
    batches = [[iid] for iid in instance_ids] if config.prune_images else [instance_ids]
    for batch in batches:
        if not config.modal and config.min_free_gb > 0 and _missing_images([images.get(i, "") for i in batch]):
            check_engine_disk(config.min_free_gb, f"pulling images for {len(batch)} instance(s)")
        try:
            run_evaluation(harness_kwargs(config, dataset, predictions, run_id, batch), where)
        finally:
            # read now: the run's summary (errors without a report) is the last batch's; a run over them all at the
            # end would run every instance without a report again, its image pruned
            on_grades(parse_harness(where, run_id, model, batch))
        if config.prune_images:
            for image in [images[i] for i in batch if images.get(i)]:
                remove_image(image)  # not by force: an attempt running beside the grading may use it


HARNESS_MAIN = "import json, sys\nfrom swebench.harness.run_evaluation import main\nmain(**json.load(sys.stdin))"


def run_evaluation(kwargs: dict, where: Path) -> None:
    """swebench's `run_evaluation.main(**kwargs)`, run in `where` (it writes its logs relative to the working
    directory) by a child process in a group of its own: stopped (Ctrl-C, SIGTERM), the child goes at once and its
    containers with it, where in this process the harness's thread pool ran every queued instance before the
    interrupt got through; and the open-file limit it sets (`setrlimit`) stays the child's."""
    # the arguments on stdin: as one argument, thousands of instance ids would pass the kernel's 128 KiB limit
    arguments = where / "harness_arguments.json"
    arguments.write_text(json.dumps(kwargs))
    try:
        with open(arguments) as stdin:
            status = run_group([sys.executable, "-c", HARNESS_MAIN], cwd=where, stdin=stdin)
    except BaseException:
        if not kwargs.get("modal"):
            _remove_containers(kwargs["run_id"], kwargs["instance_ids"])
        raise
    if status:
        raise RuntimeError(f"swebench's harness exited with status {status} (its output is above; its logs are in "
                           f"{where})")


def _remove_containers(run_id: str, instance_ids: list[str]) -> None:
    """The harness's containers of `instance_ids` in this run, which its child leaves running when it is stopped."""
    import docker

    names = {f"sweb.eval.{iid.lower()}.{run_id}" for iid in instance_ids}
    try:
        engine = docker.from_env()
        for container in engine.containers.list(all=True, filters={"name": "sweb.eval."}):
            if container.name in names:
                container.remove(force=True)
    except docker.errors.DockerException as e:  # housekeeping while stopping: the interrupt is what matters
        print(f"warning: could not remove the harness's containers of run {run_id}: {e}", file=sys.stderr)


def instance_logs(where: Path, run_id: str, model_name: str, iid: str) -> Path:
    """The folder the harness writes an instance's report and logs in."""
    return Path(where) / "logs" / "run_evaluation" / run_id / model_name.replace("/", "__") / iid


def parse_harness(where: Path, run_id: str, model_name: str, instance_ids: list[str]) -> dict[str, dict]:
    """Grades from the harness's files: each instance's `report.json`, and the run summary for instances that
    errored without one. Instances the harness did not get to are absent."""
    from swebench.harness.constants import APPLY_PATCH_PASS

    summary_file = Path(where) / f"{model_name.replace('/', '__')}.{run_id}.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    errors = set(summary.get("error_ids", []))
    grades = {}
    for iid in instance_ids:
        log_dir = instance_logs(where, run_id, model_name, iid)
        report_file = log_dir / "report.json"
        log = log_dir / "run_instance.log"
        logs = str(log_dir.relative_to(Path(where).parent))
        entry = _instance_report(report_file, iid)
        if entry is not None:
            if log.exists():  # swebench sets the flag only when it could parse test output: the log says what happened
                entry = {**entry, "patch_successfully_applied": APPLY_PATCH_PASS in log.read_text(errors="replace")}
            grades[iid] = grade_record(iid, entry, "swebench", logs)
        elif report_file.exists() and not patch_failed(log):
            # the harness hands back any report it finds: this one goes, so it runs again
            report_file.unlink()
            grades[iid] = retry_record(iid, "swebench", logs, f"{report_file.name} empty or torn (the harness was "
                                                              "killed writing it)")
        elif iid in errors or report_file.exists():  # on Modal, an error leaves an empty report.json
            grades[iid] = error_record(iid, log_dir, summary, logs)
    return grades


def _instance_report(report_file: Path, iid: str) -> dict | None:
    """The instance's entry of the harness's `report.json`; None where there is none, or the file is empty or not
    whole (a kill while the harness wrote it)."""
    try:
        return json.loads(report_file.read_text())[iid]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None


def error_record(iid: str, log_dir: Path, summary: dict, logs: str) -> dict:
    """Our grade line for an instance the harness errored on without a report. Two such errors are verdicts on the
    patch: it did not apply (the model's failure), or its tests ran past the harness's timeout (labelled as
    swebench's `infra_failure` module classifies the logs; a timeout is ambiguous, not the environment's). Any
    other error (Docker out of space, an image that could not be pulled) says nothing about the patch: its line
    says `retry`, and the next grading runs the instance again, as swebench's own resume does (it reruns every
    instance without a report); the later line supersedes this one."""
    log = log_dir / "run_instance.log"
    record = {"instance_id": iid, "grader": "swebench", "resolved": False, "patch_applied": False, "logs": logs}
    if patch_failed(log):
        return {**record, "infra_failure": False, "error": "patch did not apply"}
    reason = summary.get("failure_reasons", {}).get(iid)
    if tests_timed_out(log_dir):  # the patch applied: the tests ran, and did not finish
        return {**record, "patch_applied": True, "infra_failure": iid in summary.get("infra_failure_ids", []),
                "error": reason or "tests_timed_out"}
    return retry_record(iid, "swebench", logs, reason or f"harness error; see {log_dir}")


def patch_failed(log: Path) -> bool:
    """Whether the harness's instance log says the patch did not apply."""
    from swebench.harness.constants import APPLY_PATCH_FAIL

    return log.exists() and APPLY_PATCH_FAIL in log.read_text(errors="replace")


def retry_record(iid: str, grader: str, logs: str, error: str) -> dict:
    """Our grade line for a grading that failed without deciding anything about the patch (a harness error, a local
    clone on a full disk): no verdict, and `retry`: the next grading grades the instance again."""
    return {"instance_id": iid, "grader": grader, "resolved": False, "patch_applied": False, "logs": logs,
            "infra_failure": True, "error": error, "retry": True}


def tests_timed_out(log_dir: Path) -> bool:
    """Whether the harness stopped the tests at its timeout: it ends their output with the line swebench's
    `infra_failure` module recognizes as `tests_timed_out`."""
    from swebench.harness.constants import LOG_TEST_OUTPUT
    from swebench.harness.infra_failure import INFRA_FAILURE_SIGNATURES

    pattern = next(pattern for reason, _, pattern in INFRA_FAILURE_SIGNATURES if reason == "tests_timed_out")
    output = log_dir / LOG_TEST_OUTPUT
    return output.exists() and re.search(pattern, output.read_text(errors="replace"), re.MULTILINE) is not None


def grade_record(iid: str, entry: dict, grader: str, logs: str) -> dict:
    """Our grade line from one instance's swebench report entry; `logs`: the folder of its report and test output,
    relative to the eval folder."""
    return {"instance_id": iid, "grader": grader, "resolved": bool(entry["resolved"]), "logs": logs,
            "patch_applied": bool(entry.get("patch_successfully_applied")),
            "infra_failure": bool(entry.get("infra_failure")), "error": entry.get("infra_failure_reason", ""),
            "tests_status": entry.get("tests_status")}
