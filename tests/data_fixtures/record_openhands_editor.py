"""Write openhands-aci-0.3.1-editor.json: the observations OpenHands 0.54 gives for a sequence of str_replace_editor
calls on a folder of files (tests/test_agent_sandbox.py makes the same calls with our tools and compares).

OpenHands 0.54 pins openhands-aci 0.3.1 (and locks charset-normalizer 3.4.2, binaryornot 0.4.4, chardet 5.2.0).
A call goes as there: a `view` of a binary file is refused by the runtime (`ERROR_BINARY_FILE`, an error
observation); an `insert_line` written as a string is read as a number first; the editor's errors come back as
`ERROR:\n...`. Run with `pip install charset-normalizer==3.4.2 binaryornot==0.4.4 chardet==5.2.0 cachetools
pydantic` (binaryornot fails on chardet 7's answers), given 0.3.1's source:
    git -C openhands-aci archive 0.3.1 openhands_aci | tar -x -C SRC
    python record_openhands_editor.py SRC
"""

import base64
import json
import logging
import shutil
import sys
import tempfile
import types
from pathlib import Path

FILES = {  # path under the folder -> bytes
    "small.py": b"one\ntwo\nthree\n",
    "long.py": "".join(f"value_{i:04} = {i} * 2  # a line of forty characters\n" for i in range(1000)).encode(),
    "ff.py": b"a = 1\n\x0c\ndef f():\n    return 1\n\x0c\nb = 2\nc = 3\n",
    "crlf.txt": b"one\r\ntwo\r\nold\rthree\r\n",
    "nonl.txt": b"a\nb",
    "tabs.py": b"def f():\n\treturn 1\n",
    "empty.txt": b"",
    "twice.py": b"x = 1\ny = 2\nx = 1\n",
    "latin.py": "# -*- coding: latin-1 -*-\nname = 'café'\n".encode("latin-1"),
    "author.py": "# Author: José Pérez\nx = 1\n".encode("latin-1"),
    "polish.py": "# Zażółć gęślą jaźń\nx = 1\n".encode("iso-8859-2"),
    "sjis.py": "# 日本語のコメントです。これはテストです。\nx = 1\n".encode("shift_jis"),
    "short.txt": "éèê à\n".encode("latin-1"),
    "wide.txt": "first\nsecond\n".encode("utf-16"),
    "bom.py": b"\xef\xbb\xbfx = 1\n",
    "blob.bin": b"\x00\x01\xff",
    "mod.pyc": b"looks like text\n",
    "pkg/a.py": b"import os\n",
    "pkg/sub/b.py": b"x = 1\n",
    "pkg/.hidden": b"x",
    ".hidden": b"x",
}
DIRS = [f"big/many/d{i:04}_" + "x" * 53 for i in range(150)]
"""A listing past the 16,000-character limit, cut inside a name (the recorder checks): the line cut short cannot have
its folder's path replaced."""
FOLDER_LENGTH = 64
"""The folder's absolute path is this long (a name padded with `_`), wherever the calls are made: a clipped listing
is cut at a number of characters of whole paths."""
CALLS = [  # arguments, with {folder} for the folder's absolute path
    {"command": "view", "path": "{folder}"},
    {"command": "view", "path": "{folder}/pkg/"},
    {"command": "view", "path": "{folder}/big/many"},
    {"command": "view", "path": "{folder}/small.py"},
    {"command": "view", "path": "{folder}/./small.py", "view_range": [2, 3]},
    {"command": "view", "path": "{folder}/small.py", "view_range": [2, -1]},
    {"command": "view", "path": "{folder}/small.py", "view_range": [2, 9]},
    {"command": "view", "path": "{folder}/small.py", "view_range": [0, 2]},
    {"command": "view", "path": "{folder}/small.py", "view_range": [3, 2]},
    {"command": "view", "path": "{folder}/small.py", "view_range": [1]},
    {"command": "view", "path": "{folder}/pkg", "view_range": [1, 2]},
    {"command": "view", "path": "{folder}/long.py"},
    {"command": "view", "path": "{folder}/ff.py", "view_range": [5, 7]},
    {"command": "insert", "path": "{folder}/ff.py", "insert_line": 3, "new_str": "# inserted"},
    {"command": "view", "path": "{folder}/crlf.txt"},
    {"command": "str_replace", "path": "{folder}/crlf.txt", "old_str": "two\nold", "new_str": "2\nOLD"},
    {"command": "view", "path": "{folder}/nonl.txt"},
    {"command": "insert", "path": "{folder}/nonl.txt", "insert_line": 2, "new_str": "c"},
    {"command": "view", "path": "{folder}/tabs.py"},
    {"command": "view", "path": "{folder}/empty.txt"},
    {"command": "view", "path": "{folder}/empty.txt", "view_range": [1, 1]},
    {"command": "str_replace", "path": "{folder}/twice.py", "old_str": "x = 1", "new_str": "x = 2"},
    {"command": "str_replace", "path": "{folder}/twice.py", "old_str": "z = 3", "new_str": "z = 4"},
    {"command": "str_replace", "path": "{folder}/twice.py", "old_str": "y = 2", "new_str": "y = 2"},
    {"command": "str_replace", "path": "{folder}/twice.py", "new_str": "y = 3"},
    {"command": "str_replace", "path": "{folder}/twice.py", "old_str": "y = 2\n"},
    {"command": "undo_edit", "path": "{folder}/twice.py"},
    {"command": "undo_edit", "path": "{folder}/twice.py"},
    {"command": "insert", "path": "{folder}/small.py", "insert_line": 0, "new_str": "zero"},
    {"command": "insert", "path": "{folder}/small.py", "insert_line": 4, "new_str": "four\nfive"},
    {"command": "insert", "path": "{folder}/small.py", "insert_line": 9, "new_str": "nine"},
    {"command": "insert", "path": "{folder}/small.py", "insert_line": "2", "new_str": "two and a half"},
    {"command": "insert", "path": "{folder}/small.py", "insert_line": "two", "new_str": "x"},
    {"command": "insert", "path": "{folder}/small.py", "new_str": "x"},
    {"command": "create", "path": "{folder}/small.py", "file_text": "x"},
    {"command": "create", "path": "{folder}/new/deep.py", "file_text": "print('new')\n"},
    {"command": "create", "path": "{folder}/new/other.py"},
    {"command": "undo_edit", "path": "{folder}/new/deep.py"},
    {"command": "view", "path": "{folder}/latin.py"},
    {"command": "str_replace", "path": "{folder}/latin.py", "old_str": "'café'", "new_str": "'crème'"},
    {"command": "undo_edit", "path": "{folder}/latin.py"},
    {"command": "view", "path": "{folder}/author.py"},
    {"command": "view", "path": "{folder}/polish.py"},
    {"command": "view", "path": "{folder}/sjis.py"},
    {"command": "view", "path": "{folder}/short.txt"},
    {"command": "view", "path": "{folder}/wide.txt"},
    {"command": "insert", "path": "{folder}/wide.txt", "insert_line": 1, "new_str": "middle"},
    {"command": "view", "path": "{folder}/bom.py"},
    {"command": "str_replace", "path": "{folder}/bom.py", "old_str": "1", "new_str": "2"},
    {"command": "view", "path": "{folder}/blob.bin"},
    {"command": "view", "path": "{folder}/mod.pyc"},
    {"command": "view", "path": "{folder}/nope.py"},
    {"command": "str_replace", "path": "{folder}/pkg", "old_str": "a", "new_str": "b"},
    {"command": "search", "path": "{folder}/small.py"},
    {"command": "view", "path": "{folder}//pkg/sub"},
    # edits of a binary file: its encoding is guessed first, before the binary check (no confidence: a TypeError)
    {"command": "str_replace", "path": "{folder}/blob.bin", "old_str": "a", "new_str": "b"},
    {"command": "insert", "path": "{folder}/blob.bin", "insert_line": 0, "new_str": "b"},
    {"command": "undo_edit", "path": "{folder}/blob.bin"},
    # arguments of another JSON type: errors the agent reads, not a failed episode
    {"command": "create", "path": "{folder}/config.json", "file_text": {"debug": True}},
    {"command": "str_replace", "path": "{folder}/tabs.py", "old_str": "return 1", "new_str": 2},
    # carriage returns the agent writes: the snippet is read back from the file, in text mode
    {"command": "str_replace", "path": "{folder}/tabs.py", "old_str": "return 1", "new_str": "a = 1\r\n\treturn a"},
    {"command": "insert", "path": "{folder}/tabs.py", "insert_line": 1, "new_str": "p\rq"},
    # a NUL byte in a path: no such file (`Path.exists()` is False), and `create` fails to open it (a `view` fails in
    # the runtime's binary check, ending the episode: tests/test_agent_sandbox.py)
    {"command": "str_replace", "path": "{folder}/small\u0000.py", "old_str": "one", "new_str": "1"},
    {"command": "undo_edit", "path": "{folder}/small.py\u0000"},
    {"command": "create", "path": "{folder}/new\u0000.py", "file_text": "x"},
    {"command": "insert", "path": "small\u0000.py", "insert_line": 0, "new_str": "x"},
]


def folder_name(parent: str) -> str:
    """The folder's name in `parent` (as the editor sees it): its path is then FOLDER_LENGTH characters long."""
    return "ed" + "_" * (FOLDER_LENGTH - len(parent.rstrip("/")) - 3)


def make_folder(folder: Path) -> None:
    """FILES and DIRS in `folder`."""
    for name, data in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    for name in DIRS:
        (folder / name).mkdir(parents=True)


def openhands_editor(src: str):
    """`call(arguments) -> observation`, as OpenHands 0.54's function calling, runtime and agent memory give it."""
    # Only the editor is imported: the packages' __init__ files (a global editor) are skipped, and the linter and
    # the Markdown converter (tree-sitter, pdf and office readers), which these calls never use, are stubbed.
    for name in ("openhands_aci", "openhands_aci.editor", "openhands_aci.utils"):
        module = types.ModuleType(name)
        module.__path__ = [f"{src}/{name.replace('.', '/')}"]
        sys.modules[name] = module
    for name, attributes in {"openhands_aci.linter": {"DefaultLinter": object},
                             "openhands_aci.editor.md_converter": {"MarkdownConverter": object}}.items():
        sys.modules[name] = types.ModuleType(name)
        vars(sys.modules[name]).update(attributes)
    logging.disable(logging.CRITICAL)
    from binaryornot.check import is_binary
    from openhands_aci.editor.editor import OHEditor
    from openhands_aci.editor.exceptions import ToolError

    editor = OHEditor(workspace_root="/workspace")

    def call(arguments: dict) -> str:
        arguments = dict(arguments)
        if arguments["command"] == "view":  # a FileReadAction
            if is_binary(arguments["path"]):
                return "ERROR_BINARY_FILE\n[Error occurred in processing last action]"
            arguments = {"command": "view", "path": arguments["path"], "view_range": arguments.get("view_range")}
        insert_line = arguments.get("insert_line")
        if isinstance(insert_line, str):
            try:
                arguments["insert_line"] = int(insert_line)
            except ValueError:
                return f"ERROR:\nInvalid insert_line value: '{insert_line}'. Expected an integer."
        try:
            result = editor(**arguments, enable_linting=False)
        except ToolError as e:
            return f"ERROR:\n{e.message}"
        except TypeError as e:  # the runtime's answer to arguments the editor does not take
            return f"ERROR:\n{e}"
        return f"ERROR:\n{result.error}" if result.error else result.output

    return call


def main(src: str) -> None:
    call = openhands_editor(src)
    work = Path(tempfile.mkdtemp())
    folder = work / folder_name(str(work))
    make_folder(folder)
    recorded = []
    try:
        for arguments in CALLS:
            given = json.loads(json.dumps(arguments).replace("{folder}", str(folder)))
            observation = call(given).replace(str(folder), "{folder}")
            assert str(work) not in observation, arguments  # a path cut short: change DIRS
            recorded.append({"arguments": arguments, "observation": observation})
        after = {name: base64.b64encode((folder / name).read_bytes()).decode()
                 for name in sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())}
    finally:
        shutil.rmtree(work)
    out = Path(__file__).parent / "openhands-aci-0.3.1-editor.json"
    out.write_text(json.dumps({"calls": recorded, "files_after": after}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
