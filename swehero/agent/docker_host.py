"""The Docker engine, and checks made before Docker work starts: CPU architecture and free disk space for
instance images."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import uuid

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


def check_engine_disk(min_free_gb: float, what: str, engine=None) -> float | None:
    """Free GiB on the disk where the Docker engine (`engine`, else a new client) stores images; raises before
    `what` starts when fewer than `min_free_gb` remain (see `check_free_disk`). Measured here when the engine's
    `DockerRootDir` is this machine's; else (swehero in a container that reaches the engine through its socket,
    as in docs/gpu-image.md, or a DOCKER_HOST on another host) in a throwaway container of an image the engine
    has, the folder mounted read-only; when neither can be done, the check is skipped with a warning (once)."""
    engine = engine or client()
    root = engine.info().get("DockerRootDir") or "/var/lib/docker"
    host = os.environ.get("DOCKER_HOST", "")
    if (not host or host.startswith("unix://")) and os.path.isdir(root):
        return check_free_disk(root, min_free_gb, what)
    free = _free_where_the_engine_is(engine, root)
    if free is None:
        if not _warned:
            _warned.append(root)
            print(f"warning: the free space on the Docker engine's disk ({root}) can be measured neither from "
                  "here nor in a container of an image the engine has: the free-disk check before pulls "
                  "(docker.min_free_gb, harness.min_free_gb) is skipped", file=sys.stderr)
        return None
    return check_free_disk(root, min_free_gb, what, free)


_warned: list[str] = []
"""Non-empty once the skipped check has been reported: each pull would otherwise repeat it."""


def _free_where_the_engine_is(engine, root: str) -> float | None:
    """Free GiB at `root` as `df` sees it in a throwaway container on the engine (the folder mounted read-only, no
    network), of the newest of the engine's tagged images that has `df` (a few are tried: a distroless image has
    none); None when none gives an answer."""
    for image in [image for image in engine.images.list() if image.tags][:3]:
        name = f"swehero-df-{uuid.uuid4().hex[:12]}"
        try:
            out = engine.containers.run(image.tags[0], ["-Pk", "/engine"], entrypoint=["df"], user="0", name=name,
                                        network_mode="none", volumes={root: {"bind": "/engine", "mode": "ro"}})
            return int(out.decode().splitlines()[1].split()[3]) / 2**20  # POSIX `df -P`: available KiB, 4th column
        except Exception:  # no df in the image, an odd output: the next image
            continue
        finally:  # `remove=True` would leave a container whose start failed (no df)
            remove_container(engine, name)
    return None


def remove_container(engine, name: str) -> None:
    """Remove the container `name` by force if it exists; never raises, so that it cannot hide the error that made
    the caller clean up."""
    import docker

    try:
        engine.api.remove_container(name, force=True)
    except docker.errors.NotFound:
        pass
    except Exception as e:
        print(f"warning: could not remove the Docker container {name}: {e}", file=sys.stderr)


def check_free_disk(path: str, min_free_gb: float, what: str, free: float | None = None) -> float:
    """Free GiB at `path` (`free`: measured already, elsewhere); raises before `what` starts when fewer than
    `min_free_gb` remain."""
    free = shutil.disk_usage(path).free / 2**30 if free is None else free
    if free < min_free_gb:
        raise Unavailable(
            f"only {free:.1f} GiB free at {path}, {min_free_gb:g} GiB required before {what}. Free space (e.g. "
            "`docker image prune -a`), enable per-instance pruning (harness.prune_images: true), or lower "
            "harness.min_free_gb if you know your images are small."
        )
    return free
