"""Session resumption details that mutation testing found untested (docs/mutation.md): how a
resumed association ends (close_notify keeps the session, a fatal alert ends it, RFC 5246
§7.2.1, §7.2.2), a server that resumes with another suite (RFC 5246 §7.4.1.3), why a client
does not offer a saved session and why a server does not resume one (RES-1), what the server
logs when an application's session store or server_name_lookup fails (RFC 6066 §3), and that
a handshake without a session leaves the store alone (RES-3)."""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import time
from dataclasses import replace
from typing import Any

import pytest

import iotdtls.connection
import iotdtls.handshake.client
from iotdtls.config import ClientConfig, Mode, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.credentials import own_credential_digest, psk_digest
from iotdtls.crypto import NullProtector
from iotdtls.endpoint import ServerEndpoint, _CountedStore
from iotdtls.errors import AlertDescription, AlertLevel, AlertSent
from iotdtls.events import ConnectionClosed
from iotdtls.handshake.negotiation import client_offer, offerable_session, resumption_refusal
from iotdtls.identity import (
    CertificateIdentity,
    PeerIdentity,
    PskIdentity,
    RawPublicKeyIdentity,
    UnauthenticatedPeer,
)
from iotdtls.messages import DTLS_1_2, Alert, ClientHello, Extension, HandshakeType, ServerHello
from iotdtls.record import ContentType, RecordLayer
from iotdtls.sessions import MemorySessionStore, SessionState
from tests import pki
from tests.fake_server import FakeServer, drive, honest_flights
from tests.memory_link import (
    IDENTITY,
    KEY,
    MOVED_ADDR,
    LegacyClient,
    MemoryLink,
    established,
    events_of,
    handshake_record,
    legacy_server,
    make_link,
    next_link,
    record_layer,
)
from tests.pubkey_support import client_key, failure, server_key, stranger_key, x509_pki
from tests.test_resumption import LINKS, assert_resumed, full_handshake

PSK_SUITE = 0xC0A8
ECDHE_SUITE = 0xC0AE
SESSION_ID = bytes(range(1, 33))
MASTER = bytes(range(48))


def session(suite: int, mode: Mode, peer: PeerIdentity, server_name: str = "") -> SessionState:
    """A saved session; a PSK one made with `KEY` (on both sides), any other made without a
    credential of ours (the client was not asked for one)."""
    digest = psk_digest(KEY) if mode is Mode.PSK else b""
    return SessionState(SESSION_ID, suite, mode, MASTER, peer, 0, server_name, digest)


def iotdtls_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("iotdtls") and r.levelno >= logging.WARNING
    ]


# -- how a resumed association ends --------------------------------------------------------------


@pytest.mark.req("RES-1", "ERR-1")
@pytest.mark.parametrize("closer", ["client", "server"])
@pytest.mark.parametrize("mode", LINKS)
def test_a_resumed_association_closes_cleanly_and_stays_resumable(mode: str, closer: str) -> None:
    """RFC 5246 §7.2.1: close_notify is no error; the resumed association sends it under the
    alerts of the session's mode (ERR-1), and the session resumes once more afterwards."""
    first = full_handshake(LINKS[mode])
    second = next_link(first)
    second.handshake()
    assert_resumed(second)
    if closer == "client":
        second.client.close()
    else:
        second.server.close(MOVED_ADDR)
    second.step()
    assert second.client.state is ConnectionState.CLOSED
    assert MOVED_ADDR not in second.server.connections
    for side in ("client", "server"):
        (closed,) = events_of(second, side, ConnectionClosed)
        assert closed.error is None  # a plain close on both sides
    assert second.client.session is not None
    third = next_link(second, address=("192.0.2.77", 7), session=second.client.session)
    third.handshake()
    assert_resumed(third)


def end_with_a_fatal_alert(link: MemoryLink) -> None:
    """Make the server end `link`'s association with unexpected_message: a handshake message
    under the new epoch after the handshake."""
    late = handshake_record(record_layer(link.client), HandshakeType.certificate, 9, b"", 1)
    link.server.receive_datagram(late, link.address, link.now)
    link.step()


@pytest.mark.req("RES-1")
def test_a_fatal_alert_ends_a_resumed_session() -> None:
    """RFC 5246 §7.2.2 also holds for an association that resumed the session: the server
    removes it from its store and the client forgets it."""
    first = full_handshake()
    saved = first.client.session
    assert saved is not None
    second = next_link(first)
    second.handshake()
    assert_resumed(second)
    end_with_a_fatal_alert(second)
    (closed,) = events_of(second, "server", ConnectionClosed)
    assert isinstance(closed.error, AlertSent)
    assert closed.error.alert is AlertDescription.unexpected_message
    assert second.client.session is None
    store = second.server.sessions
    assert store is not None and store.get(saved.session_id, second.now) is None
    third = next_link(second, address=("192.0.2.78", 8), session=saved)
    third.handshake()
    assert_resumed(third, False)


@pytest.mark.req("RES-1", "REC-3")
@pytest.mark.parametrize("forgery", ["plaintext fatal alert", "malformed ChangeCipherSpec"])
def test_a_stranger_offering_a_seen_session_id_cannot_evict_it(forgery: str) -> None:
    """A session_id travels in clear in the hellos. A stranger offering it (from its own
    address, without the master secret) gets the server's abbreviated flight; a plaintext
    fatal alert, or a record the server answers with one (a malformed ChangeCipherSpec: a
    decode_error), then ends that attempt,
    but the session stays cached: only a peer that sent a record under the session's keys
    can make the server forget it (RFC 5246 §7.2.2, RFC 6347 §4.1.2.7)."""
    first = full_handshake()
    saved = first.client.session
    assert saved is not None
    stranger = next_link(
        first,
        session=replace(saved, master_secret=bytes(48)),
        address=("198.51.100.66", 5555),
        fate=lambda d, i, data: "drop" if d == "client" and i >= 3 else "deliver",
    )
    stranger.client.connect(stranger.now)
    stranger.run(until=stranger.now + 0.5, stop=lambda lk: lk.sent["server"] >= 2)
    server_conn = stranger.server_conn
    assert server_conn is not None and server_conn.resumed
    forger = RecordLayer()
    forger.install_write_epoch(0, NullProtector(), next_sequence_number=50)
    if forgery == "plaintext fatal alert":
        payload = Alert(AlertLevel.FATAL, AlertDescription.handshake_failure).encode()
        record = forger.seal(ContentType.alert, payload, 0)
    else:
        record = forger.seal(ContentType.change_cipher_spec, b"\x02", 0)
    stranger.server.receive_datagram(record, stranger.address, stranger.now)
    assert server_conn.state is ConnectionState.CLOSED
    store = stranger.server.sessions
    assert store is not None and store.get(saved.session_id, stranger.now) is not None
    victim = next_link(stranger, address=("192.0.2.78", 8), session=saved)
    victim.handshake()
    assert_resumed(victim)


@pytest.mark.req("RES-1")
@pytest.mark.parametrize("case", ["damaged secret", "not offered", "alert before ServerHello"])
def test_a_failed_handshake_says_whether_the_session_offered_was_resumed(case: str) -> None:
    """`DtlsError.resuming`: only a handshake the server resumed (RFC 5246 §7.3) can have
    failed because of the session offered; an application (the CLI's --session-file) keeps a
    saved session otherwise."""
    first = full_handshake()
    saved = first.client.session
    assert saved is not None
    if case == "damaged secret":  # the server resumes; its Finished does not authenticate
        second = next_link(first, session=replace(saved, master_secret=bytes(48)))
        second.handshake()
    elif case == "not offered":  # made with another key of ours: a full handshake, refused
        other = replace(first.client_config, psk=bytes(16))
        second = next_link(first, client_config=other)
        second.handshake()
    else:
        second = next_link(first)
        second.client.connect(second.now)
        forger = RecordLayer()
        payload = Alert(AlertLevel.FATAL, AlertDescription.handshake_failure).encode()
        second.client.receive_datagram(forger.seal(ContentType.alert, payload, 0), second.now)
    error = second.client.error
    assert error is not None
    assert error.resuming is (case == "damaged secret"), error


# -- a server that resumes with another suite ----------------------------------------------------


@pytest.mark.req("RES-1")
def test_client_refuses_a_resumption_with_another_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 5246 §7.4.1.3: a resumed session keeps its cipher suite. A client offering two
    suites (made to, here: each mode offers one) gets a ServerHello that echoes its PSK
    session's id with the ECDHE suite: illegal_parameter."""
    real_offer = client_offer

    def two_suites(config: ClientConfig) -> tuple[tuple[int, ...], tuple[Extension, ...]]:
        _, extensions = real_offer(config)
        return (PSK_SUITE, ECDHE_SUITE), extensions

    monkeypatch.setattr(iotdtls.handshake.client, "client_offer", two_suites)

    def other_suite(fake: FakeServer) -> ServerHello:
        assert fake.hello is not None
        return fake.server_hello(session_id=fake.hello.session_id, cipher_suite=ECDHE_SUITE)

    saved = session(PSK_SUITE, Mode.PSK, PskIdentity(IDENTITY))
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY, handshake_timeout=20.0)
    client = DtlsConnection(config, session=saved)
    ex = drive(client, honest_flights(hello=other_suite))
    assert ex.fake.hello is not None and ex.fake.hello.session_id == SESSION_ID
    assert ex.alerts == [(2, AlertDescription.illegal_parameter)]
    assert isinstance(client.error, AlertSent)
    assert client.error.alert is AlertDescription.illegal_parameter
    assert client.error.reason == "server resumed the session with another cipher suite"


# -- why a client does not offer a saved session -------------------------------------------------

PSK_CLIENT = ClientConfig(psk_identity=IDENTITY, psk=KEY)
RPK_CLIENT = ClientConfig(server_public_keys=[server_key().spki])
CERTIFIED_PEER = CertificateIdentity("localhost", (b"\x30\x03leaf",))
OWN_KEY_CLIENT = ClientConfig(server_public_keys=[server_key().spki], raw_public_key=client_key())
#: A raw-key session in which we authenticated with `client_key`.
OWN_KEY_SESSION = replace(
    session(ECDHE_SUITE, Mode.RAW_PUBLIC_KEY, RawPublicKeyIdentity(server_key().spki)),
    credential_digest=own_credential_digest(client_key().spki),
)


@pytest.mark.req("RES-1")
@pytest.mark.parametrize(
    ("config", "saved", "reason"),
    [
        (PSK_CLIENT, session(PSK_SUITE, Mode.PSK, PskIdentity(IDENTITY)), None),
        (
            PSK_CLIENT,
            session(PSK_SUITE, Mode.PSK, PskIdentity(b"another device")),
            "the session is with another server identity",
        ),
        (
            PSK_CLIENT,
            session(ECDHE_SUITE, Mode.RAW_PUBLIC_KEY, RawPublicKeyIdentity(server_key().spki)),
            "the session's suite or mode is not the configured one",
        ),
        (
            RPK_CLIENT,
            session(ECDHE_SUITE, Mode.RAW_PUBLIC_KEY, RawPublicKeyIdentity(server_key().spki)),
            None,
        ),
        (
            RPK_CLIENT,
            session(ECDHE_SUITE, Mode.RAW_PUBLIC_KEY, RawPublicKeyIdentity(stranger_key().spki)),
            "the session is with another server identity",
        ),
        # The same suite in another mode: the mode alone refuses it.
        (
            RPK_CLIENT,
            session(ECDHE_SUITE, Mode.X509, CERTIFIED_PEER),
            "the session's suite or mode is not the configured one",
        ),
        # Bytes from elsewhere: a raw-key session whose peer is no raw key.
        (
            RPK_CLIENT,
            session(ECDHE_SUITE, Mode.RAW_PUBLIC_KEY, CERTIFIED_PEER),
            "the session is with another server identity",
        ),
        (
            RPK_CLIENT,
            session(ECDHE_SUITE, Mode.RAW_PUBLIC_KEY, UnauthenticatedPeer()),
            "the session is with another server identity",
        ),
        # Our own credential changed: the PSK, or the raw key the session was made with.
        (
            ClientConfig(psk_identity=IDENTITY, psk=bytes(16)),
            session(PSK_SUITE, Mode.PSK, PskIdentity(IDENTITY)),
            "the session was made with another credential of ours",
        ),
        (
            PSK_CLIENT,
            replace(session(PSK_SUITE, Mode.PSK, PskIdentity(IDENTITY)), credential_digest=b""),
            "the session was made with another credential of ours",
        ),
        (OWN_KEY_CLIENT, OWN_KEY_SESSION, None),
        (
            replace(OWN_KEY_CLIENT, raw_public_key=stranger_key()),
            OWN_KEY_SESSION,
            "the session was made with another credential of ours",
        ),
        (
            RPK_CLIENT,
            OWN_KEY_SESSION,
            "the session was made with another credential of ours",
        ),
        # Made without our key (the server did not ask): any key of ours today.
        (
            OWN_KEY_CLIENT,
            session(ECDHE_SUITE, Mode.RAW_PUBLIC_KEY, RawPublicKeyIdentity(server_key().spki)),
            None,
        ),
    ],
    ids=[
        "psk",
        "psk-other-identity",
        "rpk-to-psk",
        "rpk",
        "rpk-unpinned",
        "x509-to-rpk",
        "rpk-certified-peer",
        "rpk-no-peer",
        "psk-new-key",
        "psk-no-digest",
        "own-key",
        "own-key-new",
        "own-key-dropped",
        "own-key-not-asked",
    ],
)
def test_why_a_client_does_not_offer_a_session(
    config: ClientConfig, saved: SessionState, reason: str | None
) -> None:
    assert offerable_session(saved, config) == reason


def x509_session(peer_name: str, leaf: pki.Issued | None = None) -> SessionState:
    """An X.509 session whose server showed `leaf` (the PKI's server leaf by default); an IP
    address sends no server_name (RFC 6066 §3)."""
    p = x509_pki()
    chain = pki.chain_der(leaf or p.server, p.ca)
    sni = "" if peer_name[0].isdigit() else peer_name
    return session(ECDHE_SUITE, Mode.X509, CertificateIdentity(peer_name, chain), sni)


def ip_leaf() -> pki.Issued:
    """A server leaf for two IP addresses (iPAddress subjectAltNames)."""
    return pki.server_leaf(x509_pki().ca, san=pki.ip("192.0.2.1", "192.0.2.2"))


@pytest.mark.req("RES-1", "CRT-1", "CRT-3")
@pytest.mark.parametrize(
    ("change", "peer_name", "leaf", "reason"),
    [
        ({}, "localhost", None, None),
        (
            {"trust_anchors": [pki.root("another root").der]},
            "localhost",
            None,
            "the server's chain is no longer accepted (server chain leads to no trusted CA",
        ),
        (
            {"wall_clock": (pki.NOW + 2 * pki.YEAR).timestamp},
            "localhost",
            None,
            "the server's chain is no longer accepted (server certificate 0 is not valid",
        ),
        ({"server_name": "192.0.2.1"}, "192.0.2.1", ip_leaf, None),
        # Neither address sends a server_name: the name the chain was checked for tells.
        ({"server_name": "192.0.2.2"}, "192.0.2.1", ip_leaf, "the session was made for another"),
        (
            {"server_name": "192.0.2.3"},
            "192.0.2.1",
            ip_leaf,
            "the server's chain is no longer accepted (",
        ),
    ],
    ids=["x509", "other-anchors", "expired-now", "ip", "other-ip", "ip-not-in-chain"],
)
def test_a_client_offers_an_x509_session_only_if_the_chain_is_still_accepted(
    change: dict[str, Any], peer_name: str, leaf: Any, reason: str | None
) -> None:
    """The saved chain is checked as a full handshake would check it now: the current trust
    anchors, clock and server name (the server does the same with a client's chain)."""
    settings: dict[str, Any] = {
        "trust_anchors": [x509_pki().root.der],
        "server_name": "localhost",
        "wall_clock": pki.NOW.timestamp,
        **change,
    }
    saved = x509_session(peer_name, None if leaf is None else leaf())
    why = offerable_session(saved, ClientConfig(**settings))
    if reason is None:
        assert why is None
    else:
        assert why is not None and why.startswith(reason)


@pytest.mark.req("RES-1", "CRT-1")
def test_a_certificate_session_whose_server_showed_no_chain_is_not_offered() -> None:
    """A saved certificate-mode session holding no certificate identity for its server (a
    session file written by hand, or for another mode) is not offered: there is no chain
    to check today."""
    saved = session(ECDHE_SUITE, Mode.X509, RawPublicKeyIdentity(server_key().spki), "localhost")
    config = ClientConfig(
        trust_anchors=[x509_pki().root.der], server_name="localhost", wall_clock=pki.NOW.timestamp
    )
    assert offerable_session(saved, config) == "the session is with another server identity"


@pytest.mark.req("RES-1", "CRT-3")
def test_a_saved_chain_is_checked_at_utc_time_in_any_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The clock gives POSIX time; the chain's validity is in UTC. A chain expired an hour ago
    is refused on a machine ten hours behind UTC too (read as local time, the clock would
    say nine hours before the expiry)."""
    expiry = x509_pki().server.cert.not_valid_after_utc
    config = ClientConfig(
        trust_anchors=[x509_pki().root.der],
        server_name="localhost",
        wall_clock=(expiry + datetime.timedelta(hours=1)).timestamp,
    )
    monkeypatch.setenv("TZ", "Etc/GMT+10")  # POSIX sign: ten hours behind UTC
    time.tzset()
    try:
        why = offerable_session(x509_session("localhost", None), config)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert why is not None and why.startswith("the server's chain is no longer accepted")


# -- why a server does not resume a session ------------------------------------------------------


def hello_of(config: ClientConfig) -> ClientHello:
    """The ClientHello a client with `config` sends when it offers the session."""
    suites, extensions = client_offer(config)
    return ClientHello(DTLS_1_2, bytes(32), SESSION_ID, b"", suites, (0,), extensions)


def failing_lookup(identity: bytes) -> bytes | None:
    raise RuntimeError("key database offline")


def wrong_type_lookup(identity: bytes) -> Any:
    return "not bytes"  # an application's mistake


def certificate_server() -> ServerConfig:
    """A server with a raw key and a certificate, client authentication required by neither."""
    p = x509_pki()
    return ServerConfig(raw_public_key=server_key(), certificates=[p.certified(p.server)])


def x509_client() -> ClientConfig:
    p = x509_pki()
    return ClientConfig(
        trust_anchors=[p.root.der], server_name="localhost", wall_clock=pki.NOW.timestamp
    )


PSK_SESSION = session(PSK_SUITE, Mode.PSK, PskIdentity(IDENTITY))
RPK_SESSION = session(ECDHE_SUITE, Mode.RAW_PUBLIC_KEY, UnauthenticatedPeer())


@pytest.mark.req("RES-1")
@pytest.mark.parametrize(
    ("saved", "client", "server", "reason"),
    [
        (PSK_SESSION, lambda: PSK_CLIENT, lambda: ServerConfig(psk_store={IDENTITY: KEY}), None),
        (
            PSK_SESSION,
            lambda: PSK_CLIENT,
            lambda: ServerConfig(psk_store={b"someone else": KEY}),
            "the PSK identity is no longer known",
        ),
        # The application's lookup fails: no resumption (the full handshake reports it).
        (
            PSK_SESSION,
            lambda: PSK_CLIENT,
            lambda: ServerConfig(psk_lookup=failing_lookup),
            "the PSK identity is no longer known",
        ),
        (RPK_SESSION, lambda: RPK_CLIENT, certificate_server, None),
        # The same suite, but this client now offers only X.509: another mode.
        (
            RPK_SESSION,
            x509_client,
            certificate_server,
            "the configuration now picks another suite or mode",
        ),
        # The operator gave the identity a new key: the old one's sessions end with it.
        (
            PSK_SESSION,
            lambda: PSK_CLIENT,
            lambda: ServerConfig(psk_store={IDENTITY: bytes(16)}),
            "the PSK of this identity has changed",
        ),
        # A PSK session that does not say which key made it (bytes from elsewhere).
        (
            replace(PSK_SESSION, credential_digest=b""),
            lambda: PSK_CLIENT,
            lambda: ServerConfig(psk_store={IDENTITY: KEY}),
            "the PSK of this identity has changed",
        ),
        # A lookup that returns no bytes: refused, the full handshake reports it.
        (
            PSK_SESSION,
            lambda: PSK_CLIENT,
            lambda: ServerConfig(psk_lookup=wrong_type_lookup),
            "the PSK identity is no longer known",
        ),
    ],
    ids=[
        "psk",
        "psk-forgotten",
        "psk-lookup-fails",
        "rpk",
        "rpk-to-x509",
        "psk-rotated",
        "psk-no-digest",
        "psk-lookup-not-bytes",
    ],
)
def test_why_a_server_does_not_resume_a_session(
    saved: SessionState, client: Any, server: Any, reason: str | None
) -> None:
    assert resumption_refusal(saved, hello_of(client()), server(), "", 0) == reason


@pytest.mark.req("RES-1", "EXT-2")
def test_the_server_logs_why_it_does_not_resume(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = full_handshake(client={"server_name": "iot.example"})
    monkeypatch.setattr(iotdtls.handshake.client, "offerable_session", lambda *a: None)
    config = ClientConfig(psk_identity=IDENTITY, psk=KEY, server_name="other.example")
    second = next_link(first, client_config=config)
    caplog.set_level(logging.DEBUG, logger="iotdtls")
    second.handshake()
    assert_resumed(second, False)
    assert "session not resumed: the client names another server" in [
        r.getMessage() for r in caplog.records
    ]


# -- an application's session store that fails ---------------------------------------------------


class RecordingStore(MemorySessionStore):
    """A `MemorySessionStore` that records every call, and raises for `failing` ones."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.failing = ""

    def _note(self, operation: str, session_id: bytes) -> None:
        self.calls.append((operation, session_id))
        if operation == self.failing:
            raise RuntimeError("store offline at 10.0.0.7 (secret detail)")

    def get(self, session_id: bytes, now: float) -> SessionState | None:
        self._note("get", session_id)
        return super().get(session_id, now)

    def put(self, state: SessionState, now: float) -> None:
        self._note("put", state.session_id)
        super().put(state, now)

    def remove(self, session_id: bytes) -> None:
        self._note("remove", session_id)
        super().remove(session_id)


def store_link(
    store: RecordingStore, client: ClientConfig | None = None, **server: Any
) -> MemoryLink:
    config = ServerConfig(**{"psk_store": {IDENTITY: KEY}, "cookie_exchange": True, **server})
    return MemoryLink(
        client or ClientConfig(psk_identity=IDENTITY, psk=KEY),
        config,
        endpoint=ServerEndpoint(config, session_store=store),
    )


@pytest.mark.req("RES-1", "SEC-1")
@pytest.mark.parametrize("failing", ["get", "put", "remove"])
def test_a_failing_session_store_is_logged_by_exception_type(
    failing: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An application store that raises costs a resumption, never the association; the
    warning names the exception's type, not its text (which may carry secrets), and the
    endpoint counts it (`ServerEndpoint.session_store_errors`)."""
    caplog.set_level(logging.WARNING, logger="iotdtls")
    store = RecordingStore()
    store.failing = "put" if failing == "put" else ""
    first = store_link(store)
    first.handshake()
    assert established(first)
    if failing == "put":
        assert len(store) == 0
    elif failing == "get":
        store.failing = "get"
        second = next_link(first)
        second.handshake()
        assert_resumed(second, False)
    else:  # a fatal alert ends the session: the store is told to forget it
        store.failing = "remove"
        end_with_a_fatal_alert(first)
        assert store.calls[-1] == ("remove", store.calls[0][1])
    assert iotdtls_warnings(caplog) == [f"session store {failing} raised RuntimeError"]
    assert first.server.session_store_errors == 1  # counted for the server's counters


class FullDiskStore(MemorySessionStore):
    """A store on a full disk: every put raises ENOSPC, its text naming the session's file."""

    def put(self, state: SessionState, now: float) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", f"/s/{state.session_id.hex()}")


@pytest.mark.req("RES-1", "SEC-1")
def test_a_store_failing_at_every_handshake_is_logged_once_then_summed_up_a_minute_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk fails every handshake's put: one line names it (the errno's name, never
    the text, which names the session's file), the later failures one summary line after a
    minute at most; each is counted."""
    caplog.set_level(logging.WARNING, logger="iotdtls")
    link = store_link(FullDiskStore())
    link.handshake()
    for later in (10.0, 10.0, 10.0, 30.0, 10.0, 50.0):  # at 10, 20, 30, 60, 70 and 120 s
        link = next_link(link, later=later)
        link.handshake()
        assert established(link)
    assert iotdtls_warnings(caplog) == [  # each summary once a minute has passed, to the second
        "session store put raised OSError ENOSPC",
        "session store: 4 more failures (the latest: put raised OSError ENOSPC)",
        "session store: 2 more failures (the latest: put raised OSError ENOSPC)",
    ]
    assert link.server.session_store_errors == 7
    assert "/s/" not in caplog.text


class BytesStore(MemorySessionStore):
    """A store whose get returns what it saved, not read back (SessionState.from_bytes
    forgotten): the mistake its user makes most easily."""

    def get(self, session_id: bytes, now: float) -> Any:
        state = super().get(session_id, now)
        return None if state is None else state.to_bytes()


@pytest.mark.req("RES-1", "SEC-1")
def test_a_session_store_returning_the_wrong_type_is_logged_and_a_miss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A get returning saved bytes crashed the datagram callback (AttributeError, no alert,
    the client waiting for its timeout); it is now a miss like a store that raises: a full
    handshake, and a warning naming the type returned, never the value (key material)."""
    caplog.set_level(logging.WARNING, logger="iotdtls")
    config = ServerConfig(psk_store={IDENTITY: KEY}, cookie_exchange=True)
    store = BytesStore()
    first = MemoryLink(
        ClientConfig(psk_identity=IDENTITY, psk=KEY),
        config,
        endpoint=ServerEndpoint(config, session_store=store),
    )
    first.handshake()
    assert established(first)
    second = next_link(first)
    second.handshake()
    assert established(second)
    assert_resumed(second, False)
    assert iotdtls_warnings(caplog) == [
        "session store get returned bytes, not a SessionState or None"
    ]


@pytest.mark.req("RES-1")
def test_every_failed_get_of_an_application_store_adds_to_the_count() -> None:
    """`session_store_errors` counts each get that raised and each that returned neither a
    SessionState nor None, not only whether one did."""

    class Misused(MemorySessionStore):
        answers = iter([RuntimeError("offline"), b"saved", RuntimeError("offline"), b"saved"])

        def get(self, session_id: bytes, now: float) -> Any:
            answer = next(self.answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

    counted = _CountedStore(Misused())
    for expected in (1, 2, 3, 4):
        with contextlib.suppress(RuntimeError):
            counted.get(b"id", 0.0)
        assert counted.errors == expected


@pytest.mark.req("RES-1")
def test_a_server_without_a_cache_ignores_an_offered_session_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="iotdtls")
    saved = full_handshake().client.session
    assert saved is not None
    config = ServerConfig(psk_store={IDENTITY: KEY}, cookie_exchange=True, session_cache_size=0)
    link = MemoryLink(ClientConfig(psk_identity=IDENTITY, psk=KEY), config, session=saved)
    link.handshake()
    assert_resumed(link, False)
    assert link.server.sessions is None
    assert iotdtls_warnings(caplog) == []


@pytest.mark.req("RES-3")
def test_a_handshake_without_a_session_leaves_the_store_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No session_id without the extended master secret (RES-3): nothing to cache when such a
    handshake completes, nothing to remove when one fails."""
    caplog.set_level(logging.WARNING, logger="iotdtls")
    store = RecordingStore()
    with monkeypatch.context() as patch:
        legacy_server(patch)
        client = ClientConfig(psk_identity=IDENTITY, psk=KEY, require_extended_master_secret=False)
        link = store_link(store, client, require_extended_master_secret=False)
        link.handshake()
    assert established(link) and link.client.session is None
    monkeypatch.setattr(iotdtls.connection, "ClientHandshake", LegacyClient)
    failed = store_link(store)
    failed.handshake()
    assert failure(failed, "server").alert is AlertDescription.handshake_failure
    assert store.calls == [] and len(store) == 0
    assert iotdtls_warnings(caplog) == []


# -- server_name_lookup that fails ---------------------------------------------------------------


@pytest.mark.req("EXT-2", "SEC-1")
@pytest.mark.parametrize(
    ("lookup", "warning", "reason"),
    [
        (
            lambda name: 1 / 0,
            "server_name_lookup raised ZeroDivisionError",
            "server_name_lookup failed",
        ),
        (
            lambda name: {"psk_store": {}},
            "server_name_lookup returned dict",
            "server_name_lookup returned no ServerConfig",
        ),
    ],
    ids=["raises", "not-config"],
)
def test_a_broken_lookup_is_logged_and_named(
    lookup: Any, warning: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="iotdtls")
    link = make_link(client={"server_name": "a.example"}, server={"server_name_lookup": lookup})
    link.handshake()
    sent = failure(link, "server")
    assert (sent.alert, sent.reason) == (AlertDescription.internal_error, reason)
    assert iotdtls_warnings(caplog) == [warning]
