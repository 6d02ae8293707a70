"""The client's chain cache for cached_info (RFC 7924, CRT-2): the fingerprint, and a store
that survives restarts, refuses path tricks, writes atomically and ignores damaged files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from iotdtls.chaincache import DEFAULT_MAX_ENTRY_SIZE, ChainCache, chain_hash, chain_hash_of
from iotdtls.messages.certificate import Certificate
from tests.pki import ca_chain, chain_der, server_leaf

pytestmark = pytest.mark.req("CRT-2")

KEY = "coap.example.org:5684"


@pytest.fixture(scope="module")
def chain() -> tuple[bytes, ...]:
    _, (middle,) = ca_chain(1)
    return chain_der(server_leaf(middle), middle)


def test_chain_hash_is_sha256_of_the_certificate_message_body() -> None:
    # Certificate body (RFC 5246 §7.4.2): certificate_list<0..2^24-1> of ASN.1Cert<1..2^24-1>
    body = bytes.fromhex("000009" "000002" "0102" "000001" "03")
    assert Certificate((b"\x01\x02", b"\x03")).encode() == body
    expected = hashlib.sha256(body).digest()
    assert chain_hash(body) == expected
    assert chain_hash_of([b"\x01\x02", b"\x03"]) == expected
    assert len(expected) == 32


def test_saved_chain_survives_a_restart_and_is_replaced_by_a_newer_one(
    tmp_path: Path, chain: tuple[bytes, ...]
) -> None:
    assert ChainCache(tmp_path).save(KEY, chain)
    assert ChainCache(tmp_path).load(KEY) == chain
    assert ChainCache(tmp_path).load("other:5684") is None
    newer = chain[:1]
    assert ChainCache(tmp_path).save(KEY, newer)
    assert ChainCache(tmp_path).load(KEY) == newer
    ChainCache(tmp_path).discard(KEY)
    assert ChainCache(tmp_path).load(KEY) is None
    ChainCache(tmp_path).discard(KEY)


def test_a_missing_directory_is_an_empty_cache_and_is_created_private(
    tmp_path: Path, chain: tuple[bytes, ...]
) -> None:
    cache = ChainCache(tmp_path / "a" / "cache")
    assert cache.load(KEY) is None
    assert cache.save(KEY, chain)
    assert stat.S_IMODE((tmp_path / "a" / "cache").stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.path_for(KEY).stat().st_mode) == 0o600
    assert [p.name for p in cache.directory.iterdir()] == [cache.path_for(KEY).name]


@pytest.mark.parametrize("key", ["../../escape", "/etc/passwd", "a/b", "..", "\x00", "é:5684",
                                 "x" * 5000])
def test_keys_cannot_choose_the_file_name(tmp_path: Path, chain: tuple[bytes, ...],
                                          key: str) -> None:
    inside = tmp_path / "cache"
    cache = ChainCache(inside)
    assert cache.save(key, chain)
    assert cache.load(key) == chain
    assert [p.parent for p in tmp_path.rglob("*") if p.is_file()] == [inside]
    assert cache.path_for(key).name == hashlib.sha256(key.encode()).hexdigest() + ".chain"


def test_empty_and_too_large_chains_are_not_stored(tmp_path: Path,
                                                   chain: tuple[bytes, ...]) -> None:
    cache = ChainCache(tmp_path, max_entry_size=1000)
    assert not cache.save(KEY, ())
    assert not cache.save(KEY, [b"\x30" * 1000])
    assert cache.load(KEY) is None
    assert list(tmp_path.iterdir()) == []
    assert DEFAULT_MAX_ENTRY_SIZE >= 16 * 1024
    with pytest.raises(ValueError):
        cache.load("")


def corruptions(data: bytes) -> list[bytes]:
    middle = len(data) // 2
    return [
        b"",
        data[:-1],
        data[: len(data) // 2],
        data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :],
        b"X" + data[1:],
        data + b"\x00",
        os.urandom(len(data)),
    ]


def test_damaged_files_read_as_absent(tmp_path: Path, chain: tuple[bytes, ...]) -> None:
    cache = ChainCache(tmp_path)
    cache.save(KEY, chain)
    path = cache.path_for(KEY)
    good = path.read_bytes()
    for damaged in corruptions(good):
        path.write_bytes(damaged)
        assert cache.load(KEY) is None
    path.write_bytes(good)
    assert cache.load(KEY) == chain


def test_a_file_for_another_key_or_over_the_size_limit_reads_as_absent(
    tmp_path: Path, chain: tuple[bytes, ...]
) -> None:
    cache = ChainCache(tmp_path)
    cache.save("other:5684", chain)
    cache.path_for("other:5684").rename(cache.path_for(KEY))
    assert cache.load(KEY) is None
    cache.save(KEY, chain)
    assert ChainCache(tmp_path, max_entry_size=len(cache.path_for(KEY).read_bytes()) - 1
                      ).load(KEY) is None
    cache.path_for(KEY).unlink()
    cache.path_for(KEY).mkdir()
    assert cache.load(KEY) is None


def test_a_failed_save_leaves_the_old_entry_and_no_temporary_file(
    tmp_path: Path, chain: tuple[bytes, ...]
) -> None:
    cache = ChainCache(tmp_path)
    cache.save(KEY, chain)
    cache.path_for("blocked").mkdir()  # os.replace cannot put a file over a directory
    assert not cache.save("blocked", chain)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [cache.path_for(KEY).name, cache.path_for("blocked").name])
    assert cache.load(KEY) == chain
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    assert not ChainCache(not_a_directory / "cache").save(KEY, chain)
