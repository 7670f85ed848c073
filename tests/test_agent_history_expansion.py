"""Bash's history expansion as OpenHands' interactive shell applies it, worked out by a real bash (the host's here;
the replay of OpenHands' own bash session checks the whole path in both runtimes)."""

from __future__ import annotations

import subprocess

import pytest

from swehero.agent.history_expansion import expansion_script, may_expand, read_expansion


def expand(history: list[str], typed: str):
    script = expansion_script(history, typed)
    output = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30).stdout
    return read_expansion(output, history, typed)


def test_a_reference_that_finds_nothing_drops_its_line():
    found = expand([], "python3 -c \"print('Done!')\"")
    assert (found.runs, found.printed, found.with_echo, found.entries) == ("", "bash: !': event not found", False, ())


@pytest.mark.parametrize("typed", ["echo 'a!b'", 'echo "x != y" "Done!"', "echo $((1!=2))", "find . ! -name x",
                                   "cat <<EOF\nkept !ec\nEOF"])
def test_a_bang_bash_leaves_alone_changes_nothing(typed):
    """Single quotes, `!` before a blank, `=` or a closing double quote, here-document bodies (bash 5.2)."""
    found = expand(["echo earlier"], typed)
    assert (found.runs, found.printed, found.with_echo) == (typed, "", False)
    assert found.entries == ((typed + "\n",) if "<<" in typed else (typed,))  # bash keeps a here-document's newline


def test_references_find_the_sessions_commands():
    history = ["echo x y z", "for i in 1 2; do\n  echo $i\ndone"]
    assert expand(history, "!!").printed == "for i in 1 2; do\n  echo $i\ndone"
    found = expand(history, "echo !-2:$ !ech")
    assert (found.runs, found.printed) == ("echo z echo x y z",) * 2
    assert expand(history, "^i^j").runs == "for j in 1 2; do\n  echo $i\ndone"
    assert expand(history, "^q^w").printed == "bash: :s^q^w: substitution failed"


def test_a_line_of_several_keeps_its_place_among_them():
    """The message follows the line it concerns, inside the command's echo, and the other lines still run; the
    history keeps the command as bash keeps it, one line where it can."""
    typed = 'for i in 1 2; do\n  echo "i!x"\n  echo $i\ndone'
    found = expand([], typed)
    assert found.printed == 'for i in 1 2; do\n  echo "i!x"\nbash: !x: event not found\n  echo $i\ndone'
    assert found.with_echo and found.runs == "for i in 1 2; do\n  echo $i\ndone"
    assert found.entries == ("for i in 1 2; do   echo $i; done",)
    last = expand([], 'echo one &&\n  echo "two!x"')
    assert (last.printed, last.with_echo) == ("bash: !x: event not found", False)
    assert last.runs == "echo one &&"  # what is left runs as it is, though incomplete (see docs/agent.md)
    # bash's quoting rules on a continued line are its own: here `!'` inside the double quotes is kept
    kept = 'python3 -c "\nimport sys\nprint(\'ok!\')"'
    assert expand([], kept).runs == kept


def test_a_syntax_error_is_left_to_the_shell_that_runs_the_command():
    found = expand(["echo hi"], "echo !! ; if then")
    assert (found.runs, found.printed) == ("echo echo hi ; if then",) * 2


def test_only_a_bang_or_a_caret_starting_a_line_can_expand():
    assert may_expand("echo 'a!b'") and may_expand("^a^b") and may_expand("ls\n^a^b")
    assert not may_expand("grep -n 'x^2' f") and not may_expand("ls -la")


def test_a_sandbox_that_cannot_run_it_is_an_error():
    with pytest.raises(RuntimeError, match="did not run"):
        read_expansion("bash: base64: command not found", [], "echo !!")


def test_the_p_modifier_prints_without_running():
    found = expand(["echo hi"], "echo !!:p")
    assert (found.runs, found.printed, found.entries) == ("", "echo echo hi", ("echo echo hi",))
