"""What one `execute_bash` call does, and the observation it returns, as OpenHands 0.54's bash session
(`openhands/runtime/utils/bash.py`) does it.

A call waits for its command to end, but not forever: without a `timeout` from the agent it returns after
`no_output_timeout` seconds without new output, or after `default_timeout` seconds, and with one at that time; the
command keeps running. Until it ends, the next call may send '' (wait again, see only the new output), input text
or a key such as C-c (with `is_input`); any other command is not run. What the model saw in OpenHands' trajectories
it sees here, word for word.
"""

from __future__ import annotations

import math
import re
import time

from dataclasses import dataclass

from swehero.agent.history_expansion import HISTORY_SIZE, Expansion, expansion_script, may_expand, read_expansion
from swehero.agent.runtime import CommandResult, Output, Runtime
from swehero.agent.keystrokes import typed_command
from swehero.agent.terminal import as_terminal_shows, openhands_reads

MAX_OBSERVATION_CHARS = 30000
"""Bash output longer than this keeps its first and last halves (OpenHands' observation limit)."""
TRUNCATED = "\n[... Observation truncated due to length ...]\n"
STILL_RUNNING = (
    "You may wait longer to see additional output by sending empty command '', send other commands to interact with "
    'the current process, send keys ("C-c", "C-z", "C-d") to interrupt/kill the previous command before sending '
    "your new command, or use the timeout parameter in execute_bash for future commands.")
"""OpenHands' TIMEOUT_MESSAGE_TEMPLATE, the end of every observation of a command still running."""
CONTINUED = "[Below is the output of the previous command.]\n"


def truncate(text: str, limit: int = MAX_OBSERVATION_CHARS) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + TRUNCATED + text[-half:]


def special_key(command: str) -> bytes | None:
    """The byte a terminal gets for `C-<key>` (OpenHands sends such a command as that key, without Enter)."""
    if command.startswith("C-") and len(command) == 3 and 0x40 <= ord(command[2].upper()) <= 0x5f:
        return bytes([ord(command[2].upper()) & 0x1f])
    return None


def completed_observation(result: CommandResult, command: str, continued: str | None = None,
                          typed: str | None = None, echoed: bool = False, scrolled: int = 0) -> str:
    """OpenHands' CmdOutputObservation of a command that ended, as the agent sees it: output, status line, then the
    trailer its next prompt gave. OpenHands cuts the output to its limit when it makes the observation and then the
    whole message to the same limit, so a long output also loses what the note and the trailer take from the limit.
    `continued`: the new output, when an earlier observation showed the rest; `typed`, `echoed`: the command as
    the shell got it, and whether OpenHands left its echo (`keystrokes.typed_command`); `scrolled`: rows of the
    output's start left out of `result.output` (`CappedBuffer.pane`)."""
    note, shown = openhands_reads(result.output, typed or command, echoed=echoed, scrolled=scrolled) \
        if continued is None else ("", continued)
    key = f" CTRL+{command[-1].upper()} was sent." if special_key(command) else ""
    text = note + truncate(shown) + f"\n[The command completed with exit code {result.exit_code}.{key}]"
    text += f"\n[Current working directory: {result.cwd}]"
    if result.python:
        text += f"\n[Python interpreter: {result.python}]"
    return truncate(text + f"\n[Command finished with exit code {result.exit_code}]")


@dataclass(frozen=True)
class ShellInput:
    """One command as OpenHands' shell reads it."""

    typed: str
    """What OpenHands types (`keystrokes.typed_command`)."""
    echoed: bool
    """OpenHands cannot cut its echo from the pane: observations show it."""
    expansion: Expansion
    """What bash's history expansion makes of it (`history_expansion`)."""
    state: CommandResult | None = None
    """Where the shell stood when the expansion's round trip ran (its `cwd` and `python`); None without one."""


class BashSession:
    """The agent's terminal over a runtime: at most one command running, which calls may wait for, type into or
    interrupt."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.output: Output | None = None
        """The running command's output, None when none runs."""
        self.command = ""
        """The running command as the shell got it (`keystrokes.typed_command`)."""
        self.echoed = False
        """OpenHands could not cut that command's echo from its pane: observations show it."""
        self.shown: str | None = None
        """Its output as the last observation of it saw it; None before the first."""
        self.above = ""
        """What OpenHands' pane shows above that command's echo: the end of a command that had ended unseen when
        this one was typed (`settle`)."""
        self.ended_unseen: str | None = None
        """That end, found by `settle`, until the next command is typed."""
        self.stopped = 0
        """Commands stopped with C-z (bash numbers them as jobs)."""
        self.exit_code = 0
        """The last command's exit status (`$?` at the prompt)."""
        self.history: list[str] = []
        """The commands in bash's history, the last `HISTORY_SIZE` (what `!!`, `!-2`, `!grep` find)."""

    @property
    def running(self) -> bool:
        return self.output is not None

    def read(self, command: str) -> ShellInput:
        """What the shell reads and runs for a new `command`. Expanding history takes a round trip into the
        sandbox, for commands with a `!` only."""
        typed, echoed = typed_command(command)
        if not may_expand(typed):
            return ShellInput(typed, echoed, Expansion(typed, "", False, (typed,)))
        result = self.runtime.execute(expansion_script(self.history, typed), self.runtime.config.default_timeout)
        expansion = read_expansion(result.output, self.history, typed)
        return ShellInput(typed, echoed and not expansion.with_echo, expansion, result)

    def execute(self, command: str, is_input: bool, timeout: float, blocking: bool,
                shell: ShellInput | None = None) -> tuple[str, bool]:
        """Run, continue or type into a command (`command` stripped, as OpenHands strips it), waiting at most
        `timeout` seconds, or with `blocking` False also until `no_output_timeout` seconds pass without output. The
        observation, and whether the command still runs. `shell`: `read(command)`, when the caller has it. A new
        `command` while the last one seemed to run comes after `settle(command)`, which finds whether it still does."""
        key = special_key(command)
        quiet = math.inf if blocking else self.runtime.config.no_output_timeout
        waited = {"timeout": f"\n[The command timed out after {timeout} seconds. {STILL_RUNNING}]",
                  "quiet": f"\n[The command has no new output after {quiet:g} seconds. {STILL_RUNNING}]"}
        if self.output is not None and command and not is_input:  # still running: the caller has settled it
            return self._running(command, f'\n[Your command "{command}" is NOT executed. The previous command '
                                 "is still running - You CANNOT send new commands until the previous command is "
                                 "completed. By setting `is_input` to `true`, you can interact with the current "
                                 f"process: {STILL_RUNNING}]"), True
        above, self.ended_unseen = self.ended_unseen, None
        if self.output is None and key is not None:  # typed at the idle prompt: only Ctrl-C makes a new one
            if key != b"\x03":  # no prompt comes: the call waits as long as it would for a command
                return truncate(waited["timeout" if blocking else "quiet"]), False
            # bash draws a new prompt; `$?` stays the last command's
            state = self.runtime.execute(":", self.runtime.config.default_timeout)  # where the shell stands
            return completed_observation(CommandResult("^C", self.exit_code, False, state.cwd, state.python),
                                         command, (above or "") + "^C"), False
        if self.output is None:
            shell = shell or self.read(command)
            self.history = (self.history + list(shell.expansion.entries))[-HISTORY_SIZE:]
            self.command, self.echoed, self.shown, self.above = shell.typed, shell.echoed, None, above or ""
            if above is not None:  # OpenHands still holds the ended command's output as seen: this one continues it
                self.shown, self.echoed = "", shell.echoed or bool(above)
            if not shell.expansion.runs:  # bash dropped every line: it printed why, and `$?` stays
                state = shell.state or self.runtime.execute(":", self.runtime.config.default_timeout)
                return completed_observation(CommandResult(shell.expansion.printed, self.exit_code, False, state.cwd,
                                                           state.python), command, None, shell.typed,
                                             shell.echoed), False
            runs = shell.expansion.runs
            if 0 < self.exit_code < 256:  # each command has a fresh shell: `$?` starts as the last command left it
                runs = f"(exit {self.exit_code})\n{runs}"
            self.output = Output(self.runtime.start(runs), self.runtime.config.output_cap_bytes)
            if shell.expansion.printed:  # before the command's own output, as bash prints it while reading
                self.output.buffer.add((shell.expansion.printed + "\n").replace("\n", "\r\n").encode())
        elif key == b"\x1a":
            return self._stop(command), False
        elif command:
            self.output.channel.write(key if key is not None else command.encode() + b"\r")
        end = self.output.wait(timeout, quiet)
        if end == "ended":
            return self._ended(command), False
        return self._running(command, waited[end]), True

    def _ended(self, command: str) -> str:
        continued = self._new_output(command, ended=True)[1] if self.shown is not None else None
        code, cwd, python = self.output.channel.finish()
        output, scrolled = self.output.buffer.pane()
        self.output, self.exit_code = None, code
        return completed_observation(CommandResult(output, code, False, cwd, python), command, continued,
                                     self.command, self.echoed, scrolled)

    def settle(self, command: str) -> bool:
        """Before a new `command` is typed while the last one seemed to run: whether it still does. OpenHands looks
        at its pane first (for a second at most while the command writes); a command that has ended since the last
        observation is finished then, and `command` runs as at the prompt. OpenHands types it below the ended
        command's prompt, its pane not cleared, and cuts the next observation from the whole: what the ended command
        wrote since, the blank rows down to its prompt (the prompt's own first one, and one OpenHands adds between
        the outputs of two prompts), then `command`'s echo, no longer at the start and so never cut. That part
        above the echo is kept for it in `ended_unseen` ('' when nothing new came: the blank rows go with it)."""
        if self.output.wait(1, 0.1) != "ended":
            return True
        _, new = self._new_output(command, ended=True)
        rows = "\n".join(row.rstrip() for row in as_terminal_shows(self.output.buffer.pane()[0]).split("\n"))
        self.exit_code = self.output.channel.finish()[0]  # `$?` for the next command
        self.output = None
        self.ended_unseen = new and new + "\n" * (len(rows) - len(rows.rstrip("\n")) + 2)
        return False

    def _stop(self, command: str) -> str:
        """C-z: bash stops the job, reports it and returns to its prompt, the job kept for `fg`. Our shell keeps no
        jobs, so the command is killed instead; the observation is bash's."""
        self.output.channel.write(b"\x1a")
        echoed = time.monotonic() + 5  # the terminal's `^Z`, which a loaded machine may take a while to show
        while not (self.output.ended or self.output.buffer.text().endswith("^Z")) and time.monotonic() < echoed:
            self.output.wait(0.1)
        self.output.channel.kill()
        self.output.wait(5)
        self.stopped += 1
        _, new = self._new_output(command, ended=True)
        # Our shell reports the job too, but as its first: OpenHands' numbers it among the session's stopped jobs.
        new = re.sub(r"\n?\[\d+\]\+\s+Stopped\s[^\n]*$", "", new)
        _, cwd, python = self.output.channel.finish()
        self.output, self.exit_code = None, 148
        job = f"[{self.stopped}]+  {'Stopped':<24}{self.command}"
        return completed_observation(CommandResult("", 148, False, cwd, python), command,
                                     f"{new}\n{job}".lstrip("\n"))

    def _new_output(self, command: str, ended: bool) -> tuple[str, str]:
        """(prefix, output) of the command not shown yet, as OpenHands cuts it from its pane (with the next prompt
        below it once it has `ended`): what earlier observations showed, then the echo of what was typed, are left
        out. When the pane's history has dropped the top of what they showed, all that the pane holds is new."""
        output, scrolled = self.output.buffer.pane()
        _, shown = openhands_reads(output, self.command, ended, self.echoed, scrolled)
        shown = self.above + shown
        new, prefix = shown, ""
        if self.shown is not None:
            new, prefix = shown.removeprefix(self.shown), CONTINUED
            new = new.lstrip().removeprefix(command).lstrip()
        self.shown = shown
        return prefix, new.rstrip()

    def _running(self, command: str, suffix: str) -> str:
        prefix, new = self._new_output(command, ended=False)
        return truncate(prefix + truncate(new) + suffix)
