"""What a coaps server answers itself to a request body too large, before aiocoap sees it.

aiocoap (0.4.17) assembles a Block1 upload (RFC 7959 §2.5) in each resource's `Block1Spool`
with no bound on its size, each block copying all those before it: one authenticated client
PUTting 64 MB in 1 KiB blocks kept a server at 100% CPU for ~100 s and took its memory from
40 to 216 MB, and a resource that takes 32 bytes at most assembled a megabyte before it could
answer 4.13. The resources are the application's; the bound is the transport's, server-wide:
a request whose body would go past `max_body_size` bytes (a block whose offset plus payload
does, or a Size1 option announcing more, RFC 7959 §4) is answered here with 4.13 Request
Entity Too Large carrying Size1 = the bound (RFC 7959 §2.9.3) and never reaches aiocoap.

aiocoap's spool also raises ValueError for a block that does not continue the body it holds
(block 0 with "more", then block 5): its handler answered 5.00 and logged a 20-line traceback
for each such gap. Each association notes the Block1 uploads in progress over it (`Uploads`,
by aiocoap's key of an upload) with the offset of the block expected next and the message ID
of the latest block taken; a block that neither continues the body noted for its key nor is
that block's retransmission (its message ID, which aiocoap's duplicate detection answers) is
answered 4.08 Request Entity Incomplete (RFC 7959 §2.3, §2.9.2) here, and never reaches
aiocoap: the latest block sent again with a new message ID overlaps the body, and aiocoap's
spool raised ValueError for it too. What is noted is what aiocoap takes: it answers 4.00 Bad
Request to a block with "more" whose payload does not fill its block size, keeping its body as
it was, so such a block is handed on and not noted (`_taken_whole`). A block of an upload not
noted (never started, or no longer noted when more than `UPLOADS_TRACKED` went on at once)
goes to aiocoap, which answers 4.08 itself when it holds no body for it and takes it when it
does: several uploads at once over one association (to several resources, or one with other
options) are the client's right (RFC 7959), and aiocoap's client makes them unprompted.

Memory: aiocoap keeps each body it assembles for MAX_TRANSMIT_WAIT (93 s) after its latest
block, however many there are and whether or not they are still noted here (one abandoned at
the bound each second holds ~93 of them); each body is at most `max_body_size`. What a client
makes a server hold thus grows with what it sends, as aiocoap's duplicate detection does
(RFC 7252 §4.5: each response kept for EXCHANGE_LIFETIME with its request), not beyond it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from aiocoap.message import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import ACK, CON, NON
from aiocoap.optiontypes import BlockOption

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "UPLOADS_TRACKED",
    "Uploads",
    "answer",
    "check_max_body_size",
    "refusal",
]

#: The largest request body a coaps server takes by default, in bytes. aiocoap copies the
#: body assembled so far at each block: at 16-byte blocks (the smallest, RFC 7959 §2.2) 64 KiB
#: costs 4,096 blocks and ~128 MiB of copying (a fraction of a second); 1 MiB would cost
#: 32 GiB. Above what a constrained device posts (RFC 7925's profile); raise it for firmware.
DEFAULT_MAX_BODY_SIZE = 64 * 1024

#: Block1 uploads noted per association at once; a further one makes the one used least
#: recently no longer noted (its blocks then go to aiocoap unchecked: a gap in it is aiocoap's
#: 5.00 again). It bounds what an association notes, not what aiocoap holds.
UPLOADS_TRACKED = 16
#: The options that do not tell one upload from another: aiocoap's (`_extract_block_key`).
_NOT_OF_THE_KEY = (OptionNumber.BLOCK1, OptionNumber.BLOCK2, OptionNumber.OBSERVE)


@dataclass(slots=True)
class _Upload:
    """Where a Block1 upload stands: the offset (bytes) of the block expected next, the
    message ID of the latest block taken, and whether that was the last (no "more")."""

    next_start: int
    last_mid: int | None
    complete: bool


class Uploads:
    """The Block1 uploads in progress over one association, by aiocoap's key of an upload
    (the request's code and options but Block1, Block2 and Observe; one association is one
    remote, so the remote is implied), at most `UPLOADS_TRACKED`, the latest used last."""

    __slots__ = ("_uploads",)

    def __init__(self) -> None:
        self._uploads: dict[Hashable, _Upload] = {}

    def __len__(self) -> int:
        return len(self._uploads)

    def clear(self) -> None:
        self._uploads.clear()

    def out_of_order(self, request: Message) -> str | None:
        """Note `request`'s Block1 block; why it is out of order, or None to hand it on.

        Block 0 starts an upload (again: aiocoap's spool starts over too). Another block of
        an upload noted is taken when it starts where the body noted ends, or handed on when
        it has the message ID of the latest block taken (a retransmission: aiocoap's duplicate
        detection answers it); anything else (a gap, an overlap such as the latest block with a
        new message ID, a block after the last) is out of order. A block of
        an upload not noted, and one that aiocoap refuses for its size (`_taken_whole`), are
        aiocoap's to judge (see the module docstring). A request without Block1 is no
        block."""
        block1 = request.opt.block1
        if block1 is None:
            return None
        key = (request.code, request.get_cache_key(_NOT_OF_THE_KEY))
        start, end = block1.start, block1.start + len(request.payload)
        uploads = self._uploads
        if block1.block_number == 0:
            uploads.pop(key, None)
            uploads[key] = _Upload(end, request.mid, not block1.more)
            while len(uploads) > UPLOADS_TRACKED:
                del uploads[next(iter(uploads))]
            return None
        upload = uploads.get(key)
        if upload is None or not _taken_whole(block1, len(request.payload)):
            return None  # aiocoap's to judge; a block it refuses (4.00) changes nothing
        if request.mid == upload.last_mid:
            return None
        if upload.complete or start != upload.next_start:
            return f"expected the block at byte {upload.next_start}: start again from block 0"
        del uploads[key]  # the latest used last
        uploads[key] = _Upload(end, request.mid, not block1.more)
        return None


def _taken_whole(block1: BlockOption.BlockwiseTuple, length: int) -> bool:
    """Whether aiocoap (0.4.17, `Message._append_request_block`) takes a block of `length`
    bytes after block 0 into its body: one with "more" must fill its block size (RFC 7959
    §2.2), or, at SZX 7 (BERT, RFC 8323 §6), be a whole number of 1024-byte blocks; it answers
    any other 4.00 Bad Request and leaves its body as it was. The last block may be shorter."""
    if not block1.more or length == block1.size:
        return True
    return block1.size_exponent == 7 and length % block1.size == 0


def check_max_body_size(value: object) -> int:
    """`value` as the bound on request bodies: a whole number of bytes, at least 1; a
    `ConfigError` otherwise, naming an integer as itself (one wider than 64 bits by its size,
    whose repr may raise ValueError: `config.shown_value`), anything else by its type."""
    from iotdtls.config import check_whole_setting

    return check_whole_setting("max_body_size", value, least=1, unit="bytes")


def refusal(request: Message, max_body_size: int) -> Message | None:
    """The response that refuses `request` for its body, or None to hand it to aiocoap:
    4.13 with Size1 = `max_body_size` when the body would go past it, by the Block1 block's
    offset plus its payload (its payload alone without Block1) or by a Size1 option."""
    block1 = request.opt.block1
    end = (block1.start if block1 is not None else 0) + len(request.payload)
    size1 = request.opt.size1
    if end <= max_body_size and (size1 is None or size1 <= max_body_size):
        return None
    response = answer(request, Code.REQUEST_ENTITY_TOO_LARGE, f"at most {max_body_size} bytes")
    response.opt.size1 = max_body_size
    return response


def answer(request: Message, code: Code, diagnostic: str) -> Message:
    """A response of `code` with a diagnostic payload (RFC 7252 §5.5.2) to `request`, with its
    token: piggybacked (an ACK of its message ID) for a confirmable request, a NON for a NON
    (RFC 7252 §5.2.1, §5.2.3; the message ID is left for aiocoap to give)."""
    response = Message(code=code, payload=diagnostic.encode())
    response.token = request.token
    response.remote = request.remote
    if request.mtype == CON:
        response.mtype, response.mid = ACK, request.mid
    else:
        response.mtype = NON
    return response
