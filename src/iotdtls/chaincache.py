"""A client's store of server certificate chains between runs, for cached_info (RFC 7924, CRT-2).

A client that holds the chain a server sent last time puts its fingerprint in cached_info; the
server then sends only the fingerprint instead of its Certificate. This module keeps those
chains in a directory, one file per server key (`host:port`, a server name, whatever the caller
chooses), and computes the fingerprint. It does file I/O and belongs to the adapters; the
sans-I/O core only needs `chain_hash`.

* `chain_hash(body)`: RFC 7924 §3 defines the `cert` CachedObject's hash_value as the
  fingerprint of the Certificate message, computed with SHA-256 over that message as input
  data, covering "the input data structure" and no type and length information around it. The
  input is therefore the Certificate structure of RFC 5246 §7.4.2 (the 3-byte length of
  certificate_list and each 3-byte-length-prefixed certificate), i.e. the handshake message body,
  without the handshake header. In DTLS that is also the only stable choice: the header carries
  message_seq and fragment fields that change from one handshake to the next.
* `ChainCache(directory)`: `load(key)` returns the chain or None, `save(key, chain)` stores it,
  `discard(key)` forgets it. File names are the SHA-256 of the key (no path can be smuggled in
  through it), files are written to a temporary name and renamed (atomic), an entry is at most
  `max_entry_size` bytes, and a file that is damaged, truncated, too large or for another key
  reads as absent, as does one that is no regular file (a FIFO is never opened blocking). Each
  file holds a magic line, the key, the Certificate body and a SHA-256
  over all of it. Saving never raises for an I/O problem: a cache must not break a connection
  (it logs a warning and returns False). A `directory` that exists but is not a directory, an
  empty str ("" is not taken for the working directory; `Path("")` is `Path(".")`, the working
  directory, taken as such), one with a NUL character and a `max_entry_size` below 1 byte are
  a `ConfigError` at once; a `directory` given as bytes, or as anything but a str or an
  os.PathLike of str, a one-line TypeError.
* `for_server(config, cache, host, port)` before a client's handshake (the configuration for
  that server, offering the chain the cache holds, and its key) and `remember_chain` after it:
  the one way the asyncio and blocking clients and the load generator use a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from iotdtls._files import RefusedFile, read_regular_file, write_atomically
from iotdtls._paths import directory_name_problem
from iotdtls.config import ClientConfig, Mode
from iotdtls.crypto.x509 import chain_hash
from iotdtls.errors import ConfigError, DecodeError
from iotdtls.identity import CertificateIdentity, PeerIdentity
from iotdtls.messages.certificate import Certificate

__all__ = [
    "DEFAULT_MAX_ENTRY_SIZE",
    "ChainCache",
    "cache_key",
    "chain_hash",
    "chain_hash_of",
    "for_server",
    "remember_chain",
    "with_cached_chain",
]

DEFAULT_MAX_ENTRY_SIZE: Final = 64 * 1024
"""Bytes per cache file: a few certificates of a few KiB each, with room to spare."""

_MAGIC = b"iotdtls chain cache 1\n"
_DIGEST_LEN = 32
_KEY_LEN_BYTES = 2
_SUFFIX = ".chain"
_log = logging.getLogger("iotdtls.chaincache")


def chain_hash_of(chain: Sequence[bytes]) -> bytes:
    """`chain_hash` of the Certificate message that carries `chain` (DER, leaf first)."""
    return chain_hash(Certificate(tuple(bytes(c) for c in chain)).encode())


class ChainCache:
    """Server certificate chains kept in `directory` between runs (see the module docstring)."""

    def __init__(
        self, directory: str | os.PathLike[str], *, max_entry_size: int = DEFAULT_MAX_ENTRY_SIZE
    ) -> None:
        problem = directory_name_problem("chain cache directory", directory)
        if problem is not None:
            raise ConfigError(problem)
        size = max_entry_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(
                f"chain cache max_entry_size must be an integer >= 1 (bytes), got {size!r}"
            )
        self.directory = Path(directory)
        self.max_entry_size = max_entry_size
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(
                f"chain cache {self.directory} is not a directory: name a directory "
                "(it is made if missing)"
            )

    def __repr__(self) -> str:
        return f"ChainCache({str(self.directory)!r})"

    def path_for(self, key: str) -> Path:
        """The file that holds `key`'s chain: the SHA-256 of the key, inside the directory."""
        return self.directory / (hashlib.sha256(_key_bytes(key)).hexdigest() + _SUFFIX)

    def load(self, key: str) -> tuple[bytes, ...] | None:
        """The chain saved for `key`, or None when there is none or its file is unusable."""
        try:  # a FIFO or a device there is a miss, never opened blocking nor read
            data = read_regular_file(str(self.path_for(key)), self.max_entry_size)
        except (OSError, RefusedFile):
            return None
        return _decode_entry(data, _key_bytes(key), self.max_entry_size)

    def save(self, key: str, chain: Sequence[bytes]) -> bool:
        """Store `chain` (DER, leaf first) for `key`, replacing what was there; False when it
        was not stored (empty, larger than `max_entry_size`, or an I/O error, logged)."""
        if not chain:
            return False
        entry = _encode_entry(_key_bytes(key), Certificate(tuple(bytes(c) for c in chain)))
        if len(entry) > self.max_entry_size:
            _log.debug("chain for %r not cached: %d bytes is over the limit", key, len(entry))
            return False
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomically(self.path_for(key), entry)
        except FileExistsError:  # mkdir(exist_ok=True): something else than a directory
            return self._not_stored(key, "not a directory")
        except OSError as exc:
            return self._not_stored(key, exc.strerror or str(exc))
        return True

    def _not_stored(self, key: str, reason: str) -> bool:
        _log.warning("could not cache the chain for %r in %s: %s", key, self.directory, reason)
        return False

    def discard(self, key: str) -> None:
        """Forget `key`'s chain (for example after it failed validation)."""
        self.path_for(key).unlink(missing_ok=True)


def cache_key(config: ClientConfig, host: str, port: int) -> str:
    """The key a client files a server's chain under: the name it checks, and the port."""
    return f"{config.server_name or host}:{port}"


def with_cached_chain(config: ClientConfig, cache: ChainCache | None, key: str) -> ClientConfig:
    """`config` offering the chain `cache` holds for `key` in cached_info (certificate mode
    only; otherwise `config` as it is)."""
    if cache is None or config.mode is not Mode.X509:
        return config
    chain = cache.load(key)
    if chain is None or tuple(config.cached_server_chain) == chain:
        return config
    return dataclasses.replace(config, cached_server_chain=chain)


def for_server(
    config: ClientConfig, cache: ChainCache | None, host: str, port: int
) -> tuple[ClientConfig, str]:
    """Before a client's handshake with `host:port`: `config` for that server, checking its
    certificate against `host` unless `config` names a server of its own
    (`ClientConfig.for_host`, RFC 7925 §4.4.1) and offering the chain `cache` holds for it
    (`with_cached_chain`), and the key to `remember_chain` it under (`cache_key`). What the
    asyncio and blocking clients and the load generator call, so all three check the same
    name and send the same server_name."""
    config = config.for_host(host)
    key = cache_key(config, host, port)
    return with_cached_chain(config, cache, key), key


def remember_chain(
    cache: ChainCache | None, key: str, config: ClientConfig, peer: PeerIdentity | None
) -> ClientConfig:
    """After a handshake with the configuration `config`: keep the server's validated chain if
    it is new to the cache; returns the configuration the next handshake with that server
    offers (`config` itself, or offering the new chain, RFC 7924)."""
    if cache is None or not isinstance(peer, CertificateIdentity) or not peer.chain:
        return config
    if tuple(config.cached_server_chain) == peer.chain:
        return config
    cache.save(key, peer.chain)
    return dataclasses.replace(config, cached_server_chain=peer.chain)


def _key_bytes(key: str) -> bytes:
    data = key.encode("utf-8")
    if not data or len(data) >= 1 << (8 * _KEY_LEN_BYTES):
        raise ValueError("a chain cache key is 1 to 65535 bytes of UTF-8")
    return data


def _encode_entry(key: bytes, certificate: Certificate) -> bytes:
    body = _MAGIC + len(key).to_bytes(_KEY_LEN_BYTES, "big") + key + certificate.encode()
    return body + hashlib.sha256(body).digest()


def _decode_entry(data: bytes, key: bytes, max_size: int) -> tuple[bytes, ...] | None:
    if len(data) > max_size or not data.startswith(_MAGIC):
        return None
    body, digest = data[:-_DIGEST_LEN], data[-_DIGEST_LEN:]
    if len(body) < len(_MAGIC) or hashlib.sha256(body).digest() != digest:
        return None
    rest = body[len(_MAGIC) :]
    stored_key_len = int.from_bytes(rest[:_KEY_LEN_BYTES], "big")
    stored_key = rest[_KEY_LEN_BYTES : _KEY_LEN_BYTES + stored_key_len]
    if stored_key != key:
        return None
    try:
        chain = Certificate.decode(rest[_KEY_LEN_BYTES + stored_key_len :]).certificates
    except DecodeError:
        return None
    return chain or None
