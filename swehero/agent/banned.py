"""Find the commands a bash command line would run, and which of them SWE-Zero bans.

SWE-Zero is execution-free: the agent may navigate (grep, find, cat, git log) but must not run the project's code
(`python` in any form, test runners, type checkers, package managers). The agent writes arbitrary bash, so the
check has to see through pipelines, `&&`/`||`/`;`, subshells, `$(...)`/backticks, `bash -c '...'`, `eval`,
wrappers (`env`, `timeout`, `xargs`, `sudo`, ...), `find -exec`, and absolute paths such as `/usr/bin/python3`.

Why our own shlex-based scanner and not `bashlex`: bashlex is GPL-3.0 (this package is Apache-2.0), and it raises
on syntax it does not model (`case`, arithmetic, some heredocs), which leaves a filter that must answer for every
command line with nothing to say. Here `shlex` does the quoting rules (word splitting, quote removal) and a small
scanner adds what shlex lacks: command separators, heredoc bodies (data, not commands) and substitutions (which
run even inside double quotes). When in doubt it errs towards "banned": an unbalanced quote is reported as such.
"""

from __future__ import annotations

import os
import re
import shlex

BANNED_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"i?python[0-9.]*|pypy[0-9.]*|python[0-9.]*-config|jython|bpython|ptpython", "python"),
    (r"pytest(-[0-9.]+)?|py\.test|nosetests|nose2|tox|nox|trial|unittest", "test runner"),
    (r"mypy|dmypy|stubtest|pyright|pytype|pyre", "type checker"),
    (r"pip[0-9.]*|pipx|pipenv|poetry|pdm|hatch|uv|uvx|conda|mamba|micromamba|easy_install|virtualenv",
     "python packaging"),
    (r"apt|apt-get|aptitude|dpkg|yum|dnf|apk", "system package manager"),
)
"""(regex on the command's basename, what it is): the programs SWE-Zero's prompt forbids running."""

_BANNED = [(re.compile(rf"(?:{rx})\Z"), what) for rx, what in BANNED_PATTERNS]

_SHELLS = {"bash", "sh", "dash", "zsh", "ksh", "ash", "busybox"}
_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time", "coproc"}
_SKIP_CONSTRUCTS = {"for", "select", "case", "function", "[[", "[", "test", "esac", "in"}
# wrapper -> options that take a separate value; the first other non-option word is the wrapped command
_WRAPPERS: dict[str, set[str]] = {
    "env": {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"},
    "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-U", "-r", "-t"},
    "nohup": set(),
    "nice": {"-n", "--adjustment"},
    "ionice": {"-c", "-n", "-p"},
    "timeout": {"-s", "--signal", "-k", "--kill-after"},
    "xargs": {"-I", "-i", "-n", "-P", "-L", "-l", "-d", "-E", "-e", "-s", "-a", "--arg-file", "--delimiter",
              "--max-args", "--max-procs", "--replace", "--max-lines", "--eof"},
    "exec": {"-a"},
    "command": set(),
    "builtin": set(),
    "stdbuf": {"-i", "-o", "-e"},
    "setsid": set(),
    "watch": {"-n", "--interval", "-d"},
    "chronic": set(),
    "unbuffer": set(),
    "strace": {"-e", "-o", "-p", "-s", "-u"},
    "ltrace": {"-e", "-o", "-p", "-s", "-u"},
    "time": {"-f", "--format", "-o", "--output"},
    "taskset": set(),
    "chroot": set(),
    "doas": {"-u"},
    "su": {"-c"},
    "flock": {"-w", "-E"},
}
_POSITIONAL_BEFORE_COMMAND = {"timeout": 1, "taskset": 1, "chroot": 1, "flock": 1}
_SEPARATORS = {";", "&", "&&", "||", "|", "|&", "\n", "(", ")", ";;", ";&", ";;&"}
_REDIRECT = re.compile(r"[0-9]*(<<<|<<-|<<|<>|<&|>&|>>|>\||<|>)|&>>?")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z0-9_.-]+)\1")


class UnparsableCommand(ValueError):
    """The command line cannot be tokenised (e.g. an unbalanced quote); bash would reject it too."""


def banned_commands(command: str) -> list[str]:
    """Names of the banned programs `command` would run (empty if none), e.g. `['python3', 'pytest']`.

    Raises `UnparsableCommand` for lines bash could not parse either; callers treat those as refused.
    """
    found: list[str] = []
    _scan(command, found, depth=0)
    return found


def why_banned(name: str) -> str | None:
    """What kind of banned program `name` (a basename) is, or None if allowed."""
    base = os.path.basename(name)
    if base.endswith(".py"):
        return "python script"
    for rx, what in _BANNED:
        if rx.match(base):
            return what
    return None


def _scan(command: str, found: list[str], depth: int) -> None:
    if depth > 8:
        raise UnparsableCommand("commands nested more than 8 levels deep")
    command, bodies = _strip_heredocs(command)
    for body in bodies:
        for sub in _substitutions(body, in_double_quotes=True):
            _scan(sub, found, depth + 1)
    for sub in _substitutions(command, in_double_quotes=False):
        _scan(sub, found, depth + 1)
    for words in _simple_commands(command):
        _check_words(words, found, depth)


def _strip_heredocs(command: str) -> tuple[str, list[str]]:
    """Remove heredoc bodies (data, not commands); return the rest and the bodies whose substitutions run."""
    lines = command.split("\n")
    kept: list[str] = []
    bodies: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        kept.append(line)
        i += 1
        for m in _HEREDOC.finditer(line):
            if _inside_quotes(line, m.start()):
                continue
            quoted, delim = m.group(1), m.group(2)
            body = []
            while i < len(lines) and lines[i].strip("\t") != delim:
                body.append(lines[i])
                i += 1
            i += 1  # the delimiter line
            if not quoted:
                bodies.append("\n".join(body))
    return "\n".join(kept), bodies


def _inside_quotes(line: str, pos: int) -> bool:
    """Whether `pos` lies inside a quoted string of `line` (so `echo '<<EOF'` starts no heredoc)."""
    quote = ""
    for c in line[:pos]:
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
    return bool(quote)


def _substitutions(text: str, in_double_quotes: bool) -> list[str]:
    """Bodies of `$(...)`, `<(...)`, `>(...)` and backticks that bash would execute (not inside single quotes)."""
    out: list[str] = []
    i, n, dq = 0, len(text), in_double_quotes
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'" and not dq:
            j = text.find("'", i + 1)
            i = n if j < 0 else j + 1
            continue
        if c == '"' and not in_double_quotes:
            dq = not dq
        elif c == "`":
            j = i + 1
            while j < n and text[j] != "`":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i + 1 : j])
            i = j + 1
            continue
        elif c in "$<>" and text.startswith("(", i + 1) and not text.startswith("((", i + 1):
            j = _matching_paren(text, i + 1)
            out.append(text[i + 2 : j])
            i = j + 1
            continue
        i += 1
    return out


def _matching_paren(text: str, start: int) -> int:
    depth, i, quote = 0, start, ""
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise UnparsableCommand("unbalanced parenthesis")


def _simple_commands(command: str) -> list[list[str]]:
    """Split into simple commands (lists of words after quote removal) at every separator and parenthesis."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as e:
        raise UnparsableCommand(str(e)) from None
    commands: list[list[str]] = [[]]
    expect_target = False
    for tok in tokens:
        if expect_target:
            expect_target = False
            continue
        if tok in _SEPARATORS:
            commands.append([])
        elif _REDIRECT.fullmatch(tok) or (tok and set(tok) <= set("<>&|") and tok not in _SEPARATORS):
            expect_target = True
        else:
            commands[-1].append(tok)
    return [c for c in commands if c]


def _check_words(words: list[str], found: list[str], depth: int) -> None:
    """Walk past assignments, keywords and wrappers to the command word; recurse into shells, eval and find."""
    i = 0
    while i < len(words):
        word = words[i]
        if _ASSIGNMENT.match(word) or word in _KEYWORDS or re.fullmatch(r"[0-9]+", word):
            i += 1
            continue
        if word in _SKIP_CONSTRUCTS or word.startswith("$((") or word.startswith("(("):
            return
        name = os.path.basename(word) if word.startswith(("/", "./", "../", "~")) else word
        if why_banned(name) or (word.endswith(".py") and "/" in word):
            found.append(name)
            return
        args = words[i + 1 :]
        if name == "command" and any(a in {"-v", "-V"} for a in args[:2]):
            return  # `command -v python` only looks the program up
        if name in _WRAPPERS:
            _check_words(_unwrap(name, args), found, depth)
        elif name in _SHELLS:
            script = _shell_script(args)
            if script is not None:
                _scan(script, found, depth + 1)
            elif args and not args[0].startswith("-"):
                _check_words(args[:1], found, depth)  # `bash script.py`
        elif name == "eval":
            _scan(" ".join(args), found, depth + 1)
        elif name in {"find", "fd", "parallel"}:
            _check_exec_args(name, args, found, depth)
        return


def _unwrap(wrapper: str, args: list[str]) -> list[str]:
    takes_value = _WRAPPERS[wrapper]
    positional = _POSITIONAL_BEFORE_COMMAND.get(wrapper, 0)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return args[i + 1 :]
        if a.startswith("-") and len(a) > 1:
            if wrapper == "su" and a == "-c" and i + 1 < len(args):
                return ["bash", "-c", args[i + 1]]
            if wrapper == "env" and a in {"-S", "--split-string"} and i + 1 < len(args):
                return shlex.split(args[i + 1]) + args[i + 2 :]
            i += 2 if a in takes_value else 1
        elif wrapper == "env" and "=" in a:
            i += 1
        elif positional:
            positional -= 1
            i += 1
        else:
            return args[i:]
    return []


def _shell_script(args: list[str]) -> str | None:
    """The script of `bash [-opts] -c SCRIPT`, else None (then the shell runs a file or stdin)."""
    for i, a in enumerate(args):
        if not a.startswith("-"):
            return None
        if "c" in a.lstrip("-") and not a.startswith("--"):
            return args[i + 1] if i + 1 < len(args) else ""
    return None


def _check_exec_args(name: str, args: list[str], found: list[str], depth: int) -> None:
    if name == "find":
        for i, a in enumerate(args):
            if a in {"-exec", "-execdir", "-ok", "-okdir"}:
                end = next((j for j in range(i + 1, len(args)) if args[j] in {";", "+", "\\;"}), len(args))
                _check_words(args[i + 1 : end], found, depth)
    elif name == "parallel" and args:
        _scan(" ".join(a for a in args if a not in {":::", "::::"}), found, depth + 1)
    elif name == "fd":
        for i, a in enumerate(args):
            if a in {"-x", "--exec", "-X", "--exec-batch"}:
                _check_words(args[i + 1 :], found, depth)


def simple_commands(command: str) -> list[list[str]]:
    """The simple commands of a command line, each as its words after quote removal (heredoc bodies left out).
    Raises `UnparsableCommand` for lines bash could not parse either."""
    return _simple_commands(_strip_heredocs(command)[0])
