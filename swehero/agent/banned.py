"""Find the commands a bash command line would run, and which of them SWE-Zero bans.

SWE-Zero is execution-free: the agent may navigate (grep, find, cat, git log) but must not run the project's code
(`python` in any form, test runners, type checkers, package managers). The agent writes arbitrary bash, so the
check has to see through pipelines, `&&`/`||`/`;`, subshells, `$(...)`/backticks, `bash -c '...'`, `eval`,
wrappers (`env`, `timeout`, `time -p`, `xargs`, `sudo`, `busybox`, ...), shell options (`bash -o pipefail -c`),
heredocs and here-strings fed to a shell, `find -exec`, `git bisect run`, process substitutions, one-line function
bodies, inline programs of other interpreters that start programs (`perl -e 'system("pytest")'`), and absolute
paths such as `/usr/bin/python3`. A command whose program is only known at run time (`$cmd`, `${cmd}`, `$(...)` as
the command word, a script piped into a shell) cannot be checked: it is refused with that reason, unless its
variable was assigned a plain word earlier in the same line.

Why our own shlex-based scanner and not `bashlex`: bashlex is GPL-3.0 (this package is Apache-2.0), and it raises
on syntax it does not model (`case`, arithmetic, some heredocs), which leaves a filter that must answer for every
command line with nothing to say. Here `shlex` does the quoting rules (word splitting, quote removal) and a small
scanner adds what shlex lacks: command separators, heredoc bodies (data, not commands, unless a shell reads them)
and substitutions (which run even inside double quotes). When in doubt it errs towards "banned": an unbalanced
quote is reported as such.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

BANNED_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"i?python[0-9.]*|pypy[0-9.]*|python[0-9.]*-config|jython|bpython|ptpython|py"
     r"|pdb[0-9.]*|pydoc[0-9.]*|py3compile|py3clean|pygettext[0-9.]*|2to3[0-9.-]*|idle[0-9.]*|idle-python[0-9.]*",
     "python"),
    (r"pytest(-[0-9.]+)?|py\.test|nosetests|nose2|tox|nox|trial|unittest|coverage[0-9.-]*|behave|green|stestr"
     r"|django-admin", "test runner"),
    (r"mypy|dmypy|stubtest|pyright|pytype|pyre", "type checker"),
    (r"pip[0-9.]*|pipx|pipenv|poetry|pdm|hatch|uv|uvx|conda|mamba|micromamba|easy_install|virtualenv",
     "python packaging"),
    (r"apt|apt-get|aptitude|dpkg|yum|dnf|apk", "system package manager"),
)
"""(regex on the command's basename, what it is): the programs SWE-Zero's prompt forbids running. `coverage`,
`behave`, `green`, `stestr` and `django-admin` run the project's code as pytest does; `py` is the Python launcher;
`pdb`, `pydoc`, `py3compile`, `py3clean`, `pygettext`, `2to3` and `idle` are Python's own programs, run by it on
what they are given (`pydoc3 mod` imports mod.py, `pdb3 -c continue x.py` runs x.py)."""

_BANNED = [(re.compile(rf"(?:{rx})\Z"), what) for rx, what in BANNED_PATTERNS]

_SHELLS = {"bash", "sh", "dash", "zsh", "ksh", "ash", "mksh", "yash"}
_SHELL_OPTION_VALUE = {"-o", "+o", "-O", "+O", "--rcfile", "--init-file"}
_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "coproc"}
_SKIP_CONSTRUCTS = {"for", "select", "case", "[[", "[", "test", "esac", "in"}
_DECLARATIONS = {"export", "readonly", "declare", "typeset", "local"}
# wrapper -> options that take a separate value; the first other non-option word is the wrapped command
_WRAPPERS: dict[str, set[str]] = {
    "env": {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"},
    "sudo": {"-u", "-g", "-C", "-D", "-h", "-p", "-U", "-r", "-t"},
    "nohup": set(),
    "nice": {"-n", "--adjustment"},
    "ionice": {"-c", "-n", "-p"},
    "chrt": set(),
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
    "valgrind": set(),
    "catchsegv": set(),
    "time": {"-f", "--format", "-o", "--output"},  # the keyword (`time -p`) and /usr/bin/time alike
    "taskset": set(),
    "numactl": {"-C", "-N", "-m", "-p", "-i"},
    "prlimit": {"-p", "--pid"},
    "unshare": {"-S", "-G", "--setuid", "--setgid"},
    "nsenter": {"-t", "--target", "-S", "-G"},
    "systemd-run": {"-p", "--property", "-u", "--unit", "-E", "--setenv"},
    "fakeroot": {"-l", "-s", "-i"},
    "chroot": set(),
    "doas": {"-u"},
    "su": {"-c"},
    "runuser": {"-c", "-u", "-g", "-G"},
    "script": {"-c", "--command", "-E", "--echo", "-T", "--log-timing"},
    "flock": {"-w", "-E"},
    "busybox": set(),  # multi-call binaries: `busybox sh -c ...` runs the applet `sh`
    "toybox": set(),
}
_POSITIONAL_BEFORE_COMMAND = {"timeout": 1, "taskset": 1, "chroot": 1, "flock": 1, "chrt": 1}
_SHELL_STRING_OPTIONS = {"su": {"-c"}, "runuser": {"-c"}, "script": {"-c", "--command"}}
"""Wrapper options whose value is a command line that a shell runs."""
_INTERPRETERS = {"perl", "ruby", "node", "nodejs", "awk", "gawk", "mawk", "nawk", "php", "lua", "tclsh", "Rscript"}
_SPAWNS = re.compile(r"\b(system|exec\w*|spawn\w*|popen\w*|Popen|qx|child_process|shell_exec|passthru)\b"
                     r"|`|\|\s*[\"']|[\"']\s*\|")
"""In an argument of one of `_INTERPRETERS`: a call that starts another program (awk's `print | "cmd"` and perl's
`open(F, "|cmd")` too). Only such arguments are searched for banned names, so that `perl -ne 'print if /pytest/'`
or `awk '/python/'` stay the text tools they are."""
_SEPARATORS = {";", "&", "&&", "||", "|", "|&", "\n", "(", ")", ";;", ";&", ";;&"}
_PIPES = {"|", "|&"}
_PROCESS_SUBSTITUTION = "<(...)"
"""The word a process substitution stands for in a simple command (its commands are scanned apart)."""
_REDIRECT = re.compile(r"[0-9]*(<<<|<<-|<<|<>|<&|>&|>>|>\||<|>)|&>>?")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\[[^]]*\])?\+?=")
_HEREDOC = re.compile(r"(?<!<)<<(?!<)-?\s*(['\"]?)([A-Za-z0-9_.-]+)\1")  # not the here-string `<<<`
_HEREDOC_WORD = "__swehero_heredoc_{}__"
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class RefusedCommand(ValueError):
    """A command line the scanner cannot clear; the message says why, for the agent to read."""

    programs: list[str] = []
    """What it would have run, as written (for the trajectory's `banned_commands`)."""


class UnparsableCommand(RefusedCommand):
    """The command line cannot be tokenised (e.g. an unbalanced quote); bash would reject it too."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"bash cannot parse it ({detail}).")


class ComputedCommand(RefusedCommand):
    """The program a command runs is only known when it runs (`$cmd`, `$(...)`, a script piped into a shell)."""

    def __init__(self, words: list[str]) -> None:
        self.programs = list(dict.fromkeys(words))
        super().__init__(
            f"the program it runs ({', '.join(f'`{w}`' for w in self.programs)}) is only known when the command "
            "runs, so it cannot be checked beforehand. Write the program's name literally; python, test runners "
            "and package managers are refused however they are reached.")


def banned_commands(command: str) -> list[str]:
    """Names of the banned programs `command` would run (empty if none), e.g. `['python3', 'pytest']`.

    Raises `UnparsableCommand` for lines bash could not parse either, and `ComputedCommand` for lines that run a
    program whose name is computed at run time and cannot be resolved here; callers refuse both.
    """
    scan = _Scan()
    scan.line(command, depth=0)
    if not scan.found and scan.computed:
        raise ComputedCommand(scan.computed)
    return scan.found


def why_banned(name: str) -> str | None:
    """What kind of banned program `name` (a basename) is, or None if allowed."""
    base = os.path.basename(name)
    if base.endswith(".py"):
        return "python script"
    for rx, what in _BANNED:
        if rx.match(base):
            return what
    return None


@dataclass
class _Simple:
    """A simple command: its words after quote removal, and where its standard input comes from."""

    words: list[str] = field(default_factory=list)
    stdin: str | None = None
    """The text of a heredoc or here-string it reads."""
    piped: bool = False
    """Its standard input is the previous command's output."""


class _Scan:
    """One command line's walk: banned programs found, computed command words met, variables assigned so far."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.computed: list[str] = []
        self.variables: dict[str, str | None] = {}
        """Plain assignments seen so far in the line (None: something computed, or two different values)."""

    def line(self, command: str, depth: int) -> None:
        if depth > 8:
            raise UnparsableCommand("commands nested more than 8 levels deep")
        command, bodies = _strip_heredocs(command)
        for body, quoted in bodies:
            if not quoted:
                for sub in _substitutions(body, in_double_quotes=True):
                    self.line(sub, depth + 1)
        for sub in _substitutions(command, in_double_quotes=False):
            self.line(sub, depth + 1)
        for simple in _simple_commands(command, [body for body, _ in bodies]):
            self.words(simple.words, simple, depth)

    def words(self, words: list[str], simple: _Simple, depth: int) -> None:
        """Walk past assignments, keywords and wrappers to the command word, then look at what it runs."""
        i = 0
        while i < len(words):
            word = words[i]
            assignment = _ASSIGNMENT.match(word)
            if assignment or word in _KEYWORDS or re.fullmatch(r"[0-9]+", word):
                if assignment and len(words) == 1:  # `P=grep` alone sets a variable for the next commands
                    self.assign(assignment.group(1), word[assignment.end():])
                i += 1
                continue
            if word in _SKIP_CONSTRUCTS or word.startswith("$((") or word.startswith("(("):
                return
            if word == "function":  # `function f { pytest; }` on one line: the body follows the name
                i += 2
                continue
            if word in _DECLARATIONS:
                for arg in words[i + 1:]:
                    if (m := _ASSIGNMENT.match(arg)) is not None:
                        self.assign(m.group(1), arg[m.end():])
                return
            word = self.resolve(word)
            if word is None:
                return
            name = os.path.basename(word) if "/" in word else word
            if why_banned(name) or (word.endswith(".py") and "/" in word):
                self.found.append(name)
            else:
                self.runs(name, words[i + 1:], simple, depth)
            return

    def runs(self, name: str, args: list[str], simple: _Simple, depth: int) -> None:
        """What an allowed program `name` would run with `args`: wrapped commands, shell scripts, exec arguments."""
        if name == "command" and any(a in {"-v", "-V"} for a in args[:2]):
            return  # `command -v python` only looks the program up
        if name in _WRAPPERS:
            self.words(_unwrap(name, args), simple, depth)
        elif name in _SHELLS:
            kind, value = _shell_input(args)
            if kind == "script":
                self.line(value, depth + 1)
            elif kind == "file" and value == _PROCESS_SUBSTITUTION:
                self.computed.append(f"{name} reading its commands from a process substitution")
            elif kind == "file":
                self.words([value], simple, depth)  # `bash script.py`
            elif simple.stdin is not None:  # `bash <<EOF`, `bash -s <<< "pytest"`
                self.line(simple.stdin, depth + 1)
            elif simple.piped:
                self.computed.append(f"{name} reading its commands from a pipe")
        elif name in {"source", "."} and args[:1] == [_PROCESS_SUBSTITUTION]:
            self.computed.append(f"{name} reading its commands from a process substitution")
        elif name == "eval":
            self.line(" ".join(args), depth + 1)
        elif name == "find":
            for i, a in enumerate(args):
                if a in {"-exec", "-execdir", "-ok", "-okdir"}:
                    end = next((j for j in range(i + 1, len(args)) if args[j] in {";", "+", "\\;"}), len(args))
                    self.words(args[i + 1 : end], simple, depth)
        elif name == "fd":
            for i, a in enumerate(args):
                if a in {"-x", "--exec", "-X", "--exec-batch"}:
                    self.words(args[i + 1 :], simple, depth)
        elif name == "git":
            self.git(args, simple, depth)
        elif name == "parallel" and args:
            self.line(" ".join(a for a in args if a not in {":::", "::::"}), depth + 1)
        elif name in _INTERPRETERS:
            for program in (a for a in args if _SPAWNS.search(a)):
                self.found += [w for w in re.findall(r"[A-Za-z0-9_./+-]+", program) if why_banned(w)]

    def git(self, args: list[str], simple: _Simple, depth: int) -> None:
        """`git bisect run CMD ARGS`, `git rebase --exec SCRIPT` and `git submodule foreach SCRIPT` run commands."""
        for i, a in enumerate(args):
            if args[i:i + 2] == ["bisect", "run"]:
                self.words(args[i + 2:], simple, depth)
            elif a in {"-x", "--exec"} and "rebase" in args[:i] and i + 1 < len(args):
                self.line(args[i + 1], depth + 1)
            elif a.startswith("--exec=") and "rebase" in args[:i]:
                self.line(a.removeprefix("--exec="), depth + 1)
            elif args[i:i + 2] == ["submodule", "foreach"]:
                self.line(" ".join(w for w in args[i + 2:] if w != "--recursive"), depth + 1)

    def assign(self, name: str, value: str) -> None:
        computed = "$" in value or "`" in value
        self.variables[name] = None if computed or self.variables.get(name, value) != value else value

    def resolve(self, word: str) -> str | None:
        """`word` with the variables assigned earlier in the line filled in; None (noted) if it stays computed."""
        if "$" not in word and "`" not in word:
            return word
        resolved = _VARIABLE.sub(lambda m: self.variables.get(m.group(1) or m.group(2)) or m.group(0), word)
        if "$" not in resolved and "`" not in resolved or why_banned(resolved.rsplit("/", 1)[-1]):
            return resolved  # `$HOME/.local/bin/pytest` is pytest whatever $HOME is
        self.computed.append("$(...)" if word == "$" or word.startswith("`") else word)
        return None


def _strip_heredocs(command: str) -> tuple[str, list[tuple[str, bool]]]:
    """Take heredoc bodies out of the line (data, not commands, unless a shell reads them): the n-th `<<DELIM`
    becomes `<< _HEREDOC_WORD.format(n)`. Returns the rest and the (body, delimiter was quoted) pairs."""
    lines = command.split("\n")
    kept: list[str] = []
    bodies: list[tuple[str, bool]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        matches = [m for m in _HEREDOC.finditer(line) if not _inside_quotes(line, m.start())]
        first = len(bodies)
        for m in matches:
            quoted, delim = m.group(1), m.group(2)
            body = []
            while i < len(lines) and lines[i].strip("\t") != delim:
                body.append(lines[i])
                i += 1
            i += 1  # the delimiter line
            bodies.append(("\n".join(body), bool(quoted)))
        for n, m in reversed(list(enumerate(matches, start=first))):
            line = f"{line[:m.start()]}<< {_HEREDOC_WORD.format(n)}{line[m.end():]}"
        kept.append(line)
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


def _simple_commands(command: str, heredocs: list[str]) -> list[_Simple]:
    """Split into simple commands at every separator and parenthesis, noting heredocs and here-strings read."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = [part for tok in lexer for part in _operators(tok)]
    except ValueError as e:
        raise UnparsableCommand(str(e)) from None
    commands = [_Simple()]
    redirect, i = "", 0
    while i < len(tokens):
        tok = tokens[i]
        if tok in {"<", ">"} and tokens[i + 1:i + 2] == ["("]:  # `<(cmd)`, `>(cmd)`: a file name made at run time
            i = _closing(tokens, i + 1)  # its commands are scanned as substitutions (`_substitutions`)
            if redirect == "<":  # `bash < <(cmd)` reads cmd's output, as from a pipe
                commands[-1].piped = True
            elif not redirect:
                commands[-1].words.append(_PROCESS_SUBSTITUTION)
            redirect = ""
        elif redirect:  # the redirection's target
            heredoc = re.fullmatch(_HEREDOC_WORD.format(r"(\d+)"), tok)
            if redirect in {"<<", "<<-"} and heredoc:
                commands[-1].stdin = heredocs[int(heredoc.group(1))]
            elif redirect == "<<<":
                commands[-1].stdin = tok
            redirect = ""
        elif tok in _SEPARATORS:
            commands.append(_Simple(piped=tok in _PIPES))
        elif (m := _REDIRECT.fullmatch(tok)) is not None:
            redirect = m.group(1) or tok
        else:
            commands[-1].words.append(tok)
        i += 1
    return [c for c in commands if c.words]


def _closing(tokens: list[str], opening: int) -> int:
    """Index of the `)` that closes the `(` at `opening` (the last token if none does)."""
    depth = 0
    for i in range(opening, len(tokens)):
        depth += {"(": 1, ")": -1}.get(tokens[i], 0)
        if depth == 0:
            return i
    return len(tokens) - 1


_OPERATOR = re.compile(r";;&|;;|;&|&&|\|\||\|&|&>>|&>|<<<|<<-|<<|<>|<&|>&|>>|>\||[;&|()<>\n]")


def _operators(token: str) -> list[str]:
    """shlex returns a run of punctuation as one token (`);`, `)|`, `&&(`): split it into bash's operators."""
    if not token or set(token) - set(";&|()<>\n") or token in {"((", "))"}:  # `((` starts arithmetic: skipped
        return [token]
    return _OPERATOR.findall(token)


def _unwrap(wrapper: str, args: list[str]) -> list[str]:
    takes_value = _WRAPPERS[wrapper]
    positional = _POSITIONAL_BEFORE_COMMAND.get(wrapper, 0)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return args[i + 1 :]
        if a.startswith("-") and len(a) > 1:
            if a in _SHELL_STRING_OPTIONS.get(wrapper, ()) and i + 1 < len(args):
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


def _shell_input(args: list[str]) -> tuple[str, str]:
    """What a shell with `args` runs: ("script", SCRIPT) for `-c SCRIPT`, ("file", NAME) for a script file,
    ("stdin", "") when it reads its commands from standard input (`-s`, or no operand)."""
    has_c = reads_stdin = False
    i = 0
    while i < len(args) and args[i].startswith(("-", "+")) and args[i] not in {"-", "--"}:
        a = args[i]
        if a in _SHELL_OPTION_VALUE:
            i += 2
            continue
        if a.startswith("-") and not a.startswith("--"):
            has_c = has_c or "c" in a[1:]
            reads_stdin = reads_stdin or "s" in a[1:]
        i += 1
    i += args[i:i + 1] in (["-"], ["--"])
    if has_c:  # the first operand is the script, even when options follow -c (`bash -c -e 'cmd'`)
        return "script", args[i] if i < len(args) else ""
    if reads_stdin or i >= len(args):
        return "stdin", ""
    return "file", args[i]


def simple_commands(command: str) -> list[list[str]]:
    """The simple commands of a command line, each as its words after quote removal (heredoc bodies left out), then
    those of its substitutions (`$(...)`, `<(...)`, backticks), which run too. Raises `UnparsableCommand` for lines
    bash could not parse either."""
    command, bodies = _strip_heredocs(command)
    found = [simple.words for simple in _simple_commands(command, [body for body, _ in bodies])]
    for sub in _substitutions(command, in_double_quotes=False):
        found += simple_commands(sub)
    return found
