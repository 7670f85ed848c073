"""The local runtime's sandbox (real bubblewrap) and execute_bash's observations."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from agent_repos import CALC, CALC_FIX, Scripted, make_task
from layout_repos import GENERATED, make_layout_task
from openhands_session import replay, replay_editor

import swehero
from swehero.agent.bash_session import MAX_OBSERVATION_CHARS, STILL_RUNNING, TRUNCATED
from swehero.agent.loop import run_episode
from swehero.agent.local import SYSTEM_DIRS, VENV_ROOT, LocalRuntime, MissingRepository, find_bwrap
from swehero.agent.run import run_task
from swehero.agent.runtime import STATE_DIR, RuntimeConfig
from swehero.agent.settings import AgentSettings
from swehero.agent.taskenv import EnvSettings, ensure_env
from swehero.agent.tools import Tools
from swehero.errors import Unavailable

pytestmark = pytest.mark.bwrap
ROOT = "/workspace/toy__calc__0.1"


@pytest.fixture
def rt(tmp_path):
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    runtime = LocalRuntime.for_task(tmp_path / "src", task.base_commit, ROOT, tmp_path / "work",
                                    RuntimeConfig(default_timeout=20, output_cap_bytes=200_000))
    yield runtime
    runtime.close()


def bash(rt, command, mode="exec", **kw) -> str:
    return Tools(rt, mode).call("execute_bash", {"command": command, **kw}).observation


def test_observation_format_and_persistent_state(rt):
    assert bash(rt, "echo hello") == (f"hello\n[The command completed with exit code 0.]\n"
                                      f"[Current working directory: {ROOT}]\n[Command finished with exit code 0]")
    bash(rt, "cd pkg && export GREETING=hi")
    out = bash(rt, "pwd; echo $GREETING; false")
    assert out.startswith(f"{ROOT}/pkg\nhi\n[The command completed with exit code 1.]")
    assert out.endswith("[Command finished with exit code 1]")


@pytest.mark.parametrize("mode", ["zero", "exec"])
def test_a_command_bashlex_fails_on_is_answered_as_openhands_answers_it(rt, mode):
    """A command that is only a comment, or a lone backslash, makes OpenHands' escape raise, and its runtime answers
    with the error's text; here it ended the episode as the runtime's failure."""
    trailer = "\n[Error occurred in processing last action]"
    assert bash(rt, "# Let me look around first", mode) == "'str' object has no attribute 'kind'" + trailer
    assert bash(rt, "\\", mode) == "'NoneType' object has no attribute 'kind'" + trailer
    assert bash(rt, "echo ok", mode).startswith("ok\n")


def test_output_is_shown_as_a_terminal_shows_it(rt):
    """OpenHands reads commands' output from a tmux pane: no escape sequences, and carriage returns overwrite."""
    out = bash(rt, "printf '\\033[1;32mPASSED\\033[0m test_a\\n\\033]0;title\\007'; "
                   "printf 'fetch 10%%\\rfetch 55%%\\rfetch 100%%\\ndone\\r\\n'; printf 'step 3/3\\r\\033[Kok\\n'")
    assert out.startswith("PASSED test_a\nfetch 100%\ndone\nok\n[The command completed with exit code 0.]"), out
    # OpenHands strips each row at its end and the whole output at both ends
    assert bash(rt, "printf '\\n\\n   lead\\ntrail   \\n\\n'").startswith("lead\ntrail\n[The command completed")
    # past the pane's screen and history, the last rows tmux kept, under OpenHands' note
    out = bash(rt, "seq 1 20000")
    assert out.startswith("[Previous command outputs are truncated. Showing the last 10013 lines of the output "
                          "below.]\n9989\n9990\n") and "\n20000\n[The command completed with exit code 0.]" in out


def test_a_command_bash_drops_while_expanding_costs_one_round_trip(rt, monkeypatch):
    """bash prints why and runs nothing; the observation's working directory is the one the expansion's own round
    trip found, not a second start of the sandbox."""
    bash(rt, "cd pkg")
    calls = []
    monkeypatch.setattr(rt, "execute", lambda command, timeout, execute=rt.execute:
                        calls.append(command) or execute(command, timeout))
    out = bash(rt, "python3 -c \"print('Done!')\"")
    assert out == ("bash: !': event not found\n[The command completed with exit code 0.]\n"
                   f"[Current working directory: {ROOT}/pkg]\n[Command finished with exit code 0]")
    assert len(calls) == 1


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_a_long_output_loses_its_top_only_when_the_next_prompt_comes(rt):
    """In OpenHands' pane a running command has no prompt below it: 10,985 rows show whole while it runs. Once it
    ends, the next prompt pushes the pane's first 1,000 rows out, and OpenHands shows everything from the row that is
    now first again (the same texts as OpenHands' own bash session gave for these two calls)."""
    tools = Tools(rt, "exec")
    running = tools.call("execute_bash", {"command": "seq 1 10985; sleep 3", "timeout": 1}).observation
    assert running.startswith("1\n2\n3\n") and "[The command timed out after 1.0 seconds." in running
    ended = tools.call("execute_bash", {"command": "", "timeout": 10}).observation
    assert ended.startswith("989\n990\n") and "\n10985\n[The command completed with exit code 0.]" in ended


def test_checkout_is_at_base_without_later_history(rt):
    out = bash(rt, "cat pkg/calc.py; git log --all --oneline | wc -l; git tag; git branch -a; git status --short")
    assert "return a - b" in out.split("\n")[2]
    assert "\n1\n* main\n[The command completed" in out  # one commit, no tags, one branch, clean tree
    assert "v-fixed" not in out and "must stay invisible" not in bash(rt, "git log --all; git reflog")


def test_writes_outside_the_checkout_fail(rt):
    out = bash(rt, f"touch /usr/pwned /etc/pwned /pwned /workspace/pwned {STATE_DIR}/../pwned; touch {ROOT}/ok "
                   "/tmp/ok && echo written")
    assert out.count("Read-only file system") == 5 and "written" in out, out
    assert not os.path.exists("/usr/pwned") and not os.path.exists("/etc/pwned")
    assert (rt.checkout / "ok").exists() and (rt.workdir / "tmp" / "ok").exists()


def test_links_in_the_state_folder_lead_the_host_nowhere(rt, tmp_path):
    """The state folder is the host's, writable inside: links the agent put at the names of its files made the host
    write the next command to a host file, show a host file as the directory or interpreter of the next
    observation, and put a host file in the patch."""
    secret, written = tmp_path / "secret", tmp_path / "written"
    secret.write_text("HOST SECRET\n")
    bash(rt, f"ln -sf {written} {STATE_DIR}/cmd")
    assert "hello" in bash(rt, "echo hello") and not written.exists()
    # the trap rewrites cwd and python when a command ends: kill the shell so that the links stay
    out = bash(rt, f"ln -sf {secret} {STATE_DIR}/cwd; ln -sf {secret} {STATE_DIR}/python; kill -9 $$")
    assert "SECRET" not in out and f"[Current working directory: {ROOT}]" in out, out
    bash(rt, f"echo '# change' >> pkg/calc.py; ln -sf {secret} {STATE_DIR}/patch; rm {STATE_DIR}/cmd; "
             f"mkdir {STATE_DIR}/cmd")
    assert bash(rt, "echo again").startswith("again\n")  # a folder at the command's name is replaced by it
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=rt.checkout, capture_output=True, text=True).stdout
    patch = rt.patch(head.strip())
    assert "+# change" in patch and "SECRET" not in patch, patch


def test_a_command_run_by_root_can_neither_remount_nor_change_the_kernels_settings_nor_see_host_paths(rt):
    """Started by root, bwrap kept every capability and uid 0 was the host's: `mount -o remount,rw` made /etc and
    /usr writable, and /proc/sys/kernel/core_pattern (which uid 0 owns) could point at a host program the kernel
    runs as root. bwrap's own command line and environment (process 1) named the host folders bound in and the
    launcher's variables (its keys)."""
    out = bash(rt, "grep CapEff /proc/self/status; mount -o remount,rw,bind /etc || echo no-remount; "
                   "v=$(cat /proc/sys/kernel/core_pattern); (printf %s \"$v\" > /proc/sys/kernel/core_pattern) "
                   "2>/dev/null || echo no-sysctl; tr '\\0' ' ' < /proc/1/cmdline; echo; tr '\\0' ' ' < /proc/1/environ")
    assert re.search(r"CapEff:\s+0{16}\n", out) and "no-remount" in out and "no-sysctl" in out, out
    assert str(rt.workdir) not in out and str(rt.checkout) not in out and "/usr/bin/bwrap --args" in out, out
    assert os.environ["PATH"] not in out and "PYTHONPATH" not in out, out  # nor the launcher's environment


def test_closing_removes_a_folder_a_command_made_unreadable(tmp_path):
    """Not being root, `rmtree(ignore_errors=True)` cannot enter a folder the agent made mode 0: the folder and what
    it holds stayed on disk. Run as root, the test removes as `nobody` (root enters any folder)."""
    from swehero.agent.local import remove_tree

    top = Path(tempfile.mkdtemp(dir="/tmp"))
    blob = top / "d" / "e" / "blob"

    def leave_and_remove() -> None:
        blob.parent.mkdir(parents=True)
        blob.write_bytes(b"x" * 1000)
        os.chmod(top / "d", 0)
        remove_tree(top)

    if os.geteuid() != 0:
        leave_and_remove()
        assert not top.exists()
        return
    os.chown(top, 65534, 65534)
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            leave_and_remove()
            os._exit(0 if not top.exists() else 1)
        except BaseException:
            os._exit(2)
    status = os.waitpid(pid, 0)[1]
    shutil.rmtree(top, ignore_errors=True)
    assert os.waitstatus_to_exitcode(status) == 0


def test_private_tmp_no_network_own_pids(rt):
    bash(rt, "echo state > /tmp/keep")
    assert "state" in bash(rt, "cat /tmp/keep")  # /tmp persists within the rollout ...
    assert not os.path.exists("/tmp/keep")  # ... but is not the host's
    interfaces = bash(rt, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").split("\n[")[0]
    assert interfaces == "lo"  # a network namespace of its own, loopback only
    out = bash(rt, "getent hosts example.com || echo no-dns; (exec 3<>/dev/tcp/1.1.1.1/80) 2>&1 | head -1")
    assert "no-dns" in out and "93.184" not in out
    pids = bash(rt, "ls /proc | grep -E '^[0-9]+$' | wc -l").split("\n")[0]
    assert int(pids) < 10


@pytest.mark.slow  # seconds of real processes: the fast tier stays under 2 minutes
def test_timeout_kills_the_whole_process_tree(rt):
    """A command run to its end (`execute`: installs, patches) dies at its time limit with everything it started;
    an agent's command past its limit keeps running until the next episode's first command, the patch or the end."""
    marker = f"sleep {1000 + os.getpid() % 1000}.5"
    tree = f"({marker} &) ; setsid {marker} & nohup {marker} >/dev/null 2>&1 & echo started; {marker}"
    running = lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout  # noqa: E731
    t = time.monotonic()
    result = rt.execute(tree, 2)
    assert time.monotonic() - t < 10
    # The shell reports the two jobs it put in the background, as OpenHands' interactive shell does.
    jobs = r"\[1\] \d+\n\[2\] \d+\nstarted\n"
    assert re.fullmatch(jobs, result.output) and (result.exit_code, result.timed_out) == (-1, True)
    time.sleep(0.5)
    assert running() == b""
    out = bash(rt, tree, timeout=2)
    assert re.fullmatch(jobs + re.escape(f"[The command timed out after 2.0 seconds. {STILL_RUNNING}]"), out)
    assert running() != b""
    rt.patch("HEAD")
    time.sleep(0.5)
    assert running() == b""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_command_outlives_its_call_as_in_openhands(rt):
    """OpenHands 0.54's bash session: a call without `timeout` returns once the command is quiet for a while (10 s
    there), and the command runs on; the next calls wait again (''), type into it or send keys (`is_input`), and
    any other command is not run. Calls recorded from OpenHands' own bash session give the same observations here."""
    replay(rt, ROOT)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_command_quiet_for_twelve_seconds_is_waited_for_as_openhands_swebench_evaluation_waits(rt):
    """OpenHands' SWE-bench evaluation (training data, the paper's figures) returns a call after 30 s without
    output, not its product's 10 s: a test run that prints nothing for 12 s comes back finished, with its exit code,
    not as a command still running."""
    assert rt.config.no_output_timeout == RuntimeConfig().no_output_timeout  # the fixture keeps the default
    assert bash(rt, "sleep 12; echo end").startswith("end\n[The command completed with exit code 0.]")


def quiet_after(rt, seconds: float) -> Tools:
    """The agent's tools, with commands returned from after `seconds` without output."""
    rt.config = dataclasses.replace(rt.config, no_output_timeout=seconds)
    return Tools(rt, "exec")


NO_NEW_OUTPUT = f"[The command has no new output after 1 seconds. {STILL_RUNNING}]"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_command_that_ended_since_the_last_call_lets_the_next_one_run(rt):
    """OpenHands looks at its pane before it refuses a new command: the previous one has ended meanwhile, so the new
    one runs, typed below the pane's last prompt. Its observation starts with what the previous command wrote since
    the last call and the blank rows before that prompt, then the new command's echo (no longer at the start, so not
    cut); with nothing new, it is the usual one. `$?` is the previous command's."""
    tools = quiet_after(rt, 1)
    bash = lambda command, **kw: tools.call("execute_bash", {"command": command, **kw}).observation  # noqa: E731
    assert bash("sleep 2; echo finished") == "\n" + NO_NEW_OUTPUT
    time.sleep(3)
    assert bash("echo next").startswith("finished\n\n\necho next\nnext\n[The command completed with exit code 0.]\n"
                                        f"[Current working directory: {ROOT}]\n")
    assert bash("sleep 2; false") == "\n" + NO_NEW_OUTPUT
    time.sleep(3)
    assert bash("echo $?").startswith("1\n[The command completed with exit code 0.]\n")
    # the new command outlives its call too: OpenHands shows the whole under the continuation note, and then only
    # what is new
    assert bash("sleep 2; printf end") == "\n" + NO_NEW_OUTPUT
    time.sleep(3)
    assert bash("echo x; sleep 2") == ("[Below is the output of the previous command.]\nend\n\necho x; sleep 2\nx\n"
                                       + NO_NEW_OUTPUT)
    assert bash("", timeout=20).startswith("\n[The command completed with exit code 0.]\n")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_zero_mode_checks_a_command_typed_after_one_that_ended_unseen_as_any_new_one(rt):
    """The history expansion of a command that runs because the last one ended since the last call is checked: the
    quick substitution `^ls^python3` makes the last command run python."""
    rt.config = dataclasses.replace(rt.config, no_output_timeout=1)
    tools = Tools(rt, "zero")
    assert tools.call("execute_bash", {"command": "sleep 2; ls -d ."}).observation == "\n" + NO_NEW_OUTPUT
    time.sleep(3)
    outcome = tools.call("execute_bash", {"command": "^ls^python3"})
    assert outcome.error and outcome.banned == ["python3"], outcome


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_command_refused_while_the_previous_runs_shows_the_new_output(rt):
    """What the running command wrote since the last call comes above the refusal, as OpenHands shows it, and not
    again after it."""
    tools = quiet_after(rt, 1)
    bash = lambda command, **kw: tools.call("execute_bash", {"command": command, **kw}).observation  # noqa: E731
    assert bash("sleep 2; echo mid; sleep 30") == "\n" + NO_NEW_OUTPUT
    time.sleep(4)
    assert bash("echo next") == (
        '[Below is the output of the previous command.]\nmid\n[Your command "echo next" is NOT executed. The previous '
        "command is still running - You CANNOT send new commands until the previous command is completed. By setting "
        f"`is_input` to `true`, you can interact with the current process: {STILL_RUNNING}]")
    assert bash("C-c", is_input="true").startswith("^C\n[The command completed with exit code 130. CTRL+C was sent.]")


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_ctrl_c_interrupts_also_when_swehero_runs_in_the_background(rt):
    """A shell starts a background job with SIGINT ignored, and children inherit that: the sandbox must not, or the
    agent's Ctrl-C would do nothing (the replay above failed so when CI ran in the background)."""
    tools = Tools(rt, "exec")
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        running = tools.call("execute_bash", {"command": "sleep 30", "timeout": 1}).observation
        assert running.startswith("\n[The command timed out after 1.0 seconds.")
        interrupted = tools.call("execute_bash", {"command": "C-c", "is_input": "true", "timeout": 20}).observation
        assert interrupted.startswith("^C\n[The command completed with exit code 130. CTRL+C was sent.]"), interrupted
    finally:
        signal.signal(signal.SIGINT, ignored)


def test_editor_calls_recorded_from_openhands_give_the_same_observations_and_files(rt):
    replay_editor(rt, ROOT)


def test_a_view_of_a_binary_file_is_refused_as_openhands_refuses_it(rt):
    """OpenHands' runtime asks binaryornot before its editor checks anything: a binary over the editor's 10 MB is
    refused as binary too, and so is any `.pyc` path, even one that does not exist."""
    (rt.checkout / "blob.bin").write_bytes(b"\x00\x01\xff")
    (rt.checkout / "big.bin").write_bytes(b"\x00\x01\xff" * (4 << 20))
    (rt.checkout / "big.txt").write_text("x = 1\n" * (2 << 20))
    tools, refused = Tools(rt, "exec"), ("ERROR_BINARY_FILE\n[Error occurred in processing last action]", True)
    for name in ("blob.bin", "big.bin", "nowhere.pyc"):
        view = tools.call("str_replace_editor", {"command": "view", "path": f"{ROOT}/{name}"})
        assert (view.observation, view.error) == refused, name
    view = tools.call("str_replace_editor", {"command": "view", "path": f"{ROOT}/big.txt"})
    assert view.error and "File is too large (12.0MB). Maximum allowed size is 10MB." in view.observation
    edit = tools.call("str_replace_editor", {"command": "str_replace", "path": f"{ROOT}/big.bin", "old_str": "a",
                                             "new_str": "b"})
    assert edit.error and "File is too large" in edit.observation  # its editor checks the size first
    # a NUL byte in a view's path: binaryornot fails to open it, so does OpenHands' action (the episode ends in
    # error); a `.pyc` path is binary before it is opened (the edits' answers are in the recorded calls)
    with pytest.raises(ValueError, match="embedded null byte in the path of a view"):
        tools.call("str_replace_editor", {"command": "view", "path": f"{ROOT}/pkg/calc.py\0"})
    view = tools.call("str_replace_editor", {"command": "view", "path": f"{ROOT}/x\0.pyc"})
    assert (view.observation, view.error) == refused


def test_an_insert_line_written_as_a_string_is_read_as_openhands_reads_it(rt):
    tools, path = Tools(rt, "exec"), f"{ROOT}/pkg/calc.py"
    assert tools.call("str_replace_editor", {"command": "insert", "path": path, "insert_line": "1",
                                             "new_str": "# one"}).observation.startswith(f"The file {path} has been")
    assert (rt.checkout / "pkg" / "calc.py").read_text().split("\n")[1] == "# one"
    bad = tools.call("str_replace_editor", {"command": "insert", "path": path, "insert_line": "two", "new_str": "x"})
    assert (bad.observation, bad.error) == ("ERROR:\nInvalid insert_line value: 'two'. Expected an integer.", True)


def test_an_edits_observation_is_cut_as_openhands_memory_cuts_it_and_a_views_is_not(rt):
    """OpenHands sends an edit's observation (its snippet, or an error quoting `old_str`) cut to 30,000 characters,
    and a view as the editor clipped it: a replacement of 6,000 one-letter lines, whose snippet the editor clips
    before it numbers every line, is cut; the file's view is not (the editor clips a view's file at 16,000
    characters, then numbers the lines)."""
    tools, path = Tools(rt, "exec"), f"{ROOT}/pkg/calc.py"
    many = "b\n" * 6000
    edit = tools.call("str_replace_editor", {"command": "str_replace", "path": path, "old_str": "def add",
                                             "new_str": many + "def add"}).observation
    assert len(edit) == MAX_OBSERVATION_CHARS + len(TRUNCATED) and TRUNCATED in edit
    assert edit.startswith(f"The file {path} has been edited.") and edit.endswith("Edit the file again if necessary.")
    missing = tools.call("str_replace_editor", {"command": "str_replace", "path": path, "old_str": "c\n" * 16000,
                                                "new_str": "y"})
    assert missing.error and missing.observation.startswith("ERROR:\nNo replacement was performed") and \
        len(missing.observation) == MAX_OBSERVATION_CHARS + len(TRUNCATED)
    view = tools.call("str_replace_editor", {"command": "view", "path": path}).observation
    assert TRUNCATED not in view and len(view) > MAX_OBSERVATION_CHARS  # 12,000 characters of file, numbered


def test_background_processes_end_with_their_command(rt):
    marker = f"sleep {2000 + os.getpid() % 1000}.5"
    out = bash(rt, f"{marker} & echo bg")
    assert re.match(r"\[1\] \d+\nbg\n\[The command completed with exit code 0.\]", out)  # the job reported
    time.sleep(0.5)
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout == b""


def test_each_command_closes_its_terminal(rt, monkeypatch):
    """Every command gets a pseudo-terminal: both ends are closed after it, also when the sandbox fails to start
    (a rollout runs hundreds of commands, and a distillation many rollouts in one process)."""
    open_fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = open_fds()
    for _ in range(3):
        assert rt.execute("test -t 1 && echo on-a-terminal", 10).output == "on-a-terminal\n"
    monkeypatch.setattr(rt, "bwrap", "/nonexistent/bwrap")
    with pytest.raises(FileNotFoundError):
        rt.execute("true", 10)
    assert open_fds() == before


@pytest.mark.slow  # seconds of real processes: the fast tier stays under 2 minutes
def test_output_caps_hold(rt):
    t = time.monotonic()
    out = bash(rt, "yes 0123456789 | head -c 50000000; echo; echo END")
    assert time.monotonic() - t < 30
    assert len(out) < MAX_OBSERVATION_CHARS + 400
    assert "[... Observation truncated due to length ...]" in out and "END\n[The command completed" in out
    # OpenHands cuts the output, then the whole message: half the limit from each end of what the model gets
    out = bash(rt, "seq 1000000 1005000")
    lines = "\n".join(str(i) for i in range(1000000, 1005001))
    trailer = (f"\n[The command completed with exit code 0.]\n[Current working directory: {ROOT}]"
               "\n[Command finished with exit code 0]")
    half = MAX_OBSERVATION_CHARS // 2
    assert out == lines[:half] + "\n[... Observation truncated due to length ...]\n" + (lines + trailer)[-half:]
    out = bash(rt, "yes", timeout=2)  # endless output: the call ends at its deadline, memory stays capped
    assert f"timed out after 2.0 seconds. {STILL_RUNNING}]" in out and len(out) < MAX_OBSERVATION_CHARS + 400


def test_interactive_input_is_refused_when_no_command_runs(rt):
    """As OpenHands answers when no command is running: an empty command asks for more output, input interacts."""
    tools = Tools(rt, "exec")
    assert tools.call("execute_bash", {"command": "y", "is_input": "true"}).observation == (
        "ERROR: No previous running command to interact with.")
    for command in ("", "  "):
        assert tools.call("execute_bash", {"command": command, "is_input": "false"}).observation == (
            "ERROR: No previous running command to retrieve logs from.")
    # Only the string "true" is input to OpenHands; anything else runs as a command.
    for flag in (True, "True", "yes"):
        assert "[Command finished with exit code 0]" in tools.call(
            "execute_bash", {"command": "echo ran", "is_input": flag}).observation


def test_several_commands_on_separate_lines_are_refused_as_openhands_refuses_them(rt):
    """OpenHands' bash session splits a command with bashlex and runs nothing when it finds more than one."""
    outcome = Tools(rt, "exec").call("execute_bash", {"command": "touch ran\n# then list\nls -1  \n"})
    assert outcome.error and outcome.observation == (
        "ERROR: Cannot execute multiple commands at once.\nPlease run each command separately OR chain them into a "
        "single command via && or ;\nProvided commands:\n(1) touch ran\n# then list\n(2) ls -1\n"
        "[Error occurred in processing last action]")
    assert not (rt.checkout / "ran").exists()
    # cut to 30,000 characters as every error OpenHands' memory shows (a long line was shown whole)
    long = Tools(rt, "exec").call("execute_bash", {"command": f"echo {'x' * 40_000}\necho done"}).observation
    assert len(long) < 30_200 and "Observation truncated" in long
    assert long.endswith("(2) echo done\n[Error occurred in processing last action]")
    # One top-level command each: chained, a compound, a quoted newline, a continued line; and a here-document
    # ending the command, which bashlex cannot parse, so OpenHands runs it whole.
    for command in ("touch a; touch b && touch c", "for f in d e; do\n  touch $f\ndone", "echo 'x\ny' > f",
                    "touch \\\n  g", "cat > h <<'EOF'\nline one\nEOF"):
        assert "[The command completed with exit code 0.]" in bash(rt, command), command
    assert sorted(p.name for p in rt.checkout.iterdir() if len(p.name) == 1) == list("abcdefgh")
    assert (rt.checkout / "h").read_text() == "line one\n"


def test_zero_mode_refuses_banned_commands_before_running_them(rt):
    tools = Tools(rt, "zero")
    outcome = tools.call("execute_bash", {"command": "touch ran && bash -c 'python3 -c 1'"})
    assert outcome.banned == ["python3"] and outcome.error
    assert outcome.observation.startswith("ERROR: Command refused, nothing was run: it would execute `python3`.")
    assert not (rt.checkout / "ran").exists()
    computed = tools.call("execute_bash", {"command": "touch ran; $RUNNER tests"})
    assert computed.error and computed.banned == ["$RUNNER"] and not (rt.checkout / "ran").exists()
    assert computed.observation.startswith("ERROR: Command refused, nothing was run: the program it runs (`$RUNNER`) "
                                           "is only known when the command runs")
    # Written as one grep, but OpenHands' escaping makes the shell run `python3` too (`keystrokes`).
    hidden = tools.call("execute_bash", {"command": "touch ran; grep -n x\\|python3 pkg/calc.py"})
    assert hidden.banned == ["python3"] and not (rt.checkout / "ran").exists()
    # Nor does bash's history expansion: `!!:1-2` makes `python3 -V` of the words of an allowed command.
    tools.call("execute_bash", {"command": "echo python3 -V"})
    recalled = tools.call("execute_bash", {"command": "touch ran; !!:1-2"})
    assert recalled.banned == ["python3"] and not (rt.checkout / "ran").exists()
    allowed = tools.call("execute_bash", {"command": "grep -rn add ."})
    assert "[The command completed with exit code 0.]" in allowed.observation and not allowed.banned


def test_the_editor_follows_links_as_the_sandbox_follows_them(rt):
    """A link's absolute target is a path in the sandbox: `/workspace/...` leads into the checkout, and the host's own
    path of the checkout leads nowhere there, so the editor neither refuses the one nor follows the other."""
    bash(rt, f"ln -s {ROOT}/pkg/calc.py abs.py && ln -s {ROOT}/pkg absdir && ln -s {rt.checkout}/pkg/calc.py host.py")
    assert "def add(a, b):" in bash(rt, "cat abs.py absdir/calc.py") and "No such file" in bash(rt, "cat host.py")
    editor = lambda **kw: Tools(rt, "exec").call("str_replace_editor", kw).observation  # noqa: E731
    assert "     3\t    return a - b" in editor(command="view", path=f"{ROOT}/abs.py")
    editor(command="str_replace", path=f"{ROOT}/abs.py", old_str="return a - b\n\n\n", new_str="return a + b\n\n\n")
    editor(command="str_replace", path=f"{ROOT}/absdir/calc.py", old_str='"""Add."""', new_str='"""Sum."""')
    assert (rt.checkout / "pkg" / "calc.py").read_text().startswith('def add(a, b):\n    """Sum."""\n    return a + b')
    assert (rt.checkout / "abs.py").is_symlink() and (rt.checkout / "absdir").is_symlink()
    assert f"{ROOT}/absdir/calc.py" in editor(command="view", path=ROOT)
    assert "outside the repository" in editor(command="view", path=f"{ROOT}/host.py")
    bash(rt, f"ln -s {ROOT}/loop loop")
    assert f"{ROOT}/loop\n" in editor(command="view", path=ROOT)
    assert "Too many levels of symbolic links" in editor(command="view", path=f"{ROOT}/loop")


def test_patch_includes_new_files_and_ignores_agent_git_config(rt):
    bash(rt, "git config core.fsmonitor 'touch /tmp/fsmonitor-ran; echo'; echo new > added.txt")
    assert "ok" in bash(rt, "python3 -c 'import pkg.calc' && ls pkg/__pycache__ | grep -q pyc && echo ok")
    patch = rt.patch(rt.files.root and "HEAD")
    assert "+++ b/added.txt" in patch and "__pycache__" not in patch
    assert not os.path.exists(rt.workdir / "tmp" / "fsmonitor-ran")


def test_patch_of_files_not_in_utf8_applies_byte_for_byte(rt, tmp_path):
    """A prediction is text: a changed Latin-1 file travels as a git binary patch, every other file as text."""
    bash(rt, "printf '# -*- coding: latin-1 -*-\\nname = \"caf\\351\"\\nx = 1\\n' > latin.py && "
             "printf 'old \\351\\n' > 'odd *[name] \"q\".txt' && printf 'bye \\351\\n' > gone.txt && "
             "git add -A && git -c user.name=t -c user.email=t@t commit -qm 'Latin-1 files'")
    base = bash(rt, "git rev-parse HEAD").split("\n")[0]
    Tools(rt, "exec").call("str_replace_editor", {"command": "str_replace", "path": f"{ROOT}/latin.py",
                                                  "old_str": "x = 1", "new_str": "x = 2"})
    bash(rt, "printf 'new \\351\\n' >> 'odd *[name] \"q\".txt' && rm gone.txt && printf 'plain\\n' >> pkg/calc.py")
    patch = rt.patch(base)
    assert "\ufffd" not in patch and patch.count("GIT binary patch") == 3
    assert "+plain" in patch  # the UTF-8 file stays a readable text diff
    check = tmp_path / "check"
    subprocess.run(["git", "clone", "-q", str(rt.checkout), str(check)], check=True)
    subprocess.run(["git", "-C", str(check), "checkout", "-q", base], check=True)
    subprocess.run(["git", "-C", str(check), "apply", "-"], input=patch.encode(), check=True)
    for name in ("latin.py", 'odd *[name] "q".txt', "pkg/calc.py"):
        assert (check / name).read_bytes() == (rt.checkout / name).read_bytes(), name
    assert (check / "latin.py").read_bytes().endswith("caf\xe9\"\nx = 2\n".encode("latin-1"))
    assert not (check / "gone.txt").exists()


def test_binary_files_are_left_out_of_the_patch_as_openhands_leaves_them_out(rt):
    """OpenHands' SWE-bench evaluation drops what git diffs as binary (remove_binary_diffs); the prediction carried
    them as base85 git binary patches, an agent's database or image of any size among them."""
    bash(rt, "printf 'PNG\\0\\1\\2' > logo.png && printf '*.dat binary\\n' > .gitattributes && git add -A && "
             "git -c user.name=t -c user.email=t@t commit -qm 'a binary file'")
    base = bash(rt, "git rev-parse HEAD").split("\n")[0]
    bash(rt, "printf 'PNG\\0\\3' > logo.png && printf 'db\\0\\0' > cache.sqlite && printf 'text\\n' > data.dat && "
             "printf 'caf\\351\\n' > latin.txt && printf 'plain\\n' >> pkg/calc.py")
    patch = rt.patch(base)
    assert not any(name in patch for name in ("logo.png", "cache.sqlite", "data.dat"))
    assert "+plain" in patch and patch.count("GIT binary patch") == 1 and "latin.txt" in patch  # text not in UTF-8


def test_missing_bwrap_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Unavailable, match="apt-get install bubblewrap"):
        find_bwrap()


def test_missing_setsid_says_what_to_install(tmp_path):
    (tmp_path / "repo").mkdir()
    with pytest.raises(Unavailable, match="`setsid` \\(util-linux\\) is not on the sandbox's PATH"):
        LocalRuntime(tmp_path / "repo", "/testbed", tmp_path / "work", RuntimeConfig(path=str(tmp_path)))


REFUSED_NAMESPACES = """
import json, sys
from pathlib import Path
from swehero.agent.local import LocalRuntime
from swehero.agent.run import check_ready
from swehero.agent.settings import AgentSettings
from swehero.errors import Unavailable
said = []
for start in (lambda: check_ready(AgentSettings()),
              lambda: LocalRuntime(Path(sys.argv[1]), "/testbed", Path(sys.argv[2]))):
    try:
        start()
        said.append(None)
    except Unavailable as e:
        said.append(str(e))
print(json.dumps(said))
"""


def test_a_kernel_refusing_the_sandboxs_namespaces_stops_the_run_before_any_attempt(tmp_path):
    """As on a host with `user.max_user_namespaces=0` (or in a container, or under Ubuntu 24.04's AppArmor rule):
    bwrap is installed but cannot make its namespaces, so every command of every attempt would fail. Here the kernel
    refuses them for real, inside a user namespace made with `--disable-userns`."""
    refusing = ["bwrap", "--unshare-user", "--disable-userns", "--dev-bind", "/", "/"]
    if subprocess.run([*refusing, "true"], capture_output=True).returncode != 0:
        pytest.skip("this bubblewrap or kernel cannot make a user namespace that refuses nested ones")
    (tmp_path / "repo").mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(swehero.__file__).parents[1])}
    ran = subprocess.run([*refusing, sys.executable, "-c", REFUSED_NAMESPACES, str(tmp_path / "repo"),
                          str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    ready, runtime = json.loads(ran.stdout)
    assert ready is not None, "check_ready passed where no sandbox can be made"
    assert ready.startswith("bubblewrap cannot make its sandbox on this machine (bwrap: ") and "\n" not in ready
    assert "--runtime docker" in ready
    assert runtime == ready  # the runtime itself refuses to start alike


def test_an_episode_whose_patch_cannot_be_taken_is_an_agent_error(tmp_path):
    """A runtime broken during the episode (here: its repository gone) leaves no patch to grade or train on: the
    attempt is the infrastructure's failure, counted and retried as such, not a submission with an empty patch."""
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    runtime = LocalRuntime.for_task(tmp_path / "src", task.base_commit, ROOT, tmp_path / "work")
    opening = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "Fix calc."}]
    try:
        record = run_episode(task, Scripted(["rm -rf .git"]), Tools(runtime, "exec"), opening)
    finally:
        runtime.close()
    meta = record["metadata"]
    assert meta["finish_reason"] == "agent_error", meta
    assert meta["error"].startswith("taking the patch failed: git diff failed in the checkout")
    assert meta["patch_error"] and record["patch"] == ""


def test_agent_run_leaves_no_history_behind_but_a_shared_history_stays(tmp_path):
    """A single attempt's own copy of the task's history goes with its runtime; a run's copy, shared by the task's
    attempts, is the run's to remove."""
    task = make_task(tmp_path / "src", "calc", CALC, CALC_FIX)
    settings = AgentSettings(policy="oracle", mode="zero")
    record = run_task(task, settings, source_repo=tmp_path / "src", workdir=tmp_path / "work")
    assert record["metadata"]["finish_reason"] == "submitted" and record["patch"]
    assert list((tmp_path / "work").rglob("*")) == []
    run_task(task, settings, source_repo=tmp_path / "src", workdir=tmp_path / "work",
             history_cache=tmp_path / "shared")
    assert [p.name for p in (tmp_path / "shared").iterdir()] == [f"{task.base_commit}.git"]
    assert list((tmp_path / "work").rglob("*")) == []


def test_bad_timeouts_and_extra_arguments(rt):
    tools = Tools(rt, "exec")
    for bad in (-1, 0, float("nan")):  # numbers OpenHands takes; its runtime would not wait or wait for ever
        outcome = tools.call("execute_bash", {"command": "echo hi", "timeout": bad})
        assert outcome.error and outcome.observation.startswith("ERROR: Invalid `timeout` parameter")
    outcome = tools.call("execute_bash", {"command": "echo hi", "timeout": "soon"})  # refused as OpenHands does
    assert outcome.error and outcome.observation.startswith("Invalid float passed to 'timeout' argument: soon")
    outcome = tools.call("execute_bash", {"command": "echo hi", "timeout": "3", "security_risk": "LOW"})
    assert outcome.observation.startswith("hi\n[The command completed with exit code 0.]")
    big = tools.call("execute_bash", {"command": "sleep 0.1", "timeout": 10**9})  # no bound, as in OpenHands
    assert not big.error


@pytest.mark.slow  # a few seconds: the fast tier stays under 2 minutes
def test_only_the_allow_list_exists_inside():
    """A run directory, a file planted beside it, the task file with its gold patches, the source repository,
    another rollout, the project, home folders: none of them exists inside (outside /tmp, where the old
    deny-list sandbox showed them read-only)."""
    base = Path(tempfile.mkdtemp(prefix="swehero-test-", dir="/var/tmp"))
    try:
        task = make_task(base / "src", "calc", CALC, CALC_FIX)
        (base / "planted.txt").write_text("secret\n")
        tasks = base / "tasks.jsonl"
        tasks.write_text(json.dumps({"instance_id": task.instance_id, "patch": task.patch}) + "\n")
        first = LocalRuntime.for_task(base / "src", task.base_commit, ROOT, base / "run")
        second = LocalRuntime.for_task(base / "src", task.base_commit, ROOT, base / "run")
        try:
            project = Path(swehero.__file__).resolve().parents[1]
            for path in (base / "planted.txt", tasks, base / "src" / ".git" / "config", second.checkout / "pkg",
                         project / "setup.cfg", Path.home(), "/home", "/var", "/opt", "/srv", "/mnt", "/root"):
                out = bash(first, f"cat {path} || ls {path}")
                assert "No such file or directory" in out and "secret" not in out, (path, out)
            top = set(bash(first, "ls -A /").split("\n[")[0].split())
            assert top <= {*SYSTEM_DIRS, "proc", "dev", "tmp", STATE_DIR.strip("/"), "workspace"}, top
            # the agent's tools still work: git, grep, sed, find, the system python in execution mode
            out = bash(first, "git log --oneline | wc -l; grep -c 'def ' pkg/calc.py; sed -n 1p pkg/calc.py; "
                              "find . -name '*.py' -not -path './.git/*' | wc -l; python3 -c 'print(6 * 7)'")
            assert out.startswith("1\n2\ndef add(a, b):\n1\n42\n[The command completed with exit code 0.]"), out
        finally:
            first.close()
            second.close()
    finally:
        shutil.rmtree(base)


def test_missing_repository_is_named(tmp_path):
    with pytest.raises(MissingRepository, match="no git repository at .*toy__calc: clone it there"):
        LocalRuntime.for_task(tmp_path / "toy__calc", "HEAD", ROOT, tmp_path / "work")


def test_an_agent_root_inside_the_sandbox_own_folders_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot appear at /usr/src/repo"):
        LocalRuntime(tmp_path, "/usr/src/repo", tmp_path / "work")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_exec_mode_runs_in_the_task_environment(tmp_path, monkeypatch):
    """`python`, `pip` and `pytest` are the task environment's, the checkout is installed into the rollout's layer
    (its generated version module kept out of the patch), and the shared environment is read-only."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # built offline: see test_eval_local_grader
    task = make_layout_task(tmp_path, GENERATED)
    repo, root = tmp_path / "repos" / "layout__vers", "/workspace/layout__vers__1.0"
    env = ensure_env(task, EnvSettings(cache=str(tmp_path / "envs")), repo)
    rt = LocalRuntime.for_task(repo, task["base_commit"], root, tmp_path / "work", RuntimeConfig(default_timeout=60),
                               env=env)
    try:
        # -B: a bytecode cache written now would record the checkout's mtime, and the fix below is the same size and
        # may land within the same second, so pytest would run the stale, unfixed module (seen once in CI).
        out = bash(rt, "command -v python pip pytest; python -B -c 'import vers; print(vers.__file__, vers.version)'")
        assert out.startswith(f"{VENV_ROOT}/bin/python\n{VENV_ROOT}/bin/pip\n{VENV_ROOT}/bin/pytest\n"
                              f"{root}/src/vers/__init__.py 1.0\n"), out
        assert f"[Python interpreter: {VENV_ROOT}/bin/python]" in out
        (rt.checkout / "fix.patch").write_text(task["patch"] + task["test_patch"])
        out = bash(rt, "git apply fix.patch && rm fix.patch && pytest -rA tests | grep -E '^(PASSED|FAILED)'")
        assert out.startswith("PASSED tests/test_vers.py::test_version\nPASSED tests/test_vers.py::test_major\n"), out
        assert "Read-only file system" in bash(rt, f"touch {env.path}/bin/planted")
        patch = rt.patch(task["base_commit"])
        assert "+++ b/src/vers/__init__.py" in patch and "_version.py" not in patch and "__pycache__" not in patch
    finally:
        rt.close()


def test_zero_mode_refuses_python_behind_the_loader_a_trap_or_a_word_with_a_hash(rt):
    """Each of these ran python in zero mode: the dynamic loader runs the program it is given, a trap's action is a
    command line, and a `#` inside a word (`$#`) or a comment's end hid the command after it."""
    tools = Tools(rt, "zero")
    for command in ["touch ran; /lib64/ld-linux-x86-64.so.2 /usr/bin/python3 -V", "touch ran; trap 'python3 -V' EXIT",
                    "touch ran; echo $#; python3 -V", 'bash -c "touch ran # a note\npython3 -V"']:
        outcome = tools.call("execute_bash", {"command": command})
        assert outcome.error and outcome.banned == ["python3"], (command, outcome)
        assert not (rt.checkout / "ran").exists(), command
    trapped = tools.call("execute_bash", {"command": "trap 'echo bye' EXIT; echo $# # no python3 here"})
    assert trapped.observation.startswith("0\n") and not trapped.banned, trapped.observation
