"""The one source of randomness of iotdtls: the operating system's CSPRNG (CFG-2, RFC 4086).

Client and server randoms (RFC 5246 §7.4.1.2), cookie secrets, session ids and the private
scalars of ephemeral (ECDHE) and long-term P-256 keys all come from `os.urandom` through here.
ECDSA signatures need no random nonce: they are deterministic (RFC 6979, see `signature`). The
`random` module is never used outside test tools.
"""

from __future__ import annotations

import os
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["P256_ORDER", "p256_private_key", "random_bytes", "random_scalar"]

#: n, the order of the P-256 base point (FIPS 186-5 / SP 800-186 §3.2.1.3).
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def random_bytes(n: int) -> bytes:
    """Return `n` bytes from `os.urandom`."""
    if n < 0:
        raise ValueError("random_bytes needs a non-negative length")
    return os.urandom(n)


def random_scalar(order: int) -> int:
    """A uniform integer d with 1 <= d < `order`, from `os.urandom` by rejection sampling
    (FIPS 186-5 §A.4.2; SEC 1 §3.2.1): draw as many bits as `order` has, and draw again
    while d is 0 or not below `order`. No reduction modulo `order`, so no bias."""
    if order < 2:
        raise ValueError("random_scalar needs an order of at least 2")
    bits = order.bit_length()
    excess = -bits % 8
    while True:
        d = int.from_bytes(random_bytes((bits + 7) // 8), "big") >> excess
        if 1 <= d < order:
            return d


def p256_private_key() -> ec.EllipticCurvePrivateKey:
    """A new P-256 private key whose scalar comes from `random_scalar` (CFG-2), not from
    OpenSSL's own generator."""
    return ec.derive_private_key(random_scalar(P256_ORDER), ec.SECP256R1())
