"""Command output as OpenHands' tmux pane shows it (`as_terminal_shows`), checked against tmux itself: OpenHands
runs each command in a 1000x1000 tmux pane and reads it back with `capture-pane -J -p`."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time

import pytest

from swehero.agent.local import LocalRuntime
from swehero.agent.runtime import CappedBuffer
from swehero.agent.terminal import as_terminal_shows, openhands_reads

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

OUTPUTS = [
    "plain text\n",
    "\x1b[1;31mE   assert 1 == 2\x1b[0m\n",  # colour a project's pytest configuration forces
    "fetch 10%\rfetch 55%\rfetch 100%\ndone\r\n",  # a progress bar; CRLF
    "abcdef\rXY\n",  # overwritten only where written
    "step 3/3\r\x1b[Kok\n12345\r\x1b[2K\rok\nabc\x1b[1Kd\ntail \x1b[0K\n",  # erase in line
    "ab\bc\nab\x1b[5Dc\nab\x1b[Gc\nab\x1b[3Gc\na\x1b[3Cb\n",  # cursor moves along the line
    "\x1b[1A\x1b[2Kup\nx\x1b[?25ly\x1b[?25h\n",  # moves off the line, modes
    "x\x1b(By\x1b]8;;http://a\x1b\\link\x1b]8;;\x1b\\\n\x1b]0;title\x07prompt$ \n",  # charset, hyperlink, title
    "bin\x00ary\x07\x7f\x1f.\n",  # control characters
    "     1\tdef f():\n     2\t\treturn 1\na\t\nabcdefghij\r\tX\n1234567\tz\n12345678\tz\n",  # tab stops
    "café\tx\n100%|\x1b[32m██████████\x1b[0m| 10/10\n",
]


def tmux_shows(raw: bytes, tmp_path) -> str:
    out, socket = tmp_path / "output", str(tmp_path / "tmux.socket")
    out.write_bytes(raw)
    tmux = ["tmux", "-S", socket]
    subprocess.run(tmux + ["new-session", "-d", "-x", "1000", "-y", "1000",
                           f"cat {out}; tmux -S {socket} wait-for -S shown; sleep 60"], check=True)
    try:
        subprocess.run(tmux + ["wait-for", "shown"], timeout=30, check=True)
        return subprocess.run(tmux + ["capture-pane", "-J", "-p", "-S", "-1000"], capture_output=True, text=True,
                              check=True).stdout
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


@needs_tmux
@pytest.mark.timeout(60)
@pytest.mark.parametrize("raw", OUTPUTS)
def test_output_is_what_a_tmux_pane_shows(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert as_terminal_shows(raw).rstrip("\n") == tmux_shows(raw.encode(), tmp_path).rstrip("\n")


def test_what_the_pane_shows():
    shown = as_terminal_shows("".join(OUTPUTS))
    assert shown.startswith("plain text\nE   assert 1 == 2\nfetch 100%\ndone\nXYcdef\nok\nok\n   d\ntail \n")
    assert "     1  def f():\n     2          return 1\na\nabcdefghXj\n1234567 z\n12345678        z\n" in shown
    assert "xylink\nprompt$ \nbinary.\n" in shown and "\x1b" not in shown
    assert as_terminal_shows("no controls\n") == "no controls\n"


INVALID_UTF8 = {  # bytes -> what tmux 3.3a shows (checked by hand, and below against tmux where installed)
    b"na\xc3\xafve\nna\xc3\n": "naïve\nna\n",  # `cut -c1-3` cuts a character short
    b"# Author: Jos\xe9\n": "# Author: Jos\n",  # a Latin-1 source
    b"a\xffb \x80 \xc0\x80 \xfe\n": "ab   \n",  # bytes that start no character
    b"a\xe2\x82b\xf0\x9f\x98\tc\n": "ab      c\n",  # an ASCII byte ends a character cut short
    b"a\xc3\xc3\xa9b \xe2\x82\xc3\xa9\n": "ab \n",  # a lead byte takes its length's bytes before the check
    b"a\xed\xa0\x80b\xf4\x90\x80\x80c\xe0\x80\x80\n": "abc\n",  # a surrogate, past U+10FFFF, overlong
    b"\xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbd\n": "€ 😀 \ufffd\n",  # valid ones, U+FFFD written as such
}
WIDTHLESS = {  # valid UTF-8 of characters tmux gives no width (glibc's wcwidth -1): they show nothing either
    "don’t\n".encode().decode("latin-1").encode(): "donât\n",  # mojibake: U+0080, U+0099 are C1 controls
    "a\u0378b\ufffec\U0010ffffd\u2028e\u2029f\x85g\n".encode(): "abcdefg\n",  # unassigned, noncharacters, separators
    "\xad\u200b\ufeff\ue000\u061c\xa0|\n".encode(): "\xad\u200b\ufeff\ue000\u061c\xa0|\n",  # format, private use: shown
}


def as_read(raw: bytes, cap_bytes: int = 1 << 20) -> str:
    """What the agent is shown of `raw` read from a command's terminal."""
    buffer = CappedBuffer(cap_bytes)
    buffer.add(raw)
    return as_terminal_shows(buffer.text())


@needs_tmux
@pytest.mark.timeout(60)
@pytest.mark.parametrize("raw", {**INVALID_UTF8, **WIDTHLESS})
def test_what_tmux_drops_is_left_out_as_a_tmux_pane_leaves_it_out(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert as_read(raw).rstrip("\n") == tmux_shows(raw, tmp_path).rstrip("\n")


def test_what_tmux_drops_is_left_out():
    for raw, shown in {**INVALID_UTF8, **WIDTHLESS}.items():
        assert as_read(raw) == shown, raw
    buffer = CappedBuffer(64)  # capped: the head, the scrollback and the tail decode alike
    for raw in [b"x\xff" * 50 + b"\n"] * 10:
        buffer.add(raw)
    pane, _ = buffer.pane()
    assert "\ufffd" not in buffer.text() + pane and "xxxx" in buffer.text() and "x" * 50 in pane


class OpenHandsPane:
    """A bash in a tmux pane set up as OpenHands 0.54's bash session sets it up (1000 x 1000, `history-limit` 10,000
    on a new window, its prompt), run and read as it runs and reads one command: the pane cleared, the command
    typed, the pane captured (`-J -pS -`, each row stripped at its end) once the next prompt shows, and the text
    above that prompt taken (after the prompt before the command, when it is still there)."""

    PS1 = "\n###PS1JSON###\n" + json.dumps({
        "pid": "$!", "exit_code": "$?", "username": r"\u", "hostname": r"\h", "working_dir": r"$(pwd)",
        "py_interpreter_path": r'$(which python 2>/dev/null || echo "")'}, indent=2) + "\n###PS1END###\n"
    PROMPT = re.compile(r"^###PS1JSON###(.*?)###PS1END###", re.S | re.M)

    def __init__(self, tmp_path):
        self.tmux = ["tmux", "-S", str(tmp_path / "tmux.socket")]
        rc = tmp_path / "bashrc"  # OpenHands types this setting in; a file keeps the pane free of its echo
        # and the first command it runs in the pane: without it, git would page long output in the terminal
        rc.write_text(f"PS1={shlex.quote(self.PS1)}\nPS2=\nalias git='git --no-pager'\n")
        self.run("new-session", "-d", "-s", "oh", "-x", "1000", "-y", "1000")
        self.run("set-option", "-g", "history-limit", "10000")
        self.run("new-window", "-t", "oh", "-n", "bash", f"bash --noprofile --rcfile {rc}")  # the first window
        self.run("kill-window", "-t", "oh:0")                                          # keeps the default limit
        self.poll(self.PROMPT.search)

    def run(self, *args) -> str:
        return subprocess.run(self.tmux + list(args), capture_output=True, text=True, check=True).stdout

    def keys(self, text: str, enter: bool = True) -> None:
        self.run("send-keys", "-t", "oh:bash", "-l", text)
        if enter:
            self.run("send-keys", "-t", "oh:bash", "Enter")

    def content(self) -> str:
        return "\n".join(line.rstrip() for line in self.run("capture-pane", "-t", "oh:bash", "-J", "-pS", "-")
                         .split("\n"))

    def poll(self, done, source=None) -> str:
        """The pane's text (`source`: another capture) once `done` holds for it: waiting on what the pane shows, not
        for a set time, so that a loaded machine only makes the test slower."""
        for _ in range(600):
            if done(content := (source or self.content)()):
                return content
            time.sleep(0.1)
        raise AssertionError(f"the pane did not get there:\n{content[-2000:]}")

    def clear(self) -> str:
        """OpenHands' clearing before a command (Ctrl-L, then `clear-history`), once Ctrl-L has taken effect (the
        screen shows only the prompt): the pane's text then."""
        self.run("send-keys", "-t", "oh:bash", "C-l")
        self.poll(lambda screen: screen.strip().startswith("###PS1JSON###") and len(self.PROMPT.findall(screen)) == 1,
                  source=lambda: self.run("capture-pane", "-t", "oh:bash", "-p"))
        self.run("clear-history", "-t", "oh:bash")
        content = self.content()
        assert len(self.PROMPT.findall(content)) == 1, content[-2000:]
        return content

    def read(self, command: str) -> tuple[int, str]:
        """OpenHands' lines count (`splitlines` of the text above the last prompt) and that text, stripped."""
        before = self.clear()
        self.keys(command)
        content = self.poll(lambda now: now != before and now.rstrip().endswith("###PS1END###"))
        prompts = list(self.PROMPT.finditer(content))
        above = content[: prompts[-1].start()] if len(prompts) == 1 else \
            content[prompts[0].end() + 1: prompts[-1].start()]
        text = above.lstrip().removeprefix(command).strip()
        return (len(above.splitlines()) if len(prompts) == 1 else 0), text

    def read_running(self, command: str) -> str:
        """What OpenHands shows of `command` while it still runs (it must print, then sleep): the pane captured once
        it stops changing, the text after the prompt before the command (all of it when that prompt is gone), the
        command's echo left out. Ctrl-C then ends it."""
        self.clear()
        self.keys(command)
        content, previous = "", None
        while content != previous:
            time.sleep(1)
            content, previous = self.content(), content
        prompts = list(self.PROMPT.finditer(content))
        assert len(prompts) <= 1 and not content.rstrip().endswith("###PS1END###"), "it ended: sleep longer"
        text = content[prompts[0].end() + 1:] if prompts else content
        self.run("send-keys", "-t", "oh:bash", "C-c")
        self.poll(lambda now: now.rstrip().endswith("###PS1END###"))
        return text.lstrip().removeprefix(command).strip()

    def close(self) -> None:
        subprocess.run(self.tmux + ["kill-server"], capture_output=True)


@needs_tmux
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_long_outputs_keep_what_the_pane_keeps(tmp_path):
    """Past the screen and the history, OpenHands shows what tmux kept: tmux frees a tenth of a full history at once,
    so that depends on the length. Short outputs, lines wrapped over several rows, and outputs just past the limit."""
    pane = OpenHandsPane(tmp_path)
    try:
        for command in ("seq 1 5000", "seq 1 10970", "seq 1 10990", "seq 1 11500", "seq 1 20000",
                        "printf '  lead\\n\\nmid   \\n\\n'",
                        "for i in $(seq 1 4000); do printf \"%0${i}d\\n\" 0 | head -c 2100; echo; done"):
            output = subprocess.run(["bash", "-c", command], capture_output=True, text=True).stdout
            note, text = openhands_reads(output, command)
            count, expected = pane.read(command)
            assert text == expected, command
            assert note == (f"[Previous command outputs are truncated. Showing the last {count} lines of the output "
                            "below.]\n" if count else ""), command
    finally:
        pane.close()


@needs_tmux
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_outputs_of_running_commands_keep_what_the_pane_keeps(tmp_path):
    """While the command runs no next prompt takes rows, so an output that would lose its top once the command ends
    is still whole (10,985 rows); longer ones lose a tenth of the history at a time, as after the end."""
    pane = OpenHandsPane(tmp_path)
    try:
        shown, ended = {}, {}
        for lines in (5000, 10985, 10990, 21000):
            output = subprocess.run(["seq", "1", str(lines)], capture_output=True, text=True).stdout
            command = f"seq 1 {lines}; sleep 60"
            shown[lines] = openhands_reads(output, command, ended=False)[1]
            ended[lines] = openhands_reads(output, command)[1]
            assert shown[lines] == pane.read_running(command), lines
        assert shown[10985].startswith("1\n2\n") and ended[10985].startswith("989\n")
        assert shown[10990].startswith("989\n") and shown[21000].startswith("10989\n")
    finally:
        pane.close()


@needs_tmux
@pytest.mark.bwrap
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_commands_show_in_our_sandbox_what_they_show_in_openhands_pane(tmp_path, monkeypatch):
    """Programs see a terminal of the pane's size, so they format for one as in OpenHands: `ls` in columns with names
    quoted for the shell, a width of 1000 (argparse's help is not wrapped), Python's output and its warnings in the
    order written, git's decorations, and no pager."""
    monkeypatch.setenv("LANG", "C.UTF-8")
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in [f"module_{i}.py" for i in range(40)] + ["with space.txt", "README.md"]:
        (repo / name).write_text("x\n")
    git_env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", *git_env, "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *git_env, "commit", "-qm", "first"], cwd=repo, check=True)
    commands = [
        "ls",
        "python3 -c \"import shutil, sys; print(tuple(shutil.get_terminal_size()), sys.stdout.isatty())\"",
        "python3 -c \"import argparse; p = argparse.ArgumentParser(prog='tool'); "
        "p.add_argument('--mode', help=' '.join(['word'] * 60)); p.print_help()\"",
        "python3 -c \"import warnings; print('first'); warnings.warn('second'); print('third')\"",
        "git -c core.pager='echo PAGED' log --oneline",
        "printf 'na\\xc3\\xafve\\n' | cut -c1-3; printf 'a\\xffb\\n'",
    ]
    pane = OpenHandsPane(tmp_path)
    runtime = LocalRuntime(repo, "/workspace/repo", tmp_path / "work")
    try:
        pane.read(f"cd {shlex.quote(str(repo))}")
        for command in commands:
            _, shown = openhands_reads(runtime.execute(command, 30).output, command)
            assert shown == pane.read(command)[1], command
    finally:
        runtime.close()
        pane.close()
