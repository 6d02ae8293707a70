"""The server side of the handshake (RFC 6347 §4.2; RFC 5246 §7.4; profile §4-§6).

The stateless cookie exchange happens before this object exists (`iotdtls.endpoint`); the first
message a `ServerHandshake` sees is the ClientHello that carries a valid cookie (or any
ClientHello when cookies are off), so no public-key operation happens before the client proved
its address (HS-2). Its handler picks the suite, certificate types, key exchange and flow table.
Flights: 4 ServerHello, [Certificate, ServerKeyExchange, [CertificateRequest]], ServerHelloDone
(PSK: no ServerKeyExchange, no identity hint, PSK-3); 6 ChangeCipherSpec, Finished.

A ClientHello naming a cached session (RES-1) that the configuration of today still accepts
gets the abbreviated handshake instead: flight 2 is ServerHello, ChangeCipherSpec, Finished,
and the client's ChangeCipherSpec and Finished end it. The client's server_name picks the
credentials (RFC 6066 §3) before anything else is decided.
"""

from __future__ import annotations

import logging
from enum import auto
from typing import ClassVar

from iotdtls._enum import IdentityHashEnum
from iotdtls.config import ServerConfig
from iotdtls.crypto import random_bytes
from iotdtls.crypto.signature import ECDSA_SCHEME_HASHES, PublicKey, verify_digest_signature
from iotdtls.crypto.suites import suite_info
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
    listed_signature_schemes,
    own_heartbeat_mode,
    resumption_refusal,
    server_hello_extensions,
    session_answers,
    signed_with,
)
from iotdtls.handshake.peerauth import OwnCertificate, PeerVerifier
from iotdtls.handshake.reassembly import HandshakeMessage
from iotdtls.handshake.transcript import KeptTranscript
from iotdtls.identity import UnauthenticatedPeer
from iotdtls.messages import (
    DTLS_1_2,
    CertChainType,
    Certificate,
    CertificateRequest,
    CertificateType,
    CertificateUrl,
    CertificateVerify,
    ClientHello,
    ExtendedMasterSecret,
    Extension,
    HandshakeType,
    Heartbeat,
    MaxFragmentLength,
    RequestedCertificateType,
    ServerHello,
    ServerName,
    SignatureScheme,
    find_extension,
)
from iotdtls.sessions import SessionState, SessionStore, not_a_session, store_failure

__all__ = [
    "CLIENT_AUTH_FLOW",
    "CLIENT_AUTH_URL_FLOW",
    "KEY_EXCHANGE_FLOW",
    "RESUMED_FLOW",
    "ServerHandshake",
    "ServerState",
    "check_client_version",
]

logger = logging.getLogger("iotdtls")
#: Enum members of the hot paths by module-level name (why: docs/internals.md, layers 5-7).
_SERVER_HELLO = HandshakeType.server_hello
_SERVER_HELLO_DONE = HandshakeType.server_hello_done
#: Length of the session_ids we issue (RFC 5246 §7.4.1.2: up to 32 bytes, random).
SESSION_ID_LENGTH = 32
#: Our CertificateRequest by the client's certificate type (RFC 5246 §7.4.4; RFC 8422 §5.5: an
#: ECDSA P-256 certificate or raw key; certificate_authorities left empty, any CA we trust).
#: Its supported_signature_algorithms are the pairs the client's certificates may be signed
#: with (RFC 5246 §7.4.6), so for X.509 every pair our chain verifier accepts, for a raw key
#: ecdsa_secp256r1_sha256 alone (`listed_signature_schemes`).
_CERTIFICATE_REQUESTS: dict[int, bytes] = {
    cert_type: CertificateRequest(
        (RequestedCertificateType.ecdsa_sign,), listed_signature_schemes(cert_type)
    ).encode()
    for cert_type in (CertificateType.X509, CertificateType.RawPublicKey)
}
#: What the client may sign its CertificateVerify with, by its certificate type: the ECDSA
#: pairs of that CertificateRequest (RFC 5246 §7.4.8).
_CLIENT_SIGNS_WITH: dict[int, frozenset[int]] = {
    cert_type: signed_with(listed_signature_schemes(cert_type))
    for cert_type in (CertificateType.X509, CertificateType.RawPublicKey)
}
#: The hash of the transcript a CertificateVerify signs (the transcript's own SHA-256 for it).
_SHA256_VERIFY = SignatureScheme.ecdsa_secp256r1_sha256


class ServerState(IdentityHashEnum):
    WAIT_CLIENT_HELLO = auto()
    #: After our flight 4: the first message of the client's flight 5.
    WAIT_CLIENT_FLIGHT = auto()
    WAIT_CLIENT_KEY_EXCHANGE = auto()
    WAIT_CERTIFICATE_VERIFY = auto()
    WAIT_CCS = auto()
    WAIT_FINISHED = auto()
    ESTABLISHED = auto()


#: The highest ClientHello message_seq a handshake can follow: we number our messages on from
#: it (RFC 6347 §4.2.2), up to six of them (ServerHello, Certificate, ServerKeyExchange,
#: CertificateRequest, ServerHelloDone, Finished), and a message_seq has 16 bits.
_LAST_CLIENT_HELLO_SEQ = 0xFFFF - 5
#: Where a record that fails authentication can only be the client's Finished (PSK-4).
_BEFORE_CLIENT_FINISHED = (ServerState.WAIT_CCS, ServerState.WAIT_FINISHED)


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

    # Slots: a server keeps one per association (memory per association, issue 9).
    __slots__ = (
        "_client_key",
        "_exchange",
        "_named",
        "_store",
        "_verifier",
        "credentials",
    )

    ESTABLISHED = ServerState.ESTABLISHED
    is_client = False
    config: ServerConfig

    def __init__(self, config: ServerConfig, session_store: SessionStore | None = None) -> None:
        super().__init__(config, ServerState.WAIT_CLIENT_HELLO)
        #: Where sessions are cached and looked up (None: no resumption).
        self._store = session_store
        #: The configuration whose credentials serve this client (SNI may pick another).
        self.credentials: ServerConfig = config
        #: The client's server_name chose `credentials` (answered in ServerHello).
        self._named = False
        self._exchange: ServerKeyExchanger | None = None
        self._verifier: PeerVerifier | None = None
        self._client_key: PublicKey | None = None

    def _on_client_hello(self, msg: HandshakeMessage) -> Outcome:
        hello = ClientHello.decode(msg.body)
        # Kept first, also for a hello refused below: the endpoint knows a copy of a hello
        # that failed by it (`ServerEndpoint._repeats_failed_hello`).
        self.keys.client_random = hello.random
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
        self.credentials = self._credentials_for(hello)
        self.keys.extended_master_secret = ems
        self.keys.server_random = random_bytes(32)
        # The first ClientHello we see starts the message numbering (RFC 6347 §4.2.2).
        if msg.message_seq > _LAST_CLIENT_HELLO_SEQ:
            raise ProtocolError(
                f"ClientHello message_seq {msg.message_seq} leaves no room to number the "
                "handshake's messages (16 bits)",
                AlertDescription.illegal_parameter,
            )
        self.send_seq = msg.message_seq
        extras = self._negotiate_extensions(hello)
        session = self._resumable(hello, ems)
        if session is not None:
            self.record(msg)
            return self._resume(hello, session, extras)
        # NoCertificateType (the server's or the client's): its alert, `DtlsConnection._fail`.
        choice = choose_server_parameters(hello, self.credentials)
        verifier = choice.client_verifier
        if verifier is not None and verifier.certificate_type == CertificateType.X509:
            # The client may sign its CertificateVerify with SHA-384 or SHA-512 (RFC 5246
            # §7.4.8, our CertificateRequest's list): keep the messages to hash them again.
            self.keys.transcript = KeptTranscript()
        self.record(msg)
        return self._full_handshake(hello, choice, ems, extras)

    def _full_handshake(
        self, hello: ClientHello, choice: ServerChoice, ems: bool, extras: tuple[Extension, ...]
    ) -> Outcome:
        """Flight 4: ServerHello, [Certificate, ServerKeyExchange, [CertificateRequest]],
        ServerHelloDone. A new session_id only where the session can be resumed later: with a
        session store and the extended master secret (RES-3), otherwise empty (RFC 5246
        §7.4.1.3: the session will not be cached)."""
        self.suite = choice.suite
        self.mode = choice.mode
        self.allowed_alerts = MODE_ALERTS[choice.mode]
        if self._store is not None and ems:
            self.session_id = random_bytes(SESSION_ID_LENGTH)
        if self._named:
            extras = (*extras, ServerName(""))  # RFC 6066 §3: the name chose our credentials
        server_hello = ServerHello(
            server_version=DTLS_1_2,
            random=self.keys.server_random,
            session_id=self.session_id,
            cipher_suite=choice.suite.code,
            compression_method=0,
            extensions=server_hello_extensions(hello, choice, ems, extras),
        )
        items: list[FlightItem] = [self.outgoing(_SERVER_HELLO, server_hello.encode())]
        if choice.own is None:  # PSK (here, not in a call: the PSK handshake is the hot path)
            self._exchange = PskServerExchange(self.credentials.lookup_psk)
            self.table = KEY_EXCHANGE_FLOW
        else:
            items += self._certificate_messages(choice, choice.own)
        items.append(self.outgoing(_SERVER_HELLO_DONE, b""))
        return Outcome(Flight(tuple(items)))

    def _resume(
        self, hello: ClientHello, session: SessionState, extras: tuple[Extension, ...]
    ) -> Outcome:
        """The abbreviated handshake (RFC 5246 §7.3, RES-1): ServerHello with the client's
        session_id, ChangeCipherSpec and Finished under keys from the session's master secret
        and the new randoms. The peer is the one the full handshake authenticated; no
        server_name answer (RFC 6066 §3)."""
        suite = suite_info(session.cipher_suite)
        assert suite is not None, "a SessionState names one of our suites"
        self.suite, self.mode, self.peer = suite, session.mode, session.peer
        self.allowed_alerts = MODE_ALERTS[session.mode]
        self.resumed = True
        self.session_id = session.session_id
        server_hello = ServerHello(
            server_version=DTLS_1_2,
            random=self.keys.server_random,
            session_id=session.session_id,
            cipher_suite=suite.code,
            compression_method=0,
            extensions=session_answers(hello, True, extras),
        )
        hello_out = self.outgoing(_SERVER_HELLO, server_hello.encode())
        keys = self.keys.resume(session.master_secret, suite, False)
        self.table = RESUMED_FLOW
        return Outcome(Flight((hello_out, OutgoingCcs(0), self.finished(epoch=1))), keys)

    def _credentials_for(self, hello: ClientHello) -> ServerConfig:
        """Server Name Indication (RFC 6066 §3, EXT-2): the credentials that serve the name the
        client sent, through `server_name_lookup`; unrecognized_name for a name it does not
        know (or this configuration's credentials, as configured)."""
        sni = find_extension(hello.extensions, ServerName)
        self.server_name = "" if sni is None else sni.host_name.lower()
        lookup = self.config.server_name_lookup
        if sni is None or lookup is None:
            return self.config
        try:
            named = lookup(self.server_name)
        except Exception as exc:
            logger.warning("server_name_lookup raised %s", type(exc).__name__)
            raise ProtocolError(
                "server_name_lookup failed", AlertDescription.internal_error
            ) from None
        if named is None:
            if self.config.reject_unknown_server_names:
                raise ProtocolError(
                    f"no credentials for server_name {self.server_name!r}",
                    AlertDescription.unrecognized_name,
                )
            return self.config
        if not isinstance(named, ServerConfig):
            logger.warning("server_name_lookup returned %s", type(named).__name__)
            raise ProtocolError(
                "server_name_lookup returned no ServerConfig", AlertDescription.internal_error
            )
        self._named = True
        return named

    def _negotiate_extensions(self, hello: ClientHello) -> tuple[Extension, ...]:
        """max_fragment_length, honoured as asked (RFC 6066 §4, EXT-1), and heartbeat when
        configured (RFC 6520 §2, EXT-5): our answers for the ServerHello."""
        answers: list[Extension] = []
        mfl = find_extension(hello.extensions, MaxFragmentLength)
        if mfl is not None:
            self.max_fragment_length = mfl.code
            answers.append(MaxFragmentLength(mfl.code))
        heartbeat = find_extension(hello.extensions, Heartbeat)
        if heartbeat is not None and self.config.heartbeat:
            self.peer_heartbeat_mode = heartbeat.mode
            answers.append(own_heartbeat_mode(self.config))
        return tuple(answers)

    def _resumable(self, hello: ClientHello, ems: bool) -> SessionState | None:
        """The cached session the client asks to resume, if it may be (RES-1): looked up by
        session_id only, so a client that moved to another address resumes too (RES-2). An
        application store that raises, or returns anything but a SessionState or None (saved
        bytes not read back, an awaitable), is logged by type and is a miss: a full handshake."""
        if self._store is None or not hello.session_id:
            return None
        try:
            session = self._store.get(hello.session_id, self.now)
        except Exception as exc:  # an application store that failed: a full handshake
            logger.warning("session store get raised %s", store_failure(exc))
            return None
        if not_a_session(session):  # its value is never logged: key material
            logger.warning(
                "session store get returned %s, not a SessionState or None",
                type(session).__name__,
            )
            return None
        if session is None:
            return None
        if not ems:
            # RFC 7627 §5.3: every cached session used the extended master secret (RES-3).
            raise ProtocolError(
                "resumption without the extended master secret of the session",
                AlertDescription.handshake_failure,
            )
        refusal = resumption_refusal(
            session, hello, self.credentials, self.server_name, self.max_fragment_length
        )
        if refusal is not None:
            logger.debug("session not resumed: %s", refusal)
            return None
        return session

    def _certificate_messages(self, choice: ServerChoice, own: OwnCertificate) -> list[FlightItem]:
        """Certificate, ServerKeyExchange and CertificateRequest as the choice needs them (an
        ECDHE suite, signed with `own`); the flow table follows from the same choice."""
        assert own.key is not None, "our own credentials always have a key"
        self._exchange = EcdheServerExchange(own.key)
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
        request = _CERTIFICATE_REQUESTS[self._verifier.certificate_type]
        items.append(self.outgoing(HandshakeType.certificate_request, request))
        self.table = CLIENT_AUTH_URL_FLOW if choice.certificate_urls else CLIENT_AUTH_FLOW
        return items

    def _on_client_certificate(self, msg: HandshakeMessage) -> None:
        """RFC 5246 §7.4.6: we asked, so an empty Certificate ends the handshake."""
        assert self._verifier is not None
        self.peer, self._client_key = self._verifier.verify(msg.body)
        self.record(msg)

    def _on_certificate_url(self, msg: HandshakeMessage) -> None:
        """RFC 6066 §5 (CRT-7): the client names where its certificates lie. The handshake
        waits (`waiting_for_chain`) until the adapter has fetched them and handed the chain to
        `supply_client_chain`; no I/O happens here."""
        urls = CertificateUrl.decode(msg.body)
        if urls.chain_type == CertChainType.pkipath:
            raise ProtocolError(
                "CertificateURL of type pkipath is not supported",
                AlertDescription.certificate_unobtainable,
            )
        if urls.chain_type != CertChainType.individual_certs:
            raise ProtocolError(
                f"CertificateURL of unknown type {urls.chain_type} (RFC 6066 §5 defines "
                "individual_certs(0) and pkipath(1))",
                AlertDescription.illegal_parameter,
            )
        self.pending_certificate_urls = tuple((u.url, u.sha1_hash) for u in urls.urls)
        self.record(msg)

    def supply_client_chain(self, chain: tuple[bytes, ...]) -> None:
        """The fetched chain of a CertificateURL (hashes already checked): validate it like a
        Certificate message (CRT-1, CRT-4). An empty resource (its hash, SHA-1 of nothing, given
        by the client) is no certificate: bad_certificate (RFC 5246 §7.2.2), as for content
        that does not parse; the fetch did obtain what the client named, so not
        certificate_unobtainable (RFC 6066 §5), which a failed fetch gets. The chain is
        checked whole before the handshake stops waiting for it."""
        assert self._verifier is not None and self.pending_certificate_urls
        for index, certificate in enumerate(chain):
            if not certificate:
                raise ProtocolError(
                    f"certificate {index} fetched from the client's CertificateURL is empty",
                    AlertDescription.bad_certificate,
                )
        try:
            body = Certificate(chain).encode()
        except ValueError as exc:  # a chain past 2^24-1 bytes: not from a bounded fetch
            raise ProtocolError(
                f"the chain fetched from the client's CertificateURL cannot be a Certificate "
                f"message: {exc}",
                AlertDescription.bad_certificate,
            ) from None
        self.pending_certificate_urls = ()
        self.peer, self._client_key = self._verifier.verify(body)

    def credential_digest(self) -> bytes:
        """The PSK's digest in a PSK handshake (a server's own key or certificate is checked by
        the client); read when the session is cached, before `release` drops the exchange, so
        an established association keeps nothing of it (the state it reports later has no
        digest, which this server would not resume)."""
        exchange = self._exchange
        return exchange.psk_digest if isinstance(exchange, PskServerExchange) else b""

    def release(self) -> None:
        super().release()
        self._exchange = None
        self._verifier = None
        self._client_key = None

    def _on_client_key_exchange(self, msg: HandshakeMessage) -> Outcome:
        exchange = self._exchange
        assert exchange is not None
        try:
            premaster = exchange.on_client_key_exchange(msg.body)
        finally:
            if exchange.claimed is not None:  # named, even when its psk_lookup then failed
                self.peer = exchange.claimed
        self.record(msg)
        return Outcome(keys=self.derive(premaster))

    def _on_certificate_verify(self, msg: HandshakeMessage) -> None:
        """RFC 5246 §7.4.8: the client's signature over every handshake message before it, with
        an ECDSA pair our CertificateRequest listed ("MUST be one of those present in the
        supported_signature_algorithms field"); any other is illegal_parameter."""
        verify = CertificateVerify.decode(msg.body)
        scheme = verify.signature_scheme
        assert self._verifier is not None, "we asked for the client's Certificate"
        if scheme not in _CLIENT_SIGNS_WITH[self._verifier.certificate_type]:
            raise ProtocolError(
                "CertificateVerify with a scheme we did not ask for",
                AlertDescription.illegal_parameter,
            )
        if self._client_key is None:  # the flow takes the client's Certificate first
            raise ProtocolError(
                "CertificateVerify before any client certificate was verified",
                AlertDescription.unexpected_message,
            )
        transcript = self.keys.transcript
        if scheme == _SHA256_VERIFY:
            digest = transcript.digest()
        else:
            assert isinstance(transcript, KeptTranscript), "kept for an X.509 client"
            digest = transcript.digest_with(ECDSA_SCHEME_HASHES[scheme])
        verify_digest_signature(self._client_key, verify.signature, digest, scheme)
        self.record(msg)

    def awaits_authenticated_finished(self) -> bool:
        return not self.resumed and self.state in _BEFORE_CLIENT_FINISHED

    def _on_finished_then_ours(self, msg: HandshakeMessage) -> Outcome:
        """The end of a full handshake; its session is cached for resumption (RES-1)."""
        outcome = super()._on_finished_then_ours(msg)
        self._cache_session()
        return outcome

    def _cache_session(self) -> None:
        """Only sessions with the extended master secret have a session_id (RES-3)."""
        if self._store is None or not self.session_id:
            return
        try:
            self._store.put(self.session_state(), self.now)
        except Exception as exc:
            logger.warning("session store put raised %s", store_failure(exc))

    def forget_session(self) -> None:
        if self._store is not None and self.session_id:
            try:
                self._store.remove(self.session_id)
            except Exception as exc:
                logger.warning("session store remove raised %s", store_failure(exc))
        super().forget_session()

    HELLO_TABLE: ClassVar[Table] = {
        (ServerState.WAIT_CLIENT_HELLO, HandshakeType.client_hello): Transition(
            _on_client_hello, ServerState.WAIT_CLIENT_FLIGHT
        ),
    }


_S = ServerState
_H = HandshakeType
_END: Table = {
    (_S.WAIT_CCS, CHANGE_CIPHER_SPEC): Transition(None, _S.WAIT_FINISHED),
    (_S.WAIT_FINISHED, _H.finished): Transition(
        ServerHandshake._on_finished_then_ours, _S.ESTABLISHED
    ),
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

#: The abbreviated handshake (RFC 5246 §7.3, RES-1): after our ServerHello, ChangeCipherSpec
#: and Finished, the client's ChangeCipherSpec and Finished.
RESUMED_FLOW: Table = {
    (_S.WAIT_CLIENT_FLIGHT, CHANGE_CIPHER_SPEC): Transition(None, _S.WAIT_FINISHED),
    (_S.WAIT_FINISHED, _H.finished): Transition(ServerHandshake._on_finished, _S.ESTABLISHED),
}

#: The same, when the client may send a CertificateURL instead (RFC 6066 §5, CRT-7).
CLIENT_AUTH_URL_FLOW: Table = {
    **CLIENT_AUTH_FLOW,
    (_S.WAIT_CLIENT_FLIGHT, _H.certificate_url): Transition(
        ServerHandshake._on_certificate_url, _S.WAIT_CLIENT_KEY_EXCHANGE
    ),
}
