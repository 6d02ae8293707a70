"""The client's chain cache for cached_info (RFC 7924, CRT-2): the fingerprint, and a store
that survives restarts, refuses path tricks, writes atomically and ignores damaged files."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from iotdtls.chaincache import (
    DEFAULT_MAX_ENTRY_SIZE,
    ChainCache,
    chain_hash,
    chain_hash_of,
    for_server,
    remember_chain,
    with_cached_chain,
)
from iotdtls.config import ClientConfig
from iotdtls.errors import ConfigError
from iotdtls.identity import CertificateIdentity, PskIdentity
from iotdtls.messages.certificate import Certificate
from tests.blocking_support import outcome_without_blocking
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


def test_a_path_that_is_not_a_directory_is_refused_at_once(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        ChainCache(not_a_directory)
    assert str(info.value) == (f"chain cache {not_a_directory} is not a directory: name a "
                               "directory (it is made if missing)")


def test_keys_are_1_to_65535_bytes(tmp_path: Path) -> None:
    cache = ChainCache(tmp_path)
    assert cache.path_for("k" * 65535).suffix == ".chain"
    with pytest.raises(ValueError, match="1 to 65535 bytes"):
        cache.path_for("k" * 65536)


def test_an_entry_of_exactly_the_size_limit_is_kept_and_read(
    tmp_path: Path, chain: tuple[bytes, ...]
) -> None:
    assert ChainCache(tmp_path).save(KEY, chain)
    size = len(ChainCache(tmp_path).path_for(KEY).read_bytes())
    assert ChainCache(tmp_path, max_entry_size=size).load(KEY) == chain
    assert ChainCache(tmp_path / "again", max_entry_size=size).save(KEY, chain)
    assert not ChainCache(tmp_path / "smaller", max_entry_size=size - 1).save(KEY, chain)


def test_failures_to_store_are_logged_with_the_key_and_the_reason(
    tmp_path: Path, chain: tuple[bytes, ...], caplog: pytest.LogCaptureFixture
) -> None:
    not_a_directory = tmp_path / "file"
    cache = ChainCache(not_a_directory)
    not_a_directory.write_bytes(b"")  # a file took the directory's name meanwhile
    with caplog.at_level(logging.DEBUG, logger="iotdtls.chaincache"):
        assert not cache.save(KEY, chain)
        assert not ChainCache(tmp_path, max_entry_size=100).save(KEY, chain)
    failed, too_large = (record.getMessage() for record in caplog.records)
    assert failed == f"could not cache the chain for {KEY!r} in {not_a_directory}: not a directory"
    assert too_large.startswith(f"chain for {KEY!r} not cached: ")
    assert too_large.endswith(" bytes is over the limit")


@pytest.fixture(scope="module")
def x509_config() -> ClientConfig:
    anchor, _ = ca_chain(1)
    return ClientConfig(trust_anchors=[anchor.der], server_name="coap.example.org")


def test_a_client_offers_the_chain_the_cache_holds_for_its_server(
    tmp_path: Path, chain: tuple[bytes, ...], x509_config: ClientConfig
) -> None:
    cache = ChainCache(tmp_path)
    assert with_cached_chain(x509_config, None, KEY) is x509_config
    assert with_cached_chain(x509_config, cache, KEY) is x509_config  # nothing cached yet
    cache.save(KEY, chain)
    offering = with_cached_chain(x509_config, cache, KEY)
    assert tuple(offering.cached_server_chain) == chain
    assert with_cached_chain(offering, cache, KEY) is offering  # already offered
    assert with_cached_chain(x509_config, cache, "other:5684") is x509_config
    psk = ClientConfig(psk_identity=b"id", psk=bytes(16))
    assert with_cached_chain(psk, cache, KEY) is psk  # cached_info is for certificates only


def test_before_a_handshake_a_client_offers_the_cached_chain_and_knows_its_key(
    tmp_path: Path, chain: tuple[bytes, ...], x509_config: ClientConfig
) -> None:
    """`for_server`, what the asyncio and blocking clients and the load generator call: the
    key is the checked name and the port (`cache_key`), whatever host was dialled; without a
    name of its own, the configuration checks the dialled host (`ClientConfig.for_host`)."""
    cache = ChainCache(tmp_path)
    assert for_server(x509_config, cache, "192.0.2.1", 5684) == (x509_config, KEY)
    cache.save(KEY, chain)
    offering, key = for_server(x509_config, cache, "192.0.2.1", 5684)
    assert (tuple(offering.cached_server_chain), key) == (chain, KEY)
    unnamed = dataclasses.replace(x509_config, server_name=None)
    named = dataclasses.replace(x509_config, server_name="gw.example")
    assert for_server(unnamed, None, "gw.example", 5684) == (named, "gw.example:5684")
    # A configuration that checks no name (no certificates) files under the dialled host.
    psk = ClientConfig(psk_identity=b"id", psk=bytes(16))
    offering, key = for_server(psk, cache, "192.0.2.1", 5684)
    assert (offering, key) == (psk.for_host("192.0.2.1"), "192.0.2.1:5684")
    assert offering.sni_name is None  # an IP address is never sent as server_name


def test_a_client_remembers_a_validated_chain_new_to_its_cache(
    tmp_path: Path, chain: tuple[bytes, ...], x509_config: ClientConfig
) -> None:
    """It returns the configuration the next handshake offers: with the new chain (what
    the load generator's later associations use), otherwise the one it was given."""
    cache = ChainCache(tmp_path)
    seen = CertificateIdentity("coap.example.org", chain)
    assert remember_chain(None, KEY, x509_config, seen) is x509_config
    for peer in (PskIdentity(b"id"), CertificateIdentity("coap.example.org", ()), None):
        assert remember_chain(cache, KEY, x509_config, peer) is x509_config
    assert list(tmp_path.iterdir()) == []
    offered = remember_chain(cache, KEY, x509_config, seen)
    assert cache.load(KEY) == chain
    assert offered == dataclasses.replace(x509_config, cached_server_chain=chain)
    # A chain the client offered and got again is not written again.
    path = cache.path_for(KEY)
    path.write_bytes(b"left alone")
    assert remember_chain(cache, KEY, offered, seen) is offered
    assert path.read_bytes() == b"left alone"


def test_a_cache_file_is_read_no_further_than_the_size_limit(tmp_path: Path) -> None:
    # A file that never ends (a link to /dev/zero, say) must not be read whole into memory:
    # a device is never read, a regular file no further than the limit.
    cache = ChainCache(tmp_path, max_entry_size=1000)
    cache.path_for(KEY).symlink_to("/dev/zero")
    assert cache.load(KEY) is None
    cache.path_for(KEY).unlink()
    cache.path_for(KEY).write_bytes(bytes(1001))
    assert cache.load(KEY) is None


def test_an_entry_that_is_no_regular_file_is_a_miss_without_blocking(
    tmp_path: Path, chain: tuple[bytes, ...]
) -> None:
    """A FIFO where an entry belongs blocked `load` (and the connect waiting on it) forever."""
    cache = ChainCache(tmp_path)
    fifo = cache.path_for(KEY)
    os.mkfifo(fifo)
    found: list[tuple[bytes, ...] | None] = []
    assert outcome_without_blocking(lambda: found.append(cache.load(KEY)), fifo) == "loaded"
    assert found == [None]


def test_an_empty_path_or_a_size_limit_below_one_byte_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ChainCache("")` became the working directory, where `DirectorySessionStore("")` is
    refused; a limit of 0 or less cached nothing, silently."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as empty:
        ChainCache("")
    assert str(empty.value) == (
        'chain cache directory is empty: name the directory ("." for this one)')
    sizes: list[Any] = [0, -1, True, 10.5]
    for size in sizes:
        with pytest.raises(ConfigError) as refused:
            ChainCache(tmp_path, max_entry_size=size)
        assert str(refused.value) == (
            f"chain cache max_entry_size must be an integer >= 1 (bytes), got {size!r}")
    assert ChainCache(tmp_path, max_entry_size=1).max_entry_size == 1  # the least allowed


@pytest.mark.parametrize("given", ["text", "path"])
def test_a_directory_with_a_nul_character_is_refused_when_made(tmp_path: Path, given: str) -> None:
    """`ChainCache("/x\\0y")` was taken, then each load and save raised a raw ValueError
    ("embedded null byte"). The name is not quoted: text with a NUL is no path, maybe a
    secret pasted in the wrong place (`_paths.not_a_path`)."""
    name = f"{tmp_path}/cache\0secret"
    with pytest.raises(ConfigError) as refused:
        ChainCache(name if given == "text" else Path(name))
    assert str(refused.value) == (
        "chain cache directory holds a NUL character, which no file name can: name the"
        " directory")
    assert "secret" not in str(refused.value)


class _BytesPath:
    """An os.PathLike whose __fspath__ answers bytes."""

    def __fspath__(self) -> bytes:
        return b"/tmp/cache"


class _NoPath:
    """An os.PathLike whose __fspath__ answers neither str nor bytes."""

    def __fspath__(self) -> int:
        return 42


@pytest.mark.parametrize(("given", "shown"), [
    (b"/tmp/cache", "bytes"),
    (_BytesPath(), "_BytesPath (its __fspath__ returned bytes)"),
    (_NoPath(), "_NoPath"),
    (5, "int"),
    (None, "None"),
], ids=["bytes", "pathlike-bytes", "pathlike-int", "int", "None"])
def test_a_directory_given_as_no_str_is_refused_in_one_line(given: Any, shown: str) -> None:
    """bytes (or an os.PathLike of bytes) raised "a bytes-like object is required, not 'str'"
    from the NUL check, which says nothing of the argument."""
    with pytest.raises(TypeError) as refused:
        ChainCache(given)
    assert str(refused.value) == (
        f"chain cache directory must be a str or an os.PathLike of str, got {shown}")
