"""A tinydtls peer for the interop tests: an echo server and a client, PSK only.

Eclipse tinydtls (through PyPI's ``DTLSSocket``, a Cython wrapper bundling it) is driven over
one UDP socket: every datagram that arrives goes to ``handleMessageAddr``, and tinydtls's
retransmission timer (RFC 6347 §4.2.4) is served by calling ``checkRetransmit`` at least every
`TICK` seconds. Every wait is bounded. The tests run this module as a subprocess
(``python -m tests.tinydtls_peer server|client ...`` under `tests.peers.PeerProcess`), so that
a crash or a hang of the C library never takes the test process with it.

tinydtls keys its sessions by IPv6 socket address only. The socket is IPv6 for an IPv6 host
(``::1``) and IPv4 for an IPv4 host (``127.0.0.1``, where the other peers of the tests live);
IPv4 addresses are handed to tinydtls as v4-mapped IPv6 addresses (``::ffff:127.0.0.1``) and
mapped back for the socket.

Output, one line each, flushed:

- server: ``listening on HOST:PORT``; ``handshake complete`` per completed handshake;
  ``received N bytes from HOST:PORT: HEX`` per application datagram (echoed as is);
  ``alert level L description D`` per alert tinydtls reports.
- client: ``handshake complete``; ``echo I: HEX`` per message echoed; ``ok: N echoes`` and exit
  0, or ``failed: REASON`` and exit 1 (a fatal alert, the handshake or an echo timing out).
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.peers import CLIENT_IDENTITY, LOCALHOST, PSK_HEX

#: tinydtls's event for a completed handshake (alert.h, DTLS_EVENT_CONNECTED).
EVENT_CONNECTED = 0x1DE
FATAL = 2
#: Longest wait for the socket before the retransmission timer is looked at again.
TICK = 0.05
MAPPED = "::ffff:"


def _dtls() -> Any:
    import DTLSSocket.dtls

    return DTLSSocket.dtls


def say(line: str) -> None:
    print(line, flush=True)


class Peer:
    """One UDP socket and one tinydtls context with the PSK credentials."""

    def __init__(self, host: str, port: int, identity: bytes, psk: bytes) -> None:
        self.v6 = ":" in host
        self.sock = socket.socket(socket.AF_INET6 if self.v6 else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)
        # DTLS.pskId is a char* into this bytes object: it must stay referenced.
        self.identity = identity
        self.store = {identity: psk}
        self.events: list[tuple[int, int]] = []
        self.received: list[tuple[tuple[str, int], bytes]] = []
        self.dtls = _dtls().DTLS(read=self._read, write=self._write, event=self._event,
                              pskId=self.identity, pskStore=self.store)

    def tiny_address(self, address: tuple[str, int]) -> tuple[str, int]:
        """The socket address `address` as tinydtls's session (IPv6) sees it."""
        return address if self.v6 else (MAPPED + address[0], address[1])

    def _write(self, address: tuple[str, int], data: bytes) -> int:
        host, port = address
        if not self.v6:
            host = host.removeprefix(MAPPED)
        try:
            return self.sock.sendto(data, (host, port))
        except OSError:
            return -1

    def _read(self, address: tuple[str, int], data: bytes) -> int:
        host, port = address
        self.received.append(((host.removeprefix(MAPPED) if not self.v6 else host, port), data))
        return len(data)

    def _event(self, level: int, code: int) -> None:
        self.events.append((level, code))
        if code == EVENT_CONNECTED:
            say("handshake complete")
        elif level:
            say(f"alert level {level} description {code}")

    def fatal_alert(self) -> int | None:
        """The description of the first fatal alert reported, if any."""
        return next((code for level, code in self.events if level == FATAL), None)

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Feed datagrams to tinydtls and serve its timer until `done()` or `timeout` s."""
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self.sock], [], [], min(TICK, remaining))
            if readable:
                try:
                    data, address = self.sock.recvfrom(65535)
                except OSError:  # ICMP unreachable from an earlier send: nothing to read
                    continue
                host, port = self.tiny_address(address[:2])
                self.dtls.handleMessageAddr(host, port, data)
            self.dtls.checkRetransmit()
        return True


def serve(peer: Peer, time_limit: float) -> int:
    """Echo every application datagram until `time_limit` seconds have passed."""
    say(f"listening on {peer.sock.getsockname()[0]}:{peer.sock.getsockname()[1]}")
    session = _dtls().Session

    def echo_pending() -> bool:
        while peer.received:
            (host, port), data = peer.received.pop(0)
            say(f"received {len(data)} bytes from {host}:{port}: {data.hex()}")
            tiny_host, tiny_port = peer.tiny_address((host, port))
            peer.dtls.write(session(tiny_host, tiny_port), data)
        return False

    peer.run_until(echo_pending, time_limit)
    return 0


def client(peer: Peer, host: str, port: int, count: int, timeout: float, resend: float) -> int:
    """Handshake, then send `count` messages and wait for each echo (resent every `resend` s:
    DTLS does not retransmit application data, RFC 6347 §4.1)."""
    deadline = time.monotonic() + timeout
    tiny_host, tiny_port = peer.tiny_address((host, port))
    connection = peer.dtls.connect(tiny_host, tiny_port)  # keep it: freeing it resets the peer
    if connection is None:
        return fail("tinydtls could not start the handshake")

    def connected() -> bool:
        return (0, EVENT_CONNECTED) in peer.events or peer.fatal_alert() is not None

    if not peer.run_until(connected, deadline - time.monotonic()):
        return fail(f"no handshake within {timeout} s")
    if (alert := peer.fatal_alert()) is not None:
        return fail(f"fatal alert {alert} during the handshake")
    for number in range(1, count + 1):
        message = f"tinydtls message {number}".encode()

        def answered(message: bytes = message) -> bool:
            # Only the echo of this message (or an alert) ends the wait: a late duplicate of
            # an earlier echo is dropped, so the message is resent every `resend` s, not back
            # to back.
            echoed = any(data == message for _, data in peer.received)
            peer.received.clear()
            return echoed or peer.fatal_alert() is not None

        peer.received.clear()
        while True:
            if time.monotonic() >= deadline:
                return fail(f"no echo of message {number} within {timeout} s")
            peer.dtls.write(connection, message)
            if peer.run_until(answered, min(resend, max(0.0, deadline - time.monotonic()))):
                break
        if (alert := peer.fatal_alert()) is not None:
            return fail(f"fatal alert {alert} after the handshake")
        say(f"echo {number}: {message.hex()}")
    peer.dtls.close(connection)  # close_notify
    peer.run_until(lambda: False, 0.1)
    say(f"ok: {count} echoes")
    return 0


def fail(reason: str) -> int:
    say(f"failed: {reason}")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tinydtls_peer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--host", default=LOCALHOST,
                        help="server: address to listen on; client: server to connect to")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--identity", default=CLIENT_IDENTITY)
    parser.add_argument("--psk", default=PSK_HEX, help="key in hex")
    parser.add_argument("--count", type=int, default=3, help="client: messages to echo")
    parser.add_argument("--timeout", type=float, default=20.0,
                        help="client: seconds for everything; server: seconds to run")
    parser.add_argument("--resend", type=float, default=1.0,
                        help="client: seconds before an unanswered message is sent again")
    args = parser.parse_args(argv)
    if args.role == "server":
        peer = Peer(args.host, args.port, args.identity.encode(), bytes.fromhex(args.psk))
        return serve(peer, args.timeout)
    local = "::1" if ":" in args.host else LOCALHOST
    peer = Peer(local, 0, args.identity.encode(), bytes.fromhex(args.psk))
    return client(peer, args.host, args.port, args.count, args.timeout, args.resend)


if __name__ == "__main__":
    sys.exit(main())
