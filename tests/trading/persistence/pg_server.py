"""A throwaway PostgreSQL server for the test suite: initdb into a temp folder, pg_ctl start.

The server listens on 127.0.0.1 on a free port, with its unix socket in the same temp folder,
so it never touches a system cluster. As root (CI) every server command runs as an
unprivileged user, because initdb and postgres refuse to run as root: ``$ATF_PG_USER`` if set,
else ``postgres`` (created by Debian's package), else ``nobody``.

Binaries: ``$ATF_PG_BINDIR`` if set (and only there), else the folder of ``initdb`` on PATH (or of the
``pg_ctl`` it finds, symlinks resolved), else the newest ``/usr/lib/postgresql/<ver>/bin``.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SUPERUSER = "atf"
NEEDED = ("initdb", "pg_ctl", "postgres")


class PostgresUnavailable(RuntimeError):
    """The server binaries or the driver are missing, or the server would not start."""


def find_bindir() -> Path | None:
    """Return the folder holding initdb, pg_ctl and postgres, or None."""
    candidates: list[Path] = []
    if os.environ.get("ATF_PG_BINDIR"):  # explicit: no fallback if it is wrong
        folder = Path(os.environ["ATF_PG_BINDIR"])
        return folder if all((folder / tool).is_file() for tool in NEEDED) else None
    for tool in ("initdb", "pg_ctl"):
        found = shutil.which(tool)
        if found:
            candidates.append(Path(found).resolve().parent)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for folder in candidates:
        if all((folder / tool).is_file() for tool in NEEDED):
            return folder
    return None


def _server_user() -> str | None:
    """Return the user to run the server as (None: the current user, when not root)."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("ATF_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresUnavailable("running as root and no unprivileged user to run PostgreSQL as")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One private PostgreSQL server; `start`, `stop`, `restart` and `stopped()` control it.

    `create_database()` returns the URL of a new empty database (``postgresql+psycopg://``,
    with the superuser's password), `drop_database(url)` removes it. Stop the server in the
    middle of a test to simulate an outage, e.g.::

        with postgres_server.stopped():
            ...  # connections fail here
        # the server is back, on the same port, with the same data
    """

    def __init__(self, bindir: Path, *, base: Path | None = None) -> None:
        self.bindir = bindir
        self.user = _server_user()
        # Not under pytest's tmp_path: that is private to root, and the server user must write.
        self.root = Path(tempfile.mkdtemp(prefix="atf-pg-", dir=base))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.host = "127.0.0.1"
        self.port = 0
        self.password = secrets.token_hex(12)
        self._counter = 0
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)

    # ------------------------------------------------------------------ processes
    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {"user": self.user} if self.user is not None else {}
        return subprocess.run(
            [str(self.bindir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            check=False,
            **kwargs,
        )

    def init(self) -> None:
        """Create the cluster: superuser `atf`, password auth over TCP, UTF-8."""
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip()[-2000:]}")

    def start(self) -> None:
        """Start the server (on a new free port the first time, on the same port afterwards)."""
        attempts = 1 if self.port else 3
        for _ in range(attempts):
            port = self.port or _free_port()
            options = (
                f"-p {port} -c listen_addresses={self.host} "
                f"-c unix_socket_directories={self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            )
            if done.returncode == 0:
                self.port = port
                return
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise PostgresUnavailable(f"pg_ctl start failed: {done.stderr.strip()}\n{tail}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`mode`: smart, fast or immediate); open connections break."""
        done = self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")
        if done.returncode != 0 and self.is_running():
            raise PostgresUnavailable(f"pg_ctl stop failed: {done.stderr.strip()}")

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    @contextmanager
    def stopped(self, mode: str = "fast") -> Iterator[None]:
        """Stop the server for the body of the `with` block, then start it again."""
        self.stop(mode)
        try:
            yield
        finally:
            self.start()

    def destroy(self) -> None:
        """Stop the server at once and delete its folder."""
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ databases
    def url(self, database: str = "postgres") -> str:
        return (
            f"postgresql+psycopg://{SUPERUSER}:{self.password}@{self.host}:{self.port}/{database}"
        )

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        )

    def create_database(self, prefix: str = "atf_test") -> str:
        """Create an empty database and return its URL."""
        self._counter += 1
        name = f"{prefix}_{os.getpid()}_{self._counter}"
        with self._admin() as conn:
            conn.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of `url`, closing whatever connections a test left open."""
        name = url.rsplit("/", 1)[1].split("?", 1)[0]
        if not self.is_running():
            self.start()
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server() -> PostgresServer:
    """Find the binaries and the driver, then init and start a server; raise PostgresUnavailable."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install the "
            "postgresql package (.ci/run does) or set ATF_PG_BINDIR"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable("psycopg is not installed: pip install -e '.[test]'") from exc
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server
