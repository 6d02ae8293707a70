"""The handshake transcript hash (RFC 5246 §7.4.9, DTLS form RFC 6347 §4.2.6).

DTLS hashes each handshake message with its 12-byte header as if it had been sent in a single
fragment (fragment_offset 0, fragment_length = length). The first ClientHello and the
HelloVerifyRequest of a cookie exchange are left out.
"""

from __future__ import annotations

import hashlib

from iotdtls.messages.handshake import encode_handshake_header, encode_message_header

__all__ = ["KeptTranscript", "Transcript", "handshake_header"]


def handshake_header(
    msg_type: int, message_seq: int, length: int, offset: int, frag_len: int
) -> bytes:
    """The DTLS handshake header (RFC 6347 §4.2.2) of one fragment."""
    return encode_handshake_header(msg_type, length, message_seq, offset, frag_len)


class Transcript:
    """A running SHA-256 over the handshake messages (the PRF hash of our suites)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, msg_type: int, message_seq: int, body: bytes) -> None:
        """Hash one whole message in its unfragmented DTLS form."""
        length = len(body)
        self._hash.update(encode_message_header(msg_type, length, message_seq))
        self._hash.update(body)

    def add_encoded(self, encoded: bytes) -> None:
        """Hash one whole message already in its unfragmented DTLS form (header and body)."""
        self._hash.update(encoded)

    def digest(self) -> bytes:
        """The hash of everything added so far (the running hash continues: hashlib's
        `digest` finishes a copy of its state, so no copy is made here)."""
        return self._hash.digest()

    def reset(self) -> None:
        """Start over (after a HelloVerifyRequest, RFC 6347 §4.2.6)."""
        self._hash = hashlib.sha256()


class KeptTranscript(Transcript):
    """A transcript that also keeps the messages, for a server that asks for a client
    certificate in certificate mode: the client may sign its CertificateVerify with any hash
    of our CertificateRequest's list (RFC 5246 §7.4.8), SHA-384 or SHA-512 too, chosen only
    then, so the messages are hashed again with it (`digest_with`)."""

    def __init__(self) -> None:
        super().__init__()
        self._messages: list[bytes] = []

    def add(self, msg_type: int, message_seq: int, body: bytes) -> None:
        header = encode_message_header(msg_type, len(body), message_seq)
        self._hash.update(header)
        self._hash.update(body)
        self._messages += (header, body)

    def add_encoded(self, encoded: bytes) -> None:
        self._hash.update(encoded)
        self._messages.append(encoded)

    def digest_with(self, name: str) -> bytes:
        """The hash named `name` (hashlib's name) of every message added so far."""
        return hashlib.new(name, b"".join(self._messages)).digest()

    def reset(self) -> None:
        super().reset()
        self._messages = []
