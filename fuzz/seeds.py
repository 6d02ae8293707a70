"""Seed inputs of each fuzz target, built from the recorded handshake (nothing is checked in:
the seeds follow the code). The coverage-guided run starts from them; the regression tests run
them too."""

from __future__ import annotations

from fuzz.scenario import MODES, Role, Stage, client_stages, recording, server_stages, split_records
from fuzz.targets import CODECS
from iotdtls._buffer import Reader
from iotdtls.messages import (
    Alert,
    ChangeCipherSpec,
    ClientHello,
    HandshakeHeader,
    HandshakeType,
    HeartbeatMessage,
    encode_extensions,
)
from iotdtls.record import RECORD_HEADER_LEN

__all__ = ["SEEDS", "seeds"]


def _datagram_op(data: bytes, op: int = 0) -> bytes:
    return bytes([op]) + len(data).to_bytes(2, "big") + data


def _replay_op(index: int, op: int = 2) -> bytes:
    return bytes([op, index])


TIMER_OP = bytes([3])


def _plain_messages() -> tuple[list[bytes], list[bytes]]:
    """Handshake headers, and type byte + body, of the recorded plaintext (epoch-0) handshake
    messages."""
    headers, out = [], []
    datagrams = [
        d
        for mode in ("psk", "rpk")
        for r in [recording(mode)]
        for d in r.from_client + r.from_server
    ]
    for datagram in datagrams:
        for record in split_records(datagram):
            if record[0] != 22 or record[3:5] != b"\0\0":
                continue
            reader = Reader(record, RECORD_HEADER_LEN)
            header = HandshakeHeader.decode(reader)
            headers.append(record[RECORD_HEADER_LEN : RECORD_HEADER_LEN + 12])
            out.append(bytes([header.msg_type]) + reader.pull_bytes(header.fragment_length))
    return headers, out


def messages_seeds() -> list[bytes]:
    """Each codec gets each recorded body, the header codec each header, and the small
    messages their own encodings."""
    indexes = range(len(CODECS))
    headers, bodies = _plain_messages()
    seeds = [bytes([i]) + part for i in indexes for part in headers]
    seeds += [bytes([i]) + body[1:] for i in indexes for body in bodies]
    hello = ClientHello.decode(next(b[1:] for b in bodies if b[0] == HandshakeType.client_hello))
    block = encode_extensions(hello.extensions, HandshakeType.client_hello)
    seeds += [bytes([i]) + block for i in indexes]
    small = (
        Alert(2, 40).encode(),
        ChangeCipherSpec().encode(),
        HeartbeatMessage(1, b"ping", bytes(16)).encode(),
    )
    seeds += [bytes([i]) + body for i in indexes for body in small]
    return seeds


def records_seeds() -> list[bytes]:
    return [d for mode in MODES for d in recording(mode).from_client + recording(mode).from_server]


def _connection_seeds(stages: tuple[Stage, ...], peer: Role) -> list[bytes]:
    """Per stage: every recorded datagram of the `peer` replayed, and each given raw with a
    timer expiry after it."""
    seeds = []
    for index, stage in enumerate(stages):
        rec = recording(stage.mode)
        sent = rec.from_server if peer is Role.SERVER else rec.from_client
        head = bytes([index])
        seeds.append(head + b"".join(_replay_op(i) for i in range(len(sent))))
        seeds += [head + _datagram_op(d) + TIMER_OP for d in sent]
        if peer is Role.CLIENT:  # the first hello from another address
            seeds.append(head + _datagram_op(sent[0], op=0x80))
    return seeds


def client_seeds() -> list[bytes]:
    return _connection_seeds(client_stages(), Role.SERVER)


def server_seeds() -> list[bytes]:
    return _connection_seeds(server_stages(), Role.CLIENT)


SEEDS = {
    "messages": messages_seeds,
    "records": records_seeds,
    "client": client_seeds,
    "server": server_seeds,
}


def seeds(target: str) -> list[bytes]:
    return SEEDS[target]()
