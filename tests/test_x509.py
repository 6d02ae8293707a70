"""X.509 path validation, server names and client EUI-64s (iotdtls.crypto.x509): every check
and the alert each failure carries. Certificates come from tests.pki, made per test run."""

from __future__ import annotations

import datetime
import hashlib
import math
import sys
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    ObjectIdentifier,
)

from iotdtls.crypto import x509 as x509_module
from iotdtls.crypto.x509 import (
    DEFAULT_MAX_CHAIN_DEPTH,
    MAX_CHAIN_DEPTH_LIMIT,
    TrustStore,
    is_self_signed,
    leaf_public_key_spki,
    load_certificates,
    verify_client_chain,
    verify_server_chain,
)
from iotdtls.errors import AlertDescription, ConfigError, ProtocolError
from iotdtls.identity import SHOWN_NAME_CHARS, CertificateIdentity, shown_name
from iotdtls.messages.constants import IdentifierType
from tests.local_http import LocalHttpServer, Route
from tests.pki import (
    CLIENT_AUTH,
    NOW,
    SERVER_AUTH,
    YEAR,
    Issued,
    ca_chain,
    chain_der,
    client_leaf,
    dns,
    intermediate,
    ip,
    issue,
    p256,
    root,
    server_leaf,
)

A = AlertDescription
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def anchor() -> Issued:
    return root()


@pytest.fixture(scope="module")
def store(anchor: Issued) -> TrustStore:
    return TrustStore([anchor.der])


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def server(chain: Sequence[bytes], store: TrustStore, name: str | None = "localhost",
           *, when: datetime.datetime = NOW, max_depth: int = DEFAULT_MAX_CHAIN_DEPTH) -> str:
    return verify_server_chain(chain, store, server_name=name, when=when,
                               max_depth=max_depth)[0].name


def client(chain: Sequence[bytes], store: TrustStore, *, when: datetime.datetime = NOW,
           max_depth: int = DEFAULT_MAX_CHAIN_DEPTH) -> str:
    return verify_client_chain(chain, store, when=when, max_depth=max_depth)[0].name


def refused(alert: AlertDescription, call: Callable[..., object], *args: Any,
            **kwargs: Any) -> str:
    """Run `call(*args, **kwargs)`, expect a ProtocolError carrying `alert`; return its
    one-line message."""
    with pytest.raises(ProtocolError) as info:
        call(*args, **kwargs)
    assert info.value.alert is alert, str(info.value)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# -- loading and the trust store --------------------------------------------------------------


def test_load_certificates_reads_pem_blocks_in_order_and_single_der(anchor: Issued) -> None:
    leaf = server_leaf(anchor)
    assert load_certificates(leaf.pem + b"\n" + anchor.pem) == (leaf.der, anchor.der)
    assert load_certificates(anchor.der) == (anchor.der,)
    key_pem = p256().private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    assert load_certificates(key_pem + leaf.pem) == (leaf.der,)


@pytest.mark.parametrize("data", [b"", b"hello", b"-----BEGIN CERTIFICATE-----\nxx\n", b"\x30\x03"])
def test_load_certificates_refuses_anything_else_in_one_line(data: bytes) -> None:
    with pytest.raises(ConfigError) as info:
        load_certificates(data)
    assert "\n" not in str(info.value)


def test_load_certificates_refuses_der_with_trailing_bytes(anchor: Issued) -> None:
    with pytest.raises(ConfigError):
        load_certificates(anchor.der + b"\x00")


@pytest.mark.req("CRT-1")
def test_trust_store_is_immutable_deduplicated_and_checks_its_anchors(anchor: Issued) -> None:
    other = root("other root")
    store = TrustStore([anchor.der, other.der, anchor.der])
    assert len(store) == 2
    assert store.anchors == (anchor.der, other.der)
    for attribute in ("_anchors", "anchors", "extra"):
        with pytest.raises(AttributeError):
            setattr(store, attribute, ())
    with pytest.raises(ConfigError, match="anchor 2"):
        TrustStore([anchor.der, b"not a certificate"])
    with pytest.raises(ConfigError):
        TrustStore([])


@pytest.mark.req("CRT-8")
def test_trusted_authorities_hash_each_anchor_key_as_rfc6066_says(
    anchor: Issued, rsa_key: rsa.RSAPrivateKey
) -> None:
    rsa_root = root("rsa root", key=rsa_key)
    authorities = TrustStore([anchor.der, rsa_root.der]).trusted_authorities()
    point = anchor.cert.public_key().public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.UncompressedPoint)
    modulus = rsa_key.public_key().public_numbers().n
    assert authorities == (
        (IdentifierType.key_sha1_hash, hashlib.sha1(point).digest()),
        (IdentifierType.key_sha1_hash, hashlib.sha1(modulus.to_bytes(256, "big")).digest()),
    )


# -- path validation (CRT-1, CRT-5, CRT-6) ----------------------------------------------------


@pytest.mark.req("CRT-1")
def test_server_chain_validates_to_the_anchor_without_the_root(
    anchor: Issued, store: TrustStore
) -> None:
    chain = chain_der(server_leaf(anchor))
    identity, key = verify_server_chain(chain, store, server_name="localhost", when=NOW,
                                        max_depth=DEFAULT_MAX_CHAIN_DEPTH)
    assert key.spki == leaf_public_key_spki(chain)  # the leaf's, for the signature checks
    assert identity.name == "localhost"
    assert identity.chain == chain
    assert str(identity) == "certificate localhost"


@pytest.mark.req("CRT-1")
def test_a_root_sent_along_is_harmless(anchor: Issued, store: TrustStore) -> None:
    assert server(chain_der(server_leaf(anchor), anchor), store) == "localhost"


@pytest.mark.req("CRT-1")
def test_chain_from_an_unknown_ca_is_unknown_ca(store: TrustStore) -> None:
    stranger = root("stranger")
    refused(A.unknown_ca, lambda: server(chain_der(server_leaf(stranger)), store))
    refused(A.unknown_ca, lambda: server(chain_der(server_leaf(stranger), stranger), store))
    refused(A.unknown_ca, lambda: server(chain_der(issue("localhost", None, san=dns("localhost"))),
                                         store))


@pytest.mark.req("CRT-1")
@pytest.mark.parametrize("max_depth", [0, 1, 2])
def test_a_chain_with_its_own_root_under_another_ca_says_no_issuer_is_trusted(
    store: TrustStore, max_depth: int
) -> None:
    stranger = root("stranger")
    message = refused(A.unknown_ca, server, chain_der(server_leaf(stranger), stranger), store,
                      max_depth=max_depth)
    assert message == "server chain leads to no trusted CA: no issuer of it among the trust anchors"
    top = root("another root")
    middle = intermediate(top, "another issuing CA")
    message = refused(A.unknown_ca, client, chain_der(client_leaf(middle), middle, top), store,
                      max_depth=max(max_depth, 1))
    assert message == "client chain leads to no trusted CA: no issuer of it among the trust anchors"


@pytest.mark.req("CRT-1")
def test_missing_intermediate_is_unknown_ca() -> None:
    top, (middle,) = ca_chain(1)
    refused(A.unknown_ca, lambda: server(chain_der(server_leaf(middle)), TrustStore([top.der])))


@pytest.mark.req("CRT-1", "CRT-6")
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_intermediates_up_to_max_depth_are_accepted_and_beyond_are_unknown_ca(
    depth: int,
) -> None:
    top, cas = ca_chain(depth)
    store = TrustStore([top.der])
    chain = chain_der(server_leaf(cas[-1] if cas else top), *reversed(cas))
    assert server(chain, store, max_depth=depth) == "localhost"
    if depth:
        message = refused(A.unknown_ca, lambda: server(chain, store, max_depth=depth - 1))
        plural = "s" * (depth != 1)  # "needs 1 CA certificates" was said (probe BW #7)
        assert f"needs {depth} CA certificate{plural}, more than the allowed {depth - 1}" in (
            message)
        # with the root sent too, the chain is refused on its length alone
        longer = (*chain, top.der)
        refused(A.unknown_ca, lambda: server(longer, store, max_depth=depth - 1))


@pytest.mark.req("CRT-6")
def test_an_overlong_chain_is_refused_before_it_is_parsed(
    anchor: Issued, store: TrustStore
) -> None:
    longest = DEFAULT_MAX_CHAIN_DEPTH + 2  # leaf, CAs, root
    chain = (server_leaf(anchor).der, *[b"junk"] * longest)
    assert "deeper than" in refused(A.unknown_ca, server, chain, store)
    refused(A.bad_certificate, server, chain[:longest], store)


@pytest.mark.req("CRT-1")
def test_authority_key_identifiers_are_not_required() -> None:
    top = root(authority_key_id=False)
    middle = intermediate(top, "intermediate", authority_key_id=False)
    leaf = server_leaf(middle, authority_key_id=False)
    assert server(chain_der(leaf, middle), TrustStore([top.der])) == "localhost"


@pytest.mark.req("CRT-6")
def test_default_max_chain_depth_allows_two_intermediates_and_bad_values_are_config_errors(
    anchor: Issued, store: TrustStore
) -> None:
    assert DEFAULT_MAX_CHAIN_DEPTH == 2
    top, cas = ca_chain(3)
    chain = chain_der(server_leaf(cas[-1]), *reversed(cas))
    refused(A.unknown_ca, lambda: server(chain, TrustStore([top.der])))
    for bad in (-1, 17):
        with pytest.raises(ConfigError):
            server(chain_der(server_leaf(anchor)), store, max_depth=bad)


@pytest.mark.req("CRT-1")
@pytest.mark.parametrize("which", ["leaf", "intermediate"])
def test_a_bad_signature_in_the_chain_is_bad_certificate(which: str) -> None:
    top, (middle,) = ca_chain(1)
    if which == "intermediate":
        middle = intermediate(top, "intermediate 1", key=middle.key, signing_key=p256())
    leaf = server_leaf(middle, signing_key=p256() if which == "leaf" else None)
    message = refused(A.bad_certificate,
                      lambda: server(chain_der(leaf, middle), TrustStore([top.der])))
    assert "signature" in message


@pytest.mark.req("CRT-1")
@pytest.mark.parametrize(
    ("when", "cert_kind"),
    [(NOW + 2 * YEAR, "leaf"), (NOW - 2 * YEAR, "leaf"), (NOW, "intermediate"), (NOW, "anchor")],
)
def test_certificates_outside_their_validity_are_certificate_expired(
    when: datetime.datetime, cert_kind: str
) -> None:
    short = {"not_before": NOW - 2 * DAY, "not_after": NOW - DAY}
    top = root(**(short if cert_kind == "anchor" else {}))
    middle = intermediate(top, "intermediate", **(short if cert_kind == "intermediate" else {}))
    leaf = server_leaf(middle)
    refused(A.certificate_expired,
            lambda: server(chain_der(leaf, middle), TrustStore([top.der]), when=when))


@pytest.mark.req("CRT-1")
def test_only_the_certificates_of_the_path_must_be_valid() -> None:
    """RFC 5280 §6.1.3 (a)(2): an expired certificate sent along but on no path (an old copy of
    a renewed root, an expired cross-sign, anything else) does not fail a valid chain; an
    expired one on the path is named."""
    top = root(not_before=NOW - DAY)
    old_top = root("iotdtls test root", key=top.key, not_before=NOW - 2 * YEAR,
                   not_after=NOW - DAY)
    old_ca = root("old ca", not_before=NOW - 2 * YEAR, not_after=NOW - DAY)
    cross = issue("iotdtls test root", old_ca, key=top.key, ca=True,
                  not_before=NOW - 2 * YEAR, not_after=NOW - DAY)
    middle = intermediate(top, "intermediate")
    leaf = server_leaf(middle)
    store = TrustStore([top.der])
    for extra in (old_top, cross, root("unrelated", not_after=NOW - DAY)):
        assert server(chain_der(leaf, middle, extra), store) == "localhost"
    expired_middle = intermediate(top, "intermediate", key=middle.key, not_after=NOW - DAY)
    message = refused(A.certificate_expired, server,
                      chain_der(leaf, expired_middle, old_top), store)
    assert "certificate 1 is not valid" in message
    # ... also behind a valid CA certificate, or behind one on no path at any time
    low = intermediate(middle, "low")
    message = refused(A.certificate_expired, server,
                      chain_der(server_leaf(low), low, expired_middle), store)
    assert "certificate 2 is not valid" in message
    long_ago = root("long ago", not_before=NOW - 3 * YEAR, not_after=NOW - 2 * YEAR)
    message = refused(A.certificate_expired, server,
                      chain_der(leaf, long_ago, expired_middle), store)
    assert "certificate 2 is not valid" in message


@pytest.mark.req("CRT-1")
def test_a_ca_outside_its_validity_is_named_even_when_no_moment_suits_the_whole_path() -> None:
    """RFC 5280 §6.1.3 (a)(2): a leaf issued after its CA expired (or before its CA becomes
    valid, or after the anchor expired) fails on the CA's validity, as OpenSSL says
    ("certificate has expired" at depth 1): certificate_expired naming the certificate, never
    the verifier's own words, although no moment exists when every certificate is valid."""
    top = root(not_before=NOW - 2 * YEAR)
    expired = intermediate(top, "expired ca", not_before=NOW - 100 * DAY, not_after=NOW - DAY)
    not_yet = intermediate(top, "future ca", not_before=NOW + DAY, not_after=NOW + YEAR)
    store = TrustStore([top.der])
    for middle in (expired, not_yet):
        leaf = server_leaf(middle, not_before=NOW - DAY // 2, not_after=NOW + DAY // 2)
        message = refused(A.certificate_expired, server, chain_der(leaf, middle), store)
        assert message.startswith("server certificate 1 is not valid at"), message
        assert "validation time" not in message
    old_top = root("old root", not_before=NOW - 2 * YEAR, not_after=NOW - DAY)
    leaf = server_leaf(old_top, not_before=NOW - DAY // 2)
    message = refused(A.certificate_expired, server, chain_der(leaf), TrustStore([old_top.der]))
    assert message.startswith(
        "the trust anchor 'CN=old root,O=iotdtls tests' of the server chain is not valid at "
    ), message


def test_validity_is_checked_at_the_time_given_and_naive_times_are_utc(
    anchor: Issued, store: TrustStore
) -> None:
    leaf = server_leaf(anchor, not_before=NOW - DAY, not_after=NOW + DAY)
    assert server(chain_der(leaf), store, when=NOW.replace(tzinfo=None)) == "localhost"
    later = (NOW + 2 * DAY).astimezone(datetime.timezone(datetime.timedelta(hours=5)))
    refused(A.certificate_expired, lambda: server(chain_der(leaf), store, when=later))


@pytest.mark.req("CRT-1")
def test_issuer_that_is_not_a_ca_is_unknown_ca(anchor: Issued, store: TrustStore) -> None:
    for middle in (issue("not a ca", anchor), issue("no constraints", anchor,
                                                    basic_constraints=False, key_usage=False)):
        leaf = server_leaf(middle)
        refused(A.unknown_ca, server, chain_der(leaf, middle), store)


@pytest.mark.req("CRT-1")
def test_a_ca_without_key_usage_is_fine_but_one_without_key_cert_sign_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 5280 §6.1.4 (n): keyCertSign is checked when keyUsage is present; `openssl req
    -x509` makes CA certificates without it. basicConstraints cA stays required. The CA is
    named whatever the depth allowed: below the one CA sent, the diagnosis's run again with
    room for it fails too (it needs no more CAs than allowed: it is wrong); at its depth,
    there is no run again (it would only repeat the first)."""
    top = root(key_usage=False)
    middle = intermediate(top, "intermediate", key_usage=False)
    store = TrustStore([top.der])
    assert server(chain_der(server_leaf(middle), middle), store) == "localhost"
    assert server(chain_der(server_leaf(top)), store) == "localhost"
    signing_only = x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )
    no_cert_sign = intermediate(top, "no cert sign", key_usage=False,
                                extensions=[(signing_only, True)])
    message = refused(A.unknown_ca, server,
                      chain_der(server_leaf(no_cert_sign), no_cert_sign), store)
    assert message.endswith(
        "the keyUsage of certificate 1 (CA) does not allow keyCertSign"), message
    for max_depth in (0, 1):
        counts = _count_signature_work(monkeypatch)
        assert refused(A.unknown_ca, server, chain_der(server_leaf(no_cert_sign), no_cert_sign),
                       store, max_depth=max_depth) == message
        assert counts["verifier"] == 2 - max_depth, (max_depth, counts)
    # a CA without keyUsage at all is skipped: the one without keyCertSign is named
    plain_ca = intermediate(top, "no key usage", key_usage=False)
    below = intermediate(plain_ca, "no cert sign below", key_usage=False,
                         extensions=[(signing_only, True)])
    message = refused(A.unknown_ca, server, chain_der(server_leaf(below), plain_ca, below), store)
    assert message.endswith(
        "the keyUsage of certificate 2 (CA) does not allow keyCertSign"), message
    signing_root = root("signing root", key_usage=False, extensions=[(signing_only, True)])
    message = refused(A.unknown_ca, server, chain_der(server_leaf(signing_root)),
                      TrustStore([signing_root.der]))
    assert message.endswith("the keyUsage of trust anchor 'CN=signing root,O=iotdtls tests' "
                            "(CA) does not allow keyCertSign"), message
    not_a_ca = issue("no constraints", top, basic_constraints=False, key_usage=False)
    refused(A.unknown_ca, server, chain_der(server_leaf(not_a_ca), not_a_ca), store)


@pytest.mark.req("CRT-1")
def test_path_length_constraint_is_enforced() -> None:
    top = root(path_length=0)
    middle = intermediate(top, "intermediate")
    refused(A.unknown_ca,
            lambda: server(chain_der(server_leaf(middle), middle), TrustStore([top.der])))


@pytest.mark.req("CRT-1")
def test_leaf_key_must_be_p256(store: TrustStore, anchor: Issued,
                               rsa_key: rsa.RSAPrivateKey) -> None:
    for key, shown in ((rsa_key, "RSA-2048"), (ec.generate_private_key(ec.SECP384R1()),
                                                "secp384r1"),
                       (ed25519.Ed25519PrivateKey.generate(), "Ed25519")):
        leaf = server_leaf(anchor, key=key)
        assert shown in refused(A.unsupported_certificate, server, chain_der(leaf), store)
        refused(A.unsupported_certificate, client, chain_der(leaf), store)


@pytest.mark.req("CRT-1")
def test_an_rsa_intermediate_is_fine(rsa_key: rsa.RSAPrivateKey) -> None:
    top = root()
    middle = intermediate(top, "rsa intermediate", key=rsa_key)
    assert server(chain_der(server_leaf(middle), middle), TrustStore([top.der])) == "localhost"


@pytest.mark.req("CRT-1")
def test_key_usage_must_allow_digital_signature_when_present(
    anchor: Issued, store: TrustStore
) -> None:
    no_signing = server_leaf(anchor, digital_signature=False)
    assert "digitalSignature" in refused(A.unsupported_certificate,
                                         lambda: server(chain_der(no_signing), store))
    assert server(chain_der(server_leaf(anchor, key_usage=False)), store) == "localhost"


@pytest.mark.req("CRT-1", "CRT-4")
def test_extended_key_usage_must_name_the_role_when_present(
    anchor: Issued, store: TrustStore
) -> None:
    client_only = server_leaf(anchor, eku=[CLIENT_AUTH])
    refused(A.unsupported_certificate, lambda: server(chain_der(client_only), store))
    server_only = client_leaf(anchor, eku=[SERVER_AUTH])
    refused(A.unsupported_certificate, lambda: client(chain_der(server_only), store))
    anything = [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE]
    assert server(chain_der(server_leaf(anchor, eku=anything)), store) == "localhost"
    assert server(chain_der(server_leaf(anchor, eku=None)), store) == "localhost"
    assert client(chain_der(client_leaf(anchor, eku=None)), store) == "01-23-45-67-89-AB-CD-EF"


@pytest.mark.req("CRT-1")
def test_malformed_input_is_bad_certificate(anchor: Issued, store: TrustStore) -> None:
    refused(A.bad_certificate, lambda: server((), store))
    refused(A.bad_certificate, lambda: server((b"\x30\x00",), store))
    refused(A.bad_certificate, lambda: server((server_leaf(anchor).der, b"junk"), store))
    critical = (x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
                True)
    odd = server_leaf(anchor, extensions=[critical])
    refused(A.bad_certificate, lambda: server(chain_der(odd), store))


@pytest.mark.req("CRT-1")
def test_chain_defects_the_verifier_reports_in_its_own_terms_are_worded_plainly(
    anchor: Issued, store: TrustStore
) -> None:
    """The verifier's Rust debug text ("AlgorithmIdentifier { oid: ...", "Tag { value: 4, ...")
    never reaches the user: the certificate at fault is named in one plain line."""

    def plain(message: str) -> str:
        assert "{" not in message and "PhantomData" not in message, message
        return message

    ed_root = root(key=ed25519.Ed25519PrivateKey.generate())
    message = plain(refused(A.unknown_ca, server, chain_der(server_leaf(ed_root)),
                            TrustStore([ed_root.der])))
    assert "trust anchor" in message and "is Ed25519" in message
    p256_middle = intermediate(ed_root, "p-256 ca")  # an allowed key before the forbidden one
    message = plain(refused(A.unknown_ca, server, chain_der(server_leaf(p256_middle), p256_middle),
                            TrustStore([ed_root.der])))
    assert "trust anchor" in message and "is Ed25519" in message
    ed_middle = intermediate(anchor, "ed25519 ca", key=ed25519.Ed25519PrivateKey.generate())
    message = plain(refused(A.unknown_ca, server, chain_der(server_leaf(ed_middle), ed_middle),
                            store))
    assert "certificate 1 (CA) is Ed25519" in message
    # a certificate sent that issued none of the others is no CA of the chain: not named
    stray = intermediate(anchor, "stray ed25519 ca", key=ed25519.Ed25519PrivateKey.generate())
    message = plain(refused(A.unknown_ca, server,
                            chain_der(server_leaf(ed_middle), stray, ed_middle), store))
    assert "certificate 2 (CA) is Ed25519" in message
    leaf = server_leaf(anchor)
    sha224 = (
        x509.CertificateBuilder(extensions=list(leaf.cert.extensions))
        .subject_name(leaf.cert.subject).issuer_name(anchor.cert.subject)
        .public_key(leaf.cert.public_key()).serial_number(1)
        .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
        .sign(anchor.key, hashes.SHA224())
    )
    sha224_der = sha224.public_bytes(serialization.Encoding.DER)
    message = plain(refused(A.unknown_ca, server, (sha224_der,), store))
    assert "certificate 0 is signed with ECDSA with SHA224" in message
    garbage_usage = (x509.UnrecognizedExtension(ObjectIdentifier("2.5.29.15"), b"\x04\x00"), True)
    odd_leaf = server_leaf(anchor, key_usage=False, extensions=[garbage_usage])
    assert plain(refused(A.bad_certificate, server, chain_der(odd_leaf), store)) == (
        "server certificate 0 has a malformed extension")
    garbage_ca = (x509.UnrecognizedExtension(ObjectIdentifier("2.5.29.19"), b"\x01\x01"), True)
    odd_ca = intermediate(anchor, "odd", basic_constraints=False, extensions=[garbage_ca])
    assert plain(refused(A.bad_certificate, client, chain_der(client_leaf(odd_ca), odd_ca),
                         store)) == "client certificate 1 has a malformed extension"


def test_a_self_signed_certificate_not_among_the_anchors_is_said_to_be_so(
    anchor: Issued, store: TrustStore,
) -> None:
    """`openssl req -x509` (cA asserted) against an unrelated CA was "certificate rejected:
    basicConstraints.cA must not be asserted in an EE certificate", as if the certificate were
    wrong; what is wrong is that no anchor vouches for it. unknown_ca, on both sides."""
    expected = (" certificate rejected: a self-signed certificate that is not among the trust "
                "anchors (give it as an anchor to pin it)")
    openssl_like = issue("localhost", None, ca=True, san=dns("localhost"))
    assert refused(A.unknown_ca, server, chain_der(openssl_like), store) == "server" + expected
    device = issue("01-23-45-67-89-AB-CD-EF", None, ca=True)
    assert refused(A.unknown_ca, client, chain_der(device), store) == "client" + expected
    end_entity = issue("localhost", None, san=dns("localhost"))  # cA not asserted
    assert refused(A.unknown_ca, server, chain_der(end_entity), store) == "server" + expected
    # sent with a CA certificate of its name and key that an anchor issued: a path by names
    # and signatures the verifier refuses (cA asserted in the leaf), then named the same way
    copy = intermediate(anchor, "localhost", key=openssl_like.key)
    assert refused(A.unknown_ca, server, chain_der(openssl_like, copy), store) \
        == "server" + expected
    # Given as an anchor, it is trusted (pinned).
    assert server(chain_der(openssl_like), TrustStore([openssl_like.der])) == "localhost"


@pytest.mark.req("CRT-1")
def test_a_pinned_leaf_is_trusted_directly(anchor: Issued) -> None:
    leaf = server_leaf(anchor)
    assert server(chain_der(leaf), TrustStore([leaf.der])) == "localhost"


@pytest.mark.req("CRT-1", "CRT-3", "CRT-4")
def test_a_pinned_self_signed_ca_certificate_is_trusted_directly_with_the_leaf_checks() -> None:
    # what `openssl req -x509` makes: self-signed, basicConstraints cA asserted
    pinned = issue("localhost", None, ca=True, san=dns("localhost"))
    assert server(chain_der(pinned), TrustStore([pinned.der])) == "localhost"
    device = issue("01-23-45-67-89-AB-CD-EF", None, ca=True)
    assert client(chain_der(device), TrustStore([device.der])) == "01-23-45-67-89-AB-CD-EF"
    # still checked: the name, the EUI-64, the validity, the key type and the key usage
    refused(A.bad_certificate, server, chain_der(pinned), TrustStore([pinned.der]), "example.com")
    no_eui = issue("device", None, ca=True)
    assert "EUI-64" in refused(A.bad_certificate, client, chain_der(no_eui),
                               TrustStore([no_eui.der]))
    expired = issue("localhost", None, ca=True, san=dns("localhost"), not_after=NOW - DAY)
    refused(A.certificate_expired, server, chain_der(expired), TrustStore([expired.der]))
    p384 = issue("localhost", None, ca=True, san=dns("localhost"),
                 key=ec.generate_private_key(ec.SECP384R1()))
    refused(A.unsupported_certificate, server, chain_der(p384), TrustStore([p384.der]))
    no_signing = issue("localhost", None, ca=True, san=dns("localhost"), digital_signature=False)
    assert "digitalSignature" in refused(A.unsupported_certificate, server,
                                         chain_der(no_signing), TrustStore([no_signing.der]))
    # a CA certificate is no leaf when it is not itself an anchor
    top = root()
    below = issue("localhost", top, ca=True, san=dns("localhost"))
    refused(A.bad_certificate, server, chain_der(below), TrustStore([top.der]))


@pytest.mark.req("CRT-1")
def test_leaf_public_key_spki_is_the_leaf_key(anchor: Issued) -> None:
    leaf = server_leaf(anchor)
    assert leaf_public_key_spki(chain_der(leaf, anchor)) == leaf.spki
    refused(A.bad_certificate, lambda: leaf_public_key_spki(()))
    refused(A.bad_certificate, lambda: leaf_public_key_spki((b"junk",)))


# -- server names (CRT-3) ---------------------------------------------------------------------


@pytest.mark.req("CRT-3")
@pytest.mark.parametrize(
    ("presented", "reference", "matched"),
    [
        (["localhost"], "localhost", "localhost"),
        (["LocalHost"], "LOCALHOST.", "localhost"),
        (["other.example", "coap.example.org."], "coap.example.org", "coap.example.org"),
        (["*.example.com"], "node7.example.com", "node7.example.com"),
        (["xn--bcher-kva.example"], "bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_server_name_matches_a_dns_san(anchor: Issued, store: TrustStore,
                                       presented: list[str], reference: str,
                                       matched: str) -> None:
    assert server(chain_der(server_leaf(anchor, *presented)), store, reference) == matched


@pytest.mark.req("CRT-3")
@pytest.mark.parametrize(
    ("presented", "reference"),
    [
        (["localhost"], "example.com"),
        (["*.example.com"], "a.b.example.com"),
        (["*.example.com"], "example.com"),
        (["*.com"], "example.com"),
        (["f*.example.com"], "foo.example.com"),
        (["a.*.example.com"], "a.b.example.com"),
        (["*.*.example.com"], "a.b.example.com"),
        (["node.example.com"], "node.example.com.evil"),
        (["127.0.0.1"], "127.0.0.1"),
    ],
)
def test_server_name_mismatch_is_bad_certificate(anchor: Issued, store: TrustStore,
                                                 presented: list[str], reference: str) -> None:
    leaf = server_leaf(anchor, *presented)
    message = refused(A.bad_certificate, lambda: server(chain_der(leaf), store, reference))
    assert "not valid for" in message


@pytest.mark.req("CRT-3")
def test_common_name_counts_only_without_a_dns_srv_or_uri_subject_alt_name(
    anchor: Issued, store: TrustStore
) -> None:
    """RFC 6125 §6.4.4: a DNS-ID, SRV-ID or URI-ID bars the CN; other subjectAltNames (an
    iPAddress, an rfc822Name) do not."""
    cn_only = issue("coap.example.org", anchor, eku=[SERVER_AUTH])
    assert server(chain_der(cn_only), store, "coap.example.org") == "coap.example.org"
    refused(A.bad_certificate, lambda: server(chain_der(cn_only), store, "other.example.org"))
    with_san = issue("coap.example.org", anchor, san=dns("other.example.org"))
    refused(A.bad_certificate, lambda: server(chain_der(with_san), store, "coap.example.org"))
    srv = x509.OtherName(ObjectIdentifier("1.3.6.1.5.5.7.8.7"), b"\x16\x11_coap.example.org")
    for barring in ([x509.UniformResourceIdentifier("coaps://other.example.org")], [srv]):
        barred = issue("coap.example.org", anchor, san=barring)
        refused(A.bad_certificate, server, chain_der(barred), store, "coap.example.org")
    for other in ([x509.RFC822Name("a@example.org")], ip("192.0.2.7")):
        leaf = issue("coap.example.org", anchor, san=other)
        assert server(chain_der(leaf), store, "coap.example.org") == "coap.example.org"
    gateway = issue("coap.example.org", anchor, san=ip("192.0.2.7"))
    assert server(chain_der(gateway), store, "192.0.2.7") == "192.0.2.7"


@pytest.mark.req("CRT-3")
def test_a_wildcard_common_name_names_no_server(anchor: Issued, store: TrustStore) -> None:
    """RFC 7252 §9.1.3.3 (which RFC 7925 §4.4.2 follows): a CN is matched "with the exception
    that certificates with wildcards are not allowed"; the refusal says so. A wildcard in a
    dNSName still counts (RFC 6125 §6.4.3), and a CN is compared case-insensitively."""
    wildcard_cn = issue("*.example.org", anchor)
    message = refused(A.bad_certificate, server, chain_der(wildcard_cn), store,
                      "coap.example.org")
    assert message == (
        "the server certificate is not valid for coap.example.org: its common name "
        "*.example.org has a wildcard, which a common name may not (RFC 7252 §9.1.3.3; "
        "a wildcard counts in a subjectAltName dNSName only)")
    # one that would not cover the name anyway gets the usual refusal
    assert refused(A.bad_certificate, server, chain_der(wildcard_cn), store,
                   "a.b.example.org") == "the server certificate is not valid for a.b.example.org"
    exact = issue("Coap.Example.org.", anchor)
    assert server(chain_der(exact), store, "coap.example.org") == "coap.example.org"
    in_san = issue("*.example.org", anchor, san=dns("*.example.org"))
    assert server(chain_der(in_san), store, "coap.example.org") == "coap.example.org"


@pytest.mark.req("CRT-3", "CRT-4")
def test_a_common_name_taken_as_the_name_must_satisfy_the_name_constraints() -> None:
    """RFC 5280 §4.2.1.10: the verifier applies name constraints to subjectAltNames only; a CN
    used instead (RFC 6125 §6.4.4, RFC 7252 §9.1.3.3) must satisfy them as a dNSName would."""
    top = root()
    plant = x509.NameConstraints(permitted_subtrees=dns("plant-a.example"),
                                 excluded_subtrees=dns("lab.plant-a.example"))
    middle = intermediate(top, "plant a", extensions=[(plant, True)])
    store = TrustStore([top.der])

    def cn_server(common_name: str) -> tuple[bytes, ...]:
        return chain_der(issue(common_name, middle, eku=[SERVER_AUTH]), middle)

    assert server(cn_server("gw.plant-a.example"), store, "gw.plant-a.example") == (
        "gw.plant-a.example")
    assert server(cn_server("plant-a.example"), store, "plant-a.example") == "plant-a.example"
    outside = refused(A.bad_certificate, server, cn_server("gw.other.example"), store,
                      "gw.other.example")
    assert "gw.other.example" in outside and "permitted by CA 'CN=plant a," in outside
    assert "excluded" in refused(A.bad_certificate, server, cn_server("x.lab.plant-a.example"),
                                 store, "x.lab.plant-a.example")
    # the same on the anchor itself, and for a client's EUI-64 in the CN
    constrained_root = root(extensions=[(plant, True)])
    leaf = issue("gw.other.example", constrained_root, eku=[SERVER_AUTH])
    refused(A.bad_certificate, server, chain_der(leaf), TrustStore([constrained_root.der]),
            "gw.other.example")
    refused(A.bad_certificate, client, chain_der(client_leaf(middle), middle), store)
    # constraints on other name forms leave a CN alone
    addresses = [x509.IPAddress(IPv4Network("192.0.2.0/24"))]
    ip_only = x509.NameConstraints(permitted_subtrees=addresses, excluded_subtrees=None)
    other = intermediate(top, "ip only", extensions=[(ip_only, True)])
    assert client(chain_der(client_leaf(other), other), store) == "01-23-45-67-89-AB-CD-EF"
    # a CA extension the verifier does not parse hides the constraints: no CN satisfies them
    bad_aki = x509.UnrecognizedExtension(ObjectIdentifier("2.5.29.35"), b"\x05\x00")
    odd = intermediate(top, "odd", authority_key_id=False, extensions=[(bad_aki, False)])
    assert server(chain_der(server_leaf(odd), odd), store) == "localhost"
    unchecked = refused(A.bad_certificate, server, chain_der(issue("localhost", odd), odd), store)
    assert "name constraints of CA 'CN=odd," in unchecked and "malformed" in unchecked
    # ... for a CN only: a client's EUI-64 in a dNSName subjectAltName is the verifier's to check
    in_san = client_leaf(odd, "device", san=dns("a0:b1:c2:d3:e4:f5:06:17"))
    assert client(chain_der(in_san, odd), store) == "A0-B1-C2-D3-E4-F5-06-17"


@pytest.mark.req("CRT-3", "CRT-4")
def test_name_constraints_on_a_common_name_in_detail() -> None:
    """RFC 5280 §4.2.1.10 for a CN taken as the name: every CA of the path counts (one without
    constraints below a constrained one too), permitted subtrees alone constrain, a trailing
    dot is no label, a base with a leading dot holds only the names below it, and an empty
    base holds every name (OpenSSL takes those spellings; the verifier refuses them as
    malformed when it checks a subjectAltName: bad_certificate)."""
    top = root()
    store = TrustStore([top.der])

    def cn_server(common_name: str, *cas: Issued) -> tuple[bytes, ...]:
        return chain_der(issue(common_name, cas[0], eku=[SERVER_AUTH]), *cas)

    def constrained(name: str, *permitted: str) -> Issued:
        subtrees = x509.NameConstraints(permitted_subtrees=dns(*permitted),
                                        excluded_subtrees=None)
        return intermediate(top, name, extensions=[(subtrees, True)])

    permitted_only = root("plant root", extensions=[(x509.NameConstraints(
        permitted_subtrees=dns("plant-a.example"), excluded_subtrees=None), True)])
    plain = intermediate(permitted_only, "plain")
    message = refused(A.bad_certificate, server, cn_server("gw.other.example", plain),
                      TrustStore([permitted_only.der]), "gw.other.example")
    assert "permitted by CA 'CN=plant root," in message
    plant = constrained("plant a", "plant-a.example")
    assert server(cn_server("gw.plant-a.example.", plant), store, "gw.plant-a.example") == (
        "gw.plant-a.example")
    below = constrained("below plant a", ".plant-a.example.")
    assert server(cn_server("gw.plant-a.example", below), store, "gw.plant-a.example") == (
        "gw.plant-a.example")
    refused(A.bad_certificate, server, cn_server("plant-a.example", below), store,
            "plant-a.example")
    anything = constrained("anything", "")
    assert server(cn_server("gw.any.example", anything), store, "gw.any.example") == (
        "gw.any.example")
    for base in (".plant-a.example", "plant-a.example.", ""):
        odd = constrained("odd plant a", base)
        san = server_leaf(odd, "gw.plant-a.example")
        assert refused(A.bad_certificate, server, chain_der(san, odd), store,
                       "gw.plant-a.example") == (
            "the server certificate is refused by the name constraints of its chain: "
            f"malformed DNS name constraint: {base} (RFC 5280 §4.2.1.10)")
    # a base in the verifier's refusal is shown escaped and bounded (`shown_name`)
    forged = constrained("forged", "x.example\nINFO forged line" + "B" * 1000)
    message = refused(A.bad_certificate, server, chain_der(server_leaf(forged, "a.x"), forged),
                      store, "a.x")
    assert "\n" not in message and "x.example\\nINFO forged line" in message, message
    assert len(message) < 500


@pytest.mark.req("CRT-3")
def test_a_subject_alt_name_outside_the_name_constraints_is_bad_certificate() -> None:
    """RFC 5280 §4.2.1.10: a dNSName outside a permitted subtree (or inside an excluded one)
    got unknown_ca ("no permitted name constraints matched SAN", from the verifier) where a CN
    outside them got bad_certificate (probe BW #5). The path leads to a trust anchor: it is
    the certificate that is not acceptable, bad_certificate (RFC 5246 §7.2.2), both ways."""
    top = root()
    store = TrustStore([top.der])
    plant = intermediate(top, "plant a", extensions=[(x509.NameConstraints(
        permitted_subtrees=dns("plant-a.example"),
        excluded_subtrees=dns("lab.plant-a.example")), True)])
    outside = server_leaf(plant, "gw.other.example")
    assert refused(A.bad_certificate, server, chain_der(outside, plant), store,
                   "gw.other.example") == (
        "the server certificate is refused by the name constraints of its chain: "
        "no permitted name constraints matched SAN (RFC 5280 §4.2.1.10)")
    lab = server_leaf(plant, "x.lab.plant-a.example")
    assert "excluded name constraint matched SAN" in refused(
        A.bad_certificate, server, chain_der(lab, plant), store, "x.lab.plant-a.example")
    cn = issue("gw.other.example", plant, eku=[SERVER_AUTH])
    refused(A.bad_certificate, server, chain_der(cn, plant), store, "gw.other.example")
    assert server(chain_der(server_leaf(plant, "gw.plant-a.example"), plant), store,
                  "gw.plant-a.example") == "gw.plant-a.example"


@pytest.mark.req("CRT-3")
def test_ip_address_names_match_ip_sans_only(anchor: Issued, store: TrustStore) -> None:
    leaf = server_leaf(anchor, san=[*dns("localhost"), *ip("127.0.0.1", "2001:db8::1")])
    assert server(chain_der(leaf), store, "127.0.0.1") == "127.0.0.1"
    assert server(chain_der(leaf), store, "2001:DB8:0::1") == "2001:db8::1"
    refused(A.bad_certificate, lambda: server(chain_der(leaf), store, "127.0.0.2"))
    cn_ip = issue("127.0.0.1", anchor)
    refused(A.bad_certificate, lambda: server(chain_der(cn_ip), store, "127.0.0.1"))


@pytest.mark.req("CRT-3")
def test_a_certificate_identity_is_shown_escaped_and_bounded(
    anchor: Issued, store: TrustStore
) -> None:
    """With no server name checked, the identity's name is the CN as the certificate spells it:
    a newline in it started a forged log line and 5000 characters made one line of them, though
    the identity's `str()` is promised log-safe (probe BW #7). Now escaped and cut after
    SHOWN_NAME_CHARS characters, as a PSK identity is (`shown_identity`); `name` stays whole."""
    forged = "evil\nINFO iotdtls.aio: handshake complete" + "B" * 5000
    with warnings.catch_warnings():  # a CN past 64 characters (RFC 5280's upper bound)
        warnings.simplefilter("ignore", UserWarning)
        leaf = issue(forged, anchor)
        identity, _ = verify_server_chain(chain_der(leaf), store, server_name=None, when=NOW,
                                          max_depth=DEFAULT_MAX_CHAIN_DEPTH)
    assert identity.name == forged
    shown = str(identity)
    assert "\n" not in shown
    assert shown.startswith("certificate evil\\nINFO iotdtls.aio: handshake completeBBB")
    assert shown.endswith(f"B... ({len(forged)} characters)")
    assert len(shown) < 300
    assert str(CertificateIdentity("gw.example")) == "certificate gw.example"
    assert shown_name("x" * SHOWN_NAME_CHARS) == "x" * SHOWN_NAME_CHARS
    # Only what is unprintable is escaped: a backslash and a letter beyond ASCII stay as they
    # are (M18: `shown_name` 5 wrote every character as in a literal, the backslash doubled).
    assert shown_name("gw\\é\t") == "gw\\é\\t"


@pytest.mark.req("CRT-3")
def test_without_a_server_name_the_identity_is_the_first_subject_alt_name(
    anchor: Issued, store: TrustStore
) -> None:
    """Nothing checked, the name is for logs: the subjectAltName the certificate is for, the CN
    only without one (RFC 6125 §6.4.4)."""
    assert server(chain_der(issue("device CN", anchor, san=dns("x.example"))), store,
                  None) == "x.example"
    assert server(chain_der(issue(None, anchor, san=dns("x.example"))), store,
                  None) == "x.example"
    assert server(chain_der(issue("device CN", anchor, san=ip("192.0.2.7"))), store,
                  None) == "192.0.2.7"
    assert server(chain_der(issue("device CN", anchor)), store, None) == "device CN"


@pytest.mark.parametrize("name", ["", ".", "*.example.com", "a..b", "bad name", "-x.example",
                                  "x" * 64 + ".example"])
def test_a_bad_server_name_is_a_config_error(anchor: Issued, store: TrustStore,
                                             name: str) -> None:
    with pytest.raises(ConfigError):
        server(chain_der(server_leaf(anchor)), store, name)


# -- client EUI-64 (CRT-4) --------------------------------------------------------------------


@pytest.mark.req("CRT-4")
@pytest.mark.parametrize(
    "spelling",
    ["01-23-45-67-89-AB-CD-EF", "01-23-45-67-89-ab-cd-ef", "01:23:45:67:89:AB:cd:ef",
     "0123456789abcdef", "0123456789ABCDEF"],
)
def test_client_eui64_from_the_common_name_in_any_usual_spelling(
    anchor: Issued, store: TrustStore, spelling: str
) -> None:
    identity, _ = verify_client_chain(chain_der(client_leaf(anchor, spelling)), store, when=NOW,
                                      max_depth=DEFAULT_MAX_CHAIN_DEPTH)
    assert identity.name == "01-23-45-67-89-AB-CD-EF"
    assert str(identity) == "certificate 01-23-45-67-89-AB-CD-EF"


@pytest.mark.req("CRT-4")
def test_client_eui64_from_the_subject_alt_name_or_the_cn(anchor: Issued,
                                                          store: TrustStore) -> None:
    in_san = client_leaf(anchor, "device", san=dns("not-an-eui", "a0:b1:c2:d3:e4:f5:06:17"))
    assert client(chain_der(in_san), store) == "A0-B1-C2-D3-E4-F5-06-17"
    twice = client_leaf(anchor, "device", san=dns("a0b1c2d3e4f50617", "A0-B1-C2-D3-E4-F5-06-17"))
    assert client(chain_der(twice), store) == "A0-B1-C2-D3-E4-F5-06-17"
    # the CN, when the subjectAltName presents no DNS-ID, SRV-ID or URI-ID (RFC 6125 §6.4.4)
    addressed = client_leaf(anchor, "0123456789abcdef", san=ip("192.0.2.7"))
    assert client(chain_der(addressed), store) == "01-23-45-67-89-AB-CD-EF"
    top, (middle,) = ca_chain(1)
    deep = client_leaf(middle, "0011223344556677")
    assert client(chain_der(deep, middle), TrustStore([top.der])) == "00-11-22-33-44-55-66-77"


@pytest.mark.req("CRT-4")
@pytest.mark.parametrize(
    ("common_name", "san"),
    [
        ("device-7", None),
        ("01-23-45-67-89-AB-CD", None),
        ("01-23-45:67-89-AB-CD-EF", None),
        ("0123456789abcdeg", None),
        ("01-23-45-67-89-AB-CD-EF", dns("device.example")),
        ("device", dns("0123456789abcdef", "fedcba9876543210")),
        ("01-23-45-67-89-AB-CD-EF", [x509.UniformResourceIdentifier("urn:dev:ops:x")]),
    ],
)
def test_client_certificate_without_one_eui64_is_bad_certificate(
    anchor: Issued, store: TrustStore, common_name: str, san: list[x509.GeneralName] | None
) -> None:
    leaf = client_leaf(anchor, common_name, san=san)
    assert "EUI-64" in refused(A.bad_certificate, lambda: client(chain_der(leaf), store))


@pytest.mark.req("CRT-4")
def test_client_chain_is_path_validated_too(anchor: Issued, store: TrustStore) -> None:
    refused(A.unknown_ca, lambda: client(chain_der(client_leaf(root("stranger"))), store))
    expired = client_leaf(anchor, not_after=NOW - DAY)
    refused(A.certificate_expired, lambda: client(chain_der(expired), store))


# -- no network, ever (CRT-5) -----------------------------------------------------------------


_network_events: list[str] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _network_events is not None and event.startswith(("socket.", "urllib.")):
        _network_events.append(event)


sys.addaudithook(_audit)


@pytest.mark.req("CRT-5")
def test_no_ocsp_crl_or_issuer_fetch_even_when_the_certificate_points_to_them() -> None:
    """The certificate names an OCSP responder, a CRL and its issuer's certificate on a live
    local HTTP server that would serve the missing intermediate; nothing is ever asked."""
    global _network_events
    top, (middle,) = ca_chain(1)
    with LocalHttpServer({"/ca.der": Route(middle.der)}) as httpd:
        pointers = [
            (x509.AuthorityInformationAccess([
                x509.AccessDescription(AuthorityInformationAccessOID.OCSP,
                                       x509.UniformResourceIdentifier(httpd.url("/ocsp"))),
                x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                       x509.UniformResourceIdentifier(httpd.url("/ca.der"))),
            ]), False),
            (x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(httpd.url("/crl"))], None, None, None)]), False),
        ]
        leaf = server_leaf(middle, extensions=pointers)
        store = TrustStore([top.der])
        _network_events = []
        try:
            assert server(chain_der(leaf, middle), store) == "localhost"
            refused(A.unknown_ca, server, chain_der(leaf), store)
            events = list(_network_events)
        finally:
            _network_events = None
        # the server works: a request of ours gets the intermediate, and is the only one it saw
        assert urllib.request.urlopen(httpd.url("/ca.der"), timeout=5).read() == middle.der
        assert httpd.hits == ["/ca.der"]
    assert events == []


# -- remembered validations -------------------------------------------------------------------


@pytest.mark.req("CRT-1", "CRT-5")
def test_a_chain_validated_before_is_remembered_only_while_everything_is_valid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second look at the same chain skips the path validation, but not the time: past
    the leaf's or the anchor's validity the chain is refused as the first look would."""
    import iotdtls.crypto.x509 as module

    anchor = root(not_after=NOW + 2 * YEAR)
    leaf = server_leaf(anchor, not_after=NOW + 4 * YEAR)
    store = TrustStore([anchor.der])
    built: list[int] = []
    real = module._verifier

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_verifier", counting)
    assert server((leaf.der,), store) == "localhost"
    assert server((leaf.der,), store, when=NOW + YEAR) == "localhost"
    assert len(built) == 1  # remembered
    assert server((leaf.der,), store, name="localhost") == "localhost"
    refused(A.bad_certificate, server, (leaf.der,), store, "elsewhere.example")
    refused(A.certificate_expired, server, (leaf.der,), store, when=NOW + 3 * YEAR)
    refused(A.certificate_expired, server, (leaf.der,), store, when=NOW - 2 * YEAR)
    # Another role or depth is another question.
    refused(A.unsupported_certificate, client, (leaf.der,), store)


@pytest.mark.req("CRT-3", "CRT-4")
def test_a_remembered_chain_keeps_its_name_checks_and_their_bound(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued
) -> None:
    """A chain seen again is not matched again against a name it was found valid for (RFC 6125
    §6.4), but every other name still is; at most NAMES_KEPT_PER_LEAF outcomes per leaf."""
    import iotdtls.crypto.x509 as module

    leaf = server_leaf(anchor, "*.example.com")
    store = TrustStore([anchor.der])
    matched: list[object] = []
    real = module._match_server_name

    def counting(checked: Any, reference: Any) -> str:
        matched.append(reference)
        return real(checked, reference)

    monkeypatch.setattr(module, "_match_server_name", counting)
    names = [f"host{i}.example.com" for i in range(module.NAMES_KEPT_PER_LEAF + 2)]
    for name in names:
        assert server((leaf.der,), store, name) == name
    assert server((leaf.der,), store, names[0]) == names[0]
    assert matched == names  # the first name's outcome was remembered
    assert server((leaf.der,), store, names[-1]) == names[-1]
    assert matched == [*names, names[-1]]  # past the bound: matched again
    refused(A.bad_certificate, server, (leaf.der,), store, "example.com")
    refused(A.bad_certificate, server, (leaf.der,), store, "a.b.example.com")
    # No name asked: for logs, the subjectAltName before the CN "server" (RFC 6125 §6.4.4).
    assert server((leaf.der,), store, None) == "*.example.com"
    (remembered,) = store._validated._entries.values()
    assert len(remembered[0].names) == module.NAMES_KEPT_PER_LEAF

    eui64: list[int] = []
    real_eui64 = module._client_eui64

    def counting_eui64(checked: Any) -> str:
        eui64.append(1)
        return str(real_eui64(checked))

    monkeypatch.setattr(module, "_client_eui64", counting_eui64)
    device = chain_der(client_leaf(anchor))
    assert client(device, store) == client(device, store) == "01-23-45-67-89-AB-CD-EF"
    assert eui64 == [1]


def test_is_self_signed_takes_only_a_root_signed_with_its_own_key() -> None:
    """RFC 5280 §3.2: issued by its own subject and signed with its own key; a certificate that
    names itself as issuer but is signed by another key, or does not parse, is not."""
    ca = root()
    assert is_self_signed(ca.der)
    assert not is_self_signed(server_leaf(ca, "gw.example").der)
    assert not is_self_signed(issue("impostor", None, ca=True, signing_key=p256()).der)
    assert not is_self_signed(b"not a certificate")


def test_a_chain_of_certificates_issuing_one_another_is_diagnosed_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile chain: fourteen self-signed CA certificates of one name and one key (each
    issues every other), one of them expired, under no trust anchor, on a server that allows
    the deepest chains (MAX_CHAIN_DEPTH_LIMIT). Naming the expired one
    looks for a signed path: a search of the graph checks each pair's signature at most once,
    where one of the orderings would never end (14! of them)."""
    key = p256()
    cas = [
        issue("loop ca", None, key=key, ca=True, not_after=NOW - DAY if n == 0 else NOW + YEAR)
        for n in range(14)
    ]
    leaf = server_leaf(cas[0])
    checks = 0
    real = x509_module._issued_by

    def counted(cert: Any, issuer: Any) -> bool:
        nonlocal checks
        checks += 1
        assert checks < 1000, "a search of the orderings"
        return real(cert, issuer)

    monkeypatch.setattr(x509_module, "_issued_by", counted)
    refused(A.unknown_ca, server, chain_der(leaf, *cas), TrustStore([root("other").der]),
            max_depth=MAX_CHAIN_DEPTH_LIMIT)
    assert checks <= 15 * 15


# -- keys too dear to verify with ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa3072() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def _ca_with_public_key(
    subject: x509.Name, public_key: rsa.RSAPublicKey, signer: rsa.RSAPrivateKey
) -> bytes:
    """A CA certificate named `subject`, self-issued, holding `public_key` (whose private key
    need not exist), signed by `signer`."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - YEAR)
        .not_valid_after(NOW + YEAR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _huge_exponent_chain(
    anchor: Issued, leaf_of: Callable[..., Issued], signer: rsa.RSAPrivateKey, fakes: int
) -> tuple[bytes, ...]:
    """The probe's hostile chain: a P-256 leaf "issued by" the anchor's name but signed with
    RSA, and `fakes` CA certificates named like the anchor whose key is the signer's modulus
    with a public exponent two bits shorter (~5 ms a signature check)."""
    modulus = signer.public_key().public_numbers().n
    exponent = (1 << (modulus.bit_length() - 2)) + 1
    dear = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    leaf = leaf_of(anchor, signing_key=signer)
    cas = (_ca_with_public_key(anchor.cert.subject, dear, signer) for _ in range(fakes))
    return (leaf.der, *cas)


def _rsa_key_with_exponent(exponent: int) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key with any odd public exponent coprime to the generated primes' λ."""
    if exponent in (3, 65537):
        return rsa.generate_private_key(public_exponent=exponent, key_size=2048)
    primes = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    p, q = primes.p, primes.q
    private = pow(exponent, -1, (p - 1) * (q - 1) // math.gcd(p - 1, q - 1))
    public = rsa.RSAPublicNumbers(exponent, p * q)
    return rsa.RSAPrivateNumbers(
        p, q, private, rsa.rsa_crt_dmp1(private, p), rsa.rsa_crt_dmq1(private, q),
        rsa.rsa_crt_iqmp(p, q), public,
    ).private_key()


def _count_signature_work(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the verifier runs and this module's own signature checks."""
    counts = {"verifier": 0, "signature": 0}
    verifier, signature_check = x509_module._verifier, x509_module._signature_check

    def counted_verifier(*args: Any, **kwargs: Any) -> Any:
        counts["verifier"] += 1
        return verifier(*args, **kwargs)

    def counted_signature_check(*args: Any) -> bool | None:
        counts["signature"] += 1
        return signature_check(*args)

    monkeypatch.setattr(x509_module, "_verifier", counted_verifier)
    monkeypatch.setattr(x509_module, "_signature_check", counted_signature_check)
    return counts


@pytest.mark.parametrize("fakes", [1, 3])
def test_a_client_chain_with_a_huge_rsa_exponent_is_refused_before_any_signature_check(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued, store: TrustStore,
    rsa3072: rsa.RSAPrivateKey, fakes: int,
) -> None:
    """The probe's pre-authentication CPU attack: each check under the fake CAs' key costs
    ~100x one under e = 65537, and the verifier and the diagnosis tried every fake CA."""
    chain = _huge_exponent_chain(anchor, client_leaf, rsa3072, fakes)
    counts = _count_signature_work(monkeypatch)
    message = refused(A.unknown_ca, client, chain, store)
    assert counts == {"verifier": 0, "signature": 0}
    assert "certificate 1 is RSA-3072 with a 3071-bit public exponent" in message
    assert "odd public exponent from 3 to 2^32-1" in message


def test_a_server_chain_with_a_huge_rsa_exponent_is_refused_before_any_signature_check(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued, store: TrustStore,
    rsa3072: rsa.RSAPrivateKey,
) -> None:
    """The same attack from a hostile server on a client: the same validation."""
    chain = _huge_exponent_chain(anchor, server_leaf, rsa3072, 3)
    counts = _count_signature_work(monkeypatch)
    message = refused(A.unknown_ca, server, chain, store)
    assert counts == {"verifier": 0, "signature": 0}
    assert message.startswith("server chain leads to no trusted CA: the key of certificate 1")


def test_an_rsa_key_above_8192_bits_is_refused_before_any_signature_check(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued, store: TrustStore,
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    """A big modulus (any odd number: the key is never used) with e = 65537."""
    modulus = (1 << 8199) | 0x1234567 | 1
    big = rsa.RSAPublicNumbers(65537, modulus).public_key()
    fake = _ca_with_public_key(anchor.cert.subject, big, rsa_key)
    counts = _count_signature_work(monkeypatch)
    message = refused(A.unknown_ca, client, (client_leaf(anchor).der, fake), store)
    assert counts == {"verifier": 0, "signature": 0}
    assert "the key of certificate 1 is RSA-8200:" in message


@pytest.mark.parametrize(("exponent", "bits", "dear"), [
    (2**32 - 1, 2048, None), (2**32 + 1, 2048, "RSA-2048 with a 33-bit public exponent"),
    (65537, 8192, None), (65537, 8193, "RSA-8193"),
])
def test_the_rsa_key_bounds_are_inclusive(
    anchor: Issued, rsa_key: rsa.RSAPrivateKey, exponent: int, bits: int, dear: str | None,
) -> None:
    """An exponent of exactly 2^32 - 1 and a modulus of exactly 8192 bits are not dear; one
    step beyond either is (keys whose private half need not exist: only their size counts)."""
    modulus = (1 << (bits - 1)) | 0x1234567 | 1
    key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    cert = x509.load_der_x509_certificate(_ca_with_public_key(anchor.cert.subject, key, rsa_key))
    assert x509_module._dear_rsa_key(cert) == dear


@pytest.mark.parametrize("exponent", [3, 65537, 4294967291])
def test_rsa_cas_with_usual_exponents_still_validate(exponent: int) -> None:
    """e = 3 (old CAs), 65537 (every CA now) and the largest prime below 2^32 (any odd
    exponent up to 2^32 - 1 is accepted)."""
    key = _rsa_key_with_exponent(exponent)
    top = root("rsa root", key=key)
    middle = intermediate(top, "rsa intermediate", key=key)
    store = TrustStore([top.der])
    assert client(chain_der(client_leaf(middle), middle), store) == "01-23-45-67-89-AB-CD-EF"
    assert server(chain_der(server_leaf(middle), middle), store) == "localhost"


def _fake_cas_of_the_anchors_name(
    anchor: Issued, leaf_of: Callable[..., Issued], fakes: int, *, expired: bool = False
) -> tuple[bytes, ...]:
    """A leaf "issued by" the anchor's name but signed by a key of the peer's own, and `fakes`
    CA certificates named like the anchor, self-issued under that key, each issuing the
    others and itself (the first one expired if `expired`)."""
    key = p256()
    subject = str(anchor.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    cas = [
        issue(subject, None, key=key, ca=True, authority_key_id=False,
              not_after=NOW - DAY if expired and n == 0 else NOW + YEAR)
        for n in range(fakes)
    ]
    return chain_der(leaf_of(anchor, signing_key=key, authority_key_id=False), *cas)


@pytest.mark.parametrize("expired", [False, True])
def test_a_chain_of_fake_cas_of_the_anchors_name_is_diagnosed_with_one_verifier_run(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued, store: TrustStore, expired: bool,
) -> None:
    """Keys that are cheap one check at a time, but a CA certificate named like the anchor,
    self-issued under the leaf's signing key: the verifier tries it at every level (more of
    them are refused unchecked, see below). The diagnosis runs no second search when nothing
    links the leaf to an anchor, and checks each pair once."""
    fakes = 1
    chain = _fake_cas_of_the_anchors_name(anchor, client_leaf, fakes, expired=expired)
    counts = _count_signature_work(monkeypatch)
    message = refused(A.bad_certificate, client, chain, store)
    assert message == "the signature on client certificate 1 does not verify", message
    assert counts["verifier"] == 1, counts
    pairs = (1 + fakes) ** 2  # each certificate under each one of the issuer's name
    assert counts["signature"] <= pairs


# -- chains whose names offer too many candidate issuers ----------------------------------------


@pytest.mark.parametrize(("fakes", "max_depth"), [(3, DEFAULT_MAX_CHAIN_DEPTH), (2, 2), (2, 1),
                                                  (2, MAX_CHAIN_DEPTH_LIMIT),
                                                  (16, MAX_CHAIN_DEPTH_LIMIT)])
@pytest.mark.parametrize("role", ["client", "server"])
def test_a_chain_of_fake_cas_of_the_anchors_name_is_refused_before_any_signature_check(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued, store: TrustStore,
    fakes: int, max_depth: int, role: str,
) -> None:
    """The pre-authentication CPU attack left once dear RSA keys are refused: CA certificates
    named like the anchor under one key of the peer's own, all issuing one another, make the
    verifier check dozens of signatures (52 for three of them at depth 2: ~4 ms with P-256
    keys, ~20 ms with P-521; 128, its own limit, at depth 16). Counted by names alone, the
    candidates exceed 2 per level allowed: unknown_ca before any signature is checked (two
    of them at depth 1, the leaf counted from depth 0: 9 candidates, 6 allowed)."""
    leaf_of, call = (client_leaf, client) if role == "client" else (server_leaf, server)
    chain = _fake_cas_of_the_anchors_name(anchor, leaf_of, fakes)
    counts = _count_signature_work(monkeypatch)
    message = refused(A.unknown_ca, call, chain, store, max_depth=max_depth)
    assert counts == {"verifier": 0, "signature": 0}
    allowed = 2 * (max_depth + 2)
    assert message == (
        f"{role} chain leads to no trusted CA: it is ambiguous, its names offer more than "
        f"{allowed} candidate issuers to check"
    )


def _ring_of_ca_names(leaf_of: Callable[..., Issued]) -> tuple[bytes, ...]:
    """The probe's ring: a leaf issued by "Z", two CAs "Z" issued by "Y" and a CA "Y" issued by
    "Z", all under one key of the peer's own: 8 candidates at depth 2 (within the bound), every
    signature good, and no name on the way is a trust anchor's."""
    key = p256()
    y_handle = root("Y", key=key)
    z = intermediate(y_handle, "Z", key=key)
    z_again = intermediate(y_handle, "Z", key=key)
    y = intermediate(z, "Y", key=key)
    return chain_der(leaf_of(z), z, z_again, y)


@pytest.mark.parametrize("max_depth", [DEFAULT_MAX_CHAIN_DEPTH, MAX_CHAIN_DEPTH_LIMIT])
@pytest.mark.parametrize("role", ["client", "server"])
def test_a_ring_of_ca_names_reaching_no_anchor_is_refused_before_any_signature_check(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued, store: TrustStore, max_depth: int,
    role: str,
) -> None:
    """Within the candidate bound, the ring still made the verifier check every candidate
    (~6 ms with P-521 keys, ~7.5 ms with RSA-8192 and a 32-bit exponent) for a path no name
    leads to: refused by names alone, with the message the diagnosis gave."""
    leaf_of, call = (client_leaf, client) if role == "client" else (server_leaf, server)
    chain = _ring_of_ca_names(leaf_of)
    counts = _count_signature_work(monkeypatch)
    message = refused(A.unknown_ca, call, chain, store, max_depth=max_depth)
    assert message == (
        f"{role} chain leads to no trusted CA: no issuer of it among the trust anchors"
    )
    assert counts == {"verifier": 0, "signature": 0}


def test_a_self_signed_leaf_is_named_with_one_signature_check_and_no_verifier_run(
    monkeypatch: pytest.MonkeyPatch, store: TrustStore,
) -> None:
    """No name leads a self-signed leaf to an anchor: its own message still, for the check of
    its one (P-256) signature."""
    own = issue("01-23-45-67-89-AB-CD-EF", None, eku=[CLIENT_AUTH])
    counts = _count_signature_work(monkeypatch)
    message = refused(A.unknown_ca, client, (own.der,), store)
    assert message.startswith("client certificate rejected: a self-signed certificate"), message
    assert counts == {"verifier": 0, "signature": 1}


def test_names_are_compared_as_der_bytes_read_once(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued, store: TrustStore,
) -> None:
    """The name walks (the candidate count, the reachability, the diagnosis's) compared
    `x509.Name` objects, attribute by attribute in Python: ~64 us a comparison with 120-RDN
    names, ~5 ms of a hostile chain's refusal. Now bytes sliced from each certificate once:
    no `Name` is compared or encoded again, for a ring, a chain diagnosed, an honest chain."""
    ring = _ring_of_ca_names(client_leaf)
    diagnosed = _fake_cas_of_the_anchors_name(anchor, client_leaf, 1)
    honest = chain_der(client_leaf(anchor))
    calls = {"compared": 0, "encoded": 0}
    compare, encode = x509.Name.__eq__, x509.Name.public_bytes

    def counted_compare(self: x509.Name, other: object) -> bool:
        calls["compared"] += 1
        return compare(self, other)

    def counted_encode(self: x509.Name, backend: Any = None) -> bytes:
        calls["encoded"] += 1
        return encode(self, backend)

    monkeypatch.setattr(x509.Name, "__eq__", counted_compare)
    monkeypatch.setattr(x509.Name, "public_bytes", counted_encode)
    refused(A.unknown_ca, client, ring, store)
    refused(A.bad_certificate, client, diagnosed, store)
    assert client(honest, store) == "01-23-45-67-89-AB-CD-EF"
    assert calls == {"compared": 0, "encoded": 0}


def test_the_der_names_read_from_the_bytes_are_the_names_encoded(anchor: Issued) -> None:
    """The slices `_der_names` reads are what `Name.public_bytes()` gives: short and long DER
    lengths (a name of 120 RDNs is over 1 KB), issuer and subject."""
    key = p256()
    long_name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit {n}") for n in range(119)]
        + [x509.NameAttribute(NameOID.COMMON_NAME, "long")]
    )
    long = (
        x509.CertificateBuilder().subject_name(long_name).issuer_name(anchor.cert.subject)
        .public_key(key.public_key()).serial_number(1).not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY).sign(anchor.key, hashes.SHA256())
    )
    for cert in (anchor.cert, client_leaf(anchor).cert, long):
        der = cert.public_bytes(serialization.Encoding.DER)
        assert x509_module._der_names(der, cert) == (
            cert.issuer.public_bytes(), cert.subject.public_bytes()
        )
    # a version 1 certificate has no [0] version: one field fewer before the names
    v1_der = without_version(long.public_bytes(serialization.Encoding.DER))
    v1 = x509.load_der_x509_certificate(v1_der)
    assert v1.version is x509.Version.v1
    assert x509_module._der_names(v1_der, v1) == (
        anchor.cert.subject.public_bytes(), long_name.public_bytes()
    )


def test_a_version_1_anchor_is_refused_at_configuration() -> None:
    """A v1 root was taken as a trust anchor, but the verifier takes v3 certificates only, so
    every chain under it failed ("must be an X509v3 certificate", unknown_ca) (probe BW #6):
    now the configuration says so, in one line, before any handshake."""
    v1, _ = version_1_certificate("v1 root")
    with pytest.raises(ConfigError) as info:
        TrustStore([root().der, v1])
    assert str(info.value) == (
        "trust anchor 2 is an X.509 v1 certificate, which the path validation refuses on every "
        "path (it takes v3 certificates only): give a v3 certificate of the same name and key")


def _der_header(tag: int, length: int) -> bytes:
    if length < 0x80:
        return bytes([tag, length])
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big")


def _der_span(der: bytes, at: int) -> tuple[int, int]:
    """The content start and end of the DER element at `at` (short or long definite length)."""
    first, content = der[at + 1], at + 2
    if first < 0x80:
        return content, content + first
    size = first & 0x7F
    return content + size, content + size + int.from_bytes(der[content : content + size], "big")


def version_1_certificate(common_name: str) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    """A self-signed certificate of `common_name` as `openssl x509 -req` without -extfile
    makes one: X.509 v1, no extensions; and its key."""
    key = p256()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    v3 = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1).not_valid_before(NOW - DAY)
        .not_valid_after(NOW + DAY).sign(key, hashes.SHA256())
    )
    v1 = without_version(v3.public_bytes(serialization.Encoding.DER))
    assert x509.load_der_x509_certificate(v1).version is x509.Version.v1
    return v1, key


def without_version(der: bytes) -> bytes:
    """The certificate `der` (of no extensions) as version 1: its TBSCertificate without the
    [0] version field (RFC 5280 §4.1), the signature left as it was (no longer valid)."""
    tbs_start = _der_span(der, 0)[0]
    tbs_content, tbs_end = _der_span(der, tbs_start)
    assert der[tbs_content] == 0xA0
    tbs_body = der[_der_span(der, tbs_content)[1] : tbs_end]
    body = _der_header(0x30, len(tbs_body)) + tbs_body + der[tbs_end:]
    return _der_header(0x30, len(body)) + body


def test_a_refused_chain_sent_again_is_refused_again_with_no_work(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued,
) -> None:
    """A peer resending the bytes of a refused chain made the store do the whole work again
    each time (a chain diagnosed: one verifier run and its signature checks; ~3.5 ms with
    P-521 keys). The store remembers the refusal by the chain's digest, its role and depth:
    the same error (type, alert, message) with no parse, verifier run or signature check; a
    chain seen again counts no validated-chain miss (no validation)."""
    store = TrustStore([anchor.der])
    chain = _fake_cas_of_the_anchors_name(anchor, client_leaf, 1)
    first = refused(A.bad_certificate, client, chain, store)
    counts = _count_signature_work(monkeypatch)
    parse = x509_module._parse
    parsed: list[int] = []

    def counted_parse(der: bytes, role: str, index: int) -> x509.Certificate:
        parsed.append(index)
        return parse(der, role, index)

    monkeypatch.setattr(x509_module, "_parse", counted_parse)
    for _ in range(3):
        with pytest.raises(ProtocolError) as again:
            client(chain, store)
        assert type(again.value) is ProtocolError and again.value.alert is A.bad_certificate
        assert str(again.value) == first
    assert counts == {"verifier": 0, "signature": 0} and parsed == []
    assert (store.refused_chain_hits, store.validated_chain_misses) == (3, 1)
    # another role or depth is another question: answered in full, then remembered too
    assert refused(A.bad_certificate, client, chain, store, max_depth=1) == first
    assert counts["verifier"] == 1
    refused(A.bad_certificate, server, chain, store)
    assert counts["verifier"] == 2


def test_a_refusal_is_remembered_only_while_every_certificate_keeps_its_validity(
    anchor: Issued,
) -> None:
    """The time counts only through which certificates are valid: a refusal holds until one
    of the chain or an anchor enters or leaves its validity period (here the leaf expires),
    and one naming the time (certificate_expired) is not remembered."""
    store = TrustStore([anchor.der])
    chain = _fake_cas_of_the_anchors_name(
        anchor, lambda issuer, **kwargs: client_leaf(issuer, not_after=NOW + DAY, **kwargs), 1
    )
    message = refused(A.bad_certificate, client, chain, store)
    assert refused(A.bad_certificate, client, chain, store, when=NOW + DAY // 2) == message
    later = refused(A.certificate_expired, client, chain, store, when=NOW + 2 * DAY)
    assert later.startswith("client certificate 0 is not valid at ")
    assert refused(A.certificate_expired, client, chain, store, when=NOW + 3 * DAY) != later
    assert store.refused_chain_hits == 1


def test_a_refusal_holds_to_the_instant_a_certificate_enters_or_leaves_its_validity(
    anchor: Issued,
) -> None:
    """The window of a remembered refusal is exact, validity bounds included (RFC 5280
    §4.1.2.5): asked at the first or the last instant of the certificates' validity, the
    refusal is remembered for that instant; with an anchor valid from tomorrow, it holds up to
    the microsecond before, and no longer at that instant (with one expired yesterday, back to
    the microsecond after its last instant)."""
    chain = _fake_cas_of_the_anchors_name(anchor, client_leaf, 1)
    for when in (NOW - YEAR, NOW + YEAR):  # every certificate's first and last instant
        store = TrustStore([anchor.der])
        first = refused(A.bad_certificate, client, chain, store, when=when)
        assert refused(A.bad_certificate, client, chain, store, when=when) == first
        assert store.refused_chain_hits == 1, when
    tick = datetime.timedelta(microseconds=1)
    tomorrow, yesterday = NOW + DAY, NOW - DAY
    store = TrustStore([anchor.der, root("later root", not_before=tomorrow).der])
    for when in (NOW, tomorrow - tick, tomorrow):
        refused(A.bad_certificate, client, chain, store, when=when)
    assert store.refused_chain_hits == 1
    # and from the microsecond after an anchor's last instant of validity, not at it
    store = TrustStore([anchor.der, root("earlier root", not_after=yesterday).der])
    for when in (NOW, yesterday + tick, yesterday):
        refused(A.bad_certificate, client, chain, store, when=when)
    assert store.refused_chain_hits == 1


def test_the_refusal_least_recently_used_is_forgotten_first(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued,
) -> None:
    """The store keeps the `REFUSED_CHAINS_KEPT` refusals last used (here 2): a new one is
    kept, and the one least recently refused again is forgotten (one chain asked at three
    depths: three questions)."""
    monkeypatch.setattr(x509_module, "REFUSED_CHAINS_KEPT", 2)
    store = TrustStore([anchor.der])
    chain = _fake_cas_of_the_anchors_name(anchor, client_leaf, 1)
    counts = _count_signature_work(monkeypatch)

    def ask(depth: int) -> None:
        refused(A.bad_certificate, client, chain, store, max_depth=depth)

    for depth in (0, 1, 0):  # depth 1 is now the least recently used
        ask(depth)
    assert (counts["verifier"], store.refused_chain_hits) == (2, 1)
    ask(2)  # depth 1 forgotten
    assert len(store._refused) == 2
    for depth in (2, 0):
        ask(depth)
    assert (counts["verifier"], store.refused_chain_hits) == (3, 3)
    ask(1)
    assert counts["verifier"] == 4


def test_one_fake_ca_of_the_anchors_name_is_left_to_the_verifier_at_any_depth(
    monkeypatch: pytest.MonkeyPatch, anchor: Issued, store: TrustStore,
) -> None:
    """One self-issued CA certificate gives the verifier two candidates per level (it and the
    anchor), as an honest expired copy of a root sent along does: within the bound at every
    depth, so the verifier's own reason stands."""
    chain = _fake_cas_of_the_anchors_name(anchor, client_leaf, 1)
    for max_depth in (0, DEFAULT_MAX_CHAIN_DEPTH, MAX_CHAIN_DEPTH_LIMIT):
        counts = _count_signature_work(monkeypatch)
        message = refused(A.bad_certificate, client, chain, store, max_depth=max_depth)
        assert message == "the signature on client certificate 1 does not verify"
        assert counts["verifier"] == 1


def test_honest_chains_with_several_candidate_issuers_still_validate() -> None:
    """What gives an honest chain a second candidate issuer at some level: a root sent along
    (a copy of the anchor), an expired copy of a renewed root sent along (self-issued, a
    candidate at every level), an old and a new anchor of one name, a CA cross-signed (two
    certificates of one key with different issuers, one of the anchors sent along under
    another), at the default depth and the deepest."""
    top, cas = ca_chain(2)
    leaf = server_leaf(cas[-1])
    store = TrustStore([top.der])
    old_top = root(key=top.key, not_before=NOW - 2 * YEAR, not_after=NOW - DAY)
    for max_depth in (DEFAULT_MAX_CHAIN_DEPTH, MAX_CHAIN_DEPTH_LIMIT):
        for extra in (top, old_top):
            chain = chain_der(leaf, *reversed(cas), extra)
            assert server(chain, store, max_depth=max_depth) == "localhost"
    for anchors in ([top.der, old_top.der], [old_top.der, top.der]):
        assert server(chain_der(leaf, *reversed(cas), old_top), TrustStore(anchors)) \
            == "localhost"
    renewed = root(not_before=NOW - DAY)  # same name, another key
    middle = intermediate(renewed, "issuing ca")
    both = TrustStore([old_top.der, renewed.der])
    assert server(chain_der(server_leaf(middle), middle, old_top), both) == "localhost"

    first, second = root("first root"), root("second root")
    under_first = intermediate(first, "issuing ca")
    under_second = intermediate(second, "issuing ca", key=under_first.key)
    second_by_first = intermediate(first, "second root", key=second.key)
    leaf = server_leaf(under_first)
    for anchors in ([first.der], [second.der], [first.der, second.der]):
        assert server(chain_der(leaf, under_first, under_second), TrustStore(anchors)) \
            == "localhost"
        assert server(chain_der(leaf, under_second, under_first), TrustStore(anchors)) \
            == "localhost"
    assert server(chain_der(leaf, under_second, second_by_first), TrustStore([first.der])) \
        == "localhost"

    deep_top, deep = ca_chain(MAX_CHAIN_DEPTH_LIMIT)
    deep_leaf = server_leaf(deep[-1])
    for extra in (deep_top, root(key=deep_top.key, not_after=NOW - DAY)):
        chain = chain_der(deep_leaf, *reversed(deep), extra)
        assert server(chain, TrustStore([deep_top.der]), max_depth=MAX_CHAIN_DEPTH_LIMIT) \
            == "localhost"


# -- the diagnosis of a refused chain runs the verifier again within the same bound -------------


def _count_verifier_candidates(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Count the CA candidates the verifier weighs, every run (a Python keyUsage validator in
    the CA policy is called for each issuer candidate valid at the time, just before its
    signature is checked), and the depth of each run."""
    counts: dict[str, Any] = {"weighed": 0, "depths": []}
    verifier, check_usage = x509_module._verifier, x509_module._check_ca_key_usage

    def counted_usage(policy: Any, cert: x509.Certificate, usage: Any) -> None:
        counts["weighed"] += 1
        check_usage(policy, cert, usage)

    def counted_verifier(store: TrustStore, when: Any, max_depth: int, **kwargs: Any) -> Any:
        counts["depths"].append(max_depth)
        return verifier(store, when, max_depth, **kwargs)

    monkeypatch.setattr(x509_module, "_CA_POLICY", x509_module._ca_policy(counted_usage))
    monkeypatch.setattr(x509_module, "_verifier", counted_verifier)
    return counts


@pytest.mark.parametrize("max_depth", [DEFAULT_MAX_CHAIN_DEPTH, MAX_CHAIN_DEPTH_LIMIT])
@pytest.mark.parametrize("role", ["client", "server"])
def test_an_expired_ca_sent_with_looping_forgeries_is_named_with_few_verifier_checks(
    monkeypatch: pytest.MonkeyPatch, max_depth: int, role: str,
) -> None:
    """A peer with no CA key copies a real leaf and the expired certificate of its CA's key
    (linked to the anchor: the diagnosis runs the verifier again to name it), and adds a
    certificate carrying the CA's public key "issued" by a CA of its own, and that CA
    self-issued, both expired: each run again at depth 16 followed the loop, one run per
    expired certificate sent (4 runs, 57 candidates weighed at depth 2, each a signature check;
    ~20 ms with P-521 keys of its own). Now the runs again allow `len(chain) - 1` CAs, are
    bounded by names as the first run is, and are made only for certificates on a signed path
    to an anchor: the message is the same, the work that of two runs within the bound."""
    leaf_of, call = (client_leaf, client) if role == "client" else (server_leaf, server)
    top = root(not_before=NOW - 2 * YEAR)
    middle = intermediate(top, "issuing ca")
    expired = intermediate(top, "issuing ca", key=middle.key, not_after=NOW - DAY)
    own = root("peer's own ca", not_after=NOW - DAY)
    forged = intermediate(own, "issuing ca", key=middle.key, not_after=NOW - DAY)
    chain = chain_der(leaf_of(middle), forged, own, expired)
    assert call(chain_der(leaf_of(middle), middle), TrustStore([top.der])) is not None
    counts = _count_verifier_candidates(monkeypatch)
    message = refused(A.certificate_expired, call, chain, TrustStore([top.der]),
                      max_depth=max_depth)
    assert message.startswith(f"{role} certificate 3 is not valid at "), message
    again = len(chain) - 1
    bound = 2 * (max_depth + 2) + 2 * (again + 2)  # CANDIDATE_CHECKS_PER_LEVEL per level
    assert 0 < counts["weighed"] <= bound, counts  # the CA policy of the runs is the counted one
    assert counts["depths"] == [max_depth, again], counts


@pytest.mark.parametrize(("forgeries", "max_depth"), [(1, DEFAULT_MAX_CHAIN_DEPTH), (3, 4)])
def test_forged_copies_of_an_expired_ca_sent_before_it_leave_the_expired_ca_named(
    forgeries: int, max_depth: int,
) -> None:
    """Copies of an expired CA certificate (its name and key) whose signature no anchor made,
    sent before it: the diagnosis follows the path through the CA's own certificate and names
    it, each signature check remembered for its (certificate, issuer) pair alone (the anchor's
    refusal of a copy says nothing of the CA's own certificate). With three copies, two anchors
    of the root's name (a renewed root) and 4 CAs allowed, the names offer exactly the 12
    candidates allowed, in the first run and in the run again: both are made."""
    top, renewed = root(), root()  # one name, two keys
    expired = intermediate(top, "issuing ca", not_after=NOW - DAY)
    copies = [intermediate(top, "issuing ca", key=expired.key, signing_key=p256())
              for _ in range(forgeries)]
    chain = chain_der(server_leaf(expired), *copies, expired)
    store = TrustStore([top.der, renewed.der] if forgeries > 1 else [top.der])
    message = refused(A.certificate_expired, server, chain, store, max_depth=max_depth)
    assert message.startswith(f"server certificate {forgeries + 1} is not valid at "), message


def test_a_bad_signature_under_a_ca_expired_before_the_leaf_began_is_named_as_such() -> None:
    """A path by names whose leaf's signature does not verify links nothing: its CA, expired
    before the leaf's validity began (no moment suits the path), is not named as expired; the
    signature is."""
    top = root()
    ca = intermediate(top, "issuing ca", not_after=NOW - 2 * DAY)
    leaf = server_leaf(ca, not_before=NOW - DAY, signing_key=p256())
    message = refused(A.bad_certificate, server, chain_der(leaf, ca), TrustStore([top.der]))
    assert message == "the signature on server certificate 0 does not verify"


def test_only_expired_cas_on_a_signed_path_cost_a_verifier_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The diagnosis runs the verifier again (to see whether an expired CA is on its path)
    only for a CA linked to an anchor and to the leaf by names and signatures: not for a copy
    of the CA whose signature no anchor made, nor for a CA of the leaf's issuer name under
    another key (each expired at another time than the CA: each would cost one run more)."""
    top = root()
    expired = intermediate(top, "issuing ca", not_after=NOW - DAY)
    copy = intermediate(top, "issuing ca", key=expired.key, signing_key=p256(),
                        not_after=NOW - 2 * DAY)
    other = intermediate(top, "issuing ca", not_after=NOW - 3 * DAY)  # another key
    counts = _count_signature_work(monkeypatch)
    for sent in (copy, other):
        message = refused(A.certificate_expired, server,
                          chain_der(server_leaf(expired), sent, expired), TrustStore([top.der]))
        assert message.startswith("server certificate 2 is not valid at "), message
    assert counts["verifier"] == 4, counts  # per chain, the first run and one again


def test_an_expired_ca_three_cas_below_the_anchor_is_named() -> None:
    """The CAs leading to an anchor are found link by link up to the leaf's issuer, however
    far: the expired one at the bottom is on the verifier's path (checked again at a time it
    is valid) and named."""
    top = root()
    high = intermediate(top, "high ca")
    middle = intermediate(high, "middle ca")
    low = intermediate(middle, "low ca", not_after=NOW - DAY)
    chain = chain_der(server_leaf(low), low, middle, high)
    message = refused(A.certificate_expired, server, chain, TrustStore([top.der]), max_depth=3)
    assert message.startswith("server certificate 1 is not valid at "), message


def test_a_long_chain_of_cas_expired_in_turn_is_named_with_two_verifier_runs_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sixteen CAs, each expired before the one below it was valid, on a server allowing the
    deepest chains: no moment suits the path, and the diagnosis ran the verifier again at
    depth 16 for each of them (17 runs in all). Now at most
    VERIFIER_RUNS_AGAIN runs are added, and the first expired CA of the path is still named."""
    top = root(not_before=NOW - 3 * YEAR)
    cas: list[Issued] = []
    for level in range(MAX_CHAIN_DEPTH_LIMIT):
        first_day = NOW - (2 * MAX_CHAIN_DEPTH_LIMIT - 2 * level) * DAY
        cas.append(intermediate(cas[-1] if cas else top, f"ca {level}",
                                not_before=first_day, not_after=first_day + DAY // 2))
    chain = chain_der(server_leaf(cas[-1]), *reversed(cas))
    counts = _count_verifier_candidates(monkeypatch)
    message = refused(A.certificate_expired, server, chain, TrustStore([top.der]),
                      max_depth=MAX_CHAIN_DEPTH_LIMIT)
    assert message.startswith("server certificate 1 is not valid at "), message
    assert len(counts["depths"]) == 1 + x509_module.VERIFIER_RUNS_AGAIN, counts
