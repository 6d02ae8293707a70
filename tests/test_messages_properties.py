"""Hypothesis properties of every codec in iotdtls.messages.

1. `decode(encode(x)) == x` for every message and every extension in each hello.
2. Decoding arbitrary bytes, or a valid encoding with bytes flipped, cut or inserted, raises only
   `DecodeError` / `ProtocolError`: never IndexError, struct.error, ValueError or
   UnicodeDecodeError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotdtls._buffer import Reader
from iotdtls.errors import ProtocolError
from iotdtls.messages import (
    Alert,
    CachedInfo,
    CachedObject,
    Certificate,
    CertificateRequest,
    CertificateUrl,
    CertificateVerify,
    ChangeCipherSpec,
    ClientCertificateType,
    ClientCertificateUrl,
    ClientHello,
    ClientKeyExchangeEcdhe,
    ClientKeyExchangePsk,
    EcPointFormats,
    ExtendedMasterSecret,
    Extension,
    ExtensionType,
    Finished,
    HandshakeHeader,
    HandshakeType,
    Heartbeat,
    HeartbeatMessage,
    HelloRequest,
    HelloVerifyRequest,
    MaxFragmentLength,
    RawPublicKeyCertificate,
    RenegotiationInfo,
    ServerCertificateType,
    ServerHello,
    ServerHelloDone,
    ServerKeyExchangeEcdhe,
    ServerKeyExchangePsk,
    ServerName,
    SignatureAlgorithms,
    SupportedGroups,
    TrustedCaKeys,
    UnknownExtension,
    UrlAndHash,
    decode_extensions,
    encode_extensions,
)

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CH = HandshakeType.client_hello
SH = HandshakeType.server_hello

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFF)


def opaque(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


def tuples(elements: st.SearchStrategy[Any], min_size: int = 0, max_size: int = 6) -> Any:
    return st.lists(elements, min_size=min_size, max_size=max_size).map(tuple)


ascii_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)

# --- extensions -------------------------------------------------------------------------------

KNOWN_TYPES = {int(t) for t in ExtensionType} - {ExtensionType.truncated_hmac}
unknown_ext = st.builds(
    UnknownExtension,
    u16.filter(lambda t: t not in KNOWN_TYPES),
    opaque(),
)
trusted_authority = st.one_of(
    st.just((0, b"")),
    st.tuples(st.sampled_from([1, 3]), opaque(20, 20)),
    st.tuples(st.just(2), opaque(1, 30)),
)
modes = st.sampled_from([1, 2])
mfl_codes = st.integers(1, 4)


def extensions_for(ctx: HandshakeType) -> st.SearchStrategy[Extension]:
    """Every extension valid in `ctx`, with its context-specific shape."""
    client = ctx == CH
    common: list[st.SearchStrategy[Extension]] = [
        st.builds(MaxFragmentLength, mfl_codes),
        st.just(ClientCertificateUrl()),
        st.builds(EcPointFormats, tuples(u8, 1)),
        st.builds(Heartbeat, modes),
        st.just(ExtendedMasterSecret()),
        st.builds(RenegotiationInfo, opaque(0, 255)),
        unknown_ext,
    ]
    if client:
        cached = st.builds(CachedObject, u8, opaque(1, 40))
        specific: list[st.SearchStrategy[Extension]] = [
            st.builds(ServerName, ascii_text),
            st.builds(TrustedCaKeys, tuples(trusted_authority)),
            st.builds(SupportedGroups, tuples(u16, 1)),
            st.builds(SignatureAlgorithms, tuples(u16, 1)),
            st.builds(ClientCertificateType, tuples(u8, 1)),
            st.builds(ServerCertificateType, tuples(u8, 1)),
            st.builds(CachedInfo, tuples(cached, 1)),
        ]
    else:
        cached = st.builds(CachedObject, u8)
        specific = [
            st.just(ServerName("")),
            st.just(TrustedCaKeys()),
            st.builds(ClientCertificateType, tuples(u8, 1, 1)),
            st.builds(ServerCertificateType, tuples(u8, 1, 1)),
            st.builds(CachedInfo, tuples(cached, 1)),
        ]
    return st.one_of(*common, *specific)


def extension_lists(ctx: HandshakeType, min_size: int = 0) -> Any:
    return st.lists(
        extensions_for(ctx), min_size=min_size, max_size=6, unique_by=lambda e: e.ext_type
    ).map(tuple)


@PROPS
@given(st.sampled_from([CH, SH]).flatmap(lambda c: st.tuples(st.just(c), extensions_for(c))))
def test_each_extension_round_trips(case: tuple[HandshakeType, Extension]) -> None:
    ctx, ext = case
    data = encode_extensions((ext,), ctx)
    reader = Reader(data)
    assert decode_extensions(reader, ctx) == (ext,)
    assert reader.eof()


@PROPS
@given(st.sampled_from([CH, SH]).flatmap(lambda c: st.tuples(st.just(c), extension_lists(c))))
def test_extension_blocks_round_trip(case: tuple[HandshakeType, tuple[Extension, ...]]) -> None:
    ctx, exts = case
    data = encode_extensions(exts, ctx) + b"tail"
    reader = Reader(data)
    assert decode_extensions(reader, ctx) == exts
    assert reader.pull_rest() == b"tail"


# --- messages ---------------------------------------------------------------------------------

random32 = opaque(32, 32)
session_ids = opaque(0, 32)
cookies = opaque(0, 255)
points = opaque(1, 255)

MESSAGES: dict[str, st.SearchStrategy[Any]] = {
    "ClientHello": st.builds(
        ClientHello,
        u16,
        random32,
        session_ids,
        cookies,
        tuples(u16, 1),
        tuples(u8, 1),
        extension_lists(CH),
    ),
    "ServerHello": st.builds(ServerHello, u16, random32, session_ids, u16, u8, extension_lists(SH)),
    "HelloVerifyRequest": st.builds(HelloVerifyRequest, u16, cookies),
    "ServerKeyExchangePsk": st.builds(ServerKeyExchangePsk, opaque()),
    "ServerKeyExchangeEcdhe": st.builds(ServerKeyExchangeEcdhe, u16, points, u16, opaque()),
    "Certificate": st.builds(Certificate, tuples(opaque(1))),
    "RawPublicKeyCertificate": st.builds(RawPublicKeyCertificate, opaque()),
    "CertificateRequest": st.builds(
        CertificateRequest, tuples(u8, 1), tuples(u16, 1), tuples(opaque(1))
    ),
    "CertificateUrl": st.builds(
        CertificateUrl, u8, tuples(st.builds(UrlAndHash, ascii_text, opaque(20, 20)), 1)
    ),
    "ServerHelloDone": st.just(ServerHelloDone()),
    "HelloRequest": st.just(HelloRequest()),
    "ClientKeyExchangePsk": st.builds(ClientKeyExchangePsk, opaque()),
    "ClientKeyExchangeEcdhe": st.builds(ClientKeyExchangeEcdhe, points),
    "CertificateVerify": st.builds(CertificateVerify, u16, opaque()),
    "Finished": st.builds(Finished, opaque()),
    "Alert": st.builds(Alert, u8, u8),
    "ChangeCipherSpec": st.just(ChangeCipherSpec()),
    "HeartbeatMessage": st.builds(HeartbeatMessage, u8, opaque(), opaque(16, 40)),
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_round_trips(name: str) -> None:
    @PROPS
    @given(MESSAGES[name])
    def check(message: Any) -> None:
        assert type(message).decode(message.encode()) == message

    check()


header_fields = st.tuples(u8, u24, u16, u24, u24).filter(lambda f: f[3] + f[4] <= f[1])


@PROPS
@given(header_fields.map(lambda f: HandshakeHeader(*f)))
def test_handshake_header_round_trips(header: HandshakeHeader) -> None:
    reader = Reader(header.encode() + b"body")
    assert HandshakeHeader.decode(reader) == header
    assert reader.pull_rest() == b"body"


# --- decoding garbage raises only the protocol errors -----------------------------------------


def _decode_extension_block(ctx: HandshakeType) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        return decode_extensions(Reader(data), ctx)

    return decode


_MESSAGE_CLASSES: dict[str, Any] = {
    "ClientHello": ClientHello,
    "ServerHello": ServerHello,
    "HelloVerifyRequest": HelloVerifyRequest,
    "ServerKeyExchangePsk": ServerKeyExchangePsk,
    "ServerKeyExchangeEcdhe": ServerKeyExchangeEcdhe,
    "Certificate": Certificate,
    "RawPublicKeyCertificate": RawPublicKeyCertificate,
    "CertificateRequest": CertificateRequest,
    "CertificateUrl": CertificateUrl,
    "ServerHelloDone": ServerHelloDone,
    "HelloRequest": HelloRequest,
    "ClientKeyExchangePsk": ClientKeyExchangePsk,
    "ClientKeyExchangeEcdhe": ClientKeyExchangeEcdhe,
    "CertificateVerify": CertificateVerify,
    "Finished": Finished,
    "Alert": Alert,
    "ChangeCipherSpec": ChangeCipherSpec,
    "HeartbeatMessage": HeartbeatMessage,
}
DECODERS: dict[str, Callable[[bytes], object]] = {
    name: cls.decode for name, cls in _MESSAGE_CLASSES.items()
}
DECODERS["HandshakeHeader"] = lambda data: HandshakeHeader.decode(Reader(data))
DECODERS["extensions in ClientHello"] = _decode_extension_block(CH)
DECODERS["extensions in ServerHello"] = _decode_extension_block(SH)

# Valid encodings to mutate, so that the fuzzing reaches past the first length field.
SEEDS: dict[str, st.SearchStrategy[bytes]] = {
    name: strategy.map(lambda m: m.encode()) for name, strategy in MESSAGES.items()
}
SEEDS["HandshakeHeader"] = header_fields.map(lambda f: HandshakeHeader(*f).encode())
SEEDS["extensions in ClientHello"] = extension_lists(CH).map(lambda e: encode_extensions(e, CH))
SEEDS["extensions in ServerHello"] = extension_lists(SH).map(lambda e: encode_extensions(e, SH))


@st.composite
def mutated(draw: st.DrawFn, seed: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(seed))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] = draw(u8)
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "insert":
            data[pos:pos] = draw(opaque(1, 4))
        else:
            del data[pos:]
    return bytes(data)


def _only_protocol_errors(decode: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_arbitrary_bytes_raise_only_protocol_errors(name: str) -> None:
    @PROPS
    @given(opaque(0, 80))
    def check(data: bytes) -> None:
        _only_protocol_errors(DECODERS[name], data)

    check()


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_mutated_encodings_raise_only_protocol_errors(name: str) -> None:
    @PROPS
    @given(mutated(SEEDS[name]))
    def check(data: bytes) -> None:
        _only_protocol_errors(DECODERS[name], data)

    check()


EXTENSION_CLASSES = [
    ServerName,
    MaxFragmentLength,
    ClientCertificateUrl,
    TrustedCaKeys,
    SupportedGroups,
    EcPointFormats,
    SignatureAlgorithms,
    Heartbeat,
    ClientCertificateType,
    ServerCertificateType,
    ExtendedMasterSecret,
    CachedInfo,
    RenegotiationInfo,
]


@PROPS
@given(st.sampled_from(EXTENSION_CLASSES), st.sampled_from([CH, SH]), opaque(0, 60))
def test_extension_data_garbage_raises_only_protocol_errors(
    cls: Any, ctx: HandshakeType, data: bytes
) -> None:
    with contextlib.suppress(ProtocolError):
        cls.decode(data, ctx)
