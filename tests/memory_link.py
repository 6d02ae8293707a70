"""An in-memory link between a client `DtlsConnection` and a `ServerEndpoint`, with a fake clock.

Each datagram gets an index per direction (1-based), and a `fate(direction, index, data)`
callback decides whether it is delivered, dropped, duplicated or held back for reordering, or
returns replacement bytes to deliver instead (a rewritten datagram; the wire log keeps the
original). Time advances only to the next timer when nothing is in flight, so runs are
deterministic. Below the link: small helpers to read and forge records in tests.

Every run through the link is also an ERR-1 check (profile "Error Handling"): each plaintext
(epoch-0) alert record either side sends is decoded and must name an alert of the PSK mode
(`PSK_MODE_ALERTS`: never a reserved, unknown or certificate alert), and every association
that closes with `AlertSent` must name such an alert too (this covers the encrypted alerts,
which the link cannot read). `checked_alerts` lists what was checked.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from iotdtls._buffer import Reader
from iotdtls.certurl import fetch_client_chain
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import AlertDescription, AlertSent, ProtocolError
from iotdtls.events import CertificateUrlsReceived, ConnectionClosed, Event
from iotdtls.handshake import server as server_module
from iotdtls.handshake.alerts import PSK_MODE_ALERTS
from iotdtls.handshake.client import ClientHandshake
from iotdtls.handshake.flight import Flight, OutgoingMessage
from iotdtls.handshake.machine import Outcome
from iotdtls.handshake.reassembly import HandshakeMessage
from iotdtls.handshake.server import ServerHandshake
from iotdtls.handshake.transcript import Transcript, handshake_header
from iotdtls.messages import Alert, ExtendedMasterSecret, HandshakeHeader, HandshakeType
from iotdtls.record import ContentType, RecordHeader, RecordLayer, split_datagram
from iotdtls.sessions import SessionState

CLIENT_ADDR = ("192.0.2.1", 40000)
Direction = Literal["client", "server"]
Fate = Literal["deliver", "drop", "duplicate", "hold"]
FateFn = Callable[[Direction, int, bytes], Fate | bytes]


def deliver_all(direction: Direction, index: int, data: bytes) -> Fate | bytes:
    return "deliver"


def drop_exactly(direction: Direction, index: int) -> FateFn:
    def fate(d: Direction, i: int, data: bytes) -> Fate | bytes:
        return "drop" if (d, i) == (direction, index) else "deliver"

    return fate


def seeded(seed: int, loss: float, dup: float, reorder: float) -> FateFn:
    rng = random.Random(seed)

    def fate(d: Direction, i: int, data: bytes) -> Fate | bytes:
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
    #: (sender, level, description) of every alert checked against the mode (ERR-1).
    checked_alerts: list[tuple[Direction, int, int]] = field(default_factory=list)
    #: The alerts the link's mode may send (ERR-1); PSK and raw public keys share one set.
    allowed_alerts: frozenset[AlertDescription] = PSK_MODE_ALERTS
    #: A session the client offers for resumption (RES-1).
    session: SessionState | None = None
    #: An endpoint to reuse (its session store with it), e.g. from an earlier link.
    endpoint: ServerEndpoint | None = None
    #: Where the client's datagrams come from (change it between links for RES-2).
    address: tuple[str, int] = CLIENT_ADDR

    def __post_init__(self) -> None:
        self.client = DtlsConnection(self.client_config, session=self.session)
        self.server = self.endpoint or ServerEndpoint(self.server_config)

    @property
    def server_conn(self) -> DtlsConnection | None:
        return self.server.connections.get(self.address)

    def _deliver(self, direction: Direction, data: bytes) -> None:
        if direction == "client":
            self.server.receive_datagram(data, self.address, self.now)
        else:
            self.client.receive_datagram(data, self.now)

    def _route(self, direction: Direction, datagrams: list[bytes]) -> bool:
        moved = False
        for data in datagrams:
            moved = True
            self.sent[direction] += 1
            self.wire.append((direction, self.now, data))
            self._check_plain_alerts(direction, data)
            fate = self.fate(direction, self.sent[direction], data)
            if isinstance(fate, bytes):
                data, fate = fate, "deliver"
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

    def _check_plain_alerts(self, sender: Direction, data: bytes) -> None:
        """ERR-1: every epoch-0 alert record `sender` emits names an alert of the mode."""
        recs, _ = split_datagram(data)
        for header, fragment in recs:
            if header.content_type != ContentType.alert or header.epoch != 0:
                continue
            alert = Alert.decode(fragment)
            assert alert.description in self.allowed_alerts, (sender, alert)
            self.checked_alerts.append((sender, alert.level, alert.description))

    def _check_closed(self, sender: Direction, event: Event) -> None:
        """ERR-1: an association that ended by sending a fatal alert names an alert of the mode."""
        if isinstance(event, ConnectionClosed) and isinstance(event.error, AlertSent):
            assert event.error.alert in self.allowed_alerts, (sender, event.error)
            self.checked_alerts.append((sender, 2, event.error.alert))

    def _drain_events(self) -> None:
        while (ev := self.client.next_event()) is not None:
            self._check_closed("client", ev)
            self.client_events.append(ev)
        while (sev := self.server.next_event()) is not None:
            self._check_closed("server", sev[1])
            self.server_events.append(sev[1])
            if isinstance(sev[1], CertificateUrlsReceived):
                self._fetch_client_chain(sev[0], sev[1])

    def _fetch_client_chain(self, address: object, event: CertificateUrlsReceived) -> None:
        """What the asyncio server does for a CertificateURL (RFC 6066 §5), in line."""
        config = self.server_config
        assert config.certificate_fetcher is not None
        result: tuple[bytes, ...] | ProtocolError
        try:
            result = fetch_client_chain(
                event.urls_and_hashes,
                config.certificate_fetcher,
                config.certificate_url_size_limit,
                config.certificate_url_timeout,
            )
        except ProtocolError as exc:
            result = exc
        self.server.supply_certificate_chain(address, result, self.now, request=event)

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
            if not timers or min(timers) > until:
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


# -- helpers for the protocol tests -------------------------------------------------------------

IDENTITY = b"Client_identity"
KEY = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")


def make_link(
    fate: FateFn = deliver_all,
    *,
    cookie: bool = True,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> MemoryLink:
    """A link between a client with the test identity and a server knowing it (from a
    `psk_store`, unless `server` gives a `psk_lookup` instead)."""
    ckw: dict[str, Any] = {"psk_identity": IDENTITY, "psk": KEY, **(client or {})}
    skw: dict[str, Any] = {"cookie_exchange": cookie, **(server or {})}
    if "psk_lookup" not in skw:
        skw.setdefault("psk_store", {IDENTITY: KEY})
    return MemoryLink(ClientConfig(**ckw), ServerConfig(**skw), fate=fate)


def established(link: MemoryLink) -> bool:
    sc = link.server_conn
    return (
        link.client.state is ConnectionState.ESTABLISHED
        and sc is not None
        and sc.state is ConnectionState.ESTABLISHED
    )


def records(datagram: bytes) -> list[tuple[RecordHeader, bytes]]:
    """The records of a datagram (framing only, RFC 6347 §4.1)."""
    recs, problem = split_datagram(datagram)
    assert problem is None
    return recs


def drain(conn: DtlsConnection) -> list[Event]:
    """The events a bare connection has queued, in order."""
    out = []
    while (event := conn.next_event()) is not None:
        out.append(event)
    return out


def plain_handshake(datagram: bytes) -> list[tuple[HandshakeHeader, bytes]]:
    """Handshake fragments in the epoch-0 (plaintext) records of a datagram."""
    out = []
    for header, fragment in records(datagram):
        if header.content_type != ContentType.handshake or header.epoch != 0:
            continue
        reader = Reader(fragment)
        while not reader.eof():
            hs = HandshakeHeader.decode(reader)
            out.append((hs, reader.pull_bytes(hs.fragment_length)))
    return out


def wire_from(link: MemoryLink, direction: Direction) -> list[bytes]:
    return [data for d, _, data in link.wire if d == direction]


def message_types(datagrams: list[bytes]) -> list[int]:
    """The plaintext handshake message types, one per first fragment, in wire order."""
    return [
        hs.msg_type for d in datagrams for hs, _ in plain_handshake(d) if hs.fragment_offset == 0
    ]


def plain_alert(datagram: bytes) -> Alert | None:
    """The alert of a datagram made of one epoch-0 alert record, else None."""
    recs = records(datagram)
    if len(recs) != 1 or recs[0][0].content_type != ContentType.alert or recs[0][0].epoch != 0:
        return None
    return Alert.decode(recs[0][1])


def handshake_record(
    layer: RecordLayer, msg_type: int, seq: int, body: bytes, epoch: int = 0
) -> bytes:
    """One record carrying a whole handshake message, sealed by `layer` in `epoch`."""
    payload = handshake_header(msg_type, seq, len(body), 0, len(body)) + body
    return layer.seal(ContentType.handshake, payload, epoch)


def record_layer(conn: DtlsConnection) -> RecordLayer:
    """A connection's record layer, to forge records the peer will authenticate (tests only)."""
    layer = conn._records
    assert isinstance(layer, RecordLayer)
    return layer


def events_of(link: MemoryLink, side: Direction, kind: type[Any]) -> list[Any]:
    events = link.client_events if side == "client" else link.server_events
    return [e for e in events if isinstance(e, kind)]


def injecting_server(extra: list[tuple[int, bytes]]) -> type[ServerHandshake]:
    """A `ServerHandshake` whose flight 4 carries `extra` (type, body) messages between the
    ServerHello and the ServerHelloDone, numbered in order (to install with monkeypatch on
    `iotdtls.connection.ServerHandshake`)."""

    class Injecting(ServerHandshake):
        def _on_client_hello(self, msg: HandshakeMessage) -> Outcome:
            flight = super()._on_client_hello(msg).flight
            assert flight is not None
            hello, done = flight.items
            assert isinstance(done, OutgoingMessage)
            # Renumber: the extra messages take ServerHelloDone's place and it moves after.
            self.send_seq = done.message_seq
            self.keys.transcript = Transcript()
            self.record(msg)
            assert isinstance(hello, OutgoingMessage)
            self.keys.transcript.add(hello.msg_type, hello.message_seq, hello.body)
            added = [self.outgoing(HandshakeType(t), body, 0) for t, body in extra]
            new_done = self.outgoing(HandshakeType.server_hello_done, b"", 0)
            return Outcome(Flight((hello, *added, new_done)))

    return Injecting


def only_idle_timer(link: MemoryLink) -> bool:
    """No retransmission timer is pending on either side: the server's only timers are the idle
    timeout of its established association (`ServerConfig.idle_timeout`) and the end of its
    final flight's hold (RFC 6347 §4.2.4)."""
    conn = link.server_conn
    idle = link.server_config.idle_timeout
    timers = [] if conn is None else [conn._hold_until]
    if conn is not None and idle is not None:
        timers.append(conn.last_activity + idle)
    expected = min((t for t in timers if t is not None), default=None)
    return link.client.get_timer() is None and link.server.get_timer() == expected


def next_send_seq(conn: DtlsConnection) -> int:
    """The message_seq a connection's next handshake message would carry (tests only)."""
    seq = conn._handshake.send_seq
    assert isinstance(seq, int)
    return seq


#: Where a client that moved (NAT rebinding, a restart on another port) sends from (RES-2).
MOVED_ADDR = ("198.51.100.7", 50123)
_FIRST_SESSION: Any = object()


def next_link(
    first: MemoryLink,
    *,
    session: SessionState | None = _FIRST_SESSION,
    client_config: ClientConfig | None = None,
    fate: FateFn = deliver_all,
    address: tuple[str, int] = MOVED_ADDR,
    later: float = 10.0,
) -> MemoryLink:
    """A new association with `first`'s server endpoint (and so its session store), `later`
    seconds on, from `address`, offering `first`'s session (RES-1, RES-2) unless given another
    (or None)."""
    return MemoryLink(
        client_config or first.client_config,
        first.server_config,
        fate=fate,
        now=first.now + later,
        allowed_alerts=first.allowed_alerts,
        session=first.client.session if session is _FIRST_SESSION else session,
        endpoint=first.server,
        address=address,
    )


class LegacyClient(ClientHandshake):
    """A client from before RFC 7627: its ClientHello offers no extended_master_secret (to
    install with monkeypatch on `iotdtls.connection.ClientHandshake`)."""

    def __init__(self, config: ClientConfig, session: SessionState | None = None) -> None:
        super().__init__(config, session)
        self._offered_extensions = tuple(
            e for e in self._offered_extensions if not isinstance(e, ExtendedMasterSecret)
        )


def legacy_server(monkeypatch: Any) -> None:
    """Make servers ignore the client's extended_master_secret offer, as a server from before
    RFC 7627 does (its ServerHello then carries none, and the RFC 5246 master secret is used)."""
    real = server_module.find_extension

    def blind(extensions: Any, cls: Any) -> Any:
        return None if cls is ExtendedMasterSecret else real(extensions, cls)

    monkeypatch.setattr(server_module, "find_extension", blind)
