"""`iotdtls demo` (`make demo`) in this process: both associations over real UDP on loopback,
every datagram shown, the echo checked, the handshake's bytes summed from the datagrams shown,
and a failed demo reported with exit status 1. (test_cli.py runs it as a subprocess.)"""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest

from iotdtls import demo
from iotdtls.config import ClientConfig, RetransmitPolicy, ServerConfig
from iotdtls.endpoint import ServerEndpoint

DATAGRAM = re.compile(r"^ *[\d.]+ ms  (client|server) -> (?:client|server) +(\d+) B  (.*)$")


def shown_datagrams(text: str) -> list[tuple[str, int, str]]:
    return [
        (m.group(1), int(m.group(2)), m.group(3))
        for line in text.splitlines()
        if (m := DATAGRAM.match(line))
    ]


def test_the_demo_runs_both_modes_and_sums_what_it_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert demo.run_demo() == 0
    out = capsys.readouterr().out
    first, second = out.split("demo 2/2", 1)
    assert first.startswith("iotdtls demo 1/2: PSK handshake with cookie exchange")
    for part, peer in ((first, "psk identity b'Client_identity'"), (second, "raw public key")):
        assert f"client: handshake complete with {peer}" in part
        assert "server: handshake complete with 127.0.0.1:" in part
        for message in demo.MESSAGES:
            assert f"client: received echo {message!r}" in part
        assert "client: closed (close_notify)" in part
        assert "server: association closed (close_notify)" in part
        assert "echo: all datagrams came back" in part
        datagrams = shown_datagrams(part)
        # The handshake's figures are the datagrams shown before the first application data.
        handshake = []
        for entry in datagrams:
            if "ApplicationData" in entry[2]:
                break
            handshake.append(entry)
        sums = {side: [sum(1 for s, _, _ in handshake if s == side),
                       sum(size for s, size, _ in handshake if s == side)]
                for side in ("client", "server")}
        assert (
            f"handshake: client sent {sums['client'][1]} bytes in {sums['client'][0]} datagrams, "
            f"server {sums['server'][1]} bytes in {sums['server'][0]} datagrams"
        ) in part
    assert "hello_verify_request#0" in first and "hello_verify_request#0" in second
    assert "certificate_verify#4" in second and "certificate_verify" not in first
    times = [float(t) for t in re.findall(r"^ *([\d.]+) ms  ", out, re.MULTILINE)]
    # Milliseconds since each association's start: from 0, never back within one, in time.
    assert times and all(0 <= t < demo.DEMO_DEADLINE * 1000 for t in times)
    for part in (first, second):
        shown = [float(t) for t in re.findall(r"^ *([\d.]+) ms  ", part, re.MULTILINE)]
        assert shown == sorted(shown)
    keys = re.findall(r"^  (server|client) key sha256:([0-9a-f]{64})$", out, re.MULTILINE)
    assert [side for side, _ in keys] == ["server", "client"]
    assert f"raw public key sha256:{keys[0][1]}" in second  # the client names the server's


def test_a_failed_handshake_is_reported_and_fails_the_demo(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = ClientConfig(psk_identity=demo.DEMO_IDENTITY, psk=bytes(16), handshake_timeout=2.0)
    ok = demo._run("wrong key", wrong, ServerConfig(psk_store={demo.DEMO_IDENTITY: demo.DEMO_PSK}))
    assert not ok
    out = capsys.readouterr().out
    assert out.startswith("wrong key, server 127.0.0.1:")
    assert "\nhandshake failed: " in out and "decrypt_error" in out
    outcomes = iter([True, False])
    monkeypatch.setattr(demo, "_run", lambda *args: next(outcomes))
    assert demo.run_demo() == 1


def test_missing_echoes_are_reported(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "DEMO_DEADLINE", 1.0)
    monkeypatch.setattr(ServerEndpoint, "send", lambda self, address, data: None)  # no echo
    config = ServerConfig(psk_store={demo.DEMO_IDENTITY: demo.DEMO_PSK})
    client = ClientConfig(psk_identity=demo.DEMO_IDENTITY, psk=demo.DEMO_PSK)
    assert not demo._run("silent echo", client, config)
    assert "\necho: mismatch: []\n" in capsys.readouterr().out


class Lossy:
    """A demo socket that loses the datagrams it is told to (by their order, from 0)."""

    def __init__(self, sock: socket.socket, lost: set[int]) -> None:
        self._sock, self._lost, self._sent = sock, lost, 0

    def sendto(self, data: bytes, address: Any) -> int:
        index, self._sent = self._sent, self._sent + 1
        return len(data) if index in self._lost else self._sock.sendto(data, address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@pytest.mark.parametrize(
    ("side", "quick", "slow"),
    [("client", "client", "server"), ("server", "server", "client")],
)
def test_the_demo_recovers_a_lost_datagram_by_the_senders_timer(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    side: str, quick: str, slow: str,
) -> None:
    """The client's first ClientHello, or the server's first flight after the cookie, is
    lost: only the sender's retransmission timer (0.2 s here; the other side's 30 s) brings
    the handshake through within the demo's deadline (3 s here). RFC 6347 §4.2.4."""
    monkeypatch.setattr(demo, "DEMO_DEADLINE", 3.0)
    real_init = demo._Demo.__init__

    def lossy_init(self: Any, client: ClientConfig, server: ServerConfig) -> None:
        real_init(self, client, server)
        if side == "client":
            self.client_sock = Lossy(self.client_sock, {0})  # ClientHello
        else:
            self.server_sock = Lossy(self.server_sock, {1})  # ServerHello...ServerHelloDone

    monkeypatch.setattr(demo._Demo, "__init__", lossy_init)
    timers = {quick: RetransmitPolicy(0.2, 1.0), slow: RetransmitPolicy(30.0, 60.0)}
    client = ClientConfig(psk_identity=demo.DEMO_IDENTITY, psk=demo.DEMO_PSK,
                          retransmit=timers["client"])
    server = ServerConfig(psk_store={demo.DEMO_IDENTITY: demo.DEMO_PSK},
                          retransmit=timers["server"])
    assert demo._run("lossy", client, server)
    assert "echo: all datagrams came back" in capsys.readouterr().out
