"""The Slurm launchers against a real (one-node) Slurm cluster: the jobs `swehero train` and `swehero distill`
write are submitted with sbatch and run, and what they leave is picked up as it would be on a cluster."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, missing

pytestmark = pytest.mark.slow  # Slurm daemons, then training and agent episodes inside jobs


@pytest.fixture(scope="module")
def slurm():
    if why := missing():
        pytest.skip(why)
    cluster = SlurmCluster()
    # Jobs inherit the submitter's environment: without this Python's folder on PATH, a job that ran a program
    # found there (`torchrun`, `swehero`) would fail, as it does on a cluster where the environment is not activated.
    cluster.env["PATH"] = os.pathsep.join(folder for folder in cluster.env["PATH"].split(os.pathsep)
                                          if Path(folder) != Path(sys.executable).parent)
    with pytest.MonkeyPatch.context() as patch:  # what swehero asks in this process (squeue) goes to it too
        patch.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster
    cluster.close()


def swehero(slurm: SlurmCluster, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swehero", *args], cwd=cwd, env=slurm.env, capture_output=True,
                          text=True, timeout=600)


def job_id(output: str) -> str:
    return re.search(r"submitted as Slurm job (\d+)", output).group(1)


def records(stage: Path) -> list[dict]:
    return [json.loads(line) for line in (stage / "metrics.jsonl").open()]


@pytest.mark.timeout(900)
def test_a_two_node_training_job_goes_on_after_a_cancel_and_its_stage_completes_without_training_again(slurm,
                                                                                                      tmp_path):
    # Two nodes of one GPU each: one torchrun per node, c10d rendezvous on the first, data parallel across them.
    layout = ["--set", "stages.sft_zero.nodes=2", "--set", "stages.sft_zero.gpus_per_node=1"]
    recipe = ["tiny-cpu", "--set", f"run_dir={tmp_path / 'run'}", "--set", "stages.sft_zero.steps=6",
              "--set", "stages.sft_zero.checkpoint.every=2"]
    for stage in ("tiny", "toy_tasks", "distill_zero", "filter_zero", "prepare_zero"):
        done = swehero(slurm, tmp_path, "recipe", "run", *recipe, "--only", stage)
        assert done.returncode == 0, done.stderr[-3000:]
    train = ["train", *recipe, *layout, "--stage", "sft_zero", "--launcher", "slurm", "--submit"]

    # Written, then submitted by hand from elsewhere by a relative path; held in the queue (--sbatch=--hold) until
    # released, so that "still queued" is seen for certain.
    done = swehero(slurm, tmp_path, *train[:-1], "--sbatch=--hold")
    assert done.returncode == 0, done.stderr[-3000:]
    stage = tmp_path / "run" / "sft_zero"
    assert done.stdout == f"wrote {stage / 'train.sbatch'}; submit it with: sbatch {stage / 'train.sbatch'}\n"
    assert "#SBATCH --hold" in (stage / "train.sbatch").read_text()
    done = subprocess.run(["sbatch", "--parsable", "sft_zero/train.sbatch"], cwd=stage.parent, env=slurm.env,
                          capture_output=True, text=True)
    job = done.stdout.strip()

    # While the job is queued, nothing else trains into its folder, and what needs it says why it waits.
    done = swehero(slurm, tmp_path, "recipe", "run", *recipe, *layout, "--only", "sft_zero", "--dry-run")
    assert f"skip  sft_zero              Slurm job {job} is pending: run again when it has ended" in done.stdout
    for command in (["recipe", "run", *recipe, *layout, "--only", "sft_zero"], train[:-3]):
        done = swehero(slurm, tmp_path, *command)
        assert (done.returncode, done.stderr) == (
            1, f"Error: stage sft_zero: Slurm job {job} is pending: run again when it has ended\n")
    done = swehero(slurm, tmp_path, "recipe", "run", *recipe, *layout)
    assert done.returncode == 1
    assert f"stage sft_hero needs sft_zero, whose Slurm job {job} is pending" in done.stderr

    # Released, then signalled once its first checkpoint is written, as Slurm signals a job before its time limit
    # (#SBATCH --signal): the workers save the step they reached and the job ends.
    assert slurm.run("scontrol", "release", job).returncode == 0
    deadline = time.monotonic() + 300
    while not (stage / "checkpoints" / "step-2").is_dir():
        ended = not {"PENDING", "CONFIGURING", "RUNNING"}.intersection(
            slurm.run("squeue", "--noheader", "--jobs", job, "--format=%T").stdout.split())
        assert not ended and time.monotonic() < deadline, (stage / f"slurm-{job}.out").read_text()[-3000:]
        time.sleep(0.2)
    assert slurm.run("scancel", "--signal=USR1", job).returncode == 0
    slurm.wait(job, timeout_s=120)
    assert not (stage / "finished.json").exists()
    kept = max(int(p.name.removeprefix("step-")) for p in (stage / "checkpoints").glob("step-*"))  # complete ones
    logged = len(records(stage))
    out = (stage / f"slurm-{job}.out").read_text()
    assert kept == records(stage)[-1]["step"] and f"stopped by SIGUSR1 after step {kept} of 6" in out, out[-3000:]

    # Submitted again, the job goes on from that checkpoint; its folder is kept.
    done = swehero(slurm, tmp_path, *train)
    assert done.returncode == 0, done.stderr[-3000:]
    job = job_id(done.stdout)
    slurm.wait(job, timeout_s=300)
    assert (stage / "finished.json").exists(), (stage / f"slurm-{job}.out").read_text()[-3000:]
    trained = records(stage)
    assert kept < 6 and trained[logged]["step"] == kept + 1 and trained[-1]["step"] == 6

    # A stage of two nodes could not train here: it completes from the job's work.
    done = swehero(slurm, tmp_path, "recipe", "run", *recipe, *layout, "--only", "sft_zero")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"sft_zero (train): handed to Slurm ({stage / 'train.sbatch'}, job {job}) (resuming)" in done.stdout
    assert "step/s" not in done.stderr  # no training bar: nothing was trained again
    assert records(stage) == trained
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["status"] == "complete" and Path(manifest["outputs"]["hf"], "config.json").exists()
    done = swehero(slurm, tmp_path, "recipe", "run", *recipe, *layout, "--dry-run")
    assert "skip  sft_zero              up to date" in done.stdout

    # The same training on one node of two GPUs, uninterrupted, here: the same loss at every step. Another GPU count
    # alone leaves a complete stage complete (it changes how a run goes, not what it makes): --force trains again.
    done = swehero(slurm, tmp_path, "recipe", "run", *recipe, "--only", "sft_zero", "--dry-run")
    assert "skip  sft_zero              up to date" in done.stdout
    done = swehero(slurm, tmp_path, "recipe", "run", *recipe, "--only", "sft_zero", "--force")
    assert done.returncode == 0 and "sft_zero (train): forced" in done.stdout
    here = {r["step"]: r["loss"] for r in records(stage) if "loss" in r}
    assert {r["step"]: r["loss"] for r in trained if "loss" in r} == pytest.approx(here, rel=1e-5)


@pytest.mark.timeout(600)
def test_a_distill_array_job_runs_every_task_once_across_its_shards_wherever_it_is_submitted(slurm, tmp_path):
    from swehero.rollout.toy import build_toy_tasks

    tmp_path = tmp_path / "my runs"  # a blank in the folders: sbatch split `#SBATCH --chdir=` there
    tmp_path.mkdir()
    tasks = build_toy_tasks(tmp_path / "toy")
    out = tmp_path / "zero"
    # Relative paths, then the script submitted by hand from another folder: its tasks read what was meant here.
    done = swehero(slurm, tmp_path, "distill", "run", "--tasks", "toy/tasks.jsonl", "--exclude", "toy/heldout.jsonl",
                   "--mode", "zero", "--policy", "oracle", "--out", "zero", "--launcher", "slurm", "--shards", "2",
                   "--sbatch=--cpus-per-task=1")
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run(["sbatch", "--parsable", str(out / "distill.sbatch")], cwd="/", env=slurm.env,
                          capture_output=True, text=True)
    slurm.wait(done.stdout.strip(), timeout_s=300)
    logs = "".join(p.read_text() for p in out.glob("slurm-*.log"))
    assert all((out / f"shard-{i}" / "summary.json").exists() for i in range(2)), logs[-3000:]

    done = swehero(slurm, tmp_path, "distill", "merge", *map(str, sorted(out.glob("shard-*"))), "--out", str(out))
    assert done.returncode == 0, done.stderr
    merged = [json.loads(line)["instance_id"] for line in (out / "trajectories.jsonl").open()]
    expected = [json.loads(line)["instance_id"] for line in tasks.open()]
    assert sorted(merged) == sorted(expected)
    assert all(json.loads((out / f"shard-{i}" / "summary.json").read_text())["episodes"] for i in range(2))
