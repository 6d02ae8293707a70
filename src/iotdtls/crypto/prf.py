"""The TLS 1.2 pseudorandom function with HMAC-SHA256 (RFC 5246 §5).

Every DTLS 1.2 suite of the IoT profile (RFC 7925 §4.1, RFC 6655) uses this PRF:

    PRF(secret, label, seed) = P_SHA256(secret, label + seed)
    P_SHA256(secret, seed) = HMAC(secret, A(1) + seed) + HMAC(secret, A(2) + seed) + ...
    A(0) = seed, A(i) = HMAC(secret, A(i-1))
"""

from __future__ import annotations

import hmac

__all__ = ["prf"]

_DIGEST_SIZE = 32


def prf(secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """Return `length` bytes of PRF(secret, label, seed) (RFC 5246 §5, P_SHA256)."""
    if length < 0:
        raise ValueError("PRF output length must not be negative")
    full_seed = label + seed
    a = full_seed
    chunks: list[bytes] = []
    produced = 0
    while produced < length:
        # hmac.digest is the one-shot C path: no HMAC object per block.
        a = hmac.digest(secret, a, "sha256")
        chunks.append(hmac.digest(secret, a + full_seed, "sha256"))
        produced += _DIGEST_SIZE
    return b"".join(chunks)[:length]
