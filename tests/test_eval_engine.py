"""The Docker engine set-up `make test` and the test session share (swehero/eval/engine.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swehero.eval import engine

ROOT = Path(__file__).resolve().parents[1]


def test_apt_mirror_reads_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n")
    assert engine.apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("# comment\ndeb [arch=amd64] http://other.example/debian/ bookworm main\n")
    assert engine.apt_mirror(tmp_path) == "http://other.example/debian/"
    (tmp_path / "sources.list").write_text("deb http://ppa.example/ubuntu jammy main\n")
    with pytest.raises(engine.DockerUnavailable, match="no Debian mirror"):
        engine.apt_mirror(tmp_path)


def test_base_image_tag_follows_its_recipe(monkeypatch):
    name = engine.base_image_name()
    assert name.startswith(f"{engine.BASE_REPO}:{engine.SUITE}-") and name == engine.base_image_name()
    monkeypatch.setattr(engine, "PACKAGES", (*engine.PACKAGES, "curl"))
    assert engine.base_image_name() != name  # a changed recipe is a new tag: rebuilt, never a stale image reused


def _engine_cli(env: dict, user: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*user, sys.executable, "-m", "swehero.eval.engine"], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_without_an_engine_it_says_why_in_one_line(tmp_path):
    done = _engine_cli({**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert done.returncode == 1
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("Docker unavailable: no Docker engine is reachable")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to drop to nobody")
def test_without_root_it_says_why_in_one_line():
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    done = _engine_cli(env, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    assert done.returncode == 1, done.stderr
    assert done.stdout.count("\n") == 1 and "needs root" in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_docker_tests_are_skipped_with_the_reason_when_no_engine_can_be_had(tmp_path):
    """Never silently passed: with no engine to be had, a Docker test is reported skipped, with why."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "docker",
                           str(ROOT / "tests" / "test_agent_docker.py"), "-k", "no_network"],
                          capture_output=True, text=True, cwd=ROOT, timeout=280,
                          env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 skipped" in done.stdout and "passed" not in done.stdout
    assert "SKIPPED [1]" in done.stdout and "Docker unavailable: no Docker engine is reachable" in done.stdout


@pytest.mark.docker
def test_a_running_engine_is_left_alone():
    before = Path("/var/run/docker.pid").read_text().strip() if Path("/var/run/docker.pid").exists() else None
    engine.ensure_engine().ping()
    after = Path("/var/run/docker.pid").read_text().strip() if Path("/var/run/docker.pid").exists() else None
    assert before == after
    assert subprocess.run(["pgrep", "-c", "-x", "dockerd"], capture_output=True, text=True).stdout.strip() in (
        "", "0", "1")  # at most the one engine (none here when DOCKER_HOST names a remote one)


@pytest.mark.docker
@pytest.mark.skipif(os.geteuid() != 0, reason="building the base image needs root")
def test_a_second_set_up_waits_for_the_first_and_builds_nothing(docker_base_image, monkeypatch):
    """While one process holds the set-up lock (here: this test, as a build would), another one that needs a base
    image waits; when the first has made the image, the second finds it and builds nothing."""
    monkeypatch.setattr(engine, "PACKAGES", (*engine.PACKAGES, "less"))  # a recipe whose image is not here
    name = engine.base_image_name()
    second = [sys.executable, "-c", "import sys, swehero.eval.engine as e; e.PACKAGES += ('less',); sys.exit(e.main())"]
    client = engine.client()
    try:
        with engine.setup_lock():
            proc = subprocess.Popen(second, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
            time.sleep(5)
            assert proc.poll() is None  # waiting for the lock
            client.images.get(docker_base_image).tag(name)  # what the first process "built"
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == name, out + err
        assert "building" not in err, err
    finally:
        client.images.remove(name)  # the tag only: the image keeps its own
