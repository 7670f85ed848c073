"""Run one tool call against a runtime and write the observation the agent sees, OpenHands 0.54 style.

The tools offered are exactly `swehero.toolspec.openhands_tools()`. A call is first read as OpenHands'
`response_to_actions` reads it (`parse_call`); one it refuses there (unknown tool, arguments that are not JSON, a
missing argument) runs nothing, and the loop answers it as OpenHands' controller does.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass, field

import bashlex

from swehero.agent.banned import RefusedCommand, RefusedScript, Scanned, is_binary, scan, shebang_banned, shell_script
from swehero.agent.bash_session import BashSession, ShellInput, special_key, truncate
from swehero.agent.editor import Editor, ToolError
from swehero.agent.keystrokes import EscapeFailed
from swehero.agent.runtime import Runtime
from swehero.toolspec import TOOL_NAMES, tool_schema

MODES = ("zero", "exec")
MULTIPLE_COMMANDS = ("ERROR: Cannot execute multiple commands at once.\nPlease run each command separately OR chain "
                     "them into a single command via && or ;\nProvided commands:\n{listed}")
"""OpenHands' bash session refuses a command of several top-level commands (lines) with this ErrorObservation."""


ERROR_TRAILER = "\n[Error occurred in processing last action]"
NO_LOGS = "ERROR: No previous running command to retrieve logs from."
NO_INPUT = "ERROR: No previous running command to interact with."
"""OpenHands' bash session's answers to an empty command, or input, when no command runs."""
SHEBANG_BYTES = 256
"""How much of a file Linux reads for its `#!` line (BINPRM_BUF_SIZE)."""
SCRIPT_BYTES = 1 << 16
"""The longest shell script the zero-mode check reads; a longer one is refused, as it cannot be checked whole."""
SCRIPT_DEPTH = 8
"""How deep the zero-mode check follows scripts that run scripts; one deeper is refused."""


def error_observation(content: str) -> str:
    """An OpenHands ErrorObservation as its agent puts it in the conversation: cut as its observations are."""
    return truncate(content) + ERROR_TRAILER


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


class InvalidCall(ValueError):
    """A call OpenHands' `response_to_actions` refuses before any action runs (its FunctionCallValidationError or
    FunctionCallNotExistsError), with OpenHands' text."""

    @property
    def observation(self) -> str:
        """What the model reads of it: OpenHands' ErrorObservation, cut as its observations are."""
        return error_observation(str(self))


REQUIRED = {"execute_bash": ("command",), "str_replace_editor": ("command", "path")}
"""The arguments OpenHands checks for; `think` and `finish` default theirs to ''."""


def parse_call(name: str, arguments: str | dict) -> dict:
    """The keyword arguments of a call as OpenHands 0.54's `response_to_actions` reads it, or InvalidCall. It checks
    only what OpenHands checks: arguments that are JSON, the tool's name, `REQUIRED`, a `timeout` that is a number,
    and, for an edit (not a view), no argument the editor lacks; other unknown arguments are dropped."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):  # also 4,300+ digits in a number, or nesting 1,000 deep
            raise InvalidCall(f"Failed to parse tool call arguments: {arguments}") from None
    if name not in TOOL_NAMES:  # the arguments as Python prints them, as there
        raise InvalidCall(f"Tool {name} is not registered. (arguments: {arguments}). Please check the tool name and "
                          "retry with an existing tool.")
    if not isinstance(arguments, dict):
        # OpenHands tests `"command" in arguments` first: a string or list without the name reads as the argument
        # missing; past that test (and for think, finish, numbers, null) its episode fails, here the call does
        missing = [r for r in REQUIRED.get(name, ()) if isinstance(arguments, (str, list)) and r not in arguments]
        if missing:
            raise InvalidCall(f'Missing required argument "{missing[0]}" in tool call {name}')
        raise InvalidCall(f"Tool call arguments must be a JSON object, got: {json.dumps(arguments)}")
    for required in REQUIRED.get(name, ()):
        if required not in arguments:
            raise InvalidCall(f'Missing required argument "{required}" in tool call {name}')
    properties = tool_schema(name)["properties"]
    if name == "execute_bash" and "timeout" in arguments:
        try:
            float(arguments["timeout"])
        except ValueError:
            raise InvalidCall(f"Invalid float passed to 'timeout' argument: {arguments['timeout']}") from None
        except TypeError:  # null: OpenHands fails the episode; here it is the default timeout (`execute_bash`)
            pass
    if name == "str_replace_editor" and arguments["command"] != "view":
        for key in arguments:
            if key not in properties:  # OpenHands prints a Python set, whose order varies: here the schema's
                allowed = "{" + ", ".join(repr(k) for k in properties) + "}"
                raise InvalidCall(f"Unexpected argument {key} in tool call {name}. Allowed arguments are: {allowed}")
    defaults = {"think": {"thought": ""}, "finish": {"message": ""}}.get(name, {})
    return {**defaults, **{k: v for k, v in arguments.items() if k in properties}}


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


def refusal(programs: list[str], how: list[str] | None = None) -> str:
    """`how`: which files run `programs`, when that is how the command would run them (`banned_scripts`)."""
    names = ", ".join(f"`{p}`" for p in dict.fromkeys(programs))
    if how:
        names += f" ({'; '.join(dict.fromkeys(how))})"
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
        self.bash = BashSession(runtime)

    def call(self, name: str, arguments: str | dict) -> Outcome:
        """Read and run one call; a call `parse_call` refuses gives its error observation."""
        try:
            return self.run(name, parse_call(name, arguments))
        except InvalidCall as e:
            return Outcome(e.observation, error=True)

    def run(self, name: str, arguments: dict) -> Outcome:
        """Run a call `parse_call` read."""
        try:
            return getattr(self, name)(**arguments)
        except UnicodeEncodeError as e:
            # a lone surrogate (JSON's `"\ud83d"` without its pair) is no text a path or command line can hold: the
            # runtime refuses it before anything runs
            return Outcome(f"ERROR: Ran into {e} while trying to run the {name} call.", error=True)

    def execute_bash(self, command, is_input="false", timeout=None) -> Outcome:
        if not isinstance(command, str):
            return Outcome(f"ERROR: Invalid `command` parameter: {command}. It should be a string.", error=True)
        stripped = command.strip()  # what OpenHands' bash session looks at
        # OpenHands takes `is_input` as input only when it is the string "true" (the schema's enum); a JSON `true`
        # runs the command as any other.
        is_input = is_input == "true"
        if not self.bash.running and not stripped:
            return Outcome(NO_LOGS, error=True)
        if not self.bash.running and is_input:
            return Outcome(NO_INPUT, error=True)
        if self.bash.running and stripped and not is_input:
            # one that has ended since the last call lets this command start (and be checked as one that starts)
            self.bash.settle(stripped)
        starts = not (is_input or self.bash.running or special_key(stripped) is not None)
        try:
            shell = self.bash.read(stripped) if starts else None
        except EscapeFailed as e:  # OpenHands' runtime answers with the error's text
            return Outcome(error_observation(str(e)), error=True)
        if self.mode == "zero" and special_key(stripped) is None:  # input too: a shell or `less` may read it
            try:
                # what the shell runs may differ from what was written (`keystrokes`, `history_expansion`): neither
                # may run a banned one
                given = shell.expansion.runs if shell else command  # without `shell`, nothing new is typed
                scans = [scan(line) for line in dict.fromkeys([command, given])]
                banned = list(dict.fromkeys(name for line in scans for name in line.banned))
                if banned:
                    return Outcome(refusal(banned), error=True, banned=banned)
                banned, how = self.banned_scripts(scans, shell)
            except RefusedCommand as e:  # unparsable, a program computed at run time, or such a script
                return Outcome(f"ERROR: Command refused, nothing was run: {e}", error=True, banned=e.programs)
            if banned:
                return Outcome(refusal(banned, how), error=True, banned=banned)
        commands = top_level_commands(stripped)
        if len(commands) > 1:
            listed = "\n".join(f"({i}) {c}" for i, c in enumerate(commands, 1))
            return Outcome(error_observation(MULTIPLE_COMMANDS.format(listed=listed)), error=True)
        config = self.runtime.config
        try:
            limit = float(timeout) if timeout is not None else config.default_timeout
        except (TypeError, ValueError):
            limit = math.nan
        if not limit > 0:  # also NaN
            return Outcome(f"ERROR: Invalid `timeout` parameter: {timeout}. It should be a positive number of "
                           "seconds.", error=True)
        # a `timeout` of the agent's makes the call wait for it however quiet the command is (OpenHands' blocking)
        limit = limit if config.max_timeout is None else min(limit, config.max_timeout)
        observation, running = self.bash.execute(stripped, is_input, limit,
                                                 blocking=timeout is not None, shell=shell)
        return Outcome(observation, error=running)

    def banned_scripts(self, scans: list[Scanned], shell: ShellInput | None) -> tuple[list[str], list[str]]:
        """The banned programs the repository's files that the command runs would run, and how, as the shell would
        find the files: the `#!` interpreter of one run by its path (`bin/test` starting with `#!/usr/bin/env
        python`), and what a shell script runs, one a shell reads (`sh run.sh`, `source env.sh`) or one run by its
        path whose `#!` line names a shell or that has none (`./run.sh`): its text is scanned as a command line is,
        and so are the files it runs in turn, `SCRIPT_DEPTH` deep. Raises `RefusedScript` for a script that cannot
        be cleared. Only files in the repository are looked at: the runtime's files reach no further."""
        paths = list(dict.fromkeys(path for line in scans for path in line.paths))
        scripts = list(dict.fromkeys(path for line in scans for path in line.scripts))
        # Relative paths start where the shell stands. With `shell` (a new command, nothing running) the history
        # expansion's round trip saw it, or the runtime is asked, as the bash session asks it after C-c. Without it
        # (text typed into a running program, a command sent while one runs) the directory is not known here, and
        # asking would disturb the running command: relative paths are then taken from the repository root.
        cwd = self.runtime.root
        if shell is not None and any(not p.startswith("/") for p in paths + scripts):
            cwd = (shell.state or self.runtime.execute(":", self.runtime.config.default_timeout)).cwd
        # (path as written, read by a shell, the folders it may be relative to, the scripts that run it)
        todo = [(p, False, [cwd], []) for p in paths] + [(p, True, [cwd], []) for p in scripts]
        banned, how, seen = [], [], set()
        while todo:
            p, by_shell, bases, chain = todo.pop(0)
            name = posixpath.normpath(p)
            where = "".join(f", which `{c}` runs" for c in reversed(chain))
            for path in dict.fromkeys(posixpath.normpath(posixpath.join(base, p)) for base in bases):
                if (path, by_shell) in seen:
                    continue
                seen.add((path, by_shell))
                try:
                    if self.runtime.files.kind(path) != "file":
                        continue
                    head = self.runtime.files.read_bytes(path, SHEBANG_BYTES)
                    interpreters = [] if by_shell else shebang_banned(head)
                    read = not interpreters and (not is_binary(head) if by_shell else shell_script(head))
                    text = self.runtime.files.read_bytes(path, SCRIPT_BYTES + 1) if read else None
                except ToolError:  # outside the repository, or no regular file
                    continue
                if interpreters:
                    banned += interpreters
                    how.append(f"the `#!` interpreter of `{name}`{where}")
                if text is None:
                    continue
                if len(text) > SCRIPT_BYTES:
                    raise RefusedScript(name, f"it is longer than {SCRIPT_BYTES} bytes.")
                if len(chain) == SCRIPT_DEPTH:
                    raise RefusedScript(name, f"scripts run scripts more than {SCRIPT_DEPTH} deep.")
                try:
                    found = scan(text.decode(errors="replace"))
                except RefusedCommand as e:
                    raise RefusedScript(name, str(e), e.programs) from None
                if found.banned:
                    banned += found.banned
                    how.append(f"run by `{name}`{where}")
                # what it runs by a relative path starts where the shell stands, or, after the usual
                # `cd "$(dirname "$0")"` (not followed: computed), in the script's own folder
                inner = [cwd, posixpath.dirname(path)]
                todo += [(q, False, inner, [*chain, name]) for q in found.paths]
                todo += [(q, True, inner, [*chain, name]) for q in found.scripts]
        return list(dict.fromkeys(banned)), how

    def str_replace_editor(self, command, path, **kwargs) -> Outcome:
        insert_line = kwargs.get("insert_line")
        if command != "view" and isinstance(insert_line, str):  # the runtime reads a number written as a string
            try:
                kwargs["insert_line"] = int(insert_line)
            except ValueError:
                return Outcome(f"ERROR:\nInvalid insert_line value: '{insert_line}'. Expected an integer.", error=True)
        if command == "view" and self.editor.binary(path):  # OpenHands' runtime, before its editor sees the call
            return Outcome(error_observation("ERROR_BINARY_FILE"), error=True)
        # OpenHands' conversation memory cuts an edit's observation, its errors too, to 30,000 characters; a view's
        # only as the editor clips it (its FileReadObservation is sent as it is)
        cut = (lambda text: text) if command == "view" else truncate
        try:
            return Outcome(cut(self.editor(command, path, **kwargs)))
        except ToolError as e:
            return Outcome(cut(f"ERROR:\n{e}"), error=True)
        except TypeError as e:  # an argument of another type (`new_str: 2`): OpenHands' runtime answers with it too
            return Outcome(cut(f"ERROR:\n{e}"), error=True)

    def think(self, thought) -> Outcome:
        return Outcome("Your thought has been logged.")

    def finish(self, message) -> Outcome:
        return Outcome(message, finished=True)
