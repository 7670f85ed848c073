"""What a stage's manifest records of where it came from: the recipe's model section in its identity (a new base
model reruns the stages that use it), and the commit of the swehero source it ran from."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from data_samples import samples
from hub_cache import add_to_cache
from tests_paths import qwen

from swehero.cli import main

SOURCE = Path(__file__).resolve().parents[1] / "swehero"

RECIPE = """\
name: identity
run_dir: {run}
model:
  base: {base}
stages:
  - name: tok
    kind: command
    run: mkdir -p tok && cp {qwen}/* tok/ && chmod u+w tok/*
    outputs: [tok]
  - name: prep
    kind: prepare
    inputs: [{data}]
    seq_length: 4096
    valid_fraction: 0
    workers: 0
"""


def write_recipe(tmp_path: Path, base: str) -> Path:
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples()))
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(run=tmp_path / "run", base=base, qwen=qwen().resolve(), data=tmp_path / "in.jsonl"))
    return path


def dry_run(path: Path, *sets: str) -> str:
    overrides = [arg for assignment in sets for arg in ("--set", assignment)]
    result = CliRunner().invoke(main, ["recipe", "run", str(path), "--dry-run", *overrides])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_another_hub_model_reruns_the_stages_that_use_it_and_a_manifest_without_the_model_stays_up_to_date(tmp_path):
    """The bundled recipes name their base model by hub id, which is no input file to fingerprint: a probe's
    `--set model.base=org/tok-b` skipped `prepare` as up to date, its data tokenized with org/tok-a."""
    cache = tmp_path / "hub"
    tokenizer = {p.name: p.read_bytes() for p in qwen().iterdir()} | {"config.json": b'{"model_type": "qwen2"}'}
    add_to_cache(cache, "org/tok-a", "a" * 40, tokenizer, repo_type="model")
    path = write_recipe(tmp_path, "org/tok-a")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    subprocess.run([sys.executable, "-m", "swehero", "recipe", "run", str(path)], env=env, check=True,
                   capture_output=True)

    assert dry_run(path).count("up to date") == 2
    # how the work is split makes the same dataset: a prepare stage packed with 0 workers is not packed again (and
    # the training on it not run again) for 4, or for another batch size
    assert dry_run(path, "stages.prep.workers=4", "stages.prep.batch_size=7").count("up to date") == 2
    out = dry_run(path, "model.base=org/tok-b")
    assert "run   prep  settings changed: model.base: 'org/tok-a' -> 'org/tok-b'" in out, out
    assert "skip  tok " in out  # a kind that does not use the model is not rerun for it
    out = dry_run(path, "model.tokenizer=org/tok-b")
    assert "settings changed: model.tokenizer: None -> 'org/tok-b'" in out, out

    # a manifest an older swehero wrote has no `model`: not recorded, so not a change (days of training kept)
    manifest = tmp_path / "run" / "prep" / "manifest.json"
    old = json.loads(manifest.read_text())
    del old["model"]
    manifest.write_text(json.dumps(old))
    assert dry_run(path).count("up to date") == 2


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_run_moved_elsewhere_keeps_its_model_under_it_up_to_date(tmp_path):
    """The model section names a folder under `run_dir` (tiny-cpu's model.base): moved, it is the same model."""
    path = write_recipe(tmp_path, "${stages.tok.dir}/tok")
    result = CliRunner().invoke(main, ["recipe", "run", str(path)])
    assert result.exit_code == 0, result.output
    (tmp_path / "run").rename(tmp_path / "moved")
    assert dry_run(path, f"run_dir={tmp_path / 'moved'}").count("up to date") == 2


def commit_seen_from(site: Path) -> str:
    """What `_git_commit` records when swehero is imported from `site` (a fresh process, run in `site`: `-c` puts
    the working directory first on its path)."""
    env = {k: v for k, v in os.environ.items() if k != "SWEHERO_GIT_COMMIT"} | {"PYTHONPATH": str(site)}
    code = "import swehero.recipe.engine as e; assert e.__file__.startswith(%r), e.__file__; print(e._git_commit())"
    return subprocess.run([sys.executable, "-c", code % str(site)], env=env, cwd=site, check=True,
                          capture_output=True, text=True).stdout.strip()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           "-c", "commit.gpgsign=false", *args], check=True, capture_output=True, text=True).stdout


def committed_repo(repo: Path) -> str:
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.mark.slow  # a second or more: the fast tier stays under 2 minutes
def test_the_commit_recorded_is_swehero_s_never_that_of_a_project_it_is_installed_in(tmp_path):
    """pip install into a project's git-ignored .venv: the project's repository encloses the installed package, and
    its commit (`-dirty` from the user's own files) was recorded as swehero's."""
    project = tmp_path / "project"
    site = project / ".venv" / "lib" / "python3.11" / "site-packages"
    shutil.copytree(SOURCE, site / "swehero", ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".gitignore").write_text(".venv/\n")
    (project / "train.py").write_text("steps = 1\n")
    committed_repo(project)
    (project / "train.py").write_text("steps = 2\n")
    assert commit_seen_from(site) == "None"

    checkout = tmp_path / "checkout"  # a clone of swehero: its own commit
    shutil.copytree(SOURCE, checkout / "swehero", ignore=shutil.ignore_patterns("__pycache__"))
    head = committed_repo(checkout)
    assert commit_seen_from(checkout) == head
    (checkout / "swehero" / "errors.py").write_text("# edited\n" + (checkout / "swehero" / "errors.py").read_text())
    assert commit_seen_from(checkout) == head + "-dirty"
