"""Hello extensions (RFC 5246 §7.4.1.4) used by the profile, and the extension block codec.

Every known extension is a frozen dataclass with `TYPE`, `encode(in_message)` (the
extension_data, without type and length) and `decode(data, in_message)`. `in_message` is
`HandshakeType.client_hello` or `HandshakeType.server_hello`: several extensions have a different
shape in each (RFC 6066, RFC 7250, RFC 7924). Unknown extension types are kept raw as
`UnknownExtension`, never dropped. Encoders raise `ValueError` for values that cannot be put on the
wire (the local caller's bug); decoders raise only `DecodeError` or `ProtocolError`.

The module also holds the small vector helpers that the handshake codecs share.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Self, TypeVar

from iotdtls._buffer import Reader, Writer
from iotdtls.errors import AlertDescription, DecodeError, ProtocolError
from iotdtls.messages.constants import (
    CachedInformationType,
    CertificateType,
    ECPointFormat,
    HandshakeType,
    HeartbeatMode,
    IdentifierType,
    MaxFragmentLengthCode,
    NamedGroup,
    NameType,
    SignatureScheme,
    known,
    members_by_value,
)

__all__ = [
    "CachedInfo",
    "CachedObject",
    "ClientCertificateType",
    "ClientCertificateUrl",
    "EcPointFormats",
    "ExtendedMasterSecret",
    "Extension",
    "ExtensionType",
    "Heartbeat",
    "MaxFragmentLength",
    "RenegotiationInfo",
    "ServerCertificateType",
    "ServerName",
    "SignatureAlgorithms",
    "SupportedGroups",
    "TrustedCaKeys",
    "UnknownExtension",
    "decode_extensions",
    "encode_extensions",
    "find_extension",
]

SHA1_LEN = 20


class ExtensionType(IntEnum):
    """ExtensionType values (IANA "TLS ExtensionType Values")."""

    server_name = 0
    max_fragment_length = 1
    client_certificate_url = 2
    trusted_ca_keys = 3
    truncated_hmac = 4
    status_request = 5
    supported_groups = 10
    ec_point_formats = 11
    signature_algorithms = 13
    use_srtp = 14
    heartbeat = 15
    application_layer_protocol_negotiation = 16
    client_certificate_type = 19
    server_certificate_type = 20
    encrypt_then_mac = 22
    extended_master_secret = 23
    cached_info = 25
    session_ticket = 35
    connection_id = 54
    renegotiation_info = 0xFF01


# --- vector helpers shared by the codecs of this package -------------------------------------


def push_checked_vector(
    writer: Writer,
    length_width: int,
    data: bytes,
    minimum: int = 0,
    maximum: int | None = None,
    what: str = "vector",
) -> None:
    """Write `opaque x<minimum..maximum>`, refusing (ValueError naming it as `what`) what a
    decoder would refuse."""
    limit = (1 << (8 * length_width)) - 1 if maximum is None else maximum
    if not minimum <= len(data) <= limit:
        raise ValueError(f"{what} of {len(data)} bytes outside {minimum}..{limit}")
    writer.push_vector(length_width, data)


def push_uint_list(
    writer: Writer,
    length_width: int,
    item_width: int,
    values: Iterable[int],
    minimum: int,
    maximum: int | None = None,
) -> None:
    """Write a vector of fixed-width integers; `minimum`/`maximum` are in bytes, as in the RFCs."""
    limit = 1 << (8 * item_width)
    items = []
    for value in values:
        if not 0 <= value < limit:
            raise ValueError(f"{value} does not fit in {item_width} bytes")
        items.append(value.to_bytes(item_width, "big"))
    push_checked_vector(writer, length_width, b"".join(items), minimum, maximum)


def pull_uint_list(
    reader: Reader,
    length_width: int,
    item_width: int,
    minimum: int,
    maximum: int | None = None,
    *,
    enum: type[IntEnum],
) -> tuple[int, ...]:
    """Read a vector of one- or two-byte integers (the widths of every such list of the
    protocol), known values as members of `enum` (the registry of the list's values), others as
    ints."""
    data = reader.pull_vector(length_width, minimum, maximum)
    count, odd = divmod(len(data), item_width)
    if odd:
        raise DecodeError(f"list of {item_width}-byte items has odd length {len(data)}")
    values: tuple[int, ...]
    if item_width == 1:
        values = tuple(data)
    elif item_width == 2:
        values = struct.unpack(f">{count}H", data)
    else:
        raise ValueError(f"no list of {item_width}-byte integers in the protocol")
    members = members_by_value(enum)
    return tuple(map(members.get, values, values))


#: The printable ASCII bytes, 0x21..0x7e: deleting them leaves whatever else a name holds.
_PRINTABLE_ASCII = bytes(range(0x21, 0x7F))


def decode_ascii(data: bytes, what: str) -> str:
    """Decode printable ASCII (0x21..0x7e) or raise `DecodeError`."""
    if data.translate(None, _PRINTABLE_ASCII):
        raise DecodeError(f"{what} is not printable ASCII")
    return data.decode("ascii")


def encode_ascii(text: str, what: str) -> bytes:
    """Encode printable ASCII (0x21..0x7e) or raise `ValueError` naming the first other
    character and its place, not `text` (a URL may hold user information)."""
    if not text.isascii() or text.encode("ascii").translate(None, _PRINTABLE_ASCII):
        position, char = next((i, c) for i, c in enumerate(text, 1) if not "!" <= c <= "~")
        raise ValueError(
            f"{what} must be printable ASCII without spaces, not {char!r} at character {position}"
        )
    return text.encode("ascii")


def encode_vector(
    length_width: int, data: bytes, minimum: int = 0, maximum: int | None = None
) -> bytes:
    """A body that is exactly one `opaque x<minimum..maximum>` (see `push_checked_vector`)."""
    writer = Writer()
    push_checked_vector(writer, length_width, data, minimum, maximum)
    return writer.getvalue()


def decode_vector(
    data: bytes, length_width: int, minimum: int = 0, maximum: int | None = None
) -> bytes:
    """Read a body that is exactly one `opaque x<minimum..maximum>`, or raise `DecodeError`."""
    reader = Reader(data)
    value = reader.pull_vector(length_width, minimum, maximum)
    reader.expect_end()
    return value


def encode_uint_list(
    width: int, values: Iterable[int], minimum: int, maximum: int | None = None
) -> bytes:
    """A body that is exactly one list of `width`-byte integers with a `width`-byte length."""
    writer = Writer()
    push_uint_list(writer, width, width, values, minimum, maximum)
    return writer.getvalue()


def decode_uint_list(
    data: bytes,
    width: int,
    minimum: int,
    maximum: int | None = None,
    *,
    enum: type[IntEnum],
) -> tuple[int, ...]:
    """Read a body that is exactly one list written by `encode_uint_list`."""
    reader = Reader(data)
    values = pull_uint_list(reader, width, width, minimum, maximum, enum=enum)
    reader.expect_end()
    return values


def push_vector_list(
    writer: Writer, length_width: int, item_width: int, items: Iterable[bytes]
) -> None:
    """Write a list<0..> of non-empty `opaque item<1..>` with `item_width`-byte lengths."""
    body = Writer()
    for item in items:
        push_checked_vector(body, item_width, item, 1)
    push_checked_vector(writer, length_width, body.getvalue())


def pull_vector_list(reader: Reader, length_width: int, item_width: int) -> tuple[bytes, ...]:
    """Read a list written by `push_vector_list`; an empty item is a `DecodeError`."""
    entries = Reader(reader.pull_vector(length_width))
    items: list[bytes] = []
    while not entries.eof():
        items.append(entries.pull_vector(item_width, 1))
    return tuple(items)


_HELLOS = frozenset((HandshakeType.client_hello, HandshakeType.server_hello))


def _check_context(in_message: HandshakeType) -> None:
    if in_message not in _HELLOS:
        raise ValueError(f"extensions are not carried in {in_message!r}")


def _expect_empty(data: bytes, ext_type: ExtensionType) -> None:
    if data:
        raise DecodeError(
            f"{ext_type.name}: extension_data must be empty, got {len(data)} bytes"
        )


_Code = TypeVar("_Code", bound=IntEnum)


def _encode_code(value: int, enum: type[IntEnum], what: str, allowed: str) -> bytes:
    """One-byte enum extension_data; a value outside `enum` is the caller's bug (ValueError)."""
    if value not in list(enum):
        raise ValueError(f"{what} {value} is not {allowed}")
    return bytes([value])


def _decode_code(data: bytes, enum: type[_Code], what: str) -> _Code:
    """Read one-byte enum extension_data; an unknown value is an illegal_parameter alert."""
    reader = Reader(data)
    value = reader.pull_uint8()
    reader.expect_end()
    try:
        return enum(value)
    except ValueError:
        raise ProtocolError(f"{what} {value}", AlertDescription.illegal_parameter) from None


# --- the extensions ------------------------------------------------------------------------------


class _Known:
    """Common behaviour of the known extensions."""

    __slots__ = ()
    TYPE: ClassVar[ExtensionType]

    @property
    def ext_type(self) -> int:
        """The ExtensionType on the wire."""
        return self.TYPE


@dataclass(frozen=True, slots=True)
class ServerName(_Known):
    """server_name (RFC 6066 §3): one host_name in ClientHello, empty data in ServerHello.

    The ServerHello form is `ServerName("")`. Only the host_name type exists in practice, so like
    most stacks we refuse any other NameType instead of guessing its layout (decode_error), and
    refuse a second host_name (RFC 6066 §3: no two names of the same type). The name is printable
    ASCII ("represented as a byte string using ASCII encoding").
    """

    TYPE: ClassVar[ExtensionType] = ExtensionType.server_name
    host_name: str = ""

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        if in_message == HandshakeType.server_hello:
            if self.host_name:
                raise ValueError("server_name in ServerHello carries no name")
            return b""
        writer = Writer()
        entry = Writer()
        entry.push_uint8(NameType.host_name)
        push_checked_vector(entry, 2, encode_ascii(self.host_name, "host_name"), 1)
        writer.push_vector(2, entry.getvalue())
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        if in_message == HandshakeType.server_hello:
            _expect_empty(data, ExtensionType.server_name)
            return cls("")
        reader = Reader(data)
        entries = Reader(reader.pull_vector(2, 1))
        reader.expect_end()
        names: list[str] = []
        while not entries.eof():
            name_type = entries.pull_uint8()
            if name_type != NameType.host_name:
                raise DecodeError(f"server_name: unsupported NameType {name_type}")
            names.append(decode_ascii(entries.pull_vector(2, 1), "host_name"))
        if len(names) != 1:
            raise DecodeError("server_name: more than one host_name")
        return cls(names[0])


@dataclass(frozen=True, slots=True)
class MaxFragmentLength(_Known):
    """max_fragment_length (RFC 6066 §4): one code 1..4 for 2^9..2^12 bytes.

    Any other code is an illegal_parameter alert (RFC 6066 §4).
    """

    TYPE: ClassVar[ExtensionType] = ExtensionType.max_fragment_length
    code: int

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        return _encode_code(self.code, MaxFragmentLengthCode, "max_fragment_length code", "1..4")

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        return cls(_decode_code(data, MaxFragmentLengthCode, "max_fragment_length code"))


@dataclass(frozen=True, slots=True)
class _EmptyExtension(_Known):
    """Shared codec of the flag extensions: empty extension_data in both hellos."""

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        return b""

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        _expect_empty(data, cls.TYPE)
        return cls()


@dataclass(frozen=True, slots=True)
class ClientCertificateUrl(_EmptyExtension):
    """client_certificate_url (RFC 6066 §5): empty extension_data in both hellos."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.client_certificate_url


_TRUSTED_AUTHORITY_SIZES: dict[int, int] = {
    IdentifierType.pre_agreed: 0,
    IdentifierType.key_sha1_hash: SHA1_LEN,
    IdentifierType.cert_sha1_hash: SHA1_LEN,
}


@dataclass(frozen=True, slots=True)
class TrustedCaKeys(_Known):
    """trusted_ca_keys (RFC 6066 §6).

    In ClientHello a TrustedAuthority list<0..2^16-1>, each `(identifier_type, identifier)`:
    pre_agreed(0) with b"", key_sha1_hash(1) and cert_sha1_hash(3) with 20 bytes, x509_name(2)
    with the DER DistinguishedName<1..2^16-1> (without its length). In ServerHello the
    extension_data is empty and `authorities` is `()`. An unknown identifier type cannot be
    skipped (its layout is unknown) and is a decode_error.
    """

    TYPE: ClassVar[ExtensionType] = ExtensionType.trusted_ca_keys
    authorities: tuple[tuple[int, bytes], ...] = ()

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        if in_message == HandshakeType.server_hello:
            if self.authorities:
                raise ValueError("trusted_ca_keys in ServerHello carries no authorities")
            return b""
        body = Writer()
        for id_type, identifier in self.authorities:
            body.push_uint8(id_type)
            if id_type == IdentifierType.x509_name:
                push_checked_vector(body, 2, identifier, 1)
            elif _TRUSTED_AUTHORITY_SIZES.get(id_type) == len(identifier):
                body.push_bytes(identifier)
            else:
                raise ValueError(f"bad TrustedAuthority ({id_type}, {len(identifier)} bytes)")
        writer = Writer()
        push_checked_vector(writer, 2, body.getvalue())
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        if in_message == HandshakeType.server_hello:
            _expect_empty(data, ExtensionType.trusted_ca_keys)
            return cls()
        reader = Reader(data)
        entries = reader.pull_block(2)
        reader.expect_end()
        authorities: list[tuple[int, bytes]] = []
        while not entries.eof():
            id_type = entries.pull_uint8()
            if id_type == IdentifierType.x509_name:
                identifier = entries.pull_vector(2, 1)
            elif id_type in _TRUSTED_AUTHORITY_SIZES:
                identifier = entries.pull_bytes(_TRUSTED_AUTHORITY_SIZES[id_type])
            else:
                raise DecodeError(f"trusted_ca_keys: unknown IdentifierType {id_type}")
            authorities.append((IdentifierType(id_type), identifier))
        return cls(tuple(authorities))


@dataclass(frozen=True, slots=True)
class SupportedGroups(_Known):
    """supported_groups, formerly elliptic_curves (RFC 8422 §5.1.1): NamedCurve<2..2^16-1>.

    ClientHello only: a TLS 1.2 server does not send it (RFC 8422 §5.2).
    """

    TYPE: ClassVar[ExtensionType] = ExtensionType.supported_groups
    groups: tuple[int, ...]

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        return encode_uint_list(2, self.groups, 2)

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        return cls(decode_uint_list(data, 2, 2, enum=NamedGroup))


@dataclass(frozen=True, slots=True)
class EcPointFormats(_Known):
    """ec_point_formats (RFC 8422 §5.1.2): ECPointFormat<1..2^8-1>, in both hellos."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.ec_point_formats
    formats: tuple[int, ...]

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        return encode_uint_list(1, self.formats, 1)

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        return cls(decode_uint_list(data, 1, 1, enum=ECPointFormat))


@dataclass(frozen=True, slots=True)
class SignatureAlgorithms(_Known):
    """signature_algorithms (RFC 5246 §7.4.1.4.1): SignatureAndHashAlgorithm<2..2^16-2>.

    ClientHello only ("Servers MUST NOT send this extension").
    """

    TYPE: ClassVar[ExtensionType] = ExtensionType.signature_algorithms
    schemes: tuple[int, ...]

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        return encode_uint_list(2, self.schemes, 2, 0xFFFE)

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        return cls(decode_uint_list(data, 2, 2, 0xFFFE, enum=SignatureScheme))


@dataclass(frozen=True, slots=True)
class Heartbeat(_Known):
    """heartbeat (RFC 6520 §2): HeartbeatMode, 1 peer_allowed_to_send, 2 peer_not_allowed_to_send.

    An unknown mode is an illegal_parameter alert (RFC 6520 §2).
    """

    TYPE: ClassVar[ExtensionType] = ExtensionType.heartbeat
    mode: int

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        return _encode_code(self.mode, HeartbeatMode, "heartbeat mode", "1 or 2")

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        return cls(_decode_code(data, HeartbeatMode, "heartbeat mode"))


@dataclass(frozen=True, slots=True)
class _CertificateTypeExtension(_Known):
    """Shared codec of RFC 7250 §3: a list<1..2^8-1> in ClientHello, exactly one in ServerHello."""

    types: tuple[int, ...]

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        if in_message == HandshakeType.server_hello:
            if len(self.types) != 1:
                raise ValueError(f"{self.TYPE.name} in ServerHello carries exactly one type")
            return bytes([self.types[0]])
        return encode_uint_list(1, self.types, 1)

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        if in_message == HandshakeType.client_hello:
            return cls(decode_uint_list(data, 1, 1, enum=CertificateType))
        reader = Reader(data)
        types = (known(CertificateType, reader.pull_uint8()),)
        reader.expect_end()
        return cls(types)


@dataclass(frozen=True, slots=True)
class ClientCertificateType(_CertificateTypeExtension):
    """client_certificate_type (RFC 7250 §3)."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.client_certificate_type


@dataclass(frozen=True, slots=True)
class ServerCertificateType(_CertificateTypeExtension):
    """server_certificate_type (RFC 7250 §3)."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.server_certificate_type


@dataclass(frozen=True, slots=True)
class ExtendedMasterSecret(_EmptyExtension):
    """extended_master_secret (RFC 7627 §5.1): empty extension_data in both hellos."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.extended_master_secret


@dataclass(frozen=True, slots=True)
class CachedObject:
    """CachedObject (RFC 7924 §3): a type and, in ClientHello only, hash_value<1..255>.

    In ServerHello the object carries only its type and `hash_value` is b"".
    """

    type: int
    hash_value: bytes = b""


@dataclass(frozen=True, slots=True)
class CachedInfo(_Known):
    """cached_info (RFC 7924 §3): CachedObject cached_info<1..2^16-1>, in both hellos."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.cached_info
    objects: tuple[CachedObject, ...]

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        from_client = in_message == HandshakeType.client_hello
        body = Writer()
        for obj in self.objects:
            body.push_uint8(obj.type)
            if from_client:
                push_checked_vector(body, 1, obj.hash_value, 1)
            elif obj.hash_value:
                raise ValueError("cached_info in ServerHello carries types only")
        writer = Writer()
        push_checked_vector(writer, 2, body.getvalue(), 1)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        from_client = in_message == HandshakeType.client_hello
        reader = Reader(data)
        entries = Reader(reader.pull_vector(2, 1))
        reader.expect_end()
        objects: list[CachedObject] = []
        while not entries.eof():
            obj_type = known(CachedInformationType, entries.pull_uint8())
            hash_value = entries.pull_vector(1, 1) if from_client else b""
            objects.append(CachedObject(obj_type, hash_value))
        return cls(tuple(objects))


@dataclass(frozen=True, slots=True)
class RenegotiationInfo(_Known):
    """renegotiation_info (RFC 5746 §3.2): renegotiated_connection<0..255>, in both hellos."""

    TYPE: ClassVar[ExtensionType] = ExtensionType.renegotiation_info
    renegotiated_connection: bytes = b""

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        return encode_vector(1, self.renegotiated_connection)

    @classmethod
    def decode(cls, data: bytes, in_message: HandshakeType) -> Self:
        _check_context(in_message)
        return cls(decode_vector(data, 1))


@dataclass(frozen=True, slots=True)
class UnknownExtension:
    """An extension this package does not model, kept raw (RFC 5246 §7.4.1.4: ignored, not lost).

    `ext_type` should not be a type listed in the decoder table; truncated_hmac (RFC 6066 §7)
    lands here, since it is never offered (EXT-3).
    """

    ext_type: int
    data: bytes = b""

    def encode(self, in_message: HandshakeType) -> bytes:
        _check_context(in_message)
        return self.data


Extension = (
    ServerName
    | MaxFragmentLength
    | ClientCertificateUrl
    | TrustedCaKeys
    | SupportedGroups
    | EcPointFormats
    | SignatureAlgorithms
    | Heartbeat
    | ClientCertificateType
    | ServerCertificateType
    | ExtendedMasterSecret
    | CachedInfo
    | RenegotiationInfo
    | UnknownExtension
)
"""Any value of the extension block."""

_DECODERS: dict[int, Callable[[bytes, HandshakeType], Extension]] = {
    ServerName.TYPE: ServerName.decode,
    MaxFragmentLength.TYPE: MaxFragmentLength.decode,
    ClientCertificateUrl.TYPE: ClientCertificateUrl.decode,
    TrustedCaKeys.TYPE: TrustedCaKeys.decode,
    SupportedGroups.TYPE: SupportedGroups.decode,
    EcPointFormats.TYPE: EcPointFormats.decode,
    SignatureAlgorithms.TYPE: SignatureAlgorithms.decode,
    Heartbeat.TYPE: Heartbeat.decode,
    ClientCertificateType.TYPE: ClientCertificateType.decode,
    ServerCertificateType.TYPE: ServerCertificateType.decode,
    ExtendedMasterSecret.TYPE: ExtendedMasterSecret.decode,
    CachedInfo.TYPE: CachedInfo.decode,
    RenegotiationInfo.TYPE: RenegotiationInfo.decode,
}
"""Decoder of every known extension type, keyed by ExtensionType."""

CLIENT_ONLY_EXTENSIONS = frozenset(
    {ExtensionType.supported_groups, ExtensionType.signature_algorithms}
)
"""Known types a TLS 1.2 server never sends (RFC 5246 §7.4.1.4.1, RFC 8422 §5.2)."""


#: Extension blocks remembered encoded and decoded (least recently used dropped): a client
#: sends the same extensions in every hello, a server answers alike, and a fleet's hellos repeat
#: byte for byte. Extensions are frozen values, so one decoded tuple serves every association.
EXTENSION_BLOCKS_KEPT = 64
#: Larger received blocks are decoded each time: the memory a peer's hellos can pin stays small.
EXTENSION_BLOCK_KEPT_MAX = 512


def encode_extensions(extensions: Iterable[Extension], in_message: HandshakeType) -> bytes:
    """Encode `Extension extensions<0..2^16-1>` with its 2-byte length (RFC 5246 §7.4.1.2).

    Raises `ValueError` for duplicate types and for a client-only extension in ServerHello.
    """
    _check_context(in_message)
    if type(extensions) is tuple:
        try:
            return _encoded_block(extensions, in_message)
        except TypeError:  # an extension holding an unhashable value: encoded each time
            pass
    return _encode_block(extensions, in_message)


def _encode_block(extensions: Iterable[Extension], in_message: HandshakeType) -> bytes:
    """The block `encode_extensions` returns, encoded afresh."""
    in_server_hello = in_message == HandshakeType.server_hello
    parts: list[bytes] = []
    seen: set[int] = set()
    for ext in extensions:
        ext_type = ext.ext_type
        if not 0 <= ext_type <= 0xFFFF:
            raise ValueError(f"extension type {ext_type} does not fit in 2 bytes")
        if ext_type in seen:
            raise ValueError(f"duplicate extension {ext_type}")
        if in_server_hello and ext_type in CLIENT_ONLY_EXTENSIONS:
            raise ValueError(f"extension {ext_type} may not appear in ServerHello")
        seen.add(ext_type)
        data = ext.encode(in_message)
        if len(data) > 0xFFFF:
            raise ValueError(f"extension {ext_type}: {len(data)} bytes of data do not fit")
        parts.append(_EXTENSION_HEADER.pack(ext_type, len(data)))
        parts.append(data)
    block = b"".join(parts)
    if len(block) > 0xFFFF:
        raise ValueError(f"extension block of {len(block)} bytes does not fit a 2-byte length")
    return len(block).to_bytes(2, "big") + block


_EXTENSION_HEADER = struct.Struct(">HH")
"""extension_type u16 and the length of extension_data (RFC 5246 §7.4.1.4)."""


def decode_extensions(reader: Reader, in_message: HandshakeType) -> tuple[Extension, ...]:
    """Read the 2-byte-length extension block from `reader` (RFC 5246 §7.4.1.2, §7.4.1.4).

    A duplicate type is a `DecodeError` ("There MUST NOT be more than one extension of the same
    type"). A client-only extension in ServerHello raises `ProtocolError` with
    unsupported_extension (RFC 5246 §7.4.1.4). Unknown types come back as `UnknownExtension`.
    """
    _check_context(in_message)
    block = reader.pull_vector(2)
    if len(block) <= EXTENSION_BLOCK_KEPT_MAX:
        return _decoded_block(block, in_message)
    return _decode_block(block, in_message)


def _decode_block(block_data: bytes, in_message: HandshakeType) -> tuple[Extension, ...]:
    """The extensions of one block's bytes (without its length), checked as above."""
    in_server_hello = in_message == HandshakeType.server_hello
    block = Reader(block_data)
    extensions: list[Extension] = []
    seen: set[int] = set()
    while not block.eof():
        ext_type = block.pull_uint16()
        data = block.pull_vector(2)
        if ext_type in seen:
            raise DecodeError(f"duplicate extension {ext_type}")
        seen.add(ext_type)
        if in_server_hello and ext_type in CLIENT_ONLY_EXTENSIONS:
            raise ProtocolError(
                f"extension {ext_type} in ServerHello", AlertDescription.unsupported_extension
            )
        decoder = _DECODERS.get(ext_type)
        if decoder is None:
            extensions.append(UnknownExtension(ext_type, data))
        else:
            extensions.append(decoder(data, in_message))
    return tuple(extensions)


# Wrapped, not decorated: the mutation tests skip decorated functions.
_encoded_block = functools.lru_cache(maxsize=EXTENSION_BLOCKS_KEPT)(_encode_block)
_decoded_block = functools.lru_cache(maxsize=EXTENSION_BLOCKS_KEPT)(_decode_block)


_E = TypeVar("_E")


def find_extension(extensions: Iterable[Extension], cls: type[_E]) -> _E | None:
    """The first extension of class `cls` in `extensions`, or None."""
    for ext in extensions:
        if isinstance(ext, cls):
            return ext
    return None
