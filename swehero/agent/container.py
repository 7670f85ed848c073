"""The `docker` runtime: a SWE-bench instance image, one container per rollout, the same tool semantics as local.

The container's PID 1 runs `sleep <lifetime>` (`keep_alive_script`), with no network and CPU/memory/pids limits.
Before the first turn it is made to look as OpenHands' SWE-bench runtime makes it look: the image's repository is
moved to the agent's workspace (`/workspace/<repo>__<version>`, with `/testbed` left as a link to it, so editable
installs pointing at /testbed still import the agent's code), stripped of everything newer than the base commit
(SWE-bench images leak later commits, tags and reflogs) and checked for such history; and the environment the
image's own shell start-up activates (the `testbed` conda environment of SWE-bench's Python images, whatever
`~/.bashrc` sets up elsewhere) is captured once, so every command the agent runs sees the interpreter and tools the
instance's tests use.

Every command is `docker exec`ed, on a terminal of its own, through the same state-keeping shell wrapper as the local
runtime; when it ends, every process it left behind is killed (as in the local runtime, whose PID namespace ends with
the command), and killing a command kills every process but the container's own, which also ends daemons that
escaped its process group. Files move through the archive API, so the editor needs nothing inside the
image. The container is removed in `close()`, which the caller runs in `finally` (Ctrl-C and SIGTERM included), by
an `atexit` hook if the process exits without unwinding, and by the engine itself (`auto_remove`) once its `sleep`
ends, which covers a SIGKILLed swehero too.
"""

from __future__ import annotations

import atexit
import base64
import io
import posixpath
import shlex
import select
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass
from typing import Annotated

from swehero.agent.docker_host import check_engine_disk, client, remove_container
from swehero.agent.editor import ToolError, slash_dirs
from swehero.agent.runtime import (
    BYTECODE_PATTERNS,
    STATE_DIR,
    UNTRACKED_COMMAND,
    CommandResult,
    OneCommandAtATime,
    RuntimeConfig,
    exclude_patterns,
    history_check_script,
    require_clean_history,
    run_to_end,
    shell_argv,
    strip_history_script,
)
from swehero.agent.task import SWEBENCH_ROOT
from swehero.agent.terminal import COLUMNS, SCREEN_ROWS
from swehero.errors import Unavailable
from swehero.recipe.stage import Range

DOCKER_MIN_MEMORY = 6 * 1024 * 1024
"""The least memory limit the engine accepts ('Minimum memory limit allowed is 6MB')."""


@dataclass(frozen=True)
class DockerConfig:
    """Resources one rollout container may use, and the housekeeping of instance images."""

    cpus: Annotated[float, Range(gt=0)] = 2.0
    """CPU cores (`nano_cpus`)."""
    memory: str = "8g"
    """Memory limit, swap included (`mem_limit` and `memswap_limit`): bytes, or a number with b, k, m or g."""
    pids: Annotated[int, Range(min=1)] = 1024
    """Maximum number of processes (`pids_limit`): stops fork bombs."""
    lifetime: Annotated[int, Range(min=1)] = 6 * 3600
    """Seconds after which the container stops and the engine removes it, even if swehero was killed (SIGKILL)
    before it could clean up."""
    min_free_gb: Annotated[float, Range(min=0)] = 50.0
    """Free GiB required on Docker's disk before an instance image is pulled."""
    prune_image: bool = False
    """Remove the instance image once it is no longer needed (small disks; grading pulls it again): after the
    runtime's container (one attempt), or after a run's last attempt of the task (the runner)."""

    def cross_field_problems(self) -> list[tuple[str, str]]:
        """A `memory` the engine refuses, found with the other settings: else every attempt of a run failed on it.
        Read by the docker SDK's own parser, the one `containers.create` uses (without the SDK there is no docker
        runtime to check for: `check_ready` says so)."""
        try:
            from docker.errors import DockerException
            from docker.utils import parse_bytes
        except ImportError:
            return []
        try:
            size = parse_bytes(self.memory)
        except DockerException:
            return [("memory", f"must be bytes or a number with b, k, m or g (as 8g or 512m), got {self.memory!r}")]
        if size < DOCKER_MIN_MEMORY:
            return [("memory", f"must be at least 6m (the engine's least), got {self.memory!r}")]
        return []


def swebench_image(instance_id: str, namespace: str = "swebench", tag: str = "latest") -> str:
    """SWE-bench's instance image name (`sweb.eval.x86_64.<id>` with `__` spelt `_1776_`), as swebench's
    `ImageSpec.name` spells it; `swehero eval images build` names the images it builds the same way."""
    return f"{namespace}/sweb.eval.x86_64.{instance_id.replace('__', '_1776_')}:{tag}".lower()


def container_kwargs(image: str, limits: DockerConfig) -> dict:
    """Arguments of `client.containers.create` for a rollout container (pure: tested without Docker)."""
    return {
        "image": image,
        "command": ["sh", "-c", keep_alive_script(limits.lifetime)],
        "detach": True,
        "auto_remove": True,
        # PID 1 is the keep-alive, which a kill of "every process but PID 1" spares: said, as a daemon configured
        # with `"init": true` would put docker-init there, and that kill would end the container
        "init": False,
        "name": f"swehero-{uuid.uuid4().hex[:12]}",
        "network_mode": "none",
        "nano_cpus": int(limits.cpus * 1e9),
        "mem_limit": limits.memory,
        "memswap_limit": limits.memory,
        "pids_limit": limits.pids,
        "labels": {"swehero": "rollout"},
    }


def keep_alive_script(lifetime: int) -> str:
    """PID 1 of a rollout container: `sleep` for `lifetime` seconds, then the container ends (and the engine removes
    it). PID 1 itself, not a child of docker-init: the kernel gives a namespace's init no signal from inside it that
    it has no handler for, so the agent's `pkill sleep` or `kill -9 -1` cannot end the container under its episode
    (with docker-init, killing its child ended it). A `sleep` killed is started again, for the whole lifetime: a
    safety net for containers whose swehero was killed, which then kill nothing more. Waiting on it, PID 1 also reaps
    the processes whose parents ended before them, which become its children, as an init must. Nothing else is
    started: the reaper of a command may kill any other process."""
    return f"while :; do sleep {int(lifetime)} & wait $! && exit; done"


_BEGIN, _END = "swehero-helper-output-begins", "swehero-helper-output-ends"
"""The lines that frame a helper's output (`DockerRuntime.query`)."""
HELPER_ENV = {"SWEHERO_HELPER": "1"}
"""In the environment of swehero's own commands in a container (the editor's reads and writes, the setup's): the
reaper spares them, and what they start."""


def exec_argv(root: str, keep: str) -> list[str]:
    """The argv `docker exec` runs for one command (the command itself waits in `STATE_DIR/cmd`): the command, then
    every process it left behind killed (`keep`: the PIDs to spare, see `reap_script`), which also closes the
    terminal that a background process would hold open. No start-up files and no PATH of ours: the environment is
    the image's, plus what its start-up file activated (`STATE_DIR/env`)."""
    command = shlex.join(shell_argv(root))
    # The exec's terminal is sized as the local runtime's. Ctrl-C typed on it interrupts the whole process group,
    # this wrapper included: its trap lets it outlive the command and reap. Its fd 2 points to /dev/null meanwhile,
    # so that a report of a command killed by a signal ("Killed") is not taken for the command's output.
    return ["bash", "--noprofile", "--norc", "-c",
            f"stty rows {SCREEN_ROWS} cols {COLUMNS} -onlcr 2>/dev/null; trap : INT; exec 3>&2 2>/dev/null; "
            f"{command} 2>&3; code=$?; exec 2>&3 3>&-; {reap_script(keep)}; exit $code"]


def workspace_script(image_repo: str, root: str) -> str:
    """Move the image's repository to the agent's root and leave a link at the old path (OpenHands copies it; a
    move keeps one copy, and the link keeps installs that point at the image's path importing the agent's code)."""
    repo, dest = shlex.quote(image_repo), shlex.quote(root)
    return (f"if [ ! -e {dest} ]; then mkdir -p {shlex.quote(posixpath.dirname(root))} && mv {repo} {dest} && "
            f"ln -s {dest} {repo}; fi")


def activation_script() -> str:
    """Write the environment an interactive shell of the image has (`~/.bashrc` and the like sourced, as in a
    terminal and in OpenHands' shell) to the state file every command starts from. Through fd 3: whatever the
    start-up files print must not end up in a file that is sourced. Run as a helper: the helper's mark is not
    kept (the agent's commands would be spared by the reaper)."""
    return f"bash -i -c 'unset {' '.join(HELPER_ENV)}; export -p >&3' 3>{STATE_DIR}/env </dev/null >/dev/null 2>&1"


def reap_script(keep: str) -> str:
    """Kill every process of the container but those of `keep` (PID 1 and its `sleep`), this shell and swehero's
    own commands (`HELPER_ENV`: an editor's write in flight when a command ends would otherwise die half done), a
    few rounds over, since a dying fork bomb still forks. Bash, builtins only: a process it started would be one
    more to kill."""
    return (f'keep=" {keep} $$ "; for round in 1 2 3 4 5 6 7 8; do left=; for p in /proc/[0-9]*; do '
            'pid=${p#/proc/}; case "$keep" in *" $pid "*) continue;; esac; helper=; '
            'while IFS= read -r -d "" v; do [ "$v" = SWEHERO_HELPER=1 ] && helper=1 && break; done 2>/dev/null '
            '< "$p/environ"; [ -n "$helper" ] || { kill -9 "$pid" 2>/dev/null && left=1; }; done; '
            '[ -z "$left" ] && break; done')


def tar_one(name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.uid, info.gid, info.mtime = len(data), mode, uid, gid, int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def untar_one(chunks) -> bytes | None:
    """The content of the one file a `get_archive` stream holds; None when it is not a regular file."""
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r") as tar:
        member = tar.next()
        return tar.extractfile(member).read() if member is not None and member.isfile() else None


class DockerFiles:
    """Agent-visible paths inside the container, confined to `root` (symlinks resolved by `realpath` in it)."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.rt, self.root = runtime, runtime.root

    def _check(self, path: str, follow: bool = False) -> str:
        """`path` normalised, or with `follow` its target, symbolic links resolved (where reads and writes go, as
        they go through a link locally); refused unless that target lies in the repository."""
        norm = posixpath.normpath(path)
        inside = lambda p: p == self.root or p.startswith(self.root.rstrip("/") + "/")  # noqa: E731
        if not inside(norm):
            raise ToolError(f"Invalid `path` parameter: {path}. Only files inside the repository {self.root} can "
                            "be viewed or edited.")
        script = f"realpath -m {shlex.quote(norm)} {shlex.quote(self.root)}"
        code, out = self.rt.query(script)
        if code != 0 or out.count("\n") < 2:
            raise RuntimeError(f"the container answered {script!r} with status {code} and {out[-500:]!r}")
        real, root_real = out.split("\n")[:2]
        if real != root_real and not real.startswith(root_real.rstrip("/") + "/"):
            raise ToolError(f"Invalid `path` parameter: {path}. It is a symbolic link to a location outside the "
                            f"repository {self.root}.")
        return real if follow else norm

    def kind(self, path: str) -> str | None:
        p = shlex.quote(self._check(path))
        found = self.rt.sh(f"if [ -d {p} ]; then echo d; elif [ -e {p} ]; then echo f; fi").strip()
        return {"d": "dir", "f": "file"}.get(found)

    def size(self, path: str) -> int:
        return int(self.rt.sh(f"stat -c %s {shlex.quote(self._check(path, follow=True))}").strip())

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        if limit is not None:  # the start of a file that may be far larger; `-f`: a FIFO would block `head`
            p = shlex.quote(self._check(path, follow=True))
            code, out = self.rt.query(f"[ -f {p} ] && head -c {int(limit)} {p} 2>/dev/null | base64 -w0")
            if code != 0:
                raise ToolError(f"File validation failed for {path}: it is not a regular file.")
            return base64.b64decode(out)
        chunks, _ = self.rt.container.get_archive(self._check(path, follow=True))
        data = untar_one(chunks)
        if data is None:  # a FIFO or device: the local runtime's words
            raise ToolError(f"File validation failed for {path}: it is not a regular file.")
        return data

    def write_bytes(self, path: str, data: bytes) -> None:
        p = self._check(path, follow=True)
        # An edited file keeps its mode and owner (an executable script stays executable), as a local write does.
        meta = self.rt.sh(f"stat -c '%a %u %g' {shlex.quote(p)} 2>/dev/null").split()
        mode, uid, gid = (int(meta[0], 8), int(meta[1]), int(meta[2])) if len(meta) == 3 else (0o644, 0, 0)
        archive = tar_one(posixpath.basename(p), data, mode, uid, gid)
        import docker.errors  # optional: a DockerRuntime's client has imported it already

        try:
            written = self.rt.container.put_archive(posixpath.dirname(p), archive)
        except docker.errors.NotFound:  # no such folder: what writing the file there says (the local runtime's)
            raise ToolError(f"Ran into [Errno 2] No such file or directory: '{path}' while trying to write to "
                            f"{path}") from None
        if not written:
            raise ToolError(f"Ran into an error while trying to write to {path}")

    def listing(self, path: str) -> tuple[list[str], int]:
        p = shlex.quote(self._check(path).rstrip("/") or "/")
        # -L as OHEditor: a linked directory (the path itself too) is listed with its entries. The container's own
        # files outside the checkout are no secret, so links leading there are followed as well.
        hidden = self.rt.sh(f"find -L {p} -mindepth 1 -maxdepth 1 -name '.*' | wc -l").strip()
        out = self.rt.sh(f"find -L {p} -maxdepth 2 -not \\( -path {p}'/.*' -o -path {p}'/*/.*' \\) "
                         "-printf '%y%p\\n' 2>/dev/null")
        return slash_dirs([(line[1:], line[0] == "d") for line in out.splitlines()]), int(hidden or 0)


class DockerRuntime(OneCommandAtATime):
    """One rollout container from `image`, the repository the image keeps at `image_repo` shown to the agent at
    `root`. With `base_commit`, history after it is removed, and its absence checked, before the first command."""

    def __init__(self, image: str, root: str = SWEBENCH_ROOT, image_repo: str = SWEBENCH_ROOT,
                 config: RuntimeConfig = RuntimeConfig(), limits: DockerConfig = DockerConfig(),
                 base_commit: str | None = None) -> None:
        self.root, self.config = root, config
        self.client = client()
        _require_image(self.client, image, limits.min_free_gb)
        self.image, self.prune_image = image, limits.prune_image
        kwargs = container_kwargs(image, limits)
        try:
            # Create, then start, under a name chosen here: a signal whose handler raises (SIGTERM, the attempt's
            # time limit) may land once the engine has made the container but before its answer is back or the
            # container runs, where neither `self.container` nor `auto_remove` would ever remove it; the name does.
            self.container = self.client.containers.create(**kwargs)
            atexit.register(self.close)
            self.container.start()
            self.keep = self.sh("for p in /proc/[0-9]*; do [ ${p#/proc/} = $$ ] || echo -n \"${p#/proc/} \"; done")
            setup = [f"mkdir -p {STATE_DIR}", "git config --global --add safe.directory '*'"]
            if root != image_repo:
                setup.append(workspace_script(image_repo, root))
            if base_commit:
                setup.append(f"cd {shlex.quote(root)} && {strip_history_script(base_commit)}")
            code, out = self.run(" && ".join(setup))
            if code != 0:
                raise RuntimeError(f"preparing the repository of {image} at {root} failed: {out[-2000:]}")
            self._exclude_untracked()
            self.run(activation_script())
            if base_commit:
                _, leaks = self.query(f"cd {shlex.quote(root)} && {history_check_script(base_commit)}")
                require_clean_history(leaks, f"{image}:{root}", base_commit)
        except BaseException:
            self.close()
            remove_container(self.client, kwargs["name"])
            raise
        self.files = DockerFiles(self)

    def _exclude_untracked(self) -> None:
        """Keep out of the patch what the image's install left untracked (an egg-info, build files) and the bytecode
        of the agent's python runs, as the local runtime does after its install: the same edits then give the same
        patch in both runtimes, and it applies to a fresh container. Through a file: the list may be long."""
        code, listed = exec_output(self.container, UNTRACKED_COMMAND, HELPER_ENV, self.root)
        if code != 0:
            raise RuntimeError(f"listing the untracked files of {self.root} failed: {listed[-2000:]!r}")
        patterns = BYTECODE_PATTERNS + exclude_patterns(listed)
        # names that are no UTF-8 go back as they came (see `exclude_patterns`)
        self.container.put_archive(STATE_DIR, tar_one("exclude", "".join(f"{p}\n" for p in patterns).encode(
            "utf-8", "surrogateescape")))
        code, out = self.run(f"cd {shlex.quote(self.root)} && mkdir -p .git/info && cat {STATE_DIR}/exclude >> "
                             f".git/info/exclude && rm {STATE_DIR}/exclude")
        if code != 0:
            raise RuntimeError(f"writing {self.root}/.git/info/exclude failed: {out[-2000:]}")

    def run(self, script: str) -> tuple[int, str]:
        """Run a helper command (not the agent's); its exit code and output, which may have lost its start (see
        `query`): for a command that changes something, whose output is read only to say why it failed."""
        code, out = exec_output(self.container, ["bash", "-c", script], HELPER_ENV)
        return code, out.decode("utf-8", errors="replace")

    def query(self, script: str) -> tuple[int, str]:
        """A helper command that changes nothing: its exit code and whole output. An exec's output once came back
        without its start, or none of it (a file the editor had just viewed was "does not exist"; the client's
        buffered read, `read_ahead`, was one cause): the output is framed by two marker lines, and the command run
        again until both arrive, three times at most. The end marker is written on the shell's exit, also by an
        `exit` in `script`, and stderr joins stdout in the shell: the engine sends stderr as a stream of its own, in
        no fixed order with stdout, and an error message once arrived after the end marker."""
        framed = f"exec 2>&1; trap 'printf \"\\n{_END} %d\\n\" $?' EXIT; echo {_BEGIN}; {script}\n"
        for _ in range(3):
            _, out = self.run(framed)
            _, begun, rest = out.partition(_BEGIN + "\n")
            body, ended, code = rest.rpartition(f"\n{_END} ")
            if begun and ended:
                return int(code), body
        raise RuntimeError(f"the container's exec gave back the output of {script!r} incomplete three times: "
                           f"{out[-500:]!r}")

    def sh(self, script: str) -> str:
        """The whole output of a helper command that changes nothing (`query`)."""
        return self.query(script)[1]

    def reap(self) -> None:
        """Kill every process the agent's commands left running."""
        self.run(reap_script(self.keep))

    def start(self, command: str) -> DockerChannel:
        self.stop()
        self.container.put_archive(STATE_DIR, tar_one("cmd", command.encode()))
        api = self.client.api
        # a terminal, as the local runtime's commands have (TERM as there, not Docker's xterm): see `exec_argv`
        exec_id = api.exec_create(self.container.id, exec_argv(self.root, self.keep), stdin=True, tty=True,
                                  environment={"TERM": "dumb"}, workdir=self.root)["Id"]
        self.running = DockerChannel(self, exec_id, api.exec_start(exec_id, tty=True, socket=True))
        return self.running

    def execute(self, command: str, timeout: float) -> CommandResult:
        return run_to_end(self.start(command), timeout, self.config.output_cap_bytes)

    def _write_patch(self, command: str) -> bytes:
        result = self.execute(command, 120)
        if result.exit_code != 0:
            raise RuntimeError(f"git diff failed in the container: {result.output[-2000:]}")
        chunks, _ = self.container.get_archive(f"{STATE_DIR}/patch")
        data = untar_one(chunks)
        if data is None:
            raise RuntimeError(f"{STATE_DIR}/patch is not a regular file in the container")
        return data

    def close(self) -> None:
        import docker

        container, self.container = getattr(self, "container", None), None
        if self.running is not None:
            self.running.attached.close()  # its processes go with the container
        if container is not None:
            atexit.unregister(self.close)
            try:
                container.remove(force=True)
            except docker.errors.NotFound:  # already gone (auto_remove)
                pass
            except docker.errors.APIError as e:  # 409: being removed already (auto_remove, its lifetime over)
                if e.status_code != 409:
                    raise
            if self.prune_image:
                remove_image(self.image, self.client)


def read_ahead(attached) -> bytes:
    """What the HTTP client already read of an exec's stream: docker-py reads the engine's 101 reply through
    http.client's buffered reader, then hands over the socket under it, so output that came in the same read as the
    reply's headers (a quick command on a busy machine) sits in that buffer, and reading the socket alone lost it
    (an `echo` gave no output; docker-py#2042). Taken without blocking: the socket is made non-blocking for it."""
    reader = attached._response.raw._fp.fp
    sock = getattr(attached, "_sock", attached)
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return reader.read1(65536) or b""  # only what is buffered, or nothing: the socket has nothing yet
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(timeout)


def exec_output(container, argv: list[str], environment: dict[str, str],
                workdir: str | None = None) -> tuple[int, bytes]:
    """Run `argv` in the container without a terminal: its exit code and output (stdout and stderr in the order the
    engine sent them). `exec_run` reads the socket as docker-py hands it over, losing what the HTTP client had
    already buffered (see `read_ahead`)."""
    api = container.client.api
    exec_id = api.exec_create(container.id, argv, environment=environment, workdir=workdir)["Id"]
    attached = api.exec_start(exec_id, socket=True)
    sock = getattr(attached, "_sock", attached)
    data = bytearray(read_ahead(attached))
    sock.settimeout(None)  # a helper may be quiet for longer than the client's timeout
    try:
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        attached.close()
    out, at = bytearray(), 0
    # docker-py's `frames_iter` reads its frames from a socket, but their start may be in `read_ahead`'s bytes
    while at + 8 <= len(data):  # the engine's frames: stream (1 byte), 3 zero bytes, size (4 bytes), payload
        size = int.from_bytes(data[at + 4:at + 8], "big")
        out += data[at + 8:at + 8 + size]
        at += 8 + size
    return api.exec_inspect(exec_id)["ExitCode"], bytes(out)


class DockerChannel:
    """A command `docker exec`ed on a terminal: the exec and the socket attached to its terminal."""

    def __init__(self, runtime: DockerRuntime, exec_id: str, attached) -> None:
        self.runtime, self.exec_id, self.attached = runtime, exec_id, attached
        self.socket = getattr(attached, "_sock", attached)  # the socket under docker-py's SocketIO
        self.pending = read_ahead(attached)
        self.ended = False
        self.result: tuple[int, str, str] | None = None

    def read(self, timeout: float) -> bytes | None:
        if self.pending:
            chunk, self.pending = self.pending, b""
            return chunk
        if self.ended:
            return None
        if not select.select([self.socket], [], [], timeout)[0]:
            return b""
        chunk = self.socket.recv(65536)
        self.ended = not chunk
        return chunk or None

    def write(self, data: bytes) -> None:
        try:
            self.socket.sendall(data)
        except BrokenPipeError:  # the command has just ended: typing on its terminal does nothing
            pass

    def kill(self) -> None:
        if not self.ended:
            self.runtime.reap()

    def finish(self) -> tuple[int, str, str]:
        if self.result is None:  # once: each costs two calls to the engine
            self.ended = True
            self.attached.close()
            code = self.runtime.client.api.exec_inspect(self.exec_id)["ExitCode"]
            # A command ended before it saved its state (timed out, killed) leaves no files: the root, no python
            state = self.runtime.sh(f'printf "%s\\n" "$(cat {STATE_DIR}/cwd 2>/dev/null)" '
                                    f'"$(cat {STATE_DIR}/python 2>/dev/null)"')
            cwd, _, python = state.partition("\n")
            self.result = (code if code is not None else -1), cwd.strip() or self.runtime.root, python.strip()
        return self.result


def remove_image(image: str, engine=None) -> None:
    """Remove `image` unless a container still uses it (another attempt of the task, which would then lose it: a
    removal by force, or of one of several names, only untags, and the task's next attempt finds no image, nor can
    it pull one built here); gone already is fine. `engine`: a Docker client, else one is made. Housekeeping only,
    so it never raises, not even for an engine that does not answer now: a finished attempt's record, and the
    attempts running beside it, matter more than the disk."""
    import docker

    try:
        engine = engine or client()
        if not engine.containers.list(all=True, filters={"ancestor": image}):
            engine.images.remove(image)
    except docker.errors.ImageNotFound:
        pass
    except Exception as e:  # the engine's refusal, or no engine at all (Unavailable)
        if getattr(e, "status_code", None) != 409:  # 409: in use
            print(f"warning: could not remove the Docker image {image}: {e}", file=sys.stderr)


def _require_image(client, image: str, min_free_gb: float) -> None:
    """The image, pulled (with room checked first) if this engine lacks it; a clear error when it cannot be had."""
    import docker

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    if min_free_gb > 0:
        check_engine_disk(min_free_gb, f"pulling {image}", client)
    try:
        client.images.pull(image)
    except docker.errors.APIError as e:
        raise Unavailable(
            f"the Docker image {image} is not on this engine and could not be pulled ({e.explanation or e}). Build "
            "it from the task file with `swehero eval images build --tasks FILE`, or pull it where a registry is "
            "reachable") from e
