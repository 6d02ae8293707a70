"""Recorded, reproducible handshakes: the ground the connection fuzz targets stand on.

Each role draws its randomness (client and server randoms, cookie secret, ephemeral ECDH keys)
from its own deterministic stream while the harness runs, so a client rebuilt for every fuzz
input sends the same flights and accepts the recorded server flights (the Finished verifies),
and a server endpoint rebuilt for every input accepts the recorded cookie and client flights.

Three modes are recorded: PSK (TLS_PSK_WITH_AES_128_CCM_8), mutual raw public keys
(TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, RFC 7250) and mutual X.509 certificates (`fuzz/pki.py`). A
*stage* is a mode and a number of the peer's recorded records replayed one by one; the stages
are derived, not listed: the first replay length that reaches each distinct state (connection
state and handshake state) is kept, so the fuzzed datagrams meet every state of both machines
in every mode, however the flows change. The targets feed their input through the public
sans-I/O API only: `DtlsConnection` for the client, `ServerEndpoint` for the server.

The library's own randomness is untouched outside a `role_randomness` block: every random value
it draws comes from `os.urandom` (CFG-2), ECDH and ECDSA keys included, and its ECDSA signatures
are deterministic (RFC 6979), so replacing `os.urandom` makes a whole handshake replay.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import cache
from unittest import mock

from fuzz.pki import NOW, SERVER_NAME, p256_key, test_pki
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import DtlsConnection
from iotdtls.credentials import PrivateKey
from iotdtls.crypto import NullProtector
from iotdtls.endpoint import ServerEndpoint
from iotdtls.handshake.transcript import handshake_header
from iotdtls.messages import HandshakeType, ServerKeyExchangePsk
from iotdtls.record import RECORD_HEADER_LEN, ContentType, RecordHeader, RecordLayer

__all__ = [
    "CLIENT_ADDR",
    "MODES",
    "MTU",
    "OTHER_ADDR",
    "Recording",
    "Role",
    "Stage",
    "client_at",
    "client_stages",
    "recording",
    "role_randomness",
    "server_at",
    "server_stages",
    "split_records",
]

IDENTITY = b"fuzz-identity"
KEY = bytes(range(1, 17))
MTU = 512
CLIENT_ADDR = ("192.0.2.1", 40000)
#: Another source address: whatever comes from it meets only the stateless cookie gate.
OTHER_ADDR = ("198.51.100.7", 50000)
START = 0.0


class Role(Enum):
    CLIENT = "client"
    SERVER = "server"


class _Stream:
    """A deterministic byte stream standing in for `os.urandom` (harness only)."""

    def __init__(self, role: Role) -> None:
        self._label = role.value.encode()
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(b"%s %d" % (self._label, self._counter)).digest()
            self._counter += 1
        return out[:n]


@contextmanager
def _drawing_from(stream: _Stream) -> Iterator[None]:
    with mock.patch.object(os, "urandom", stream):
        yield


@contextmanager
def role_randomness(role: Role) -> Iterator[None]:
    """`os.urandom` replaced by a fresh deterministic stream of `role` inside the block."""
    with _drawing_from(_Stream(role)):
        yield


def _fixed_key(label: bytes) -> PrivateKey:
    return PrivateKey(p256_key(label))


@dataclass(frozen=True)
class Mode:
    """A credential mode: how to configure each side."""

    name: str
    client: Callable[[], ClientConfig]
    server: Callable[[], ServerConfig]


def _psk_client() -> ClientConfig:
    return ClientConfig(psk_identity=IDENTITY, psk=KEY, mtu=MTU, handshake_timeout=30.0)


def _psk_server() -> ServerConfig:
    return ServerConfig(psk_store={IDENTITY: KEY}, mtu=MTU, handshake_timeout=30.0)


def _rpk_client() -> ClientConfig:
    return ClientConfig(
        raw_public_key=_fixed_key(b"client"),
        server_public_keys=[_fixed_key(b"server").spki],
        mtu=MTU,
        handshake_timeout=30.0,
    )


def _rpk_server() -> ServerConfig:
    return ServerConfig(
        raw_public_key=_fixed_key(b"server"),
        client_public_keys=[_fixed_key(b"client").spki_sha256],
        mtu=MTU,
        handshake_timeout=30.0,
    )


def _x509_client() -> ClientConfig:
    pki = test_pki()
    return ClientConfig(
        trust_anchors=[pki.ca],
        server_name=SERVER_NAME,
        certificate=pki.client,
        wall_clock=lambda: NOW,
        mtu=MTU,
        handshake_timeout=30.0,
    )


def _x509_server() -> ServerConfig:
    pki = test_pki()
    return ServerConfig(
        certificates=(pki.server,),
        client_trust_anchors=[pki.ca],
        wall_clock=lambda: NOW,
        mtu=MTU,
        handshake_timeout=30.0,
    )


MODES = {
    "psk": Mode("psk", _psk_client, _psk_server),
    "rpk": Mode("rpk", _rpk_client, _rpk_server),
    "x509": Mode("x509", _x509_client, _x509_server),
}


def split_records(datagram: bytes) -> list[bytes]:
    """The records of a well-formed datagram, each as bytes (header included)."""
    out, offset = [], 0
    while offset < len(datagram):
        header = RecordHeader.decode(datagram, offset)
        end = offset + RECORD_HEADER_LEN + header.length
        out.append(datagram[offset:end])
        offset = end
    return out


@dataclass(frozen=True)
class Recording:
    """The datagrams of one clean handshake, data both ways and a close, per direction."""

    mode: Mode
    from_client: tuple[bytes, ...]
    from_server: tuple[bytes, ...]

    def records_from(self, role: Role) -> list[bytes]:
        datagrams = self.from_client if role is Role.CLIENT else self.from_server
        return [record for datagram in datagrams for record in split_records(datagram)]

    @property
    def identity_hint(self) -> bytes:
        """A plaintext ServerKeyExchange (an identity hint, PSK-3) numbered to follow the
        recorded ServerHello: a server message no PSK server of ours sends."""
        hello = split_records(self.from_server[1])[0]
        header = RecordHeader.decode(hello)
        message_seq = int.from_bytes(hello[RECORD_HEADER_LEN + 4 : RECORD_HEADER_LEN + 6], "big")
        body = ServerKeyExchangePsk(b"hint").encode()
        layer = RecordLayer()
        layer.install_write_epoch(
            0, NullProtector(), next_sequence_number=header.sequence_number + 1
        )
        fragment = handshake_header(
            HandshakeType.server_key_exchange, message_seq + 1, len(body), 0, len(body)
        )
        return layer.seal(ContentType.handshake, fragment + body, 0)


@cache
def recording(mode_name: str) -> Recording:
    """Run client and server of `mode_name` in memory, every call of each under its own
    randomness stream, and keep what each sent: the HelloVerifyRequest exchange, flights 4-6,
    one datagram of application data each way, then the client's close_notify and the
    server's answer."""
    mode = MODES[mode_name]
    from_client: list[bytes] = []
    from_server: list[bytes] = []
    as_client, as_server = _Stream(Role.CLIENT), _Stream(Role.SERVER)
    with _drawing_from(as_client):
        client = DtlsConnection(mode.client())
        client.connect(START)
    with _drawing_from(as_server):
        server = ServerEndpoint(mode.server())

    def pump() -> None:
        for _ in range(10):
            with _drawing_from(as_client):
                out = client.datagrams_to_send(START)
            from_client.extend(out)
            with _drawing_from(as_server):
                for data in out:
                    server.receive_datagram(data, CLIENT_ADDR, START)
                answers = [d for d, _ in server.datagrams_to_send(START)]
            from_server.extend(answers)
            with _drawing_from(as_client):
                for data in answers:
                    client.receive_datagram(data, START)
            if not out and not answers:
                return

    pump()
    client.send(b"client data")
    server.send(CLIENT_ADDR, b"server data")
    pump()
    client.close()
    pump()
    return Recording(mode, tuple(from_client), tuple(from_server))


# -- stages ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """A mode, how many of the peer's recorded records to replay first, and (client, PSK)
    whether an identity hint follows them; `name` says which state that reaches."""

    mode: str
    records: int
    name: str
    connect: bool = True
    hint: bool = False


def _client_replay(stage: Stage) -> DtlsConnection:
    rec = recording(stage.mode)
    with role_randomness(Role.CLIENT):
        client = DtlsConnection(rec.mode.client())
        if stage.connect:
            client.connect(START)
        for record in rec.records_from(Role.SERVER)[: stage.records]:
            client.receive_datagram(record, START)
        if stage.hint:
            client.receive_datagram(rec.identity_hint, START)
    return client


def _server_replay(stage: Stage) -> ServerEndpoint:
    rec = recording(stage.mode)
    with role_randomness(Role.SERVER):
        server = ServerEndpoint(rec.mode.server())
        for record in rec.records_from(Role.CLIENT)[: stage.records]:
            server.receive_datagram(record, CLIENT_ADDR, START)
    return server


def _client_state(client: DtlsConnection) -> str:
    return f"{client.state.name}/{client.handshake_state.name}"


def _server_state(server: ServerEndpoint) -> str:
    conn = server.connections.get(CLIENT_ADDR)
    if conn is None:
        return "gate" if not server.gate else f"gate after {sum(server.gate.values())}"
    return f"{conn.state.name}/{conn.handshake_state.name}"


def _distinct(stages: Iterator[Stage]) -> list[Stage]:
    seen: set[str] = set()
    out = []
    for stage in stages:
        if stage.name not in seen:
            seen.add(stage.name)
            out.append(stage)
    return out


@cache
def client_stages() -> tuple[Stage, ...]:
    """The first replay of each mode reaching each client state (and the idle client, and a
    PSK client that got an identity hint)."""

    def candidates() -> Iterator[Stage]:
        yield Stage("psk", 0, "idle", connect=False)
        for mode in MODES:
            for n in range(len(recording(mode).records_from(Role.SERVER)) + 1):
                probe = Stage(mode, n, "")
                name = f"{mode}:{_client_state(_client_replay(probe))}"
                yield Stage(mode, n, name)
        hello = 2  # HelloVerifyRequest, ServerHello
        probe = Stage("psk", hello, "", hint=True)
        yield Stage("psk", hello, f"psk+hint:{_client_state(_client_replay(probe))}", hint=True)

    return tuple(_distinct(candidates()))


@cache
def server_stages() -> tuple[Stage, ...]:
    """The first replay of each mode reaching each server state (the gate included)."""

    def candidates() -> Iterator[Stage]:
        for mode in MODES:
            for n in range(len(recording(mode).records_from(Role.CLIENT)) + 1):
                name = f"{mode}:{_server_state(_server_replay(Stage(mode, n, '')))}"
                yield Stage(mode, n, name)

    return tuple(_distinct(candidates()))


def client_at(stage: Stage) -> DtlsConnection:
    """A client rebuilt under its randomness stream and driven to `stage`; what it sent on
    the way is discarded, its events are left for the caller."""
    client = _client_replay(stage)
    client.datagrams_to_send(START)
    return client


def server_at(stage: Stage) -> ServerEndpoint:
    """A server endpoint rebuilt under its randomness stream and driven to `stage`."""
    server = _server_replay(stage)
    server.datagrams_to_send(START)
    return server
