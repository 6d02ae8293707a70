"""Known-answer tests of the PRF, key schedule and AES-128-CCM-8 record protection."""

from __future__ import annotations

import ast
import hashlib
import hmac
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

import iotdtls.crypto as crypto_pkg
from iotdtls.crypto import (
    CCM8_OVERHEAD,
    BadTag,
    Ccm8Protector,
    KeyBlock,
    NullProtector,
    constant_time_equal,
    derive_key_block,
    extended_master_secret,
    finished_verify_data,
    keylog_line,
    master_secret,
    prf,
    psk_premaster_secret,
    random_bytes,
)
from iotdtls.crypto.prf import HmacSha256

SRC = Path(__file__).resolve().parents[1] / "src" / "iotdtls"

# The TLS 1.2 PRF (SHA-256) vector posted to the IETF TLS WG list (msg03416), widely reused.
PRF_SECRET = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
PRF_SEED = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
PRF_OUTPUT = bytes.fromhex(
    "e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a"
    "6b301791e90d35c9c9a46b4e14baf9af0fa022f7077def17abfd3797c0564bab"
    "4fbc91666e9def9b97fce34f796789baa48082d122ee42c5a72e5a5110fff701"
    "87347b66"
)

# "The Illustrated TLS 1.2 Connection" (tls12.xargs.org): published premaster, randoms, master
# secret and key block of a SHA-256 PRF suite. The key block depends only on the PRF, so its
# first 40 bytes are exactly the AES-128-CCM-8 key block of those inputs.
XARGS_PREMASTER = bytes.fromhex("df4a291baa1eb7cfa6934b29b474baad2697e29f1f920dcc77c8a0a088447624")
XARGS_CLIENT_RANDOM = bytes(range(0x00, 0x20))
XARGS_SERVER_RANDOM = bytes(range(0x70, 0x90))
XARGS_MASTER = bytes.fromhex(
    "916abf9da55973e13614ae0a3f5d3f37b023ba129aee02cc9134338127cd7049"
    "781c8e19fc1eb2a7387ac06ae237344c"
)
XARGS_KEY_BLOCK_40 = bytes.fromhex(
    "1b7d117c7d5f690bc263cae8ef60af0f1878acc2"  # their client MAC key
    "2ad8bdd8c601a617126f63540eb20906f781fad2"  # their server MAC key
)


# -- PRF and key schedule -----------------------------------------------------------------------


def test_prf_published_vector() -> None:
    assert prf(PRF_SECRET, b"test label", PRF_SEED, 100) == PRF_OUTPUT


def test_prf_takes_its_secret_keyed_already() -> None:
    keyed = HmacSha256(PRF_SECRET)
    assert prf(keyed, b"test label", PRF_SEED, 100) == PRF_OUTPUT
    assert prf(keyed, b"test label", PRF_SEED, 12) == PRF_OUTPUT[:12]  # the same key, again


@pytest.mark.parametrize("length", [0, 1, 31, 32, 33, 64, 99])
def test_prf_prefixes_agree(length: int) -> None:
    assert prf(PRF_SECRET, b"test label", PRF_SEED, length) == PRF_OUTPUT[:length]


def test_prf_rejects_negative_length() -> None:
    with pytest.raises(ValueError):
        prf(b"k", b"l", b"s", -1)


# RFC 4231 §4.2, §4.3 and §4.7: HMAC-SHA-256 of test cases 1, 2 and 6 (a key longer than the
# 64-byte block, hashed first).
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
]


@pytest.mark.parametrize(("key", "message", "expected"), RFC4231)
def test_hmac_sha256_published_vectors(key: bytes, message: bytes, expected: str) -> None:
    mac = HmacSha256(key)
    assert mac.digest(message).hex() == expected
    assert mac.digest(message).hex() == expected  # the keyed states are copied, never used up


@pytest.mark.parametrize("key_length", [0, 32, 63, 64, 65, 200])
def test_hmac_sha256_agrees_with_the_standard_library_around_the_block_size(
    key_length: int,
) -> None:
    """RFC 2104 §2: keys up to the 64-byte block are zero-padded, longer ones hashed first."""
    key = bytes(range(1, key_length + 1))
    for message in (b"", b"m", bytes(100)):
        assert HmacSha256(key).digest(message) == hmac.digest(key, message, "sha256")


def test_hmac_sha256_keys_with_openssl_s_sha256() -> None:
    """OpenSSL's SHA-256 through `hashlib`, not the interpreter's portable C: OpenSSL uses the
    CPU's SHA extensions, which callgrind does not show (the module docstring)."""
    inner = HmacSha256(b"key")._inner  # the hash state each digest starts from
    assert type(inner) is type(hashlib.sha256())


def test_hmac_sha256_repr_shows_no_key() -> None:
    key = bytes.fromhex("5ec2e75ec2e75ec2e75ec2e75ec2e75e")
    assert key.hex() not in repr(HmacSha256(key)) and "redacted" in repr(HmacSha256(key))


def test_psk_premaster_layout_rfc4279() -> None:
    psk = bytes.fromhex("0102030405")
    assert psk_premaster_secret(psk) == b"\x00\x05" + bytes(5) + b"\x00\x05" + psk
    other = b"\xaa" * 3
    assert psk_premaster_secret(psk, other) == b"\x00\x03" + other + b"\x00\x05" + psk


def test_psk_premaster_rejects_empty_or_huge() -> None:
    with pytest.raises(ValueError):
        psk_premaster_secret(b"")
    with pytest.raises(ValueError):
        psk_premaster_secret(bytes(0x10000))


def test_master_secret_published_vector() -> None:
    ms = master_secret(XARGS_PREMASTER, XARGS_CLIENT_RANDOM, XARGS_SERVER_RANDOM)
    assert ms == XARGS_MASTER


def test_key_block_published_vector_ccm8_layout() -> None:
    kb = derive_key_block(XARGS_MASTER, XARGS_CLIENT_RANDOM, XARGS_SERVER_RANDOM)
    assert kb.client_write_key == XARGS_KEY_BLOCK_40[0:16]
    assert kb.server_write_key == XARGS_KEY_BLOCK_40[16:32]
    assert kb.client_write_iv == XARGS_KEY_BLOCK_40[32:36]
    assert kb.server_write_iv == XARGS_KEY_BLOCK_40[36:40]


def test_randoms_must_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        master_secret(XARGS_PREMASTER, b"short", XARGS_SERVER_RANDOM)
    with pytest.raises(ValueError):
        derive_key_block(XARGS_MASTER, XARGS_CLIENT_RANDOM, b"")


def test_extended_master_secret_label_rfc7627() -> None:
    session_hash = hashlib.sha256(b"transcript").digest()
    ems = extended_master_secret(XARGS_PREMASTER, session_hash)
    assert ems == prf(XARGS_PREMASTER, b"extended master secret", session_hash, 48)
    assert ems != master_secret(XARGS_PREMASTER, XARGS_CLIENT_RANDOM, XARGS_SERVER_RANDOM)


def test_finished_verify_data_labels() -> None:
    h = hashlib.sha256(b"handshake messages").digest()
    client = finished_verify_data(XARGS_MASTER, True, h)
    server = finished_verify_data(XARGS_MASTER, False, h)
    assert client == prf(XARGS_MASTER, b"client finished", h, 12)
    assert server == prf(XARGS_MASTER, b"server finished", h, 12)
    assert len(client) == len(server) == 12
    assert client != server


def test_key_block_repr_hides_keys() -> None:
    kb = derive_key_block(XARGS_MASTER, XARGS_CLIENT_RANDOM, XARGS_SERVER_RANDOM)
    text = repr(kb) + str(kb)
    for secret in (kb.client_write_key, kb.server_write_key, kb.client_write_iv):
        assert secret.hex() not in text
        assert repr(secret) not in text
    assert isinstance(kb, KeyBlock)


def test_keylog_line_nss_format() -> None:
    line = keylog_line(XARGS_CLIENT_RANDOM, XARGS_MASTER)
    assert line == f"CLIENT_RANDOM {XARGS_CLIENT_RANDOM.hex()} {XARGS_MASTER.hex()}"
    with pytest.raises(ValueError):
        keylog_line(b"x", XARGS_MASTER)


# -- AES-128-CCM-8 ------------------------------------------------------------------------------

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
IV = bytes.fromhex("a0a1a2a3")


def test_ccm8_primitive_nist_sp800_38c_example_3() -> None:
    """NIST SP 800-38C Appendix C Example 3: 12-byte nonce, 8-byte tag, as CCM_8 uses."""
    aead = AESCCM(bytes.fromhex("404142434445464748494a4b4c4d4e4f"), tag_length=8)
    out = aead.encrypt(
        bytes.fromhex("101112131415161718191a1b"),
        bytes.fromhex("202122232425262728292a2b2c2d2e2f3031323334353637"),
        bytes.fromhex("000102030405060708090a0b0c0d0e0f10111213"),
    )
    assert out == bytes.fromhex("e3b201a9f5b71a7a9b1ceaeccd97e70b6176aad9a4428aa5484392fbc1b09951")


@pytest.mark.req("REC-1")
def test_ccm8_seal_matches_hand_built_nonce_and_aad() -> None:
    epoch, seq, ctype, version = 1, 0x0000_1234_5678, 23, 0xFEFD
    plaintext = b"hello, constrained world"
    fragment = Ccm8Protector(KEY, IV).seal(epoch, seq, ctype, version, plaintext)

    explicit = bytes.fromhex("0001000012345678")  # epoch(2) || seq(6), RFC 6347 §4.1.2.1
    nonce = IV + explicit  # RFC 6655 §3
    aad = explicit + bytes([ctype]) + b"\xfe\xfd" + len(plaintext).to_bytes(2, "big")
    expected = explicit + AESCCM(KEY, tag_length=8).encrypt(nonce, plaintext, aad)
    assert fragment == expected
    assert len(fragment) == len(plaintext) + CCM8_OVERHEAD == len(plaintext) + 16


@pytest.mark.req("REC-1")
def test_ccm8_open_round_trip_and_binding() -> None:
    p = Ccm8Protector(KEY, IV)
    frag = p.seal(2, 7, 22, 0xFEFD, b"finished")
    assert p.open(2, 7, 22, 0xFEFD, frag) == b"finished"
    for args in [(2, 8, 22, 0xFEFD), (3, 7, 22, 0xFEFD), (2, 7, 23, 0xFEFD), (2, 7, 22, 0xFEFF)]:
        with pytest.raises(BadTag):
            p.open(*args, frag)
    with pytest.raises(BadTag):
        Ccm8Protector(KEY, b"\x00\x00\x00\x00").open(2, 7, 22, 0xFEFD, frag)


@pytest.mark.req("REC-1")
def test_ccm8_open_takes_nonce_from_fragment_and_aad_from_header() -> None:
    explicit = bytes.fromhex("00aa00bbccddeeff")  # deliberately not the header's epoch||seq
    aad = bytes.fromhex("0001000000000009") + b"\x17\xfe\xfd" + (3).to_bytes(2, "big")
    frag = explicit + AESCCM(KEY, tag_length=8).encrypt(IV + explicit, b"abc", aad)
    assert Ccm8Protector(KEY, IV).open(1, 9, 23, 0xFEFD, frag) == b"abc"


@pytest.mark.req("REC-1")
def test_ccm8_tamper_and_short_fragments_raise_bad_tag() -> None:
    p = Ccm8Protector(KEY, IV)
    frag = bytearray(p.seal(1, 0, 23, 0xFEFD, b"data"))
    for i in range(len(frag)):
        bad = bytearray(frag)
        bad[i] ^= 0x01  # explicit nonce, ciphertext or tag: all must fail
        with pytest.raises(BadTag):
            p.open(1, 0, 23, 0xFEFD, bytes(bad))
    for n in range(16):
        with pytest.raises(BadTag):
            p.open(1, 0, 23, 0xFEFD, bytes(frag[:n]))
    assert p.open(1, 0, 23, 0xFEFD, p.seal(1, 0, 23, 0xFEFD, b"")) == b""


def test_ccm8_key_and_iv_sizes_and_repr() -> None:
    with pytest.raises(ValueError):
        Ccm8Protector(bytes(32), IV)
    with pytest.raises(ValueError):
        Ccm8Protector(KEY, bytes(12))
    p = Ccm8Protector(KEY, IV)
    assert KEY.hex() not in repr(p) and IV.hex() not in repr(p)
    assert p.overhead == 16


def test_null_protector_is_identity() -> None:
    n = NullProtector()
    assert n.overhead == 0
    assert n.seal(0, 5, 22, 0xFEFD, b"xyz") == b"xyz"
    assert n.open(0, 5, 22, 0xFEFD, b"xyz") == b"xyz"


# -- requirements -------------------------------------------------------------------------------


@pytest.mark.req("SEC-2")
def test_constant_time_equal_uses_compare_digest() -> None:
    assert constant_time_equal(b"abc", b"abc")
    assert not constant_time_equal(b"abc", b"abd")
    assert not constant_time_equal(b"abc", b"ab")
    assert not constant_time_equal(b"", b"a")
    source = (SRC / "crypto" / "compare.py").read_text()
    assert "hmac.compare_digest(a, b)" in source


@pytest.mark.req("SEC-2")
def test_constant_time_equal_delegates_to_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return True

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert constant_time_equal(b"x", b"y")
    assert seen == [(b"x", b"y")]


def _python_sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p.is_file())


def _uses_random_module(node: ast.AST) -> bool:
    """An `import random`, `from random import ...` or `random.<name>` node."""
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "random" for a in node.names)
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "random"
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "random"
    )


@pytest.mark.req("CFG-2")
def test_randomness_only_from_the_os() -> None:
    """No module of iotdtls imports `random` or calls `random.*`, except the test-tool proxy."""
    allowed = {SRC / "proxy.py"}
    offenders = [
        f"{path}:{getattr(node, 'lineno', '?')}"
        for path in _python_sources()
        if path not in allowed
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if _uses_random_module(node)
    ]
    assert offenders == []


@pytest.mark.req("CFG-2")
def test_random_bytes_comes_from_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake_urandom(n: int) -> bytes:
        calls.append(n)
        return b"\x42" * n

    monkeypatch.setattr(os, "urandom", fake_urandom)
    assert random_bytes(7) == b"\x42" * 7
    assert calls == [7]
    monkeypatch.undo()
    a, b = random_bytes(32), random_bytes(32)
    assert len(a) == 32 and a != b
    with pytest.raises(ValueError):
        random_bytes(-1)


@pytest.mark.req("REC-4")
def test_only_ccm8_and_null_protection_exist() -> None:
    protectors = {
        name
        for name in crypto_pkg.__all__
        if name.endswith("Protector") and name != "RecordProtector"
    }
    assert protectors == {"Ccm8Protector", "NullProtector"}
    forbidden_modules = {"zlib", "bz2", "lzma", "gzip", "zipfile"}
    forbidden_names = {"ARC4", "ChaCha20", "RC4", "ChaCha20Poly1305", "AESGCM", "CBC", "CTR"}
    for path in _python_sources():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
                assert not names & forbidden_modules, f"{path}:{node.lineno}"
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in forbidden_modules, path
                imported = {a.name for a in node.names}
                assert not imported & forbidden_names, f"{path}:{node.lineno}"
    # The only AEAD is CCM with an 8-byte tag over a 16-byte key.
    assert CCM8_OVERHEAD == 16
    with pytest.raises(ValueError):
        Ccm8Protector(bytes(24), IV)
