"""The `local` runtime: a fresh checkout per rollout (or an existing folder), every command inside bubblewrap.

The sandbox shows an allow-list, not the host minus a few folders: the system folders (`/usr`, `/etc` and the
`/bin`, `/sbin`, `/lib*` links or folders) read-only, the task's environment and its interpreter's installation
read-only (execution mode), the checkout writable at the agent-visible path, a private writable `/tmp` and shell
state folder for this rollout, and nothing else: home folders, the project, run directories, task files (gold
patches) and other checkouts do not exist inside, and the root itself is read-only. No network, its own
PID/IPC/UTS namespaces, a new session whose only terminal is the command's own (made for it on the host), and
`--die-with-parent`. To kill a command the bwrap process is SIGKILLed; as it holds PID 1 of the namespace, the kernel
then kills every process the command started, daemons included.

With a task environment (`swehero.agent.taskenv`), the rollout gets its own layer over it at `VENV_ROOT` (first on
PATH, so `python`, `pip` and `pytest` are the task's), and the checkout is installed into that layer before the
agent's first command, with the network on for that one command (the install command comes from the task's recipe,
not from the agent).
"""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import pty
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import struct
import tempfile
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from swehero.agent.editor import ToolError, slash_dirs
from swehero.agent.runtime import (
    BYTECODE_PATTERNS,
    STATE_DIR,
    UNTRACKED_COMMAND,
    CommandResult,
    OneCommandAtATime,
    RuntimeConfig,
    base_commit_sha,
    exclude_patterns,
    git,
    prepare_checkout,
    run_to_end,
    shell_argv,
)
from swehero.agent.taskenv import EnvError, TaskEnv, make_layer
from swehero.agent.terminal import COLUMNS, SCREEN_ROWS
from swehero.errors import InputError, MissingInput, Unavailable, few

SYSTEM_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
"""Top-level folders the sandbox shows read-only (as links where the host has merged /usr)."""
VENV_ROOT = "/opt/venv"
"""Where the rollout's layer over the task environment appears inside the sandbox."""


class MissingRepository(MissingInput):
    """A task's repository folder does not exist or is not a git repository: the input's error, so a command says
    so in one line (after attempting the tasks whose repositories are there)."""

    @classmethod
    def of(cls, reasons: list[str]) -> MissingRepository:
        """One error for the repositories of a run: the first few reasons (all of 3,500 made a line of 600 KB)."""
        return cls(few(reasons, 5, "; "))


def check_repository(path: Path, repo: str = "", base_commit: str = "") -> None:
    """Raise `MissingRepository` unless `path` holds a git repository (the clone of `repo`), with `base_commit`
    if one is given."""
    if not (Path(path) / ".git").exists() and not (Path(path) / "HEAD").is_file():
        raise MissingRepository(f"no git repository{f' for {repo}' if repo else ''} at {path}: clone it there (the "
                                "folder of repositories holds one clone per repository, named owner__name)")
    if base_commit:
        try:
            base_commit_sha(path, base_commit)
        except InputError as e:
            raise MissingRepository(str(e)) from None


def find_bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise Unavailable(
            "bubblewrap (`bwrap`) is not installed; the local runtime needs it to sandbox commands. Install it with "
            "`sudo apt-get install bubblewrap` (Debian/Ubuntu), `sudo dnf install bubblewrap` (Fedora) or "
            "`conda install -c conda-forge bubblewrap`, or use `--runtime docker`."
        )
    return path


def usable_bwrap() -> str:
    """`bwrap`, once it has made a sandbox as the runtime's (`true` in it): where the kernel refuses the namespaces
    (inside a Docker or Kubernetes container, Ubuntu 24.04's AppArmor rule for unprivileged user namespaces, a host
    with `user.max_user_namespaces` at 0) every command of every attempt would fail alike, so this says so at once,
    with bubblewrap's own words."""
    bwrap = find_bwrap()
    tried = subprocess.run([*sandbox_argv(bwrap), "true"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60)
    if tried.returncode != 0:
        said = " ".join(tried.stderr.split()) or f"exit code {tried.returncode}"
        raise Unavailable(f"bubblewrap cannot make its sandbox on this machine ({said}); the local runtime needs "
                          "unprivileged user namespaces (not given inside most Docker/Kubernetes containers, nor "
                          "on Ubuntu 24.04 unless `kernel.apparmor_restrict_unprivileged_userns=0`; "
                          "`user.max_user_namespaces` must be above 0): allow them, or use `--runtime docker`")
    return bwrap


def sandbox_argv(bwrap: str, network: bool = False) -> list[str]:
    """What every sandbox is: its namespaces, the system folders read-only, its own /proc and /dev."""
    argv = [bwrap, "--unshare-all", *(["--share-net"] if network else []), "--die-with-parent", "--new-session",
            "--clearenv"]
    for name in SYSTEM_DIRS:
        path = f"/{name}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    # Started by root, bwrap keeps every capability and its uid 0 is the host's: without capabilities a command
    # cannot remount the system folders writable, and the kernel's settings, which uid 0 owns and may write with or
    # without them (core_pattern: a host program run as root), are read-only. Root-only files of the system folders
    # (/etc/shadow) stay readable to uid 0: run as another user for that.
    return argv + ["--cap-drop", "ALL", "--proc", "/proc", "--ro-bind-try", "/proc/sys", "/proc/sys",
                   "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger", "--dev", "/dev"]


def _describe(error: OSError, path: str) -> str:
    """An OSError as Python prints it, with the agent-visible path instead of the host's."""
    return f"[Errno {error.errno}] {error.strerror}: '{path}'" if error.errno else str(error)


PASSAGE = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
"""How each folder on the way to a file is opened: a folder, not through a symbolic link, and only passed through,
so that a folder one may search but not read (mode 0311) is passed as opening the path by name passes it."""
FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
"""How a folder to list is opened."""
MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
"""Errors that mean "no such path" to pathlib's `exists()`: a component missing, no folder, or (now) a link."""


class LocalFiles:
    """Agent-visible paths under `root` mapped onto the host checkout, refusing anything that leaves it.

    The editor runs on the host while the agent's commands may still be running in the sandbox, so any folder can
    become a symbolic link between the moment `resolve()` looks at a path and the moment it is opened. Every access
    therefore goes through file descriptors opened beneath the checkout, one component at a time and never through
    a link (`open_beneath`): a component swapped for a link since makes the call fail, instead of leading out of the
    checkout. Done by hand because pathlib and `open` follow links by name, and Python has no `openat2`."""

    def __init__(self, root: str, host_root: Path) -> None:
        self.root = root
        self.host_root = host_root.resolve()

    def host(self, path: str) -> Path:
        """Where `path` leads on the host, symbolic links resolved."""
        norm = posixpath.normpath(path)
        if not self._in_root(norm):
            raise ToolError(f"Invalid `path` parameter: {path}. Only files inside the repository {self.root} can "
                            "be viewed or edited.")
        real = self.resolve(norm)
        if real is None:
            raise ToolError(f"Invalid `path` parameter: {path}. It is a symbolic link to a location outside the "
                            f"repository {self.root}.")
        return real

    def resolve(self, path: str) -> Path | None:
        """The host path of agent-visible `path` with its symbolic links resolved as the sandbox resolves them, or
        None when one leads out of the repository. Not the host's `realpath`: a link's absolute target
        (`/testbed/pkg`) names a path inside the sandbox, which on the host is elsewhere or nothing. The path
        returned lies beneath the checkout, with no `..` in it."""
        done, todo, links = "/", path.split("/"), 0
        while todo:
            name = todo.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                done = posixpath.dirname(done)
                continue
            step = posixpath.join(done, name)
            if not self._in_root(step):
                if not self.root.startswith(step + "/"):  # only the folders above the root are known, as folders
                    return None
                done = step
                continue
            target = self._link_target(self.host_root / posixpath.relpath(step, self.root))
            if target is None:
                done = step
                continue
            links += 1
            if links > 40:  # the kernel's limit: the sandbox's own `cat` fails on such a loop
                raise ToolError(f"Invalid `path` parameter: {path}. {os.strerror(errno.ELOOP)}.")
            todo[:0] = target.split("/")
            if target.startswith("/"):
                done = "/"
        return self.host_root / posixpath.relpath(done, self.root) if self._in_root(done) else None

    def _in_root(self, norm: str) -> bool:
        return norm == self.root or norm.startswith(self.root.rstrip("/") + "/")

    def _link_target(self, host: Path) -> str | None:
        """What the symbolic link at `host` holds, or None when `host` is no link (now: a command running in the
        sandbox may have just removed it)."""
        try:
            with self._folder_of(host) as (folder, name):
                return os.readlink(name, dir_fd=folder)
        except OSError:
            return None

    @contextmanager
    def _folder_of(self, host: Path) -> Iterator[tuple[int, str]]:
        """The folder holding `host` (a path `resolve()` gave), opened beneath the checkout, and `host`'s name in it
        (`.` for the checkout itself)."""
        *folders, name = host.relative_to(self.host_root).parts or (".",)
        folder = os.open(self.host_root, PASSAGE)
        try:
            for inner in folders:
                opened = os.open(inner, PASSAGE, dir_fd=folder)
                os.close(folder)
                folder = opened
            yield folder, name
        finally:
            os.close(folder)

    def open_beneath(self, host: Path, flags: int, mode: int = 0o777) -> int:
        """A file descriptor of `host` (a path `resolve()` gave) opened with `flags`, through no symbolic link: one
        that a component has become since `resolve()` fails the open (ELOOP or ENOTDIR)."""
        with self._folder_of(host) as (folder, name):
            return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=folder)

    def _lstat(self, host: Path) -> os.stat_result:
        with self._folder_of(host) as (folder, name):
            return os.stat(name, dir_fd=folder, follow_symlinks=False)

    def kind(self, path: str) -> str | None:
        host = self.host(path)
        with _reporting(path, "read"):
            try:
                mode = self._lstat(host).st_mode
            except OSError as e:
                if e.errno in MISSING:
                    return None
                raise
        return "dir" if stat.S_ISDIR(mode) else "file"

    def size(self, path: str) -> int:
        host = self.host(path)
        with _reporting(path, "read"):
            return self._lstat(host).st_size

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        host = self.host(path)
        with _reporting(path, "read"):
            # opened nonblocking, as a FIFO would block the open until a writer came, and refused unread, as a FIFO or
            # device would block or never end
            with os.fdopen(self.open_beneath(host, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
                if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                    raise ToolError(f"File validation failed for {path}: it is not a regular file.")
                return file.read(-1 if limit is None else limit)

    def write_bytes(self, path: str, data: bytes) -> None:
        host = self.host(path)
        with _reporting(path, "write to"):
            # 0o666 less the umask for a new file, as Path.write_bytes; nonblocking, as reading; truncated only once
            # known to be a regular file, and not replaced, so that an existing file keeps its mode and inode
            with os.fdopen(self.open_beneath(host, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o666), "wb") as file:
                if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                    raise OSError(f"{path} is not a regular file")
                os.ftruncate(file.fileno(), 0)
                file.write(data)

    def listing(self, path: str) -> tuple[list[str], int]:
        shown = path.rstrip("/")
        host = self.host(path)
        with _reporting(path, "read"):
            top = self.open_beneath(host, FOLDER)
        found = [(shown, True)]
        try:
            hidden = self._walk(top, shown, 1, found)
        finally:
            os.close(top)
        return slash_dirs(found), hidden

    def _walk(self, folder: int, shown: str, depth: int, found: list[tuple[str, bool]]) -> int:
        """Add the entries of the open `folder` (agent-visible `shown`) and of its subfolders, to `depth` 2, to
        `found` as (path, is a folder), hidden ones left out; the number of hidden entries directly in `folder`."""
        hidden = 0
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    hidden += 1
                    continue
                inner = self._subfolder(folder, entry, f"{shown}/{entry.name}")
                # a folder the agent may not read (mode 0311) is listed as a folder, without its entries, as by find
                found.append((f"{shown}/{entry.name}", inner is not None or entry.is_dir(follow_symlinks=False)))
                if inner is not None:
                    try:
                        if depth < 2:
                            self._walk(inner, f"{shown}/{entry.name}", depth + 1, found)
                    finally:
                        os.close(inner)
        return hidden

    def _subfolder(self, folder: int, entry: os.DirEntry, shown: str) -> int | None:
        """`entry` of the open `folder` opened as a folder, or None when it is none. A link is followed as OHEditor's
        `find -L` follows links, unless it leads out of the checkout (or loops)."""
        try:
            if not entry.is_symlink():
                return os.open(entry.name, FOLDER, dir_fd=folder)
            target = self.resolve(shown)
            return None if target is None else self.open_beneath(target, FOLDER)
        except (OSError, ToolError):
            return None


class StateFolder:
    """The rollout's state folder on the host (`STATE_DIR` inside): the command to run, the directory and
    interpreter it ended with, the patch. The agent may replace any of its files with a link to a host path (which
    `/proc/self/mountinfo` names) or with a folder, so the host never follows a link there: it writes a file by
    removing what is at its name and creating it anew, and reads only regular files, a link or anything else
    reading as absent. No command runs while the host does either (a command's processes end with its sandbox)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def remove(self, name: str) -> None:
        path = self.folder / name
        if path.is_dir() and not path.is_symlink():
            remove_tree(path)
        else:
            path.unlink(missing_ok=True)

    def write(self, name: str, data: bytes) -> None:
        self.remove(name)
        fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def read(self, name: str, limit: int = -1) -> bytes | None:
        """The file's first `limit` bytes (all by default); None when it is missing or not a regular file."""
        try:  # O_NONBLOCK: a FIFO put there must not block the open
            fd = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read(limit) if stat.S_ISREG(os.fstat(fd).st_mode) else None


@contextmanager
def _reporting(path: str, doing: str) -> Iterator[None]:
    """An OSError of the editor's file access as its error observation, naming the agent-visible `path`."""
    try:
        yield
    except OSError as e:
        raise ToolError(f"Ran into {_describe(e, path)} while trying to {doing} {path}") from None


class LocalRuntime(OneCommandAtATime):
    """Commands and files of one checkout; shell state and /tmp live in a private folder removed by `close()`."""

    def __init__(self, checkout: Path, root: str, workdir: Path, config: RuntimeConfig = RuntimeConfig(),
                 env: TaskEnv | None = None) -> None:
        self.bwrap = usable_bwrap()
        if shutil.which("setsid", path=config.path) is None:  # the sandbox shows the host's system folders
            raise Unavailable(f"`setsid` (util-linux) is not on the sandbox's PATH ({config.path}); the local runtime "
                              "needs it to give each command its own terminal. Install util-linux, or use "
                              "`--runtime docker`.")
        if problem := root_problem(root):
            raise InputError(problem)
        self.checkout, self.root, self.config, self.env = checkout.resolve(), root, config, env
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=workdir.resolve()))
        for sub in ("state", "tmp"):
            (self.workdir / sub).mkdir()
        self.state = StateFolder(self.workdir / "state")
        self.files = LocalFiles(root, self.checkout)
        self.owned: Path | None = None
        if env is not None:
            make_layer(env, self.workdir / "venv", VENV_ROOT)

    @classmethod
    def for_task(cls, source_repo: Path, base_commit: str, root: str, workdir: Path,
                 config: RuntimeConfig = RuntimeConfig(), env: TaskEnv | None = None,
                 history_cache: Path | None = None) -> LocalRuntime:
        """A fresh checkout of `source_repo` at `base_commit` (history after it left out), removed on `close()`,
        installed into a layer over `env` when one is given. The history up to `base_commit` is copied once into
        `history_cache` (default: beside the checkout, removed with it), so that other attempts of the task that
        share the cache clone it instead of copying it again. Raises `MissingRepository` when `source_repo` is not a
        git repository, `EnvError` when the checkout does not install."""
        check_repository(source_repo)
        workdir.mkdir(parents=True, exist_ok=True)
        owned = Path(tempfile.mkdtemp(prefix="checkout-", dir=workdir.resolve()))
        try:
            checkout = owned / "repo"
            prepare_checkout(source_repo, base_commit, checkout, (history_cache or owned / "cache").resolve())
            runtime = cls(checkout, root, workdir, config, env)
        except BaseException:
            shutil.rmtree(owned, ignore_errors=True)
            raise
        runtime.owned = owned
        _exclude(checkout, BYTECODE_PATTERNS)  # bytecode of the agent's python runs is no patch
        try:
            runtime.install()
        except BaseException:
            runtime.close()
            raise
        return runtime

    def install(self) -> None:
        """Install the checkout into the rollout's layer (the task recipe's command, network on), and keep what the
        install generates (build folders, version files) out of the agent's patch."""
        command = self.env.install_command(self.checkout) if self.env is not None else ""
        if not command:
            return
        result = self.execute(f"cd {shlex.quote(self.root)} && {command}", self.env.install_timeout_s, network=True)
        if result.exit_code != 0:
            raise EnvError(f"installing the checkout into its environment (`{command}`) "
                           f"{'timed out' if result.timed_out else f'failed with exit code {result.exit_code}'}:\n"
                           f"{result.output[-3000:]}")
        _exclude(self.checkout, untracked_patterns(self.checkout))
        for name in ("cwd", "env", "python"):  # the agent's first command starts from a clean shell
            self.state.remove(name)

    def bwrap_argv(self, cwd: str, network: bool = False) -> list[str]:
        argv = sandbox_argv(self.bwrap, network)
        resolver = os.path.realpath("/etc/resolv.conf")
        if network and not _under(resolver, SYSTEM_DIRS) and os.path.isfile(resolver):
            argv += ["--ro-bind", resolver, resolver]  # e.g. systemd-resolved's file under /run, for pip's DNS
        argv += ["--bind", str(self.workdir / "tmp"), "/tmp"]
        path = self.config.path
        if self.env is not None:
            for shown in self.env.readonly_paths:
                if not _under(shown, SYSTEM_DIRS):
                    argv += ["--ro-bind", shown, shown]
            argv += ["--bind", str(self.workdir / "venv"), VENV_ROOT, "--setenv", "VIRTUAL_ENV", VENV_ROOT]
            path = f"{VENV_ROOT}/bin:{path}"
        argv += ["--bind", str(self.checkout), self.root, "--bind", str(self.workdir / "state"), STATE_DIR,
                 "--remount-ro", "/", "--setenv", "PATH", path, "--setenv", "HOME", "/tmp",
                 "--setenv", "LANG", "C.UTF-8", "--setenv", "TERM", "dumb", "--chdir", cwd]
        return argv

    def start(self, command: str, network: bool = False) -> LocalChannel:
        # `setsid -c` makes the terminal the shell's controlling terminal, so that Ctrl-C typed on it interrupts
        # the command (bwrap's --new-session left the sandbox without one); -w: the sandbox ends with the shell
        bwrap, *options = self.bwrap_argv(self.root, network)
        self.stop()
        self.state.write("cmd", command.encode())
        # bwrap is the sandbox's process 1, whose command line and environment any command reads (/proc/1/cmdline,
        # /proc/1/environ): its options, the host's paths among them, come from a file outside the sandbox, and it
        # starts with no environment (--clearenv clears only the shell's: the launcher's keys and paths showed)
        (self.workdir / "bwrap-options").write_bytes(b"".join(os.fsencode(o) + b"\0" for o in options))
        given = os.open(self.workdir / "bwrap-options", os.O_RDONLY)
        reader, terminal = _terminal()
        try:
            proc = subprocess.Popen([bwrap, "--args", str(given), "setsid", "-w", "-c", *shell_argv(self.root)],
                                    stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True,
                                    preexec_fn=_default_interrupts, pass_fds=(given,), env={})
        except BaseException:
            os.close(reader)
            raise
        finally:
            os.close(given)
            os.close(terminal)  # only the sandbox holds it now, so reading ends when the sandbox ends
        self.running = LocalChannel(proc, reader, self.state, self.root)
        return self.running

    def execute(self, command: str, timeout: float, network: bool = False) -> CommandResult:
        return run_to_end(self.start(command, network), timeout, self.config.output_cap_bytes)

    def _write_patch(self, command: str) -> bytes:
        self.state.remove("patch")  # the diff writes a new file, not through a link the agent left at its name
        result = self.execute(command, timeout=120)
        if result.exit_code != 0:
            raise RuntimeError(f"git diff failed in the checkout: {result.output[-2000:]}")
        patch = self.state.read("patch")
        if patch is None:
            raise RuntimeError(f"{STATE_DIR}/patch is not a regular file after the diff")
        return patch

    def close(self) -> None:
        self.stop()
        remove_tree(self.workdir)
        if self.owned is not None:
            remove_tree(self.owned)


def remove_tree(path: Path) -> None:
    """Remove `path` and what is under it, also folders a command took its own rights to (`chmod 0 dir`): not being
    root, the owner gives them back first, or the folder and what it holds would stay on disk for good."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        os.chmod(path, stat.S_IRWXU)
        for folder, subfolders, _ in os.walk(path):  # top-down: each subfolder opened to us before it is listed
            for name in subfolders:
                if not os.path.islink(os.path.join(folder, name)):  # chmod follows links: only our own folders
                    os.chmod(os.path.join(folder, name), stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)


def _exclude(checkout: Path, patterns: list[str]) -> None:
    """Keep `patterns` out of `git add -A` (and so out of the patch) without touching the repository's files."""
    if patterns:
        (checkout / ".git" / "info").mkdir(exist_ok=True)
        # file names are bytes: those that are no UTF-8 go back as they came (`os.fsdecode`)
        with open(checkout / ".git" / "info" / "exclude", "a", encoding="utf-8", errors="surrogateescape") as f:
            f.write("".join(f"{p}\n" for p in patterns))


def untracked_patterns(checkout: Path) -> list[str]:
    """Exclude patterns matching exactly the files git does not track in `checkout` now (see `exclude_patterns`)."""
    return exclude_patterns(subprocess.run(UNTRACKED_COMMAND, cwd=checkout, check=True, capture_output=True).stdout)


def root_problem(root: str) -> str | None:
    """Why the repository cannot appear at `root` inside the sandbox, or None."""
    if not root.startswith("/"):
        return f"the agent root must be an absolute path, got {root!r}"
    root = "/" + posixpath.normpath(root).lstrip("/")  # `/ws/../tmp` and `//tmp` are /tmp
    if _under(root, (*SYSTEM_DIRS, "tmp", "proc", "dev", STATE_DIR.strip("/"), VENV_ROOT.strip("/"))) or root == "/":
        return (f"the repository cannot appear at {root} inside the sandbox: that path is the sandbox's own; choose "
                "another agent root (e.g. /workspace/<name> or /testbed)")
    return None


def _under(path: str, tops) -> bool:
    """Whether `path` is one of the top-level folders `tops` (names without `/`) or lies inside one."""
    return any(path == f"/{top}" or path.startswith(f"/{top}/") for top in tops)


def _terminal() -> tuple[int, int]:
    """A pseudo-terminal (reading end, command's end) of the size of OpenHands' tmux pane, for a command's output:
    programs format for a terminal there (`ls` in columns, a width of 1000 for pytest and argparse, line-buffered
    Python, so its output and its warnings come in the order written), so they must here too. Newlines are not made
    CRLF: the bytes read are the bytes written, and the rendering treats a newline as a terminal does."""
    reader, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", SCREEN_ROWS, COLUMNS, 0, 0))
    attrs = termios.tcgetattr(terminal)
    attrs[1] &= ~termios.ONLCR  # output flags
    termios.tcsetattr(terminal, termios.TCSANOW, attrs)
    return reader, terminal


def _default_interrupts() -> None:
    """In the sandbox's process before it starts: Ctrl-C and Ctrl-\\ kill by default. A shell runs a background job
    (`swehero ... &` in a script, `nohup`) with SIGINT and SIGQUIT ignored, an ignored signal stays ignored across
    exec, and bash cannot undo it, so the keys typed on a command's terminal would do nothing. Only `signal.signal`
    runs here, which takes no lock a thread of the parent could hold."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


class LocalChannel:
    """A command running in its sandbox: the sandbox's process and the host end of its terminal."""

    def __init__(self, proc: subprocess.Popen, reader: int, state: StateFolder, root: str) -> None:
        self.proc, self.reader, self.state, self.root = proc, reader, state, root
        self.result: tuple[int, str, str] | None = None
        self.selector = selectors.DefaultSelector()
        self.selector.register(reader, selectors.EVENT_READ)

    def read(self, timeout: float) -> bytes | None:
        if self.reader < 0:
            return None
        if not self.selector.select(timeout=timeout):
            return b""
        try:
            return os.read(self.reader, 65536) or None
        except OSError as e:  # a terminal whose other end every process has closed
            if e.errno != errno.EIO:
                raise
            return None

    def write(self, data: bytes) -> None:
        try:
            os.write(self.reader, data)
        except OSError as e:  # the command has just ended: typing on its terminal does nothing
            if e.errno != errno.EIO:
                raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # bwrap holds PID 1 of the sandbox: its processes all die

    def finish(self) -> tuple[int, str, str]:
        if self.result is None:  # once, as the Docker runtime's: the runtime finishes its last command again
            self.selector.close()
            os.close(self.reader)
            self.reader = -1
            code = self.proc.wait()
            # capped: a command that kills its shell leaves these files as it wrote them, not as the shell's trap does
            read = lambda name: (self.state.read(name, 65536) or b"").decode(errors="replace").strip()  # noqa: E731
            self.result = code, read("cwd") or self.root, read("python")
        return self.result
