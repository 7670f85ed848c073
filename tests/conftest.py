"""Shared fixtures: the reference Qwen2.5 tokenizer and a tiny model kit built once per session, a teacher that
never answers, the Docker engine and the toy tasks' instance images."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from tests_paths import qwen

# Tests run many small torch programs side by side on a 2-core machine: one thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Without a GPU the Triton kernels are tested in Triton's interpreter. Triton decides at import time (its own
# library functions are decorated then), and vLLM imports it early, so the switch is set before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config) -> None:
    """Stops the run when `swehero_kernels` is not this checkout's `kernels/`. It is installed under that name (see
    setup.py), so PYTHONPATH=$PWD does not provide it: an environment holding another checkout's editable install would
    have the tests check that checkout's kernels."""
    kernels = Path(__file__).resolve().parents[1] / "kernels"
    spec = importlib.util.find_spec("swehero_kernels")
    found = Path(spec.origin).resolve().parent if spec and spec.origin else None
    if found != kernels:
        raise pytest.UsageError(f"swehero_kernels is {found or 'not installed'}, not this checkout's {kernels}: "
                                f"install this checkout (`make install`, or `pip install -e {kernels.parent}`)")


@pytest.fixture(scope="session")
def qwen_tokenizer_dir() -> Path:
    return qwen()


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from swehero.tiny.kit import TinyModelConfig, make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", TinyModelConfig(), seed=0)


@pytest.fixture
def stalled_teacher():
    """A teacher that accepts connections and never answers: its attempts would wait out the 600 s request timeout.
    Yields its URL and the connections it holds."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1", held
    server.close()
    for connection in held:
        connection.close()


class _DockerSetup:
    """The engine and base image made ready as `python -m swehero.eval.engine` does (as root: `docker.io` installed
    and `dockerd` started when missing, the base image built once per machine), in a thread started as soon as the
    session knows it has Docker tests. On a fresh machine that is minutes of apt and debootstrap; those tests run
    last, so the others hide it."""

    def __init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="docker-setup", daemon=True)
        self.outcome: str | Exception | None = None
        self.progress: list[str] = []
        self.took_s = self.waited_s = 0.0

    def _run(self) -> None:
        from swehero.eval.engine import ensure_base_image

        start = time.monotonic()
        try:
            self.outcome = ensure_base_image(progress=self.progress.append)
        except Exception as e:  # handed to the tests that wait for it
            self.outcome = e
        self.took_s = time.monotonic() - start

    def wait(self) -> str:
        """The base image's name; raises what the set-up raised."""
        if self.thread.ident is None:
            self.thread.start()  # a test asked before collection said so (a fixture requested at run time)
        start = time.monotonic()
        self.thread.join()
        self.waited_s += time.monotonic() - start
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


_DOCKER = _DockerSetup()


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: `make test-fast` starts nothing
def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked `bwrap` (agents in the local sandbox) are skipped with the reason when bubblewrap is missing;
    Docker tests run last, after the engine and base image set up in the background."""
    if shutil.which("bwrap") is None:
        for item in items:
            if item.get_closest_marker("bwrap"):
                item.add_marker(pytest.mark.skip(reason="bubblewrap (bwrap) is not installed"))
    needs = [item for item in items if item.get_closest_marker("docker") or "docker_base_image" in item.fixturenames]
    ids = {id(item) for item in needs}
    items[:] = [item for item in items if id(item) not in ids] + needs  # each keeps its order
    if needs and not config.option.collectonly:
        _DOCKER.thread.start()


@pytest.fixture(scope="session")
def docker_base_image() -> str:
    """The base image of locally built instance images, the engine running; skips with the one-line reason when
    that cannot be had here."""
    from swehero.errors import Unavailable

    try:
        return _DOCKER.wait()
    except Unavailable as e:
        pytest.skip(f"Docker unavailable: {e}")


def pytest_terminal_summary(terminalreporter) -> None:
    """One line on the Docker set-up: what it made, how long it took, and how much of that the tests waited for."""
    if _DOCKER.thread.ident is not None and isinstance(_DOCKER.outcome, str):
        terminalreporter.write_line(f"Docker: {_DOCKER.outcome} ready; the set-up took {_DOCKER.took_s:.0f} s in the "
                                    f"background ({'; '.join(_DOCKER.progress) or 'nothing to build'}), of which the "
                                    f"Docker tests waited {_DOCKER.waited_s:.0f} s")


@pytest.fixture(autouse=True)
def _docker_engine_for_marked_tests(request) -> None:
    """Tests marked `docker` get the engine (or are skipped with the reason) without asking for it."""
    if request.node.get_closest_marker("docker"):
        request.getfixturevalue("docker_base_image")


@pytest.fixture(scope="session")
def toy_images(docker_base_image, tmp_path_factory) -> Path:
    """The toy tasks and their instance images, built once per session; returns a task file of them with the
    harness's columns (`swehero eval images build --out`), the repositories in `repos/` beside it."""
    from swehero.eval.images import build_images, write_harness_tasks
    from swehero.rollout.tasks import load_tasks
    from swehero.rollout.toy import build_toy_tasks

    tasks_file = build_toy_tasks(tmp_path_factory.mktemp("toy-images"))
    tasks = load_tasks(str(tasks_file))
    build_images(tasks, tasks_file.parent / "repos", docker_base_image, progress=lambda line: None)
    return write_harness_tasks(tasks, tasks_file.parent / "harness.jsonl")


@pytest.fixture(scope="session")
def four_layer_model_dir(tmp_path_factory) -> Path:
    """The tiny model with 4 layers (same tokenizer): 2 pipeline stages x 2 virtual stages of one layer each."""
    from swehero.tiny.kit import TinyModelConfig, make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny4") / "model", TinyModelConfig(num_layers=4), seed=0)
