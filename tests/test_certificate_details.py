"""Details of the certificate mode that whole handshakes do not single out (docs/mutation.md):
the alert and message of each X.509 refusal, validity and name bounds, the validated-chain
cache, the trusted CA identifiers, cached_info refusals, the certificate-URL flow through the
sans-I/O endpoint and the server's choice among mixed credentials. All in memory."""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.x509.oid import ExtensionOID

import iotdtls.crypto.x509 as x509_module
from iotdtls.config import ServerConfig
from iotdtls.connection import ConnectionState
from iotdtls.credentials import CertifiedKey, PrivateKey
from iotdtls.crypto.pem import kind_of
from iotdtls.crypto.x509 import (
    MAX_CHAIN_DEPTH_LIMIT,
    TrustStore,
    authority_identifiers,
    chain_matches_authority,
    leaf_public_key_spki,
    load_certificates,
    verify_client_chain,
    verify_server_chain,
)
from iotdtls.crypto.x509names import reference_identity
from iotdtls.endpoint import ServerEndpoint
from iotdtls.errors import (
    AlertDescription,
    ConfigError,
    ProtocolError,
    SequenceNumbersExhausted,
)
from iotdtls.events import CertificateUrlsReceived, DataReceived, HandshakeComplete
from iotdtls.handshake.alerts import MODE_ALERTS, X509_MODE_ALERTS
from iotdtls.handshake.negotiation import choose_server_parameters
from iotdtls.handshake.peerauth import X509ClientVerifier, X509ServerVerifier
from iotdtls.identity import CertificateIdentity
from iotdtls.messages import (
    CachedInfo,
    CachedObject,
    Certificate,
    CertificateType,
    ClientCertificateType,
    ClientCertificateUrl,
    ClientHello,
    HandshakeType,
    ServerCertificateType,
    ServerHello,
    TrustedCaKeys,
    find_extension,
)
from iotdtls.messages.constants import IdentifierType
from iotdtls.record import MAX_SEQUENCE_NUMBER, ContentType
from tests.memory_link import CLIENT_ADDR, MemoryLink, established, events_of, record_layer
from tests.pki import (
    NOW,
    YEAR,
    Issued,
    ca_chain,
    chain_der,
    client_leaf,
    dns,
    intermediate,
    ip,
    issue,
    pem_certificate,
    root,
    server_leaf,
    with_version_field,
)
from tests.pubkey_support import (
    client_key,
    failure,
    rewrite,
    server_key,
    x509_configs,
    x509_link,
    x509_pki,
)
from tests.test_negotiation import hello
from tests.test_negotiation_details import EC, ECDHE
from tests.test_x509_handshake import bodies, url_setup

A = AlertDescription
HOUR = datetime.timedelta(hours=1)
EUI64 = "01-23-45-67-89-AB-CD-EF"
#: The DER OID of id-ecPublicKey (RFC 5480 §2.1.1) and the same with an arc nobody defines.
EC_PUBLIC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")
UNKNOWN_KEY_OID = bytes.fromhex("06072a8648ce3d0209")


def server(chain: tuple[bytes, ...], store: TrustStore, *, when: datetime.datetime = NOW,
           max_depth: int = 2, name: str | None = "localhost") -> str:
    return verify_server_chain(chain, store, server_name=name, when=when,
                               max_depth=max_depth)[0].name


def client(chain: tuple[bytes, ...], store: TrustStore, *, when: datetime.datetime = NOW) -> str:
    return verify_client_chain(chain, store, when=when, max_depth=2)[0].name


def refusal(alert: AlertDescription, call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the ProtocolError carrying `alert` that `call` raises."""
    with pytest.raises(ProtocolError) as info:
        call(*args, **kwargs)
    assert info.value.alert is alert, str(info.value)
    return str(info.value)


@pytest.fixture(scope="module")
def anchor() -> Issued:
    return root()


@pytest.fixture(scope="module")
def store(anchor: Issued) -> TrustStore:
    return TrustStore([anchor.der])


@pytest.fixture
def local_time_five_hours_ahead(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is UTC+5 for the test (POSIX TZ signs are inverted)."""
    monkeypatch.setenv("TZ", "XXX-05:00")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def unknown_key_leaf(anchor: Issued) -> bytes:
    """A server certificate whose key algorithm is an OID no library knows (signature broken,
    which does not matter: the key is looked at first)."""
    der = server_leaf(anchor).der
    assert der.count(EC_PUBLIC_KEY_OID) == 1
    return der.replace(EC_PUBLIC_KEY_OID, UNKNOWN_KEY_OID)


# -- validity and time (RFC 5280 §4.1.2.5, §6.1.3) --------------------------------------------


def test_validity_bounds_are_inclusive(anchor: Issued, store: TrustStore) -> None:
    """RFC 5280 §4.1.2.5: a certificate is valid from notBefore through notAfter, both
    included."""
    leaf = server_leaf(anchor, not_before=NOW - HOUR, not_after=NOW + HOUR)
    assert server(chain_der(leaf), store, when=NOW - HOUR) == "localhost"
    assert server(chain_der(leaf), TrustStore([anchor.der]), when=NOW + HOUR) == "localhost"


def test_an_aware_time_in_another_zone_is_the_same_instant(anchor: Issued,
                                                           store: TrustStore) -> None:
    """RFC 5280 §4.1.2.5.1: validity is in UTC; a time given at UTC+5 is converted, not
    relabelled."""
    leaf = server_leaf(anchor, not_before=NOW - 2 * HOUR, not_after=NOW + HOUR)
    plus_five = datetime.timezone(datetime.timedelta(hours=5))
    assert server(chain_der(leaf), store, when=NOW.astimezone(plus_five)) == "localhost"


def test_the_refusal_names_the_time_in_utc(anchor: Issued, store: TrustStore,
                                           local_time_five_hours_ahead: None) -> None:
    """RFC 5280 §4.1.2.5: certificate_expired says when, in UTC ("Z"), whatever the local
    zone of the process."""
    leaf = server_leaf(anchor, not_after=NOW - HOUR)
    message = refusal(A.certificate_expired, server, chain_der(leaf), store)
    assert message == ("server certificate 0 is not valid at 2030-06-01 12:00Z "
                       f"(valid {(NOW - YEAR):%Y-%m-%d} to 2030-06-01)")


@pytest.mark.parametrize("side", ["client", "server"])
def test_verifiers_read_the_wall_clock_as_utc(side: str, local_time_five_hours_ahead: None,
                                              anchor: Issued) -> None:
    """RFC 5280 §4.1.2.5: the wall clock (POSIX seconds) is an instant; a local zone ahead of
    UTC must not push it past a notAfter one hour away."""
    store = TrustStore([anchor.der])
    if side == "server":
        leaf = server_leaf(anchor, not_after=NOW + HOUR)
        verifier: Any = X509ServerVerifier(store, "localhost", 2, NOW.timestamp())
    else:
        leaf = client_leaf(anchor, not_after=NOW + HOUR)
        verifier = X509ClientVerifier(store, 2, NOW.timestamp())
    identity, key = verifier.verify(Certificate((leaf.der,)).encode())
    assert key.spki == leaf.spki
    assert identity.name == ("localhost" if side == "server" else EUI64)


# -- refusals: alert and message (RFC 5246 §7.2.2) --------------------------------------------


def test_an_unreadable_key_is_unsupported_certificate(anchor: Issued, store: TrustStore) -> None:
    """RFC 5246 §7.2.2 unsupported_certificate: a key of an algorithm nobody implements."""
    der = unknown_key_leaf(anchor)
    message = refusal(A.unsupported_certificate, server, (der,), store)
    assert message == "the server certificate key is of an unsupported type, not ECDSA P-256"
    message = refusal(A.unsupported_certificate, leaf_public_key_spki, (der,))
    assert message == "the certificate's key cannot be read"


def test_the_key_type_is_named_without_suffix(anchor: Issued, store: TrustStore) -> None:
    """RFC 7251 §2: only ECDSA P-256; the refusal names the key type the peer has."""
    leaf = server_leaf(anchor, key=ed25519.Ed25519PrivateKey.generate())
    message = refusal(A.unsupported_certificate, client, chain_der(leaf), store)
    assert message == "the client certificate key is Ed25519, not ECDSA P-256"


def test_refusals_name_the_role_and_the_certificate(anchor: Issued, store: TrustStore) -> None:
    """RFC 5246 §7.2.2 bad_certificate and certificate_expired, with the role and index."""
    leaf = server_leaf(anchor)
    assert refusal(A.bad_certificate, server, (leaf.der, b"junk"), store) == (
        "server certificate 1 is not a valid DER X.509 certificate")
    assert refusal(A.bad_certificate, leaf_public_key_spki, (b"junk",)) == (
        "peer certificate 0 is not a valid DER X.509 certificate")
    expired = client_leaf(anchor, not_after=NOW - HOUR)
    assert refusal(A.certificate_expired, client, chain_der(expired), store).startswith(
        "client certificate 0 is not valid at 2030-06-01 12:00Z")
    stranger = client_leaf(root("stranger"))
    assert refusal(A.unknown_ca, client, chain_der(stranger), store).startswith(
        "client chain leads to no trusted CA: ")


@pytest.mark.parametrize("field", [1, 5, 127], ids=["v2", "version-field-5", "version-field-127"])
def test_a_certificate_of_another_version_than_v1_or_v3_does_not_parse(
    anchor: Issued, store: TrustStore, field: int
) -> None:
    """cryptography refuses a version field other than 0 (v1) or 2 (v3) with
    x509.InvalidVersion, which is no ValueError: it escaped every parse here (probe BW #1), a
    traceback from a peer. From a peer: bad_certificate, as any certificate that does not
    parse (RFC 5246 §7.2.2); in configuration: a one-line ConfigError."""
    leaf = server_leaf(anchor)
    odd_leaf = with_version_field(leaf.der, field)
    odd_root = with_version_field(anchor.der, field)
    why = f"X.509 version field {field} (v{field + 1}) is not v1 or v3"
    assert refusal(A.bad_certificate, server, (odd_leaf,), store) == (
        f"server certificate 0 is not a usable X.509 certificate: {why}")
    assert refusal(A.bad_certificate, client, (leaf.der, odd_root), store) == (
        f"client certificate 1 is not a usable X.509 certificate: {why}")
    assert refusal(A.bad_certificate, leaf_public_key_spki, (odd_leaf,)) == (
        f"peer certificate 0 is not a usable X.509 certificate: {why}")
    assert not x509_module.is_self_signed(odd_root)
    for call, args, kwargs, message in [
        (TrustStore, ([odd_root],), {}, f"trust anchor 1 is not usable: {why}"),
        (load_certificates, (odd_root,), {}, f"the DER certificate is not usable: {why}"),
        (load_certificates, (pem_certificate(odd_root),), {},
         f"a PEM certificate is not usable: {why}"),
        (authority_identifiers, ((leaf.der, odd_root),), {},
         f"a chain certificate is not usable: {why}"),
        (authority_identifiers, ((leaf.der,),), {"issuers": [odd_root]},
         f"an issuer certificate is not usable: {why}"),
    ]:
        with pytest.raises(ConfigError) as info:
            call(*args, **kwargs)
        assert str(info.value) == message
    assert kind_of(odd_root) is None


def test_the_verifier_reason_has_no_prefix(store: TrustStore) -> None:
    """RFC 5246 §7.2.2 unknown_ca: the one-line reason without the verifier's prefix."""
    leaf = server_leaf(root("stranger"))
    message = refusal(A.unknown_ca, server, chain_der(leaf), store)
    assert message == "server chain leads to no trusted CA: no issuer of it among the trust anchors"


def test_malformed_extensions_of_a_valid_leaf_are_bad_certificate(anchor: Issued,
                                                                  store: TrustStore) -> None:
    """RFC 5280 §4.2: a certificatePolicies extension that does not parse (which the path
    validation ignores) still makes the certificate bad_certificate."""
    policies = (x509.UnrecognizedExtension(ExtensionOID.CERTIFICATE_POLICIES, b"\x05\x00"), False)
    leaf = server_leaf(anchor, extensions=[policies])
    assert refusal(A.bad_certificate, server, chain_der(leaf), store) == (
        "the server certificate has malformed extensions")


def test_a_bad_leaf_signature_under_two_intermediates_is_bad_certificate() -> None:
    """RFC 5246 §7.2.2: a signature that does not verify is bad_certificate, wherever the
    certificate's issuer sits in the chain."""
    top, cas = ca_chain(2)
    leaf = server_leaf(cas[-1], signing_key=server_leaf(top).key)
    chain = chain_der(leaf, *reversed(cas))
    message = refusal(A.bad_certificate, server, chain, TrustStore([top.der]))
    assert message == "the signature on server certificate 0 does not verify"


def test_an_issuer_namesake_whose_key_cannot_sign_is_unknown_ca(anchor: Issued,
                                                                store: TrustStore) -> None:
    """RFC 5246 §7.2.2 unknown_ca: the chain sends, as the leaf's issuer, a CA of the same name
    whose key (X25519) signs nothing: no trusted CA is found; no signature was refuted."""
    real = intermediate(anchor, "issuing CA")
    namesake = issue("issuing CA", anchor, ca=True, key=x25519.X25519PrivateKey.generate())
    leaf = server_leaf(real)
    refusal(A.unknown_ca, server, chain_der(leaf, namesake), store)


def test_the_deepest_configurable_chain_depth_is_accepted(anchor: Issued,
                                                          store: TrustStore) -> None:
    """CRT-6: max_depth may be 0 to MAX_CHAIN_DEPTH_LIMIT, both included."""
    leaf = chain_der(server_leaf(anchor))
    assert server(leaf, store, max_depth=MAX_CHAIN_DEPTH_LIMIT) == "localhost"
    with pytest.raises(ConfigError):
        server(leaf, store, max_depth=MAX_CHAIN_DEPTH_LIMIT + 1)


# -- client EUI-64 (RFC 7252 §9.1.3.3) --------------------------------------------------------


def test_eui64_refusals_say_where_and_what(anchor: Issued, store: TrustStore) -> None:
    """RFC 7252 §9.1.3.3: the EUI-64 is in subjectAltName or CN; the refusal says which was
    looked at and whether none or several were found."""
    no_eui = client_leaf(anchor, "sensor")
    assert refusal(A.bad_certificate, client, chain_der(no_eui), store) == (
        "the client certificate's common name holds no EUI-64 (RFC 7252 §9.1.3.3)")
    two = client_leaf(anchor, san=dns("0123456789abcdef", "fedcba9876543210"))
    assert refusal(A.bad_certificate, client, chain_der(two), store) == (
        "the client certificate's subjectAltName holds several different EUI-64s "
        "(RFC 7252 §9.1.3.3)")


def _with_an_earlier_common_name(anchor: Issued, leaf: Issued, common_name: str) -> Issued:
    """`leaf` re-issued with `common_name` as a first CN before its own one."""
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name),
                         *leaf.cert.subject])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(anchor.cert.subject)
               .public_key(leaf.cert.public_key()).serial_number(leaf.cert.serial_number)
               .not_valid_before(leaf.cert.not_valid_before_utc)
               .not_valid_after(leaf.cert.not_valid_after_utc))
    for extension in leaf.cert.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return Issued(builder.sign(anchor.key, hashes.SHA256()), leaf.key)


@pytest.mark.req("CRT-4")
def test_only_the_most_specific_common_name_counts(anchor: Issued, store: TrustStore) -> None:
    """RFC 7252 §9.1.3.3: with several CNs, the last (most specific) one is the EUI-64: an
    earlier one neither competes with it nor stands in for a last CN that is none."""
    two_euis = _with_an_earlier_common_name(
        anchor, client_leaf(anchor, "fedcba9876543210"), "0123456789abcdef")
    assert client(chain_der(two_euis), store) == "FE-DC-BA-98-76-54-32-10"
    last_not_eui = _with_an_earlier_common_name(
        anchor, client_leaf(anchor, "sensor"), "0123456789abcdef")
    assert refusal(A.bad_certificate, client, chain_der(last_not_eui), store) == (
        "the client certificate's common name holds no EUI-64 (RFC 7252 §9.1.3.3)")


# -- reference names (RFC 6125 §6.2.1, RFC 1035 §2.3.4) ---------------------------------------


def test_a_dns_name_of_253_characters_is_the_longest() -> None:
    """RFC 1035 §2.3.4: at most 255 octets on the wire, 253 characters as text."""
    longest = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(longest) == 253
    assert reference_identity(longest) == longest
    with pytest.raises(ConfigError):
        reference_identity(longest + "d")
    with pytest.raises(ConfigError):
        reference_identity(".".join(["a" * 63] * 4))


def test_a_unicode_name_idna_refuses_is_a_config_error() -> None:
    """RFC 5890 §2.3.2.1: a U-label whose A-label exceeds 63 octets is no name."""
    with pytest.raises(ConfigError):
        reference_identity("ü" * 64 + ".example")


@pytest.mark.req("CRT-3")
@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("faß.example", "to 'fass'"),  # IDNA 2008: xn--fa-hia, another name than fass.example
        ("βόλος.example", "to 'βόλοσ'"),  # final sigma
        ("ab\u200dc.example", "to 'abc'"),  # zero-width joiner
        ("ab\u200cc.example", "to 'abc'"),  # zero-width non-joiner
        ("\uff27\uff37.example", "to 'gw'"),  # full-width letters (NFKC)
        ("♥.example", "holds '♥'"),  # a symbol IDNA 2003 allows
        ("bücher\u3002example", "holds '\u3002'"),  # IDNA 2003 reads it as a dot
    ],
)
def test_a_u_label_idna_2003_and_2008_convert_differently_is_refused(name: str,
                                                                     shown: str) -> None:
    """RFC 6125 §6.4.2 compares A-labels of IDNA 2008 (RFC 5890); the standard library's codec
    is IDNA 2003, whose mappings would check (and send) another name: the user is told to
    give the A-label, in one line."""
    with pytest.raises(ConfigError) as refused:
        reference_identity(name)
    message = str(refused.value)
    assert shown in message and "A-label (xn--...)" in message and "\n" not in message


@pytest.mark.req("CRT-3")
@pytest.mark.parametrize(
    ("name", "a_labels"),
    [
        ("bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example.", "xn--bcher-kva.example"),
        ("bu\u0308cher.example", "xn--bcher-kva.example"),  # decomposed: NFC is no mapping
        ("日本語.jp", "xn--wgv71a119e.jp"),
        ("xn--fa-hia.example", "xn--fa-hia.example"),  # faß.example, given as its A-labels
    ],
)
def test_a_u_label_both_idnas_convert_alike_is_converted(name: str, a_labels: str) -> None:
    assert reference_identity(name) == a_labels


@pytest.mark.req("CRT-3")
def test_a_scoped_link_local_address_matches_its_ip_san(anchor: Issued, store: TrustStore) -> None:
    """RFC 4007 §11: the zone ("%lo", what `connect` is given for a link-local peer) is local
    to this host; the certificate's iPAddress names the address alone."""
    leaf = server_leaf(anchor, san=ip("fe80::1"))
    assert server(chain_der(leaf), store, name="fe80::1%lo") == "fe80::1"
    assert server(chain_der(leaf), store, name="fe80::1") == "fe80::1"
    refused = refusal(A.bad_certificate, server, chain_der(leaf), store, name="fe80::2%lo")
    assert refused == "the server certificate is not valid for fe80::2"


@pytest.mark.req("CRT-3")
def test_an_ipv4_mapped_address_is_checked_as_the_ipv4_address_it_is(
    anchor: Issued, store: TrustStore
) -> None:
    """A client reaching [::ffff:127.0.0.1] (its datagrams go to 127.0.0.1 over IPv4) refused
    a certificate for IP:127.0.0.1, "not valid for ::ffff:7f00:1" (probe CD): the reference
    identifier is the IPv4 node's address (RFC 4291 §2.5.5.2), 4 octets in an iPAddress (RFC
    5280 §4.2.1.6), named so. An iPAddress of 16 octets spelling a mapped address names no
    reference (see the name constraints test below); an IPv4-compatible ::127.0.0.1 is another
    address."""
    assert reference_identity("::ffff:127.0.0.1") == IPv4Address("127.0.0.1")
    assert reference_identity("::FFFF:7f00:1") == IPv4Address("127.0.0.1")
    v4 = chain_der(server_leaf(anchor, san=ip("127.0.0.1")))
    assert server(v4, store, name="::ffff:127.0.0.1") == "127.0.0.1"
    refused = refusal(A.bad_certificate, server, v4, store, name="::ffff:127.0.0.2")
    assert refused == "the server certificate is not valid for 127.0.0.2"
    compatible = chain_der(server_leaf(anchor, san=ip("::127.0.0.1")))
    refused = refusal(A.bad_certificate, server, compatible, store, name="127.0.0.1")
    assert refused == "the server certificate is not valid for 127.0.0.1"
    refusal(A.bad_certificate, server, v4, store, name="::127.0.0.1")


@pytest.mark.req("CRT-3")
@pytest.mark.parametrize("name", ["10.0.0.1", "::ffff:10.0.0.1"])
def test_an_ipv4_mapped_ip_san_escapes_no_name_constraint(anchor: Issued, name: str) -> None:
    """A CA excluded from 10.0.0.0/8 (RFC 5280 §4.2.1.10) that issues an iPAddress of 16
    octets spelling ::ffff:10.0.0.1: the verifier's constraints on IPv4 subtrees compare
    4-octet addresses only, so the certificate must name no IPv4 reference, either way it is
    written; the 4-octet IP:10.0.0.1 is refused by the constraint itself."""
    store = TrustStore([anchor.der])
    no_tens = x509.NameConstraints(
        permitted_subtrees=None, excluded_subtrees=[x509.IPAddress(IPv4Network("10.0.0.0/8"))]
    )
    ca = intermediate(anchor, "no tens", extensions=[(no_tens, True)])
    mapped = chain_der(server_leaf(ca, san=ip("::ffff:10.0.0.1")), ca)
    refused = refusal(A.bad_certificate, server, mapped, store, name=name)
    assert refused == "the server certificate is not valid for 10.0.0.1"
    plain = chain_der(server_leaf(ca, san=ip("10.0.0.1")), ca)
    assert "name constraints" in refusal(A.bad_certificate, server, plain, store, name=name)


# -- remembered validations (CRT-1, CRT-5) ----------------------------------------------------


@pytest.fixture
def verifier_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts path validations (one verifier built each)."""
    built: list[int] = []
    real = x509_module._verifier

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(x509_module, "_verifier", counting)
    return built


def test_a_remembered_chain_is_reused_up_to_both_ends_of_its_validity(
    anchor: Issued, verifier_builds: list[int]
) -> None:
    """CRT-5: a chain validated before is not validated again while the time is inside every
    validity period, bounds included (RFC 5280 §4.1.2.5)."""
    store = TrustStore([anchor.der])
    leaf = server_leaf(anchor, not_before=NOW - HOUR, not_after=NOW + HOUR)
    for when in (NOW, NOW - HOUR, NOW + HOUR):
        assert server(chain_der(leaf), store, when=when) == "localhost"
    assert len(verifier_builds) == 1


def test_the_oldest_remembered_chain_is_forgotten_first(
    anchor: Issued, store: TrustStore, verifier_builds: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CRT-5: the store keeps the `validated_chains` most recent validations (here 2)."""
    store = TrustStore([anchor.der], validated_chains=2)
    chain = chain_der(server_leaf(anchor))
    for depth in (0, 1, 2):  # three questions about one chain
        server(chain, store, max_depth=depth)
    assert len(verifier_builds) == 3
    server(chain, store, max_depth=2)
    server(chain, store, max_depth=1)
    assert len(verifier_builds) == 3  # the two newest are remembered
    server(chain, store, max_depth=0)
    assert len(verifier_builds) == 4  # the oldest was forgotten
    assert len(store._validated) == 2
    assert (store.validated_chain_hits, store.validated_chain_misses) == (2, 4)


def test_a_store_keeping_no_validated_chain_validates_each_time(
    anchor: Issued, verifier_builds: list[int],
) -> None:
    """`validated_chains=0`: nothing remembered, every look a full path validation (a miss)."""
    store = TrustStore([anchor.der], validated_chains=0)
    chain = chain_der(server_leaf(anchor))
    for _ in range(3):
        assert server(chain, store) == "localhost"
    assert len(verifier_builds) == 3 and len(store._validated) == 0
    assert (store.validated_chain_hits, store.validated_chain_misses) == (0, 3)


@pytest.mark.parametrize("kept", [-1, 1.5, True, "8"])
def test_the_number_of_validated_chains_kept_is_a_whole_number(anchor: Issued, kept: Any) -> None:
    with pytest.raises(ConfigError, match=r"^validated_chains must be an integer >= 0"):
        TrustStore([anchor.der], validated_chains=kept)
    with pytest.raises(ConfigError, match=r"^validated_chains must be an integer >= 0"):
        x509_configs(server={"validated_chains": kept})


def test_a_server_configuration_may_keep_no_validated_chain() -> None:
    """0, the least allowed: every client chain validated in full."""
    _, server_config = x509_configs(server={"validated_chains": 0})
    assert server_config.validated_chains == 0


# -- trusted CA identifiers (RFC 6066 §6, CRT-8) ----------------------------------------------


def test_authority_identifiers_name_every_ca_of_the_path() -> None:
    """RFC 6066 §6: x509_name, cert_sha1_hash and key_sha1_hash of each CA on the path, the
    issuer names, and 20-byte authorityKeyIdentifiers; nothing else."""
    top, (middle,) = ca_chain(1)
    leaf = server_leaf(middle)
    ids = authority_identifiers(chain_der(leaf, middle), issuers=[top.der])
    key_id = x509.SubjectKeyIdentifier.from_public_key
    expected = {
        (IdentifierType.x509_name, middle.cert.subject.public_bytes()),
        (IdentifierType.x509_name, top.cert.subject.public_bytes()),
        (IdentifierType.cert_sha1_hash, x509_module._sha1(middle.der)),
        (IdentifierType.cert_sha1_hash, x509_module._sha1(top.der)),
        (IdentifierType.key_sha1_hash, key_id(middle.cert.public_key()).digest),  # type: ignore[arg-type]
        (IdentifierType.key_sha1_hash, key_id(top.cert.public_key()).digest),  # type: ignore[arg-type]
    }
    assert ids == expected
    # an extra certificate sent along is named by its subject too
    stranger = root("unrelated CA")
    assert (IdentifierType.x509_name, stranger.cert.subject.public_bytes()) in (
        authority_identifiers(chain_der(leaf, middle, stranger)))


@pytest.mark.parametrize("aki", [
    x509.AuthorityKeyIdentifier(b"\x01" * 8, None, None),
    x509.AuthorityKeyIdentifier(None, [x509.DNSName("ca.example")], 7),
])
def test_only_a_20_byte_authority_key_identifier_counts(anchor: Issued,
                                                        aki: x509.AuthorityKeyIdentifier) -> None:
    """RFC 6066 §6 key_sha1_hash is 20 bytes (RFC 5280 §4.2.1.2 method 1): a shorter key
    identifier, or none, names no authority."""
    leaf = server_leaf(anchor, authority_key_id=False, extensions=[(aki, False)])
    ids = authority_identifiers(chain_der(leaf))
    assert ids == {(IdentifierType.x509_name, anchor.cert.subject.public_bytes())}
    assert not chain_matches_authority(chain_der(leaf), [(IdentifierType.key_sha1_hash,
                                                          b"\x01" * 8)])


# -- cached_info (RFC 7924, CRT-2) ------------------------------------------------------------


def test_a_client_holding_no_chain_sends_no_cached_info() -> None:
    """RFC 7924 §3: cached_info lists what the client holds; holding nothing, it is left out."""
    link = x509_link()
    link.handshake()
    assert established(link)
    first = ClientHello.decode(bodies(link, "client", HandshakeType.client_hello)[0])
    assert find_extension(first.extensions, CachedInfo) is None


def test_a_one_byte_fingerprint_is_illegal_parameter() -> None:
    """RFC 7924 §4.1: hash_value<1..255>: a one-byte fingerprint is well formed, and not the
    chain we hold: illegal_parameter (not decode_error)."""
    p = x509_pki()
    link = x509_link(rewrite("server", HandshakeType.certificate, lambda _: b"\x01\x00", times=9),
                     client={"cached_server_chain": [p.server.der, p.ca.der]})
    link.handshake()
    assert failure(link, "client").alert is A.illegal_parameter


def test_a_cached_info_answer_of_another_type_is_illegal_parameter() -> None:
    """RFC 7924 §4: the server may only confirm the types the client offered (cert here)."""
    p = x509_pki()

    def other_type(body: bytes) -> bytes:
        sh = ServerHello.decode(body)
        extensions = tuple(
            CachedInfo((CachedObject(2),)) if isinstance(e, CachedInfo) else e
            for e in sh.extensions
        )
        return replace(sh, extensions=extensions).encode()

    link = x509_link(rewrite("server", HandshakeType.server_hello, other_type, times=9),
                     client={"cached_server_chain": [p.server.der, p.ca.der]})
    link.handshake()
    assert failure(link, "client").alert is A.illegal_parameter


# -- client certificate URLs (RFC 6066 §5, CRT-7) through the sans-I/O endpoint ----------------


@pytest.mark.parametrize(("chain_type", "alert", "reason"), [
    (1, A.certificate_unobtainable, "CertificateURL of type pkipath is not supported"),
    (5, A.illegal_parameter, "CertificateURL of unknown type 5 "),
])
def test_a_pkipath_certificate_url_is_unobtainable_and_an_unknown_type_illegal(
    chain_type: int, alert: A, reason: str
) -> None:
    """RFC 6066 §5: a server that takes only individual_certs answers a pkipath CertificateURL
    with certificate_unobtainable; a type the RFC does not define is illegal_parameter."""
    client_kw, server_kw, fetched = url_setup({})
    link = x509_link(rewrite("client", HandshakeType.certificate_url,
                             lambda body: bytes([chain_type]) + body[1:], times=9),
                     client=client_kw, server=server_kw)
    link.handshake()
    error = failure(link, "server")
    assert error.alert is alert
    assert reason in str(error)
    assert fetched == []


def test_a_certificate_url_the_server_did_not_agree_to_is_unexpected() -> None:
    """RFC 6066 §5: only a server that answered client_certificate_url takes a CertificateURL;
    one without a fetcher did not, and refuses it as unexpected_message."""
    client_kw, _, _ = url_setup({})

    def agree(body: bytes) -> bytes:
        sh = ServerHello.decode(body)
        return replace(sh, extensions=(*sh.extensions, ClientCertificateUrl())).encode()

    link = x509_link(rewrite("server", HandshakeType.server_hello, agree, times=9),
                     client=client_kw)
    link.handshake()
    assert failure(link, "server").alert is A.unexpected_message


def test_the_endpoint_answers_the_fetched_chain_to_the_right_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 6066 §5: after the fetched chain is supplied, the endpoint's datagrams and events
    are for the client's address, the server's final flight is held (so the session is kept),
    and the association carries application data on."""
    addresses: list[object] = []
    real_send = ServerEndpoint.datagrams_to_send
    real_event = ServerEndpoint.next_event

    def sends(self: ServerEndpoint, now: float) -> list[tuple[bytes, Any]]:
        out = real_send(self, now)
        addresses.extend(address for _, address in out)
        return out

    def events(self: ServerEndpoint) -> Any:
        item = real_event(self)
        if item is not None:
            addresses.append(item[0])
        return item

    monkeypatch.setattr(ServerEndpoint, "datagrams_to_send", sends)
    monkeypatch.setattr(ServerEndpoint, "next_event", events)
    client_kw, server_kw, fetched = url_setup({})
    link = x509_link(client=client_kw, server=server_kw)
    link.handshake()
    assert established(link)
    assert fetched == client_kw["certificate_urls"]
    (done,) = events_of(link, "server", HandshakeComplete)
    assert done.peer == CertificateIdentity(EUI64)
    link.client.send(b"ping")
    link.run(stop=lambda lk: bool(events_of(lk, "server", DataReceived)))
    assert [e.data for e in events_of(link, "server", DataReceived)] == [b"ping"]
    assert addresses and set(addresses) == {CLIENT_ADDR}



def holding_fetches(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[CertificateUrlsReceived], dict[str, Any], dict[str, Any]]:
    """The client and server settings of a certificate-URL handshake (RFC 6066 §5) whose
    server's fetches are held: each request is kept in the list returned, never answered."""
    asked: list[CertificateUrlsReceived] = []

    def hold(link: MemoryLink, address: object, event: CertificateUrlsReceived) -> None:
        asked.append(event)

    monkeypatch.setattr(MemoryLink, "_fetch_client_chain", hold)
    client_kw, server_kw, _ = url_setup({})
    return asked, client_kw, server_kw


@pytest.mark.req("CRT-7")
def test_a_fetch_for_a_replaced_association_is_not_answered_to_its_successor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 6066 §5 with RFC 6347 §4.2.8: a client restarts from the same address while the
    server fetches its chain. The first fetch's outcome, when it comes, is not handed to the
    new association, which waits for its own fetch (equal URLs, another request)."""
    asked, client_kw, server_kw = holding_fetches(monkeypatch)
    first = x509_link(client=client_kw, server=server_kw)
    first.client.connect(first.now)
    first.run(stop=lambda link: len(asked) == 1)
    client_config, server_config = x509_configs(client=client_kw, server=server_kw)
    second = MemoryLink(client_config, server_config, endpoint=first.server, now=first.now + 1,
                        allowed_alerts=X509_MODE_ALERTS)
    second.client.connect(second.now)
    second.run(stop=lambda link: len(asked) == 2)
    old, new = asked
    assert old.urls_and_hashes == new.urls_and_hashes
    lost = ProtocolError("fetch failed", AlertDescription.certificate_unobtainable)
    second.server.supply_certificate_chain(CLIENT_ADDR, lost, second.now, request=old)
    assert second.server_conn is not None
    assert second.server_conn.state is ConnectionState.HANDSHAKING
    p = x509_pki()
    second.server.supply_certificate_chain(
        CLIENT_ADDR, (p.client.der, p.ca.der), second.now, request=new
    )
    second.run()
    assert established(second)


@pytest.mark.req("CRT-7")
def test_a_fetched_chain_past_the_last_record_number_abandons_the_association(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 6347 §4.1: when the chain comes (RFC 6066 §5) and the server's epoch-0 numbers are
    used up, its next flight cannot be sent: the association ends with
    `SequenceNumbersExhausted`, as in receive_datagram, and supply_certificate_chain does not
    raise."""
    asked, client_kw, server_kw = holding_fetches(monkeypatch)
    link = x509_link(client=client_kw, server=server_kw)
    link.client.connect(link.now)
    link.run(stop=lambda lk: len(asked) == 1)
    conn = link.server_conn
    assert conn is not None
    layer = record_layer(conn)
    layer.set_next_sequence_number(0, MAX_SEQUENCE_NUMBER - 1)
    layer.seal(ContentType.alert, b"\x01\x00", 0)  # the last number of epoch 0
    p = x509_pki()
    link.server.supply_certificate_chain(
        CLIENT_ADDR, (p.client.der, p.ca.der), link.now, request=asked[0]
    )
    assert conn.state is ConnectionState.CLOSED
    assert isinstance(conn.error, SequenceNumbersExhausted) and conn.error.epoch == 0
    assert conn.datagrams_to_send(link.now) == []


# -- the server's choice among its credentials (RFC 7250 §4.1, RFC 6066 §6) -------------------


def choose(extensions: tuple[Any, ...], **config: Any) -> Any:
    return choose_server_parameters(hello(suites=(ECDHE,), extensions=(*EC, *extensions)),
                                    ServerConfig(**config))


def test_the_first_server_certificate_type_the_server_holds_is_chosen() -> None:
    """RFC 7250 §4.1: the client's preference order; a type we hold no credential for is
    passed over, and the first we hold is taken."""
    p = x509_pki()
    both = {"raw_public_key": server_key(), "certificates": [p.certified(p.server)]}
    rpk_first = ServerCertificateType((CertificateType.RawPublicKey, CertificateType.X509))
    assert choose((rpk_first,), **both).own.certificate_type == CertificateType.RawPublicKey
    x509_first = ServerCertificateType((CertificateType.X509, CertificateType.RawPublicKey))
    only_rpk = choose((x509_first,), raw_public_key=server_key())
    assert only_rpk.own.certificate_type == CertificateType.RawPublicKey


def test_a_client_offering_only_raw_keys_to_an_x509_only_server_is_refused() -> None:
    """RFC 7250 §4.2: a client certificate type the server cannot authenticate is
    unsupported_certificate."""
    p = x509_pki()
    with pytest.raises(ProtocolError) as info:
        choose((ClientCertificateType((CertificateType.RawPublicKey,)),),
               certificates=[p.certified(p.server)], client_trust_anchors=[p.root.der],
               wall_clock=NOW.timestamp)
    assert info.value.alert is A.unsupported_certificate
    verifier = choose((ServerCertificateType((CertificateType.RawPublicKey,)),
                       ClientCertificateType((CertificateType.X509,
                                              CertificateType.RawPublicKey))),
                      raw_public_key=server_key(), client_public_keys=[client_key().spki],
                      ).client_verifier
    assert verifier.certificate_type == CertificateType.RawPublicKey


def test_an_indication_of_none_of_our_cas_gets_the_default_chain() -> None:
    """RFC 6066 §6: when the client's trusted_ca_keys names none of our CAs, the server sends
    its default (first) chain and no empty trusted_ca_keys answer."""
    p = x509_pki()
    other = server_leaf(root("other root"))
    assert isinstance(other.key, x509_module.ec.EllipticCurvePrivateKey)
    chains = [p.certified(p.server), CertifiedKey((other.der,), PrivateKey(other.key))]
    unknown = TrustedCaKeys(((IdentifierType.key_sha1_hash, b"\x07" * 20),))
    choice = choose((unknown,), certificates=chains)
    assert Certificate.decode(choice.certificate_body).certificates == chains[0].chain
    assert find_extension(choice.answers, TrustedCaKeys) is None


def test_a_certificate_server_with_raw_key_clients_is_in_certificate_mode() -> None:
    """ERR-1 (RFC 7925 §4.4.1 narrowing RFC 5246 §7.2): a server that sends its X.509 chain
    runs in certificate mode even when it authenticates its client by raw public key, so it
    may send the certificate alerts (bad_certificate for an unprovisioned key, say) that the
    raw-key mode replaces with handshake_failure."""
    p = x509_pki()
    choice = choose((ClientCertificateType((CertificateType.RawPublicKey,)),),
                    certificates=[p.certified(p.server)], raw_public_key=server_key(),
                    client_public_keys=[client_key().spki])
    assert choice.own.certificate_type == CertificateType.X509
    assert choice.client_verifier.certificate_type == CertificateType.RawPublicKey
    assert MODE_ALERTS[choice.mode] == X509_MODE_ALERTS


@pytest.mark.req("CRT-1", "CRT-8")
def test_a_root_left_out_of_the_chain_still_answers_an_indication_of_it() -> None:
    """A full-chain file (leaf, CA, root) sends no root (CRT-1), but a client that names that
    root in trusted_ca_keys by its certificate hash (RFC 6066 §6: cert_sha1_hash) still gets
    the chain under it: the withheld root counts among the chain's authorities."""
    chains = []
    for name in ("root A", "root B"):
        top = root(name)
        middle = intermediate(top, f"CA under {name}", authority_key_id=False)
        leaf = server_leaf(middle, authority_key_id=False)
        assert isinstance(leaf.key, x509_module.ec.EllipticCurvePrivateKey)
        chains.append(CertifiedKey((leaf.der, middle.der, top.der), PrivateKey(leaf.key)))
        assert chains[-1].chain == (leaf.der, middle.der)
        assert chains[-1].withheld_root == top.der
    root_b = chains[1].withheld_root
    assert root_b is not None
    named = TrustedCaKeys(((IdentifierType.cert_sha1_hash, hashlib.sha1(root_b).digest()),))
    choice = choose((named,), certificates=chains)
    assert Certificate.decode(choice.certificate_body).certificates == chains[1].chain
    assert find_extension(choice.answers, TrustedCaKeys) == TrustedCaKeys()
