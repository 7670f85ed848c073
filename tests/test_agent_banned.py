"""The SWE-Zero banned-command scanner on tricky command lines, both ways."""

from __future__ import annotations

import pytest

from swehero.agent.banned import ComputedCommand, UnparsableCommand, banned_commands

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


@pytest.mark.parametrize("command", ["echo 'unterminated", "echo $(python x"])
def test_unparsable_lines_raise(command):
    with pytest.raises(UnparsableCommand):
        banned_commands(command)
