"""Cipher suite descriptions (RFC 6655 §3, RFC 7251 §2): what a suite is, holding no keys.

Both suites of the profile use AES-128-CCM with an 8-byte tag and the TLS 1.2 PRF with
SHA-256; they differ in the key exchange. A `SuiteInfo` knows the key block layout (RFC 5246
§6.3) and builds the record protectors of one epoch from a key block, so nothing above this
layer names the AEAD.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from iotdtls._values import statically_frozen
from iotdtls.crypto.aead import Ccm8Protector, RecordProtector
from iotdtls.crypto.keys import IV_LENGTH, KEY_LENGTH, KeyBlock

__all__ = ["SUITES", "EpochKeys", "KeyExchangeKind", "SuiteInfo", "suite_info"]


class KeyExchangeKind(Enum):
    """How the premaster secret is made (RFC 4279 §2, RFC 8422 §2)."""

    PSK = "psk"
    ECDHE_ECDSA = "ecdhe_ecdsa"


@statically_frozen
class EpochKeys:
    """The record protectors of the next epoch, for reading and for writing (repr redacted)."""

    read: RecordProtector
    write: RecordProtector

    def __repr__(self) -> str:
        return "EpochKeys(<redacted>)"


@dataclass(frozen=True, slots=True)
class SuiteInfo:
    """One cipher suite: its code point, key exchange and key block layout (no keys)."""

    code: int
    name: str
    key_exchange: KeyExchangeKind
    key_length: int = KEY_LENGTH
    fixed_iv_length: int = IV_LENGTH

    def epoch_keys(self, block: KeyBlock, is_client: bool) -> EpochKeys:
        """The protectors of one side: it writes with its own keys, reads with the peer's."""
        client = Ccm8Protector(block.client_write_key, block.client_write_iv)
        server = Ccm8Protector(block.server_write_key, block.server_write_iv)
        return EpochKeys(read=server, write=client) if is_client else EpochKeys(client, server)


SUITES: dict[int, SuiteInfo] = {
    s.code: s
    for s in (
        SuiteInfo(0xC0A8, "TLS_PSK_WITH_AES_128_CCM_8", KeyExchangeKind.PSK),
        SuiteInfo(0xC0AE, "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8", KeyExchangeKind.ECDHE_ECDSA),
    )
}


def suite_info(code: int) -> SuiteInfo | None:
    """The description of suite `code`, or None for a suite we do not implement."""
    return SUITES.get(code)
