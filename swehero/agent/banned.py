"""Find the commands a bash command line would run, and which of them SWE-Zero bans.

SWE-Zero is execution-free: the agent may navigate (grep, find, cat, git log) but must not run the project's code
(`python` in any form, test runners, type checkers, package managers). The agent writes arbitrary bash, so the check
has to see through pipelines, `&&`/`||`/`;`, subshells, `$(...)`/backticks, `bash -c '...'`, `eval`, wrappers
(`env`, `timeout`, `time -p`, `xargs`, `sudo`, `busybox`, the dynamic loader `ld.so`, ...), shell options (`bash -o
pipefail -c`), heredocs and here-strings fed to a shell, `find -exec`, `git bisect run`, `trap` actions, process
substitutions, one-line function bodies, inline programs of other interpreters that start programs (`perl -e
'system("pytest")'`), and absolute paths such as `/usr/bin/python3`. A command whose program is only known at run
time (`$cmd`, `${cmd}`, `$(...)` as the command word, a script piped into a shell) cannot be checked: it is refused
with that reason, unless its variable was assigned a plain word earlier in the same line. So is a glob as the
command word (the files decide what runs), an interpreter's one-liner that starts a program it was not given
literally (`awk '{system($0)}'`), and a program or shell script that xargs, find or parallel fill in from their
input (`xargs -I{} sh -c {}`). Brace expansion is applied (`{python3,-V}` runs python3). A program named by a path
(`bin/test`) may be a script whose `#!` line names python, or a shell script that runs python, and so may a file a
shell reads (`sh run.sh`, `source run.sh`): the scanner reports such paths (`Scanned.paths`, `Scanned.scripts`) to
the caller, who can read the files (`shebang_banned`, `shell_script`, then `scan` of the script's text).

Why our own shlex-based scanner and not `bashlex` (which `tools` uses only to split a command line as OpenHands
splits it, with bashlex as OpenHands does): bashlex raises on syntax it does not model (`case`, arithmetic, some
heredocs), which leaves a filter that must answer for every command line with nothing to say. Here `shlex` does
the quoting rules (word splitting, quote removal) and a small scanner adds what shlex lacks: command separators,
heredoc bodies (data, not commands, unless a shell reads them) and substitutions (which run even inside double
quotes). When in doubt it errs towards "banned": an unbalanced quote is reported as such.
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
    "xargs": {"-I", "-n", "-P", "-L", "-d", "-E", "-s", "-a", "--arg-file", "--delimiter", "--max-args",
              "--max-procs", "--max-chars", "--process-slot-var"},
    "exec": {"-a"},
    "command": set(),
    "builtin": set(),
    "stdbuf": {"-i", "-o", "-e"},
    "setsid": set(),
    "watch": {"-n", "--interval"},
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
    "flock": {"-w", "-E"},
    "parallel": {"-j", "--jobs", "-P", "-S", "--sshlogin", "-a", "--arg-file", "-d", "--delimiter", "-E", "-n",
                 "-N", "-L", "--max-args", "--max-lines", "-C", "--colsep", "--joblog", "--results", "--timeout",
                 "--tmpdir", "--workdir", "--wd", "--delay", "--halt", "--retries", "--tag-string"},
    "busybox": set(),  # multi-call binaries: `busybox sh -c ...` runs the applet `sh`
    "toybox": set(),
    "ld.so": {"--library-path", "--inhibit-rpath", "--audit", "--preload", "--argv0", "--glibc-hwcaps-prepend",
              "--glibc-hwcaps-mask"},  # the dynamic loader (`_LOADER`), which runs the program it is given
}
_LOADER = re.compile(r"ld(?:64|-[\w.-]+)?\.so(?:\.[0-9.]+)?\Z")
"""The dynamic loader's names (`ld.so`, `ld-linux-x86-64.so.2`, `ld-2.31.so`, `ld64.so.2`, `ld-musl-x86_64.so.1`):
all are the wrapper `ld.so`."""
_ATTACHED_VALUE = {"xargs": {"-i", "-e", "-l"}, "watch": {"-d"}}
"""Options that take a value only in their own word (GNU xargs' `-i{}`, `-e`, `-l`); alone they take none."""
_POSITIONAL_BEFORE_COMMAND = {"timeout": 1, "taskset": 1, "chroot": 1, "flock": 1, "chrt": 1}
_SHELL_STRING_OPTIONS = {"flock": {"-c", "--command"}}
"""Wrapper options whose value is a command line that a shell runs (`flock FILE -c CMD`)."""
_SHELL_WRAPPERS: dict[str, set[str]] = {
    "su": {"-c", "--command", "--session-command", "-s", "--shell", "-g", "--group", "-G", "--supp-group", "-w",
           "--whitelist-environment"},
    "runuser": {"-c", "--command", "--session-command", "-s", "--shell", "-g", "--group", "-G", "--supp-group",
                "-u", "--user", "-w", "--whitelist-environment"},
    "script": {"-c", "--command", "-E", "--echo", "-T", "--log-timing", "-B", "--log-io", "-I", "--log-in", "-O",
               "--log-out", "-m", "--logging-format", "--output-limit"},
}
"""Programs that start a shell (their options that take a value): it runs `-c CMD` wherever that stands (getopt
permutes: `su root -c CMD`), `-s SHELL` picks it (su, runuser), `runuser -u USER CMD` runs CMD itself; else the
shell reads its commands from standard input (`script`'s operand is its log file, `su`'s the user)."""
_INTERPRETERS = {"perl", "ruby", "node", "nodejs", "awk", "gawk", "mawk", "nawk", "php", "lua", "tclsh", "Rscript"}
_SPAWNS = re.compile(r"\b(system|exec\w*|spawn\w*|popen\w*|Popen|qx|child_process|shell_exec|passthru)\b"
                     r"|`|%x|\|\s*[\"']|[\"']\s*\|")
"""In an argument of one of `_INTERPRETERS`: a call that starts another program (awk's `print | "cmd"` and perl's
`open(F, "|cmd")` too). Only such arguments are searched for banned names, so that `perl -ne 'print if /pytest/'`
or `awk '/python/'` stay the text tools they are."""
_CALL = re.compile(r"\b(?:system\w*|exec\w*|spawn\w*|popen\w*|Popen|shell_exec|passthru|proc_open)(?=\s*[({\[]|\s+"
                   r"[\"'$@*])")
"""A call of one of `_INTERPRETERS` that starts a program, where it is followed by its arguments: `system("ls")`,
`exec "python", "x"`, `system $cmd` (so `print if /system/` mentions it and calls nothing)."""
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'')
_LITERAL = r"(?:\"_*\"|'_*')"
"""A string literal in a program whose strings are masked (`_masked`)."""
_LITERAL_ARGS = re.compile(rf"\s*(\(\s*\[?)?\s*({_LITERAL}(?:\s*,\s*{_LITERAL})*)\s*(?(1)\]?\s*\)|(?![\s.,+\[$@\"']))")
"""A call's arguments when they are string literals only, in parentheses (`("ls", "-l")`) or not (`"ls";`)."""
_INTERPOLATED = re.compile(r"#\{|@[\w{]")
"""Ruby's `#{...}` and perl's `@array` in a string literal: text the string only gets when the program runs."""
_GLOB = re.compile(r"[*?\[]")
_SUPPLIED = re.compile(r"__swehero_(\w+?)_supplies__")
"""Stands for what xargs, find or parallel put into the command they run (a word of their input, a file found)."""
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


class RefusedScript(RefusedCommand):
    """A shell script the command runs cannot be cleared: why, and what its own check refused (`programs`)."""

    def __init__(self, script: str, why: str, programs: list[str] | None = None) -> None:
        self.programs = programs or []
        super().__init__(f"it runs the shell script `{script}`, which cannot be checked: {why}")


class ComputedCommand(RefusedCommand):
    """The program a command runs is only known when it runs (`$cmd`, `$(...)`, a script piped into a shell)."""

    def __init__(self, words: list[str]) -> None:
        self.programs = list(dict.fromkeys(words))
        super().__init__(
            f"the program it runs ({', '.join(f'`{w}`' for w in self.programs)}) is only known when the command "
            "runs, so it cannot be checked beforehand. Write the program's name literally; python, test runners "
            "and package managers are refused however they are reached.")


@dataclass(frozen=True)
class Scanned:
    """What a command line would run, as far as it can be told before it runs."""

    banned: list[str]
    """Names of the banned programs it would run (empty if none), e.g. `['python3', 'pytest']`."""
    paths: list[str]
    """The programs it runs by a path (`bin/test`, `./run`, `/opt/tool`) that were not banned by their name,
    relative ones also joined with the folders a `cd` in the line may have moved to. What such a file runs depends
    on its `#!` line (`shebang_banned`): the caller, who can read files, looks (sympy's `bin/test` is
    `#!/usr/bin/env python`), and scans its text when a shell runs it (`shell_script`)."""
    scripts: list[str] = field(default_factory=list)
    """Files a shell reads its commands from (`sh run.sh`, `bash -x scripts/test`, `source env.sh`, `. ./env.sh`),
    whatever their `#!` line, relative ones joined as `paths` are: the caller scans their text."""


def scan(command: str) -> Scanned:
    """Scan `command` once for what it would run.

    Raises `UnparsableCommand` for lines bash could not parse either, and `ComputedCommand` for lines that run a
    program whose name is computed at run time and cannot be resolved here; callers refuse both.
    """
    walk = _Scan()
    walk.line(command, depth=0)
    if not walk.found and walk.computed:
        raise ComputedCommand(walk.computed)
    return Scanned(walk.found, _joined(walk.paths, walk.dirs), _joined(walk.scripts, walk.dirs))


def _joined(paths: list[str], dirs: list[str]) -> list[str]:
    """`paths`, relative ones also joined with each of `dirs`."""
    found = [p if p.startswith("/") else q for p in paths for q in [p, *(os.path.join(d, p) for d in dirs)]]
    return list(dict.fromkeys(found))


def banned_commands(command: str) -> list[str]:
    """Names of the banned programs `command` would run (`scan`'s `banned`; it raises as `scan` does)."""
    return scan(command).banned


def shebang_banned(head: bytes) -> list[str]:
    """The banned programs a file beginning with `head` runs when it is run as a program: the interpreter of its
    `#!` line, read as Linux reads it (the interpreter, then the rest of the line as one argument):
    `#!/usr/bin/python3 -u`, `#!/usr/bin/env python`, `#!/usr/bin/env -S python3 -u`."""
    if not head.startswith(b"#!"):
        return []
    line = head[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
    words = re.split(r"[ \t]+", line, maxsplit=1) if line else []
    scan = _Scan()
    try:
        scan.words(words, _Simple(), depth=0)
    except UnparsableCommand:  # `env -S` with an open quote: env refuses to run it
        return []
    return scan.found


def shell_script(head: bytes) -> bool:
    """Whether a file beginning with `head`, run by its path, is read by a shell: its `#!` line names one
    (`#!/bin/sh -e`, `#!/usr/bin/env bash`), or it has none and is no binary (the kernel refuses such a file and the
    shell that asked runs it itself; bash takes a NUL in its first line, of its first 80 bytes, for a binary)."""
    if not head.startswith(b"#!"):
        return not is_binary(head)
    words = re.split(r"[ \t]+", head[2:].split(b"\n", 1)[0].decode(errors="replace").strip(), maxsplit=1)
    try:
        words = _unwrap("env", words[1:]) if os.path.basename(words[0]) == "env" else words
    except UnparsableCommand:  # `env -S` with an open quote: env refuses to run it
        return False
    return bool(words) and os.path.basename(words[0]) in _SHELLS


def is_binary(head: bytes) -> bool:
    """Whether bash refuses to run a file beginning with `head` as a script (`cannot execute binary file`)."""
    return b"\0" in head[:80].split(b"\n", 1)[0]


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
    stdin_file: str | None = None
    """The file it reads (`< FILE`)."""
    piped: bool = False
    """Its standard input is the previous command's output."""
    pattern: bool = False
    """A `case` pattern (`*.py)`, `a|b)`): the words before a `)` that no `(` opened, which bash does not run."""


class _Scan:
    """One command line's walk: banned programs found, computed command words met, variables assigned so far."""

    def __init__(self) -> None:
        self.found: list[str] = []
        self.computed: list[str] = []
        self.variables: dict[str, str | None] = {}
        """Plain assignments seen so far in the line (None: something computed, or two different values)."""
        self.paths: list[str] = []
        """Programs named by a path (`bin/test`) that were not banned by their name."""
        self.scripts: list[str] = []
        """Files a shell reads its commands from (`sh run.sh`, `source env.sh`)."""
        self.dirs: list[str] = []
        """Where `cd DIR` in the line may have moved the shell (DIR as written, joined with earlier ones)."""

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
            before = len(self.found)
            self.words(simple.words, simple, depth)
            # shlex removed the quotes that tell bash which braces to expand: both readings are checked
            expanded = [w for word in simple.words for w in _braces(word)]
            if expanded != simple.words:
                self.words(expanded, simple, depth)
                self.found[before:] = dict.fromkeys(self.found[before:])  # a name both readings found, once

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
            elif (supplied := _SUPPLIED.search(word)) is not None:
                self.computed.append(f"what {supplied.group(1)} supplies")
            elif _GLOB.search(word):  # the files the glob matches decide what runs
                self.computed.append(word)
            else:
                if "/" in word and not word.startswith("~"):
                    self.paths.append(word)
                self.runs(name, words[i + 1:], simple, depth)
            return

    def runs(self, name: str, args: list[str], simple: _Simple, depth: int) -> None:
        """What an allowed program `name` would run with `args`: wrapped commands, shell scripts, exec arguments."""
        if name == "command" and any(a in {"-v", "-V"} for a in args[:2]):
            return  # `command -v python` only looks the program up
        if _LOADER.match(name):
            name = "ld.so"
        if name in {"cd", "pushd"}:
            self.cd(args)
        elif name == "xargs":
            self.xargs(args, simple, depth)
        elif name == "parallel":
            self.parallel(args, depth)
        elif name == "watch":  # it runs its arguments, joined, with `sh -c`
            self.line(" ".join(_unwrap(name, args)), depth + 1)
        elif name in _SHELL_WRAPPERS:
            self.words(_shell_wrapper(name, args), simple, depth)
        elif name in _WRAPPERS:
            self.words(_unwrap(name, args), simple, depth)
        elif name in _SHELLS:
            kind, value = _shell_input(args)
            if kind == "noexec":  # `bash -n run.sh` only reads it
                return
            if kind == "script":
                self.line(value, depth + 1)
            elif kind == "file" and value == _PROCESS_SUBSTITUTION:
                self.computed.append(f"{name} reading its commands from a process substitution")
            elif kind == "file" and not (_GLOB.search(value) or _SUPPLIED.search(value)):  # a script, whichever
                self.words([value], simple, depth)  # `bash script.py`
                self.script(value)
            elif simple.stdin is not None:  # `bash <<EOF`, `bash -s <<< "pytest"`
                self.line(simple.stdin, depth + 1)
            elif simple.stdin_file is not None:  # `bash < run.sh`
                self.script(simple.stdin_file)
            elif simple.piped:
                self.computed.append(f"{name} reading its commands from a pipe")
        elif name in {"source", "."} and args[:1] == [_PROCESS_SUBSTITUTION]:
            self.computed.append(f"{name} reading its commands from a process substitution")
        elif name in {"source", "."} and args:
            self.script(args[1] if args[0] == "--" and len(args) > 1 else args[0])
        elif name == "eval":
            self.line(" ".join(args), depth + 1)
        elif name == "trap":  # `trap [--] ACTION SIGNAL...`: the shell runs ACTION, a command line, on the signal
            action = args[1:] if args[:1] == ["--"] else args
            if len(action) > 1:
                self.line(action[0], depth + 1)
        elif name == "find":  # `{}` is the file found, wherever it stands
            for i, a in enumerate(args):
                if a in {"-exec", "-execdir", "-ok", "-okdir"}:
                    end = next((j for j in range(i + 1, len(args)) if args[j] in {";", "+", "\\;"}), len(args))
                    self.words([w.replace("{}", _supplies("find")) for w in args[i + 1 : end]], simple, depth)
        elif name == "fd":
            for i, a in enumerate(args):
                if a in {"-x", "--exec", "-X", "--exec-batch"}:
                    found = _supplies("fd")
                    self.words([re.sub(r"\{/?/?\.?\}", found, w) for w in args[i + 1 :]], simple, depth)
        elif name == "git":
            self.git(args, simple, depth)
        elif name in _INTERPRETERS:
            for arg in args:
                before = len(self.found)
                for text, call in _spawned(arg, awk=name.endswith("awk")):
                    self.spawned(text, call, depth)
                if _SPAWNS.search(arg):
                    found = self.found[before:]
                    self.found += [w for w in re.findall(r"[A-Za-z0-9_./+-]+", arg) if why_banned(w) and w not in found]

    def spawned(self, text: str | None, call: str, depth: int) -> None:
        """A command line an interpreter's `call` hands to a shell (or, as a list, runs): `text`, None when the
        program builds it when it runs."""
        if text is None or _INTERPOLATED.search(text):
            self.computed.append(text if text is not None and "\n" not in text else call)
            return
        try:
            self.line(text, depth + 1)
        except UnparsableCommand:
            self.computed.append(call)

    def cd(self, args: list[str]) -> None:
        """Note where `cd DIR` may move the shell, so that `cd pkg && ../bin/test` finds `bin/test`."""
        target = next((a for a in args if not a.startswith("-")), None)
        if target is None or "$" in target or "`" in target or target.startswith("~"):
            return  # the home folder or a computed one: not followed
        self.dirs += [os.path.normpath(os.path.join(d, target)) for d in ["", *self.dirs]]

    def xargs(self, args: list[str], simple: _Simple, depth: int) -> None:
        """xargs runs its command (echo when none) with the words it reads appended, or put in place of its
        replace string (`-I R`, `-iR`, `-i`, `--replace[=R]`) wherever that stands."""
        command = _unwrap("xargs", args)
        if not command:
            return
        replace, options, i = None, args[: len(args) - len(command)], 0
        while i < len(options) and options[i] != "--":
            pairs, used = _options(options[i], options[i + 1] if i + 1 < len(options) else None, _WRAPPERS["xargs"],
                                   _ATTACHED_VALUE["xargs"])
            for option, value in pairs:
                if option in {"-I", "-i", "--replace"}:
                    replace = value or "{}"
            i += used
        supplied = _supplies("xargs")
        if replace:
            self.words([w.replace(replace, supplied) for w in command], simple, depth)
        else:
            self.words(command + [supplied], simple, depth)

    def parallel(self, args: list[str], depth: int) -> None:
        """GNU parallel runs its command line with a shell once per input (the words after `:::`, or read from
        `::::` files or standard input), which replaces `{}` (`{.}`, `{/}`, ...) or is appended; without a command
        the inputs are the command lines."""
        sources = next((i for i, a in enumerate(args) if a.startswith(":::")), len(args))
        command = _unwrap("parallel", args[:sources])
        supplied = _supplies("parallel")
        if command:
            line = " ".join(command)
            replaced = re.sub(r"\{[0-9]*[./#%]*\}", supplied, line)
            self.line(replaced if replaced != line else f"{line} {supplied}", depth + 1)
        elif args[sources:sources + 1] == [":::"] and not any(a.startswith("::::") for a in args[sources:]):
            for line in args[sources + 1:]:
                self.line(line, depth + 1)
        else:
            self.computed.append("what parallel supplies")

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

    def script(self, word: str) -> None:
        """Note a file a shell reads its commands from, for the caller to scan. One named by a variable the line
        did not set is not known here (and is not read)."""
        word = self.filled(word)
        if "$" not in word and "`" not in word and not word.startswith("~"):
            self.scripts.append(word)

    def assign(self, name: str, value: str) -> None:
        computed = "$" in value or "`" in value
        self.variables[name] = None if computed or self.variables.get(name, value) != value else value

    def resolve(self, word: str) -> str | None:
        """`word` with the variables assigned earlier in the line filled in; None (noted) if it stays computed."""
        if "$" not in word and "`" not in word:
            return word
        resolved = self.filled(word)
        if "$" not in resolved and "`" not in resolved or why_banned(resolved.rsplit("/", 1)[-1]):
            return resolved  # `$HOME/.local/bin/pytest` is pytest whatever $HOME is
        self.computed.append("$(...)" if word == "$" or word.startswith("`") else word)
        return None

    def filled(self, word: str) -> str:
        """`word` with the variables assigned a plain word earlier in the line filled in."""
        return _VARIABLE.sub(lambda m: self.variables.get(m.group(1) or m.group(2)) or m.group(0), word)


def _strip_heredocs(command: str) -> tuple[str, list[tuple[str, bool]]]:
    """Take heredoc bodies out of the line (data, not commands, unless a shell reads them): the n-th `<<DELIM`
    becomes `<< _HEREDOC_WORD.format(n)`; and comments (`_uncommented`). Returns the rest and the (body, delimiter
    was quoted) pairs."""
    lines = command.split("\n")
    kept: list[str] = []
    bodies: list[tuple[str, bool]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        code = _uncommented(line)  # `# usage: cmd <<EOF` starts no heredoc (a comment is the line's end)
        matches = [m for m in _HEREDOC.finditer(code) if not _inside_quotes(code, m.start())]
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
    return _uncommented("\n".join(kept)), bodies


def _uncommented(text: str) -> str:
    """`text` without its comments. bash starts one with a `#` that begins a word outside quotes (`a#b`, `$#` and
    `${#x}` are none), and ends it at the end of the line, whose newline still ends the command. (shlex's comments
    start at any `#` and take the newline with them: `echo $#; pytest`, `echo a # c<newline>pytest` hid pytest.)"""
    # `boundary`: the last character ends a word (an unescaped blank or operator): in `a\ #b` the blank is escaped,
    # and the `#` starts no comment. In `$'...'` a backslash escapes the quote too (`$'a\' #'` is one string).
    out, start, i, quote, boundary = [], 0, 0, "", True
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "'":
            i, boundary = i + 2, False
            continue
        if quote:
            quote = "" if c == quote[-1] else quote
        elif text.startswith("$'", i):
            i, quote, boundary = i + 2, "$'", False
            continue
        elif c in "'\"":
            quote = c
        elif c == "#" and boundary:
            out.append(text[start:i])
            start = i = len(text) if (end := text.find("\n", i)) < 0 else end
            continue
        boundary = not quote and c in " \t\n;&|()<>"
        i += 1
    return "".join(out) + text[start:]


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
    """Split into simple commands at every separator and parenthesis, noting the heredocs, here-strings and files
    read."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>\n")
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""  # taken out before (`_uncommented`)
    try:
        tokens = [part for tok in lexer for part in _operators(tok)]
    except ValueError as e:
        raise UnparsableCommand(str(e)) from None
    commands = [_Simple()]
    redirect, i, parens = "", 0, 0
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
            elif redirect == "<":
                commands[-1].stdin_file = tok
            redirect = ""
        elif tok in _SEPARATORS:
            parens += {"(": 1, ")": -1}.get(tok, 0)
            if parens < 0:  # only a case pattern ends so (anything else bash rejects)
                parens = 0
                for pattern in reversed(commands):
                    pattern.pattern = True
                    if not pattern.piped:
                        break
            commands.append(_Simple(piped=tok in _PIPES))
        elif (m := _REDIRECT.fullmatch(tok)) is not None:
            redirect = m.group(1) or tok
        else:
            commands[-1].words.append(tok)
        i += 1
    return [c for c in commands if c.words and not c.pattern]


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
    """The command `wrapper` runs with `args` (empty if none)."""
    shell_string = _SHELL_STRING_OPTIONS.get(wrapper, set())
    takes_value = _WRAPPERS[wrapper] | shell_string
    positional = _POSITIONAL_BEFORE_COMMAND.get(wrapper, 0)
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return args[i + 1 :]
        if a.startswith("-") and len(a) > 1:
            options, used = _options(a, args[i + 1] if i + 1 < len(args) else None, takes_value,
                                     _ATTACHED_VALUE.get(wrapper, set()))
            for option, value in options:
                if option in shell_string and value is not None:
                    return ["bash", "-c", value]
                if wrapper == "env" and option in {"-S", "--split-string"} and value is not None:
                    return _split(value) + args[i + used :]
            i += used
        elif wrapper == "env" and ("=" in a or a == "-"):  # `env -` is `env -i`
            i += 1
        elif positional:
            positional -= 1
            i += 1
        else:
            return args[i:]
    return []


def _options(word: str, following: str | None, takes_value: set[str],
             attached: set[str] = set()) -> tuple[list[tuple[str, str | None]], int]:
    """getopt's reading of the option word `word` (`following` is the word after it): `--opt=V`, `--opt V`, or a
    cluster of short options (`-qc CMD`, `-Eu root`, `-n1`) where one taking a value takes the rest of the word, or
    else the next word (one in `attached` only the rest of the word). The (option, value) pairs, and how many words
    they use."""
    if word.startswith("--"):
        name, eq, value = word.partition("=")
        if eq or name not in takes_value:
            return [(name, value if eq else None)], 1
        return [(name, following)], 2
    found: list[tuple[str, str | None]] = []
    for j in range(1, len(word)):
        option, rest = "-" + word[j], word[j + 1 :]
        if option in takes_value:
            return [*found, (option, rest or following)], 1 if rest else 2
        if option in attached:
            return [*found, (option, rest)], 1
        found.append((option, None))
    return found, 1


def _shell_wrapper(wrapper: str, args: list[str]) -> list[str]:
    """The command one of `_SHELL_WRAPPERS` runs with `args`."""
    shell, script, user, operands, i = "bash", None, False, [], 0
    while i < len(args):
        a = args[i]
        if a == "--":
            operands += args[i + 1 :]
            break
        if a.startswith("-") and len(a) > 1:
            options, used = _options(a, args[i + 1] if i + 1 < len(args) else None, _SHELL_WRAPPERS[wrapper])
            for option, value in options:
                if option in {"-c", "--command", "--session-command"} and value is not None:
                    script = value
                elif option in {"-s", "--shell"} and wrapper != "script" and value:
                    shell = value
                user = user or option in {"-u", "--user"}
            i += used
        else:
            operands.append(a)
            i += 1
    if script is not None:
        return [shell, "-c", script]
    if user:  # `runuser -u USER CMD ARGS`
        return operands
    return [shell, *operands[1:]] if wrapper != "script" else [shell]  # `su USER ARGS`: ARGS are the shell's


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UnparsableCommand(str(e)) from None


def _supplies(tool: str) -> str:
    """The word standing for what `tool` puts into the command it runs (`_SUPPLIED`)."""
    return f"__swehero_{tool}_supplies__"


def _braces(word: str, limit: int = 1000) -> list[str]:
    """Bash's brace expansion of `word`: `{python3,-V}` is `python3 -V`, `py{thon3,}` is `python3 py`, `{p..q}` is
    `p q` (a sequence of letters or numbers); `${...}` is a parameter, not a brace. Only its first `limit` words:
    the command word and its wrapper's arguments come first."""
    start = 0
    while (opening := word.find("{", start)) >= 0:
        depth, commas, close = 0, [], -1
        for k in range(opening, len(word)):
            depth += {"{": 1, "}": -1}.get(word[k], 0)
            if word[k] == "," and depth == 1:
                commas.append(k)
            if depth == 0:
                close = k
                break
        if close < 0:
            break
        start = close + 1 if word[opening - 1 : opening] == "$" else opening + 1
        body = word[opening + 1 : close]
        sequence = re.fullmatch(r"(-?\d+|[A-Za-z])\.\.(-?\d+|[A-Za-z])(?:\.\.(-?\d+))?", body)
        if word[opening - 1 : opening] == "$" or not (commas or sequence):
            continue
        if commas:
            cuts = [opening, *commas, close]
            alternatives = [word[a + 1 : b] for a, b in zip(cuts, cuts[1:])]
        else:
            alternatives = _sequence(*sequence.groups(), limit)
            if alternatives is None:
                continue
        expanded: list[str] = []
        for alt in alternatives:
            if len(expanded) >= limit:
                break
            expanded += _braces(word[:opening] + alt + word[close + 1 :], limit - len(expanded))
        return expanded
    return [word]


def _sequence(first: str, last: str, step: str | None, limit: int) -> list[str] | None:
    """The first `limit` words of `{first..last..step}`; None when bash leaves it as it is (a letter and a number)."""
    numbers = first.lstrip("-").isdigit()
    if numbers != last.lstrip("-").isdigit():
        return None
    a, b = (int(first), int(last)) if numbers else (ord(first), ord(last))
    n = abs(int(step or 1)) or 1
    values = range(a, b + 1, n) if a <= b else range(a, b - 1, -n)
    return [str(v) if numbers else chr(v) for v in values[:limit]]


def _masked(program: str) -> str:
    """`program` with the text of its string literals replaced by `_` (same length), so that what they hold is not
    read as code."""
    return _STRING.sub(lambda m: m.group()[0] + "_" * (len(m.group()) - 2) + m.group()[-1], program)


def _spawned(program: str, awk: bool) -> list[tuple[str | None, str]]:
    """The command lines an interpreter's `program` starts, as (text, the call): `system("ls")`, `exec "a", "b"`
    (the words of a list), perl's `open(F, "-|", "cmd")`, backticks and `qx(...)`/`%x(...)`, awk's `print | "cmd"`
    and `"cmd" | getline`; a variable set once to a string literal (`cmd="ls"; system(cmd)`) stands for it. The
    text is None where the program computes it (`system($0)`, `exec @ARGV`, `print | $0`)."""
    masked, found = _masked(program), []

    def literals(start: int, end: int) -> str:
        words = [program[start + m.start() + 1 : start + m.end() - 1] for m in re.finditer(_LITERAL, masked[start:end])]
        return words[0] if len(words) == 1 else shlex.join(words)

    def assigned(name: str) -> str | None:
        """The string literal `name` is set to, if it is set once, to one literal."""
        sets = list(re.finditer(rf"(?<![\w$]){re.escape(name)}\s*=(?![=~])\s*", masked))
        value = re.match(rf"{_LITERAL}(?=\s*(?:[;}}\n]|$))", masked[sets[0].end():]) if len(sets) == 1 else None
        return literals(sets[0].end(), sets[0].end() + value.end()) if value else None

    def arguments(at: int) -> str | None:
        """The command line that the arguments starting at `at` give, if they are literal."""
        if (args := _LITERAL_ARGS.match(masked, at)) is not None:
            return literals(*args.span(2))
        variable = re.compile(r"\s*(\()?\s*(\$?[A-Za-z_]\w*)\s*(?(1)\)|(?=[;}\n)]|$))").match(masked, at)
        return assigned(variable.group(2)) if variable else None

    def statement(at: int) -> str:
        return re.split(r"[;}\n]", program[at:])[0].strip()

    for call in _CALL.finditer(masked):
        found.append((arguments(call.end()), statement(call.start())))
    for m in re.finditer(rf"\bopen\b\s*\(?[^,;]*,\s*({_LITERAL})\s*,", masked):  # perl's `open(F, "-|", CMD...)`
        if program[m.start(1) + 1 : m.end(1) - 1].strip() in {"-|", "|-"}:
            found.append((arguments(m.end()), statement(m.start())))
    for m in re.finditer(r"`([^`]*)`?|(?:\bqx|%x)\s*([^\w\s])", masked):
        if m.group(1) is not None:
            found.append((program[m.start(1) : m.end(1)], m.group()))
        else:
            closing = {"(": ")", "{": "}", "[": "]", "<": ">"}.get(m.group(2), m.group(2))
            end = masked.find(closing, m.end())
            end = len(program) if end < 0 else end
            found.append((program[m.end() : end], program[m.start() : end + 1]))
    if awk:
        for m in re.finditer(r"\b(?:print|printf)\b[^;{}\n|]*\|&?(?!\|)\s*", masked):
            found.append((arguments(m.end()), statement(m.start())))
        for pipe in re.finditer(r"\|&?\s*getline\b", masked):  # what stands before the pipe is the command
            m = re.search(rf"(?:({_LITERAL})|(?<![\w$])([A-Za-z_]\w*)|([^\s({{;]+))\s*$", masked[: pipe.start()])
            call = program[m.start() if m else pipe.start() : pipe.end()]
            if m and m.group(1):
                found.append((program[m.start(1) + 1 : m.end(1) - 1], call))
            else:  # a variable, alone before the pipe (`(cmd | getline)`), or an expression
                alone = m and m.group(2) and re.search(r"(?:^|[({;\n])\s*$", masked[: m.start()])
                found.append((assigned(m.group(2)) if alone else None, call))
    return found


def _shell_input(args: list[str]) -> tuple[str, str]:
    """What a shell with `args` runs: ("script", SCRIPT) for `-c SCRIPT`, ("file", NAME) for a script file,
    ("stdin", "") when it reads its commands from standard input (`-s`, or no operand), ("noexec", "") when it only
    reads them (`-n`, `-o noexec`)."""
    has_c = reads_stdin = noexec = False
    i = 0
    while i < len(args) and args[i].startswith(("-", "+")) and args[i] not in {"-", "--"}:
        a = args[i]
        if a in _SHELL_OPTION_VALUE:
            noexec = noexec or a == "-o" and args[i + 1 : i + 2] == ["noexec"]
            i += 2
            continue
        if a.startswith("-") and not a.startswith("--"):
            has_c = has_c or "c" in a[1:]
            reads_stdin = reads_stdin or "s" in a[1:]
            noexec = noexec or "n" in a[1:]
        i += 1
    i += args[i:i + 1] in (["-"], ["--"])
    if noexec:
        return "noexec", ""
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
