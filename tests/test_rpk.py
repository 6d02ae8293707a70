"""Raw public keys (RFC 7250) with TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (RFC 7251), in memory:
negotiation, mutual and server-only authentication, key pinning, and every check of keys,
points and signatures ending with the right alert (ERR-1: no certificate alerts in this mode)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

import iotdtls.crypto.ecdhe
import iotdtls.crypto.signature
import iotdtls.handshake.keyexchange
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.crypto.ecdhe import EphemeralKey
from iotdtls.crypto.signature import PrivateKey
from iotdtls.errors import AlertDescription, AlertReceived, ConfigError, ProtocolError
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.handshake.alerts import CERTIFICATE_TYPE_ALERTS
from iotdtls.identity import PskIdentity, RawPublicKeyIdentity, UnauthenticatedPeer
from iotdtls.messages import (
    CertificateType,
    CipherSuite,
    ClientCertificateType,
    ClientHello,
    ClientKeyExchangeEcdhe,
    HandshakeType,
    RawPublicKeyCertificate,
    ServerCertificateType,
    ServerHello,
    ServerKeyExchangeEcdhe,
    find_extension,
)
from tests.memory_link import (
    CLIENT_ADDR,
    IDENTITY,
    KEY,
    Direction,
    MemoryLink,
    established,
    events_of,
    message_types,
    plain_handshake,
    wire_from,
)
from tests.pubkey_support import (
    client_key,
    compressed_spki,
    der_to_pem,
    failure,
    point_spki,
    received_alert,
    rewrite,
    rpk_link,
    server_key,
    stranger_key,
    x509_configs,
    x509_link,
    x509_pki,
)

ECDHE = CipherSuite.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8


def hello_bodies(link: MemoryLink, sender: Direction, msg_type: int) -> list[bytes]:
    return [
        b for d in wire_from(link, sender) for h, b in plain_handshake(d) if h.msg_type == msg_type
    ]


@pytest.mark.req("RPK-1", "RPK-2", "RPK-3", "CFG-1")
def test_mutual_raw_public_keys() -> None:
    link = rpk_link()
    link.handshake()
    assert established(link)
    (client_done,) = events_of(link, "client", HandshakeComplete)
    (server_done,) = events_of(link, "server", HandshakeComplete)
    assert client_done == HandshakeComplete(ECDHE, RawPublicKeyIdentity(server_key().spki), True)
    assert server_done == HandshakeComplete(ECDHE, RawPublicKeyIdentity(client_key().spki), True)
    assert isinstance(server_done.peer, RawPublicKeyIdentity)
    assert server_done.peer.sha256 == client_key().spki_sha256
    # RFC 7250 §3: both hellos carry the certificate types; Certificates carry only an SPKI.
    hello = ClientHello.decode(hello_bodies(link, "client", HandshakeType.client_hello)[-1])
    ext = find_extension(hello.extensions, ServerCertificateType)
    assert ext is not None and ext.types == (CertificateType.RawPublicKey,)
    ext2 = find_extension(hello.extensions, ClientCertificateType)
    assert ext2 is not None and ext2.types == (CertificateType.RawPublicKey,)
    (sh_body,) = hello_bodies(link, "server", HandshakeType.server_hello)
    sh = ServerHello.decode(sh_body)
    assert sh.cipher_suite == ECDHE
    sct = find_extension(sh.extensions, ServerCertificateType)
    assert sct is not None and sct.types == (CertificateType.RawPublicKey,)
    (server_cert,) = hello_bodies(link, "server", HandshakeType.certificate)
    assert RawPublicKeyCertificate.decode(server_cert).spki == server_key().spki
    (client_cert,) = hello_bodies(link, "client", HandshakeType.certificate)
    assert RawPublicKeyCertificate.decode(client_cert).spki == client_key().spki
    assert message_types(wire_from(link, "client"))[-3:] == [  # the Finished is encrypted
        HandshakeType.certificate,
        HandshakeType.client_key_exchange,
        HandshakeType.certificate_verify,
    ]
    link.client.send(b"temperature=21.5")
    link.step()
    link.server.send(CLIENT_ADDR, b"ack")
    link.step()
    assert events_of(link, "server", DataReceived) == [DataReceived(b"temperature=21.5")]
    assert events_of(link, "client", DataReceived) == [DataReceived(b"ack")]


@pytest.mark.req("RPK-1", "RPK-2")
def test_server_only_raw_public_key() -> None:
    link = rpk_link(client={"raw_public_key": None}, server={"client_public_keys": ()})
    link.handshake()
    assert established(link)
    (server_done,) = events_of(link, "server", HandshakeComplete)
    assert server_done.peer == UnauthenticatedPeer()
    server_types = message_types(wire_from(link, "server"))
    assert HandshakeType.certificate_request not in server_types
    hello = ClientHello.decode(hello_bodies(link, "client", HandshakeType.client_hello)[-1])
    assert find_extension(hello.extensions, ClientCertificateType) is None


@pytest.mark.req("RPK-3", "CFG-1")
@pytest.mark.parametrize(
    "pin",
    [
        lambda k: k.spki,
        lambda k: k.spki_sha256,
        lambda k: k.spki_sha256.hex(),
        lambda k: iotdtls.crypto.signature.serialization.load_der_public_key(k.spki).public_bytes(
            iotdtls.crypto.signature.serialization.Encoding.PEM,
            iotdtls.crypto.signature.serialization.PublicFormat.SubjectPublicKeyInfo,
        ),
        lambda k: compressed_spki(iotdtls.crypto.signature.load_public_key(k.spki)),
        lambda k: der_to_pem(compressed_spki(iotdtls.crypto.signature.load_public_key(k.spki))),
    ],
    ids=["spki-der", "sha256", "sha256-hex", "spki-pem", "compressed-der", "compressed-pem"],
)
def test_a_provisioned_key_may_be_given_in_every_form(pin: Any) -> None:
    """Each pins the key as peers send it, its point uncompressed (RFC 8422 §5.1.2, RPK-2):
    one provisioned compressed (openssl ec -pubout -conv_form compressed) is the same key."""
    link = rpk_link(client={"server_public_keys": [pin(server_key())]},
                    server={"client_public_keys": [pin(client_key())]})
    link.handshake()
    assert established(link)


@pytest.mark.req("RPK-3", "ERR-1")
def test_client_refuses_a_server_key_it_was_not_given() -> None:
    link = rpk_link(client={"server_public_keys": [stranger_key().spki]})
    link.handshake()
    error = failure(link, "client")
    # bad_certificate is a certificate alert: the profile excludes it in raw key mode.
    assert error.alert is AlertDescription.handshake_failure
    assert "not provisioned" in error.reason


@pytest.mark.req("RPK-3", "ERR-1")
def test_server_refuses_a_client_key_it_was_not_given() -> None:
    link = rpk_link(client={"raw_public_key": stranger_key()})
    link.handshake()
    error = failure(link, "server")
    assert error.alert is AlertDescription.handshake_failure
    assert "not provisioned" in error.reason


@pytest.mark.req("RPK-3")
def test_server_lookup_decides_on_unlisted_client_keys() -> None:
    seen: list[RawPublicKeyIdentity] = []

    def lookup(identity: RawPublicKeyIdentity) -> bool:
        seen.append(identity)
        return identity.sha256 == stranger_key().spki_sha256

    link = rpk_link(client={"raw_public_key": stranger_key()},
                    server={"client_public_keys": (), "client_key_lookup": lookup})
    link.handshake()
    assert established(link)
    assert seen == [RawPublicKeyIdentity(stranger_key().spki)]
    refused = rpk_link(server={"client_public_keys": (), "client_key_lookup": lookup})
    refused.handshake()
    assert failure(refused, "server").alert is AlertDescription.handshake_failure
    # The README says which alert a false answer sends (it said bad_certificate: probe CA).
    readme_file = Path(__file__).resolve().parent.parent / "README.md"
    readme = " ".join(readme_file.read_text(encoding="utf-8").split())
    assert "a false answer with handshake_failure, as a key not in the list" in readme


@pytest.mark.req("RPK-3", "ERR-1")
def test_a_client_whose_key_is_refused_is_told_so() -> None:
    """The server's handshake_failure after our Certificate carried our raw key (RFC 7250 §3):
    the client's error says the key was not accepted, with its SHA-256 (public, what the
    server's pin is written as); the alert and the error type stay as they were."""
    link = rpk_link(client={"raw_public_key": stranger_key()})
    link.handshake()
    error = received_alert(link, "client")
    assert error.alert is AlertDescription.handshake_failure
    assert str(error) == (
        "received fatal alert handshake_failure (the server did not accept our raw public "
        f"key, SHA-256 {stranger_key().spki_sha256.hex()}: is it provisioned there?)"
    )


def raw_key_client_without_a_key() -> tuple[ClientConfig, ServerConfig]:
    """No client_certificate_type: X.509 alone (RFC 7250 §4.1), which the server does not take."""
    return ClientConfig(server_public_keys=[server_key().spki]), ServerConfig(
        raw_public_key=server_key(), client_public_keys=[client_key().spki]
    )


def raw_key_client_and_x509_client_auth() -> tuple[ClientConfig, ServerConfig]:
    """The server answers with its raw key, but takes only certificates from clients."""
    client = ClientConfig(server_public_keys=[server_key().spki], raw_public_key=client_key())
    p = x509_pki()
    return client, ServerConfig(
        raw_public_key=server_key(),
        certificates=[p.certified(p.server)],
        client_trust_anchors=[p.root.der],
    )


def assert_unsupported_certificate(
    client: ClientConfig, server: ServerConfig, reason: str
) -> None:
    """The server ends the handshake with unsupported_certificate for `reason`, and the client
    receives that alert on the wire (RFC 7250 §4.2)."""
    link = MemoryLink(client, server, allowed_alerts=CERTIFICATE_TYPE_ALERTS)
    link.handshake()
    error = failure(link, "server")
    assert error.alert is AlertDescription.unsupported_certificate
    assert error.reason == reason
    assert ("server", 2, AlertDescription.unsupported_certificate) in link.checked_alerts
    (received,) = events_of(link, "client", ConnectionClosed)  # the alert the wire carried
    assert isinstance(received.error, AlertReceived)
    assert received.error.alert is AlertDescription.unsupported_certificate


@pytest.mark.req("RPK-3", "ERR-1")
@pytest.mark.parametrize(
    "configs",
    [raw_key_client_without_a_key, raw_key_client_and_x509_client_auth],
    ids=["client-without-key", "x509-client-auth"],
)
def test_no_client_certificate_type_in_common_is_unsupported_certificate(configs: Any) -> None:
    """RFC 7250 §4.2 for the client certificate type of a server that requires client
    authentication: unsupported_certificate on the wire, as for the server certificate type
    (no mode is agreed yet; a certificate-based suite was asked for)."""
    assert_unsupported_certificate(
        *configs(), "the client offers no certificate type we can authenticate"
    )


@pytest.mark.req("RPK-3", "ERR-1")
def test_a_client_without_a_key_is_told_the_server_may_require_one() -> None:
    """unsupported_certificate in answer to a ClientHello that offered no client key (RFC 7250
    §4.2): the client's error says none is configured; one with a key is told nothing more."""
    link = MemoryLink(*raw_key_client_without_a_key(), allowed_alerts=CERTIFICATE_TYPE_ALERTS)
    link.handshake()
    assert str(received_alert(link, "client")) == (
        "received fatal alert unsupported_certificate (the server refused our hello's "
        "certificate types: it may require a client raw public key, and none is configured "
        "here, no raw_public_key)"
    )
    keyed = MemoryLink(*raw_key_client_and_x509_client_auth(),
                       allowed_alerts=CERTIFICATE_TYPE_ALERTS)
    keyed.handshake()
    assert str(received_alert(keyed, "client")) == "received fatal alert unsupported_certificate"


@pytest.mark.req("RPK-2", "ERR-1")
def test_tampered_server_key_exchange_signature_is_decrypt_error() -> None:
    def flip_signature(body: bytes) -> bytes:
        return body[:-1] + bytes([body[-1] ^ 1])

    link = rpk_link(rewrite("server", HandshakeType.server_key_exchange, flip_signature, times=9))
    link.handshake()
    assert failure(link, "client").alert is AlertDescription.decrypt_error


@pytest.mark.req("RPK-3", "ERR-1")
def test_tampered_certificate_verify_is_decrypt_error() -> None:
    def flip_signature(body: bytes) -> bytes:
        return body[:-1] + bytes([body[-1] ^ 1])

    link = rpk_link(rewrite("client", HandshakeType.certificate_verify, flip_signature, times=9))
    link.handshake()
    assert failure(link, "server").alert is AlertDescription.decrypt_error


@pytest.mark.req("RPK-3", "HS-5")
def test_certificate_without_certificate_verify_is_unexpected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that sends its key but no CertificateVerify proves nothing: the server sees
    the Finished (epoch 1) where the CertificateVerify is due."""
    from iotdtls.handshake.client import ClientHandshake

    real = ClientHandshake._on_certificate_request

    def request_without_proof(self: ClientHandshake, msg: Any) -> None:
        real(self, msg)
        own = self._requested
        assert own is not None and own.key is not None
        self._requested = dataclasses.replace(own, key=None)  # the Certificate, no signature

    monkeypatch.setattr(ClientHandshake, "_on_certificate_request", request_without_proof)
    link = rpk_link()
    link.handshake()
    error = failure(link, "server")
    assert error.alert is AlertDescription.unexpected_message
    assert error.reason.startswith("handshake message in epoch 1 where epoch 0 is due")
    assert HandshakeType.certificate_verify not in message_types(wire_from(link, "client"))


OFF_CURVE = b"\x04" + bytes(range(1, 65))


@pytest.mark.req("RPK-2", "ERR-1")
def test_client_point_off_the_curve_is_illegal_parameter() -> None:
    def off_curve(body: bytes) -> bytes:
        return ClientKeyExchangeEcdhe(OFF_CURVE).encode()

    link = rpk_link(rewrite("client", HandshakeType.client_key_exchange, off_curve, times=9))
    link.handshake()
    assert failure(link, "server").alert is AlertDescription.illegal_parameter


@pytest.mark.req("RPK-2", "ERR-1")
@pytest.mark.parametrize("point", [OFF_CURVE, b"\x02" + bytes(32), b"\x04" + bytes(64)],
                         ids=["off-curve", "compressed", "zeros"])
def test_server_point_that_is_no_p256_point_is_illegal_parameter(
    monkeypatch: pytest.MonkeyPatch, point: bytes
) -> None:
    """A server that signs a bad point (so the signature check passes) still fails."""
    real_init = EphemeralKey.__init__
    made: list[EphemeralKey] = []

    def init(self: EphemeralKey) -> None:
        real_init(self)
        made.append(self)
        if len(made) == 1:  # the server's key: the first one made in this handshake
            self.public_point = point

    monkeypatch.setattr(EphemeralKey, "__init__", init)
    link = rpk_link()
    link.handshake()
    assert failure(link, "client").alert is AlertDescription.illegal_parameter


def point_forms(key: PrivateKey) -> dict[str, bytes]:
    """`key`'s SubjectPublicKeyInfo with its point compressed and hybrid (SEC 1 §2.3.3)."""
    point = key.spki[-65:]
    assert point[0] == 4
    return {
        "compressed": compressed_spki(iotdtls.crypto.signature.load_public_key(key.spki)),
        "hybrid": point_spki(bytes([6 + (point[-1] & 1)]) + point[1:]),
    }


@pytest.mark.req("RPK-2", "ERR-1")
@pytest.mark.parametrize("form", ["compressed", "hybrid"])
def test_a_raw_key_whose_point_is_not_uncompressed_is_refused(form: str) -> None:
    """RFC 8422 §5.1.2: points are uncompressed (RPK-2); the same key in another form is
    refused as such, not as "not provisioned" (nor accepted by a pin of that form)."""
    spki = point_forms(server_key())[form]
    with pytest.raises(ProtocolError) as info:
        iotdtls.crypto.signature.PublicKey.from_spki(spki)
    assert info.value.alert is AlertDescription.unsupported_certificate
    assert str(info.value) == "the peer's P-256 key is not in uncompressed form (RFC 8422 §5.1.2)"

    def other_form(body: bytes) -> bytes:
        return RawPublicKeyCertificate(spki).encode()

    link = rpk_link(rewrite("server", HandshakeType.certificate, other_form, times=9))
    link.handshake()
    error = failure(link, "client")
    # unsupported_certificate is a certificate alert: the profile excludes it in raw key mode.
    assert error.alert is AlertDescription.handshake_failure
    assert "not in uncompressed form" in error.reason


@pytest.mark.req("RPK-2")
def test_server_key_exchange_must_use_the_offered_curve_and_scheme() -> None:
    def p384(body: bytes) -> bytes:
        ske = ServerKeyExchangeEcdhe.decode(body)
        return ServerKeyExchangeEcdhe(24, ske.public_point, ske.signature_scheme,
                                      ske.signature).encode()

    link = rpk_link(rewrite("server", HandshakeType.server_key_exchange, p384, times=9))
    link.handshake()
    assert failure(link, "client").alert is AlertDescription.illegal_parameter


@pytest.mark.req("RPK-1", "ERR-1")
def test_client_refuses_a_certificate_type_it_did_not_offer() -> None:
    def x509(body: bytes) -> bytes:
        sh = ServerHello.decode(body)
        exts = tuple(ServerCertificateType((CertificateType.X509,))
                     if isinstance(e, ServerCertificateType) else e for e in sh.extensions)
        return ServerHello(sh.server_version, sh.random, sh.session_id, sh.cipher_suite,
                           sh.compression_method, exts).encode()

    link = rpk_link(rewrite("server", HandshakeType.server_hello, x509, times=9))
    link.handshake()
    assert failure(link, "client").alert is AlertDescription.illegal_parameter


def server_hello_with(change: Any) -> Any:
    """A ServerHello body rewriter: `change` maps its extensions to the ones sent."""
    def rewritten(body: bytes) -> bytes:
        sh = ServerHello.decode(body)
        return ServerHello(sh.server_version, sh.random, sh.session_id, sh.cipher_suite,
                           sh.compression_method, tuple(change(sh.extensions))).encode()
    return rewritten


def without_client_certificate_type(extensions: Any) -> Any:
    return [e for e in extensions if not isinstance(e, ClientCertificateType)]


@pytest.mark.req("RPK-1")
def test_a_raw_key_client_asked_for_x509_sends_an_empty_certificate() -> None:
    """RFC 7250 §4.2: a ServerHello without client_certificate_type leaves X.509 as the
    client's certificate type; the CertificateRequest that follows gets an empty Certificate
    from a raw-key client (RFC 5246 §7.4.6), not its SubjectPublicKeyInfo."""
    link = rpk_link(rewrite("server", HandshakeType.server_hello,
                            server_hello_with(without_client_certificate_type), times=9))
    link.handshake()
    (client_cert,) = hello_bodies(link, "client", HandshakeType.certificate)
    assert client_cert == b"\x00\x00\x00"  # no certificates
    assert HandshakeType.certificate_verify not in message_types(wire_from(link, "client"))
    error = failure(link, "server")  # it confirmed raw keys: the key it wanted is missing
    assert error.alert is AlertDescription.handshake_failure
    assert error.reason == "the peer sent no raw public key"
    assert str(received_alert(link, "client")) == (
        "received fatal alert handshake_failure (the server asked for a client certificate; "
        "none was sent: it asked for an X.509 certificate and ours is a raw public key)"
    )


@pytest.mark.req("RPK-1", "ERR-1")
@pytest.mark.parametrize(
    ("make_link", "alert"),
    [
        # RFC 5246 §7.4.1.4: an X.509 client offers no client_certificate_type.
        (lambda fate: x509_link(fate), AlertDescription.unsupported_extension),
        # A raw-key client offers only RawPublicKey: X.509 is a type it did not offer.
        (lambda fate: rpk_link(fate), AlertDescription.illegal_parameter),
    ],
    ids=["x509-client-given-raw-key", "raw-key-client-given-x509"],
)
def test_client_refuses_a_client_certificate_type_it_cannot_use(
    make_link: Any, alert: AlertDescription
) -> None:
    """A ServerHello selecting for the client a certificate type other than its credential's is
    refused at the hello, before any Certificate."""
    def other_type(extensions: Any) -> Any:
        kept = without_client_certificate_type(extensions)
        mine = find_extension(extensions, ClientCertificateType)
        other = CertificateType.RawPublicKey if mine is None else CertificateType.X509
        return [*kept, ClientCertificateType((other,))]

    link = make_link(rewrite("server", HandshakeType.server_hello, server_hello_with(other_type),
                             times=9))
    link.handshake()
    assert failure(link, "client").alert is alert
    assert HandshakeType.certificate not in message_types(wire_from(link, "client"))


@pytest.mark.req("RPK-1")
def test_server_without_a_raw_key_refuses_a_raw_key_only_client() -> None:
    link = MemoryLink(
        ClientConfig(server_public_keys=[server_key().spki]),
        ServerConfig(psk_store={IDENTITY: KEY}),
    )
    link.handshake()
    error = failure(link, "server")
    assert error.alert is AlertDescription.handshake_failure
    assert error.reason == "no cipher suite in common"  # no key of ours, not a type question


def x509_only_server_and_raw_key_client() -> tuple[ClientConfig, ServerConfig]:
    p = x509_pki()
    return ClientConfig(server_public_keys=[server_key().spki]), ServerConfig(
        certificates=[p.certified(p.server)]
    )


def raw_key_only_server_and_x509_client() -> tuple[ClientConfig, ServerConfig]:
    client, _ = x509_configs()
    return client, ServerConfig(raw_public_key=server_key())


@pytest.mark.req("RPK-1", "ERR-1")
@pytest.mark.parametrize(
    "configs",
    [x509_only_server_and_raw_key_client, raw_key_only_server_and_x509_client],
    ids=["x509-server-rpk-client", "rpk-server-x509-client"],
)
def test_no_certificate_type_in_common_is_unsupported_certificate(configs: Any) -> None:
    """RFC 7250 §4.2: a server with none of the client's server certificate types ends the
    handshake with unsupported_certificate, on the wire too (a certificate-based suite was
    asked for: this is never PSK mode, whose alerts have no certificate alerts)."""
    assert_unsupported_certificate(*configs(), "no server certificate type in common")


@pytest.mark.req("CFG-1", "PSK-1", "RPK-2")
def test_one_server_serves_psk_and_raw_key_clients() -> None:
    server = ServerConfig(psk_store={IDENTITY: KEY}, raw_public_key=server_key(),
                          client_public_keys=[client_key().spki])
    for client, peer in (
        (ClientConfig(psk_identity=IDENTITY, psk=KEY), PskIdentity(IDENTITY)),
        (ClientConfig(server_public_keys=[server_key().spki], raw_public_key=client_key()),
         RawPublicKeyIdentity(client_key().spki)),
    ):
        link = MemoryLink(client, server)
        link.handshake()
        assert established(link)
        (done,) = events_of(link, "server", HandshakeComplete)
        assert done.peer == peer


@pytest.mark.req("RPK-2", "HS-2")
def test_public_key_operations_only_after_the_cookie_and_no_more_than_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Per handshake: the server makes one ephemeral key, one signature, one ECDH and checks one
    signature; the client checks one, makes one key, one ECDH, one signature. Nothing before
    the cookie exchange is over, and every handshake uses fresh ephemeral keys (PFS)."""
    ops: list[str] = []
    points: list[bytes] = []

    def counting(name: str, real: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ops.append(name)
            return real(*args, **kwargs)
        return wrapper

    real_init = EphemeralKey.__init__

    def init(self: EphemeralKey) -> None:
        ops.append("keygen")
        real_init(self)
        points.append(self.public_point)

    monkeypatch.setattr(EphemeralKey, "__init__", init)
    monkeypatch.setattr(EphemeralKey, "shared_secret",
                        counting("ecdh", EphemeralKey.shared_secret))
    monkeypatch.setattr(PrivateKey, "sign", counting("sign", PrivateKey.sign))
    monkeypatch.setattr(PrivateKey, "sign_digest", counting("sign", PrivateKey.sign_digest))
    for name in ("verify_signature", "verify_digest_signature"):
        for module in (iotdtls.handshake.keyexchange, iotdtls.handshake.server):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counting("verify", getattr(module, name)))
    link = rpk_link()
    link.client.connect(0.0)
    link.step()  # ClientHello out, HelloVerifyRequest back
    assert ops == []
    link.run(stop=established)
    assert established(link)
    assert sorted(ops) == sorted(["keygen", "sign", "ecdh", "verify"] * 2)
    again = rpk_link()
    again.handshake()
    assert len(set(points)) == 4  # two per handshake, never reused


@pytest.mark.req("CFG-1")
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of"),
        ({"psk_identity": b"a", "psk": b"k", "server_public_keys": [b"\x00" * 32]},
         "exactly one of"),
        ({"server_public_keys": [b"not a key"]}, "SubjectPublicKeyInfo"),
        ({"psk_identity": b"a", "psk": b"k", "raw_public_key": client_key()},
         "raw-public-key mode"),
    ],
)
def test_client_config_mistakes_are_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        ClientConfig(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.req("CFG-1")
def test_server_config_mistakes_are_one_line() -> None:
    with pytest.raises(ConfigError, match="needs credentials"):
        ServerConfig()
    with pytest.raises(ConfigError, match="needs raw_public_key"):
        ServerConfig(psk_store={IDENTITY: KEY}, client_public_keys=[client_key().spki])


@pytest.mark.req("HS-5")
def test_certificate_verify_after_change_cipher_spec_is_unexpected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Messages of the next epoch never stand in for ones due in the current epoch: a client
    that sends its CertificateVerify after its ChangeCipherSpec is refused, not accepted once
    the retransmitted ChangeCipherSpec comes round."""
    from iotdtls.handshake.client import ClientHandshake
    from iotdtls.handshake.flight import Flight, OutgoingCcs, OutgoingMessage

    real = ClientHandshake._on_server_hello_done

    def late_verify(self: ClientHandshake, msg: Any) -> Any:
        outcome = real(self, msg)
        cert, cke, verify, ccs, fin = outcome.flight.items
        assert isinstance(verify, OutgoingMessage) and isinstance(ccs, OutgoingCcs)
        moved = OutgoingMessage(verify.msg_type, verify.message_seq, verify.body, 1)
        return type(outcome)(Flight((cert, cke, ccs, moved, fin)), outcome.keys)

    monkeypatch.setattr(ClientHandshake, "_on_server_hello_done", late_verify)
    link = rpk_link()
    link.handshake()
    assert failure(link, "server").alert is AlertDescription.unexpected_message


@pytest.mark.req("RPK-3")
def test_raw_public_keys_are_decoded_once_and_refused_every_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 7250 §3: a returning peer's SubjectPublicKeyInfo is not decoded again (the last
    PUBLIC_KEYS_KEPT are remembered); one that does not decode is refused at each attempt."""
    from iotdtls.crypto.signature import PUBLIC_KEYS_KEPT, PublicKey, _decoded

    _decoded.cache_clear()
    loads: list[bytes] = []
    real = iotdtls.crypto.signature.load_public_key

    def counting(spki: bytes) -> Any:
        loads.append(spki)
        return real(spki)

    monkeypatch.setattr(iotdtls.crypto.signature, "load_public_key", counting)
    key = PrivateKey.generate()
    first = PublicKey.from_spki(key.spki)
    assert first.spki == key.spki
    assert repr(first) == repr(key).replace("PrivateKey", "PublicKey")  # the fingerprint only
    assert PublicKey.from_spki(bytearray(key.spki)) is first
    assert loads == [key.spki]
    for _ in range(2):
        with pytest.raises(ProtocolError) as info:
            PublicKey.from_spki(key.spki[:-1])
        assert info.value.alert is AlertDescription.bad_certificate
    assert len(loads) == 3
    assert _decoded.cache_info().maxsize == PUBLIC_KEYS_KEPT
