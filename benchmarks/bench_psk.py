"""iotdtls next to Mbed TLS (python-mbedtls, in-process): PSK handshake, records, wire size.

Run with ``make bench`` (or ``.venv/bin/python benchmarks/bench_psk.py [--runs N]``). Both stacks
run in one process over an in-memory transport, so the figures compare the protocol code and
not the network:

(a) a full TLS_PSK_WITH_AES_128_CCM_8 handshake with the cookie exchange (RFC 6347 §4.2.1),
    client and server, median and mean over N runs; target: iotdtls <= 1.0x Mbed TLS
    (issue 9; issue 3 had asked for 2x). Two ways: *new associations* (every handshake makes
    each side's association object, as the target was first measured: iotdtls a
    `DtlsConnection` each side and a `ServerEndpoint`; Mbed TLS a python-mbedtls
    `ClientContext` and `ServerContext`, each an `mbedtls_ssl_context` that
    `mbedtls_ssl_setup` allocates) and *contexts reset* (Mbed TLS's two contexts made once and
    reset by `mbedtls_ssl_session_reset` before each handshake, as Mbed TLS's serial example
    server serves one client after another; iotdtls, which has no reset, one `ServerEndpoint`
    for every handshake, a client address each). The second shows the handshake without Mbed
    TLS's association set-up, a large share of its first figure;
(b) one application record of 64 bytes and of 1 KiB sealed by one side and opened by the
    other (RFC 6347 §4.1.2, RFC 6655 §3): iotdtls through `DtlsConnection.send` /
    `receive_datagram` and through `RecordLayer.seal` / `open_datagram` directly, Mbed TLS
    through `write` / `receive_from_network` / `read`; target: iotdtls <= 1.5x Mbed TLS;
(c) the bytes and datagrams each side puts on the wire for the handshake (handshake and
    ChangeCipherSpec records, UDP payload), next to the reference figures of tinydtls (client,
    283 bytes) and OpenSSL (server, 246 bytes);
(d) the interpreted work of one handshake, counted: bytecodes and Python-level calls of each
    side (a figure that does not move with the machine's speed, quicker to take than
    callgrind's and split by function).

When iotdtls misses a target, the script also lists the functions with the most bytecodes and
profiles the iotdtls side with cProfile, printing the functions where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.connection import ConnectionState, DtlsConnection
from iotdtls.crypto import Ccm8Protector
from iotdtls.endpoint import ServerEndpoint
from iotdtls.events import DataReceived
from iotdtls.record import ContentType, RecordLayer, split_datagram

if TYPE_CHECKING:
    from _typeshed import TraceFunction

IDENTITY = b"Client_identity"
KEY = bytes.fromhex("0102030405060708090a0b0c0d0e0f10")
CLIENT_ADDR = ("192.0.2.1", 40000)
MBEDTLS_SUITE = "TLS-PSK-WITH-AES-128-CCM-8"
HANDSHAKE_TARGET = 1.0
RECORD_TARGET = 1.5
#: Reference handshake sizes (UDP payload of handshake and ChangeCipherSpec records).
REFERENCE = {"tinydtls client": 283, "OpenSSL server": 246}
RECORD_SIZES = (64, 1024)
NOW = 0.0  # the sans-I/O core takes the time as an argument; a fixed clock is enough here


# -- wire accounting --------------------------------------------------------------------------


@dataclass
class Wire:
    """What one side put on the wire: UDP payloads, and records by content type."""

    payloads: list[bytes] = field(default_factory=list)
    records: Counter[str] = field(default_factory=Counter)

    def add(self, datagram: bytes) -> None:
        self.payloads.append(datagram)
        records, _ = split_datagram(datagram)
        for header, _payload in records:
            try:
                self.records[ContentType(header.content_type).name] += 1
            except ValueError:
                self.records[f"type {header.content_type}"] += 1

    @property
    def datagrams(self) -> list[int]:
        """The size of each datagram, in order."""
        return [len(payload) for payload in self.payloads]

    @property
    def total(self) -> int:
        return sum(self.datagrams)


@dataclass
class HandshakeWire:
    client: Wire = field(default_factory=Wire)
    server: Wire = field(default_factory=Wire)


# -- iotdtls ----------------------------------------------------------------------------------

IOT_CLIENT = ClientConfig(psk_identity=IDENTITY, psk=KEY)
IOT_SERVER = ServerConfig(psk_store={IDENTITY: KEY})


def iotdtls_handshake(wire: HandshakeWire | None = None) -> tuple[DtlsConnection, DtlsConnection]:
    """A client `DtlsConnection` and a `ServerEndpoint` (stateless cookie exchange first,
    RFC 6347 §4.2.1) shuttle datagrams in memory until both sides are established."""
    client = DtlsConnection(IOT_CLIENT)
    return client, shuttle(client, ServerEndpoint(IOT_SERVER), wire)


class KeptServer:
    """One `ServerEndpoint` for every handshake, as a running server keeps it: each handshake
    comes from a client address of its own (its association stays, like a fleet's)."""

    def __init__(self) -> None:
        self.endpoint = ServerEndpoint(IOT_SERVER)
        self.handshakes = 0

    def handshake(self, wire: HandshakeWire | None = None) -> DtlsConnection:
        self.handshakes += 1
        host, port = divmod(self.handshakes, 60000)
        address = (f"192.0.2.{host % 250 + 1}", 1024 + port)
        return shuttle(DtlsConnection(IOT_CLIENT), self.endpoint, wire, address=address)


def shuttle(
    client: DtlsConnection,
    server: ServerEndpoint,
    wire: HandshakeWire | None = None,
    turn: Callable[[str], object] | None = None,
    address: tuple[str, int] = CLIENT_ADDR,
) -> DtlsConnection:
    """Connect `client` and pass datagrams between it (at `address`) and `server` until both
    sides are established; return the server's connection. `turn("client")` and
    `turn("server")`, if given, are called before each side's work (to tell the sides apart
    when counting)."""
    if turn is not None:
        turn("client")
    client.connect(NOW)
    for _ in range(20):
        outgoing = client.datagrams_to_send(NOW)
        if turn is not None:
            turn("server")
        for datagram in outgoing:
            if wire is not None:
                wire.client.add(datagram)
            server.receive_datagram(datagram, address, NOW)
        replies = server.datagrams_to_send(NOW)
        while server.next_event() is not None:
            pass
        if turn is not None:
            turn("client")
        for datagram, _addr in replies:
            if wire is not None:
                wire.server.add(datagram)
            client.receive_datagram(datagram, NOW)
        while client.next_event() is not None:
            pass
        peer = server.connections.get(address)
        if (
            client.state is ConnectionState.ESTABLISHED
            and peer is not None
            and peer.state is ConnectionState.ESTABLISHED
        ):
            return peer
    raise RuntimeError("iotdtls handshake did not complete in memory")


def iotdtls_record_pair(size: int) -> Callable[[], None]:
    """One record through the connections: `send` on the client, `receive_datagram` on the
    server, the DataReceived event taken."""
    client, server = iotdtls_handshake()
    data = bytes(size)

    def one() -> None:
        client.send(data)
        for datagram in client.datagrams_to_send(NOW):
            server.receive_datagram(datagram, NOW)
        event = server.next_event()
        assert isinstance(event, DataReceived) and len(event.data) == size

    return one


def iotdtls_record_layer(size: int) -> Callable[[], None]:
    """One record through two bare `RecordLayer`s: `seal` and `open_datagram` (epoch 1)."""
    key, iv = bytes(range(16)), bytes(4)
    writer, reader = RecordLayer(), RecordLayer()
    writer.install_write_epoch(1, Ccm8Protector(key, iv))
    reader.install_read_epoch(1, Ccm8Protector(key, iv))
    data = bytes(size)

    def one() -> None:
        record = writer.seal(ContentType.application_data, data, 1)
        (opened,) = reader.open_datagram(record)
        assert len(opened.payload) == size

    return one


# -- Mbed TLS (python-mbedtls) ----------------------------------------------------------------


def mbedtls_module() -> Any:
    """python-mbedtls's `tls` module (imported late: the script states what is missing)."""
    try:
        from mbedtls import tls
    except ImportError:
        sys.exit("python-mbedtls is missing: .venv/bin/pip install python-mbedtls")
    return tls


class Mbed:
    """Mbed TLS's in-memory endpoints (``wrap_buffers``), the handshake stepped by hand.

    python-mbedtls runs one handshake step per ``do_handshake()`` and raises ``WantWriteError``
    when a step has written to the outgoing buffer, so each non-empty drain after a step is one
    flush, that is one datagram. The server raises ``HelloVerifyRequest`` once it has written
    the cookie request; the exchange continues on a new endpoint of the same `ServerContext`
    (which holds the cookie key), as peers.md describes."""

    def __init__(self) -> None:
        tls = self.tls = mbedtls_module()
        self.client_conf = tls.DTLSConfiguration(
            ciphers=[MBEDTLS_SUITE], pre_shared_key=(IDENTITY.decode(), KEY),
            validate_certificates=False,
        )
        self.server_conf = tls.DTLSConfiguration(
            ciphers=[MBEDTLS_SUITE], pre_shared_key_store={IDENTITY.decode(): KEY},
            validate_certificates=False,
        )
        self.cookie_info = repr(CLIENT_ADDR).encode()
        #: The name the client checks in the server certificate (certificate modes only).
        self.server_hostname: str | None = None
        self._kept: tuple[Any, Any] | None = None

    def contexts(self, kept: bool) -> tuple[Any, Any]:
        """A client and a server context (each an `mbedtls_ssl_context`): new ones, or the
        pair made on the first call and kept (each `wrap_buffers` resets its context with
        `mbedtls_ssl_session_reset`)."""
        if not kept:
            tls = self.tls
            return tls.ClientContext(self.client_conf), tls.ServerContext(self.server_conf)
        if self._kept is None:
            self._kept = self.contexts(kept=False)
        return self._kept

    @staticmethod
    def drain(endpoint: Any) -> bytes:
        out = b""
        while chunk := endpoint.peek_outgoing(65536):
            endpoint.consume_outgoing(len(chunk))
            out += chunk
        return out

    def step(self, endpoint: Any, sent: list[bytes]) -> bool:
        """Run handshake steps until it needs input (False) or is over (True); collect the
        datagrams written on the way in `sent`."""
        tls = self.tls
        while endpoint._handshake_state is not tls.HandshakeStep.HANDSHAKE_OVER:
            try:
                endpoint.do_handshake()
            except tls.WantReadError:
                return False
            except tls.WantWriteError:
                pass
            if datagram := self.drain(endpoint):
                sent.append(datagram)
        return True

    def new_server(self, context: Any) -> Any:
        server = context.wrap_buffers()
        server.setcookieparam(self.cookie_info)
        return server

    def handshake(
        self, wire: HandshakeWire | None = None, *, kept: bool = False
    ) -> tuple[Any, Any]:
        """Client and server with the cookie exchange, in memory, until both are done; on new
        contexts, or (`kept=True`) on the pair kept from earlier calls, reset."""
        tls = self.tls
        client_context, context = self.contexts(kept)
        client = client_context.wrap_buffers(self.server_hostname)
        server = self.new_server(context)
        client_done = server_done = False
        for _ in range(20):
            to_server: list[bytes] = []
            to_client: list[bytes] = []
            client_done = self.step(client, to_server) or client_done
            for datagram in to_server:
                server.receive_from_network(datagram)
            try:
                server_done = self.step(server, to_client)
            except tls.HelloVerifyRequest:
                if rest := self.drain(server):  # the HelloVerifyRequest, if not taken yet
                    to_client.append(rest)
                server = self.new_server(context)
            for datagram in to_client:
                client.receive_from_network(datagram)
            if wire is not None:
                for datagram in to_server:
                    wire.client.add(datagram)
                for datagram in to_client:
                    wire.server.add(datagram)
            if client_done and server_done:
                return client, server
        raise RuntimeError("Mbed TLS handshake did not complete in memory")

    def record_pair(self, size: int) -> Callable[[], None]:
        """One record: `write` on the client, `receive_from_network` and `read` on the server."""
        client, server = self.handshake()
        data = bytes(size)

        def one() -> None:
            client.write(data)
            server.receive_from_network(self.drain(client))
            assert len(server.read(size + 1)) == size

        return one


# -- measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    median: float
    mean: float
    samples: tuple[float, ...] = ()

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        return cls(statistics.median(samples), statistics.fmean(samples), tuple(samples))

    def ratio_to(self, other: Timing) -> float:
        """Median of the per-round ratios of two interleaved timings (`time_interleaved`):
        each round's two calls ran side by side, so a drift of the machine's speed cancels."""
        return statistics.median(a / b for a, b in zip(self.samples, other.samples, strict=True))


def time_each(fn: Callable[[], object], runs: int) -> Timing:
    """Seconds per call, each call timed on its own (for calls of a millisecond or more)."""
    fn()  # warm up: imports, caches
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing.of(samples)


def time_interleaved(
    fns: Sequence[Callable[[], object]], rounds: int, calls: int = 1
) -> list[Timing]:
    """Seconds per call of each function, the functions taken in turns: each round runs
    `calls` calls of each (one for calls of a millisecond or more, a batch for calls of a few
    microseconds), timed together, in an order shuffled per round. On a shared machine whose
    speed drifts every candidate sees the same drift, and `Timing.ratio_to` compares the
    samples of the same round."""
    for fn in fns:
        for _ in range(min(calls, 100)):
            fn()  # warm up: imports, caches
    samples: list[list[float]] = [[] for _ in fns]
    order = list(range(len(fns)))
    shuffler = random.Random(0)  # not for secrets: the same order for every run
    for _ in range(rounds):
        # A fresh order each round: a call right after another stack's finds colder caches,
        # so no candidate may always follow the same one.
        shuffler.shuffle(order)
        for index in order:
            fn = fns[index]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[index].append((time.perf_counter() - start) / calls)
    return [Timing.of(taken) for taken in samples]


def fmt(seconds: float) -> str:
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.3f} ms"
    return f"{seconds * 1e6:8.2f} us"


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target:g}x: {'met' if ratio <= target else 'MISSED'}"


def hot_spots(fn: Callable[[], object], calls: int, title: str, limit: int = 14) -> None:
    """Profile `calls` calls of `fn` and print where the time goes (own time, then total)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    profiler.disable()
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order)
        stats.print_stats(limit)
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        print(f"\n  profile of {title}, {calls} calls, by {order}:")
        for line in lines[start : start + limit + 1]:
            print("   ", line)


@dataclass
class InterpretedWork:
    """Bytecodes the interpreter ran and Python-level calls it made, per side and per
    function: a count, so it does not move with the machine's speed (unlike a timing) and
    names the Python functions that callgrind sees only as the interpreter's loop."""

    bytecodes: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    by_function: Counter[CodeType] = field(default_factory=Counter)
    side: str = "client"

    def turn(self, side: str) -> None:
        self.side = side

    @staticmethod
    def counted(code: CodeType) -> bool:
        """Everything but the frames of this script (the harness)."""
        return code.co_filename != __file__

    def enter(self, code: CodeType) -> bool:
        """Count a Python-level call into `code`; False (nothing counted) for the harness."""
        if not self.counted(code):
            return False
        self.calls[self.side] += 1
        return True

    def bytecode(self, code: CodeType) -> None:
        self.bytecodes[self.side] += 1
        self.by_function[code] += 1

    def trace(self, frame: FrameType, event: str, arg: Any) -> TraceFunction | None:
        """`sys.settrace` hook (Python 3.11): a call event per Python frame, then its opcode
        events."""
        code = frame.f_code
        if not self.enter(code):
            return None

        def opcodes(frame: FrameType, event: str, arg: Any) -> TraceFunction:
            if event == "opcode":
                self.bytecode(code)
            return opcodes

        frame.f_trace = opcodes
        frame.f_trace_opcodes = True
        return opcodes


def interpreted_work() -> InterpretedWork:
    """Count one full handshake (cookie exchange included) after two to warm the caches:
    through `sys.settrace` on Python 3.11, `sys.monitoring` (PEP 669) from 3.12 on, where
    opcode events set from a call event are not reliably delivered."""
    iotdtls_handshake()
    iotdtls_handshake()
    work = InterpretedWork()
    client, server = DtlsConnection(IOT_CLIENT), ServerEndpoint(IOT_SERVER)
    if sys.version_info >= (3, 12):
        monitoring = sys.monitoring
        tool, events = monitoring.PROFILER_ID, monitoring.events

        def started(code: CodeType, offset: int) -> object:
            return None if work.enter(code) else monitoring.DISABLE

        def instruction(code: CodeType, offset: int) -> object:
            if not work.counted(code):
                return monitoring.DISABLE
            work.bytecode(code)
            return None

        monitoring.use_tool_id(tool, "bench_psk")
        monitoring.register_callback(tool, events.PY_START, started)
        monitoring.register_callback(tool, events.INSTRUCTION, instruction)
        monitoring.set_events(tool, events.PY_START | events.INSTRUCTION)
        try:
            shuttle(client, server, turn=work.turn)
        finally:
            monitoring.set_events(tool, events.NO_EVENTS)
            monitoring.free_tool_id(tool)
        return work
    sys.settrace(work.trace)
    try:
        shuttle(client, server, turn=work.turn)
    finally:
        sys.settrace(None)
    return work


def report_interpreted_work(work: InterpretedWork, limit: int) -> None:
    total = sum(work.bytecodes.values())
    sides = ", ".join(
        f"{side} {work.bytecodes[side]:,} in {work.calls[side]} calls"
        for side in ("client", "server")
    )
    print("\n(d) interpreted work of one full PSK handshake with cookie exchange (counted, "
          "not timed)")
    print(f"    {total:,} bytecodes in {sum(work.calls.values())} Python-level calls: {sides}")
    if limit:
        print("    the functions with the most bytecodes (both sides):")
        # By name: the generated `__init__`s of the dataclasses share one, and add up there.
        by_name: Counter[str] = Counter()
        for code, count in work.by_function.items():
            file = Path(code.co_filename).name
            by_name[f"{file}:{code.co_firstlineno} {code.co_qualname}"] += count
        for name, count in by_name.most_common(limit):
            print(f"    {count:7,} {100 * count / total:5.1f} %  {name}")


# -- the report -------------------------------------------------------------------------------


def bench_handshake(mbed: Mbed, runs: int) -> float:
    """Time both ways of (a) in turns; print them and return the worse ratio."""
    print(f"\n(a) full PSK handshake with cookie exchange, both sides, in memory ({runs} runs)")
    print("    (taken in turns, one handshake of each per round; the ratio is the median of the")
    print("    rounds' ratios, the mean column's the ratio of the means)")
    print("    new associations: each handshake makes each side's association object (iotdtls:")
    print("      DtlsConnections and a ServerEndpoint; Mbed TLS: two contexts, mbedtls_ssl_setup)")
    print("    contexts reset: Mbed TLS's two contexts made once, reset before each handshake")
    print("      (mbedtls_ssl_session_reset); iotdtls has no reset: one ServerEndpoint for all")
    kept = KeptServer()
    timings = time_interleaved(
        [iotdtls_handshake, mbed.handshake, kept.handshake, partial(mbed.handshake, kept=True)],
        runs,
    )
    print(f"    {'':32}{'median':>12}{'mean':>12}")
    ratios = []
    for way, (ours, theirs) in (("new associations", timings[:2]), ("contexts reset", timings[2:])):
        print(f"    {'iotdtls, ' + way:32}{fmt(ours.median):>12}{fmt(ours.mean):>12}")
        print(f"    {'Mbed TLS 2.28, ' + way:32}{fmt(theirs.median):>12}{fmt(theirs.mean):>12}")
        ratio = ours.ratio_to(theirs)
        print(f"    {'ratio iotdtls/Mbed TLS':32}{ratio:>11.2f}x{ours.mean / theirs.mean:>11.2f}x"
              f"   {verdict(ratio, HANDSHAKE_TARGET)}")
        ratios.append(ratio)
    return max(ratios)


def bench_records(mbed: Mbed, calls: int) -> dict[int, float]:
    print(f"\n(b) one application record sealed and opened (median of 15 batches of {calls}, "
          "the stacks' batches in turns)")
    print(f"    {'':38}{'64 B':>12}{'1 KiB':>12}")
    rows = {
        "iotdtls DtlsConnection send/receive": iotdtls_record_pair,
        "iotdtls RecordLayer seal/open": iotdtls_record_layer,
        "Mbed TLS write/receive/read": mbed.record_pair,
    }
    timings: dict[str, dict[int, Timing]] = {name: {} for name in rows}
    for n in RECORD_SIZES:
        makers = [make(n) for make in rows.values()]
        for name, timing in zip(rows, time_interleaved(makers, 15, calls), strict=True):
            timings[name][n] = timing
    for name, by_size in timings.items():
        cells = "".join(f"{fmt(by_size[n].median):>12}" for n in RECORD_SIZES)
        print(f"    {name:38}{cells}")
    ratios: dict[int, float] = {}
    mbed_row = timings["Mbed TLS write/receive/read"]
    for name in ("iotdtls DtlsConnection send/receive", "iotdtls RecordLayer seal/open"):
        r = {n: timings[name][n].ratio_to(mbed_row[n]) for n in RECORD_SIZES}
        cells = "".join(f"{r[n]:>11.2f}x" for n in RECORD_SIZES)
        print(f"    {'ratio ' + name.split(' ', 1)[1]:38}{cells}")
        if name.startswith("iotdtls DtlsConnection"):
            ratios = r
    print(f"    connection level {verdict(max(ratios.values()), RECORD_TARGET)}")
    return ratios


def describe(wire: Wire) -> str:
    sizes = "+".join(str(n) for n in wire.datagrams)
    return f"{wire.total:4d} B in {len(wire.datagrams)} datagrams ({sizes})"


def records(wire: Wire) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(wire.records.items()))


def bench_wire(mbed: Mbed) -> None:
    ours, theirs = HandshakeWire(), HandshakeWire()
    iotdtls_handshake(ours)
    mbed.handshake(theirs)
    print("\n(c) on the wire for one full PSK handshake with cookie exchange "
          "(UDP payload: handshake and ChangeCipherSpec records)")
    print(f"    {'':14}{'client':40}server")
    for name, wire in (("iotdtls", ours), ("Mbed TLS 2.28", theirs)):
        print(f"    {name:14}{describe(wire.client):40}{describe(wire.server)}")
    tiny, openssl = REFERENCE["tinydtls client"], REFERENCE["OpenSSL server"]
    print(f"    {'reference':14}{f'tinydtls {tiny} B':40}OpenSSL {openssl} B")
    for name, wire in (("iotdtls", ours), ("Mbed TLS 2.28", theirs)):
        print(f"    records {name}: client {records(wire.client)}; "
              f"server {records(wire.server)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="handshakes per stack")
    parser.add_argument("--records", type=int, default=2000, help="records per batch")
    parser.add_argument("--profile", action="store_true", help="profile even if targets are met")
    args = parser.parse_args(argv)
    mbed = Mbed()
    print(f"iotdtls vs Mbed TLS, TLS_PSK_WITH_AES_128_CCM_8, Python {sys.version.split()[0]}, "
          "one process, in-memory transport")
    handshake_ratio = bench_handshake(mbed, args.runs)
    record_ratios = bench_records(mbed, args.records)
    bench_wire(mbed)
    profile = args.profile or handshake_ratio > HANDSHAKE_TARGET
    report_interpreted_work(interpreted_work(), 20 if profile else 0)
    if profile:
        hot_spots(iotdtls_handshake, args.runs, "the iotdtls handshake")
    if args.profile or max(record_ratios.values()) > RECORD_TARGET:
        hot_spots(iotdtls_record_pair(64), args.records * 5, "a 64-byte iotdtls record")
    return 0


if __name__ == "__main__":
    sys.exit(main())
