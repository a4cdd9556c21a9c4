"""The stats socket: serving snapshots, finding a run by PID, the viewer, and every refusal."""

import io
import json
import os
import socket
from pathlib import Path

import pytest

from softkvm.errors import ConfigError
from softkvm.vmm import stat_socket as S
from softkvm.vmm.config import VmConfig
from tests.vmm.test_stats_report import fake_snapshot


class Counter:
    """A snapshot source whose exits grow by 10 per read, one second apart."""

    def __init__(self):
        self.reads = 0

    def __call__(self):
        self.reads += 1
        return fake_snapshot(float(self.reads), exits=(10 * self.reads, 0))


@pytest.fixture
def server(tmp_path):
    server = S.StatServer.start(tmp_path / "vm.sock", Counter())
    yield server
    server.close()


def test_each_request_line_gets_one_json_snapshot(server):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(server.path))
        lines = sock.makefile("rb")
        for expected in (10, 20):
            sock.sendall(b"\n")
            snap = json.loads(lines.readline())
            assert snap["vcpus"][0]["kvm"]["exits"] == expected


def test_socket_is_private_and_removed_at_close(tmp_path):
    path = tmp_path / "vm.sock"
    server = S.StatServer.start(path, Counter())
    client = S.StatClient.connect(path, "test")
    assert path.stat().st_mode & 0o777 == 0o600
    server.close()
    assert not path.exists()
    with pytest.raises(S.StatSocketError, match="exited"):
        client.snapshot()  # the open connection sees the end too
    client.close()
    server.close()  # idempotent


def test_refuses_a_path_in_use_or_not_a_socket(tmp_path, server):
    with pytest.raises(ConfigError, match="in use"):
        S.StatServer.start(server.path, Counter())
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    with pytest.raises(ConfigError, match="not a socket"):
        S.StatServer.start(plain, Counter())
    assert plain.read_text() == "keep me"


def test_replaces_a_stale_socket(tmp_path):
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nothing listens: a run that was killed
    server = S.StatServer.start(path, Counter())
    try:
        assert S.StatClient.connect(path, "test").snapshot()["pid"] == 42
    finally:
        server.close()


def isolated(monkeypatch, tmp_path):
    """Only this test's sockets: not those of softkvm runs elsewhere on the machine."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(S.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))


def test_default_path_is_per_pid_in_a_private_directory(tmp_path, monkeypatch):
    isolated(monkeypatch, tmp_path)
    assert S.default_socket_path(123) == tmp_path / "softkvm" / "123.sock"
    config = VmConfig(kernel=Path("x"), stat_socket=S.default_socket_path(),
                      stat_socket_optional=True)
    with S.serving(config, Counter()) as server:
        assert server is not None and server.path.name == f"{os.getpid()}.sock"
        assert (tmp_path / "softkvm").stat().st_mode & 0o777 == 0o700
        assert S.find_socket(None, None)[0] == server.path  # the only one running
        assert S.find_socket(os.getpid(), None)[0] == server.path
    assert not server.path.exists()


def test_default_socket_is_best_effort_but_a_given_one_must_work(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # not private: a default socket is not made there, quietly
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    optional = VmConfig(kernel=Path("x"), stat_socket=shared / "1.sock",
                        stat_socket_optional=True)
    with S.serving(optional, Counter()) as server:
        assert server is None
    given = VmConfig(kernel=Path("x"), stat_socket=tmp_path / ("x" * 120) / "vm.sock")
    with pytest.raises(ConfigError, match="does not exist"):
        given.validate()
    too_long = VmConfig(kernel=Path("x"), stat_socket=tmp_path / ("y" * 120 + ".sock"))
    with pytest.raises(ConfigError, match="cannot serve stats"):
        with S.serving(too_long, Counter()):
            pass


def test_no_such_process(tmp_path, monkeypatch):
    isolated(monkeypatch, tmp_path)
    with pytest.raises(S.StatSocketError, match="no softkvm process is running"):
        S.find_socket(None, None)
    path, what = S.find_socket(999999, None)
    with pytest.raises(S.StatSocketError, match="no softkvm process at PID 999999"):
        S.StatClient.connect(path, what)


def test_watch_prints_count_tables_with_rates(server):
    client = S.StatClient.connect(server.path, "test")
    out = io.StringIO()
    assert S.watch(client, out, S.WatchOptions(interval=0.01, count=2)) == 0
    client.close()
    tables = out.getvalue().split("softkvm 42:")[1:]
    assert len(tables) == 2
    for table in tables:  # 10 exits per second of the fake clock
        line = next(l for l in table.splitlines() if l.split()[:1] == ["exits"])
        assert line.split()[2] == "10"


def test_watch_json_lines(server):
    client = S.StatClient.connect(server.path, "test")
    out = io.StringIO()
    S.watch(client, out, S.WatchOptions(interval=0.01, count=3, json=True))
    client.close()
    snaps = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [s["vcpus"][0]["kvm"]["exits"] for s in snaps] == [10, 20, 30]


class EndingClient:
    """Serves ``n`` snapshots, then the run is over."""

    def __init__(self, n):
        self.source, self.left = Counter(), n

    def snapshot(self):
        if not self.left:
            raise S.StatSocketError("the softkvm process exited")
        self.left -= 1
        return self.source()


@pytest.mark.parametrize("served", [1, 2])
def test_watch_ends_quietly_when_the_run_ends(served):
    out = io.StringIO()
    assert S.watch(EndingClient(served), out, S.WatchOptions(interval=0.01)) == 0
    assert out.getvalue().count("softkvm 42:") == 1  # the last totals stay on screen
