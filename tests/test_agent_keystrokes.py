"""What OpenHands 0.54 types into its pane for a command (`swehero.agent.keystrokes`). The escapes below are what
its own `escape_bash_special_chars` returned for these commands (run from the 0.54.0 source, bashlex 0.18), its
here-document quirk included; the recorded bash-session replay (test_agent_sandbox, test_agent_docker) checks the
whole path against OpenHands' pane."""

from __future__ import annotations

import pytest

from swehero.agent.keystrokes import openhands_escape, tmux_typed, typed_command

OPENHANDS_ESCAPES = [
    ('find . -name "*.py" -exec grep -l x {} \\;',
     'find . -name "*.py" -exec grep -l x {} \\\\;'),
    ('find . -exec rm {} \\; -print',
     'find . -exec rm {} \\\\; -print'),
    ('echo "a\\;b" \\; c',
     'echo "a\\;b" \\\\; c'),
    ("echo 'a\\|b' x\\|y",
     "echo 'a\\|b' x\\\\|y"),
    ('echo $(echo a\\;b) `echo c\\;d` e\\>f',
     'echo $(echo a\\;b) `echo c\\;d` e\\\\>f'),
    ("cat <<'EOF' > f.py\nx = a \\; b\nEOF",
     "cat <<'EOF' > f.py\nx = a \\; b\nEOF"),
    ('cat <<EOF | grep x\\|y\nbody \\; here\nEOF\necho done\\;',
     'cat <<EOF | grep x\\|y\nbody \\; here\nEOF | grep x\\\\|y\nbody \\\\; here\nEOF\necho done\\\\;'),
    ('for f in *.py; do grep -l x $f \\; ; done',
     'for f in *.py; do grep -l x $f \\; ; done'),
    ('echo a \\&\\& b',
     'echo a \\\\&\\\\& b'),
    ("python -c 'print(1)' \\> out",
     "python -c 'print(1)' \\\\> out"),
    ('ls (',
     'ls ('),
    ('echo ${x} \\< y',
     'echo ${x} \\\\< y'),
    ('  find . -exec echo {} \\;  ',
     '  find . -exec echo {} \\\\;  '),
]


@pytest.mark.parametrize("command,escaped", OPENHANDS_ESCAPES)
def test_commands_are_escaped_as_openhands_escapes_them(command, escaped):
    assert openhands_escape(command) == escaped


def test_tmux_reads_a_final_semicolon_as_its_own():
    assert tmux_typed("ls sub;") == "ls sub"
    assert tmux_typed("find . -exec grep -l x {} \\\\;") == "find . -exec grep -l x {} \\;"
    assert tmux_typed("ls; pwd") == "ls; pwd"


def test_the_echo_stays_where_tmux_typed_something_else():
    assert typed_command("find . -exec grep -l x {} \\;") == ("find . -exec grep -l x {} \\;", True)
    # These run otherwise (a syntax error, `y` run as a command), but were typed as escaped: the echo is cut.
    assert typed_command("find . -exec grep -l x {} \\; | head") == ("find . -exec grep -l x {} \\\\; | head", False)
    assert typed_command("grep -n x\\|y m.py") == ("grep -n x\\\\|y m.py", False)
    assert typed_command("ls sub;") == ("ls sub", True)
    assert typed_command("ls; pwd") == ("ls; pwd", False)
    assert typed_command("") == ("", False)
