"""The server side of the PSK handshake (RFC 6347 §4.2, RFC 4279 §2, profile §4.1).

The stateless cookie exchange happens before this object exists (`iotdtls.endpoint`); the
first message a `ServerHandshake` sees is the ClientHello that carries a valid cookie (or any
ClientHello when cookies are off). Flights: 4 ServerHello, ServerHelloDone (no
ServerKeyExchange: no identity hint, PSK-3); 6 ChangeCipherSpec, Finished.
"""

from __future__ import annotations

import logging
from enum import Enum, auto
from typing import ClassVar

from iotdtls.config import MAX_PSK_LENGTH, ServerConfig
from iotdtls.crypto import random_bytes
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.common import Handler, HandshakeMachine
from iotdtls.handshake.flight import Flight, OutgoingCcs
from iotdtls.handshake.reassembly import ReassembledMessage
from iotdtls.identity import PskIdentity
from iotdtls.messages import (
    DTLS_1_2,
    CipherSuite,
    ClientHello,
    ClientKeyExchangePsk,
    ExtendedMasterSecret,
    Extension,
    HandshakeType,
    RenegotiationInfo,
    ServerHello,
    find_extension,
)

__all__ = ["ServerHandshake", "ServerState", "check_client_version"]

logger = logging.getLogger("iotdtls")

#: Length of the random stand-in key used for an unknown identity (PSK-4).
UNKNOWN_IDENTITY_KEY_LENGTH = 16


class ServerState(Enum):
    WAIT_CLIENT_HELLO = auto()
    WAIT_CLIENT_KEY_EXCHANGE = auto()
    WAIT_CCS = auto()
    WAIT_FINISHED = auto()
    ESTABLISHED = auto()


def check_client_version(client_version: int) -> None:
    """DTLS 1.2 only (REC-5): DTLS versions (0xFEnn) count down, so a larger number is older;
    a TLS version (0x03nn) is no DTLS at all."""
    if client_version >> 8 != 0xFE or client_version > DTLS_1_2:
        raise ProtocolError(
            f"client offers only DTLS version {client_version:#06x}, we speak DTLS 1.2",
            AlertDescription.protocol_version,
        )


class ServerHandshake(HandshakeMachine):
    """PSK server: keys come from the configured store or lookup callback."""

    WAIT_CCS_STATE = ServerState.WAIT_CCS
    AFTER_CCS_STATE = ServerState.WAIT_FINISHED
    config: ServerConfig

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(config, ServerState.WAIT_CLIENT_HELLO)
        #: True when the client named an identity we do not know (PSK-4); never exposed early.
        self.unknown_identity = False

    def _on_client_hello(self, msg: ReassembledMessage) -> Flight:
        hello = ClientHello.decode(msg.body)
        check_client_version(hello.client_version)
        if CipherSuite.TLS_PSK_WITH_AES_128_CCM_8 not in hello.cipher_suites:
            raise ProtocolError("no cipher suite in common", AlertDescription.handshake_failure)
        if 0 not in hello.compression_methods:
            # REC-4: null compression only (RFC 5246 §7.4.1.2 requires it to be offered).
            raise ProtocolError(
                "client does not offer null compression", AlertDescription.illegal_parameter
            )
        # The first ClientHello we see starts the message numbering (RFC 6347 §4.2.2).
        self.send_seq = msg.message_seq
        self.client_random = hello.random
        self.server_random = random_bytes(32)
        self.cipher_suite = CipherSuite.TLS_PSK_WITH_AES_128_CCM_8
        self.record(msg)
        reply = self._negotiate_extensions(hello)
        server_hello = ServerHello(
            server_version=DTLS_1_2,
            random=self.server_random,
            session_id=b"",
            cipher_suite=self.cipher_suite,
            compression_method=0,
            extensions=reply,
        )
        sh = self.outgoing(HandshakeType.server_hello, server_hello.encode(), 0)
        done = self.outgoing(HandshakeType.server_hello_done, b"", 0)
        self.state = ServerState.WAIT_CLIENT_KEY_EXCHANGE
        return Flight((sh, done))

    def _negotiate_extensions(self, hello: ClientHello) -> tuple[Extension, ...]:
        """Answer only extensions the client offered (RFC 5246 §7.4.1.4)."""
        reply: list[Extension] = []
        reneg = find_extension(hello.extensions, RenegotiationInfo)
        if reneg is not None and reneg.renegotiated_connection:
            raise ProtocolError(
                "non-empty renegotiation_info in an initial handshake",
                AlertDescription.handshake_failure,
            )
        scsv = CipherSuite.TLS_EMPTY_RENEGOTIATION_INFO_SCSV in hello.cipher_suites
        if reneg is not None or scsv:
            reply.append(RenegotiationInfo(b""))  # RFC 5746 §3.6
        if find_extension(hello.extensions, ExtendedMasterSecret) is not None:
            self.use_extended_master_secret = True
            reply.append(ExtendedMasterSecret())
        elif self.config.require_extended_master_secret:
            raise ProtocolError(
                "client does not offer the extended master secret",
                AlertDescription.handshake_failure,
            )
        return tuple(reply)

    def _on_client_key_exchange(self, msg: ReassembledMessage) -> None:
        cke = ClientKeyExchangePsk.decode(msg.body)
        self.record(msg)
        self.peer = PskIdentity(cke.identity)
        psk = self._lookup(cke.identity)
        if psk is None:
            # PSK-4: carry on with a random key so an unknown identity fails exactly like a
            # wrong key: the client's Finished does not authenticate -> decrypt_error.
            self.unknown_identity = True
            psk = random_bytes(UNKNOWN_IDENTITY_KEY_LENGTH)
        self.derive_keys(psk)
        self.state = ServerState.WAIT_CCS
        return None

    def _lookup(self, identity: bytes) -> bytes | None:
        """The application's key for `identity`; its mistakes end the handshake with
        internal_error instead of escaping into the network path."""
        try:
            psk = self.config.lookup_psk(identity)
        except Exception as exc:
            logger.warning("psk_lookup raised %s", type(exc).__name__)
            raise ProtocolError("psk_lookup failed", AlertDescription.internal_error) from None
        if psk is not None and (not isinstance(psk, bytes) or not 1 <= len(psk) <= MAX_PSK_LENGTH):
            logger.warning("psk_lookup returned %s, not 1 to 65535 bytes", type(psk).__name__)
            raise ProtocolError(
                "psk_lookup returned an invalid key", AlertDescription.internal_error
            )
        return psk

    @property
    def awaits_authenticated_finished(self) -> bool:
        return self.state in (ServerState.WAIT_CCS, ServerState.WAIT_FINISHED)

    def _on_finished(self, msg: ReassembledMessage) -> Flight:
        self.check_finished(msg, from_client=True)
        finished = self.finished(from_client=False, epoch=1)
        self.state = ServerState.ESTABLISHED
        self.complete = True
        return Flight((OutgoingCcs(0), finished), final=True)

    TABLE: ClassVar[dict[tuple[Enum, int], Handler]] = {
        (ServerState.WAIT_CLIENT_HELLO, HandshakeType.client_hello): _on_client_hello,
        (
            ServerState.WAIT_CLIENT_KEY_EXCHANGE,
            HandshakeType.client_key_exchange,
        ): _on_client_key_exchange,
        (ServerState.WAIT_FINISHED, HandshakeType.finished): _on_finished,
    }
