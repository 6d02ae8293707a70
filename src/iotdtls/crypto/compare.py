"""Constant-time comparison of secrets (SEC-2: PSK, Finished and MAC comparisons)."""

from __future__ import annotations

import hmac

__all__ = ["constant_time_equal"]


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """True when `a == b`, in time that does not depend on where they differ.

    Used for Finished verify_data (RFC 5246 §7.4.9), cookies and any other secret-dependent
    comparison, so that timing does not leak how many leading bytes matched.
    """
    return hmac.compare_digest(a, b)
