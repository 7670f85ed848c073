"""A Docker engine and the base image of locally built instance images, on a machine that has neither.

`ensure_engine` reaches the engine, and as root installs Debian's `docker.io` when there is none and starts
`dockerd` when it is not running (a running one is left alone). `ensure_base_image` builds the base image offline
from the Debian mirror apt is configured with (`debootstrap --variant=minbase`, then `docker import`): no
registry is needed. Its tag holds a hash of its recipe, so it is built once per machine and again only when the
recipe changes. Both take a lock while they install, start or build, so concurrent callers (the test session's
background set-up and a test, two `eval images build`s) make each thing once: the later ones wait, then find it.
`python -m swehero.eval.engine` prints the base image's name, or one line saying why Docker is unavailable.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from swehero.agent.docker_host import client
from swehero.errors import Unavailable
from swehero.jsonio import exclusive

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "git", "patch", "procps")
"""What every instance image builds on: an interpreter that can make virtual environments, git (the agent's patch,
the harness's `git apply`), `patch` (the harness's last way of applying a patch) and procps (the harness stops
tests that run past its timeout with `kill` in the container; without it they never get a verdict)."""
BASE_REPO = "swehero/base"
DOCKERD_LOG = Path("/var/log/swehero-dockerd.log")
SETUP_LOCK = Path("/run/lock/swehero-docker-setup.lock")
"""Machine-wide, as what it guards is: not under TMPDIR, which differs between jobs on one cluster node."""


ENGINE_TIMEOUT_S = 600
"""Per request to the engine: committing a built image layer takes minutes on a slow disk."""


class DockerUnavailable(Unavailable):
    """No engine or no base image can be had here; the message says why in one line."""


def _root_only(what: str) -> None:
    if os.geteuid() != 0:
        raise DockerUnavailable(f"{what} needs root; run as root, or start a Docker engine yourself (DOCKER_HOST)")


@contextlib.contextmanager
def setup_lock():
    """Held while installing, starting or building (root only, as those are): one process at a time."""
    SETUP_LOCK.parent.mkdir(parents=True, exist_ok=True)  # absent in some containers
    with exclusive(SETUP_LOCK):
        yield


def _apt_install(*packages: str) -> None:
    _root_only(f"installing {' '.join(packages)}")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ,
                                                                            "DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            raise DockerUnavailable(f"`{' '.join(argv)}` failed: {tail[0]}")


def ensure_engine(wait_s: float = 60.0):
    """A client of a running engine: the one reachable now, else (as root) `dockerd` started here, installing
    `docker.io` first when it is missing."""
    try:
        return client(ENGINE_TIMEOUT_S)
    except Unavailable as unreachable:
        if "DOCKER_HOST" in os.environ:  # pointed at a remote or custom engine: not ours to start
            raise unreachable
    _root_only("starting a Docker engine")
    with setup_lock():
        with contextlib.suppress(Unavailable):
            return client(ENGINE_TIMEOUT_S)  # started by another process while this one waited
        if shutil.which("dockerd") is None:
            _apt_install("docker.io")
        DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
        with open(DOCKERD_LOG, "ab") as log:  # a daemon: it outlives this process, as a system service would
            subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return client(ENGINE_TIMEOUT_S)
            except Unavailable:
                if time.monotonic() > deadline:
                    tail = DOCKERD_LOG.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty)"]
                    raise DockerUnavailable(f"dockerd did not come up within {wait_s:g}s; {DOCKERD_LOG}: {tail[0]}")
                time.sleep(0.5)


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt is configured with (deb822 `.sources` or one-line `.list` files), so the base image
    comes from wherever this machine may download packages."""
    files = sorted(sources.glob("sources.list.d/*.sources")) + [sources / "sources.list"]
    files += sorted(sources.glob("sources.list.d/*.list"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for uri in re.findall(r"^URIs:\s*(\S+)", text, flags=re.MULTILINE) + re.findall(
                r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, flags=re.MULTILINE):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    raise DockerUnavailable(f"no Debian mirror found in {sources}/sources.list(.d); the base image is built from one")


def build_rootfs(dest: Path, mirror: str) -> None:
    """The base image's filesystem: a minimal Debian with PACKAGES, apt's lists and caches left out."""
    done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(dest),
                           mirror], capture_output=True, text=True)
    if done.returncode != 0:
        raise DockerUnavailable(f"debootstrap failed: {(done.stdout + done.stderr).strip().splitlines()[-1]}")
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (dest / leftover).glob("*"):
            if entry.is_file():
                entry.unlink()


def base_image_name() -> str:
    """`swehero/base:<suite>-<hash of the recipe>`: a changed recipe gets a new tag, hence a rebuild."""
    recipe = repr((SUITE, PACKAGES, IMPORT_CHANGES)) + inspect.getsource(build_rootfs)
    return f"{BASE_REPO}:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


IMPORT_CHANGES = ("ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "ENV LANG=C.UTF-8",
                  "CMD [\"bash\"]")
"""Image settings `docker import` adds (a root filesystem alone has none)."""


def ensure_base_image(engine=None, progress=print) -> str:
    """The base image's name, built first when this engine does not have it (about 4 minutes)."""
    engine = engine or ensure_engine()
    name = base_image_name()
    if _has_image(engine, name):
        return name
    _root_only(f"building the base image {name} (debootstrap)")
    with setup_lock():
        if not _has_image(engine, name):  # else another process built it while this one waited
            _build_base_image(engine, name, progress)
    return name


def _has_image(engine, name: str) -> bool:
    import docker

    try:
        engine.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def _build_base_image(engine, name: str, progress) -> None:
    if shutil.which("debootstrap") is None:
        _apt_install("debootstrap")
    mirror = apt_mirror()
    progress(f"building {name} from {mirror} (debootstrap {SUITE}, once per machine)")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="swehero-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        build_rootfs(rootfs, mirror)
        # `docker import` reads a tar stream; the CLI and the SDK both need one, and tar keeps devices and owners.
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            engine.api.import_image_from_data(tar.stdout, repository=name.split(":")[0], tag=name.split(":")[1],
                                              changes=list(IMPORT_CHANGES))
        finally:
            tar.stdout.close()
            tar.wait()
    progress(f"built {name} in {time.monotonic() - start:.0f}s")


def main() -> int:
    """Print the base image's name (engine and image made ready first), or why Docker is unavailable."""
    try:
        print(ensure_base_image(progress=lambda line: print(line, file=sys.stderr)))
        return 0
    except Unavailable as e:
        print(f"Docker unavailable: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
