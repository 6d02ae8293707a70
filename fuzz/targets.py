"""Fuzz targets: one `test_one_input(data: bytes)` per target, shared by the coverage-guided
runner (`fuzz/run.py`, atheris) and the regression tests (`tests/test_fuzz.py`).

Targets:

* `messages`: every codec of `iotdtls.messages` (each handshake message, the handshake
  header, each hello's extension block, alert, ChangeCipherSpec, heartbeat), chosen by the first
  byte. Bad input raises only `DecodeError` / `ProtocolError`; what decodes re-encodes to
  something that decodes to the same value.
* `records`: the record layer (`RecordLayer.open_records` with a null epoch 0 and a CCM_8 epoch
  1), datagram framing and the `-v` trace. Never raises.
* `client`: a client `DtlsConnection` driven to one of `CLIENT_STAGES` (every handshake state,
  established, closed) by recorded server datagrams, then fed the input as datagrams, replays of
  recorded ones and timer expiries.
* `server`: a `ServerEndpoint` driven to one of `SERVER_STAGES`, then fed datagrams from the
  recorded client's address or another one, replays and timer expiries.

Connection invariants (an `AssertionError` is a finding, like any other exception): nothing
escapes the API; no application data before the handshake completed, and completion at most
once; every datagram sent fits the MTU; an association ends with a typed, one-line `DtlsError`
(or cleanly, only when an alert record was delivered); before a valid cookie a server keeps no
state for an address and never answers with more bytes than it received (HS-2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from fuzz import TARGET_NAMES
from fuzz.scenario import (
    CLIENT_ADDR,
    MTU,
    OTHER_ADDR,
    Recording,
    client_at,
    client_stages,
    recording,
    server_at,
    server_stages,
)
from iotdtls._buffer import Reader
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.crypto import Ccm8Protector, NullProtector
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import DtlsError, ProtocolError
from iotdtls.events import ConnectionClosed, DataReceived, Event, HandshakeComplete
from iotdtls.messages import (
    Alert,
    Certificate,
    CertificateRequest,
    CertificateUrl,
    CertificateVerify,
    ChangeCipherSpec,
    ClientHello,
    ClientKeyExchangeEcdhe,
    ClientKeyExchangePsk,
    Finished,
    HandshakeHeader,
    HandshakeType,
    HeartbeatMessage,
    HelloRequest,
    HelloVerifyRequest,
    RawPublicKeyCertificate,
    ServerHello,
    ServerHelloDone,
    ServerKeyExchangeEcdhe,
    ServerKeyExchangePsk,
    decode_extensions,
    encode_extensions,
)
from iotdtls.record import ContentType, RecordLayer, split_datagram
from iotdtls.trace import describe_datagram

__all__ = ["TARGETS", "client_target", "messages_target", "records_target", "server_target"]

#: Largest fuzzed datagram (a little over the largest UDP payload a DTLS peer reads in practice).
MAX_DATAGRAM = 2048


# -- messages -------------------------------------------------------------------------------------

Codec = tuple[Callable[[bytes], object], Callable[[object], object]]


class _Encodable(Protocol):
    def encode(self) -> bytes: ...


def _body_codec(decode: Callable[[bytes], _Encodable]) -> Codec:
    def again(value: object) -> object:
        assert hasattr(value, "encode")
        return decode(value.encode())

    return decode, again


def _extensions_codec(in_message: HandshakeType) -> Codec:
    def decode(data: bytes) -> object:
        reader = Reader(data)
        exts = decode_extensions(reader, in_message)
        reader.expect_end()
        return exts

    def again(value: object) -> object:
        assert isinstance(value, tuple)
        return decode(encode_extensions(value, in_message))

    return decode, again


def _header_codec() -> Codec:
    def decode(data: bytes) -> object:
        return HandshakeHeader.decode(Reader(data))

    def again(value: object) -> object:
        assert isinstance(value, HandshakeHeader)
        return HandshakeHeader.decode(Reader(value.encode()))

    return decode, again


CODECS: tuple[Codec, ...] = (
    *(
        _body_codec(cls.decode)
        for cls in (
            ClientHello,
            HelloVerifyRequest,
            ServerHello,
            ServerKeyExchangePsk,
            ServerKeyExchangeEcdhe,
            Certificate,
            RawPublicKeyCertificate,
            CertificateRequest,
            CertificateUrl,
            ServerHelloDone,
            HelloRequest,
            ClientKeyExchangePsk,
            ClientKeyExchangeEcdhe,
            CertificateVerify,
            Finished,
            Alert,
            ChangeCipherSpec,
            HeartbeatMessage,
        )
    ),
    _extensions_codec(HandshakeType.client_hello),
    _extensions_codec(HandshakeType.server_hello),
    _header_codec(),
)


def messages_target(data: bytes) -> None:
    if not data:
        return
    decode, again = CODECS[data[0] % len(CODECS)]
    try:
        value = decode(data[1:])
    except ProtocolError:  # DecodeError included: the one outcome allowed for bad bytes
        return
    assert again(value) == value, value


# -- records --------------------------------------------------------------------------------------

_KEY = bytes(range(16))
_IV = bytes(4)


def records_target(data: bytes) -> None:
    layer = RecordLayer()
    layer.install_read_epoch(0, NullProtector(), replay_check=False)
    layer.install_read_epoch(1, Ccm8Protector(_KEY, _IV))
    opened = list(layer.open_records(data))
    framed, _ = split_datagram(data)
    assert len(opened) <= len(framed)
    for record in opened:
        assert isinstance(record.content_type, ContentType)
    text = describe_datagram(data)
    assert "\n" not in text


# -- connections ----------------------------------------------------------------------------------


def _ops(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The input as operations: (op, payload). op % 4: 0-1 a datagram of the input, 2 a replay
    of recorded datagram payload[0], 3 a timer expiry."""
    pos = 0
    while pos < len(data):
        op = data[pos]
        pos += 1
        kind = op % 4
        if kind == 3:
            yield op, b""
        elif kind == 2:
            yield op, data[pos : pos + 1]
            pos += 1
        else:
            length = int.from_bytes(data[pos : pos + 2], "big") % MAX_DATAGRAM
            pos += 2
            yield op, data[pos : pos + length]
            pos += length


class _Watch:
    """What one association told its user, checked as it comes."""

    def __init__(self) -> None:
        self.complete = False
        self.closed: ConnectionClosed | None = None

    def event(self, event: Event) -> None:
        assert self.closed is None, f"event after the close: {event}"
        if isinstance(event, HandshakeComplete):
            assert not self.complete, "handshake completed twice"
            self.complete = True
        elif isinstance(event, DataReceived):
            assert self.complete, "application data before the handshake completed"
        elif isinstance(event, ConnectionClosed):
            self.closed = event
            if event.error is not None:
                _check_error(event.error)


def _check_error(error: DtlsError) -> None:
    assert type(error) is not DtlsError, error
    assert "\n" not in str(error), error


def _has_alert_record(datagram: bytes) -> bool:
    framed, _ = split_datagram(datagram)
    return any(header.content_type == ContentType.alert for header, _ in framed)


def _check_end(conn: DtlsConnection, delivered: list[bytes]) -> None:
    if conn.state is not ConnectionState.CLOSED:
        assert conn.error is None
    elif conn.error is None:
        assert any(_has_alert_record(d) for d in delivered), "closed without a reason"


def _fire_timer(conn: DtlsConnection | ServerEndpoint, now: float) -> float:
    """Move the clock to `conn`'s timer (or a second on) and let it fire; the new time."""
    timer = conn.get_timer()
    now = max(now, timer if timer is not None else now + 1.0)
    conn.handle_timer(now)
    return now


def client_target(data: bytes) -> None:
    if not data:
        return
    stages = client_stages()
    stage = stages[data[0] % len(stages)]
    rec = recording(stage.mode)
    client = client_at(stage)
    watch = _Watch()
    delivered: list[bytes] = [rec.from_server[-1]] if client.closed else []
    now = 0.0
    for op, payload in _ops(data[1:]):
        if op % 4 == 3:
            now = _fire_timer(client, now)
        else:
            if op % 4 == 2:
                payload = rec.from_server[payload[0] % len(rec.from_server)] if payload else b""
            delivered.append(payload)
            client.receive_datagram(payload, now)
        for datagram in client.datagrams_to_send(now):
            assert len(datagram) <= MTU, len(datagram)
        while (event := client.next_event()) is not None:
            watch.event(event)
    _check_end(client, delivered)


def _server_step(
    server: ServerEndpoint, op: int, payload: bytes, now: float, rec: Recording
) -> None:
    address = OTHER_ADDR if op & 0x80 else CLIENT_ADDR
    if op % 4 == 2:
        payload = rec.from_client[payload[0] % len(rec.from_client)] if payload else b""
    known_before = address in server.connections
    server.receive_datagram(payload, address, now)
    if not known_before and address not in server.connections:
        # The stateless gate (HS-2): no state, no answer larger than the question.
        for reply, to in server.datagrams_to_send(now):
            assert to == address and len(reply) <= len(payload), (len(reply), len(payload))


def server_target(data: bytes) -> None:
    if not data:
        return
    stages = server_stages()
    stage = stages[data[0] % len(stages)]
    rec = recording(stage.mode)
    server = server_at(stage)
    watches: dict[object, _Watch] = {}
    now = 0.0
    for op, payload in _ops(data[1:]):
        if op % 4 == 3:
            now = _fire_timer(server, now)
        else:
            _server_step(server, op, payload, now, rec)
        for datagram, _ in server.datagrams_to_send(now):
            assert len(datagram) <= MTU, len(datagram)
        while (item := server.next_event()) is not None:
            address, event = item
            watch = watches.setdefault(address, _Watch())
            if watch.closed is not None:  # a new association from the same address
                watch = watches[address] = _Watch()
            watch.event(event)
        assert set(server.connections) <= {CLIENT_ADDR}, "state for an unproven address"
    for conn in server.connections.values():
        if conn.error is not None:
            _check_error(conn.error)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "messages": messages_target,
    "records": records_target,
    "client": client_target,
    "server": server_target,
}
assert tuple(TARGETS) == TARGET_NAMES
