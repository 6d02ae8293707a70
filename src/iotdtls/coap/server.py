"""The coaps server transport: an aiocoap `Site` served over iotdtls to many clients at once.

One UDP socket (`iotdtls.aio.serve`: stateless cookies, demultiplexing by address) carries every
association. Each association that completes its handshake becomes one remote, carrying the
client's authenticated identity to the resource handlers (`request.remote.peer` and
`request.remote.authenticated_claims`). Responses and notifications go back over the
association their request came on, and are dropped once it has ended, never sent over a newer
association of the same address (RFC 7252 §9.1). When an association ends, aiocoap hears of it
as an error of that remote, which ends its observations and pending exchanges; the remote then
lets go of its session and of the transport (aiocoap's duplicate detection keeps it, light, for
EXCHANGE_LIFETIME: see `CoapsInterface.association_ended`).

A request whose body would go past `max_body_size` bytes is answered here with 4.13 Request
Entity Too Large, and a Block1 block out of order with 4.08 Request Entity Incomplete; neither
reaches aiocoap (`iotdtls.coap.uploads`). Nor does a request with a critical option the server
does not recognize (4.02 Bad Option for a CON, a NON ignored, RFC 7252 §5.4.1) or one asking a
site that is no proxy to proxy (5.05, §5.10.2; `iotdtls.coap.options`). An Observe registration
past `max_observations` live ones on its association is served as a plain GET (RFC 7641 §4.1,
`iotdtls.coap.observations`). aiocoap's repeated log lines are bounded (`iotdtls.coap.logs`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from aiocoap import interfaces
from aiocoap.message import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import ACK, CON

from iotdtls import aio
from iotdtls.coap.addresses import CoapsAddress, CoapsInterface
from iotdtls.coap.logs import RepeatedLines, receiving
from iotdtls.coap.observations import DEFAULT_MAX_OBSERVATIONS, Observations
from iotdtls.coap.options import proxying_refused, unrecognized_critical
from iotdtls.coap.uploads import DEFAULT_MAX_BODY_SIZE, Uploads, answer, refusal
from iotdtls.config import ServerConfig
from iotdtls.errors import DtlsError
from iotdtls.identity import PeerIdentity

__all__ = ["ClaimLabels", "CoapsServerInterface", "ServerRemote"]

logger = logging.getLogger("iotdtls.coap")

#: The labels of the credentials that authenticated a peer (e.g. the keys of an aiocoap
#: credentials map), listed after the identity in `authenticated_claims`.
ClaimLabels = Callable[[PeerIdentity], tuple[str, ...]]
#: The site a server serves (its context's `serversite`, read at each request: it may change).
ServedSite = Callable[[], object]
#: The methods that register an observation (RFC 7641 §2, RFC 8132 §2.4).
_OBSERVING = frozenset({Code.GET, Code.FETCH})


class ServerRemote(CoapsAddress):
    """The client end of one association of a coaps server."""

    def __init__(
        self, interface: CoapsServerInterface, session: aio.ServerSession, labels: tuple[str, ...]
    ) -> None:
        super().__init__(session.address, interface.config.mtu, session.peer, labels)
        #: Both None once released (`release`).
        self._interface: CoapsServerInterface | None = interface
        self._session: aio.ServerSession | None = session
        self._local_address = interface.address
        #: The Block1 uploads in progress over the association (`iotdtls.coap.uploads`):
        #: None until its first Block1 block, and again once released.
        self.uploads: Uploads | None = None
        #: The Observe registrations made over the association (`iotdtls.coap.observations`):
        #: None until its first, and again once released.
        self.observations: Observations | None = None

    @property
    def local_address(self) -> tuple[Any, ...]:
        return self._local_address

    def send(self, data: bytes) -> None:
        """Send one CoAP message over this association; dropped once it has ended
        (`ServerSession.send`) or been released; raises `DatagramTooLarge` for one that does
        not fit a datagram."""
        if self._session is not None:
            self._session.send(data)

    def release(self) -> None:
        self._interface = self._session = self.uploads = self.observations = None

    def served_by(self, interface: CoapsServerInterface) -> bool:
        """True while the association lives, on `interface`."""
        return self._interface is interface and not self.ended


class CoapsServerInterface(CoapsInterface):
    """An aiocoap message interface serving coaps on one socket (see the module docstring)."""

    def __init__(
        self,
        mman: interfaces.MessageManager,
        config: ServerConfig,
        labels: ClaimLabels,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        *,
        max_observations: int = DEFAULT_MAX_OBSERVATIONS,
        site: ServedSite = lambda: None,
    ) -> None:
        super().__init__(mman)
        self.config = config
        self._labels = labels
        #: The largest request body taken, in bytes (`iotdtls.coap.uploads`).
        self.max_body_size = max_body_size
        #: The live Observe registrations kept per association (`iotdtls.coap.observations`).
        self.max_observations = max_observations
        #: What is served, for the options recognized (`iotdtls.coap.options`).
        self._site = site
        #: aiocoap's logger and the filter bounding its repeated lines (`bound_log`).
        self._log: tuple[logging.Logger, RepeatedLines] | None = None
        self._server: aio.DtlsServer | None = None
        #: The socket address bound: (host, port), for IPv6 (host, port, flowinfo, scope_id),
        #: whose scope id names the interface of a link-local address (RFC 4007 §11).
        self.address: tuple[Any, ...] = ("::", 0)

    def __repr__(self) -> str:
        return f"<CoapsServerInterface on {self.address!r}>"

    @classmethod
    async def create(
        cls,
        mman: interfaces.MessageManager,
        bind: tuple[str, int],
        config: ServerConfig,
        labels: ClaimLabels,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        *,
        max_observations: int = DEFAULT_MAX_OBSERVATIONS,
        site: ServedSite = lambda: None,
    ) -> CoapsServerInterface:
        """Bind `bind` and serve; returns once the socket is bound."""
        self = cls(mman, config, labels, max_body_size, max_observations=max_observations,
                   site=site)
        self._server = await aio.serve(self._serve_association, bind[0], bind[1], config)
        self.address = self._server.sockname
        return self

    @property
    def endpoint_server(self) -> aio.DtlsServer:
        """The iotdtls server underneath (its `endpoint` has the association table)."""
        assert self._server is not None
        return self._server

    async def _serve_association(self, session: aio.ServerSession) -> None:
        remote = ServerRemote(self, session, self._labels(session.peer))
        # For aiocoap's log lines (`coap.logs`): set once in this task, the association's
        # own, so what aiocoap keeps of a request (the context its timers and tasks copy,
        # 247 s for duplicate detection) shares one mapping, not one each; a weak reference,
        # so nothing that keeps a context keeps the remote once the association has ended.
        receiving.set(weakref.ref(remote))
        failure: DtlsError | None = None
        try:
            while (data := await session.recv()) is not None:
                self.deliver(remote, data)
        except DtlsError as exc:
            failure = exc
        finally:
            # A request may have come in the same wake-up as the end (a last request and
            # close_notify in one datagram): let aiocoap start rendering it before it hears of
            # the end and cancels that; the response is then dropped (`CoapsInterface.send`).
            await asyncio.sleep(0)
            self.association_ended(remote, failure)
            if remote.observations is not None and remote.observations.refused:
                logger.info("%r: %d Observe registrations past %d live ones were served as "
                            "plain GETs", remote, remote.observations.refused,
                            self.max_observations)
            remote.release()

    def _admit(self, remote: CoapsAddress, request: Message) -> bool:
        """False for a request answered here, not handed to aiocoap: it has a critical option
        not recognized (`iotdtls.coap.options.unrecognized_critical`, RFC 7252 §5.4.1: 4.02
        Bad Option naming it (§5.5.2) to a CON, a NON rejected: ignored, §4.3), it asks a
        site that is no proxy to proxy (5.05, `iotdtls.coap.options.proxying_refused`), its
        body would go past `max_body_size` (4.13, `iotdtls.coap.uploads.refusal`), or it is
        a Block1 block out of order (4.08, `Uploads.out_of_order`). An Observe registration
        past the bound is handed on without its Observe option (`_observe_within_bound`). A
        duplicate of a request aiocoap has taken (RFC 7252 §4.5) goes to aiocoap as it is,
        which answers it again."""
        recent = self._duplicates
        if recent is not None and (remote, request.mid) in recent:
            return True
        site = self._site()
        option = unrecognized_critical(request, site)
        response: Message | None = None
        if option is not None and request.mtype != CON:
            logger.debug("%r: a NON request with critical option %d, not recognized, ignored",
                         remote, option)
            return False
        if option is not None:
            response = answer(request, Code.BAD_OPTION, f"critical option {option} not recognized")
        elif proxying_refused(request, site):
            response = answer(request, Code.PROXYING_NOT_SUPPORTED,
                              "this server is not a forward proxy")
        if response is None:
            response = refusal(request, self.max_body_size)
        if response is None and request.opt.block1 is not None and isinstance(
            remote, ServerRemote
        ):
            if remote.uploads is None:
                remote.uploads = Uploads()
            incomplete = remote.uploads.out_of_order(request)
            if incomplete is not None:
                response = answer(request, Code.REQUEST_ENTITY_INCOMPLETE, incomplete)
        if response is None:
            if isinstance(remote, ServerRemote):
                self._observe_within_bound(remote, request)
            return True
        logger.debug("%r: %s answered to a request (%s)", remote, response.code,
                     response.payload.decode())
        self._answer(response)
        return False

    def _observe_within_bound(self, remote: ServerRemote, request: Message) -> None:
        """An Observe registration (RFC 7641 §3.1) past `max_observations` live ones over
        `remote`'s association is handed on without its Observe option: a plain GET, whose
        response has none (§4.1; `iotdtls.coap.observations`)."""
        if request.opt.observe != 0 or request.code not in _OBSERVING:
            return
        if remote.observations is None:
            remote.observations = Observations(self.max_observations)
        if remote.observations.admit(request.token, self._live_request(remote)):
            return
        request.opt.observe = None
        logger.debug("%r: an Observe registration past %d live ones served as a plain GET",
                     remote, self.max_observations)

    def _live_request(self, remote: ServerRemote) -> Callable[[bytes], bool]:
        """Whether aiocoap still keeps the request of a token received over `remote`'s
        association (its `TokenManager.incoming_requests`, by token and remote, of the pinned
        0.4.17: tests/test_coap_shields.py fails if a version changes it). When it cannot be
        read, every registration noted counts as live."""
        manager = getattr(self._mman, "token_manager", None)
        requests = getattr(manager, "incoming_requests", None)
        if not isinstance(requests, dict):
            return lambda token: True
        return lambda token: (token, remote) in requests

    def _answer(self, response: Message) -> None:
        """Send a response made here: an ACK as it is, a NON through aiocoap's message layer,
        which gives it a message ID of its own sequence (RFC 7252 §4.4)."""
        if response.mtype == ACK:
            self.send(response)
        elif isinstance(self._mman, interfaces.TokenInterface):
            self._mman.send_message(response, None)

    async def determine_remote(self, message: Message) -> None:
        """A server makes no associations of its own; requests to a client go over the
        association it opened (see `recognize_remote`)."""
        return None

    async def recognize_remote(self, remote: interfaces.EndpointAddress) -> bool:
        return isinstance(remote, ServerRemote) and remote.served_by(self)

    def bound_log(self, log: logging.Logger) -> RepeatedLines:
        """Bound the repeated lines of `log` (aiocoap's logger of the context) until the
        shutdown (`iotdtls.coap.logs.RepeatedLines`), which sums up those held back."""
        lines = RepeatedLines()
        log.addFilter(lines)
        self._log = log, lines
        return lines

    async def shutdown(self) -> None:
        """close_notify to every client, then release the socket; aiocoap's logger is then
        as it was, after a line for each kind of its lines held back."""
        self._mman = None
        if self._server is not None:
            await self._server.close()
        if self._log is not None:
            log, lines = self._log
            self._log = None
            log.removeFilter(lines)
            lines.log_held_back(log)
