"""Fixtures for the tiering tests: a PostgreSQL schema of its own, and a TCP proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator

import pytest
from tests_support import require_service

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The machine's PostgreSQL (db ``test``, trust auth); skips (fails under CI) if absent."""
    try:
        import psycopg

        with psycopg.connect(
            "host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=3
        ):
            pass
    except Exception as exc:  # ImportError, OperationalError
        require_service(f"PostgreSQL on 127.0.0.1:5432 db test: {exc}")
    return PG_URL


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A schema name unique to this test; dropped (with its tables) afterwards."""
    import psycopg

    name = f"tier_test_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres") as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


class TcpProxy:
    """Forwards 127.0.0.1:<port> to an upstream; ``down()`` cuts every connection and refuses
    new ones until ``up()`` (a database going away and coming back)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._alive = threading.Event()
        self._alive.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._alive.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._alive.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def up(self) -> None:
        """Accept connections again."""
        self._alive.set()

    def close(self) -> None:
        self._closed = True
        self.down()
        self._server.close()


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[TcpProxy]:
    """A :class:`TcpProxy` in front of the machine's PostgreSQL."""
    proxy = TcpProxy(("127.0.0.1", 5432))
    yield proxy
    proxy.close()
