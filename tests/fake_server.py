"""A scripted PSK server built from the message codecs (`iotdtls.messages`), for tests of a
client facing a hostile or broken server.

`FakeServer` is not a server implementation: a test decides what each flight holds. It reads
what the client sent (`take`), numbers and hashes the messages it is told to send (`message`),
derives the epoch-1 keys from the client's ClientKeyExchange (`derive`), and seals records in
any epoch (`record`, `protected`). `honest_flights` is the script of a correct server (RFC 6347
§4.2.4: HelloVerifyRequest; ServerHello, ServerHelloDone; ChangeCipherSpec, Finished); tests
start from it and change one thing. `drive` runs a client `DtlsConnection` against a script in
memory with a fake clock, up to the client's handshake deadline and never past it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from iotdtls._buffer import Reader
from iotdtls.config import ClientConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.crypto import NullProtector, psk_premaster_secret
from iotdtls.crypto.suites import SUITES
from iotdtls.errors import ProtocolError
from iotdtls.events import Event
from iotdtls.handshake.keyschedule import KeySchedule
from iotdtls.messages import (
    DTLS_1_0,
    DTLS_1_2,
    ClientHello,
    ClientKeyExchangePsk,
    ExtendedMasterSecret,
    Extension,
    Finished,
    HandshakeHeader,
    HandshakeType,
    HelloVerifyRequest,
    RenegotiationInfo,
    ServerHello,
    find_extension,
)
from iotdtls.record import ContentType, RecordLayer
from tests.memory_link import IDENTITY, KEY

__all__ = ["Exchange", "FakeServer", "Received", "drive", "honest_flights", "psk_client"]

PSK_SUITE = 0xC0A8
CCS = -1  # marker of a ChangeCipherSpec in `Received.messages`


@dataclass
class Received:
    """What one client datagram carried, as the fake server reads it."""

    messages: list[tuple[int, int, bytes]] = field(default_factory=list)  # type, seq, body
    alerts: list[tuple[int, int]] = field(default_factory=list)  # level, description
    epochs: list[int] = field(default_factory=list)

    def types(self) -> list[int]:
        return [t for t, _, _ in self.messages]


class FakeServer:
    """Building blocks of a PSK server's flights; the test decides what goes out."""

    def __init__(self, key: bytes = KEY) -> None:
        self.key = key
        self.records = RecordLayer()
        self.records.install_read_epoch(0, NullProtector(), replay_check=False)
        self.keys = KeySchedule(None)
        self.keys.server_random = bytes(range(100, 132))
        self.send_seq = 0
        self.hello: ClientHello | None = None
        self.hellos: list[ClientHello] = []
        self.client_finished_ok: bool | None = None
        self._seen: set[int] = set()

    # -- reading the client -----------------------------------------------------------------
    def take(self, datagram: bytes) -> Received:
        """Parse a client datagram (whole messages; epoch-1 records once keys exist)."""
        got = Received()
        for record in self.records.open_records(datagram):
            got.epochs.append(record.epoch)
            if record.content_type is ContentType.change_cipher_spec:
                got.messages.append((CCS, -1, record.payload))
            elif record.content_type is ContentType.alert:
                got.alerts.append((record.payload[0], record.payload[1]))
            elif record.content_type is ContentType.handshake:
                reader = Reader(record.payload)
                while not reader.eof():
                    header = HandshakeHeader.decode(reader)
                    body = reader.pull_bytes(header.fragment_length)
                    got.messages.append((header.msg_type, header.message_seq, body))
                    self._note(header.msg_type, header.message_seq, body)
        return got

    def _note(self, msg_type: int, seq: int, body: bytes) -> None:
        """Act on a client message the first time it comes (keys before the next record)."""
        if seq in self._seen:
            return
        self._seen.add(seq)
        if msg_type == HandshakeType.client_hello:
            self.hello = ClientHello.decode(body)
            self.hellos.append(self.hello)
            self.keys.client_random = self.hello.random
            self.send_seq = seq  # our numbering follows the client's (RFC 6347 §4.2.2)
            self.keys.transcript.reset()
            self.keys.transcript.add(msg_type, seq, body)
        elif msg_type == HandshakeType.client_key_exchange:
            self.keys.transcript.add(msg_type, seq, body)
            self.derive(ClientKeyExchangePsk.decode(body).identity)
        elif msg_type == HandshakeType.finished:
            expected = self.keys.verify_data(from_client=True)
            self.client_finished_ok = Finished.decode(body).verify_data == expected
            self.keys.transcript.add(msg_type, seq, body)

    def derive(self, identity: bytes) -> None:
        """Epoch-1 keys from the PSK (whatever the identity: this server knows one key)."""
        keys = self.keys.derive(psk_premaster_secret(self.key), SUITES[PSK_SUITE], False)
        self.records.install_read_epoch(1, keys.read)
        self.records.install_write_epoch(1, keys.write)
        self.records.install_write_epoch(0, NullProtector(), next_sequence_number=100)

    # -- writing ------------------------------------------------------------------------------
    def message(self, msg_type: int, body: bytes, *, hashed: bool = True) -> bytes:
        """One whole handshake message (header + body) with our next message_seq."""
        seq = self.send_seq
        self.send_seq += 1
        if msg_type == HandshakeType.server_hello:
            self._note_server_hello(body)
        if hashed:
            self.keys.transcript.add(msg_type, seq, body)
        header = HandshakeHeader(msg_type, len(body), seq, 0, len(body)).encode()
        return header + body

    def _note_server_hello(self, body: bytes) -> None:
        """The key schedule follows what our ServerHello says about the extended master
        secret (RFC 7627), whatever a test put in it."""
        try:
            hello = ServerHello.decode(body)
        except ProtocolError:
            return
        ems = find_extension(hello.extensions, ExtendedMasterSecret) is not None
        self.keys.extended_master_secret = ems

    def record(self, content_type: int, payload: bytes, epoch: int = 0) -> bytes:
        version = DTLS_1_0 if epoch == 0 and content_type == ContentType.handshake else DTLS_1_2
        return self.records.seal(content_type, payload, epoch, version=version)

    def hello_verify_request(self, cookie: bytes = b"\xc0" * 16, version: int = DTLS_1_0) -> bytes:
        body = HelloVerifyRequest(version, cookie).encode()
        return self.record(ContentType.handshake, self.message(3, body, hashed=False))

    def server_hello(self, **changes: Any) -> ServerHello:
        """The ServerHello an honest server sends to the last ClientHello, with `changes`."""
        assert self.hello is not None
        exts: list[Extension] = [RenegotiationInfo(b"")]
        if find_extension(self.hello.extensions, ExtendedMasterSecret) is not None:
            exts.append(ExtendedMasterSecret())
        hello = ServerHello(
            server_version=DTLS_1_2,
            random=self.keys.server_random,
            session_id=b"",
            cipher_suite=PSK_SUITE,
            compression_method=0,
            extensions=tuple(exts),
        )
        return replace(hello, **changes)

    def finished(self) -> bytes:
        """Our ChangeCipherSpec (epoch 0) and Finished (epoch 1), one datagram."""
        verify = self.keys.verify_data(from_client=False)
        fin = self.message(HandshakeType.finished, Finished(verify).encode())
        return self.record(ContentType.change_cipher_spec, b"\x01") + self.record(
            ContentType.handshake, fin, epoch=1
        )

    def protected(self, content_type: int, payload: bytes) -> bytes:
        return self.record(content_type, payload, epoch=1)


Script = Callable[[FakeServer, Received], list[bytes]]


def honest_flights(
    hello: Callable[[FakeServer], ServerHello] | None = None,
    extra: Callable[[FakeServer], list[bytes]] | None = None,
    finished: Callable[[FakeServer], list[bytes]] | None = None,
) -> Script:
    """A correct server's answers, with the ServerHello, the messages before ServerHelloDone
    (`extra`, whole records) and the final flight open to change."""

    def script(fake: FakeServer, got: Received) -> list[bytes]:
        types = got.types()
        if HandshakeType.client_hello in types:
            if not fake.hello or not fake.hello.cookie:
                return [fake.hello_verify_request()]
            sh = hello(fake) if hello else fake.server_hello()
            out = fake.record(ContentType.handshake, fake.message(2, sh.encode()))
            middle = extra(fake) if extra else []
            done = fake.record(ContentType.handshake, fake.message(14, b""))
            return [out, *middle, done]
        if HandshakeType.finished in types:
            return finished(fake) if finished else [fake.finished()]
        return []

    return script


def psk_client(**settings: Any) -> DtlsConnection:
    settings = {"handshake_timeout": 20.0, **settings}
    return DtlsConnection(ClientConfig(psk_identity=IDENTITY, psk=KEY, **settings))


@dataclass
class Exchange:
    """What `drive` saw: the client's datagrams as read by the fake server, its events, the
    time the client stopped handshaking."""

    client: DtlsConnection
    fake: FakeServer
    received: list[Received] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    ended_at: float = 0.0

    @property
    def alerts(self) -> list[tuple[int, int]]:
        return [a for r in self.received for a in r.alerts]


def drive(client: DtlsConnection, script: Script, fake: FakeServer | None = None) -> Exchange:
    """Run `client` against `script` until it stops handshaking; time jumps to its timers and
    never beyond its handshake deadline (a client still handshaking then is a hang)."""
    fake = fake or FakeServer()
    ex = Exchange(client, fake)
    now = 0.0
    client.connect(now)
    deadline = client.config.handshake_timeout
    while client.state is ConnectionState.HANDSHAKING and now <= deadline:
        outgoing = client.datagrams_to_send(now)
        for datagram in outgoing:
            got = fake.take(datagram)
            ex.received.append(got)
            for answer in script(fake, got):
                client.receive_datagram(answer, now)
        while (event := client.next_event()) is not None:
            ex.events.append(event)
        if not outgoing and client.state is ConnectionState.HANDSHAKING:
            timer = client.get_timer()
            assert timer is not None, "a handshaking client always has a timer"
            now = max(now, timer)
            client.handle_timer(now)
    for datagram in client.datagrams_to_send(now):
        ex.received.append(fake.take(datagram))
    while (event := client.next_event()) is not None:
        ex.events.append(event)
    assert client.state is not ConnectionState.HANDSHAKING, "the client hangs"
    assert now <= deadline
    ex.ended_at = now
    return ex
