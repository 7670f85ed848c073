"""The Docker engine, and checks made before Docker work starts: CPU architecture and free disk space for
instance images."""

from __future__ import annotations

import platform
import shutil

from swehero.errors import Unavailable

X86 = {"x86_64", "amd64"}


def client(timeout: int = 60):
    """A client of the Docker engine (`DOCKER_HOST`, else the local socket) that has answered a ping."""
    try:
        import docker  # heavy and optional: only Docker work needs it
    except ImportError:
        raise Unavailable("the docker SDK is not installed (pip install 'swehero[eval]')") from None
    try:
        engine = docker.from_env(timeout=timeout)
        engine.ping()
        return engine
    except docker.errors.DockerException as e:
        raise Unavailable(
            f"no Docker engine is reachable ({e}). The docker runtime and the swebench grader need one: start "
            "Docker (or set DOCKER_HOST); or run the agent with the local runtime, and grade on Modal "
            "(harness.modal: true) or, for Python tasks, on this machine (--grader local)."
        ) from None


def check_architecture(machine: str = "", remote: bool = False) -> None:
    """SWE-bench publishes x86_64 instance images only (`sweb.eval.x86_64.*`); refuse anything else early."""
    machine = (machine or platform.machine()).lower()
    if machine in X86 or remote:
        return
    raise Unavailable(
        f"this machine is {machine}, but SWE-bench instance images exist for x86_64 only. Run the Docker parts "
        "(the docker runtime, swebench grading) on an x86_64 Linux host; or grade on Modal (harness.modal: true), "
        "which builds the images remotely. Emulating x86_64 (qemu/Rosetta) is possible but several times slower "
        "and makes timing-sensitive tests flaky, so it is not done automatically."
    )


def docker_root() -> str:
    """Where the Docker engine stores images (`/var/lib/docker` unless configured otherwise)."""
    return client().info().get("DockerRootDir") or "/var/lib/docker"


def check_free_disk(path: str, min_free_gb: float, what: str) -> float:
    """Free GiB at `path`; raises before `what` starts when fewer than `min_free_gb` remain."""
    free = shutil.disk_usage(path).free / 2**30
    if free < min_free_gb:
        raise Unavailable(
            f"only {free:.1f} GiB free at {path}, {min_free_gb:g} GiB required before {what}. Free space (e.g. "
            "`docker image prune -a`), enable per-instance pruning (harness.prune_images: true), or lower "
            "harness.min_free_gb if you know your images are small."
        )
    return free
