"""Write openhands-0.54.0-bash-session.json: the observations OpenHands 0.54.0's own BashSession gives for a sequence
of execute_bash calls that wait on, type into and interrupt running commands (tests/test_agent_sandbox.py replays
them in our sandbox and compares).

Run with Python 3.12, tmux, and `pip install libtmux bashlex pydantic`, given the source of the 0.54.0 tag:
    git -C OpenHands archive 0.54.0 openhands | tar -x -C SRC
    python record_openhands_bash_session.py SRC
Only the bash session and the observation classes are imported; the packages' __init__ files, which pull in the
whole application, are skipped.
"""

import json
import logging
import os
import sys
import tempfile
import types
from pathlib import Path

NO_CHANGE_TIMEOUT = 5
"""Seconds (OpenHands uses 10; shorter keeps the replay quick, and the texts say the number). The sleeps below
leave 2 s either side of each limit, so a loaded machine replays the same."""
CALLS = [  # (command, is_input, the agent's timeout or None)
    ("echo start; sleep 7; echo after", False, None),
    ("ls", False, None),
    ("", False, None),
    ("cd pkg && sleep 30", False, None),
    ("C-c", True, None),
    ("python3 -c 'x = input(\"name? \"); print(\"hi\", x)'", False, None),
    ("bob", True, None),
    ("cat", False, None),
    ("C-d", True, None),
    ("sleep 4; echo done", False, 2),
    ("", False, 10),
    ("for i in 1 2 3 4; do echo $i; sleep 0.5; done", False, None),
    ("sleep 30", False, None),
    ("C-z", True, None),
    ("C-c", False, None),
    ("echo typed", True, None),
    ("", False, None),
    ("seq 1 3", False, None),
    ("seq 1 10985; sleep 7", False, None),  # past the pane's history only once the next prompt comes
    ("", False, None),
    # What bash itself prints, as an interactive shell prints it (no `line N:` of a script).
    ("nosuchcmd --version", False, None),
    ("cd nowhere", False, None),
    ("if true; then echo x; fi fi", False, None),
    # What OpenHands' escaping and tmux make of a backslash before `;` or `|`, and of a final `;`.
    ("mkdir -p sub && echo x > sub/m.py", False, None),
    ('find sub -name "*.py" -exec grep -l x {} \\;', False, None),
    ('find sub -name "*.py" -exec grep -l x {} \\; | head -3', False, None),
    ('find sub -name "*.py" -exec grep -l x {} \\; 2>/dev/null', False, None),
    ("ls sub;", False, None),
    ("grep -n x\\|y sub/m.py", False, None),
    ("grep -n 'x\\|y' sub/m.py", False, None),
    # Bash's history expansion: a `!` that finds no earlier command drops its line, `$?` staying; one that finds
    # one is printed as expanded and run.
    ("ls nowhere", False, None),
    ("python3 -c \"print('Done!')\"", False, None),
    ("echo $?", False, None),
    ('echo "a!b"; echo after', False, None),
    ('for i in 1 2; do\n  echo "i!x"\n  echo $i\ndone', False, None),
    ("echo 'a!b' \"x != y\"", False, None),
    ("cat <<EOF\nkept !ec\nEOF", False, None),
    ("echo x y z", False, None),
    ("echo !$ !!", False, None),
    ("!for", False, None),
    ("^y^w", False, None),
    # A command bash cannot end yet waits, running, for its next lines: typed input gives them, Ctrl-C drops it.
    ("cat > notes.txt <<EOF\nline one", False, None),
    ("EOF", True, None),
    ("cat notes.txt", False, None),
    ("ls &&", False, None),
    ("C-c", True, None),
    ("echo 'a", False, None),
    ("b'", True, None),
]


def load(src: str):
    for name in ("openhands", "openhands.runtime", "openhands.runtime.utils", "openhands.events",
                 "openhands.events.observation", "openhands.events.action", "openhands.core", "openhands.utils",
                 "openhands.llm"):
        module = types.ModuleType(name)
        module.__path__ = [f"{src}/{name.replace('.', '/')}"]
        sys.modules[name] = module
    stubs = {"openhands.core.logger": {"openhands_logger": logging.getLogger("openhands")},
             "openhands.utils.shutdown_listener": {"should_continue": lambda: True},
             "litellm": {"ModelResponse": dict}}
    for name, attributes in stubs.items():
        sys.modules[name] = types.ModuleType(name)
        vars(sys.modules[name]).update(attributes)
    from openhands.events.action.commands import CmdRunAction
    from openhands.events.observation.error import ErrorObservation
    sys.modules["openhands.events.action"].CmdRunAction = CmdRunAction
    sys.modules["openhands.events.observation"].ErrorObservation = ErrorObservation
    from openhands.runtime.utils.bash import BashSession
    return BashSession, CmdRunAction


def main(src: str) -> None:
    BashSession, CmdRunAction = load(src)
    work = Path(tempfile.mkdtemp())
    (work / "pkg").mkdir()
    os.environ["HOME"] = tempfile.mkdtemp()  # bash's history starts empty, as in a new container
    session = BashSession(str(work), no_change_timeout_seconds=NO_CHANGE_TIMEOUT)
    session.initialize()
    warm_up = CmdRunAction(command="true")  # OpenHands' runtime runs its own set-up commands before the agent's
    warm_up.set_hard_timeout(120, blocking=False)
    session.execute(warm_up)
    recorded = []
    try:
        for command, is_input, timeout in CALLS:
            action = CmdRunAction(command=command, is_input=is_input)
            if timeout is None:
                action.set_hard_timeout(120, blocking=False)  # what the runtime sets (sandbox.timeout)
            else:
                action.set_hard_timeout(float(timeout))  # what function_calling.py sets for the agent's timeout
            observation = session.execute(action)
            text = observation.to_agent_observation() if hasattr(observation, "to_agent_observation") \
                else observation.content
            recorded.append({"command": command, "is_input": is_input, "timeout": timeout,
                             "observation": text.replace(str(work), "{root}")})
    finally:
        session.close()
    out = Path(__file__).parent / "openhands-0.54.0-bash-session.json"
    out.write_text(json.dumps({"no_change_timeout": NO_CHANGE_TIMEOUT, "calls": recorded}, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
