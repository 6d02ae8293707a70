"""`iotdtls.trace.describe_datagram`: the one-line view of a datagram in `-v` logs and the demo
(record types, epochs and sequence numbers; protected payloads by length only)."""

from __future__ import annotations

import pytest

from iotdtls.messages import HandshakeType
from iotdtls.trace import MAX_DESCRIBED, describe_datagram
from tests.memory_link import make_link, wire_from


def record(content_type: int, epoch: int, sequence: int, payload: bytes) -> bytes:
    """A DTLS 1.2 record (RFC 6347 §4.1) around `payload`."""
    return (
        bytes([content_type, 0xFE, 0xFD])
        + epoch.to_bytes(2, "big")
        + sequence.to_bytes(6, "big")
        + len(payload).to_bytes(2, "big")
        + payload
    )


def fragment(msg_type: int, seq: int, body: bytes, offset: int = 0, total: int = 0) -> bytes:
    """A handshake fragment (RFC 6347 §4.2.2): `body` at `offset` of a `total`-byte message
    (0: the whole message is `body`)."""
    length = total or len(body)
    return (
        bytes([msg_type]) + length.to_bytes(3, "big") + seq.to_bytes(2, "big")
        + offset.to_bytes(3, "big") + len(body).to_bytes(3, "big") + body
    )  # fmt: skip


def test_a_real_handshake_reads_as_its_messages() -> None:
    link = make_link()
    link.handshake()
    client = [describe_datagram(d) for d in wire_from(link, "client")]
    server = [describe_datagram(d) for d in wire_from(link, "server")]
    assert client[0] == "Handshake(e0/s0: client_hello#0)"
    assert server[0] == "Handshake(e0/s0: hello_verify_request#0)"
    assert client[1] == "Handshake(e0/s1: client_hello#1)"
    assert server[1] == "Handshake(e0/s1: server_hello#1) + Handshake(e0/s2: server_hello_done#2)"
    assert client[2] == (
        "Handshake(e0/s2: client_key_exchange#2) + ChangeCipherSpec(e0/s3) "
        "+ Handshake(e1/s0, 40 B protected)"
    )


@pytest.mark.parametrize(
    ("datagram", "text"),
    [
        (b"", ""),
        (b"hello", "<5 stray bytes>"),
        (record(21, 0, 7, bytes([2, 40])), "Alert(e0/s7: FATAL handshake_failure)"),
        (record(21, 0, 7, bytes([9, 250])), "Alert(e0/s7: 9 250)"),
        (record(21, 0, 7, b"\x02"), "Alert(e0/s7, malformed)"),
        (record(21, 1, 3, bytes(18)), "Alert(e1/s3, 18 B protected)"),
        (record(23, 2, 1, bytes(30)), "ApplicationData(e2/s1, 30 B protected)"),
        (record(24, 0, 0, b"x"), "Heartbeat(e0/s0)"),
        (record(99, 0, 5, b"x"), "type99(e0/s5)"),
        (record(22, 0, 4, fragment(99, 3, b"ab")), "Handshake(e0/s4: type99#3)"),
        (
            record(22, 0, 4, fragment(HandshakeType.certificate, 2, b"abc", offset=10, total=40)),
            "Handshake(e0/s4: certificate#2[10+3/40])",
        ),
        (
            record(22, 0, 4, fragment(HandshakeType.certificate, 2, b"abc", offset=0, total=40)),
            "Handshake(e0/s4: certificate#2[0+3/40])",
        ),
        (record(22, 0, 4, b"\x01\x00"), "Handshake(e0/s4, malformed)"),
        (record(23, 0, 9, b""), "ApplicationData(e0/s9)"),  # a header alone, 13 bytes
        (record(22, 0, 0, b"") + b"xy", "Handshake(e0/s0: ) + <2 stray bytes>"),
        # A length field running past the end: said so, not read as a record.
        (record(22, 0, 1, bytes(80))[:14], "<a record of 80 B cut short at 1 B>"),
        (
            record(23, 0, 1, b"ok") + record(23, 1, 2, bytes(20))[:20],
            "ApplicationData(e0/s1) + <a record of 20 B cut short at 7 B>",
        ),
    ],
)
def test_each_kind_of_record(datagram: bytes, text: str) -> None:
    assert describe_datagram(datagram) == text


def test_a_datagram_of_thousands_of_records_reads_in_a_bounded_line() -> None:
    """A datagram of 4,000 empty records (probe BY: a 111 KB `-v` line) describes its first
    `MAX_DESCRIBED` records, then counts the rest; so does a record of 4,000 fragments."""
    many = b"".join(record(23, 0, i, b"") for i in range(4000))
    text = describe_datagram(many + b"xy")
    described = " + ".join(f"ApplicationData(e0/s{i})" for i in range(MAX_DESCRIBED))
    assert text == f"{described} + 3968 more records + <2 stray bytes>"
    assert describe_datagram(many[: 13 * (MAX_DESCRIBED + 1)]).endswith(
        f"ApplicationData(e0/s{MAX_DESCRIBED - 1}) + 1 more record"
    )
    hello = fragment(HandshakeType.client_hello, 0, b"", total=60)
    text = describe_datagram(record(22, 0, 7, hello * 4000))
    parts = " ".join(["client_hello#0[0+0/60]"] * MAX_DESCRIBED)
    assert text == f"Handshake(e0/s7: {parts} + 3968 more fragments)"
    assert len(describe_datagram(many + record(22, 0, 1, bytes(80))[:14])) < 1000
