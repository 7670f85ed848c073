"""Command output as OpenHands' tmux pane shows it (`as_terminal_shows`), checked against tmux itself: OpenHands
runs each command in a 1000x1000 tmux pane and reads it back with `capture-pane -J -p`."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from swehero.agent.tools import as_terminal_shows

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


def tmux_shows(raw: str, tmp_path) -> str:
    out, socket = tmp_path / "output", str(tmp_path / "tmux.socket")
    out.write_bytes(raw.encode())
    tmux = ["tmux", "-S", socket]
    subprocess.run(tmux + ["new-session", "-d", "-x", "1000", "-y", "1000",
                           f"cat {out}; tmux -S {socket} wait-for -S shown; sleep 60"], check=True)
    try:
        subprocess.run(tmux + ["wait-for", "shown"], timeout=30, check=True)
        return subprocess.run(tmux + ["capture-pane", "-J", "-p", "-S", "-1000"], capture_output=True, text=True,
                              check=True).stdout
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("raw", OUTPUTS)
def test_output_is_what_a_tmux_pane_shows(raw, tmp_path, monkeypatch):
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert as_terminal_shows(raw).rstrip("\n") == tmux_shows(raw, tmp_path).rstrip("\n")


def test_what_the_pane_shows():
    shown = as_terminal_shows("".join(OUTPUTS))
    assert shown.startswith("plain text\nE   assert 1 == 2\nfetch 100%\ndone\nXYcdef\nok\nok\n   d\ntail \n")
    assert "     1  def f():\n     2          return 1\na\nabcdefghXj\n1234567 z\n12345678        z\n" in shown
    assert "xylink\nprompt$ \nbinary.\n" in shown and "\x1b" not in shown
    assert as_terminal_shows("no controls\n") == "no controls\n"
