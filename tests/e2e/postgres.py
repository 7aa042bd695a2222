"""A throwaway PostgreSQL server for the end-to-end tests.

`PostgresServer` runs `initdb` in a temporary directory and starts `postgres` on 127.0.0.1 on a
free port (fsync off unless `durable`, unix socket inside that directory), with password (SCRAM) authentication;
`stop()` stops it and removes the directory. The session fixture `postgres` starts one server for
the whole test session; each test asks it for a fresh empty database:

    def test_store(postgres):
        url = postgres.new_database()   # postgres://passerelle:<password>@127.0.0.1:<port>/<db>

The server binaries are those of `pg_config --bindir`, else of the newest
/usr/lib/postgresql/*/bin (Debian and Ubuntu), else of `initdb` on the PATH. When none is found
the tests that use the fixture are skipped, or fail when PASSERELLE_REQUIRE_POSTGRES=1 (CI).
PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user.
"""

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

#: The superuser of the throwaway cluster; the tests connect as it.
SUPERUSER = "passerelle"
#: The system user the server runs as when the tests run as root.
SYSTEM_USER = "postgres"
SERVER_PROGRAMS = ("initdb", "postgres")


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in SERVER_PROGRAMS)


def _version_key(path: Path) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))


def find_bindir() -> Path | None:
    """The directory of the PostgreSQL server programs, or None when none is installed."""
    candidates = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (subprocess.CalledProcessError, OSError):
            pass
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).resolve().parent)
    return next((c for c in candidates if _has_server(c)), None)


def _client(bindir: Path, name: str) -> str:
    """A client program (psql, pg_isready): the one beside the server, else the one on the PATH."""
    if (bindir / name).is_file():
        return str(bindir / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"PostgreSQL client program `{name}` not found (install postgresql-client)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway PostgreSQL cluster on 127.0.0.1. Use `start()`/`stop()` or `with`."""

    def __init__(self, bindir: Path | None = None, durable: bool = False):
        """`durable`: fsync and synchronous commits on, as in production (benchmarks); off by
        default, which tests do not need and which makes them faster."""
        self.bindir = bindir or find_bindir()
        self.durable = durable
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server programs (initdb, postgres) not found")
        self.password = secrets.token_hex(16)
        self.port = None
        self.base = None
        self.proc = None
        self._databases = 0
        # As root, the server programs run as the `postgres` system user (initdb refuses root);
        # setpriv execs the program itself, so signals reach the server directly.
        self._as = []
        self._owner = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root and there is no `{SYSTEM_USER}` system user to run PostgreSQL as"
                ) from None
            # Not runuser: it stays the parent of the server and does not pass SIGINT on.
            if not shutil.which("setpriv"):
                raise RuntimeError("running as root and setpriv (util-linux) is not installed")
            self._owner = (user.pw_uid, user.pw_gid)
            self._as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]

    # --- paths -------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "s"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # --- life cycle --------------------------------------------------------------------------

    def _make_base(self) -> Path:
        """A private temporary directory the server user owns. Its parent must let that user in:
        /tmp does; a root-only TMPDIR (or pytest's own temporary dirs, mode 700) does not."""
        parents = dict.fromkeys([tempfile.gettempdir(), "/tmp", "/var/tmp"])
        for parent in parents:
            if not os.path.isdir(parent):
                continue
            base = Path(tempfile.mkdtemp(prefix="passerelle-pg-", dir=parent))
            if self._owner:
                os.chown(base, *self._owner)
            # The socket path (base/s/.s.PGSQL.<port>) must fit in 107 bytes.
            usable = len(str(base)) < 80 and subprocess.run([*self._as, "test", "-w", str(base)]).returncode == 0
            if usable:
                return base
            shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(f"no temporary directory usable by the PostgreSQL server user among {list(parents)}")

    def _run_as_server(self, *args, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self._as, *map(str, args)], capture_output=True, text=True, **kwargs)

    def start(self, timeout: float = 30.0):
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float):
        self.base = self._make_base()
        self.socket_dir.mkdir()
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._owner:
            for path in (self.socket_dir, pwfile):
                os.chown(path, *self._owner)
        init = self._run_as_server(
            self.bindir / "initdb", "-D", self.data_dir, "-U", SUPERUSER, f"--pwfile={pwfile}",
            "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync",
            env=dict(os.environ, LC_ALL="C"),
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        # A free port can be taken between the probe and the server's bind: try a few.
        for _ in range(3):
            self.port = _free_port()
            self._spawn()
            if self._wait_ready(timeout):
                break
        else:
            raise RuntimeError(f"PostgreSQL could not bind a free port:\n{self.log_tail()}")
        self.psql("SELECT 1")  # password authentication works
        return self

    def _spawn(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *self._as, str(self.bindir / "postgres"),
                    "-D", str(self.data_dir),
                    "-p", str(self.port),
                    "-k", str(self.socket_dir),
                    "-c", "listen_addresses=127.0.0.1",
                    *([] if self.durable else [
                        "-c", "fsync=off",
                        "-c", "synchronous_commit=off",
                        "-c", "full_page_writes=off",
                    ]),
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=dict(os.environ, LC_ALL="C"),
                # Its own session: a Ctrl-C in the terminal reaches pytest, which stops it.
                start_new_session=True,
            )

    def _wait_ready(self, timeout: float) -> bool:
        """True when the server accepts connections; False when it could not bind its port."""
        pg_isready = _client(self.bindir, "pg_isready")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if "could not bind" in self.log_tail() or "already in use" in self.log_tail():
                    return False
                raise RuntimeError(f"PostgreSQL exited with {self.proc.returncode}:\n{self.log_tail()}")
            ready = subprocess.run(
                [pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        self._terminate()
        raise TimeoutError(f"PostgreSQL not ready after {timeout}s:\n{self.log_tail()}")

    def _terminate(self):
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10), (signal.SIGKILL, 10)):
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self):
        self._terminate()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # --- databases ---------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """The URL of a database of this server, as the engine (sqlx) takes it."""
        return (
            f"postgres://{SUPERUSER}:{urllib.parse.quote(self.password, safe='')}"
            f"@127.0.0.1:{self.port}/{urllib.parse.quote(database, safe='')}"
        )

    def new_database(self) -> str:
        """Creates a fresh empty database; returns its URL."""
        self._databases += 1
        name = f"test_{self._databases}_{secrets.token_hex(4)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Runs SQL with psql as the superuser (over TCP, with the password); returns the rows,
        unaligned, one a line. `database` is a name or a URL from `new_database()`."""
        if "://" in database:
            database = urllib.parse.unquote(urllib.parse.urlsplit(database).path.lstrip("/"))
        out = subprocess.run(
            [
                _client(self.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql,
            ],
            capture_output=True, text=True,
            env=dict(os.environ, PGPASSWORD=self.password, PGCONNECT_TIMEOUT="10"),
            stdin=subprocess.DEVNULL,
        )
        if out.returncode != 0:
            raise RuntimeError(f"psql failed ({out.returncode}) on {database}: {sql}\n{out.stderr}")
        return out.stdout


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the session; `postgres.new_database()` gives each test its own
    database URL. Skipped when PostgreSQL is not installed, unless PASSERELLE_REQUIRE_POSTGRES=1."""
    bindir = find_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL server not installed (no initdb/postgres in `pg_config --bindir`, "
            "/usr/lib/postgresql/*/bin or the PATH): apt-get install postgresql"
        )
        if os.environ.get("PASSERELLE_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason + " (required: PASSERELLE_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    """`python3 tests/e2e/postgres.py -- COMMAND...`: runs COMMAND with a throwaway server and
    PASSERELLE_TEST_POSTGRES_URL set to its `postgres` database (the Rust store tests make a
    database of their own there per test); exits with COMMAND's status. Without a server
    installed, runs COMMAND without the variable, or fails when PASSERELLE_REQUIRE_POSTGRES=1."""
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("usage: postgres.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("PASSERELLE_REQUIRE_POSTGRES") == "1":
            print("PostgreSQL server not installed (required: PASSERELLE_REQUIRE_POSTGRES=1)", file=sys.stderr)
            return 1
        return subprocess.call(command)
    with PostgresServer(bindir) as server:
        return subprocess.call(command, env=dict(os.environ, PASSERELLE_TEST_POSTGRES_URL=server.url()))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
