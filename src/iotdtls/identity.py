"""Who the peer is, once the handshake has authenticated it (profile §3, CFG-1).

One type per credential kind of the profile:

* `PskIdentity`: the PSK identity the client named (RFC 4279 §2; opaque bytes compared bit by
  bit, PSK-2). It travels in clear, so it is not a secret.
* `RawPublicKeyIdentity`: the peer's SubjectPublicKeyInfo (RFC 7250 §3) and its SHA-256, the
  form in which raw keys are usually provisioned (RPK-3).
* `CertificateIdentity`: the peer's validated chain (leaf first, DER) and the name that was
  checked: the server's DNS name (RFC 6125, CRT-3) or the client's EUI-64 (CRT-4).
* `UnauthenticatedPeer`: a client of a server that did not ask for its certificate.

All three are small frozen dataclasses whose `str()` is one short, log-safe phrase: a PSK
identity, chosen by a client before it has proved anything and up to 65535 bytes long, is shown
escaped and cut after `SHOWN_IDENTITY_BYTES` bytes (`shown_identity`); a certificate's name
(with no server name checked, its CN as the certificate spells it: any characters, any
length) escaped and cut after `SHOWN_NAME_CHARS` characters (`shown_name`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "CertificateIdentity",
    "PeerIdentity",
    "PskIdentity",
    "RawPublicKeyIdentity",
    "UnauthenticatedPeer",
    "shown_identity",
    "shown_name",
]

#: Bytes of a PSK identity shown in log lines, event text and errors; the rest is only counted.
SHOWN_IDENTITY_BYTES = 64


def shown_identity(identity: bytes, *, as_text: bool = False) -> str:
    """`identity` as an escaped bytes literal, cut after `SHOWN_IDENTITY_BYTES` bytes and then
    counted: "b'...'... (N bytes)". The identity travels unauthenticated and may be 65535 bytes
    (RFC 4279 §2), which whole would make one log line of hundreds of kilobytes. `as_text`: an
    identity that is UTF-8 is quoted as the text a person typed ('dev1'; a character the cut
    splits is left out), any other as bytes."""
    head = identity[:SHOWN_IDENTITY_BYTES]
    shown = repr(head)
    if as_text:
        try:
            identity.decode()
        except UnicodeDecodeError:
            pass
        else:
            shown = repr(head.decode(errors="ignore"))
    if len(identity) <= SHOWN_IDENTITY_BYTES:
        return shown
    return f"{shown}... ({len(identity)} bytes)"


#: Characters of a certificate's name shown in log lines and errors: a DNS name's longest
#: (RFC 1035 §2.3.4: 255 octets); the rest is only counted.
SHOWN_NAME_CHARS = 255


def shown_name(name: str) -> str:
    """A name from a certificate (a DNS name, an EUI-64, a CN as it is spelled) for a log
    line: unprintable characters (a newline that would start a forged log line) escaped as in
    a Python literal, cut after `SHOWN_NAME_CHARS` characters ("..." and the length)."""
    head = name[:SHOWN_NAME_CHARS]
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    if len(name) <= SHOWN_NAME_CHARS:
        return shown
    return f"{shown}... ({len(name)} characters)"


@dataclass(frozen=True, slots=True)
class PskIdentity:
    """The PSK identity of the association (RFC 4279 §2). `identity` is whole; `str()` and
    `repr()` show at most `SHOWN_IDENTITY_BYTES` of it."""

    mode: ClassVar[str] = "psk"
    identity: bytes

    def __repr__(self) -> str:
        return f"PskIdentity(identity={shown_identity(self.identity)})"

    def __str__(self) -> str:
        return f"psk identity {shown_identity(self.identity)}"


@dataclass(frozen=True, slots=True)
class RawPublicKeyIdentity:
    """A raw public key that matched a provisioned one (RFC 7250, RPK-3)."""

    mode: ClassVar[str] = "rpk"
    spki: bytes = field(repr=False)

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the DER SubjectPublicKeyInfo: the key's usual fingerprint."""
        return hashlib.sha256(self.spki).digest()

    def __repr__(self) -> str:
        return f"RawPublicKeyIdentity(sha256={self.sha256.hex()})"

    def __str__(self) -> str:
        return f"raw public key sha256:{self.sha256.hex()}"


@dataclass(frozen=True, slots=True)
class CertificateIdentity:
    """A certificate chain validated to a trust anchor (CRT-1) and the name it was checked for:
    a DNS name for a server (CRT-3), an EUI-64 such as `01-23-45-67-89-AB-CD-EF` for a client
    (CRT-4). `name` is whole; `str()` shows it escaped and bounded (`shown_name`)."""

    mode: ClassVar[str] = "x509"
    name: str
    chain: tuple[bytes, ...] = field(default=(), repr=False, compare=False)

    def __str__(self) -> str:
        return f"certificate {shown_name(self.name)}"


@dataclass(frozen=True, slots=True)
class UnauthenticatedPeer:
    """A client the server did not ask to authenticate (server-only authentication with raw
    public keys or certificates, RFC 5246 §7.4.4)."""

    mode: ClassVar[str] = "none"

    def __str__(self) -> str:
        return "unauthenticated client"


PeerIdentity = PskIdentity | RawPublicKeyIdentity | CertificateIdentity | UnauthenticatedPeer
