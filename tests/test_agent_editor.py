"""str_replace_editor: every command, its OpenHands observation texts and errors, and path confinement."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from swehero.agent.editor import BinaryFile, Editor, ToolError
from swehero.agent.local import LocalFiles

ROOT = "/workspace/toy__calc__0.1"


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "repo" / "pkg").mkdir(parents=True)
    (tmp_path / "repo" / "pkg" / "a.py").write_text("one\ntwo\nthree\ntwo\nfive\n")
    (tmp_path / "repo" / ".hidden").write_text("x")
    (tmp_path / "outside.txt").write_text("secret\n")
    return tmp_path / "repo"


@pytest.fixture
def ed(repo):
    return Editor(LocalFiles(ROOT, repo))


def err(ed, **kw) -> str:
    with pytest.raises(ToolError) as e:
        ed(**kw)
    return str(e.value)


def test_view_file_is_cat_n(ed):
    out = ed("view", f"{ROOT}/pkg/a.py")
    assert out == (f"Here's the result of running `cat -n` on {ROOT}/pkg/a.py:\n"
                   "     1\tone\n     2\ttwo\n     3\tthree\n     4\ttwo\n     5\tfive\n     6\t\n")


def test_view_range(ed):
    out = ed("view", f"{ROOT}/pkg/a.py", view_range=[2, 3])
    assert out.endswith("     2\ttwo\n     3\tthree\n")
    assert ed("view", f"{ROOT}/pkg/a.py", view_range=[4, -1]).endswith("     4\ttwo\n     5\tfive\n")
    # openhands-aci 0.3.1 (what OpenHands 0.54 pins) refuses a range past the end; 0.3.2 clamped it.
    assert err(ed, command="view", path=f"{ROOT}/pkg/a.py", view_range=[4, 9]) == (
        "Invalid `view_range` parameter: [4, 9]. Its second element `9` should be smaller than the number of lines "
        "in the file: `5`.")
    assert err(ed, command="view", path=f"{ROOT}/pkg/a.py", view_range=[0, 2]) == (
        "Invalid `view_range` parameter: [0, 2]. Its first element `0` should be within the range of lines of "
        "the file: [1, 5].")
    assert "Its second element `2` should be greater than or equal to the first element `3`" in err(
        ed, command="view", path=f"{ROOT}/pkg/a.py", view_range=[3, 2])
    assert "It should be a list of two integers." in err(ed, command="view", path=f"{ROOT}/pkg/a.py", view_range=[1])


def test_view_directory_lists_two_levels_without_hidden(ed):
    out = ed("view", ROOT)
    assert out == (f"Here's the files and directories up to 2 levels deep in {ROOT}, excluding hidden items:\n"
                   f"{ROOT}/\n{ROOT}/pkg/\n{ROOT}/pkg/a.py\n\n"
                   "1 hidden files/directories in this directory are excluded. "
                   f"You can use 'ls -la {ROOT}' to see them.")
    assert "not allowed when `path` points to a directory" in err(ed, command="view", path=ROOT, view_range=[1, 2])


def openhands_listing(host: Path, shown: str) -> list[str]:
    """OHEditor's own listing: `find -L | sort` (C locale), then a `/` after each directory; paths shown as the
    agent sees them."""
    found = subprocess.run(f"find -L {host} -maxdepth 2 -not \\( -path '{host}/.*' -o -path '{host}/*/.*' \\) | sort",
                           shell=True, capture_output=True, text=True, check=True, env={"LC_ALL": "C"}).stdout
    return [shown + p[len(str(host)):] + ("/" if Path(p).is_dir() else "") for p in found.splitlines()]


def test_directory_listing_is_in_openhands_order(ed, repo):
    """Sorted as whole paths, so `pkg-extra.py` and `pkg.txt` come between `pkg/` and `pkg/a.py`."""
    for name in ("pkg-extra.py", "pkg.txt", "Zeta/inner.py", "_private/x.py", "a b/c.py", "deep/er/est.py", "é.py"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x\n")
    os.symlink("pkg", repo / "linked")  # followed, as `find -L` follows it
    out = ed("view", ROOT).split("\n")
    listed = out[1:out.index("")]
    assert listed == openhands_listing(repo, ROOT)
    assert f"{ROOT}/linked/a.py" in listed
    assert ed("view", f"{ROOT}/linked").split("\n")[1:] == [f"{ROOT}/linked/", f"{ROOT}/linked/a.py"]
    os.symlink(repo.parent, repo / "out")  # leads out of the checkout to the host: listed, not followed
    listed = ed("view", ROOT).split("\n")
    assert f"{ROOT}/out" in listed and not [line for line in listed if line.startswith(f"{ROOT}/out/")]
    at = {name: listed.index(f"{ROOT}/{name}") for name in ("pkg/", "pkg-extra.py", "pkg.txt", "pkg/a.py")}
    assert at["pkg/"] < at["pkg-extra.py"] < at["pkg.txt"] < at["pkg/a.py"]


def test_long_views_are_clipped_where_openhands_clips_them(ed, repo):
    (repo / "long.py").write_text("".join(f"value_{i:04} = {i} * 2  # a line of forty characters\n"
                                          for i in range(1000)))
    out = ed("view", f"{ROOT}/long.py")
    notice = ("<response clipped><NOTE>Due to the max output limit, only part of this file has been shown to you. "
              "You should retry this tool after you have searched inside the file with `grep -n` in order to find "
              "the line numbers of what you are looking for.</NOTE>")
    # The first 16000 characters of the file, then the notice, numbered as one text.
    text = (repo / "long.py").read_text()[:16000] + notice
    assert out == (f"Here's the result of running `cat -n` on {ROOT}/long.py:\n"
                   + "\n".join(f"{i:6}\t{line}" for i, line in enumerate(text.split("\n"), 1)) + "\n")
    # A directory: `find`'s output is clipped before the header and the directories' slashes are added.
    for i in range(1100):
        (repo / "big" / f"d{i}").mkdir(parents=True)
    listed = ed("view", f"{ROOT}/big").split("\n")[1:]
    found = "".join(f"{ROOT}/big/{name}\n" for name in ["", *sorted(f"d{i}" for i in range(1100))])
    found = found.replace(f"{ROOT}/big/\n", f"{ROOT}/big\n", 1)[:16000].split("\n")
    assert listed[:-1] == [line + "/" for line in found[:-1]]
    assert listed[-1] == found[-1] + ("<response clipped><NOTE>Due to the max output limit, only part of this "
                                      "directory has been shown to you. You should use `ls -la` instead to view large "
                                      "directories incrementally.</NOTE>")


def test_lines_are_counted_at_newlines_only_as_openhands_reads_files(ed, repo):
    """A form feed (Python sources have them) is no line break when a file is read line by line."""
    (repo / "ff.py").write_text("a = 1\n\x0c\ndef f():\n    return 1\n\x0c\nb = 2\nc = 3\n")
    ed("insert", f"{ROOT}/ff.py", insert_line=3, new_str="# inserted")
    assert (repo / "ff.py").read_text() == "a = 1\n\x0c\ndef f():\n# inserted\n    return 1\n\x0c\nb = 2\nc = 3\n"
    # Lines 6-8 as the file reads them, shown split as `str.splitlines` splits them (the form feed ends a line).
    assert ed("view", f"{ROOT}/ff.py", view_range=[6, 8]).split("\n")[1:] == [
        "     6\t", "     7\t", "     8\tb = 2", "     9\tc = 3", ""]


def test_names_that_are_not_utf8_are_listed_as_command_output_shows_them(ed, repo):
    os.close(os.open(bytes(repo) + b"/caf\xe9.txt", os.O_CREAT | os.O_WRONLY))
    listed = ed("view", ROOT)
    assert f"{ROOT}/caf\ufffd.txt\n" in listed
    listed.encode("utf-8")  # no lone surrogate: the observation can be saved and sent


def test_create(ed, repo):
    assert ed("create", f"{ROOT}/pkg/b.py", file_text="x = 1\n") == f"File created successfully at: {ROOT}/pkg/b.py"
    assert (repo / "pkg" / "b.py").read_text() == "x = 1\n"
    assert err(ed, command="create", path=f"{ROOT}/pkg/b.py", file_text="y") == (
        f"Invalid `path` parameter: {ROOT}/pkg/b.py. File already exists at: {ROOT}/pkg/b.py. Cannot overwrite "
        "files using command `create`.")
    assert err(ed, command="create", path=f"{ROOT}/pkg/c.py") == (
        "Parameter `file_text` is required for command: create.")


def test_str_replace_unique_match_rules(ed, repo):
    path = f"{ROOT}/pkg/a.py"
    assert err(ed, command="str_replace", path=path, old_str="two", new_str="2") == (
        "No replacement was performed. Multiple occurrences of old_str `two` in lines [2, 4]. "
        "Please ensure it is unique.")
    assert err(ed, command="str_replace", path=path, old_str="six", new_str="6") == (
        f"No replacement was performed, old_str `six` did not appear verbatim in {path}.")
    assert err(ed, command="str_replace", path=path, old_str="one", new_str="one") == (
        "Invalid `new_str` parameter: one. No replacement was performed. `new_str` and `old_str` must be different.")
    out = ed("str_replace", path, old_str="three\ntwo", new_str="THREE\nTWO")
    assert out == (f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of {path}:\n"
                   "     1\tone\n     2\ttwo\n     3\tTHREE\n     4\tTWO\n     5\tfive\n     6\t\n"
                   "Review the changes and make sure they are as expected. Edit the file again if necessary.")
    assert (repo / "pkg" / "a.py").read_text() == "one\ntwo\nTHREE\nTWO\nfive\n"
    ed("str_replace", path, old_str="five\n")  # no new_str: deletes
    assert (repo / "pkg" / "a.py").read_text() == "one\ntwo\nTHREE\nTWO\n"


def test_insert(ed, repo):
    path = f"{ROOT}/pkg/a.py"
    out = ed("insert", path, insert_line=1, new_str="1.5")
    assert out.startswith(f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of "
                          "the edited file:\n     1\tone\n     2\t1.5\n     3\ttwo\n")
    assert out.endswith("Review the changes and make sure they are as expected (correct indentation, no duplicate "
                        "lines, etc). Edit the file again if necessary.")
    ed("insert", path, insert_line=0, new_str="zero")
    assert (repo / "pkg" / "a.py").read_text().splitlines()[:3] == ["zero", "one", "1.5"]
    assert err(ed, command="insert", path=path, insert_line=99, new_str="x") == (
        "Invalid `insert_line` parameter: 99. It should be within the range of allowed values: [0, 7]")
    assert err(ed, command="insert", path=path, new_str="x") == (
        "Parameter `insert_line` is required for command: insert.")


def test_undo_edit(ed, repo):
    path = f"{ROOT}/pkg/a.py"
    original = (repo / "pkg" / "a.py").read_text()
    assert err(ed, command="undo_edit", path=path) == f"No edit history found for {path}."
    ed("str_replace", path, old_str="five", new_str="5")
    ed("insert", path, insert_line=0, new_str="top")
    ed("undo_edit", path)
    assert (repo / "pkg" / "a.py").read_text() == original.replace("five", "5")
    assert ed("undo_edit", path).startswith(f"Last edit to {path} undone successfully. Here's the result of running")
    assert (repo / "pkg" / "a.py").read_text() == original


def test_path_errors(ed):
    # a relative path is suggested from OpenHands' working directory, /workspace, which holds the repository
    assert err(ed, command="view", path="toy__calc__0.1/pkg/a.py") == (
        "Invalid `path` parameter: toy__calc__0.1/pkg/a.py. The path should be an absolute path, starting with `/`. "
        f"Maybe you meant {ROOT}/pkg/a.py?")
    # not there, or out of the repository: the same answer, without a suggestion (not the confinement's error)
    for path in ("pkg/a.py", "../a.py", "toy__calc__0.1/../a.py"):
        assert err(ed, command="view", path=path) == (
            f"Invalid `path` parameter: {path}. The path should be an absolute path, starting with `/`.")
    assert err(ed, command="view", path=f"{ROOT}/nope.py") == (
        f"Invalid `path` parameter: {ROOT}/nope.py. The path {ROOT}/nope.py does not exist. "
        "Please provide a valid path.")
    assert "only the `view` command can be used on directories" in err(ed, command="str_replace", path=f"{ROOT}/pkg",
                                                                       old_str="a", new_str="b")
    assert err(ed, command="delete", path=f"{ROOT}/pkg/a.py") == (
        "Unrecognized command delete. The allowed commands for the oh_editor tool are: view, create, str_replace, "
        "insert, undo_edit")


def test_binary_files_are_refused(ed, repo):
    (repo / "blob.bin").write_bytes(b"\x00\x01\xff")
    (repo / "every_byte.dat").write_bytes(bytes(range(256)) * 4)
    (repo / "mod.pyc").write_bytes(b"looks like text\n")  # binaryornot goes by the name first
    # an edit: OHEditor's encoding guess comes first, and charset-normalizer has no confidence in binary bytes
    no_guess = "'>' not supported between instances of 'NoneType' and 'float'"
    for name, edited in (("blob.bin", no_guess), ("every_byte.dat", no_guess), ("mod.pyc", "File appears to be binary")):
        with pytest.raises(BinaryFile):  # a view is refused as OpenHands' runtime refuses it (test_agent_sandbox)
            ed("view", f"{ROOT}/{name}")
        assert "File appears to be binary" in err(ed, command="view", path=f"{ROOT}/{name}")
        assert edited in err(ed, command="str_replace", path=f"{ROOT}/{name}", old_str="a", new_str="b")
    ed("view", f"{ROOT}/pkg/a.py"), ed("view", f"{ROOT}/pkg")  # neither is binary
    with pytest.raises(ToolError) as outside:  # outside: the editor says so
        ed("view", "/etc/passwd")
    assert not isinstance(outside.value, BinaryFile)


def test_paths_are_read_as_openhands_reads_them(ed):
    """OHEditor takes `Path(path)`: a trailing slash, `//` and `/./` are gone from its texts."""
    for given in (f"{ROOT}/pkg/", f"{ROOT}//pkg", f"{ROOT}/./pkg"):
        assert ed("view", given).startswith(f"Here's the files and directories up to 2 levels deep in {ROOT}/pkg, "
                                            f"excluding hidden items:\n{ROOT}/pkg/\n{ROOT}/pkg/a.py")
    assert err(ed, command="create", path=f"{ROOT}/./pkg/a.py", file_text="x") == (
        f"Invalid `path` parameter: {ROOT}/pkg/a.py. File already exists at: {ROOT}/pkg/a.py. Cannot overwrite files "
        "using command `create`.")


def test_legacy_encodings_are_read_and_written_back_as_openhands_does(ed, repo):
    """OHEditor reads a file in charset-normalizer's guess (above 0.9 confidence) and writes it back in the same
    encoding (more cases, compared with OHEditor itself: test_agent_sandbox's recorded editor calls)."""
    latin = repo / "latin.py"
    latin.write_bytes("# -*- coding: latin-1 -*-\nname = 'café'\n".encode("latin-1"))
    assert "     2\tname = 'café'\n" in ed("view", f"{ROOT}/latin.py")
    ed("str_replace", f"{ROOT}/latin.py", old_str="'café'", new_str="'crème'")
    assert latin.read_bytes() == "# -*- coding: latin-1 -*-\nname = 'crème'\n".encode("latin-1")
    # A character Latin-1 lacks: OHEditor's write error. The file is left as it was (OHEditor opens it for writing
    # before it encodes, and leaves it empty).
    assert err(ed, command="str_replace", path=f"{ROOT}/latin.py", old_str="crème", new_str="→") == (
        f"Ran into 'latin-1' codec can't encode character '\\u2192' in position 34: ordinal not in range(256) "
        f"while trying to write to {ROOT}/latin.py")
    assert latin.read_bytes().endswith("'crème'\n".encode("latin-1"))
    ed("undo_edit", f"{ROOT}/latin.py")
    assert latin.read_bytes().endswith("'café'\n".encode("latin-1"))

    wide = repo / "wide.txt"
    wide.write_bytes("first\nsecond\n".encode("utf-16"))  # with its BOM; NUL bytes, yet text
    assert ed("view", f"{ROOT}/wide.txt").endswith("     1\tfirst\n     2\tsecond\n     3\t\n")
    ed("insert", f"{ROOT}/wide.txt", insert_line=1, new_str="middle")
    assert wide.read_bytes().decode("utf-16") == "first\nmiddle\nsecond\n"

    bom = repo / "bom.py"
    bom.write_bytes(b"\xef\xbb\xbfx = 1\n")
    assert ed("view", f"{ROOT}/bom.py").endswith("     1\tx = 1\n     2\t\n")  # no U+FEFF shown
    ed("str_replace", f"{ROOT}/bom.py", old_str="1", new_str="2")
    assert bom.read_bytes() == b"\xef\xbb\xbfx = 2\n"


def test_utf8_files_are_read_as_utf8_where_a_legacy_encoding_is_guessed(ed, repo):
    """charset-normalizer 3.4.2 calls this UTF-8 file CP949 (1.0): OHEditor would show Korean mojibake and write
    edits in CP949."""
    import charset_normalizer

    (repo / "accents.txt").write_text("éèê à\n", encoding="utf-8")
    assert charset_normalizer.detect((repo / "accents.txt").read_bytes())["encoding"] == "CP949"
    assert ed("view", f"{ROOT}/accents.txt").endswith("     1\téèê à\n     2\t\n")
    ed("str_replace", f"{ROOT}/accents.txt", old_str="à", new_str="à → ù")
    assert (repo / "accents.txt").read_text(encoding="utf-8") == "éèê à → ù\n"


def test_files_no_guess_can_read_give_openhands_read_error(ed, repo):
    """At or below charset-normalizer's threshold (this Shift JIS line: GB18030 at 0.9) OHEditor falls back to
    UTF-8: an edit gives its read error, which a view gives here too (OHEditor's view lets the decode error out of
    the editor, and OpenHands' runtime fails on the call)."""
    (repo / "short.py").write_bytes("# 日本語のコメント\nx = 1\n".encode("shift_jis"))
    message = (f"Ran into 'utf-8' codec can't decode byte 0x93 in position 2: invalid start byte while trying to "
               f"read {ROOT}/short.py")
    assert err(ed, command="view", path=f"{ROOT}/short.py") == message
    assert err(ed, command="str_replace", path=f"{ROOT}/short.py", old_str="x = 1", new_str="x = 2") == message


def test_windows_line_endings_read_as_openhands_text_mode_reads_them(ed, repo):
    """OHEditor reads with Python's universal newlines: no \r in what the agent sees, old_str written with \n
    matches, and the edited file is written back with \n, as OpenHands leaves it."""
    (repo / "win.txt").write_bytes(b"one\r\ntwo\r\nold\rthree\r\n")
    assert ed("view", f"{ROOT}/win.txt").endswith("     1\tone\n     2\ttwo\n     3\told\n     4\tthree\n     5\t\n")
    assert ed("view", f"{ROOT}/win.txt", view_range=[3, 4]).endswith("     3\told\n     4\tthree\n")
    out = ed("str_replace", f"{ROOT}/win.txt", old_str="two\nold", new_str="two\nnew")
    assert out.startswith(f"The file {ROOT}/win.txt has been edited.") and "     3\tnew\n" in out
    assert (repo / "win.txt").read_bytes() == b"one\ntwo\nnew\nthree\n"
    ed("undo_edit", f"{ROOT}/win.txt")
    assert (repo / "win.txt").read_bytes() == b"one\ntwo\nold\nthree\n"


@pytest.mark.parametrize("path", [f"{ROOT}/../outside.txt", f"{ROOT}/pkg/../../outside.txt", "/etc/passwd",
                                  "/workspace", "/workspace/toy__calc__0.1x/a"])
def test_paths_outside_the_repository_are_refused(ed, path):
    for command in ("view", "create"):
        assert "Only files inside the repository" in err(ed, command=command, path=path, file_text="x")


def test_symlinks_pointing_out_are_refused(ed, repo):
    os.symlink(repo.parent / "outside.txt", repo / "link.txt")
    os.symlink(repo.parent, repo / "linkdir")
    os.symlink("pkg/a.py", repo / "inside_link.py")
    assert "symbolic link to a location outside" in err(ed, command="view", path=f"{ROOT}/link.txt")
    assert "symbolic link to a location outside" in err(ed, command="str_replace", path=f"{ROOT}/link.txt",
                                                        old_str="secret", new_str="pwned")
    assert "symbolic link to a location outside" in err(ed, command="create", path=f"{ROOT}/linkdir/new.txt",
                                                        file_text="x")
    assert (repo.parent / "outside.txt").read_text() == "secret\n"
    assert not (repo.parent / "new.txt").exists()
    assert "     1\tone" in ed("view", f"{ROOT}/inside_link.py")
    ed("str_replace", f"{ROOT}/inside_link.py", old_str="one", new_str="uno")  # through the link, which stays one
    assert (repo / "inside_link.py").is_symlink() and (repo / "pkg" / "a.py").read_text().startswith("uno\n")



def swap_after_resolve(monkeypatch, place: Path, link_to: Path) -> None:
    """Make `place` a link to `link_to` from the moment each `LocalFiles.resolve()` has answered, and itself again
    when the next one looks: the interleaving that a command left running in the sandbox (`mv -T sub d && ln -s
    /outside sub && rm sub && mv -T d sub` in a loop) wins now and then, here on every call, with real files."""
    aside = place.with_name(f"{place.name}.aside")
    resolve = LocalFiles.resolve

    def resolve_then_swap(files, path):
        if place.is_symlink():
            place.unlink()
            aside.rename(place)
        found = resolve(files, path)
        place.rename(aside)
        place.symlink_to(link_to)
        return found

    monkeypatch.setattr(LocalFiles, "resolve", resolve_then_swap)


@pytest.fixture
def outside(repo):
    (repo.parent / "outside").mkdir()
    (repo.parent / "outside" / "secret.txt").write_text("host secret\n")
    return repo.parent / "outside"


def outcome(call, *args):
    """What `call` returns, or the message of the ToolError it raises."""
    try:
        return call(*args)
    except ToolError as e:
        return str(e)


@pytest.fixture
def swapped_sub(repo, outside, monkeypatch):
    (repo / "sub").mkdir()
    (repo / "sub" / "inside.txt").write_text("inside\n")
    swap_after_resolve(monkeypatch, repo / "sub", outside)
    return LocalFiles(ROOT, repo)


def test_a_folder_swapped_for_a_link_after_the_check_reads_nothing_outside(swapped_sub):
    secret = f"{ROOT}/sub/secret.txt"
    refused = f"Ran into [Errno 20] Not a directory: '{secret}' while trying to read {secret}"
    assert outcome(swapped_sub.read_bytes, secret) == refused
    assert outcome(swapped_sub.size, secret) == refused
    assert outcome(swapped_sub.kind, secret) is None
    assert outcome(swapped_sub.listing, f"{ROOT}/sub") == (f"Ran into [Errno 20] Not a directory: '{ROOT}/sub' "
                                                           f"while trying to read {ROOT}/sub")


def test_a_folder_swapped_for_a_link_after_the_check_writes_nothing_outside(swapped_sub, outside):
    planted = f"{ROOT}/sub/planted.txt"
    assert outcome(swapped_sub.write_bytes, planted, b"x") == (f"Ran into [Errno 20] Not a directory: '{planted}' "
                                                               f"while trying to write to {planted}")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_file_swapped_for_a_link_after_the_check_is_not_followed(repo, outside, monkeypatch):
    swap_after_resolve(monkeypatch, repo / "pkg" / "a.py", outside / "secret.txt")
    files = LocalFiles(ROOT, repo)
    path = f"{ROOT}/pkg/a.py"
    through_link = f"[Errno 40] Too many levels of symbolic links: '{path}'"
    assert outcome(files.read_bytes, path) == f"Ran into {through_link} while trying to read {path}"
    assert outcome(files.write_bytes, path, b"pwned") == f"Ran into {through_link} while trying to write to {path}"
    assert (outside / "secret.txt").read_text() == "host secret\n"


def test_a_link_removed_while_it_is_read_is_a_missing_path_not_a_crash(ed, repo, monkeypatch):
    """A command in the sandbox can remove a link between the editor's look at it and the reading of its target."""
    os.symlink("pkg/a.py", repo / "gone.py")
    readlink = os.readlink

    def remove_then_readlink(*args, **kwargs):
        (repo / "gone.py").unlink(missing_ok=True)
        return readlink(*args, **kwargs)

    monkeypatch.setattr(os, "readlink", remove_then_readlink)
    assert err(ed, command="view", path=f"{ROOT}/gone.py") == (
        f"Invalid `path` parameter: {ROOT}/gone.py. The path {ROOT}/gone.py does not exist. Please provide a valid "
        "path.")

def test_special_files_are_refused_not_read(ed, repo):
    os.mkfifo(repo / "pipe")
    assert "not a regular file" in err(ed, command="view", path=f"{ROOT}/pipe")
    assert "not a regular file" in err(ed, command="str_replace", path=f"{ROOT}/pipe", old_str="a", new_str="b")


def test_write_errors_show_agent_paths_only(ed, repo):
    message = err(ed, command="create", path=f"{ROOT}/no/such/dir.py", file_text="x")
    assert message == (f"Ran into [Errno 2] No such file or directory: '{ROOT}/no/such/dir.py' while trying to write "
                       f"to {ROOT}/no/such/dir.py")
    assert str(repo) not in message



@pytest.mark.skipif(os.geteuid() != 0, reason="needs to run the check as another user")
def test_a_folder_that_may_be_searched_but_not_read_is_passed_as_by_name():
    """The editor opens the folders on the way to a file one by one: opened for reading, a folder of mode 0311 (a
    test fixture's, one the agent locked) refused the files in it, which opening the path by name reaches. A listing
    shows it as a folder (find's `d`), not as a file."""
    with tempfile.TemporaryDirectory() as folder:  # under /tmp: pytest's own folders are closed to other users
        checkout = Path(folder)
        (checkout / "locked").mkdir()
        (checkout / "locked" / "f.py").write_text("x = 1\n")
        checkout.chmod(0o755)
        (checkout / "locked").chmod(0o311)
        files, (read_end, write_end) = LocalFiles("/testbed", checkout), os.pipe()
        child = os.fork()
        if child == 0:  # as a user the folder's mode applies to (root passes every folder); nothing left to import
            try:
                os.setgid(65534), os.setuid(65534)
                answer = files.read_bytes("/testbed/locked/f.py").decode() + files.kind("/testbed/locked/f.py")
                answer += " " + " ".join(files.listing("/testbed")[0])
            except Exception as e:
                answer = repr(e)
            os.write(write_end, answer.encode())
            os._exit(0)
        os.close(write_end)
        answer = os.read(read_end, 4096).decode()
        os.waitpid(child, 0)
    assert answer == "x = 1\nfile /testbed/ /testbed/locked/"  # listed as a folder, its entries unread
