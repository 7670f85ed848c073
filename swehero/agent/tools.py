"""Run one tool call against a runtime and write the observation the agent sees, OpenHands 0.54 style.

The tools offered are exactly `swehero.toolspec.openhands_tools()`. Malformed calls (unknown tool, arguments
that are not a JSON object, missing required arguments) become error observations, never exceptions.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import bashlex

from swehero.agent.banned import RefusedCommand, banned_commands
from swehero.agent.editor import Editor, ToolError
from swehero.agent.runtime import CommandResult, Runtime
from swehero.toolspec import TOOL_NAMES, tool_schema

MAX_OBSERVATION_CHARS = 30000
"""Bash output longer than this keeps its first and last halves (OpenHands' observation limit)."""
TRUNCATED = "\n[... Observation truncated due to length ...]\n"
MODES = ("zero", "exec")
MULTIPLE_COMMANDS = ("ERROR: Cannot execute multiple commands at once.\nPlease run each command separately OR chain "
                     "them into a single command via && or ;\nProvided commands:\n{listed}\n"
                     "[Error occurred in processing last action]")
"""OpenHands' bash session refuses a command of several top-level commands (lines) with this ErrorObservation."""


@dataclass
class Outcome:
    """What a tool call produced."""

    observation: str
    """Text returned to the agent as the tool message."""
    error: bool = False
    """The call failed (bad arguments, editor error, refused command)."""
    banned: list[str] = field(default_factory=list)
    """Banned programs the command tried to run (zero mode); the command was not run."""
    finished: bool = False
    """`finish` was called: the episode ends."""
    malformed: bool = False
    """The call itself was malformed (unknown tool, arguments not a JSON object, a required argument missing)."""


def truncate(text: str, limit: int = MAX_OBSERVATION_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + TRUNCATED + text[-half:]


_CONTROL = re.compile(
    r"\x1b\[([0-?]*)[ -/]*([@-~])"  # CSI: colours, cursor moves, erase in line (K)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # two-character escapes
    r"|[\r\b\t]"
    r"|[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")  # other control characters: a terminal shows nothing for them
_NEEDS_RENDERING = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


def as_terminal_shows(text: str) -> str:
    """Command output as OpenHands' tmux pane shows it: OpenHands runs commands in a terminal and reads the rendered
    pane, so escape sequences (colours a tool forces, titles) never reach the model; a carriage return or backspace
    moves the cursor back so that later text overwrites earlier (a progress bar shows its last state), and a tab
    moves it to the next multiple of 8 columns (the tmux of OpenHands' images shows spaces there, and nothing for a
    tab that ends a line); other control characters (NUL, BEL, ...) show nothing. Of the other cursor moves, those
    along the line are followed and the rest dropped; a line is never wrapped (OpenHands' pane is 1000 columns, joined). A character counts as one column
    (a terminal gives East Asian wide characters two)."""
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


def openhands_reads(output: str, command: str) -> tuple[str, str]:
    """What OpenHands 0.54's bash session makes of a finished command's output, as (note, output): the pane as tmux
    shows it (`as_terminal_shows`), every row stripped at its end and the whole at both ends.

    The pane is cleared before each command, then holds the prompt, the command, its output, the next prompt and
    the cursor's row. When that is more than the screen and the history hold, the prompt before the command has
    scrolled away and OpenHands shows what is left above the last prompt, under a note. tmux frees a tenth of a full
    history at once, so what is left depends on the output's length: it is computed here as tmux keeps it (checked
    against tmux: `tests/test_agent_terminal.py`)."""
    shown = as_terminal_shows(output).split("\n")
    rows = [max(1, -(-len(line) // COLUMNS)) for line in shown]  # a line longer than the pane wraps
    total = PROMPT_ROWS + sum(max(1, -(-len(line) // COLUMNS)) for line in command.split("\n")) + sum(rows) \
        + PROMPT_ROWS  # the last prompt's blank row is the output's last (empty) line; the cursor's row instead
    lines = [line.rstrip() for line in shown]
    if total <= SCREEN_ROWS + HISTORY_LIMIT:
        return "", "\n".join(lines).strip()
    freed = HISTORY_LIMIT // 10
    scrolled = total - SCREEN_ROWS  # rows that went into the history; when it is full, `freed` rows go
    history = HISTORY_LIMIT - freed + 1 + (scrolled - HISTORY_LIMIT - 1) % freed
    room, kept = SCREEN_ROWS + history - PROMPT_ROWS, []  # less the cursor's row and the last prompt's markers
    for line, n in zip(reversed(lines), reversed(rows)):
        if room <= 0:
            break
        kept.append(line if n <= room else line[(n - room) * COLUMNS:])  # the start of a wrapped line is gone
        room -= n
    return (f"[Previous command outputs are truncated. Showing the last {len(kept)} lines of the output below.]\n",
            "\n".join(reversed(kept)).strip())


def bash_observation(result: CommandResult, command: str, timeout: float) -> str:
    """OpenHands' CmdOutputObservation as the agent sees it: output, status line, then the metadata trailer."""
    note, shown = openhands_reads(result.output, command)
    text = note + truncate(shown)  # the note is outside what OpenHands truncates
    if result.timed_out:
        text += (f"\n[The command timed out after {timeout:g} seconds and was killed, together with every process "
                 "it started. Run long commands with a larger `timeout`, or split them into shorter steps.]")
    else:
        text += f"\n[The command completed with exit code {result.exit_code}.]"
    text += f"\n[Current working directory: {result.cwd}]"
    if result.python:
        text += f"\n[Python interpreter: {result.python}]"
    if not result.timed_out:
        text += f"\n[Command finished with exit code {result.exit_code}]"
    return text


def top_level_commands(command: str) -> list[str]:
    """The commands OpenHands' bash session finds in `command` (its `split_bash_commands`, over bashlex): one per
    top-level node, so lines, not `;` or `&&`; text between nodes (comments) stays with the command before it. What
    bashlex cannot parse (a here-document that ends the command, `$((...))`) is one command, as there."""
    try:
        nodes = bashlex.parse(command)
    except (bashlex.errors.ParsingError, NotImplementedError, TypeError, AttributeError):
        return [command]
    found: list[str] = []
    end = 0
    for node in nodes:
        start = node.pos[0]
        if found:
            found[-1] += command[end:start].rstrip()
        elif command[end:start].strip():
            found.append(command[end:start].rstrip())
        found.append(command[start:node.pos[1]].rstrip())
        end = node.pos[1]
    rest = command[end:].rstrip()
    if found:
        found[-1] += rest
    elif rest:
        found.append(rest)
    return found


def refusal(programs: list[str]) -> str:
    names = ", ".join(f"`{p}`" for p in dict.fromkeys(programs))
    return (f"ERROR: Command refused, nothing was run: it would execute {names}. This environment is "
            "execution-free: running code (python in any form), tests, type checkers and package managers is not "
            "possible. Use the editor and read-only shell commands (grep, find, cat, ls, git log/show/diff) instead.")


class Tools:
    """The four tools over one runtime; `mode` 'zero' refuses banned commands."""

    def __init__(self, runtime: Runtime, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.runtime, self.mode = runtime, mode
        self.editor = Editor(runtime.files)

    def call(self, name: str, arguments: str | dict) -> Outcome:
        if name not in TOOL_NAMES:
            return Outcome(f"ERROR: Tool {name} is not registered. (arguments: {arguments}). Please check the tool "
                           f"name and retry with an existing tool ({', '.join(TOOL_NAMES)}).",
                           error=True, malformed=True)
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as e:
                return Outcome(f"ERROR: Failed to parse tool call arguments as JSON ({e}): {arguments}", error=True,
                               malformed=True)
        if not isinstance(arguments, dict):
            return Outcome(f"ERROR: Tool call arguments must be a JSON object, got: {arguments}", error=True,
                           malformed=True)
        schema = tool_schema(name)
        for required in schema["required"]:
            if required not in arguments:
                return Outcome(f'ERROR: Missing required argument "{required}" in tool call {name}', error=True,
                               malformed=True)
        known = {k: v for k, v in arguments.items() if k in schema["properties"]}  # e.g. newer `security_risk`
        return getattr(self, name)(**known)

    def execute_bash(self, command, is_input="false", timeout=None) -> Outcome:
        if not isinstance(command, str):
            return Outcome(f"ERROR: Invalid `command` parameter: {command}. It should be a string.", error=True)
        stripped = command.strip()  # what OpenHands' bash session looks at
        # A timed-out command is killed (see bash_observation): none is ever left running to read more output from
        # or to send input to. These are OpenHands' answers when none is.
        if not stripped:
            return Outcome("ERROR: No previous running command to retrieve logs from.", error=True)
        # OpenHands takes `is_input` as input only when it is the string "true" (the schema's enum); a JSON `true`
        # runs the command as any other.
        if is_input == "true" or stripped in {"C-c", "C-d", "C-z"}:
            return Outcome("ERROR: No previous running command to interact with.", error=True)
        if self.mode == "zero":
            try:
                banned = banned_commands(command)
            except RefusedCommand as e:  # unparsable, or a program computed at run time
                return Outcome(f"ERROR: Command refused, nothing was run: {e}", error=True, banned=e.programs)
            if banned:
                return Outcome(refusal(banned), error=True, banned=banned)
        commands = top_level_commands(stripped)
        if len(commands) > 1:
            listed = "\n".join(f"({i}) {c}" for i, c in enumerate(commands, 1))
            return Outcome(MULTIPLE_COMMANDS.format(listed=listed), error=True)
        config = self.runtime.config
        try:
            limit = float(timeout) if timeout is not None else config.default_timeout
        except (TypeError, ValueError):
            limit = math.nan
        if not limit > 0:  # also NaN
            return Outcome(f"ERROR: Invalid `timeout` parameter: {timeout}. It should be a positive number of "
                           "seconds.", error=True)
        limit = min(limit, config.max_timeout)
        result = self.runtime.execute(command, limit)
        return Outcome(bash_observation(result, command, limit), error=result.timed_out)

    def str_replace_editor(self, command, path, **kwargs) -> Outcome:
        try:
            return Outcome(self.editor(command, path, **kwargs))
        except ToolError as e:
            return Outcome(f"ERROR:\n{e}", error=True)

    def think(self, thought) -> Outcome:
        return Outcome("Your thought has been logged.")

    def finish(self, message) -> Outcome:
        return Outcome(message, finished=True)
