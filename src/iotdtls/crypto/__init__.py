"""Cryptography of iotdtls: the only layer that imports `cryptography` (docs/internals.md).

PRF (RFC 5246 §5), key schedule (RFC 4279, RFC 5246, RFC 7627), record protection with
AES-128-CCM-8 (RFC 6655), constant-time comparison and OS randomness.
"""

from iotdtls.crypto.aead import (
    CCM8_OVERHEAD,
    BadTag,
    Ccm8Protector,
    NullProtector,
    RecordProtector,
)
from iotdtls.crypto.compare import constant_time_equal
from iotdtls.crypto.keys import (
    KeyBlock,
    derive_key_block,
    extended_master_secret,
    finished_verify_data,
    keylog_line,
    master_secret,
    psk_premaster_secret,
)
from iotdtls.crypto.prf import prf
from iotdtls.crypto.rand import random_bytes

__all__ = [
    "CCM8_OVERHEAD",
    "BadTag",
    "Ccm8Protector",
    "KeyBlock",
    "NullProtector",
    "RecordProtector",
    "constant_time_equal",
    "derive_key_block",
    "extended_master_secret",
    "finished_verify_data",
    "keylog_line",
    "master_secret",
    "prf",
    "psk_premaster_secret",
    "random_bytes",
]
