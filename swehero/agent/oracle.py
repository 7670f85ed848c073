"""The `oracle` policy: solves a task from its gold patch with real tool calls, so valid trajectories exist
without a model (tests, the tiny recipe, checking a runtime end to end).

It views the repository, greps for the first changed file, views each file it changes (page by page with
`view_range` when a file is too long for one view), thinks, applies every hunk as a `str_replace` (creating new
files, deleting removed ones), looks at `git diff` and finishes. Its edits are planned against the file text it
reads back from the `view` observations, widening a hunk's context until the `old_str` is unique, exactly as an
agent would have to.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from swehero.agent.policy import Reply

_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_VIEW_HEADER = re.compile(r"^Here's the result of running `cat -n` on [^\n]*:\n")


@dataclass
class FilePatch:
    path: str
    """Repository-relative path."""
    kind: str = "modify"
    """'modify', 'create' or 'delete'."""
    hunks: list[tuple[int, list[str], list[str]]] = field(default_factory=list)
    """(first old line, old lines, new lines) per hunk."""


def parse_patch(patch: str) -> list[FilePatch]:
    """The files of a `git diff`-style unified patch; renames, mode-only and binary changes are not supported."""
    files: list[FilePatch] = []
    # lines end at "\n" (a form feed, which `splitlines` breaks at too, is content); a DOS file's "\r\n" as "\n",
    # as the editor reads and matches its text
    lines = [line.removesuffix("\r") for line in patch.split("\n")]
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            files.append(FilePatch(path=line.split(" b/", 1)[1]))
        elif line.startswith(("rename from", "Binary files", "GIT binary patch")):
            raise ValueError(f"the oracle cannot apply this patch: {line}")
        elif line.startswith("new file mode"):
            files[-1].kind = "create"
        elif line.startswith("deleted file mode"):
            files[-1].kind = "delete"
        elif m := _HUNK.match(line):
            old, new = [], []
            n_old = int(m.group(2)) if m.group(2) is not None else 1
            n_new = int(m.group(4)) if m.group(4) is not None else 1
            i += 1
            while i < len(lines) and (len(old) < n_old or len(new) < n_new or lines[i].startswith("\\")):
                tag, text = lines[i][:1], lines[i][1:]
                if tag in (" ", ""):
                    old.append(text)
                    new.append(text)
                elif tag == "-":
                    old.append(text)
                elif tag == "+":
                    new.append(text)
                i += 1
            files[-1].hunks.append((int(m.group(1)), old, new))
            continue
        i += 1
    return files


def lines_from_view(observation: str) -> list[str] | None:
    """The lines shown by a `view` observation of a file (None if it was clipped or is an error)."""
    if not _VIEW_HEADER.match(observation) or "<response clipped>" in observation:
        return None
    body = _VIEW_HEADER.sub("", observation, count=1).split("\nNOTE: ", 1)[0].removesuffix("\n")
    return [line.split("\t", 1)[1] if "\t" in line else "" for line in body.split("\n")]


def unique_edit(text: str | None, start: int, old: list[str], new: list[str]) -> tuple[str, str]:
    """`old_str`/`new_str` for one hunk, with lines of surrounding context added until `old_str` is unique."""
    before, after = 0, 0
    lines = text.split("\n") if text is not None else []
    while True:
        head = lines[max(start - 1 - before, 0) : start - 1] if before else []
        tail_at = start - 1 + len(old)
        tail = lines[tail_at : tail_at + after] if after else []
        old_str, new_str = "\n".join(head + old + tail), "\n".join(head + new + tail)
        if text is None or text.count(old_str) == 1 or (before >= start - 1 and tail_at + after >= len(lines)):
            return old_str, new_str
        before, after = before + 1, after + 1


class OraclePolicy:
    """Plays back the plan of `_plan`, which reads each tool result (`self.last`) before deciding what comes next."""

    PAGE = 200
    """Lines per `view_range` call when a file is too long for one view."""

    def __init__(self, gold_patch: str, root: str) -> None:
        self.root = root.rstrip("/")
        self.files = parse_patch(gold_patch)
        if not self.files:
            raise ValueError("the gold patch changes no files")
        self.steps = iter(self._plan())
        self.last, self.n = "", 0

    def _plan(self):
        """Yields (content, tool, arguments)."""
        root = shlex.quote(self.root)
        yield "Let me look at the repository layout first.", "str_replace_editor", {"command": "view",
                                                                                    "path": self.root}
        first = self.files[0].path
        needle = re.sub(r"\W+", "", first.rsplit("/", 1)[-1].split(".")[0]) or first
        yield (f"Let me find where `{needle}` is referenced.", "execute_bash",
               {"command": f"cd {root} && grep -rln --exclude-dir=.git {shlex.quote(needle)} . | head -20"})
        for fp in self.files:
            path = f"{self.root}/{fp.path}"
            if fp.kind == "create":
                text = "\n".join(fp.hunks[0][2]) + "\n" if fp.hunks else ""
                yield f"I'll create `{fp.path}`.", "str_replace_editor", {"command": "create", "path": path,
                                                                          "file_text": text}
            elif fp.kind == "delete":
                args = {"command": f"rm {shlex.quote(path)}"}
                yield f"`{fp.path}` is no longer needed; removing it.", "execute_bash", args
            else:
                yield f"Let me read `{fp.path}`.", "str_replace_editor", {"command": "view", "path": path}
                lines = lines_from_view(self.last)
                if lines is None:
                    lines = yield from self._page(path)
                yield "", "think", {"thought": f"`{fp.path}` needs {len(fp.hunks)} change(s); I'll edit each hunk "
                                               "with enough context to make the match unique."}
                yield from self._edits(fp, path, None if lines is None else "\n".join(lines))
        yield "Let me review the full change.", "execute_bash", {"command": f"cd {root} && git diff"}
        yield "The change is complete.", "finish", {"message": "I applied the fix for the issue described in the task."}

    def _page(self, path: str):
        """Read a file too long for one view: count its lines, then `view_range` page by page. Returns its lines
        (None if even a page was clipped)."""
        yield "The file is long; let me count its lines.", "execute_bash", {"command": f"wc -l < {shlex.quote(path)}"}
        count = re.match(r"\s*(\d+)", self.last)
        lines, total = [], max(int(count.group(1)) if count else 1, 1)
        for start in range(1, total + 1, self.PAGE):
            # The last page runs to the end (-1): the editor refuses a range past it, and `wc -l` leaves out a last
            # line without a newline.
            end = start + self.PAGE - 1 if start + self.PAGE <= total else -1
            yield (f"Reading lines {start}-{end if end > 0 else 'the end'}.", "str_replace_editor",
                   {"command": "view", "path": path, "view_range": [start, end]})
            page = lines_from_view(self.last)
            if page is None:
                return None
            lines += page
        return lines

    def _edits(self, fp: FilePatch, path: str, text: str | None):
        offset = 0
        for start, old, new in fp.hunks:
            old_str, new_str = unique_edit(text, start + offset, old, new)
            if text is not None:
                text = text.replace(old_str, new_str, 1)
            offset += len(new) - len(old)
            yield (f"Now I'll edit `{fp.path}` around line {start + offset}.", "str_replace_editor",
                   {"command": "str_replace", "path": path, "old_str": old_str, "new_str": new_str})

    def act(self, messages: list[dict], tools: list[dict]) -> Reply:
        last = messages[-1] if messages else {}
        self.last = last.get("content") or "" if last.get("role") == "tool" else ""
        content, tool, args = next(self.steps, ("Done.", "finish", {"message": "Done."}))
        self.n += 1
        call = {"id": f"call_oracle_{self.n}", "type": "function",
                "function": {"name": tool, "arguments": json.dumps(args)}}
        return Reply({"role": "assistant", "content": content, "tool_calls": [call]})
