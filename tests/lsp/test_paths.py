"""`lsp.paths`: what the bridge may read and where it may write, against hostile task
ids and URIs. Real folders and real symlinks in a temporary directory; no server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from host.store import new_task_id
from lsp import paths
from lsp.paths import Refused

REAL_ID = new_task_id()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    """A workspace folder with a file, and a secret next to it (outside)."""
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("x = 1\n")
    (tmp_path / "secret.txt").write_text("password\n")
    return root.resolve()


def uri(path: Path | str) -> str:
    return Path(path).as_uri()


# -- task ids ------------------------------------------------------------------------


def test_the_hosts_own_ids_are_task_ids() -> None:
    assert all(paths.is_task_id(new_task_id()) for _ in range(50))


@pytest.mark.parametrize(
    "value",
    [
        "../../etc/cron.d/x",
        "t-0193a5c2f1e4b7c9d0/../../x",
        "/etc/passwd",
        "t-0193a5c2f1e4b7c9d0\0",
        "t-0193a5c2f1e4b7c9d0\n",
        "t-0193A5C2F1E4B7C9D0",
        "t-0193a5c2f1e4b",  # too short
        "t-" + "a" * 33,  # too long
        "x-0193a5c2f1e4b7c9d0",
        "t-0193a5c2f1e4b7c9d0.md",
        "",
        42,
        None,
    ],
)
def test_anything_else_is_not(value: object) -> None:
    assert not paths.is_task_id(value)


# -- result files --------------------------------------------------------------------


def test_a_result_file_is_in_the_folders_tierhost(ws: Path) -> None:
    target = paths.result_file(ws, "tierhost.review", REAL_ID)
    assert target == ws / ".tierhost" / f"review-{REAL_ID}.md"
    assert not (ws / ".tierhost").exists()  # deciding creates nothing


@pytest.mark.parametrize(
    "task_id",
    [
        "../../../etc/evil",
        "t-1/../../../evil",
        "/tmp/evil",
        "t-0193a5c2f1e4b7c9d0\0x",
        "..",
        "t-7",
    ],
)
def test_an_id_not_of_the_hosts_form_names_no_file(ws: Path, task_id: str) -> None:
    with pytest.raises(Refused, match="not a task id of the host's form"):
        paths.result_file(ws, "tierhost.plan", task_id)


def test_a_tierhost_folder_linked_outside_is_refused(ws: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (ws / ".tierhost").symlink_to(outside)
    with pytest.raises(Refused, match="is a link"):
        paths.result_file(ws, "tierhost.plan", REAL_ID)


def test_a_tierhost_folder_linked_inside_is_refused_too(ws: Path) -> None:
    """Results go to the folder's own .tierhost, not wherever a link points (src/)."""
    (ws / ".tierhost").symlink_to(ws / "src")
    with pytest.raises(Refused, match="is a link"):
        paths.result_file(ws, "tierhost.plan", REAL_ID)


def test_a_result_file_planted_as_a_link_is_refused(ws: Path, tmp_path: Path) -> None:
    (ws / ".tierhost").mkdir()
    planted = ws / ".tierhost" / f"plan-{REAL_ID}.md"
    planted.symlink_to(tmp_path / "secret.txt")
    with pytest.raises(Refused, match="is a symlink"):
        paths.result_file(ws, "tierhost.plan", REAL_ID)


def test_a_workspace_reached_through_a_link_is_fine(ws: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(ws)
    assert paths.result_file(alias, "tierhost.plan", REAL_ID).parent == ws / ".tierhost"


# -- workspace folders ---------------------------------------------------------------


def test_workspace_folders_are_local_resolved_and_unique(ws: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(ws)
    folders = paths.workspace_folders(
        [uri(ws), uri(alias), None, "", "vscode-remote://ssh-remote+box/home/me", "file:///a%00b"]
    )
    assert folders == [ws]


# -- documents -----------------------------------------------------------------------


def test_a_file_in_the_workspace_is_read_from_disk(ws: Path) -> None:
    located = paths.locate(uri(ws / "src" / "app.py"), [ws], is_open=False)
    assert located.disk == ws / "src" / "app.py"
    assert located.folder == ws
    assert located.shown == "src/app.py"


def test_an_open_file_in_the_workspace_uses_its_folder(ws: Path) -> None:
    located = paths.locate(uri(ws / "src" / "new.py"), [ws], is_open=True)  # not saved yet
    assert located.folder == ws and located.shown == "src/new.py"


def test_the_right_folder_of_several(ws: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.py").write_text("")
    located = paths.locate(uri(other / "b.py"), [ws, other.resolve()], is_open=False)
    assert located.folder == other.resolve() and located.shown == "b.py"


@pytest.mark.parametrize(
    "target",
    [
        "file:///etc/passwd",
        "file://{ws}/../secret.txt",
        "file://{ws}/src/../../secret.txt",
        "file://{ws}/%2e%2e/secret.txt",
        "file://{ws}/src/%2E%2E/%2e%2e/secret.txt",
        "file://{ws}/%2e%2e%2fsecret.txt",
        "file://{ws}-sibling/a.py",  # a prefix of the folder's name is not inside it
    ],
)
@pytest.mark.parametrize("is_open", [False, True])
def test_a_file_outside_every_folder_is_refused(ws: Path, target: str, is_open: bool) -> None:
    with pytest.raises(Refused, match="outside every workspace folder"):
        paths.locate(target.format(ws=ws), [ws], is_open=is_open)


def test_percent_encoded_traversal_names_the_file_it_reaches(ws: Path) -> None:
    """`%2e%2e` decodes to `..`: inside again, it is the file it resolves to."""
    located = paths.locate(f"file://{ws}/src/%2e%2e/src/app.py", [ws], is_open=False)
    assert located.disk == ws / "src" / "app.py"


def test_a_symlink_out_of_the_workspace_is_refused(ws: Path, tmp_path: Path) -> None:
    (ws / "src" / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(Refused, match="outside every workspace folder"):
        paths.locate(uri(ws / "src" / "link.txt"), [ws], is_open=False)


def test_a_linked_directory_out_of_the_workspace_is_refused(ws: Path, tmp_path: Path) -> None:
    (ws / "etc").symlink_to("/etc")
    with pytest.raises(Refused, match="outside every workspace folder"):
        paths.locate(uri(ws) + "/etc/passwd", [ws], is_open=False)


def test_a_symlink_within_the_workspace_is_followed(ws: Path) -> None:
    (ws / "alias.py").symlink_to(ws / "src" / "app.py")
    located = paths.locate(uri(ws / "alias.py"), [ws], is_open=False)
    assert located.disk == ws / "src" / "app.py" and located.shown == "src/app.py"


def test_a_nul_byte_is_refused(ws: Path) -> None:
    with pytest.raises(Refused, match="NUL"):
        paths.locate(uri(ws) + "/src/app.py%00.txt", [ws], is_open=False)


def test_a_file_on_another_host_is_refused(ws: Path) -> None:
    with pytest.raises(Refused, match="another host"):
        paths.locate(f"file://fileserver{ws}/src/app.py", [ws], is_open=False)


def test_localhost_is_this_host(ws: Path) -> None:
    assert paths.locate(f"file://localhost{ws}/src/app.py", [ws], False).folder == ws


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_in_the_workspace_is_not_read(ws: Path) -> None:
    """Reading a FIFO blocks until someone writes: never start to."""
    os.mkfifo(ws / "pipe")
    with pytest.raises(Refused, match="not a regular file"):
        paths.locate(uri(ws / "pipe"), [ws], is_open=False)


def test_a_missing_file_says_so(ws: Path) -> None:
    with pytest.raises(Refused, match=r"cannot read .* missing on disk"):
        paths.locate(uri(ws / "gone.py"), [ws], is_open=False)


def test_untitled_documents_only_when_open(ws: Path) -> None:
    located = paths.locate("untitled:Untitled-1", [ws], is_open=True)
    assert located.disk is None and located.folder == ws and located.shown == "untitled:Untitled-1"
    with pytest.raises(Refused, match="not open in the editor"):
        paths.locate("untitled:Untitled-1", [ws], is_open=False)


def test_without_a_folder_only_open_documents_and_nowhere_to_write(tmp_path: Path) -> None:
    located = paths.locate(uri(tmp_path / "secret.txt"), [], is_open=True)
    assert located.disk is None  # the editor's text, not the disk's
    assert located.folder is None  # nothing is written
    with pytest.raises(Refused, match="no workspace folder is open"):
        paths.locate(uri(tmp_path / "secret.txt"), [], is_open=False)
    assert paths.locate("untitled:x", [], is_open=True).folder is None
