"""The server side of the handshake (RFC 6347 §4.2; RFC 5246 §7.4; profile §4-§6).

The stateless cookie exchange happens before this object exists (`iotdtls.endpoint`); the first
message a `ServerHandshake` sees is the ClientHello that carries a valid cookie (or any
ClientHello when cookies are off), so no public-key operation happens before the client proved
its address (HS-2). Its handler picks the suite, certificate types, key exchange and flow table.
Flights: 4 ServerHello, [Certificate, ServerKeyExchange, [CertificateRequest]], ServerHelloDone
(PSK: no ServerKeyExchange, no identity hint, PSK-3); 6 ChangeCipherSpec, Finished.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import ClassVar

from iotdtls.config import ServerConfig
from iotdtls.crypto import random_bytes
from iotdtls.crypto.signature import verify_digest_signature
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.alerts import MODE_ALERTS
from iotdtls.handshake.flight import Flight, FlightItem, OutgoingCcs
from iotdtls.handshake.keyexchange import (
    EcdheServerExchange,
    PskServerExchange,
    ServerKeyExchanger,
)
from iotdtls.handshake.machine import (
    CHANGE_CIPHER_SPEC,
    HandshakeMachine,
    Outcome,
    Table,
    Transition,
)
from iotdtls.handshake.negotiation import (
    ServerChoice,
    check_renegotiation_info,
    choose_server_parameters,
    server_hello_extensions,
)
from iotdtls.handshake.peerauth import PeerVerifier
from iotdtls.handshake.reassembly import ReassembledMessage
from iotdtls.identity import UnauthenticatedPeer
from iotdtls.messages import (
    DTLS_1_2,
    CertChainType,
    Certificate,
    CertificateRequest,
    CertificateUrl,
    CertificateVerify,
    ClientHello,
    ExtendedMasterSecret,
    HandshakeType,
    RequestedCertificateType,
    ServerHello,
    SignatureScheme,
    find_extension,
)

__all__ = ["ServerHandshake", "ServerState", "check_client_version"]


class ServerState(Enum):
    WAIT_CLIENT_HELLO = auto()
    #: After our flight 4: the first message of the client's flight 5.
    WAIT_CLIENT_FLIGHT = auto()
    WAIT_CLIENT_KEY_EXCHANGE = auto()
    WAIT_CERTIFICATE_VERIFY = auto()
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
    """A server holding any mix of PSK, raw-key and certificate credentials (`ServerConfig`)."""

    ESTABLISHED = ServerState.ESTABLISHED
    is_client = False
    config: ServerConfig

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(config, ServerState.WAIT_CLIENT_HELLO)
        self._exchange: ServerKeyExchanger | None = None
        self._verifier: PeerVerifier | None = None
        self._client_spki = b""

    def _on_client_hello(self, msg: ReassembledMessage) -> Outcome:
        hello = ClientHello.decode(msg.body)
        check_client_version(hello.client_version)
        if 0 not in hello.compression_methods:
            # REC-4: null compression only (RFC 5246 §7.4.1.2 requires it to be offered).
            raise ProtocolError(
                "client does not offer null compression", AlertDescription.illegal_parameter
            )
        check_renegotiation_info(hello.extensions)
        ems = find_extension(hello.extensions, ExtendedMasterSecret) is not None
        if self.config.require_extended_master_secret and not ems:
            raise ProtocolError(
                "client does not offer the extended master secret",
                AlertDescription.handshake_failure,
            )
        choice = choose_server_parameters(hello, self.config)
        self.suite = choice.suite
        self.allowed_alerts = MODE_ALERTS[choice.mode]
        self.keys.extended_master_secret = ems
        self.keys.client_random = hello.random
        self.keys.server_random = random_bytes(32)
        # The first ClientHello we see starts the message numbering (RFC 6347 §4.2.2).
        self.send_seq = msg.message_seq
        self.record(msg)
        server_hello = ServerHello(
            server_version=DTLS_1_2,
            random=self.keys.server_random,
            session_id=b"",
            cipher_suite=choice.suite.code,
            compression_method=0,
            extensions=server_hello_extensions(hello, choice, ems),
        )
        items: list[FlightItem] = [self.outgoing(HandshakeType.server_hello, server_hello.encode())]
        items += self._key_exchange_messages(choice)
        items.append(self.outgoing(HandshakeType.server_hello_done, b""))
        return Outcome(Flight(tuple(items)))

    def _key_exchange_messages(self, choice: ServerChoice) -> list[FlightItem]:
        """Certificate, ServerKeyExchange and CertificateRequest as the choice needs them; the
        flow table follows from the same choice."""
        if choice.own is None:
            self._exchange = PskServerExchange(self.config.lookup_psk)
            self.table = KEY_EXCHANGE_FLOW
            return []
        assert choice.own.key is not None, "our own credentials always have a key"
        self._exchange = EcdheServerExchange(choice.own.key)
        body = choice.certificate_body
        items: list[FlightItem] = [self.outgoing(HandshakeType.certificate, body)]
        ske = self._exchange.server_key_exchange(self.keys)
        assert ske is not None
        items.append(self.outgoing(HandshakeType.server_key_exchange, ske))
        self._verifier = choice.client_verifier
        if self._verifier is None:
            self.peer = UnauthenticatedPeer()
            self.table = KEY_EXCHANGE_FLOW
            return items
        request = CertificateRequest(
            (RequestedCertificateType.ecdsa_sign,), (SignatureScheme.ecdsa_secp256r1_sha256,)
        )
        items.append(self.outgoing(HandshakeType.certificate_request, request.encode()))
        self.table = CLIENT_AUTH_URL_FLOW if choice.certificate_urls else CLIENT_AUTH_FLOW
        return items

    def _on_client_certificate(self, msg: ReassembledMessage) -> None:
        """RFC 5246 §7.4.6: we asked, so an empty Certificate ends the handshake."""
        assert self._verifier is not None
        self.peer, self._client_spki = self._verifier.verify(msg.body)
        self.record(msg)

    def _on_certificate_url(self, msg: ReassembledMessage) -> None:
        """RFC 6066 §5 (CRT-7): the client names where its certificates lie. The handshake
        waits (`waiting_for_chain`) until the adapter has fetched them and handed the chain to
        `supply_client_chain`; no I/O happens here."""
        urls = CertificateUrl.decode(msg.body)
        if urls.chain_type != CertChainType.individual_certs:
            raise ProtocolError(
                "CertificateURL of type pkipath is not supported",
                AlertDescription.certificate_unobtainable,
            )
        self.pending_certificate_urls = tuple((u.url, u.sha1_hash) for u in urls.urls)
        self.record(msg)

    def supply_client_chain(self, chain: tuple[bytes, ...]) -> None:
        """The fetched chain of a CertificateURL (hashes already checked): validate it like a
        Certificate message (CRT-1, CRT-4)."""
        assert self._verifier is not None and self.pending_certificate_urls
        self.pending_certificate_urls = ()
        self.peer, self._client_spki = self._verifier.verify(Certificate(chain).encode())

    def _on_client_key_exchange(self, msg: ReassembledMessage) -> Outcome:
        assert self._exchange is not None
        premaster, claimed = self._exchange.on_client_key_exchange(msg.body)
        if claimed is not None:
            self.peer = claimed
        self.record(msg)
        return Outcome(keys=self.derive(premaster))

    def _on_certificate_verify(self, msg: ReassembledMessage) -> None:
        """RFC 5246 §7.4.8: the client's signature over every handshake message before it."""
        verify = CertificateVerify.decode(msg.body)
        if verify.signature_scheme != SignatureScheme.ecdsa_secp256r1_sha256:
            raise ProtocolError(
                "CertificateVerify with a scheme we did not ask for",
                AlertDescription.illegal_parameter,
            )
        verify_digest_signature(self._client_spki, verify.signature, self.keys.transcript.digest())
        self.record(msg)

    @property
    def awaits_authenticated_finished(self) -> bool:
        return self.state in (ServerState.WAIT_CCS, ServerState.WAIT_FINISHED)

    def _on_finished(self, msg: ReassembledMessage) -> Outcome:
        self.check_finished(msg)
        return Outcome(Flight((OutgoingCcs(0), self.finished(epoch=1)), final=True))

    HELLO_TABLE: ClassVar[Table] = {
        (ServerState.WAIT_CLIENT_HELLO, HandshakeType.client_hello): Transition(
            _on_client_hello, ServerState.WAIT_CLIENT_FLIGHT
        ),
    }


_S = ServerState
_H = HandshakeType
_END: Table = {
    (_S.WAIT_CCS, CHANGE_CIPHER_SPEC): Transition(None, _S.WAIT_FINISHED),
    (_S.WAIT_FINISHED, _H.finished): Transition(ServerHandshake._on_finished, _S.ESTABLISHED),
}

#: PSK, or ECDHE without client authentication: ClientKeyExchange, CCS, Finished.
KEY_EXCHANGE_FLOW: Table = {
    (_S.WAIT_CLIENT_FLIGHT, _H.client_key_exchange): Transition(
        ServerHandshake._on_client_key_exchange, _S.WAIT_CCS
    ),
    **_END,
}

#: ECDHE with client authentication (RFC 5246 §7.4.6-§7.4.8; RPK-3, CRT-1): Certificate,
#: ClientKeyExchange, CertificateVerify, CCS, Finished.
CLIENT_AUTH_FLOW: Table = {
    (_S.WAIT_CLIENT_FLIGHT, _H.certificate): Transition(
        ServerHandshake._on_client_certificate, _S.WAIT_CLIENT_KEY_EXCHANGE
    ),
    (_S.WAIT_CLIENT_KEY_EXCHANGE, _H.client_key_exchange): Transition(
        ServerHandshake._on_client_key_exchange, _S.WAIT_CERTIFICATE_VERIFY
    ),
    (_S.WAIT_CERTIFICATE_VERIFY, _H.certificate_verify): Transition(
        ServerHandshake._on_certificate_verify, _S.WAIT_CCS
    ),
    **_END,
}

#: The same, when the client may send a CertificateURL instead (RFC 6066 §5, CRT-7).
CLIENT_AUTH_URL_FLOW: Table = {
    **CLIENT_AUTH_FLOW,
    (_S.WAIT_CLIENT_FLIGHT, _H.certificate_url): Transition(
        ServerHandshake._on_certificate_url, _S.WAIT_CLIENT_KEY_EXCHANGE
    ),
}
