"""The `docker` runtime: a SWE-bench instance image, one container per rollout, the same tool semantics as local.

The container runs `sleep <lifetime>` with no network and CPU/memory/pids limits; every command is `docker exec`ed
through the same state-keeping shell wrapper as the local runtime, under `timeout -s KILL` (GNU timeout signals
its whole process group). Files move through the archive API, so the editor needs nothing inside the image.
The container is removed in `close()`, which the caller runs in `finally` (Ctrl-C and SIGTERM included), by an
`atexit` hook if the process exits without unwinding, and by the engine itself (`auto_remove`) once its `sleep`
ends, which covers a SIGKILLed swehero too.
"""

from __future__ import annotations

import atexit
import io
import posixpath
import shlex
import tarfile
import time
import uuid
from dataclasses import dataclass

from swehero.agent.docker_host import check_free_disk, docker_root
from swehero.agent.editor import ToolError
from swehero.agent.runtime import (
    STATE_DIR,
    CappedBuffer,
    CommandResult,
    RuntimeConfig,
    patch_command,
    shell_script,
    strip_history_script,
)


@dataclass(frozen=True)
class DockerConfig:
    """Resources one rollout container may use, and the housekeeping of instance images."""

    cpus: float = 2.0
    """CPU cores (`nano_cpus`)."""
    memory: str = "8g"
    """Memory limit, swap included (`mem_limit` and `memswap_limit`)."""
    pids: int = 1024
    """Maximum number of processes (`pids_limit`): stops fork bombs."""
    lifetime: int = 6 * 3600
    """Seconds after which the container stops and the engine removes it, even if swehero was killed (SIGKILL)
    before it could clean up."""
    min_free_gb: float = 50.0
    """Free GiB required on Docker's disk before an instance image is pulled."""
    prune_image: bool = False
    """Remove the instance image after the attempt (small disks; grading pulls it again)."""


def swebench_image(instance_id: str, namespace: str = "swebench", tag: str = "latest") -> str:
    """SWE-bench's instance image name (`sweb.eval.x86_64.<id>` with `__` spelt `_1776_`)."""
    return f"{namespace}/sweb.eval.x86_64.{instance_id.replace('__', '_1776_')}:{tag}".lower()


def container_kwargs(image: str, limits: DockerConfig) -> dict:
    """Arguments of `client.containers.run` for a rollout container (kept pure so it can be tested without Docker)."""
    return {
        "image": image,
        "command": ["sleep", str(limits.lifetime)],
        "detach": True,
        "auto_remove": True,
        "name": f"swehero-{uuid.uuid4().hex[:12]}",
        "network_mode": "none",
        "nano_cpus": int(limits.cpus * 1e9),
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,
        "pids_limit": limits.pids,
        "labels": {"swehero": "rollout"},
        "init": True,
    }


def exec_argv(root: str, limit: float, path: str) -> list[str]:
    """The argv `docker exec` runs for one command (the command itself waits in `STATE_DIR/cmd`)."""
    script = f"export PATH={shlex.quote(path)}:$PATH\n" + shell_script(root)
    return ["timeout", "-s", "KILL", f"{limit:g}", "bash", "--noprofile", "--norc", "-c", script]


def tar_one(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def untar_one(chunks) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r") as tar:
        member = tar.next()
        if member is None or not member.isfile():
            raise ToolError("not a regular file")
        return tar.extractfile(member).read()


class DockerFiles:
    """Agent-visible paths inside the container, confined to `root` (symlinks resolved by `realpath` in it)."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.rt, self.root = runtime, runtime.root

    def _check(self, path: str) -> str:
        norm = posixpath.normpath(path)
        inside = lambda p: p == self.root or p.startswith(self.root.rstrip("/") + "/")  # noqa: E731
        if not inside(norm):
            raise ToolError(f"Invalid `path` parameter: {path}. Only files inside the repository {self.root} can "
                            "be viewed or edited.")
        real = self.rt.sh(f"realpath -m {shlex.quote(norm)}").strip()
        root_real = self.rt.sh(f"realpath -m {shlex.quote(self.root)}").strip()
        if real != root_real and not real.startswith(root_real.rstrip("/") + "/"):
            raise ToolError(f"Invalid `path` parameter: {path}. It is a symbolic link to a location outside the "
                            f"repository {self.root}.")
        return norm

    def kind(self, path: str) -> str | None:
        p = shlex.quote(self._check(path))
        found = self.rt.sh(f"if [ -d {p} ]; then echo d; elif [ -e {p} ]; then echo f; fi").strip()
        return {"d": "dir", "f": "file"}.get(found)

    def size(self, path: str) -> int:
        return int(self.rt.sh(f"stat -c %s {shlex.quote(self._check(path))}").strip())

    def read_bytes(self, path: str) -> bytes:
        chunks, _ = self.rt.container.get_archive(self._check(path))
        return untar_one(chunks)

    def write_text(self, path: str, text: str) -> None:
        p = self._check(path)
        if not self.rt.container.put_archive(posixpath.dirname(p), tar_one(posixpath.basename(p), text.encode())):
            raise ToolError(f"Ran into an error while trying to write to {path}")

    def listing(self, path: str) -> tuple[list[str], int]:
        p = shlex.quote(self._check(path).rstrip("/") or "/")
        hidden = self.rt.sh(f"find {p} -mindepth 1 -maxdepth 1 -name '.*' | wc -l").strip()
        out = self.rt.sh(f"find {p} -maxdepth 2 -not \\( -path {p}'/.*' -o -path {p}'/*/.*' \\) "
                         "\\( -type d -printf '%p/\\n' -o -printf '%p\\n' \\) | LC_ALL=C sort")
        return out.splitlines(), int(hidden or 0)


class DockerRuntime:
    """One rollout container from `image`, the repository at `image_repo` shown to the agent at `root`."""

    def __init__(self, image: str, root: str = "/testbed", image_repo: str = "/testbed",
                 config: RuntimeConfig = RuntimeConfig(), limits: DockerConfig = DockerConfig(),
                 strip_history_to: str | None = None) -> None:
        import docker  # heavy and optional: only this runtime needs it

        self.root, self.config = root, config
        try:
            self.client = docker.from_env()
        except docker.errors.DockerException as e:
            raise RuntimeError(f"the docker runtime cannot reach a Docker engine ({e}); start Docker (or set "
                               "DOCKER_HOST), or use the local runtime") from e
        if limits.min_free_gb > 0 and not _image_present(self.client, image):  # about to pull it
            check_free_disk(docker_root(), limits.min_free_gb, f"pulling {image}")
        self.image, self.prune_image = image, limits.prune_image
        self.container = self.client.containers.run(**container_kwargs(image, limits))
        atexit.register(self.close)
        try:
            self.sh(f"mkdir -p {STATE_DIR}")
            if strip_history_to:  # zero mode: no later commits for the agent to find
                self.sh(f"cd {shlex.quote(image_repo)} && {strip_history_script(strip_history_to)}")
            if root != image_repo:  # a symlink keeps editable installs that point at the image's path working
                self.sh(f"mkdir -p {shlex.quote(posixpath.dirname(root))} && "
                        f"ln -sfn {image_repo} {shlex.quote(root)}")
        except BaseException:
            self.close()
            raise
        self.files = DockerFiles(self)

    def sh(self, script: str) -> str:
        """Run a helper command (not the agent's) and return its output."""
        _, out = self.container.exec_run(["bash", "-c", script])
        return out.decode("utf-8", errors="replace")

    def execute(self, command: str, timeout: float) -> CommandResult:
        self.container.put_archive(STATE_DIR, tar_one("cmd", command.encode()))
        api = self.client.api  # the low-level API streams output, so the cap holds while reading
        exec_id = api.exec_create(self.container.id, exec_argv(self.root, timeout, self.config.path),
                                  workdir=self.root)["Id"]
        buf = CappedBuffer(self.config.output_cap_bytes)
        start = time.monotonic()
        for chunk in api.exec_start(exec_id, stream=True):
            buf.add(chunk)
        code = api.exec_inspect(exec_id)["ExitCode"]
        state = self.sh(f"cat {STATE_DIR}/cwd; echo; cat {STATE_DIR}/python 2>/dev/null").split("\n")
        timed_out = code == 137 and time.monotonic() - start >= timeout  # not an OOM kill or `kill -9 $$`
        return CommandResult(output=buf.text(), exit_code=-1 if timed_out else code, timed_out=timed_out,
                             cwd=state[0].strip() or self.root, python=state[1].strip() if len(state) > 1 else "")

    def patch(self, base_commit: str) -> str:
        result = self.execute(patch_command(self.root, base_commit), 120)
        if result.exit_code != 0:
            raise RuntimeError(f"git diff failed in the container: {result.output[-2000:]}")
        chunks, _ = self.container.get_archive(f"{STATE_DIR}/patch")
        return untar_one(chunks).decode("utf-8", errors="replace")

    def close(self) -> None:
        import docker

        container, self.container = getattr(self, "container", None), None
        if container is not None:
            atexit.unregister(self.close)
            try:
                container.remove(force=True)
            except docker.errors.NotFound:  # already gone (auto_remove)
                pass
            if self.prune_image:
                self.client.images.remove(self.image, force=True)


def _image_present(client, image: str) -> bool:
    import docker

    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
