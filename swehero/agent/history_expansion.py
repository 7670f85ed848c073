"""What bash's history expansion makes of a command OpenHands types, worked out by the sandbox's own bash.

OpenHands types each command into an interactive bash, which expands `!` on every line it reads, before parsing
it. A reference that finds nothing drops its line with an error: `python -c "print('Done!')"` gives
`bash: !': event not found` and runs nothing, and `$?` stays the previous command's. A reference that finds a
command (`!!`, `!$`, `!grep`) is printed as expanded, then run so. The model trained on OpenHands' trajectories saw
both, so our shell must do the same. Our shell is not interactive in that sense: it reads each command whole,
where no expansion happens.

Which `!` expand depends on quoting across lines, here-documents, word designators and modifiers, and it varies
between bash versions (bash 5.2 leaves here-document bodies alone). So no Python copy of the rules: bash itself
reads the command as a script, with the session's history loaded, `set -o history -H` and `-n` (read, never run).
A script shell expands as an interactive one does. We keep what it printed while reading and the history it writes
back: one entry per command, expanded, without the dropped lines.

Only a command with a `!`, or with a line starting with `^` (quick substitution), can change; the others skip the
round trip into the sandbox.
"""

from __future__ import annotations

import base64
import re
import shlex
from dataclasses import dataclass

HISTORY_SIZE = 500
"""Entries bash keeps by default (HISTSIZE): how far back `!-N` and `!string` reach."""
SCRIPT = "swehero-expand"
"""The script's name, which starts bash's own messages about it (`swehero-expand: line 2: ...`)."""
_MARK = "SWEHERO-EXPANSION"
_ERROR = re.compile(rf"^{SCRIPT}: line (\d+): (.*)$")
_HISTORY_ERROR = re.compile(r".*: (event not found|bad word specifier|substitution failed|unrecognized history "
                            r"modifier|no previous substitution|unknown expansion error)$")
_TIMESTAMP = re.compile(r"^#\d+\n", re.M)


@dataclass(frozen=True)
class Expansion:
    """What bash does with one typed command."""

    runs: str
    """The text bash runs: the command as typed when nothing expanded, '' when no line of it is left."""
    printed: str
    """What bash prints while reading it: each expanded line, each history error (`bash: !x: event not found`).
    Printed after the line it concerns, so when any concerns a line before the last, the pane shows the command's
    echo with them among its lines, which OpenHands then cannot cut: `printed` is that echo, then."""
    with_echo: bool
    """`printed` holds the command's echo."""
    entries: tuple[str, ...]
    """The commands its history gains, as bash keeps them (the lines of one joined with `;` where it can, a line
    printed with `:p` too)."""


def may_expand(typed: str) -> bool:
    return "!" in typed or typed.startswith("^") or "\n^" in typed


def expansion_script(history: list[str], typed: str) -> str:
    """A command for the sandbox's shell that reads `typed` with bash as its interactive shell would after
    `history`, and prints what `read_expansion` reads: what bash printed, with `-v` each line as it was read (after
    expansion), and the history it kept. It runs in a subshell in a folder of its own, so the agent's working
    directory and variables stay as they are; `env -i` keeps the agent's variables (BASH_ENV, HISTIGNORE, ...) out
    of it."""
    saved = "".join(f"#0\n{entry}\n" for entry in history)  # timestamps keep an entry of several lines whole
    script = ('HISTFILE="$PWD/history" HISTTIMEFORMAT=" " HISTSIZE=-1 HISTFILESIZE=-1; history -r; '
              f"set -o history -H -n -v\n{typed}\n")
    files = " && ".join(f"printf %s {shlex.quote(base64.b64encode(text.encode()).decode())} | base64 -d > {name}"
                        for name, text in (("history", saved), (SCRIPT, script)))
    bash = f'env -i PATH="$PATH" LANG="${{LANG-}}" LC_ALL="${{LC_ALL-}}" bash --noprofile --norc {SCRIPT}'
    return (f'(d="$(mktemp -d)" && cd "$d" && {files} && {bash} >/dev/null 2>printed </dev/null; '
            f'echo "{_MARK} $(base64 -w0 < printed) $(base64 -w0 < history)"; cd / && rm -rf "$d")')


def read_expansion(output: str, history: list[str], typed: str) -> Expansion:
    """The `Expansion` from what `expansion_script(history, typed)` printed."""
    found = re.search(rf"^{_MARK} (\S*) (\S*)\r?$", output, re.M)
    if found is None:
        raise RuntimeError(f"bash's history expansion did not run in the sandbox: {output[-2000:]!r}")
    printed, saved = (base64.b64decode(part).decode("utf-8", "replace") for part in found.groups())
    entries = tuple(entry.removesuffix("\n") for entry in _TIMESTAMP.split(saved)[1 + len(history):])
    lines = typed.split("\n")
    read = _read_lines(printed.split("\n")[:-1], lines)
    if not any(messages for messages, _ in read):
        return Expansion(typed, "", False, entries)
    runs = "\n".join(text for _, text in read if text is not None)
    if not any(messages for messages, _ in read[:-1]):
        return Expansion(runs, "\n".join(read[-1][0]), False, entries)
    shown = [part for line, (messages, _) in zip(lines, read) for part in (line, *messages)]
    return Expansion(runs, "\n".join(shown), True, entries)


def _read_lines(printed: list[str], lines: list[str]) -> list[tuple[list[str], str | None]]:
    """For each typed line, what bash printed after it and the text it read for it (None when it dropped the line),
    from what it printed with `-v`: a line as read; or expanded, then as read (the same text twice); or the error
    that dropped it; or, for the `:p` modifier, expanded and dropped. A line bash did not reach (after a syntax
    error, which it reports again when it runs the command) is read as typed."""
    read: list[tuple[list[str], str | None]] = [([], line) for line in lines]
    at = 0
    for i, line in enumerate(lines):
        if at >= len(printed):
            break
        if error := _ERROR.match(printed[at]):
            if int(error[1]) != i + 2 or not _HISTORY_ERROR.match(error[2]):  # the script's line 1 loads history
                break
            read[i], at = ([f"bash: {error[2]}"], None), at + 1
        elif printed[at] == line:
            at += 1
        else:
            size = next((n for n in range(1, (len(printed) - at) // 2 + 1)
                         if printed[at:at + n] == printed[at + n:at + 2 * n]), None)
            if size is not None:
                read[i], at = (printed[at:at + size], "\n".join(printed[at:at + size])), at + 2 * size
            else:  # printed only: up to what the next line made bash print
                end = next((k for k in range(at, len(printed)) if i + 1 < len(lines) and
                            (printed[k] == lines[i + 1] or _ERROR.match(printed[k]))), len(printed))
                read[i], at = (printed[at:end], None), end
    return read
