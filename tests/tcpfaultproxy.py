"""A fault-injecting TCP proxy on 127.0.0.1: faults below HTTP, for any protocol.

:class:`TCPFaultProxy` forwards every connection to an upstream ``host:port`` (RabbitMQ, the
Pub/Sub emulator's gRPC port...) and can break them the ways networks do:

* :meth:`~TCPFaultProxy.reset` one or all connections: both sides get a TCP RST;
* :meth:`~TCPFaultProxy.stall` all traffic for a while (nothing is forwarded either way, the
  connections stay open: a congested or paused network, a frozen peer);
* :meth:`~TCPFaultProxy.half_open` one or all connections: the upstream side is closed, the
  client side stays open and silent (the peer vanished without a FIN, as after a crash or a
  NAT timeout): the client notices only through its own timeouts or heartbeats;
* :meth:`~TCPFaultProxy.blackhole`: from now on new connections are accepted and then left
  silent, and existing ones are stalled, until :meth:`~TCPFaultProxy.heal`; an endpoint
  that no longer answers.

:meth:`~TCPFaultProxy.chaos` runs a seeded schedule of random resets, stalls and half-open
connections in a thread. :attr:`~TCPFaultProxy.injected` counts what was done.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Link:
    client: socket.socket
    upstream: socket.socket | None
    dead: threading.Event = field(default_factory=threading.Event)


def _rst(sock: socket.socket | None) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0) instead of a FIN.

    ``shutdown(SHUT_RD)`` first wakes a pipe thread blocked in ``recv`` on it (closing alone
    would not, and the kernel would keep the connection open until that ``recv`` returned).
    """
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class TCPFaultProxy:
    """Forward 127.0.0.1:``port`` to ``upstream``, injecting TCP-level faults on request.

    Args:
        upstream: ``(host, port)`` to forward to.
        seed: Seed of the RNG used by :meth:`chaos` and by random picks.
    """

    def __init__(self, upstream: tuple[str, int], *, seed: int = 0) -> None:
        self.upstream = upstream
        self.rng = random.Random(seed)
        self.injected: Counter[str] = Counter()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._flowing = threading.Event()  # cleared while stalled
        self._flowing.set()
        self._blackholed = False
        self._closed = threading.Event()
        self._chaos: threading.Thread | None = None
        threading.Thread(target=self._accept, name="tcpfaultproxy-accept", daemon=True).start()

    @property
    def address(self) -> str:
        """``127.0.0.1:port`` of the proxy."""
        return f"127.0.0.1:{self.port}"

    # forwarding

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._blackholed:
                with self._lock:
                    self._links.append(_Link(client, None))  # accepted, never answered
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                _rst(client)
                continue
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pipe, args=(link, src, dst), name="tcpfaultproxy-pipe", daemon=True
                ).start()

    def _pipe(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not link.dead.is_set():
                data = src.recv(65536)
                if not data:
                    break
                while not self._flowing.wait(0.05):  # stalled: hold the data
                    if link.dead.is_set():
                        return
                if link.dead.is_set():
                    return
                dst.sendall(data)
        except OSError:
            pass
        if link.dead.is_set():
            return  # a fault decided what happens to the sockets
        link.dead.set()
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _live(self) -> list[_Link]:
        with self._lock:
            self._links = [link for link in self._links if not link.dead.is_set()]
            return list(self._links)

    @property
    def connections(self) -> int:
        """How many connections are open (as far as the proxy knows)."""
        return len(self._live())

    # faults

    def _pick(self, which: str) -> list[_Link]:
        links = self._live()
        if which == "all" or not links:
            return links
        return [self.rng.choice(links)]

    def reset(self, which: str = "all") -> int:
        """Reset ``"all"`` connections or ``"one"`` (random); return how many."""
        links = self._pick(which)
        for link in links:
            link.dead.set()
            _rst(link.client)
            _rst(link.upstream)
        self.injected["reset"] += len(links)
        return len(links)

    def half_open(self, which: str = "all") -> int:
        """Close the upstream side of connections; their clients hear nothing more."""
        links = self._pick(which)
        for link in links:
            link.dead.set()  # the pipes stop; the client socket stays open, silent
            _rst(link.upstream)
            link.upstream = None
        self.injected["half_open"] += len(links)
        return len(links)

    def stall(self, seconds: float | None = None) -> None:
        """Stop forwarding in both directions (for ``seconds``, or until :meth:`heal`)."""
        self._flowing.clear()
        self.injected["stall"] += 1
        if seconds is not None:
            timer = threading.Timer(seconds, self._flowing.set)
            timer.daemon = True
            timer.start()

    def blackhole(self) -> None:
        """No answer from now on: stall existing connections, accept new ones silently."""
        self._blackholed = True
        self.stall()
        self.injected["blackhole"] += 1

    def heal(self) -> None:
        """Forward again; new connections reach the upstream. Half-open ones stay dead."""
        self._blackholed = False
        self._flowing.set()
        for link in self._live():
            if link.upstream is None:  # accepted while black-holed: reset, so clients retry
                link.dead.set()
                _rst(link.client)

    def chaos(
        self,
        every: tuple[float, float] = (0.3, 1.0),
        weights: dict[str, float] | None = None,
        stall_seconds: tuple[float, float] = (0.2, 1.5),
    ) -> None:
        """Start a thread that injects a random fault every ``every`` seconds until :meth:`calm`.

        Args:
            every: Pause between faults, uniform in this range.
            weights: Relative frequency of ``"reset"``, ``"stall"``, ``"half_open"``.
            stall_seconds: Length of a stall, uniform in this range.
        """
        weights = weights or {"reset": 2.0, "stall": 1.0, "half_open": 1.0}
        kinds, odds = list(weights), list(weights.values())
        self._calm = threading.Event()

        def run() -> None:
            while not self._calm.wait(self.rng.uniform(*every)):
                kind = self.rng.choices(kinds, odds)[0]
                if kind == "stall":
                    self.stall(self.rng.uniform(*stall_seconds))
                elif kind == "reset":
                    self.reset("one")
                else:
                    self.half_open("one")
                logger.info("tcpfaultproxy: injected %s", kind)

        self._chaos = threading.Thread(target=run, name="tcpfaultproxy-chaos", daemon=True)
        self._chaos.start()

    def calm(self) -> None:
        """Stop :meth:`chaos` and forward normally again."""
        if self._chaos is not None:
            self._calm.set()
            self._chaos.join()
            self._chaos = None
        self.heal()

    def close(self) -> None:
        """Stop accepting and reset every connection."""
        self.calm()
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        for link in self._live():
            link.dead.set()
            _rst(link.client)
            _rst(link.upstream)

    def __enter__(self) -> TCPFaultProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_for(predicate: object, timeout: float) -> bool:
    """Poll ``predicate()`` every 20 ms until true or ``timeout`` seconds; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
