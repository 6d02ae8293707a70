"""The demo site of `iotdtls coap serve`: `/.well-known/core` (RFC 6690), a text resource
`/hello` that greets the client by its authenticated identity, and `/counter`, a counter of
seconds (by default) that observers (RFC 7641) are notified of at every tick."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiocoap import resource
from aiocoap.message import Message
from aiocoap.numbers.contentformat import ContentFormat

from iotdtls.identity import PskIdentity

__all__ = ["Counter", "Hello", "demo_site", "name_of"]

TEXT = ContentFormat.TEXT


class Hello(resource.Resource):
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


class Counter(resource.ObservableResource):
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


def demo_site(counter_interval: float = 1.0) -> resource.Site:
    """A `Site` with `/.well-known/core`, `/hello` and `/counter`."""
    site = resource.Site()
    site.add_resource(
        [".well-known", "core"],
        resource.WKCResource(site.get_resources_as_linkheader, impl_info=None),
    )
    site.add_resource(["hello"], Hello())
    site.add_resource(["counter"], Counter(counter_interval))
    return site
