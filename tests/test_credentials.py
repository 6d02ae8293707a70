"""Loading the asymmetric credentials (profile §3, CFG-1): certificate chains and their keys
from files, raw public keys in the forms users provision them (RPK-3), and the one-line
`ConfigError` for each mistake."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import fractions
import logging
import numbers
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.credentials import (
    CertifiedKey,
    PrivateKey,
    WallClockFailed,
    as_der_sequence,
    load_certificate_file,
    pem_blocks,
    public_key_pin,
    public_key_pins,
    read_wall_clock,
    validity_problem,
)
from iotdtls.crypto import pem
from iotdtls.crypto.signature import spki_sha256
from iotdtls.crypto.x509 import load_certificates
from iotdtls.errors import ConfigError
from tests.blocking_support import outcome_without_blocking
from tests.peers import Pki
from tests.pki import (
    NOW,
    Issued,
    intermediate,
    issue,
    p256,
    pem_certificate,
    root,
    server_leaf,
    with_version_field,
)
from tests.pubkey_support import compressed_spki, der_to_pem
from tests.test_x509 import version_1_certificate

pytestmark = pytest.mark.req("CFG-1")

PASSWORD = b"correct horse"
DAY = datetime.timedelta(days=1)


def key_pem(issued: Issued, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def config_error(call: Callable[..., object], *args: object) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def issued() -> tuple[Issued, Issued, Issued]:
    anchor = root()
    middle = intermediate(anchor, "iotdtls test ca")
    return anchor, middle, server_leaf(middle, "gw.example")


@pytest.fixture
def files(tmp_path: Path, issued: tuple[Issued, Issued, Issued]) -> Path:
    """A directory of credential files: the leaf's chain, the leaf alone (DER), the CAs, its
    key encrypted and in clear, and a file that is no certificate."""
    anchor, middle, leaf = issued
    for name, content in (("chain.pem", leaf.pem + middle.pem), ("leaf.der", leaf.der),
                          ("cas.pem", middle.pem + anchor.pem),
                          ("key.pem", key_pem(leaf, PASSWORD)), ("clear-key.pem", key_pem(leaf)),
                          ("junk.pem", b"not a certificate")):
        (tmp_path / name).write_bytes(content)
    return tmp_path


def test_a_certified_key_loads_from_a_chain_file_and_an_encrypted_key_file(
    files: Path, issued: tuple[Issued, Issued, Issued]
) -> None:
    _, middle, leaf = issued
    loaded = CertifiedKey.load(str(files / "chain.pem"), str(files / "key.pem"), PASSWORD)
    assert loaded.chain == (leaf.der, middle.der)
    assert loaded.private_key.spki == leaf.spki
    single = CertifiedKey.load(str(files / "leaf.der"), str(files / "clear-key.pem"))
    assert single.chain == (leaf.der,)
    assert "private key" in config_error(
        CertifiedKey.load, str(files / "chain.pem"), str(files / "key.pem")
    )
    # From bytes as from files: the password opens the encrypted key.
    from_bytes = CertifiedKey.from_pem((files / "chain.pem").read_bytes(),
                                       (files / "key.pem").read_bytes(), PASSWORD)
    assert from_bytes.private_key.spki == leaf.spki


@pytest.mark.req("CRT-1")
def test_a_full_chain_file_loses_its_self_signed_root(
    tmp_path: Path, issued: tuple[Issued, Issued, Issued]
) -> None:
    anchor, middle, leaf = issued
    (tmp_path / "full.pem").write_bytes(leaf.pem + middle.pem + anchor.pem)
    (tmp_path / "key.pem").write_bytes(key_pem(leaf))
    full = CertifiedKey.load(str(tmp_path / "full.pem"), str(tmp_path / "key.pem"))
    assert full.chain == (leaf.der, middle.der)
    direct = server_leaf(anchor, "gw.example")
    assert CertifiedKey((direct.der, anchor.der), PrivateKey(direct.key)).chain == (direct.der,)
    # A lone self-signed certificate (a pinned leaf) stays; so does a last certificate that
    # names itself as issuer but is signed by another key (not a root).
    pinned = issue("gw.example", None, ca=True)
    assert CertifiedKey((pinned.der,), PrivateKey(pinned.key)).chain == (pinned.der,)
    forged = issue("iotdtls test root", None, ca=True, signing_key=p256())
    chain = (leaf.der, middle.der, forged.der)
    assert CertifiedKey(chain, PrivateKey(leaf.key)).chain == chain


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_a_private_key_that_cannot_be_read_says_why(
    files: Path, issued: tuple[Issued, Issued, Issued], encoding: serialization.Encoding,
) -> None:
    leaf = issued[2]

    def key(password: bytes | None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password
            else serialization.NoEncryption())
        return leaf.key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, encryption)

    encrypted, clear = key(PASSWORD), key(None)
    assert config_error(PrivateKey.from_pem, encrypted, b"wrong") == (
        "wrong password for the encrypted private key")
    assert config_error(PrivateKey.from_pem, encrypted) == (
        "the private key is encrypted: give its password")
    assert config_error(PrivateKey.from_pem, clear, PASSWORD) == (
        "the private key is not encrypted: give no password")
    for junk in (b"", b"garbage\n", clear[: len(clear) // 2]):
        for password in (None, PASSWORD):
            assert config_error(PrivateKey.from_pem, junk, password) == (
                "no private key in it (PEM or DER, PKCS#8 or SEC1)")
    assert config_error(PrivateKey.load, str(files / "key.pem"), b"wrong") == (
        f"key file {files / 'key.pem'}: wrong password for the encrypted private key")
    assert config_error(PrivateKey.load, str(files / "junk.pem")) == (
        f"key file {files / 'junk.pem'}: no private key in it (PEM or DER, PKCS#8 or SEC1)")


def test_the_file_loaders_name_the_file_their_error_is_about(files: Path, pki: Pki) -> None:
    """`PrivateKey.load("ca.crt")` said only "no private key in it", `CertifiedKey.load` with
    the key file twice "no valid PEM certificate found": which file, of several, was wrong?"""
    certificate, key = str(pki.server_crt), str(pki.server_key)
    assert config_error(PrivateKey.load, certificate) == (
        f"key file {certificate}: that is a certificate (PEM CERTIFICATE), not a private key")
    assert config_error(CertifiedKey.load, key, key) == (
        f"certificate file {key}: that is a private key (PEM PRIVATE KEY), not a certificate")
    junk = str(files / "junk.pem")
    assert config_error(CertifiedKey.load, junk, key) == (
        f"certificate file {junk}: not a PEM or DER X.509 certificate")
    assert config_error(CertifiedKey.load, certificate, certificate) == (
        f"key file {certificate}: that is a certificate (PEM CERTIFICATE), not a private key")
    other = str(pki.client_key)
    assert config_error(CertifiedKey.load, certificate, other) == (
        f"certificate file {certificate} with key file {other}: the private key does not "
        "belong to the leaf certificate")
    # A path is shown on one line, its control characters escaped (`shown_path`).
    odd = files / "new\nline.pem"
    odd.write_bytes(b"hello")
    assert config_error(PrivateKey.load, odd).startswith("key file " + str(odd).replace(
        "\n", "\\n"))


def test_a_certified_key_repr_is_short_and_leaves_the_key_out(
    issued: tuple[Issued, Issued, Issued],
) -> None:
    _, middle, leaf = issued
    key = PrivateKey(leaf.key)
    text = repr(CertifiedKey((leaf.der, middle.der), key))
    assert text == (
        "CertifiedKey(leaf 'CN=server,O=iotdtls tests', 2 certificates, private key redacted)")
    assert str(CertifiedKey((leaf.der,), key)).endswith(", 1 certificate, private key redacted)")
    assert "PrivateKey" not in text and "\\x" not in text  # neither the key nor DER bytes


def test_unreadable_files_are_named_with_what_they_were_for(files: Path) -> None:
    missing = str(files / "missing.pem")
    assert config_error(CertifiedKey.load, missing, str(files / "key.pem")) == (
        f"cannot read certificate file {missing}: No such file or directory"
    )
    assert config_error(CertifiedKey.load, str(files / "leaf.der"), missing) == (
        f"cannot read key file {missing}: No such file or directory"
    )
    assert config_error(load_certificate_file, missing) == (
        f"cannot read certificate file {missing}: No such file or directory"
    )


@pytest.mark.req("SEC-1")
def test_a_key_given_instead_of_its_file_is_never_quoted(
    files: Path, issued: tuple[Issued, Issued, Issued]
) -> None:
    pem = key_pem(issued[2])
    body = pem.splitlines()[1].decode()
    for given in (pem.decode(), pem):  # PrivateKey.load takes a str or bytes path
        message = config_error(PrivateKey.load, given)
        assert message == (
            "key file was given PEM text, not a path: give the file's path (or pass the key's "
            "bytes to PrivateKey.from_pem)"
        )
    message = config_error(CertifiedKey.load, str(files / "chain.pem"), pem.decode())
    assert message.startswith("key file was given PEM text, not a path") and body not in message
    message = config_error(PrivateKey.load, "/keys/a\0b.pem")  # open() raises ValueError
    assert message.startswith("key file was given text with a NUL character, not a path")
    assert config_error(PrivateKey.load, "0102030405060708090a0b0c0d0e0f10").startswith(
        "key file was given a key in hex, not a path")


def test_an_unreadable_path_is_shown_on_one_line_and_cut(files: Path) -> None:
    odd = str(files / "new\tline\x1b.pem")
    assert config_error(PrivateKey.load, odd) == (
        f"cannot read key file {files}/new\\tline\\x1b.pem: No such file or directory"
    )
    long = "/" + "d" * 300
    message = config_error(PrivateKey.load, long)
    assert message == f"cannot read key file /{'d' * 199}... (301 characters): File name too long"


def test_a_certificate_file_gives_its_certificates_in_order(
    files: Path, issued: tuple[Issued, Issued, Issued]
) -> None:
    anchor, middle, leaf = issued
    assert load_certificate_file(str(files / "cas.pem")) == (middle.der, anchor.der)
    assert load_certificate_file(str(files / "leaf.der")) == (leaf.der,)
    junk = str(files / "junk.pem")
    assert config_error(load_certificate_file, junk) == (
        f"certificate file {junk}: not a PEM or DER X.509 certificate"
    )
    # A version field other than v1 or v3 (here 1: v2) raised cryptography's InvalidVersion,
    # no ValueError, out of the loader (probe BW #1): a traceback, not the file named.
    v2 = files / "v2.pem"
    v2.write_bytes(pem_certificate(with_version_field(anchor.der, 1)))
    assert config_error(load_certificate_file, str(v2)) == (
        f"certificate file {v2}: a PEM certificate is not usable: X.509 version field 1 (v2) "
        "is not v1 or v3"
    )


def test_certificates_given_as_der_and_pem_items_become_one_der_sequence(
    issued: tuple[Issued, Issued, Issued],
) -> None:
    anchor, middle, leaf = issued
    items = [leaf.der, bytearray(middle.pem + anchor.pem)]
    assert as_der_sequence("trust anchors", items) == (leaf.der, middle.der, anchor.der)
    assert as_der_sequence("trust anchors", []) == ()
    assert config_error(as_der_sequence, "trust anchors", leaf.der) == (
        "trust anchors must be a list of certificates, not one bytes value"
    )
    assert config_error(as_der_sequence, "trust anchors", [leaf.der, 5]) == (
        "trust anchors items must be bytes (DER or PEM certificates)"
    )
    for path in ("ca.crt", Path("ca.crt")):  # a path where the bytes belong (probe CA)
        assert config_error(as_der_sequence, "trust anchors", [leaf.der, path]) == (
            "trust anchors items must be bytes (DER or PEM certificates): read the file: "
            "Path(p).read_bytes()"
        )
    assert config_error(as_der_sequence, "trust anchors", [b"junk"]) == (
        "trust anchors: not a PEM or DER X.509 certificate"
    )


def test_a_public_key_is_pinned_from_any_of_its_provisioned_forms(
    issued: tuple[Issued, Issued, Issued],
) -> None:
    _, _, leaf = issued
    pin = spki_sha256(leaf.spki)
    pem = leaf.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for form in (leaf.spki, bytearray(leaf.spki), pem, b"\n  " + pem, pem.decode(),
                 pin, pin.hex(), pin.hex().upper(), f"  {pin.hex()}\n",
                 # As the demo and the logs print it (probe CK), prefix in any case.
                 f"sha256:{pin.hex()}", f"SHA256:{pin.hex().upper()}", f" Sha256:{pin.hex()}\n"):
        assert public_key_pin(form) == pin, form
    # RFC 8422 §5.1.2: the peer sends its point uncompressed (RPK-2), so a key provisioned
    # compressed (openssl ec -pubout -conv_form compressed) pins as that: the same key.
    compressed = compressed_spki(leaf.key.public_key())
    assert compressed != leaf.spki
    assert public_key_pin(compressed) == pin
    assert public_key_pin(der_to_pem(compressed)) == pin
    assert public_key_pins([leaf.spki, pin.hex(), pem], "keys") == (pin,)
    other = spki_sha256(root().spki)
    assert public_key_pins([pin, other, pin], "keys") == (pin, other)
    assert public_key_pins([], "keys") == ()


@pytest.mark.parametrize(
    "text",
    ["ab" * 31, "sha256:" + "ab" * 31, "sha256: " + "ab" * 32, "sha1:" + "ab" * 32,
     "sha256:sha256:" + "ab" * 32, "not hex at all"],
)
def test_a_mistyped_sha256_names_its_entry_and_the_form_expected(text: str) -> None:
    """A raw key's SHA-256 given as text: 64 hex digits, optionally after "sha256:"; anything
    else names the setting's entry and says so, with the length only (probe CK: no entry was
    named, nor the form)."""
    expected = (
        "a public key given as text must be 64 hex digits (a SHA-256), optionally after "
        f"sha256:, or a PEM SubjectPublicKeyInfo; got {len(text.strip())} characters"
    )
    assert config_error(public_key_pin, text) == expected
    assert config_error(public_key_pins, ["cd" * 32, text], "keys") == f"keys[1]: {expected}"
    key = PrivateKey.generate()
    for build in (
        lambda: ServerConfig(raw_public_key=key, client_public_keys=["cd" * 32, text]),
        lambda: ClientConfig(server_public_keys=[text]),
    ):
        with pytest.raises(ConfigError) as caught:
            build()
        assert "_public_keys[" in str(caught.value) and "64 hex digits (a SHA-256)" in str(
            caught.value)


def test_what_is_not_a_public_key_is_refused_in_one_line() -> None:
    assert "bytes or str" in config_error(public_key_pin, 42)
    assert "SubjectPublicKeyInfo" in config_error(public_key_pin, b"\x04" + bytes(64))
    assert "SubjectPublicKeyInfo" in config_error(public_key_pin, "not hex at all")
    assert "exactly one PUBLIC KEY" in config_error(public_key_pin, PUBLIC_TWICE)


PUBLIC_TWICE = (
    b"-----BEGIN PUBLIC KEY-----\nMAMCAQU=\n-----END PUBLIC KEY-----\n" * 2
)


def test_each_loader_names_what_a_file_of_another_kind_holds(
    issued: tuple[Issued, Issued, Issued],
) -> None:
    """A private key given as the certificate said "no valid PEM certificate found", a
    certificate given as the key "no private key in it", a certificate given as a raw public key
    "a public key PEM must hold exactly one PUBLIC KEY block": each loader now names what it
    found (its PEM label, or DER) and what it wanted, and for a public key how to get one."""
    _, _, leaf = issued
    private_pem = key_pem(leaf)
    private_der = leaf.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    public_pem = leaf.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    sec1 = leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())
    assert config_error(load_certificates, private_pem) == (
        "that is a private key (PEM PRIVATE KEY), not a certificate")
    assert config_error(load_certificates, b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n"
                        b"-----END EC PARAMETERS-----\n" + sec1) == (
        "that is a private key (PEM EC PRIVATE KEY), not a certificate")
    assert config_error(load_certificates, private_der) == (
        "that is a private key (DER), not a certificate")
    assert config_error(load_certificates, public_pem) == (
        "that is a public key (PEM PUBLIC KEY), not a certificate")
    assert config_error(PrivateKey.from_pem, leaf.pem) == (
        "that is a certificate (PEM CERTIFICATE), not a private key")
    assert config_error(PrivateKey.from_pem, leaf.der) == (
        "that is a certificate (DER), not a private key")
    assert config_error(PrivateKey.from_pem, public_pem) == (
        "that is a public key (PEM PUBLIC KEY), not a private key")
    openssl = "(openssl x509 -in CERT.pem -pubkey -noout > PUB.pem writes it)"
    for form, shown in ((leaf.pem, "PEM CERTIFICATE"), (leaf.der, "DER")):
        assert config_error(public_key_pin, form) == (
            f"that is a certificate ({shown}), not a public key; give its public key "
            f"{openssl} or the public key's SHA-256")
    assert config_error(public_key_pin, private_pem) == (
        "that is a private key (PEM PRIVATE KEY), not a public key; give its public key "
        "(iotdtls keygen spki --key KEY.pem --out PUB.pem writes it) or the public key's "
        "SHA-256")


@pytest.mark.req("RPK-3")
def test_a_der_pin_must_be_a_p256_subject_public_key_info(
    issued: tuple[Issued, Issued, Issued],
) -> None:
    """RFC 7250 §3, RFC 7925 §4.3: what is not a P-256 SubjectPublicKeyInfo is refused when
    configured, not at the handshake as "not provisioned"; no key bytes in the message."""
    _, _, leaf = issued
    private = PrivateKey(p256()).to_pem()
    private_der = serialization.load_pem_private_key(private, None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    for form in (private, private_der, key_pem(leaf, PASSWORD)):
        message = config_error(public_key_pin, form)
        assert message.startswith("that is a private key ("), message
        assert "iotdtls keygen spki" in message
    assert config_error(public_key_pin, leaf.der).startswith("that is a certificate")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    for key, shown in ((p384, "is on secp384r1"), (rsa_key, "is RSA, not ECDSA")):
        spki = key.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)
        assert config_error(public_key_pin, spki) == (
            f"the public key {shown}; the profile needs P-256")
    for junk in (b"\x30\x03\x02\x01\x05", leaf.spki[:-1], leaf.spki + b"\x00"):
        assert config_error(public_key_pin, junk) == (
            "a public key must be a SubjectPublicKeyInfo (DER or PEM) or its SHA-256")


def test_pem_blocks_are_read_by_label_and_checked_as_base64() -> None:
    block = base64.b64encode(b"\x30\x03\x02\x01\x05").decode()
    text = (
        f"-----BEGIN PUBLIC KEY-----\n{block[:4]}\n{block[4:]}\n-----END PUBLIC KEY-----\n"
        f"-----BEGIN CERTIFICATE-----\n{block}\n-----END CERTIFICATE-----\n"
    ).encode()
    assert pem_blocks(text, "PUBLIC KEY") == [b"\x30\x03\x02\x01\x05"]
    assert pem_blocks(text, "PRIVATE KEY") == []
    bad = b"-----BEGIN PUBLIC KEY-----\nMAMC!AQU=\n-----END PUBLIC KEY-----\n"
    assert config_error(pem_blocks, bad, "PUBLIC KEY") == (
        "a PEM PUBLIC KEY block is not valid base64"
    )


def test_a_private_key_and_its_password_must_be_bytes(
    issued: tuple[Issued, Issued, Issued],
) -> None:
    """A PEM read as text is refused by what it is, not as an unreadable key (TypeError)."""
    pem = key_pem(issued[2], PASSWORD)
    assert config_error(PrivateKey.from_pem, pem.decode()) == (
        "give the key as bytes (PEM or DER), got str"
    )
    assert config_error(PrivateKey.from_pem, pem, PASSWORD.decode()) == (
        "give the key's password as bytes, got str"
    )
    loaded = PrivateKey.from_pem(bytearray(pem), PASSWORD)
    assert loaded.spki == PrivateKey(issued[2].key).spki


@pytest.mark.req("CRT-1")
def test_our_own_certificate_out_of_its_window_is_a_warning_when_configured(
    issued: tuple[Issued, Issued, Issued], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """`iotdtls server --cert server-expired.crt` started in silence, then every client failed
    with certificate_expired: loading such a certificate into a configuration logs one warning
    naming the file and the window (once per chain), and still works (a device's clock may be
    the one that is wrong)."""
    _, middle, _ = issued
    leaf = server_leaf(middle, not_before=NOW - 10 * DAY, not_after=NOW - DAY)
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes(leaf.pem)
    key.write_bytes(key_pem(leaf))
    expired = CertifiedKey.load(cert, key)
    with caplog.at_level(logging.WARNING, "iotdtls"):
        config = ServerConfig(certificates=[expired], wall_clock=NOW.timestamp)
        ServerConfig(certificates=[expired], wall_clock=NOW.timestamp)
        fine = CertifiedKey(expired.chain, expired.private_key)
        ServerConfig(certificates=[fine], wall_clock=(NOW - 5 * DAY).timestamp)
        ClientConfig(trust_anchors=[middle.der], certificate=fine, wall_clock=NOW.timestamp)
    assert config.certificates == (expired,)
    window = f"(valid {NOW - 10 * DAY:%Y-%m-%d} to {NOW - DAY:%Y-%m-%d})"
    assert [r.getMessage() for r in caplog.records] == [
        f"our certificate {cert} expired {NOW - DAY:%Y-%m-%d} {window}: peers will refuse it "
        "with certificate_expired",
        f"our certificate 'CN=server,O=iotdtls tests' expired {NOW - DAY:%Y-%m-%d} {window}: "
        "peers will refuse it with certificate_expired",
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2


@pytest.mark.req("CRT-1")
def test_our_own_v1_certificate_is_a_warning_when_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A v1 certificate of ours loaded in silence, then our own peers refused it ("certificate
    must be an X509v3 certificate", bad_certificate) (probe CA): a configuration taking it
    logs one warning naming the file and the fix, once per chain, as for an expired one."""
    der, key = version_1_certificate("v1 device")
    cert, key_file = tmp_path / "device.crt", tmp_path / "device.key"
    cert.write_bytes(pem_certificate(der))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    certified = CertifiedKey.load(cert, key_file)
    with caplog.at_level(logging.WARNING, "iotdtls"):
        ClientConfig(trust_anchors=[root().der], certificate=certified, wall_clock=NOW.timestamp)
        ClientConfig(trust_anchors=[root().der], certificate=certified, wall_clock=NOW.timestamp)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(
        logging.WARNING,
        f"our certificate {cert} is an X.509 v1 certificate: iotdtls peers refuse it with "
        "bad_certificate (they take v3 only); issue a v3 one (openssl x509 -req with -extfile "
        "naming its extensions, or openssl req -x509)",
    )]


def test_our_certificate_is_valid_at_both_ends_of_its_validity(
    issued: tuple[Issued, Issued, Issued],
) -> None:
    """RFC 5280 §4.1.2.5: both bounds are inclusive; a second beyond either, a problem."""
    _, _, leaf = issued
    certified = CertifiedKey((leaf.der,), PrivateKey(leaf.key))
    start = leaf.cert.not_valid_before_utc.timestamp()
    end = leaf.cert.not_valid_after_utc.timestamp()
    assert validity_problem(certified, start) is None
    assert validity_problem(certified, end) is None
    assert "is not valid before" in str(validity_problem(certified, start - 1))
    assert "expired" in str(validity_problem(certified, end + 1))


def test_a_valid_own_certificate_is_parsed_once_for_every_configuration_made_with_it(
    issued: tuple[Issued, Issued, Issued], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each configuration (each `dataclasses.replace`, each coap `for_host`) checks our
    certificate's validity: the window is read from the leaf once per `CertifiedKey`, then
    only compared with the clock (it was parsed again every time)."""
    _, middle, leaf = issued
    certified = CertifiedKey((leaf.der,), PrivateKey(leaf.key))
    parsed = 0
    real = x509.load_der_x509_certificate

    def counted(data: bytes) -> x509.Certificate:
        nonlocal parsed
        parsed += bytes(data) == leaf.der
        return real(data)

    monkeypatch.setattr(x509, "load_der_x509_certificate", counted)
    config = ServerConfig(certificates=[certified], wall_clock=NOW.timestamp)
    for _ in range(5):
        config = dataclasses.replace(config, mtu=config.mtu)
        ClientConfig(trust_anchors=[middle.der], certificate=certified, wall_clock=NOW.timestamp)
    assert parsed == 1


def _clock_raising() -> float:
    raise OSError("clock broken")


#: How a number of no date is told (never its repr: that of 10**5000 raises ValueError).
NO_DATE = "not a date (NaN, infinite or beyond the years 1 to 9999)"


class BadFloat(float):
    """A number whose conversion fails: the clock's mistake, told in one line."""

    def __float__(self) -> float:
        raise RuntimeError("clock broken")


class NumpyLike:
    """A number type of another library, registered as a `numbers.Real` (as numpy's are)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __float__(self) -> float:
        return self.seconds


numbers.Real.register(NumpyLike)


@pytest.mark.parametrize(
    "reading",
    [lambda: fractions.Fraction(int(NOW.timestamp())), lambda: NumpyLike(NOW.timestamp()),
     lambda: int(NOW.timestamp()), lambda: NOW.timestamp()],
    ids=["fraction", "numpy-like", "int", "float"],
)
def test_a_wall_clock_may_answer_any_real_number(
    issued: tuple[Issued, Issued, Issued], reading: Callable[[], object],
) -> None:
    """A `numbers.Real` (a Fraction, numpy's numbers) is seconds as float() makes them: it was
    refused unless an int or a float."""
    _, middle, leaf = issued
    certified = CertifiedKey((leaf.der,), PrivateKey(leaf.key))
    assert read_wall_clock(reading) == NOW.timestamp()
    ClientConfig(trust_anchors=[middle.der], certificate=certified, wall_clock=reading)
    ServerConfig(certificates=[certified], wall_clock=reading)


@pytest.mark.parametrize(
    ("clock", "message"),
    [
        (datetime.datetime.now,
         "wall_clock returned datetime, not a number of seconds since the epoch"),
        (lambda: "1700000000", "wall_clock returned str, not a number of seconds since the epoch"),
        (lambda: float("nan"), f"wall_clock returned float, {NO_DATE}"),
        (lambda: 1e300, f"wall_clock returned float, {NO_DATE}"),
        (lambda: 10**5000, f"wall_clock returned int, {NO_DATE}"),  # repr() of it raised
        (lambda: True, "wall_clock returned bool, not a number of seconds since the epoch"),
        (lambda: decimal.Decimal(1), (
            "wall_clock returned Decimal, not a number of seconds since the epoch")),
        (lambda: BadFloat(1.0), (
            "wall_clock returned BadFloat, which float() could not convert (RuntimeError)")),
        (_clock_raising, "wall_clock raised OSError"),
    ],
    ids=["datetime", "str", "nan", "far", "huge-int", "bool", "decimal", "bad-float", "raises"],
)
def test_a_wall_clock_read_by_the_configuration_must_answer_seconds(
    issued: tuple[Issued, Issued, Issued], clock: Callable[[], float], message: str,
) -> None:
    """Our certificate's validity is checked at construction by the configured clock: a clock
    that raises or answers no number is a one-line ConfigError naming it (was a raw TypeError
    from `validity_problem`)."""
    _, middle, leaf = issued
    certified = CertifiedKey((leaf.der,), PrivateKey(leaf.key))
    with pytest.raises(ConfigError) as client:
        ClientConfig(trust_anchors=[middle.der], certificate=certified, wall_clock=clock)
    with pytest.raises(ConfigError) as server:
        ServerConfig(certificates=[certified], wall_clock=clock)
    assert str(client.value) == str(server.value) == message
    assert "clock broken" not in message


def test_api_file_loaders_read_only_a_regular_file_of_at_most_1_mib(
    files: Path, tmp_path: Path,
) -> None:
    """As the CLI refuses them: a FIFO blocked `PrivateKey.load` and `CertifiedKey.load`
    forever, /dev/zero filled memory until MemoryError; each is now a ConfigError naming the
    file, and a FIFO is never read."""
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.pem"
    big.write_bytes((files / "clear-key.pem").read_bytes() + b"#" * (1 << 20))
    chain, key = files / "chain.pem", files / "clear-key.pem"
    loaders: list[tuple[str, Callable[[Path], object]]] = [
        ("key file", lambda path: PrivateKey.load(path)),
        ("certificate file", lambda path: CertifiedKey.load(path, key)),
        ("key file", lambda path: CertifiedKey.load(chain, path)),
    ]
    for what, load in loaders:
        assert outcome_without_blocking(lambda load=load: load(fifo), fifo) == (
            f"{what} {fifo} is a FIFO, not a regular file")
        with pytest.raises(ConfigError) as device:
            load(Path(os.devnull))
        assert str(device.value) == f"{what} {os.devnull} is a character device, not a regular file"
        with pytest.raises(ConfigError) as large:
            load(big)
        assert str(large.value) == f"{what} {big} is larger than 1 MiB: is it the right file?"
    assert PrivateKey.load(key).spki == CertifiedKey.load(chain, key).private_key.spki


@pytest.mark.parametrize("zone", ["America/New_York", "Pacific/Kiritimati"])  # -5, +14
def test_a_wall_clock_is_dated_in_utc_whatever_the_local_time_zone(
    monkeypatch: pytest.MonkeyPatch, zone: str
) -> None:
    """Its answer is a date as `validity_problem` dates it, in UTC: the first second of the
    year 10000 UTC (still 9999 in New York) is none, or a handshake's check of our
    certificate raises ValueError past the clock's; the last of 9999 UTC (already 10000 at
    UTC+14) is one."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        with pytest.raises(WallClockFailed):
            read_wall_clock(lambda: 253_402_300_800.0)
        assert read_wall_clock(lambda: 253_402_300_799.0) == 253_402_300_799.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_api_file_loaders_follow_symlinks_and_read_no_more_than_the_bound(
    files: Path, tmp_path: Path,
) -> None:
    """Keys and certificates are often symlinks (certbot's live/ directory): followed. A file
    far over 1 MiB (a sparse 64 MiB one) is refused having read the bound and one byte at
    most, not the whole file into memory."""
    live = tmp_path / "live"
    live.mkdir()
    (live / "privkey.pem").symlink_to(files / "clear-key.pem")
    (live / "fullchain.pem").symlink_to(files / "chain.pem")
    linked = CertifiedKey.load(live / "fullchain.pem", live / "privkey.pem")
    assert linked.private_key.spki == PrivateKey.load(files / "clear-key.pem").spki
    huge = tmp_path / "huge.pem"
    with huge.open("wb") as sparse:
        sparse.truncate(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as large:
            PrivateKey.load(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(large.value) == f"key file {huge} is larger than 1 MiB: is it the right file?"
    assert peak < 8 << 20, peak


def test_certified_key_from_pem_refuses_text_as_private_key_from_pem_does(files: Path) -> None:
    """A str gave "TypeError: 'in <string>' requires string as left operand, not bytes"."""
    chain: Any = (files / "chain.pem").read_text()
    key: Any = (files / "clear-key.pem").read_text()
    for certificates, private_key in ((chain, key.encode()), (chain, key)):
        with pytest.raises(ConfigError) as refused:
            CertifiedKey.from_pem(certificates, private_key)
        assert str(refused.value) == "give the certificates as bytes (PEM or DER), got str"
    with pytest.raises(ConfigError) as refused:
        CertifiedKey.from_pem(chain.encode(), key)
    assert str(refused.value) == "give the key as bytes (PEM or DER), got str"
    expected = CertifiedKey.from_pem(chain.encode(), key.encode()).chain
    for form in (bytearray, memoryview):
        assert CertifiedKey.from_pem(form(chain.encode()), key.encode()).chain == expected


def test_what_a_file_holds_is_named_by_its_pem_labels_or_as_der() -> None:
    """`crypto.pem`: a label of no known kind is named as a block of it; a file holding the
    kind wanted anywhere (a key and its certificate in one PEM file, key first) or as DER gets
    no "that is" (what failed is something else)."""
    issued = root()
    cert_pem = issued.cert.public_bytes(serialization.Encoding.PEM)
    cert_der = issued.cert.public_bytes(serialization.Encoding.DER)
    key_pem = issued.key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
    odd = b"-----BEGIN FOO BAR-----\nAAAA\n-----END FOO BAR-----\n"
    assert pem.kind_of(odd) == ("a FOO BAR block", "PEM FOO BAR")
    assert pem.that_is(odd, pem.CERTIFICATE) == (
        "that is a FOO BAR block (PEM FOO BAR), not a certificate")
    assert pem.that_is(key_pem + cert_pem, pem.CERTIFICATE) is None
    assert pem.that_is(key_pem + cert_pem, pem.PUBLIC_KEY) == (
        "that is a private key (PEM PRIVATE KEY), not a public key")
    assert pem.that_is(cert_der, pem.CERTIFICATE) is None
    assert pem.that_is(cert_der, pem.PRIVATE_KEY) == (
        "that is a certificate (DER), not a private key")


def test_a_public_key_pem_of_another_kind_is_named_or_refused_plainly() -> None:
    """What a PEM file given as a raw public key holds instead is named, also when the kind
    has no known way to its public key (a certificate request); a file holding a public key
    anywhere (PKCS #1 "RSA PUBLIC KEY", after a private key) is not named by its first block."""
    csr = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(ConfigError) as refused:
        public_key_pin(csr)
    assert str(refused.value) == (
        "that is a certificate request (PEM CERTIFICATE REQUEST), not a public key")
    key_pem = p256().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    mixed = key_pem + b"-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"
    with pytest.raises(ConfigError) as refused:
        public_key_pin(mixed)
    assert str(refused.value) == "a public key PEM must hold exactly one PUBLIC KEY block"
