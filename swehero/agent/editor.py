"""`str_replace_editor`: OpenHands' file editor (openhands-aci's OHEditor, as used by OpenHands 0.54).

A model trained on OpenHands trajectories has learnt this tool's exact observation texts (the `cat -n` snippets,
the error sentences), so they are reproduced here; the behaviour (unique-match rule, snippet windows, insert
semantics, per-file undo history) follows OHEditor too. Our own code, written from its documented behaviour.

The editor works on agent-visible paths through a `Files` object, which maps them onto the runtime's
filesystem and refuses paths outside the repository (a confinement OpenHands does not have).
"""

from __future__ import annotations

import codecs
import re
from pathlib import PurePosixPath
from typing import Protocol

import charset_normalizer
from binaryornot.helpers import is_binary_string

SNIPPET_LINES = 4
"""Lines of context shown around an edit."""
MAX_RESPONSE_CHARS = 16000
"""Longer file views are clipped (OHEditor's MAX_RESPONSE_LEN_CHAR)."""
MAX_FILE_BYTES = 10 * 1024 * 1024
HISTORY_PER_FILE = 10
BINARY_SNIFF_BYTES = 1024
"""What binaryornot's `is_binary` looks at: the start of the file."""
ENCODING_SNIFF_BYTES = 1024 * 1024
ENCODING_MIN_CONFIDENCE = 0.9
"""OHEditor's EncodingManager: charset-normalizer's guess over the first MiB, taken above this confidence, else
UTF-8."""

# openhands-aci 0.3.1's notices (`editor/prompts.py`), the version OpenHands 0.54 pins.
FILE_CLIPPED = (
    "<response clipped><NOTE>Due to the max output limit, only part of this file has been shown to you. You should "
    "retry this tool after you have searched inside the file with `grep -n` in order to find the line numbers of "
    "what you are looking for.</NOTE>"
)
DIR_CLIPPED = (
    "<response clipped><NOTE>Due to the max output limit, only part of this directory has been shown to you. You "
    "should use `ls -la` instead to view large directories incrementally.</NOTE>"
)
COMMANDS = ("view", "create", "str_replace", "insert", "undo_edit")


class ToolError(Exception):
    """A tool call that failed; its message is what the agent sees (after `ERROR:`)."""


class BinaryFile(ToolError):
    """The file is binary. OpenHands' runtime refuses a `view` of it before its editor sees it (`tools.py` answers
    as it does); an edit gets this message."""


class Files(Protocol):
    """The filesystem a runtime exposes to the editor, addressed by agent-visible absolute paths."""

    root: str

    def kind(self, path: str) -> str | None:
        """'file', 'dir', or None if `path` does not exist; raises ToolError if `path` is outside the root."""

    def size(self, path: str) -> int: ...

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        """The file's bytes, or its first `limit`; raises ToolError for what is no regular file."""

    def write_bytes(self, path: str, data: bytes) -> None: ...

    def listing(self, path: str) -> tuple[list[str], int]:
        """Entries up to 2 levels below `path` (itself included, hidden ones left out) as `slash_dirs` gives
        them, and the number of hidden entries directly in `path`."""


def slash_dirs(found: list[tuple[str, bool]]) -> list[str]:
    """(path, is a directory) pairs as OHEditor lists them: `find ... | sort` over the whole paths, in byte order
    (the C locale of SWE-bench images), then a `/` after each directory: `pkg/`, `pkg-extra.py`, `pkg/mod.py`.

    A name that is not UTF-8 (os.scandir's surrogate escapes) is shown with U+FFFD, as command output shows it: a
    lone surrogate cannot be written to a trajectory or sent to a model."""
    as_bytes = [(p.encode("utf-8", "surrogateescape"), is_dir) for p, is_dir in found]
    return [p.decode("utf-8", "replace") + ("/" if is_dir else "") for p, is_dir in sorted(as_bytes)]


def _invalid(param: str, value, hint: str) -> ToolError:
    return ToolError(f"Invalid `{param}` parameter: {value}. {hint}")


def _clip(text: str, notice: str) -> str:
    return text if len(text) <= MAX_RESPONSE_CHARS else text[:MAX_RESPONSE_CHARS] + notice


def _count_lines(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") or not text else 1)


def _split_lines(text: str) -> list[str]:
    """The lines of `text` with their newlines, as reading a file line by line gives them: split at \n only (not
    at the form feeds and other breaks `str.splitlines` also splits at; `read` has made every \r a \n)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _universal_newlines(text: str) -> str:
    """`text` as a file holding it reads in text mode: \r\n and \r are \n."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _lines(text: str, start: int, end: int) -> str:
    """Lines `start`..`end` (1-based, inclusive) with their newlines, like reading a file line by line."""
    return "".join(_split_lines(text)[max(start - 1, 0) : end]) if end >= start else ""


def _binary(path: str, data: bytes) -> bool:
    """binaryornot's `is_binary` (a `.pyc`, or binary-looking first bytes), on bytes: the runtime's files need not
    be on this host's disk."""
    return path.endswith(".pyc") or is_binary_string(data[:BINARY_SNIFF_BYTES])


def decode(data: bytes) -> tuple[str, str]:
    """A file's text and the encoding to write it back in, as OHEditor reads it; raises UnicodeError or LookupError
    (an encoding Python lacks) when it cannot.

    OHEditor takes charset-normalizer's guess for every file. Here a file that is valid UTF-8 is read as UTF-8
    first: charset-normalizer 3.4.2 guesses a legacy encoding above the threshold for some UTF-8 sources (25 of
    the 3,261 non-ASCII UTF-8 Python files of this project's environment, matplotlib's `backend_ps.py` as
    Latin-1 at 1.0), so OHEditor shows their non-ASCII text as mojibake and writes an agent's non-ASCII edit into
    them in that encoding. Other files (Latin-1, Shift JIS, UTF-16 with its BOM) get its guess, as there.
    """
    # A BOM-led UTF-8 file reads without its BOM and keeps it when written, as Python's utf_8_sig does there.
    encoding = "utf-8-sig" if data.startswith(codecs.BOM_UTF8) else "utf-8"
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError:
        guess = charset_normalizer.detect(data[:ENCODING_SNIFF_BYTES])
        if not guess["encoding"] or not (guess["confidence"] or 0) > ENCODING_MIN_CONFIDENCE:
            raise
        return data.decode(guess["encoding"]), guess["encoding"]


def numbered(content: str, description: str, start_line: int = 1) -> str:
    """The `cat -n`-style snippet every editor observation is built from."""
    content = _clip(content, FILE_CLIPPED)
    body = "\n".join(f"{i + start_line:6}\t{line}" for i, line in enumerate(content.split("\n")))
    return f"Here's the result of running `cat -n` on {description}:\n{body}\n"


class Editor:
    """One editor per episode: it keeps the undo history of the files it edited."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.history: dict[str, list[str]] = {}
        self.encodings: dict[str, str] = {}
        """Each file's encoding as last read: an edit writes the file back in it."""

    def __call__(self, command: str, path: str, file_text: str | None = None, view_range=None,
                 old_str: str | None = None, new_str: str | None = None, insert_line=None) -> str:
        if isinstance(path, str) and path.startswith("/"):
            path = str(PurePosixPath(path))  # OHEditor takes `Path(path)`: `/repo/pkg/` is `/repo/pkg` in its texts
        kind = self._validate_path(command, path)
        if command not in COMMANDS:  # after the path, under OHEditor's own tool name, as there
            raise ToolError(f"Unrecognized command {command}. The allowed commands for the oh_editor tool "
                            f"are: {', '.join(COMMANDS)}")
        if command == "view":
            return self.view(path, kind, view_range)
        if command == "create":
            if file_text is None:
                raise ToolError(f"Parameter `file_text` is required for command: {command}.")
            self.encodings[path] = "utf-8"
            self.write(path, file_text)
            self._remember(path, file_text)
            return f"File created successfully at: {path}"
        if command == "str_replace":
            if old_str is None:
                raise ToolError(f"Parameter `old_str` is required for command: {command}.")
            if new_str == old_str:
                raise _invalid("new_str", new_str,
                               "No replacement was performed. `new_str` and `old_str` must be different.")
            return self.str_replace(path, old_str, new_str or "")
        if command == "insert":
            if insert_line is None:
                raise ToolError(f"Parameter `insert_line` is required for command: {command}.")
            if new_str is None:
                raise ToolError(f"Parameter `new_str` is required for command: {command}.")
            if not isinstance(insert_line, int) or isinstance(insert_line, bool):
                raise _invalid("insert_line", insert_line, "It should be an integer.")
            return self.insert(path, insert_line, new_str)
        return self.undo_edit(path)

    def _validate_path(self, command: str, path: str) -> str | None:
        if not isinstance(path, str) or not path.startswith("/"):
            hint = "The path should be an absolute path, starting with `/`."
            if isinstance(path, str):
                # OpenHands' editor joins the path to its working directory, the workspace folder that holds the
                # repository (`/workspace`), not the repository: `pkg/a.py` gets no suggestion there
                suggestion = str(PurePosixPath(self.files.root).parent / path)
                try:
                    if self._kind(suggestion) is not None:
                        hint += f" Maybe you meant {suggestion}?"
                except ToolError:  # `../x` leaves the repository: no suggestion, as for a path that is not there
                    pass
            raise _invalid("path", path, hint)
        kind = self._kind(path)
        if command == "create" and kind is not None:
            raise _invalid("path", path,
                           f"File already exists at: {path}. Cannot overwrite files using command `create`.")
        if command != "create" and kind is None:
            raise _invalid("path", path, f"The path {path} does not exist. Please provide a valid path.")
        if command != "view" and kind == "dir":
            raise _invalid("path", path,
                           f"The path {path} is a directory and only the `view` command can be used on directories.")
        return kind

    def _kind(self, path: str) -> str | None:
        """The files' `kind`; None for a path holding a NUL byte, which names no file (OHEditor's `Path.exists()` is
        False for it, and the runtimes' files would refuse it or cut it short)."""
        return None if "\0" in path else self.files.kind(path)

    def binary(self, path) -> bool:
        """binaryornot's `is_binary(path)`, which OpenHands' runtime asks of a file to view before its editor checks
        anything (size, path): True for a `.pyc` path, existing or not; False for what it cannot read (no file, a
        directory, another path), which the editor's own checks then name."""
        if not isinstance(path, str):
            return False
        if "\0" in path and not path.endswith(".pyc"):
            # binaryornot opens the file and fails: OpenHands' runtime fails the action, and the episode ends
            raise ValueError(f"embedded null byte in the path of a view: {path!r}")
        try:
            return path.endswith(".pyc") or path.startswith("/") and self.files.kind(path) == "file" and \
                _binary(path, self.files.read_bytes(path, BINARY_SNIFF_BYTES))
        except ToolError:
            return False

    def read(self, path: str) -> str:
        size = self.files.size(path)
        if size > MAX_FILE_BYTES:
            raise ToolError(f"File validation failed for {path}: File is too large ({size / 1024 / 1024:.1f}MB). "
                            f"Maximum allowed size is {MAX_FILE_BYTES // 1024 // 1024}MB.")
        data = self.files.read_bytes(path)
        if _binary(path, data):
            raise BinaryFile(f"File validation failed for {path}: File appears to be binary and this file type "
                            "cannot be read or edited by this tool.")
        try:
            text, self.encodings[path] = decode(data)
        except (UnicodeError, LookupError) as e:
            raise ToolError(f"Ran into {e} while trying to read {path}") from None
        # OHEditor opens files in text mode, whose universal newlines read \r\n and \r as \n: the agent never sees
        # a \r, matches old_str written with \n, and an edit writes the file back with \n line endings.
        return _universal_newlines(text)

    def view(self, path: str, kind: str | None, view_range) -> str:
        if kind == "dir":
            if view_range:
                raise _invalid("view_range", view_range,
                               "The `view_range` parameter is not allowed when `path` points to a directory.")
            entries, hidden = self.files.listing(path)
            # OHEditor clips `find`'s output (a path per line) and then adds the `/` of each directory it lists
            # whole; the line cut short carries the notice.
            found = _clip("".join(entry.rstrip("/") + "\n" for entry in entries), DIR_CLIPPED).strip().split("\n")
            listed = [entry if shown == entry.rstrip("/") else shown for shown, entry in zip(found, entries)]
            out = (f"Here's the files and directories up to 2 levels deep in {path}, excluding hidden items:\n"
                   + "\n".join(listed + found[len(listed):]))
            if hidden:
                out += (f"\n\n{hidden} hidden files/directories in this directory are excluded. "
                        f"You can use 'ls -la {path}' to see them.")
            return out
        text = self.read(path)
        if not view_range:
            return numbered(text, path)
        if (not isinstance(view_range, list) or len(view_range) != 2
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in view_range)):
            raise _invalid("view_range", view_range, "It should be a list of two integers.")
        n = _count_lines(text)
        start, end = view_range
        if start < 1 or start > n:
            raise _invalid("view_range", view_range,
                           f"Its first element `{start}` should be within the range of lines of the file: {[1, n]}.")
        if end > n:
            raise _invalid("view_range", view_range, f"Its second element `{end}` should be smaller than the number "
                                                     f"of lines in the file: `{n}`.")
        if end != -1 and end < start:
            raise _invalid("view_range", view_range, f"Its second element `{end}` should be greater than or equal "
                                                     f"to the first element `{start}`.")
        # As OHEditor: the lines read as a file reads them, shown split as `str.splitlines` splits them.
        return numbered("\n".join(_lines(text, start, n if end == -1 else end).splitlines()), path, start)

    def read_to_edit(self, path: str) -> str:
        """`read` for `str_replace`, `insert` and `undo_edit`. OHEditor guesses their file's encoding before it checks it:
        charset-normalizer finds no confidence at all (None) for most binary files, and its `> 0.9` comparison then
        raises this TypeError, which OpenHands' runtime returns as the observation."""
        try:
            return self.read(path)
        except BinaryFile:
            if charset_normalizer.detect(self.files.read_bytes(path)[:ENCODING_SNIFF_BYTES])["confidence"] is None:
                raise ToolError("'>' not supported between instances of 'NoneType' and 'float'") from None
            raise

    def str_replace(self, path: str, old_str: str, new_str: str) -> str:
        text = self.read_to_edit(path)
        starts = [m.start() for m in re.finditer(re.escape(old_str), text)]
        if not starts:
            raise ToolError(f"No replacement was performed, old_str `{old_str}` did not appear verbatim in {path}.")
        if len(starts) > 1:
            lines = sorted({text.count("\n", 0, s) + 1 for s in starts})
            raise ToolError(f"No replacement was performed. Multiple occurrences of old_str `{old_str}` in lines "
                            f"{lines}. Please ensure it is unique.")
        at = starts[0]
        new_text = text[:at] + new_str + text[at + len(old_str):]
        self.write(path, new_text)
        self._remember(path, text)
        line = text.count("\n", 0, at) + 1
        first = max(0, line - SNIPPET_LINES)
        # read back from the file, as OHEditor reads it: a \r the agent wrote shows as a line break
        snippet = _lines(_universal_newlines(new_text), first + 1, line + SNIPPET_LINES + new_str.count("\n"))
        return (f"The file {path} has been edited. " + numbered(snippet, f"a snippet of {path}", first + 1)
                + "Review the changes and make sure they are as expected. Edit the file again if necessary.")

    def insert(self, path: str, insert_line: int, new_str: str) -> str:
        text = self.read_to_edit(path)
        n = _count_lines(text)
        if insert_line < 0 or insert_line > n:
            raise _invalid("insert_line", insert_line, f"It should be within the range of allowed values: {[0, n]}")
        lines = _split_lines(text)
        new_lines = new_str.split("\n")
        new_text = "".join(lines[:insert_line] + [line + "\n" for line in new_lines] + lines[insert_line:])
        self.write(path, new_text)
        self._remember(path, text)
        first = max(0, insert_line - SNIPPET_LINES)
        last = min(n + len(new_lines), insert_line + SNIPPET_LINES + len(new_lines))
        snippet = _lines(_universal_newlines(new_text), first + 1, last)
        return (f"The file {path} has been edited. "
                + numbered(snippet, "a snippet of the edited file", max(1, insert_line - SNIPPET_LINES + 1))
                + "Review the changes and make sure they are as expected (correct indentation, no duplicate lines, "
                "etc). Edit the file again if necessary.")

    def undo_edit(self, path: str) -> str:
        self.read_to_edit(path)
        stack = self.history.get(path)
        if not stack:
            raise ToolError(f"No edit history found for {path}.")
        old = stack.pop()
        self.write(path, old)
        return f"Last edit to {path} undone successfully. {numbered(old, path)}"

    def write(self, path: str, text: str) -> None:
        if "\0" in path:  # what opening it for writing says (`create`: the other commands found no such file)
            raise ToolError(f"Ran into embedded null byte while trying to write to {path}")
        if not isinstance(text, str):
            # JSON of another type (an object as `create`'s `file_text`: only `create` writes what it was given):
            # OHEditor has opened the new file for writing when its write fails, so it stays there, empty
            self.files.write_bytes(path, b"")
            raise ToolError(f"Ran into write() argument must be str, not {type(text).__name__} while trying to "
                            f"write to {path}")
        try:
            data = text.encode(self.encodings[path])
        except UnicodeEncodeError as e:  # a character the file's legacy encoding lacks
            raise ToolError(f"Ran into {e} while trying to write to {path}") from None
        self.files.write_bytes(path, data)

    def _remember(self, path: str, text: str) -> None:
        stack = self.history.setdefault(path, [])
        stack.append(text)
        del stack[:-HISTORY_PER_FILE]
