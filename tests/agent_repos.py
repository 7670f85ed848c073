"""Small real git repositories for the agent tests: a base commit with a bug, the fix, and its gold patch."""

from __future__ import annotations

import subprocess
from pathlib import Path

from swehero.agent.task import Task


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def write(repo: Path, files: dict[str, str | None]) -> None:
    for rel, text in files.items():
        path = repo / rel
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def make_task(repo: Path, name: str, before: dict[str, str], after: dict[str, str | None], context: int = 3) -> Task:
    """Commit `before` (the base), then `after` on top, plus a later tag; the task's gold patch is the diff."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "t@t")
    git(repo, "config", "user.name", "t")
    write(repo, before)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD").strip()
    write(repo, after)
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached", f"-U{context}")
    git(repo, "commit", "-qm", "the fix (must stay invisible to the agent)")
    git(repo, "tag", "v-fixed")
    return Task(instance_id=f"toy__{name}-1", repo=f"toy/{name}", base_commit=base, version="0.1",
                problem_statement=f"{name} is broken", patch=patch)


CALC = {"pkg/calc.py": 'def add(a, b):\n    """Add."""\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n'}
CALC_FIX = {"pkg/calc.py": CALC["pkg/calc.py"].replace("return a - b", "return a + b", 1)}

_BLOCK = "    x = 1\n    y = 2\n    z = 3\n    return x + y + z\n"
TWINS = {"twins.py": f"def f():\n{_BLOCK}\n\ndef g():\n{_BLOCK}\n\ndef h():\n    return 0\n"}
TWINS_FIX = {"twins.py": TWINS["twins.py"].replace("def g():\n    x = 1\n    y = 2", "def g():\n    x = 1\n    y = 20")
             .replace("    return 0\n", "    return -1\n")}

LAYOUT = {"src/app/main.py": "import old\n\nprint('hi')\n", "src/app/old.py": "OLD = True\n", "README": "toy\n"}
LAYOUT_FIX = {"src/app/main.py": "import new\n\nprint('hi')\n", "src/app/old.py": None,
              "src/app/new.py": "NEW = True\n"}

# longer than one editor view (16k characters): the oracle pages through it; the 0-context hunk needs widening
BIG = {"big.py": "".join(f"def f{i}():\n    x = 1\n    return x\n\n\n" for i in range(500))}
BIG_FIX = {"big.py": BIG["big.py"].replace("def f400():\n    x = 1\n    return x\n",
                                           "def f400():\n    x = 1\n    return x + 1\n")}


class Scripted:
    """A policy that runs the given shell commands, one per turn, then finishes: for tests of what a runtime shows
    the agent (the runtime is under test, not the policy)."""

    def __init__(self, commands: list[str]) -> None:
        self.calls = [("execute_bash", {"command": c}) for c in commands] + [("finish", {"message": "done"})]

    def act(self, messages: list[dict], tools: list[dict]):
        import json

        from swehero.agent.policy import Reply

        name, args = self.calls.pop(0)
        call = {"id": f"call_{len(self.calls)}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}
        return Reply({"role": "assistant", "content": "", "tool_calls": [call]})

# lines holding breaks that `str.splitlines` splits at, but a file's lines do not: a form feed, a Unicode line separator
PAGES = {"pages.py": "a = 1\n\x0c\nb = 2\ns = 'x\u2028y'\n"}
PAGES_FIX = {"pages.py": "a = 1\n\x0c# page\nb = 2\ns = 'x\u2028z'\n"}
