"""coaps through the lossy proxy: CoAP's confirmable retransmission (RFC 7252 §4.2) and DTLS's
handshake retransmission (RFC 6347 §4.2.4) at work together, seeds 1 to 10.

Each seed puts `iotdtls.proxy.LossyProxy` (20 % loss, duplication and reordering each way, the
fates of the n-th datagram of a direction fixed by the seed) between an aiocoap client on
iotdtls and our coaps server; the client completes its handshake and then `REQUESTS` confirmable
GETs, one of them block-wise. DTLS does not retransmit application data (RFC 6347 §4.1): a lost
request or response is CoAP's to resend, and a duplicated record is dropped by the replay
window before CoAP's deduplication would see it. All ten seeds run at once in one event loop
(one server, ten proxies, ten clients), each bounded by `SEED_DEADLINE`.

CoAP's timers are tuned for loopback (`LoopbackTuning`, RFC 7252 §4.8.1 lets them be changed):
ACK_TIMEOUT 0.5 s, as the round trip here is far below a millisecond, and MAX_RETRANSMIT 8,
since with 20 % loss each way 36 % of exchanges are lost, and RFC 7252's 4 retransmissions would
fail a request once in 160 (0.36^5); with 8, once in 10^4.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiocoap
import pytest
from aiocoap.numbers.constants import TransportTuning

from iotdtls.proxy import LoggedDatagram, LossyProxy
from tests.coap_support import LARGE, coaps_client, coaps_server, run, uri
from tests.interop_support import APPLICATION_DATA, HANDSHAKE, records

SEEDS = range(1, 11)
LOSS = DUPLICATE = REORDER = 0.2
#: GETs per seed: /hello, /large (4 KiB: four 1 KiB blocks, each its own exchange), /hello.
PATHS = ("hello", "large", "hello")
REQUESTS = 2 + 4
SEED_DEADLINE = 45.0


class LoopbackTuning(TransportTuning):
    """CoAP's confirmable timers for the loopback tests (see the module docstring)."""

    ACK_TIMEOUT = 0.5
    MAX_RETRANSMIT = 8


@dataclass
class SeedResult:
    seed: int
    seconds: float
    remotes: int
    client_app_data: int
    client_handshake_datagrams: int


def count(log: list[LoggedDatagram], direction: str, content_type: int) -> int:
    """Datagrams `direction` sent that carry a record of `content_type`."""
    return sum(1 for d in log if d.direction == direction
               and any(r[0] == content_type for r in records(d.data)))


async def one_seed(server_address: tuple[Any, ...], seed: int) -> SeedResult:
    with LossyProxy(server_address, seed=seed, loss=LOSS, duplicate=DUPLICATE, reorder=REORDER,
                    lifetime=SEED_DEADLINE + 10.0) as proxy:
        started = time.monotonic()
        async with coaps_client(handshake_timeout=SEED_DEADLINE) as client:
            remotes = set()
            for path in PATHS:
                message = aiocoap.Message(code=aiocoap.GET, uri=uri(proxy.address, path),
                                          transport_tuning=LoopbackTuning())
                response = await client.request(message).response
                assert response.code == aiocoap.CONTENT, (seed, path, response)
                if path == "large":
                    assert response.payload == LARGE, seed
                remotes.add(id(response.remote))
            seconds = time.monotonic() - started
        log = proxy.snapshot()
    return SeedResult(seed, seconds, len(remotes), count(log, "client", APPLICATION_DATA),
                      count(log, "client", HANDSHAKE))


@pytest.mark.req("COAP-1")
def test_coap_and_dtls_retransmission_together_seeds_1_to_10() -> None:
    results: list[SeedResult] = []

    async def main() -> None:
        async with coaps_server() as server:
            runs = [asyncio.wait_for(one_seed(server.address, seed), SEED_DEADLINE)
                    for seed in SEEDS]
            results.extend(await asyncio.gather(*runs))

    run(main(), limit=SEED_DEADLINE + 15.0)
    for r in results:
        print(f"seed {r.seed:2d}: {r.seconds:5.1f} s, client sent {r.client_app_data} "
              f"application-data and {r.client_handshake_datagrams} handshake datagrams")
    assert [r.seed for r in results] == list(SEEDS)
    assert all(r.remotes == 1 for r in results)  # one association per seed throughout
    # Both mechanisms were needed: CoAP resent requests (a clean run sends one datagram per
    # request), DTLS resent flights (a clean PSK handshake is three client datagrams).
    assert sum(r.client_app_data for r in results) > REQUESTS * len(SEEDS)
    assert any(r.client_handshake_datagrams > 3 for r in results)
