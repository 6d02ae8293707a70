"""Handshakes through the project's lossy UDP proxy: 20 % loss, duplication and reordering.

RFC 6347 §4.2.4 makes the handshake reliable over an unreliable datagram transport: whole
flights are retransmitted on a timer with exponential back-off, and the last flight again when
the peer's previous flight shows up once more. Here every handshake runs through
`iotdtls.proxy.LossyProxy` with the same impairments in both directions, seeds 1 to 10:

- iotdtls client against iotdtls server, at the default MTU, and at the smallest MTU with a long
  PSK identity so that the ClientKeyExchange travels in fragments (RFC 6347 §4.2.3): every seed
  must complete the handshake and an echo of application data.
- the same with mutual certificates (ECDHE_ECDSA, a two-certificate chain each way: flights of
  more than one datagram), between iotdtls and iotdtls, and against OpenSSL in each role next to
  the OpenSSL pair with certificates.
- iotdtls against OpenSSL in each role, next to the OpenSSL pair itself as the baseline, all
  in the same run with the same seeds and settings: iotdtls must complete at least as many
  seeds as OpenSSL does with itself (peers.md). A seed of our client against s_server counts
  only once s_server has also printed a line of application data from us (resent once a
  second until it arrives: DTLS does not retransmit application data, RFC 6347 §4.1). With
  s_client as the client the line is tried too, for at most `LINE_BOUND` seconds, and only
  reported (``line_delivered``): s_client sometimes sends nothing after a lossy handshake, a
  behaviour of OpenSSL's that must not decide our comparison either way.

The proxy decides the fate of the n-th datagram of a direction from the seed and the fates
before it, never from timing (see `iotdtls.proxy`), so a seed means the same impairment
pattern for every pair as long as both sides send the same datagrams. The runs of the module
go `MAX_WORKERS` at a time (on distinct ports, each with a proxy and processes of its own, each
bounded by `SEED_DEADLINE`). That bound on concurrency keeps the comparison fair on a small
machine: our runs share one interpreter (and its GIL) while each OpenSSL peer is a process of
its own, so twenty of ours at once would be starved of CPU where OpenSSL is not. Both sides
use RFC 6347's retransmission timer (1 s initial, doubling): OpenSSL's default, and ours
(`RFC6347_RETRANSMIT`).

The counts are printed (``pytest -s``) and written as JSON to the file named by the
``IOTDTLS_LOSSY_RESULTS`` environment variable, or else to a fresh temporary directory of the
test session; the path is printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from iotdtls.config import (
    DEFAULT_MTU,
    MIN_MTU,
    RFC6347_RETRANSMIT,
    ClientConfig,
    ServerConfig,
)
from iotdtls.credentials import CertifiedKey, load_certificate_file
from iotdtls.errors import DtlsError
from iotdtls.proxy import LossyProxy
from iotdtls.sync import DtlsClient
from tests import interop_support
from tests.interop_support import ServerThread, fragmented
from tests.peers import (
    CLIENT_IDENTITY,
    LOCALHOST,
    OPENSSL_CLIENT_HANDSHAKE_DONE,
    OPENSSL_SERVER_HANDSHAKE_DONE,
    OPENSSL_SERVER_READY,
    PSK,
    PeerExited,
    PeerProcess,
    Pki,
    free_udp_port,
    openssl_cert_client,
    openssl_cert_server,
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
#: How long an s_client pair tries to get its line through (reported, not counted).
LINE_BOUND = 10.0
#: Runs at a time (see the module docstring: fairness on two cores, and wall time).
MAX_WORKERS = 8
#: Environment variable naming the JSON results file.
RESULTS_ENV = "IOTDTLS_LOSSY_RESULTS"

@dataclass
class SeedResult:
    """The outcome of one seed for one pair."""

    pair: str
    seed: int
    completed: bool
    seconds: float
    detail: str = ""
    fragmented: bool = False
    line_delivered: bool | None = None


#: A PSK handshake's messages all fit 128 bytes; a long identity (opaque, up to 2^16-1 bytes,
#: RFC 4279 §2) makes the ClientKeyExchange span several fragments at the smallest MTU.
LONG_IDENTITY = (CLIENT_IDENTITY + "/" + "0123456789abcdef" * 25).encode()


def client_config(mtu: int = DEFAULT_MTU, identity: bytes = CLIENT_IDENTITY.encode(),
                  pki: Pki | None = None) -> ClientConfig:
    """The shared test credentials (under `identity`, or the certificates of `pki`), RFC 6347's
    timer, the long deadline."""
    if pki is not None:
        return ClientConfig(
            trust_anchors=load_certificate_file(str(pki.ca_crt)),
            certificate=CertifiedKey.load(str(pki.client_crt), str(pki.client_key)),
            server_name="localhost", mtu=mtu, retransmit=RFC6347_RETRANSMIT,
            handshake_timeout=HANDSHAKE_TIMEOUT)
    return interop_support.client_config(psk_identity=identity, mtu=mtu,
                                         retransmit=RFC6347_RETRANSMIT,
                                         handshake_timeout=HANDSHAKE_TIMEOUT)


def server_config(mtu: int = DEFAULT_MTU, identity: bytes = CLIENT_IDENTITY.encode(),
                  pki: Pki | None = None) -> ServerConfig:
    """The test key under `identity` (or the certificates of `pki`), RFC 6347's timer, the
    long deadline."""
    if pki is not None:
        return ServerConfig(
            certificates=[CertifiedKey.load(str(pki.server_crt), str(pki.server_key))],
            client_trust_anchors=load_certificate_file(str(pki.ca_crt)), mtu=mtu,
            retransmit=RFC6347_RETRANSMIT, handshake_timeout=HANDSHAKE_TIMEOUT)
    return interop_support.server_config(psk_store={identity: PSK}, mtu=mtu,
                                         retransmit=RFC6347_RETRANSMIT,
                                         handshake_timeout=HANDSHAKE_TIMEOUT)


def impaired_proxy(target: tuple[str, int], seed: int) -> LossyProxy:
    return LossyProxy(target, seed=seed, loss=LOSS, duplicate=DUPLICATE, reorder=REORDER,
                      lifetime=SEED_DEADLINE + STARTUP_TIMEOUT)


@contextlib.contextmanager
def started_server(config: ServerConfig) -> Iterator[ServerThread]:
    """Our echo server on a fresh port (`ServerThread` tries another if one is taken), without
    DEBUG logging: twenty runs' worth of log lines would only cost time."""
    with ServerThread(config, capture_log=False) as server:
        yield server


@contextlib.contextmanager
def started_openssl_server(pki: Pki | None = None) -> Iterator[tuple[int, PeerProcess]]:
    """``openssl s_server`` (PSK, or mutual certificates with `pki`; CCM_8) on a fresh port,
    ready to accept."""
    limit = SEED_DEADLINE + 3 * STARTUP_TIMEOUT
    for attempt in range(STARTUP_ATTEMPTS):
        port = free_udp_port()
        peer = (openssl_psk_server(port, time_limit=limit) if pki is None
                else openssl_cert_server(port, pki, time_limit=limit))
        with peer as server:
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
    log = proxy.snapshot()
    return fragmented(log, "client") or fragmented(log, "server")


# -- one seed of one pair ---------------------------------------------------------------------

#: What a finished run reports: seconds from the first datagram to completion, whether
#: fragmented handshake messages went through the proxy, and (s_client pairs only) whether the
#: line of application data reached the server.
Outcome = tuple[float, bool, bool | None]


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


def deliver_line(send: Callable[[str], None], arrived: Callable[[float], bool], seed: int,
                 deadline: float) -> None:
    """Send a line of application data, again each second, until `arrived(timeout)` says the
    server has one (or the deadline passes). Like `echo_round_trip`, the resending is this
    loop's, not the stack's (RFC 6347 §4.1)."""
    attempt = 0
    while time.monotonic() < deadline:
        send(f"seed {seed} line {attempt}")
        attempt += 1
        if arrived(min(1.0, remaining(deadline))):
            return
    raise TimeoutError(f"the server got no line within the deadline ({attempt} sent)")


def printed(peer: PeerProcess, seed: int) -> Callable[[float], bool]:
    """Whether `peer` (s_server) prints a line of `deliver_line` within the timeout."""
    pattern = re.compile(rf"seed {seed} line \d+")

    def check(timeout: float) -> bool:
        try:
            peer.wait_for_output(pattern, timeout)
        except TimeoutError:
            return False
        return True

    return check


def received_line(server: ServerThread) -> Callable[[float], bool]:
    """Whether our server receives a line of `deliver_line` within the timeout."""
    return lambda timeout: server.wait_until(lambda: bool(server.received), timeout)


def iotdtls_pair(seed: int, mtu: int, identity: bytes, pki: Pki | None = None) -> Outcome:
    """Our blocking client, the proxy, our asyncio server: handshake, then one echo."""
    with started_server(server_config(mtu, identity, pki)) as server, \
            impaired_proxy(server.address, seed) as proxy:
        start = time.monotonic()
        deadline = start + SEED_DEADLINE
        client = DtlsClient(*proxy.address, client_config(mtu, identity, pki))
        try:
            client.handshake()
            if not server.handshake_done.wait(remaining(deadline)):
                raise TimeoutError("the server did not complete its handshake")
            echo_round_trip(client, seed, deadline)
        finally:
            client.close()
        return time.monotonic() - start, saw_fragment(proxy), None


def iotdtls_client_openssl_server(seed: int, pki: Pki | None = None) -> Outcome:
    """Our blocking client, the proxy, s_server: handshake, then a line s_server prints."""
    with started_openssl_server(pki) as (port, server), \
            impaired_proxy((LOCALHOST, port), seed) as proxy:
        start = time.monotonic()
        deadline = start + SEED_DEADLINE
        client = DtlsClient(*proxy.address, client_config(pki=pki))
        try:
            client.handshake()
            server.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, remaining(deadline))
            deliver_line(lambda line: client.send(line.encode() + b"\n"),
                         printed(server, seed), seed, deadline)
        finally:
            client.close()
        return time.monotonic() - start, saw_fragment(proxy), None


def try_line(send: Callable[[str], None], arrived: Callable[[float], bool], seed: int) -> bool:
    """`deliver_line` for at most `LINE_BOUND` seconds; whether the line arrived."""
    try:
        deliver_line(send, arrived, seed, time.monotonic() + LINE_BOUND)
    except (TimeoutError, PeerExited, OSError):
        return False
    return True


def openssl_client(port: int, pki: Pki | None) -> PeerProcess:
    """``openssl s_client`` with PSK, or with the client certificate of `pki`."""
    limit = SEED_DEADLINE + STARTUP_TIMEOUT
    if pki is None:
        return openssl_psk_client(port, time_limit=limit)
    return openssl_cert_client(port, pki, time_limit=limit)


def openssl_client_iotdtls_server(seed: int, pki: Pki | None = None) -> Outcome:
    """s_client, the proxy, our asyncio server: handshake, then a line our server receives."""
    with started_server(server_config(pki=pki)) as server, \
            impaired_proxy(server.address, seed) as proxy:
        start = time.monotonic()
        deadline = start + SEED_DEADLINE
        with openssl_client(proxy.address[1], pki) as client:
            client.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, SEED_DEADLINE)
            if not server.handshake_done.wait(remaining(deadline)):
                raise TimeoutError("the iotdtls server did not complete its handshake")
            seconds = time.monotonic() - start
            line = try_line(client.write_line, received_line(server), seed)
        return seconds, saw_fragment(proxy), line


def openssl_pair(seed: int, pki: Pki | None = None) -> Outcome:
    """The baseline: s_client, the proxy, s_server, same seed and impairments, same line."""
    with started_openssl_server(pki) as (port, server), \
            impaired_proxy((LOCALHOST, port), seed) as proxy:
        start = time.monotonic()
        deadline = start + SEED_DEADLINE
        with openssl_client(proxy.address[1], pki) as client:
            client.wait_for_output(OPENSSL_CLIENT_HANDSHAKE_DONE, SEED_DEADLINE)
            server.wait_for_output(OPENSSL_SERVER_HANDSHAKE_DONE, remaining(deadline))
            seconds = time.monotonic() - start
            line = try_line(client.write_line, printed(server, seed), seed)
        return seconds, saw_fragment(proxy), line


Scenario = Callable[[int], Outcome]


def scenarios(pki: Pki) -> dict[str, Scenario]:
    """Our own pairs: PSK at the default MTU and fragmented, and mutual certificates."""
    return {
        "iotdtls/iotdtls": lambda seed: iotdtls_pair(seed, DEFAULT_MTU, CLIENT_IDENTITY.encode()),
        "iotdtls/iotdtls-fragmented": lambda seed: iotdtls_pair(seed, MIN_MTU, LONG_IDENTITY),
        "iotdtls/iotdtls-x509": lambda seed: iotdtls_pair(seed, DEFAULT_MTU, b"", pki),
    }


def openssl_scenarios(pki: Pki) -> dict[str, Scenario]:
    """The pairs with OpenSSL and their baselines, with PSK and with mutual certificates."""
    return {
        "iotdtls-client/openssl-server": iotdtls_client_openssl_server,
        "openssl-client/iotdtls-server": openssl_client_iotdtls_server,
        "openssl-client/openssl-server": openssl_pair,
        "iotdtls-client/openssl-server-x509":
            lambda seed: iotdtls_client_openssl_server(seed, pki),
        "openssl-client/iotdtls-server-x509":
            lambda seed: openssl_client_iotdtls_server(seed, pki),
        "openssl-client/openssl-server-x509": lambda seed: openssl_pair(seed, pki),
    }


BASELINE = "openssl-client/openssl-server"


def run_seed(pair: str, seed: int, scenario: Scenario) -> SeedResult:
    """Run one seed; a timeout, an early exit of a peer or a DTLS error is a failed seed."""
    start = time.monotonic()
    try:
        seconds, fragmented, line = scenario(seed)
    except (TimeoutError, PeerExited, DtlsError, OSError) as exc:
        detail = f"{type(exc).__name__}: {str(exc)[:400]}"
        return SeedResult(pair, seed, False, time.monotonic() - start, detail)
    return SeedResult(pair, seed, True, seconds, fragmented=fragmented, line_delivered=line)


# -- all runs at once -------------------------------------------------------------------------


def interop_selected(session: pytest.Session) -> bool:
    """Whether any selected test of this module needs the OpenSSL runs."""
    here = Path(__file__)
    return any(
        item.path == here and item.get_closest_marker("interop") is not None
        for item in session.items
    )


def run_all(scenarios: dict[str, Scenario]) -> dict[str, list[SeedResult]]:
    """Every seed of every scenario, `MAX_WORKERS` at a time.

    Every run bounds itself (`SEED_DEADLINE`, startup timeouts, the peers' time limits, the
    proxy's lifetime); the overall deadline is a safety net: a run still going then counts as
    failed, and the pool is left without waiting for it (its threads are daemons)."""
    jobs = [(pair, seed, fn) for pair, fn in scenarios.items() for seed in SEEDS]
    bound = SEED_DEADLINE + 4 * STARTUP_TIMEOUT
    rounds = -(-len(jobs) // MAX_WORKERS)
    overall = time.monotonic() + rounds * bound
    results: dict[str, list[SeedResult]] = {pair: [] for pair in scenarios}
    pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="seed")
    futures: list[tuple[str, int, Future[SeedResult]]] = []
    try:
        futures = [(pair, seed, pool.submit(run_seed, pair, seed, fn))
                   for pair, seed, fn in jobs]
        for pair, seed, future in futures:
            try:
                results[pair].append(future.result(timeout=remaining(overall)))
            except FutureTimeout:
                results[pair].append(SeedResult(pair, seed, False, bound, "run did not end"))
    finally:
        hung = any(not future.done() for _, _, future in futures)
        pool.shutdown(wait=not hung, cancel_futures=True)
    return results


def report(results: dict[str, list[SeedResult]], path: Path) -> None:
    """Print the counts and write them, with every seed's outcome, to `path` (JSON)."""
    counts = {pair: sum(r.completed for r in rs) for pair, rs in results.items()}
    print(f"\nlossy handshakes (loss {LOSS}, duplication {DUPLICATE}, reordering {REORDER}, "
          f"seeds {SEEDS.start}..{SEEDS.stop - 1}, {SEED_DEADLINE:.0f} s each, "
          f"{MAX_WORKERS} at a time):")
    for pair, rs in results.items():
        times = " ".join(f"{r.seconds:.1f}" if r.completed else "FAIL" for r in rs)
        lines = [r.line_delivered for r in rs if r.line_delivered is not None]
        note = f"  (line delivered {sum(lines)}/{len(lines)})" if lines else ""
        print(f"  {pair:32} {counts[pair]:2}/{len(rs)}  [{times}]{note}")
    path.write_text(json.dumps({
        "loss": LOSS, "duplicate": DUPLICATE, "reorder": REORDER,
        "seeds": list(SEEDS), "seed_deadline_s": SEED_DEADLINE, "max_workers": MAX_WORKERS,
        "counts": counts,
        "runs": {pair: [asdict(r) for r in rs] for pair, rs in results.items()},
    }, indent=2))
    print(f"  results written to {path}")


def results_path(factory: pytest.TempPathFactory) -> Path:
    """The JSON file named by ``$IOTDTLS_LOSSY_RESULTS``, else one in a fresh temp dir."""
    named = os.environ.get(RESULTS_ENV)
    if named:
        return Path(named)
    return factory.mktemp("lossy-interop") / "results.json"


@pytest.fixture(scope="module")
def lossy_results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  pki: Pki) -> Iterator[dict[str, list[SeedResult]]]:
    """Every seed of every pair, run concurrently once for the module."""
    selected = scenarios(pki)
    if shutil.which("openssl") is not None and interop_selected(request.session):
        selected.update(openssl_scenarios(pki))
    results = run_all(selected)
    report(results, results_path(tmp_path_factory))
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


@pytest.mark.req("HS-3", "HS-4", "CRT-1")
def test_iotdtls_pair_with_certificates_completes_every_seed(
    lossy_results: dict[str, list[SeedResult]],
) -> None:
    results = lossy_results["iotdtls/iotdtls-x509"]
    assert len(results) == len(SEEDS)
    assert failures(results) == []


def completions(lossy_results: dict[str, list[SeedResult]], pair: str) -> tuple[int, int]:
    """(completed seeds of `pair`, completed seeds of the OpenSSL pair of the same mode)."""
    require_peer("openssl")
    baseline_pair = BASELINE + ("-x509" if pair.endswith("-x509") else "")
    assert pair in lossy_results and baseline_pair in lossy_results
    ours = sum(r.completed for r in lossy_results[pair])
    baseline = sum(r.completed for r in lossy_results[baseline_pair])
    print(f"\n{pair}: {ours}/{len(SEEDS)}; {baseline_pair}: {baseline}/{len(SEEDS)}")
    return ours, baseline


@pytest.mark.interop
@pytest.mark.req("HS-4")
@pytest.mark.parametrize("pair", [
    "iotdtls-client/openssl-server", "openssl-client/iotdtls-server",
    pytest.param("iotdtls-client/openssl-server-x509", marks=pytest.mark.req("CRT-1")),
    pytest.param("openssl-client/iotdtls-server-x509", marks=pytest.mark.req("CRT-1")),
])
def test_mixed_pair_as_good_as_openssl(
    lossy_results: dict[str, list[SeedResult]], pair: str
) -> None:
    ours, baseline = completions(lossy_results, pair)
    assert ours >= baseline, failures(lossy_results[pair])
    assert ours > 0
