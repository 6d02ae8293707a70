"""Cost of certificate validation in a handshake: iotdtls next to the verifier it is built on.

Run with ``.venv/bin/python benchmarks/bench_x509.py [--runs N]``. For a P-256 leaf issued by
the trust anchor directly and through one intermediate, it times

* `verify_server_chain` (path validation, leaf key and usage checks, RFC 6125 name match) and
  `verify_client_chain` (the same with the EUI-64 instead of the name), and
* `cryptography.x509.verification`'s server verifier alone, on the same DER input (parsing
  included), which is the floor: iotdtls adds its own checks around that call.

Best of five batches of N, in microseconds per chain. The certificates come from tests.pki.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import verification

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from iotdtls.crypto.x509 import (
    DEFAULT_MAX_CHAIN_DEPTH,
    TrustStore,
    verify_client_chain,
    verify_server_chain,
)
from tests import pki

NOW = pki.NOW


def best_microseconds(call: Callable[[], object], runs: int) -> float:
    call()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(runs):
            call()
        best = min(best, (time.perf_counter() - started) / runs)
    return best * 1e6


def bare_verifier(anchor: pki.Issued, chain: tuple[bytes, ...]) -> Callable[[], object]:
    store = verification.Store([anchor.cert])

    def verify() -> object:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
        verifier = (verification.PolicyBuilder().store(store).time(NOW)
                    .build_server_verifier(x509.DNSName("localhost")))
        return verifier.verify(certs[0], certs[1:])

    return verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    runs = parser.parse_args().runs
    print(f"{'chain':<22}{'verify_server_chain':>21}{'verify_client_chain':>21}"
          f"{'cryptography alone':>20}")
    for depth in (0, 1):
        anchor, cas = pki.ca_chain(depth)
        issuer = cas[-1] if cas else anchor
        store = TrustStore([anchor.der])
        server = pki.chain_der(pki.server_leaf(issuer), *reversed(cas))
        client = pki.chain_der(pki.client_leaf(issuer), *reversed(cas))
        limits: dict[str, Any] = {"when": NOW, "max_depth": DEFAULT_MAX_CHAIN_DEPTH}
        figures = (
            best_microseconds(functools.partial(verify_server_chain, server, store,
                                                server_name="localhost", **limits), runs),
            best_microseconds(functools.partial(verify_client_chain, client, store, **limits),
                              runs),
            best_microseconds(bare_verifier(anchor, server), runs),
        )
        label = f"leaf + {depth} intermediate"
        print(f"{label:<22}" + "".join(f"{f:>18.0f} us" for f in figures))


if __name__ == "__main__":
    main()
