"""The client side of the PSK handshake (RFC 6347 §4.2, RFC 4279 §2, profile §4.1).

Flights (RFC 6347 §4.2.4): 1 ClientHello; 3 ClientHello with cookie (after a
HelloVerifyRequest, HS-1); 5 ClientKeyExchange, ChangeCipherSpec, Finished. The handshake
completes on the server's ChangeCipherSpec and a verified Finished.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import ClassVar

from iotdtls.config import ClientConfig
from iotdtls.crypto import random_bytes
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.common import Handler, HandshakeMachine
from iotdtls.handshake.flight import Flight, OutgoingCcs, OutgoingMessage
from iotdtls.handshake.reassembly import ReassembledMessage
from iotdtls.identity import PskIdentity
from iotdtls.messages import (
    DTLS_1_0,
    DTLS_1_2,
    CipherSuite,
    ClientHello,
    ClientKeyExchangePsk,
    ExtendedMasterSecret,
    HandshakeType,
    HelloVerifyRequest,
    RenegotiationInfo,
    ServerHello,
    ServerKeyExchangePsk,
    find_extension,
)

__all__ = ["ClientHandshake", "ClientState"]

#: HelloVerifyRequests answered in one handshake before we give up (a loop is an attack).
MAX_HELLO_VERIFY_REQUESTS = 4
OFFERED_SUITES = (CipherSuite.TLS_PSK_WITH_AES_128_CCM_8,)


class ClientState(Enum):
    START = auto()
    WAIT_SERVER_HELLO = auto()
    WAIT_SERVER_KEY_EXCHANGE = auto()
    WAIT_SERVER_HELLO_DONE = auto()
    WAIT_CCS = auto()
    WAIT_FINISHED = auto()
    ESTABLISHED = auto()


class ClientHandshake(HandshakeMachine):
    """PSK client: provisioned identity and key for this server (CFG-1)."""

    WAIT_CCS_STATE = ClientState.WAIT_CCS
    AFTER_CCS_STATE = ClientState.WAIT_FINISHED
    config: ClientConfig

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config, ClientState.START)
        self.client_random = random_bytes(32)
        self._hello_verify_requests = 0
        self._offered_extensions = self._extensions()

    def start(self) -> Flight:
        """Flight 1: the first ClientHello, without cookie."""
        self.state = ClientState.WAIT_SERVER_HELLO
        return Flight((self._client_hello(b""),))

    def _extensions(self) -> tuple[ExtendedMasterSecret | RenegotiationInfo, ...]:
        # RFC 5746 §3.4: an empty renegotiation_info on the initial handshake (EXT-4);
        # RFC 7627 §5.1: extended_master_secret (RES-3). No truncated_hmac (EXT-3).
        exts: list[ExtendedMasterSecret | RenegotiationInfo] = [RenegotiationInfo(b"")]
        if self.config.require_extended_master_secret:
            exts.append(ExtendedMasterSecret())
        return tuple(exts)

    def _client_hello(self, cookie: bytes) -> OutgoingMessage:
        """The one builder of our ClientHello, with or without cookie (HS-1)."""
        hello = ClientHello(
            client_version=DTLS_1_2,
            random=self.client_random,
            session_id=b"",
            cookie=cookie,
            cipher_suites=tuple(int(s) for s in OFFERED_SUITES),
            compression_methods=(0,),
            extensions=self._offered_extensions,
        )
        return self.outgoing(HandshakeType.client_hello, hello.encode(), epoch=0)

    # -- handlers -----------------------------------------------------------------------------
    def _on_hello_verify_request(self, msg: ReassembledMessage) -> Flight:
        hvr = HelloVerifyRequest.decode(msg.body)
        if hvr.server_version not in (DTLS_1_0, DTLS_1_2):
            raise ProtocolError(
                "HelloVerifyRequest with a foreign version", AlertDescription.protocol_version
            )
        self._hello_verify_requests += 1
        if self._hello_verify_requests > MAX_HELLO_VERIFY_REQUESTS:
            raise ProtocolError("too many HelloVerifyRequests", AlertDescription.handshake_failure)
        # RFC 6347 §4.2.6: the first ClientHello and the HelloVerifyRequest are not hashed.
        self.transcript.reset()
        return Flight((self._client_hello(hvr.cookie),))

    def _on_server_hello(self, msg: ReassembledMessage) -> None:
        hello = ServerHello.decode(msg.body)
        if hello.server_version != DTLS_1_2:
            raise ProtocolError(
                "server chose a version other than DTLS 1.2", AlertDescription.protocol_version
            )
        if hello.cipher_suite not in OFFERED_SUITES:
            raise ProtocolError(
                "server chose a suite we did not offer", AlertDescription.illegal_parameter
            )
        if hello.compression_method != 0:
            raise ProtocolError("server chose compression", AlertDescription.illegal_parameter)
        offered = {type(e) for e in self._offered_extensions}
        for ext in hello.extensions:
            if type(ext) not in offered:
                raise ProtocolError(
                    f"server sent extension {type(ext).__name__} we did not offer",
                    AlertDescription.unsupported_extension,
                )
        reneg = find_extension(hello.extensions, RenegotiationInfo)
        if reneg is not None and reneg.renegotiated_connection:
            raise ProtocolError("non-empty renegotiation_info", AlertDescription.handshake_failure)
        self.use_extended_master_secret = (
            find_extension(hello.extensions, ExtendedMasterSecret) is not None
        )
        if self.config.require_extended_master_secret and not self.use_extended_master_secret:
            raise ProtocolError(
                "server refused the extended master secret", AlertDescription.handshake_failure
            )
        self.server_random = hello.random
        self.cipher_suite = hello.cipher_suite
        self.record(msg)
        self.state = ClientState.WAIT_SERVER_KEY_EXCHANGE
        return None

    def _on_server_key_exchange(self, msg: ReassembledMessage) -> None:
        # PSK-3: the identity hint is parsed (it must be well formed) and ignored.
        ServerKeyExchangePsk.decode(msg.body)
        self.record(msg)
        self.state = ClientState.WAIT_SERVER_HELLO_DONE
        return None

    def _on_server_hello_done(self, msg: ReassembledMessage) -> Flight:
        if msg.body:
            raise ProtocolError("ServerHelloDone with a body", AlertDescription.decode_error)
        self.record(msg)
        self.peer = PskIdentity(self.config.identity)
        cke_body = ClientKeyExchangePsk(self.config.identity).encode()
        cke = self.outgoing(HandshakeType.client_key_exchange, cke_body, 0)
        self.derive_keys(self.config.psk)
        finished = self.finished(from_client=True, epoch=1)
        self.state = ClientState.WAIT_CCS
        return Flight((cke, OutgoingCcs(0), finished))

    def _on_finished(self, msg: ReassembledMessage) -> None:
        self.check_finished(msg, from_client=False)
        self.state = ClientState.ESTABLISHED
        self.complete = True
        return None

    TABLE: ClassVar[dict[tuple[Enum, int], Handler]] = {
        (
            ClientState.WAIT_SERVER_HELLO,
            HandshakeType.hello_verify_request,
        ): _on_hello_verify_request,
        (ClientState.WAIT_SERVER_HELLO, HandshakeType.server_hello): _on_server_hello,
        (
            ClientState.WAIT_SERVER_KEY_EXCHANGE,
            HandshakeType.server_key_exchange,
        ): _on_server_key_exchange,
        (
            ClientState.WAIT_SERVER_KEY_EXCHANGE,
            HandshakeType.server_hello_done,
        ): _on_server_hello_done,
        (
            ClientState.WAIT_SERVER_HELLO_DONE,
            HandshakeType.server_hello_done,
        ): _on_server_hello_done,
        (ClientState.WAIT_FINISHED, HandshakeType.finished): _on_finished,
    }
