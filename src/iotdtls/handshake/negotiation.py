"""Hello negotiation: what a client offers, what a server picks (RFC 5246 §7.4.1; RFC 8422 §5;
RFC 7250 §4; RFC 5746; RFC 7627), decided once per handshake.

A client is provisioned for one mode per server (CFG-1) and offers exactly that: the PSK suite,
or the ECDHE_ECDSA suite with P-256, uncompressed points and ecdsa_secp256r1_sha256 (RPK-2),
plus the RFC 7250 certificate types in raw-key mode. A server may hold every kind of credential
and takes the first suite of the client's list it can serve, with the first certificate type of
the client's list it has a credential for.
"""

from __future__ import annotations

from dataclasses import dataclass

from iotdtls.config import ClientConfig, Mode, ServerConfig
from iotdtls.crypto.suites import KeyExchangeKind, SuiteInfo, suite_info
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.peerauth import (
    OwnCertificate,
    PeerVerifier,
    RawKeyVerifier,
    X509ClientVerifier,
    own_raw_key,
    own_x509,
)
from iotdtls.messages import (
    CertificateType,
    CipherSuite,
    ClientCertificateType,
    ClientHello,
    ECPointFormat,
    EcPointFormats,
    ExtendedMasterSecret,
    Extension,
    NamedGroup,
    RenegotiationInfo,
    ServerCertificateType,
    SignatureAlgorithms,
    SignatureScheme,
    SupportedGroups,
    find_extension,
)

__all__ = [
    "ServerChoice",
    "check_renegotiation_info",
    "choose_server_parameters",
    "client_offer",
    "server_hello_extensions",
]

_EC_EXTENSIONS: tuple[Extension, ...] = (
    SupportedGroups((NamedGroup.secp256r1,)),
    EcPointFormats((ECPointFormat.uncompressed,)),
    SignatureAlgorithms((SignatureScheme.ecdsa_secp256r1_sha256,)),
)


def client_offer(config: ClientConfig) -> tuple[tuple[int, ...], tuple[Extension, ...]]:
    """The suites and extensions of our ClientHello for the configured mode.

    Always an empty renegotiation_info (RFC 5746 §3.4, EXT-4) and extended_master_secret
    (RFC 7627 §5.1, RES-3) unless turned off; never truncated_hmac (EXT-3)."""
    exts: list[Extension] = [RenegotiationInfo(b"")]
    if config.require_extended_master_secret:
        exts.append(ExtendedMasterSecret())
    if config.mode is Mode.PSK:
        return (CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,), tuple(exts)
    exts.extend(_EC_EXTENSIONS)
    if config.mode is Mode.RAW_PUBLIC_KEY:
        exts.append(ServerCertificateType((CertificateType.RawPublicKey,)))
        if config.raw_public_key is not None:
            exts.append(ClientCertificateType((CertificateType.RawPublicKey,)))
    return (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,), tuple(exts)


def check_renegotiation_info(extensions: tuple[Extension, ...]) -> RenegotiationInfo | None:
    """An initial handshake carries an empty renegotiation_info, if any (RFC 5746 §3.4, §3.6)."""
    reneg = find_extension(extensions, RenegotiationInfo)
    if reneg is not None and reneg.renegotiated_connection:
        raise ProtocolError(
            "non-empty renegotiation_info in an initial handshake",
            AlertDescription.handshake_failure,
        )
    return reneg


@dataclass(frozen=True, slots=True)
class ServerChoice:
    """What the server decided from a ClientHello."""

    suite: SuiteInfo
    mode: Mode
    #: Our Certificate (ECDHE suites) and the type to confirm in ServerHello, if asked.
    own: OwnCertificate | None = None
    #: How to check the client's Certificate when we request one.
    client_verifier: PeerVerifier | None = None


def choose_server_parameters(hello: ClientHello, config: ServerConfig) -> ServerChoice:
    """The first suite of the client's list we can serve (RFC 5246 §7.4.1.3).

    handshake_failure when no suite fits; unsupported_certificate when the ECDHE suite fails
    only on certificate types (RFC 7250 §4.2)."""
    failure = ProtocolError("no cipher suite in common", AlertDescription.handshake_failure)
    for code in hello.cipher_suites:
        suite = suite_info(code)
        if suite is None:
            continue
        if suite.key_exchange is KeyExchangeKind.PSK:
            if config.has_psk:
                return ServerChoice(suite, Mode.PSK)
            continue
        if not _client_takes_p256_ecdsa(hello):
            continue
        try:
            return _choose_ecdhe(suite, hello, config)
        except ProtocolError as exc:
            failure = exc
    raise failure


def _client_takes_p256_ecdsa(hello: ClientHello) -> bool:
    """P-256, uncompressed points and ECDSA-SHA256 (RFC 8422 §5.1; RFC 5246 §7.4.1.4.1: without
    signature_algorithms the client only takes SHA-1, which the profile does not use)."""
    groups = find_extension(hello.extensions, SupportedGroups)
    formats = find_extension(hello.extensions, EcPointFormats)
    schemes = find_extension(hello.extensions, SignatureAlgorithms)
    return (
        (groups is None or NamedGroup.secp256r1 in groups.groups)
        and (formats is None or ECPointFormat.uncompressed in formats.formats)
        and schemes is not None
        and SignatureScheme.ecdsa_secp256r1_sha256 in schemes.schemes
    )


def _offered_types(
    hello: ClientHello, cls: type[ClientCertificateType | ServerCertificateType]
) -> tuple[int, ...]:
    """The certificate types a client lists; X.509 alone without the extension (RFC 7250 §4.1)."""
    ext = find_extension(hello.extensions, cls)
    return (CertificateType.X509,) if ext is None else ext.types


def _choose_ecdhe(suite: SuiteInfo, hello: ClientHello, config: ServerConfig) -> ServerChoice:
    own: OwnCertificate | None = None
    for cert_type in _offered_types(hello, ServerCertificateType):
        if cert_type == CertificateType.RawPublicKey and config.raw_public_key is not None:
            own = own_raw_key(config.raw_public_key)
        elif cert_type == CertificateType.X509 and config.certificates:
            own = own_x509(config.certificates[0])
        if own is not None:
            break
    if own is None:
        raise ProtocolError(
            "no server certificate type in common", AlertDescription.unsupported_certificate
        )
    verifier = _client_verifier(hello, config)
    x509_used = own.certificate_type == CertificateType.X509 or (
        verifier is not None and verifier.certificate_type == CertificateType.X509
    )
    return ServerChoice(suite, Mode.X509 if x509_used else Mode.RAW_PUBLIC_KEY, own, verifier)


def _client_verifier(hello: ClientHello, config: ServerConfig) -> PeerVerifier | None:
    """How we check the client, when our configuration requires client authentication."""
    if not config.client_authenticates_rpk and not config.client_trust_anchors:
        return None
    store = config.client_trust_store
    for cert_type in _offered_types(hello, ClientCertificateType):
        if cert_type == CertificateType.RawPublicKey and config.client_authenticates_rpk:
            return RawKeyVerifier(config.client_key_pins, config.client_key_lookup)
        if cert_type == CertificateType.X509 and store is not None:
            return X509ClientVerifier(store, config.max_chain_depth, config.wall_clock())
    raise ProtocolError(
        "the client offers no certificate type we can authenticate",
        AlertDescription.unsupported_certificate,
    )


def server_hello_extensions(
    hello: ClientHello, choice: ServerChoice, ems: bool
) -> tuple[Extension, ...]:
    """Our answers, only to extensions the client sent (RFC 5246 §7.4.1.4)."""
    reply: list[Extension] = []
    scsv = CipherSuite.TLS_EMPTY_RENEGOTIATION_INFO_SCSV in hello.cipher_suites
    if find_extension(hello.extensions, RenegotiationInfo) is not None or scsv:
        reply.append(RenegotiationInfo(b""))  # RFC 5746 §3.6
    if ems:
        reply.append(ExtendedMasterSecret())
    if choice.own is None:
        return tuple(reply)
    if find_extension(hello.extensions, EcPointFormats) is not None:
        reply.append(EcPointFormats((ECPointFormat.uncompressed,)))  # RFC 8422 §5.2
    if find_extension(hello.extensions, ServerCertificateType) is not None:
        reply.append(ServerCertificateType((choice.own.certificate_type,)))
    asked = find_extension(hello.extensions, ClientCertificateType) is not None
    if choice.client_verifier is not None and asked:
        reply.append(ClientCertificateType((choice.client_verifier.certificate_type,)))
    return tuple(reply)
