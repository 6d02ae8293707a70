"""The one source of randomness of iotdtls: the operating system's CSPRNG (CFG-2, RFC 4086).

Client and server randoms (RFC 5246 §7.4.1.2), cookie secrets, session ids and ephemeral keys all
come from here (or from `cryptography`, which also draws from the OS). The `random` module is
never used outside test tools.
"""

from __future__ import annotations

import os

__all__ = ["random_bytes"]


def random_bytes(n: int) -> bytes:
    """Return `n` bytes from `os.urandom`."""
    if n < 0:
        raise ValueError("random_bytes needs a non-negative length")
    return os.urandom(n)
