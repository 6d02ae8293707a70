"""Handshake retries with back-off (profile "Raw Public Key Use", RPK-4), in both adapters."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from iotdtls import aio, sync
from iotdtls.config import ClientConfig, RetransmitPolicy, RetryPolicy, ServerConfig
from iotdtls.credentials import PrivateKey
from iotdtls.errors import (
    AlertDescription,
    AlertReceived,
    ConfigError,
    HandshakeTimeout,
    PortUnreachable,
)
from iotdtls.proxy import LossyProxy
from tests.aio_support import echo, eventually
from tests.interop_support import LOCALHOST, ServerThread, client_config, server_config
from tests.peers import Pki, free_udp_port

QUICK = RetryPolicy(attempts=3, initial=0.05, maximum=0.1)
#: Four attempts, so the three waits show the doubling and then the cap: 0.05, 0.1, 0.1 s at most.
CAPPED = RetryPolicy(attempts=4, initial=0.05, maximum=0.1)


@pytest.mark.req("RPK-4")
def test_retry_delays_double_with_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, initial=1.0, maximum=8.0)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = {policy.delay(failures) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, delays)
        assert len(delays) > 1  # jittered, so a fleet does not retry in step
    with pytest.raises(ConfigError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ConfigError, match="initial <= maximum"):
        RetryPolicy(initial=5.0, maximum=1.0)


def refusing_server(pki: Pki) -> ServerThread:
    """A raw-key server that knows no client key: every handshake fails at once."""
    config = ServerConfig(raw_public_key=PrivateKey.load(pki.server_key),
                          client_public_keys=[PrivateKey.generate().spki], cookie_exchange=False)
    return ServerThread(config)


def client(pki: Pki, retry: RetryPolicy | None) -> ClientConfig:
    return ClientConfig(server_public_keys=[pki.server_pub.read_bytes()],
                        raw_public_key=PrivateKey.load(pki.client_key), retry=retry,
                        handshake_timeout=5.0)


def failed_handshakes(server: ServerThread) -> int:
    return sum(line.startswith("handshake failed: peer") for line in server.log_lines)


@pytest.mark.req("RPK-4")
@pytest.mark.parametrize("retry", [None, QUICK], ids=["no-retry", "three-attempts"])
def test_sync_client_makes_the_configured_attempts(pki: Pki, retry: RetryPolicy | None) -> None:
    with refusing_server(pki) as server:
        with pytest.raises(AlertReceived):
            sync.connect(*server.address, client(pki, retry))
        attempts = 1 if retry is None else retry.attempts
        assert server.wait_until(lambda: failed_handshakes(server) >= attempts)
        time.sleep(0.3)  # an attempt too many would have come by now (QUICK waits <= 0.1 s)
        assert failed_handshakes(server) == attempts


@pytest.mark.req("RPK-4")
def test_asyncio_client_makes_the_configured_attempts(pki: Pki) -> None:
    async def attempt() -> None:
        async with aio.connect(*server.address, client(pki, QUICK)):
            pass

    with refusing_server(pki) as server:
        with pytest.raises(AlertReceived):
            asyncio.run(asyncio.wait_for(attempt(), 10.0))
        assert server.wait_until(lambda: failed_handshakes(server) >= QUICK.attempts)
        assert failed_handshakes(server) == QUICK.attempts


def assert_backed_off(waits: list[float], policy: RetryPolicy) -> None:
    """One wait after each failed handshake but the last, the n-th between half and all of
    `initial * 2**(n-1)`, at most `maximum` (RetryPolicy)."""
    assert len(waits) == policy.attempts - 1, waits
    for failures, wait in enumerate(waits, start=1):
        ceiling = min(policy.initial * 2 ** (failures - 1), policy.maximum)
        assert ceiling / 2 <= wait <= ceiling, (failures, waits)


@pytest.mark.req("RPK-4")
def test_sync_client_backs_off_between_attempts(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    wait_for, caller = threading.Condition.wait_for, threading.get_ident()

    def recording_wait_for(
        self: threading.Condition, predicate: Callable[[], bool], timeout: float | None = None
    ) -> bool:
        # The back-off waits on the client's condition, which close() ends early; close()
        # waits on it too, for a reader it woke (CLOSE_WAIT): no back-off.
        backing_off = timeout is not None and timeout != sync.CLOSE_WAIT
        if threading.get_ident() == caller and backing_off:  # not the server's thread
            waits.append(timeout)
        return wait_for(self, predicate, timeout)

    monkeypatch.setattr(threading.Condition, "wait_for", recording_wait_for)
    with refusing_server(pki) as server, pytest.raises(AlertReceived):
        sync.connect(*server.address, client(pki, CAPPED))
    assert_backed_off(waits, CAPPED)


@pytest.mark.req("RPK-4")
def test_asyncio_client_backs_off_between_attempts(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []

    async def attempt() -> None:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later

        def recording_call_later(
            delay: float, callback: Callable[..., object], *args: Any
        ) -> asyncio.TimerHandle:
            if getattr(callback, "__name__", "") == "_restart":  # the next handshake
                waits.append(delay)
            return call_later(delay, callback, *args)

        monkeypatch.setattr(loop, "call_later", recording_call_later)
        async with aio.connect(*server.address, client(pki, CAPPED)):
            pass

    with refusing_server(pki) as server, pytest.raises(AlertReceived):
        asyncio.run(asyncio.wait_for(attempt(), 10.0))
    assert_backed_off(waits, CAPPED)


def silent_server() -> socket.socket:
    """A UDP socket that never answers: every handshake times out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def timing_out(retry: RetryPolicy | None) -> ClientConfig:
    return ClientConfig(psk_identity=b"a", psk=bytes(16), handshake_timeout=0.3, retry=retry)


TIMED_OUT = "handshake timed out after 0.3 s"
TIMED_OUT_THRICE = "handshake timed out after 0.3 s (the last of 3 attempts, each given 0.3 s)"
#: The timeout of a client without retries, and of one with three attempts (`QUICK`).
TIMED_OUT_ONCE_OR_THRICE = pytest.mark.parametrize(
    ("retry", "message"), [(None, TIMED_OUT), (QUICK, TIMED_OUT_THRICE)],
    ids=["no-retry", "three-attempts"],
)


@pytest.mark.req("RPK-4")
@TIMED_OUT_ONCE_OR_THRICE
def test_sync_timeout_after_retries_names_the_attempts(
    retry: RetryPolicy | None, message: str
) -> None:
    """Three attempts of 1 s said "handshake timed out after 1 s" after 3.5 s (probe CA)."""
    with silent_server() as server, pytest.raises(HandshakeTimeout) as failed:
        sync.connect(*server.getsockname(), timing_out(retry))
    assert str(failed.value) == message
    assert failed.value.attempts == (1 if retry is None else 3)


@pytest.mark.req("RPK-4")
@TIMED_OUT_ONCE_OR_THRICE
def test_asyncio_timeout_after_retries_names_the_attempts(
    retry: RetryPolicy | None, message: str
) -> None:
    async def attempt() -> None:
        async with aio.connect(*server.getsockname(), timing_out(retry)):
            pass

    with silent_server() as server, pytest.raises(HandshakeTimeout) as failed:
        asyncio.run(asyncio.wait_for(attempt(), 10.0))
    assert str(failed.value) == message
    assert failed.value.attempts == (1 if retry is None else 3)


def refused(retry: RetryPolicy | None) -> ClientConfig:
    """A client whose handshake a closed port refuses within ~0.1 s (two ICMP reports)."""
    return ClientConfig(psk_identity=b"a", psk=bytes(16), handshake_timeout=10.0, retry=retry,
                        retransmit=RetransmitPolicy(0.05, 0.1))


def refused_thrice(port: int) -> str:
    return (f"nothing listens on {LOCALHOST}:{port}: the network reported the port unreachable "
            "2 times (ICMP) in the last of 3 attempts")


@pytest.mark.req("RPK-4")
@pytest.mark.parametrize("retry", [None, QUICK], ids=["no-retry", "three-attempts"])
def test_sync_refusal_after_retries_names_the_attempts(retry: RetryPolicy | None) -> None:
    """The port unreachable after three attempts said only the last one's ICMP reports, as if
    the client had tried once."""
    port = free_udp_port()
    with pytest.raises(PortUnreachable) as failed:
        sync.connect(LOCALHOST, port, refused(retry))
    once = refused_thrice(port).removesuffix(" in the last of 3 attempts")
    assert str(failed.value) == (once if retry is None else refused_thrice(port))
    assert failed.value.attempts == (1 if retry is None else 3)


@pytest.mark.req("RPK-4")
@pytest.mark.parametrize("retry", [None, QUICK], ids=["no-retry", "three-attempts"])
def test_asyncio_refusal_after_retries_names_the_attempts(retry: RetryPolicy | None) -> None:
    async def attempt() -> None:
        async with aio.connect(LOCALHOST, port, refused(retry)):
            pass

    port = free_udp_port()
    with pytest.raises(PortUnreachable) as failed:
        asyncio.run(asyncio.wait_for(attempt(), 10.0))
    once = refused_thrice(port).removesuffix(" in the last of 3 attempts")
    assert str(failed.value) == (once if retry is None else refused_thrice(port))
    assert failed.value.attempts == (1 if retry is None else 3)


def stalled_client_evicted(retry: RetryPolicy | None) -> tuple[BaseException | None, float]:
    """A server with room for one handshake in progress; an asyncio client whose flight 5 is
    lost (a lossy proxy drops its third datagram) waits, half-open at the server, when a
    second client's handshake evicts it (oldest first). Returns what the first client's
    connect ended with (None: it connected) and how long it took from the eviction."""
    outcome: list[BaseException | None] = []

    async def main() -> float:
        config = server_config(max_handshakes=1)  # the server's flight 4 resent after 1 s
        async with await aio.serve(echo, LOCALHOST, 0, config) as server:
            with LossyProxy(server.address, seed=0, drop={("client", 3)}, lifetime=20) as p:
                slow = client_config(handshake_timeout=30.0, retry=retry)
                first = asyncio.ensure_future(aio.connect(*p.address, slow))
                assert await eventually(lambda: len(p.datagrams("client")) >= 3, 5.0)
                async with aio.connect(*server.address, client_config()):
                    evicted = asyncio.get_running_loop().time()
                    assert server.stats.gate["HANDSHAKE_EVICTED"] == 1
                try:
                    connection = await asyncio.wait_for(first, 10.0)
                    await connection.close()
                    outcome.append(None)
                except (AlertReceived, TimeoutError) as exc:
                    outcome.append(exc)
                took = asyncio.get_running_loop().time() - evicted
                assert await eventually(lambda: server.stats.gate["EVICTION_ALERT_SENT"], 2.0)
                return took

    took = asyncio.run(asyncio.wait_for(main(), 20.0))
    return outcome[0], took


def test_an_evicted_client_fails_at_once_with_internal_error() -> None:
    """End to end (asyncio over UDP): a client whose half-open handshake the server evicted
    (`max_handshakes`) gets internal_error at its next flight (RFC 5246 §7.2.2), and its
    connect raises AlertReceived(internal_error) within a retransmission, not at its 30 s
    handshake timeout (probe BY: 60 s stalled behind a half-open flood)."""
    error, took = stalled_client_evicted(retry=None)
    assert isinstance(error, AlertReceived), error
    assert error.alert is AlertDescription.internal_error
    assert took < 3.0


@pytest.mark.req("RPK-4")
def test_an_evicted_client_with_a_retry_policy_starts_again_and_connects() -> None:
    """The same client with `RetryPolicy` starts a new handshake at once after the alert, and
    connects (the lossy proxy drops only its first flight 5)."""
    error, took = stalled_client_evicted(retry=RetryPolicy(attempts=2, initial=0.05))
    assert error is None
    assert took < 3.0
