"""Handshakes through the project's lossy UDP proxy: 20 % loss, duplication and reordering.

RFC 6347 §4.2.4 makes the handshake reliable over an unreliable datagram transport: whole
flights are retransmitted on a timer with exponential back-off, and the last flight again when
the peer's previous flight shows up once more. Here every handshake runs through
`iotdtls.proxy.LossyProxy` with the same impairments in both directions, seeds 1 to 10:

- iotdtls client against iotdtls server, at the default MTU, and at the smallest MTU with a long
  PSK identity so that the ClientKeyExchange travels in fragments (RFC 6347 §4.2.3): every seed
  must complete the handshake and an echo of application data.
- iotdtls against OpenSSL in each role, next to the OpenSSL pair itself as the baseline, all
  in the same run with the same seeds and settings: iotdtls must complete at least as many
  seeds as OpenSSL does with itself (peers.md).

The proxy decides the fate of the n-th datagram of a direction from the seed and n alone, so a
seed means the same impairment pattern for every pair. All runs of the module go at once (on
distinct ports, each with a proxy and processes of its own, each bounded by `SEED_DEADLINE`) so
the module takes about as long as its slowest run. Both sides use RFC 6347's retransmission
timer (1 s initial, doubling): OpenSSL's default, and ours (`RFC6347_RETRANSMIT`).

The counts are printed (``pytest -s``) and written to `RESULTS_JSON`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from iotdtls import aio
from iotdtls._buffer import Reader
from iotdtls.config import (
    DEFAULT_MTU,
    MIN_MTU,
    RFC6347_RETRANSMIT,
    ClientConfig,
    ServerConfig,
)
from iotdtls.errors import DtlsError
from iotdtls.messages import HANDSHAKE_HEADER_LEN, HandshakeHeader
from iotdtls.proxy import LossyProxy
from iotdtls.record import ContentType, split_datagram
from iotdtls.sync import DtlsClient
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    OPENSSL_CLIENT_HANDSHAKE_DONE,
    OPENSSL_SERVER_HANDSHAKE_DONE,
    OPENSSL_SERVER_READY,
    PSK,
    PeerExited,
    PeerProcess,
    free_udp_port,
    openssl_psk_client,
    openssl_psk_server,
    require_peer,
)

SEEDS = range(1, 11)
LOSS = DUPLICATE = REORDER = 0.2
#: Wall-clock bound of one seed's run, handshake and echo included.
SEED_DEADLINE = 60.0
#: Our handshake deadline: the same budget as the run.
HANDSHAKE_TIMEOUT = 60.0
#: Time to wait for a process or a server to be ready (not part of the seed's budget).
STARTUP_TIMEOUT = 10.0
#: Ports to try when a freshly chosen one turns out to be taken (by a parallel test process).
STARTUP_ATTEMPTS = 3
RESULTS_JSON = Path("/tmp/iotdtls-lossy-interop.json")



@dataclass
class SeedResult:
    """The outcome of one seed for one pair."""

    pair: str
    seed: int
    completed: bool
    seconds: float
    detail: str = ""
    fragmented: bool = False


#: A PSK handshake's messages all fit 128 bytes; a long identity (opaque, up to 2^16-1 bytes,
#: RFC 4279 §2) makes the ClientKeyExchange span several fragments at the smallest MTU.
LONG_IDENTITY = (CLIENT_IDENTITY + "/" + "0123456789abcdef" * 25).encode()


def client_config(mtu: int = DEFAULT_MTU, identity: bytes = CLIENT_IDENTITY.encode(),
                  ) -> ClientConfig:
    return ClientConfig(psk_identity=identity, psk=PSK, mtu=mtu, retransmit=RFC6347_RETRANSMIT,
                        handshake_timeout=HANDSHAKE_TIMEOUT)


def server_config(mtu: int = DEFAULT_MTU, identity: bytes = CLIENT_IDENTITY.encode(),
                  ) -> ServerConfig:
    return ServerConfig(psk_store={identity: PSK}, mtu=mtu, retransmit=RFC6347_RETRANSMIT,
                        handshake_timeout=HANDSHAKE_TIMEOUT)


def impaired_proxy(target: tuple[str, int], seed: int) -> LossyProxy:
    return LossyProxy(target, seed=seed, loss=LOSS, duplicate=DUPLICATE, reorder=REORDER,
                      lifetime=SEED_DEADLINE + STARTUP_TIMEOUT)


class ThreadedServer:
    """`iotdtls.aio.serve` with an echo handler, on its own event loop in a thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.port = 0
        self.address = (LOCALHOST, 0)
        self.handshake_done = threading.Event()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread()

    def __enter__(self) -> ThreadedServer:
        for _ in range(STARTUP_ATTEMPTS):  # another process may grab a free port first
            self.port = free_udp_port()
            self.address = (LOCALHOST, self.port)
            self._ready.clear()
            self._failure = None
            self._thread = threading.Thread(target=self._main, name=f"server-{self.port}",
                                            daemon=True)
            self._thread.start()
            started = self._ready.wait(STARTUP_TIMEOUT)
            if started and self._failure is None:
                return self
            self.stop()
            if not isinstance(self._failure, OSError):
                break
        raise RuntimeError(f"iotdtls server did not start: {self._failure!r}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await aio.serve(self._echo, LOCALHOST, self.port, self.config)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await server.close()

    async def _echo(self, session: aio.ServerSession) -> None:
        self.handshake_done.set()
        async for datagram in session:
            session.send(datagram)

    def stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just finished
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(5.0)


@contextlib.contextmanager
def started_openssl_server() -> Iterator[tuple[int, PeerProcess]]:
    """``openssl s_server`` (PSK, CCM_8) on a fresh port, ready to accept."""
    for attempt in range(STARTUP_ATTEMPTS):
        port = free_udp_port()
        with openssl_psk_server(port, time_limit=SEED_DEADLINE + 3 * STARTUP_TIMEOUT) as server:
            try:
                server.wait_for_output(OPENSSL_SERVER_READY, STARTUP_TIMEOUT)
            except PeerExited:
                if attempt + 1 == STARTUP_ATTEMPTS:
                    raise
                continue  # the port was taken meanwhile: try another one
            yield port, server
            return


def saw_fragment(proxy: LossyProxy) -> bool:
    """Whether a plaintext handshake record through the proxy carried a partial message."""
    for logged in proxy.snapshot():
        records, _ = split_datagram(logged.data)
        for record, payload in records:
            if record.content_type != ContentType.handshake or record.epoch != 0:
                continue
            if len(payload) < HANDSHAKE_HEADER_LEN:
                continue
            header = HandshakeHeader.decode(Reader(payload))
            if header.fragment_length < header.length:
                return True
    return False


# -- one seed of one pair ---------------------------------------------------------------------

#: What a finished run reports: seconds from the first datagram to completion, and whether
#: fragmented handshake messages went through the proxy.
Outcome = tuple[float, bool]


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def echo_round_trip(client: DtlsClient, seed: int, deadline: float) -> None:
    """Send a datagram and wait up to 1 s for its echo; repeat until one comes back.

    Application data is not retransmitted by DTLS (RFC 6347 §4.1), so a lost datagram or echo
    is sent again by this loop, never by the stack."""
    sent: set[bytes] = set()
    while time.monotonic() < deadline:
        message = b"seed %d datagram %d" % (seed, len(sent))
        sent.add(message)
        client.send(message)
        attempt_ends = min(deadline, time.monotonic() + 1.0)
        while (reply := client.recv(timeout=remaining(attempt_ends))) is not None:
            if reply in sent:
                return
    raise TimeoutError(f"no echo within the deadline after {len(sent)} datagrams")


def iotdtls_pair(seed: int, mtu: int, identity: bytes) -> Outcome:
    """Our blocking client, the proxy, our asyncio server: handshake, then one echo."""
    with ThreadedServer(server_config(mtu, identity)) as server, \
            impaired_proxy(server.address, seed) as proxy:
        start = time.monotonic()
        deadline = start + SEED_DEADLINE
        client = DtlsClient(*proxy.address, client_config(mtu, identity))
        try:
            client.handshake()
            if not server.handshake_done.wait(remaining(deadline)):
                raise TimeoutError("the server did not complete its handshake")
            echo_round_trip(client, seed, deadline)
        finally:
            client.close()
        return time.monotonic() - start, saw_fragment(proxy)


def iotdtls_client_openssl_server(seed: int) -> Outcome:
    with started_openssl_server() as (port, server), \
            impaired_proxy((LOCALHOST, port), seed) as proxy:
        start = time.monotonic()
        client = DtlsClient(*proxy.address, client_config())
        try:
            client.handshake()
            server.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE,
                                   remaining(start + SEED_DEADLINE))
        finally:
            client.close()
        return time.monotonic() - start, saw_fragment(proxy)


def openssl_client_iotdtls_server(seed: int) -> Outcome:
    with ThreadedServer(server_config()) as server, \
            impaired_proxy(server.address, seed) as proxy:
        start = time.monotonic()
        with openssl_psk_client(proxy.address[1],
                                time_limit=SEED_DEADLINE + STARTUP_TIMEOUT) as client:
            client.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, SEED_DEADLINE)
            if not server.handshake_done.wait(remaining(start + SEED_DEADLINE)):
                raise TimeoutError("the iotdtls server did not complete its handshake")
        return time.monotonic() - start, saw_fragment(proxy)


def openssl_pair(seed: int) -> Outcome:
    """The baseline: s_client, the proxy, s_server, same seed and impairments."""
    with started_openssl_server() as (port, server), \
            impaired_proxy((LOCALHOST, port), seed) as proxy:
        start = time.monotonic()
        with openssl_psk_client(proxy.address[1],
                                time_limit=SEED_DEADLINE + STARTUP_TIMEOUT) as client:
            client.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, SEED_DEADLINE)
            server.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE,
                                   remaining(start + SEED_DEADLINE))
        return time.monotonic() - start, saw_fragment(proxy)


Scenario = Callable[[int], Outcome]
SCENARIOS: dict[str, Scenario] = {
    "iotdtls/iotdtls": lambda seed: iotdtls_pair(seed, DEFAULT_MTU, CLIENT_IDENTITY.encode()),
    "iotdtls/iotdtls-fragmented": lambda seed: iotdtls_pair(seed, MIN_MTU, LONG_IDENTITY),
}
OPENSSL_SCENARIOS: dict[str, Scenario] = {
    "iotdtls-client/openssl-server": iotdtls_client_openssl_server,
    "openssl-client/iotdtls-server": openssl_client_iotdtls_server,
    "openssl-client/openssl-server": openssl_pair,
}
BASELINE = "openssl-client/openssl-server"


def run_seed(pair: str, seed: int, scenario: Scenario) -> SeedResult:
    """Run one seed; a timeout, an early exit of a peer or a DTLS error is a failed seed."""
    start = time.monotonic()
    try:
        seconds, fragmented = scenario(seed)
    except (TimeoutError, PeerExited, DtlsError, OSError) as exc:
        detail = f"{type(exc).__name__}: {str(exc)[:400]}"
        return SeedResult(pair, seed, False, time.monotonic() - start, detail)
    return SeedResult(pair, seed, True, seconds, fragmented=fragmented)


# -- all runs at once -------------------------------------------------------------------------


def interop_selected(session: pytest.Session) -> bool:
    """Whether any selected test of this module needs the OpenSSL runs."""
    here = Path(__file__)
    return any(
        item.path == here and item.get_closest_marker("interop") is not None
        for item in session.items
    )


def run_all(scenarios: dict[str, Scenario]) -> dict[str, list[SeedResult]]:
    jobs = [(pair, seed, fn) for pair, fn in scenarios.items() for seed in SEEDS]
    bound = SEED_DEADLINE + 4 * STARTUP_TIMEOUT
    results: dict[str, list[SeedResult]] = {pair: [] for pair in scenarios}
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="seed") as pool:
        futures = [(pair, seed, pool.submit(run_seed, pair, seed, fn)) for pair, seed, fn in jobs]
        for pair, seed, future in futures:
            try:
                results[pair].append(future.result(timeout=bound))
            except TimeoutError:
                results[pair].append(SeedResult(pair, seed, False, bound, "run did not end"))
    return results


def report(results: dict[str, list[SeedResult]]) -> None:
    """Print the counts and write them, with every seed's outcome, to `RESULTS_JSON`."""
    counts = {pair: sum(r.completed for r in rs) for pair, rs in results.items()}
    print(f"\nlossy handshakes (loss {LOSS}, duplication {DUPLICATE}, reordering {REORDER}, "
          f"seeds {SEEDS.start}..{SEEDS.stop - 1}, {SEED_DEADLINE:.0f} s each):")
    for pair, rs in results.items():
        times = " ".join(f"{r.seconds:.1f}" if r.completed else "FAIL" for r in rs)
        print(f"  {pair:32} {counts[pair]:2}/{len(rs)}  [{times}]")
    RESULTS_JSON.write_text(json.dumps({
        "loss": LOSS, "duplicate": DUPLICATE, "reorder": REORDER,
        "seeds": list(SEEDS), "seed_deadline_s": SEED_DEADLINE,
        "counts": counts,
        "runs": {pair: [asdict(r) for r in rs] for pair, rs in results.items()},
    }, indent=2))


@pytest.fixture(scope="module")
def lossy_results(request: pytest.FixtureRequest) -> Iterator[dict[str, list[SeedResult]]]:
    """Every seed of every pair, run concurrently once for the module."""
    scenarios = dict(SCENARIOS)
    if shutil.which("openssl") is not None and interop_selected(request.session):
        scenarios.update(OPENSSL_SCENARIOS)
    results = run_all(scenarios)
    report(results)
    yield results


def failures(results: list[SeedResult]) -> list[str]:
    return [f"seed {r.seed}: {r.detail}" for r in results if not r.completed]


# -- the tests --------------------------------------------------------------------------------


@pytest.mark.req("HS-4")
def test_iotdtls_pair_completes_every_seed(lossy_results: dict[str, list[SeedResult]]) -> None:
    results = lossy_results["iotdtls/iotdtls"]
    assert len(results) == len(SEEDS)
    assert failures(results) == []
    assert all(r.seconds < SEED_DEADLINE for r in results)


@pytest.mark.req("HS-3", "HS-4")
def test_iotdtls_pair_with_fragments_completes_every_seed(
    lossy_results: dict[str, list[SeedResult]],
) -> None:
    results = lossy_results["iotdtls/iotdtls-fragmented"]
    assert len(results) == len(SEEDS)
    assert failures(results) == []
    # At MTU 128 the ClientKeyExchange with its long identity really went in fragments.
    assert all(r.fragmented for r in results)


def completions(lossy_results: dict[str, list[SeedResult]], pair: str) -> tuple[int, int]:
    """(completed seeds of `pair`, completed seeds of the OpenSSL pair)."""
    require_peer("openssl")
    assert pair in lossy_results and BASELINE in lossy_results
    ours = sum(r.completed for r in lossy_results[pair])
    baseline = sum(r.completed for r in lossy_results[BASELINE])
    print(f"\n{pair}: {ours}/{len(SEEDS)}; {BASELINE}: {baseline}/{len(SEEDS)}")
    return ours, baseline


@pytest.mark.interop
@pytest.mark.req("HS-4")
@pytest.mark.parametrize("pair", ["iotdtls-client/openssl-server", "openssl-client/iotdtls-server"])
def test_mixed_pair_as_good_as_openssl(
    lossy_results: dict[str, list[SeedResult]], pair: str
) -> None:
    ours, baseline = completions(lossy_results, pair)
    assert ours >= baseline, failures(lossy_results[pair])
    assert ours > 0
