"""A lossy UDP proxy for tests: seeded loss, duplication, reordering and delay per direction.

This module is **test tooling**, not part of the DTLS stack. `tc netem` is not available on the
machines this project runs on, so the interop and reliability tests put this proxy between two
endpoints instead (peers.md, "Loss, reordering, duplication"). It is the only user of the
`random` module in `src/`: its impairments must be reproducible from a seed, which is exactly
what a cryptographic generator must never be. Nothing in the DTLS stack imports this module.

Model::

    client  --->  listening socket [proxy] upstream socket  --->  target (the server)
    client  <---  listening socket [proxy] upstream socket  <---  target

The first source address that sends to the listening socket becomes "the client"; datagrams from
any other address on the listening socket are ignored (and counted in `ignored`). So are those
that come to the listening socket from the target's own address, or from its port on another
address of this machine when the target is on it (counted in `ignored_from_target` too): taking
the target for the client would send every datagram round target -> proxy -> target until the
proxy stops, the loop `_target_problem` refuses a target equal to the listening address for (one
spoofed datagram would do it). Datagrams from anyone but the target on the upstream socket are
ignored too. `rebind()` replaces the upstream socket, so the server sees the client move to a
new port (a NAT rebinding).

Direction names say who *sent* the datagram: ``"client"`` is client to server, ``"server"`` is
server to client. Datagrams are numbered from 1 in each direction; ``drop={("server", 2)}`` drops
the second datagram the server sends, whatever the random impairments say.

Fates, decided per datagram in this order: an exact drop (``"dropped"``); random loss
(``"dropped"``); random reordering (``"reordered"``: held back and released right after the next
datagram of the same direction goes out, or after `reorder_timeout` seconds if none comes);
random duplication (``"duplicated"``: sent twice); otherwise ``"sent"``. One datagram per
direction is held at a time: after a ``"reordered"`` one, no other of its direction is reordered
until one is forwarded (``"sent"`` or ``"duplicated"``), *even if the timer has already
released the held one*, so that this rule never depends on timing. A random delay drawn from
the direction's ``delay`` range is then applied to every copy that is sent. Each direction has
its own generator seeded from ``seed`` and draws the same number of values for every datagram,
so the fate of the n-th datagram of a direction depends only on the seed and the fates before
it, never on timing or on the other direction (timing decides only *when* a held datagram
leaves: right after the next forwarded one, or by its timer). What is still delayed or held
back when the proxy stops never goes out: its fate becomes ``"discarded"``. A datagram the kernel
refused to send (EMSGSIZE: too big for the target's family; EAGAIN or ENOBUFS: a full buffer)
did not go out either: its fate becomes ``"failed"``, and its error's name is counted in
`send_errors` and kept in its log entry (a duplicated one of which one copy went out becomes
``"sent"``), so that the counts add up with what the far side received.

Example::

    with LossyProxy(("127.0.0.1", server_port), seed=1, loss=0.2, drop={("server", 2)}) as p:
        client.connect(p.address)
        ...
    print(p.counts)

Command line (for a peer that is not driven from Python)::

    python -m iotdtls.proxy --listen 127.0.0.1:5684 --target 127.0.0.1:5685 --seed 1 \\
        --loss 0.2 --drop server:2 --lifetime 60 --log-json proxy-log.json
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import heapq
import ipaddress
import json
import math
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, Literal, Self, TextIO

from iotdtls._addresses import format_hostport, host_port, listening_on, resolve, zone_needed
from iotdtls.cli.common import Parser, UsageError, parse_hostport

__all__ = [
    "Direction",
    "Fate",
    "Impairment",
    "LoggedDatagram",
    "LossyProxy",
    "main",
]

Direction = Literal["client", "server"]
"""Who sent a datagram: ``"client"`` (towards the target) or ``"server"`` (the target)."""

Fate = Literal["sent", "dropped", "duplicated", "reordered", "discarded", "failed"]
"""What the proxy did with a datagram (``"discarded"``: still delayed or held back when the proxy
stopped, so never sent; ``"failed"``: its send failed, so never sent)."""

SocketFactory = Callable[[socket.AddressFamily], socket.socket]
"""Makes an unbound UDP socket of the given family (for example inside a network namespace)."""

_MAX_DATAGRAM = 65535
_SELECT_TIMEOUT = 0.05
_READS_PER_WAKEUP = 64
_DIRECTIONS: tuple[Direction, Direction] = ("client", "server")
#: The command's name, as its usage and its error lines give it.
PROGRAM = "python -m iotdtls.proxy"


class _SeededPrng(random.Random):
    """The proxy's deterministic generator (Mersenne Twister).

    For reproducible test impairments only; it never produces anything secret.
    """


@dataclass(frozen=True)
class Impairment:
    """Random impairments of one direction.

    `loss`, `duplicate` and `reorder` are probabilities in [0, 1]; `delay` is a (min, max)
    range in seconds from which each datagram's delay is drawn uniformly.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        low, high = self.delay
        if not 0.0 <= low <= high < math.inf:  # refuses NaN and infinity too
            raise ValueError(
                f"delay must be a range 0 <= min <= max of finite seconds, got {self.delay!r}"
            )


@dataclass(frozen=True)
class LoggedDatagram:
    """One datagram the proxy received, and what it did with it.

    `index` is the 1-based number of the datagram in its direction; `time` is in seconds since
    the proxy started (monotonic clock), taken when the datagram was received; `error` is why
    a copy of it could not be sent (the errno name, "EMSGSIZE"), None if none failed.
    """

    direction: Direction
    data: bytes
    fate: Fate
    time: float
    index: int = 0
    error: str | None = None


@dataclass(order=True)
class _Pending:
    """A datagram copy waiting for its delay to expire."""

    due: float
    order: int
    direction: Direction = field(compare=False)
    data: bytes = field(compare=False)
    index: int = field(compare=False)
    fate: Fate = field(compare=False)
    #: Which copy of a duplicated datagram (1 or 2; they go out in that order).
    copy: int = field(default=1, compare=False)


@dataclass
class _Held:
    """A datagram held back for reordering."""

    data: bytes
    deadline: float
    delay: float
    index: int


def _default_socket_factory(family: socket.AddressFamily) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


def _resolve(address: tuple[str, int]) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    """The family and socket address of `address` (an IPv6 one with its scope id: the zone of
    "fe80::1%eth0"); ValueError for a port outside 0-65535 (getaddrinfo would take it modulo
    65536), OSError naming a host that does not resolve."""
    host, port = address
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {port!r}")
    try:
        infos = resolve(host, port, proto=socket.IPPROTO_UDP)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve {host!r}: {exc.strerror}") from None
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, sockaddr = infos[0]
    return family, tuple(sockaddr)


def _target_problem(target: tuple[str, int], listen: tuple[str, int]) -> str | None:
    """Why the proxy could never reach a server at `target` (both resolved), as a line saying
    what to name instead; None when it can: a port 0, an unspecified address (the server's
    replies come from its real address, not from "0.0.0.0", and would all be ignored), or the
    proxy's own listening address (what it forwards would come back to itself), a link-local
    address without its interface (the kernel would refuse every datagram sent to it)."""
    host, port = target
    if port == 0:
        return f"target {format_hostport(host, port)} has port 0: name the port the server uses"
    if needed := zone_needed(host, port):
        return f"target {format_hostport(host, port)}: {needed}"
    if ipaddress.ip_address(host.partition("%")[0]).is_unspecified:
        example = format_hostport("::1" if ":" in host else "127.0.0.1", port)
        return (
            f"target {format_hostport(host, port)} is not a server's address: name the "
            f"server's address, e.g. {example}"
        )
    listen_host, listen_port = listen
    if listen_port == port and (
        listen_host == host or ipaddress.ip_address(listen_host.partition("%")[0]).is_unspecified
    ):
        return (
            f"target {format_hostport(host, port)} is the proxy's own listening address "
            f"({format_hostport(*listen)}): name the server's address"
        )
    return None


def _comparable(address: tuple[str, int]) -> tuple[str, int]:
    """`address` as another socket's source address may give it: an IPv4 address seen by a
    dual-stack IPv6 socket ("::ffff:127.0.0.1") as the IPv4 one."""
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # not an IP address
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped), port
    return address


#: Source hosts `_is_local` has judged, kept (a few: the target's port is rarely a client's).
_LOCAL_HOSTS_KEPT = 64


def _is_local(host: str) -> bool:
    """Whether `host` is an address of this machine (a UDP socket can be bound to it): a
    target bound to a wildcard or dual-stack socket sends from any of them."""
    try:
        ipaddress.ip_address(host)
        # getaddrinfo keeps a link-local address's zone ("fe80::1%eth0") as its scope id,
        # which a (host, 0) tuple would leave 0: such a bind fails, and the host would be
        # judged foreign.
        ((family, _, _, _, sockaddr),) = socket.getaddrinfo(
            host, 0, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
        )
    except (ValueError, OSError):  # not an IP address, or an unknown zone
        return False
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(sockaddr)
        except OSError:
            return False
    return True


def _bind_listening(sock: socket.socket, address: tuple[Any, ...]) -> None:
    """Bind the socket clients send to; an error names the address (`listening_on`)."""
    with listening_on(*host_port(address)):
        sock.bind(address)


class LossyProxy:
    """A UDP proxy between one client and one target, with seeded impairments.

    It starts on construction (sockets bound, background thread running) and stops on `stop()`,
    at the end of a ``with`` block, or by itself after `lifetime` seconds. The thread never
    blocks for more than a few tens of milliseconds, so `stop()` returns within a second.

    Attributes:
        address: the (host, port) that clients send to; an IPv6 host with its zone, if it
            has one ("fe80::1%eth0"), as are `target` and `client_address`.
        log: every datagram received, in order of arrival (a list appended by the thread;
            read it after `stop()` or through `snapshot()` while running); empty without
            `keep_log`.
        counts: a Counter of (direction, fate) pairs.
        send_errors: a Counter of (direction, error name) pairs: the copies whose send failed
            (their datagrams' fate is ``"failed"``, or ``"sent"`` for a duplicated one whose
            other copy went out).
        ignored: datagrams from unexpected sources, not forwarded.
        ignored_from_target: those of `ignored` that came to the listening socket from the
            target's own address (never taken for the client: that would loop).
        rebinds: how many times the upstream socket was replaced (see `rebind()`).
        client_address: the client's address once it has sent something.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        seed: int,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        client_to_server: Impairment | None = None,
        server_to_client: Impairment | None = None,
        drop: Collection[tuple[Direction, int]] = (),
        lifetime: float = 60.0,
        reorder_timeout: float = 0.1,
        socket_factory: SocketFactory | None = None,
        keep_log: bool = True,
    ) -> None:
        """Bind the sockets and start the proxy thread.

        `loss`, `duplicate`, `reorder` and `delay` apply to both directions unless
        `client_to_server` or `server_to_client` overrides that direction as a whole. `drop`
        lists exact (direction, 1-based index) pairs to drop. `socket_factory` makes the UDP
        sockets (default: plain `socket.socket`). `keep_log=False` keeps the counters only, not
        `log` (each datagram, payload included, kept for the proxy's life). A `target` no
        server can be at (port 0, an unspecified address such as 0.0.0.0, the `listen` address
        itself) is a ValueError.
        """
        if not 0 < lifetime < math.inf:  # a NaN lifetime would never end
            raise ValueError(f"lifetime must be a positive number of seconds, got {lifetime!r}")
        if not 0 < reorder_timeout < math.inf:
            raise ValueError(
                f"reorder_timeout must be a positive number of seconds, got {reorder_timeout!r}"
            )
        default = Impairment(loss=loss, duplicate=duplicate, reorder=reorder, delay=delay)
        self.impairments: dict[Direction, Impairment] = {
            "client": client_to_server or default,
            "server": server_to_client or default,
        }
        for direction, index in drop:
            if direction not in _DIRECTIONS or index < 1:
                raise ValueError(f"bad drop entry {(direction, index)!r}")
        self.drop: frozenset[tuple[Direction, int]] = frozenset(drop)
        self.seed = seed
        self.lifetime = lifetime
        self.reorder_timeout = reorder_timeout
        self.keep_log = keep_log
        self.log: list[LoggedDatagram] = []
        self.counts: Counter[tuple[Direction, Fate]] = Counter()
        self.send_errors: Counter[tuple[Direction, str]] = Counter()
        self.ignored = 0
        self.ignored_from_target = 0
        self.rebinds = 0
        self.client_address: tuple[str, int] | None = None

        self._rngs: dict[Direction, random.Random] = {
            d: _SeededPrng(f"iotdtls-proxy:{seed}:{d}") for d in _DIRECTIONS
        }
        self._received: dict[Direction, int] = {"client": 0, "server": 0}
        self._held: dict[Direction, _Held | None] = {"client": None, "server": None}
        # Whether a reordered datagram still counts as held (until the next one is forwarded,
        # whether or not its timer has released it): decides fates, independently of timing.
        self._holding: dict[Direction, bool] = {"client": False, "server": False}
        self._pending: list[_Pending] = []
        # The duplicated datagrams whose first copy failed to be sent (now "sent") and whose
        # second is still to go.
        self._first_copy_failed: set[tuple[Direction, int]] = set()
        self._order = 0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._rebind_requested = threading.Event()
        self._socket_factory = socket_factory or _default_socket_factory

        self._target_family, self._target_sockaddr = _resolve(target)
        self.target: tuple[str, int] = host_port(self._target_sockaddr)
        self._target_seen_as = _comparable(self.target)
        self._target_is_local = _is_local(self._target_seen_as[0])
        self._local_hosts: dict[str, bool] = {}
        #: Where the client's datagrams come from (its scope id kept), once it has sent one.
        self._client_sockaddr: tuple[Any, ...] | None = None
        listen_family, listen_addr = _resolve(listen)
        problem = _target_problem(self.target, host_port(listen_addr))
        if problem is not None:
            raise ValueError(problem)
        self._listen = self._socket_factory(listen_family)
        self._upstream: socket.socket | None = None
        try:
            _bind_listening(self._listen, listen_addr)
            self._listen.setblocking(False)
            self._upstream = self._new_upstream()
        except BaseException:
            self._close_sockets()
            raise
        self.address: tuple[str, int] = host_port(self._listen.getsockname())

        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listen, selectors.EVENT_READ, "client")
        self._selector.register(self._upstream, selectors.EVENT_READ, "server")
        self._start = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, name=f"LossyProxy:{self.address[1]}", daemon=True
        )
        self._thread.start()

    # -- public API --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        """Return the running proxy."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the proxy."""
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the proxy thread is still forwarding."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop forwarding and join the thread (at most `timeout` seconds). Idempotent."""
        self._stop_event.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_stopped(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the proxy to stop (e.g. at the end of its lifetime)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def rebind(self, timeout: float = 1.0) -> bool:
        """Forward from a new upstream socket (new source port): a NAT rebinding as the
        target sees it. Takes effect within one loop iteration; waits up to `timeout` seconds
        for it and returns whether it happened (every datagram read after that goes out from
        the new socket)."""
        with self._lock:
            wanted = self.rebinds + 1
        self._rebind_requested.set()
        return self._wait(lambda: self.rebinds >= wanted, timeout)

    def snapshot(self) -> list[LoggedDatagram]:
        """A copy of the log, safe to take while the proxy runs."""
        with self._lock:
            return list(self.log)

    def datagrams(self, direction: Direction) -> list[LoggedDatagram]:
        """The logged datagrams of one direction, in order."""
        return [d for d in self.snapshot() if d.direction == direction]

    def wait_for_count(self, direction: Direction, count: int, timeout: float) -> bool:
        """Wait up to `timeout` seconds until `count` datagrams of `direction` were received."""
        return self._wait(lambda: self._received[direction] >= count, timeout)

    def wait_for_ignored(self, count: int, timeout: float) -> bool:
        """Wait up to `timeout` seconds until `count` datagrams from unexpected sources were
        ignored."""
        return self._wait(lambda: self.ignored >= count, timeout)

    def _wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Poll `condition` (under the lock) every 10 ms for up to `timeout` seconds, or until
        the thread has stopped; return its last value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition():
                    return True
            if not self._thread.is_alive():
                break
            time.sleep(0.01)
        with self._lock:
            return condition()

    # -- the thread --------------------------------------------------------------------------

    def _new_upstream(self) -> socket.socket:
        sock = self._socket_factory(self._target_family)
        try:
            if self.target[0] in ("127.0.0.1", "::1"):
                sock.bind((self.target[0], 0))
            # Otherwise the kernel picks the source address and port at the first send.
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _close_sockets(self) -> None:
        for sock in (self._listen, self._upstream):
            if sock is not None:
                sock.close()

    def _now(self) -> float:
        return time.monotonic() - self._start

    def _run(self) -> None:
        try:
            while not self._stop_event.is_set():
                now = self._now()
                if now >= self.lifetime:
                    break
                if self._rebind_requested.is_set():
                    self._do_rebind()
                timeout = min(_SELECT_TIMEOUT, self.lifetime - now)
                next_due = self._next_due()
                if next_due is not None:
                    timeout = max(0.0, min(timeout, next_due - now))
                for key, _ in self._selector.select(timeout):
                    direction: Direction = key.data
                    self._read_all(direction)
                self._flush_due()
        finally:
            self._discard_unsent()
            self._selector.close()
            self._close_sockets()
            self._stop_event.set()

    def _do_rebind(self) -> None:
        self._rebind_requested.clear()
        old = self._upstream
        new = self._new_upstream()
        if old is not None:
            self._selector.unregister(old)
            old.close()
        self._upstream = new
        self._selector.register(new, selectors.EVENT_READ, "server")
        with self._lock:
            self.rebinds += 1

    def _next_due(self) -> float | None:
        dues = [p.due for p in self._pending[:1]]
        dues += [h.deadline for h in self._held.values() if h is not None]
        return min(dues) if dues else None

    def _read_all(self, direction: Direction) -> None:
        sock = self._listen if direction == "client" else self._upstream
        if sock is None:
            return
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, source = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # ICMP errors reported on the socket: nothing to forward.
                return
            sender = host_port(source)
            if direction == "client":
                if self._from_target(sender):
                    self._ignore(from_target=True)
                    continue
                if self.client_address is None:
                    self.client_address, self._client_sockaddr = sender, source
                elif sender != self.client_address:
                    self._ignore()
                    continue
            elif sender != self.target:
                self._ignore()
                continue
            self._handle(direction, data)

    def _from_target(self, sender: tuple[str, int]) -> bool:
        """Whether `sender` may be the target itself: its address, or, for a target on this
        machine, its port on another address of the machine (a target bound to 0.0.0.0 or to
        a dual-stack [::] answers from any of them)."""
        host, port = seen_as = _comparable(sender)
        if seen_as == self._target_seen_as:
            return True
        if port != self._target_seen_as[1] or not self._target_is_local:
            return False
        local = self._local_hosts.get(host)
        if local is None:
            if len(self._local_hosts) >= _LOCAL_HOSTS_KEPT:
                self._local_hosts.clear()
            local = self._local_hosts[host] = _is_local(host)
        return local

    def _ignore(self, *, from_target: bool = False) -> None:
        with self._lock:
            self.ignored += 1
            self.ignored_from_target += from_target

    def _handle(self, direction: Direction, data: bytes) -> None:
        rng = self._rngs[direction]
        impairment = self.impairments[direction]
        # Always the same four draws, so fates depend only on the seed and the index.
        loss_draw, reorder_draw, duplicate_draw = rng.random(), rng.random(), rng.random()
        delay = rng.uniform(*impairment.delay)
        now = self._now()
        with self._lock:
            self._received[direction] += 1
            index = self._received[direction]
        held = self._held[direction]
        fate: Fate
        if (direction, index) in self.drop or loss_draw < impairment.loss:
            fate = "dropped"
        elif reorder_draw < impairment.reorder and not self._holding[direction]:
            fate = "reordered"
            self._holding[direction] = True
            self._held[direction] = _Held(data, now + self.reorder_timeout, delay, index)
        elif duplicate_draw < impairment.duplicate:
            fate = "duplicated"
            self._schedule(direction, data, now + delay, index, fate)
            self._schedule(direction, data, now + delay, index, fate, copy=2)
        else:
            fate = "sent"
            self._schedule(direction, data, now + delay, index, fate)
        if fate in ("sent", "duplicated"):
            self._holding[direction] = False
            if held is not None:
                # The held datagram goes out right after the one that overtook it.
                self._held[direction] = None
                self._schedule(
                    direction, held.data, now + max(delay, held.delay), held.index, "reordered"
                )
        with self._lock:
            if self.keep_log:
                self.log.append(LoggedDatagram(direction, data, fate, now, index))
            self.counts[(direction, fate)] += 1
        self._flush_due()

    def _schedule(
        self, direction: Direction, data: bytes, due: float, index: int, fate: Fate, copy: int = 1
    ) -> None:
        self._order += 1
        heapq.heappush(
            self._pending, _Pending(due, self._order, direction, data, index, fate, copy)
        )

    def _flush_due(self) -> None:
        now = self._now()
        for direction in _DIRECTIONS:
            held = self._held[direction]
            if held is not None and held.deadline <= now:
                self._held[direction] = None
                self._schedule(direction, held.data, now + held.delay, held.index, "reordered")
        while self._pending and self._pending[0].due <= now:
            item = heapq.heappop(self._pending)
            self._send(item)

    def _discard_unsent(self) -> None:
        """At the stop: the datagrams still delayed or held back never go out, so their fate
        becomes ``"discarded"`` in `counts` and `log` (a duplicated one of which one copy went
        out becomes ``"sent"``). The two copies of a duplicated datagram are due at once and go
        out one right after the other, so a send failure is never half-way at the stop."""
        waiting: Counter[tuple[Direction, int]] = Counter()
        fates: dict[tuple[Direction, int], Fate] = {}
        for item in self._pending:
            waiting[(item.direction, item.index)] += 1
            fates[(item.direction, item.index)] = item.fate
        for direction, held in self._held.items():
            if held is not None:
                waiting[(direction, held.index)] += 1
                fates[(direction, held.index)] = "reordered"
        self._pending.clear()
        self._held = {"client": None, "server": None}
        changed: dict[tuple[Direction, int], tuple[Fate, Fate]] = {}
        for key, copies in waiting.items():
            fate = fates[key]
            changed[key] = (fate, "sent" if fate == "duplicated" and copies == 1 else "discarded")
        self._refate(changed)

    def _refate(
        self, changed: dict[tuple[Direction, int], tuple[Fate, Fate]], error: str | None = None
    ) -> None:
        """Move each datagram of `changed` from its (old, new) fates in `counts` and `log`;
        `error` (a send's) is kept in its log entry."""
        with self._lock:
            for (direction, _), (old, new) in changed.items():
                self.counts[(direction, old)] -= 1
                if not self.counts[(direction, old)]:
                    del self.counts[(direction, old)]
                self.counts[(direction, new)] += 1
            rest = dict(changed)
            for position in range(len(self.log) - 1, -1, -1):
                if not rest:
                    break
                entry = self.log[position]
                fates = rest.pop((entry.direction, entry.index), None)
                if fates is not None:
                    self.log[position] = dataclasses.replace(
                        entry, fate=fates[1], error=error or entry.error
                    )

    def _send(self, item: _Pending) -> None:
        sock: socket.socket | None
        to: tuple[Any, ...] | None
        if item.direction == "client":
            sock, to = self._upstream, self._target_sockaddr
        else:
            sock, to = self._listen, self._client_sockaddr
        key = (item.direction, item.index)
        if sock is None or to is None:  # the target spoke first: nobody to send it to
            error = "no client"
        else:
            try:
                sock.sendto(item.data, to)
            except OSError as exc:
                # A datagram too big for the target's family (EMSGSIZE), a full buffer (EAGAIN,
                # ENOBUFS), an unreachable peer: not sent, and counted so.
                error = errno.errorcode.get(exc.errno or 0, str(exc))
            else:
                if item.copy == 2:
                    self._first_copy_failed.discard(key)
                return
        with self._lock:
            self.send_errors[(item.direction, error)] += 1
        old: Fate = item.fate
        new: Fate = "failed"
        if item.fate == "duplicated":
            if item.copy == 1:
                new = "sent"  # the second copy may still go out
                self._first_copy_failed.add(key)
            elif key in self._first_copy_failed:
                self._first_copy_failed.discard(key)
                old = "sent"
            else:
                new = "sent"  # the first copy went out
        self._refate({key: (old, new)}, error)


# -- command line --------------------------------------------------------------------------


def _parse_address(text: str) -> tuple[str, int]:
    try:
        return parse_hostport(text, any_port=True)  # a target's port 0: `_target_problem`
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_delay(text: str) -> tuple[float, float]:
    parts = text.split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN[:MAX] seconds, got {text!r}") from None
    if len(values) == 1:
        return values[0], values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(f"expected MIN[:MAX] seconds, got {text!r}")


def _parse_impairment(text: str) -> Impairment:
    """Parse ``loss=0.2,duplicate=0.1,reorder=0.05,delay=0.01:0.05``."""
    values: dict[str, float] = {}
    delay = (0.0, 0.0)
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        try:
            if key == "delay":
                delay = _parse_delay(value)
            elif key in ("loss", "duplicate", "reorder"):
                values[key] = float(value)
            else:
                raise argparse.ArgumentTypeError(f"unknown impairment {key!r}")
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad value in {item!r}") from None
    try:
        return Impairment(delay=delay, **values)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_drop(text: str) -> tuple[Direction, int]:
    direction, sep, index = text.partition(":")
    # ASCII digits only: "²".isdigit() is true, yet int() refuses it.
    if (not sep or direction not in _DIRECTIONS or not (index.isascii() and index.isdigit())
            or int(index) < 1):
        raise argparse.ArgumentTypeError(f"expected client:N or server:N, got {text!r}")
    return ("client" if direction == "client" else "server"), int(index)


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROGRAM,
        description="Lossy UDP proxy for tests (seeded loss, duplication, reordering, delay).",
    )
    parser.program = PROGRAM
    parser.add_argument("--listen", type=_parse_address, default=("127.0.0.1", 0),
                        help="HOST:PORT the client sends to (default 127.0.0.1:0, any port); "
                        "one client: the first source address to send is served, datagrams "
                        "from any other are ignored and counted in the summary and the log "
                        "(so are those from the target's address, or from its port on "
                        "another address of this machine when the target is on it, which "
                        "would loop)")
    parser.add_argument("--target", type=_parse_address, required=True,
                        help="HOST:PORT of the server")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    parser.add_argument("--loss", type=float, default=0.0, help="loss probability")
    parser.add_argument("--duplicate", type=float, default=0.0, help="duplication probability")
    parser.add_argument("--reorder", type=float, default=0.0, help="reordering probability")
    parser.add_argument("--delay", type=_parse_delay, default=(0.0, 0.0),
                        help="delay range in seconds, MIN[:MAX]")
    parser.add_argument("--client-to-server", type=_parse_impairment, default=None,
                        metavar="SPEC", help="the impairments of client-to-server datagrams, "
                        "e.g. loss=0.2,duplicate=0.1,reorder=0.05,delay=0.01:0.05, instead of "
                        "--loss, --duplicate, --reorder and --delay, which then do not apply "
                        "to that direction at all (what SPEC leaves out is 0)")
    parser.add_argument("--server-to-client", type=_parse_impairment, default=None,
                        metavar="SPEC", help="the same for server-to-client datagrams")
    parser.add_argument("--drop", type=_parse_drop, action="append", default=[],
                        metavar="DIR:N", help="drop the N-th datagram sent by DIR "
                        "(client or server); repeatable")
    parser.add_argument("--lifetime", type=float, default=60.0,
                        help="stop after this many seconds (default 60)")
    parser.add_argument("--log-json", default=None, metavar="PATH",
                        help="write the datagram log as JSON to PATH when stopping (every "
                        "datagram received, payload included, is kept in memory until then); "
                        "a run refused at its start leaves PATH as it was")
    return parser


def _log_as_json(proxy: LossyProxy) -> str:
    """The --log-json log: each datagram (with "error" when a copy could not be sent), the
    datagrams ignored, and the failed sends by direction and error name."""
    entries: list[dict[str, Any]] = []
    for d in proxy.snapshot():
        entry: dict[str, Any] = {
            "from": d.direction,
            "index": d.index,
            "fate": d.fate,
            "time": round(d.time, 6),
            "hex": d.data.hex(),
        }
        if d.error is not None:
            entry["error"] = d.error
        entries.append(entry)
    send_errors: dict[str, dict[str, int]] = {}
    for (direction, error), n in sorted(proxy.send_errors.items()):
        send_errors.setdefault(direction, {})[error] = n
    return json.dumps(
        {
            "address": list(proxy.address),
            "ignored": proxy.ignored,
            "ignored_from_target": proxy.ignored_from_target,
            "send_errors": send_errors,
            "datagrams": entries,
        },
        indent=1,
    )


def _summary(proxy: LossyProxy) -> str:
    """The line printed at the stop: each (direction, fate) count ("discarded at stop": still
    delayed or held back at the stop, never sent; "send failed": refused by the kernel, never
    sent), the failed sends by error name, then the datagrams ignored: from strangers, and from
    the target to the listening port."""
    labels = {"discarded": "discarded at stop", "failed": "send failed"}
    parts = [f"{d} {labels.get(f, f)}: {n}" for (d, f), n in sorted(proxy.counts.items())]
    if proxy.send_errors:
        errors = ", ".join(f"{d} {e} {n}" for (d, e), n in sorted(proxy.send_errors.items()))
        parts.append(f"send errors: {errors}")
    if strangers := proxy.ignored - proxy.ignored_from_target:
        parts.append(f"ignored (not from the client or the target): {strangers}")
    if proxy.ignored_from_target:
        parts.append(
            f"ignored (from the target, to the listening port): {proxy.ignored_from_target}"
        )
    return f"stopped; {', '.join(parts) or 'no datagrams'}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run a proxy from the command line until its lifetime ends or SIGINT/SIGTERM."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        proxy = LossyProxy(
            args.target,
            listen=args.listen,
            seed=args.seed,
            loss=args.loss,
            duplicate=args.duplicate,
            reorder=args.reorder,
            delay=args.delay,
            client_to_server=args.client_to_server,
            server_to_client=args.server_to_client,
            drop=args.drop,
            lifetime=args.lifetime,
            keep_log=args.log_json is not None,
        )
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.error(exc.strerror or str(exc))
    if args.log_json:
        # A log that cannot be written is a mistake to hear of before the run. Checked once the
        # proxy is made, and opened to append, not to truncate: a run refused (its target, its
        # port, its flags) leaves an earlier run's log as it was.
        try:
            with open(args.log_json, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            proxy.stop()
            parser.error(f"cannot write the log {args.log_json}: {exc.strerror or exc}")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        proxy.stop(timeout=0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    status = 0
    listening = f"{format_hostport(*proxy.address)} -> {format_hostport(*proxy.target)}"
    if not _print_line(f"listening on {listening}", proxy):
        proxy.stop()
        status = 1
    while not proxy.wait_stopped(0.2):
        pass
    if status == 0 and not _print_line(_summary(proxy), proxy):
        status = 1
    if args.log_json:
        try:
            with open(args.log_json, "w", encoding="utf-8") as out:
                out.write(_log_as_json(proxy))
        except OSError as exc:
            print(f"{PROGRAM}: cannot write the log {args.log_json}: {exc.strerror or exc}",
                  file=sys.stderr)
            status = 1
    return status


def _print_line(line: str, proxy: LossyProxy) -> bool:
    """Print `line` on stdout; False, having said why on stderr in one line, when it cannot
    be (a closed pipe, a full disk, a pipe nobody reads). Neither line waits longer than the
    proxy runs and `_UNREAD_GRACE` seconds more (`_write_line`)."""
    failure = _write_line(sys.stdout, "stdout", line, proxy)
    if failure is None:
        return True
    _write_line(sys.stderr, "stderr", f"{PROGRAM}: cannot print: {failure}", proxy)
    return False


#: How long a line may wait for a stdout or stderr that is not read once the proxy has stopped.
_UNREAD_GRACE = 2.0


def _write_line(stream: TextIO | None, name: str, line: str, proxy: LossyProxy) -> str | None:
    """Write `line` and a newline on `stream` (called `name`): None once written, else why it
    was not.

    A harness that starts the proxy with its output on a pipe it never reads fills the pipe;
    a write on it then blocks, and a main thread blocked there ends neither at the end of
    --lifetime nor on SIGTERM (the handler runs, and the interpreter resumes the write, PEP
    475). So the line is written on the stream's descriptor by a daemon thread while this one
    waits for it, for the proxy's stop (its lifetime, a signal) and then at most
    `_UNREAD_GRACE` seconds; a write still blocked then stays behind and ends with the
    process. Nothing is left in the stream's buffer for the interpreter's flush at exit to
    block or fail on. A stream with no descriptor (a test's capture) is printed to; there is
    none when the process started with that descriptor closed (`2>&-`: Python's sys.stderr is
    None, and print() would have taken stdout for it, blocking on a full one, probe AY)."""
    if stream is None:
        return f"{name} is closed"
    try:
        descriptor = stream.fileno()
    except (AttributeError, ValueError, OSError):  # io.UnsupportedOperation is both
        try:
            print(line, file=stream, flush=True)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None
    data = (line + "\n").encode(stream.encoding or "utf-8", "backslashreplace")
    failures: list[str] = []

    def write() -> None:
        rest = memoryview(data)
        try:
            while rest:
                rest = rest[os.write(descriptor, rest) :]
        except OSError as exc:
            failures.append(exc.strerror or str(exc))

    writer = threading.Thread(target=write, name="iotdtls-proxy-output", daemon=True)
    writer.start()
    deadline = math.inf
    while writer.is_alive():
        writer.join(0.2)
        if deadline == math.inf and not proxy.running:
            deadline = time.monotonic() + _UNREAD_GRACE
        if time.monotonic() >= deadline and writer.is_alive():
            return f"{name} is not being read"
    return failures[0] if failures else None


if __name__ == "__main__":
    sys.exit(main())
