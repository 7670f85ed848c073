"""The agent's shell beyond OpenHands' recorded sessions: outputs past the capture cap, long tabbed lines, and a
PATH without the usual programs, in both runtimes."""

from __future__ import annotations

import random
import re

import pytest
from agent_repos import CALC, CALC_FIX, make_task

from swehero.agent.bash_session import completed_observation
from swehero.agent.local import LocalRuntime
from swehero.agent.runtime import CappedBuffer, CommandResult
from swehero.agent.terminal import as_terminal_shows, openhands_reads
from swehero.agent.tools import Tools

ROOT = "/workspace/toy__calc__0.1"
LONG_LINES = "python3 -c \"for i in range(3000): print(('%05d ' % i) * 1000)\""
"""18 MB in lines of 6,000 characters: the pane holds its last 1,670 lines, far more than the 2 MB kept as read."""


def long_lines() -> str:
    return "".join(("%05d " % i) * 1000 + "\n" for i in range(3000))


def progress_bars() -> str:
    """Coloured, tabbed, multi-byte, overwritten with carriage returns, CRLF line ends."""
    return "".join(f"\x1b[32mstep {i}\x1b[0m\t|{'█' * (i % 40)}é\r\x1b[K{i}%\tok\r\n" for i in range(30000))


def read_in_chunks(output: str, cap: int, seed: int) -> CappedBuffer:
    data, rng, buffer = output.encode(), random.Random(seed), CappedBuffer(cap)
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 7, 4096, 65536, 300_000))
        buffer.add(data[pos:pos + size])
        pos += size
    return buffer


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, output, cap", [
    ("long lines", long_lines(), 2_000_000),
    ("short lines", "".join(f"{i}\n" for i in range(200_000)), 20_000),
    ("one line longer than the pane", "x" * 12_500_000 + "\nend\n", 2_000_000),
    ("progress bars", progress_bars(), 50_000),
    ("one progress bar of 1 MB", "".join(f"{i}\n" for i in range(12000)) + "".join(
        f"\r\x1b[K\x1b[32m{i}%\x1b[0m|{'█' * (i % 30)}é\t" for i in range(30000)) + "\ndone\n", 20_000),
])
@pytest.mark.slow  # subprocesses or a server: the fast tier stays under 2 minutes
def test_an_output_past_the_cap_shows_what_openhands_shows_of_it_whole(name, output, cap):
    """What is dropped while reading goes through the pane as OpenHands' would hold it: the note, the lines kept and
    the first of them are those of the whole output, ended or still running, however the output was read."""
    for seed in range(2):
        text, scrolled = read_in_chunks(output, cap, seed).pane()
        assert len(text) < len(output)
        for ended in (True, False):
            whole = openhands_reads(output, "cmd", ended)
            assert whole[0].startswith("[Previous command outputs are truncated.")
            assert openhands_reads(text, "cmd", ended, scrolled=scrolled) == whole, (name, seed, ended)


def test_a_long_tabbed_line_is_rendered_as_tabs_expand():
    """`seq 1 25000 | paste -s`: one line of 140 kB and 25,000 tabs (its time: benchmarks/terminal_render.py)."""
    line = "\t".join(str(i) for i in range(1, 25_001))
    assert as_terminal_shows(line + "\n") == line.expandtabs(8) + "\n"


@pytest.fixture
def local(tmp_path):
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    runtime = LocalRuntime.for_task(tmp_path / "src", task.base_commit, ROOT, tmp_path / "work")
    yield runtime
    runtime.close()


def bash(runtime, command: str) -> str:
    return Tools(runtime, "exec").call("execute_bash", {"command": command}).observation


@pytest.mark.bwrap
@pytest.mark.timeout(120)
def test_a_long_output_in_the_sandbox_is_shown_as_openhands_shows_it(local):
    observation = bash(local, LONG_LINES)
    python = re.search(r"\[Python interpreter: (.*)\]", observation)
    expected = completed_observation(CommandResult(long_lines(), 0, False, ROOT, python[1] if python else ""),
                                     LONG_LINES)
    assert expected.startswith("[Previous command outputs are truncated. Showing the last 1670 lines of the "
                               "output below.]\n331 01331 ")  # the first rows of 01331's line were gone
    assert observation == expected


def a_bad_path_leaves_builtins_working(runtime, root: str) -> None:
    """As in OpenHands' shell: with no program on PATH, programs fail (127), but builtins run, the state carries
    over, and PATH can be set back."""
    bash(runtime, "mkdir -p sub && cd sub && export FOO=bar")
    assert bash(runtime, "export PATH=/opt/mytools/bin").startswith("\n[The command completed with exit code 0.]")
    assert bash(runtime, "echo still-here $FOO; pwd").startswith(f"still-here bar\n{root}/sub\n"
                                                                  "[The command completed with exit code 0.]")
    assert bash(runtime, "ls").startswith("bash: ls: command not found\n[The command completed with exit code 127.]")
    assert f"[Current working directory: {root}/sub]" in bash(runtime, "export PATH=/usr/bin:/bin")
    assert bash(runtime, "ls -d ../sub && echo x | cat").startswith(
        "../sub\nx\n[The command completed with exit code 0.]")


@pytest.mark.bwrap
@pytest.mark.timeout(120)
def test_a_path_without_programs_leaves_the_local_shell_usable(local):
    a_bad_path_leaves_builtins_working(local, ROOT)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_path_without_programs_leaves_the_docker_shell_usable(toy_images):
    from swehero.agent.container import DockerRuntime
    from swehero.agent.task import OPENHANDS_ROOT, Task, agent_root
    from swehero.eval.images import image_name
    from swehero.rollout.tasks import load_tasks

    task = next(t for t in load_tasks(str(toy_images)) if t["instance_id"] == "swehero-toy__calc-1")
    root = agent_root(OPENHANDS_ROOT, Task.from_row(task))
    runtime = DockerRuntime(image_name(task), root, base_commit=task["base_commit"])
    try:
        a_bad_path_leaves_builtins_working(runtime, root)
    finally:
        runtime.close()
