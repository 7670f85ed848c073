"""Append-only JSONL logs read while their writer appends: readers (`eval`'s `finished`, `distill merge`) never change
the file nor fail on the line being written, and a second writer opening the log waits for that line instead of
cutting it. Real processes, lines of several MB (each one written by the kernel a page at a time)."""

import json
import multiprocessing
from pathlib import Path

import pytest

from swehero.distill.run import TRAJECTORIES
from swehero.distill.shards import merge
from swehero.eval.inference import PREDICTIONS, finished
from swehero.jsonio import JsonlLog

LINES, LINE_BYTES = 6, 4_000_000
fork = multiprocessing.get_context("fork")


def trajectory(i: int) -> dict:
    return {"instance_id": f"t{i}", "messages": [], "patch": "x" * LINE_BYTES, "metadata": {"rollout": 0}}


def prediction(i: int) -> dict:
    return {"instance_id": f"t{i}", "model_name_or_path": "m", "model_patch": "x" * LINE_BYTES}


def write_logs(shard: Path, run: Path) -> None:
    """A distill shard and an eval run, both still running: each line is committed (fsynced) before the next."""
    trajectories, predictions = JsonlLog(shard / TRAJECTORIES), JsonlLog(run / PREDICTIONS)
    for i in range(LINES):
        trajectories.append(trajectory(i))
        predictions.append(prediction(i))


def until(done, errors, read) -> None:
    """`read()` over and over until `done`; what it raised goes to `errors`."""
    try:
        while not done.is_set():
            read()
    except Exception as e:  # noqa: BLE001 - handed to the test, which names it
        errors.put(f"{type(e).__name__}: {e}"[:300])


def committed(path: Path) -> list[str]:
    """The ids of the complete lines of a log."""
    return [json.loads(line)["instance_id"] for line in path.open("rb") if line.endswith(b"\n")]


@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_logs_read_while_appended_lose_nothing_and_readers_never_fail(tmp_path):
    shard, run, merged = tmp_path / "shard-0", tmp_path / "run", tmp_path / "merged"
    for folder, log in ((shard, TRAJECTORIES), (run, PREDICTIONS)):
        folder.mkdir()
        (folder / log).touch()
    done, errors = fork.Event(), fork.Queue()
    readers = [fork.Process(target=until, args=(done, errors, read)) for read in (
        lambda: (finished(run), merge([shard], merged)),  # `eval report` and `distill merge`
        lambda: (JsonlLog(shard / TRAJECTORIES), JsonlLog(run / PREDICTIONS)),  # a second writer opening the logs
    )]
    writer = fork.Process(target=write_logs, args=(shard, run))
    for process in (*readers, writer):
        process.start()
    writer.join(60)
    done.set()
    for reader in readers:
        reader.join(60)
    assert errors.empty(), errors.get()
    assert writer.exitcode == 0 and [reader.exitcode for reader in readers] == [0, 0]
    ids = [f"t{i}" for i in range(LINES)]
    assert committed(shard / TRAJECTORIES) == ids
    assert committed(run / PREDICTIONS) == ids
    assert (shard / TRAJECTORIES).read_bytes().endswith(b"\n") and list(finished(run)) == ids
    merge([shard], merged)  # merging again adds the rest
    assert committed(merged / TRAJECTORIES) == ids


def test_a_line_being_written_is_skipped_by_readers_and_left_alone(tmp_path):
    """What a reader finds while a line is half-written (or torn by a kill): the complete lines; the file unchanged."""
    shard, run = tmp_path / "shard-0", tmp_path / "run"
    half = json.dumps(trajectory(1))[:1000].encode()
    for folder, log, record in ((shard, TRAJECTORIES, trajectory(0)), (run, PREDICTIONS, prediction(0))):
        folder.mkdir()
        (folder / log).write_bytes(json.dumps(record).encode() + b"\n" + half)
    before = {path: path.read_bytes() for path in (shard / TRAJECTORIES, run / PREDICTIONS)}
    assert list(finished(run)) == ["t0"]
    summary = merge([shard], tmp_path / "merged")
    assert summary["unfinished"] == [str(shard)] and committed(tmp_path / "merged" / TRAJECTORIES) == ["t0"]
    assert [path.name for path in before if path.read_bytes() != before[path]] == []


def test_a_merge_killed_while_it_appends_is_completed_by_the_next(tmp_path):
    """A merge appends a shard's lines with one sync at the end (`JsonlLog.append_lines`): killed halfway, the merged
    log holds the lines written before, the last perhaps torn; the next merge cuts the torn line and adds the rest,
    each episode once, and its summary counts them all."""
    shard, merged = tmp_path / "shard-0", tmp_path / "merged"
    shard.mkdir()
    merged.mkdir()
    # written as another writer would (non-ASCII escaped): the merge copies the lines as written
    lines = [json.dumps({**trajectory(i), "patch": f"patch {i} \u00e9"}) + "\n" for i in range(5)]
    (shard / TRAJECTORIES).write_text("".join(lines))
    (merged / TRAJECTORIES).write_text("".join(lines[:2]) + lines[2][:40])  # what the kill left
    summary = merge([shard], merged)
    assert committed(merged / TRAJECTORIES) == [f"t{i}" for i in range(5)]
    assert (merged / TRAJECTORIES).read_text() == "".join(lines)
    assert summary["episodes"] == 5 and summary["duplicates_skipped"] == 0 and summary["with_patch"] == 5


def test_a_filesystem_without_locks_is_one_line_naming_the_file_before_anything_runs(tmp_path, monkeypatch):
    """Lustre mounted without `flock` answers ENOSYS, an NFS server without its lock service ENOLCK: no such
    filesystem mounts here, so the kernel's answer is given in its place. The first lock a command takes says so."""
    import errno
    import fcntl

    from click.testing import CliRunner

    from swehero.cli import main
    from swehero.errors import Unavailable

    def no_locks(f, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    result = CliRunner().invoke(main, ["recipe", "run", "tiny-cpu", "--set", f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {tmp_path / 'run' / '.lock'}: its filesystem gives no file locks "
                                    "(Function not implemented)"), result.output
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]  # no stage started
    log = JsonlLog(tmp_path / "log.jsonl")
    with pytest.raises(Unavailable, match=f"^{tmp_path / 'log.jsonl'}: its filesystem gives no file locks"):
        log.append({"instance_id": "t0"})


def _append_on_a_full_disk(path: Path, failed) -> None:
    """A commit that the kernel cuts short (the file-size limit stands in for a full disk: a short write, then
    EFBIG), then another worker's commit once there is room again."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG returned instead of the process killed
    log = JsonlLog(path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 500, hard))
    try:
        log.append(trajectory(1))
    except OSError as e:
        failed.put(e.errno)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    log.append({**trajectory(2), "patch": "fix"})


def test_a_commit_a_full_disk_cut_short_leaves_no_torn_line_under_the_next(tmp_path):
    """Undone before the lock is let go: the next worker's line would otherwise be glued to the torn one, a line no
    resume can read, in the middle of the log."""
    import errno

    path = tmp_path / TRAJECTORIES
    JsonlLog(path).append({**trajectory(0), "patch": "first"})
    failed = fork.Queue()
    child = fork.Process(target=_append_on_a_full_disk, args=(path, failed))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and failed.get(timeout=5) == errno.EFBIG
    assert committed(path) == ["t0", "t2"] and path.read_bytes().endswith(b"\n")
