"""The coaps client transport: aiocoap sends `coaps://` requests through iotdtls associations.

One association (one UDP socket, `iotdtls.aio.connect`) per server and credentials, made when a
request first needs it and shared by every request after, as long as it lives. Credentials are
compared by value (`credentials_of`): a map read again with the same credentials (its JSON file
reloaded, say) keeps the association. When the credentials a request's entry gives have changed,
the request makes a new association, and each older one to that server that the map gives to
none of the requests that chose it any more (their entries changed or removed) is closed with
close_notify: the requests pending on it fail with `AssociationClosed`, as when any association
ends. An association notes the distinct requests that chose it, one per URI without its query
(scheme://host:port/path: polling one path with a new query each time counts once),
`REQUESTS_KEPT` at most: one chosen by more cannot tell whether a request it did not note
still gets its credentials, and is kept open (no request with other credentials uses it).
In certificate mode the server's certificate must name the host of the request URI (RFC 7252
§9.1.3.3, RFC 6125) unless the configuration names another `server_name`. A request waits
for the handshake while its remote is chosen (`determine_remote`), so a handshake that fails or
times out fails that request with an `AssociationFailed` at once; an association that ends
later fails every request still pending on it (`AssociationClosed`), and the next request makes
a new one, a new remote (RFC 7252 §9.1: no response crosses from one association to another).
The blocks of a block-wise transfer all go over the association of its first (RFC 7959 §2.4):
aiocoap sends each next block to the remote of the response before, and once that association
has ended (or is found unresponsive, below, and closed) the block fails with the error of its
end, `AssociationClosed`, instead of going over a new association, with other credentials
perhaps (`CoapsClientInterface._refuse_ended`). Only a request for a block numbered above 0
counts as such a block: aiocoap also binds the caller's request Message to its remote when it
sends it, and that Message sent again (a polling loop), a copy of it, or a request given
`remote = response.remote` is a new request, for which the map chooses as for any other.

A server that lost the association without a close_notify (it crashed and restarted, say)
ignores its records and stays silent. So once a confirmable message has been sent as often as
CoAP allows (RFC 7252 §4.2, MAX_RETRANSMIT) with nothing received over the association since,
the association counts as unresponsive: the next request closes it and makes a new one (the
next block of a transfer on it fails, with the rest pending on it: `AssociationClosed`).
Non-confirmable requests are never retransmitted (RFC 7252 §4.3) and aiocoap gives them no
deadline, so a client that sends only those never finds the association unresponsive:
heartbeats with a keep-alive (`keepalive_interval`, RFC 6520 §5.2) end it instead.

A request must fit one record in one datagram of the association's `mtu` (RFC 6347 §4.1.1). A
large payload goes block-wise (RFC 7959); header and options cannot, so a request whose
options are too large fails at once with `MessageTooLarge`, before it is sent, and the
association stays up for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from aiocoap import error, interfaces
from aiocoap.credentials import CredentialsLoadError, CredentialsMissingError
from aiocoap.message import Message
from aiocoap.numbers.constants import COAPS_PORT
from aiocoap.numbers.types import CON
from aiocoap.util import hostportsplit

from iotdtls import aio
from iotdtls._addresses import host_from_uri
from iotdtls.chaincache import ChainCache
from iotdtls.coap.addresses import CoapsAddress, CoapsInterface
from iotdtls.coap.errors import MessageTooLarge, association_error
from iotdtls.config import ClientConfig, FileKeyLog
from iotdtls.credentials import CertifiedKey, PrivateKey, psk_digest
from iotdtls.errors import DatagramTooLarge, DtlsError, LocalProtocolError

__all__ = [
    "REQUESTS_KEPT",
    "ClientRemote",
    "CoapsClientInterface",
    "ConfigForRequest",
    "credentials_of",
]

logger = logging.getLogger("iotdtls.coap")

#: Chooses the `ClientConfig` of a request. Requests to the same host and port whose configs
#: have the same `credentials_of` share an association.
ConfigForRequest = Callable[[Message], ClientConfig]


#: How many distinct requests (by URI without its query) an association notes having been
#: chosen for (`ClientRemote.chosen`): a change of credentials closes it only when the map
#: gives its credentials to none of them; one chosen by more is never closed for a change.
REQUESTS_KEPT = 16

#: RFC 7252 §3: the fixed header, the longest token and the payload marker.
_HEADER_TOKEN_MARKER = 4 + 8 + 1
#: RFC 7252 §3.1: an option's first byte and its extended delta and length, 2 bytes each at
#: most (an option inserted among others only shortens the delta of the one after it).
_OPTION_OVERHEAD = 1 + 2 + 2
#: RFC 7959 §2.2: a Block1 value is at most 3 bytes.
_BLOCK1_VALUE = 3


def credentials_of(config: ClientConfig) -> tuple[object, ...]:
    """What two configurations must have in common for their requests to share an association:
    every field, a private key by its public half and a certificate by its chain and key (a map
    read again loads them into new objects), a key log made from `keylog_file` by its file (each
    configuration makes its own), the PSK by its digest (no secret is compared or kept here)."""
    values: list[object] = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "psk" and isinstance(value, bytes):
            value = psk_digest(value)
        elif isinstance(value, PrivateKey):
            value = value.spki
        elif isinstance(value, CertifiedKey):
            value = (value.chain, value.private_key.spki)
        elif isinstance(value, FileKeyLog):
            value = (FileKeyLog, value.path)
        values.append(value)
    return tuple(values)


def _size_bound(message: Message, block_payload: int) -> int:
    """At least the size of `message`'s first datagram as `ClientRemote.check_size` measures
    it (RFC 7252 §3), without copying and encoding the message: its options as they are, at
    most one block of payload, and for a payload sent block-wise (RFC 7959 §2.3) a Block1 and
    a Size1 option (§4: its value the payload's length) more."""
    payload = len(message.payload)
    bound = _HEADER_TOKEN_MARKER + len(message.opt.encode()) + min(payload, block_payload)
    if payload > block_payload:
        size1 = (payload.bit_length() + 7) // 8
        bound += 2 * _OPTION_OVERHEAD + _BLOCK1_VALUE + size1
    return bound


class ClientRemote(CoapsAddress):
    """The server end of one client association."""

    def __init__(
        self,
        interface: CoapsClientInterface,
        host: str,
        port: int,
        config: ClientConfig,
        credentials: tuple[object, ...] = (),
        chosen_for: Message | None = None,
    ) -> None:
        super().__init__((host, port), config.mtu)
        #: None once released (`release`), as `_connection` is.
        self._interface: CoapsClientInterface | None = interface
        self._config = config
        #: `credentials_of` the request's config (before `for_host`).
        self.credentials = credentials
        #: The distinct requests that chose the association, without their payloads, the first
        #: one per URI without its query (`chosen`): asked again, they tell whether the map
        #: still gives these credentials.
        self.chosen_for: dict[str, Message] = {}
        #: True once more than `REQUESTS_KEPT` distinct requests chose it.
        self.chosen_for_more = False
        self._connection: aio.ClientConnection | None = None
        self._local_address: tuple[Any, ...] = ("::", 0)
        self._established: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._established.add_done_callback(_retrieve)
        self._task = asyncio.ensure_future(self._run())
        #: How often each confirmable message (by message ID) has been sent since the server
        #: was last heard from.
        self._unanswered: dict[int, int] = {}
        #: True once a confirmable message used up its retransmissions unanswered (see the
        #: module docstring); the next request replaces the association.
        self.unresponsive = False
        if chosen_for is not None:
            self.chosen(chosen_for)
        #: The error that ended the established association (None: close_notify, or closed
        #: by us), for `end_error`.
        self._failure: DtlsError | None = None

    @property
    def local_address(self) -> tuple[Any, ...]:
        """Our end of the association (("::", 0) before the handshake)."""
        return self._local_address

    async def established(self) -> None:
        """Wait for the handshake; raise the `AssociationFailed` that ended it."""
        await asyncio.shield(self._established)

    def send(self, data: bytes) -> None:
        """Send one CoAP message over this association (dropped once it has ended); raises
        `DatagramTooLarge` for one that does not fit a datagram."""
        if self._connection is None or self.ended:
            logger.debug("%r: not sending over an ended association", self)
            return
        try:
            self._connection.send(data)
        except DatagramTooLarge:
            # A request's first message is checked before it is sent (`check_size`); this is
            # the kernel refusing a datagram (a path MTU below the mtu), or a later message
            # larger than the first (a request for a later block, RFC 7959 §2.4).
            raise  # `CoapsInterface.send` says so
        except LocalProtocolError:
            logger.debug("%r: association ended before a message could be sent", self)

    def check_size(self, message: Message) -> None:
        """Raise `MessageTooLarge` for a request whose first datagram cannot fit one record
        (RFC 6347 §4.1.1): as aiocoap sends it, the first block of a payload larger than one
        (RFC 7959 §2.3: with Block1 and Size1), with a token at its longest, 8 bytes (RFC 7252
        §3; aiocoap picks it after the remote). aiocoap asks for the remote of a request's
        first message only (`determine_remote`); later blocks carry the same options."""
        if self._connection is None:
            return
        limit = self._connection.connection.max_send_size
        if _size_bound(message, self.maximum_payload_size) <= limit:
            return  # fits for sure: no need to copy and encode it to know
        block: dict[str, Any] = {}
        if len(message.payload) > self.maximum_payload_size:
            block = {
                "payload": message.payload[: self.maximum_payload_size],
                "block1": (0, True, self.maximum_block_size_exp),
                "size1": len(message.payload),
            }
        size = len(message.copy(mtype=CON, mid=0, token=bytes(8), **block).encode())
        if size > limit:
            raise MessageTooLarge(self.peer_name, size, limit, self._config.mtu)

    def sent(self, message: Message) -> None:
        """Count the transmissions of a confirmable message (RFC 7252 §4.2): the last one
        allowed, unanswered, makes the association `unresponsive`."""
        if message.mtype is not CON or message.mid is None:
            return
        count = self._unanswered.get(message.mid, 0) + 1
        self._unanswered[message.mid] = count
        if count > message.transport_tuning.MAX_RETRANSMIT:
            self.unresponsive = True

    def chosen(self, request: Message) -> None:
        """Note a request that chose this association (see `chosen_for`): the first per
        scheme://host:port/path stands for every query of that path (a map whose patterns
        tell queries of one path apart is asked with that first one); past `REQUESTS_KEPT`
        distinct paths, note only that there were more."""
        if self.chosen_for_more:
            return
        uri = request.get_request_uri().partition("?")[0]  # a "?" in the path is %3F
        if uri in self.chosen_for:
            return
        if len(self.chosen_for) >= REQUESTS_KEPT:
            self.chosen_for_more = True
            self.chosen_for.clear()
            return
        self.chosen_for[uri] = request.copy(payload=b"")

    def still_given(self, config_for: ConfigForRequest) -> bool:
        """True while the map (`config_for`) gives these credentials to a request that chose
        this association, or while it cannot tell: chosen by more than it noted, or by none."""
        if self.chosen_for_more or not self.chosen_for:
            return True
        for request in self.chosen_for.values():
            try:
                if credentials_of(config_for(request)) == self.credentials:
                    return True
            except (error.Error, CredentialsMissingError, CredentialsLoadError):
                continue  # no entry any more, or none that makes a config
        return False

    def pooled_by(self, interface: CoapsClientInterface) -> bool:
        """True while the association lives, made by `interface`."""
        return self._interface is interface and not self.ended

    def end_error(self) -> error.Error:
        """What a message bound to this association gets once it has ended (see
        `CoapsClientInterface.determine_remote`): the handshake's error if it never completed,
        else `AssociationClosed`, as the requests pending on it got."""
        handshake = self._established
        failed = handshake.exception() if handshake.done() and not handshake.cancelled() else None
        if isinstance(failed, error.Error):
            return failed
        return association_error(self.peer_name, self._failure, True)

    def release(self) -> None:
        self._connection = self._interface = None
        self.chosen_for.clear()

    async def close(self, reason: Exception | None = None) -> None:
        """Send close_notify (if established) and release the socket. A request still waiting
        for the handshake fails with `reason` (default: aiocoap's `LibraryShutdown`)."""
        self.ended = True
        if self._connection is not None:
            await self._connection.close()
        else:
            self._task.cancel()
        if not self._established.done():
            self._established.set_exception(reason or error.LibraryShutdown())
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.release()

    async def _run(self) -> None:
        host, port = self.peer_address
        interface = self._interface
        assert interface is not None
        try:
            connection = await aio.connect(
                host, port, self._config, chain_cache=interface.chain_cache
            )
        except (DtlsError, OSError, LocalProtocolError) as exc:
            self.ended = True
            interface.forget(self)
            self.release()
            self._established.set_exception(
                association_error(self.peer_name, exc, False, self._config.mode)
            )
            return
        self._connection = connection
        self._local_address = connection.local_address
        self.peer = connection.connection.peer
        self._established.set_result(None)
        failure: DtlsError | None = None
        try:
            while (data := await connection.recv()) is not None:
                self._unanswered.clear()  # the server is there
                self.unresponsive = False
                interface.deliver(self, data)
        except DtlsError as exc:
            failure = exc
        finally:
            self.ended = True
            self._failure = failure
            interface.ended(self, failure)
            await connection.close()
            self.release()


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed handshake's exception as seen (its requests may all have been cancelled)."""
    if not future.cancelled():
        future.exception()


class CoapsClientInterface(CoapsInterface):
    """An aiocoap message interface for `coaps://` requests (see the module docstring)."""

    def __init__(
        self,
        mman: interfaces.MessageManager,
        config_for: ConfigForRequest,
        chain_cache: ChainCache | None = None,
    ) -> None:
        super().__init__(mman)
        self._config_for = config_for
        #: Keeps servers' certificate chains between runs (cached_info, RFC 7924).
        self.chain_cache = chain_cache
        #: The live associations to each (host, port), one per `credentials_of`.
        self._pool: dict[tuple[str, int], list[ClientRemote]] = {}

    def __repr__(self) -> str:
        return f"<CoapsClientInterface associations={sum(map(len, self._pool.values()))}>"

    async def determine_remote(self, message: Message) -> ClientRemote | None:
        if message.requested_scheme != "coaps":
            return None
        if self._mman is None:
            raise error.LibraryShutdown()
        bound = message.remote
        if isinstance(bound, ClientRemote) and _continues_a_transfer(message):
            await self._refuse_ended(bound)
        host, port = _destination(message)
        config = self._config_for(message)
        credentials = credentials_of(config)
        remote = self._pooled(host, port, credentials)
        if remote is not None and remote.unresponsive:
            logger.info("%r: no answer to a confirmable message, making a new association", remote)
            self.forget(remote)
            await remote.close()
            remote = self._pooled(host, port, credentials)  # another request may have made one
        if remote is None:
            logger.debug("new DTLS association with %s:%d", host, port)
            older = self._pool.setdefault((host, port), [])
            replaced = list(older)
            remote = ClientRemote(self, host, port, config.for_host(host), credentials, message)
            older.append(remote)
            await self._close_replaced(replaced)
        else:
            remote.chosen(message)
        await remote.established()
        remote.check_size(message)
        return remote

    async def recognize_remote(self, remote: interfaces.EndpointAddress) -> bool:
        return (
            isinstance(remote, ClientRemote)
            and not remote.unresponsive
            and remote in self._pool.get(remote.peer_address[:2], ())
        )

    async def _refuse_ended(self, bound: ClientRemote) -> None:
        """The next block of a block-wise transfer (`_continues_a_transfer`), bound to an
        association aiocoap no longer recognizes (`recognize_remote`): aiocoap sends it to the
        remote of the response before (RFC 7959 §2.4: the blocks of a transfer go over one
        association; RFC 7252 §9.1). It goes over no other association, with other credentials
        perhaps: an association that has ended fails it with the error of its end
        (`end_error`), and one of ours found unresponsive is closed first, failing what is
        pending on it too. A remote that lives on, in another context's pool, leaves the
        choice to the map."""
        if not bound.ended and bound.unresponsive and bound.pooled_by(self):
            logger.info("%r: no answer to a confirmable message, closing the association", bound)
            self.forget(bound)
            await bound.close()
        if bound.ended:
            raise bound.end_error()

    def _pooled(self, host: str, port: int, credentials: tuple[object, ...]) -> ClientRemote | None:
        """The live association to (host, port) with these credentials, if there is one."""
        for remote in self._pool.get((host, port), ()):
            if not remote.ended and remote.credentials == credentials:
                return remote
        return None

    async def _close_replaced(self, remotes: list[ClientRemote]) -> None:
        """Close the associations among `remotes` (to the server a new one was just made for)
        whose credentials the map gives to none of the requests that chose them any more
        (`ClientRemote.still_given`): a request pending on them fails with `AssociationClosed`.
        Only one association is made per credentials, so this is asked once per change, not
        per request."""
        for remote in remotes:
            if not remote.ended and not remote.still_given(self._config_for):
                logger.debug("%r: the credentials changed, closing the association", remote)
                self.forget(remote)
                await remote.close(association_error(remote.peer_name, None, True))

    def send(self, message: Message) -> None:
        if isinstance(message.remote, ClientRemote):
            message.remote.sent(message)
        super().send(message)

    async def shutdown(self) -> None:
        self._mman = None
        pool, self._pool = self._pool, {}
        await asyncio.gather(*(r.close() for remotes in pool.values() for r in remotes))

    # -- from the associations ---------------------------------------------------------------

    def ended(self, remote: ClientRemote, failure: DtlsError | None) -> None:
        """An established association ended: fail what is pending on it."""
        self.forget(remote)
        self.association_ended(remote, failure)

    def forget(self, remote: ClientRemote) -> None:
        """Take an association out of the pool (new requests will make a new one)."""
        key = remote.peer_address[:2]
        remotes = self._pool.get(key, [])
        if remote in remotes:
            remotes.remove(remote)
            if not remotes:
                del self._pool[key]


def _continues_a_transfer(message: Message) -> bool:
    """True for a request for the next block of a block-wise transfer (RFC 7959 §2.3, §2.4):
    a Block1 or Block2 option with a block number above 0. aiocoap (the pinned 0.4.17) sends
    those bound to the remote of the response before. Anything else bound to a remote is a
    request of its own: aiocoap binds the request Message it sends (`remote`), so a Message
    sent again (a polling loop), its `copy()`, or one given `remote = response.remote`, comes
    bound to the association of the last exchange; so may a first request for Block2 number 0
    with a smaller size (§2.4). The map chooses for those."""
    return any(
        block is not None and block.block_number > 0
        for block in (message.opt.block1, message.opt.block2)
    )


def _destination(message: Message) -> tuple[str, int]:
    """The (host, port) a request goes to, from its URI (RFC 7252 §6.2: 5684 by default; an
    IPv6 zone written `%25eth0`, RFC 6874 §2, or `%eth0`, as the socket takes it: `%eth0`).
    Port 0 names no port to send to, and an empty zone (`[fe80::1%25]`) no interface: aiocoap's
    `MalformedUrlError`, as a port above 65535 is (the request ends with it). aiocoap (the
    pinned 0.4.17) gives every request the URI's host as its remote; a request addressed by
    Uri-Host options alone cannot be built."""
    if not message.unresolved_remote:
        raise ValueError("no host to send the coaps request to")
    host, port = hostportsplit(message.unresolved_remote)
    if port is None:
        port = COAPS_PORT
    elif port == 0:
        raise error.MalformedUrlError("the port must be a number from 1 to 65535")
    try:
        return host_from_uri(host), port
    except ValueError as exc:
        raise error.MalformedUrlError(str(exc)) from None
