"""Command output as OpenHands shows it to the model.

OpenHands (0.54) runs each command in a tmux pane and reads the rendered pane back, so the model trained on its
trajectories saw what a terminal shows, stripped as OpenHands strips it, and only what the pane still held. Our
runtimes give each command a terminal of the pane's size too (so programs format their output for one), but read
the bytes written to it, not a rendered screen; this module turns those into the same text.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(
    r"\x1b\[([0-?]*)[ -/]*([@-~])"  # CSI: colours, cursor moves, erase in line (K)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # two-character escapes
    r"|[\r\b\t]"
    r"|[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")  # other control characters: a terminal shows nothing for them
_NEEDS_RENDERING = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def as_terminal_shows(text: str) -> str:
    """Command output as a tmux pane shows it: escape sequences (colours a tool forces, titles) show nothing; a
    carriage return or backspace moves the cursor back so that later text overwrites earlier (a progress bar shows
    its last state), and a tab moves it to the next multiple of 8 columns (the tmux of OpenHands' images shows
    spaces there, and nothing for a tab that ends a line); other control characters (NUL, BEL, ...) show nothing.
    Of the other cursor moves, those along the line are followed and the rest dropped. A line is never wrapped
    (OpenHands' pane is 1000 columns, joined), and a character counts as one column (a terminal gives East Asian
    wide characters two)."""
    if not _NEEDS_RENDERING.search(text):
        return text
    return "\n".join(_render_line(line) for line in text.replace("\r\n", "\n").split("\n"))


def _render_line(line: str) -> str:
    shown, col, pos = "", 0, 0
    for m in _CONTROL.finditer(line + "\r"):  # a final \r writes the last run of text and changes nothing
        if run := line[pos:m.start()]:
            shown, col = shown[:col].ljust(col) + run + shown[col + len(run):], col + len(run)
        pos, code, final = m.end(), m.group(), m.group(2)
        n = int(m.group(1)) if final and m.group(1).isdigit() else None
        if code == "\r":
            col = 0
        elif code == "\b":
            col = max(col - 1, 0)
        elif code == "\t":
            col = (col // 8 + 1) * 8
        elif final in ("C", "D", "G"):  # cursor forward, back, to a column (1-based)
            col = {"C": col + (n or 1), "D": max(col - (n or 1), 0), "G": max((n or 1) - 1, 0)}[final]
        elif final == "K":  # erase in line: from the cursor to its end, from its start to the cursor, all
            mode = m.group(1) or "0"
            if mode == "0":
                shown = shown[:col]
            elif mode == "1":
                shown = " " * min(col + 1, len(shown)) + shown[col + 1:]
            else:
                shown = ""
    return shown


SCREEN_ROWS, COLUMNS, HISTORY_LIMIT = 1000, 1000, 10_000
"""OpenHands' tmux pane: 1000 x 1000 on screen, 10,000 rows of history (its `history-limit`)."""
PROMPT_ROWS = 11
"""Rows OpenHands' prompt takes: a blank row, then its metadata as 8 rows of JSON between two marker rows."""


def openhands_reads(output: str, command: str, ended: bool = True, echoed: bool = False) -> tuple[str, str]:
    """What OpenHands 0.54's bash session makes of a command's output, as (note, output): the pane as tmux shows it
    (`as_terminal_shows`), every row stripped at its end and the whole at both ends.

    The pane is cleared before each command, then holds the prompt, the command, its output, and once the command
    has `ended` the next prompt, then the cursor's row. When that is more than the screen and the history hold, the
    prompt before the command has scrolled away and OpenHands shows what is left (above the last prompt, under a
    note, when the command has ended). tmux frees a tenth of a full history at once, so what is left depends on the
    output's length: it is computed here as tmux keeps it (checked against tmux: `tests/test_agent_terminal.py`).
    `echoed`: OpenHands could not cut the command's echo, so it is shown above the output."""
    shown = as_terminal_shows(output).split("\n")
    echo = command.split("\n")
    if echoed:
        shown = echo + shown
    rows = [_rows(line) for line in shown]
    # the next prompt's blank row is the output's last (empty) line, and the cursor's row takes its place in the
    # count; while the command runs, the cursor is on the output's last line
    below = PROMPT_ROWS if ended else 0
    total = PROMPT_ROWS + (0 if echoed else sum(_rows(line) for line in echo)) + sum(rows) + below
    lines = [line.rstrip() for line in shown]
    if total <= SCREEN_ROWS + HISTORY_LIMIT:
        return "", "\n".join(lines).strip()
    freed = HISTORY_LIMIT // 10
    scrolled = total - SCREEN_ROWS  # rows that went into the history; when it is full, `freed` rows go
    history = HISTORY_LIMIT - freed + 1 + (scrolled - HISTORY_LIMIT - 1) % freed
    room, kept = SCREEN_ROWS + history - below, []  # less the cursor's row and the next prompt's markers
    for line, n in zip(reversed(lines), reversed(rows)):
        if room <= 0:
            break
        kept.append(line if n <= room else line[(n - room) * COLUMNS:])  # the start of a wrapped line is gone
        room -= n
    return (f"[Previous command outputs are truncated. Showing the last {len(kept)} lines of the output below.]\n",
            "\n".join(reversed(kept)).strip())


def _rows(line: str) -> int:
    """Rows a line takes in the pane: a line longer than the pane wraps."""
    return max(1, -(-len(line) // COLUMNS))
