"""The SWE-Zero banned-command scanner on tricky command lines, both ways."""

from __future__ import annotations

import pytest
from agent_repos import CALC, CALC_FIX, make_task

from swehero.agent.banned import (ComputedCommand, Scanned, UnparsableCommand, banned_commands, scan,
                                  shebang_banned, shell_script)
from swehero.agent.local import LocalRuntime
from swehero.agent.runtime import RuntimeConfig
from swehero.agent.tools import Tools

BANNED = [
    ("python setup.py test", "python"),
    ("python3 -c 'print(1)'", "python3"),
    ("python3.11 -m pytest tests", "python3.11"),
    ("/usr/bin/python3 x.py", "python3"),
    ("/opt/conda/envs/testbed/bin/python -V", "python"),
    ("pytest -x tests/test_a.py", "pytest"),
    ("py.test tests", "py.test"),
    ("mypy src", "mypy"),
    ("pip install -e .", "pip"),
    ("pip3 list", "pip3"),
    ("apt-get install -y vim", "apt-get"),
    ("apt update", "apt"),
    ("cd src && python -m unittest", "python"),
    ("ls; pytest", "pytest"),
    ("grep -rn foo . || python x.py", "python"),
    ("cat a.txt | python -c 'import sys'", "python"),
    ("git diff |& python3 filter.py", "python3"),
    ("(cd tests && pytest)", "pytest"),
    ("{ pytest; }", "pytest"),
    ("echo $(python -c 'print(1)')", "python"),
    ('echo "$(python -c \'print(1)\')"', "python"),
    ("echo `python --version`", "python"),
    ("diff <(python a.py) b.txt", "python"),
    ("bash -c 'python x.py'", "python"),
    ("sh -c \"cd /x && pytest -q\"", "pytest"),
    ("bash -lc 'mypy .'", "mypy"),
    ("env python x.py", "python"),
    ("env -i PATH=/usr/bin FOO=1 python3 x.py", "python3"),
    ("PYTHONPATH=. python -m pytest", "python"),
    ("timeout 10 pytest", "pytest"),
    ("timeout -s KILL 5 python x.py", "python"),
    ("nohup python server.py &", "python"),
    ("sudo -u root pip install x", "pip"),
    ("ls *.py | xargs python", "python"),
    ("ls | xargs -I {} python3 {}", "python3"),
    ("find . -name '*.py' -exec python {} \\;", "python"),
    ("eval 'python x.py'", "python"),
    ("./setup.py build", "setup.py"),
    ("for f in a b; do python $f; done", "python"),
    ("if true; then pytest; fi", "pytest"),
    ("while true; do mypy .; done", "mypy"),
    ("echo hi\npython x.py", "python"),
    ("cat <<EOF > a.txt\nhello\nEOF\npython a.txt", "python"),
    ("cat <<EOF\n$(python -c 1)\nEOF", "python"),
    ("bash -c \"echo \\$(pytest)\"", "pytest"),
    ("exec python", "python"),
    ("command python3 x.py", "python3"),
    ("ipython", "ipython"),
    ("uv run pytest", "uv"),
    ("poetry run pytest", "poetry"),
    ("conda install numpy", "conda"),
    ("time python x.py", "python"),
    ("! pytest", "pytest"),
    ("nice -n 10 python x.py", "python"),
    ("su -c 'pip install x'", "pip"),
    ("env -S 'python3 -u' x.py", "python3"),
    ("time -p python x.py", "python"),
    ("time -p -- pytest -x", "pytest"),
    ('bash -o pipefail -c "python x"', "python"),
    ("bash -e -o nounset -c 'pytest -q'", "pytest"),
    ("bash --norc -xc 'mypy .'", "mypy"),
    ("sh -c -e 'pytest'", "pytest"),
    ("busybox sh -c python", "python"),
    ("toybox env python3 x.py", "python3"),
    ("bash <<EOF\ncd src\npython x.py\nEOF", "python"),
    ("sh <<-'EOF'\n\tpytest -q\nEOF", "pytest"),
    ('bash -s <<< "pytest"', "pytest"),
    ("bash <<< 'python -V'", "python"),
    ("coverage run -m pytest", "coverage"),
    ("coverage3 report", "coverage3"),
    ("cd tests && behave", "behave"),
    ("django-admin test", "django-admin"),
    ("py -3 x.py", "py"),
    ("uv run python -m pytest", "uv"),
    ("P=python; $P x.py", "python"),
    ("export RUNNER=pytest; $RUNNER -q", "pytest"),
    ("$HOME/.local/bin/pytest -q", "pytest"),
    ("script -qc 'pytest' /dev/null", "pytest"),
    ("runuser -u nobody -- python3 x.py", "python3"),
    ("chrt 10 python x.py", "python"),
    ("perl -e 'exec \"python\", \"x.py\"'", "python"),
    ("perl -e 'system(\"pytest -x\")'", "pytest"),
    ("ruby -e 'system(\"python3 -V\")'", "python3"),
    ("node -e 'require(\"child_process\").execSync(\"pytest\")'", "pytest"),
    ("awk 'BEGIN { system(\"pytest -q\") }'", "pytest"),
    ("awk '{ print | \"python3\" }' cmds.txt", "python3"),
    ("(( n > 1 )) && pytest", "pytest"),
    ("x=$(which ls); pytest", "pytest"),
    # Python's own programs import or run the file they are given (`pydoc3 evil` executes evil.py)
    ("cd /workspace/repo && pydoc3 evil | head -3", "pydoc3"),
    ("pydoc3.11 pkg.module", "pydoc3.11"),
    ("printf 'c\\nq\\n' | pdb3 evil.py | head -3", "pdb3"),
    ("pdb3.11 -c continue evil.py < /dev/null", "pdb3.11"),
    ("/usr/bin/pdb3 evil.py", "pdb3"),
    ("timeout 5 pdb -c continue evil.py", "pdb"),
    ("py3compile evil.py", "py3compile"),
    ("env py3clean .", "py3clean"),
    ("pygettext3 -o /dev/null evil.py", "pygettext3"),
    ("xargs pygettext3.11 < files.txt", "pygettext3.11"),
    ("2to3 -w evil.py", "2to3"),
    ("/usr/bin/2to3-3.11 evil.py", "2to3-3.11"),
    ("bash -c 'idle3 evil.py'", "idle3"),
    ("idle-python3.11 -r evil.py", "idle-python3.11"),
    ("function t { python -m pytest; }; t", "python"),  # a one-line function's body
    ("git bisect run pytest -x", "pytest"),
    ("git -C /testbed bisect run python3 check.py", "python3"),
    ("git rebase -x 'python -m pytest' HEAD~3", "python"),
    ("git rebase --exec=tox HEAD~1", "tox"),
    ("git submodule foreach --recursive 'pip install .'", "pip"),
    ("diff <(python3 old.py) expected.txt", "python3"),
    # brace expansion makes the command word (`{python3,-c,x}` is `python3 -c x`), also through a wrapper
    ("{python3,-c,'print(6*7)'}", "python3"),
    ("{python3,-c,'print(6 * 7)'}", "python3"),
    ("py{thon3,} -V", "python3"),
    ("{p..p}ython3 -V", "python3"),
    ("env {python3,-V}", "python3"),
    ("xargs {-I,X,sh,-c,'python3 X'} < files.txt", "python3"),
    # combined short options: the shell-string option last in a cluster (`-qc CMD`), a value-taking one too
    ("script -qc 'python3 -V' /dev/null", "python3"),
    ("script -qcpytest /dev/null", "pytest"),
    ("su -lc 'python3 -V'", "python3"),
    ("runuser -lc 'python3 -V'", "python3"),
    ("su - root -c 'pytest -q'", "pytest"),  # getopt permutes: `-c` after the user is su's too
    ("su -s /usr/bin/python3 root", "python3"),  # the login shell picked by `-s`
    ("script -q /dev/null <<< 'python3 -V'", "python3"),  # no -c: a shell reading standard input
    ("sudo -Eu root python3 x.py", "python3"),
    ("xargs -rn 1 python3 < files.txt", "python3"),
    ("xargs -i python3 {} < files.txt", "python3"),  # GNU's -i takes only an attached replace string
    ("env - python3 -V", "python3"),
    ("env -iS 'python3 -u' x.py", "python3"),
    ("flock /tmp/lock -c 'pytest -q'", "pytest"),
    ("watch -n 5 'pytest -q'", "pytest"),  # watch runs its arguments through `sh -c`
    ("parallel -j4 python3 ::: a.py b.py", "python3"),
    ("parallel ::: 'pytest -q' 'ls'", "pytest"),
    ("awk 'BEGIN { \"pytest -q\" | getline x }'", "pytest"),
    ("perl -e 'print `pytest -q`'", "pytest"),
    ("ruby -e 'puts %x(python3 -V)'", "python3"),
    ("/lib64/ld-linux-x86-64.so.2 /usr/bin/python3 -V", "python3"),  # the dynamic loader runs what it is given
    ("ld.so --library-path /usr/lib --argv0 py pytest -q", "pytest"),
    ("/lib/x86_64-linux-gnu/ld-2.31.so python3 x.py", "python3"),
    ("trap 'python3 -V' EXIT", "python3"),  # the action is a command line the shell runs on the signal
    ("trap -- 'pytest -q' INT TERM", "pytest"),
    ("echo $#; python3 -V", "python3"),  # `#` inside a word starts no comment
    ("echo a#b && pytest", "pytest"),
    ("echo ${#x}; pip list", "pip"),
    ('bash -c "echo a # note\npython3 -V"', "python3"),  # a comment ends at its newline, which ends the command
    ('bash -c "ls # usage: x <<EOF\npython3 -V"', "python3"),  # a comment's `<<EOF` starts no heredoc
    ("echo a\\ #b; pytest", "pytest"),  # after an escaped blank `#` is inside the word: bash runs pytest
]

COMPUTED = [
    ("$(which python) -V", "$(...)"),
    ("`which grep` -rn x .", "$(...)"),
    ("${PY} x.py", "${PY}"),
    ("$RUNNER -q", "$RUNNER"),
    ('"$TOOL" --version', "$TOOL"),
    ("${PYTHON:-python3} x.py", "${PYTHON:-python3}"),
    ("P=$(which pytest); $P", "$P"),
    ("P=grep; P=sed; $P x", "$P"),
    ("ls | xargs $CMD", "$CMD"),
    ("eval \"$CMD\"", "$CMD"),
    ("bash -c \"$SCRIPT\"", "$SCRIPT"),
    ("echo pytest | bash", "bash reading its commands from a pipe"),
    ("cat run_tests.sh | sh -s -- -x", "sh reading its commands from a pipe"),
    ("bash <(echo pytest)", "bash reading its commands from a process substitution"),
    ("source <(sed s/x/y/ run.sh)", "source reading its commands from a process substitution"),
    ("bash < <(echo pytest)", "bash reading its commands from a pipe"),
    # a glob as the command word: the files decide what runs
    ("/usr/bin/pyth*3 -c 'print(6*7)'", "/usr/bin/pyth*3"),
    ("env /usr/bin/py??on3 -V", "/usr/bin/py??on3"),
    ("/usr/bin/pyth[o]n3 -V", "/usr/bin/pyth[o]n3"),
    # an interpreter's one-liner starting a program that is not written literally
    ("echo 'python3 -V' | awk '{system($0)}'", "system($0)"),
    ("perl -e 'system(@ARGV)' python3 -V", "system(@ARGV)"),
    ("perl -e 'exec @ARGV' python3 -V", "exec @ARGV"),
    ("awk '{system(\"echo \" $0)}' cmds.txt", 'system("echo " $0)'),
    ("echo python3 | awk '{print | $0}'", "print | $0"),
    ("echo python3 | awk '{$0 | getline x}'", "$0 | getline"),
    ("ruby -e 'exec(*ARGV)' python3 -V", "exec(*ARGV)"),
    ("node -e 'require(\"child_process\").execSync(process.argv[1])' python3", "execSync(process.argv[1])"),
    ("php -r 'system($argv[1]);' python3", "system($argv[1])"),
    ("perl -e 'system \"@ARGV\"' python3", "@ARGV"),
    ("ruby -e 'system(\"#{ARGV[0]} -V\")' python3", "#{ARGV[0]} -V"),
    ("perl -e 'print `$ARGV[0]`' python3", "$ARGV[0]"),
    # xargs, find and parallel supplying the program or the shell's script from their input
    ("echo python3 -V | xargs -I{} sh -c {}", "what xargs supplies"),
    ("echo python3 | xargs env", "what xargs supplies"),
    ("xargs -I X sh -c X < cmds.txt", "what xargs supplies"),
    ("xargs bash -c < cmds.txt", "what xargs supplies"),
    ("echo python3 -V | xargs -I{} {}", "what xargs supplies"),
    ("echo python3 | xargs timeout 5", "what xargs supplies"),
    ("find /usr/bin -name 'python3*' -exec {} -V \\;", "what find supplies"),
    ("echo 'python3 -V' | parallel", "what parallel supplies"),
    ("echo python3 | su", "bash reading its commands from a pipe"),
    ("echo 'python3 -V' | script -q /dev/null", "bash reading its commands from a pipe"),
]

ALLOWED = [
    "ls -la",
    "grep -rn 'python' .",
    "grep -rn python src/",
    "find . -name '*.py'",
    "find . -name '*.py' -exec grep -l foo {} \\;",
    "cat setup.py",
    "head -n 20 src/python_thing.py",
    "git log --oneline -5",
    "git show HEAD:setup.py",
    "git diff",
    "echo 'python x.py'",
    "echo \"python is banned\"",
    "echo '$(python x)'",
    "cd /workspace/repo && ls",
    "sed -n '1,20p' pytest.ini",
    "cat mypy.ini",
    "grep -r pip requirements.txt",
    "ls | grep python",
    "wc -l *.py",
    "cat <<'EOF' > notes.txt\npython x.py\npytest\nEOF",
    "cat <<EOF > b.txt\npip install x\nEOF",
    "awk '{print $1}' file.txt",
    "echo $((1 + 2))",
    "sed -i 's/python2/python3/' a.cfg",
    "tree -L 2",
    "git grep -n 'def main'",
    "echo hi # python x.py",
    "FOO=python echo $FOO",
    "xargs -n 1 echo < list.txt",
    "ls pythonic/ && cat pythonic/a.txt",
    "mkdir -p /tmp/x && cp a /tmp/x",
    "diff a.py b.py",
    "rg -n pytest",
    "grep -n \"import pytest\" tests/*.py",
    "which git",
    "nl -ba src/app.py | sed -n '10,30p'",
    "bash -c 'ls && grep -rn foo .'",
    "env | sort",
    "timeout 5 grep -r x .",
    "find . -type f | xargs grep -l python",
    "command -v python3 || echo missing",
    "which python; type pytest; hash pip 2>/dev/null",
    "ls /usr/bin/python*",
    "cat ./setup.py",
    "grep -r pytest .",
    "cat <<EOF > notes.txt\npytest fails on python 3.12\nEOF",
    "cat <<< 'python -V'",
    "time -p grep -rn foo .",
    "bash -o pipefail -c 'git log | head -5'",
    "busybox grep -rn python .",
    "bash run_checks.sh",
    "sh -x scripts/lint.sh",
    "perl -ne 'print if /pytest/' setup.cfg",
    "perl -pe 's/python2/python3/' a.cfg",
    "awk '/python/ {print FILENAME}' *.txt",
    "P=grep; $P -rn foo .",
    "ls $HOME; cd $TMPDIR && ls",
    "x=$(git rev-parse HEAD); git show $x --stat",
    "grep -rn 'coverage run' .",
    "echo $(git log -1 --format=%H)",
    "cat <<'EOF' > run.sh\n#!/bin/bash\npytest -q\nEOF",
    "(( $n > 1 )) && ls",
    "(cd src && ls)|grep -c py",
    "function show { grep -rn \"$1\" src; }; show foo",
    "diff <(sort a.txt) <(sort b.txt) setup.py",  # after a process substitution: the command's arguments
    "while read f; do wc -l $f; done < <(find . -name '*.py')",
    "git log --oneline -3 && git bisect log",
    # globs and braces as arguments; text tools that only mention programs; xargs with literal programs
    "ls *.py",
    "ls src/{a,b}/*.py && echo {1..3}",
    "cat pkg/{calc,util}.py",
    "find . -name '*.py' -exec grep -l foo {} +",
    "find . -name '*.sh' -exec sh -c 'grep -c x \"$1\"' _ {} \\;",
    "awk '/python/'",
    "awk '/python|pytest/ {print FILENAME}' a.txt",
    "awk '{print $1,$2}' a.txt",
    "awk '{print $1 \"|\" $2}' a.txt",
    "awk '{print | \"sort\"}' a.txt",
    "awk 'BEGIN { while ((\"ls\" | getline f) > 0) print f }'",
    "awk '{print system}' a.txt",
    "perl -ne 'print if /pytest/'",
    "perl -ne 'print if /system/' a.py",
    "perl -ne 'print if /os\\.system\\(/' a.py",
    "perl -e 'system(\"git\", \"status\")'",
    "awk 'BEGIN { system(\"ls -la\") }'",
    "xargs grep -l foo < files.txt",
    "echo a b | xargs -n1 echo",
    "echo a b | xargs",
    "find . -name '*.py' | xargs -I{} grep -c foo {}",
    "xargs -I{} sh -c 'grep -c foo {} | wc -l' < files.txt",
    "find . -type f -print0 | xargs -0 wc -l",
    "script -qc 'git log -1' /dev/null",
    "env -S 'grep -rn x' .",
    "cd bin && ls",
    "/lib64/ld-linux-x86-64.so.2 --list /bin/ls",
    "trap - EXIT",
    "trap -p",
    "trap 'rm -f /tmp/x' EXIT",
    "ls  # then pytest; (python3 -V)",
    "echo '#'; echo \"# python3\" | grep -c python",
    "bash -n run.sh",
    "sh -n -c 'python3 -V'",
]


@pytest.mark.parametrize("command,program", BANNED)
def test_banned_lines_are_caught(command, program):
    assert program in banned_commands(command), command


@pytest.mark.parametrize("command", ALLOWED)
def test_navigation_lines_are_allowed(command):
    assert banned_commands(command) == [], command


@pytest.mark.parametrize("command,word", COMPUTED)
def test_computed_programs_are_refused_with_the_reason(command, word):
    with pytest.raises(ComputedCommand) as refused:
        banned_commands(command)
    assert word in refused.value.programs, refused.value.programs
    assert f"`{word}`" in str(refused.value) and "cannot be checked beforehand" in str(refused.value)


def test_a_banned_name_is_reported_before_a_computed_one():
    assert banned_commands("pytest; $X") == ["pytest"]


def test_tables_are_big_enough():
    assert len(BANNED) >= 70 and len(ALLOWED) >= 60 and len(COMPUTED) >= 10


# `$'a\' #'` is one string to bash, which then runs pytest: the scanner's comment rule took ` #'; pytest` for a
# comment; shlex knows no `$'...'`, so the line is unparsable, and refused
@pytest.mark.parametrize("command", ["echo 'unterminated", "echo $(python x", "echo $'a\\' #'; pytest"])
def test_unparsable_lines_raise(command):
    with pytest.raises(UnparsableCommand):
        banned_commands(command)


def test_path_programs_are_reported_for_their_shebang():
    """What a program named by a path runs depends on the file: the scanner reports those paths (also joined with the
    directories the line moves into) for the caller, who can read them."""
    assert scan("bin/test sympy/core").paths == ["bin/test"]
    assert scan("cd pkg && ../bin/test -k x").paths == ["../bin/test", "pkg/../bin/test"]
    assert scan("timeout 60 ./run && /opt/x/tool").paths == ["./run", "/opt/x/tool"]
    assert scan("ls bin/test; cat ./run; grep -r x .").paths == []
    assert scan("pytest; bin/test") == Scanned(["pytest"], ["bin/test"])  # one walk says both


def test_files_a_shell_reads_are_reported_for_their_text():
    """What `sh run.sh` or `source env.sh` runs is in the file, whatever its `#!` line: the scanner reports the files
    (joined with the folders the line moves into, as `paths`) for the caller, who can read them."""
    assert scan("sh run.sh").scripts == ["run.sh"]
    assert scan("bash -x scripts/test.sh -k a") == Scanned([], ["scripts/test.sh"], ["scripts/test.sh"])
    assert scan("source env.sh && . ./env.sh").scripts == ["env.sh", "./env.sh"]
    assert scan("cd pkg && bash < ../run.sh").scripts == ["../run.sh", "pkg/../run.sh"]
    assert scan("S=run.sh; sh $S").scripts == ["run.sh"]
    for allowed in ["cat run.sh", "bash -n run.sh", "grep python run.sh", "sh -c 'ls'", "source $F", "./run.sh"]:
        assert scan(allowed).scripts == [], allowed


@pytest.mark.parametrize("head,shell", [
    ("#!/bin/sh\n", True),
    ("#!/bin/bash -eu\n", True),
    ("#!/usr/bin/env bash\n", True),
    ("#!/usr/bin/env -S bash -e\n", True),
    ("echo no #! line\n", True),  # the shell that was asked runs it itself
    ("", True),
    ("#!/usr/bin/env python3\n", False),
    ("#!/usr/bin/awk -f\n", False),
    ("\x7fELF\x02\x01\x01\x00", False),
])
def test_which_files_a_shell_runs_by_their_path(head, shell):
    assert shell_script(head.encode()) == shell


@pytest.mark.parametrize("first_line,banned", [
    ("#!/usr/bin/env python", ["python"]),
    ("#!/usr/bin/env python3\n", ["python3"]),
    ("#! /usr/bin/python3.11 -u", ["python3.11"]),
    ("#!/usr/bin/env -S python3 -u -X dev", ["python3"]),
    ("#!/opt/conda/bin/pytest", ["pytest"]),
    ("#!/bin/sh", []),
    ("#!/usr/bin/env bash", []),
    ("# not a shebang: python", []),
    ("\x7fELF\x02\x01", []),
])
def test_shebang_interpreters(first_line, banned):
    assert shebang_banned(first_line.encode()) == banned


ROOT = "/workspace/toy__calc__0.1"
SCRIPT = "#!/usr/bin/env python3\nopen('ran', 'w').write('ran')\n"
SHEBANGS = {
    "bin/test": SCRIPT,  # sympy's test runner is such a script
    "bin/test2": "#!/usr/bin/env python\nprint(1)\n",
    "bin/split": "#!/usr/bin/env -S python3 -u\nprint(1)\n",
    "bin/check": "#!/bin/sh\necho checked\n",
}
SHELL_SCRIPTS = {
    "run.sh": "#!/bin/sh\n# the tests (they need python)\ntouch ran\npython3 -m pytest \"$@\"\n",
    "plain.sh": "touch ran; pytest -q\n",  # no `#!` line: bash runs it itself
    "scripts/ci.sh": "#!/usr/bin/env bash\n[ $# -gt 0 ] && echo \"$1\"\ncd \"$(dirname \"$0\")\" && ./install.sh\n",
    "scripts/install.sh": "#!/bin/sh\ntouch ran && pip install -e ..\n",
    "scripts/lib.sh": ". ./env.sh\n",  # sourced: relative to where the shell stands
    "env.sh": "export PATH=\"$PWD/bin:$PATH\"\ndeactivate () {\n    unset -f deactivate  # no python here\n}\nhash -r\n",
    "greps.sh": "#!/bin/sh\n# count the functions (python files)\ngrep -c def pkg/calc.py\n",
    "computed.sh": "#!/bin/sh\n$RUNNER tests\n",
}


@pytest.fixture
def rt(tmp_path):
    task = make_task(tmp_path / "src", "calc", {**CALC, **SHEBANGS, **SHELL_SCRIPTS}, CALC_FIX)
    runtime = LocalRuntime.for_task(tmp_path / "src", task.base_commit, ROOT, tmp_path / "work",
                                    RuntimeConfig(default_timeout=20))
    for name in [*SHEBANGS, *SHELL_SCRIPTS]:
        (runtime.checkout / name).chmod(0o755)
    yield runtime
    runtime.close()


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
@pytest.mark.bwrap
def test_zero_mode_refuses_a_repository_script_whose_shebang_is_python(rt):
    tools = Tools(rt, "zero")
    for command, banned in [("bin/test sympy/core", ["python3"]), ("./bin/test2", ["python"]),
                            (f"{ROOT}/bin/test", ["python3"]), ("timeout 60 bin/split", ["python3"]),
                            ("cd pkg && ../bin/test", ["python3"])]:
        outcome = tools.call("execute_bash", {"command": command})
        assert outcome.error and outcome.banned == banned, (command, outcome)
        assert outcome.observation.startswith(f"ERROR: Command refused, nothing was run: it would execute "
                                              f"`{banned[0]}`"), outcome.observation
        assert not (rt.checkout / "ran").exists() and not (rt.checkout / "pkg" / "ran").exists()
    assert "`python3` (the `#!` interpreter of `bin/test`)" in tools.call(
        "execute_bash", {"command": "bin/test"}).observation
    # relative to where the shell stands, which an earlier command moved
    tools.call("execute_bash", {"command": "cd bin"})
    moved = tools.call("execute_bash", {"command": "./test"})
    assert moved.banned == ["python3"] and not (rt.checkout / "bin" / "ran").exists()
    assert "checked" in tools.call("execute_bash", {"command": "./check"}).observation
    assert "checked" in tools.call("execute_bash", {"command": "cd .. && bin/check && ls bin/test"}).observation


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
@pytest.mark.bwrap
def test_zero_mode_refuses_a_repository_shell_script_that_runs_python(rt):
    """`./run.sh` (a `#!/bin/sh` script, or one with no `#!` line), `sh run.sh` or `source run.sh` runs what the file
    says: its text is scanned as a command line is, and so are the scripts it runs."""
    tools = Tools(rt, "zero")
    for command, banned, how in [
        ("./run.sh", ["python3"], "run by `run.sh`"), ("sh run.sh -x", ["python3"], "run by `run.sh`"),
        ("bash run.sh", ["python3"], "run by `run.sh`"), ("source run.sh", ["python3"], "run by `run.sh`"),
        (". ./run.sh", ["python3"], "run by `run.sh`"), ("bash < run.sh", ["python3"], "run by `run.sh`"),
        ("timeout 5 ./plain.sh", ["pytest"], "run by `plain.sh`"),
        ("cd pkg && ../run.sh", ["python3"], "run by `run.sh`"),
        ("scripts/ci.sh", ["pip"], "run by `install.sh`, which `scripts/ci.sh` runs"),
    ]:
        outcome = tools.call("execute_bash", {"command": command})
        assert outcome.error and outcome.banned == banned, (command, outcome)
        assert outcome.observation.startswith(f"ERROR: Command refused, nothing was run: it would execute "
                                              f"`{banned[0]}` ({how})"), outcome.observation
        assert not (rt.checkout / "ran").exists() and not (rt.checkout / "pkg" / "ran").exists()
    computed = tools.call("execute_bash", {"command": "./computed.sh"})
    assert computed.banned == ["$RUNNER"] and computed.observation.startswith(
        "ERROR: Command refused, nothing was run: it runs the shell script `computed.sh`, which cannot be checked: the "
        "program it runs (`$RUNNER`) is only known"), computed.observation
    # what does not run the script, a script that runs nothing banned, and files that are no script run as before
    (rt.checkout / "tool").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(64))
    (rt.checkout / "tool").chmod(0o755)
    for command, shown in [("cat run.sh", "python3 -m pytest"), ("bash -n run.sh && echo parsed", "parsed"),
                           ("grep -c python run.sh", "1"), ("sh -c 'ls pkg'", "calc.py"), ("./greps.sh", "2"),
                           ("bash scripts/lib.sh && echo sourced", "sourced"),
                           ("source env.sh && type deactivate", "deactivate is a function"),
                           ("./missing.sh", "No such file or directory"), ("sh missing.sh", "No such file"),
                           ("./tool", "cannot execute binary file"), ("bash tool", "cannot execute binary file")]:
        outcome = tools.call("execute_bash", {"command": command})
        assert not outcome.banned and shown in outcome.observation, (command, outcome.observation)
