"""`iotdtls demo` (and `make demo`): a server and a client on loopback, a real handshake with
cookie exchange over UDP, an echo of a few datagrams, close_notify; every datagram shown. First
with a pre-shared key (TLS_PSK_WITH_AES_128_CCM_8), then with mutual raw public keys
(TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, RFC 7250): the profile's two lightest modes.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import cast

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.credentials import PrivateKey
from iotdtls.endpoint import ServerEndpoint
from iotdtls.events import ConnectionClosed, DataReceived, HandshakeComplete
from iotdtls.trace import describe_datagram

__all__ = ["run_demo"]

DEMO_IDENTITY = b"Client_identity"
DEMO_PSK = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
MESSAGES = (b"hello, constrained world", b"temperature=21.5C", b"bye")
#: The demo gives up after this many seconds (it normally takes a few milliseconds).
DEMO_DEADLINE = 10.0


class _Demo:
    def __init__(self, client: ClientConfig, server: ServerConfig) -> None:
        self.server_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.server_sock.bind(("127.0.0.1", 0))
        self.client_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client_sock.bind(("127.0.0.1", 0))
        self.server_addr = self.server_sock.getsockname()
        self.client = DtlsConnection(client)
        self.server = ServerEndpoint(server)
        self.start = time.monotonic()
        self.wire = {"client": [0, 0], "server": [0, 0]}
        self.echoed: list[bytes] = []

    def say(self, text: str) -> None:
        print(f"{(time.monotonic() - self.start) * 1000:7.2f} ms  {text}")

    def flush(self) -> None:
        """Handle the server's events (the echo queues replies), then send what is queued."""
        self.server_events()
        now = time.monotonic()
        for data in self.client.datagrams_to_send(now):
            self._show("client -> server", data)
            self.client_sock.sendto(data, self.server_addr)
        for data, addr in self.server.datagrams_to_send(now):
            self._show("server -> client", data)
            self.server_sock.sendto(data, addr)

    def server_events(self) -> None:
        while (item := self.server.next_event()) is not None:
            addr, event = item
            if isinstance(event, DataReceived):
                self.server.send(addr, event.data)  # echo
            elif isinstance(event, HandshakeComplete):
                peer = f"{addr[0]}:{addr[1]}"
                self.say(f"server: handshake complete with {peer}, {event.peer}")
            elif isinstance(event, ConnectionClosed):
                self.say(f"server: association closed ({event.error or 'close_notify'})")

    def _show(self, direction: str, data: bytes) -> None:
        side = direction.split()[0]
        self.wire[side][0] += 1
        self.wire[side][1] += len(data)
        self.say(f"{direction} {len(data):4d} B  {describe_datagram(data)}")

    def pump(self, until: float, done: Callable[[], bool]) -> None:
        """Move datagrams and timers until `done()` holds or `until` (monotonic) passes."""
        sel = selectors.DefaultSelector()
        sel.register(self.server_sock, selectors.EVENT_READ, "server")
        sel.register(self.client_sock, selectors.EVENT_READ, "client")
        try:
            while time.monotonic() < until:
                self.flush()
                self.client_events()
                if done():
                    return
                ready = sel.select(timeout=0.05)
                now = time.monotonic()
                for key, _ in ready:
                    sock = cast(socket.socket, key.fileobj)
                    data, addr = sock.recvfrom(65535)
                    if key.data == "server":
                        self.server.receive_datagram(data, addr, now)
                    else:
                        self.client.receive_datagram(data, now)
                if _due(self.client.get_timer(), now):
                    self.client.handle_timer(now)
                if _due(self.server.get_timer(), now):
                    self.server.handle_timer(now)
        finally:
            sel.close()

    def has_echoes(self, count: int) -> bool:
        return len(self.echoed) >= count

    def client_events(self) -> None:
        while (event := self.client.next_event()) is not None:
            if isinstance(event, HandshakeComplete):
                self.say(f"client: handshake complete with {event.peer}, extended master secret")
            elif isinstance(event, DataReceived):
                self.echoed.append(event.data)
                self.say(f"client: received echo {event.data!r}")
            elif isinstance(event, ConnectionClosed):
                self.say(f"client: closed ({event.error or 'close_notify'})")


def _due(timer: float | None, now: float) -> bool:
    return timer is not None and now >= timer


def _run(title: str, client: ClientConfig, server: ServerConfig) -> bool:
    """One association: handshake, echo of `MESSAGES`, close_notify; True when all came back."""
    demo = _Demo(client, server)
    host, port = demo.server_addr
    print(f"{title}, server {host}:{port}\n")
    deadline = time.monotonic() + DEMO_DEADLINE
    demo.client.connect(time.monotonic())
    demo.pump(deadline, lambda: demo.client.state is not ConnectionState.HANDSHAKING)
    if demo.client.state is not ConnectionState.ESTABLISHED:
        print(f"\nhandshake failed: {demo.client.error}")
        return False
    hs = {side: list(counts) for side, counts in demo.wire.items()}
    for count, message in enumerate(MESSAGES, 1):
        demo.say(f"client: send {message!r}")
        demo.client.send(message)
        demo.pump(deadline, partial(demo.has_echoes, count))
    demo.say("client: close (close_notify)")
    demo.client.close()
    demo.pump(deadline, lambda: not demo.server.connections)
    ok = demo.echoed == list(MESSAGES)
    print(
        f"\nhandshake: client sent {hs['client'][1]} bytes in {hs['client'][0]} datagrams, "
        f"server {hs['server'][1]} bytes in {hs['server'][0]} datagrams"
    )
    print("echo:", "all datagrams came back" if ok else f"mismatch: {demo.echoed!r}")
    demo.server_sock.close()
    demo.client_sock.close()
    return ok


def run_demo() -> int:
    """Run both demos; exit status 0 when every handshake and echo succeeded."""
    psk = _run(
        "iotdtls demo 1/2: PSK handshake with cookie exchange on loopback, identity "
        f"{DEMO_IDENTITY.decode()!r},\ncipher suite TLS_PSK_WITH_AES_128_CCM_8 (RFC 6655)",
        ClientConfig(psk_identity=DEMO_IDENTITY, psk=DEMO_PSK),
        ServerConfig(psk_store={DEMO_IDENTITY: DEMO_PSK}),
    )
    server_key, client_key = PrivateKey.generate(), PrivateKey.generate()
    print(
        "\n" + "-" * 78 + "\n\nkeys for demo 2 (fresh P-256 key pairs, each side provisioned "
        "with the other's public key):\n"
        f"  server key sha256:{server_key.spki_sha256.hex()}\n"
        f"  client key sha256:{client_key.spki_sha256.hex()}\n"
    )
    rpk = _run(
        "iotdtls demo 2/2: mutual raw public keys (RFC 7250) with cookie exchange on loopback,"
        "\ncipher suite TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 (RFC 7251), P-256",
        ClientConfig(server_public_keys=[server_key.spki], raw_public_key=client_key),
        ServerConfig(raw_public_key=server_key, client_public_keys=[client_key.spki]),
    )
    return 0 if psk and rpk else 1
