"""swehero distill with the oracle teacher on the toy tasks (real git repositories, bubblewrap sandbox): both modes,
kill -9 and resume, Ctrl-C and SIGTERM, shards and their merge, the Slurm script, the endpoint pool."""

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from json_server import JsonServer
from swehero.data.trajectory import validate
from swehero.agent.openai_policy import OpenAIConfig
from swehero.agent.settings import AgentSettings
from swehero.rollout.endpoints import Endpoint, EndpointPool, NoLiveEndpoint
from swehero.distill.run import Settings, distill
from swehero.distill.shards import slurm_job
from swehero.jsonio import read_jsonl
from swehero.rollout.tasks import load_tasks
from swehero.rollout.toy import build_toy_tasks
from swehero.serve.server import free_port

pytestmark = pytest.mark.bwrap
CLI = [sys.executable, "-c", "from swehero.distill.cli import distill; distill()"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_toy_tasks(tmp_path_factory.mktemp("toy"))


def lines(path: Path) -> list[dict]:
    return read_jsonl(path)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["zero", "exec"])
def test_oracle_distills_every_task_and_rollout(toy, tmp_path, mode):
    settings = Settings(tasks=str(toy), rollouts=2, workers=2, progress=False,
                        agent=AgentSettings(policy="oracle", mode=mode))
    summary = distill(settings, tmp_path)
    records = lines(tmp_path / "trajectories.jsonl")
    tasks = lines(toy)
    assert sorted((r["instance_id"], r["metadata"]["rollout"]) for r in records) == sorted(
        (t["instance_id"], k) for t in tasks for k in range(2))
    gold = {t["instance_id"]: t["patch"] for t in tasks}
    for record in records:
        validate(record)
        assert record["stage"] == {"zero": "zero", "exec": "hero"}[mode]
        assert record["metadata"]["finish_reason"] == "submitted"
        assert record["patch"] == gold[record["instance_id"]]
        assert record["metadata"]["test_files"] and all(f.startswith("tests/") for f in record["metadata"]["test_files"])
    assert summary["episodes"] == 8 and summary["finish_reasons"] == {"submitted": 8}
    assert summary["steps"]["p50"] > 0 and summary["tokens"]["total"] > 0 and summary["wall_s"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "summary.png").read_bytes()[:8] == PNG
    # a rerun finds everything done and runs nothing
    again = distill(settings, tmp_path)
    assert again["skipped_as_done"] == 8 and len(lines(tmp_path / "trajectories.jsonl")) == 8


@pytest.mark.slow
def test_a_tasks_history_is_copied_once_for_all_its_attempts(toy, tmp_path):
    """The local runtime's copy of a task's git history serves every attempt of the task, and goes after the last."""
    from swehero.rollout.runner import Job, run_attempts

    first, second = load_tasks(str(toy))[:2]
    histories = tmp_path / "work" / "history"
    seen = []  # at each commit: the instance, and the history copies there are (name, inode)

    def commit(job, record):
        assert record["metadata"]["finish_reason"] == "submitted" and record["patch"] == job.task["patch"]
        seen.append((job.task["instance_id"], sorted((p.parent.name, p.name, p.stat().st_ino)
                                                     for p in histories.glob("*/*"))))

    jobs = [Job(first, 0), Job(first, 1), Job(first, 2), Job(second, 0)]
    ran = run_attempts(jobs, AgentSettings(policy="oracle", mode="zero"), commit, tmp_path / "work",
                       repos=toy.parent / "repos", workers=1)
    assert ran["attempts"] == 4
    copies = seen[0][1]
    assert [c[0] for c in copies] == [first["instance_id"]] and copies[0][1].endswith(".git")
    assert seen[:3] == [(first["instance_id"], copies)] * 3  # one copy, made once, for the three attempts
    assert [c[0] for c in seen[3][1]] == [second["instance_id"]]  # the first task's copy went after its last
    assert not (tmp_path / "work").exists()


def _stat(pid) -> list[str]:
    """State, parent pid, ... of a process (empty if it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if _stat(pid)[:1] not in ([], ["Z"])]


def _children_of(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if _stat(p.name)[1:2] == [str(pid)]]


def test_the_missing_repositories_of_a_run_are_one_short_line():
    """3,500 repositories without a mirror made an error line of 600 KB."""
    from swehero.agent.local import MissingRepository

    message = str(MissingRepository.of([f"o/r{i}: no mirror, git clone failed: not found" for i in range(3500)]))
    assert message.endswith("o/r4: no mirror, git clone failed: not found and 3495 more") and len(message) < 400


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_progress_in_a_log_is_lines_not_one_redrawn_line(toy, tmp_path, capfd, monkeypatch):
    """Outside a terminal (Slurm's output, a log file) the bar's carriage-return redraws piled up on one line (22 KB
    for 300 attempts), and Slurm shards were run without it: nothing between start and end."""
    import swehero.progress

    monkeypatch.setattr(swehero.progress, "LOG_EVERY", 0)
    distill(Settings(tasks=str(toy), limit=2, agent=AgentSettings(policy="gold", mode="exec")), tmp_path)
    err = capfd.readouterr().err
    assert "\r" not in err and "attempts: 100%" in err and "2/2" in err, err
    assert "--no-progress" not in (slurm_job(Settings(tasks=str(toy)), 2, tmp_path / "job")).read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_9_then_resume_loses_and_repeats_nothing(toy, tmp_path):
    out = tmp_path / "out"
    argv = CLI + ["--tasks", str(toy), "--mode", "zero", "--policy", "oracle", "--rollouts", "3", "--workers", "2",
                  "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trajectories = out / "trajectories.jsonl"
    deadline = time.monotonic() + 120
    while True:  # kill after 3 trajectories, while an attempt process runs (between attempts there is none)
        assert proc.poll() is None and time.monotonic() < deadline, "distill ended or stalled before the kill"
        children = _alive(_children_of(proc.pid))
        if children and trajectories.exists() and trajectories.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = lines(trajectories)
    assert 3 <= len(partial) < 12, "the kill must land mid-run"
    deadline = time.monotonic() + 30  # the attempts in flight end (or die with their parent, see below)
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(children)

    done = subprocess.run(argv, capture_output=True, text=True, timeout=200, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    keys = [(r["instance_id"], r["metadata"]["rollout"]) for r in lines(trajectories)]
    assert len(keys) == 12 and len(set(keys)) == 12
    assert Counter(k for _, k in keys) == {0: 4, 1: 4, 2: 4}
    assert json.loads(done.stdout)["episodes"] == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_as_done"] == len(partial) and summary["episodes"] == 12


def _start_waiting_run(argv: list[str], held: list, **popen) -> tuple[subprocess.Popen, list[int]]:
    """Start a distill run on the stalled teacher; returns it once both workers' attempts are waiting for a reply,
    with the attempt processes."""
    proc = subprocess.Popen(argv, **{"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen})
    deadline = time.monotonic() + 60
    while len(held) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "distill ended or stalled before the signal"
        time.sleep(0.05)
    children = _alive(_children_of(proc.pid))
    assert len(children) == 2
    return proc, children


def _gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pids)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_kill_9_takes_the_attempt_processes_with_it(toy, tmp_path, stalled_teacher):
    """Attempts waiting on their teacher die with their runner: nothing of a killed run keeps writing into its
    folder."""
    url, held = stalled_teacher
    argv = CLI + ["--tasks", str(toy), "--mode", "zero", "--policy", "openai", "--workers", "2", "--no-progress",
                  "--endpoints", url, "--out", str(tmp_path / "out")]
    proc, children = _start_waiting_run(argv, held)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _gone_within(children, 10), "an attempt process outlived its killed runner"
    finally:
        proc.kill()
        for pid in _alive(children):  # orphans, had the test failed
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_lets_the_running_attempts_finish_and_commit(toy, tmp_path, stalled_teacher):
    """After one Ctrl-C no attempt starts; the two running ones end when their teacher answers, are committed, and
    the command then exits as interrupted."""
    url, held = stalled_teacher
    out = tmp_path / "out"
    argv = [str(Path(sys.executable).parent / "swehero"), "distill", "run", "--tasks", str(toy), "--mode", "zero",
            "--policy", "openai", "--openai-model", "teacher", "--workers", "2", "--request-retries", "0",
            "--endpoints", url, "--out", str(out)]
    proc, children = _start_waiting_run(argv, held, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(3)
        assert proc.poll() is None and len(_alive(children)) == 2, "Ctrl-C ended the running attempts"
        for connection in held:  # the teacher answers that the conversation is too long: each episode ends there
            body = b'{"error": {"message": "maximum context length is 64 tokens"}}'
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            connection.close()
        assert proc.wait(timeout=60) == 1
        records = lines(out / "trajectories.jsonl")
        assert {r["metadata"]["finish_reason"] for r in records} == {"context_limit"}
        committed = sorted(r["instance_id"] for r in records)
        assert committed == sorted(t["instance_id"] for t in lines(toy)[:2])  # the two running; none started after
    finally:
        proc.kill()
        for pid in _alive(children):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", ["ctrl-c twice", "sigterm"])
def test_a_second_ctrl_c_or_sigterm_ends_the_running_attempts_at_once(toy, tmp_path, stalled_teacher, stop):
    """A first Ctrl-C lets the running attempts finish (these wait on a teacher that never answers); a second one, or
    SIGTERM, ends them within seconds, commits nothing for them, and the command exits as interrupted."""
    url, held = stalled_teacher
    out = tmp_path / "out"
    argv = [str(Path(sys.executable).parent / "swehero"), "distill", "run", "--tasks", str(toy), "--mode", "zero",
            "--policy", "openai", "--workers", "2", "--no-progress", "--endpoints", url, "--out", str(out)]
    # SIGINT as a terminal delivers it, even when the tests run as a background job (SIGINT ignored)
    proc, children = _start_waiting_run(argv, held, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                                        stderr=(tmp_path / "stderr.txt").open("wb"))
    try:
        if stop == "ctrl-c twice":
            proc.send_signal(signal.SIGINT)
            time.sleep(3)
            assert proc.poll() is None and len(_alive(children)) == 2, "the first Ctrl-C ended the running attempts"
            # said even with --no-progress: the run does not end at Ctrl-C, so it says why
            assert "the 2 running will finish and commit" in (tmp_path / "stderr.txt").read_text()
        start = time.monotonic()
        proc.send_signal(signal.SIGINT if stop == "ctrl-c twice" else signal.SIGTERM)
        assert proc.wait(timeout=60) == (1 if stop == "ctrl-c twice" else 128 + signal.SIGTERM)
        assert time.monotonic() - start < 30 and _gone_within(children, 5)
        assert not (out / "trajectories.jsonl").exists() or not lines(out / "trajectories.jsonl")
    finally:
        proc.kill()
        for pid in _alive(children):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_shards_partition_the_tasks_and_merge(toy, tmp_path):
    for i in range(2):
        distill(Settings(tasks=str(toy), shard=f"{i}/2", workers=2, progress=False,
                         agent=AgentSettings(policy="oracle", mode="zero")), tmp_path / f"shard-{i}")
    ids = [{r["instance_id"] for r in lines(tmp_path / f"shard-{i}" / "trajectories.jsonl")} for i in range(2)]
    assert ids[0] and ids[1] and not ids[0] & ids[1]
    assert ids[0] | ids[1] == {t["instance_id"] for t in lines(toy)}
    argv = CLI + ["merge", str(tmp_path / "shard-0"), str(tmp_path / "shard-1"), str(tmp_path / "shard-0"),
                  "--out", str(tmp_path / "all")]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert "4 episodes from 3 shard(s) (2 duplicate(s) skipped)" in done.stdout
    assert len(lines(tmp_path / "all" / "trajectories.jsonl")) == 4
    assert json.loads((tmp_path / "all" / "summary.json").read_text())["episodes"] == 4
    assert (tmp_path / "all" / "summary.png").read_bytes()[:8] == PNG
    # A shard stopped before its summary (an array task at its time limit) is merged as far as it got, and named.
    (tmp_path / "shard-1" / "summary.json").unlink()
    argv = CLI + ["merge", str(tmp_path / "shard-0"), str(tmp_path / "shard-1"), "--out", str(tmp_path / "part")]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert f"unfinished (no summary.json, or not started: run it, a rerun resumes, then merge again): " \
           f"{tmp_path / 'shard-1'}" in done.stderr
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert summary["episodes"] == 4 and summary["unfinished"] == [str(tmp_path / "shard-1")]
    # Merged again: nothing is copied twice, and what the first merge copied is no duplicate (it counted 6).
    done = subprocess.run(argv[:-1] + [str(tmp_path / "all")], capture_output=True, text=True, check=True)
    assert "4 episodes from 2 shard(s) (0 duplicate(s) skipped)" in done.stdout
    assert len(lines(tmp_path / "all" / "trajectories.jsonl")) == 4


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_a_merge_names_the_shards_started_or_pending_that_have_committed_nothing(toy, tmp_path):
    """A shard that has begun (its attempts record written) but committed nothing yet, its teacher still loading,
    failed the whole merge as "not the output of a distill run"; one whose array task never began was left out, and
    the merge read as whole."""
    from swehero.distill.shards import merge

    settings = Settings(tasks=str(toy), shard="0/3", progress=False, agent=AgentSettings(policy="oracle", mode="zero"))
    slurm_job(settings, 3, tmp_path)
    distill(settings, tmp_path / "shard-0")
    (tmp_path / "shard-1").mkdir()
    shutil.copy(tmp_path / "shard-0" / "attempts.json", tmp_path / "shard-1")
    summary = merge([tmp_path / "shard-0", tmp_path / "shard-1"], tmp_path)
    assert summary["unfinished"] == [str(tmp_path / "shard-1"), str(tmp_path / "shard-2")]
    assert summary["episodes"] == len(lines(tmp_path / "shard-0" / "trajectories.jsonl")) > 0


@pytest.mark.slow
def test_a_shard_rerun_that_stopped_is_unfinished_to_a_merge_and_merges_wait_for_each_other(toy, tmp_path):
    """A finished shard rerun for more rollouts and stopped (a time limit, no live teacher) kept its old summary, so
    a merge took it for finished and read none of the rerun's failures; and two merges into one folder at once
    each appended the lines new to both."""
    from swehero.distill.shards import merge
    from swehero.errors import InputError
    from swehero.jsonio import exclusive
    from swehero.rollout.endpoints import NoLiveEndpoint

    def finish(method: str, path: str, body: dict | None) -> tuple[int, dict]:
        call = {"id": "c0", "type": "function", "function": {"name": "finish", "arguments": '{"message": "done"}'}}
        return 200, {"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [call]}}]}

    shard, teacher = tmp_path / "shard-0", JsonServer(finish)
    settings = Settings(tasks=str(toy), workers=2, progress=False, endpoints=[teacher.url], agent=AgentSettings(
        policy="openai", mode="zero", openai=OpenAIConfig(model="m", request_retries=0)))
    try:
        distill(settings, shard)
    finally:
        teacher.close()
    assert merge([shard], tmp_path / "all")["unfinished"] == []
    with pytest.raises(NoLiveEndpoint):  # the rerun for a second rollout finds its teacher gone
        distill(dataclasses.replace(settings, rollouts=2), shard)
    assert merge([shard], tmp_path / "all")["unfinished"] == [str(shard)]
    with exclusive(tmp_path / "all" / ".lock"), pytest.raises(InputError, match="another run is writing into"):
        merge([shard], tmp_path / "all")


def test_merge_refuses_a_folder_no_run_wrote_to(tmp_path):
    from click.testing import CliRunner

    from swehero.cli import main

    (tmp_path / "shard-0").mkdir()
    result = CliRunner().invoke(main, ["distill", "merge", str(tmp_path / "shard-0"), "--out", str(tmp_path / "all")])
    assert result.exit_code == 1, result.output
    assert f"Error: {tmp_path / 'shard-0'}: not the output of a distill run (no trajectories.jsonl" in result.output
    assert not (tmp_path / "all").exists()


def test_merge_refuses_shards_made_with_other_settings(tmp_path):
    """Two shards of one result attempted two ways would be one dataset with one summary; the merged folder keeps
    the shards' settings, so that a later run into it is checked against them."""
    from swehero.distill.shards import merge
    from swehero.errors import InputError

    for shard, mode in (("shard-0", "zero"), ("shard-1", "exec"), ("shard-2", "zero")):
        (tmp_path / shard).mkdir()
        (tmp_path / shard / "trajectories.jsonl").write_text("")
        (tmp_path / shard / "attempts.json").write_text(json.dumps({"agent": {"mode": mode}}))
    with pytest.raises(InputError, match=rf"{tmp_path / 'shard-1'} holds attempts made otherwise than "
                                         rf"{tmp_path / 'shard-0'} \(agent.mode: 'zero' -> 'exec'\)"):
        merge([tmp_path / "shard-0", tmp_path / "shard-1"], tmp_path / "all")
    merge([tmp_path / "shard-0", tmp_path / "shard-2"], tmp_path / "all")
    assert json.loads((tmp_path / "all" / "attempts.json").read_text()) == {"agent": {"mode": "zero"}}


def _episode(instance_id: str, rollout: int, patch: str) -> dict:
    return {"instance_id": instance_id, "patch": patch, "messages": [{"role": "user", "content": "fix it"}],
            "metadata": {"rollout": rollout, "finish_reason": "submitted", "steps": 1}}


def _write_run(folder: Path, episodes: list[dict], failures: list[tuple[str, int]] = ()) -> None:
    folder.mkdir()
    (folder / "trajectories.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    (folder / "failures.jsonl").write_text("".join(json.dumps({"instance_id": i, "metadata": {"rollout": k},
                                                               "error": "crash"}) + "\n" for i, k in failures))
    (folder / "summary.json").write_text(json.dumps({"wall_s": 1.0}))


def test_merging_two_runs_of_the_same_tasks_is_refused(tmp_path):
    """Two independent runs of the same tasks both number their rollouts from 0: keeping one episode per pair would
    silently halve the data, so two different episodes under one pair are an error, before anything is merged; the
    same episode found twice (a shard merged again) is kept once."""
    from click.testing import CliRunner

    from swehero.cli import main

    _write_run(tmp_path / "A", [_episode("t-1", 0, "a0"), _episode("t-1", 1, "a1")])
    _write_run(tmp_path / "B", [_episode("t-1", 0, "b0"), _episode("t-1", 1, "b1")])
    merge = ["distill", "merge", str(tmp_path / "A"), str(tmp_path / "B"), "--out", str(tmp_path / "AB")]
    result = CliRunner().invoke(main, merge)
    assert result.exit_code == 1, result.output
    assert (f"Error: t-1 rollout 0: {tmp_path / 'A' / 'trajectories.jsonl'} and {tmp_path / 'B' / 'trajectories.jsonl'}"
            " hold different episodes of it" in result.output)
    assert "--shard i/n" in result.output
    assert not (tmp_path / "AB" / "trajectories.jsonl").exists()  # A's episodes were not merged either
    result = CliRunner().invoke(main, ["distill", "merge", str(tmp_path / "A"), str(tmp_path / "A"), "--out",
                                       str(tmp_path / "AA")])
    assert result.exit_code == 0 and "2 episodes from 2 shard(s) (2 duplicate(s) skipped)" in result.output


def test_merge_counts_the_failed_episodes_no_run_has_made_since(tmp_path):
    """A shard's failed episodes (`failures.jsonl`) that its trajectories lack leave the merged result short: the
    shard is not complete. A failure a later run made good is not counted."""
    from swehero.distill.shards import merge

    _write_run(tmp_path / "shard-0", [_episode("t-1", 0, "p")], failures=[("t-1", 0), ("t-2", 0), ("t-2", 0)])
    _write_run(tmp_path / "shard-1", [_episode("t-3", 0, "p")], failures=[("t-3", 0)])
    summary = merge([tmp_path / "shard-0", tmp_path / "shard-1"], tmp_path / "all")
    assert summary["failed"] == {str(tmp_path / "shard-0"): 1} and summary["outstanding_failures"] == 1
    assert json.loads((tmp_path / "all" / "summary.json").read_text())["failed"] == summary["failed"]


def _scripted_teacher(*commands: str) -> JsonServer:
    """A teacher that runs `commands` (one bash call a turn), then calls `finish`."""
    def answer(method: str, path: str, body: dict | None) -> tuple[int, dict]:
        turn = sum(m["role"] == "assistant" for m in body["messages"])
        call = ("execute_bash", {"command": commands[turn]}) if turn < len(commands) else ("finish", {"message": "ok"})
        message = {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{turn}", "type": "function", "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}
        return 200, {"choices": [{"message": message}]}

    return JsonServer(answer)


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_an_episode_past_the_context_at_once_is_committed_and_the_filter_drops_it(toy, tmp_path):
    """A problem statement past the teacher's context: the episode ends before its first turn, committed so that a
    resume does not make it again; the filter refused the whole file at it and wrote nothing."""
    from swehero.distill.filter_io import filter_file
    from swehero.distill.filters import FilterConfig
    from swehero.errors import InputError

    teacher = JsonServer(lambda method, path, body: (400, {"error": "This model's maximum context length is 131072 "
                                                                    "tokens. However, you requested 200000 tokens"}))
    try:
        settings = Settings(tasks=str(toy), limit=1, progress=False, endpoints=[teacher.url], agent=AgentSettings(
            policy="openai", mode="zero", openai=OpenAIConfig(model="m", request_retries=0)))
        assert distill(settings, tmp_path / "run")["finish_reasons"] == {"context_limit": 1}
    finally:
        teacher.close()
    out = filter_file(str(tmp_path / "run" / "trajectories.jsonl"), FilterConfig(stage="zero"), tmp_path / "f")
    assert lines(Path(out["trajectories"])) == []
    assert [d["rule"] for d in lines(Path(out["dropped"]))] == ["no_assistant_turn"]
    # never into the run's own folder (its log was replaced by what the filters kept), nor over the file it reads
    log = tmp_path / "run" / "trajectories.jsonl"
    before = log.read_bytes()
    with pytest.raises(InputError, match="a distill run's folder"):
        filter_file(str(log), FilterConfig(stage="zero"), tmp_path / "run")
    with pytest.raises(InputError, match="is read as input"):
        filter_file(str(tmp_path / "f"), FilterConfig(stage="zero"), tmp_path / "f")
    assert log.read_bytes() == before


def _exec_settings(tmp_path: Path, install: str, **limits) -> AgentSettings:
    """The oracle in execution mode, its task environment built into `tmp_path/envs` with the command `install`."""
    from swehero.agent.taskenv import EnvSettings

    return AgentSettings(policy="oracle", mode="exec", env=EnvSettings(install=install, cache=str(tmp_path / "envs")),
                         **limits)


ONLY_IN_THE_BUILD = 'case "$PWD" in /workspace/*) ;; *) sleep {};; esac'
"""An install command that sleeps while the shared environment is built (in a clone under the cache), not when a
checkout is installed into it (in the sandbox, at /workspace/...)."""
ONLY_IN_THE_SANDBOX = 'case "$PWD" in /workspace/*) sleep {};; esac'


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_time_limit_reached_during_setup_is_an_agent_error_that_the_next_run_retries(toy, tmp_path):
    """Installing the checkout into its environment (the setup of an execution-mode attempt) outlasts the time
    limit: no outcome of the model's, so no record in trajectories.jsonl committed as done, but a failure the next
    run retries, saying what the setup was doing."""
    settings = Settings(tasks=str(toy), limit=1, workers=1, progress=False,
                        agent=_exec_settings(tmp_path, ONLY_IN_THE_SANDBOX.format(60), time_limit_s=2,
                                             kill_grace_s=60))
    start = time.monotonic()
    summary = distill(settings, tmp_path / "out")
    committed = tmp_path / "out" / "trajectories.jsonl"
    assert not committed.exists() or [r["metadata"] for r in lines(committed)] == []
    assert summary["failed_this_run"] == 1 and summary["episodes"] == 0
    assert time.monotonic() - start < 50  # ended at the time limit, not by the kill 60 s later
    [failure] = lines(tmp_path / "out" / "failures.jsonl")
    task = lines(toy)[0]
    assert failure["instance_id"] == task["instance_id"]
    assert failure["error"] == (f"time limit of 2s reached during setup (checking out {task['repo']} at "
                                f"{task['base_commit'][:12]} and installing it into its environment)")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_building_the_shared_task_environment_does_not_count_against_the_time_limit(toy, tmp_path):
    """The environment an attempt waits for (another attempt may be building it) or builds is shared by every
    attempt of the repository: an attempt whose build outlasts its own time limit (and the grace after it) is not
    ended or killed for it, and still has its whole limit for its episode."""
    from swehero.rollout.attempt import attempt_in_child

    task = lines(toy)[0]
    settings = _exec_settings(tmp_path, ONLY_IN_THE_BUILD.format(8), time_limit_s=5, kill_grace_s=1)
    start = time.monotonic()
    record = attempt_in_child(task, settings, toy.parent / "repos" / task["repo"].replace("/", "__"),
                              tmp_path / "work")
    meta = record["metadata"]
    assert meta["finish_reason"] == "submitted", meta
    assert record["patch"] == task["patch"] and meta["steps"] > 1
    assert time.monotonic() - start > 8  # the build slept
    assert [p.name for p in (tmp_path / "envs").glob("*/swehero-env.json")]  # built, for the attempts after it


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_wait_for_the_shared_environment_is_bounded(toy, tmp_path):
    """Another process holds the environment's lock and never lets go: the wait goes uncounted for twice the
    build's timeout, then the attempt's own time limit runs out in it, an agent error saying what setup waited for."""
    from swehero.agent.taskenv import env_key, find_python, install_spec
    from swehero.jsonio import exclusive
    from swehero.rollout.attempt import attempt_in_child

    task = lines(toy)[0]
    settings = _exec_settings(tmp_path, "true", time_limit_s=1, kill_grace_s=0.5)
    settings = dataclasses.replace(settings, env=dataclasses.replace(settings.env, build_timeout_s=1))
    spec = install_spec(task, settings.env)
    lock = tmp_path / "envs" / f"{env_key(task, spec, find_python(spec.python), project=True)}.lock"
    lock.parent.mkdir()
    with exclusive(lock):
        start = time.monotonic()
        record = attempt_in_child(task, settings, toy.parent / "repos" / "swehero-toy__calc", tmp_path / "work")
        took = time.monotonic() - start
    meta = record["metadata"]
    assert meta["finish_reason"] == "agent_error", meta
    assert meta["error"] == ("time limit of 1s reached during setup (waiting for, or building, the task environment "
                             f"of {task['repo']} {task['version']})")
    assert 3 <= took < 10  # 1 s of its own and 2 s uncounted, then ended by its limit, not killed


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("stopped_by", ["runner", "scheduler"])
def test_an_environment_build_stopped_midway_leaves_nothing_behind(toy, tmp_path, stopped_by):
    """An attempt stopped (SIGTERM) while it builds the shared environment: no half-built environment is left, and
    no failure is recorded for the build, which did not fail; the next attempt builds it afresh. Stopped by the
    runner (`stop`), or by a scheduler, whose SIGTERM reaches the attempt's process before the runner has set
    `stop` (`scancel`: every process of the job): interrupted all the same (it was an agent_error, committed)."""
    from concurrent.futures import ThreadPoolExecutor

    from swehero.rollout.attempt import attempt_in_child

    def stop_attempt() -> None:
        if stopped_by == "runner":
            return stop.set()
        work = str(tmp_path / "work")
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                if "swehero.rollout.attempt" in argv and any(a.startswith(work) for a in argv):
                    os.kill(int(proc.name), signal.SIGTERM)

    task = lines(toy)[0]
    source = toy.parent / "repos" / task["repo"].replace("/", "__")
    settings = _exec_settings(tmp_path, ONLY_IN_THE_BUILD.format(60), time_limit_s=600)
    envs, stop = tmp_path / "envs", threading.Event()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(attempt_in_child, task, settings, source, tmp_path / "work", stop)
        deadline = time.monotonic() + 120
        while not any("sleep 60" in log.read_text() for log in envs.glob("*.log")):  # the build runs the install
            assert not future.done() and time.monotonic() < deadline, future.result() if future.done() else "no build"
            time.sleep(0.05)
        time.sleep(0.5)
        stop_attempt()
        assert future.result(timeout=60) is None
    assert not list(envs.glob("*.failed.json"))
    assert sorted(p.name for p in envs.iterdir() if p.is_dir() and p.name != "wheels") == []
    quick = _exec_settings(tmp_path, ONLY_IN_THE_BUILD.format(60).replace("sleep 60", "true"), time_limit_s=600)
    record = attempt_in_child(task, quick, source, tmp_path / "work")
    assert record["metadata"]["finish_reason"] == "submitted" and record["patch"] == task["patch"]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kill_grace_s", [60, 1])
def test_an_episode_that_ended_in_time_keeps_its_patch_however_long_taking_it_takes(toy, tmp_path, kill_grace_s):
    """The agent submits well within the time limit, and taking its patch (`git add -A` running a clean filter the
    agent configured, which sleeps) outlasts the limit: the limit, reached after the episode ended, ends nothing,
    and the attempt is the submitted episode with its messages and patch. Unless the patch takes longer than the
    grace period too: the attempt is killed, and is the episode's conversation as it saved it, an `agent_error`
    whose patch was not taken (it was a record without messages)."""
    from swehero.rollout.attempt import attempt_in_child

    task = lines(toy)[0]
    teacher = _scripted_teacher("git config filter.slow.clean 'sleep 8; cat' && printf 'slow.txt filter=slow\\n' > "
                                ".gitattributes && echo late > slow.txt")
    settings = AgentSettings(policy="openai", mode="zero", time_limit_s=4, kill_grace_s=kill_grace_s,
                             openai=OpenAIConfig(base_url=teacher.url, model="m", request_retries=0))
    try:
        start = time.monotonic()
        record = attempt_in_child(task, settings, toy.parent / "repos" / task["repo"].replace("/", "__"),
                                  tmp_path / "work")
    finally:
        teacher.close()
    meta = record["metadata"]
    assert meta["steps"] == 2 and len(record["messages"]) == 5
    if kill_grace_s == 1:
        assert (meta["finish_reason"], record["patch"]) == ("agent_error", ""), meta
        assert meta["error"] == ("taking the patch failed: taking it did not end within 1s of the time limit of 4s; "
                                 "it was killed")
        return
    assert meta["finish_reason"] == "submitted", meta
    assert "+late" in record["patch"] and "slow.txt" in record["patch"]
    assert time.monotonic() - start > 8  # the patch took its time, past the limit


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_attempt_killed_while_closing_its_runtime_keeps_its_finished_episode(toy, tmp_path):
    """The episode has ended and saved its trajectory, patch included, and the attempt hangs while closing its
    runtime (as on a busy Docker daemon removing the container; here the attempt process is stopped while it
    removes the 40 000 files the agent left in its /tmp): killed at the end of the grace period, the attempt is the
    finished episode as it saved it, not a record without messages or patch."""
    from concurrent.futures import ThreadPoolExecutor

    from swehero.rollout.attempt import attempt_in_child

    task = lines(toy)[0]
    teacher = _scripted_teacher("echo '# reviewed' >> calc/ops.py && mkdir /tmp/many && cd /tmp/many && "
                                "seq 40000 | xargs touch")
    settings = AgentSettings(policy="openai", mode="zero", time_limit_s=15, kill_grace_s=1,
                             openai=OpenAIConfig(base_url=teacher.url, model="m", request_retries=0))
    work = tmp_path / "work"
    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(attempt_in_child, task, settings, toy.parent / "repos" / "swehero-toy__calc", work)
            deadline = time.monotonic() + 60
            while True:  # until the episode's last save, which writes the patch: then the runtime is closed
                assert not future.done() and time.monotonic() < deadline, "the attempt ended before it was stopped"
                try:
                    if json.loads((work / "trajectory.json").read_text())["patch"]:
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.005)
            [child] = [pid for pid in _children_of(os.getpid())
                       if b"swehero.rollout.attempt" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            os.killpg(child, signal.SIGSTOP)  # it hangs where it is, closing its runtime
            record = future.result(timeout=60)
    finally:
        teacher.close()
    meta = record["metadata"]
    assert meta["finish_reason"] == "submitted", meta
    assert meta["steps"] == 2 and len(record["messages"]) == 5 and "+# reviewed" in record["patch"]
    assert meta["seconds"] >= 15


def test_an_attempt_whose_runner_is_gone_does_nothing(tmp_path):
    """A runner killed while its attempt process still imports (before it can ask to die with it) leaves no
    attempt behind: the process sees its parent is not the runner that started it, and exits."""
    out = tmp_path / "record.json"
    done = subprocess.run([sys.executable, "-m", "swehero.rollout.attempt", str(tmp_path / "spec"), str(out), "1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "the runner that started this attempt is gone" in done.stderr
    assert not out.exists()


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_a_second_run_into_a_folder_in_use_is_refused(toy, tmp_path):
    """Two runs appending to one folder at once (a Slurm requeue while the first still runs) would interleave their
    logs; the second stops before any work, and the folder is free again once the first ends."""
    import fcntl

    from swehero.errors import InputError
    from swehero.eval.pipeline import Settings as EvalSettings, evaluate

    settings = Settings(tasks=str(toy), limit=1, progress=False, agent=AgentSettings(policy="oracle"))
    for folder, run in (("d", lambda: distill(settings, tmp_path / "d")),
                        ("e", lambda: evaluate(EvalSettings(tasks=str(toy), limit=1), tmp_path / "e"))):
        (tmp_path / folder).mkdir()
        with open(tmp_path / folder / ".lock", "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            with pytest.raises(InputError, match=rf"{tmp_path / folder}: another run is writing into this folder"):
                run()
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == [".lock"]
    assert distill(settings, tmp_path / "d")["episodes"] == 1


def test_slurm_launcher_writes_an_array_job(toy, tmp_path):
    argv = CLI + ["--tasks", str(toy), "--mode", "zero", "--endpoints", "http://a:8000/v1", "--endpoints",
                  "http://b:8000/v1", "--rollouts", "3", "--out", str(tmp_path), "--launcher", "slurm",
                  "--shards", "8", "--sbatch-arg=--gres=gpu:8"]
    subprocess.run(argv, check=True, capture_output=True)
    script = (tmp_path / "distill.sbatch").read_text()
    assert "#SBATCH --array=0-7" in script and "#SBATCH --gres=gpu:8" in script
    assert "--gpus=" not in script  # the endpoints serve the teacher
    command = script.splitlines()[-1]
    assert command.startswith(f"{sys.executable} -m swehero distill ")  # not whichever swehero a node's PATH finds
    assert '--shard "$SLURM_ARRAY_TASK_ID/8"' in command and f'--out "{tmp_path}/shard-$SLURM_ARRAY_TASK_ID"' in command
    assert f"--config {tmp_path / 'distill.yaml'}" in command and "--launcher" not in command
    done = subprocess.run(["bash", "-n", str(tmp_path / "distill.sbatch")], capture_output=True, check=False)
    assert done.returncode == 0
    # Each array task reads the run's own settings back, exactly.
    import click
    from click.testing import CliRunner

    from swehero.recipe.options import settings_options

    @click.command()
    @settings_options(Settings)
    def read(settings):
        click.echo(json.dumps([settings.endpoints, settings.rollouts, settings.tasks, settings.agent.mode]))

    result = CliRunner().invoke(read, ["--config", str(tmp_path / "distill.yaml")])
    assert json.loads(result.output) == [["http://a:8000/v1", "http://b:8000/v1"], 3, str(toy.resolve()), "zero"]


def test_an_array_job_serving_its_teacher_asks_for_the_servers_gpus(toy, tmp_path):
    """Without a GPU request each array task had no GPU (or two 8-GPU servers met on one node) and one CPU."""
    argv = CLI + ["--tasks", str(toy), "--mode", "zero", "--serve-model", "Qwen/Qwen3-Coder-480B-A35B-Instruct",
                  "--tensor-parallel-size", "8", "--workers", "16", "--out", str(tmp_path), "--launcher", "slurm",
                  "--shards", "4", "--sbatch-arg=--partition=gpu"]
    subprocess.run(argv, check=True, capture_output=True)
    script = (tmp_path / "distill.sbatch").read_text().splitlines()
    assert "#SBATCH --gpus=8" in script and "#SBATCH --cpus-per-task=26" in script
    assert "#SBATCH --nodes=1" in script  # Slurm may spread a job's --gpus over nodes; the server needs them on one
    assert script.index("#SBATCH --cpus-per-task=26") < script.index("#SBATCH --partition=gpu")  # the user's last


def test_an_array_job_on_shared_endpoints_asks_for_a_cpu_per_episode(toy, tmp_path):
    """Without a CPU request each array task got Slurm's one CPU, on which its workers' episodes queued."""
    argv = CLI + ["--tasks", str(toy), "--mode", "zero", "--policy", "oracle", "--rollouts", "2", "--workers", "2",
                  "--out", str(tmp_path), "--launcher", "slurm", "--shards", "2", "--sbatch-arg=--cpus-per-task=8"]
    subprocess.run(argv, check=True, capture_output=True)
    script = (tmp_path / "distill.sbatch").read_text().splitlines()
    assert "--gpus=" not in "\n".join(script)
    assert script.index("#SBATCH --cpus-per-task=4") < script.index("#SBATCH --cpus-per-task=8")  # the user's last


@pytest.mark.slow
def test_a_run_resumes_only_with_the_settings_its_episodes_were_made_with(toy, tmp_path):
    """Episodes of two ways of attempting would be one dataset with one summary; more tasks or workers resume, fewer
    tasks or rollouts do not (the episodes no longer planned would stay in the data)."""
    from swehero.errors import InputError

    zero = Settings(tasks=str(toy), limit=1, progress=False, agent=AgentSettings(policy="oracle", mode="zero"))
    distill(zero, tmp_path)
    made = (tmp_path / "trajectories.jsonl").read_text()
    with pytest.raises(InputError, match=rf"{tmp_path} holds attempts made with other settings \(agent.mode: 'zero' "
                                         r"-> 'exec'\): write into another folder"):
        distill(Settings(tasks=str(toy), progress=False, agent=AgentSettings(policy="oracle", mode="exec")), tmp_path)
    assert (tmp_path / "trajectories.jsonl").read_text() == made
    summary = distill(Settings(tasks=str(toy), workers=2, progress=False,
                               agent=AgentSettings(policy="oracle", mode="zero")), tmp_path)
    assert summary["skipped_as_done"] == 1 and summary["episodes"] == len(lines(toy))
    made = (tmp_path / "trajectories.jsonl").read_text()
    with pytest.raises(InputError, match=rf"committed episodes of {len(lines(toy)) - 1} task\(s\) are not in this "
                                         r"run's plan"):
        distill(zero, tmp_path)
    assert (tmp_path / "trajectories.jsonl").read_text() == made
    (tmp_path / "attempts.json").write_text("[1]")  # damaged: named in one line, not an AttributeError
    with pytest.raises(InputError, match=r"attempts.json: not the attempts record of a distill run \(a JSON object"):
        distill(Settings(tasks=str(toy), progress=False, agent=AgentSettings(policy="oracle", mode="zero")), tmp_path)


@pytest.mark.slow
def test_a_changed_prompts_file_is_another_setting_and_its_path_is_not(toy, tmp_path):
    from swehero.agent.prompts import FORMAT
    from swehero.errors import InputError

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"format": FORMAT, "templates": {"zero": {
        "system": ["You are an execution-free agent."], "task": [{"field": "problem_statement"}]}}}))
    run = lambda path: distill(Settings(tasks=str(toy), limit=1, progress=False, agent=AgentSettings(  # noqa: E731
        policy="oracle", mode="zero", prompts=path)), tmp_path / "out")
    run(str(prompts))
    run(os.path.relpath(prompts))  # the same file named otherwise: resumes
    prompts.write_text(prompts.read_text().replace("execution-free", "execution free"))
    with pytest.raises(InputError, match=r"holds attempts made with other settings \(agent.prompts: 'sha256:"):
        run(str(prompts))


def test_endpoint_pool_least_loaded_and_dead_endpoints(tmp_path):
    pool = EndpointPool(["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"])
    with pool.borrow() as first, pool.borrow() as second:
        assert first is not second  # the second goes to the idle one
        with pool.borrow() as third:
            assert third is first  # ties: the first listed
    dead = f"http://127.0.0.1:{free_port()}/v1"
    pool = EndpointPool([dead])
    with pool.borrow() as endpoint:
        assert not pool.check(endpoint) and endpoint.dead
    with pytest.raises(NoLiveEndpoint), pool.borrow():
        pass
    assert pool.report() == [{"url": dead, "episodes": 1, "failed": 0, "dead": True}]


def test_shards_sharing_endpoints_fill_them_all():
    """Every shard's pool gave ties to the first listed: 16 shards of 4 workers over 8 teachers loaded the first
    four with 16 episodes each and left four idle. Each shard's ties now start where the previous shard's workers
    ended; a URL written with and without its trailing slash is one teacher."""
    from contextlib import ExitStack

    urls = [f"http://teacher-{i}:8000/v1" for i in range(8)]
    load = dict.fromkeys(urls, 0)
    with ExitStack() as borrowed:
        for shard in range(16):
            pool = EndpointPool(urls, first=shard * 4)
            for _ in range(4):
                load[borrowed.enter_context(pool.borrow()).url] += 1
    assert list(load.values()) == [8] * 8
    assert [e.url for e in EndpointPool([urls[0], urls[0] + "/", urls[1]]).endpoints] == urls[:2]


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_a_shard_starts_its_ties_where_the_shards_before_it_ended(toy, tmp_path):
    """Shard 1 of 2, one worker, two teachers: its episodes go to the second teacher (each finds both idle), where
    every shard gave them to the first."""
    def finish(method: str, path: str, body: dict | None) -> tuple[int, dict]:
        call = {"id": "c0", "type": "function", "function": {"name": "finish", "arguments": '{"message": "done"}'}}
        return 200, {"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [call]}}]}

    teachers = [JsonServer(finish), JsonServer(finish)]
    try:
        for workers in (1, 0):  # 0 runs one at a time too
            summary = distill(Settings(tasks=str(toy), shard="1/2", workers=workers, progress=False,
                                       endpoints=[t.url for t in teachers], agent=AgentSettings(
                                           policy="openai", mode="zero", openai=OpenAIConfig(model="m"))),
                              tmp_path / f"out{workers}")
            assert [e["episodes"] for e in summary["endpoints"]] == [0, summary["episodes"]] != [0, 0]
    finally:
        for teacher in teachers:
            teacher.close()


def test_an_endpoint_failing_in_a_row_is_benched_then_tried_one_attempt_at_a_time(monkeypatch):
    """Always the least loaded, an endpoint that fails every attempt at once would be chosen again and again."""
    from swehero.rollout import endpoints

    pool = EndpointPool(["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"])
    a, b = pool.endpoints
    for _ in range(endpoints.FAILURES_IN_ROW - 1):
        pool.ended(a, failed=True)
    pool.ended(a, failed=False)  # not in a row
    for _ in range(endpoints.FAILURES_IN_ROW):
        pool.ended(a, failed=True)
    with pool.borrow() as first, pool.borrow() as second:
        assert first is second is b  # benched: b takes them all, however busy
    with pool.borrow(instead_of=b) as retry:
        assert retry is a  # an attempt failed on b is made again elsewhere: on a benched endpoint, not back on b
    for _ in range(endpoints.FAILURES_IN_ROW):
        pool.ended(b, failed=True)
    with pool.borrow() as first, pool.borrow() as second:
        assert (first, second) == (a, b)  # both benched: they still serve, never none while one lives
    pool.ended(b, failed=False)
    monkeypatch.setattr(endpoints, "BENCH_S", 0.0)
    pool.ended(a, failed=True)  # a's bench is over at once: it is on trial
    with pool.borrow() as trial, pool.borrow() as other, pool.borrow() as then:
        assert (trial, other, then) == (a, b, b)  # one attempt at a time
    pool.ended(a, failed=False)
    with pool.borrow() as first, pool.borrow() as second:
        assert (first, second) == (a, b)
    in_row = endpoints.FAILURES_IN_ROW
    assert [(e["failed"], e["episodes"]) for e in pool.report()] == [(2 * in_row, 4), (in_row, 6)]


def test_only_an_episode_the_server_never_answered_is_its_failure():
    """A time limit before the first reply is the server's failure (distillation retries it); the record without
    messages of an attempt killed after its grace period (a hung runtime) says nothing of the server."""
    from swehero.rollout.attempt import _cut_short
    from swehero.rollout.runner import _failed_for, _unanswered

    settings = AgentSettings(policy="openai", openai=OpenAIConfig(base_url="http://teacher/v1"))
    task = {"instance_id": "t-1", "repo": "o/t", "base_commit": "0" * 40, "problem_statement": "x"}
    killed = _unanswered(_cut_short(task, settings, "episode", "", killed=True), settings)
    assert killed["metadata"]["finish_reason"] == "time_limit" and not _failed_for(killed)
    waited = _cut_short(task, settings, "episode", "")
    waited["messages"] = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]  # the opening
    unanswered = _unanswered(waited, settings)
    assert unanswered["metadata"]["finish_reason"] == "agent_error" and _failed_for(unanswered)
    assert unanswered["metadata"]["error"] == "http://teacher/v1: no reply before the time limit of 3600s"


def test_a_teacher_behind_an_api_key_is_alive_to_the_probe_and_a_failing_one_is_not():
    """The probe after an agent_error sends no key: a 401 took a key-protected teacher for dead, which stopped the
    run (NoLiveEndpoint) at its first agent error, whatever caused it."""
    status = {"code": 401}
    server = JsonServer(lambda method, path, body: (status["code"], {"error": "no key"}))
    try:
        pool = EndpointPool([server.url])
        with pool.borrow() as endpoint:
            assert pool.check(endpoint) and not endpoint.dead
            status["code"] = 503
            assert not pool.check(endpoint) and endpoint.dead
    finally:
        server.close()


def test_the_replicas_of_one_server_are_endpoints_of_their_own(tmp_path):
    url = "http://127.0.0.1:1/v1"
    pool = EndpointPool([Endpoint(url, 0), Endpoint(url, 1), Endpoint(url, 1)])
    with pool.borrow() as first, pool.borrow() as second:
        assert (first.replica, second.replica) == (0, 1)  # the second attempt goes to the idle replica
    assert pool.report() == [{"url": url, "replica": 0, "episodes": 1, "failed": 0, "dead": False},
                             {"url": url, "replica": 1, "episodes": 1, "failed": 0, "dead": False}]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_each_attempt_keeps_to_one_replica_and_attempts_spread_over_them(toy, tmp_path):
    """A server of two replicas (data parallelism): every request of an attempt carries the same replica, so its
    turns find their prefix in that replica's cache; the attempts, two at a time, go to both."""
    from swehero.rollout.runner import Job, run_attempts

    def answer(method: str, path: str, body: dict | None) -> tuple[int, dict]:
        turns = sum(m["role"] == "assistant" for m in body["messages"])
        call = ("think", {"thought": "look first"}) if turns < 2 else ("finish", {"message": "done"})
        message = {"role": "assistant", "content": "", "tool_calls": [
            {"id": f"c{turns}", "type": "function", "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}
        return 200, {"choices": [{"message": message}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}

    server = JsonServer(answer)
    try:
        tasks = load_tasks(str(toy))[:4]
        settings = AgentSettings(policy="openai", mode="zero", openai=OpenAIConfig(model="m", request_retries=0))
        ran = run_attempts([Job(task, 0) for task in tasks], settings, lambda job, record: None, tmp_path / "work",
                           repos=toy.parent / "repos", endpoints=[Endpoint(server.url, 0), Endpoint(server.url, 1)],
                           workers=2)
    finally:
        server.close()
    assert ran["attempts"] == 4 and len(server.received) == 4 * 3
    ranks = {}  # each attempt (its task's problem statement opens its conversation) -> the ranks its requests named
    for headers, body in server.received:
        task = next(t["instance_id"] for t in tasks if t["problem_statement"] in body["messages"][1]["content"])
        ranks.setdefault(task, set()).add(headers.get("X-data-parallel-rank"))
    assert len(ranks) == 4 and all(len(named) == 1 for named in ranks.values())
    assert set().union(*ranks.values()) == {"0", "1"}
    assert [(e["replica"], e["url"]) for e in ran["endpoints"]] == [(0, server.url), (1, server.url)]


def _teacher_answering_models(chat) -> JsonServer:
    """A teacher whose `GET /models` answers (the pool's probe finds it alive) and whose chat requests `chat()`
    answers."""
    return JsonServer(lambda method, path, body: chat() if method == "POST" else (200, {"data": [{"id": "m"}]}))


def _openai(endpoints: list[str], time_limit_s: float = 60.0, **settings) -> Settings:
    return Settings(tasks=settings.pop("tasks"), progress=False, endpoints=endpoints, **settings, agent=AgentSettings(
        policy="openai", mode="zero", time_limit_s=time_limit_s,
        openai=OpenAIConfig(model="m", request_retries=1, backoff=0.01)))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_teacher_that_fails_every_request_is_benched_and_its_episodes_made_on_another(toy, tmp_path):
    """Its API up, its engine dead: a 500 at once. Always the least loaded, it was given most episodes, each a
    failure (7 of 12)."""
    from swehero.rollout.endpoints import FAILURES_IN_ROW

    failing, healthy = _teacher_answering_models(lambda: (500, {"error": "engine dead"})), _scripted_teacher()
    try:
        summary = distill(_openai([failing.url, healthy.url], tasks=str(toy), rollouts=3, workers=2), tmp_path)
    finally:
        failing.close()
        healthy.close()
    assert summary["episodes"] == 3 * len(lines(toy)) and summary["failed_this_run"] == 0
    failed = summary["endpoints"][0]
    assert FAILURES_IN_ROW <= failed["failed"] == failed["episodes"] <= FAILURES_IN_ROW + 1  # + the one in flight
    assert not (tmp_path / "failures.jsonl").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_teacher_that_never_replies_leaves_failures_to_retry_not_time_limits(toy, tmp_path):
    """Its POST never returns: each episode reached the time limit before a step, and was committed as a
    `time_limit` episode that a resume never made again (and that the filter refused). Now it is a failure the
    next run retries, and a run with another teacher makes it there."""
    released = threading.Event()
    hung = _teacher_answering_models(lambda: (released.wait(60), (500, {}))[1])
    healthy = _scripted_teacher()
    try:
        alone = distill(_openai([hung.url], tasks=str(toy), limit=1, time_limit_s=2), tmp_path)
        assert (alone["episodes"], alone["failed_this_run"], alone["outstanding_failures"]) == (0, 1, 1)
        [failure] = lines(tmp_path / "failures.jsonl")
        assert failure["error"] == f"{hung.url}: no reply before the time limit of 2s"
        both = distill(_openai([hung.url, healthy.url], tasks=str(toy), limit=1, time_limit_s=2), tmp_path)
    finally:
        released.set()
        hung.close()
        healthy.close()
    assert (both["episodes"], both["failed_this_run"], both["outstanding_failures"]) == (1, 0, 0)
    assert [(e["episodes"], e["failed"]) for e in both["endpoints"]] == [(1, 1), (1, 0)]  # tried there, then made
    [episode] = lines(tmp_path / "trajectories.jsonl")
    assert episode["metadata"]["finish_reason"] == "submitted"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_run_whose_endpoints_stop_answering_stops_and_commits_nothing_for_them(toy, tmp_path):
    """Committed as agent errors, the attempts left would never be redone by a resume: the run stops instead."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "swehero", "distill", "run", "--tasks", str(toy), "--mode", "zero",
                           "--policy", "openai", "--request-retries", "0", "--no-progress", "--endpoints", dead,
                           "--out", str(out)], capture_output=True, text=True, timeout=100)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().endswith(f"Error: no model endpoint answers (GET /models) any more: {dead}; the "
                                        "attempts committed are kept, and the same command resumes with the rest "
                                        "once one answers")
    assert not any(lines(out / name) for name in ("trajectories.jsonl", "failures.jsonl") if (out / name).exists())


@pytest.mark.slow
def test_a_missing_repository_fails_the_run_after_the_others_and_a_rerun_does_it(toy, tmp_path):
    """An episode whose repository is missing is not attempted or committed; the others are, then the command
    fails naming the repository; the next run does the missing one. The summary counts it, as not attempted: a
    merge of the shard said nothing of it (it is in neither file), and the result was taken for complete."""
    from click.testing import CliRunner

    from swehero.agent.local import MissingRepository
    from swehero.distill.cli import merge as merge_command

    repos = tmp_path / "repos"
    shutil.copytree(toy.parent / "repos", repos)
    shutil.rmtree(repos / "swehero-toy__calc")
    settings = Settings(tasks=str(toy), workers=2, progress=False, repos=str(repos),
                        agent=AgentSettings(policy="oracle", mode="zero"))
    with pytest.raises(MissingRepository, match="swehero-toy/calc"):
        distill(settings, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["episodes"], summary["not_attempted"]) == (3, 1)
    assert summary["missing_repositories"] == [f"no git repository for swehero-toy/calc at {repos}/swehero-toy__calc:"
                                               " clone it there (the folder of repositories holds one clone per "
                                               "repository, named owner__name)"]
    merged = CliRunner().invoke(merge_command, [str(tmp_path / "out"), "--out", str(tmp_path / "merged")])
    assert merged.exit_code == 0 and "episodes not attempted, their repositories missing (put them in place, rerun " \
        f"the shard, then merge again): {tmp_path / 'out'} (1); no git repository for swehero-toy/calc" in merged.output
    shutil.copytree(toy.parent / "repos" / "swehero-toy__calc", repos / "swehero-toy__calc")
    summary = distill(settings, tmp_path / "out")
    assert summary["episodes"] == 4 and summary["failed_this_run"] == 0 and summary["skipped_as_done"] == 3
    assert (summary["not_attempted"], summary["missing_repositories"]) == (0, [])


@pytest.mark.slow
def test_a_task_whose_base_commit_its_repository_lacks_is_not_attempted_but_named(toy, tmp_path):
    """Its checkout failed in the attempt, an `agent_error` in failures.jsonl: every rerun made it again (fetching
    its mirror again), and a merge advised a rerun that could not help. It is the task's input, named as a
    missing repository is."""
    from swehero.agent.local import MissingRepository

    rows = [json.loads(line) for line in toy.read_text().splitlines()]
    rows[0]["base_commit"] = "0" * 40
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = Settings(tasks=str(tasks), repos=str(toy.parent / "repos"), workers=2, progress=False,
                        agent=AgentSettings(policy="oracle", mode="zero"))
    with pytest.raises(MissingRepository, match=f"no commit {'0' * 40} \\(the task's base_commit\\)"):
        distill(settings, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["episodes"], summary["not_attempted"], summary["outstanding_failures"]) == (len(rows) - 1, 1, 0)
    assert not (tmp_path / "out" / "failures.jsonl").exists()


@pytest.mark.slow
def test_a_folder_holding_trajectories_another_command_wrote_is_named(toy, tmp_path):
    """`--out` at an import stage's folder (its trajectories.jsonl has no rollout numbers): a KeyError traceback."""
    from swehero.errors import InputError

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "trajectories.jsonl").write_text(json.dumps(
        {"instance_id": "swehero-toy__calc-1", "messages": [], "metadata": {"stage": "zero"}}) + "\n")
    settings = Settings(tasks=str(toy), progress=False, agent=AgentSettings(policy="oracle", mode="zero"))
    with pytest.raises(InputError, match=f"^{tmp_path / 'out' / 'trajectories.jsonl'}:1: not a distill run's "
                                         "trajectory: metadata.rollout is no rollout number$"):
        distill(settings, tmp_path / "out")


@pytest.mark.slow
def test_distill_and_filter_stage_kinds(toy, tmp_path):
    """Both kinds' Settings build from recipe data with the recipe schema, then run through the stage contract."""
    from swehero.distill import filter_stage, stage
    from swehero.recipe.loader import Lines
    from swehero.recipe.schema import build
    from swehero.recipe.stage import StageContext

    def settings(kind, data):
        problems = []
        built = build(kind.Settings, data, (), Lines("recipe.yaml"), problems)
        assert not problems
        return built

    def ctx(name):
        (tmp_path / name).mkdir()
        return StageContext(name, tmp_path / name, 0, None, {}, False)

    distilled = stage.run(settings(stage, {"tasks": str(toy), "rollouts": 2, "workers": 2, "progress": False,
                                           "serve": {"model": "", "max_model_len": 8192},
                                           "agent": {"policy": "oracle", "mode": "zero"}}), ctx("distill"))
    assert len(read_jsonl(distilled["trajectories"])) == 8
    filtered = filter_stage.run(settings(filter_stage, {"trajectories": distilled["trajectories"],
                                                        "rules": {"stage": "zero"}}), ctx("filter"))
    report = json.loads(Path(filtered["report"]).read_text())
    assert report["input"] == 8 and report["kept"] == 4  # the oracle's two rollouts of a task are identical
    assert {r["name"]: r["dropped"] for r in report["rules"]}["duplicate"] == 4


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_exclude_decontaminates_before_running(toy, tmp_path):
    evals = tmp_path / "eval.jsonl"
    evals.write_text(toy.read_text().splitlines()[1] + "\n")  # the textkit task is in the "evaluation set"
    summary = distill(Settings(tasks=str(toy), exclude=[str(evals)], workers=2, progress=False,
                               agent=AgentSettings(policy="oracle", mode="zero")), tmp_path / "out")
    assert summary["episodes"] == 3
    assert "swehero-toy__textkit-1" not in {r["instance_id"] for r in read_jsonl(tmp_path / "out" / "trajectories.jsonl")}
    report = json.loads((tmp_path / "out" / "decontamination.json").read_text())
    assert report["by_reason"] == {"instance_id": 1} and report["kept"] == 3


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_a_resume_that_excludes_a_committed_task_is_refused(toy, tmp_path):
    """Excluding a task whose trajectories an earlier run committed would keep them in the training data while the
    decontamination report says the task was dropped: the run stops before any work, writing nothing."""
    from swehero.errors import InputError

    evals = tmp_path / "eval.jsonl"
    evals.write_text(toy.read_text().splitlines()[1] + "\n")  # the textkit task is in the "evaluation set"
    settings = Settings(tasks=str(toy), limit=2, workers=2, progress=False,
                        agent=AgentSettings(policy="oracle", mode="zero"))
    distill(settings, tmp_path / "out")
    before = {name: (tmp_path / "out" / name).read_text() for name in ("trajectories.jsonl", "summary.json")}
    with pytest.raises(InputError, match=r"trajectories.jsonl: 1 task\(s\) with committed trajectories are now "
                                         r"excluded \(swehero-toy__textkit-1\): distill into a fresh --out"):
        distill(dataclasses.replace(settings, exclude=[str(evals)]), tmp_path / "out")
    assert {name: (tmp_path / "out" / name).read_text() for name in before} == before
    assert not (tmp_path / "out" / "decontamination.json").exists()


def _task_file(path: Path, tasks: list[dict]) -> str:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return str(path)


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_a_resume_with_tasks_it_does_not_plan_is_refused_and_more_tasks_resume(toy, tmp_path):
    """Another task file into the folder of a run: the trajectories of the tasks it lacks would stay in the training
    data, counted in its summary. A task file with more tasks is how a run grows, and resumes."""
    from swehero.errors import InputError

    tasks = lines(toy)
    out, repos = tmp_path / "out", str(toy.parent / "repos")
    run = lambda task_file: distill(Settings(tasks=task_file, repos=repos, workers=2, progress=False,  # noqa: E731
                                             agent=AgentSettings(policy="oracle", mode="zero")), out)
    run(_task_file(tmp_path / "three.jsonl", tasks[:3]))
    made = (out / "trajectories.jsonl").read_text()
    fewer = _task_file(tmp_path / "two.jsonl", tasks[1:3])
    with pytest.raises(InputError, match=rf"trajectories.jsonl: committed episodes of 1 task\(s\) are not in this "
                                         rf"run's plan \({tasks[0]['instance_id']}; its tasks come from {fewer}\): "
                                         r"rerun with the task file, selection and --rollouts they were made with, or "
                                         r"distill into another --out"):
        run(fewer)
    assert (out / "trajectories.jsonl").read_text() == made
    summary = run(str(toy))
    assert (summary["episodes"], summary["planned"], summary["skipped_as_done"]) == (4, 4, 3)


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_a_resume_with_fewer_rollouts_is_refused(toy, tmp_path):
    """The rollouts past the new count would stay in the data as well."""
    from swehero.errors import InputError

    settings = Settings(tasks=str(toy), limit=1, rollouts=2, workers=2, progress=False,
                        agent=AgentSettings(policy="oracle", mode="zero"))
    distill(settings, tmp_path)
    with pytest.raises(InputError, match=r"committed episodes of 1 task\(s\) are not in this run's plan"):
        distill(dataclasses.replace(settings, rollouts=1), tmp_path)


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_a_resume_after_a_tasks_row_changed_is_refused_unless_no_digest_was_recorded(toy, tmp_path):
    """An episode made from another row of its task (another base commit or problem statement) is no trajectory of
    the task the file now holds. Episodes committed before digests were recorded resume as they did."""
    from swehero.errors import InputError

    task = lines(toy)[0]
    out, task_file = tmp_path / "out", tmp_path / "tasks.jsonl"
    settings = Settings(tasks=_task_file(task_file, [task]), repos=str(toy.parent / "repos"), progress=False,
                        agent=AgentSettings(policy="oracle", mode="zero"))
    distill(settings, out)
    assert distill(settings, out)["skipped_as_done"] == 1  # the same row: resumes
    _task_file(task_file, [{**task, "FAIL_TO_PASS": ["tests/test_x.py::test_fixed_list"]}])
    assert distill(settings, out)["skipped_as_done"] == 1  # the agent never saw the test lists: the filter regrades
    _task_file(task_file, [{**task, "problem_statement": task["problem_statement"] + " (reworded)"}])
    with pytest.raises(InputError, match=rf"1 task\(s\) with committed trajectories have another row in "
                                         rf"{task_file} than they were made from \({task['instance_id']}\): rerun "
                                         r"with the task file they were made from, or distill into another --out"):
        distill(settings, out)
    old = [{**r, "metadata": {k: v for k, v in r["metadata"].items() if k != "task_digest"}}
           for r in lines(out / "trajectories.jsonl")]
    _task_file(out / "trajectories.jsonl", old)  # as an earlier version of distill wrote them
    assert distill(settings, out)["skipped_as_done"] == 1


@pytest.mark.slow
def test_a_rerun_without_exclude_leaves_no_decontamination_report(toy, tmp_path):
    """The report of an earlier run with --exclude would say tasks were dropped that this run distills."""
    evals = tmp_path / "eval.jsonl"
    evals.write_text(toy.read_text().splitlines()[1] + "\n")
    settings = Settings(tasks=str(toy), limit=2, workers=2, progress=False, exclude=[str(evals)],
                        agent=AgentSettings(policy="oracle", mode="zero"))
    assert distill(settings, tmp_path / "out")["episodes"] == 1
    assert (tmp_path / "out" / "decontamination.json").exists()
    assert distill(dataclasses.replace(settings, exclude=[]), tmp_path / "out")["episodes"] == 2
    assert not (tmp_path / "out" / "decontamination.json").exists()


@pytest.mark.slow
def _teacher_failing(statement: str, failing: dict) -> JsonServer:
    """A teacher that finishes at once, but answers HTTP 500 to the episode of the task whose problem statement is
    `statement` while `failing["now"]` (a server whose engine died: the infrastructure's failure)."""
    def answer(method: str, path: str, body: dict | None) -> tuple[int, dict]:
        if method == "GET":  # the pool's probe after a failure: the server's API is up
            return 200, {"data": [{"id": "m"}]}
        if failing["now"] and any(statement in str(m.get("content")) for m in body["messages"]):
            return 500, {"error": "engine dead"}
        call = {"id": "c0", "type": "function", "function": {"name": "finish", "arguments": '{"message": "done"}'}}
        return 200, {"choices": [{"message": {"role": "assistant", "content": "", "tool_calls": [call]}}]}

    return JsonServer(answer)


def _teacher_settings(tasks: Path, repos: Path, teacher: JsonServer) -> Settings:
    return Settings(tasks=str(tasks), repos=str(repos), workers=2, progress=False, endpoints=[teacher.url],
                    agent=AgentSettings(
        policy="openai", mode="zero", openai=OpenAIConfig(model="m", request_retries=0)))


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_a_failed_episode_no_longer_planned_is_not_outstanding(toy, tmp_path):
    """Excluded since (or deselected, or past the rollouts), a failed episode is never retried: not outstanding,
    in the run's summary and through a merge."""
    from swehero.distill.shards import merge

    tasks = [json.loads(line) for line in toy.read_text().splitlines()[:2]]
    task_file, excluded = tmp_path / "tasks.jsonl", tmp_path / "eval.jsonl"
    task_file.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    excluded.write_text(json.dumps(tasks[1]) + "\n")
    teacher = _teacher_failing(tasks[1]["problem_statement"], {"now": True})
    try:
        settings = _teacher_settings(task_file, toy.parent / "repos", teacher)
        assert distill(settings, tmp_path / "out")["outstanding_failures"] == 1
        assert distill(dataclasses.replace(settings, exclude=[str(excluded)]), tmp_path / "out")[
            "outstanding_failures"] == 0
    finally:
        teacher.close()
    assert merge([tmp_path / "out"], tmp_path / "merged")["failed"] == {}


@pytest.mark.slow
def test_the_summary_counts_the_failed_episodes_not_made_since(toy, tmp_path):
    """An episode the infrastructure failed (here: the teacher's HTTP 500) is counted as outstanding, and the run
    still succeeds, as an eval with infrastructure errors does; once a rerun makes it, it is not."""
    tasks = [json.loads(line) for line in toy.read_text().splitlines()[:2]]
    task_file = tmp_path / "tasks.jsonl"
    task_file.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    failing = {"now": True}
    teacher = _teacher_failing(tasks[1]["problem_statement"], failing)
    try:
        settings = _teacher_settings(task_file, toy.parent / "repos", teacher)
        summary = distill(settings, tmp_path / "out")
        assert summary["failed_this_run"] == 1 and summary["outstanding_failures"] == 1 and summary["episodes"] == 1
        failing["now"] = False
        summary = distill(settings, tmp_path / "out")
    finally:
        teacher.close()
    assert summary["episodes"] == 2 and summary["outstanding_failures"] == 0
    assert len(lines(tmp_path / "out" / "failures.jsonl")) == 1  # the log of what failed stays as it was


@pytest.mark.slow
def test_repository_mirrors_are_cloned_once_and_serve_every_rollout(toy, tmp_path):
    from swehero.distill.mirrors import ensure_mirrors

    # The tasks name their repositories as owner/name; the sources live elsewhere (here: local paths).
    tasks = tmp_path / "tasks.jsonl"
    shutil.copy(toy, tasks)
    source = f"{toy.parent}/repos/{{repo_dir}}"
    settings = Settings(tasks=str(tasks), rollouts=2, workers=2, progress=False, repo_url=source,
                        agent=AgentSettings(policy="oracle", mode="zero"))
    summary = distill(settings, tmp_path / "out")
    assert summary["finish_reasons"] == {"submitted": 8}
    mirrors = sorted(m for m in (tmp_path / "out" / "mirrors").iterdir() if m.suffix != ".lock")
    assert [m.name for m in mirrors] == sorted({t["repo"].replace("/", "__") for t in lines(tasks)})
    for mirror in mirrors:  # bare mirrors, with every ref of the source (the agent strips later history)
        bare = subprocess.run(["git", "-C", str(mirror), "rev-parse", "--is-bare-repository"],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert bare == "true"
    assert ensure_mirrors({t["repo"]: () for t in lines(tasks)}, source, tmp_path / "out" / "mirrors") == {
        t["repo"]: "cached" for t in lines(tasks)}
    failed = ensure_mirrors({"nobody/nothing": ()}, source, tmp_path / "other")["nobody/nothing"]
    assert failed.startswith("nobody/nothing: no mirror, git clone --mirror ") and "does not exist" in failed
    assert not (tmp_path / "other" / "nobody__nothing").exists()  # a failed clone leaves no mirror


def test_bad_agent_settings_are_recipe_errors(tmp_path):
    from swehero.recipe.config import load_recipe
    from swehero.recipe.loader import RecipeError

    (tmp_path / "tasks.jsonl").write_text("")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nrun_dir: {tmp_path / 'run'}\nstages:\n  - name: zero\n    kind: distill\n"
                      f"    tasks: {tmp_path / 'tasks.jsonl'}\n    agent:\n      mode: hero\n      loop:\n"
                      "        max_step: 30\n    rollouts: 0\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe)
    text = "\n".join(info.value.problems)
    assert "r.yaml:8: stages[0].agent.mode: must be one of ['zero', 'exec'], got 'hero'" in text
    assert "r.yaml:10: stages[0].agent.loop.max_step: unknown field; did you mean 'max_steps'?" in text
    assert "r.yaml:11: stages[0].rollouts: must be >= 1, got 0" in text  # a run that would do nothing


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_the_summary_figure_is_drawn_for_no_episodes_and_for_some(tmp_path):
    """A run whose every attempt failed, or a merge of shards that committed nothing yet, still gets its figure."""
    from swehero.distill.summary import Figures

    figures = Figures()
    figures.write(figures.summary(wall_s=0.0), tmp_path / "empty" / "summary.json")
    for i, (steps, reason) in enumerate([(12, "submitted"), (40, "submitted"), (100, "max_steps")]):
        figures.add({"instance_id": f"t{i}", "patch": "", "messages": [{"role": "user", "content": "x" * 400}],
                     "metadata": {"steps": steps, "finish_reason": reason, "seconds": 1.0}})
    figures.write(figures.summary(wall_s=3.0), tmp_path / "some" / "summary.json")
    for folder in ("empty", "some"):
        assert (tmp_path / folder / "summary.png").read_bytes()[:8] == PNG
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == ["summary.json", "summary.png"]
    assert json.loads((tmp_path / "some" / "summary.json").read_text())["finish_reasons"] == {"submitted": 2,
                                                                                             "max_steps": 1}
