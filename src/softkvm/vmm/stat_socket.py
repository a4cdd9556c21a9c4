"""Live counters on a Unix socket, and ``softkvm stat``, the viewer that reads them.

Counterpart: kvm_stat (tools/kvm/kvm_stat) reading a running VM's stats from debugfs or the
stats fds. A KVM stats fd belongs to the VMM process; softkvm's "kernel" lives in that process
too, so the VMM serves them: ``softkvm run`` listens on ``--stat-socket PATH``, or by default on
a per-PID path (``$XDG_RUNTIME_DIR/softkvm/PID.sock``, else ``/tmp/softkvm-UID/PID.sock``) that
``softkvm stat PID`` finds without being told. The socket goes away when the run ends.

Protocol: connect, send a line, read one line back: a JSON snapshot (stats_report.snapshot),
with its wall-clock ``time`` and its ``monotonic`` clock for rates. Repeat at will. A snapshot
only reads ints, so the vCPU threads never wait for it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from softkvm.errors import ConfigError, SoftkvmError
from softkvm.vmm.config import VmConfig
from softkvm.vmm.stats_report import Snapshot, live_table, make_console

SUFFIX = ".sock"


class StatSocketError(SoftkvmError):
    """No softkvm process to read counters from, or it went away."""


# --- where the sockets live -------------------------------------------------------------------


def socket_dirs() -> list[Path]:
    """Where per-PID sockets may be, the server's choice first."""
    dirs = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        dirs.append(Path(runtime) / "softkvm")
    dirs.append(Path(tempfile.gettempdir()) / f"softkvm-{os.getuid()}")
    return dirs


def default_socket_path(pid: int | None = None) -> Path:
    return socket_dirs()[0] / f"{os.getpid() if pid is None else pid}{SUFFIX}"


def _private_dir(path: Path) -> None:
    """Create the per-user directory, or accept it only if it is ours and private: a shared /tmp
    must not let another user plant the socket we then talk to."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(f"'{path}' is not a private directory of this user: remove it or give "
                          "--stat-socket PATH")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(directory: Path) -> None:
    """Sockets left by runs that were killed (no chance to clean up)."""
    for path in directory.glob(f"*{SUFFIX}"):
        if path.stem.isdigit() and not _pid_alive(int(path.stem)):
            with contextlib.suppress(OSError):
                path.unlink()


# --- the server (in softkvm run) --------------------------------------------------------------


@dataclass(slots=True)
class StatServer:
    """Serves ``snapshot()`` on a Unix socket from one accept thread and one thread per client.
    ``close()`` wakes the accept thread through a pipe (never a polling timeout: a sleeping
    server costs the vCPUs nothing) and removes the socket file."""

    path: Path
    snapshot: Callable[[], Snapshot]
    _sock: socket.socket = field(init=False)
    _wake: tuple[int, int] = field(init=False)
    _clients: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None
    _closed: bool = False

    @classmethod
    def start(cls, path: Path, snapshot: Callable[[], Snapshot]) -> StatServer:
        server = cls(Path(path), snapshot)
        server._sock = _listen(server.path)
        server._wake = os.pipe()
        server._thread = threading.Thread(target=server._accept_loop, name="stat-socket",
                                          daemon=True)
        server._thread.start()
        return server

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = list(self._clients)
        os.write(self._wake[1], b"x")
        for conn in clients:  # wakes their reader threads with EOF
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()
        self._sock.close()
        for fd in self._wake:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept_loop(self) -> None:
        while True:
            ready, _, _ = select.select([self._sock, self._wake[0]], [], [])
            if self._wake[0] in ready:
                return
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                self._clients.add(conn)
            threading.Thread(target=self._serve_client, args=(conn,), name="stat-client",
                             daemon=True).start()

    def _serve_client(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as lines:
                for _request in lines:
                    conn.sendall(json.dumps(self.snapshot()).encode() + b"\n")
        except OSError:
            pass  # the viewer went away
        finally:
            with self._lock:
                self._clients.discard(conn)


def _listen(path: Path) -> socket.socket:
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(f"--stat-socket '{path}' exists and is not a socket: give a new path")
        if _answers(path):
            raise ConfigError(f"--stat-socket '{path}' is in use by another process")
        path.unlink()  # left by a run that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(8)
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot serve stats on '{path}': {err.strerror or err}") from err
    return sock


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def serving(config: VmConfig, snapshot: Callable[[], Snapshot]) -> Iterator[StatServer | None]:
    """Serve the counters for the duration of a run, as ``config`` asks. The per-PID default is
    best effort (a run never fails for it); a path the user gave must work."""
    server = _start(config, snapshot)
    try:
        yield server
    finally:
        if server is not None:
            server.close()


def _start(config: VmConfig, snapshot: Callable[[], Snapshot]) -> StatServer | None:
    path = config.stat_socket
    if path is None:
        return None
    try:
        if config.stat_socket_optional:
            _private_dir(Path(path).parent)
            _remove_stale(Path(path).parent)
        return StatServer.start(Path(path), snapshot)
    except (ConfigError, OSError):
        if config.stat_socket_optional:
            return None
        raise


# --- the client (softkvm stat) ----------------------------------------------------------------


@dataclass(slots=True)
class StatClient:
    path: Path
    _sock: socket.socket
    _lines: BinaryIO

    @classmethod
    def connect(cls, path: Path, what: str) -> StatClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError as err:
            sock.close()
            why = "no such socket" if err.errno == errno.ENOENT else (
                "nothing listens there" if err.errno == errno.ECONNREFUSED else err.strerror)
            raise StatSocketError(f"no softkvm process at {what} ({why}: {path})") from err
        return cls(path, sock, sock.makefile("rb"))

    def snapshot(self) -> Snapshot:
        try:
            self._sock.sendall(b"\n")
            line = self._lines.readline()
        except OSError:
            line = b""
        if not line:
            raise StatSocketError("the softkvm process exited")
        return json.loads(line)

    def close(self) -> None:
        self._lines.close()
        self._sock.close()


def find_socket(pid: int | None, path: Path | None) -> tuple[Path, str]:
    """The socket to read, and how to name it in an error."""
    if path is not None:
        return path, f"'{path}'"
    if pid is not None:
        candidates = [d / f"{pid}{SUFFIX}" for d in socket_dirs()]
        found = next((c for c in candidates if c.exists()), candidates[0])
        return found, f"PID {pid}"
    running = sorted({int(p.stem) for d in socket_dirs() if d.is_dir()
                      for p in d.glob(f"*{SUFFIX}")
                      if p.stem.isdigit() and _pid_alive(int(p.stem))})
    if not running:
        raise StatSocketError("no softkvm process is running (or it was started with "
                              "--no-stat-socket): give a PID or --socket PATH")
    if len(running) > 1:
        pids = ", ".join(map(str, running))
        raise StatSocketError(f"several softkvm processes are running ({pids}): give one PID")
    return find_socket(running[0], None)


@dataclass(slots=True)
class WatchOptions:
    interval: float = 1.0
    count: int | None = None      # refreshes before exiting; None: until the VM exits
    show_all: bool = False
    json: bool = False


def watch(client: StatClient, out: TextIO, options: WatchOptions) -> int:
    """Show the counters every ``interval`` with per-second rates; 0 when done or the VM ended."""
    if options.json:
        return _watch_json(client, out, options)
    from rich.live import Live  # drawing only: `softkvm run` never imports rich

    console = make_console(out)
    prev = client.snapshot()
    shown = 0
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(Live(console=console, auto_refresh=False)) \
            if console.is_terminal else None
        while options.count is None or shown < options.count:
            time.sleep(options.interval)
            try:
                cur = client.snapshot()
            except StatSocketError:
                break  # the run ended: what was shown stays
            table = live_table(prev, cur, options.show_all)
            if live is not None:
                live.update(table, refresh=True)
            else:
                console.print(table)
            prev, shown = cur, shown + 1
    if not shown:
        console.print(live_table(None, prev, options.show_all))
    return 0


def _watch_json(client: StatClient, out: TextIO, options: WatchOptions) -> int:
    shown = 0
    while options.count is None or shown < options.count:
        if shown:
            time.sleep(options.interval)
        try:
            snap = client.snapshot()
        except StatSocketError:
            break
        out.write(json.dumps(snap) + "\n")
        out.flush()
        shown += 1
    return 0
