"""JSON files the pipeline relies on after a crash: whole-or-old writes, JSONL reading that splits lines only where
JSON does, and append-only JSONL logs that make runs resumable. Standard library only (the agent imports it too).

An append-only log is keyed by `instance_id` (or another key). A line is the commit point of one item: it is
written whole, flushed and fsynced under a lock, and anything it refers to (a trajectory file) is written before
it. A `kill -9` can only leave a torn last line, which the next writer to open the log cuts off, so a restarted run
redoes exactly the items without a complete line: nothing lost, nothing twice. Readers (`JsonlLogReader`) never
change the file, so they are safe while a writer appends: a last line without its newline is skipped, being written
or torn. Writers hold an advisory lock (`flock`) on the log while they append a line or cut a torn one, so a writer
opening the log never cuts a line another process is writing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from swehero.errors import InputError, MissingInput, Unavailable


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file."""
    return [record for _, record in iter_jsonl(path)]


def existing_file(path: str | Path) -> Path:
    """`path`, which must be a file: a folder or nothing there is a `MissingInput` naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: {'a folder, where a file is read' if path.is_dir() else 'no such file'}")
    return path


def read_json(path: str | Path, what: str) -> dict:
    """The JSON object in the file `path`, which swehero wrote whole (`what` it holds); a file that is none (edited
    by hand, damaged) is an `InputError` naming it, not a traceback in the command that reads it."""
    path = existing_file(path)
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not {what} (not JSON: {e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not {what} (a JSON object, got {type(data).__name__})")
    return data


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, record) of a JSONL file's non-blank lines, one line in memory at a time (a distillation's
    trajectories run to tens of GB); a line that is not JSON is an `InputError` naming file:line. Lines end at `\\n`
    only: `str.splitlines` also breaks at U+2028, U+0085, U+001C and others, which JSON written with
    `ensure_ascii=False` carries raw inside strings (model output does)."""
    with open(existing_file(path), "rb") as f:  # binary lines end at b"\n" alone
        yield from ((number, record) for number, _, record in parsed(path, enumerate(f, 1)))


def parsed(path: Path, lines: Iterable[tuple[int, bytes]]) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, line, record) of the non-blank ones of `path`'s numbered `lines`; one not JSON is an
    `InputError` naming file:line."""
    for number, line in lines:
        if line.strip():
            try:
                yield number, line, json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise InputError(f"{path}:{number}: not JSON: {e}") from None


def _terminated(lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """The numbered `lines` up to one without its newline, which is the end of the file as it was read: a line being
    appended, or torn by a kill. Reading on would take what a writer appends next as a line of its own."""
    for number, line in lines:
        if not line.endswith(b"\n"):
            return
        yield number, line


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path for the block to write `path` at, by any means (a chart library's own writer too): beside
    it, so the rename is atomic, and with its suffix, for writers that take the format from it. Fsynced and renamed
    over `path` when the block ends, removed if it raises. Readers see the old file or the new one, never half of
    one; a reader that opened the old one keeps reading it whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _renamed_over(path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp{path.suffix}"),
                       path) as tmp:
        yield tmp


PARTIAL = ".partial"
"""The suffix of the temporary path `partial_path` writes at."""


@contextmanager
def partial_path(path: Path) -> Iterator[Path]:
    """Like `atomic_path`, for output that one run at a time writes, for hours, and that a killed run leaves
    half-written: the temporary path is always `<path>.partial`, which a run empties first, so killed runs leave at
    most that one file (not one more per run), named so that a folder read as input skips it. The run holds a lock
    on it: a second run writing the same `path` meanwhile is an InputError, where it would have emptied the first
    one's file and had the first rename its own half-written one over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + PARTIAL)
    with _locked(tmp, busy=_busy(path, tmp)):
        with _renamed_over(tmp, path):
            yield tmp


@contextmanager
def partial_folder(path: Path) -> Iterator[Path]:
    """`<path>.partial`, for a run to write the folder `path` in, for hours, holding the lock `partial_path` holds
    for a file: a second run into `path` meanwhile is an InputError, where it would have removed the first one's
    folder, and the first would have written the rest of its output into the second's and renamed that over
    `path`. The block empties, fills and renames the folder itself. The lock is on the file `<path>.partial.lock`
    (NFS locks only files open for writing, not folders), removed when the block ends."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + PARTIAL)
    lock = tmp.with_name(tmp.name + ".lock")
    with _locked(lock, busy=_busy(path, tmp)):
        try:
            yield tmp
        finally:  # under the lock: a run that opened this file meanwhile sees it gone and locks a new one
            lock.unlink(missing_ok=True)


def _busy(path: Path, tmp: Path) -> str:
    return f"{path}: another run is writing it (into {tmp}); wait for it to end, or stop it"


@contextmanager
def _locked(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path`, emptied (created if missing), or raise InputError(busy)."""
    while True:
        with exclusive(path, busy) as handle:
            # the file locked may have been renamed over its output, by a run that ended meanwhile: lock the new one
            if os.path.exists(path) and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                handle.truncate(0)
                yield
                return


@contextmanager
def _renamed_over(tmp: Path, path: Path) -> Iterator[Path]:
    """`tmp`, fsynced and renamed over `path` when the block ends, removed if it raises."""
    try:
        yield tmp
        with open(tmp, "rb") as f:  # an fsync through any descriptor flushes the file's data
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[str]]:
    """`path` opened for writing text (UTF-8), through `atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        yield f


@contextmanager
def exclusive(lock: Path, busy: str = "") -> Iterator[IO[str]]:
    """Hold an exclusive lock on the file `lock` (created if missing) for the block, which gets it open for
    appending; released however the block ends, also when the process dies. Per open file, so threads of one
    process exclude each other too. Waits for the lock, unless `busy` is given: then, if it is held, an InputError
    of `busy` at once."""
    with open(lock, "a") as handle:
        try:
            lock_exclusive(handle, wait=not busy)
        except BlockingIOError:
            raise InputError(busy) from None
        yield handle


NO_LOCKS = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)
"""What `flock` fails with on a filesystem that gives no locks: Lustre mounted without `flock`, an NFS server whose
lock service does not answer."""


def lock_exclusive(f: IO, wait: bool = True) -> None:
    """`flock` the open file `f` exclusively (BlockingIOError if held and not `wait`). A filesystem without locks is
    an Unavailable naming the file, raised by the first lock a command takes, not an errno in a traceback."""
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        if e.errno not in NO_LOCKS:
            raise
        raise Unavailable(f"{f.name}: its filesystem gives no file locks ({e.strerror}), which swehero takes so that "
                          "two runs never write the same files: use a folder on a filesystem that does (Lustre "
                          "mounted with -o flock, NFS with its lock service running) or on a local disk") from None


def write_json_atomic(path: Path, data: Any, indent: int | None = None, sort_keys: bool = False) -> None:
    """`data` as JSON, through `atomic_file`."""
    with atomic_file(path) as f:
        json.dump(data, f, ensure_ascii=False, indent=indent, sort_keys=sort_keys, default=str)


def write_text_atomic(path: Path, text: str) -> None:
    """`text` (UTF-8), through `atomic_file`."""
    with atomic_file(path) as f:
        f.write(text)


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """`key.path: old -> new` for every leaf where two JSON-like values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new)) for d in differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def by_instance_id(record: dict) -> str:
    return record["instance_id"]


class JsonlLogReader:
    """An append-only JSONL log read as it stands, without changing it: safe while a writer appends to it."""

    def __init__(self, path: Path, key: Callable[[dict], Hashable] = by_instance_id) -> None:
        self.path = Path(path)
        self.key = key

    def __iter__(self) -> Iterator[dict]:
        """The complete records, in the order committed, one in memory at a time."""
        yield from (record for _, record in self.numbered())

    def numbered(self) -> Iterator[tuple[int, Any]]:
        """(line number, record) of the complete records: for a reader that checks them, to name the line."""
        yield from ((number, record) for number, _, record in parsed(self.path, self.lines()))

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """(line number, line) of the complete lines as written, blank ones too: for a reader that copies them."""
        if self.path.exists():
            with open(existing_file(self.path), "rb") as f:
                yield from _terminated(enumerate(f, 1))

    def keys(self) -> set:
        """The keys committed: what a resumed run skips, without holding the records."""
        return {self.key(record) for record in self}

    def records(self) -> dict:
        """Complete records by key (the first one wins, though appends never repeat a key)."""
        out: dict = {}
        for record in self:
            out.setdefault(self.key(record), record)
        return out


class JsonlLog(JsonlLogReader):
    """The log's writer: opening it cuts a torn last line, which a killed writer left, so that the next append
    starts on a line of its own."""

    def __init__(self, path: Path, key: Callable[[dict], Hashable] = by_instance_id) -> None:
        super().__init__(path, key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self) -> None:
        """Drop a torn last line, under the lock, so never a line that another writer is appending. Only the tail is
        read: the log may be far larger than memory."""
        if not self.path.exists():
            return
        with open(self.path, "r+b") as f:
            lock_exclusive(f)
            end = f.seek(0, os.SEEK_END)
            if not end:
                return
            f.seek(end - 1)
            if f.read(1) == b"\n":
                return
            start = end
            while start > 0:  # back to the last complete line's newline, a block at a time
                block = min(start, 1 << 20)
                f.seek(start - block)
                newline = f.read(block).rfind(b"\n")
                start -= block
                if newline >= 0:
                    start += newline + 1
                    break
            f.truncate(start)
            f.flush()
            os.fsync(f.fileno())

    def append(self, record: dict) -> None:
        self.append_lines([(json.dumps(record, ensure_ascii=False) + "\n").encode()])

    def append_lines(self, lines: Iterable[bytes]) -> None:
        """Append records (complete lines: `lines` reads them from another log) under one lock, with one sync at the
        end, for a writer that copies many (a merge): a sync per line would cost more than the copying. Killed
        halfway, the log holds the lines written before, the last perhaps torn, which the next opening cuts. A write
        that fails (a full disk) is undone before the lock is let go: another writer's line, appended to a torn one
        after the disk had room again, would make both one line no reader can parse, in the middle of the log."""
        with open(self.path, "ab", buffering=0) as f:  # unbuffered: nothing left to write once it is undone
            lock_exclusive(f)  # per open file: threads of this process wait for each other too
            end = os.lseek(f.fileno(), 0, os.SEEK_END)
            try:
                for line in lines:
                    written = memoryview(line)
                    while written:  # a raw write may write part of it
                        written = written[f.write(written):]
                os.fsync(f.fileno())
            except BaseException:
                os.ftruncate(f.fileno(), end)
                raise
