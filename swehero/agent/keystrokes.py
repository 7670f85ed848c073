"""What OpenHands 0.54 types into its shell's pane for a command, and whether it then finds the command's echo.

Its bash session first escapes backslashes before `;`, `&`, `|`, `>` and `<` in unquoted words (its
`escape_bash_special_chars`, meant for Python strings), then hands the result to `tmux send-keys` as one argument,
and tmux reads an argument that ends in `;` as its own command separator: it drops that `;`, or, after a
backslash, keeps a `;` and drops the backslash. So `find . -exec grep -l x {} \\;` reaches bash unchanged but
`... {} \\; | head` reaches it as `... {} \\\\; | head` (a syntax error there), and `ls pkg;` as `ls pkg`. OpenHands
then cuts the echo of the escaped command from the pane, which fails whenever tmux typed something else: the
observation starts with the command line as bash echoed it. A model trained on OpenHands' trajectories saw all of
this; `BashSession` runs the command as typed here and shows the echo where OpenHands could not cut it.
"""

from __future__ import annotations

import re
from typing import Any

import bashlex

_ESCAPED = re.compile(r"\\([;&|><])")
_KEPT = (('"', '"'), ("'", "'"), ("$(", ")"), ("`", "`"))
"""Words escaped as they are: quoted strings and command substitutions."""


class EscapeFailed(Exception):
    """bashlex failed on the command with an error OpenHands' escape does not expect (a command that is only a
    comment, or a lone backslash: `'str' object has no attribute 'kind'`). There it leaves the bash session, and the
    runtime answers with its text as an error observation; nothing is typed."""


def openhands_escape(command: str) -> str:
    """The command with `\\;`, `\\&`, `\\|`, `\\>`, `\\<` outside quotes, command substitutions and here-documents
    doubled to `\\\\;` ...; unchanged when bashlex cannot parse it. Raises `EscapeFailed` where OpenHands' raises."""
    if not command.strip():
        return ""
    try:
        nodes = list(bashlex.parse(command))
    except (bashlex.errors.ParsingError, NotImplementedError, TypeError):
        return command
    except AttributeError as e:
        raise EscapeFailed(str(e)) from None
    parts: list[str] = []
    last = 0

    def visit(node: Any) -> None:
        nonlocal last
        if node.kind == "redirect" and getattr(node, "heredoc", None) is not None:
            # the text up to the here-document's body, and the body, as they are
            parts.append(command[last:node.pos[0]])
            parts.append(command[node.pos[0]:node.heredoc.pos[0]])
            parts.append(command[node.heredoc.pos[0]:node.heredoc.pos[1]])
            last = node.pos[1]
            return
        if node.kind == "word":
            parts.append(_ESCAPED.sub(r"\\\\\1", command[last:node.pos[0]]))
            word = command[node.pos[0]:node.pos[1]]
            quoted = any(word.startswith(a) and word.endswith(b) for a, b in _KEPT)
            parts.append(word if quoted else _ESCAPED.sub(r"\\\\\1", word))
            last = node.pos[1]
            return
        for part in getattr(node, "parts", []):
            visit(part)

    for node in nodes:
        parts.append(_ESCAPED.sub(r"\\\\\1", command[last:node.pos[0]]))
        last = node.pos[0]
        visit(node)
    return "".join(parts) + command[last:]


def tmux_typed(argument: str) -> str:
    """What `tmux send-keys ARGUMENT` types: a final `;` is tmux's command separator, dropped, and a final `\\;` is
    an escaped `;`."""
    if not argument.endswith(";"):
        return argument
    argument = argument[:-1]
    return argument[:-1] + ";" if argument.endswith("\\") else argument


def typed_command(command: str) -> tuple[str, bool]:
    """(what bash gets for `command`, whether OpenHands leaves its echo in the observation)."""
    escaped = openhands_escape(command)
    typed = tmux_typed(escaped)
    return typed, typed.lstrip() != escaped.lstrip()
