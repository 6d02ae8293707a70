"""Helpers for the public-key mode tests: keys made once per session, in-memory links in raw
public key mode, and rewriting of plaintext handshake messages in flight (a man in the middle
of an epoch-0 flight)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from iotdtls._buffer import Reader
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.credentials import PrivateKey
from iotdtls.messages import HandshakeHeader
from iotdtls.record import ContentType, RecordHeader, split_datagram
from tests.memory_link import Direction, Fate, FateFn, MemoryLink, deliver_all

__all__ = ["client_key", "rewrite", "rpk_link", "server_key", "stranger_key"]


@cache
def server_key() -> PrivateKey:
    return PrivateKey.generate()


@cache
def client_key() -> PrivateKey:
    return PrivateKey.generate()


@cache
def stranger_key() -> PrivateKey:
    """A key nobody provisioned."""
    return PrivateKey.generate()


def rpk_link(
    fate: FateFn = deliver_all,
    *,
    cookie: bool = True,
    client: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
) -> MemoryLink:
    """Mutual raw-public-key authentication: each side provisioned with the other's key."""
    ckw: dict[str, Any] = {
        "server_public_keys": [server_key().spki],
        "raw_public_key": client_key(),
        **(client or {}),
    }
    skw: dict[str, Any] = {
        "raw_public_key": server_key(),
        "client_public_keys": [client_key().spki_sha256],
        "cookie_exchange": cookie,
        **(server or {}),
    }
    return MemoryLink(ClientConfig(**ckw), ServerConfig(**skw), fate=fate)


def rewrite(
    sender: Direction, msg_type: int, change: Callable[[bytes], bytes], *, times: int = 1
) -> FateFn:
    """A fate that rewrites the body of `sender`'s plaintext handshake message `msg_type` (whole,
    unfragmented messages in epoch 0), fixing the lengths; every retransmission too."""
    done = [0]

    def fate(direction: Direction, index: int, data: bytes) -> Fate | bytes:
        if direction != sender or done[0] >= times:
            return "deliver"
        out = bytearray()
        changed = False
        recs, _ = split_datagram(data)
        for header, fragment in recs:
            if header.content_type == ContentType.handshake and header.epoch == 0:
                hs = HandshakeHeader.decode(Reader(fragment))
                if hs.msg_type == msg_type and hs.fragment_length == hs.length:
                    body = change(fragment[12:])
                    fragment = (
                        HandshakeHeader(hs.msg_type, len(body), hs.message_seq, 0, len(body))
                        .encode()
                        + body
                    )
                    changed = True
            out += RecordHeader(
                header.content_type, header.version, header.epoch, header.sequence_number,
                len(fragment),
            ).encode()
            out += fragment
        if changed:
            done[0] += 1
            return bytes(out)
        return "deliver"

    return fate
