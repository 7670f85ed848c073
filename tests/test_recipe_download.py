"""The `download` stage kind, offline against a Hugging Face cache this test builds in the hub's own layout
(refs/, snapshots/<commit>/, blobs/), then the import's seeded one-trajectory-per-task selection on its output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_cache import add_to_cache

FIXTURES = Path(__file__).parent / "data_fixtures"
HERO_COMMIT = "0123456789abcdef0123456789abcdef01234567"
ZERO_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"

RECIPE = """\
name: download-test
run_dir: {run}
stages:
  - name: download
    kind: download
    repos:
      hero: {{repo_id: nvidia/SWE-Hero-openhands-trajectories, revision: main, allow_patterns: ["data/*.parquet"]}}
      zero: {{repo_id: nvidia/SWE-Zero-openhands-trajectories, revision: {zero_revision}}}
  - name: import_hero
    kind: import
    inputs: ["${{stages.download.dir}}/hero"]
    format: nvidia
    per_instance: 1
"""


def release_rows(tasks: int, rollouts: int) -> list[dict]:
    """Rows shaped like the NVIDIA release: `rollouts` trajectories of each of `tasks` tasks."""
    template = json.loads((FIXTURES / "nvidia.jsonl").read_text().splitlines()[0])
    rows = []
    for t in range(tasks):
        for r in range(rollouts):
            rows.append({**template, "instance_id": f"org__repo-{t}", "trajectory_id": f"org__repo-{t}_{r}",
                         "trajectory": json.dumps(template["trajectory"])})
    return rows


def parquet_bytes(rows: list[dict], path: Path) -> bytes:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path.read_bytes()


@pytest.fixture
def hub_cache(tmp_path) -> Path:
    cache = tmp_path / "hub"
    hero = parquet_bytes(release_rows(tasks=5, rollouts=3), tmp_path / "hero.parquet")
    add_to_cache(cache, "nvidia/SWE-Hero-openhands-trajectories", HERO_COMMIT,
                 {"data/train-00000-of-00001.parquet": hero, "README.md": b"# SWE-Hero\n"})
    zero = parquet_bytes(release_rows(tasks=2, rollouts=2), tmp_path / "zero.parquet")
    add_to_cache(cache, "nvidia/SWE-Zero-openhands-trajectories", ZERO_COMMIT,
                 {"data/train-00000-of-00001.parquet": zero}, ref=None)  # only reachable by its commit
    return cache


def run_recipe(tmp_path: Path, cache: Path, zero_revision: str) -> subprocess.CompletedProcess:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(run=tmp_path / "run", zero_revision=zero_revision or "''"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    return subprocess.run([sys.executable, "-m", "swehero", "recipe", "run", str(recipe)], env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_download_offline_records_the_resolved_commits_and_the_import_keeps_one_rollout_per_task(tmp_path, hub_cache):
    from huggingface_hub import scan_cache_dir

    # The cache is one huggingface_hub itself recognises: both repositories, the hero snapshot under `main`.
    scanned = {r.repo_id: r for r in scan_cache_dir(hub_cache).repos}
    assert {rev.commit_hash for rev in scanned["nvidia/SWE-Hero-openhands-trajectories"].revisions} == {HERO_COMMIT}
    assert scanned["nvidia/SWE-Hero-openhands-trajectories"].refs["main"].commit_hash == HERO_COMMIT

    done = run_recipe(tmp_path, hub_cache, ZERO_COMMIT)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "run/download/manifest.json").read_text())
    hero, zero = manifest["provenance"]["hero"], manifest["provenance"]["zero"]
    assert (hero["revision"], hero["commit"]) == ("main", HERO_COMMIT)  # a branch, resolved and recorded
    assert (zero["revision"], zero["commit"]) == (ZERO_COMMIT, ZERO_COMMIT)
    assert hero["repo_id"] == "nvidia/SWE-Hero-openhands-trajectories" and hero["repo_type"] == "dataset"
    link = tmp_path / "run/download/hero"
    assert link.resolve() == (hub_cache / "datasets--nvidia--SWE-Hero-openhands-trajectories/snapshots" / HERO_COMMIT)
    assert manifest["outputs"]["hero"] == str(link)

    counts = json.loads((tmp_path / "run/import_hero/counts.json").read_text())
    assert (counts["read"], counts["written"], counts["instances"]) == (15, 15, 5)
    assert counts["selected"] == {"trajectories": 5, "instances": 5, "per_instance": 1, "seed": 1234}
    kept = [json.loads(line) for line in (tmp_path / "run/import_hero/trajectories.jsonl").read_text().splitlines()]
    assert sorted(r["instance_id"] for r in kept) == [f"org__repo-{t}" for t in range(5)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_empty_revision_stops_the_stage_naming_the_field(tmp_path, hub_cache):
    done = run_recipe(tmp_path, hub_cache, "")
    assert done.returncode != 0
    assert "stage download: repos.zero.revision: empty: pin" in done.stderr
    assert not (tmp_path / "run/download").exists()  # refused before the stage started


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_revision_not_in_the_cache_offline_is_one_line_naming_the_repository(tmp_path, hub_cache):
    """The hub's error (no snapshot cached, offline) was an 80-line traceback, three chained ones with the network
    merely unreachable."""
    done = run_recipe(tmp_path, hub_cache, "a" * 40)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"Error: stage download: cannot fetch dataset nvidia/SWE-Zero-openhands-trajectories "
                                  f"at {'a' * 40} from the Hugging Face hub (zero): "), done.stderr


def test_an_unpinned_download_stops_the_run_before_its_first_stage(tmp_path):
    """hero-32b-verifier downloads its labelled data after both trainings: an unset revision stopped the run there,
    days in. `recipe run` now checks every stage it will run before it runs the first."""
    from click.testing import CliRunner

    from swehero.cli import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
name: late-download
run_dir: {tmp_path / "run"}
stages:
  - {{name: train_for_days, kind: command, run: "touch {tmp_path / 'trained'}"}}
  - name: download_later
    kind: download
    needs: [train_for_days]
    repos: {{labels: {{repo_id: nebius/SWE-rebench-openhands-trajectories, revision: ""}}}}
""")
    result = CliRunner().invoke(main, ["recipe", "run", str(recipe)])
    assert result.exit_code == 1 and f"{recipe}:8: stage download_later: repos.labels.revision: empty" in result.output
    assert not (tmp_path / "trained").exists() and not (tmp_path / "run/train_for_days").exists()
    dry = CliRunner().invoke(main, ["recipe", "run", str(recipe), "--dry-run"])  # says so before a real run
    assert dry.exit_code == 0 and dry.output.startswith(
        f"a run would stop before its first stage: {recipe}:8: stage download_later: repos.labels.revision: empty"), \
        dry.output


def test_an_unset_revision_of_a_bundled_recipe_names_its_line_and_variable(monkeypatch):
    """The bundled recipes read their dataset revisions from environment variables: the message says which one."""
    from click.testing import CliRunner

    from swehero.cli import main
    from swehero.recipe.config import find_recipe

    monkeypatch.delenv("SWEHERO_SWE_ZERO_REVISION", raising=False)
    monkeypatch.setenv("SWEHERO_SWE_HERO_REVISION", "main")
    recipe = find_recipe("zero-7b")
    line = next(n for n, text in enumerate(recipe.read_text().splitlines(), 1) if "SWEHERO_SWE_ZERO_REVISION" in text)
    dry = CliRunner().invoke(main, ["recipe", "run", "zero-7b", "--dry-run"])
    assert dry.exit_code == 0 and dry.output.startswith(
        f"a run would stop before its first stage: {recipe}:{line}: stage download_zero: repos.zero.revision: empty: "
        "pin "
        "nvidia/SWE-Zero-openhands-trajectories to a commit"), dry.output
    assert "(the recipe writes it as ${env:SWEHERO_SWE_ZERO_REVISION,})" in dry.output.splitlines()[0]
    assert "repos.hero" not in dry.output.splitlines()[0]
    set_by_hand = CliRunner().invoke(main, ["recipe", "run", "zero-7b", "--dry-run", "--set",
                                            "stages.download_zero.repos.zero.revision=''"])
    assert set_by_hand.output.startswith("a run would stop before its first stage: --set: stage download_zero: "
                                         "repos.zero.revision: empty"), set_by_hand.output
    assert "the recipe writes it as" not in set_by_hand.output.splitlines()[0]


def test_every_unpinned_revision_is_reported_at_once(monkeypatch):
    """The bundled recipes' two dataset revisions come from two variables: the first one unset was reported alone,
    and the second only after a rerun."""
    from click.testing import CliRunner

    from swehero.cli import main

    for name in ("SWEHERO_SWE_ZERO_REVISION", "SWEHERO_SWE_HERO_REVISION"):
        monkeypatch.delenv(name, raising=False)
    stops = CliRunner().invoke(main, ["recipe", "run", "zero-7b", "--dry-run"]).output.splitlines()[0]
    assert "stage download_zero: repos.zero.revision: empty" in stops and "${env:SWEHERO_SWE_ZERO_REVISION,}" in stops
    assert "stage download_hero: repos.hero.revision: empty" in stops and "${env:SWEHERO_SWE_HERO_REVISION,}" in stops, stops
