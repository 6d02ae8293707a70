"""The aiocoap remotes (`EndpointAddress`es) of coaps, one object per DTLS association, and
what the client and server transports share.

RFC 7252 §9.1: a response travels over the DTLS association (the same epoch) its request came
on. aiocoap matches responses and deduplicates messages by (remote, token / message ID) and
compares remotes by equality, so each association is its own remote object, equal only to
itself: a newer association with the same peer is a different remote, and nothing pending on
the old one can be answered over the new one.

Block sizes follow the association's MTU: a block and its CoAP header and options, sealed in
one record, must fit one datagram (RFC 7959 §2.2, RFC 6347 §4.1.1). A response whose options
alone do not fit is answered with a bare 5.00 Internal Server Error in its place, so the client
learns at once that its request failed (see `CoapsInterface.send`).

An association that has ended leaves little behind (see `CoapsInterface.association_ended`):
its remote lets go of its session or connection, and the responses aiocoap keeps for duplicate
detection (RFC 7252 §4.5) are dropped; only the (remote, message ID) of each request received
stays, for EXCHANGE_LIFETIME (§4.8.2, 247 s), as aiocoap keeps it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiocoap import error, interfaces
from aiocoap.message import Message
from aiocoap.numbers.codes import INTERNAL_SERVER_ERROR
from aiocoap.numbers.constants import COAPS_PORT, MAX_REGULAR_BLOCK_SIZE_EXP
from aiocoap.options import Options
from aiocoap.util import hostportjoin

from iotdtls._addresses import format_address, uri_host
from iotdtls.coap.errors import association_error
from iotdtls.coap.wire import format_error
from iotdtls.errors import DatagramTooLarge, DtlsError
from iotdtls.identity import PeerIdentity, UnauthenticatedPeer

logger = logging.getLogger("iotdtls.coap")

__all__ = [
    "COAP_HEADROOM",
    "RECORD_OVERHEAD_BOUND",
    "TOKENS_KEPT",
    "CoapsAddress",
    "CoapsInterface",
    "block_size_exp",
    "hostinfo",
    "reset_for",
]

#: The most a DTLS 1.2 AEAD record adds to its payload: a 13-byte header, an 8-byte explicit
#: nonce and a tag of at most 16 bytes (RFC 6347 §4.1, RFC 5116; TLS_PSK_WITH_AES_128_CCM_8,
#: the profile's suite, adds 29).
RECORD_OVERHEAD_BOUND = 13 + 8 + 16
#: Room for a CoAP header, token and options when nothing better is known: RFC 7252 §4.6
#: bounds the message at 1152 bytes for 1024 bytes of payload.
COAP_HEADROOM = 1152 - 1024
#: How many tokens of the latest requests sent a remote keeps to recognise responses to them
#: (`CoapsAddress.responses_received`): aiocoap sends the blocks of a block-wise transfer one
#: after the other, each with a token of its own.
TOKENS_KEPT = 16


def block_size_exp(mtu: int) -> int:
    """The largest block-size exponent (SZX, RFC 7959 §2.2) whose block, with CoAP's headroom
    and the record overhead, fits a datagram of `mtu` bytes; 0 (16 bytes) at the very least."""
    room = mtu - RECORD_OVERHEAD_BOUND - COAP_HEADROOM
    for szx in range(MAX_REGULAR_BLOCK_SIZE_EXP, 0, -1):
        if 2 ** (szx + 4) <= room:
            return szx
    return 0


def reset_for(data: bytes) -> bytes | None:
    """The Reset that rejects `data`, a message that cannot be processed, if its header is
    that of a confirmable message: version 1, type CON, a message ID (RFC 7252 §3, §4.2); an
    Empty message (code 0.00, no token) of type RST with that message ID. None for any other
    (§4.3: a non-confirmable one may be ignored; no Reset for an ACK or a Reset, §4.2)."""
    if len(data) < 4 or data[0] >> 4 != 0b0100:  # version 1, type 0 (CON)
        return None
    return bytes([0b0111_0000, 0x00]) + data[2:4]


def hostinfo(address: tuple[Any, ...]) -> str:
    """`host[:port]` of a socket address as it appears in a coaps URI (port omitted if 5684;
    an IPv6 zone as `[fe80::1%25eth0]`, RFC 6874 §2)."""
    port = int(address[1])
    return str(hostportjoin(uri_host(address), None if port == COAPS_PORT else port))


class CoapsAddress(interfaces.EndpointAddress):
    """A remote reached over one DTLS association (compared by identity).

    `peer` is the identity the handshake authenticated (`iotdtls.identity`); the same object
    leads `authenticated_claims`, the place aiocoap's resource handlers look for who asked
    (`request.remote.authenticated_claims`), followed by the labels of the credentials that
    matched, as aiocoap's own DTLS server gives them. A client that a server did not ask to
    authenticate (`UnauthenticatedPeer`) has no claims."""

    scheme = "coaps"
    is_multicast = False
    is_multicast_locally = False

    def __init__(
        self,
        peer_address: tuple[Any, ...],
        mtu: int,
        peer: PeerIdentity | None = None,
        labels: tuple[str, ...] = (),
    ) -> None:
        self.peer_address = peer_address
        self.peer = peer
        self._labels = labels
        self._block_size_exp = block_size_exp(mtu)
        #: True once the association has ended; nothing is sent over it any more.
        self.ended = False
        #: CoAP responses received over the association to requests sent over it (by token,
        #: among the latest `TOKENS_KEPT` requests; blocks of one count one each): the command
        #: line tells a response that did not complete in time from none.
        self.responses_received = 0
        #: The tokens of the latest requests sent, oldest first (a dict as an ordered set).
        self._request_tokens: dict[bytes, None] = {}
        #: Datagrams received over the association that were not CoAP messages (ignored; the
        #: first is logged as a warning, the others at debug level, so a flood of them does
        #: not flood the log).
        self.not_coap = 0
        #: The message IDs of the requests received whose duplicates aiocoap may still detect
        #: (`CoapsInterface.deliver`), oldest first (a dict as an ordered set).
        self.request_mids: dict[int, None] = {}

    def __repr__(self) -> str:
        state = " ended" if self.ended else ""
        who = f" {self.peer}" if self.peer is not None else ""
        return f"<{type(self).__name__} {self.uri_base}{who}{state}>"

    def request_sent(self, token: bytes) -> None:
        """A request with `token` was sent over the association: responses carrying it are
        responses to it (RFC 7252 §5.3.2); the latest `TOKENS_KEPT` are kept."""
        tokens = self._request_tokens
        tokens.pop(token, None)
        tokens[token] = None
        if len(tokens) > TOKENS_KEPT:
            del tokens[next(iter(tokens))]

    def answers_a_request(self, message: Message) -> bool:
        """True for a response whose token is one of a request sent (`request_sent`)."""
        return message.code.is_response() and message.token in self._request_tokens

    @property
    def peer_name(self) -> str:
        """The peer's address as errors and log lines write it (`format_address`): its port
        always, a zone after "%" (RFC 4007 §11), `[fe80::1%eth0]:5684`; "%25" is for URIs."""
        return format_address(self.peer_address)

    @property
    def hostinfo(self) -> str:
        return hostinfo(self.peer_address)

    @property
    def hostinfo_local(self) -> str:
        return hostinfo(self.local_address)

    @property
    def local_address(self) -> tuple[Any, ...]:
        """The socket address of our end of the association."""
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Send one CoAP message over this association (dropped once it has ended); raises
        `DatagramTooLarge` for one that does not fit a datagram."""
        raise NotImplementedError

    def release(self) -> None:
        """The association has ended and been closed: let go of it (its session or connection,
        the transport), keeping what the remote tells about it (address, identity). aiocoap
        keeps an ended remote for a while (see `CoapsInterface.association_ended`)."""
        raise NotImplementedError

    @property
    def uri_base(self) -> str:
        return "coaps://" + self.hostinfo

    @property
    def uri_base_local(self) -> str:
        return "coaps://" + self.hostinfo_local

    @property
    def authenticated_claims(self) -> tuple[object, ...]:
        # A client the server did not ask for a certificate or key has claimed nothing.
        if self.peer is None or isinstance(self.peer, UnauthenticatedPeer):
            return ()
        return (self.peer, *self._labels)

    @property
    def maximum_block_size_exp(self) -> int:
        return self._block_size_exp

    @maximum_block_size_exp.setter
    def maximum_block_size_exp(self, value: int) -> None:
        # aiocoap lowers it to what the other side asked for in a block-wise transfer.
        self._block_size_exp = value

    @property
    def maximum_payload_size(self) -> int:
        """A payload larger than one block is sent block-wise (aiocoap's threshold)."""
        return int(2 ** (self._block_size_exp + 4))

    @property
    def blockwise_key(self) -> object:
        # Blocks combine only within one association (RFC 7959 §2.4, RFC 7252 §9.1).
        return self


class CoapsInterface(interfaces.MessageInterface):
    """What both coaps transports do alike: hand each datagram of an association to aiocoap's
    message layer as one CoAP message (RFC 7252 §9.1.1), send messages over their remote's
    association, and fail what is pending on an association that ended."""

    def __init__(self, mman: interfaces.MessageManager) -> None:
        #: aiocoap's message layer; None once shut down.
        self._mman: interfaces.MessageManager | None = mman
        #: aiocoap's store of duplicate detection (RFC 7252 §4.5): the (remote, message ID) of
        #: each request received, for EXCHANGE_LIFETIME (§4.8.2), to None or the response sent.
        #: aiocoap has no public hook to it; this is `MessageManager._recent_messages` of the
        #: pinned 0.4.17 (tests/test_coap_retention.py fails if a version changes it), None if
        #: missing: then nothing is dropped early, all is let go after EXCHANGE_LIFETIME. Kept
        #: past the shutdown, which ends the associations.
        recent = getattr(mman, "_recent_messages", None)
        self._duplicates: dict[tuple[Any, int], Message | None] | None = (
            recent if isinstance(recent, dict) else None
        )

    def _request_received(self, remote: CoapsAddress, mid: int) -> None:
        """Note `mid` in `remote.request_mids`, after letting go of the oldest IDs aiocoap has
        forgotten (their EXCHANGE_LIFETIME passed): the IDs noted are those of aiocoap's store,
        at most, for a remote (and all 65536 at the very most)."""
        mids = remote.request_mids
        recent = self._duplicates
        if recent is None:
            return
        while mids and (remote, next(iter(mids))) not in recent:
            del mids[next(iter(mids))]
        mids[mid] = None  # a duplicate's stays where it was, as aiocoap's timer does

    def _drop_stored_responses(self, remote: CoapsAddress) -> None:
        """Drop the responses aiocoap keeps to answer duplicates over `remote`'s association,
        which has ended (see `association_ended`), and the message IDs noted to find them."""
        recent = self._duplicates
        if recent is not None:
            for mid in remote.request_mids:
                key = (remote, mid)
                if recent.get(key) is not None:
                    recent[key] = None
        remote.request_mids.clear()

    def deliver(self, remote: CoapsAddress, data: bytes) -> None:
        """A datagram received over `remote`'s association. One that aiocoap cannot decode is
        ignored, counted in `remote.not_coap` and logged: no CoAP header, an option cut short
        (`UnparsableMessage`), or a text option that is not UTF-8 (RFC 7252 §3.2; aiocoap
        0.4.17 raises UnicodeDecodeError, a ValueError, for it); so is, before aiocoap decodes
        it, one with a format error aiocoap would take (`iotdtls.coap.wire.format_error`: a
        reserved token length, a token cut short, a payload marker with no payload, a reserved
        code class, an Empty message with more than a header). One whose header is that of
        a confirmable message is rejected with a matching Reset over the same association
        (RFC 7252 §4.2, `reset_for`): one Reset for each, nothing kept. An exception of aiocoap's
        message layer is logged and the association goes on: it would otherwise end the
        receive loop, and with it the association every request to that peer shares. The
        InvalidStateError aiocoap 0.4.17 raises for a block arriving for a request that timed
        out is logged at debug level; any other (a bug) as a warning with its traceback."""
        if self._mman is None:
            return
        try:
            problem = format_error(data)
            if problem is not None:
                raise error.UnparsableMessage(problem)
            message = Message.decode(data, remote)
        except (error.UnparsableMessage, ValueError):
            remote.not_coap += 1
            if remote.not_coap == 1:
                logger.warning(
                    "%r: ignoring a datagram that is not a CoAP message (any more are logged "
                    "at debug level)", remote,
                )
            else:
                logger.debug("%r: ignoring a datagram that is not a CoAP message (%d so far)",
                             remote, remote.not_coap)
            reset = reset_for(data)
            if reset is not None:
                remote.send(reset)
            return
        if remote.answers_a_request(message):
            remote.responses_received += 1
        if message.code.is_request() and not self._admit(remote, message):
            return
        if message.code.is_request() and message.mid is not None:
            self._request_received(remote, message.mid)
        try:
            self._mman.dispatch_message(message)
        except asyncio.InvalidStateError as exc:
            logger.debug("%r: aiocoap failed on a received message (%s: %s); going on",
                         remote, type(exc).__name__, exc)
        except Exception as exc:
            logger.warning("%r: aiocoap failed on a received message (%s: %s); going on",
                           remote, type(exc).__name__, exc, exc_info=True)

    def _admit(self, remote: CoapsAddress, request: Message) -> bool:
        """True to hand `request`, received over `remote`'s association, to aiocoap; False
        when it has been answered here instead (a server's bounds, `CoapsServerInterface`)."""
        return True

    def association_ended(self, remote: CoapsAddress, failure: DtlsError | None) -> None:
        """`remote`'s association ended: aiocoap fails its requests, exchanges, observations,
        and the responses it keeps for duplicates received over it are dropped.

        aiocoap's duplicate detection (RFC 7252 §4.5) keeps each request's (remote, message ID)
        with the response sent to it for EXCHANGE_LIFETIME (§4.8.2, 247 s), and its
        `dispatch_error` does not touch them. An association that has ended never receives
        again (a new one is a new remote), so those responses would answer nothing: each is
        replaced by None (an entry removed would make the timer that removes it after
        EXCHANGE_LIFETIME raise KeyError). What stays until then is the (remote, message ID)
        and the remote, which the transport then `release`s of its session or connection."""
        remote.ended = True
        if remote.not_coap > 1:
            logger.info("%r: %d datagrams that were not CoAP messages were ignored",
                        remote, remote.not_coap)
        if self._mman is not None:
            self._mman.dispatch_error(association_error(remote.peer_name, failure, True), remote)
        self._drop_stored_responses(remote)

    def send(self, message: Message) -> None:
        """Send a message of aiocoap's over its remote's association. One that does not fit a
        datagram (`DatagramTooLarge`, RFC 6347 §4.1.1) is not sent; a warning names it. A
        response is then turned, in place, into a 5.00 Internal Server Error without options
        or payload (RFC 7252 §5.9.3), with the same type, message ID and token, which fits any
        mtu: the client learns at once that its request failed, and a retransmitted request
        gets that 5.00 again from aiocoap's duplicate cache (the same message object). A
        message for an association that has ended is dropped (a debug line says so), and not
        kept in that cache either (see `association_ended`)."""
        remote = message.remote
        assert isinstance(remote, CoapsAddress)
        if remote.ended:
            # An empty ACK or a response after the end: aiocoap has just stored it for
            # duplicates (`association_ended`).
            recent, mid = self._duplicates, message.mid
            if recent is not None and mid is not None and recent.get((remote, mid)) is message:
                recent[remote, mid] = None
            logger.debug("%r: not sending over an ended association", remote)
            return
        if message.code.is_request():
            remote.request_sent(message.token)
        try:
            remote.send(message.encode())
        except DatagramTooLarge as exc:
            if not message.code.is_response() or message.code == INTERNAL_SERVER_ERROR:
                logger.warning("%r: a CoAP message was not sent: %s", remote, exc)
                return
            logger.warning("%r: a %s response was not sent: %s; sending 5.00 Internal Server "
                           "Error in its place", remote, message.code, exc)
            message.code, message.opt, message.payload = INTERNAL_SERVER_ERROR, Options(), b""
            remote.send(message.encode())
