"""A suite-wide secret scan (SEC-1): every test runs under a `SecretGuard` (tests/conftest.py).

While a test runs, the guard learns every secret the library handles, where it is made:

* pre-shared keys as configurations take them (`iotdtls.config._check_psk`) and as they enter a
  premaster secret (RFC 4279 §2: `N || 0^N || N || psk`, also keys from `psk_lookup`);
* every PRF secret and output of the key schedule (`iotdtls.crypto.keys.prf`): premaster and
  master secrets, key blocks and the write keys in them (RFC 5246 §6.3, §8.1; RFC 7627 §4);
* record keys (`Ccm8Protector`), long-term and ephemeral private keys (`PrivateKey`,
  `EphemeralKey`: their scalars), cookie secrets (`CookieJar`);
* PSKs given to an `iotdtls` command line (`--psk HEX`, `--psk-file`).

and every text the test produces through the library:

* each log record of the `iotdtls` loggers, formatted (the loggers are at DEBUG meanwhile, so
  every line is produced);
* the message and repr of each exception of `iotdtls.errors` (and the CLI's usage errors);
* the repr and str of every object of the library reachable from the connections, endpoints,
  configurations and events the test made (secrets embedded in other objects' reprs too);
* the output of every `iotdtls` command line the test ran.

At the end of the test each secret (8 bytes or more, not trivially repetitive) is looked for in
each text in every form a careless line could carry: hex in both cases, the bytes repr, the raw
bytes as text, and base64 (standard and URL-safe, at each of the three alignments, so a secret
inside a larger base64 blob is found too). A finding fails the test naming the kind of secret
and where it leaked, never the secret itself.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import logging
import subprocess
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import iotdtls.cli.common
import iotdtls.config
import iotdtls.connection
import iotdtls.crypto.aead
import iotdtls.crypto.ecdhe
import iotdtls.crypto.keys
import iotdtls.crypto.signature
import iotdtls.endpoint
import iotdtls.errors
from iotdtls.config import ClientConfig, ServerConfig
from iotdtls.crypto.prf import HmacSha256
from iotdtls.identity import PskIdentity
from tests.peers import PeerProcess

__all__ = ["SecretGuard", "secret_forms"]

#: Shorter secrets (4-byte IVs, one-byte test keys) cannot be told from chance matches.
MIN_SECRET = 8
#: Every form of a secret is at least this long (8 raw bytes as text, base64 cores >= 8).
PREFIX = 8
#: Roots per kind whose object graphs are walked (the first and the last ones made).
ROOTS_KEPT = 25
#: How deep the walk from a root goes.
MAX_DEPTH = 6


def secret_forms(secret: bytes) -> list[str]:
    """The ways `secret` could show in a text."""
    forms = [secret.hex(), secret.hex().upper(), repr(secret)[2:-1], secret.decode("latin-1")]
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(bytes(pad) + secret).decode()
            # Characters that depend only on the secret, whatever precedes or follows it.
            start = (pad * 4 + 2) // 3 + 1
            end = len(text) - 4
            if end - start >= 8:
                forms.append(text[start:end])
    return forms


def _worth_scanning(secret: bytes) -> bool:
    return len(secret) >= MIN_SECRET and len(set(secret)) >= 4


def _premaster_psk(premaster: bytes) -> bytes | None:
    """The PSK inside a plain-PSK premaster secret (RFC 4279 §2), if `premaster` is one."""
    if len(premaster) < 4:
        return None
    n = int.from_bytes(premaster[:2], "big")
    if len(premaster) != 4 + 2 * n or any(premaster[2 : 2 + n]):
        return None
    return premaster[4 + n :]


class _Capture(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self._sink.append(self.format(record))


class SecretGuard:
    """Collects secrets and texts during one test; `findings()` says what leaked where."""

    def __init__(self) -> None:
        self.secrets: dict[bytes, str] = {}
        self.texts: list[tuple[str, str]] = []
        self._log_lines: list[str] = []
        self._errors: list[BaseException] = []
        self._roots: dict[str, list[object]] = {}

    # -- what is secret -------------------------------------------------------------------------
    def add_secret(self, secret: bytes, kind: str, *, precise: bool = False) -> None:
        """Remember `secret`; a `precise` kind replaces a vaguer one (a record key first seen
        as 16 bytes of a key block)."""
        if isinstance(secret, bytes | bytearray) and _worth_scanning(bytes(secret)):
            if precise:
                self.secrets[bytes(secret)] = kind
            else:
                self.secrets.setdefault(bytes(secret), kind)

    def add_root(self, kind: str, obj: object) -> None:
        roots = self._roots.setdefault(kind, [])
        if len(roots) < ROOTS_KEPT:
            roots.append(obj)
        else:
            roots[ROOTS_KEPT - 1 :] = [obj]  # keep the first ones and the latest

    def add_text(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def install(self, mp: pytest.MonkeyPatch) -> None:
        """Hook the places secrets are made and texts come from (undone by `mp`)."""
        self._hook_key_schedule(mp)
        self._hook_constructors(mp)
        self._hook_errors(mp)
        self._hook_processes(mp)
        handler = _Capture(self._log_lines)
        logger = logging.getLogger("iotdtls")
        mp.setattr(logger, "level", logging.DEBUG)
        logger.addHandler(handler)
        self._handler = handler

    def uninstall(self) -> None:
        logging.getLogger("iotdtls").removeHandler(self._handler)

    def _hook_key_schedule(self, mp: pytest.MonkeyPatch) -> None:
        real_prf = iotdtls.crypto.keys.prf

        def prf(secret: bytes | HmacSha256, label: bytes, seed: bytes, length: int) -> bytes:
            out = real_prf(secret, label, seed, length)
            kind = label.decode("ascii", "replace")
            # A keyed secret is the master secret, already known as the output of its PRF.
            if isinstance(secret, bytes):
                self.add_secret(secret, f"secret of the PRF ({kind})")
                psk = _premaster_psk(secret)
                if psk is not None:
                    self.add_secret(psk, "pre-shared key (from the premaster secret)")
            if length >= 16 and not label.endswith(b"finished"):
                self.add_secret(out, f"PRF output ({kind})")
                for at in range(0, length - 15, 16):
                    self.add_secret(out[at : at + 16], f"16 bytes of the PRF output ({kind})")
            return out

        mp.setattr(iotdtls.crypto.keys, "prf", prf)
        real_check = iotdtls.config._check_psk

        def check_psk(name: str, key: bytes) -> None:
            self.add_secret(key, f"pre-shared key ({name})")
            real_check(name, key)

        mp.setattr(iotdtls.config, "_check_psk", check_psk)
        real_cookie_mac = iotdtls.endpoint.HmacSha256

        def cookie_mac(master: bytes) -> iotdtls.endpoint.HmacSha256:
            self.add_secret(master, "cookie master secret")
            return real_cookie_mac(master)

        mp.setattr(iotdtls.endpoint, "HmacSha256", cookie_mac)

    def _wrap_init(self, mp: pytest.MonkeyPatch, cls: type, after: Callable[[Any], None]) -> None:
        real = cls.__init__

        def init(obj: Any, *args: Any, **kwargs: Any) -> None:
            real(obj, *args, **kwargs)
            after(obj)

        mp.setattr(cls, "__init__", init)

    def _hook_constructors(self, mp: pytest.MonkeyPatch) -> None:
        def scalar(key: Any) -> bytes:
            return int(key.private_numbers().private_value).to_bytes(32, "big")

        real_ccm = iotdtls.crypto.aead.Ccm8Protector.__init__

        def ccm_init(p: Any, key: bytes, implicit_iv: bytes) -> None:
            real_ccm(p, key, implicit_iv)
            self.add_secret(key, "record key", precise=True)
            self.add_root("record protector", p)

        mp.setattr(iotdtls.crypto.aead.Ccm8Protector, "__init__", ccm_init)
        self._wrap_init(
            mp,
            iotdtls.crypto.signature.PrivateKey,
            lambda k: (self.add_secret(scalar(k._key), "private key"), self.add_root("key", k)),
        )
        self._wrap_init(
            mp,
            iotdtls.crypto.ecdhe.EphemeralKey,
            lambda k: self.add_secret(scalar(k._key), "ephemeral ECDH key"),
        )
        for cls in (iotdtls.connection.DtlsConnection, iotdtls.endpoint.ServerEndpoint):
            self._wrap_init(mp, cls, lambda obj, kind=cls.__name__: self.add_root(kind, obj))

    def _hook_errors(self, mp: pytest.MonkeyPatch) -> None:
        classes = (
            iotdtls.errors.ProtocolError,
            iotdtls.errors.DtlsError,
            iotdtls.errors.LocalProtocolError,
            iotdtls.errors.ConfigError,
            iotdtls.cli.common.UsageError,
        )
        for cls in classes:
            real = cls.__init__  # the base class's when cls defines none

            def init(exc: Any, *args: Any, _real: Any = real, **kwargs: Any) -> None:
                _real(exc, *args, **kwargs)
                self._errors.append(exc)

            mp.setattr(cls, "__init__", init)

    def _hook_processes(self, mp: pytest.MonkeyPatch) -> None:
        real_stop = PeerProcess.stop

        def stop(process: PeerProcess) -> int | None:
            status = real_stop(process)
            self.observe_cli(process.argv, process.output)
            return status

        mp.setattr(PeerProcess, "stop", stop)
        real_run = subprocess.run

        def run(args: Any, *rest: Any, **kwargs: Any) -> Any:
            done = real_run(args, *rest, **kwargs)
            if isinstance(args, list | tuple):
                outputs = [o for o in (done.stdout, done.stderr) if o]
                text = "".join(
                    o if isinstance(o, str) else o.decode("utf-8", "replace") for o in outputs
                )
                self.observe_cli([str(a) for a in args], text)
            return done

        mp.setattr(subprocess, "run", run)

    # -- the texts --------------------------------------------------------------------------------
    def observe_cli(self, argv: Iterable[str], output: str) -> None:
        """An `iotdtls` command line that ran: its PSK arguments are secrets, its output a text."""
        args = list(argv)
        if not any(a == "iotdtls" or a.endswith("/iotdtls") for a in args):
            return
        for flag, value in itertools.pairwise(args):
            if flag == "--psk":
                self.add_secret(_hex_or_empty(value), "pre-shared key (--psk)")
            elif flag == "--psk-file":
                for line in _read_lines(value):
                    self.add_secret(_hex_or_empty(line.rpartition(":")[2]), "--psk-file key")
        self.add_text(f"output of {' '.join(args[:4])} ...", output)

    def _all_texts(self) -> Iterator[tuple[str, str]]:
        yield from self.texts
        for line in self._log_lines:
            yield "a log line", line
        for exc in self._errors:
            yield f"a {type(exc).__name__} message", str(exc)
            yield f"a {type(exc).__name__} repr", repr(exc)
        for kind, roots in self._roots.items():
            for obj in _reachable(roots):
                name = type(obj).__name__
                yield f"repr of a {name} (reached from a {kind})", repr(obj)
                yield f"str of a {name} (reached from a {kind})", str(obj)

    def _public_values(self) -> list[bytes]:
        """PSK identities and the client randoms an endpoint keeps of refused hellos (public:
        they travel in clear) the test used. A secret that is part of one (a test may cut its
        key out of the same byte pattern, as bytes(range(32)) holds the test PSK) cannot be
        told apart."""
        public: list[bytes] = []
        for roots in self._roots.values():
            for obj in _reachable(roots):
                if isinstance(obj, PskIdentity):
                    public.append(obj.identity)
                elif isinstance(obj, iotdtls.endpoint._FailedHandshake):
                    public.append(obj.client_random)
                elif isinstance(obj, ClientConfig) and isinstance(obj.psk_identity, bytes):
                    public.append(obj.psk_identity)
                elif isinstance(obj, ServerConfig) and obj.psk_store:
                    public.extend(obj.psk_store)
        return public

    def findings(self) -> list[str]:
        public = self._public_values()
        kind_of: dict[str, str] = {}
        for secret, kind in self.secrets.items():
            if not any(secret in value for value in public):
                for form in secret_forms(secret):
                    kind_of.setdefault(form, kind)
        if not kind_of:
            return []
        # One pass over each distinct text, looking every window of PREFIX characters up.
        by_prefix: dict[str, list[str]] = {}
        for form in kind_of:
            by_prefix.setdefault(form[:PREFIX], []).append(form)
        found: set[str] = set()
        for where, text in set(self._all_texts()):
            form = _first_form(text, by_prefix)
            if form is not None:
                found.add(f"{kind_of[form]} leaks in {where}")
        return sorted(found)


def _first_form(text: str, by_prefix: dict[str, list[str]]) -> str | None:
    for at in range(len(text) - PREFIX + 1):
        for form in by_prefix.get(text[at : at + PREFIX], ()):
            if text.startswith(form, at):
                return form
    return None


def _hex_or_empty(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [line.strip() for line in fh if ":" in line]
    except OSError:
        return []


def _children(obj: object) -> Iterator[object]:
    if isinstance(obj, dict):
        yield from obj.keys()
        yield from obj.values()
    elif isinstance(obj, list | tuple | set | frozenset | deque):
        yield from obj
    else:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            for f in dataclasses.fields(obj):
                yield getattr(obj, f.name, None)
        yield from getattr(obj, "__dict__", {}).values()
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    yield getattr(obj, slot)


def _reachable(roots: list[object]) -> Iterator[object]:
    """Objects of the library reachable from `roots` (each once, bounded depth)."""
    seen: set[int] = set()
    frontier = [(root, 0) for root in roots]
    while frontier:
        obj, depth = frontier.pop()
        if id(obj) in seen or isinstance(obj, str | bytes | bytearray | int | float | type):
            continue
        seen.add(id(obj))
        if type(obj).__module__.startswith("iotdtls"):
            yield obj
        if depth < MAX_DEPTH:
            frontier.extend((child, depth + 1) for child in _children(obj))
