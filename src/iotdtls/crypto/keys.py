"""Key schedule of DTLS 1.2 for the AES-128-CCM-8 suites.

* PSK premaster secret: RFC 4279 §2.
* Master secret: RFC 5246 §8.1; extended master secret: RFC 7627 §4.
* Key block: RFC 5246 §6.3, sized for AES-128-CCM-8 (RFC 6655 §3): no MAC keys, 16-byte write
  keys, 4-byte implicit IVs (the "salt" of the CCM nonce).
* Finished verify_data: RFC 5246 §7.4.9.
* The NSS key log line, for an explicit key log file only (SEC-1).
"""

from __future__ import annotations

from iotdtls._values import statically_frozen
from iotdtls.crypto.prf import HmacSha256, prf

__all__ = [
    "IV_LENGTH",
    "KEY_LENGTH",
    "MASTER_SECRET_LENGTH",
    "VERIFY_DATA_LENGTH",
    "KeyBlock",
    "derive_key_block",
    "extended_master_secret",
    "finished_verify_data",
    "keylog_line",
    "master_secret",
    "psk_premaster_secret",
]

MASTER_SECRET_LENGTH = 48
KEY_LENGTH = 16
IV_LENGTH = 4
VERIFY_DATA_LENGTH = 12
_RANDOM_LENGTH = 32
_UINT16_MAX = 0xFFFF


def psk_premaster_secret(psk: bytes, other_secret: bytes | None = None) -> bytes:
    """Build the premaster secret of a PSK key exchange (RFC 4279 §2).

    The structure is `uint16 len(other_secret) || other_secret || uint16 len(psk) || psk`; for
    plain PSK, `other_secret` is N zero bytes where N is the length of the PSK.
    """
    if not psk or len(psk) > _UINT16_MAX:
        raise ValueError("a PSK must be 1 to 65535 bytes long")
    other = bytes(len(psk)) if other_secret is None else other_secret
    if len(other) > _UINT16_MAX:
        raise ValueError("other_secret must be at most 65535 bytes long")
    return len(other).to_bytes(2, "big") + other + len(psk).to_bytes(2, "big") + psk


def master_secret(premaster: bytes, client_random: bytes, server_random: bytes) -> bytes:
    """PRF(premaster, "master secret", client_random + server_random)[0..47] (RFC 5246 §8.1)."""
    _check_random(client_random, server_random)
    return prf(premaster, b"master secret", client_random + server_random, MASTER_SECRET_LENGTH)


def extended_master_secret(premaster: bytes, session_hash: bytes) -> bytes:
    """PRF(premaster, "extended master secret", session_hash)[0..47] (RFC 7627 §4)."""
    return prf(premaster, b"extended master secret", session_hash, MASTER_SECRET_LENGTH)


@statically_frozen
class KeyBlock:
    """Write keys and implicit IVs of one association (RFC 5246 §6.3, RFC 6655 §3).

    The repr shows no key bytes (SEC-1).
    """

    client_write_key: bytes
    server_write_key: bytes
    client_write_iv: bytes
    server_write_iv: bytes

    def __repr__(self) -> str:
        return (
            f"KeyBlock(<{len(self.client_write_key)}-byte keys, "
            f"{len(self.client_write_iv)}-byte IVs, redacted>)"
        )


def derive_key_block(
    master: bytes | HmacSha256, client_random: bytes, server_random: bytes
) -> KeyBlock:
    """Split PRF(master, "key expansion", server_random + client_random) (RFC 5246 §6.3).

    For AES-128-CCM-8 the MAC key length is 0, so the block is client_write_key (16),
    server_write_key (16), client_write_IV (4), server_write_IV (4): 40 bytes. `master` may
    come keyed already (see `prf`).
    """
    _check_random(client_random, server_random)
    size = 2 * KEY_LENGTH + 2 * IV_LENGTH
    block = prf(master, b"key expansion", server_random + client_random, size)
    k = KEY_LENGTH
    return KeyBlock(
        client_write_key=block[0:k],
        server_write_key=block[k : 2 * k],
        client_write_iv=block[2 * k : 2 * k + IV_LENGTH],
        server_write_iv=block[2 * k + IV_LENGTH : size],
    )


def finished_verify_data(
    master: bytes | HmacSha256, from_client: bool, handshake_hash: bytes
) -> bytes:
    """PRF(master, finished_label, Hash(handshake_messages))[0..11] (RFC 5246 §7.4.9).

    `handshake_hash` is the SHA-256 of the transcript; the label is "client finished" when the
    Finished is sent by the client, "server finished" otherwise. Compare the result with
    `constant_time_equal`. `master` may come keyed already (see `prf`).
    """
    label = b"client finished" if from_client else b"server finished"
    return prf(master, label, handshake_hash, VERIFY_DATA_LENGTH)


def keylog_line(client_random: bytes, master_secret: bytes) -> str:
    """The NSS key log line `CLIENT_RANDOM <hex client random> <hex master secret>`.

    Only for a key log file that the user asked for explicitly (SEC-1); no trailing newline.
    """
    if len(client_random) != _RANDOM_LENGTH or len(master_secret) != MASTER_SECRET_LENGTH:
        raise ValueError("a key log line needs a 32-byte client random and 48-byte master secret")
    return f"CLIENT_RANDOM {client_random.hex()} {master_secret.hex()}"


def _check_random(client_random: bytes, server_random: bytes) -> None:
    if len(client_random) != _RANDOM_LENGTH or len(server_random) != _RANDOM_LENGTH:
        raise ValueError("client and server randoms are 32 bytes each (RFC 5246 §7.4.1.2)")
