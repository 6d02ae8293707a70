"""Key exchanges: where the premaster secret comes from (chosen once, when the suite is fixed).

* PSK (RFC 4279 §2; profile "Pre-Shared Secret Authentication"): the client names its identity
  in the ClientKeyExchange; the premaster secret is built from the key. A server never sends an
  identity hint and a client ignores one (PSK-3); a server that does not know the identity
  goes on with a random key, so the client's Finished fails exactly as with a wrong key (PSK-4).
* ECDHE_ECDSA (RFC 8422 §5.4, §5.7; RFC 7251): the server signs fresh P-256 parameters with
  its long-term key; the client checks the signature with the key its peer authenticator
  accepted, answers with its own fresh point; both take the ECDH shared secret (PFS, RPK-2).

The handshake handlers call these objects and never branch on the suite themselves.
"""

from __future__ import annotations

import logging
from typing import Protocol

from iotdtls.config import MAX_PSK_LENGTH, ClientConfig, PskLookup
from iotdtls.credentials import psk_digest
from iotdtls.crypto import psk_premaster_secret, random_bytes
from iotdtls.crypto.ecdhe import EphemeralKey
from iotdtls.crypto.signature import PrivateKey, PublicKey, verify_signature
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.keyschedule import KeySchedule
from iotdtls.identity import PeerIdentity, PskIdentity
from iotdtls.messages import (
    ClientKeyExchangeEcdhe,
    ClientKeyExchangePsk,
    NamedGroup,
    ServerKeyExchangeEcdhe,
    ServerKeyExchangePsk,
    SignatureScheme,
)

__all__ = [
    "ClientKeyExchanger",
    "EcdheClientExchange",
    "EcdheServerExchange",
    "PskClientExchange",
    "PskServerExchange",
    "ServerKeyExchanger",
]

logger = logging.getLogger("iotdtls")

#: Length of the random stand-in key used for an unknown identity (PSK-4).
UNKNOWN_IDENTITY_KEY_LENGTH = 16


class ClientKeyExchanger(Protocol):
    """The client's side of a key exchange."""

    def on_server_key_exchange(
        self, body: bytes, keys: KeySchedule, server_key: PublicKey | None
    ) -> None:
        """Check the ServerKeyExchange (its signature under `server_key`, if any)."""

    def client_key_exchange(self) -> tuple[bytes, bytes]:
        """(ClientKeyExchange body, premaster secret)."""


class ServerKeyExchanger(Protocol):
    """The server's side of a key exchange."""

    def server_key_exchange(self, keys: KeySchedule) -> bytes | None:
        """The ServerKeyExchange body, or None when the suite sends none."""

    @property
    def claimed(self) -> PeerIdentity | None:
        """The identity the ClientKeyExchange named, if the exchange names one (PSK), set as
        soon as it is read: kept even when its key cannot be found then."""

    def on_client_key_exchange(self, body: bytes) -> bytes:
        """The premaster secret."""


class PskClientExchange:
    """RFC 4279 §2, client: the provisioned identity and key for this server (CFG-1)."""

    def __init__(self, config: ClientConfig) -> None:
        self._config = config

    def __repr__(self) -> str:
        return "PskClientExchange(<key redacted>)"

    def on_server_key_exchange(
        self, body: bytes, keys: KeySchedule, server_key: PublicKey | None
    ) -> None:
        ServerKeyExchangePsk.decode(body)  # PSK-3: a hint must be well formed, and is ignored

    def client_key_exchange(self) -> tuple[bytes, bytes]:
        return self._config.psk_key_exchange


class PskServerExchange:
    """RFC 4279 §2, server: keys from the application's store or lookup (PSK-2, PSK-4)."""

    def __init__(self, lookup: PskLookup) -> None:
        self._lookup = lookup
        #: `psk_digest` of the identity's key, for the session (empty for an unknown identity).
        self.psk_digest = b""
        #: The identity the ClientKeyExchange named, kept even when its lookup then fails.
        self.claimed: PskIdentity | None = None

    def server_key_exchange(self, keys: KeySchedule) -> bytes | None:
        return None  # no identity hint (PSK-3)

    def on_client_key_exchange(self, body: bytes) -> bytes:
        self.claimed = PskIdentity(ClientKeyExchangePsk.decode(body).identity)
        psk = self._key_for(self.claimed)
        if psk is None:
            # PSK-4: carry on with a random key so an unknown identity fails exactly like a
            # wrong key: the client's Finished does not authenticate -> decrypt_error.
            psk = random_bytes(UNKNOWN_IDENTITY_KEY_LENGTH)
        else:
            self.psk_digest = psk_digest(psk)
        return psk_premaster_secret(psk)

    def _key_for(self, claimed: PskIdentity) -> bytes | None:
        """The application's key for the identity, or None when unknown: the lookup returned
        None or raised a `LookupError` (`psk_lookup=keys.__getitem__` raises KeyError), both
        answered alike (PSK-4). Its other mistakes end the handshake with internal_error
        instead of escaping into the network path. A bytes-like key is taken as bytes. An
        empty identity (the wire allows one, psk_identity<0..2^16-1>, RFC 4279 §2) names no
        one (§5: the server picks the key by it, and no configuration makes one): unknown
        before any lookup, whatever `psk_lookup` would answer for it."""
        if not claimed.identity:
            return None
        try:
            psk = self._lookup(claimed.identity)
        except LookupError:
            return None
        except Exception as exc:
            logger.warning("psk_lookup raised %s for %s", type(exc).__name__, claimed)
            raise ProtocolError("psk_lookup failed", AlertDescription.internal_error) from None
        if isinstance(psk, bytearray | memoryview):
            psk = bytes(psk)
        if psk is not None and (not isinstance(psk, bytes) or not 1 <= len(psk) <= MAX_PSK_LENGTH):
            # A str: hinted as the configuration hints it (`config._key_bytes`).
            hint = "; a hex key? bytes.fromhex(...)" if isinstance(psk, str) else ""
            logger.warning(
                "psk_lookup returned %s for %s (a key is 1 to 65535 bytes%s)",
                _what_key(psk),
                claimed,
                hint,
            )
            raise ProtocolError(
                "psk_lookup returned an invalid key", AlertDescription.internal_error
            )
        return psk


def _what_key(psk: object) -> str:
    """What a `psk_lookup` returned instead of a key, for its warning (never the bytes)."""
    if not isinstance(psk, bytes):
        return type(psk).__name__
    return f"a key of {len(psk)} bytes" if psk else "an empty key"


def _signed_content(keys: KeySchedule, params: bytes) -> bytes:
    """What a ServerKeyExchange signature covers (RFC 8422 §5.4)."""
    return keys.client_random + keys.server_random + params


class EcdheServerExchange:
    """RFC 8422 §5.4, server: a fresh P-256 key per handshake, signed with our long-term key."""

    #: Its ClientKeyExchange names no one (the certificate or raw key does).
    claimed: PeerIdentity | None = None

    def __init__(self, signer: PrivateKey) -> None:
        self._signer = signer
        self._ephemeral = EphemeralKey()

    def __repr__(self) -> str:
        return "EcdheServerExchange(<redacted>)"

    def server_key_exchange(self, keys: KeySchedule) -> bytes | None:
        unsigned = ServerKeyExchangeEcdhe(
            NamedGroup.secp256r1,
            self._ephemeral.public_point,
            SignatureScheme.ecdsa_secp256r1_sha256,
            b"",
        )
        signature = self._signer.sign(_signed_content(keys, unsigned.signed_params()))
        return ServerKeyExchangeEcdhe(
            unsigned.named_curve, unsigned.public_point, unsigned.signature_scheme, signature
        ).encode()

    def on_client_key_exchange(self, body: bytes) -> bytes:
        point = ClientKeyExchangeEcdhe.decode(body).public_point
        return self._ephemeral.shared_secret(point)


class EcdheClientExchange:
    """RFC 8422 §5.4, §5.7, client: check the server's signed parameters, answer with ours.

    The server may sign with any ECDSA pair of our signature_algorithms (`accepted`; RFC 5246
    §7.4.1.4.1): in certificate mode SHA-384 and SHA-512 too, with its P-256 key."""

    def __init__(self, accepted: frozenset[int]) -> None:
        #: The schemes the server may sign with: the ECDSA ones of our signature_algorithms.
        self._accepted = accepted
        self._server_point = b""

    def on_server_key_exchange(
        self, body: bytes, keys: KeySchedule, server_key: PublicKey | None
    ) -> None:
        ske = ServerKeyExchangeEcdhe.decode(body)
        if ske.named_curve != NamedGroup.secp256r1:
            raise ProtocolError(
                "server chose a curve we did not offer", AlertDescription.illegal_parameter
            )
        scheme = ske.signature_scheme
        if scheme not in self._accepted:
            raise ProtocolError(
                "server signed with a scheme we did not offer", AlertDescription.illegal_parameter
            )
        assert server_key is not None, "the flow takes the server's Certificate first"
        verify_signature(
            server_key, ske.signature, _signed_content(keys, ske.signed_params()), scheme
        )
        self._server_point = ske.public_point

    def client_key_exchange(self) -> tuple[bytes, bytes]:
        ephemeral = EphemeralKey()
        premaster = ephemeral.shared_secret(self._server_point)
        return ClientKeyExchangeEcdhe(ephemeral.public_point).encode(), premaster
