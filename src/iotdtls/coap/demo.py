"""The demo site of `iotdtls coap serve`: `/.well-known/core` (RFC 6690), a text resource
`/hello` that greets the client by its authenticated identity, `/counter`, a counter of
seconds (by default) that observers (RFC 7641) are notified of at every tick, and `/temp`, a
number a client PUTs as text and GETs back. Each evaluates If-Match and If-None-Match (RFC 7252
§5.10.8, `iotdtls.coap.preconditions`), which aiocoap leaves to the resource: `/temp` by the
ETag of its reading, the others as resources that always exist and have no ETag."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import time

from aiocoap import resource
from aiocoap.message import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.contentformat import ContentFormat

from iotdtls.coap.preconditions import EvaluatesPreconditions
from iotdtls.identity import PskIdentity

__all__ = ["MAX_TEMPERATURE_SIZE", "Counter", "Hello", "Temperature", "demo_site", "name_of"]

TEXT = ContentFormat.TEXT
#: Bytes of a `/temp` PUT payload: room for any reading written as a decimal number.
MAX_TEMPERATURE_SIZE = 32


class Hello(EvaluatesPreconditions):
    """GET: `Hello, <identity>!` with the identity the handshake authenticated (`name_of`)."""

    ct = int(TEXT)

    async def render_get(self, request: Message) -> Message:
        peer = getattr(request.remote, "peer", None)
        greeting = f"Hello, {name_of(peer)}!" if peer is not None else "Hello!"
        return Message(payload=greeting.encode(), content_format=TEXT)


def name_of(peer: object) -> str:
    """How `/hello` names a peer: a PSK identity by its text when it is printable UTF-8 (as
    RFC 4279 §5.1 has identities be), any other identity as it describes itself."""
    if isinstance(peer, PskIdentity):
        try:
            text = peer.identity.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text.isprintable() and text:
            return text
    return str(peer)


class Counter(EvaluatesPreconditions, resource.ObservableResource):
    """GET: the number of `interval`s since the site started; observable, one notification
    per tick. The ticking task runs only while someone observes."""

    ct = int(TEXT)

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self.interval = interval
        self._start = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None

    @property
    def value(self) -> int:
        return int((time.monotonic() - self._start) // self.interval)

    def update_observation_count(self, newcount: int) -> None:
        if newcount and self._ticker is None:
            self._ticker = asyncio.ensure_future(self._tick())
        elif not newcount and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def _tick(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                next_tick = self._start + (self.value + 1) * self.interval
                await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
                self.updated_state()

    async def render_get(self, request: Message) -> Message:
        return Message(payload=str(self.value).encode(), content_format=TEXT)


class Temperature(EvaluatesPreconditions):
    """PUT: a reading, a finite decimal number in text/plain (`_NUMBER`: ASCII digits, a sign,
    a point, an exponent; spaces and a newline around it allowed, as `echo 21.5 |` sends), at
    most `MAX_TEMPERATURE_SIZE` bytes: 2.04 Changed;
    4.13 (with Size1, RFC 7252 §5.10.9) when longer, 4.15 for another content format, 4.00
    for anything but a number. GET: the last reading (empty before the first), with its ETag
    (`current_etag`). Its representation exists from the first reading on: If-Match (its
    ETag, or empty for any reading) and If-None-Match (none yet) are evaluated against it, 4.12
    Precondition Failed when not fulfilled (RFC 7252 §5.10.8)."""

    ct = int(TEXT)

    def __init__(self) -> None:
        super().__init__()
        self.value = b""

    def has_representation(self) -> bool:
        return self.value != b""

    def current_etag(self) -> bytes | None:
        """The reading's ETag: 8 bytes of its SHA-256 digest, the same for the same reading
        (RFC 7252 §5.10.6: opaque, at most 8 bytes); None before the first."""
        return hashlib.sha256(self.value).digest()[:8] if self.value else None

    async def render_get(self, request: Message) -> Message:
        response = Message(payload=self.value, content_format=TEXT)
        response.opt.etag = self.current_etag()
        return response

    async def render_put(self, request: Message) -> Message:
        if len(request.payload) > MAX_TEMPERATURE_SIZE:
            too_large = _diagnostic(Code.REQUEST_ENTITY_TOO_LARGE,
                                    f"at most {MAX_TEMPERATURE_SIZE} bytes")
            too_large.opt.size1 = MAX_TEMPERATURE_SIZE
            return too_large
        if request.opt.content_format not in (None, TEXT):
            return _diagnostic(Code.UNSUPPORTED_CONTENT_FORMAT, "text/plain only")
        reading = _reading(request.payload)
        if reading is None:
            return _diagnostic(Code.BAD_REQUEST, "expected a number, such as 21.5")
        self.value = reading
        return Message(code=Code.CHANGED)


#: A decimal number as C and JSON write one (`21.5`, `-3`, `.5`, `-3e1`): what a reading is.
#: Not whatever Python's float() takes besides (`1_000`, `nan`, `inf`, other scripts' digits,
#: whitespace other than ASCII's around it).
_NUMBER = re.compile(rb"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _reading(payload: bytes) -> bytes | None:
    """The number `payload` holds, as sent without surrounding ASCII whitespace; None for no
    number (`_NUMBER`), or one too large for a float (`1e999`)."""
    text = payload.strip()
    if _NUMBER.fullmatch(text) is None:
        return None
    return text if math.isfinite(float(text)) else None


def _diagnostic(code: Code, text: str) -> Message:
    """An error response with its diagnostic payload (RFC 7252 §5.5.2)."""
    return Message(code=code, payload=text.encode())


class _Core(EvaluatesPreconditions, resource.WKCResource):
    """`/.well-known/core` (RFC 6690), evaluating If-Match and If-None-Match as the others do."""


def demo_site(counter_interval: float = 1.0) -> resource.Site:
    """A `Site` with `/.well-known/core`, `/hello`, `/counter` and `/temp`."""
    site = resource.Site()
    site.add_resource(
        [".well-known", "core"], _Core(site.get_resources_as_linkheader, impl_info=None)
    )
    site.add_resource(["hello"], Hello())
    site.add_resource(["counter"], Counter(counter_interval))
    site.add_resource(["temp"], Temperature())
    return site
