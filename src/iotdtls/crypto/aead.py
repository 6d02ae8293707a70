"""Record protection: AES-128-CCM-8 (RFC 6655) and the null protection of epoch 0.

For a DTLS 1.2 record with epoch `e`, sequence number `s`, type `t`, version `v`:

* the 64-bit DTLS sequence number is `e (16 bits) || s (48 bits)` (RFC 6347 §4.1.2.1, which
  replaces the TLS seq_num with this concatenation in the MAC and AEAD computations);
* the explicit nonce sent in the record is that 64-bit value (RFC 6655 §3: "nonce_explicit MAY
  be the 64-bit sequence number"), and the 12-byte CCM nonce is
  `implicit_iv (4, client_write_IV or server_write_IV) || nonce_explicit (8)` (RFC 6655 §3);
* the additional data is `seq_num (8) || type (1) || version (2) || plaintext length (2)`
  (RFC 5246 §6.2.3.3);
* the record fragment is `nonce_explicit (8) || ciphertext || tag (8)`, so the overhead is 16.

No stream cipher and no compression exist here (REC-4): records are either null-protected in
epoch 0 or AEAD-protected.
"""

from __future__ import annotations

import struct
import weakref
from collections import deque
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

__all__ = [
    "CCM8_OVERHEAD",
    "CCM8_TAG_LENGTH",
    "EXPLICIT_NONCE_LENGTH",
    "NULL_PROTECTOR",
    "BadTag",
    "Ccm8Protector",
    "NullProtector",
    "Plaintext",
    "RecordProtector",
]

#: What a protector seals: any buffer of bytes (`AESCCM.encrypt` takes each), so that
#: application data given as a bytearray or a view of bytes is sealed without a copy.
Plaintext = bytes | bytearray | memoryview

CCM8_TAG_LENGTH = 8
EXPLICIT_NONCE_LENGTH = 8
CCM8_OVERHEAD = EXPLICIT_NONCE_LENGTH + CCM8_TAG_LENGTH

# epoch(2) || seq high(2) || seq low(4) || type(1) || version(2) || length(2)
_AAD = struct.Struct(">HHIBHH")
_SEQ_LOW_MASK = 0xFFFFFFFF
#: Cipher contexts kept ready at once, process-wide. An `AESCCM` object holds about 480 bytes
#: of OpenSSL state, two per association: more than the association itself (issue 9). So a
#: protector builds its context on first use and keeps it while fewer than this many others
#: were built since; an evicted one is rebuilt on its next record (about 0.3 us). A server
#: with up to this many busy directions never rebuilds; 100,000 idle peers hold no context.
WARM_CIPHERS = 4096
#: The protectors holding a context, oldest first (weak: a closed association's goes away).
_warm: deque[weakref.ref[Ccm8Protector]] = deque()


class BadTag(Exception):
    """The record did not authenticate (or is too short to hold nonce and tag)."""


class RecordProtector(Protocol):
    """What the record layer needs from the protection of one epoch and direction."""

    @property
    def overhead(self) -> int:
        """Bytes added to a plaintext by `seal`."""
        ...

    def seal(
        self, epoch: int, seq: int, content_type: int, version: int, plaintext: Plaintext
    ) -> Plaintext:
        """Protect `plaintext`; return the record fragment."""
        ...

    def open(self, epoch: int, seq: int, content_type: int, version: int, fragment: bytes) -> bytes:
        """Check and unprotect a record fragment; raise `BadTag` when it does not authenticate."""
        ...


class NullProtector:
    """TLS_NULL_WITH_NULL_NULL of epoch 0 (RFC 5246 §6.1): the fragment is the plaintext."""

    __slots__ = ()

    @property
    def overhead(self) -> int:
        return 0

    def seal(
        self, epoch: int, seq: int, content_type: int, version: int, plaintext: Plaintext
    ) -> Plaintext:
        return plaintext

    def open(self, epoch: int, seq: int, content_type: int, version: int, fragment: bytes) -> bytes:
        return fragment

    def __repr__(self) -> str:
        return "NullProtector()"


#: The one null protector (it has no state).
NULL_PROTECTOR = NullProtector()


class Ccm8Protector:
    """AES-128-CCM with an 8-byte tag for one direction of one epoch (RFC 6655 §3).

    Its `AESCCM` context is built on first use and reused while warm (`WARM_CIPHERS`). The
    repr shows no key.
    """

    __slots__ = ("__weakref__", "_aead", "_iv", "_key")

    def __init__(self, key: bytes, implicit_iv: bytes) -> None:
        if len(key) != 16:
            raise ValueError("AES-128-CCM-8 needs a 16-byte key")
        if len(implicit_iv) != 4:
            raise ValueError("AES-128-CCM-8 needs a 4-byte implicit IV (RFC 6655 §3)")
        self._key = bytes(key)
        self._iv = bytes(implicit_iv)
        self._aead: AESCCM | None = None

    def _cipher(self) -> AESCCM:
        """Build the context this protector lacks (`self._aead or self._cipher()` on the record
        path), and let the oldest warm one go when more than `WARM_CIPHERS` are built."""
        aead = self._aead = AESCCM(self._key, tag_length=CCM8_TAG_LENGTH)
        _warm.append(weakref.ref(self))
        while len(_warm) > WARM_CIPHERS:
            oldest = _warm.popleft()()
            if oldest is not None:
                oldest._aead = None
        return aead

    @property
    def overhead(self) -> int:
        return CCM8_OVERHEAD

    def seal(
        self, epoch: int, seq: int, content_type: int, version: int, plaintext: Plaintext
    ) -> bytes:
        """Return `epoch||seq (8) || ciphertext || tag (8)`."""
        aad = _AAD.pack(
            epoch, seq >> 32, seq & _SEQ_LOW_MASK, content_type, version, len(plaintext)
        )
        explicit = aad[:EXPLICIT_NONCE_LENGTH]
        aead = self._aead or self._cipher()
        return explicit + aead.encrypt(self._iv + explicit, plaintext, aad)

    def open(self, epoch: int, seq: int, content_type: int, version: int, fragment: bytes) -> bytes:
        """Authenticate and decrypt; the nonce takes the explicit nonce carried in the fragment,
        the additional data takes the epoch and sequence number of the record header."""
        length = len(fragment) - CCM8_OVERHEAD
        if length < 0:
            raise BadTag("record fragment shorter than nonce and tag")
        aad = _AAD.pack(epoch, seq >> 32, seq & _SEQ_LOW_MASK, content_type, version, length)
        nonce = self._iv + fragment[:EXPLICIT_NONCE_LENGTH]
        try:
            return (self._aead or self._cipher()).decrypt(
                nonce, fragment[EXPLICIT_NONCE_LENGTH:], aad
            )
        except InvalidTag:
            raise BadTag("record did not authenticate") from None

    def __repr__(self) -> str:
        return "Ccm8Protector(<key redacted>)"
