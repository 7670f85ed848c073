"""The Slurm job of a real recipe mounts everything its workers read: hero-32b's first stage, generated from a
relative run folder with the base model in a hub cache (huggingface_hub's layout, offline) and a packed dataset."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_cache import add_to_cache

CONFIGS = Path(__file__).parents[1] / "swehero" / "model" / "configs"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"


def generate(tmp_path: Path, cache: Path, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    command = [sys.executable, "-m", "swehero", "train", "hero-32b", "--stage", "sft_zero", "--launcher", "slurm",
               "--set", "run_dir=runs/h32", *options]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def every_path_under(path: Path) -> list[Path]:
    """`path`, everything below it, and where each symlink among them really points."""
    found = [path, path.resolve()]
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            found += [Path(root, name), Path(root, name).resolve()]
    return found


SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


def shard_names(config: dict) -> dict[str, list[str]]:
    """The model's tensors, split over two shards."""
    from swehero.model.qwen2 import hf_weight_names

    names = sorted(hf_weight_names(config))
    return {file: names[i::2] for i, file in enumerate(SHARDS)}


def two_shards(config: dict) -> dict[str, bytes]:
    """The index of two shards, and a placeholder for each (distinct: the cache keeps a file per content), written
    whole by `fill_shards` once in the cache."""
    index = {"weight_map": {name: file for file, part in shard_names(config).items() for name in part}}
    return {"model.safetensors.index.json": json.dumps(index).encode(), **{file: file.encode() for file in SHARDS}}


def fill_shards(snapshot: Path, config: dict) -> None:
    """The shards of a cached snapshot, of their full shapes in sparse files: the launch reads only the headers."""
    from sparse_weights import write_sparse_safetensors

    from swehero.model.qwen2 import hf_weight_shapes

    shapes = hf_weight_shapes(config)
    for file, part in shard_names(config).items():
        write_sparse_safetensors((snapshot / file).resolve(), {name: shapes[name] for name in part})


@pytest.fixture
def hub(tmp_path) -> Path:
    cache = tmp_path / "hub"
    config = (CONFIGS / "qwen2.5-coder-32b-instruct.json").read_bytes()
    add_to_cache(cache, "Qwen/Qwen2.5-Coder-32B-Instruct", COMMIT, repo_type="model", files={
        "config.json": config, **two_shards(json.loads(config)), "tokenizer.json": b"{}"})
    fill_shards(cache / "models--Qwen--Qwen2.5-Coder-32B-Instruct" / "snapshots" / COMMIT, json.loads(config))
    dataset = tmp_path / "runs/h32/prepare_zero/dataset"  # what the prepare stage leaves
    dataset.mkdir(parents=True)
    for name in ("train_tokens.bin", "train_tokens.idx"):
        (dataset / name).write_text("x")
    (dataset / "stats.json").write_text(json.dumps({"seq_length": 131072, "samples": {"train": 64, "valid": 1}}))
    (dataset.parent / "manifest.json").write_text(json.dumps({"status": "complete", "fingerprint": "0",
                                                              "outputs": {"dataset": str(dataset)}}))
    return cache


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_hero_32b_job_mounts_every_path_its_workers_read(tmp_path, hub):
    # Links in folders the workers do not read: a download's into a hub cache cleaned since, a venv's into /usr.
    (tmp_path / "runs/h32/download").mkdir()
    (tmp_path / "runs/h32/download/zero").symlink_to(tmp_path / "cleaned-cache/snapshots/abc")
    (tmp_path / "runs/h32/eval/work/venv/bin").mkdir(parents=True)
    (tmp_path / "runs/h32/eval/work/venv/bin/python").symlink_to("/usr/bin/python3")
    (tmp_path / "swehero.sqsh").write_bytes(b"hsqs")  # named as the README names it, relative to where it is run
    done = generate(tmp_path, hub, "--container-image", "swehero.sqsh")
    assert done.returncode == 0, done.stdout + done.stderr
    stage = tmp_path / "runs/h32/sft_zero"
    script = (stage / "train.sbatch").read_text()
    binds = re.search(r"--container-mounts=(\S+)", script).group(1).strip("'").split(",")
    mounts = [Path(b.split(":")[0]) for b in binds]
    assert all(b.split(":")[0] == b.split(":")[1] for b in binds)  # each at the same path inside
    job = json.loads((stage / "train_job.json").read_text())
    reads = [Path(job["dir"]), Path(job["settings"]["data"]), Path(job["init"])]
    assert all(p.is_absolute() for p in reads)  # a relative run_dir still gives the workers absolute paths
    assert Path(job["init"]) == hub / "models--Qwen--Qwen2.5-Coder-32B-Instruct/snapshots" / COMMIT
    for path in (p for read in reads for p in every_path_under(read)):
        assert any(path.is_relative_to(m) for m in mounts), f"{path} is read by the workers but not mounted"
    assert not any(m.is_relative_to("/usr") for m in mounts), mounts
    assert f"--container-workdir={stage}" in script
    # pyxis takes a squashfs file only by a path starting with `.` or `/`: else it pulls `docker://swehero.sqsh`
    assert f"--container-image={tmp_path / 'swehero.sqsh'} " in script


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("where", ["container", "host"])
def test_a_job_whose_data_is_missing_is_refused_naming_the_path(tmp_path, hub, where):
    # On the host too: the job would otherwise fail on every node after its wait in the queue.
    for f in (tmp_path / "runs/h32/prepare_zero/dataset").iterdir():
        f.unlink()
    (tmp_path / "runs/h32/prepare_zero/dataset").rmdir()
    done = generate(tmp_path, hub, *(["--container-image", "/images/swehero.sqsh"] if where == "container" else []))
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: stage sft_zero cannot start: {tmp_path}/runs/h32/prepare_zero/dataset "
                                   "does not exist; run the stages that make it first (swehero recipe run)")
    assert not (tmp_path / "runs/h32/sft_zero/train.sbatch").exists()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_job_that_starts_from_a_stage_not_run_yet_is_refused_not_looked_up_on_the_hub(tmp_path, hub):
    # sft_hero starts from sft_zero's folder: a local path, which must not be taken for a hub id.
    shutil.copytree(tmp_path / "runs/h32/prepare_zero", tmp_path / "runs/h32/prepare_hero")
    done = generate(tmp_path, hub, "--stage", "sft_hero")
    assert done.returncode == 1
    assert done.stderr.strip() == ("Error: stage sft_hero needs sft_zero, which has not completed; run it first "
                                   f"(`swehero recipe run {Path(__file__).parents[1] / 'recipes' / 'hero-32b.yaml'}` "
                                   "runs the stages in order)")


def test_a_stage_whose_needs_have_not_run_names_commands_that_run_them(tmp_path):
    """`swehero train` said "(drop --only / --from)", options it does not have and the user never typed."""
    from click.testing import CliRunner

    from swehero.cli import main

    result = CliRunner().invoke(main, ["train", "hero-32b", "--stage", "sft_hero", "--launcher", "slurm",
                                       "--set", f"run_dir={tmp_path}"])
    recipe = Path(__file__).parents[1] / "recipes" / "hero-32b.yaml"
    assert result.exit_code == 1 and result.output == (
        "Error: stage sft_hero needs prepare_hero, sft_zero, which have not completed; run them first "
        f"(`swehero recipe run {recipe}` runs the stages in order)\n")


def test_sbatch_options_that_would_change_the_jobs_layout_are_refused(tmp_path):
    """`--sbatch=--nodes=2` on a 4-node stage came after the script's own `--nodes=4`: sbatch took 2, the srun line
    still started torchrun for 4 nodes, and the job failed after its wait in the queue and the rendezvous timeout."""
    from click.testing import CliRunner

    from swehero.cli import main
    from swehero.train.launch import layout_options

    given = ["--nodes=2", "-N 2", "-N2", "--ntasks-per-node=8", "--gres=gpu:8", "--gpus-per-node 4",
             "--partition=batch", "--gres=nvme:1", "--nice=5", "-p batch", "--time=4:00:00"]
    assert layout_options(given) == given[:6]
    result = CliRunner().invoke(main, ["train", "hero-32b", "--stage", "sft_zero", "--launcher", "slurm",
                                       "--set", f"run_dir={tmp_path}", "--sbatch=--partition=batch",
                                       "--sbatch=--nodes=2"])
    assert result.exit_code == 2 and ("Invalid value for '--sbatch': --nodes=2: the job's layout is the stage's "
                                      "`nodes` and `gpus_per_node`") in result.output, result.output
    assert not any(tmp_path.iterdir())


def test_a_run_folder_or_recipe_name_with_blanks_stays_one_sbatch_value_and_pyxis_is_not_given_one():
    from swehero.train.launch import slurm_script

    script = slurm_script(Path("/runs/my run/sft_zero"), 2, 8, 'hero 32b "#1"', [])
    assert '#SBATCH --job-name="hero 32b \\"#1\\""' in script.splitlines()
    assert '#SBATCH --output="/runs/my run/sft_zero/slurm-%j.out"' in script.splitlines()
    with pytest.raises(ValueError, match="pyxis cannot mount /runs/my run: a path with a space, comma or colon"):
        slurm_script(Path("/runs/my run/sft_zero"), 2, 8, "h", [], "/images/swehero.sqsh", [Path("/runs/my run")])


def test_the_job_runs_torchrun_on_every_cpu_of_its_nodes_with_the_submitters_python():
    from swehero.train.launch import slurm_script

    def srun(script: str) -> str:
        return next(line for line in script.splitlines() if line.startswith("srun "))

    script = slurm_script(Path("/runs/h32/sft_zero"), 4, 8, "h32", ["--signal=USR1@1200"])
    # Since Slurm 22.05 a step no longer inherits the job's CPUs per task: under task/affinity or task/cgroup
    # torchrun and its 8 workers would share one CPU. Not run on the test cluster, whose TaskPlugin binds nothing.
    assert srun(script).startswith(
        f"srun --cpus-per-task=$SLURM_CPUS_ON_NODE {sys.executable} -m swehero.train.launch ")
    in_image = slurm_script(Path("/runs/h32/sft_zero"), 4, 8, "h32", [], "/images/swehero.sqsh", [Path("/runs")])
    assert " --container-workdir=/runs/h32/sft_zero python -m swehero.train.launch " in srun(in_image)
    # The warning before the time limit, which a site's own (later) option overrides.
    assert re.findall(r"^#SBATCH --signal=.*$", script, re.M) == ["#SBATCH --signal=USR1@600",
                                                                  "#SBATCH --signal=USR1@1200"]


def test_the_job_script_reaches_srun_on_a_job_of_thousands_of_nodes(tmp_path):
    """`scontrol show hostnames | head -n 1`: head exits after the first name, scontrol writing the others dies of
    SIGPIPE, and `set -o pipefail` made that the end of the script, before torchrun (most runs past ~256 nodes)."""
    from swehero.train.launch import slurm_script

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nseq -f gpu-node-%05g 20000\n")
    (bin_dir / "srun").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'srun-args'}\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    script = tmp_path / "train.sbatch"
    script.write_text(slurm_script(Path("/runs/h32/sft_zero"), 20000, 8, "h32", []))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-node-[00001-20000]",
           "SLURM_CPUS_ON_NODE": "64", "SLURM_JOB_ID": "7"}
    for _ in range(5):
        done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "gpu-node-00001:" in (tmp_path / "srun-args").read_text()
