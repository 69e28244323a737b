"""The embedded server as root: no folder is opened to every user behind the operator's back."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.errors import ConfigurationError
from conveyor.store import embedded
from conveyor.store.embedded import EmbeddedPostgres, folders_it_would_open

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the package's root path runs as root")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def folder(path: Path, permissions: int) -> Path:
    path.mkdir(parents=True)
    path.chmod(permissions)
    return path


@pytest.fixture
def umask_077() -> Iterator[None]:
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def test_folders_lacking_read_or_search_for_others_are_found(tmp_path: Path) -> None:
    closed = folder(tmp_path / "closed", 0o700)
    search_only = folder(tmp_path / "search_only", 0o711)
    group_only = folder(tmp_path / "group_only", 0o750)
    opened = folder(tmp_path / "open", 0o755)
    found = folders_it_would_open([closed, search_only, group_only, opened, tmp_path / "none"])
    assert found == [(closed, 0o700), (search_only, 0o711), (group_only, 0o750)]


@as_root
def test_as_root_a_closed_parent_is_refused_and_left_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder(tmp_path / "runtime", 0o700)))
    closed = folder(tmp_path / "private", 0o700)
    server = EmbeddedPostgres(closed / "not" / "yet" / "pgdata")
    with pytest.raises(ConfigurationError) as caught:
        server.start()
    message = str(caught.value)
    assert f"{closed} (0700)" in message
    assert "system user 'pgserver'" in message and "chmod go+rx" in message
    assert "CONVEYOR_EMBEDDED_DIR" in message
    assert mode(closed) == 0o700  # nothing was changed
    assert list(closed.iterdir()) == []  # not even the missing parents were created


@as_root
def test_as_root_missing_parents_are_created_open_whatever_the_umask(
    tmp_path: Path, umask_077: None
) -> None:
    embedded._make_parents_as_root(tmp_path / "a" / "b" / "pgdata")
    assert mode(tmp_path / "a") == 0o755
    assert mode(tmp_path / "a" / "b") == 0o755
    assert not (tmp_path / "a" / "b" / "pgdata").exists()  # the package makes that one
