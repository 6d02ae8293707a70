"""A recorded, reproducible PSK handshake: the ground the connection fuzz targets stand on.

Each role draws its randomness (client random, server random, cookie secret) from its own
deterministic stream while the harness runs, so a client rebuilt for every fuzz input sends the
same ClientHello and accepts the recorded server flights (the Finished verifies), and a server
endpoint rebuilt for every input accepts the recorded cookie and client flights. A target then
replays the recorded datagrams up to a *stage* (a handshake state) and hands the rest of its
input to the association as arbitrary datagrams, through the public sans-I/O API only:
`DtlsConnection` for the client, `ServerEndpoint` for the server.

Nothing here touches the library's randomness outside a `role_randomness` block: the library
itself always uses `os.urandom` (CFG-2).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import DtlsConnection
from iotdtls.crypto import NullProtector
from iotdtls.endpoint import ServerEndpoint
from iotdtls.handshake.transcript import handshake_header
from iotdtls.messages import HandshakeType, ServerKeyExchangePsk
from iotdtls.record import RECORD_HEADER_LEN, ContentType, RecordHeader, RecordLayer

__all__ = [
    "CLIENT_ADDR",
    "CLIENT_STAGES",
    "IDENTITY",
    "KEY",
    "MTU",
    "OTHER_ADDR",
    "SERVER_STAGES",
    "Recording",
    "Role",
    "client_at",
    "record_handshake",
    "role_randomness",
    "server_at",
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
    real = os.urandom
    os.urandom = stream
    try:
        yield
    finally:
        os.urandom = real


@contextmanager
def role_randomness(role: Role) -> Iterator[None]:
    """`os.urandom` replaced by a fresh deterministic stream of `role` inside the block."""
    with _drawing_from(_Stream(role)):
        yield


def client_config() -> ClientConfig:
    return ClientConfig(psk_identity=IDENTITY, psk=KEY, mtu=MTU, handshake_timeout=30.0)


def server_config() -> ServerConfig:
    return ServerConfig(psk_store={IDENTITY: KEY}, mtu=MTU, handshake_timeout=30.0)


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

    from_client: tuple[bytes, ...]
    from_server: tuple[bytes, ...]

    @property
    def identity_hint(self) -> bytes:
        """A plaintext ServerKeyExchange (an identity hint, PSK-3) numbered to follow the
        recorded ServerHello: the one server message a PSK server of ours never sends."""
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


def record_handshake() -> Recording:
    """Run client and server in memory, every call of each under its own randomness stream,
    and keep what each sent: the HelloVerifyRequest exchange, flights 4-6, one datagram of
    application data each way, then the client's close_notify and the server's answer."""
    from_client: list[bytes] = []
    from_server: list[bytes] = []
    as_client = _Stream(Role.CLIENT)
    as_server = _Stream(Role.SERVER)
    with _drawing_from(as_client):
        client = DtlsConnection(client_config())
        client.connect(START)
    with _drawing_from(as_server):
        server = ServerEndpoint(server_config())

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
    return Recording(tuple(from_client), tuple(from_server))


# -- stages -------------------------------------------------------------------------------------
# A stage is a list of datagrams (indexes into the recording, or one record of one) delivered
# before the fuzzed input.

Step = tuple[int, int | None]  # (datagram index, record index or None for the whole datagram)
#: The datagram index of `Recording.identity_hint` in a client stage.
HINT = -1

#: Client stages by the state reached: datagrams of the server recording to deliver first.
CLIENT_STAGES: dict[str, list[Step]] = {
    "idle": [],
    "wait_server_hello": [],
    "after_hello_verify": [(0, None)],
    "wait_server_key_exchange": [(0, None), (1, 0)],
    "wait_server_hello_done": [(0, None), (1, 0), (HINT, None)],
    "wait_ccs": [(0, None), (1, None)],
    "wait_finished": [(0, None), (1, None), (2, 0)],
    "established": [(0, None), (1, None), (2, None)],
    "after_data": [(0, None), (1, None), (2, None), (3, None)],
    "closed": [(0, None), (1, None), (2, None), (3, None), (4, None)],
}
#: Server stages: datagrams of the client recording to deliver (from CLIENT_ADDR) first.
SERVER_STAGES: dict[str, list[Step]] = {
    "gate": [],
    "after_hello_verify": [(0, None)],
    "wait_client_key_exchange": [(0, None), (1, None)],
    "wait_ccs": [(0, None), (1, None), (2, 0)],
    "wait_finished": [(0, None), (1, None), (2, 0), (2, 1)],
    "established": [(0, None), (1, None), (2, None)],
    "after_data": [(0, None), (1, None), (2, None), (3, None)],
    "closed": [(0, None), (1, None), (2, None), (3, None), (4, None)],
}


def _pieces(recorded: tuple[bytes, ...], steps: list[Step], hint: bytes = b"") -> Iterator[bytes]:
    for index, record in steps:
        data = hint if index == HINT else recorded[index]
        yield data if record is None else split_records(data)[record]


def client_at(recording: Recording, stage: str) -> DtlsConnection:
    """A client rebuilt under its randomness stream and driven to `stage`."""
    with role_randomness(Role.CLIENT):
        client = DtlsConnection(client_config())
        if stage != "idle":
            client.connect(START)
        steps = CLIENT_STAGES[stage]
        for data in _pieces(recording.from_server, steps, recording.identity_hint):
            client.receive_datagram(data, START)
    client.datagrams_to_send(START)
    return client


def server_at(recording: Recording, stage: str) -> ServerEndpoint:
    """A server endpoint rebuilt under its randomness stream and driven to `stage`."""
    with role_randomness(Role.SERVER):
        server = ServerEndpoint(server_config())
        for data in _pieces(recording.from_client, SERVER_STAGES[stage]):
            server.receive_datagram(data, CLIENT_ADDR, START)
    server.datagrams_to_send(START)
    return server
