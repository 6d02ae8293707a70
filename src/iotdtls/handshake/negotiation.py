"""Hello negotiation: what a client offers, what a server picks (RFC 5246 §7.4.1; RFC 8422 §5;
RFC 7250 §4; RFC 5746; RFC 7627), decided once per handshake.

A client is provisioned for one mode per server (CFG-1) and offers exactly that: the PSK suite,
or the ECDHE_ECDSA suite with P-256, uncompressed points and ecdsa_secp256r1_sha256 (RPK-2),
plus the RFC 7250 certificate types in raw-key mode; in certificate mode its
signature_algorithms lists, after ecdsa_secp256r1_sha256, every other pair its chain verifier
accepts (`listed_signature_schemes`, RFC 5246 §7.4.1.4.1, §7.4.2). A server may hold every
kind of credential and takes the first suite of the client's list it can serve, with the first
certificate type of the client's list it has a credential for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from iotdtls.config import ClientConfig, Mode, ServerConfig
from iotdtls.credentials import CertifiedKey, psk_digest
from iotdtls.crypto import constant_time_equal
from iotdtls.crypto.signature import ECDSA_SCHEME_HASHES
from iotdtls.crypto.suites import KeyExchangeKind, SuiteInfo, suite_info
from iotdtls.crypto.x509 import (
    CHAIN_SIGNATURE_SCHEMES,
    authority_identifiers,
    chain_hash,
    select_chain_index,
)
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.peerauth import (
    OwnCertificate,
    PeerVerifier,
    RawKeyVerifier,
    X509ClientVerifier,
    X509ServerVerifier,
    handshake_clock,
    own_raw_key,
    own_x509,
)
from iotdtls.identity import CertificateIdentity, PskIdentity, RawPublicKeyIdentity
from iotdtls.messages import (
    CachedInfo,
    CachedInformationType,
    CachedObject,
    Certificate,
    CertificateType,
    CipherSuite,
    ClientCertificateType,
    ClientCertificateUrl,
    ClientHello,
    ECPointFormat,
    EcPointFormats,
    ExtendedMasterSecret,
    Extension,
    Heartbeat,
    HeartbeatMode,
    MaxFragmentLength,
    NamedGroup,
    RawPublicKeyCertificate,
    RenegotiationInfo,
    ServerCertificateType,
    ServerName,
    SignatureAlgorithms,
    SignatureScheme,
    SupportedGroups,
    TrustedCaKeys,
    find_extension,
)
from iotdtls.messages.extensions import encode_vector
from iotdtls.sessions import SessionState

__all__ = [
    "NoCertificateType",
    "ServerChoice",
    "cached_chain_fingerprint",
    "check_renegotiation_info",
    "choose_server_parameters",
    "client_offer",
    "fragment_length_code",
    "listed_signature_schemes",
    "offerable_session",
    "own_heartbeat_mode",
    "resumption_refusal",
    "server_hello_extensions",
    "server_signs_with",
    "session_answers",
    "signed_with",
    "takes_uncompressed",
]

_EC_EXTENSIONS: tuple[Extension, ...] = (
    SupportedGroups((NamedGroup.secp256r1,)),
    EcPointFormats((ECPointFormat.uncompressed,)),
)


def listed_signature_schemes(certificate_type: int) -> tuple[int, ...]:
    """The hash/signature pairs we list for a peer whose credential is of `certificate_type`:
    in our signature_algorithms (RFC 5246 §7.4.1.4.1, the server's) and our CertificateRequest's
    supported_signature_algorithms (§7.4.4, the client's). They are the pairs that "may be used
    in digital signatures", the peer's certificates included: "all certificates provided by the
    server MUST be signed by a hash/signature algorithm pair that appears in that extension"
    (§7.4.2), the same for the client's against the CertificateRequest (§7.4.6). So an X.509
    peer is offered every pair our chain verifier accepts (`CHAIN_SIGNATURE_SCHEMES`), and no
    more; a raw public key has no chain and is offered the profile's ecdsa_secp256r1_sha256
    alone (RFC 7250, RPK-2)."""
    if certificate_type == CertificateType.X509:
        return CHAIN_SIGNATURE_SCHEMES
    return _RPK_SIGNATURE_SCHEMES


_RPK_SIGNATURE_SCHEMES = (SignatureScheme.ecdsa_secp256r1_sha256,)
_SIGNATURE_ALGORITHMS = {
    Mode.RAW_PUBLIC_KEY: SignatureAlgorithms(_RPK_SIGNATURE_SCHEMES),
    Mode.X509: SignatureAlgorithms(listed_signature_schemes(CertificateType.X509)),
}


def signed_with(listed: Sequence[int]) -> frozenset[int]:
    """The pairs of `listed` a peer's ECDSA P-256 key may sign its ServerKeyExchange (RFC 8422
    §5.4) or CertificateVerify (RFC 5246 §7.4.8) with: the ECDSA ones (`ECDSA_SCHEME_HASHES`);
    any other is refused with illegal_parameter."""
    return frozenset(scheme for scheme in listed if scheme in ECDSA_SCHEME_HASHES)


def server_signs_with(mode: Mode) -> frozenset[int]:
    """What a server may sign its ServerKeyExchange with, for a client in `mode` (X.509 or raw
    public key): `signed_with` our signature_algorithms."""
    return _SERVER_SIGNS_WITH[mode]


_SERVER_SIGNS_WITH = {mode: signed_with(ext.schemes) for mode, ext in _SIGNATURE_ALGORITHMS.items()}


#: The curves RFC 8422 defines (§5.1.1), whose clients must take uncompressed points (§5.1.2).
_RFC8422_CURVES = frozenset(
    {
        NamedGroup.secp256r1,
        NamedGroup.secp384r1,
        NamedGroup.secp521r1,
        NamedGroup.x25519,
        NamedGroup.x448,
    }
)

#: Enum members of the hot paths by module-level name (why: docs/internals.md, layers 5-7).
_PSK = Mode.PSK
_PSK_EXCHANGE = KeyExchangeKind.PSK
_PSK_SUITES = (CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,)
_SCSV = CipherSuite.TLS_EMPTY_RENEGOTIATION_INFO_SCSV
#: The two extensions every hello of ours carries, the same each time (immutable values).
_EMPTY_RENEGOTIATION_INFO = RenegotiationInfo(b"")
_EXTENDED_MASTER_SECRET = ExtendedMasterSecret()


def client_offer(config: ClientConfig) -> tuple[tuple[int, ...], tuple[Extension, ...]]:
    """The suites and extensions of our ClientHello for the configured mode.

    Always an empty renegotiation_info (RFC 5746 §3.4, EXT-4) and extended_master_secret
    (RFC 7627 §5.1, RES-3), also when a server without it would be accepted
    (`require_extended_master_secret=False` only stops the refusal, RFC 7627 §5.3); never
    truncated_hmac (EXT-3). server_name for a DNS name (RFC 6066 §3, EXT-2),
    max_fragment_length (RFC 6066 §4, EXT-1) and heartbeat (RFC 6520 §2, EXT-5) when
    configured."""
    exts: list[Extension] = []
    if config.sni_name is not None:
        exts.append(ServerName(config.sni_name))
    if config.max_fragment_length is not None:
        exts.append(MaxFragmentLength(fragment_length_code(config.max_fragment_length)))
    exts += [_EMPTY_RENEGOTIATION_INFO, _EXTENDED_MASTER_SECRET]
    if config.heartbeat:
        exts.append(own_heartbeat_mode(config))
    if config.mode is _PSK:
        return _PSK_SUITES, tuple(exts)
    exts.extend(_EC_EXTENSIONS)
    exts.append(_SIGNATURE_ALGORITHMS[config.mode])
    if config.mode is Mode.RAW_PUBLIC_KEY:
        exts.append(ServerCertificateType((CertificateType.RawPublicKey,)))
        if config.raw_public_key is not None:
            exts.append(ClientCertificateType((CertificateType.RawPublicKey,)))
    else:
        exts.extend(_x509_client_extensions(config))
    return (CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,), tuple(exts)


def fragment_length_code(length: int) -> int:
    """The MaxFragmentLength code of 512, 1024, 2048 or 4096 bytes (RFC 6066 §4: 2^(8+n))."""
    return length.bit_length() - 1 - 8


def own_heartbeat_mode(config: ClientConfig | ServerConfig) -> Heartbeat:
    """Our heartbeat extension (RFC 6520 §2): whether the peer may send us requests."""
    mode = (
        HeartbeatMode.peer_allowed_to_send
        if config.answer_heartbeats
        else HeartbeatMode.peer_not_allowed_to_send
    )
    return Heartbeat(mode)


def offerable_session(session: SessionState, config: ClientConfig) -> str | None:
    """Why a client must not offer `session` to its server under `config` (None: it may).

    RFC 5246 §7.4.1.2: the ClientHello carries the session's suite (the extended master secret
    it always carries, `client_offer`, as RFC 7627 §5.3 requires; a client keeps only sessions
    made with it); RFC 6066 §3, §4: and the session's server_name and fragment length.
    The session must also be one with the server this configuration is provisioned for (the
    same PSK identity, a pinned raw key, a chain the full handshake would accept today: valid
    under the current trust anchors at the configured clock and for the name checked now,
    CRT-1, CRT-3), so a resumption never outlives the trust a full handshake needs. And it
    must have been made with today's own credential (`ClientConfig.credential_digest`: the
    PSK, or the raw key or certificate we authenticated with, if any), so that a new key ends
    it."""
    offered_suites, _ = client_offer(config)
    peer = session.peer
    wanted_mfl = 0 if config.max_fragment_length is None else config.max_fragment_length
    if session.cipher_suite not in offered_suites or session.mode is not config.mode:
        return "the session's suite or mode is not the configured one"
    if session.max_fragment_length != (wanted_mfl and fragment_length_code(wanted_mfl)):
        return "the session's max_fragment_length is not the configured one"
    if session.server_name != (config.sni_name or ""):
        return "the session's server_name is not the configured one"
    if config.mode is _PSK:
        same = isinstance(peer, PskIdentity) and peer.identity == config.identity
    elif config.mode is Mode.RAW_PUBLIC_KEY:
        same = isinstance(peer, RawPublicKeyIdentity) and peer.sha256 in config.server_key_pins
    elif not isinstance(peer, CertificateIdentity):
        same = False
    elif (refusal := _server_chain_refusal(peer, config)) is not None:
        return refusal
    else:
        same = True
    if not same:
        return "the session is with another server identity"
    made_with = session.credential_digest
    if (made_with or config.mode is _PSK) and not constant_time_equal(
        made_with, config.credential_digest
    ):
        return "the session was made with another credential of ours"
    return None


def _server_chain_refusal(peer: CertificateIdentity, config: ClientConfig) -> str | None:
    """The saved server chain checked as the full handshake checks it (`X509ServerVerifier`):
    the trust anchors, clock and server_name of `config`. The name it matches must be the one
    the session was made for: an IP address sends no server_name (RFC 6066 §3), so the
    session's empty server_name alone does not tell two addresses apart."""
    try:
        now = handshake_clock(config.wall_clock)
        verifier = X509ServerVerifier(
            config.trust_store, config.server_name, config.max_chain_depth, now
        )
        identity, _ = verifier.verify_chain(peer.chain)
    except ProtocolError as exc:
        return f"the server's chain is no longer accepted ({exc})"
    if identity.name != peer.name:
        return "the session was made for another server name"
    return None


def cached_chain_fingerprint(config: ClientConfig) -> bytes:
    """The RFC 7924 fingerprint of the server chain we hold (empty when we hold none)."""
    if not config.cached_server_chain:
        return b""
    return chain_hash(Certificate(tuple(config.cached_server_chain)).encode())


def _x509_client_extensions(config: ClientConfig) -> list[Extension]:
    """cached_info (RFC 7924, CRT-2), trusted_ca_keys (RFC 6066 §6, CRT-8) and
    client_certificate_url (RFC 6066 §5, CRT-7), each only when configured."""
    exts: list[Extension] = []
    fingerprint = cached_chain_fingerprint(config)
    if fingerprint:
        exts.append(CachedInfo((CachedObject(CachedInformationType.cert, fingerprint),)))
    if config.indicate_trusted_cas:
        exts.append(TrustedCaKeys(config.trust_store.trusted_authorities()))
    if config.certificate_urls:
        exts.append(ClientCertificateUrl())
    return exts


def check_renegotiation_info(extensions: tuple[Extension, ...]) -> RenegotiationInfo | None:
    """An initial handshake carries an empty renegotiation_info, if any (RFC 5746 §3.4, §3.6)."""
    reneg = find_extension(extensions, RenegotiationInfo)
    if reneg is not None and reneg.renegotiated_connection:
        raise ProtocolError(
            "non-empty renegotiation_info in an initial handshake",
            AlertDescription.handshake_failure,
        )
    return reneg


class NoCertificateType(ProtocolError):
    """No certificate type in common: RFC 7250 §4.2 ends the handshake with
    unsupported_certificate, before any mode is agreed (`CERTIFICATE_TYPE_ALERTS`)."""

    alert = AlertDescription.unsupported_certificate


@dataclass(slots=True)
class ServerChoice:
    """What the server decided from a ClientHello (a value like `OutgoingMessage`)."""

    suite: SuiteInfo
    mode: Mode
    #: Our Certificate (ECDHE suites) and the type to confirm in ServerHello, if asked.
    own: OwnCertificate | None = None
    #: How to check the client's Certificate when we request one.
    client_verifier: PeerVerifier | None = None
    #: The body of our Certificate message: the chain, or its fingerprint when the client
    #: holds it already (RFC 7924 §4.1, CRT-2).
    certificate_body: bytes = b""
    #: ServerHello answers that follow from the choice (cached_info, trusted_ca_keys,
    #: client_certificate_url).
    answers: tuple[Extension, ...] = ()
    #: The client may send CertificateURL instead of Certificate (RFC 6066 §5, CRT-7).
    certificate_urls: bool = False


def choose_server_parameters(hello: ClientHello, config: ServerConfig) -> ServerChoice:
    """The first suite of the client's list we can serve (RFC 5246 §7.4.1.3).

    handshake_failure when no suite fits, naming the group, point format or signature scheme
    the client lacks when it offers the ECDHE suite we could serve (`_p256_ecdsa_mismatch`);
    unsupported_certificate when the ECDHE suite fails only on certificate types (RFC 7250
    §4.2), not when we hold no key to sign with at all; illegal_parameter for point formats
    without uncompressed (`_check_point_formats`)."""
    extensions = hello.extensions
    groups = find_extension(extensions, SupportedGroups)
    formats = find_extension(extensions, EcPointFormats)
    _check_point_formats(hello, groups, formats)
    signs = config.raw_public_key is not None or bool(config.certificates)
    mismatch = (
        _p256_ecdsa_mismatch(groups, formats, find_extension(extensions, SignatureAlgorithms))
        if signs
        else None
    )
    failure: ProtocolError | None = None
    for code in hello.cipher_suites:
        suite = suite_info(code)
        if suite is None:
            continue
        if suite.key_exchange is _PSK_EXCHANGE:
            if config.has_psk:
                return ServerChoice(suite, _PSK)
            continue
        if not signs:
            continue
        if mismatch is not None:
            failure = ProtocolError(mismatch, AlertDescription.handshake_failure)
            continue
        try:
            return _choose_ecdhe(suite, hello, config)
        except ProtocolError as exc:
            failure = exc
    raise failure or ProtocolError("no cipher suite in common", AlertDescription.handshake_failure)


def takes_uncompressed(formats: EcPointFormats | None) -> bool:
    """Whether a peer that sent `formats` (its ec_point_formats, None for none) takes
    uncompressed points: it lists them, or it sent no list, which leaves uncompressed, the
    format every implementation supports (RFC 8422 §5.1.2)."""
    return formats is None or ECPointFormat.uncompressed in formats.formats


def _check_point_formats(
    hello: ClientHello, groups: SupportedGroups | None, formats: EcPointFormats | None
) -> None:
    """RFC 8422 §5.1.2: a client that offers an ECC suite and names one of the RFC's curves in
    supported_groups must list uncompressed among its ec_point_formats, or the server aborts
    with illegal_parameter. A hello offering no ECC suite is not concerned (the extensions are
    those of ECC suites, §5.1): a PSK-only client goes on."""
    if takes_uncompressed(formats) or groups is None or _RFC8422_CURVES.isdisjoint(groups.groups):
        return
    for code in hello.cipher_suites:
        suite = suite_info(code)
        if suite is not None and suite.key_exchange is not _PSK_EXCHANGE:
            raise ProtocolError(
                "client's ec_point_formats lacks uncompressed (RFC 8422 §5.1.2)",
                AlertDescription.illegal_parameter,
            )


_LACKS = "the client offers the ECDHE suite but not "


def _p256_ecdsa_mismatch(
    groups: SupportedGroups | None,
    formats: EcPointFormats | None,
    schemes: SignatureAlgorithms | None,
) -> str | None:
    """None when the client takes P-256, uncompressed points and ECDSA-SHA256 (RFC 8422 §5.1;
    RFC 5246 §7.4.1.4.1: without signature_algorithms the client only takes SHA-1, which the
    profile does not use); else the first of them it lacks, the reason of our alert."""
    if groups is not None and NamedGroup.secp256r1 not in groups.groups:
        return _LACKS + "the P-256 group (supported_groups, RFC 8422 §5.1.1)"
    if not takes_uncompressed(formats):
        return _LACKS + "uncompressed points (ec_point_formats, RFC 8422 §5.1.2)"
    if schemes is None or SignatureScheme.ecdsa_secp256r1_sha256 not in schemes.schemes:
        return _LACKS + "ecdsa_secp256r1_sha256 (signature_algorithms, RFC 5246 §7.4.1.4.1)"
    return None


def _offered_types(
    hello: ClientHello, cls: type[ClientCertificateType | ServerCertificateType]
) -> tuple[int, ...]:
    """The certificate types a client lists; X.509 alone without the extension (RFC 7250 §4.1)."""
    ext = find_extension(hello.extensions, cls)
    return (CertificateType.X509,) if ext is None else ext.types


def _choose_ecdhe(suite: SuiteInfo, hello: ClientHello, config: ServerConfig) -> ServerChoice:
    own: OwnCertificate | None = None
    answers: list[Extension] = []
    for cert_type in _offered_types(hello, ServerCertificateType):
        if cert_type == CertificateType.RawPublicKey and config.raw_public_key is not None:
            own = own_raw_key(config.raw_public_key)
        elif cert_type == CertificateType.X509 and config.certificates:
            own = own_x509(_indicated_chain(hello, config.certificates, answers))
        if own is not None:
            break
    if own is None:
        raise NoCertificateType("no server certificate type in common")
    body = own.body
    if own.certificate_type == CertificateType.X509:
        body = _cached_certificate_body(hello, own.body, answers)
    verifier = _client_verifier(hello, config)
    x509_client = verifier is not None and verifier.certificate_type == CertificateType.X509
    urls = (
        x509_client
        and config.certificate_fetcher is not None
        and find_extension(hello.extensions, ClientCertificateUrl) is not None
    )
    if urls:
        answers.append(ClientCertificateUrl())  # RFC 6066 §5: we take CertificateURL
    x509_used = own.certificate_type == CertificateType.X509 or x509_client
    mode = Mode.X509 if x509_used else Mode.RAW_PUBLIC_KEY
    return ServerChoice(suite, mode, own, verifier, body, tuple(answers), urls)


def _indicated_chain(
    hello: ClientHello, certificates: Sequence[CertifiedKey], answers: list[Extension]
) -> CertifiedKey:
    """Our chain under a CA the client indicated in trusted_ca_keys (RFC 6066 §6, CRT-8), or
    the first (the default) when it indicated none of ours; the empty answer says we used it."""
    indication = find_extension(hello.extensions, TrustedCaKeys)
    if indication is None or len(certificates) == 1:
        return certificates[0]
    candidates = [_authorities(c.chain, c.withheld_root) for c in certificates]
    index = select_chain_index(candidates, indication.authorities)
    if index is None:
        return certificates[0]
    answers.append(TrustedCaKeys())
    return certificates[index]


@functools.lru_cache(maxsize=64)
def _authorities(
    chain: tuple[bytes, ...], withheld_root: bytes | None
) -> frozenset[tuple[int, bytes]]:
    """The TrustedAuthority identifiers of one of our chains and of the root it does not send
    (computed once per chain)."""
    return authority_identifiers(chain, issuers=() if withheld_root is None else (withheld_root,))


def _cached_certificate_body(
    hello: ClientHello, full_body: bytes, answers: list[Extension]
) -> bytes:
    """RFC 7924 §4.1 (CRT-2): when the client holds our Certificate message (its fingerprint is
    among its cached_info `cert` objects), we send the fingerprint instead and confirm the type
    in ServerHello; otherwise the full chain."""
    cached = find_extension(hello.extensions, CachedInfo)
    if cached is None:
        return full_body
    fingerprint = chain_hash(full_body)
    for obj in cached.objects:
        if obj.type == CachedInformationType.cert and constant_time_equal(
            obj.hash_value, fingerprint
        ):
            answers.append(CachedInfo((CachedObject(CachedInformationType.cert),)))
            return encode_vector(1, fingerprint)
    return full_body


def _client_verifier(hello: ClientHello, config: ServerConfig) -> PeerVerifier | None:
    """How we check the client, when our configuration requires client authentication."""
    if not config.client_authenticates_rpk and not config.client_trust_anchors:
        return None
    store = config.client_trust_store
    for cert_type in _offered_types(hello, ClientCertificateType):
        if cert_type == CertificateType.RawPublicKey and config.client_authenticates_rpk:
            return RawKeyVerifier(config.client_key_pins, config.client_key_lookup)
        if cert_type == CertificateType.X509 and store is not None:
            return X509ClientVerifier(
                store, config.max_chain_depth, handshake_clock(config.wall_clock)
            )
    raise NoCertificateType("the client offers no certificate type we can authenticate")


def session_answers(
    hello: ClientHello, ems: bool, extras: tuple[Extension, ...]
) -> tuple[Extension, ...]:
    """The ServerHello answers every handshake has, resumed or full: renegotiation_info (RFC
    5746 §3.6), extended_master_secret (RFC 7627 §5.2, §5.3), then `extras` (the
    max_fragment_length and heartbeat answers, and server_name in a full handshake)."""
    reply: list[Extension] = []
    scsv = _SCSV in hello.cipher_suites
    if find_extension(hello.extensions, RenegotiationInfo) is not None or scsv:
        reply.append(_EMPTY_RENEGOTIATION_INFO)
    if ems:
        reply.append(_EXTENDED_MASTER_SECRET)
    return (*reply, *extras)


def server_hello_extensions(
    hello: ClientHello, choice: ServerChoice, ems: bool, extras: tuple[Extension, ...] = ()
) -> tuple[Extension, ...]:
    """Our answers in a full handshake, only to extensions the client sent (RFC 5246
    §7.4.1.4)."""
    reply = list(session_answers(hello, ems, extras))
    if choice.own is None:
        return tuple(reply)
    if find_extension(hello.extensions, EcPointFormats) is not None:
        reply.append(EcPointFormats((ECPointFormat.uncompressed,)))  # RFC 8422 §5.2
    if find_extension(hello.extensions, ServerCertificateType) is not None:
        reply.append(ServerCertificateType((choice.own.certificate_type,)))
    asked = find_extension(hello.extensions, ClientCertificateType) is not None
    if choice.client_verifier is not None and asked:
        reply.append(ClientCertificateType((choice.client_verifier.certificate_type,)))
    reply.extend(choice.answers)
    return tuple(reply)


def resumption_refusal(
    state: SessionState, hello: ClientHello, config: ServerConfig, server_name: str, mfl: int
) -> str | None:
    """Why the server will not resume `state` for `hello` (None: it will; RES-1).

    The ClientHello must still offer the session's suite (RFC 5246 §7.4.1.2), name the same
    server (RFC 6066 §3) and ask for the same fragment length (RFC 6066 §4: it binds the whole
    session); and the server's configuration of today must still pick the session's suite and
    mode for this client and still accept the peer the full handshake authenticated: its PSK
    identity is still known with the key the session was made with (a rotated PSK ends its
    sessions), its raw key still provisioned, its chain still valid under the trust anchors,
    or client authentication still not required. A refusal means a full handshake, never an
    error."""
    if state.cipher_suite not in hello.cipher_suites:
        return "the client does not offer the session's cipher suite"
    if state.server_name != server_name:
        return "the client names another server"
    if state.max_fragment_length != mfl:
        return "the client asks for another max_fragment_length"
    try:
        choice = choose_server_parameters(hello, config)
    except ProtocolError as exc:
        return f"the configuration no longer serves this client ({exc})"
    if choice.suite.code != state.cipher_suite or choice.mode is not state.mode:
        return "the configuration now picks another suite or mode"
    return _peer_refusal(state, choice, config)


def _peer_refusal(state: SessionState, choice: ServerChoice, config: ServerConfig) -> str | None:
    peer = state.peer
    if isinstance(peer, PskIdentity):
        try:
            key = config.lookup_psk(peer.identity)
            today = None if key is None else psk_digest(key)
        except Exception:  # the application's lookup: a failure refuses, the full one reports
            today = None
        if today is None:
            return "the PSK identity is no longer known"
        if not constant_time_equal(today, state.credential_digest):
            return "the PSK of this identity has changed"
        return None
    verifier = choice.client_verifier
    if verifier is None:
        return None  # no client authentication required (any more)
    if isinstance(peer, RawPublicKeyIdentity):
        body = RawPublicKeyCertificate(peer.spki).encode()
    elif isinstance(peer, CertificateIdentity):
        body = Certificate(peer.chain).encode()
    else:
        return "the configuration now requires client authentication"
    try:
        verifier.verify(body)
    except ProtocolError as exc:
        return f"the client's credential is no longer accepted ({exc})"
    return None
