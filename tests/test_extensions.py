"""Hello extension codecs against hand-written encodings (RFC 6066, 7250, 7627, 7924, 5746, ...)."""

from __future__ import annotations

import pytest

from iotdtls._buffer import Reader
from iotdtls.errors import AlertDescription, DecodeError, ProtocolError
from iotdtls.messages import (
    CachedInfo,
    CachedInformationType,
    CachedObject,
    CertificateType,
    ClientCertificateType,
    ClientCertificateUrl,
    EcPointFormats,
    ExtendedMasterSecret,
    Extension,
    ExtensionType,
    HandshakeType,
    Heartbeat,
    HeartbeatMode,
    IdentifierType,
    MaxFragmentLength,
    MaxFragmentLengthCode,
    NamedGroup,
    RenegotiationInfo,
    ServerCertificateType,
    ServerName,
    SignatureAlgorithms,
    SupportedGroups,
    TrustedCaKeys,
    UnknownExtension,
    decode_extensions,
    encode_extensions,
    find_extension,
)

CH = HandshakeType.client_hello
SH = HandshakeType.server_hello


def block(*entries: tuple[int, bytes]) -> bytes:
    body = b"".join(t.to_bytes(2, "big") + len(d).to_bytes(2, "big") + d for t, d in entries)
    return len(body).to_bytes(2, "big") + body


def decode(data: bytes, in_message: HandshakeType) -> tuple[Extension, ...]:
    reader = Reader(data)
    result = decode_extensions(reader, in_message)
    reader.expect_end()
    return result


# (extension, context, extension_data) written by hand from each RFC's struct.
VECTORS: list[tuple[Extension, HandshakeType, str]] = [
    # RFC 6066 §3: server_name_list<1..2^16-1> of (host_name(0), HostName<1..2^16-1>)
    (ServerName("example.com"), CH, "000e 00 000b " + b"example.com".hex()),
    (ServerName(""), SH, ""),
    # RFC 6066 §4
    (MaxFragmentLength(MaxFragmentLengthCode.len_512), CH, "01"),
    (MaxFragmentLength(4), SH, "04"),
    # RFC 6066 §5
    (ClientCertificateUrl(), CH, ""),
    (ClientCertificateUrl(), SH, ""),
    # RFC 6066 §6
    (
        TrustedCaKeys(
            (
                (IdentifierType.pre_agreed, b""),
                (IdentifierType.key_sha1_hash, bytes(range(20))),
                (IdentifierType.x509_name, b"\x30\x00"),
                (IdentifierType.cert_sha1_hash, b"\xff" * 20),
            )
        ),
        CH,
        "0030 00 01" + bytes(range(20)).hex() + "02 0002 3000 03" + "ff" * 20,
    ),
    (TrustedCaKeys(()), CH, "0000"),
    (TrustedCaKeys(), SH, ""),
    # RFC 8422 §5.1.1, §5.1.2
    (SupportedGroups((NamedGroup.secp256r1, NamedGroup.x25519)), CH, "0004 0017 001d"),
    (EcPointFormats((0,)), CH, "01 00"),
    (EcPointFormats((0, 1, 2)), SH, "03 000102"),
    # RFC 5246 §7.4.1.4.1
    (SignatureAlgorithms((0x0403,)), CH, "0002 0403"),
    # RFC 6520 §2
    (Heartbeat(HeartbeatMode.peer_allowed_to_send), CH, "01"),
    (Heartbeat(2), SH, "02"),
    # RFC 7250 §3: a list in ClientHello, one value in ServerHello
    (ClientCertificateType((CertificateType.RawPublicKey, CertificateType.X509)), CH, "02 02 00"),
    (ClientCertificateType((2,)), SH, "02"),
    (ServerCertificateType((2,)), CH, "01 02"),
    (ServerCertificateType((0,)), SH, "00"),
    # RFC 7627 §5.1
    (ExtendedMasterSecret(), CH, ""),
    (ExtendedMasterSecret(), SH, ""),
    # RFC 7924 §3: CachedObject list<1..2^16-1>; hash_value<1..255> only from the client
    (
        CachedInfo(
            (CachedObject(CachedInformationType.cert, b"\xaa" * 32), CachedObject(2, b"\x01"))
        ),
        CH,
        "0025 01 20 " + "aa" * 32 + " 02 01 01",
    ),
    (CachedInfo((CachedObject(1),)), SH, "0001 01"),
    # RFC 5746 §3.2: renegotiated_connection<0..255>
    (RenegotiationInfo(), CH, "00"),
    (RenegotiationInfo(b"\x01" * 12), SH, "0c" + "01" * 12),
    # kept raw
    (UnknownExtension(ExtensionType.truncated_hmac, b""), CH, ""),
    (UnknownExtension(0x1234, b"\x00\x01\x02"), SH, "000102"),
]


@pytest.mark.parametrize(("ext", "ctx", "hex_data"), VECTORS)
def test_known_encoding(ext: Extension, ctx: HandshakeType, hex_data: str) -> None:
    data = bytes.fromhex(hex_data)
    assert ext.encode(ctx) == data
    decoded = decode(block((ext.ext_type, data)), ctx)
    assert decoded == (ext,)
    assert encode_extensions(decoded, ctx) == block((ext.ext_type, data))


def test_ext_type_values() -> None:
    assert ServerName.TYPE == 0
    assert MaxFragmentLength.TYPE == 1
    assert ClientCertificateUrl.TYPE == 2
    assert TrustedCaKeys.TYPE == 3
    assert int(ExtensionType.truncated_hmac) == 4
    assert SupportedGroups.TYPE == 10
    assert EcPointFormats.TYPE == 11
    assert SignatureAlgorithms.TYPE == 13
    assert Heartbeat.TYPE == 15
    assert ClientCertificateType.TYPE == 19
    assert ServerCertificateType.TYPE == 20
    assert ExtendedMasterSecret.TYPE == 23
    assert CachedInfo.TYPE == 25
    assert RenegotiationInfo.TYPE == 0xFF01
    assert ServerName("a").ext_type == 0
    assert UnknownExtension(99).ext_type == 99


def test_truncated_hmac_is_kept_raw() -> None:
    (ext,) = decode(block((4, b"")), CH)
    assert ext == UnknownExtension(4, b"")


def test_unknown_extensions_are_kept_in_order() -> None:
    data = block((0x3A3A, b""), (23, b""), (0xFE00, b"xyz"))
    assert decode(data, CH) == (
        UnknownExtension(0x3A3A, b""),
        ExtendedMasterSecret(),
        UnknownExtension(0xFE00, b"xyz"),
    )


def test_empty_block() -> None:
    assert decode(b"\x00\x00", CH) == ()
    assert encode_extensions((), SH) == b"\x00\x00"


def test_duplicates_are_decode_errors() -> None:
    with pytest.raises(DecodeError):
        decode(block((23, b""), (23, b"")), CH)
    with pytest.raises(DecodeError):
        decode(block((0x1234, b""), (0x1234, b"a")), SH)
    with pytest.raises(ValueError):
        encode_extensions((UnknownExtension(9), UnknownExtension(9)), CH)


def test_what_cannot_be_put_on_the_wire_is_a_value_error() -> None:
    """An encoder refuses the caller's impossible values with ValueError (never a struct or
    overflow error): a type outside u16, extension_data or a block over 2^16-1 bytes."""
    for ext_type in (-1, 0x10000):
        with pytest.raises(ValueError, match="does not fit in 2 bytes"):
            encode_extensions((UnknownExtension(ext_type),), CH)
    with pytest.raises(ValueError, match="do not fit"):
        encode_extensions((UnknownExtension(0x1234, bytes(0x10000)),), CH)
    with pytest.raises(ValueError, match="block of"):
        halves = (UnknownExtension(1, bytes(0x8000)), UnknownExtension(2, bytes(0x8000)))
        encode_extensions(halves, CH)
    assert len(encode_extensions((UnknownExtension(1, bytes(0xFFFF - 4)),), CH)) == 2 + 0xFFFF


def test_block_framing_errors() -> None:
    for bad in (b"", b"\x00", b"\x00\x03\x00\x17\x00", b"\x00\x04\x00\x17\x00\x01", b"\x00\x02"):
        with pytest.raises(DecodeError):
            decode_extensions(Reader(bad), CH)


@pytest.mark.parametrize(
    "ext_type", [ExtensionType.supported_groups, ExtensionType.signature_algorithms]
)
def test_client_only_extension_in_server_hello(ext_type: int) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(block((ext_type, bytes.fromhex("0002 0017"))), SH)
    assert info.value.alert == AlertDescription.unsupported_extension
    assert not isinstance(info.value, DecodeError)
    with pytest.raises(ValueError):
        encode_extensions((SupportedGroups((23,)),), SH)


def test_extensions_only_in_hellos() -> None:
    with pytest.raises(ValueError):
        decode_extensions(Reader(b"\x00\x00"), HandshakeType.certificate)
    with pytest.raises(ValueError):
        ExtendedMasterSecret().encode(HandshakeType.finished)


@pytest.mark.parametrize("code", [0, 5, 255])
def test_max_fragment_length_illegal_code(code: int) -> None:
    for ctx in (CH, SH):
        with pytest.raises(ProtocolError) as info:
            MaxFragmentLength.decode(bytes([code]), ctx)
        assert info.value.alert == AlertDescription.illegal_parameter
    with pytest.raises(ValueError):
        MaxFragmentLength(code).encode(CH)


def test_max_fragment_length_sizes() -> None:
    assert [c.length for c in MaxFragmentLengthCode] == [512, 1024, 2048, 4096]
    with pytest.raises(DecodeError):
        MaxFragmentLength.decode(b"\x01\x01", CH)


def test_heartbeat_unknown_mode() -> None:
    with pytest.raises(ProtocolError) as info:
        Heartbeat.decode(b"\x03", CH)
    assert info.value.alert == AlertDescription.illegal_parameter


@pytest.mark.parametrize(
    "data",
    [
        "0000",  # empty list
        "0005 00 0002 " + b"\xc3\xa9".hex(),  # non-ASCII
        "0004 00 0001 00",  # NUL byte
        "000a 00 0002 6161 00 0002 6262",  # two host_names
        "0005 01 0002 6161",  # unknown NameType
        "0003 00 0000",  # empty HostName
        "0005 00 0002 6161 00",  # trailing byte
    ],
)
def test_server_name_rejects(data: str) -> None:
    with pytest.raises(DecodeError):
        ServerName.decode(bytes.fromhex(data), CH)


def test_server_name_contexts() -> None:
    with pytest.raises(DecodeError):
        ServerName.decode(b"\x00", SH)
    with pytest.raises(ValueError):
        ServerName("x").encode(SH)
    with pytest.raises(ValueError):
        ServerName("").encode(CH)
    with pytest.raises(ValueError):
        ServerName("bücher.example").encode(CH)


def test_certificate_type_contexts() -> None:
    with pytest.raises(DecodeError):  # ServerHello carries exactly one u8
        ServerCertificateType.decode(b"\x01\x02", SH)
    with pytest.raises(DecodeError):  # ClientHello list<1..2^8-1>
        ClientCertificateType.decode(b"\x00", CH)
    with pytest.raises(ValueError):
        ServerCertificateType((0, 2)).encode(SH)
    client: object = ClientCertificateType((2,))
    assert client != ServerCertificateType((2,))


def test_cached_info_contexts() -> None:
    with pytest.raises(DecodeError):  # empty list
        CachedInfo.decode(b"\x00\x00", CH)
    with pytest.raises(DecodeError):  # empty hash_value
        CachedInfo.decode(bytes.fromhex("0002 01 00"), CH)
    with pytest.raises(ValueError):
        CachedInfo((CachedObject(1, b"\x01"),)).encode(SH)
    with pytest.raises(ValueError):
        CachedInfo((CachedObject(1),)).encode(CH)
    assert CachedInfo.decode(bytes.fromhex("0002 01 02"), SH) == CachedInfo(
        (CachedObject(1), CachedObject(2))
    )


def test_trusted_ca_keys_rejects() -> None:
    for data in ("0001 04", "0002 01 00", "0003 02 0000", "00"):
        with pytest.raises(DecodeError):
            TrustedCaKeys.decode(bytes.fromhex(data), CH)
    with pytest.raises(DecodeError):
        TrustedCaKeys.decode(b"\x00\x00", SH)
    with pytest.raises(ValueError):
        TrustedCaKeys(((1, b"short"),)).encode(CH)


def test_list_extensions_reject_bad_lengths() -> None:
    for cls, data in (
        (SupportedGroups, "0000"),
        (SupportedGroups, "0003 0017 0018"),
        (SignatureAlgorithms, "0000"),
        (SignatureAlgorithms, "0001 04"),
        (EcPointFormats, "00"),
        (RenegotiationInfo, "02 00"),
    ):
        with pytest.raises(DecodeError):
            cls.decode(bytes.fromhex(data), CH)
    with pytest.raises(DecodeError):
        ExtendedMasterSecret.decode(b"\x00", CH)
    with pytest.raises(DecodeError):
        ClientCertificateUrl.decode(b"\x00", SH)


def test_find_extension() -> None:
    exts: tuple[Extension, ...] = (UnknownExtension(35), ServerName("a.example"), Heartbeat(1))
    assert find_extension(exts, ServerName) == ServerName("a.example")
    assert find_extension(exts, Heartbeat) == Heartbeat(1)
    assert find_extension(exts, ExtendedMasterSecret) is None
    assert find_extension(exts, UnknownExtension) == UnknownExtension(35)


@pytest.mark.parametrize(
    ("ext_type", "in_message"),
    [
        (ExtensionType.extended_master_secret, CH),  # RFC 7627 §5.1
        (ExtensionType.extended_master_secret, SH),
        (ExtensionType.client_certificate_url, CH),  # RFC 6066 §5
        (ExtensionType.server_name, SH),  # RFC 6066 §3: empty in ServerHello
        (ExtensionType.trusted_ca_keys, SH),  # RFC 6066 §6: empty in ServerHello
    ],
)
def test_extensions_without_data_refuse_data_and_name_themselves(
    ext_type: ExtensionType, in_message: HandshakeType
) -> None:
    assert len(decode(block((ext_type, b"")), in_message)) == 1
    with pytest.raises(DecodeError, match=f"^{ext_type.name}: extension_data must be empty"):
        decode(block((ext_type, b"\x00")), in_message)


def test_host_names_are_printable_ascii_both_ways() -> None:
    """RFC 6066 §3: a HostName is ASCII; ours takes the printable range 0x21..0x7e only."""
    from iotdtls.messages.extensions import decode_ascii, encode_ascii

    edges = "!~" + "".join(map(chr, range(0x21, 0x7F)))
    assert decode_ascii(edges.encode(), "host_name") == edges
    assert encode_ascii(edges, "host_name") == edges.encode()
    assert decode_ascii(b"", "host_name") == "" and encode_ascii("", "host_name") == b""
    for bad in ("a b", "\x20", "\x7f", "a\x00", "caf\xe9", "\u0100"):
        with pytest.raises(ValueError, match="host_name must be printable ASCII"):
            encode_ascii(bad, "host_name")
        if bad.isascii():
            with pytest.raises(DecodeError, match="host_name is not printable ASCII"):
                decode_ascii(bad.encode(), "host_name")
    with pytest.raises(DecodeError):
        decode_ascii(b"caf\xc3\xa9", "host_name")


def test_repeated_blocks_are_decoded_once_per_context() -> None:
    """A fleet's hellos repeat their extension block byte for byte: the decoded tuple of frozen
    extensions is remembered (the last EXTENSION_BLOCKS_KEPT blocks, per hello type), a block that
    does not decode is refused each time, and blocks over EXTENSION_BLOCK_KEPT_MAX bytes are
    decoded afresh so that a peer cannot pin much memory."""
    from iotdtls.messages import extensions as module

    module._decoded_block.cache_clear()
    calls: list[bytes] = []

    def counting(data: bytes, in_message: HandshakeType) -> Extension:
        calls.append(data)
        return SupportedGroups.decode(data, in_message)

    groups = bytes.fromhex("0002 0017")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(module._DECODERS, ExtensionType.supported_groups, counting)
        first = decode(block((ExtensionType.supported_groups, groups)), CH)
        assert first == (SupportedGroups((NamedGroup.secp256r1,)),)
        for _ in range(2):
            assert decode(bytes(block((ExtensionType.supported_groups, groups))), CH) is first
        assert len(calls) == 1
        with pytest.raises(ProtocolError):  # the same bytes mean something else in ServerHello
            decode(block((ExtensionType.supported_groups, groups)), SH)
        for _ in range(2):
            with pytest.raises(DecodeError):
                decode(block((ExtensionType.supported_groups, groups[:-1])), CH)
        assert len(calls) == 3
        def with_groups(count: int) -> bytes:
            groups = b"".join(g.to_bytes(2, "big") for g in range(23, 23 + count))
            return block((ExtensionType.supported_groups, len(groups).to_bytes(2, "big") + groups))

        def groups_in(data: bytes) -> int:
            (ext,) = decode(data, CH)
            assert isinstance(ext, SupportedGroups)
            return len(ext.groups)

        largest, large = with_groups(253), with_groups(254)
        assert len(largest) - 2 == module.EXTENSION_BLOCK_KEPT_MAX < len(large) - 2
        for _ in range(2):
            assert groups_in(largest) == 253
        assert len(calls) == 4
        kept = module._decoded_block.cache_info().currsize
        for _ in range(2):
            assert groups_in(large) == 254
        assert len(calls) == 6
        assert module._decoded_block.cache_info().currsize == kept
    assert module._decoded_block.cache_info().maxsize == module.EXTENSION_BLOCKS_KEPT


def test_our_blocks_are_encoded_once() -> None:
    """The extensions we send repeat in every hello: an equal tuple is encoded once; a list, an
    iterator, or extensions holding unhashable values are encoded each time, to the same bytes."""
    from iotdtls.messages import extensions as module

    module._encoded_block.cache_clear()
    calls: list[int] = []
    real = SupportedGroups.encode

    def counting(self: SupportedGroups, in_message: HandshakeType) -> bytes:
        calls.append(in_message)
        return real(self, in_message)

    expected = block((ExtensionType.supported_groups, bytes.fromhex("0002 0017")))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SupportedGroups, "encode", counting)
        for _ in range(3):
            assert encode_extensions((SupportedGroups((NamedGroup.secp256r1,)),), CH) == expected
        assert len(calls) == 1
        kept = module._encoded_block.cache_info().currsize
        for _ in range(2):  # a generator's identity says nothing of what it yields: not kept
            assert encode_extensions([SupportedGroups((NamedGroup.secp256r1,))], CH) == expected
            assert encode_extensions(iter([SupportedGroups((23,))]), CH) == expected
        assert module._encoded_block.cache_info().currsize == kept
        unhashable = SupportedGroups([NamedGroup.secp256r1])  # type: ignore[arg-type]
        for _ in range(2):
            assert encode_extensions((unhashable,), CH) == expected
        assert len(calls) == 7
    assert module._encoded_block.cache_info().maxsize == module.EXTENSION_BLOCKS_KEPT
