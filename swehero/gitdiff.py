"""Reading unified diffs as git writes them: which files a patch touches, with git's quoting of unusual names
undone. One parser for every reader of patches (the graders' test files, the filters' test-file rule, the agent's
patch, a task's languages), so that none reads a name with a space or a non-ASCII character differently."""

from __future__ import annotations

import re

_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_GIT_NAME = r'"(?:[^"\\]|\\.)*"|[^"\s]\S*'
_GIT_NAMES = re.compile(rf"({_GIT_NAME}) ({_GIT_NAME})")
_SIDES = {"--- ": 0, "+++ ": 1, "rename from ": 0, "rename to ": 1, "copy from ": 0, "copy to ": 1}
"""Header lines naming one side of a file's change: 0 its old path, 1 its new one."""
_C_ESCAPES = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13}


def diff_files(patch: str) -> list[tuple[str | None, str | None]]:
    """(old path, new path) of each file a unified diff touches; None for the side a created or deleted file lacks.
    Git's header lines are read (`diff --git`, `---`/`+++`, rename and copy lines, created and deleted modes) with
    its C-quoting undone (`"b/t\\303\\274.py"`: a name with a non-ASCII or control character), so each path is the
    file's name on disk; a hunk's lines are skipped by the hunk's counts, whatever they start with."""
    files: list[list[str | None]] = []
    in_header, old_left, new_left = False, 0, 0
    for line in (patch or "").split("\n"):  # not splitlines: a hunk line may hold \x1c, \x85 or \u2028
        if line.startswith("diff --git "):
            files.append(_git_header_paths(line.removeprefix("diff --git ")))
            in_header, old_left, new_left = True, 0, 0
        elif old_left > 0 or new_left > 0:  # "\\ No newline at end of file" counts for neither side
            old_left -= line[:1] in ("", " ", "-")
            new_left -= line[:1] in ("", " ", "+")
        elif hunk := _HUNK.match(line):
            in_header = False
            old_left, new_left = (int(n) if n is not None else 1 for n in hunk.groups())
        elif in_header or line.startswith("--- "):
            if not in_header:  # a plain unified diff: its `---` line starts the file
                files.append([None, None])
                in_header = True
            _read_header_line(line, files[-1])
    return [(old, new) for old, new in files]


def patch_files(patch: str) -> list[str]:
    """Files a unified git diff touches (old and new paths, so deleted and renamed files count)."""
    return sorted({path for pair in diff_files(patch) for path in pair if path is not None})


def _read_header_line(line: str, paths: list[str | None]) -> None:
    if line.startswith("new file mode"):
        paths[0] = None
    elif line.startswith("deleted file mode"):
        paths[1] = None
    else:
        for start, side in _SIDES.items():
            if line.startswith(start):
                paths[side] = _diff_path(line.removeprefix(start), prefixed=start in ("--- ", "+++ "))


def _git_header_paths(names: str) -> list[str | None]:
    """The two paths of a `diff --git` line. Unquoted names holding spaces make it ambiguous, but git writes one
    name twice unless the file was renamed or copied, whose own header lines then name both sides."""
    if both := _GIT_NAMES.fullmatch(names):
        return [_diff_path(both[1]), _diff_path(both[2])]
    old, new = names[:len(names) // 2], names[len(names) // 2 + 1:]  # "a/NAME b/NAME"
    return [_diff_path(old), _diff_path(new)] if old[2:] == new[2:] else [None, None]


def _diff_path(name: str, prefixed: bool = True) -> str | None:
    """One path of a header line: None for /dev/null, C-quoting undone, git's `a/` or `b/` left out."""
    name = name.split("\t", 1)[0]  # git ends a name holding a space with a tab; GNU diff, a tab and a date
    if name == "/dev/null":
        return None
    if len(name) > 1 and name[0] == name[-1] == '"':
        name = c_unquote(name[1:-1].encode()).decode("utf-8", errors="replace")
    return name[2:] if prefixed and name[:2] in ("a/", "b/") else name


def c_unquote(quoted: bytes) -> bytes:
    """A name git wrote C-quoted, inside its quotes, as the bytes it names: octal escapes are bytes of the name."""
    def byte(escape: re.Match) -> bytes:
        code = escape[1]
        return bytes([int(code, 8) if len(code) == 3 else _C_ESCAPES.get(code, code[0])])

    return re.sub(rb"\\([0-7]{3}|.)", byte, quoted)
