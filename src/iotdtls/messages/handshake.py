"""Handshake messages of DTLS 1.2 (RFC 6347 §4.2, RFC 5246 §7.4) and the handshake header.

Every message is a dataclass frozen to the type checker (`statically_frozen`) with `MSG_TYPE`,
`encode() -> bytes` (the body, without the handshake header) and `decode(data) -> Self`, which
consumes the body exactly and raises only `DecodeError` (or `ProtocolError` where an
extension's RFC names another alert). Encoders raise `ValueError` for values that cannot go on
the wire. The key exchange and certificate messages
live in `keyexchange` and `certificate` and are re-exported here.
"""

from __future__ import annotations

import functools
import struct
from typing import ClassVar, NamedTuple, Self

from iotdtls._buffer import Reader, Writer
from iotdtls._values import statically_frozen
from iotdtls.errors import DecodeError
from iotdtls.messages.certificate import (
    Certificate,
    CertificateRequest,
    CertificateUrl,
    RawPublicKeyCertificate,
    UrlAndHash,
)
from iotdtls.messages.constants import (
    RANDOM_LEN,
    SESSION_ID_MAX_LEN,
    CipherSuite,
    CompressionMethod,
    HandshakeType,
    known,
)
from iotdtls.messages.extensions import (
    EXTENSION_BLOCK_KEPT_MAX,
    EXTENSION_BLOCKS_KEPT,
    Extension,
    decode_extensions,
    encode_extensions,
    pull_uint_list,
    push_checked_vector,
    push_uint_list,
)
from iotdtls.messages.keyexchange import (
    CertificateVerify,
    ClientKeyExchangeEcdhe,
    ClientKeyExchangePsk,
    ServerKeyExchangeEcdhe,
    ServerKeyExchangePsk,
)

__all__ = [
    "COOKIE_MAX_LEN",
    "HANDSHAKE_HEADER_LEN",
    "Certificate",
    "CertificateRequest",
    "CertificateUrl",
    "CertificateVerify",
    "ClientHello",
    "ClientKeyExchangeEcdhe",
    "ClientKeyExchangePsk",
    "Finished",
    "HandshakeHeader",
    "HandshakeMessage",
    "HandshakeType",
    "HelloRequest",
    "HelloVerifyRequest",
    "RawPublicKeyCertificate",
    "ServerHello",
    "ServerHelloDone",
    "ServerKeyExchangeEcdhe",
    "ServerKeyExchangePsk",
    "UrlAndHash",
    "encode_handshake_header",
    "encode_message_header",
]

HANDSHAKE_HEADER_LEN = 12
"""msg_type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3), RFC 6347 §4.2.2."""
COOKIE_MAX_LEN = 255
"""cookie<0..2^8-1> (RFC 6347 §4.2.1)."""


class HandshakeHeader(NamedTuple):
    """The DTLS handshake header (RFC 6347 §4.2.2). A named tuple: one is made per fragment.

    `msg_type` is a `HandshakeType` when known, else the raw int (the state machine answers
    unexpected_message). `decode` checks fragment_offset + fragment_length <= length; it reads
    only the header and leaves the fragment in the reader.
    """

    msg_type: int
    length: int
    message_seq: int
    fragment_offset: int
    fragment_length: int

    def encode(self) -> bytes:
        return encode_handshake_header(
            self.msg_type, self.length, self.message_seq, self.fragment_offset, self.fragment_length
        )

    @classmethod
    def decode(cls, reader: Reader) -> HandshakeHeader:
        type_and_length, message_seq, offset_high, offset_low_and_fragment = reader.pull_struct(
            _HEADER
        )
        msg_type = known(HandshakeType, type_and_length >> 24)
        length = type_and_length & 0xFFFFFF
        fragment_offset = (offset_high << 8) | (offset_low_and_fragment >> 24)
        fragment_length = offset_low_and_fragment & 0xFFFFFF
        if fragment_offset + fragment_length > length:
            raise DecodeError(
                f"fragment {fragment_offset}+{fragment_length} exceeds message length {length}"
            )
        return cls(msg_type, length, message_seq, fragment_offset, fragment_length)


# type(1) || length(3) as one u32, message_seq u16, fragment_offset(3) as u16 + the top byte of
# a u32 whose low three bytes are fragment_length(3): twelve bytes in one struct.
_HEADER = struct.Struct(">IHHI")


def encode_handshake_header(
    msg_type: int, length: int, message_seq: int, fragment_offset: int, fragment_length: int
) -> bytes:
    """The 12-byte header of one handshake fragment (RFC 6347 §4.2.2)."""
    # A shift leaves nothing exactly when the field fits its width (a negative value leaves -1).
    if (
        msg_type >> 8
        or length >> 24
        or message_seq >> 16
        or fragment_offset < 0
        or fragment_length < 0
        or fragment_offset + fragment_length > length
    ):
        raise ValueError("handshake header field out of range, or fragment past the message")
    return _HEADER.pack(
        (msg_type << 24) | length,
        message_seq,
        fragment_offset >> 8,
        ((fragment_offset & 0xFF) << 24) | fragment_length,
    )


def encode_message_header(msg_type: int, length: int, message_seq: int) -> bytes:
    """The 12-byte header of a whole message in one fragment (fragment_offset 0,
    fragment_length = length): the form the transcript hashes (RFC 6347 §4.2.6). Fewer checks
    than `encode_handshake_header`, since a whole message has no fragment to check."""
    if msg_type >> 8 or length >> 24 or message_seq >> 16:  # a negative value leaves -1
        raise ValueError("handshake header field out of range")
    return _HEADER.pack((msg_type << 24) | length, message_seq, 0, length)


def encode_cookie(cookie: bytes) -> bytes:
    """cookie<0..2^8-1> with its length (RFC 6347 §4.2.1)."""
    if len(cookie) > COOKIE_MAX_LEN:
        raise ValueError(f"cookie of {len(cookie)} bytes is longer than {COOKIE_MAX_LEN}")
    return bytes((len(cookie),)) + cookie


#: version u16, random[32] and the length byte of session_id<0..32>: the start of both hellos.
_HELLO_START = struct.Struct(f">H{RANDOM_LEN}sB")


def _hello_start(version: int, random: bytes, session_id: bytes) -> bytes:
    """version u16, random[32], session_id<0..32>: the start of both hellos (RFC 5246 §7.4.1),
    in one pack (each hello has its own random: nothing to remember encoded here)."""
    if len(random) != RANDOM_LEN:
        raise ValueError(f"random must be {RANDOM_LEN} bytes, got {len(random)}")
    if not 0 <= version <= 0xFFFF:
        raise ValueError(f"{version} does not fit in 2 bytes")
    if len(session_id) > SESSION_ID_MAX_LEN:
        raise ValueError(f"vector of {len(session_id)} bytes outside 0..{SESSION_ID_MAX_LEN}")
    return _HELLO_START.pack(version, random, len(session_id)) + session_id


def _pull_hello_start(reader: Reader) -> tuple[int, bytes, bytes]:
    """Read what `_hello_start` writes: (version, random, session_id)."""
    version = reader.pull_uint16()
    random = reader.pull_bytes(RANDOM_LEN)
    session_id = reader.pull_vector(1, 0, SESSION_ID_MAX_LEN)
    return version, random, session_id


def _push_extensions(writer: Writer, extensions: tuple[Extension, ...], msg: HandshakeType) -> None:
    """An empty tuple is encoded as no extension block at all (RFC 5246 §7.4.1.2)."""
    if extensions:
        writer.push_bytes(encode_extensions(extensions, msg))


def _pull_extensions(reader: Reader, msg: HandshakeType) -> tuple[Extension, ...]:
    """No bytes left means no extensions; a present block is consumed exactly."""
    if reader.eof():
        return ()
    extensions = decode_extensions(reader, msg)
    reader.expect_end()
    return extensions


@statically_frozen
class ClientHello:
    """ClientHello of DTLS (RFC 6347 §4.2.1, RFC 5246 §7.4.1.2).

    client_version u16, random[32], session_id<0..32>, cookie<0..2^8-1>,
    cipher_suites<2..2^16-2> (u16 each), compression_methods<1..2^8-1> (u8 each), then an
    optional extension block. Compression methods are kept as sent so that the engine can refuse
    anything but null (REC-4); cipher suites unknown to us stay plain ints.
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.client_hello
    client_version: int
    random: bytes
    session_id: bytes
    cookie: bytes
    cipher_suites: tuple[int, ...]
    compression_methods: tuple[int, ...]
    extensions: tuple[Extension, ...] = ()

    def encode(self) -> bytes:
        before, after = self.encode_around_cookie()
        return before + encode_cookie(self.cookie) + after

    def encode_around_cookie(self) -> tuple[bytes, bytes]:
        """The encoding before and after the cookie vector: a client sends its ClientHello again
        with the server's cookie and nothing else changed (RFC 6347 §4.2.1), so it encodes the
        rest once."""
        before = _hello_start(self.client_version, self.random, self.session_id)
        offer = (self.cipher_suites, self.compression_methods, self.extensions)
        try:
            after = _client_hello_offer(*offer)
        except TypeError:  # an extension holding an unhashable value: encoded each time
            after = _encode_client_hello_offer(*offer)
        return before, after

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        client_version, random, session_id = _pull_hello_start(reader)
        cookie = reader.pull_vector(1, 0, COOKIE_MAX_LEN)
        offer = bytes(data[reader.tell() :])  # a key of the cache (a bytearray is not)
        if len(offer) <= EXTENSION_BLOCK_KEPT_MAX:
            suites, compression_methods, extensions = _decoded_client_hello_offer(offer)
        else:
            suites, compression_methods, extensions = _decode_client_hello_offer(offer)
        return cls(
            client_version, random, session_id, cookie, suites, compression_methods, extensions
        )


def _encode_client_hello_offer(
    cipher_suites: tuple[int, ...],
    compression_methods: tuple[int, ...],
    extensions: tuple[Extension, ...],
) -> bytes:
    """What a ClientHello offers behind its cookie: cipher_suites<2..2^16-2>,
    compression_methods<1..2^8-1> and the extension block (RFC 5246 §7.4.1.2)."""
    after = Writer()
    push_uint_list(after, 2, 2, cipher_suites, 2, 0xFFFE)
    push_uint_list(after, 1, 1, compression_methods, 1)
    _push_extensions(after, extensions, HandshakeType.client_hello)
    return after.getvalue()


def _decode_client_hello_offer(
    data: bytes,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[Extension, ...]]:
    """Read what `_encode_client_hello_offer` writes, to the end of the hello."""
    reader = Reader(data)
    suites = pull_uint_list(reader, 2, 2, 2, 0xFFFE, enum=CipherSuite)
    compression_methods = pull_uint_list(reader, 1, 1, 1, enum=CompressionMethod)
    return suites, compression_methods, _pull_extensions(reader, HandshakeType.client_hello)


#: The offers remembered encoded, as the extension blocks are (`EXTENSION_BLOCKS_KEPT`): a
#: client offers the same in every hello. Wrapped, not decorated: the mutation tests skip
#: decorated functions.
_client_hello_offer = functools.lru_cache(maxsize=EXTENSION_BLOCKS_KEPT)(
    _encode_client_hello_offer
)
#: And decoded, as the extension blocks are (up to `EXTENSION_BLOCK_KEPT_MAX` bytes): a
#: fleet's hellos offer the same byte for byte.
_decoded_client_hello_offer = functools.lru_cache(maxsize=EXTENSION_BLOCKS_KEPT)(
    _decode_client_hello_offer
)


@statically_frozen
class HelloVerifyRequest:
    """HelloVerifyRequest (RFC 6347 §4.2.1): server_version u16, cookie<0..2^8-1>."""

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.hello_verify_request
    server_version: int
    cookie: bytes

    def encode(self) -> bytes:
        writer = Writer()
        writer.push_uint16(self.server_version)
        push_checked_vector(writer, 1, self.cookie, 0, COOKIE_MAX_LEN)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        server_version = reader.pull_uint16()
        cookie = reader.pull_vector(1, 0, COOKIE_MAX_LEN)
        reader.expect_end()
        return cls(server_version, cookie)


@statically_frozen
class ServerHello:
    """ServerHello (RFC 5246 §7.4.1.3).

    server_version u16, random[32], session_id<0..32>, cipher_suite u16, compression_method u8,
    then an optional extension block.
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.server_hello
    server_version: int
    random: bytes
    session_id: bytes
    cipher_suite: int
    compression_method: int
    extensions: tuple[Extension, ...] = ()

    def encode(self) -> bytes:
        start = _hello_start(self.server_version, self.random, self.session_id)
        answer = (self.cipher_suite, self.compression_method, self.extensions)
        try:
            return start + _server_hello_answer(*answer)
        except TypeError:  # an extension holding an unhashable value: encoded each time
            return start + _encode_server_hello_answer(*answer)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        server_version, random, session_id = _pull_hello_start(reader)
        answer = bytes(data[reader.tell() :])  # a key of the cache (a bytearray is not)
        if len(answer) <= EXTENSION_BLOCK_KEPT_MAX:
            cipher_suite, compression_method, extensions = _decoded_server_hello_answer(answer)
        else:
            cipher_suite, compression_method, extensions = _decode_server_hello_answer(answer)
        return cls(server_version, random, session_id, cipher_suite, compression_method, extensions)


def _encode_server_hello_answer(
    cipher_suite: int, compression_method: int, extensions: tuple[Extension, ...]
) -> bytes:
    """What a ServerHello answers behind its session_id: cipher_suite, compression_method and
    the extension block (RFC 5246 §7.4.1.3)."""
    writer = Writer()
    writer.push_uint16(cipher_suite)
    writer.push_uint8(compression_method)
    _push_extensions(writer, extensions, HandshakeType.server_hello)
    return writer.getvalue()


def _decode_server_hello_answer(data: bytes) -> tuple[int, int, tuple[Extension, ...]]:
    """Read what `_encode_server_hello_answer` writes, to the end of the hello."""
    reader = Reader(data)
    cipher_suite = known(CipherSuite, reader.pull_uint16())
    compression_method = reader.pull_uint8()
    return cipher_suite, compression_method, _pull_extensions(reader, HandshakeType.server_hello)


#: A server's answers remembered encoded and a client's decoded, as the ClientHello's offers
#: are (a server answers its clients alike).
_server_hello_answer = functools.lru_cache(maxsize=EXTENSION_BLOCKS_KEPT)(
    _encode_server_hello_answer
)
_decoded_server_hello_answer = functools.lru_cache(maxsize=EXTENSION_BLOCKS_KEPT)(
    _decode_server_hello_answer
)


@statically_frozen
class _EmptyMessage:
    """Shared codec of the handshake messages whose body is empty (RFC 5246 §7.4.1.1, §7.4.5)."""

    MSG_TYPE: ClassVar[HandshakeType]

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, data: bytes) -> Self:
        Reader(data).expect_end()
        return cls()


@statically_frozen
class ServerHelloDone(_EmptyMessage):
    """ServerHelloDone (RFC 5246 §7.4.5): an empty body."""

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.server_hello_done


@statically_frozen
class HelloRequest(_EmptyMessage):
    """HelloRequest (RFC 5246 §7.4.1.1): an empty body. Answered with no_renegotiation (EXT-4)."""

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.hello_request


@statically_frozen
class Finished:
    """Finished (RFC 5246 §7.4.9): verify_data is the whole body.

    12 bytes for the profile's suites; any length is accepted here as opaque and the engine
    compares it in constant time.
    """

    MSG_TYPE: ClassVar[HandshakeType] = HandshakeType.finished
    verify_data: bytes

    def encode(self) -> bytes:
        return self.verify_data

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(bytes(data))


HandshakeMessage = (
    HelloRequest
    | ClientHello
    | ServerHello
    | HelloVerifyRequest
    | Certificate
    | RawPublicKeyCertificate
    | CertificateUrl
    | ServerKeyExchangePsk
    | ServerKeyExchangeEcdhe
    | CertificateRequest
    | ServerHelloDone
    | CertificateVerify
    | ClientKeyExchangePsk
    | ClientKeyExchangeEcdhe
    | Finished
)
"""Any handshake message body of this package."""
