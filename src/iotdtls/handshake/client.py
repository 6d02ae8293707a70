"""The client side of the handshake (RFC 6347 §4.2; RFC 5246 §7.4; profile §4-§6).

Flights (RFC 6347 §4.2.4): 1 ClientHello; 3 ClientHello with cookie (after a
HelloVerifyRequest, HS-1); 5 [Certificate], ClientKeyExchange, [CertificateVerify],
ChangeCipherSpec, Finished. The ServerHello fixes the suite; its handler picks the key exchange,
the peer verifier and the flow table (PSK, or certificate-based ECDHE). The handshake completes
on the server's ChangeCipherSpec and a verified Finished.

With a saved session (RES-1), both ClientHellos carry its session_id; a ServerHello echoing it
resumes the session (RFC 5246 §7.4.1.3): the abbreviated flow takes the server's
ChangeCipherSpec and Finished and answers with ours. Any other ServerHello is a full handshake
(an unknown or expired session falls back, RFC 5246 §7.4.1.2).
"""

from __future__ import annotations

import logging
from enum import auto
from typing import ClassVar

from iotdtls._enum import IdentityHashEnum
from iotdtls.config import ClientConfig, Mode
from iotdtls.crypto import constant_time_equal, random_bytes
from iotdtls.crypto.signature import PublicKey
from iotdtls.crypto.suites import KeyExchangeKind, suite_info
from iotdtls.errors import AlertDescription, ProtocolError
from iotdtls.handshake.alerts import MODE_ALERTS
from iotdtls.handshake.flight import Flight, FlightItem, OutgoingCcs, OutgoingMessage
from iotdtls.handshake.keyexchange import (
    ClientKeyExchanger,
    EcdheClientExchange,
    PskClientExchange,
)
from iotdtls.handshake.machine import (
    CHANGE_CIPHER_SPEC,
    HandshakeMachine,
    Outcome,
    Table,
    Transition,
)
from iotdtls.handshake.negotiation import (
    NoCertificateType,
    cached_chain_fingerprint,
    check_renegotiation_info,
    client_offer,
    offerable_session,
    server_signs_with,
)
from iotdtls.handshake.peerauth import (
    NO_CERTIFICATE,
    OwnCertificate,
    PeerVerifier,
    RawKeyVerifier,
    X509ServerVerifier,
    handshake_clock,
    own_raw_key,
    own_x509,
    own_x509_urls,
)
from iotdtls.handshake.reassembly import HandshakeMessage
from iotdtls.messages import (
    DTLS_1_0,
    DTLS_1_2,
    CachedInfo,
    CachedInformationType,
    Certificate,
    CertificateRequest,
    CertificateType,
    CertificateVerify,
    ClientCertificateType,
    ClientCertificateUrl,
    ClientHello,
    ECPointFormat,
    EcPointFormats,
    ExtendedMasterSecret,
    HandshakeType,
    Heartbeat,
    HelloVerifyRequest,
    MaxFragmentLength,
    RequestedCertificateType,
    ServerCertificateType,
    ServerHello,
    SignatureScheme,
    find_extension,
)
from iotdtls.messages.extensions import decode_vector
from iotdtls.messages.handshake import encode_cookie
from iotdtls.sessions import SessionState

__all__ = ["CERTIFICATE_FLOW", "PSK_FLOW", "RESUMED_FLOW", "ClientHandshake", "ClientState"]

logger = logging.getLogger("iotdtls")

#: HelloVerifyRequests answered in one handshake before we give up (a loop is an attack).
MAX_HELLO_VERIFY_REQUESTS = 4

#: Enum members of the hot paths by module-level name (why: docs/internals.md, layers 5-7).
_CLIENT_HELLO = HandshakeType.client_hello
_CLIENT_KEY_EXCHANGE = HandshakeType.client_key_exchange
_PSK_EXCHANGE = KeyExchangeKind.PSK

#: The RFC 7250 certificate types (the two a ServerHello may select for us) as messages say them.
_TYPE_NAMES: dict[int, str] = {
    CertificateType.X509: "an X.509 certificate",
    CertificateType.RawPublicKey: "a raw public key",
}


class ClientState(IdentityHashEnum):
    START = auto()
    WAIT_SERVER_HELLO = auto()
    #: After ServerHello: the first message of the rest of the server's flight.
    WAIT_SERVER_FLIGHT = auto()
    WAIT_SERVER_KEY_EXCHANGE = auto()
    WAIT_CERTIFICATE_REQUEST = auto()
    WAIT_SERVER_HELLO_DONE = auto()
    WAIT_CCS = auto()
    WAIT_FINISHED = auto()
    ESTABLISHED = auto()


#: Where, resuming, a record that fails authentication can only be the server's Finished: after
#: its ServerHello, before and after its ChangeCipherSpec (RFC 5246 §7.3).
_BEFORE_SERVER_FINISHED = (ClientState.WAIT_SERVER_FLIGHT, ClientState.WAIT_FINISHED)


#: Where our last flight of a full handshake, Finished included, has been sent: the server's
#: alert then answers it (RFC 5246 §7.3).
_AFTER_OUR_FINISHED = (ClientState.WAIT_CCS, ClientState.WAIT_FINISHED)
_HANDSHAKE_FAILURE = AlertDescription.handshake_failure
_UNSUPPORTED = AlertDescription.unsupported_certificate
#: A PSK server that cannot verify our Finished answers decrypt_error (RFC 5246 §7.4.9; an
#: unknown identity too, RFC 4279 §2 as narrowed by RFC 7925 §4.2), some handshake_failure or
#: unknown_psk_identity (RFC 4279 §2). The alert does not say which; we say what it means.
_PSK_REFUSALS: dict[int, str] = {
    AlertDescription.decrypt_error: (
        "the server could not verify our Finished: the PSK does not match the server's, or "
        "the PSK identity is unknown to it"
    ),
    _HANDSHAKE_FAILURE: (
        "the server refused our PSK: it does not match the server's, or the PSK identity is "
        "unknown to it"
    ),
    AlertDescription.unknown_psk_identity: "the server does not know our PSK identity",
}
#: handshake_failure after our Certificate carried our raw key: a raw-key server refuses an
#: unprovisioned key so (RFC 7250 §3; the profile's raw-key mode has no bad_certificate).
_RAW_KEY_REFUSED = (
    "the server did not accept our raw public key, SHA-256 {}: is it provisioned there?"
)
#: unsupported_certificate in answer to our ClientHello, which offered no client key: no
#: certificate type in common (RFC 7250 §4.2), here most likely the client's.
_NO_CLIENT_KEY = (
    "the server refused our hello's certificate types: it may require a client raw public key, "
    "and none is configured here, no raw_public_key"
)


class ClientHandshake(HandshakeMachine):
    """A client provisioned for one server (CFG-1), in the mode its configuration names."""

    __slots__ = (
        "_cached_chain",
        "_client_type",
        "_credential_digest",
        "_exchange",
        "_hello_parts",
        "_hello_verify_requests",
        "_no_certificate_reason",
        "_offered_extensions",
        "_offered_session",
        "_requested",
        "_send_urls",
        "_server_key",
        "_suites",
        "_verifier",
    )

    ESTABLISHED = ClientState.ESTABLISHED
    is_client = True
    config: ClientConfig

    def __init__(self, config: ClientConfig, session: SessionState | None = None) -> None:
        super().__init__(config, ClientState.START)
        self.keys.client_random = random_bytes(32)
        self._hello_verify_requests = 0
        #: Our ClientHello around its cookie, encoded once (see `_client_hello`).
        self._hello_parts: tuple[bytes, bytes] | None = None
        self._suites, self._offered_extensions = client_offer(config)
        #: The session we offer to resume (RES-1), if it fits this configuration.
        self._offered_session = session
        if session is not None and (reason := offerable_session(session, config)) is not None:
            logger.debug("saved session not offered: %s", reason)
            self._offered_session = None
        self._exchange: ClientKeyExchanger | None = None
        self._verifier: PeerVerifier | None = None
        self._server_key: PublicKey | None = None
        #: What we answer a CertificateRequest with (None: not requested).
        self._requested: OwnCertificate | None = None
        #: The certificate type the ServerHello selected for ours (RFC 7250 §4.2).
        self._client_type: int = CertificateType.X509
        #: Why we answered a CertificateRequest with an empty Certificate ("": we did not).
        self._no_certificate_reason = ""
        #: The server confirmed cached_info (RFC 7924) / client_certificate_url (RFC 6066 §5).
        self._cached_chain = False
        self._send_urls = False
        #: What the session keeps of our credential (`SessionState.credential_digest`).
        self._credential_digest = b""

    def start(self) -> Flight:
        """Flight 1: the first ClientHello, without cookie."""
        self.state = ClientState.WAIT_SERVER_HELLO
        return Flight((self._client_hello(b""),))

    def release(self) -> None:
        super().release()
        self._exchange = None
        self._verifier = None
        self._server_key = None
        self._hello_parts = None
        self._requested = None
        self._no_certificate_reason = ""

    def credential_digest(self) -> bytes:
        return self._credential_digest

    def _client_hello(self, cookie: bytes) -> OutgoingMessage:
        """The one builder of our ClientHello, with or without cookie (HS-1): the same hello
        each time, only the cookie differs (RFC 6347 §4.2.1)."""
        if self._hello_parts is None:
            offered = self._offered_session
            hello = ClientHello(
                client_version=DTLS_1_2,
                random=self.keys.client_random,
                session_id=b"" if offered is None else offered.session_id,
                cookie=b"",
                cipher_suites=self._suites,
                compression_methods=(0,),
                extensions=self._offered_extensions,
            )
            self._hello_parts = hello.encode_around_cookie()
        before, after = self._hello_parts
        body = before + encode_cookie(cookie) + after
        return self.outgoing(_CLIENT_HELLO, body)

    # -- hellos -------------------------------------------------------------------------------
    def _on_hello_verify_request(self, msg: HandshakeMessage) -> Outcome:
        hvr = HelloVerifyRequest.decode(msg.body)
        if hvr.server_version not in (DTLS_1_0, DTLS_1_2):
            raise ProtocolError(
                "HelloVerifyRequest with a foreign version", AlertDescription.protocol_version
            )
        self._hello_verify_requests += 1
        if self._hello_verify_requests > MAX_HELLO_VERIFY_REQUESTS:
            raise ProtocolError("too many HelloVerifyRequests", AlertDescription.handshake_failure)
        # RFC 6347 §4.2.6: the first ClientHello and the HelloVerifyRequest are not hashed.
        self.keys.transcript.reset()
        return Outcome(Flight((self._client_hello(hvr.cookie),)), restart=True)

    def _on_server_hello(self, msg: HandshakeMessage) -> Outcome | None:
        hello = ServerHello.decode(msg.body)
        if hello.server_version != DTLS_1_2:
            raise ProtocolError(
                "server chose a version other than DTLS 1.2", AlertDescription.protocol_version
            )
        suite = suite_info(hello.cipher_suite)
        if hello.cipher_suite not in self._suites or suite is None:
            raise ProtocolError(
                "server chose a suite we did not offer", AlertDescription.illegal_parameter
            )
        if hello.compression_method != 0:
            raise ProtocolError("server chose compression", AlertDescription.illegal_parameter)
        self._check_extensions(hello)
        self.suite = suite
        self.keys.server_random = hello.random
        self.record(msg)
        offered = self._offered_session
        if offered is not None and hello.session_id == offered.session_id:
            return self._resume(hello, offered)
        self.session_id = hello.session_id
        self.mode = self.config.mode
        if suite.key_exchange is _PSK_EXCHANGE:
            self._exchange = PskClientExchange(self.config)
            self._credential_digest = self.config.credential_digest
            self.peer = self.config.psk_peer
            self.table = PSK_FLOW
        else:
            self._exchange = EcdheClientExchange(server_signs_with(self.config.mode))
            self._verifier = self._server_verifier(hello)
            # RFC 7250 §4.2: without client_certificate_type in the ServerHello, X.509 applies.
            # `_check_extensions` made sure a type confirmed is one we offered.
            confirmed = find_extension(hello.extensions, ClientCertificateType)
            self._client_type = CertificateType.X509 if confirmed is None else confirmed.types[0]
            self.table = CERTIFICATE_FLOW
        self.allowed_alerts = MODE_ALERTS[self.config.mode]
        return None

    def _resume(self, hello: ServerHello, session: SessionState) -> Outcome:
        """The server echoed our session_id: the abbreviated handshake (RFC 5246 §7.3). The
        session's suite, peer, fragment length and server name carry over (RFC 6066 §3, §4);
        its master secret and the fresh randoms give the keys that open the server's Finished.
        `_check_extensions` has made sure of the extended master secret (RFC 7627 §5.3: every
        session we offer used it, so a ServerHello without it was refused already, whatever
        `require_extended_master_secret` says)."""
        if hello.cipher_suite != session.cipher_suite:
            raise ProtocolError(
                "server resumed the session with another cipher suite",
                AlertDescription.illegal_parameter,
            )
        assert self.suite is not None
        self.resumed = True
        self.session_id = session.session_id
        self.mode = session.mode
        self.peer = session.peer
        self.max_fragment_length = session.max_fragment_length
        self.server_name = session.server_name
        self._credential_digest = session.credential_digest
        self.allowed_alerts = MODE_ALERTS[session.mode]
        self.table = RESUMED_FLOW
        return Outcome(keys=self.keys.resume(session.master_secret, self.suite, True))

    def awaits_authenticated_finished(self) -> bool:
        """Resuming: the server's ServerHello gave the keys (the session's master secret and
        the fresh randoms), so its Finished failing to authenticate means the two sides hold
        the session with different master secrets (a session file edited or damaged): the
        abbreviated handshake's counterpart of the server's PSK-4 view (RFC 5246 §7.3, RFC 6347
        §4.2.4). In a full handshake the server sends its Finished only once ours verified, so
        both sides hold the same keys and a record failing there is only dropped."""
        return self.resumed and self.state in _BEFORE_SERVER_FINISHED

    def _check_extensions(self, hello: ServerHello) -> None:
        """Only answers to what we offered (RFC 5246 §7.4.1.4); the extended master secret
        unless allowed without (RES-3), and always when resuming (RFC 7627 §5.3); an empty
        renegotiation_info (RFC 5746 §3.4); uncompressed among the point formats, if any (RFC
        8422 §5.2)."""
        # By class, each looked up once: a hello holds one extension of a type at most (its
        # decoding refuses a repeated one, RFC 5246 §7.4.1.4).
        sent = {type(ext): ext for ext in hello.extensions}
        offered = {type(ext): ext for ext in self._offered_extensions}
        for cls in sent:
            if cls not in offered:
                raise ProtocolError(
                    f"server sent extension {cls.__name__} we did not offer",
                    AlertDescription.unsupported_extension,
                )
        for cls in (ServerCertificateType, ClientCertificateType):
            confirmed, offered_ext = sent.get(cls), offered.get(cls)
            if (
                isinstance(confirmed, cls)
                and isinstance(offered_ext, cls)
                and confirmed.types[0] not in offered_ext.types
            ):
                raise ProtocolError(
                    f"server confirmed a {cls.TYPE.name} we did not offer",
                    AlertDescription.illegal_parameter,
                )
        check_renegotiation_info(hello.extensions)
        formats = sent.get(EcPointFormats)
        if (
            isinstance(formats, EcPointFormats)
            and ECPointFormat.uncompressed not in formats.formats
        ):
            raise ProtocolError(
                "server's ec_point_formats lacks uncompressed (RFC 8422 §5.2)",
                AlertDescription.illegal_parameter,
            )
        cached = sent.get(CachedInfo)
        if isinstance(cached, CachedInfo) and any(
            o.type != CachedInformationType.cert for o in cached.objects
        ):
            raise ProtocolError(
                "server confirmed a cached_info type we did not offer",
                AlertDescription.illegal_parameter,
            )
        self._cached_chain = cached is not None
        self._send_urls = ClientCertificateUrl in sent
        self._check_fragment_length(hello)
        heartbeat = sent.get(Heartbeat)
        self.peer_heartbeat_mode = heartbeat.mode if isinstance(heartbeat, Heartbeat) else None
        self.server_name = self.config.sni_name or ""
        ems = ExtendedMasterSecret in sent
        session = self._offered_session
        if not ems and session is not None and hello.session_id == session.session_id:
            # RFC 7627 §5.3: every SessionState used the extension (RES-3), so the converse
            # rule (a session without it resumed with it) cannot arise on our side.
            raise ProtocolError(
                "server resumed a session made with the extended master secret without it "
                "(RFC 7627 §5.3)",
                AlertDescription.handshake_failure,
            )
        if self.config.require_extended_master_secret and not ems:
            raise ProtocolError(
                "server refused the extended master secret", AlertDescription.handshake_failure
            )
        self.keys.extended_master_secret = ems

    def _check_fragment_length(self, hello: ServerHello) -> None:
        """RFC 6066 §4 (EXT-1): the server takes our max_fragment_length as asked or not at
        all; any other answer is illegal_parameter."""
        answer = find_extension(hello.extensions, MaxFragmentLength)
        if answer is None:
            return
        asked = find_extension(self._offered_extensions, MaxFragmentLength)
        if asked is None or answer.code != asked.code:
            raise ProtocolError(
                "server answered another max_fragment_length", AlertDescription.illegal_parameter
            )
        self.max_fragment_length = answer.code

    def _server_verifier(self, hello: ServerHello) -> PeerVerifier:
        """How the server's Certificate is checked: the type it confirmed (X.509 when it sent
        no server_certificate_type, RFC 7250 §4.2) must be the one we are provisioned for, or
        we end with unsupported_certificate (RFC 7250 §4.2)."""
        confirmed = find_extension(hello.extensions, ServerCertificateType)
        cert_type = CertificateType.X509 if confirmed is None else confirmed.types[0]
        if self.config.mode is Mode.RAW_PUBLIC_KEY and cert_type == CertificateType.RawPublicKey:
            return RawKeyVerifier(self.config.server_key_pins)
        if self.config.mode is Mode.X509 and cert_type == CertificateType.X509:
            config = self.config
            now = handshake_clock(config.wall_clock)
            return X509ServerVerifier(
                config.trust_store, config.server_name, config.max_chain_depth, now
            )
        raise NoCertificateType(  # no mode agreed: its alert set is `DtlsConnection._fail`'s
            f"server certificate type {getattr(cert_type, 'name', cert_type)} (RFC 7250 §3) "
            "is not what we are provisioned for"
        )

    # -- the rest of the server's flight ------------------------------------------------------
    def _on_server_certificate(self, msg: HandshakeMessage) -> None:
        assert self._verifier is not None
        body = self._cached_certificate(msg.body) if self._cached_chain else msg.body
        self.peer, self._server_key = self._verifier.verify(body)
        self.record(msg)  # the transcript has the message as sent, short or not

    def _cached_certificate(self, body: bytes) -> bytes:
        """RFC 7924 §4.1 (CRT-2): the server sent the fingerprint of the chain we hold instead
        of the chain; it must be ours. The chain is then validated as if it had been sent."""
        fingerprint = decode_vector(body, 1, 1, 255)
        if not constant_time_equal(fingerprint, cached_chain_fingerprint(self.config)):
            raise ProtocolError(
                "server sent the fingerprint of a chain we do not hold",
                AlertDescription.illegal_parameter,
            )
        return Certificate(tuple(self.config.cached_server_chain)).encode()

    def _on_server_key_exchange(self, msg: HandshakeMessage) -> None:
        assert self._exchange is not None
        self._exchange.on_server_key_exchange(msg.body, self.keys, self._server_key)
        self.record(msg)

    def _on_certificate_request(self, msg: HandshakeMessage) -> None:
        """RFC 5246 §7.4.4: we answer with our credential if it fits the request and is of the
        type the ServerHello selected for us (RFC 7250 §4.2), otherwise with an empty
        Certificate (the server decides whether to go on, §7.4.6)."""
        request = CertificateRequest.decode(msg.body)
        self.record(msg)
        own = self._own_certificate()
        fits = (
            RequestedCertificateType.ecdsa_sign in request.certificate_types
            and SignatureScheme.ecdsa_secp256r1_sha256 in request.signature_schemes
        )
        if own is None:
            reason = "no client credential configured"
        elif own.certificate_type != self._client_type:
            reason = (
                f"it asked for {_TYPE_NAMES[self._client_type]} "
                f"and ours is {_TYPE_NAMES[own.certificate_type]}"
            )
        elif not fits:
            reason = "ours (ECDSA P-256, SHA-256) does not fit its request"
        else:
            self._requested = own
            return
        logger.debug("empty Certificate sent: %s", reason)
        self._requested = NO_CERTIFICATE
        self._no_certificate_reason = reason

    def alert_context(self, description: int) -> str:
        """RFC 5246 §7.4.6: a server may end the handshake when we sent no certificate; the
        alert it sends does not say why, so we say what we did. Otherwise what the alert
        means at this point of our handshake (`_refusal_context`)."""
        if not self._no_certificate_reason:
            return self._refusal_context(description)
        return (
            "the server asked for a client certificate; none was sent: "
            + self._no_certificate_reason
        )

    def _refusal_context(self, description: int) -> str:
        """Why the server refused us, where its alert and our state tell it (see
        `_PSK_REFUSALS`, `_RAW_KEY_REFUSED`, `_NO_CLIENT_KEY`); "" elsewhere. Never after a
        resumed handshake's Finished: its keys come from the session, not from a credential."""
        config = self.config
        if self.state is ClientState.WAIT_SERVER_HELLO:
            no_key = config.mode is Mode.RAW_PUBLIC_KEY and config.raw_public_key is None
            return _NO_CLIENT_KEY if no_key and description == _UNSUPPORTED else ""
        if self.resumed or self.state not in _AFTER_OUR_FINISHED:
            return ""
        if self.mode is Mode.PSK:
            return _PSK_REFUSALS.get(description, "")
        own = self._requested
        if description != _HANDSHAKE_FAILURE or own is None or own.key is None:
            return ""
        if self._client_type != CertificateType.RawPublicKey:
            return ""  # an X.509 client's refusal: certificate alerts say it themselves
        return _RAW_KEY_REFUSED.format(own.key.spki_sha256.hex())

    def _own_certificate(self) -> OwnCertificate | None:
        config = self.config
        if config.raw_public_key is not None:
            return own_raw_key(config.raw_public_key)
        if config.certificate is not None and self._send_urls:
            return own_x509_urls(config.certificate, config.certificate_urls)
        if config.certificate is not None:
            return own_x509(config.certificate)
        return None

    def _on_server_hello_done(self, msg: HandshakeMessage) -> Outcome:
        """Flight 5: [Certificate], ClientKeyExchange, [CertificateVerify], CCS, Finished."""
        if msg.body:
            raise ProtocolError("ServerHelloDone with a body", AlertDescription.decode_error)
        assert self._exchange is not None
        self.record(msg)
        items: list[FlightItem] = []
        own = self._requested
        if own is not None:
            items.append(self.outgoing(own.msg_type, own.body))
            if own.key is not None:  # not an empty Certificate: the session is bound to it
                self._credential_digest = self.config.credential_digest
        cke_body, premaster = self._exchange.client_key_exchange()
        items.append(self.outgoing(_CLIENT_KEY_EXCHANGE, cke_body))
        keys = self.derive(premaster)  # the session hash ends with the ClientKeyExchange
        if own is not None and own.key is not None:
            # RFC 5246 §7.4.8: the signature covers every handshake message so far.
            signature = own.key.sign_digest(self.keys.transcript.digest())
            verify = CertificateVerify(SignatureScheme.ecdsa_secp256r1_sha256, signature)
            items.append(self.outgoing(HandshakeType.certificate_verify, verify.encode()))
        items += [OutgoingCcs(0), self.finished(epoch=1)]
        return Outcome(Flight(tuple(items)), keys)

    # -- tables -------------------------------------------------------------------------------
    HELLO_TABLE: ClassVar[Table] = {
        (ClientState.WAIT_SERVER_HELLO, HandshakeType.hello_verify_request): Transition(
            _on_hello_verify_request, ClientState.WAIT_SERVER_HELLO
        ),
        (ClientState.WAIT_SERVER_HELLO, HandshakeType.server_hello): Transition(
            _on_server_hello, ClientState.WAIT_SERVER_FLIGHT
        ),
    }


_S = ClientState
_H = HandshakeType
_END: Table = {
    (_S.WAIT_CCS, CHANGE_CIPHER_SPEC): Transition(None, _S.WAIT_FINISHED),
    (_S.WAIT_FINISHED, _H.finished): Transition(ClientHandshake._on_finished, _S.ESTABLISHED),
}
_DONE = Transition(ClientHandshake._on_server_hello_done, _S.WAIT_CCS)

#: PSK (RFC 4279 §2): an optional ServerKeyExchange (a hint, ignored, PSK-3), ServerHelloDone.
PSK_FLOW: Table = {
    (_S.WAIT_SERVER_FLIGHT, _H.server_key_exchange): Transition(
        ClientHandshake._on_server_key_exchange, _S.WAIT_SERVER_HELLO_DONE
    ),
    (_S.WAIT_SERVER_FLIGHT, _H.server_hello_done): _DONE,
    (_S.WAIT_SERVER_HELLO_DONE, _H.server_hello_done): _DONE,
    **_END,
}

#: The abbreviated handshake (RFC 5246 §7.3, RES-1): the server's ChangeCipherSpec and
#: Finished right after its ServerHello; ours follow as the last flight.
RESUMED_FLOW: Table = {
    (_S.WAIT_SERVER_FLIGHT, CHANGE_CIPHER_SPEC): Transition(None, _S.WAIT_FINISHED),
    (_S.WAIT_FINISHED, _H.finished): Transition(
        ClientHandshake._on_finished_then_ours, _S.ESTABLISHED
    ),
}

#: ECDHE_ECDSA (RFC 8422 §2.2): Certificate, ServerKeyExchange, [CertificateRequest], Done.
CERTIFICATE_FLOW: Table = {
    (_S.WAIT_SERVER_FLIGHT, _H.certificate): Transition(
        ClientHandshake._on_server_certificate, _S.WAIT_SERVER_KEY_EXCHANGE
    ),
    (_S.WAIT_SERVER_KEY_EXCHANGE, _H.server_key_exchange): Transition(
        ClientHandshake._on_server_key_exchange, _S.WAIT_CERTIFICATE_REQUEST
    ),
    (_S.WAIT_CERTIFICATE_REQUEST, _H.certificate_request): Transition(
        ClientHandshake._on_certificate_request, _S.WAIT_SERVER_HELLO_DONE
    ),
    (_S.WAIT_CERTIFICATE_REQUEST, _H.server_hello_done): _DONE,
    (_S.WAIT_SERVER_HELLO_DONE, _H.server_hello_done): _DONE,
    **_END,
}
