"""Legacy peers without the extended master secret (RFC 7627), by choice only (RES-3).

`require_extended_master_secret=False` (`--allow-no-ems` on `iotdtls server` and `iotdtls
client`) lets a peer without the extension through; the extension is still offered and used
with every peer that has it (RFC 7627 §5.3). The log line of such a handshake says the session
has no extended master secret and will never be resumed: the client keeps no such session
(`session` is None, `--session-file` is not written), though the legacy server gives a
session_id. Off by default: the legacy peer is refused with handshake_failure. The legacy
peer here is GnuTLS with `%NO_SESSION_HASH`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import iotdtls.connection
from iotdtls import sync
from iotdtls.errors import AlertDescription
from iotdtls.events import HandshakeComplete
from iotdtls.messages import (
    ClientHello,
    ExtendedMasterSecret,
    HandshakeType,
    ServerHello,
    find_extension,
)
from iotdtls.proxy import LossyProxy
from tests import peers
from tests.interop_support import CLI, CREDENTIALS, cli_server, client_config
from tests.memory_link import (
    LegacyClient,
    established,
    events_of,
    legacy_server,
    make_link,
    plain_handshake,
    wire_from,
)
from tests.peers import (
    GNUTLS_CLIENT_HANDSHAKE_DONE,
    GNUTLS_PRIO_PSK,
    GNUTLS_SERVER_READY,
    LOCALHOST,
    NetNamespace,
    PeerProcess,
    free_udp_port,
    gnutls_psk_client,
    gnutls_psk_server,
    require_peer,
    write_psk_file,
)
from tests.test_negotiation import assert_link_failed

netns = peers.netns
LEGACY_PRIORITY = GNUTLS_PRIO_PSK + ":%NO_SESSION_HASH"
NO_EMS_NOTE = (
    "without the extended master secret (RFC 7627): this session will never be resumed"
)


def server_session_ids(datagrams: list[bytes]) -> list[bytes]:
    return [
        ServerHello.decode(body).session_id
        for d in datagrams
        for h, body in plain_handshake(d)
        if h.msg_type == HandshakeType.server_hello
    ]


def offered_ems(datagrams: list[bytes]) -> list[bool]:
    return [
        find_extension(ClientHello.decode(body).extensions, ExtendedMasterSecret) is not None
        for d in datagrams
        for h, body in plain_handshake(d)
        if h.msg_type == HandshakeType.client_hello
    ]


# -- in memory ----------------------------------------------------------------------------------


@pytest.mark.req("RES-3")
def test_a_client_allowing_legacy_servers_still_offers_and_uses_ems() -> None:
    link = make_link(client={"require_extended_master_secret": False})
    link.handshake()
    assert established(link)
    assert offered_ems(wire_from(link, "client")) == [True, True]
    (done,) = events_of(link, "client", HandshakeComplete)
    assert done.extended_master_secret is True


@pytest.mark.req("RES-3", "ERR-1")
@pytest.mark.parametrize("allow", [False, True])
def test_a_client_meets_a_legacy_server(monkeypatch: pytest.MonkeyPatch, allow: bool) -> None:
    legacy_server(monkeypatch)
    link = make_link(
        client={"require_extended_master_secret": not allow},
        server={"require_extended_master_secret": False},
    )
    link.handshake()
    if not allow:  # RFC 7627 §5.3: abort the handshake
        assert_link_failed(link, "client", AlertDescription.handshake_failure)
        return
    assert established(link)
    for side in ("client", "server"):
        (done,) = events_of(link, side, HandshakeComplete)
        assert done.extended_master_secret is False


@pytest.mark.req("RES-3")
def test_a_server_allowing_legacy_clients_uses_ems_with_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    modern = make_link(server={"require_extended_master_secret": False})
    modern.handshake()
    assert events_of(modern, "server", HandshakeComplete)[0].extended_master_secret is True
    monkeypatch.setattr(iotdtls.connection, "ClientHandshake", LegacyClient)
    legacy = make_link(
        client={"require_extended_master_secret": False},
        server={"require_extended_master_secret": False},
    )
    legacy.handshake()
    assert events_of(legacy, "server", HandshakeComplete)[0].extended_master_secret is False


# -- the command line against GnuTLS without the extension -------------------------------------


@pytest.mark.interop
@pytest.mark.req("RES-3", "ERR-1")
@pytest.mark.parametrize("allow", [True, False])
def test_cli_server_and_a_legacy_gnutls_client(allow: bool) -> None:
    require_peer("gnutls-cli")
    port = free_udp_port()
    flags = ["--allow-no-ems"] if allow else []
    with cli_server(port, *CREDENTIALS, *flags) as server, \
            gnutls_psk_client(port, priority=LEGACY_PRIORITY, time_limit=30.0) as peer:
        if not allow:
            server.wait_for_output(r"handshake failed: .*handshake_failure", 10.0)
            assert peer.wait(10.0) not in (0, None)
            server.stop()
            # gnutls-cli repeats its ClientHello after the alert: the repeat gets the alert
            # again, not a second handshake counted and logged as failed (probe BU F4).
            assert server.output.count("handshake failed:") == 1, server.output
            assert "handshakes 0 completed (0 resumed), 1 failed" in server.output
            return
        peer.wait_for_output(GNUTLS_CLIENT_HANDSHAKE_DONE, 10.0)
        line = server.wait_for_output(r"handshake complete: peer .*", 5.0).group(0)
        assert line.endswith(f"psk identity b'Client_identity' {NO_EMS_NOTE}"), line
        peer.write_line("legacy ping")
        peer.wait_for_output("legacy ping", 5.0)
        peer.close_stdin()
        assert peer.wait(5.0) == 0


@contextmanager
def legacy_gnutls_server(ns: NetNamespace, tmp_path: Path) -> Iterator[int]:
    require_peer("gnutls-serv")
    port = free_udp_port()
    psk_file = write_psk_file(tmp_path / "psk.passwd")
    with gnutls_psk_server(
        port, psk_file, priority=LEGACY_PRIORITY, netns=ns, time_limit=30.0
    ) as peer:
        peer.wait_for_output(GNUTLS_SERVER_READY, 5.0)
        yield port


@pytest.mark.interop
@pytest.mark.req("RES-3", "ERR-1")
@pytest.mark.parametrize("allow", [True, False])
def test_cli_client_and_a_legacy_gnutls_server(
    netns: NetNamespace, tmp_path: Path, allow: bool
) -> None:
    with legacy_gnutls_server(netns, tmp_path) as port:
        argv = [*CLI, "client", f"{LOCALHOST}:{port}", *CREDENTIALS, "--timeout", "5"]
        argv += ["--allow-no-ems"] if allow else []
        with PeerProcess(netns.wrap(argv), name="iotdtls-client", time_limit=30.0) as client:
            if not allow:
                assert client.wait(10.0) == 1
                assert client.output.strip().splitlines() == [
                    "iotdtls: sent fatal alert handshake_failure: server refused the "
                    "extended master secret"
                ], client.output
                return
            client.write_line("legacy hello")
            client.wait_for_output(r"(?m)^legacy hello$", 10.0)
            client.close_stdin()
            assert client.wait(10.0) == 0, client.output
    warning, echoed = client.output.splitlines()
    assert warning.endswith(f"iotdtls.aio: handshake complete {NO_EMS_NOTE}"), warning
    assert echoed == "legacy hello"


@pytest.mark.interop
@pytest.mark.req("RES-3")
def test_a_session_without_ems_is_not_kept_for_resumption(
    netns: NetNamespace, tmp_path: Path
) -> None:
    """The legacy GnuTLS server gives a session_id, yet the client offers no session to save:
    without the extended master secret it must never be resumed (RFC 7627 §5.3)."""
    config = client_config(require_extended_master_secret=False)
    with legacy_gnutls_server(netns, tmp_path) as port, \
            LossyProxy((LOCALHOST, port), seed=0, lifetime=60.0,
                       socket_factory=lambda family: netns.socket(family)) as proxy:
        client = sync.connect(*proxy.address, config, sock=netns.socket())
        try:
            assert client.session is None
        finally:
            client.close()
    from_server = [d.data for d in proxy.snapshot() if d.direction == "server"]
    assert [len(i) for i in server_session_ids(from_server)] == [32]  # not vacuous


@pytest.mark.interop
@pytest.mark.req("RES-3")
def test_cli_client_writes_no_session_file_without_ems(
    netns: NetNamespace, tmp_path: Path
) -> None:
    """`--session-file` with `--allow-no-ems`: a session without the extended master secret
    is not saved, so every run makes a full handshake with the legacy server."""
    session = tmp_path / "session"
    with legacy_gnutls_server(netns, tmp_path) as port:
        argv = [*CLI, "client", f"{LOCALHOST}:{port}", *CREDENTIALS, "--timeout", "5",
                "--allow-no-ems", "--session-file", str(session)]
        for run in ("first", "second"):
            with PeerProcess(netns.wrap(argv), name="iotdtls-client", time_limit=30.0) as client:
                client.write_line(f"{run} run")
                client.wait_for_output(rf"(?m)^{run} run$", 10.0)
                client.close_stdin()
                assert client.wait(10.0) == 0, client.output
            assert not session.exists(), run
