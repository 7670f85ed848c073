"""Leak audit: which attempts ran commands that look for the answer outside the task as posed, in the repository's
history (other refs, the reflog, commits by hash) or on the network (fetch, clone, curl, wget, pip download).

The runtimes leave nothing newer than the base commit to find, and the network is closed; the audit shows whether
a model tries anyway, and whether those instances were the resolved ones. Commands are split into simple commands
by the banned-command scanner (quotes, separators and heredocs understood); it is a report, not a filter.
"""

from __future__ import annotations

import json
import os
import re

from swehero.agent.banned import UnparsableCommand, simple_commands

_HASH = re.compile(r"[0-9a-f]{7,40}")
_OTHER_REFS = ("--all", "--branches", "--tags", "--remotes", "--reflog")
_GIT_OPTIONS_WITH_VALUE = ("-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path", "--config-env",
                           "--super-prefix", "--list-cmds", "--attr-source")
"""git's options before the subcommand that take the next word as their value (`--git-dir=DIR` is one word)."""


def _kind(words: list[str], base_commit: str) -> str | None:
    """What one simple command seeks, if anything."""
    program = os.path.basename(words[0])
    if program in ("curl", "wget"):
        return "network download"
    if re.fullmatch(r"pip[0-9.]*", program) and words[1:2] == ["download"]:
        return "pip download"
    if program != "git":
        return None
    args = words[1:]
    while args[:1] and args[0].startswith("-"):  # git's own options before the subcommand (`--no-pager`, ...)
        args = args[2:] if args[0] in _GIT_OPTIONS_WITH_VALUE else args[1:]
    sub, rest = (args[0], args[1:]) if args else ("", [])
    if sub in ("log", "rev-list", "shortlog", "whatchanged") and any(a.split("=")[0] in _OTHER_REFS for a in rest):
        return "history of other refs"
    if sub == "reflog":
        return "git reflog"
    if sub in ("fetch", "pull", "clone", "ls-remote") or rest[:1] == ["add"] and sub == "remote":
        return "git fetch, pull or clone"
    if sub in ("show", "cat-file", "checkout", "switch", "cherry-pick", "log") and any(
            _HASH.fullmatch(a.split(":")[0]) and not base_commit.startswith(a.split(":")[0]) for a in rest):
        return "a commit by hash"
    return None


def seeking_commands(record: dict, base_commit: str = "") -> list[dict]:
    """The agent's `execute_bash` commands that seek history or the network: [{"command", "kind"}]. A hash that
    names the base commit (a prefix of it) is the task's own state, not a leak."""
    found = []
    for message in record.get("messages") or []:
        for call in message.get("tool_calls") or []:
            if call["function"]["name"] != "execute_bash":
                continue
            try:
                command = json.loads(call["function"]["arguments"]).get("command") or ""
                kinds = [k for words in simple_commands(command) if (k := _kind(words, base_commit))]
            except (json.JSONDecodeError, AttributeError, UnparsableCommand):
                continue
            if kinds:
                found.append({"command": command[:500], "kind": kinds[0]})
    return found
