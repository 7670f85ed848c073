"""What a runtime provides to the tools, and the pieces the local and Docker runtimes share.

Each `execute_bash` command runs in a fresh sandboxed shell on a terminal of its own (so killing it kills everything
it started); the working directory and exported variables are carried from one command to the next through a small
state folder, which gives the persistent-session behaviour OpenHands' tool description promises. A command may
outlive the call that started it (OpenHands' soft timeout): the runtime hands it back as a `Channel`, to read more
output from, type into, or kill. Background processes do not outlive their command (OpenHands keeps them in tmux):
the sandbox's processes end with it.
"""

from __future__ import annotations

import codecs
import collections
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from swehero.agent.editor import Files
from swehero.agent.terminal import Scrollback
from swehero.errors import InputError
from swehero.gitdiff import c_unquote

STATE_DIR = "/.swehero"
"""Where the shell state (cwd, exported variables, python path) lives inside the sandbox, outside the checkout."""
UNTRACKED_COMMAND = ["git", "ls-files", "-z", "--others", "--exclude-standard"]
"""Lists, NUL-ended, the files git does not track in a checkout (see `exclude_patterns`)."""
BYTECODE_PATTERNS = ["__pycache__/", "*.py[cod]"]
"""Exclude patterns for the bytecode the agent's python runs write: no part of a patch, in either runtime."""


@dataclass(frozen=True)
class RuntimeConfig:
    """Limits and paths shared by all runtimes."""

    default_timeout: float = 300.0
    """Seconds a call waits for a command when the agent gives no `timeout`; the command keeps running after it.
    OpenHands' SWE-bench evaluation, which made the training data and the paper's figures, sets its sandbox timeout
    to 300 (`get_default_sandbox_config_for_eval`; its product default is 120)."""
    no_output_timeout: float = 30.0
    """Seconds without new output after which a call without `timeout` returns, the command still running: the
    evaluation's `NO_CHANGE_TIMEOUT_SECONDS` (30; 10 in OpenHands' product, which its tool description states)."""
    max_timeout: float | None = None
    """Upper bound on the `timeout` the agent may ask for; None: none, as in OpenHands (the attempt's time limit
    still ends the episode)."""
    output_cap_bytes: int = 2_000_000
    """Bytes of a command's output kept as read (first and last halves, the last one up to twice that while
    reading); of the rest only what OpenHands' pane would still hold is kept, as the pane shows it."""
    path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    """PATH inside the sandbox; prepend a virtual environment's `bin` to expose a project environment (exec)."""


@dataclass(frozen=True)
class CommandResult:
    output: str
    """Merged stdout and stderr, decoded as tmux decodes it (`decode_as_tmux`), possibly capped."""
    exit_code: int
    """The command's exit status; -1 when it timed out."""
    timed_out: bool
    """It ran past its time and was killed."""
    cwd: str
    """Working directory after the command (agent-visible)."""
    python: str
    """`command -v python` after the command, or '' (OpenHands reports the interpreter in every observation)."""


class Channel(Protocol):
    """One command running in the sandbox, on a terminal of its own."""

    def read(self, timeout: float) -> bytes | None:
        """Output written within `timeout` seconds (b'' when none was); None once the command has ended."""

    def write(self, data: bytes) -> None:
        """Type `data` on the command's terminal (keys such as Ctrl-C act as they act on a terminal)."""

    def kill(self) -> None:
        """Kill the command and everything it started."""

    def finish(self) -> tuple[int, str, str]:
        """After the end: the exit status, the working directory and `command -v python` the command left."""


class Runtime(Protocol):
    """A sandbox holding one rollout's checkout."""

    root: str
    """Agent-visible path of the repository."""
    files: Files
    config: RuntimeConfig

    def start(self, command: str) -> Channel:
        """Start `command` in the sandbox's shell; a command started earlier is killed first."""

    def execute(self, command: str, timeout: float) -> CommandResult:
        """Run `command` to its end, killing everything it started after `timeout` seconds."""

    def patch(self, base_commit: str) -> str:
        """`git diff` of the checkout against `base_commit`, new files included."""

    def close(self) -> None: ...


class OneCommandAtATime:
    """What both runtimes do with the agent's commands: one runs at a time (`running`, set by `start`), and `stop`
    kills it before the next command starts and before the patch is taken."""

    root: str
    running: Channel | None = None
    _write_patch: Callable[[str], bytes]
    """Runs a command that writes the patch (see `git_patch`) and returns the patch it wrote."""

    def stop(self) -> None:
        """Kill the command started last, if it still runs."""
        if self.running is not None:
            self.running.kill()
            self.running.finish()
            self.running = None

    def patch(self, base_commit: str) -> str:
        self.stop()  # a command left running must not change the checkout while it is diffed
        return git_patch(self._write_patch, self.root, base_commit)


def shell_argv(root: str) -> list[str]:
    """The shell every command runs in: interactive (`-i`), as OpenHands' shell in its terminal is, so that what
    bash itself prints reads as there: `bash: foo: command not found` (a non-interactive shell adds the line of
    its script, `bash: line 6: ...`), a syntax error on one line, `[1] 4212` for a job started in the background.
    No start-up files: the environment is restored from the state folder (see `shell_script`)."""
    return ["bash", "--noprofile", "--norc", "-i", "-c", shell_script(root)]


def shell_script(root: str) -> str:
    """The wrapper run by `bash -c` for every command: restore state, run the command the runtime left in the
    state folder (a file, not an argument or variable: commands with long heredocs exceed argv limits), save state
    on exit. Its own plumbing runs no program found on the agent's PATH: a PATH the agent broke breaks only its
    commands, builtins still run and PATH can be set back, as in OpenHands' shell."""
    s = STATE_DIR
    return (
        # Ctrl-C ends the command as it ends a command line in an interactive shell: the rest is not run, the
        # status is 130, and the state is saved if it was restored
        "trap 'exit 130' INT\n"
        # A command bash cannot end yet (an open quote, `&&`, `if`, here-document) waits for its next lines from the
        # terminal, as OpenHands' shell waits for them at its empty PS2 prompt: bash's parse of it stops at the end
        # of the file. Before the agent's state is restored (its PATH must not hide `bash`), in a subshell, which
        # leaves no variable behind; Ctrl-C while it waits ends it and runs nothing (the status stays 130: the INT
        # trap does not run, and `exit` prints nothing there).
        f'(while found="$(BASH_ENV= bash -n {s}/cmd 2>&1)"; [[ $found == *"unexpected EOF while looking for '
        'matching"* || $found == *"unexpected end of file"* || $found == *"delimited by end-of-file"* ]]; do '
        f'IFS= read -r line || break; printf "\\n%s" "$line" >> {s}/cmd; done) || exit 2>/dev/null\n'
        f"[ -f {s}/env ] && . {s}/env >/dev/null 2>&1\n"
        f'[[ -s {s}/cwd ]] && cd "$(< {s}/cwd)" 2>/dev/null || cd {shlex.quote(root)}\n'
        f"trap 'export -p > {s}/env; pwd > {s}/cwd; command -v python > {s}/python 2>/dev/null' EXIT\n"
        # OpenHands' first command in its shell: with a terminal, git would page long output and wait for a key
        'shopt -s expand_aliases; alias git="git --no-pager"\n'
        f'eval "$(< {s}/cmd)"\n'
    )


def patch_command(root: str, base_commit: str, binary: list[bytes] = ()) -> str:
    """Stage everything (new files too) and write the diff against the base to `STATE_DIR/patch`, as OpenHands'
    SWE-bench evaluation does: first remove every `.git` folder below the root (a repository the agent made with
    `git init` would make `git add -A` fail, or add its files as one gitlink), then `git add -A` and
    `git diff --cached <base>`. A file, not stdout: git's warnings must not end up in the patch. The files at the
    paths `binary` are diffed as git binary patches (see `git_patch`).

    The agent controls `.git/config` and `.git/info/attributes`, so what it configured there must not change the
    patch or run a program of its: hooks, fsmonitor, external diff drivers and textconv are off, and line endings,
    prefixes and context are git's defaults. The repository's own `.gitattributes` still applies, and clean/smudge
    filters the agent configures still run (in OpenHands too)."""
    git = ("git -c core.fsmonitor= -c core.hooksPath=/dev/null -c diff.external= -c core.pager=cat "
           "-c core.quotePath=true -c core.autocrlf=false")
    mark = ""
    if binary:  # $GIT_DIR/info/attributes outranks the repository's own .gitattributes
        lines = " ".join(shlex.quote(f"{_attribute_pattern(path)} binary") for path in binary)
        mark = (f'attributes="$({git} rev-parse --git-path info/attributes)" && '
                f'mkdir -p "$(dirname "$attributes")" && printf "%s\\n" {lines} >> "$attributes" && ')
    # find fails on a folder the agent made unreadable, which `git add -A` skips with a warning: no reason to fail
    nested = "{ find . -path ./.git -prune -o -type d -name .git -prune -exec rm -rf {} + || true; }"
    return (f"cd {shlex.quote(root)} && {nested} && {git} add -A >/dev/null && {mark}"
            f"{git} diff --no-color --no-ext-diff --no-textconv --binary --src-prefix=a/ --dst-prefix=b/ -U3 "
            f"--cached {shlex.quote(base_commit)} > {STATE_DIR}/patch")


def git_patch(write_patch, root: str, base_commit: str) -> str:
    """The checkout's patch against `base_commit`; `write_patch(command)` runs a `patch_command` in the sandbox and
    returns the patch file's bytes.

    Files git diffs as binary (NUL bytes, a `binary` attribute: images, databases, compiled files) are left out,
    as OpenHands' SWE-bench evaluation leaves them out (its `remove_binary_diffs`). A prediction is a JSON string,
    so a changed file whose text is not UTF-8 (a Latin-1 source, which the editor keeps in Latin-1) cannot travel
    in a text hunk: its bytes would be replaced and the hunk would no longer apply. Such files are diffed again as
    git binary patches, which are ASCII and which `git apply` (the harness's first way of applying a patch)
    applies byte for byte; every other file stays a text diff."""
    data = write_patch(patch_command(root, base_commit))
    # the second diff marks only other files binary: these files' diffs come out of it byte for byte the same
    binary = {diff for diff in _file_diffs(data) if _diffed_as_binary(diff)}
    undecodable = list(dict.fromkeys(path for diff in _file_diffs(data) if not _is_utf8(diff)
                                     for path in _diff_paths(diff)))
    if undecodable:
        data = write_patch(patch_command(root, base_commit, undecodable))
    return b"".join(diff for diff in _file_diffs(data) if diff not in binary).decode("utf-8", errors="replace")


def _file_diffs(patch: bytes) -> list[bytes]:
    """A patch cut into its files' diffs, each from its `diff --git` line (no hunk line starts so: hunk lines start
    with a space, `+`, `-` or a backslash)."""
    return [diff for diff in re.split(rb"(?m)^(?=diff --git )", patch) if diff]


def _diffed_as_binary(diff: bytes) -> bool:
    return b"\nGIT binary patch\n" in diff or b"\nBinary files " in diff


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _diff_paths(section: bytes) -> list[bytes]:
    """The old and new paths of one file's text diff, from its `--- a/...` and `+++ b/...` header lines (C-quoted by
    git when unusual, a tab appended when they hold a space)."""
    paths = []
    for line in section.split(b"\n"):
        if line.startswith(b"@@"):
            break
        if line.startswith((b"--- ", b"+++ ")) and line[4:] != b"/dev/null":
            name = line[4:].removesuffix(b"\t")
            if name.startswith(b'"'):
                name = c_unquote(name[1:-1])
            paths.append(name[2:])  # without a/ or b/
    return paths


def _attribute_pattern(path: bytes) -> str:
    """A .gitattributes pattern matching exactly `path`: anchored, glob characters escaped, C-quoted."""
    escaped = re.sub(rb"([\\*?\[])", rb"\\\1", b"/" + path)
    quoted = "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{chr(b)}" if b in b'"\\'
                     else f"\\{b:03o}" for b in escaped)
    return f'"{quoted}"'


class Output:
    """A command's output so far, read from its channel until it ends, a deadline passes or it goes quiet."""

    def __init__(self, channel: Channel, cap_bytes: int) -> None:
        self.channel, self.buffer, self.ended = channel, CappedBuffer(cap_bytes), False

    def wait(self, timeout: float, quiet: float = math.inf) -> str:
        """Read until the command ends ('ended'), `timeout` seconds pass ('timeout'), or `quiet` seconds pass
        without output ('quiet')."""
        start = last = time.monotonic()
        while not self.ended:
            now = time.monotonic()
            if now >= start + timeout or now >= last + quiet:
                return "timeout" if now >= start + timeout else "quiet"
            chunk = self.channel.read(min(start + timeout - now, last + quiet - now, 1.0))
            if chunk is None:
                self.ended = True
            elif chunk:
                self.buffer.add(chunk)
                last = time.monotonic()
        return "ended"


def run_to_end(channel: Channel, timeout: float, cap_bytes: int) -> CommandResult:
    """The result of a command read to its end, or killed after `timeout` seconds (its output up to then)."""
    output = Output(channel, cap_bytes)
    try:
        timed_out = output.wait(timeout) != "ended"
        if timed_out:
            channel.kill()
            output.wait(5)  # what the terminal still holds as the sandbox dies
    except BaseException:  # Ctrl-C or SIGTERM: the sandbox must not outlive the call
        channel.kill()
        raise
    finally:
        code, cwd, python = channel.finish()
    return CommandResult(output=output.buffer.text(), exit_code=-1 if timed_out else code, timed_out=timed_out,
                         cwd=cwd, python=python)


def decode_as_tmux(data: bytes) -> str:
    """Command output as text, invalid UTF-8 left out as OpenHands' tmux pane leaves it out (`errors="replace"` would
    show U+FFFD there, which OpenHands' observations never hold), and so are the characters tmux gives no width."""
    return _without_widthless(data.decode("utf-8", errors=_TMUX_DISCARDS))


_WIDTHLESS = ("Cc", "Cn", "Zl", "Zp")
"""Unicode categories of the characters tmux 3.3a drops: those glibc's `wcwidth` gives -1 (C1 controls such as the
U+0080-U+009F of mojibake, unassigned code points and noncharacters, the line and paragraph separators). Checked
against tmux with glibc 2.36 on every code point of planes 0-3 and 14; both use Unicode 14, as Python 3.11 does (3.12
knows the characters Unicode 15 added). ASCII's controls are the terminal's to interpret (`terminal.py`)."""


def _without_widthless(text: str) -> str:
    if text.isascii():
        return text
    dropped = {ord(ch): None for ch in set(text) if ch > "\x7f" and unicodedata.category(ch) in _WIDTHLESS}
    return text.translate(dropped) if dropped else text


_UTF8_LENGTHS = {**dict.fromkeys(range(0xC2, 0xE0), 2), **dict.fromkeys(range(0xE0, 0xF0), 3),
                 **dict.fromkeys(range(0xF0, 0xF5), 4)}
"""Lead byte -> length of the character it starts, as tmux's `utf8_open` takes them (other bytes start none)."""


def _tmux_discard(error: UnicodeDecodeError) -> tuple[str, int]:
    """Drop what tmux 3.3a (input.c, utf8.c) drops at an invalid byte. A lead byte takes as many more non-ASCII bytes
    as its length asks for, continuation bytes or not, before the whole is checked (so `\\xc3\\xc3\\xa9` loses its
    `\\xa9` too); an ASCII byte ends a character cut short; any other byte is dropped alone. Not modelled: tmux steps
    over an escape sequence or DEL inside a character, which programs do not write."""
    data, end = error.object, error.start + 1
    last = error.start + _UTF8_LENGTHS.get(data[error.start], 1)
    while end < min(last, len(data)) and data[end] >= 0x80:
        end += 1
    return "", end


_TMUX_DISCARDS = "swehero-tmux-discards"
codecs.register_error(_TMUX_DISCARDS, _tmux_discard)


class CappedBuffer:
    """Keeps the first and last `cap // 2` bytes of a stream (`text`), counting what it drops. What it drops goes on
    into a `Scrollback`, so that the output can still be shown as OpenHands' pane would show it whole (`pane`)."""

    def __init__(self, cap: int) -> None:
        self.half = max(cap // 2, 1)
        self.head = bytearray()
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_len = 0
        self.dropped = 0
        self.scrollback: Scrollback | None = None
        """What the pane holds of the bytes before `tail`; None until bytes are dropped."""

    def add(self, chunk: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        self.tail.append(chunk)
        self.tail_len += len(chunk)
        if self.tail_len >= 2 * self.half:
            self._scroll()

    def _scroll(self) -> None:
        """Move all but the last half (or a little more) of the tail into the scrollback."""
        data = b"".join(self.tail)
        cut = _scroll_point(data, len(data) - self.half)
        scrolled = data[:cut]
        if self.scrollback is None:  # the stream starts with the head
            self.scrollback, scrolled = Scrollback(), bytes(self.head) + scrolled
        self.scrollback.write(decode_as_tmux(scrolled))
        self.dropped += cut
        self.tail, self.tail_len = collections.deque([data[cut:]]), len(data) - cut

    def text(self) -> str:
        tail = b"".join(self.tail)
        dropped = self.dropped + max(len(tail) - self.half, 0)
        tail = tail[-self.half:]
        middle = f"\n[... {dropped} bytes of output dropped ...]\n".encode() if dropped else b""
        return decode_as_tmux(bytes(self.head) + middle + tail)

    def pane(self) -> tuple[str, int]:
        """The output for `openhands_reads`: whole, or once bytes were dropped, what the pane still holds of them
        followed by the tail; and the rows of its start left out (its `scrolled` argument)."""
        tail = b"".join(self.tail)
        if self.scrollback is None:
            return decode_as_tmux(bytes(self.head) + tail), 0
        return self.scrollback.text() + decode_as_tmux(tail), self.scrollback.scrolled


def _scroll_point(data: bytes, at: int) -> int:
    """Where to cut `data`, at `at` or a little before: after a newline (in the second half, so that a cut moves
    at least half), else at the start of a character and outside an escape sequence, so that each side decodes and
    renders as it would joined."""
    newline = data.rfind(b"\n", at // 2, at)
    if newline >= 0:
        return newline + 1
    escape = data.rfind(b"\x1b", max(at - 256, 0), at)
    if escape > 0:
        at = escape
    for _ in range(3):  # UTF-8 continuation bytes
        if at > 0 and 0x80 <= data[at] < 0xC0:
            at -= 1
    return at


def strip_history_script(base_commit: str) -> str:
    """Shell commands that leave the repository in the current directory with only `base_commit` and its ancestors:
    on branch `main`, no other branches, tags, remotes, stashes or reflogs, unreachable objects pruned. For images
    whose repository came with its full history (SWE-bench's do); local checkouts never get the rest."""
    return (
        f"git checkout -q -f -B main {shlex.quote(base_commit)} && "
        "git remote | xargs -r -n1 git remote remove && "
        # --no-deref: deleting a symbolic ref (refs/remotes/origin/HEAD) must not delete its target instead
        "git for-each-ref --format='%(refname)' | grep -vx refs/heads/main | "
        "xargs -r -n1 git update-ref --no-deref -d && "
        "rm -f .git/ORIG_HEAD .git/FETCH_HEAD && "
        "git reflog expire --expire=now --all && git gc -q --prune=now"
    )


class FutureHistoryError(RuntimeError):
    """The repository shows the agent something newer than the task's base commit (a run must not start)."""


def history_check_script(base_commit: str) -> str:
    """Shell commands, run in the repository, that print one line per way the agent could reach anything newer
    than `base_commit` (nothing when the history is clean): HEAD elsewhere, a ref past the base (branch, tag, stash,
    note), a remote, a reflog entry (it would also name where the history came from), FETCH_HEAD and its kin,
    borrowed objects (alternates), a linked worktree, or an object `git fsck` finds unreachable."""
    base = shlex.quote(f"{base_commit}^{{commit}}")
    return (
        f"base=$(git rev-parse -q --verify {base}) || {{ echo 'the base commit is not in the repository'; exit; }}\n"
        '[ "$(git rev-parse -q --verify HEAD)" = "$base" ] || echo "HEAD is not the base commit"\n'
        "git for-each-ref --format='%(refname)' | while read -r ref; do\n"
        '  git merge-base --is-ancestor "$ref" "$base" 2>/dev/null || echo "$ref is not an ancestor of the base"\n'
        "done\n"
        "git remote | sed 's/^/remote /'\n"
        "for f in FETCH_HEAD ORIG_HEAD MERGE_HEAD CHERRY_PICK_HEAD REVERT_HEAD objects/info/alternates; do\n"
        '  [ -e "$(git rev-parse --git-path "$f")" ] && echo "$f exists"\n'
        "done\n"
        "find \"$(git rev-parse --git-path logs)\" -type f -size +0c 2>/dev/null | sed 's/^/reflog /'\n"
        "[ \"$(git worktree list | wc -l)\" -le 1 ] || echo 'linked worktrees exist'\n"
        "git fsck --connectivity-only --unreachable --no-reflogs --no-progress 2>&1 | head -5\n"
    )


def require_clean_history(leaks: str, where: str, base_commit: str) -> None:
    """Raise FutureHistoryError when `history_check_script` printed anything."""
    if leaks.strip():
        raise FutureHistoryError(
            f"{where}: the repository exposes history beyond the base commit {base_commit[:12]}, so the agent could "
            f"read the fix; refusing to run it. Found: {'; '.join(leaks.strip().splitlines()[:8])}")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def base_commit_sha(source: Path, base_commit: str) -> str:
    """The full sha of `base_commit` in the repository `source`; an InputError (the task's input, not git's
    failure) where it has no such commit."""
    try:
        return git("rev-parse", "--verify", f"{base_commit}^{{commit}}", cwd=source).strip()
    except subprocess.CalledProcessError:
        raise InputError(f"{source}: no commit {base_commit} (the task's base_commit) in this repository: is it "
                         "the task's repository, with its history up to that commit?") from None


def prepare_checkout(source: Path, base_commit: str, dest: Path, cache: Path) -> None:
    """A fresh repository at `dest` holding only `base_commit` and its ancestors, checked out on branch `main`.

    Not a `git worktree`: a worktree shares refs and objects with its source, so later commits, tags and branches
    would stay reachable (the "git hacking" SWE-Zero rules out), and its metadata lives outside the checkout, where
    the sandbox cannot write. The history is fetched once per base commit into a bare repository under `cache`;
    each rollout then clones that with its objects copied, not hard-linked: the agent may rewrite a file of its
    `.git/objects`, and through a hard link that would corrupt the cache for every later rollout of the task. The
    copy costs about 0.2 s for a history of 230 MB (OpenHands' own, one pack, files in the page cache).
    """
    sha = base_commit_sha(source, base_commit)
    bare = cache / f"{sha}.git"
    if not bare.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{sha}.", dir=cache))
        git("init", "-q", "--bare", "-b", "main", cwd=tmp)
        git("fetch", "-q", "--no-tags", str(source.resolve()), f"{sha}:refs/heads/main", cwd=tmp)
        try:
            tmp.rename(bare)  # atomic: concurrent rollouts of the same task never see a half-made cache
        except OSError:
            shutil.rmtree(tmp)
    git("clone", "-q", "--no-hardlinks", "--branch", "main", str(bare), str(dest))
    git("remote", "remove", "origin", cwd=dest)
    git("reflog", "expire", "--expire=now", "--all", cwd=dest)  # its entries name the cache folder cloned from
    for key, value in (("user.name", "swehero"), ("user.email", "agent@swehero.invalid")):
        git("config", key, value, cwd=dest)
    leaks = subprocess.run(["bash", "-c", history_check_script(sha)], cwd=dest, capture_output=True, text=True)
    require_clean_history(leaks.stdout + leaks.stderr, str(dest), sha)


def exclude_patterns(listed: bytes) -> list[str]:
    """Exclude patterns matching exactly the files `UNTRACKED_COMMAND` listed (what an install made), so that both
    runtimes keep the same files out of the patch. The names come NUL-ended (a name git would quote, such as
    `"caf\\303\\251.mo"`, matches nothing as a pattern), with the characters gitignore reads as globs, comments,
    negations or trailing blanks escaped; a newline, which no pattern line can hold, as `?`. A name that is no
    UTF-8 comes back as it came when encoded with `os.fsencode` (surrogate escapes)."""
    return ["/" + "".join("\\" + c if c in "\\*?[!# " else "?" if c == "\n" else c for c in os.fsdecode(name))
            for name in listed.split(b"\0") if name]
