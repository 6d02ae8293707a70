"""`iotdtls.datagram`: the server's UDP transport reads bursts at once and never blocks on send."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Coroutine
from typing import Any

import pytest

from iotdtls import datagram
from iotdtls import loop as iotdtls_loop
from iotdtls.datagram import DrainingTransport, bind_udp, open_server_transport
from tests.peers import LOCALHOST, TakesAnyAddress, link_local_addresses


def run(coro: Coroutine[Any, Any, None], limit: float = 10.0) -> None:
    asyncio.run(asyncio.wait_for(coro, limit))


class Recorder(asyncio.DatagramProtocol):
    """Keeps what the transport hands over and when the transport ends."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Any]] = []
        self.errors: list[Exception] = []
        self.made = False
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


async def until_received(protocol: Recorder, count: int) -> None:
    """Wait (within `run`'s limit) until `protocol` holds `count` datagrams."""
    while len(protocol.received) < count:
        await asyncio.sleep(0.005)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, 0))
    return sock


def test_a_burst_is_read_in_one_wake_up() -> None:
    """Datagrams already waiting are all read by one readiness callback (up to READ_BATCH),
    not one per turn of the loop."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        protocol = Recorder()
        transport = DrainingTransport(loop, bound_socket(), protocol)
        wake_ups = 0
        read_ready = transport._read_ready

        def counting() -> None:
            nonlocal wake_ups
            wake_ups += 1
            read_ready()

        fd = transport.get_extra_info("socket").fileno()
        loop.remove_reader(fd)
        loop.add_reader(fd, counting)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for n in range(datagram.READ_BATCH + 6):
                sender.sendto(b"%d" % n, transport.get_extra_info("sockname"))
            sender_address = sender.getsockname()
            await until_received(protocol, datagram.READ_BATCH + 6)
        assert protocol.made
        assert wake_ups == 2  # a full batch, then the rest
        assert [data for data, _ in protocol.received] == [
            b"%d" % n for n in range(datagram.READ_BATCH + 6)
        ]
        assert protocol.received[0][1][1] == sender_address[1]
        transport.close()
        await protocol.lost

    run(main())


def test_each_datagram_is_handed_over_as_its_own_bytes() -> None:
    """Datagrams are read into one reused buffer: each goes to the protocol as bytes of its
    own size, still whole after later reads filled the buffer, up to the largest IPv4 UDP
    payload."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        protocol = Recorder()
        transport = DrainingTransport(loop, bound_socket(), protocol)
        largest = bytes(range(256)) * 255 + bytes(range(187))  # 65,467 bytes
        sent = [b"first", largest, b"x" * 3, b"", b"last one"]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 18)
            for data in sent:
                sender.sendto(data, transport.get_extra_info("sockname"))
            await until_received(protocol, len(sent))
        assert [data for data, _ in protocol.received] == sent
        assert all(type(data) is bytes for data, _ in protocol.received)
        transport.close()
        await protocol.lost

    run(main())


class Stubborn(socket.socket):
    """A UDP socket whose send buffer is full for the first `refusals` datagrams."""

    refusals = 0

    def sendto(self, data: Any, *args: Any) -> int:
        if self.refusals:
            self.refusals -= 1
            raise BlockingIOError
        return super().sendto(data, *args)


def transport_refusing(refusals: int) -> tuple[DrainingTransport, Recorder]:
    """A transport (in the running loop) whose socket refuses its first `refusals` datagrams."""
    sock = Stubborn(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, 0))
    sock.refusals = refusals
    protocol = Recorder()
    return DrainingTransport(asyncio.get_running_loop(), sock, protocol), protocol


def test_a_full_send_buffer_queues_then_flushes_in_order() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, protocol = transport_refusing(2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((LOCALHOST, 0))
            peer.settimeout(5.0)
            for n in range(3):
                transport.sendto(b"%d" % n, peer.getsockname())
            # bytes: the refused datagram and the two queued behind it
            assert transport.get_write_buffer_size() == 3
            got = []
            for _ in range(3):
                await asyncio.sleep(0.01)
                got.append(await loop.run_in_executor(None, peer.recv, 100))
            assert got == [b"0", b"1", b"2"]
            assert transport.get_write_buffer_size() == 0
        transport.close()
        await protocol.lost

    run(main())


def test_close_sends_what_is_queued_if_the_kernel_takes_it_now() -> None:
    async def main() -> None:
        transport, protocol = transport_refusing(1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind((LOCALHOST, 0))
            peer.settimeout(5.0)
            for n in range(3):
                transport.sendto(b"%d" % n, peer.getsockname())
            transport.close()  # before the loop ever found the socket writable
            assert [peer.recv(100) for _ in range(3)] == [b"0", b"1", b"2"]
        assert transport.get_write_buffer_size() == 0
        await protocol.lost

    run(main())


def test_the_send_queue_is_bounded() -> None:
    async def main() -> None:
        transport, protocol = transport_refusing(10**9)
        for _ in range(datagram.SEND_QUEUE_LIMIT + 5):
            transport.sendto(b"x", (LOCALHOST, 9))
        assert transport.get_write_buffer_size() == datagram.SEND_QUEUE_LIMIT
        assert transport.send_drops == 5
        transport.abort()
        await protocol.lost

    run(main())


def test_close_frees_the_port_and_tells_the_protocol_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = bound_socket()
        address = sock.getsockname()
        protocol = Recorder()
        transport = DrainingTransport(loop, sock, protocol)
        transport.close()
        transport.close()
        assert transport.is_closing()
        transport.sendto(b"late", address)  # ignored, no error
        assert await protocol.lost is None
        assert sock.fileno() == -1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
            again.bind(address)

    run(main())


def test_a_loop_without_add_reader_gets_its_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def refuse(*args: Any) -> None:
            raise NotImplementedError

        monkeypatch.setattr(loop, "add_reader", refuse)
        protocol = Recorder()
        transport = await open_server_transport(loop, protocol, bound_socket())
        monkeypatch.undo()
        assert not isinstance(transport, DrainingTransport)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"hello", transport.get_extra_info("sockname"))
            await until_received(protocol, 1)
        assert protocol.received[0][0] == b"hello"
        transport.close()
        await protocol.lost

    run(main())


def test_bind_udp_binds_a_name_and_reports_what_cannot_be_bound() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = await bind_udp(loop, "localhost", 0)
        with sock:
            assert sock.type == socket.SOCK_DGRAM
            taken = sock.getsockname()
            with pytest.raises(OSError):
                (await bind_udp(loop, taken[0], taken[1])).close()

    run(main())


def test_serve_closes_the_socket_it_bound_when_serving_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`aio.serve` without `sock=` owns its socket: a failure after binding must not leak it."""
    from iotdtls import aio
    from tests.interop_support import server_config

    bound: list[socket.socket] = []

    async def recording_bind(loop: Any, host: str, port: int) -> socket.socket:
        sock = await bind_udp(loop, host, port)
        bound.append(sock)
        return sock

    async def failing_open(*args: Any) -> Any:
        raise RuntimeError("no transport")

    async def echo(session: aio.ServerSession) -> None:
        return None

    monkeypatch.setattr(aio, "bind_udp", recording_bind)
    monkeypatch.setattr(aio, "open_server_transport", failing_open)

    async def main() -> None:
        with pytest.raises(RuntimeError, match="no transport"):
            await aio.serve(echo, LOCALHOST, 0, server_config())

    run(main())
    assert len(bound) == 1 and bound[0].fileno() == -1


def test_bind_udp_binds_the_address_asked_for() -> None:
    async def main() -> None:
        with await bind_udp(asyncio.get_running_loop(), LOCALHOST, 0) as sock:
            assert sock.getsockname()[0] == LOCALHOST

    run(main())


def resolving(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    """Name resolution (bind_udp's `resolve_udp`) gives fixed addresses."""

    async def resolve(loop: Any, host: str, port: int, flags: int = 0) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", (address, port))
                for address in addresses]

    monkeypatch.setattr(datagram, "resolve_udp", resolve)


@pytest.mark.parametrize(
    ("address", "v6only_after"),
    [(("::", 0, 0, 0), 0), (("::%lo", 0, 0, 1), 0), (("::1", 0, 0, 0), 1),
     (("::ffff:127.0.0.1", 0, 0, 0), 1), (("fe80::1%lo", 0, 0, 1), 1)],
)
def test_dual_stack_turns_ipv6_only_off_for_the_unspecified_address_only(
    address: tuple[str, int, int, int], v6only_after: int
) -> None:
    """`dual_stack` turns IPV6_V6ONLY off for `::` alone: a specific IPv6 address (an
    IPv4-mapped one too, which would then take IPv4 where the host says not to) is left as
    the host made it, here IPv6 only as on the BSDs or with net.ipv6.bindv6only=1; an IPv4
    socket is never touched."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        datagram.dual_stack(sock, address)
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == v6only_after
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock4:
        datagram.dual_stack(sock4, ("::", 0))  # no IPv6 option on an IPv4 socket: no error


def test_bind_udp_tries_each_address_and_reports_the_last_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    not_here = "192.0.2.1"  # TEST-NET-1: no interface of this machine has it

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with monkeypatch.context() as patch:
            resolving(patch, not_here, LOCALHOST)
            with await bind_udp(loop, "gw.example", 0) as sock:
                assert sock.getsockname()[0] == LOCALHOST
            resolving(patch, not_here)
            with pytest.raises(OSError) as info:
                await bind_udp(loop, "gw.example", 0)
            assert info.value.errno == errno.EADDRNOTAVAIL
            resolving(patch)
            with pytest.raises(OSError, match=r"gw\.example:5684 resolves to no address"):
                await bind_udp(loop, "gw.example", 5684)
        with await bind_udp(loop, LOCALHOST, 0) as taken:
            with pytest.raises(OSError) as info:
                await bind_udp(loop, *taken.getsockname())
            assert info.value.errno == errno.EADDRINUSE

    run(main())


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_a_link_local_address_keeps_its_scope_id(loop_choice: str) -> None:
    """"fe80::1%lo" resolves with the interface's index as scope id on both loops (uvloop's own
    getaddrinfo gives 0, which no socket binds: the server said "Invalid argument")."""
    lo = socket.if_nametoindex("lo")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        infos = await datagram.resolve_udp(loop, "fe80::1%lo", 5684, socket.AI_PASSIVE)
        assert [info[4] for info in infos] == [("fe80::1", 5684, 0, lo)]

    assert iotdtls_loop.run(asyncio.wait_for(main(), 10.0), loop_choice) is None


@pytest.mark.parametrize("loop_choice", ["asyncio", "uvloop"])
def test_a_server_binds_a_link_local_address_by_name(
    loop_choice: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bind_udp` binds "fe80::1%lo" with the interface's index as scope id, on any machine (a
    socket that takes any address stands in for the kernel's); and each link-local address this
    machine has, if any, the kernel binds by name."""
    lo = socket.if_nametoindex("lo")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        with monkeypatch.context() as patch:
            patch.setattr(socket, "socket", TakesAnyAddress)
            with await bind_udp(loop, "fe80::1%lo", 5684) as sock:
                assert sock.getsockname() == ("fe80::1", 5684, 0, lo)
        for address, interface in link_local_addresses():
            with await bind_udp(loop, f"{address}%{interface}", 0) as sock:
                name = sock.getsockname()
                assert (name[0], name[3]) == (address, socket.if_nametoindex(interface))

    assert iotdtls_loop.run(asyncio.wait_for(main(), 10.0), loop_choice) is None


class Scripted(socket.socket):
    """A UDP socket whose next receive and send calls give scripted outcomes first."""

    receives: list[Exception | tuple[bytes, Any]]
    sends: list[Exception]

    def recvfrom_into(self, buffer: Any, *args: Any) -> tuple[int, Any]:
        if self.receives:
            outcome = self.receives.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            data, address = outcome
            buffer[: len(data)] = data
            return len(data), address
        raise BlockingIOError

    def sendto(self, data: Any, *args: Any) -> int:
        if self.sends:
            raise self.sends.pop(0)
        return super().sendto(data, *args)


def scripted_transport() -> tuple[DrainingTransport, Recorder, Scripted]:
    sock = Scripted(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, 0))
    sock.receives, sock.sends = [], []
    protocol = Recorder()
    return DrainingTransport(asyncio.get_running_loop(), sock, protocol), protocol, sock


def test_a_socket_error_is_reported_and_reading_goes_on() -> None:
    """An ICMP error surfacing on a read does not end the wake-up's batch."""

    async def main() -> None:
        transport, protocol, sock = scripted_transport()
        refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        sock.receives = [refused, (b"after", ("192.0.2.7", 5684))]
        transport._read_ready()  # one wake-up
        assert protocol.errors == [refused]
        assert protocol.received == [(b"after", ("192.0.2.7", 5684))]
        transport.close()
        await protocol.lost

    run(main())


def test_send_errors_are_reported_now_and_from_the_queue() -> None:
    async def main() -> None:
        transport, protocol, sock = scripted_transport()
        peer = sock.getsockname()  # itself: a real send succeeds
        unreachable = OSError(errno.EHOSTUNREACH, "No route to host")
        sock.sends = [BlockingIOError(), unreachable]
        transport.sendto(b"queued", peer)
        assert transport.get_write_buffer_size() == len(b"queued")
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.005)
        late = OSError(errno.ENETUNREACH, "Network is unreachable")
        sock.sends = [late]
        transport.sendto(b"now", peer)
        assert protocol.errors == [unreachable, late]
        transport.sendto(b"fine", peer)
        assert protocol.errors == [unreachable, late]
        transport.close()
        await protocol.lost

    run(main())
