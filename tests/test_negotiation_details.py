"""Negotiation details that mutation testing found untested (docs/mutation.md): what a server
answers in its ServerHello for each thing a client offers, which suite it picks from a list,
when it refuses an ECDHE client for its curves, point formats or signature schemes, and what a
client answers a CertificateRequest with (RFC 5246 §7.4.1.4, §7.4.4; RFC 5746 §3.6; RFC 7250
§4; RFC 8422 §5.1)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from iotdtls.config import ServerConfig
from iotdtls.credentials import PrivateKey
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import AlertDescription, AlertReceived, AlertSent, ConfigError
from iotdtls.events import ConnectionClosed
from iotdtls.handshake.alerts import CERTIFICATE_TYPE_ALERTS
from iotdtls.handshake.negotiation import takes_uncompressed
from iotdtls.identity import PskIdentity
from iotdtls.messages import (
    CertificateRequest,
    CertificateType,
    CertificateVerify,
    ClientCertificateType,
    ClientHello,
    EcPointFormats,
    ExtendedMasterSecret,
    Extension,
    HandshakeType,
    RenegotiationInfo,
    ServerCertificateType,
    ServerHello,
    ServerKeyExchangeEcdhe,
    SignatureAlgorithms,
    SupportedGroups,
    find_extension,
)
from iotdtls.record import RecordLayer
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    MemoryLink,
    established,
    events_of,
    handshake_record,
    make_link,
    plain_handshake,
    wire_from,
)
from tests.pubkey_support import failure, rewrite, rpk_link, server_key
from tests.test_negotiation import answer, hello, server_hello_of

PSK = 0xC0A8
ECDHE = 0xC0AE
EC = (
    SupportedGroups((23,)),
    EcPointFormats((0,)),
    SignatureAlgorithms((0x0403,)),
)
RPK_TYPES = (ServerCertificateType((CertificateType.RawPublicKey,)),)


def server_answers(msg: ClientHello, **config: Any) -> tuple[list[bytes], ServerEndpoint]:
    settings: dict[str, Any] = {"psk_store": {IDENTITY: KEY}, "cookie_exchange": False}
    settings.update(config)
    endpoint = ServerEndpoint(ServerConfig(**settings))
    endpoint.receive_datagram(handshake_record(RecordLayer(), 1, 0, msg.encode()), CLIENT_ADDR, 0)
    return [d for d, _ in endpoint.datagrams_to_send(0.0)], endpoint


@pytest.mark.req("EXT-4")
def test_the_scsv_alone_gets_an_empty_renegotiation_info() -> None:
    """RFC 5746 §3.6: a ClientHello with TLS_EMPTY_RENEGOTIATION_INFO_SCSV and no
    renegotiation_info gets an empty renegotiation_info; one with neither gets none."""
    scsv = hello(suites=(PSK, 0x00FF), extensions=(ExtendedMasterSecret(),))
    out, _ = answer(scsv)
    sh = server_hello_of(out)
    assert find_extension(sh.extensions, RenegotiationInfo) == RenegotiationInfo(b"")
    plain = hello(extensions=(ExtendedMasterSecret(),))
    out, _ = answer(plain)
    assert find_extension(server_hello_of(out).extensions, RenegotiationInfo) is None


def test_the_first_suite_the_server_can_serve_is_chosen() -> None:
    """Unknown suites and suites without credentials are passed over, not a dead end."""
    msg = hello(suites=(0x1234, ECDHE, PSK), extensions=(RenegotiationInfo(b""),
                                                          ExtendedMasterSecret(), *EC))
    out, _ = answer(msg)
    assert server_hello_of(out).cipher_suite == PSK


GROUP_REASON = (
    "the client offers the ECDHE suite but not the P-256 group (supported_groups, "
    "RFC 8422 §5.1.1)"
)
FORMAT_REASON = (
    "the client offers the ECDHE suite but not uncompressed points (ec_point_formats, "
    "RFC 8422 §5.1.2)"
)
SCHEME_REASON = (
    "the client offers the ECDHE suite but not ecdsa_secp256r1_sha256 "
    "(signature_algorithms, RFC 5246 §7.4.1.4.1)"
)


@pytest.mark.parametrize(
    ("ec", "reason"),
    [
        ((SupportedGroups((24,)), EcPointFormats((0,)), SignatureAlgorithms((0x0403,))),
         GROUP_REASON),
        ((SupportedGroups((256,)), EcPointFormats((1,)), SignatureAlgorithms((0x0403,))),
         GROUP_REASON),
        ((SupportedGroups((23,)), EcPointFormats((0,)), SignatureAlgorithms((0x0503,))),
         SCHEME_REASON),
        ((SupportedGroups((23,)), EcPointFormats((0,))), SCHEME_REASON),
        ((EcPointFormats((1,)), SignatureAlgorithms((0x0403,))), FORMAT_REASON),
    ],
    ids=["p384-only", "ffdhe-compressed", "sha384-only", "no-signature-algorithms",
         "no-groups-compressed-only"],
)
@pytest.mark.req("RPK-2")
def test_an_ecdhe_client_without_p256_uncompressed_ecdsa_sha256_is_refused(
    ec: tuple[Extension, ...], reason: str
) -> None:
    """RPK-2: the ECDHE suite needs P-256, uncompressed points and ecdsa_secp256r1_sha256.
    A client without supported_groups leaves the curve to us (RFC 8422 §4) but one whose
    ec_point_formats lacks uncompressed cannot take our point (the illegal_parameter of RFC
    8422 §5.1.2 is for clients that name one of its curves). The suite is shared, so the
    handshake_failure names what the client lacks, not "no cipher suite in common" (probe BU
    F2: OpenSSL's -groups X25519:P-384 or -sigalgs ECDSA+SHA384 was told that)."""
    msg = hello(suites=(ECDHE,), extensions=(RenegotiationInfo(b""), ExtendedMasterSecret(),
                                              *ec, *RPK_TYPES))
    out, endpoint = server_answers(msg, psk_store=None, raw_public_key=server_key())
    assert [plain_handshake(d) for d in out] == [[]]  # only an alert, no ServerHello
    item = endpoint.next_event()
    assert item is not None and isinstance(item[1], ConnectionClosed)
    assert isinstance(item[1].error, AlertSent)
    assert item[1].error.alert is AlertDescription.handshake_failure
    assert item[1].error.reason == reason


def test_no_shared_suite_is_still_no_cipher_suite_in_common() -> None:
    """The named mismatch is for a client whose ECDHE suite we could serve: a client offering
    only suites we do not know, or the ECDHE suite to a server without a key to sign with,
    still hears "no cipher suite in common", whatever its groups and schemes."""
    lacking = (SupportedGroups((24,)), EcPointFormats((0,)), SignatureAlgorithms((0x0503,)))
    for suites, config in (
        ((0xC02B, 0x1234), {"psk_store": None, "raw_public_key": server_key()}),
        ((ECDHE,), {}),
    ):
        msg = hello(suites=suites, extensions=(RenegotiationInfo(b""), ExtendedMasterSecret(),
                                               *lacking, *RPK_TYPES))
        _, endpoint = server_answers(msg, **config)
        item = endpoint.next_event()
        assert item is not None and isinstance(item[1], ConnectionClosed)
        assert isinstance(item[1].error, AlertSent)
        assert item[1].error.alert is AlertDescription.handshake_failure
        assert item[1].error.reason == "no cipher suite in common"


@pytest.mark.parametrize(
    ("suites", "formats"),
    [((ECDHE,), (1,)), ((ECDHE,), (2, 1)), ((PSK, ECDHE), (1,))],
    ids=["ecdhe-compressed", "ecdhe-both-compressed", "psk-first-then-ecdhe"],
)
def test_an_ecc_client_without_uncompressed_points_gets_illegal_parameter(
    suites: tuple[int, ...], formats: tuple[int, ...]
) -> None:
    """RFC 8422 §5.1.2: an ECC suite, P-256 in supported_groups, ec_point_formats without
    uncompressed: the server MUST abort with illegal_parameter (not "no suite in common"),
    also when it could serve a PSK suite the client lists first."""
    ec = (SupportedGroups((23,)), EcPointFormats(formats), SignatureAlgorithms((0x0403,)))
    msg = hello(suites=suites, extensions=(RenegotiationInfo(b""), ExtendedMasterSecret(),
                                           *ec, *RPK_TYPES))
    out, endpoint = server_answers(msg, raw_public_key=server_key())
    assert [plain_handshake(d) for d in out] == [[]]  # only an alert, no ServerHello
    item = endpoint.next_event()
    assert item is not None and isinstance(item[1], ConnectionClosed)
    assert isinstance(item[1].error, AlertSent)
    assert item[1].error.alert is AlertDescription.illegal_parameter
    assert item[1].error.reason.endswith(
        "client's ec_point_formats lacks uncompressed (RFC 8422 §5.1.2)")


def test_a_psk_only_client_with_compressed_point_formats_is_served() -> None:
    """RFC 8422 §5.1.2 concerns clients of ECC suites (§5.1): a PSK-only hello goes on."""
    ec = (SupportedGroups((23,)), EcPointFormats((1,)))
    msg = hello(suites=(PSK,), extensions=(RenegotiationInfo(b""), ExtendedMasterSecret(), *ec))
    out, _ = server_answers(msg, raw_public_key=server_key())
    assert server_hello_of(out).cipher_suite == PSK


def test_the_server_answers_the_ec_and_certificate_type_extensions_it_was_sent() -> None:
    mutual = rpk_link()
    mutual.handshake()
    sh = server_hello_of(wire_from(mutual, "server"))
    assert find_extension(sh.extensions, EcPointFormats) == EcPointFormats((0,))
    assert find_extension(sh.extensions, ClientCertificateType) == ClientCertificateType(
        (CertificateType.RawPublicKey,)
    )
    assert find_extension(sh.extensions, ServerCertificateType) == ServerCertificateType(
        (CertificateType.RawPublicKey,)
    )
    one_way = rpk_link(client={"raw_public_key": None}, server={"client_public_keys": ()})
    one_way.handshake()
    sh = server_hello_of(wire_from(one_way, "server"))
    assert find_extension(sh.extensions, ClientCertificateType) is None


def test_a_request_for_another_scheme_gets_an_empty_certificate() -> None:
    """RFC 5246 §7.4.4: the client has no key for what the server asks (ECDSA but only with
    SHA-384), so it answers with an empty Certificate; the server, which requires a client key,
    ends with handshake_failure."""

    def other_scheme(body: bytes) -> bytes:
        request = CertificateRequest.decode(body)
        return replace(request, signature_schemes=(0x0503,)).encode()

    link = rpk_link(rewrite("server", HandshakeType.certificate_request, other_scheme, times=9))
    link.handshake()
    (certificate,) = [b for d in wire_from(link, "client") for h, b in plain_handshake(d)
                      if h.msg_type == HandshakeType.certificate][:1]
    assert certificate == b"\x00\x00\x00"
    (closed,) = events_of(link, "server", ConnectionClosed)
    assert closed.error.alert is AlertDescription.handshake_failure
    assert "no raw public key" in closed.error.reason


@pytest.mark.parametrize(
    ("signer", "message", "codec", "verifier", "reason"),
    [
        ("server", HandshakeType.server_key_exchange, ServerKeyExchangeEcdhe, "client", ""),
        ("client", HandshakeType.certificate_verify, CertificateVerify, "server",
         "CertificateVerify with a scheme we did not ask for"),
    ],
)
def test_a_signature_with_a_scheme_not_offered_is_refused(
    signer: str, message: HandshakeType, codec: Any, verifier: str, reason: str
) -> None:
    """ecdsa_secp384r1_sha384 where only ecdsa_secp256r1_sha256 was offered (RFC 5246
    §7.4.1.4.1)."""

    def sha384(body: bytes) -> bytes:
        return replace(codec.decode(body), signature_scheme=0x0503).encode()

    link = rpk_link(rewrite(signer, message, sha384, times=9))
    link.handshake()
    (closed,) = events_of(link, verifier, ConnectionClosed)
    assert closed.error.alert is AlertDescription.illegal_parameter
    assert reason in closed.error.reason


def test_a_raw_key_client_refuses_a_server_confirming_x509() -> None:
    def x509(body: bytes) -> bytes:
        sh = ServerHello.decode(body)
        exts = tuple(e for e in sh.extensions if not isinstance(e, ServerCertificateType))
        return replace(sh, extensions=exts).encode()

    link = rpk_link(rewrite("server", HandshakeType.server_hello, x509, times=9))
    link.allowed_alerts = CERTIFICATE_TYPE_ALERTS  # RFC 7250 §4.2: no mode agreed yet
    link.handshake()
    (closed,) = events_of(link, "client", ConnectionClosed)
    assert closed.error.alert is AlertDescription.unsupported_certificate
    assert closed.error.reason.endswith(
        "server certificate type X509 (RFC 7250 §3) is not what we are provisioned for")
    assert ("client", 2, AlertDescription.unsupported_certificate) in link.checked_alerts
    (received,) = events_of(link, "server", ConnectionClosed)  # the alert the wire carried
    assert isinstance(received.error, AlertReceived)
    assert received.error.alert is AlertDescription.unsupported_certificate


@pytest.mark.parametrize("formats", [(1,), (2, 1)], ids=["compressed", "compressed-both"])
def test_a_client_refuses_server_point_formats_without_uncompressed(
    formats: tuple[int, ...],
) -> None:
    """RFC 8422 §5.2: the server's ec_point_formats "MUST contain the value 0"."""

    def compressed(body: bytes) -> bytes:
        sh = ServerHello.decode(body)
        exts = tuple(
            EcPointFormats(formats) if isinstance(e, EcPointFormats) else e for e in sh.extensions
        )
        return replace(sh, extensions=exts).encode()

    link = rpk_link(rewrite("server", HandshakeType.server_hello, compressed, times=9))
    link.handshake()
    error = failure(link, "client")
    assert error.alert is AlertDescription.illegal_parameter
    assert error.reason.endswith("server's ec_point_formats lacks uncompressed (RFC 8422 §5.2)")


def test_a_malformed_psk_client_key_exchange_names_no_peer() -> None:
    """A ClientKeyExchange whose psk_identity does not decode names no one: the server's
    association ends with decode_error and no peer (only an identity that decoded is kept as
    the peer, even when its lookup then fails)."""
    link = make_link(
        rewrite("client", HandshakeType.client_key_exchange, lambda body: b"\x00\x05ab", times=9)
    )
    link.handshake()
    assert failure(link, "server").alert is AlertDescription.decode_error
    (closed,) = events_of(link, "server", ConnectionClosed)
    assert closed.peer is None


def test_psk_lookup_keys_of_every_legal_length(caplog: pytest.LogCaptureFixture) -> None:
    longest = bytes(range(256)) * 255 + bytes(255)
    for key in (longest, b"\x5a"):  # psk<1..2^16-1> (RFC 4279 §2): both ends taken
        link = make_link(
            client={"psk": key}, server={"psk_store": None, "psk_lookup": lambda identity, k=key: k}
        )
        link.handshake()
        assert established(link)
    caplog.set_level(logging.WARNING, logger="iotdtls")
    for bad, name, hint in ((longest + b"!", "a key of 65536 bytes", ""),
                            (b"", "an empty key", ""),
                            ("text", "str", "; a hex key? bytes.fromhex(...)")):
        broken = make_link(server={"psk_store": None, "psk_lookup": lambda i, b=bad: b})
        broken.handshake()
        assert (f"psk_lookup returned {name} for psk identity b'Client_identity' (a key is 1 "
                f"to 65535 bytes{hint})") in caplog.messages
    for bytes_like in (bytearray, memoryview):  # taken as bytes, as psk_store takes them
        link = make_link(server={"psk_store": None, "psk_lookup": lambda i, t=bytes_like: t(KEY)})
        link.handshake()
        assert established(link)

    def failing(identity: bytes) -> bytes:
        raise RuntimeError("database down")

    failed = make_link(server={"psk_store": None, "psk_lookup": failing})
    failed.handshake()
    assert "psk_lookup raised RuntimeError for psk identity b'Client_identity'" in caplog.messages
    (closed,) = events_of(failed, "server", ConnectionClosed)  # "handshake failed: peer ... psk
    assert closed.peer == PskIdentity(IDENTITY)  # identity b'Client_identity'", not "before any"
    assert closed.error.alert is AlertDescription.internal_error


def test_private_keys_in_pem_and_der_round_trip(tmp_path: Path) -> None:
    key = PrivateKey.generate()
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert PrivateKey.from_pem(b"\n  " + pem).spki == key.spki  # leading blanks are fine
    der = key._key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    assert PrivateKey.from_pem(der).spki == key.spki
    secret = key._key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"))
    path = tmp_path / "key.pem"
    path.write_bytes(secret)
    assert PrivateKey.load(path, b"pw").spki == key.spki
    with pytest.raises(ConfigError):
        PrivateKey.load(path)
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ConfigError, match="secp384r1"):
        PrivateKey(other)
    rsa_pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ConfigError, match="not an elliptic-curve key"):
        PrivateKey.from_pem(rsa_pem)


def test_suites_without_credentials_or_ec_support_are_passed_over() -> None:
    """A raw-key-only server skips the PSK suite a client lists first; a PSK and raw-key server
    skips the ECDHE suite of a client that cannot take P-256 ECDSA."""
    both = hello(suites=(PSK, ECDHE), extensions=(RenegotiationInfo(b""), ExtendedMasterSecret(),
                                                   *EC, *RPK_TYPES))
    out, _ = server_answers(both, psk_store=None, raw_public_key=server_key())
    assert server_hello_of(out).cipher_suite == ECDHE
    no_ec = hello(suites=(ECDHE, PSK), extensions=(RenegotiationInfo(b""), ExtendedMasterSecret(),
                                                    SupportedGroups((24,)), *RPK_TYPES))
    out, _ = server_answers(no_ec, raw_public_key=server_key())
    assert server_hello_of(out).cipher_suite == PSK


def test_a_password_protected_der_key_loads_with_its_password() -> None:
    key = PrivateKey.generate()
    der = key._key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"))
    assert PrivateKey.from_pem(der, b"pw").spki == key.spki




def test_a_client_digests_its_credential_once_per_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a session keeps of the client's own credential (the PSK, its raw key) is worked out
    once per (immutable) configuration, not again at every handshake. The server digests the
    key its store gives for the identity in each PSK handshake."""
    sha256 = hashlib.sha256
    digested: list[bytes] = []

    def counting(data: bytes = b"", **kwargs: Any) -> Any:
        if data.startswith(b"iotdtls session "):
            digested.append(data.split(b"\x00")[0])
        return sha256(data, **kwargs)

    monkeypatch.setattr(hashlib, "sha256", counting)
    first = make_link()
    first.handshake()
    second = MemoryLink(first.client_config, first.server_config)
    second.handshake()
    assert established(first) and established(second)
    assert digested.count(b"iotdtls session psk") == 1 + 2  # the client once, the server twice
    mutual = rpk_link()
    mutual.handshake()
    again = MemoryLink(mutual.client_config, mutual.server_config)
    again.handshake()
    assert established(mutual) and established(again)
    assert digested.count(b"iotdtls session own credential") == 1


def test_takes_uncompressed_unless_the_point_formats_leave_it_out() -> None:
    """RFC 8422 §5.1.2: a peer without ec_point_formats, or listing uncompressed (0) among
    them, takes uncompressed points; one listing only compressed formats does not."""
    assert takes_uncompressed(None)
    assert takes_uncompressed(EcPointFormats((1, 0)))
    assert not takes_uncompressed(EcPointFormats((1, 2)))
