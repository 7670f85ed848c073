"""Command output as OpenHands shows it to the model.

OpenHands (0.54) runs each command in a tmux pane and reads the rendered pane back, so the model trained on its
trajectories saw what a terminal shows, stripped as OpenHands strips it, and only what the pane still held. Our
runtimes give each command a terminal of the pane's size too (so programs format their output for one), but read
the bytes written to it, not a rendered screen; this module turns those into the same text.
"""

from __future__ import annotations

import re
from collections import deque

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
    return "\n".join(_render_line(line) if _NEEDS_RENDERING.search(line) else line
                     for line in text.replace("\r\n", "\n").split("\n"))


def _render_line(line: str) -> str:
    row = _Row()
    row.write(line)
    return row.text()


_CELL = "utf-32-le"
"""A row's cells are kept encoded so, 4 bytes a character: a cell is overwritten in place, in time linear in what is
written however long the row (rebuilding a string for each run of text took quadratic time on long tabbed lines)."""


class _Row:
    """One line being written to the pane: its cells and the cursor's column."""

    def __init__(self) -> None:
        self.cells = bytearray()
        self.col = 0

    @property
    def width(self) -> int:
        return len(self.cells) // 4

    def text(self) -> str:
        return self.cells.decode(_CELL, errors="surrogatepass")

    def as_written(self) -> str:
        """Text that leaves a fresh row as this one is: its cells, then the cursor moved back to its column."""
        if self.col == self.width:
            return self.text()
        return self.text() + "\r" + (f"\x1b[{self.col}C" if self.col else "")

    def write(self, text: str) -> None:
        """Write `text` (without a newline) from the cursor on."""
        pos = 0
        for m in _CONTROL.finditer(text):
            self._put(text[pos:m.start()])
            pos = m.end()
            self._control(m)
        self._put(text[pos:])

    def _put(self, run: str) -> None:
        if not run:
            return
        if self.col > self.width:
            self.cells += " ".encode(_CELL) * (self.col - self.width)
        self.cells[4 * self.col:4 * (self.col + len(run))] = run.encode(_CELL, errors="surrogatepass")
        self.col += len(run)

    def _control(self, m: re.Match) -> None:
        code, final = m.group(), m.group(2)
        n = int(m.group(1)) if final and m.group(1).isdigit() else None
        if code == "\r":
            self.col = 0
        elif code == "\b":
            self.col = max(self.col - 1, 0)
        elif code == "\t":
            self.col = (self.col // 8 + 1) * 8
        elif final in ("C", "D", "G"):  # cursor forward, back, to a column (1-based)
            self.col = {"C": self.col + (n or 1), "D": max(self.col - (n or 1), 0), "G": max((n or 1) - 1, 0)}[final]
        elif final == "K":  # erase in line: from the cursor to its end, from its start to the cursor, all
            mode = m.group(1) or "0"
            if mode == "0":
                del self.cells[4 * self.col:]
            elif mode == "1":
                erased = min(self.col + 1, self.width)
                self.cells[:4 * erased] = " ".encode(_CELL) * erased
            else:
                self.cells.clear()


SCREEN_ROWS, COLUMNS, HISTORY_LIMIT = 1000, 1000, 10_000
"""OpenHands' tmux pane: 1000 x 1000 on screen, 10,000 rows of history (its `history-limit`)."""
PROMPT_ROWS = 11
"""Rows OpenHands' prompt takes: a blank row, then its metadata as 8 rows of JSON between two marker rows."""
PANE_ROWS = SCREEN_ROWS + HISTORY_LIMIT
"""The most rows of output the pane ever holds."""
_LONG_LINE = re.compile(rf"[^\n]{{{COLUMNS + 1},}}")
"""A line that wraps in the pane."""


def openhands_reads(output: str, command: str, ended: bool = True, echoed: bool = False,
                    scrolled: int = 0) -> tuple[str, str]:
    """What OpenHands 0.54's bash session makes of a command's output, as (note, output): the pane as tmux shows it
    (`as_terminal_shows`), every row stripped at its end and the whole at both ends.

    The pane is cleared before each command, then holds the prompt, the command, its output, and once the command
    has `ended` the next prompt, then the cursor's row. When that is more than the screen and the history hold, the
    prompt before the command has scrolled away and OpenHands shows what is left (above the last prompt, under a
    note, when the command has ended). tmux frees a tenth of a full history at once, so what is left depends on the
    output's length: it is computed here as tmux keeps it (checked against tmux: `tests/test_agent_terminal.py`).
    `echoed`: OpenHands could not cut the command's echo, so it is shown above the output. `scrolled`: rows of the
    output's start that `output` leaves out, as they had left the pane (`Scrollback`)."""
    shown = as_terminal_shows(output).split("\n")
    echo = command.split("\n")
    if echoed:
        shown = echo + shown
    rows = [_rows(line) for line in shown]
    # the next prompt's blank row is the output's last (empty) line, and the cursor's row takes its place in the
    # count; while the command runs, the cursor is on the output's last line
    below = PROMPT_ROWS if ended else 0
    total = PROMPT_ROWS + (0 if echoed else sum(_rows(line) for line in echo)) + scrolled + sum(rows) + below
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


class Scrollback:
    """What OpenHands' pane would still hold of an output too long to keep whole, written to it in pieces of any
    size (cut at a character outside an escape sequence): blocks of complete lines as the pane shows them, the line
    being written, and the rows of the blocks dropped from the top once the blocks below held all the pane's rows.
    `text()` followed by the output that comes next shows as the whole output would, less those rows."""

    def __init__(self) -> None:
        self.blocks: deque[tuple[str, int]] = deque()
        """(lines as the pane shows them, their rows)."""
        self.rows = 0
        """Rows of the blocks."""
        self.scrolled = 0
        """Rows dropped from the top."""
        self.row = _Row()

    def write(self, text: str) -> None:
        first, *lines = text.replace("\r\n", "\n").split("\n")
        self.row.write(first)
        if lines:
            *complete, last = lines
            self._add(as_terminal_shows("\n".join([self.row.text(), *complete])))
            self.row = _Row()
            self.row.write(last)
        self._drop_wrapped_rows()

    def text(self) -> str:
        return "".join(block + "\n" for block, _ in self.blocks) + self.row.as_written()

    def _add(self, block: str) -> None:
        rows = block.count("\n") + 1 + sum(-(-(m.end() - m.start()) // COLUMNS) - 1
                                           for m in _LONG_LINE.finditer(block))
        self.blocks.append((block, rows))
        self.rows += rows
        while self.rows - self.blocks[0][1] >= PANE_ROWS:
            _, dropped = self.blocks.popleft()
            self.rows -= dropped
            self.scrolled += dropped

    def _drop_wrapped_rows(self) -> None:
        """A line longer than the pane keeps only its last rows there: drop the others, whole rows of the pane."""
        extra = self.row.width // COLUMNS - PANE_ROWS
        if extra > 0:
            del self.row.cells[:4 * extra * COLUMNS]
            # a cursor moved back into the dropped rows (\r on such a line) writes on the first row kept instead
            self.row.col = max(self.row.col - extra * COLUMNS, 0)
            self.scrolled += extra
