"""An in-memory link between a client `DtlsConnection` and a `ServerEndpoint`, with a fake clock.

Each datagram gets an index per direction (1-based), and a `fate(direction, index, data)`
callback decides whether it is delivered, dropped, duplicated or held back for reordering.
Time advances only to the next timer when nothing is in flight, so runs are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import ServerEndpoint
from iotdtls.events import Event

CLIENT_ADDR = ("192.0.2.1", 40000)
Direction = Literal["client", "server"]
Fate = Literal["deliver", "drop", "duplicate", "hold"]
FateFn = Callable[[Direction, int, bytes], Fate]


def deliver_all(direction: Direction, index: int, data: bytes) -> Fate:
    return "deliver"


def drop_exactly(direction: Direction, index: int) -> FateFn:
    def fate(d: Direction, i: int, data: bytes) -> Fate:
        return "drop" if (d, i) == (direction, index) else "deliver"

    return fate


def seeded(seed: int, loss: float, dup: float, reorder: float) -> FateFn:
    rng = random.Random(seed)

    def fate(d: Direction, i: int, data: bytes) -> Fate:
        x = rng.random()
        if x < loss:
            return "drop"
        if x < loss + dup:
            return "duplicate"
        if x < loss + dup + reorder:
            return "hold"
        return "deliver"

    return fate


@dataclass
class MemoryLink:
    client_config: ClientConfig
    server_config: ServerConfig
    fate: FateFn = deliver_all
    now: float = 0.0
    client: DtlsConnection = field(init=False)
    server: ServerEndpoint = field(init=False)
    sent: dict[str, int] = field(default_factory=lambda: {"client": 0, "server": 0})
    wire: list[tuple[Direction, float, bytes]] = field(default_factory=list)
    client_events: list[Event] = field(default_factory=list)
    server_events: list[Event] = field(default_factory=list)
    _held: list[tuple[Direction, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = DtlsConnection(self.client_config)
        self.server = ServerEndpoint(self.server_config)

    @property
    def server_conn(self) -> DtlsConnection | None:
        return self.server.connections.get(CLIENT_ADDR)

    def _deliver(self, direction: Direction, data: bytes) -> None:
        if direction == "client":
            self.server.receive_datagram(data, CLIENT_ADDR, self.now)
        else:
            self.client.receive_datagram(data, self.now)

    def _route(self, direction: Direction, datagrams: list[bytes]) -> bool:
        moved = False
        for data in datagrams:
            moved = True
            self.sent[direction] += 1
            self.wire.append((direction, self.now, data))
            fate = self.fate(direction, self.sent[direction], data)
            if fate == "drop":
                continue
            if fate == "hold":
                self._held.append((direction, data))
                continue
            self._deliver(direction, data)
            if fate == "duplicate":
                self._deliver(direction, data)
            # A held datagram is released after the next delivered one: reordering.
            while self._held:
                self._deliver(*self._held.pop(0))
        return moved

    def _drain_events(self) -> None:
        while (ev := self.client.next_event()) is not None:
            self.client_events.append(ev)
        while (sev := self.server.next_event()) is not None:
            self.server_events.append(sev[1])

    def step(self) -> bool:
        """Move queued datagrams once; False when nothing was in flight."""
        moved = self._route("client", self.client.datagrams_to_send(self.now))
        moved |= self._route("server", [d for d, _ in self.server.datagrams_to_send(self.now)])
        self._drain_events()
        return moved

    def run(self, until: float = 200.0, stop: Callable[[MemoryLink], bool] | None = None) -> None:
        """Run until `stop` holds, both sides are quiet with no timers, or `until` seconds."""
        done = stop or (lambda link: link.client.state is not ConnectionState.HANDSHAKING)
        while self.now <= until:
            while self.step():
                pass
            if done(self):
                return
            if self._held:
                self._deliver(*self._held.pop(0))
                continue
            timers = [
                t for t in (self.client.get_timer(), self.server.get_timer()) if t is not None
            ]
            if not timers:
                return
            self.now = max(self.now, min(timers))
            self.client.handle_timer(self.now)
            self.server.handle_timer(self.now)
            self._drain_events()

    def handshake(self, until: float = 200.0) -> None:
        self.client.connect(self.now)
        self.run(
            until,
            stop=lambda link: (
                link.client.state is not ConnectionState.HANDSHAKING
                and (
                    link.server_conn is None
                    or link.server_conn.state is not ConnectionState.HANDSHAKING
                )
            ),
        )
